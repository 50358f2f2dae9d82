//! Uninstall k3s from hosts the way `k3s-killall.sh` and `k3s-uninstall.sh`
//! do (reference/k3s-facts.md §2.6–2.7): stop every k3s unit, kill the
//! containerd shims, unmount and remove what k3s mounted, delete the CNI
//! interfaces and iptables rules, disable and remove the units, and remove
//! the binary, links, config and data. Like the uninstall script it keeps
//! `/etc/rancher/node` (the node password) and never touches the cluster: the
//! callers delete the Node through the API.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::apply::{HostSpec, UpSpec};
use crate::k3s::Role;
use crate::report::Reporter;
use crate::ssh::{Cmd, Session};

/// Uninstall k3s on one connected host.
pub async fn uninstall(s: &Session, name: &str, rep: &Reporter) -> Result<()> {
    rep.step(name, "stop and uninstall k3s");
    let out = s
        .exec(
            &Cmd::new(crate::k3s::unit::render_reset()?)
                .label("uninstall k3s")
                .timeout(Duration::from_secs(180)),
        )
        .await?;
    if !out.success() {
        bail!("{name}: uninstalling k3s failed:\n{}", out.stderr_tail(10));
    }
    rep.change(name, "uninstalled k3s");
    Ok(())
}

/// `bootstrap reset`: uninstall k3s from `hosts` (agents first, in parallel,
/// then servers one at a time). Every host is tried; the error names those
/// that failed.
pub async fn reset_hosts(hosts: &[HostSpec], rep: &Reporter) -> Result<()> {
    let mut errors = Vec::new();
    let agents: Vec<&HostSpec> = hosts
        .iter()
        .filter(|h| h.node.role == Role::Agent)
        .collect();
    let servers: Vec<&HostSpec> = hosts
        .iter()
        .filter(|h| h.node.role == Role::Server)
        .collect();
    for h in hosts {
        rep.host(&h.node.name, h.node.role.command());
    }
    let one = |h: &HostSpec| {
        let h = h.clone();
        async move {
            let s = Session::connect(&h.target).await?;
            uninstall(&s, &h.node.name, rep).await
        }
    };
    let results = futures::future::join_all(agents.iter().map(|h| one(h))).await;
    for (h, r) in agents.iter().zip(results) {
        record(&h.node.name, r, rep, &mut errors);
    }
    for h in servers {
        let r = one(h).await;
        record(&h.node.name, r, rep, &mut errors);
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

fn record(name: &str, r: Result<()>, rep: &Reporter, errors: &mut Vec<String>) {
    match r {
        Ok(()) => rep.done(name, Ok(())),
        Err(e) => {
            rep.done(name, Err(format!("{e:#}")));
            errors.push(format!("{name}: {e:#}"));
        }
    }
}

/// The hosts a reset works on: every node, or the one named.
pub fn targets(spec: &UpSpec, node: Option<&str>) -> Vec<HostSpec> {
    spec.hosts
        .iter()
        .filter(|h| node.is_none_or(|n| h.node.name == n))
        .cloned()
        .collect()
}
