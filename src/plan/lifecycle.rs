//! Day two: the steps that take a node's old host out of the cluster before `node replace`
//! converges the new inventory, those of `node remove`, and those of `reset`. The inventory
//! file is written by a step too, after the cluster-side steps, so an interrupted run leaves
//! it as it was.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};

use super::{Action, Group, Mode, Phase, Plan, Step, Unmanaged};
use crate::connect::retired;
use crate::facts::Facts;
use crate::inventory::{Inventory, Node};
use crate::k3s::Role;
use crate::outcome::usage;

/// The longest the drain of a node being replaced may take, in seconds: its workloads come
/// back on the new host anyway.
const REPLACE_DRAIN_LIMIT: u64 = 120;

/// Whether removing server `name` keeps etcd quorum: the servers left must have a majority of
/// Ready members.
pub fn quorum_after_removal(servers: &BTreeMap<String, bool>, name: &str) -> Result<(), String> {
    let left: Vec<(&String, &bool)> = servers.iter().filter(|(n, _)| *n != name).collect();
    if left.is_empty() {
        return Err(format!("{name} is the last server"));
    }
    let ready = left.iter().filter(|(_, r)| **r).count();
    let need = left.len() / 2 + 1;
    if ready < need {
        return Err(format!(
            "after removing {name}, {ready} of the {} remaining servers are Ready and etcd needs {need} for quorum",
            left.len()
        ));
    }
    Ok(())
}

/// `inventory`: write the edited inventory.
pub(crate) fn inventory_phase(path: &Path, text: &str) -> Phase {
    let write = Action::WriteInventory {
        path: path.to_path_buf(),
        text: text.to_string(),
    };
    Phase::single("inventory", "local", vec![Step::local(write)])
}

/// The cluster-side and host steps that take node `node` out, in k3s's order: a server's
/// Node (and etcd member) goes before its host is stopped, an agent's after, so neither
/// quorum is lost nor the old agent registers again. `host_key` is the key of the host to
/// uninstall (`None`: leave it).
fn take_out(
    plan: &mut Plan,
    facts: &Facts,
    node: &Node,
    host_key: Option<&str>,
    drain: Option<(Option<u64>, Unmanaged)>,
    cluster_steps: bool,
) -> Vec<Step> {
    let api = facts.cluster.api.clone().filter(|_| cluster_steps);
    let current = api.as_ref().and(facts.cluster.node(&node.name));
    let mut steps = Vec::new();
    if let (Some(a), Some(n), Some((limit_secs, unmanaged))) = (&api, current, drain) {
        if n.ready {
            steps.push(Step::api(
                a,
                Action::Drain {
                    node: node.name.clone(),
                    limit_secs,
                    unmanaged,
                },
            ));
        } else {
            // A NotReady node's pods cannot terminate: a drain would only time out. Deleting
            // the Node lets them be rescheduled.
            plan.warnings.push(format!(
                "{}: the node is NotReady; not draining it",
                node.name
            ));
        }
    }
    let delete = |a: &String| {
        Step::api(
            a,
            Action::DeleteNode {
                node: node.name.clone(),
            },
        )
    };
    if let (Role::Server, Some(a), Some(_)) = (node.role, &api, current) {
        steps.push(delete(a));
    }
    if let Some(key) = host_key {
        match (facts.host(key), facts.unreachable.get(key)) {
            (Some(f), _) if !f.residue.is_empty() => {
                steps.push(Step::host(key, Action::Uninstall));
            }
            (Some(_), _) => {}
            (None, why) => plan.warnings.push(format!(
                "{}: the host is unreachable ({}); k3s is left on it{}",
                node.name,
                why.map(String::as_str).unwrap_or("not connected"),
                if node.is_server() {
                    ". If it comes back, that k3s rejoins the cluster by itself at its next start (a removed etcd member whose config names a server rejoins as a new one, k3s pkg/etcd/etcd.go:680-691): on that host, run /usr/local/bin/k3s-uninstall.sh, or at least `systemctl disable --now k3s`, before it starts k3s again"
                } else {
                    ""
                }
            )),
        }
    }
    if let (Role::Agent, Some(a), Some(_)) = (node.role, &api, current) {
        steps.push(delete(a));
    }
    steps
}

/// Pods without a controller on a node that goes: refused, unless `--force` deletes them.
fn unmanaged(force: bool) -> Unmanaged {
    if force {
        Unmanaged::Delete
    } else {
        Unmanaged::Refuse
    }
}

/// Refuse to take server `name` out when the servers left would lack etcd quorum, unless
/// `force` (then a warning).
fn quorum_guard(
    plan: &mut Plan,
    inv: &Inventory,
    facts: &Facts,
    name: &str,
    force: bool,
) -> Result<()> {
    let servers: BTreeMap<String, bool> = inv
        .servers()
        .map(|s| {
            let ready = facts.cluster.node(&s.name).is_some_and(|o| o.ready);
            (s.name.clone(), ready)
        })
        .collect();
    if let Err(why) = quorum_after_removal(&servers, name) {
        if !force {
            return Err(usage(format!(
                "refusing to remove {name}: {why}; bring the other servers back first, or pass --force"
            )));
        }
        plan.warnings
            .push(format!("{why}; going on because of --force"));
    }
    Ok(())
}

/// `node replace NAME --host NEW`: drain and delete the Node and uninstall the old host
/// (unless the Node already runs on the new host: an earlier replace got that far), write
/// the inventory `text` (the new host in it), then converge `new_inv` as `up` does.
pub fn replace(
    new_inv: &Inventory,
    text: &str,
    name: &str,
    old_address: &str,
    force: bool,
    facts: &Facts,
    settings: &super::Settings,
) -> Result<Plan> {
    let node = new_inv
        .node(name)
        .ok_or_else(|| anyhow!("{name} vanished from the inventory"))?;
    let api = facts.cluster.api.clone().ok_or_else(|| {
        anyhow!(
            "replacing a node needs the cluster's API on another server: {}",
            facts.cluster.unanswered.join("; ")
        )
    })?;
    let mut plan = Plan::new(new_inv, &api);
    let old = (old_address != node.host).then(|| retired(name));
    let already = moved(facts, name, &node.host, old.as_deref());
    let steps = take_out(
        &mut plan,
        facts,
        node,
        old.as_deref(),
        Some((Some(REPLACE_DRAIN_LIMIT), unmanaged(force))),
        !already,
    );
    if !steps.is_empty() {
        plan.phases.push(Phase::single("retire", name, steps));
    }
    plan.phases.push(inventory_phase(new_inv.path(), text));
    // The converge sees the cluster as it will be: without the old Node.
    let mut nodes = facts.cluster.nodes.clone();
    if !already {
        nodes.retain(|n| n.name != name);
    }
    super::converge(&mut plan, new_inv, facts, settings, nodes)?;
    Ok(plan)
}

/// Whether the Node `name` already runs on `host` (an earlier `node replace` got that far):
/// k3s runs there and registered, and the host bootstrap recorded on the Node when it
/// converged it is `host`, else an address k3s records for the Node is one of `host`'s own and
/// none of the old host's (`old`: its facts key).
/// Never the Node's InternalIP against the inventory's host: k3s's InternalIP is an interface
/// address (pkg/util/net.go:138-150), which a DNS name or a NAT'd public address is not.
pub(crate) fn moved(facts: &Facts, name: &str, host: &str, old: Option<&str>) -> bool {
    let Some(n) = facts.cluster.node(name) else {
        return false;
    };
    // k3s runs on the new host and it registered (its node password exists): else the Node is
    // another machine's, whatever it records (a machine rebuilt behind the same name).
    let running = facts
        .host(name)
        .is_some_and(|f| f.node_password && (f.server.is_active() || f.agent.is_active()));
    if !running {
        return false;
    }
    if let Some(h) = super::labels::recorded_host(n) {
        return h == host;
    }
    let mine: Vec<&str> = facts
        .host(name)
        .map(|f| f.addresses.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let theirs: Vec<&str> = old
        .and_then(|k| facts.host(k))
        .map(|f| f.addresses.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let on = |set: &[&str]| n.addresses.iter().any(|a| set.contains(&a.as_str()));
    (on(&mine) || n.addresses.iter().any(|a| a == host)) && !on(&theirs)
}

/// `node remove NAME`: refuse when etcd would lose quorum (unless `force`), then drain and
/// delete the Node, uninstall its host, and write the inventory `text` without it.
pub fn remove(inv: &Inventory, text: &str, name: &str, force: bool, facts: &Facts) -> Result<Plan> {
    let node = inv
        .node(name)
        .ok_or_else(|| usage(inv.unknown_node(name)))?;
    let api = facts.cluster.api.clone();
    let mut plan = Plan::new(inv, api.as_deref().unwrap_or(""));
    if api.is_none() {
        let why = format!(
            "no other server has a working API: {}",
            facts.cluster.unanswered.join("; ")
        );
        if !force {
            return Err(anyhow!("removing a node needs the cluster's API: {why}"));
        }
        plan.warnings
            .push(format!("{why}; --force: going on without the API"));
    }
    if node.is_server() && api.is_some() {
        quorum_guard(&mut plan, inv, facts, name, force)?;
    }
    let steps = take_out(
        &mut plan,
        facts,
        node,
        Some(name),
        Some((None, unmanaged(force))),
        true,
    );
    if !steps.is_empty() {
        plan.phases.push(Phase::single("remove", name, steps));
    }
    plan.phases.push(inventory_phase(inv.path(), text));
    Ok(plan)
}

/// `name: why it could not be reached`, for the plan's list of hosts left as they are.
pub(crate) fn unreachable(facts: &Facts, name: &str) -> String {
    let why = facts.unreachable.get(name).map(String::as_str);
    format!("{name}: {}", why.unwrap_or("not connected"))
}

/// `reset [--node NAME]`: uninstall k3s from every host that has any of it (agents side by
/// side, then servers one at a time), or from the one node. For one node the Node goes
/// through another server in k3s's order, as `node remove` does: a server's Node (and with
/// it its etcd member, removed by k3s's Node removal handler, which needs quorum: k3s
/// pkg/etcd/member_controller.go:117-139, etcd.go:1117-1119) is deleted before its host is
/// uninstalled, under the same quorum guard; an agent's after, so it does not register
/// again. Hosts that cannot be reached are named, and the run fails after the others are
/// done.
pub fn reset(inv: &Inventory, only: Option<&str>, force: bool, facts: &Facts) -> Result<Plan> {
    let api = facts.cluster.api.clone();
    let mut plan = Plan::new(inv, api.as_deref().unwrap_or(""));
    if let Some(node) = only.and_then(|n| inv.node(n)) {
        if node.is_server() && api.is_some() && facts.cluster.node(&node.name).is_some() {
            quorum_guard(&mut plan, inv, facts, &node.name, force)?;
        }
        let reached = facts.host(&node.name).is_some();
        if !reached {
            plan.unreachable.push(unreachable(facts, &node.name));
        }
        let key = reached.then_some(node.name.as_str());
        let steps = take_out(&mut plan, facts, node, key, None, true);
        if !steps.is_empty() {
            plan.phases.push(Phase::single("reset", &node.name, steps));
        }
        return Ok(plan);
    }
    for role in [Role::Agent, Role::Server] {
        let mut groups = Vec::new();
        for n in inv.nodes.iter().filter(|n| n.role == role) {
            match facts.host(&n.name) {
                Some(f) if !f.residue.is_empty() => {
                    groups.extend(Group::on_host(&n.name, vec![Action::Uninstall]))
                }
                Some(_) => {}
                None => plan.unreachable.push(unreachable(facts, &n.name)),
            }
        }
        let (name, mode) = match role {
            Role::Agent => ("reset agents", Mode::Parallel),
            Role::Server => ("reset servers", Mode::Serial),
        };
        plan.phases.extend(Phase::of(name, mode, groups));
    }
    Ok(plan)
}
