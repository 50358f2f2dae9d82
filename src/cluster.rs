//! Cluster facts and cluster-side commands: what `k3s kubectl` on a healthy
//! server reports, parsed into the plan's types, and the kubectl scripts that
//! reconcile labels and taints. Everything here is pure; `apply` runs it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::plan::{NodeDrift, ObservedNode, Taint, MANAGED_ANNOTATION};
use crate::ssh::quote::sh_quote;

/// The command that reads every Node as JSON.
pub const GET_NODES: &str = "k3s kubectl get nodes -o json";

#[derive(Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<NodeJson>,
}

#[derive(Deserialize)]
struct NodeJson {
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    taints: Vec<TaintJson>,
    #[serde(default)]
    unschedulable: bool,
}

#[derive(Deserialize)]
struct TaintJson {
    key: String,
    #[serde(default)]
    value: String,
    effect: String,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default, rename = "nodeInfo")]
    node_info: NodeInfo,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Deserialize, Default)]
struct NodeInfo {
    #[serde(default, rename = "kubeletVersion")]
    kubelet_version: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not read `kubectl get nodes -o json`: {0}")]
pub struct ParseError(#[from] serde_json::Error);

/// Parse `kubectl get nodes -o json`.
pub fn parse_nodes(json: &str) -> Result<Vec<ObservedNode>, ParseError> {
    let list: NodeList = serde_json::from_str(json)?;
    Ok(list
        .items
        .into_iter()
        .map(|n| ObservedNode {
            ready: n
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True"),
            version: n.status.node_info.kubelet_version,
            name: n.metadata.name,
            labels: n.metadata.labels,
            annotations: n.metadata.annotations,
            taints: n
                .spec
                .taints
                .into_iter()
                .map(|t| Taint {
                    key: t.key,
                    value: t.value,
                    effect: t.effect,
                })
                .collect(),
            unschedulable: n.spec.unschedulable,
        })
        .collect())
}

/// The kubectl commands (one shell script, `set -e`) that apply `drift` to `node`.
pub fn drift_script(node: &str, drift: &NodeDrift) -> String {
    let n = sh_quote(node);
    let mut s = String::new();
    let mut set: Vec<String> = drift
        .set_labels
        .iter()
        .map(|(k, v)| sh_quote(&format!("{k}={v}")))
        .collect();
    set.extend(
        drift
            .remove_labels
            .iter()
            .map(|k| sh_quote(&format!("{k}-"))),
    );
    if !set.is_empty() {
        s.push_str(&format!(
            "k3s kubectl label node {n} --overwrite {}\n",
            set.join(" ")
        ));
    }
    for t in &drift.remove_taints {
        s.push_str(&format!(
            "k3s kubectl taint node {n} {}\n",
            sh_quote(&format!("{}-", t.spec()))
        ));
    }
    for t in &drift.add_taints {
        s.push_str(&format!(
            "k3s kubectl taint node {n} --overwrite {}\n",
            sh_quote(&t.spec())
        ));
    }
    if let Some(a) = &drift.annotation {
        s.push_str(&format!(
            "k3s kubectl annotate node {n} --overwrite {}\n",
            sh_quote(&format!("{MANAGED_ANNOTATION}={a}"))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = r#"{"apiVersion":"v1","items":[
      {"metadata":{"name":"master-1","labels":{"node-role.kubernetes.io/control-plane":"true"},
        "annotations":{"bootstrap.k3s.io/managed":"{\"labels\":[],\"taints\":[]}"}},
       "spec":{"taints":[{"key":"node-role.kubernetes.io/control-plane","value":"true","effect":"NoSchedule"}]},
       "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.36.3+k3s1"}}},
      {"metadata":{"name":"worker-1"},"spec":{"unschedulable":true},
       "status":{"conditions":[{"type":"Ready","status":"Unknown"}],"nodeInfo":{"kubeletVersion":"v1.36.3+k3s1"}}}
    ],"kind":"List","metadata":{"resourceVersion":""}}"#;

    #[test]
    fn parses_node_list() {
        let nodes = parse_nodes(NODES).unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].ready);
        assert_eq!(
            nodes[0].taints[0].spec(),
            "node-role.kubernetes.io/control-plane=true:NoSchedule"
        );
        assert!(!nodes[1].ready);
        assert!(nodes[1].unschedulable);
        assert_eq!(nodes[1].version, "v1.36.3+k3s1");
    }

    #[test]
    fn drift_script_quotes_everything() {
        let drift = NodeDrift {
            set_labels: BTreeMap::from([("a".to_string(), "b c".to_string())]),
            remove_labels: vec!["old".into()],
            add_taints: vec![Taint::parse("k=v:NoSchedule").unwrap()],
            remove_taints: vec![Taint::parse("x:NoExecute").unwrap()],
            annotation: Some(r#"{"labels":["a"],"taints":["k:NoSchedule"]}"#.into()),
        };
        let s = drift_script("worker-1", &drift);
        assert!(
            s.contains("k3s kubectl label node worker-1 --overwrite 'a=b c' old-\n"),
            "{s}"
        );
        assert!(
            s.contains("k3s kubectl taint node worker-1 x:NoExecute-\n"),
            "{s}"
        );
        assert!(
            s.contains("k3s kubectl taint node worker-1 --overwrite k=v:NoSchedule\n"),
            "{s}"
        );
        assert!(
            s.contains("annotate node worker-1 --overwrite 'bootstrap.k3s.io/managed="),
            "{s}"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_nodes("not json").is_err());
        assert!(parse_nodes("{\"items\":[{\"metadata\":{}}]}").is_err());
    }
}
