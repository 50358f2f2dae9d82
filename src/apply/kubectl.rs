//! The steps that run through a server's `k3s kubectl`: waits for Nodes, drain, uncordon,
//! Node deletion, label and taint changes, and the add-on health wait.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::Options;
use crate::addons::health::{self, indent, AddonHealth, JobState, Snapshot};
use crate::addons::HelmRelease;
use crate::facts::cluster::{parse_nodes, ObservedNode, GET_NODES};
use crate::inventory::K3sVersion;
use crate::plan::{Action, Applied, NodeDrift, Unmanaged, MANAGED_ANNOTATION};
use crate::report::Reporter;
use crate::ssh::{self, sh_quote, Cmd, Session};

/// Run one API step through `api` (server `via`); `host` is who it is reported under.
/// Returns how long it waited on k3s.
pub(super) async fn run(
    api: &Session,
    via: &str,
    host: &str,
    action: &Action,
    opts: &Options,
    rep: &Reporter,
) -> Result<Duration> {
    let started = Instant::now();
    match action {
        Action::WaitNodeReady { node, version } => {
            wait_node_ready(api, node, *version, opts, rep).await?;
            return Ok(started.elapsed());
        }
        Action::WaitNodesReady { nodes } => {
            wait_nodes_ready(api, nodes, opts, rep).await?;
            return Ok(started.elapsed());
        }
        Action::Drain {
            node,
            limit_secs,
            unmanaged,
        } => {
            let limit = limit_secs
                .map(|l| opts.timeout.min(Duration::from_secs(l)))
                .unwrap_or(opts.timeout);
            drain(api, node, limit, *unmanaged, rep).await?;
        }
        Action::Uncordon { node } => {
            api.run_ok(
                &Cmd::new(format!("k3s kubectl uncordon {}", sh_quote(node)))
                    .label("kubectl uncordon"),
            )
            .await?;
        }
        Action::DeleteNode { node } => delete_node(api, node, opts).await?,
        Action::ForgetNodePassword { node } => {
            // k3s keeps a node's password hash in `kube-system/<node>.node-password.k3s`
            // (pkg/nodepassword/nodepassword.go) and creates it when the node registers and
            // it is missing.
            api.run_ok(
                &Cmd::new(format!(
                    "k3s kubectl -n kube-system delete secret {} --ignore-not-found --request-timeout=30s >/dev/null",
                    sh_quote(&format!("{node}.node-password.k3s"))
                ))
                .label("kubectl delete node-password secret"),
            )
            .await?;
        }
        Action::Labels { node, drift } => {
            api.run_ok(
                &Cmd::new(format!("set -e\n{}", drift_script(node, drift)))
                    .label("kubectl label/taint"),
            )
            .await?;
        }
        Action::WaitAddons {
            releases,
            waits,
            applied,
        } => {
            wait_addons(api, via, host, releases, waits, applied, opts, rep).await?;
            return Ok(started.elapsed());
        }
        other => bail!("`{other}` does not run through kubectl"),
    }
    Ok(Duration::ZERO)
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
            sh_quote(&format!("{t}-"))
        ));
    }
    for t in &drift.add_taints {
        s.push_str(&format!(
            "k3s kubectl taint node {n} --overwrite {}\n",
            sh_quote(&t.to_string())
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

/// Read every Node through `api`.
async fn get_nodes(api: &Session) -> Result<Vec<ObservedNode>> {
    let out = api
        .run_ok(&Cmd::new(GET_NODES).label("kubectl get nodes"))
        .await?;
    Ok(parse_nodes(&out.stdout_str())?)
}

/// Wait until `name` is Ready (on `version`, when given).
async fn wait_node_ready(
    api: &Session,
    name: &str,
    version: Option<K3sVersion>,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    rep.step(name, "waiting for the node to be Ready");
    let deadline = Instant::now() + opts.timeout;
    loop {
        let nodes = get_nodes(api).await?;
        if nodes
            .iter()
            .any(|n| n.name == name && n.ready && version.is_none_or(|v| n.version() == Some(v)))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: the node is not Ready{} after {:?}",
                version.map(|v| format!(" on {v}")).unwrap_or_default(),
                opts.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait until every one of `names` is registered and Ready.
async fn wait_nodes_ready(
    api: &Session,
    names: &[String],
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    let deadline = Instant::now() + opts.timeout;
    loop {
        let nodes = get_nodes(api).await?;
        let missing: Vec<&str> = names
            .iter()
            .filter(|d| !nodes.iter().any(|n| &n.name == *d && n.ready))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for m in &missing {
            rep.step(m, "waiting for the node to be Ready");
        }
        if Instant::now() > deadline {
            bail!(
                "these nodes are not Ready after {:?}: {}; check `journalctl -u k3s-agent` (or k3s) on them",
                opts.timeout,
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What kubectl says when pods without a controller stop a drain (kubectl
/// pkg/drain/filters.go:35 and :90): the pods follow it, comma-separated.
const UNMANAGED_FATAL: &str =
    "cannot delete Pods that declare no controller (use --force to override): ";

/// The pods a drain's stderr names as having no controller.
fn unmanaged_pods(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(UNMANAGED_FATAL).map(|(_, rest)| rest))
        .flat_map(|rest| {
            let rest = rest.split(", continuing command").next().unwrap_or(rest);
            rest.split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// Cordon and drain `name`, bounded by `timeout`. Pods without a controller are handled as
/// `unmanaged` says; for [`Unmanaged::Refuse`] a client-side dry run (which neither cordons
/// nor evicts: kubectl pkg/cmd/drain/drain.go:366-377, :430) finds them first, so the refusal
/// changes nothing. A drain that does not finish is reported with what did not evict; the
/// step still succeeds (the node stays cordoned).
async fn drain(
    api: &Session,
    name: &str,
    timeout: Duration,
    unmanaged: Unmanaged,
    rep: &Reporter,
) -> Result<()> {
    let secs = timeout.as_secs().max(1);
    let base = format!(
        "k3s kubectl drain {} --ignore-daemonsets --delete-emptydir-data",
        sh_quote(name)
    );
    let refuse = |pods: &[String]| {
        anyhow!(
            "{name}: refusing to drain: {} pod(s) declare no controller, and would be deleted without eviction or PodDisruptionBudgets and never come back: {}; move or delete them yourself, or pass --force to delete them",
            pods.len(),
            pods.join(", ")
        )
    };
    if unmanaged == Unmanaged::Refuse {
        let out = api
            .exec(&Cmd::new(format!("{base} --dry-run=client")).label("kubectl drain --dry-run"))
            .await?;
        let pods = unmanaged_pods(&out.stderr_str());
        if !pods.is_empty() {
            return Err(refuse(&pods));
        }
    }
    let force = if unmanaged == Unmanaged::Delete {
        " --force"
    } else {
        ""
    };
    let out = api
        .exec(
            &Cmd::new(format!("{base}{force} --timeout={secs}s"))
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
        rep.info(&format!("{name}: drained ({evicted} pod(s) evicted)"));
        return Ok(());
    }
    let pods = unmanaged_pods(&out.stderr_str());
    if !pods.is_empty() && unmanaged == Unmanaged::Refuse {
        // One appeared since the dry run.
        return Err(refuse(&pods));
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
    Ok(())
}

/// Delete the Node (which, in k3s, drops its node-password secret and, for a server, its
/// etcd member), then wait until the secret is gone. The delete is bounded: kubectl waits up
/// to 168 hours for a Node whose finalizers stay (kubectl pkg/cmd/delete/delete.go:455-458),
/// and k3s's etcd finalizer stays while the member cannot be removed (k3s
/// pkg/etcd/member_controller.go:117-139: without quorum, or when removing it would cost it).
async fn delete_node(api: &Session, name: &str, opts: &Options) -> Result<()> {
    let limit = opts.timeout.min(Duration::from_secs(120));
    let out = api
        .exec(
            &Cmd::new(format!(
                "k3s kubectl delete node {} --ignore-not-found --timeout={}s",
                sh_quote(name),
                limit.as_secs().max(1)
            ))
            .label("kubectl delete node")
            .timeout(limit + Duration::from_secs(30)),
        )
        .await?;
    if !out.success() {
        let finalizers = api
            .exec(
                &Cmd::new(format!(
                    "k3s kubectl get node {} -o jsonpath='{{.metadata.finalizers}}' --ignore-not-found",
                    sh_quote(name)
                ))
                .label("kubectl get node"),
            )
            .await
            .map(|o| o.stdout_str().trim().to_string())
            .unwrap_or_default();
        let etcd = finalizers.contains("managed-etcd-controller");
        bail!(
            "the Node {name} is still being deleted after {}s ({}); finalizers left: {}. {}",
            limit.as_secs(),
            out.stderr_str().trim(),
            if finalizers.is_empty() {
                "none"
            } else {
                &finalizers
            },
            if etcd {
                "k3s removes the node's etcd member before the Node can go, and etcd refuses while it lacks quorum or would lose it: bring the other servers back (bootstrap status), and the deletion finishes by itself; run the command again then"
            } else {
                "whatever put those finalizers there must finish (or remove them with kubectl patch), then run the command again"
            }
        );
    }
    let secret = format!("{}.node-password.k3s", name.to_lowercase());
    let deadline = Instant::now() + limit;
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
            // The garbage collector should have done it: do it, so the new host's
            // registration is not refused.
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

/// Wait until `addons` are healthy and every file of `applied` is applied by k3s's deploy
/// controller. A failure helm-controller will not repair by itself (the Job used up its
/// retries, a failed release under `failurePolicy: abort`), or a failed attempt seen during
/// this wait, ends it at once with the pod's log and the recovery step. An attempt that had
/// already failed when the wait began is not reported again: helm-controller's next attempt
/// (after the kubelet's back-off, at most 5 minutes) is what this run waits for.
#[allow(clippy::too_many_arguments)]
async fn wait_addons(
    api: &Session,
    via: &str,
    host: &str,
    releases: &[HelmRelease],
    waits: &[String],
    applied: &[Applied],
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    let deadline = Instant::now() + opts.timeout;
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut baseline: BTreeMap<String, Option<(String, u64)>> = BTreeMap::new();
    let mut last: Option<String> = None;
    loop {
        let out = api
            .run_ok(&Cmd::new(health::get_all(waits)).label("read add-on health"))
            .await?;
        let snap = Snapshot::parse(&out.stdout_str()).map_err(|e| anyhow!(e))?;
        let states: Vec<AddonHealth> = releases
            .iter()
            .map(|r| health::evaluate(&snap, r))
            .collect();
        let mut msg = Vec::new();
        for h in states.iter().filter(|h| !h.healthy()) {
            let attempt = h
                .failed_attempt
                .as_ref()
                .map(|a| (a.pod.clone(), a.failures));
            let first = baseline
                .entry(h.chart.name.clone())
                .or_insert_with(|| attempt.clone());
            let new_failure = attempt.is_some() && attempt != *first;
            let stuck = h.chart_failed.is_some()
                || h.job == JobState::Failed
                || (h.release_failed() && h.chart.failure_policy == "abort");
            if !(stuck || new_failure) {
                continue;
            }
            let logs = match &h.failed_attempt {
                Some(a) => pod_logs(api, &a.pod).await,
                None => String::new(),
            };
            msg.push(health::failure_report(h, &logs));
        }
        if !msg.is_empty() {
            bail!("{}", msg.join("\n"));
        }
        for h in states.iter().filter(|h| h.healthy()) {
            if reported.insert(h.chart.name.clone()) {
                rep.info(&format!("{}: healthy", h.chart));
            }
        }
        let unapplied: Vec<&Applied> = applied
            .iter()
            .filter(|f| {
                snap.get("Addon", "kube-system", &f.addon)
                    .and_then(|a| a["spec"]["checksum"].as_str())
                    != Some(f.sha256.as_str())
            })
            .collect();
        if states.iter().all(AddonHealth::healthy) && unapplied.is_empty() {
            return Ok(());
        }
        if let Some(h) = states.iter().find(|h| !h.healthy()) {
            let line = format!("{}: {}", h.chart, h.summary());
            if last.as_ref() != Some(&line) {
                rep.step(host, &line);
                last = Some(line);
            }
        }
        if Instant::now() > deadline {
            let mut msg = Vec::new();
            for h in states.iter().filter(|h| !h.healthy()) {
                let logs = if h.job == JobState::Complete {
                    String::new()
                } else {
                    format!(
                        "\n  last log lines of Job kube-system/{}:\n{}",
                        h.chart.job_name(),
                        indent(&job_logs(api, &h.chart).await)
                    )
                };
                msg.push(format!(
                    "{} is not healthy after {:?}: {}{logs}",
                    h.chart,
                    opts.timeout,
                    h.summary()
                ));
            }
            for f in &unapplied {
                msg.push(format!(
                    "{}: k3s has not applied {} (Addon kube-system/{}); see `k3s kubectl get events -n kube-system` on {via}",
                    f.owner, f.file, f.addon
                ));
            }
            bail!("{}", msg.join("\n"));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The last lines a helm pod logged in its failed attempt: the terminated container's
/// (`--previous`, kubelet keeps it across the restart), or the current one's.
async fn pod_logs(api: &Session, pod: &str) -> String {
    let p = sh_quote(pod);
    let cmd = format!(
        "k3s kubectl logs -n kube-system {p} --previous --tail 20 2>/dev/null || k3s kubectl logs -n kube-system {p} --tail 20 2>&1"
    );
    match api.exec(&Cmd::new(cmd).label("helm pod logs")).await {
        Ok(o) => ssh::redact(&o.stdout_str()),
        Err(e) => format!("(could not read the logs: {e})"),
    }
}

async fn job_logs(api: &Session, rel: &HelmRelease) -> String {
    match api
        .exec(&Cmd::new(health::job_logs_command(rel)).label("helm Job logs"))
        .await
    {
        Ok(o) => ssh::redact(&o.stdout_str()),
        Err(e) => format!("(could not read the logs: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Taint;
    use std::collections::BTreeMap;

    #[test]
    fn unmanaged_pods_are_read_from_kubectls_error() {
        let err = "error: unable to drain node \"worker-1\" due to error: cannot delete Pods that declare no controller (use --force to override): default/bare, web/one-off, continuing command...\nThere are pending nodes to be drained:\n worker-1\n";
        assert_eq!(unmanaged_pods(err), ["default/bare", "web/one-off"]);
        assert!(unmanaged_pods("error: timed out").is_empty());
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
}
