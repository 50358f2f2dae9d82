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

/// The most one read of the add-ons' health may print: every namespace's Deployments,
/// DaemonSets and Jobs, more than a command's usual limit on a large cluster.
const HEALTH_OUTPUT_LIMIT: usize = 64 << 20;
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
        Action::StaleNodes { keep, delete } => {
            let stale: Vec<String> = get_nodes(api)
                .await?
                .into_iter()
                .filter(|n| !keep.contains(&n.name))
                .map(|n| n.name)
                .collect();
            if stale.is_empty() {
                return Ok(Duration::ZERO);
            }
            if *delete {
                for n in &stale {
                    delete_node(api, n, opts).await?;
                }
                rep.info(&format!(
                    "deleted the Nodes the inventory does not name: {}",
                    stale.join(", ")
                ));
            } else {
                rep.warn(&format!(
                    "the restored cluster has Nodes the inventory does not name: {} (hosts of the snapshot's time that are gone, for one); they stay NotReady until deleted: run the restore with --delete-stale-nodes, or `k3s kubectl delete node NAME` on a server",
                    stale.join(", ")
                ));
            }
        }
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

/// The kubelet's longest back-off before it restarts a failed container (kubelet
/// `MaxContainerBackOff`): the most a retried helm attempt waits to start.
const MAX_BACKOFF_SECS: i64 = 300;
/// What a chart's workloads get to roll out once helm is done (klipper-helm runs helm
/// without `--wait`, so helm returns before they are ready), and a retried attempt to start.
const GRACE_SECS: i64 = 60;

/// How long the wait lasts for one chart (server clock): `--timeout`, and while helm works
/// on the chart, at least the chart's own helm timeout and a minute, so that hooks running
/// inside that timeout are not cut short; once helm is done (the Job complete, its release
/// current), a minute past that for the workloads to roll out. A failed attempt under
/// `reinstall` or `retry` is followed by another after the kubelet's back-off (10 s doubling,
/// at most 5 minutes): the first one this wait sees extends it by that back-off and another
/// helm timeout, so that attempt is waited through; later ones are reported and do not.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    start: i64,
    timeout: i64,
    retried: Option<i64>,
}

impl Deadline {
    fn new(start: i64, timeout: i64) -> Deadline {
        Deadline {
            start,
            timeout,
            retried: None,
        }
    }

    /// The deadline, given what the chart's Job is doing now.
    fn at(&self, h: &AddonHealth) -> i64 {
        let base = self.start + self.timeout;
        let deployed = h.release.as_ref().is_some_and(|(_, st)| st == "deployed");
        if h.job == JobState::Complete && h.release_current && deployed {
            return base.max(h.job_completed.unwrap_or(self.start) + GRACE_SECS);
        }
        let helm = h.chart.helm_timeout_secs() as i64;
        base.max(self.start + helm + GRACE_SECS)
            .max(self.retried.unwrap_or(0))
    }

    /// A failed attempt (the `failures`th) ended at `ended`: wait for the next.
    fn retried(&mut self, ended: i64, failures: u64, h: &AddonHealth) {
        if self.retried.is_some() {
            return;
        }
        let backoff = (10i64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF_SECS);
        self.retried = Some(ended + backoff + h.chart.helm_timeout_secs() as i64 + GRACE_SECS);
    }
}

/// Wait until `addons` are healthy and every file of `applied` is applied by k3s's deploy
/// controller. A failure helm-controller will not repair by itself (the Job used up its
/// retries, a failed release under `failurePolicy: abort`) ends it at once with the pod's log
/// and the recovery step. A failed attempt under `reinstall` or `retry`, which helm-controller
/// follows with another after the kubelet's back-off, is reported and waited through; an
/// attempt that had already failed when the wait began is not reported again. Each chart's
/// deadline is its own ([`Deadline`]), on the server's clock.
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
    let timeout = opts.timeout.as_secs() as i64;
    let local_start = Instant::now();
    let mut deadlines: BTreeMap<String, Deadline> = BTreeMap::new();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut baseline: BTreeMap<String, Option<(String, u64)>> = BTreeMap::new();
    let mut last: Option<String> = None;
    loop {
        let out = api
            .run_ok(
                &Cmd::new(health::get_all(waits))
                    .label("read add-on health")
                    .output_limit(HEALTH_OUTPUT_LIMIT),
            )
            .await?;
        let snap = Snapshot::parse(&out.stdout_str()).map_err(|e| anyhow!(e))?;
        // The server's clock, which the API's times are on; this machine's when it printed none.
        let now = snap.now.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        let states: Vec<AddonHealth> = releases
            .iter()
            .map(|r| health::evaluate(&snap, r))
            .collect();
        let mut msg = Vec::new();
        for h in states.iter().filter(|h| !h.healthy()) {
            let d = deadlines
                .entry(h.chart.name.clone())
                .or_insert_with(|| Deadline::new(now, timeout));
            // A failed attempt: the pod's (its container exited 1), or, under `retry`, a Job
            // that completed (klipper-helm exits 0 whatever the upgrade did, `entry`:88-91)
            // leaving the current release failed, which helm-controller retries.
            let retried_release =
                (h.job == JobState::Complete && h.release_current && h.release_failed())
                    .then(|| h.release.as_ref().map(|(r, _)| *r))
                    .flatten();
            let attempt = h
                .failed_attempt
                .as_ref()
                .map(|a| (a.pod.clone(), a.failures))
                .or_else(|| retried_release.map(|r| (format!("release revision {r}"), r)));
            let first = baseline
                .entry(h.chart.name.clone())
                .or_insert_with(|| attempt.clone());
            let new_failure = attempt.is_some() && attempt != *first;
            let stuck = h.stuck() || (new_failure && h.chart.failure_policy == "abort");
            if !(stuck || new_failure) {
                continue;
            }
            let logs = match (&h.failed_attempt, retried_release) {
                (Some(a), _) => pod_logs(api, &a.pod).await,
                (None, Some(_)) => job_logs(api, &h.chart).await,
                (None, None) => String::new(),
            };
            if stuck {
                msg.push(health::failure_report(h, &logs));
            } else {
                // helm-controller tries again by itself: say so, and wait for that attempt.
                rep.warn(&health::failure_report(h, &logs));
                *first = attempt;
                match &h.failed_attempt {
                    Some(a) => d.retried(a.finished.unwrap_or(now), a.failures, h),
                    None => d.retried(now, 1, h),
                }
            }
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
        let late: Vec<&AddonHealth> = states
            .iter()
            .filter(|h| !h.healthy())
            .filter(|h| deadlines.get(&h.chart.name).is_some_and(|d| now > d.at(h)))
            .collect();
        let files_late =
            local_start.elapsed() > opts.timeout && states.iter().all(AddonHealth::healthy);
        if !late.is_empty() || files_late {
            let mut msg = Vec::new();
            for h in late {
                let waited = deadlines
                    .get(&h.chart.name)
                    .map(|d| now - d.start)
                    .unwrap_or(timeout);
                if let Some(a) = &h.failed_attempt {
                    // Its attempts kept failing: the same report as for a failure at once.
                    let logs = pod_logs(api, &a.pod).await;
                    msg.push(format!(
                        "{} is not healthy after {waited}s, and its last attempt failed:\n{}",
                        h.chart,
                        health::failure_report(h, &logs)
                    ));
                    continue;
                }
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
                    "{} is not healthy after {waited}s: {}{logs}",
                    h.chart,
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

    /// Issue 26 (B6): the deadline covers the chart's own helm timeout while helm works,
    /// a minute past helm's end once it is done, and one retried attempt.
    #[test]
    fn the_wait_deadline_follows_helm() {
        use crate::addons::AddonKind;
        let mut h = crate::addons::health::evaluate(
            &Snapshot::default(),
            &AddonKind::CertManager.release(""),
        );
        let d = Deadline::new(1000, 20);
        // Pending or running: cert-manager's 10 minutes, plus a minute.
        assert_eq!(d.at(&h), 1000 + 600 + 60);
        h.job = JobState::Complete;
        h.release_current = true;
        h.job_completed = Some(1010);
        assert_eq!(d.at(&h), 1010 + 60);
        // --timeout longer than that: --timeout.
        assert_eq!(Deadline::new(1000, 300).at(&h), 1300);
        // A failed attempt at 1100 (the second): the back-off (20 s) and another attempt.
        h.job = JobState::Running;
        let mut d = Deadline::new(1000, 20);
        d.retried(1100, 2, &h);
        assert_eq!(d.at(&h), 1100 + 20 + 600 + 60);
        d.retried(1500, 3, &h);
        assert_eq!(
            d.at(&h),
            1100 + 20 + 600 + 60,
            "only the first retry extends it"
        );
    }

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
