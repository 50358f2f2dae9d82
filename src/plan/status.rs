//! `status`: every node's role, version and readiness, its label and taint drift (the same
//! function the labels phase plans with) and the add-ons' health, from the cluster facts.

use anyhow::{anyhow, Result};

use super::labels::node_drift;
use crate::addons::health::{self, AddonHealth};
use crate::facts::Facts;
use crate::inventory::Inventory;

/// One node's line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    /// The node's name (`host` in JSON, as in every other event).
    #[serde(rename = "host")]
    pub node: String,
    pub role: String,
    pub version: Option<String>,
    pub ready: bool,
    /// The host's clock against this machine's, in seconds (`None`: not read).
    pub clock_offset: Option<f64>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub nodes: Vec<NodeRow>,
    pub addons: Vec<AddonHealth>,
    pub healthy: bool,
}

pub fn status(inv: &Inventory, facts: &Facts) -> Result<Status> {
    let c = &facts.cluster;
    if c.api.is_none() {
        return Err(anyhow!(
            "no server has a working API; run `bootstrap up` first:\n  {}",
            c.unanswered.join("\n  ")
        ));
    }
    let want = inv.cluster.k3s_version;
    let mut healthy = true;
    let mut rows = Vec::new();
    for d in &inv.nodes {
        rows.push(match c.node(&d.name) {
            Some(n) => {
                let drift = node_drift(d, n);
                let mut notes = Vec::new();
                if !drift.is_empty() {
                    notes.push(format!("drift: {drift}"));
                }
                if n.unschedulable {
                    notes.push("cordoned".into());
                }
                if n.version() != Some(want) {
                    notes.push(format!("want {want}"));
                }
                healthy &= n.ready && drift.is_empty();
                NodeRow {
                    node: d.name.clone(),
                    role: d.role.command().into(),
                    version: Some(n.kubelet_version.clone()),
                    ready: n.ready,
                    clock_offset: None,
                    notes,
                }
            }
            None => {
                healthy = false;
                NodeRow {
                    node: d.name.clone(),
                    role: d.role.command().into(),
                    version: None,
                    ready: false,
                    clock_offset: None,
                    notes: vec!["not in the cluster".into()],
                }
            }
        });
    }
    for n in c.nodes.iter().filter(|n| inv.node(&n.name).is_none()) {
        rows.push(NodeRow {
            node: n.name.clone(),
            role: "?".into(),
            version: Some(n.kubelet_version.clone()),
            ready: n.ready,
            clock_offset: None,
            notes: vec!["not in the inventory".into()],
        });
    }
    let bound = inv.max_clock_offset_secs();
    for r in &mut rows {
        r.clock_offset = facts.clocks.get(&r.node).copied();
        if let Some(o) = r.clock_offset.filter(|o| o.abs() > f64::from(bound)) {
            healthy = false;
            r.notes.push(format!(
                "clock {} this machine's (more than {bound} s)",
                super::os::offset_text(o)
            ));
        }
    }
    // With the files `up` would write, health knows the values they carry.
    let spec = &facts.local.addons;
    let key = super::secrets::sealing_key(inv, facts)
        .ok()
        .flatten()
        .map(|(k, _)| k);
    let releases = match spec.files(key.as_ref()) {
        Ok(files) => spec.releases_for(&files),
        Err(_) => spec.releases(),
    };
    let addons: Vec<AddonHealth> = match &c.objects {
        Some(snap) => releases.iter().map(|r| health::evaluate(snap, r)).collect(),
        None => vec![],
    };
    healthy &= addons.iter().all(AddonHealth::healthy);
    Ok(Status {
        nodes: rows,
        addons,
        healthy,
    })
}
