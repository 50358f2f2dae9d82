//! The commands that read the cluster through its servers: `status`, `kubeconfig` (which
//! writes only on this machine) and `sealed-secrets cert`.

use anyhow::{anyhow, Result};

use super::Ctx;
use crate::addons::sealed_secrets::SealingKey;
use crate::apply;
use crate::connect;
use crate::facts::{self, Facts, Request};
use crate::plan;
use crate::report::OutputFormat;

/// The cluster through the first server that answers; `host_facts` also reads the servers'
/// own facts (the kubeconfig is among them).
pub(super) async fn cluster(
    cx: &Ctx,
    host_facts: bool,
    sealing_key: bool,
    merge: bool,
) -> Result<(connect::Sessions, Facts)> {
    read(cx, host_facts, sealing_key, merge, false, false).await
}

/// As [`cluster`], with the etcd snapshots the cluster records when `snapshots`, and every
/// node's clock (agents too) when `clocks`.
pub(super) async fn read(
    cx: &Ctx,
    host_facts: bool,
    sealing_key: bool,
    merge: bool,
    snapshots: bool,
    clocks: bool,
) -> Result<(connect::Sessions, Facts)> {
    let inv = &cx.inv;
    let local = facts::local::read(inv)?;
    let mut hosts = connect::hosts(inv)?;
    hosts.retain(|h| clocks || h.role == crate::k3s::Role::Server);
    for h in &mut hosts {
        h.required = false;
        h.read_only();
    }
    let req = Request {
        hosts,
        host_facts,
        api_from: inv.servers().map(|s| s.name.clone()).collect(),
        addons: !snapshots && !local.addons.releases().is_empty(),
        waits: local.addons.wait_kinds(),
        sealing_key,
        merge_target: merge,
        snapshots,
        clock: clocks,
        ..Default::default()
    };
    let reads = facts::read(&req, cx.opts.parallel, &cx.rep).await;
    reads.into_facts(inv, &req, local).await
}

pub async fn status(cx: &Ctx) -> Result<()> {
    let (_, facts) = read(cx, false, false, false, false, true).await?;
    let st = plan::status::status(&cx.inv, &facts)?;
    let addon_rows: Vec<serde_json::Value> = st
        .addons
        .iter()
        .map(|a| {
            serde_json::json!({
                "addon": a.chart.name, "healthy": a.healthy(), "job": a.job, "release": a.release,
                "problems": a.problems, "summary": a.summary(),
            })
        })
        .collect();
    match cx.rep.format() {
        OutputFormat::Json => cx.rep.emit(
            serde_json::json!({"event": "status", "cluster": cx.inv.cluster.name, "nodes": st.nodes, "addons": addon_rows, "healthy": st.healthy}),
        ),
        OutputFormat::Text => {
            // Versions, notes and health come from the cluster: printed clean.
            let mut table = format!(
                "{:<16} {:<7} {:<16} {:<6} {:<9} NOTES\n",
                "NODE", "ROLE", "VERSION", "READY", "CLOCK"
            );
            for r in &st.nodes {
                table.push_str(&format!(
                    "{:<16} {:<7} {:<16} {:<6} {:<9} {}\n",
                    r.node,
                    r.role,
                    r.version.as_deref().unwrap_or("-"),
                    if r.ready { "yes" } else { "no" },
                    r.clock_offset
                        .map(|o| format!("{o:+.1}s"))
                        .unwrap_or_else(|| "-".into()),
                    r.notes.join("; ")
                ));
            }
            if !st.addons.is_empty() {
                table.push_str(&format!("\n{:<24} HEALTH\n", "ADD-ON OR CHART"));
                for a in &st.addons {
                    table.push_str(&format!("{:<24} {}\n", a.chart.name, a.summary()));
                }
            }
            print!("{}", crate::report::clean(&table));
        }
    }
    Ok(())
}

pub async fn kubeconfig(cx: &Ctx, merge: bool) -> Result<()> {
    let (sessions, facts) = cluster(cx, true, false, merge).await?;
    let target = facts.local.merge_target.as_ref().map(|(p, _)| p.clone());
    let plan = plan::kubeconfig(&cx.inv, &facts, target)?;
    apply::execute_local(&plan, &sessions, &cx.opts, &cx.rep).await?;
    Ok(())
}

/// `bootstrap sealed-secrets cert`: the sealing certificate from the backup, else the cluster.
pub async fn sealed_secrets_cert(cx: &Ctx) -> Result<()> {
    let inv = &cx.inv;
    if inv.addons.sealed_secrets.is_none() {
        return Err(crate::outcome::usage(
            "the inventory has no [addons.sealed_secrets]; add it and run `bootstrap up`",
        ));
    }
    if let Some(k) = SealingKey::load_backup(&inv.state_dir())? {
        print!("{}", k.cert_pem);
        return Ok(());
    }
    let (_, facts) = cluster(cx, false, true, false).await?;
    if facts.cluster.api.is_none() {
        return Err(anyhow!(
            "no server has a working API; run `bootstrap up` first:\n  {}",
            facts.cluster.unanswered.join("\n  ")
        ));
    }
    match facts.cluster.sealing_key {
        Some(k) => {
            print!("{}", k.cert_pem);
            Ok(())
        }
        None => Err(anyhow!(
            "no sealing key in the backup ({}) or the cluster; run `bootstrap up` first",
            inv.state_dir().display()
        )),
    }
}
