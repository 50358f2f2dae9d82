//! Objects and outputs recorded from real clusters (`tests/fixtures/upstream/`, each with a
//! header naming its source): the contract the parsers are tested against. A file's leading
//! `#` lines are its header; YAML is read as JSON.

pub use xtask::fixtures::{hash_on_job_metadata, json, text};

/// Fixture objects as the `items` of a `kubectl get -o json` List (kubectl leaves items
/// without `kind` when a single-kind list is printed: it is filled in from `kind`).
pub fn list(items: &[(&str, &str)]) -> String {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|(name, kind)| {
            let mut v = json(name);
            if v.get("kind").is_none() {
                v["kind"] = serde_json::Value::from(*kind);
            }
            v
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}
