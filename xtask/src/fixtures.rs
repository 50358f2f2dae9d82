//! Objects and outputs recorded from real clusters (`tests/fixtures/upstream/`, each with a
//! header naming its source), for every test that holds the tool or the double against them.
//! A file's leading `#` lines are its header; YAML is read as JSON.

use std::path::PathBuf;

fn path(name: &str) -> PathBuf {
    super::lab::workspace_root()
        .join("tests/fixtures/upstream")
        .join(name)
}

/// The body of a fixture, its header dropped.
pub fn text(name: &str) -> String {
    let raw = std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    raw.lines()
        .skip_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fixture object (`.json` or `.yaml`) as JSON.
pub fn json(name: &str) -> serde_json::Value {
    let body = text(name);
    if name.ends_with(".json") {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
    } else {
        serde_yaml::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// A helm-install Job with the config hash moved from its pod template to the Job's own
/// metadata, where helm-controller never writes it (and where the tool and the double once
/// looked and wrote): the mistake the tests that hold them to the recordings must catch.
pub fn hash_on_job_metadata(job: &serde_json::Value) -> serde_json::Value {
    let mut misplaced = job.clone();
    let a = misplaced["spec"]["template"]["metadata"]
        .as_object_mut()
        .and_then(|m| m.remove("annotations"))
        .expect("the Job's pod template has annotations");
    misplaced["metadata"]["annotations"] = a;
    misplaced
}
