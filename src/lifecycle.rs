//! Day two: `node add|replace|remove` and `reset`. Each edits the inventory
//! (comments and layout kept, validated as a whole before it is written) and
//! converges with the same phases as `up`, so other nodes see no change.
//! Cluster-side steps (cordon, drain, delete the Node) run as `k3s kubectl`
//! on a healthy server that is not the node being worked on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::apply::{self, HostSpec, Options, UpSpec};
use crate::inventory::edit::{self, NewNode};
use crate::inventory::Inventory;
use crate::k3s::Role;
use crate::lock;
use crate::report::Reporter;
use crate::reset;
use crate::ssh::quote::sh_quote;
use crate::ssh::{Cmd, Session, SshTarget};

/// Bad input: nothing was changed (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(UsageError(e.to_string()))
}

/// Connect once or twice, quickly: for hosts that may be dead.
pub async fn connect_quick(target: &SshTarget) -> Result<Session> {
    let mut t = target.clone();
    t.retry.attempts = 2;
    t.connect_timeout = t.connect_timeout.min(Duration::from_secs(5));
    Ok(Session::connect(&t).await?)
}

/// A server (not `exclude`) whose API answers.
pub async fn api_server(spec: &UpSpec, exclude: Option<&str>) -> Result<(Session, String)> {
    let candidates: Vec<&HostSpec> = spec
        .hosts
        .iter()
        .filter(|h| h.node.role == Role::Server && Some(h.node.name.as_str()) != exclude)
        .collect();
    let tries = futures::future::join_all(candidates.iter().map(|h| async move {
        let s = connect_quick(&h.target).await?;
        s.run_ok(
            &Cmd::new("k3s kubectl get --raw /readyz")
                .label("check the API")
                .timeout(Duration::from_secs(20)),
        )
        .await?;
        Ok::<_, anyhow::Error>(s)
    }))
    .await;
    let mut errors = Vec::new();
    for (h, r) in candidates.iter().zip(tries) {
        match r {
            Ok(s) => return Ok((s, h.node.name.clone())),
            Err(e) => errors.push(format!("{}: {e:#}", h.node.name)),
        }
    }
    bail!(
        "no other server has a working API{}",
        if errors.is_empty() {
            String::new()
        } else {
            format!(":\n  {}", errors.join("\n  "))
        }
    )
}

/// The Node as JSON, or None when the cluster has no such Node.
async fn get_node(api: &Session, name: &str) -> Result<Option<serde_json::Value>> {
    let out = api
        .run_ok(
            &Cmd::new(format!(
                "k3s kubectl get node {} -o json --ignore-not-found",
                sh_quote(name)
            ))
            .label("kubectl get node"),
        )
        .await?;
    let text = out.stdout_str();
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&text).context("reading `kubectl get node -o json`")?,
    ))
}

fn internal_ip(node: &serde_json::Value) -> Option<String> {
    node["status"]["addresses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| x["type"] == "InternalIP")
                .and_then(|x| x["address"].as_str())
        })
        .or_else(|| node["metadata"]["annotations"]["k3s.io/internal-ip"].as_str())
        .map(String::from)
}

fn is_ready(node: &serde_json::Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Cordon and drain `name`, bounded by `timeout`. Returns what did not
/// evict (empty when the drain finished).
pub async fn drain(
    api: &Session,
    name: &str,
    timeout: Duration,
    rep: &Reporter,
) -> Result<Vec<String>> {
    rep.step(name, "cordon and drain");
    let secs = timeout.as_secs().max(1);
    let out = api
        .exec(
            &Cmd::new(format!(
                "k3s kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout={secs}s",
                sh_quote(name)
            ))
            .label("kubectl drain")
            .timeout(timeout + Duration::from_secs(30)),
        )
        .await?;
    let evicted = out
        .stdout_str()
        .lines()
        .filter(|l| l.starts_with("evicting pod "))
        .count();
    if out.success() {
        rep.change(name, &format!("drained ({evicted} pod(s) evicted)"));
        return Ok(vec![]);
    }
    let left: Vec<String> = out
        .stderr_str()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: ignoring DaemonSet"))
        .map(String::from)
        .collect();
    rep.warn(&format!(
        "{name}: the drain did not finish within {secs}s ({evicted} pod(s) evicted); not evicted:\n  {}",
        left.join("\n  ")
    ));
    Ok(left)
}

/// Delete the Node (which, in k3s, drops its node-password secret and, for a
/// server, its etcd member), then wait until the secret is gone.
async fn delete_node(api: &Session, name: &str, opts: &Options, rep: &Reporter) -> Result<()> {
    rep.step(name, "delete the Node");
    api.run_ok(
        &Cmd::new(format!(
            "k3s kubectl delete node {} --ignore-not-found",
            sh_quote(name)
        ))
        .label("kubectl delete node"),
    )
    .await?;
    rep.change(name, "deleted the Node");
    let secret = format!("{}.node-password.k3s", name.to_lowercase());
    let deadline = Instant::now() + opts.timeout.min(Duration::from_secs(120));
    loop {
        let out = api
            .run_ok(
                &Cmd::new(format!(
                    "k3s kubectl -n kube-system get secret {} -o name --ignore-not-found",
                    sh_quote(&secret)
                ))
                .label("kubectl get secret"),
            )
            .await?;
        if out.stdout_str().trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            // The garbage collector should have done it: do it, so the new
            // host's registration is not refused.
            api.run_ok(
                &Cmd::new(format!(
                    "k3s kubectl -n kube-system delete secret {} --ignore-not-found",
                    sh_quote(&secret)
                ))
                .label("kubectl delete secret"),
            )
            .await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn load(path: &Path) -> Result<(Inventory, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
    let inv = Inventory::from_str_at(&text, path).map_err(usage)?;
    Ok((inv, text))
}

async fn converge(path: &Path, opts: &Options, rep: &Reporter) -> Result<apply::UpReport> {
    let inv = Inventory::load(path).map_err(|e| anyhow!("{e}"))?;
    let spec = UpSpec::from_inventory(&inv)?;
    apply::up(&spec, opts, rep, false).await
}

/// `node add`: append the node, then converge (only it changes).
pub async fn add(
    path: &Path,
    node: NewNode,
    opts: &Options,
    rep: &Reporter,
) -> Result<apply::UpReport> {
    let (_, text) = load(path)?;
    let new_text = edit::add_node(&text, path, &node).map_err(usage)?;
    let inv = edit::validate(&new_text, path).map_err(usage)?;
    let spec = UpSpec::from_inventory(&inv)?;
    lock::locked(&spec, "node add", rep, async {
        edit::write(path, &new_text)?;
        rep.info(&format!("{}: added to {}", node.name, path.display()));
        apply::up(&spec, opts, rep, false).await
    })
    .await
}

/// `node replace`: move node `name` to `new_host`.
pub async fn replace(
    path: &Path,
    name: &str,
    new_host: &str,
    opts: &Options,
    rep: &Reporter,
) -> Result<apply::UpReport> {
    let (inv, text) = load(path)?;
    let old = inv
        .node(name)
        .ok_or_else(|| usage(format!("no node named {name:?} in {}", path.display())))?
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
    edit::validate(&new_text, path).map_err(usage)?;
    let spec = UpSpec::from_inventory(&inv)?;
    let old_host = spec
        .hosts
        .iter()
        .find(|h| h.node.name == name)
        .cloned()
        .ok_or_else(|| anyhow!("{name} vanished"))?;
    if old.is_server() && inv.servers().count() == 1 {
        return Err(usage(format!(
            "{name} is the only server: replacing it would start a new cluster; add a server first (bootstrap node add ... --role server), then replace {name}"
        )));
    }
    lock::locked(&spec, "node replace", rep, async {
        rep.host(name, old_host.node.role.command());
        let (api, via) = api_server(&spec, Some(name))
            .await
            .context("replacing a node needs the cluster's API on another server")?;
        rep.info(&format!("cluster operations through {via}"));
        let node = get_node(&api, name).await?;
        let already = node
            .as_ref()
            .and_then(internal_ip)
            .is_some_and(|ip| ip == new_host);
        if let (Some(n), false) = (&node, already) {
            if is_ready(n) {
                drain(&api, name, opts.timeout.min(Duration::from_secs(120)), rep).await?;
            } else {
                // A NotReady node's pods cannot terminate: a drain would only
                // time out. Deleting the Node lets them be rescheduled.
                rep.info(&format!("{name}: the node is NotReady; not draining it"));
            }
        }
        // As in `remove`: a server's Node (and etcd member) goes before its
        // host is stopped, an agent's after, so neither quorum is lost nor
        // the old agent registers again.
        let server = old_host.node.role == crate::k3s::Role::Server;
        if server && node.is_some() && !already {
            delete_node(&api, name, opts, rep).await?;
        }
        if old.host != new_host {
            match connect_quick(&old_host.target).await {
                Ok(s) => reset::uninstall(&s, name, rep)
                    .await
                    .context("uninstalling k3s from the old host, so it cannot rejoin")?,
                Err(e) => rep.info(&format!(
                    "{name}: the old host {} is unreachable ({e:#}); leaving it as it is",
                    old.host
                )),
            }
        }
        if !server && node.is_some() && !already {
            delete_node(&api, name, opts, rep).await?;
        }
        drop(api);
        edit::write(path, &new_text)?;
        rep.info(&format!(
            "{name}: host set to {new_host} in {}",
            path.display()
        ));
        converge(path, opts, rep).await
    })
    .await
}

/// Whether removing server `name` keeps etcd quorum: the servers left must
/// have a majority of Ready members.
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

/// `node remove`.
pub async fn remove(
    path: &Path,
    name: &str,
    force: bool,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    let (inv, text) = load(path)?;
    let node = inv
        .node(name)
        .ok_or_else(|| usage(format!("no node named {name:?} in {}", path.display())))?
        .clone();
    if node.is_server() && inv.servers().count() == 1 {
        return Err(usage(format!(
            "{name} is the last server: removing it would destroy the cluster; use `bootstrap reset` to tear the whole cluster down"
        )));
    }
    let new_text = edit::remove_node(&text, path, name).map_err(usage)?;
    edit::validate(&new_text, path).map_err(usage)?;
    let spec = UpSpec::from_inventory(&inv)?;
    let host = spec
        .hosts
        .iter()
        .find(|h| h.node.name == name)
        .cloned()
        .ok_or_else(|| anyhow!("{name} vanished"))?;
    lock::locked(&spec, "node remove", rep, async {
        rep.host(name, host.node.role.command());
        let api = match api_server(&spec, Some(name)).await {
            Ok((s, via)) => {
                rep.info(&format!("cluster operations through {via}"));
                Some(s)
            }
            Err(e) if force => {
                rep.warn(&format!("{e:#}; --force: going on without the API"));
                None
            }
            Err(e) => return Err(e.context("removing a node needs the cluster's API")),
        };
        let current = match &api {
            Some(a) => get_node(a, name).await?,
            None => None,
        };
        if node.is_server() {
            if let Some(a) = &api {
                let out = a
                    .run_ok(&Cmd::new(crate::cluster::GET_NODES).label("kubectl get nodes"))
                    .await?;
                let observed = crate::cluster::parse_nodes(&out.stdout_str())?;
                let servers: BTreeMap<String, bool> = inv
                    .servers()
                    .map(|s| {
                        let ready = observed.iter().any(|o| o.name == s.name && o.ready);
                        (s.name.clone(), ready)
                    })
                    .collect();
                if let Err(why) = quorum_after_removal(&servers, name) {
                    if force {
                        rep.warn(&format!("{why}; going on because of --force"));
                    } else {
                        return Err(usage(format!(
                            "refusing to remove {name}: {why}; bring the other servers back first, or pass --force"
                        )));
                    }
                }
            }
        }
        let mut not_evicted = Vec::new();
        if let (Some(a), Some(n)) = (&api, &current) {
            if is_ready(n) {
                not_evicted = drain(a, name, opts.timeout, rep).await?;
            }
        }
        // A server's Node goes first: deleting it removes its etcd member
        // while the server still runs, so the others keep quorum (stopping a
        // member first would cost a 2-server cluster its quorum). An agent is
        // uninstalled first, so it cannot register its Node again.
        let server = host.node.role == crate::k3s::Role::Server;
        if server {
            if let (Some(a), Some(_)) = (&api, &current) {
                delete_node(a, name, opts, rep).await?;
            }
        }
        match connect_quick(&host.target).await {
            Ok(s) => reset::uninstall(&s, name, rep).await?,
            Err(e) => rep.warn(&format!(
                "{name}: the host {} is unreachable ({e:#}); k3s is left on it",
                node.host
            )),
        }
        if !server {
            if let (Some(a), Some(_)) = (&api, &current) {
                delete_node(a, name, opts, rep).await?;
            }
        }
        edit::write(path, &new_text)?;
        rep.info(&format!("{name}: removed from {}", path.display()));
        rep.done(name, Ok(()));
        if !not_evicted.is_empty() {
            rep.warn(&format!(
                "{name}: these did not evict before the Node was deleted:\n  {}",
                not_evicted.join("\n  ")
            ));
        }
        Ok(())
    })
    .await
}

/// Ask on the terminal, unless `yes`. Refuses when stdin is not a terminal.
pub fn confirm(question: &str, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "{question}: stdin is not a terminal, so nobody can confirm; pass --yes"
        )));
    }
    eprint!("{question}? Type yes to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        return Err(usage("not confirmed; nothing was changed"));
    }
    Ok(())
}

/// `reset`: uninstall k3s from every host, or from `node` (whose Node is
/// then deleted through another server, which also drops its etcd member).
pub async fn reset(
    inv: &Inventory,
    node: Option<&str>,
    yes: bool,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    if let Some(n) = node {
        if inv.node(n).is_none() {
            return Err(usage(format!(
                "no node named {n:?} in {}",
                inv.path().display()
            )));
        }
    }
    let what = match node {
        Some(n) => format!("uninstall k3s from {n} (its data is deleted)"),
        None => format!(
            "uninstall k3s from all {} hosts of cluster {} (all cluster data is deleted)",
            inv.nodes.len(),
            inv.cluster.name
        ),
    };
    confirm(&what, yes)?;
    let spec = UpSpec::from_inventory(inv)?;
    let targets = reset::targets(&spec, node);
    lock::locked(&spec, "reset", rep, async {
        let api = match node {
            Some(n) => api_server(&spec, Some(n)).await.ok(),
            None => None,
        };
        reset::reset_hosts(&targets, rep).await?;
        if let (Some(n), Some((a, _))) = (node, &api) {
            if get_node(a, n).await?.is_some() {
                delete_node(a, n, opts, rep).await?;
            }
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_rules() {
        let m = |v: &[(&str, bool)]| -> BTreeMap<String, bool> {
            v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
        };
        assert!(quorum_after_removal(&m(&[("a", true)]), "a").is_err());
        assert!(quorum_after_removal(&m(&[("a", true), ("b", true), ("c", true)]), "a").is_ok());
        // a is dead: removing it leaves b and c, both Ready.
        assert!(quorum_after_removal(&m(&[("a", false), ("b", true), ("c", true)]), "a").is_ok());
        // c is dead: removing a leaves b (Ready) and c (not): 1 of 2 < 2.
        assert!(quorum_after_removal(&m(&[("a", true), ("b", true), ("c", false)]), "a").is_err());
        assert!(quorum_after_removal(&m(&[("a", true), ("b", true)]), "a").is_ok());
    }
}
