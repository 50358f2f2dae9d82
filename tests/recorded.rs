//! Issue 26 (A): what the tool reads with kubectl's own printers (jsonpath lines, the
//! apiserver's tables), produced by the upstream kubectl from objects recorded on real
//! clusters (`tests/fixtures/upstream/`), and parsed as the tool parses a server's output.
//! kubectl formats a local object with `label --local -o jsonpath=...`, no server involved.

use bootstrap::addons::health::{self, Snapshot};

use xtask::fixtures::json as fixture;

/// What the upstream kubectl prints for `objects` with the per-object jsonpath `template`.
fn jsonpath(objects: &[serde_json::Value], template: &str) -> String {
    let kubectl = xtask::lab::kubectl::find().expect("an upstream kubectl");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("list.json");
    std::fs::write(
        &file,
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(kubectl)
        .args(["label", "--local", "-f"])
        .arg(&file)
        .args(["bootstrap-test=x", "-o", &format!("jsonpath={template}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pods' states as the health read gets them, from a helm-install pod recorded on k3s
/// (completed) and the same pod in the state the recorded `describe` of a failing one shows
/// (CrashLoopBackOff after 70 restarts, exit 1): the reasons the tool names come through.
#[test]
fn pod_states_printed_by_kubectl_from_recorded_pods() {
    let mut done = fixture("helm-install-pod-completed-k3s-v1.29.json");
    done["kind"] = "Pod".into();
    done["apiVersion"] = "v1".into();
    let mut crashing = done.clone();
    crashing["metadata"]["name"] = "helm-install-traefik-crd-crash".into();
    crashing["status"]["phase"] = "Running".into();
    crashing["status"]["containerStatuses"][0]["ready"] = false.into();
    crashing["status"]["containerStatuses"][0]["restartCount"] = 70.into();
    crashing["status"]["containerStatuses"][0]["state"] = serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container=helm pod=x"}});
    let lines = jsonpath(&[done, crashing], health::POD_STATE);
    let s = Snapshot::parse(&format!("#bootstrap-pods\n{lines}")).unwrap();
    let pods = s.pods();
    assert_eq!(pods.len(), 2, "{lines}");
    let done = &pods[0];
    assert_eq!(
        (done.name.as_str(), done.owner.as_str(), done.phase.as_str()),
        (
            "helm-install-traefik-crd-g8s55",
            "Job/helm-install-traefik-crd",
            "Succeeded"
        )
    );
    assert_eq!(done.containers[0].2, "Completed");
    let crash = &pods[1];
    assert!(!crash.ready());
    assert_eq!(crash.reason(), "CrashLoopBackOff (70 restarts)");
}

/// The CRD read: names and `Established`, as kubectl prints them for a CRD that has the
/// condition (a recorded CRD is not in the fixtures; the conditions are the apiserver's
/// documented shape).
#[test]
fn crd_lines_printed_by_kubectl_parse() {
    let crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "sealedsecrets.bitnami.com"},
        "spec": {"group": "bitnami.com", "names": {"kind": "SealedSecret", "plural": "sealedsecrets"}, "scope": "Namespaced", "versions": []},
        "status": {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]}});
    let template = health::GET_CRDS
        .split_once("jsonpath='{range .items[*]}")
        .and_then(|(_, t)| t.strip_suffix("{end}'"))
        .expect("the CRD template");
    let lines = jsonpath(&[crd], template);
    assert_eq!(lines, "sealedsecrets.bitnami.com\tTrue\n");
    let s = Snapshot::parse(&format!("#bootstrap-crds\n{lines}")).unwrap();
    let c = s
        .get("CustomResourceDefinition", "", "sealedsecrets.bitnami.com")
        .unwrap();
    assert_eq!(c["status"]["conditions"][0]["status"], "True");
}
