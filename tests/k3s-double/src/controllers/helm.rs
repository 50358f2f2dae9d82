//! helm-controller (k3s-io/helm-controller v0.17.7 `pkg/controllers/chart/chart.go`) and the
//! script its Job runs (k3s-io/klipper-helm `entry`), as far as the tool depends on them:
//!
//! - a `helm-install-<name>` Job per HelmChart config, `backoffLimit` 1000 unless
//!   `spec.backOffLimit` (chart.go:75, 561-565), env `FAILURE_POLICY` (default `reinstall`,
//!   chart.go:548-551), `TIMEOUT` from `spec.timeout` (chart.go:986-991), and
//!   `EXPECTED_RELEASE_REVISION` / `CONFIG_HASH` (chart.go:681-690); its pod restarts on failure
//!   (`restartPolicy: OnFailure`) with the kubelet's back-off, and the chart gets `Failed` only when
//!   the retries are used up (chart.go:338-356);
//! - a completed Job is replaced unless the newest release is `deployed` with the Job's config
//!   hash (chart.go:646-656);
//! - the pod does what `entry` does (`helm_update`, entry:3-104): install when there is no release,
//!   upgrade a deployed one, and for a failed one follow the failure policy: `abort` exits 1
//!   "waiting for operator intervention" (entry:70-75), `reinstall` uninstalls and installs
//!   (entry:76-85), `retry` upgrades (entry:86-92);
//! - helm's release records: Secrets `sh.helm.release.v1.<name>.v<N>` (type `helm.sh/release.v1`,
//!   labels `owner=helm`, `name`, `status`, `version`, and `helmcharts.helm.cattle.io/configHash`
//!   from `--labels`, entry:257-259);
//! - deleting a HelmChart runs `helm-delete-<name>`: `helm uninstall --wait || true` (entry:14-25),
//!   so it completes even when the chart's pre-delete hook refuses, and the finalizer
//!   `wrangler.cattle.io/on-helm-chart-remove` goes once that Job is complete (chart.go:443-458).
//!
//! The double runs no charts: an attempt is judged when the pod has run two seconds. What a chart
//! creates comes from `charts.json`. Faults tests inject through the `k3s-double` ConfigMap in
//! kube-system: `fail-jobs` (helm fails before any release, as when the repository cannot be
//! reached), `fail-release` (the release is recorded `failed`), `hook-seconds` (`name=secs`: the
//! chart's post-install/upgrade hook takes that long; past the helm timeout, 5 minutes unless
//! `spec.timeout`, the release fails as helm reports it; the double does not wait the time) and
//! `refuse-uninstall` (the pre-delete hook fails). Longhorn's own pre-delete hook refuses while
//! its `deleting-confirmation-flag` Setting is not "true".

use serde_json::{json, Map, Value};

use super::workloads;
use super::{builtin, controller_ref, s};
use crate::kinds;
use crate::objects;
use crate::server::Ctx;
use crate::store::{kind_of, meta, obj_key, State};
use crate::util;

const CHARTS: &str = include_str!("../../charts.json");
pub const FINALIZER: &str = "wrangler.cattle.io/on-helm-chart-remove";
const JOB_IMAGE: &str = "rancher/klipper-helm:v0.13.3-build20260727";
const CHART_LABEL: &str = "helmcharts.helm.cattle.io/chart";
/// Release label and pod template annotation (chart.go:55).
const CONFIG_HASH_KEY: &str = "helmcharts.helm.cattle.io/configHash";
/// The values Secret's type (chart.go:49).
const VALUES_SECRET_TYPE: &str = "helmcharts.helm.cattle.io/values";
/// chart.go:75.
const DEFAULT_BACKOFF_LIMIT: i64 = 1000;
/// helm's default `--timeout` (5m0s).
const HELM_TIMEOUT_SECS: i64 = 300;
const RELEASE_TYPE: &str = "helm.sh/release.v1";

fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

/// Creates or updates an object of a chart (its kind must be served, like helm's apply).
fn put(st: &mut State, o: Value) {
    let all = st.kinds();
    let av = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(ki) = kinds::by_kind(&all, &av, kind_of(&o)).cloned() else {
        return;
    };
    let ns = meta(&o, "namespace").to_string();
    if let Err(e) = objects::upsert(st, &ki, &ns, o, "") {
        util::error(format!("helm: {}", e.message));
    }
}

/// The HelmChartConfig of a chart, if any.
fn chart_config<'a>(st: &'a State, chart: &Value) -> Option<&'a Value> {
    st.get(
        "helm.cattle.io",
        "HelmChartConfig",
        meta(chart, "namespace"),
        meta(chart, "name"),
    )
}

/// `chart-values-<name>` (chart.go:1061-1094): type `helmcharts.helm.cattle.io/values`, the
/// keys `HelmChartValuesContent`, `HelmChartValues` and the HelmChartConfig's
/// `HelmChartConfigValuesContent` / `HelmChartConfigValues`, each only when set.
fn values_secret(st: &State, chart: &Value) -> Value {
    use base64::Engine;
    let b = |t: &str| base64::engine::general_purpose::STANDARD.encode(t.as_bytes());
    let yaml = |v: &Value| serde_yaml::to_string(v).unwrap_or_default();
    let mut data = Map::new();
    let content = s(chart, "/spec/valuesContent");
    if !content.is_empty() {
        data.insert("HelmChartValuesContent".into(), json!(b(content)));
    }
    if let Some(v) = chart.pointer("/spec/values").filter(|v| !v.is_null()) {
        data.insert("HelmChartValues".into(), json!(b(&yaml(v))));
    }
    if let Some(cfg) = chart_config(st, chart) {
        let c = s(cfg, "/spec/valuesContent");
        if !c.is_empty() {
            data.insert("HelmChartConfigValuesContent".into(), json!(b(c)));
        }
        if let Some(v) = cfg.pointer("/spec/values").filter(|v| !v.is_null()) {
            data.insert("HelmChartConfigValues".into(), json!(b(&yaml(v))));
        }
    }
    json!({"apiVersion": "v1", "kind": "Secret", "type": VALUES_SECRET_TYPE,
        "metadata": {"name": format!("chart-values-{}", meta(chart, "name")),
            "namespace": meta(chart, "namespace"), "ownerReferences": [controller_ref(chart)]},
        "data": data})
}

/// `chart-content-<name>` (chart.go:1275-1294): the key `<name>.tgz.base64` holds
/// `spec.chartContent` when set; otherwise no data.
fn content_configmap(chart: &Value) -> Value {
    let name = meta(chart, "name");
    let mut data = Map::new();
    let c = s(chart, "/spec/chartContent");
    if !c.is_empty() {
        data.insert(format!("{name}.tgz.base64"), json!(c));
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("chart-content-{name}"), "namespace": meta(chart, "namespace"),
            "ownerReferences": [controller_ref(chart)]},
        "data": data})
}

/// helm-controller's `hashObjects` (chart.go:1473-1501): sha256 over the backoffLimit as
/// decimal text, the pod template as JSON (sorted keys, before `EXPECTED_RELEASE_REVISION`
/// and `CONFIG_HASH` are added, :684-690), then each object's `data`, keys sorted, key then
/// value (a Secret's value as its base64 text); `SHA256=` and upper-case hex.
fn config_hash(job: &Value, objs: &[&Value]) -> String {
    let mut bytes = Vec::new();
    if let Some(b) = job.pointer("/spec/backoffLimit") {
        bytes.extend(b.to_string().as_bytes());
    }
    let tpl = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    bytes.extend(tpl.to_string().as_bytes());
    for o in objs {
        if let Some(d) = o.get("data").and_then(Value::as_object) {
            // serde_json's map keeps keys sorted.
            for (k, v) in d {
                bytes.extend(k.as_bytes());
                bytes.extend(v.as_str().unwrap_or("").as_bytes());
            }
        }
    }
    format!("SHA256={}", util::sha256_hex(&bytes).to_uppercase())
}

fn cond_true(j: &Value, t: &str) -> bool {
    j.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
        })
}

/// The failure policy: the HelmChartConfig's, else the chart's, else `reinstall`
/// (chart.go:548-551, 592-595).
fn failure_policy(st: &State, chart: &Value) -> String {
    let cfg = st
        .get(
            "helm.cattle.io",
            "HelmChartConfig",
            meta(chart, "namespace"),
            meta(chart, "name"),
        )
        .map(|c| s(c, "/spec/failurePolicy").to_string())
        .unwrap_or_default();
    let own = s(chart, "/spec/failurePolicy");
    if !cfg.is_empty() {
        cfg
    } else if !own.is_empty() {
        own.to_string()
    } else {
        "reinstall".into()
    }
}

/// A Go duration as `metav1.Duration` prints it (`10m0s`, `300s`, `1h`): seconds.
fn go_duration_secs(d: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut rest = d.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let c = rest.chars().next()?;
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let (unit, mult) = if rest.starts_with("ms") {
            ("ms", 0.001)
        } else if rest.starts_with('h') {
            ("h", 3600.0)
        } else if rest.starts_with('m') {
            ("m", 60.0)
        } else if rest.starts_with('s') {
            ("s", 1.0)
        } else {
            return None;
        };
        total += num.parse::<f64>().ok()? * mult;
        num.clear();
        rest = &rest[unit.len()..];
    }
    num.is_empty().then_some(total as i64)
}

fn env_of(j: &Value, name: &str) -> Option<String> {
    j.pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| s(e, "/name") == name)
        .map(|e| s(e, "/value").to_string())
}

/// The newest release record of `name` in `ns` (chart.go `latestRelease`).
#[derive(Debug, Default, Clone)]
struct Release {
    revision: i64,
    status: String,
    hash: String,
}

fn releases(st: &State, ns: &str, name: &str) -> Vec<(i64, String)> {
    st.list("", "Secret", Some(ns))
        .into_iter()
        .filter(|o| {
            s(o, "/type") == RELEASE_TYPE
                && s(o, "/metadata/labels/owner") == "helm"
                && s(o, "/metadata/labels/name") == name
        })
        .filter_map(|o| {
            let v = s(o, "/metadata/labels/version").parse().ok()?;
            Some((v, meta(o, "name").to_string()))
        })
        .collect()
}

fn latest_release(st: &State, ns: &str, name: &str) -> Release {
    let mut r = Release::default();
    for o in st.list("", "Secret", Some(ns)) {
        if s(o, "/type") != RELEASE_TYPE
            || s(o, "/metadata/labels/owner") != "helm"
            || s(o, "/metadata/labels/name") != name
        {
            continue;
        }
        if let Ok(v) = s(o, "/metadata/labels/version").parse::<i64>() {
            if v > r.revision {
                r = Release {
                    revision: v,
                    status: s(o, "/metadata/labels/status").to_string(),
                    hash: o
                        .pointer(&format!(
                            "/metadata/labels/{}",
                            CONFIG_HASH_KEY.replace('/', "~1")
                        ))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                };
            }
        }
    }
    r
}

fn set_release_status(st: &mut State, ns: &str, name: &str, revision: i64, status: &str) {
    let key = obj_key(
        "",
        "Secret",
        ns,
        &format!("sh.helm.release.v1.{name}.v{revision}"),
    );
    let now = util::now_secs().to_string();
    st.update(&key, |o| {
        o["metadata"]["labels"]["status"] = json!(status);
        o["metadata"]["labels"]["modifiedAt"] = json!(now);
    });
}

/// Records revision `revision` of release `name` with `status` (helm's storage driver).
fn record_release(st: &mut State, ns: &str, name: &str, revision: i64, status: &str, hash: &str) {
    let mut labels = json!({"name": name, "owner": "helm", "status": status,
        "version": revision.to_string(), "modifiedAt": util::now_secs().to_string()});
    if !hash.is_empty() {
        labels[CONFIG_HASH_KEY] = json!(hash);
    }
    put(
        st,
        json!({"apiVersion": "v1", "kind": "Secret", "type": RELEASE_TYPE,
        "metadata": {"name": format!("sh.helm.release.v1.{name}.v{revision}"), "namespace": ns,
            "labels": labels},
        "data": {"release": ""}}),
    );
}

/// The Job helm-controller creates for a chart (`chart.go` job() :830-1059 and
/// getJobAndRelatedResources :519-697), with its config hash: the Job's own metadata has
/// labels only (:854-860; wrangler's apply adds its `objectset.rio.cattle.io/*` annotations);
/// the hash goes on the pod template (:1500) and, cut after `=` to 63 characters, into the
/// env `CONFIG_HASH` after `EXPECTED_RELEASE_REVISION`, both added once the hash is made
/// (:628-631, :684-690). Created suspended (:862). Returns the Job and its hash.
fn job(st: &State, chart: &Value, name: &str, action: &str, target: &str) -> (Value, String) {
    let chart_name = meta(chart, "name");
    let ns = meta(chart, "namespace");
    let rel = latest_release(st, target, chart_name);
    // An empty value is left out, as corev1.EnvVar serialises it (omitempty).
    let var = |n: &str, v: &str| {
        if v.is_empty() {
            json!({"name": n})
        } else {
            json!({"name": n, "value": v})
        }
    };
    let mut env = vec![
        var("NAME", chart_name),
        var("VERSION", s(chart, "/spec/version")),
        var("REPO", s(chart, "/spec/repo")),
        var("HELM_DRIVER", "secret"),
        var("CHART_NAMESPACE", ns),
        var("CHART", s(chart, "/spec/chart")),
        var("HELM_VERSION", s(chart, "/spec/helmVersion")),
        var("TARGET_NAMESPACE", target),
        var("AUTH_PASS_CREDENTIALS", "false"),
        var("INSECURE_SKIP_TLS_VERIFY", "false"),
        var("PLAIN_HTTP", "false"),
    ];
    if let Some(t) = chart.pointer("/spec/timeout").and_then(Value::as_str) {
        env.push(var("TIMEOUT", t));
    }
    env.push(var("FAILURE_POLICY", &failure_policy(st, chart)));
    env.push(var("SERVER_SIDE", "auto"));
    env.push(var("FORCE_CONFLICTS", "false"));
    let mut spec = json!({
        "containers": [{"name": "helm", "image": JOB_IMAGE, "imagePullPolicy": "IfNotPresent",
            "args": [action], "env": env,
            "volumeMounts": [{"name": "values", "mountPath": "/config"}, {"name": "content", "mountPath": "/chart"}]}],
        "restartPolicy": "OnFailure",
        "serviceAccountName": format!("helm-{chart_name}"),
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "volumes": [
            {"name": "values", "projected": {"defaultMode": 420, "sources": [{"secret": {"name": format!("chart-values-{chart_name}")}}]}},
            {"name": "content", "configMap": {"name": format!("chart-content-{chart_name}"), "defaultMode": 420}}],
    });
    if chart.pointer("/spec/bootstrap").and_then(Value::as_bool) == Some(true) {
        spec["nodeSelector"]["node-role.kubernetes.io/control-plane"] = json!("true");
        spec["hostNetwork"] = json!(true);
        spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"},
            {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"key": "node-role.kubernetes.io/etcd", "operator": "Exists", "effect": "NoExecute"},
            {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        ]);
    }
    let owner = json!({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "name": chart_name,
        "namespace": ns});
    let mut job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns,
            "labels": {CHART_LABEL: chart_name},
            // wrangler's apply (desiredset_apply.go:27-31), not chart.go.
            "annotations": {"objectset.rio.cattle.io/id": "helm-controller-chart-registration",
                "objectset.rio.cattle.io/owner-gvk": "helm.cattle.io/v1, Kind=HelmChart",
                "objectset.rio.cattle.io/owner-name": owner["name"],
                "objectset.rio.cattle.io/owner-namespace": owner["namespace"]},
            "ownerReferences": [controller_ref(chart)]},
        "spec": {"backoffLimit": chart.pointer("/spec/backOffLimit").cloned().unwrap_or(json!(DEFAULT_BACKOFF_LIMIT)),
            "completions": 1, "parallelism": 1, "suspend": true,
            "template": {"metadata": {"labels": {CHART_LABEL: chart_name}}, "spec": spec}}
    });
    let secret = values_secret(st, chart);
    let cm = content_configmap(chart);
    let hash = config_hash(&job, &[&cm, &secret]);
    job["spec"]["template"]["metadata"]["annotations"] = json!({CONFIG_HASH_KEY: hash});
    let (_, h) = hash.split_once('=').unwrap_or(("", &hash));
    let label_hash: String = h.chars().take(63).collect();
    if let Some(env) = job
        .pointer_mut("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array_mut)
    {
        env.push(json!({"name": "EXPECTED_RELEASE_REVISION", "value": rel.revision.to_string()}));
        env.push(json!({"name": "CONFIG_HASH", "value": label_hash}));
    }
    (job, hash)
}

/// The config hash on a Job's pod template (chart.go:1500), the only place it is.
fn job_hash(j: &Value) -> String {
    j.pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(CONFIG_HASH_KEY))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The job's pod once its container has been running for `secs` seconds on a Ready node.
fn ripe_pod(st: &State, j: &Value, secs: i64) -> Option<String> {
    let uid = meta(j, "uid");
    let ns = meta(j, "namespace");
    st.list("", "Pod", Some(ns)).into_iter().find_map(|p| {
        let mine = super::controller_uid(p) == Some(uid);
        let running = s(p, "/status/phase") == "Running" && !terminating(p);
        let since =
            util::parse_rfc3339(s(p, "/status/containerStatuses/0/state/running/startedAt"))
                .map(|t| util::now_secs() - t);
        (mine && running && since.is_some_and(|t| t >= secs))
            .then(|| obj_key("", "Pod", ns, meta(p, "name")))
    })
}

/// The kubelet's back-off before restart number `restarts`: 10 s doubling, at most 5 min
/// (kubelet `pkg/kubelet/kubelet.go` `MaxContainerBackOff`).
fn backoff_secs(restarts: i64) -> i64 {
    (10i64 << (restarts - 1).clamp(0, 5)).min(300)
}

/// The container exited 1: the kubelet restarts it after its back-off (10 s doubling, at most
/// 5 min). `term` is what the script wrote to /dev/termination-log (the container's
/// `lastState.terminated.message`).
fn crash_pod(st: &mut State, key: &str, log: &str, term: &str) -> i64 {
    let now = util::now_rfc3339();
    let mut restarts = 0;
    let mut id = String::new();
    st.update(key, |pod| {
        id = format!("{}/{}", meta(pod, "namespace"), meta(pod, "name"));
        let pod_name = meta(pod, "name").to_string();
        let c = &mut pod["status"]["containerStatuses"][0];
        restarts = c.get("restartCount").and_then(Value::as_i64).unwrap_or(0) + 1;
        let started = c
            .pointer("/state/running/startedAt")
            .cloned()
            .unwrap_or(json!(now));
        let backoff = backoff_secs(restarts);
        c["restartCount"] = json!(restarts);
        c["ready"] = json!(false);
        c["started"] = json!(false);
        c["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "message": term,
            "startedAt": started, "finishedAt": now}});
        c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
            "message": format!("back-off {backoff}s restarting failed container=helm pod={pod_name}")}});
    });
    if !id.is_empty() {
        st.restarts
            .insert(id.clone(), util::now_secs() + backoff_secs(restarts));
        st.logs.insert(id, log.to_string());
        st.dirty = true;
    }
    restarts
}

fn service_account(st: &mut State, chart: &Value) {
    let name = meta(chart, "name");
    let ns = meta(chart, "namespace");
    put(
        st,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": format!("helm-{name}"), "namespace": ns, "ownerReferences": [controller_ref(chart)]}}),
    );
    put(
        st,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("helm-{ns}-{name}"), "ownerReferences": [controller_ref(chart)]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": format!("helm-{name}"), "namespace": ns}]}),
    );
}

fn set_chart_status(st: &mut State, key: &str, job_name: &str, failed: Option<&str>) {
    let ns = key.split('/').nth(2).unwrap_or("").to_string();
    st.update(key, |c| {
        let mut conds = vec![
            json!({"type": "JobCreated", "status": "True", "reason": "Job created",
            "message": format!("Applying HelmChart using Job {ns}/{job_name}")}),
        ];
        match failed {
            Some(msg) => conds.push(
                json!({"type": "Failed", "status": "True", "reason": "Job failed", "message": msg}),
            ),
            None => conds.push(json!({"type": "Failed", "status": "False"})),
        }
        c["status"] = json!({"jobName": job_name, "conditions": conds});
    });
}

/// Test faults for `name` from the control ConfigMap.
struct Faults {
    fail_jobs: bool,
    fail_release: bool,
    hook_secs: Option<i64>,
    pre_delete_secs: Option<i64>,
    refuse_uninstall: bool,
}

fn faults(st: &State, name: &str) -> Faults {
    let secs = |knob: &str| {
        st.control_list(knob).iter().find_map(|e| {
            let (n, v) = e.split_once('=')?;
            (n.trim() == name).then(|| v.trim().trim_end_matches('s').parse().ok())?
        })
    };
    Faults {
        fail_jobs: st.control_list("fail-jobs").iter().any(|x| x == name),
        fail_release: st.control_list("fail-release").iter().any(|x| x == name),
        hook_secs: secs("hook-seconds"),
        pre_delete_secs: secs("pre-delete-seconds"),
        refuse_uninstall: st
            .control_list("refuse-uninstall")
            .iter()
            .any(|x| x == name),
    }
}

/// What one run of klipper-helm's `entry` did: its log, what it appended to the termination
/// log (`>> ${TERM_LOG}` on every path, success included: `entry`:16-102), and whether it
/// exited non-zero.
struct Attempt {
    log: String,
    term: String,
    failed: bool,
}

impl Attempt {
    fn new() -> Attempt {
        Attempt {
            log: String::new(),
            term: String::new(),
            failed: false,
        }
    }

    fn say(&mut self, l: impl AsRef<str>) {
        self.log.push_str(l.as_ref());
        self.log.push('\n');
    }

    /// A line `entry` writes to /dev/termination-log.
    fn term(&mut self, l: impl AsRef<str>) {
        self.term.push_str(l.as_ref());
        self.term.push('\n');
    }

    /// The attempt failed (exit 1).
    fn fail(&mut self) {
        self.failed = true;
    }
}

/// Everything helm-controller needs about one chart for an attempt.
struct ChartRun<'a> {
    chart: &'a Value,
    name: String,
    target: String,
    hash: String,
    timeout_secs: i64,
    faults: Faults,
}

/// The chart's pre-delete hook: Longhorn's `longhorn-uninstall` Job refuses while the
/// `deleting-confirmation-flag` Setting is not "true"; tests can make any chart's refuse.
fn pre_delete_refusal(st: &State, run: &ChartRun) -> Option<String> {
    let longhorn = chart_entry(run.chart)
        .and_then(|e| e.get("deleteConfirmation").cloned())
        .and_then(|v| v.as_str().map(str::to_string));
    if let Some(setting) = longhorn {
        let value = st
            .get("longhorn.io", "Setting", &run.target, &setting)
            .map(|o| s(o, "/value").to_string())
            .unwrap_or_default();
        if value != "true" {
            return Some(format!(
                "Error: failed pre-delete: 1 error occurred:\n\t* job {}-uninstall failed: BackoffLimitExceeded (the uninstall refuses: {setting} is \"{value}\", not \"true\")",
                run.name
            ));
        }
    }
    run.faults.refuse_uninstall.then(|| {
        "Error: failed pre-delete: 1 error occurred:\n\t* job failed: BackoffLimitExceeded (k3s double: refuse-uninstall)".to_string()
    })
}

/// `helm uninstall --wait`: the pre-delete hook, then the chart's objects and the release
/// records go.
fn uninstall(st: &mut State, run: &ChartRun, a: &mut Attempt) -> bool {
    a.say(format!(
        "+ helm uninstall {} --namespace {} --wait",
        run.name, run.target
    ));
    let rel = latest_release(st, &run.target, &run.name);
    if let Some(err) = pre_delete_refusal(st, run) {
        set_release_status(st, &run.target, &run.name, rel.revision, "uninstalling");
        a.say(err);
        return false;
    }
    let chart_id = format!("{}.{}", meta(run.chart, "namespace"), run.name);
    let made: Vec<String> = st
        .objects
        .iter()
        .filter(|(_, o)| s(o, "/metadata/labels/k3s-double~1chart") == chart_id)
        .map(|(k, _)| k.clone())
        .collect();
    for k in made {
        objects::request_delete(st, &k, &objects::DeleteOptions::default(), "");
    }
    for (_, secret) in releases(st, &run.target, &run.name) {
        let k = obj_key("", "Secret", &run.target, &secret);
        objects::finish_delete(st, &k, "");
    }
    a.say(format!("release \"{}\" uninstalled", run.name));
    true
}

/// `helm install` (revision 1) or `helm upgrade` (the next revision).
fn install(st: &mut State, ctx: &Ctx, run: &ChartRun, upgrade: bool, a: &mut Attempt) {
    let verb = if upgrade { "upgrade" } else { "install" };
    let chart_ref = s(run.chart, "/spec/chart").to_string();
    a.say(format!(
        "+ helm {verb} --namespace {} {} {chart_ref}",
        run.target, run.name
    ));
    let upper = if upgrade { "UPGRADE" } else { "INSTALLATION" };
    let create_ns = run
        .chart
        .pointer("/spec/createNamespace")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if run.faults.fail_jobs {
        let repo = s(run.chart, "/spec/repo");
        a.say(format!("Error: looks like \"{repo}\" is not a valid chart repository or cannot be reached: connection refused (k3s double: fail-jobs)"));
        a.fail();
        return;
    }
    if let Err(e) = app_version(run.chart) {
        a.say(e);
        a.fail();
        return;
    }
    if !st.namespace_exists(&run.target) {
        if !create_ns {
            a.say(format!(
                "Error: {upper} FAILED: create: failed to create: namespaces \"{}\" not found",
                run.target
            ));
            a.fail();
            return;
        }
        let nsobj =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": run.target}});
        let _ = objects::create(st, &builtin("Namespace"), None, nsobj, false, "");
    }
    let prev = latest_release(st, &run.target, &run.name);
    let revision = if upgrade { prev.revision + 1 } else { 1 };
    let (_, h) = run.hash.split_once('=').unwrap_or(("", &run.hash));
    let label_hash: String = h.chars().take(63).collect();
    install_chart(st, ctx, run.chart, &run.target);
    let failure = if run.faults.fail_release {
        Some(format!(
            "Error: {upper} FAILED: the k3s double failed this release (fail-release)"
        ))
    } else if run.faults.hook_secs.is_some_and(|h| h > run.timeout_secs) {
        // Helm 4's status waiter (helm v4.1.4 `pkg/kube/statuswait.go`:201-216, hooks
        // `pkg/action/install.go`:552, `upgrade.go`:506).
        let hooks = if upgrade {
            "post-upgrade hooks failed"
        } else {
            "failed post-install"
        };
        Some(format!(
            "Error: {upper} FAILED: {hooks}: resource Job/{}/{}-post-{verb} not ready. status: InProgress, message: Job in progress\ncontext deadline exceeded",
            run.target, run.name
        ))
    } else {
        None
    };
    if upgrade && prev.revision > 0 {
        set_release_status(st, &run.target, &run.name, prev.revision, "superseded");
    }
    match failure {
        Some(e) => {
            record_release(st, &run.target, &run.name, revision, "failed", &label_hash);
            a.say(e);
            a.fail();
        }
        None => {
            record_release(
                st,
                &run.target,
                &run.name,
                revision,
                "deployed",
                &label_hash,
            );
            a.say(format!(
                "NAME: {}\nLAST DEPLOYED: {}\nNAMESPACE: {}\nSTATUS: deployed\nREVISION: {revision}\nTEST SUITE: None",
                run.name,
                util::now_rfc3339(),
                run.target
            ));
        }
    }
}

/// klipper-helm `entry` `helm_update install` (entry:3-104).
fn entry_install(st: &mut State, ctx: &Ctx, run: &ChartRun, j: &Value) -> Attempt {
    let mut a = Attempt::new();
    let rel = latest_release(st, &run.target, &run.name);
    if rel.revision == 0 {
        a.term("Installing helm chart");
        install(st, ctx, run, false, &mut a);
        return a;
    }
    let expected = env_of(j, "EXPECTED_RELEASE_REVISION").unwrap_or_default();
    if !expected.is_empty() && expected != rel.revision.to_string() {
        let m = format!(
            "Current release revision {} does not match expected revision {expected}",
            rel.revision
        );
        a.term(&m);
        a.say(m);
        return a;
    }
    let mut status = rel.status.clone();
    if matches!(
        status.as_str(),
        "pending-install" | "pending-upgrade" | "pending-rollback" | "superseded" | "uninstalling"
    ) {
        a.say(format!(
            "Previous helm job was interrupted, updating status from {status} to failed"
        ));
        a.term(format!(
            "Resetting helm release status from '{status}' to 'failed'"
        ));
        set_release_status(st, &run.target, &run.name, rel.revision, "failed");
        if matches!(status.as_str(), "pending-upgrade" | "superseded") {
            a.term("Retrying upgrade of helm chart");
            a.say(format!("Retrying upgrade of {}", run.name));
            install(st, ctx, run, true, &mut a);
            return a;
        }
        status = "failed".into();
    }
    if status == "deployed" {
        a.say(format!("Already installed {}", run.name));
        a.term("Upgrading helm chart");
        a.say(format!("Upgrading {}", run.name));
        install(st, ctx, run, true, &mut a);
        return a;
    }
    let policy = env_of(j, "FAILURE_POLICY").unwrap_or_else(|| "reinstall".into());
    match policy.as_str() {
        "abort" => {
            let m = format!("Release status is '{status}' and failure policy is '{policy}'; waiting for operator intervention");
            a.term(&m);
            a.say(&m);
            a.fail();
        }
        "reinstall" => {
            a.term(format!("Uninstalling {status} helm chart"));
            if uninstall(st, run, &mut a) {
                a.say("Deleted");
                a.term("Installing helm chart");
                install(st, ctx, run, false, &mut a);
            } else {
                a.fail();
            }
        }
        "retry" => {
            a.term(format!("Upgrading {} from failed state", run.name));
            install(st, ctx, run, true, &mut a);
            // entry:91: `exit 0` whatever helm said.
            a.failed = false;
        }
        other => {
            let m = format!("Unknown failure policy '{other}'");
            a.term(&m);
            a.say(&m);
            a.fail();
        }
    }
    a
}

pub fn run(st: &mut State, ctx: &Ctx) {
    for chart in st.list_cloned("helm.cattle.io", "HelmChart", None) {
        let ns = meta(&chart, "namespace").to_string();
        let name = meta(&chart, "name").to_string();
        let chart_key = obj_key("helm.cattle.io", "HelmChart", &ns, &name);
        if terminating(&chart) {
            remove(st, ctx, &chart);
            continue;
        }
        if !objects::finalizers(&chart).iter().any(|f| f == FINALIZER) {
            st.update(&chart_key, |c| objects::add_finalizer(c, FINALIZER));
        }
        let job_name = format!("helm-install-{name}");
        let job_key = obj_key("batch", "Job", &ns, &job_name);
        let target = chart
            .pointer("/spec/targetNamespace")
            .and_then(Value::as_str)
            .unwrap_or(&ns)
            .to_string();
        // One pass applies, in wrangler's order (by kind as first seen: chart.go:692-697,
        // :416), the values Secret, the content ConfigMap, the ServiceAccount and binding,
        // then the Job.
        let (want, hash) = job(st, &chart, &job_name, "install", &target);
        put(st, values_secret(st, &chart));
        put(st, content_configmap(&chart));
        service_account(st, &chart);
        let cur = st.objects.get(&job_key).cloned();
        let rel = latest_release(st, &target, &name);
        let label_hash: String = hash
            .split_once('=')
            .map(|(_, h)| h)
            .unwrap_or("")
            .chars()
            .take(63)
            .collect();
        let Some(cur) = cur else {
            if let Err(e) = objects::create(st, &builtin("Job"), Some(&ns), want, false, "") {
                util::error(format!("helm: cannot create {job_name}: {}", e.message));
                continue;
            }
            set_chart_status(st, &chart_key, &job_name, None);
            st.event(
                &ctx.node,
                "helm-job-created",
                json!({"chart": name, "namespace": ns, "job": job_name}),
            );
            continue;
        };
        if terminating(&cur) {
            continue;
        }
        let complete = cond_true(&cur, "Complete");
        // chart.go:646-656: a complete Job stays only while the newest release is deployed
        // with its hash; an incomplete one while its template is unchanged (:672-676).
        let stale = if complete {
            !(rel.status == "deployed" && rel.hash == label_hash)
        } else {
            job_hash(&cur) != hash
        };
        if stale {
            // A Job is never patched. OnChange suspends it before the apply (chart.go:407-410);
            // wrangler's reconcileJob then waits while the job controller has not synced it (no
            // conditions yet) or its pods still run or terminate, and only then deletes it
            // (wrangler desiredset_compare.go:211-236); the next pass creates the new one.
            if !complete {
                st.update(&job_key, |j| j["spec"]["suspend"] = json!(true));
            }
            let count = |f: &str| cur.pointer(f).and_then(Value::as_i64).unwrap_or(0);
            let synced = cur
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| !c.is_empty());
            if synced && count("/status/active") + count("/status/terminating") == 0 {
                objects::finish_delete(st, &job_key, "");
            }
            continue;
        }
        // Created suspended; resumed once the Job controller has seen it (chart.go jobReady
        // :760-770, setJobSuspended :777-789).
        if cur.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
            if cond_true(&cur, "Suspended") {
                st.update(&job_key, |j| j["spec"]["suspend"] = json!(false));
            }
            continue;
        }
        let j = cur;
        if cond_true(&j, "Complete") {
            continue;
        }
        if cond_true(&j, "Failed") {
            // chart.go:338-356.
            set_chart_status(
                st,
                &chart_key,
                &job_name,
                Some("Job has reached configured number of retries without succeeding"),
            );
            continue;
        }
        let timeout_secs = chart
            .pointer("/spec/timeout")
            .and_then(Value::as_str)
            .and_then(go_duration_secs)
            .unwrap_or(HELM_TIMEOUT_SECS);
        let faults = faults(st, &name);
        // An attempt takes as long as its hook when the hook finishes within helm's timeout;
        // one that would not is judged at once (the double does not wait out the timeout).
        let takes = faults
            .hook_secs
            .filter(|h| *h <= timeout_secs)
            .unwrap_or(2)
            .max(2);
        let Some(pod_key) = ripe_pod(st, &j, takes) else {
            continue;
        };
        let started = st
            .objects
            .get(&pod_key)
            .and_then(|p| p.pointer("/status/startTime").cloned())
            .unwrap_or(json!(util::now_rfc3339()));
        st.update(&job_key, |j| {
            if j.pointer("/status/startTime").is_none() {
                j["status"]["startTime"] = started;
            }
            j["status"]["active"] = json!(1);
        });
        let run = ChartRun {
            chart: &chart,
            name: name.clone(),
            target: target.clone(),
            hash: hash.clone(),
            timeout_secs,
            faults,
        };
        let attempt = entry_install(st, ctx, &run, &j);
        let now = util::now_rfc3339();
        match attempt.failed.then_some(attempt.term.clone()) {
            Some(term) => {
                let restarts = crash_pod(st, &pod_key, &attempt.log, &term);
                let limit = j
                    .pointer("/spec/backoffLimit")
                    .and_then(Value::as_i64)
                    .unwrap_or(DEFAULT_BACKOFF_LIMIT);
                // The Job controller counts a restartPolicy OnFailure pod's restarts against
                // backoffLimit (kubernetes `pkg/controller/job/job_controller.go`
                // `getFailJobMessage` / `pastBackoffLimitOnFailure`).
                if restarts > limit {
                    objects::request_delete(st, &pod_key, &objects::DeleteOptions::default(), "");
                    st.update(&job_key, |j| {
                        j["status"]["failed"] = json!(1);
                        workloads::fail(
                            j,
                            &now,
                            "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit",
                        );
                    });
                    set_chart_status(
                        st,
                        &chart_key,
                        &job_name,
                        Some("Job has reached configured number of retries without succeeding"),
                    );
                }
                st.event(
                    &ctx.node,
                    "helm-job-failed",
                    json!({"chart": name, "namespace": ns, "job": job_name,
                    "reason": term.trim()}),
                );
            }
            None => {
                workloads::finish_pod_with(st, &pod_key, true, &attempt.log, &attempt.term);
                st.update(&job_key, |j| {
                    j["status"]["succeeded"] = json!(1);
                    workloads::complete(j, &now);
                });
                set_chart_status(st, &chart_key, &job_name, None);
                st.event(
                    &ctx.node,
                    "helm-job-complete",
                    json!({"chart": name, "namespace": ns, "job": job_name}),
                );
            }
        }
    }
}

/// The OnRemove handler: run `helm-delete-<name>` (`helm uninstall --wait || true`), then
/// remove what the chart registered and let the HelmChart go (chart.go:418-458).
fn remove(st: &mut State, ctx: &Ctx, chart: &Value) {
    if !objects::finalizers(chart).iter().any(|f| f == FINALIZER) {
        return;
    }
    let ns = meta(chart, "namespace").to_string();
    let name = meta(chart, "name").to_string();
    let chart_key = obj_key("helm.cattle.io", "HelmChart", &ns, &name);
    let job_name = format!("helm-delete-{name}");
    let job_key = obj_key("batch", "Job", &ns, &job_name);
    let target = chart
        .pointer("/spec/targetNamespace")
        .and_then(Value::as_str)
        .unwrap_or(&ns)
        .to_string();
    let Some(j) = st.objects.get(&job_key).cloned() else {
        let install = obj_key("batch", "Job", &ns, &format!("helm-install-{name}"));
        objects::finish_delete(st, &install, "");
        let (mut job, _) = job(st, chart, &job_name, "delete", &target);
        job["spec"]["suspend"] = json!(false);
        // Owned by the chart, which is going: without the owner reference the job outlives it.
        job["metadata"]
            .as_object_mut()
            .map(|m| m.remove("ownerReferences"));
        if objects::create(st, &builtin("Job"), Some(&ns), job, false, "").is_ok() {
            st.event(
                &ctx.node,
                "helm-job-created",
                json!({"chart": name, "namespace": ns, "job": job_name}),
            );
        }
        return;
    };
    let faults = faults(st, &name);
    // `helm uninstall --wait` takes as long as the chart's pre-delete hook (2 s without one).
    let takes = faults.pre_delete_secs.unwrap_or(2).max(2);
    let Some(pod_key) = ripe_pod(st, &j, takes) else {
        return;
    };
    let run = ChartRun {
        chart,
        name: name.clone(),
        target: target.clone(),
        hash: String::new(),
        timeout_secs: HELM_TIMEOUT_SECS,
        faults,
    };
    let mut a = Attempt::new();
    if latest_release(st, &target, &name).revision == 0 {
        a.term("No helm chart installed; nothing to delete");
    } else {
        a.term("Uninstalling helm chart");
        // `|| true` (entry:23): the Job succeeds whatever the uninstall said.
        let _ = uninstall(st, &run, &mut a);
    }
    workloads::finish_pod_with(st, &pod_key, true, &a.log, &a.term);
    st.event(
        &ctx.node,
        "helm-job-complete",
        json!({"chart": name, "namespace": ns, "job": job_name}),
    );
    objects::finish_delete(st, &job_key, "");
    objects::drop_finalizer(st, &chart_key, FINALIZER, &ctx.node);
}

fn chart_entry(chart: &Value) -> Option<Value> {
    chart_entry_named(chart).map(|(_, e)| e)
}

/// The chart's entry in `charts.json` and the chart name it is listed under. What helm
/// installs is the chart the reference names, so that decides: its last path element
/// (`oci://r/x/loki`, `loki`, `.../traefik-crd-39.0.1.tgz`), matched exactly or by the longest
/// entry name it starts with followed by `-`. Only a HelmChart without a usable reference
/// (an embedded `chartContent`) is looked up by its own name.
fn chart_entry_named(chart: &Value) -> Option<(String, Value)> {
    let all: Value = serde_json::from_str(CHARTS).ok()?;
    let entries = all.as_object()?;
    let c = chart
        .pointer("/spec/chart")
        .and_then(Value::as_str)
        .unwrap_or("");
    let base = c.rsplit('/').next().unwrap_or(c);
    let base = base.split(".tgz").next().unwrap_or(base);
    let by_ref = entries
        .iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .filter(|(k, _)| base == k.as_str() || base.starts_with(&format!("{k}-")))
        .max_by_key(|(k, _)| k.len());
    if let Some((k, v)) = by_ref {
        return Some((k.clone(), v.clone()));
    }
    if !base.is_empty() {
        return None;
    }
    let name = meta(chart, "name");
    entries
        .get(name)
        .filter(|_| !name.starts_with('_'))
        .map(|e| (name.to_string(), e.clone()))
}

/// The chart's `fullname` as the usual `_helpers.tpl` makes it (cloudnative-pg, velero,
/// kube-prometheus-stack, loki and flagger all use this form): `fullnameOverride`, else the
/// release name when it contains the chart name, else `<release>-<chart>`; truncated to the
/// entry's `fullnameMax` (kube-prometheus-stack: 26, its `_helpers.tpl:14-25`) or 63, without
/// a trailing `-`.
fn fullname(values: &Value, release: &str, chart: &str, max: usize) -> String {
    let full = match values.get("fullnameOverride").and_then(Value::as_str) {
        Some(f) if !f.is_empty() => f.to_string(),
        _ if release.contains(chart) => release.to_string(),
        _ => format!("{release}-{chart}"),
    };
    full.chars()
        .take(max)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Whether the chart is one k3s serves from /static/charts (its own packaged charts).
fn packaged(chart: &Value) -> bool {
    s(chart, "/spec/chart").contains("%{KUBERNETES_API}%")
}

/// The chart's appVersion for its version, from `charts.json` `versions`. A repository chart
/// whose version the double does not know fails as helm does for a version the repository
/// lacks (helm `pkg/repo/index.go` `ErrNoChartVersion`); a packaged chart or an embedded
/// archive (`chartContent`, whose `version` helm ignores) takes the entry's default.
fn app_version(chart: &Value) -> Result<String, String> {
    let Some(entry) = chart_entry(chart) else {
        return Ok(String::new());
    };
    let version = s(chart, "/spec/version");
    let known = entry
        .pointer("/versions")
        .and_then(Value::as_object)
        .and_then(|m| m.get(version))
        .and_then(Value::as_str)
        .map(str::to_string);
    let fallback = entry
        .get("defaultAppVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // No version: helm takes the repository's newest (the double's default).
    if packaged(chart) || chart.pointer("/spec/chartContent").is_some() || version.is_empty() {
        return Ok(known.unwrap_or(fallback));
    }
    known.ok_or_else(|| {
        format!(
            "Error: chart \"{}\" version \"{version}\" not found in {} repository",
            s(chart, "/spec/chart"),
            s(chart, "/spec/repo")
        )
    })
}

/// An object's image: from the chart's values when the entry says where (`imageValues`), else
/// the entry's, with `{appVersion}` filled in.
fn image_of(spec: &Value, values: &Value, app: &str) -> Value {
    if let Some(ptr) = spec.get("imageValues").and_then(Value::as_str) {
        if let Some(repo) = values
            .pointer(&format!("{ptr}/repository"))
            .and_then(Value::as_str)
        {
            let reg = values
                .pointer(&format!("{ptr}/registry"))
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
                .map(|r| format!("{r}/"))
                .unwrap_or_default();
            let tag = values
                .pointer(&format!("{ptr}/tag"))
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or(app);
            return json!(format!("{reg}{repo}:{tag}"));
        }
    }
    match spec.get("image").and_then(Value::as_str) {
        Some(i) => json!(i.replace("{appVersion}", app)),
        None => json!("k3s-double/placeholder:latest"),
    }
}

fn values_of(chart: &Value) -> Value {
    let text = chart
        .pointer("/spec/valuesContent")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut v: Value = serde_yaml::from_str::<serde_yaml::Value>(text)
        .ok()
        .and_then(|y| serde_json::to_value(y).ok())
        .unwrap_or(json!({}));
    if !v.is_object() {
        v = json!({});
    }
    if let Some(vals) = chart.pointer("/spec/values").and_then(Value::as_object) {
        for (k, x) in vals {
            v[k] = x.clone();
        }
    }
    if let Some(set) = chart.pointer("/spec/set").and_then(Value::as_object) {
        for (k, x) in set {
            v[k] = x.clone();
        }
    }
    v
}

fn install_chart(st: &mut State, ctx: &Ctx, chart: &Value, target: &str) {
    let release = meta(chart, "name").to_string();
    let chart_id = format!("{}.{}", meta(chart, "namespace"), release);
    let values = values_of(chart);
    let servicelb = !ctx.disable.iter().any(|d| d == "servicelb");
    let Some((chart_name, entry)) = chart_entry_named(chart) else {
        return;
    };
    let max = entry
        .get("fullnameMax")
        .and_then(Value::as_u64)
        .unwrap_or(63) as usize;
    let fullname = fullname(&values, &release, &chart_name, max);
    let app = app_version(chart).unwrap_or_default();
    let mut labels = Map::new();
    labels.insert("app.kubernetes.io/managed-by".into(), json!("Helm"));
    labels.insert("app.kubernetes.io/instance".into(), json!(release));
    labels.insert("k3s-double/chart".into(), json!(chart_id));
    let annotations =
        json!({"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": target});
    let mut objs = entry
        .get("objects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // An upstream chart (not k3s's repackaged one from /static/charts) carries the CRDs k3s
    // splits into a separate chart: traefik's upstream chart ships them in crds/
    // (reference/addons.md §4.4).
    if let (false, Some(extra)) = (
        packaged(chart),
        entry.get("upstreamIncludes").and_then(Value::as_str),
    ) {
        let all: Value = serde_json::from_str(CHARTS).unwrap_or(Value::Null);
        if let Some(more) = all
            .pointer(&format!("/{extra}/objects"))
            .and_then(Value::as_array)
        {
            let mut more = more.clone();
            for o in &mut more {
                o["crdsDir"] = json!(true);
            }
            objs.splice(0..0, more);
        }
    }
    let nodes: Vec<Value> = st.list("", "Node", None).into_iter().cloned().collect();
    for spec in objs {
        let kind = spec.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = spec
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace("{fullname}", &fullname)
            .replace("{release}", &release)
            .replace("{hash}", &util::sha256_hex(chart_id.as_bytes())[..8]);
        let ns = spec
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(target)
            .to_string();
        // A component the values switch off (`grafana.enabled: false`, `deployNodeAgent:
        // false`): the chart's template is wrapped in that `if`.
        if let Some(ptr) = spec.get("enabledValues").and_then(Value::as_str) {
            if values.pointer(ptr).and_then(Value::as_bool) == Some(false) {
                continue;
            }
        }
        let mut l = labels.clone();
        l.insert("app.kubernetes.io/name".into(), json!(name));
        let mut annotations = annotations.clone();
        // `helm.sh/resource-policy: keep` (CloudNativePG's CRDs are templates carrying it):
        // helm upgrades the object with the release but leaves it on uninstall (helm
        // `pkg/action/uninstall.go` filterManifestsToKeep). Without the chart label the
        // double's uninstall leaves it too.
        if spec.get("keep").and_then(Value::as_bool) == Some(true) {
            l.remove("k3s-double/chart");
            annotations["helm.sh/resource-policy"] = json!("keep");
        }
        // A chart's crds/ directory: helm installs those CRDs once, never upgrades them and
        // does not delete them on uninstall (helm `pkg/action/install.go` installCRDs; docs
        // "Custom Resource Definitions"). They carry no release of their own.
        let crds_dir = spec.get("crdsDir").and_then(Value::as_bool) == Some(true);
        if crds_dir {
            l.remove("k3s-double/chart");
            if kind == "CustomResourceDefinition"
                && st
                    .get(
                        "apiextensions.k8s.io",
                        "CustomResourceDefinition",
                        "",
                        &name,
                    )
                    .is_some()
            {
                continue;
            }
        }
        let meta_ns =
            json!({"name": name, "namespace": ns, "labels": l, "annotations": annotations});
        let meta_cl = json!({"name": name, "labels": l, "annotations": annotations});
        // Placement from the chart's values where the chart takes it from there (Traefik's
        // top-level `nodeSelector` and `tolerations`, values.yaml of chart 41.3.0). The entry's
        // `tolerations` and `nodeSelector` are the chart's defaults (node-exporter tolerates
        // every NoSchedule taint), which values replace, as helm's do.
        let default_tolerations = spec.get("tolerations").cloned().unwrap_or(json!([]));
        let default_selector = spec.get("nodeSelector").cloned().unwrap_or(json!({}));
        let (tolerations, node_selector) = match spec.get("placementValues").and_then(Value::as_str)
        {
            Some(ptr) => (
                values
                    .pointer(&format!("{ptr}/tolerations"))
                    .cloned()
                    .unwrap_or(default_tolerations),
                values
                    .pointer(&format!("{ptr}/nodeSelector"))
                    .cloned()
                    .unwrap_or(default_selector),
            ),
            None => (default_tolerations, default_selector),
        };
        let pod_tpl = json!({"metadata": {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release}},
            "spec": {"containers": [{"name": name, "image": image_of(&spec, &values, &app)}],
                     "tolerations": tolerations, "nodeSelector": node_selector}});
        let obj = match kind {
            "Deployment" | "StatefulSet" | "DaemonSet" => {
                if kind == "DaemonSet"
                    && spec.get("servicelb").and_then(Value::as_bool) == Some(true)
                    && !servicelb
                {
                    continue;
                }
                let mut o = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta_ns,
                    "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release}}, "template": pod_tpl}});
                if kind != "DaemonSet" {
                    // The replica count from the values where the chart reads it (Loki's
                    // `singleBinary.replicas`, 0 by default), else the chart's default.
                    let from_values = spec
                        .get("replicasValues")
                        .and_then(Value::as_str)
                        .and_then(|p| values.pointer(p))
                        .filter(|v| v.is_i64());
                    o["spec"]["replicas"] = from_values
                        .or(spec.get("replicas"))
                        .cloned()
                        .unwrap_or(json!(1));
                }
                o
            }
            "CustomResourceDefinition" => {
                let (plural, group) = name.split_once('.').unwrap_or((&name, "example.com"));
                let crd_kind = spec
                    .get("crdKind")
                    .and_then(Value::as_str)
                    .unwrap_or("Thing");
                let version = spec.get("version").and_then(Value::as_str).unwrap_or("v1");
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta_cl,
                    "spec": {"group": group, "names": {"kind": crd_kind, "listKind": format!("{crd_kind}List"), "plural": plural, "singular": crd_kind.to_lowercase(),
                        "shortNames": spec.get("shortNames").cloned().unwrap_or(json!([]))},
                        "scope": spec.get("scope").cloned().unwrap_or(json!("Namespaced")),
                        "versions": [{"name": version, "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
            }
            "Service" => {
                let lb = spec
                    .get("loadBalancer")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let mut o = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta_ns,
                    "spec": {"type": if lb { "LoadBalancer" } else { "ClusterIP" }, "ports": spec.get("ports").cloned().unwrap_or(json!([])),
                        "selector": {"app.kubernetes.io/name": name}}, "status": {"loadBalancer": {}}});
                if lb && servicelb {
                    let ips: Vec<Value> = nodes
                        .iter()
                        .filter_map(|n| n.pointer("/status/addresses/0/address").cloned())
                        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
                        .collect();
                    o["status"] = json!({"loadBalancer": {"ingress": ips}});
                }
                o
            }
            "IngressClass" => {
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta_cl, "spec": {"controller": spec.get("controller").cloned().unwrap_or(json!("traefik.io/ingress-controller"))}})
            }
            "CSIDriver" => {
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": meta_cl, "spec": {"attachRequired": true, "podInfoOnMount": true}})
            }
            "StorageClass" => {
                let mut m = meta_cl.clone();
                let default = values
                    .pointer("/persistence/defaultClass")
                    .and_then(Value::as_bool)
                    .unwrap_or(
                        spec.get("default")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    );
                if default {
                    m["annotations"]["storageclass.kubernetes.io/is-default-class"] = json!("true");
                }
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": m,
                    "provisioner": spec.get("provisioner").cloned().unwrap_or(json!("driver.longhorn.io")),
                    "reclaimPolicy": values.pointer("/persistence/reclaimPolicy").cloned().unwrap_or(json!("Delete")),
                    "allowVolumeExpansion": true, "volumeBindingMode": "Immediate",
                    "parameters": {"numberOfReplicas": values.pointer("/persistence/defaultClassReplicaCount").map(|v| json!(v.to_string().trim_matches('"'))).unwrap_or(json!("3"))}})
            }
            "Job" => {
                let now = util::now_rfc3339();
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta_ns, "spec": {"template": pod_tpl},
                    "status": {"succeeded": 1, "startTime": now, "completionTime": now, "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                        {"type": "Complete", "status": "True", "lastTransitionTime": now}]}})
            }
            "LonghornSetting" => {
                // longhorn-manager creates every Setting; the chart's `defaultSettings` set
                // the value (chart/templates/default-setting.yaml).
                if st.get("longhorn.io", "Setting", &ns, &name).is_none() {
                    let value = spec
                        .get("values")
                        .and_then(Value::as_str)
                        .and_then(|p| values.pointer(p))
                        .filter(|v| !v.is_null())
                        .map(|v| v.to_string().trim_matches('"').to_string())
                        .unwrap_or_else(|| s(&spec, "/default").to_string());
                    let o = json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Setting",
                        "metadata": {"name": name, "namespace": ns, "labels": l},
                        "value": value, "status": {"applied": true}});
                    put(st, o);
                }
                continue;
            }
            "LonghornNodes" => {
                for n in &nodes {
                    let nn = meta(n, "name");
                    let now = util::now_rfc3339();
                    let conds: Vec<Value> = ["Ready", "Schedulable", "MountPropagation", "RequiredPackages", "Multipathd", "KernelModulesLoaded", "NFSClientInstalled"]
                        .iter().map(|t| json!({"type": t, "status": "True", "reason": "", "message": "", "lastTransitionTime": now})).collect();
                    let o = json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Node",
                        "metadata": {"name": nn, "namespace": ns, "labels": l},
                        "spec": {"allowScheduling": true, "name": nn}, "status": {"conditions": conds}});
                    put(st, o);
                }
                continue;
            }
            _ => continue,
        };
        put(st, obj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_secs("10m"), Some(600));
        assert_eq!(go_duration_secs("10m0s"), Some(600));
        assert_eq!(go_duration_secs("1h30m"), Some(5400));
        assert_eq!(go_duration_secs("300s"), Some(300));
        assert_eq!(go_duration_secs("5"), None);
        assert_eq!(go_duration_secs(""), None);
    }

    #[test]
    fn app_versions_follow_the_pins() {
        let chart = |name: &str, version: &str| {
            json!({"metadata": {"name": name, "namespace": "kube-system"},
                "spec": {"chart": name, "repo": "https://example.invalid", "version": version}})
        };
        assert_eq!(app_version(&chart("traefik", "41.3.0")).unwrap(), "v3.7.11");
        assert_eq!(
            app_version(&chart("cert-manager", "v1.21.1")).unwrap(),
            "v1.21.1"
        );
        let e = app_version(&chart("cert-manager", "v1.21.2")).unwrap_err();
        assert!(e.contains("version \"v1.21.2\" not found"), "{e}");
    }

    #[test]
    fn charts_data_parses() {
        let v: Value = serde_json::from_str(CHARTS).unwrap();
        for c in [
            "traefik",
            "traefik-crd",
            "longhorn",
            "cert-manager",
            "sealed-secrets",
            "cloudnative-pg",
            "velero",
            "kube-prometheus-stack",
            "loki",
            "flagger",
        ] {
            assert!(v.get(c).is_some(), "{c}");
        }
    }

    #[test]
    fn fullnames_follow_the_charts_helpers() {
        let none = json!({});
        assert_eq!(fullname(&none, "loki", "loki", 63), "loki");
        assert_eq!(fullname(&none, "logs", "loki", 63), "logs-loki");
        assert_eq!(fullname(&none, "my-loki", "loki", 63), "my-loki");
        let over = json!({"fullnameOverride": "x"});
        assert_eq!(fullname(&over, "loki", "loki", 63), "x");
        // kube-prometheus-stack truncates to 26 and trims the trailing dash.
        assert_eq!(
            fullname(&none, "monitoring-1", "kube-prometheus-stack", 26),
            "monitoring-1-kube-promethe"
        );
        assert_eq!(
            fullname(&none, "kube-prometheus-stack-", "kube-prometheus-stack", 22),
            "kube-prometheus-stack"
        );
    }

    #[test]
    fn oci_and_archive_references_find_their_entry() {
        let c =
            |name: &str, chart: &str| json!({"metadata": {"name": name}, "spec": {"chart": chart}});
        let (k, _) = chart_entry_named(&c("logs", "oci://ghcr.io/grafana-community/loki")).unwrap();
        assert_eq!(k, "loki");
        let (k, _) = chart_entry_named(&c("pg", "cloudnative-pg-0.29.0.tgz")).unwrap();
        assert_eq!(k, "cloudnative-pg");
        // The longest name wins: k3s's packaged traefik-crd is not traefik.
        let (k, _) = chart_entry_named(&c(
            "traefik-crd",
            "https://%{KUBERNETES_API}%/static/charts/traefik-crd-39.0.102+up39.0.1.tgz",
        ))
        .unwrap();
        assert_eq!(k, "traefik-crd");
        // A release named like an entry but installing another chart gets that chart's.
        assert!(chart_entry_named(&c("loki", "podinfo")).is_none());
        let (k, _) = chart_entry_named(&c("loki", "")).unwrap();
        assert_eq!(k, "loki");
        assert!(chart_entry_named(&c("mine", "https://example.invalid/x.tgz")).is_none());
    }
}
