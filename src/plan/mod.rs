//! The plan: a pure function from (inventory, facts) to the steps every host and the cluster
//! need, as a list of phases. Nothing here does I/O, so a plan cannot write, and every rule
//! of convergence is tested without a host. `bootstrap plan` prints the value; `up` hands the
//! same value to the executor (src/apply), which is the only code that writes.
//!
//! `up` is this list, each phase in its own file:
//! [`secrets`] (backups) → [`os`] (the hosts' own settings, the clock check) → [`prerequisites`] → [`artifacts`] → [`servers`] → [`agents`] →
//! [`upgrade`] → [`labels`] (nodes-ready, labels) → [`addons`] (add-ons, add-on health) →
//! [`kubeconfig`]. [`lifecycle`] puts the steps of `node replace|remove` and `reset` in front
//! (or instead); [`hosts`] holds the per-host decisions the middle phases share.

mod action;
mod addons;
mod agents;
mod artifacts;
pub mod config;
pub mod etcd;
pub mod hosts;
mod kubeconfig;
pub mod labels;
pub mod lifecycle;
pub mod os;
mod prerequisites;
pub mod render;
pub mod secrets;
mod servers;
mod snapshot_dir;
pub mod status;
mod upgrade;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

pub use action::{Action, Applied, FileSpec, On, Release, Source, Step, Unmanaged};
pub use hosts::{HostPlan, Join, JOIN_DROPIN};
pub use labels::{NodeDrift, MANAGED_ANNOTATION};

use crate::addons::sealed_secrets::SealingKey;
use crate::facts::{Facts, ObservedNode};
use crate::inventory::Inventory;
use crate::k3s::token::TokenBackup;

/// How a phase runs its groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One group after another; the first failure stops the run.
    Serial,
    /// Side by side, bounded by `--parallel`; every group runs, then a failure stops the run.
    Parallel,
    /// This many at a time, batch after batch; a failed batch stops the run.
    Batches(usize),
    /// Every step in one script through the API server.
    OneScript,
}

/// The steps about one host (or the cluster, or this machine), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Who the steps are reported under.
    pub host: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: &'static str,
    pub mode: Mode,
    pub groups: Vec<Group>,
    /// Said after the errors when the phase fails: what that means for the hosts.
    pub on_error: Option<&'static str>,
}

impl Phase {
    /// A phase of `groups`, or `None` when there are none.
    pub(crate) fn of(name: &'static str, mode: Mode, groups: Vec<Group>) -> Option<Phase> {
        (!groups.is_empty()).then_some(Phase {
            name,
            mode,
            groups,
            on_error: None,
        })
    }

    /// A phase of one group: `steps`, reported under `host`.
    pub(crate) fn single(name: &'static str, host: &str, steps: Vec<Step>) -> Phase {
        Phase {
            name,
            mode: Mode::Serial,
            groups: vec![Group {
                host: host.to_string(),
                steps,
            }],
            on_error: None,
        }
    }
}

impl Group {
    /// `actions` on host `name`, or `None` when there are none.
    pub(crate) fn on_host(name: &str, actions: Vec<Action>) -> Option<Group> {
        (!actions.is_empty()).then(|| Group {
            host: name.to_string(),
            steps: actions.into_iter().map(|a| Step::host(name, a)).collect(),
        })
    }
}

/// What a command will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cluster: String,
    /// The server kubectl runs through.
    pub api: String,
    pub phases: Vec<Phase>,
    /// Told before anything runs.
    pub warnings: Vec<String>,
    /// Hosts the plan must leave out because they could not be reached: the run fails
    /// once the rest is done.
    pub unreachable: Vec<String>,
    /// Each host's clock against this machine's, in milliseconds.
    pub clocks: Vec<(String, i64)>,
}

impl Plan {
    pub fn new(inv: &Inventory, api: &str) -> Plan {
        Plan {
            cluster: inv.cluster.name.clone(),
            api: api.to_string(),
            phases: Vec::new(),
            warnings: Vec::new(),
            unreachable: Vec::new(),
            clocks: Vec::new(),
        }
    }

    /// Every step with its phase and the host it is reported under.
    pub fn steps(&self) -> impl Iterator<Item = (&Phase, &str, &Step)> {
        self.phases.iter().flat_map(|p| {
            p.groups
                .iter()
                .flat_map(move |g| g.steps.iter().map(move |s| (p, report_host(g, s), s)))
        })
    }

    /// How many steps change the cluster.
    pub fn changes(&self) -> usize {
        self.steps()
            .filter(|(_, _, s)| s.action.is_change())
            .count()
    }
}

/// The host a step is reported under: the host it runs on, else its group's.
pub fn report_host<'a>(g: &'a Group, s: &'a Step) -> &'a str {
    match &s.on {
        On::Host(h) => h,
        On::Api(_) | On::Local => &g.host,
    }
}

/// Choices given on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Agents upgraded at once.
    pub max_unavailable: usize,
}

/// What the phases of a converge share.
pub(crate) struct Cx<'a> {
    pub inv: &'a Inventory,
    pub facts: &'a Facts,
    pub settings: &'a Settings,
    /// The server kubectl runs through.
    pub api: String,
    /// The Nodes as they will be when the phases start (a replaced node's old Node gone).
    pub nodes: Vec<ObservedNode>,
    pub hosts: BTreeMap<String, HostPlan>,
    pub sealing_key: Option<SealingKey>,
}

/// `up`: converge the cluster to the inventory.
pub fn up(inv: &Inventory, facts: &Facts, settings: &Settings) -> Result<Plan> {
    let mut plan = Plan::new(inv, "");
    converge(&mut plan, inv, facts, settings, facts.cluster.nodes.clone())?;
    Ok(plan)
}

/// `node add`: write the inventory `text` (the node in it), then converge `new_inv`.
pub fn add(new_inv: &Inventory, text: &str, facts: &Facts, settings: &Settings) -> Result<Plan> {
    let mut plan = Plan::new(new_inv, "");
    plan.phases
        .push(lifecycle::inventory_phase(new_inv.path(), text));
    converge(
        &mut plan,
        new_inv,
        facts,
        settings,
        facts.cluster.nodes.clone(),
    )?;
    Ok(plan)
}

/// The server kubectl runs through: the one that answered, else one with the cluster's data,
/// else the first server of the inventory (it is installed first).
fn api_server(inv: &Inventory, facts: &Facts) -> String {
    facts
        .cluster
        .api
        .clone()
        .filter(|a| inv.node(a).is_some())
        .or_else(|| hosts::existing_server(inv, facts).map(|n| n.name.clone()))
        .unwrap_or_else(|| inv.first_server().name.clone())
}

/// The phases that converge `inv`, appended to `plan`. `nodes`: the Nodes as they will be
/// when these phases start.
pub(crate) fn converge(
    plan: &mut Plan,
    inv: &Inventory,
    facts: &Facts,
    settings: &Settings,
    nodes: Vec<ObservedNode>,
) -> Result<()> {
    hosts::check(inv, facts)?;
    let (tokens, _): (TokenBackup, _) = secrets::tokens(inv, facts)?;
    let cx = Cx {
        inv,
        facts,
        settings,
        api: api_server(inv, facts),
        nodes,
        hosts: hosts::plan_all(inv, facts, &tokens)?,
        sealing_key: secrets::sealing_key(inv, facts)?.map(|(k, _)| k),
    };
    plan.api = cx.api.clone();
    plan.clocks = inv
        .nodes
        .iter()
        .filter_map(|n| {
            let o = facts.clocks.get(&n.name)?;
            Some((n.name.clone(), (o * 1000.0).round() as i64))
        })
        .collect();
    let joins = cx.hosts.values().any(|p| p.fresh);
    if joins
        && hosts::existing_server(inv, facts).is_some()
        && secrets::ca_hash(inv, facts)?.is_none()
    {
        plan.warnings.push(
            "no server's /var/lib/rancher/k3s/server/token could be read: new nodes join with the bare password and trust the cluster CA on first use".into(),
        );
    }
    let mut phases: Vec<Option<Phase>> = vec![
        secrets::phase(inv, facts, &tokens)?,
        os::phase(&cx, &mut plan.warnings)?,
        prerequisites::phase(&cx, &mut plan.warnings)?,
        snapshot_dir::phase(&cx),
        artifacts::phase(&cx),
        servers::phase(&cx),
        agents::phase(&cx),
        upgrade::phase(&cx),
        labels::ready_phase(&cx),
        labels::phase(&cx),
    ];
    phases.extend(addons::phases(&cx)?.into_iter().map(Some));
    phases.push(kubeconfig::phase(&cx));
    plan.phases.extend(phases.into_iter().flatten());
    Ok(())
}

/// `kubeconfig [--merge]`: write the API server's kubeconfig beside the inventory (and merge
/// it into `merge`).
pub fn kubeconfig(inv: &Inventory, facts: &Facts, merge: Option<PathBuf>) -> Result<Plan> {
    let api = facts.cluster.api.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "no server has a working API; run `bootstrap up` first:\n  {}",
            facts.cluster.unanswered.join("\n  ")
        )
    })?;
    let mut plan = Plan::new(inv, &api);
    if let Some(step) = kubeconfig::step(inv, facts, &api, false, true, merge) {
        plan.phases
            .push(Phase::single("kubeconfig", "local", vec![step]));
    }
    Ok(plan)
}
