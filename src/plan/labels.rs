//! Phases `nodes-ready` and `labels`: once every node that (re)started is Ready, the label and
//! taint changes of every Node, through the API in one script. Only what bootstrap set
//! before or sets now is touched (DESIGN "Labels and taints"). `status` reports the same drift.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cx, Group, Mode, Phase, Step};
use crate::facts::ObservedNode;
use crate::inventory::{Node, Taint};
use crate::plan::Action;

/// Annotation on each Node recording which labels and taints bootstrap set, so it removes
/// only its own when the inventory drops them.
pub const MANAGED_ANNOTATION: &str = "bootstrap.k3s.io/managed";

/// Label and taint changes for one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDrift {
    pub set_labels: BTreeMap<String, String>,
    pub remove_labels: Vec<String>,
    pub add_taints: Vec<Taint>,
    pub remove_taints: Vec<Taint>,
    /// The new value of [`MANAGED_ANNOTATION`], when it changes.
    pub annotation: Option<String>,
}

impl NodeDrift {
    pub fn is_empty(&self) -> bool {
        self.set_labels.is_empty()
            && self.remove_labels.is_empty()
            && self.add_taints.is_empty()
            && self.remove_taints.is_empty()
            && self.annotation.is_none()
    }
}

impl std::fmt::Display for NodeDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (k, v) in &self.set_labels {
            parts.push(format!("label {k}={v}"));
        }
        for k in &self.remove_labels {
            parts.push(format!("remove label {k}"));
        }
        for t in &self.add_taints {
            parts.push(format!("taint {t}"));
        }
        for t in &self.remove_taints {
            parts.push(format!("remove taint {t}"));
        }
        if parts.is_empty() && self.annotation.is_some() {
            parts.push("record managed labels and taints".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// What bootstrap recorded it manages on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Managed {
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// Taint ids `key:Effect`.
    #[serde(default)]
    pub taints: BTreeSet<String>,
    /// The inventory host the Node was last converged from: what `node replace` reads to
    /// know a Node already runs on the new host (k3s records only interface addresses, which
    /// a DNS name or a NAT'd address never is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The inventory host recorded on a Node (see [`Managed::host`]).
pub fn recorded_host(observed: &ObservedNode) -> Option<String> {
    observed
        .annotations
        .get(MANAGED_ANNOTATION)
        .and_then(|s| serde_json::from_str::<Managed>(s).ok())
        .and_then(|m| m.host)
}

/// Labels and taints to change on `observed` so it matches `want`.
pub fn node_drift(want: &Node, observed: &ObservedNode) -> NodeDrift {
    let managed: Managed = observed
        .annotations
        .get(MANAGED_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let mut d = NodeDrift::default();
    let want_labels = want.all_labels();
    for (k, v) in &want_labels {
        if observed.labels.get(k) != Some(v) {
            d.set_labels.insert(k.clone(), v.clone());
        }
    }
    for k in &managed.labels {
        if !want_labels.contains_key(k) && observed.labels.contains_key(k) {
            d.remove_labels.push(k.clone());
        }
    }
    let want_ids: BTreeSet<String> = want.taints.iter().map(Taint::id).collect();
    for t in &want.taints {
        if !observed.taints.contains(t) {
            // A taint with the same key and effect but another value is replaced.
            if let Some(old) = observed.taints.iter().find(|o| o.id() == t.id()) {
                d.remove_taints.push(old.clone());
            }
            d.add_taints.push(t.clone());
        }
    }
    for o in &observed.taints {
        if managed.taints.contains(&o.id()) && !want_ids.contains(&o.id()) {
            d.remove_taints.push(o.clone());
        }
    }
    let now = Managed {
        labels: want_labels.keys().cloned().collect(),
        taints: want_ids,
        host: Some(want.host.clone()),
    };
    if now != managed || !observed.annotations.contains_key(MANAGED_ANNOTATION) {
        d.annotation = Some(serde_json::to_string(&now).unwrap_or_default());
    }
    d
}

/// A Node as it registers: with the config's `node-label`s and `node-taint`s, nothing else
/// of bootstrap's.
pub fn registered(node: &Node) -> ObservedNode {
    ObservedNode {
        name: node.name.clone(),
        labels: node.labels.clone(),
        taints: node.taints.clone(),
        ..Default::default()
    }
}

/// The Node of `node` as it will be when the labels phase runs: as observed, or as it
/// registers when its k3s starts in this run; `None` when it is not in the cluster and will
/// not be.
pub(crate) fn expected(cx: &Cx<'_>, node: &Node) -> Option<ObservedNode> {
    match cx.nodes.iter().find(|o| o.name == node.name) {
        Some(o) => Some(o.clone()),
        None => cx
            .hosts
            .get(&node.name)
            .filter(|h| h.restarts() || !h.fresh)
            .map(|_| registered(node)),
    }
}

/// A node of the inventory whose host has k3s but whose Node is not in the cluster (yet): an
/// agent still retrying its join, a run interrupted before the Node registered. The run is
/// not converged until it is there.
fn unregistered(cx: &Cx<'_>) -> bool {
    cx.inv.nodes.iter().any(|n| {
        cx.hosts.get(&n.name).is_some_and(|h| !h.fresh)
            && !cx.nodes.iter().any(|o| o.name == n.name)
    })
}

/// `nodes-ready`: when any k3s (re)starts, or a node's host has k3s but no Node yet, wait
/// until every node is registered and Ready.
pub(crate) fn ready_phase(cx: &Cx<'_>) -> Option<Phase> {
    if !cx.hosts.values().any(|h| h.restarts()) && !unregistered(cx) {
        return None;
    }
    let wait = Action::WaitNodesReady {
        nodes: cx.inv.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    Some(Phase::single(
        "nodes-ready",
        &cx.api,
        vec![Step::api(&cx.api, wait)],
    ))
}

/// `labels`: one step per Node whose labels or taints differ.
pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let groups: Vec<Group> = cx
        .inv
        .nodes
        .iter()
        .filter_map(|n| {
            let drift = node_drift(n, &expected(cx, n)?);
            (!drift.is_empty()).then(|| Group {
                host: n.name.clone(),
                steps: vec![Step::api(
                    &cx.api,
                    Action::Labels {
                        node: n.name.clone(),
                        drift,
                    },
                )],
            })
        })
        .collect();
    Phase::of("labels", Mode::OneScript, groups)
}
