//! What "healthy" means for each add-on (reference/addons.md §3.5, §4.6, §5.5, §6.5): the
//! newest helm release record is `deployed` with the config hash of the current
//! `helm-install-<name>` Job (what helm-controller itself checks, `chart.go`:646-656; a completed
//! Job alone proves little: klipper-helm runs without `--wait`, and `entry` exits 0 without
//! touching the release in some paths), that Job is complete for the chart version written, the
//! CRDs exist, and the add-on's own Deployments and DaemonSets are ready. Failures are read from
//! the same snapshot: the install pod's terminated attempts, a failed release, the chart's
//! `Failed` condition. Everything is read with one shell command ([`get_all`]) and judged by pure
//! functions.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{AddonKind, HelmRelease, ManifestFile};

/// The kinds the health checks look at, read together with one `kubectl get -A`.
pub const KINDS: &str = "customresourcedefinitions,csidrivers,storageclasses,ingressclasses,deployments,daemonsets,services,jobs,helmcharts,addons";

/// Marks the part of [`get_all`]'s output with helm's release records.
pub const RELEASES_MARK: &str = "#bootstrap-releases";
/// Marks the part with helm-controller's pods.
pub const PODS_MARK: &str = "#bootstrap-helm-pods";

/// helm's release records, metadata only (a record's data holds the whole chart, hundreds of
/// KB): one line each, `namespace name revision status config-hash`. helm's Secret driver
/// labels them `owner=helm`, `name`, `version`, `status` (helm `pkg/storage/driver/secrets.go`);
/// klipper-helm adds `helmcharts.helm.cattle.io/configHash` (`entry`:257-259).
pub fn get_releases() -> String {
    r#"k3s kubectl get secrets -A -l owner=helm --field-selector type=helm.sh/release.v1 -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.labels.name}{" "}{.metadata.labels.version}{" "}{.metadata.labels.status}{" "}{.metadata.labels.helmcharts\.helm\.cattle\.io/configHash}{"\n"}{end}'"#.to_string()
}

/// helm-controller's Job pods (label `helmcharts.helm.cattle.io/chart`, chart.go job()).
pub const GET_HELM_PODS: &str =
    "k3s kubectl get pods -n kube-system -l helmcharts.helm.cattle.io/chart -o json";

/// Marks each part with the objects of one `wait_for` resource.
pub const WAITS_MARK: &str = "#bootstrap-wait-for";

/// One read of everything the health checks look at: `kubectl get` of [`KINDS`] (plus
/// `extra_kinds`), then the release records and the helm pods after their marks, then each of
/// `waits` (the charts' `wait_for` resources, `Kind` or `Kind.group`). A resource whose CRD
/// does not exist yet reads as no objects.
pub fn get_all_with(extra_kinds: &str, opts: &str, waits: &[String]) -> String {
    let mut out = format!(
        "k3s kubectl get {extra_kinds}{KINDS} -A -o json {opts} && printf '\n{RELEASES_MARK}\n' && {} {opts} && printf '\n{PODS_MARK}\n' && {GET_HELM_PODS} {opts}",
        get_releases()
    );
    for w in waits {
        out.push_str(&format!(
            " && printf '\n{WAITS_MARK}\n' && {{ k3s kubectl get {} -A -o json {opts} 2>/dev/null || echo '{{\"items\": []}}'; }}",
            crate::ssh::sh_quote(w)
        ));
    }
    out
}

/// [`get_all_with`] for the health kinds alone.
pub fn get_all(waits: &[String]) -> String {
    get_all_with("", "", waits)
}

/// The `kubectl get -o json` List at the start of [`get_all`]'s output.
pub fn objects_part(text: &str) -> &str {
    text.split(&format!("\n{RELEASES_MARK}\n"))
        .next()
        .unwrap_or(text)
}

/// One helm release record (metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub namespace: String,
    pub name: String,
    pub revision: u64,
    pub status: String,
    pub config_hash: String,
}

/// Objects by (kind, namespace, name), and helm's release records.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    objects: BTreeMap<(String, String, String), Value>,
    releases: Vec<ReleaseRecord>,
    /// Whether the output had the release records at all (an old reader did not ask).
    has_releases: bool,
}

impl Snapshot {
    /// Parse [`get_all`]'s output, or a bare `kubectl get ... -o json` (a List).
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        let (json, rest) = match text.split_once(&format!("\n{RELEASES_MARK}\n")) {
            Some((a, b)) => (a, Some(b)),
            None => (text, None),
        };
        let mut s = Snapshot::parse_list(json)?;
        if let Some(rest) = rest {
            let (rel, pods) = rest
                .split_once(&format!("\n{PODS_MARK}\n"))
                .unwrap_or((rest, ""));
            let mark = format!("\n{WAITS_MARK}\n");
            let mut parts = pods.split(&mark);
            let pods = parts.next().unwrap_or("");
            for w in parts {
                if !w.trim().is_empty() {
                    let p = Snapshot::parse_list(w)?;
                    s.objects.extend(p.objects);
                }
            }
            s.has_releases = true;
            for line in rel.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 4 {
                    continue;
                }
                let Ok(revision) = f[2].parse() else {
                    continue;
                };
                s.releases.push(ReleaseRecord {
                    namespace: f[0].into(),
                    name: f[1].into(),
                    revision,
                    status: f[3].into(),
                    config_hash: f.get(4).copied().unwrap_or("").into(),
                });
            }
            if !pods.trim().is_empty() {
                let p = Snapshot::parse_list(pods)?;
                s.objects.extend(p.objects);
            }
        }
        Ok(s)
    }

    /// The newest release record of `name` in `namespace` (helm-controller `latestRelease`).
    pub fn latest_release(&self, namespace: &str, name: &str) -> Option<&ReleaseRecord> {
        self.releases
            .iter()
            .filter(|r| r.namespace == namespace && r.name == name)
            .max_by_key(|r| r.revision)
    }

    /// Every release record of `name`, in any namespace.
    pub fn releases_named(&self, name: &str) -> Vec<&ReleaseRecord> {
        self.releases.iter().filter(|r| r.name == name).collect()
    }

    fn parse_list(json: &str) -> Result<Snapshot, String> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| format!("could not read `kubectl get -o json`: {e}"))?;
        let mut s = Snapshot::default();
        let items = match v.get("items").and_then(Value::as_array) {
            Some(i) => i.clone(),
            None => vec![v],
        };
        for o in items {
            let kind = o["kind"].as_str().unwrap_or("").to_string();
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            s.objects.insert((kind, ns, name), o);
        }
        Ok(s)
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(kind.to_string(), ns.to_string(), name.to_string()))
    }

    fn with_prefix(&self, kind: &str, ns: &str, prefix: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((k, n, name), _)| k == kind && n == ns && name.starts_with(prefix))
            .map(|(_, v)| v)
            .collect()
    }

    /// Whether the deploy controller applied this exact file content.
    pub fn file_applied(&self, f: &ManifestFile) -> bool {
        self.get("Addon", "kube-system", f.addon_name())
            .and_then(|a| a["spec"]["checksum"].as_str())
            == Some(f.sha256().as_str())
    }
}

/// A workload or object a release must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The object's `kind`.
    pub kind: String,
    /// Empty for a cluster-scoped object.
    pub namespace: String,
    /// A name, or a prefix when it ends with '-' and `prefix` is set.
    pub name: String,
    pub prefix: bool,
}

fn want(kind: &str, ns: &str, name: &str) -> Want {
    Want {
        kind: kind.to_string(),
        namespace: ns.to_string(),
        name: name.to_string(),
        prefix: false,
    }
}

fn crd(name: &str) -> Want {
    want("CustomResourceDefinition", "", name)
}

/// What each add-on must have once installed. `traefik_ns` is the Traefik namespace.
pub fn addon_wants(kind: AddonKind, traefik_ns: &str) -> Vec<Want> {
    match kind {
        AddonKind::Longhorn => {
            let ns = super::longhorn::NAMESPACE;
            let mut w: Vec<Want> = [
                "volumes.longhorn.io",
                "nodes.longhorn.io",
                "settings.longhorn.io",
                "engineimages.longhorn.io",
            ]
            .iter()
            .map(|c| crd(c))
            .collect();
            w.push(want("DaemonSet", ns, "longhorn-manager"));
            w.push(want("Deployment", ns, "longhorn-driver-deployer"));
            w.push(want("Deployment", ns, "longhorn-ui"));
            // Created later by the driver deployer: wait for them to appear as well.
            w.push(want("DaemonSet", ns, "longhorn-csi-plugin"));
            for d in [
                "csi-attacher",
                "csi-provisioner",
                "csi-resizer",
                "csi-snapshotter",
            ] {
                w.push(want("Deployment", ns, d));
            }
            w.push(Want {
                kind: "DaemonSet".into(),
                namespace: ns.into(),
                name: "engine-image-ei-".into(),
                prefix: true,
            });
            w.push(want("CSIDriver", "", "driver.longhorn.io"));
            w.push(want("StorageClass", "", "longhorn"));
            w
        }
        AddonKind::Traefik => vec![
            crd("ingressroutes.traefik.io"),
            crd("middlewares.traefik.io"),
            crd("traefikservices.traefik.io"),
            want("Deployment", traefik_ns, "traefik"),
            want("IngressClass", "", "traefik"),
        ],
        AddonKind::CertManager => {
            let ns = super::cert_manager::NAMESPACE;
            vec![
                crd("certificates.cert-manager.io"),
                crd("issuers.cert-manager.io"),
                crd("clusterissuers.cert-manager.io"),
                crd("certificaterequests.cert-manager.io"),
                crd("orders.acme.cert-manager.io"),
                crd("challenges.acme.cert-manager.io"),
                want("Deployment", ns, "cert-manager"),
                want("Deployment", ns, "cert-manager-cainjector"),
                want("Deployment", ns, "cert-manager-webhook"),
            ]
        }
        AddonKind::SealedSecrets => {
            let ns = super::sealed_secrets::NAMESPACE;
            let c = super::sealed_secrets::CONTROLLER;
            vec![
                crd("sealedsecrets.bitnami.com"),
                want("Deployment", ns, c),
                want("Service", ns, c),
            ]
        }
    }
}

fn int(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

/// Why a workload is not ready, or `None` when it is.
fn workload_problem(kind: &str, o: &Value) -> Option<String> {
    match kind {
        "Deployment" | "StatefulSet" => {
            let want = int(o, "/spec/replicas").unwrap_or(1);
            let ready = int(o, "/status/readyReplicas").unwrap_or(0);
            (ready < want).then(|| format!("{ready}/{want} replicas ready"))
        }
        "DaemonSet" => {
            let ready = int(o, "/status/numberReady").unwrap_or(0);
            match int(o, "/status/desiredNumberScheduled") {
                None => Some("not scheduled yet".into()),
                Some(want) if ready < want => Some(format!("{ready}/{want} pods ready")),
                _ => None,
            }
        }
        // Anything else with conditions (a CRD's `Established`, an operator's `Ready`, a
        // Job's `Complete`): the first of those it carries must be True.
        _ => {
            let conds = o.pointer("/status/conditions").and_then(Value::as_array)?;
            ["Ready", "Available", "Established", "Complete"]
                .iter()
                .find_map(|t| conds.iter().find(|c| c["type"] == *t))
                .filter(|c| c["status"] != "True")
                .map(|c| {
                    let why = c["message"].as_str().or(c["reason"].as_str()).unwrap_or("");
                    format!(
                        "{} is {}{}",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or("Unknown"),
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    )
                })
        }
    }
}

/// State of the helm-controller Job of an add-on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// No HelmChart or no Job yet.
    Pending,
    Running,
    Complete,
    Failed,
}

/// A failed attempt of the install Job, as its pod shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// The pod (one per Job; its container restarts, `restartPolicy: OnFailure`).
    pub pod: String,
    /// Failed attempts so far (the container's restarts, or 1 for a terminated container).
    pub failures: u64,
    /// What klipper-helm wrote to the termination log (`lastState.terminated.message`).
    pub message: String,
}

/// One HelmChart's health (an add-on's or a chart's).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddonHealth {
    pub chart: HelmRelease,
    pub job: JobState,
    /// The newest release record: (revision, status).
    pub release: Option<(u64, String)>,
    /// The newest release carries the current Job's config hash.
    pub release_current: bool,
    /// The last failed attempt of the current install Job, if any.
    pub failed_attempt: Option<Attempt>,
    /// The HelmChart's `Failed` condition (the Job used up its retries, or could not be made).
    pub chart_failed: Option<String>,
    /// What is missing or not ready (empty = healthy).
    pub problems: Vec<String>,
}

impl AddonHealth {
    pub fn healthy(&self) -> bool {
        self.job == JobState::Complete
            && self.release_current
            && self.release.as_ref().is_some_and(|(_, s)| s == "deployed")
            && self.chart_failed.is_none()
            && self.problems.is_empty()
    }

    /// The release is failed (with the current config, or under `abort` with any): what
    /// helm-controller's next attempt does with it depends on the failure policy.
    pub fn release_failed(&self) -> bool {
        self.release.as_ref().is_some_and(|(_, s)| s == "failed")
    }

    /// One line: `healthy` or the first problems.
    pub fn summary(&self) -> String {
        if self.healthy() {
            return "healthy".into();
        }
        let mut parts = Vec::new();
        if let Some(m) = &self.chart_failed {
            parts.push(format!(
                "HelmChart kube-system/{} failed: {m}",
                self.chart.name
            ));
        }
        match self.job {
            JobState::Pending => parts.push("waiting for the HelmChart's install Job".to_string()),
            JobState::Running => {
                let mut p = format!("Job kube-system/{} running", self.chart.job_name());
                if let Some(a) = &self.failed_attempt {
                    p.push_str(&format!(
                        " ({} failed attempt{}: {})",
                        a.failures,
                        if a.failures == 1 { "" } else { "s" },
                        a.message.trim()
                    ));
                }
                parts.push(p)
            }
            JobState::Failed => {
                parts.push(format!("Job kube-system/{} failed", self.chart.job_name()))
            }
            JobState::Complete => {}
        }
        match &self.release {
            None if self.job == JobState::Complete => {
                parts.push(format!("no helm release {}", self.chart.name))
            }
            Some((rev, status)) if status != "deployed" => parts.push(format!(
                "helm release {} revision {rev} is {status}",
                self.chart.name
            )),
            Some((rev, _)) if !self.release_current && self.job == JobState::Complete => parts
                .push(format!(
                    "helm release {} revision {rev} is not of the current chart config",
                    self.chart.name
                )),
            _ => {}
        }
        parts.extend(self.problems.iter().take(4).cloned());
        if self.problems.len() > 4 {
            parts.push(format!("{} more", self.problems.len() - 4));
        }
        parts.join("; ")
    }
}

fn cond<'a>(v: &'a Value, t: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == t && c["status"] == "True")
}

fn env<'a>(job: &'a Value, name: &str) -> Option<&'a str> {
    job.pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// The config hash helm-controller gave the Job (`SHA256=<hex>`), as klipper-helm labels the
/// release with it: the part after `=`, at most 63 characters (chart.go:628-631).
fn job_config_hash(job: &Value) -> String {
    let a = job["metadata"]["annotations"]["helmcharts.helm.cattle.io/configHash"]
        .as_str()
        .unwrap_or("");
    let h = a.split_once('=').map(|(_, h)| h).unwrap_or(a);
    h.chars().take(63).collect()
}

/// The Job is the one helm-controller made for the chart version written (helm-controller
/// replaces it within moments of a change; until then the old Job and release would look
/// current). A values-only change is not caught here: the release's hash is then compared
/// with the old Job's for those moments.
fn job_matches_chart(job: &Value, chart: &Value) -> bool {
    let want_version = chart["spec"]["version"].as_str().unwrap_or("");
    env(job, "VERSION").unwrap_or("") == want_version
}

/// The last failed attempt of `job`'s pod.
fn failed_attempt(s: &Snapshot, job: &Value) -> Option<Attempt> {
    let uid = job["metadata"]["uid"].as_str();
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    s.objects
        .iter()
        .filter(|((k, ns, _), _)| k == "Pod" && ns == "kube-system")
        .map(|(_, p)| p)
        .filter(|p| {
            let owner = &p["metadata"]["ownerReferences"][0];
            owner["name"] == name && (uid.is_none() || owner["uid"].as_str() == uid)
        })
        .filter_map(|p| {
            let c = &p["status"]["containerStatuses"][0];
            let restarts = c["restartCount"].as_u64().unwrap_or(0);
            let term = if c["state"]["terminated"]["exitCode"].as_i64().unwrap_or(0) != 0 {
                Some((&c["state"]["terminated"], restarts + 1))
            } else if c["lastState"]["terminated"]["exitCode"]
                .as_i64()
                .unwrap_or(0)
                != 0
            {
                Some((&c["lastState"]["terminated"], restarts))
            } else {
                None
            }?;
            Some(Attempt {
                pod: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                failures: term.1.max(1),
                message: term.0["message"].as_str().unwrap_or("").trim().to_string(),
            })
        })
        .max_by_key(|a| a.failures)
}

/// Judge one HelmChart from a snapshot.
pub fn evaluate(s: &Snapshot, rel: &HelmRelease) -> AddonHealth {
    let release_ns = rel.namespace.as_str();
    let chart = s.get("HelmChart", "kube-system", &rel.name);
    let job = s.get("Job", "kube-system", &rel.job_name());
    let chart_failed = chart
        .and_then(|c| cond(c, "Failed"))
        .map(|c| c["message"].as_str().unwrap_or("Failed").to_string());
    let job_state = match (chart, job) {
        (None, _) | (_, None) => JobState::Pending,
        (Some(c), Some(j)) => {
            if cond(j, "Failed").is_some() {
                JobState::Failed
            } else if !job_matches_chart(j, c) {
                // helm-controller has not replaced the Job for the new chart yet.
                JobState::Pending
            } else if j["status"]["succeeded"].as_i64().unwrap_or(0) >= 1
                || cond(j, "Complete").is_some()
            {
                JobState::Complete
            } else {
                JobState::Running
            }
        }
    };
    let latest = s.latest_release(release_ns, &rel.name);
    let release_current = match (latest, job) {
        // helm-controller from v0.17.4 passes the hash (`CONFIG_HASH`) for klipper-helm
        // (v0.13.0+) to label the release with; an older pair labels nothing, and then the
        // newest release is all there is to judge.
        (Some(r), Some(j)) if env(j, "CONFIG_HASH").is_some() => {
            !r.config_hash.is_empty() && r.config_hash == job_config_hash(j)
        }
        (Some(_), Some(_)) => true,
        // A reader that did not ask for the records judges by the Job alone.
        _ => !s.has_releases && job_state == JobState::Complete,
    };
    let release = latest
        .map(|r| (r.revision, r.status.clone()))
        .or_else(|| (!s.has_releases).then(|| (0, "deployed".to_string())));
    let failed_attempt = match (job_state.clone(), job) {
        (JobState::Running | JobState::Failed, Some(j)) => failed_attempt(s, j),
        _ => None,
    };
    let mut problems = Vec::new();
    for w in &rel.wants {
        let what = if w.namespace.is_empty() {
            format!("{} {}", w.kind, w.name)
        } else {
            format!("{} {}/{}", w.kind, w.namespace, w.name)
        };
        let found: Vec<&Value> = if w.prefix {
            s.with_prefix(&w.kind, &w.namespace, &w.name)
        } else {
            s.get(&w.kind, &w.namespace, &w.name).into_iter().collect()
        };
        if found.is_empty() {
            let what = if w.prefix { format!("{what}*") } else { what };
            problems.push(format!("{what} missing"));
            continue;
        }
        for o in found {
            if let Some(p) = workload_problem(&w.kind, o) {
                let name = o["metadata"]["name"].as_str().unwrap_or(&w.name);
                problems.push(format!(
                    "{} {}/{} not ready ({p})",
                    w.kind, w.namespace, name
                ));
            }
        }
    }
    AddonHealth {
        chart: rel.clone(),
        job: job_state,
        release,
        release_current,
        failed_attempt,
        chart_failed,
        problems,
    }
}

/// Indent log lines for an error message (`(no log)` when there are none).
pub fn indent(text: &str) -> String {
    let t: Vec<String> = text
        .trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect();
    if t.is_empty() {
        "    (no log)".into()
    } else {
        t.join("\n")
    }
}

/// The error for an add-on whose install failed: what failed, the pod's log (`logs`), and the
/// exact way out. Pure.
pub fn failure_report(h: &AddonHealth, logs: &str) -> String {
    let name = h.chart.name.as_str();
    let ns = h.chart.namespace.as_str();
    let policy = h.chart.failure_policy.as_str();
    let mut head = format!("{}: helm-controller could not install the chart", h.chart);
    if let Some(a) = &h.failed_attempt {
        head.push_str(&format!(
            " (pod kube-system/{}, failed attempt {}",
            a.pod, a.failures
        ));
        if !a.message.is_empty() {
            head.push_str(&format!(": \"{}\"", a.message.lines().last().unwrap_or("")));
        }
        head.push(')');
    }
    if let Some((rev, status)) = &h.release {
        if status != "deployed" {
            head.push_str(&format!("; helm release {name} revision {rev} is {status}"));
        }
    }
    let mut out = head;
    if !logs.trim().is_empty() {
        out.push_str(&format!(":\n{}", indent(logs)));
    }
    let mut hints = Vec::new();
    let text = format!(
        "{logs}\n{}",
        h.failed_attempt
            .as_ref()
            .map(|a| a.message.as_str())
            .unwrap_or("")
    );
    if text.contains("timed out waiting for the condition") {
        let limit = h.chart.timeout.as_deref().unwrap_or("5m (helm's default)");
        hints.push(format!(
            "a hook of the chart did not finish within helm's timeout ({limit}){}; the usual cause is image pulls on a slow link: see `k3s kubectl -n {ns} get pods` and `k3s kubectl -n {ns} describe pods`",
            if h.chart.addon == Some(AddonKind::CertManager) {
                " (cert-manager's startupapicheck waits for the API and its webhook)"
            } else {
                ""
            }
        ));
    }
    if text.contains("not a valid chart repository")
        || text.contains("cannot be reached")
        || (text.contains("version") && text.contains("not found in"))
    {
        hints.push(format!(
            "the server could not fetch the chart: check that the chart version exists and its repository is reachable from the servers, or give `chart_archive` in {}",
            h.chart.inventory_place()
        ));
    }
    let fix = if h.chart_failed.is_some() || h.job == JobState::Failed {
        format!(
            "the Job used up its retries and helm-controller makes no new one for an unchanged chart: remove the cause, then `k3s kubectl -n kube-system delete job {}` on a server (helm-controller creates it again) and run `bootstrap up`",
            h.chart.job_name()
        )
    } else if policy == "abort"
        && (h.release_failed() || text.contains("waiting for operator intervention"))
    {
        let rev = h.release.as_ref().map(|(r, _)| *r).unwrap_or(1);
        let why = match h.chart.addon {
            Some(AddonKind::Longhorn) => "a reinstall would delete its volumes".to_string(),
            _ => format!("as {} says", h.chart.inventory_place()),
        };
        format!(
            "failurePolicy is abort for {name} ({why}), so helm-controller waits for you: remove the cause, then on a server `k3s kubectl -n {ns} delete secret sh.helm.release.v1.{name}.v{rev}` (the failed release record; helm-controller then upgrades from the revision before it, or installs again over what is there) and run `bootstrap up`"
        )
    } else {
        let how = if policy == "retry" {
            "it upgrades a failed release again"
        } else {
            "it uninstalls a failed release and installs again"
        };
        format!(
            "helm-controller tries again by itself (failurePolicy {policy}: {how}), next after the kubelet's back-off of at most 5 minutes: remove the cause, then run `bootstrap up` again; it waits for that attempt"
        )
    };
    for hint in hints {
        out.push_str(&format!("\n  {hint}"));
    }
    out.push_str(&format!("\n  {fix}"));
    out
}

/// The command that prints the install Job's last log lines.
pub fn job_logs_command(rel: &HelmRelease) -> String {
    format!(
        "k3s kubectl logs job/{} -n kube-system --tail 20 2>&1",
        rel.job_name()
    )
}
