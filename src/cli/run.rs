//! The commands that converge or take apart: `up`, `plan`, `node add|replace|remove` and
//! `reset`. Each reads the facts of the hosts it concerns (under the run lock unless it only
//! plans), asks the plan for its steps, and prints them or hands them to the executor.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::Ctx;
use crate::apply::{Report, Writer};
use crate::connect::{self, Host};
use crate::facts::{self, Facts, LocalFacts, Request};
use crate::inventory::edit::{self, NewNode};
use crate::inventory::Inventory;
use crate::k3s::Role;
use crate::outcome::{is_usage, usage};
use crate::plan::{self, render, Plan};
use crate::report::OutputFormat;

/// Every host's facts, and the cluster through the servers of `inv` but `exclude` (a node on
/// its way out).
pub(super) fn take_out_request(
    inv: &Inventory,
    hosts: Vec<Host>,
    exclude: Option<&str>,
) -> Request {
    Request {
        hosts,
        host_facts: true,
        api_from: inv
            .servers()
            .filter(|s| Some(s.name.as_str()) != exclude)
            .map(|s| s.name.clone())
            .collect(),
        progress: true,
        ..Default::default()
    }
}

/// The request of a command that converges `inv`: also what its add-ons need and the
/// secrets a new cluster would get.
fn converge_request(
    inv: &Inventory,
    hosts: Vec<Host>,
    local: &LocalFacts,
    exclude: Option<&str>,
) -> Request {
    Request {
        addons: !local.addons.is_empty(),
        waits: local.addons.wait_kinds(),
        longhorn: inv.addons.longhorn.is_some(),
        snapshot_dir: inv.custom_snapshot_dir(),
        sysctl: inv
            .os
            .as_ref()
            .map(|o| o.sysctl.keys().cloned().collect())
            .unwrap_or_default(),
        sealing_key: inv.addons.sealed_secrets.is_some() && local.sealing_backup.is_none(),
        new_secrets: true,
        ..take_out_request(inv, hosts, exclude)
    }
}

/// Read the facts without the lock, for a plan that is only shown.
async fn read_only(
    cx: &Ctx,
    inv: &Inventory,
    mut req: Request,
    local: LocalFacts,
) -> Result<Facts> {
    req.hosts.iter_mut().for_each(Host::read_only);
    let reads = facts::read(&req, cx.opts.parallel, &cx.rep).await;
    let (_, facts) = reads.into_facts(inv, &req, local).await?;
    Ok(facts)
}

/// Print a plan that is only shown (`plan`, `--plan`).
fn show(cx: &Ctx, plan: &Plan, hosts: &[Host], command: &str) {
    for h in hosts {
        cx.rep.done(&h.key, Ok(()));
    }
    let apply = if command == "plan" {
        "run `bootstrap up` to apply".to_string()
    } else {
        format!("run `bootstrap {command}` without --plan to apply")
    };
    match cx.rep.format() {
        OutputFormat::Json => cx.rep.emit(render::json(plan)),
        OutputFormat::Text => print!("{}", render::text(plan, &apply)),
    }
}

/// Plan (or refuse) and execute under the lock taken while reading the facts.
pub(super) async fn converge(
    cx: &Ctx,
    inv: &Inventory,
    req: Request,
    local: LocalFacts,
    command: &str,
    plan_only: bool,
    make: impl FnOnce(&Facts) -> Result<Plan>,
) -> Result<Option<Report>> {
    let hosts = req.hosts.clone();
    if plan_only {
        let facts = read_only(cx, inv, req, local).await?;
        show(cx, &make(&facts)?, &hosts, command);
        return Ok(None);
    }
    let (writer, facts) = Writer::open(inv, req, local, command, &cx.opts, &cx.rep).await?;
    let plan = make(&facts);
    let report = writer.execute(plan, &cx.opts, &cx.rep).await?;
    for h in &hosts {
        cx.rep.done(&h.key, Ok(()));
    }
    Ok(Some(report))
}

/// The summary line and event (none for a plan that was only shown, or for bad input).
pub(super) fn finish(
    cx: &Ctx,
    plan_only: bool,
    result: Result<Option<Report>>,
    ok: impl Fn(&Report) -> String,
) -> Result<()> {
    let name = &cx.inv.cluster.name;
    match result {
        Ok(None) => Ok(()),
        Err(e) if plan_only => Err(e),
        Ok(Some(mut report)) => {
            // What was done, as reported step by step (label changes through the API too).
            report.changes = cx.rep.changes();
            cx.rep.finish(
                true,
                &ok(&report),
                serde_json::json!({
                    "round_trips": report.round_trips,
                    "kubeconfig": report.kubeconfig,
                    "phases": report.phases,
                    "waiting_seconds": report.waiting_seconds,
                }),
            );
            Ok(())
        }
        Err(e) if is_usage(&e) => Err(e),
        Err(e) => {
            cx.rep
                .finish(false, &format!("{name}: failed"), serde_json::json!({}));
            Err(e)
        }
    }
}

fn converged(cluster: &str) -> impl Fn(&Report) -> String + '_ {
    move |r| {
        if r.changes == 0 {
            format!("{cluster}: converged, no changes")
        } else {
            format!("{cluster}: converged")
        }
    }
}

pub async fn up(cx: &Ctx) -> Result<()> {
    let r = install(cx).await;
    finish(cx, false, r, converged(&cx.inv.cluster.name))
}

/// What `up` does, without its summary: for a command that converges first.
pub(super) async fn install(cx: &Ctx) -> Result<Option<Report>> {
    let inv = &cx.inv;
    let local = facts::local::read(inv)?;
    let req = converge_request(inv, connect::hosts(inv)?, &local, None);
    converge(cx, inv, req, local, "up", false, |f| {
        plan::up(inv, f, &cx.settings)
    })
    .await
}

pub async fn plan(cx: &Ctx) -> Result<()> {
    let inv = &cx.inv;
    let local = facts::local::read(inv)?;
    let req = converge_request(inv, connect::hosts(inv)?, &local, None);
    converge(cx, inv, req, local, "plan", true, |f| {
        plan::up(inv, f, &cx.settings)
    })
    .await
    .map(|_| ())
}

/// The inventory file as it is now, validated.
fn load(path: &Path) -> Result<(Inventory, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
    let inv = Inventory::from_str_at(&text, path).map_err(usage)?;
    Ok((inv, text))
}

pub async fn node_add(
    cx: &Ctx,
    name: &str,
    host: &str,
    role: &str,
    labels: &[String],
    taints: &[String],
    plan_only: bool,
) -> Result<()> {
    let path = cx.inv.path();
    let mut map = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| usage(format!("--label {l:?}: expected key=value")))?;
        map.insert(k.to_string(), v.to_string());
    }
    let node = NewNode {
        name: name.to_string(),
        host: host.to_string(),
        role: role.to_string(),
        labels: map,
        taints: taints.to_vec(),
    };
    let (_, text) = load(path)?;
    let new_text = edit::add_node(&text, path, &node).map_err(usage)?;
    let inv = edit::validate_added(&text, &new_text, path).map_err(usage)?;
    let local = facts::local::read(&inv)?;
    let req = converge_request(&inv, connect::hosts(&inv)?, &local, None);
    let r = converge(cx, &inv, req, local, "node add", plan_only, |f| {
        plan::add(&inv, &new_text, f, &cx.settings)
    })
    .await;
    finish(cx, plan_only, r, converged(&inv.cluster.name))
}

pub async fn node_replace(
    cx: &Ctx,
    name: &str,
    new_host: &str,
    force: bool,
    plan_only: bool,
) -> Result<()> {
    let path = cx.inv.path();
    let (inv, text) = load(path)?;
    let old = inv
        .node(name)
        .ok_or_else(|| usage(inv.unknown_node(name)))?
        .clone();
    if let Some(other) = inv
        .nodes
        .iter()
        .find(|n| n.host == new_host && n.name != name)
    {
        return Err(usage(format!(
            "{new_host} is already the host of node {}",
            other.name
        )));
    }
    let new_text = edit::set_host(&text, path, name, new_host).map_err(usage)?;
    let new_inv = edit::validate(&new_text, path).map_err(usage)?;
    if old.is_server() && inv.servers().count() == 1 {
        return Err(usage(format!(
            "{name} is the only server: replacing it would start a new cluster. While it runs, add a server first (bootstrap node add ... --role server), then replace {name}; if its host is lost, only a snapshot brings the cluster back: bootstrap node replace {} {name} --host {new_host} --from-snapshot latest (or a snapshot's name: a copy in .bootstrap/snapshots/ or in the bucket of [etcd.s3])", path.display()
        )));
    }
    let mut hosts = connect::hosts(&new_inv)?;
    if old.host != new_host {
        hosts.push(connect::old_host(&inv, &old, &old.host)?);
    }
    let local = facts::local::read(&new_inv)?;
    let req = converge_request(&new_inv, hosts, &local, Some(name));
    let r = converge(cx, &new_inv, req, local, "node replace", plan_only, |f| {
        plan::lifecycle::replace(&new_inv, &new_text, name, &old.host, force, f, &cx.settings)
    })
    .await;
    finish(cx, plan_only, r, converged(&new_inv.cluster.name))
}

/// The hosts a command that takes nodes out talks to: every server (for the lock and the
/// API) and the nodes it works on, none of them required (they may be dead).
pub(super) fn tolerant_hosts(inv: &Inventory, also: impl Fn(&str) -> bool) -> Result<Vec<Host>> {
    let mut hosts = connect::hosts(inv)?;
    hosts.retain(|h| h.role == Role::Server || also(&h.key));
    for h in &mut hosts {
        h.required = false;
    }
    Ok(hosts)
}

pub async fn node_remove(cx: &Ctx, name: &str, force: bool, plan_only: bool) -> Result<()> {
    let path = cx.inv.path();
    let (inv, text) = load(path)?;
    let node = inv
        .node(name)
        .ok_or_else(|| usage(inv.unknown_node(name)))?
        .clone();
    if node.is_server() && inv.servers().count() == 1 {
        return Err(usage(format!(
            "{name} is the last server: removing it would destroy the cluster; use `bootstrap reset` to tear the whole cluster down"
        )));
    }
    let new_text = edit::remove_node(&text, path, name).map_err(usage)?;
    edit::validate(&new_text, path).map_err(usage)?;
    let local = facts::local::read(&inv)?;
    let req = take_out_request(&inv, tolerant_hosts(&inv, |k| k == name)?, Some(name));
    let r = converge(cx, &inv, req, local, "node remove", plan_only, |f| {
        plan::lifecycle::remove(&inv, &new_text, name, force, f)
    })
    .await;
    let cluster = inv.cluster.name.clone();
    finish(cx, plan_only, r, |_| format!("{cluster}: {name} removed"))
}

pub async fn reset(
    cx: &Ctx,
    node: Option<&str>,
    force: bool,
    yes: bool,
    plan_only: bool,
) -> Result<()> {
    let inv = &cx.inv;
    if let Some(n) = node {
        if inv.node(n).is_none() {
            return Err(usage(inv.unknown_node(n)));
        }
    }
    if !plan_only {
        let what = match node {
            Some(n) => format!("uninstall k3s from {n} (its data is deleted)"),
            None => format!(
                "uninstall k3s from all {} hosts of cluster {} (all cluster data is deleted)",
                inv.nodes.len(),
                inv.cluster.name
            ),
        };
        super::confirm(&what, yes)?;
    }
    let local = facts::local::read(inv)?;
    let hosts = tolerant_hosts(inv, |k| node.is_none_or(|n| n == k))?;
    let mut req = take_out_request(inv, hosts, node);
    if node.is_none() {
        // Nothing goes through the API when every host goes.
        req.api_from.clear();
    }
    let r = converge(cx, inv, req, local, "reset", plan_only, |f| {
        plan::lifecycle::reset(inv, node, force, f)
    })
    .await;
    let cluster = inv.cluster.name.clone();
    finish(cx, plan_only, r, |_| format!("{cluster}: k3s uninstalled"))
}
