//! Workload controllers (Deployment → ReplicaSet → Pods, StatefulSet, DaemonSet, Job), the
//! scheduler, and the kubelets' part: pods start on Ready nodes, stop when deleted (after the
//! grace period when their container ignores SIGTERM), and plain Jobs' pods finish.
//!
//! Test knobs on pods (annotations): `k3s-double/ignore-sigterm: "true"` keeps a deleted pod
//! running until its grace period ends.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::{builtin, controller_ref, controller_uid, n, s};
use crate::kinds;
use crate::objects::{self, DeleteOptions};
use crate::store::{meta, obj_key, State};
use crate::util;

pub const IGNORE_SIGTERM: &str = "k3s-double/ignore-sigterm";
const HELM_CHART_LABEL: &str = "helmcharts.helm.cattle.io/chart";

pub fn run(st: &mut State) {
    deployments(st);
    replicasets(st);
    statefulsets(st);
    daemonsets(st);
    jobs(st);
    schedule(st);
    crash_baselines(st);
    kubelet(st);
    statuses(st);
}

fn short_hash(s: &str, n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    util::sha256_hex(s.as_bytes())
        .as_bytes()
        .chunks(2)
        .take(n)
        .map(|c| ALPHA[(c[0] as usize * 16 + c[1] as usize) % ALPHA.len()] as char)
        .collect()
}

fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

fn owned<'a>(st: &'a State, kind: &str, ns: &str, uid: &str) -> Vec<&'a Value> {
    let (g, k) = match kind {
        "Pod" => ("", "Pod"),
        _ => ("apps", kind),
    };
    st.list(g, k, Some(ns))
        .into_iter()
        .filter(|o| controller_uid(o) == Some(uid))
        .collect()
}

/// Creates a pod from a template, owned by `owner` (the apiserver's admission applies).
fn create_pod(
    st: &mut State,
    owner: &Value,
    name: String,
    tpl: &Value,
    extra: &Map<String, Value>,
    node: Option<&str>,
) {
    let ns = meta(owner, "namespace").to_string();
    let mut labels = tpl
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in extra {
        labels[k] = v.clone();
    }
    let mut spec = tpl.get("spec").cloned().unwrap_or(json!({}));
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "ownerReferences": [controller_ref(owner)]},
        "spec": spec});
    if let Some(a) = tpl.pointer("/metadata/annotations") {
        pod["metadata"]["annotations"] = a.clone();
    }
    if let Err(e) = objects::create(st, &builtin("Pod"), Some(&ns), pod, false, "") {
        util::error(format!(
            "failed to create pod {name} in {ns}: {}",
            e.message
        ));
    }
}

/// A `maxSurge`/`maxUnavailable` value: an integer, or a percentage of `replicas` rounded up
/// (surge) or down (unavailable), as the deployment controller does
/// (`pkg/controller/deployment/util` ResolveFenceposts).
fn fencepost(v: Option<&Value>, replicas: i64, default: &str, up: bool) -> i64 {
    let v = v.cloned().unwrap_or(json!(default));
    match (&v, v.as_str().and_then(|t| t.strip_suffix('%'))) {
        (Value::Number(n), _) => n.as_i64().unwrap_or(0),
        (_, Some(pct)) => {
            let p: i64 = pct.parse().unwrap_or(25);
            if up {
                (replicas * p + 99) / 100
            } else {
                replicas * p / 100
            }
        }
        (Value::String(t), None) => t.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The deployment controller's rolling update (`pkg/controller/deployment/rolling.go`): the
/// new ReplicaSet grows by at most `maxSurge` above the wanted replicas (25%, rounded up), the
/// old ones shrink only while `maxUnavailable` (25%, rounded down) allows, counting the new
/// ReplicaSet's pods that are not available; old pods that are not available go first. So a
/// one-replica Deployment keeps its old pod Ready until a new one is available: a new pod that
/// never becomes ready leaves the rollout where it is. `Recreate` scales the old ones to zero
/// first.
fn deployments(st: &mut State) {
    for d in st.list_cloned("apps", "Deployment", None) {
        if terminating(&d) {
            continue;
        }
        let ns = meta(&d, "namespace").to_string();
        let name = meta(&d, "name").to_string();
        let uid = meta(&d, "uid").to_string();
        let tpl = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = short_hash(&tpl.to_string(), 10);
        let rs_name = format!("{name}-{hash}");
        let replicas = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let mut rs_tpl = tpl.clone();
        rs_tpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let mine: Vec<Value> = owned(st, "ReplicaSet", &ns, &uid)
            .into_iter()
            .cloned()
            .collect();
        let revision = mine.len() + 1;
        let fresh = !mine.iter().any(|r| meta(r, "name") == rs_name);
        let recreate = s(&d, "/spec/strategy/type") == "Recreate";
        let max_surge = fencepost(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            replicas,
            "25%",
            true,
        );
        let mut max_unavailable = fencepost(
            d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            replicas,
            "25%",
            false,
        );
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let olds: Vec<&Value> = mine.iter().filter(|r| meta(r, "name") != rs_name).collect();
        let old_total: i64 = olds.iter().map(|r| n(r, "/spec/replicas")).sum();
        let new_now = mine
            .iter()
            .find(|r| meta(r, "name") == rs_name)
            .map(|r| n(r, "/spec/replicas"))
            .unwrap_or(0);
        // The new ReplicaSet's size this pass.
        let new_want = if recreate {
            if old_total > 0 || olds.iter().any(|r| n(r, "/status/replicas") > 0) {
                0
            } else {
                replicas
            }
        } else if old_total == 0 {
            replicas
        } else {
            let room = replicas + max_surge - (old_total + new_now);
            (new_now + room.max(0)).min(replicas)
        };
        if fresh {
            let mut labels = rs_tpl
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            if !labels.is_object() {
                labels = json!({});
            }
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/max-replicas": (replicas + max_surge).to_string(),
                        "deployment.kubernetes.io/revision": revision.to_string()},
                    "ownerReferences": [controller_ref(&d)]},
                "spec": {"replicas": new_want, "selector": selector, "template": rs_tpl}});
            if let Err(e) = objects::create(st, &builtin("ReplicaSet"), Some(&ns), rs, false, "") {
                util::error(format!(
                    "failed to create replicaset {rs_name}: {}",
                    e.message
                ));
            }
        } else if new_want != new_now {
            let k = obj_key("apps", "ReplicaSet", &ns, &rs_name);
            st.update(&k, |r| r["spec"]["replicas"] = json!(new_want));
        }
        // The old ones: pods that are not available go at once; the rest as far as the
        // availability budget allows.
        let new_available = mine
            .iter()
            .find(|r| meta(r, "name") == rs_name)
            .map(|r| n(r, "/status/availableReplicas"))
            .unwrap_or(0);
        let min_available = replicas - max_unavailable;
        let new_unavailable = (new_want - new_available).max(0);
        let mut budget = if recreate {
            i64::MAX
        } else {
            (old_total + new_want) - min_available - new_unavailable
        };
        for rs in olds {
            let cur = n(rs, "/spec/replicas");
            if cur == 0 {
                continue;
            }
            let available = n(rs, "/status/availableReplicas").min(cur);
            let unhealthy = cur - available;
            let down = unhealthy + budget.clamp(0, available);
            budget -= down - unhealthy;
            let k = obj_key("apps", "ReplicaSet", &ns, meta(rs, "name"));
            st.update(&k, |r| r["spec"]["replicas"] = json!(cur - down));
        }
    }
}

/// Pods of a set, best first to keep (scheduled and ready before pending).
fn rank(p: &Value) -> (u8, String) {
    let ready = objects::pod_ready(p);
    let bound = p.pointer("/spec/nodeName").is_some();
    (
        if ready {
            0
        } else if bound {
            1
        } else {
            2
        },
        meta(p, "name").to_string(),
    )
}

fn replicasets(st: &mut State) {
    for rs in st.list_cloned("apps", "ReplicaSet", None) {
        if terminating(&rs) {
            continue;
        }
        let ns = meta(&rs, "namespace").to_string();
        let name = meta(&rs, "name").to_string();
        let uid = meta(&rs, "uid").to_string();
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let mut pods: Vec<Value> = owned(st, "Pod", &ns, &uid)
            .into_iter()
            .filter(|p| !terminating(p))
            .cloned()
            .collect();
        pods.sort_by_key(rank);
        if pods.len() > want {
            for p in &pods[want..] {
                let k = obj_key("", "Pod", &ns, meta(p, "name"));
                objects::request_delete(st, &k, &DeleteOptions::default(), "");
            }
        }
        let tpl = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
        for _ in pods.len()..want {
            create_pod(
                st,
                &rs,
                format!("{name}-{}", util::random_suffix(5)),
                &tpl,
                &Map::new(),
                None,
            );
        }
    }
}

fn statefulsets(st: &mut State) {
    for sts in st.list_cloned("apps", "StatefulSet", None) {
        if terminating(&sts) {
            continue;
        }
        let ns = meta(&sts, "namespace").to_string();
        let name = meta(&sts, "name").to_string();
        let uid = meta(&sts, "uid").to_string();
        let want = sts
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let pods: Vec<Value> = owned(st, "Pod", &ns, &uid).into_iter().cloned().collect();
        let tpl = sts.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let rev = sts_revision(&sts);
        let parallel = s(&sts, "/spec/podManagementPolicy") == "Parallel";
        // RollingUpdate (the default): with every pod ready, the highest ordinal not on the
        // update revision is deleted and comes back on it (statefulset `updateStatefulSet`).
        let rolling = s(&sts, "/spec/updateStrategy/type") != "OnDelete";
        let partition = n(&sts, "/spec/updateStrategy/rollingUpdate/partition");
        if rolling && pods.len() >= want && pods.iter().all(|p| rank(p).0 == 0 && !terminating(p)) {
            let stale = pods
                .iter()
                .filter_map(|p| {
                    let ord: i64 = meta(p, "name")
                        .strip_prefix(&format!("{name}-"))?
                        .parse()
                        .ok()?;
                    (ord >= partition && s(p, "/metadata/labels/controller-revision-hash") != rev)
                        .then(|| (ord, meta(p, "name").to_string()))
                })
                .max();
            if let Some((_, pn)) = stale {
                let k = obj_key("", "Pod", &ns, &pn);
                objects::request_delete(st, &k, &DeleteOptions::default(), "");
                continue;
            }
        }
        for i in 0..want {
            let pn = format!("{name}-{i}");
            if pods.iter().any(|p| meta(p, "name") == pn) {
                continue;
            }
            // OrderedReady: the next ordinal waits for the one before to be Ready.
            if !parallel && i > 0 {
                let prev = format!("{name}-{}", i - 1);
                let ready = pods
                    .iter()
                    .any(|p| meta(p, "name") == prev && rank(p).0 == 0);
                if !ready {
                    break;
                }
            }
            let mut extra = Map::new();
            extra.insert("statefulset.kubernetes.io/pod-name".into(), json!(pn));
            extra.insert("apps.kubernetes.io/pod-index".into(), json!(i.to_string()));
            extra.insert("controller-revision-hash".into(), json!(rev));
            create_pod(st, &sts, pn, &tpl, &extra, None);
            if !parallel {
                break;
            }
        }
        for p in &pods {
            let ord: Option<usize> = meta(p, "name")
                .strip_prefix(&format!("{name}-"))
                .and_then(|x| x.parse().ok());
            if ord.is_some_and(|o| o >= want) && !terminating(p) {
                let k = obj_key("", "Pod", &ns, meta(p, "name"));
                objects::request_delete(st, &k, &DeleteOptions::default(), "");
            }
        }
    }
}

/// A StatefulSet's revision of its current template (`<name>-<hash>`, the ControllerRevision
/// name its pods carry in `controller-revision-hash`).
fn sts_revision(sts: &Value) -> String {
    format!(
        "{}-{}",
        meta(sts, "name"),
        short_hash(
            &sts.pointer("/spec/template")
                .cloned()
                .unwrap_or(json!({}))
                .to_string(),
            10
        )
    )
}

/// The tolerations the DaemonSet controller adds to its pods (`daemon/util`).
fn daemonset_tolerations(spec: &mut Value) {
    let mut tols = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (k, e) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        if !tols
            .iter()
            .any(|t| s(t, "/key") == k && s(t, "/effect") == e)
        {
            tols.push(json!({"key": k, "operator": "Exists", "effect": e}));
        }
    }
    spec["tolerations"] = json!(tols);
}

fn daemonsets(st: &mut State) {
    let nodes: Vec<Value> = st.list_cloned("", "Node", None);
    for ds in st.list_cloned("apps", "DaemonSet", None) {
        if terminating(&ds) {
            continue;
        }
        let ns = meta(&ds, "namespace").to_string();
        let name = meta(&ds, "name").to_string();
        let uid = meta(&ds, "uid").to_string();
        let mut tpl = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        daemonset_tolerations(&mut tpl["spec"]);
        let want: Vec<String> = nodes
            .iter()
            .filter(|nd| fits(nd, &tpl["spec"], true))
            .map(|nd| meta(nd, "name").to_string())
            .collect();
        let pods: Vec<Value> = owned(st, "Pod", &ns, &uid).into_iter().cloned().collect();
        for p in &pods {
            if !want.iter().any(|w| w == s(p, "/spec/nodeName")) && !terminating(p) {
                let k = obj_key("", "Pod", &ns, meta(p, "name"));
                objects::request_delete(st, &k, &DeleteOptions::default(), "");
            }
        }
        let hash = short_hash(&tpl.to_string(), 10);
        // RollingUpdate (the default, maxUnavailable 1): an old pod goes only while no more
        // than that many of the set are unavailable; its node then gets one of the current
        // template.
        if s(&ds, "/spec/updateStrategy/type") != "OnDelete" {
            let live: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
            let unavailable =
                want.len() as i64 - live.iter().filter(|p| rank(p).0 == 0).count() as i64;
            let max_unavailable = fencepost(
                ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
                want.len() as i64,
                "1",
                false,
            )
            .max(1);
            if unavailable < max_unavailable {
                if let Some(old) = live
                    .iter()
                    .find(|p| s(p, "/metadata/labels/controller-revision-hash") != hash)
                {
                    let k = obj_key("", "Pod", &ns, meta(old, "name"));
                    objects::request_delete(st, &k, &DeleteOptions::default(), "");
                }
            }
        }
        let mut extra = Map::new();
        extra.insert("controller-revision-hash".into(), json!(hash));
        extra.insert("pod-template-generation".into(), json!("1"));
        for nd in &want {
            if !pods
                .iter()
                .any(|p| s(p, "/spec/nodeName") == nd && !terminating(p))
            {
                create_pod(
                    st,
                    &ds,
                    format!("{name}-{}", util::random_suffix(5)),
                    &tpl,
                    &extra,
                    Some(nd),
                );
            }
        }
    }
}

fn phase(p: &Value) -> &str {
    s(p, "/status/phase")
}

fn job_finished(j: &Value) -> bool {
    j.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                matches!(s(c, "/type"), "Complete" | "Failed") && s(c, "/status") == "True"
            })
        })
}

fn jobs(st: &mut State) {
    for j in st.list_cloned("batch", "Job", None) {
        if terminating(&j) || job_finished(&j) {
            continue;
        }
        let ns = meta(&j, "namespace").to_string();
        let name = meta(&j, "name").to_string();
        let uid = meta(&j, "uid").to_string();
        let suspended = j.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        let key = obj_key("batch", "Job", &ns, &name);
        // A suspended Job runs no pods and says so (kubernetes job_controller.go: the
        // `Suspended` condition, reason JobSuspended); resumed, the condition goes False.
        let was = j
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| s(c, "/type") == "Suspended"))
            .map(|c| s(c, "/status") == "True");
        if suspended {
            for p in owned(st, "Pod", &ns, &uid)
                .into_iter()
                .filter(|p| !terminating(p))
                .map(|p| obj_key("", "Pod", &ns, meta(p, "name")))
                .collect::<Vec<_>>()
            {
                objects::request_delete(st, &p, &DeleteOptions::default(), "");
            }
            if was != Some(true) {
                let now = util::now_rfc3339();
                st.update(&key, |j| {
                    let mut conds: Vec<Value> = j
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    conds.retain(|c| s(c, "/type") != "Suspended");
                    conds.push(json!({"type": "Suspended", "status": "True", "reason": "JobSuspended",
                        "message": "Job suspended", "lastProbeTime": now, "lastTransitionTime": now}));
                    j["status"]["conditions"] = json!(conds);
                    j["status"]["active"] = json!(0);
                });
            }
            // Pods still shutting down count as `terminating` (JobPodReplacementPolicy, on
            // by default since 1.29), which wrangler waits out before it replaces the Job.
            let going = owned(st, "Pod", &ns, &uid)
                .into_iter()
                .filter(|p| terminating(p))
                .count() as i64;
            if j.pointer("/status/terminating").and_then(Value::as_i64) != Some(going) {
                st.update(&key, |j| j["status"]["terminating"] = json!(going));
            }
            continue;
        }
        if was == Some(true) {
            let now = util::now_rfc3339();
            st.update(&key, |j| {
                if let Some(c) = j
                    .pointer_mut("/status/conditions")
                    .and_then(Value::as_array_mut)
                {
                    for c in c.iter_mut().filter(|c| s(c, "/type") == "Suspended") {
                        *c = json!({"type": "Suspended", "status": "False", "reason": "JobResumed",
                            "message": "Job resumed", "lastProbeTime": now, "lastTransitionTime": now});
                    }
                }
            });
        }
        let pods: Vec<Value> = owned(st, "Pod", &ns, &uid).into_iter().cloned().collect();
        let active = pods
            .iter()
            .filter(|p| !terminating(p) && !matches!(phase(p), "Succeeded" | "Failed"))
            .count();
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let completions = j
            .pointer("/spec/completions")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let backoff = j
            .pointer("/spec/backoffLimit")
            .and_then(Value::as_i64)
            .unwrap_or(6);
        let helm = j
            .pointer(&format!(
                "/metadata/labels/{}",
                HELM_CHART_LABEL.replace('/', "~1")
            ))
            .is_some();
        if active == 0 && succeeded < completions && failed <= backoff {
            let tpl = j.pointer("/spec/template").cloned().unwrap_or(json!({}));
            create_pod(
                st,
                &j,
                format!("{name}-{}", util::random_suffix(5)),
                &tpl,
                &Map::new(),
                None,
            );
        }
        if helm {
            // helm-controller's jobs: their outcome and status are the chart's (helm.rs).
            continue;
        }
        let now = util::now_rfc3339();
        st.update(&key, |j| {
            if j.pointer("/status/startTime").is_none() {
                j["status"]["startTime"] = json!(now);
            }
            j["status"]["active"] = json!(active);
            j["status"]["ready"] = json!(0);
            j["status"]["terminating"] = json!(0);
            j["status"]["uncountedTerminatedPods"] = json!({});
            if succeeded > 0 {
                j["status"]["succeeded"] = json!(succeeded);
            }
            if failed > 0 {
                j["status"]["failed"] = json!(failed);
            }
            if succeeded >= completions {
                complete(j, &now);
            } else if failed > backoff {
                fail(
                    j,
                    &now,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                );
            }
        });
    }
}

pub fn complete(j: &mut Value, now: &str) {
    j["status"]["completionTime"] = json!(now);
    j["status"]["active"] = json!(0);
    j["status"]["conditions"] = json!([
        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
        {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}
    ]);
}

pub fn fail(j: &mut Value, now: &str, reason: &str, msg: &str) {
    j["status"]["active"] = json!(0);
    j["status"]["conditions"] = json!([
        {"type": "FailureTarget", "status": "True", "reason": reason, "message": msg, "lastProbeTime": now, "lastTransitionTime": now},
        {"type": "Failed", "status": "True", "reason": reason, "message": msg, "lastProbeTime": now, "lastTransitionTime": now}
    ]);
}

/// Can a pod with `spec` run on `node`? (Ready and schedulable unless a DaemonSet pod,
/// NoSchedule/NoExecute taints tolerated, nodeSelector matched.)
pub fn fits(node: &Value, spec: &Value, daemonset: bool) -> bool {
    if node.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    if !daemonset
        && (!crate::nodes::is_ready(node)
            || node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true))
    {
        return false;
    }
    let tols: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let effect = s(t, "/effect");
        if (effect == "NoSchedule" || effect == "NoExecute")
            && !tols.iter().any(|x| super::nodes::tolerates(x, t))
        {
            return false;
        }
    }
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        let labels = node.pointer("/metadata/labels");
        for (k, v) in sel {
            if labels.and_then(|l| l.get(k)) != Some(v) {
                return false;
            }
        }
    }
    true
}

/// The scheduler: each pending pod to an eligible node, spreading a workload's pods first
/// (the default scheduler's pod topology spread by hostname), then the node with the fewest
/// running pods.
fn schedule(st: &mut State) {
    let nodes: Vec<Value> = st.list_cloned("", "Node", None);
    let mut load: HashMap<String, usize> = HashMap::new();
    let mut siblings: HashMap<(String, String), usize> = HashMap::new();
    for p in st.list("", "Pod", None) {
        if matches!(phase(p), "Succeeded" | "Failed") || terminating(p) {
            continue;
        }
        if let Some(nn) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            *load.entry(nn.to_string()).or_default() += 1;
            if let Some(owner) = controller_uid(p) {
                *siblings
                    .entry((owner.to_string(), nn.to_string()))
                    .or_default() += 1;
            }
        }
    }
    let pending: Vec<Value> = st
        .list("", "Pod", None)
        .into_iter()
        .filter(|p| p.pointer("/spec/nodeName").is_none() && !terminating(p))
        .cloned()
        .collect();
    let now = util::now_rfc3339();
    for p in pending {
        let key = obj_key("", "Pod", meta(&p, "namespace"), meta(&p, "name"));
        let spec = p.get("spec").cloned().unwrap_or(json!({}));
        let owner = controller_uid(&p).unwrap_or("").to_string();
        let best = nodes
            .iter()
            .filter(|nd| fits(nd, &spec, false))
            .min_by_key(|nd| {
                let nn = meta(nd, "name").to_string();
                (
                    siblings
                        .get(&(owner.clone(), nn.clone()))
                        .copied()
                        .unwrap_or(0),
                    load.get(&nn).copied().unwrap_or(0),
                    nn,
                )
            });
        match best {
            Some(nd) => {
                let nn = meta(nd, "name").to_string();
                *load.entry(nn.clone()).or_default() += 1;
                if !owner.is_empty() {
                    *siblings.entry((owner.clone(), nn.clone())).or_default() += 1;
                }
                st.update(&key, |pod| {
                    pod["spec"]["nodeName"] = json!(nn);
                    pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}]);
                });
            }
            None => {
                let msg = format!(
                    "0/{} nodes are available: node(s) had untolerated taint(s), didn't match Pod's node affinity/selector, or were unschedulable or not ready.",
                    nodes.len()
                );
                st.update(&key, |pod| {
                    if s(pod, "/status/conditions/0/reason") != "Unschedulable" {
                        pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": now}]);
                    }
                });
            }
        }
    }
}

fn held(st: &State, p: &Value) -> bool {
    // The control ConfigMap's `hold` names workloads (`ns/kind/name`); find the pod's.
    let ns = meta(p, "namespace");
    let Some(owner) = p.pointer("/metadata/ownerReferences/0").cloned() else {
        return false;
    };
    let (mut kind, mut name) = (
        s(&owner, "/kind").to_string(),
        s(&owner, "/name").to_string(),
    );
    if kind == "ReplicaSet" {
        if let Some(rs) = st.get("apps", "ReplicaSet", ns, &name) {
            if let Some(d) = rs.pointer("/metadata/ownerReferences/0") {
                kind = s(d, "/kind").to_string();
                name = s(d, "/name").to_string();
            }
        }
    }
    let all = kinds::builtin();
    st.control_list("hold").iter().any(|h| {
        let parts: Vec<&str> = h.split('/').collect();
        parts.len() == 3
            && parts[0] == ns
            && parts[2] == name
            && kinds::resolve(&all, parts[1]).is_some_and(|k| k.kind == kind)
    })
}

/// The pod's workload (`ns/Kind/name`) and the revision of the template it runs
/// (`pod-template-hash` or `controller-revision-hash`).
fn workload_of(st: &State, p: &Value) -> Option<(String, String)> {
    let ns = meta(p, "namespace");
    let owner = p.pointer("/metadata/ownerReferences/0")?;
    let (kind, name) = (s(owner, "/kind"), s(owner, "/name"));
    let (wkind, workload, rev) = match kind {
        "ReplicaSet" => {
            let d = st
                .get("apps", "ReplicaSet", ns, name)?
                .pointer("/metadata/ownerReferences/0")?;
            (
                "Deployment",
                s(d, "/name").to_string(),
                s(p, "/metadata/labels/pod-template-hash"),
            )
        }
        "DaemonSet" | "StatefulSet" => (
            kind,
            name.to_string(),
            s(p, "/metadata/labels/controller-revision-hash"),
        ),
        _ => return None,
    };
    Some((format!("{ns}/{wkind}/{workload}"), rev.to_string()))
}

/// A container that exits at once, `since` seconds after the pod started: how often the
/// kubelet restarted it, the back-off it waits now (as the kubelet words it) and when its last
/// run began. The kubelet's crash back-off starts at 10 s and doubles up to 5 min
/// (kubernetes pkg/kubelet/kubelet.go `backOffPeriod`, `MaxContainerBackOff`).
fn crash_loop(since: i64) -> (i64, String, i64) {
    let (mut restarts, mut at, mut wait) = (0, 0, 10);
    while at + wait <= since {
        at += wait;
        restarts += 1;
        wait = (wait * 2).min(300);
    }
    let shown = if wait >= 60 && wait % 60 == 0 {
        format!("{}m0s", wait / 60)
    } else if wait >= 60 {
        format!("{}m{}s", wait / 60, wait % 60)
    } else {
        format!("{wait}s")
    };
    (restarts, shown, at)
}

/// Whether a workload named by the control ConfigMap's `crash` (`ns/kind/name`, kind in any
/// form kubectl takes) is `workload` (`ns/Kind/name`).
fn named_in(list: &[String], workload: &str) -> bool {
    let all = kinds::builtin();
    let w: Vec<&str> = workload.split('/').collect();
    list.iter().any(|h| {
        let parts: Vec<&str> = h.split('/').collect();
        parts.len() == 3
            && w.len() == 3
            && parts[0] == w[0]
            && parts[2] == w[2]
            && kinds::resolve(&all, parts[1]).is_some_and(|k| k.kind == w[1])
    })
}

/// The `crash` knob: for each workload it names, the templates its pods run now are the
/// baseline, recorded once; pods of any later template crash at start (a rollout of a broken
/// version or config), while the baseline's keep running. A workload no longer named loses its
/// baseline.
fn crash_baselines(st: &mut State) {
    let list = st.control_list("crash");
    let mut now: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in st.list("", "Pod", None) {
        if let Some((w, rev)) = workload_of(st, p) {
            if named_in(&list, &w) {
                now.entry(w).or_default().push(rev);
            }
        }
    }
    let before = st.crash_baseline.clone();
    let mut next: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (w, revs) in now {
        let kept = before.get(&w).cloned().unwrap_or(revs);
        next.insert(w, kept);
    }
    if next != before {
        st.crash_baseline = next;
        st.dirty = true;
    }
}

fn crashing(st: &State, p: &Value) -> bool {
    workload_of(st, p).is_some_and(|(w, rev)| {
        st.crash_baseline
            .get(&w)
            .is_some_and(|base| !base.contains(&rev))
    })
}

fn pod_ip(name: &str) -> String {
    let h = util::sha256_hex(name.as_bytes());
    let b = h.as_bytes();
    format!("10.42.{}.{}", b[0] % 8, 2 + (b[1] as u32 * 7 % 250))
}

/// What the kubelets do: start pods on Ready nodes, stop deleted ones, run plain Jobs' pods
/// to the end. On a node that is not Ready nothing happens (its pods are marked not ready,
/// and a deleted pod stays Terminating), as on a real cluster.
fn kubelet(st: &mut State) {
    let nodes: HashMap<String, Value> = st
        .list("", "Node", None)
        .iter()
        .map(|nd| (meta(nd, "name").to_string(), (*nd).clone()))
        .collect();
    let fails = st.control_list("fail-jobs");
    let pods: Vec<Value> = st.list_cloned("", "Pod", None);
    let now_s = util::now_secs();
    let now = util::now_rfc3339();
    for p in pods {
        let ns = meta(&p, "namespace").to_string();
        let name = meta(&p, "name").to_string();
        let key = obj_key("", "Pod", &ns, &name);
        let Some(nn) = p.pointer("/spec/nodeName").and_then(Value::as_str) else {
            if terminating(&p) {
                objects::finish_delete(st, &key, "");
            }
            continue;
        };
        let node_ready = nodes.get(nn).is_some_and(crate::nodes::is_ready);
        if terminating(&p) {
            if !node_ready {
                continue;
            }
            let ignore = s(
                &p,
                &format!(
                    "/metadata/annotations/{}",
                    IGNORE_SIGTERM.replace('/', "~1")
                ),
            ) == "true";
            let deadline =
                util::parse_rfc3339(s(&p, "/metadata/deletionTimestamp")).unwrap_or(now_s);
            if !ignore || now_s >= deadline {
                st.update(&key, |pod| {
                    if !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed") {
                        pod["status"]["phase"] = json!("Failed");
                    }
                });
                if objects::finalizers(&p).is_empty() {
                    objects::finish_delete(st, &key, "");
                }
            }
            continue;
        }
        let ph = phase(&p).to_string();
        if matches!(ph.as_str(), "Succeeded" | "Failed") {
            continue;
        }
        // A crash-looping container (helm.rs) waits out its back-off, then runs again with
        // its restart count and last state kept.
        let pod_id = format!("{ns}/{name}");
        let backoff_until = st.restarts.get(&pod_id).copied();
        let backing_off = backoff_until.is_some_and(|t| now_s < t);
        if backoff_until.is_some() && !backing_off {
            st.restarts.remove(&pod_id);
            // The new container's log starts empty; the last one is `--previous`.
            if let Some(l) = st.logs.remove(&pod_id) {
                st.logs.insert(format!("{pod_id}#previous"), l);
            }
        }
        let crash = node_ready && crashing(st, &p);
        let ready = node_ready && !held(st, &p) && !backing_off && !crash;
        let host_ip = nodes
            .get(nn)
            .and_then(|nd| nd.pointer("/status/addresses/0/address"))
            .cloned()
            .unwrap_or(Value::Null);
        let containers: Vec<String> = p
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|c| s(c, "/name").to_string()).collect())
            .unwrap_or_default();
        let images: HashMap<String, String> = p
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| (s(c, "/name").to_string(), s(c, "/image").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if ph != "Running" && !node_ready {
            continue;
        }
        let started = p
            .pointer("/status/startTime")
            .cloned()
            .unwrap_or(json!(now));
        let ready_s = if ready { "True" } else { "False" };
        st.update(&key, |pod| {
            let old = pod.get("status").cloned().unwrap_or(json!({}));
            let since = |t: &str| -> Value {
                old.pointer("/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| s(c, "/type") == t))
                    .filter(|c| s(c, "/status") == ready_s || t == "PodScheduled" || t == "Initialized")
                    .and_then(|c| c.get("lastTransitionTime").cloned())
                    .unwrap_or(json!(now))
            };
            let statuses: Vec<Value> = containers
                .iter()
                .map(|c| {
                    let old_c = old
                        .pointer("/containerStatuses")
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().find(|x| s(x, "/name") == c))
                        .cloned();
                    if backing_off {
                        if let Some(o) = &old_c {
                            return o.clone();
                        }
                    }
                    let prev = old_c
                        .as_ref()
                        .and_then(|x| x.pointer("/state/running/startedAt").cloned())
                        .unwrap_or(if backoff_until.is_some() { json!(now) } else { started.clone() });
                    let restarts = old_c.as_ref().and_then(|x| x.get("restartCount").cloned()).unwrap_or(json!(0));
                    let mut st = json!({"name": c, "ready": ready, "started": true, "restartCount": restarts,
                        "image": images.get(c).cloned().unwrap_or_default(),
                        "imageID": format!("{}@sha256:{}", images.get(c).cloned().unwrap_or_default(), &util::sha256_hex(c.as_bytes())[..64]),
                        "containerID": format!("containerd://{}", util::sha256_hex(format!("{ns}/{name}/{c}/{restarts}").as_bytes())),
                        "state": {"running": {"startedAt": prev}}});
                    if let Some(last) = old_c.as_ref().and_then(|x| x.get("lastState")) {
                        st["lastState"] = last.clone();
                    }
                    if crash {
                        // Exits 1 at once, again after each back-off.
                        let start = util::parse_rfc3339(started.as_str().unwrap_or(""));
                        let since = start.map(|t| now_s - t).unwrap_or(0);
                        let (restarts, backoff, last) = crash_loop(since);
                        let last = util::rfc3339(start.unwrap_or(now_s) + last);
                        st["ready"] = json!(false);
                        st["started"] = json!(false);
                        st["restartCount"] = json!(restarts);
                        st["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off {backoff} restarting failed container={c} pod={name}_{ns}({uid})",
                                uid = s(&p, "/metadata/uid"))}});
                        st["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
                            "startedAt": last, "finishedAt": last}});
                    }
                    st
                })
                .collect();
            pod["status"] = json!({
                "phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                "podIP": pod_ip(&name), "podIPs": [{"ip": pod_ip(&name)}], "startTime": started,
                "qosClass": old.get("qosClass").cloned().unwrap_or(json!("BestEffort")),
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": since("PodReadyToStartContainers")},
                    {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": since("Initialized")},
                    {"type": "Ready", "status": ready_s, "lastProbeTime": null, "lastTransitionTime": since("Ready")},
                    {"type": "ContainersReady", "status": ready_s, "lastProbeTime": null, "lastTransitionTime": since("ContainersReady")},
                    {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": since("PodScheduled")},
                ],
                "containerStatuses": statuses,
            });
        });
        // A plain Job's pod: done two seconds after it started.
        let job = p
            .pointer("/metadata/ownerReferences/0")
            .filter(|o| s(o, "/kind") == "Job")
            .map(|o| s(o, "/name").to_string());
        if let Some(job) = job {
            let helm = st
                .get("batch", "Job", &ns, &job)
                .and_then(|j| {
                    j.pointer(&format!(
                        "/metadata/labels/{}",
                        HELM_CHART_LABEL.replace('/', "~1")
                    ))
                })
                .is_some();
            let running_for = util::parse_rfc3339(started.as_str().unwrap_or(""))
                .map(|t| now_s - t)
                .unwrap_or(0);
            if !helm && node_ready && running_for >= 2 {
                let failed = fails.contains(&job);
                finish_pod(
                    st,
                    &key,
                    !failed,
                    if failed {
                        "Error: the k3s double failed this job (fail-jobs)\n"
                    } else {
                        ""
                    },
                );
            }
        }
    }
}

/// Ends a pod's containers (exit 0 or 1) and records the log.
pub fn finish_pod(st: &mut State, key: &str, ok: bool, log: &str) {
    finish_pod_with(st, key, ok, log, "");
}

/// [`finish_pod`], the container having written `message` to its termination log (the
/// kubelet's `state.terminated.message`).
pub fn finish_pod_with(st: &mut State, key: &str, ok: bool, log: &str, message: &str) {
    let now = util::now_rfc3339();
    let mut ns_name = String::new();
    st.update(key, |pod| {
        ns_name = format!("{}/{}", meta(pod, "namespace"), meta(pod, "name"));
        pod["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
        if let Some(cs) = pod.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut) {
            for c in cs {
                let started = c.pointer("/state/running/startedAt").cloned().unwrap_or(json!(now));
                c["ready"] = json!(false);
                c["started"] = json!(false);
                c["state"] = json!({"terminated": {"exitCode": if ok { 0 } else { 1 },
                    "reason": if ok { "Completed" } else { "Error" }, "startedAt": started, "finishedAt": now}});
                if !message.is_empty() {
                    c["state"]["terminated"]["message"] = json!(message);
                }
            }
        }
        if let Some(conds) = pod.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
            for c in conds {
                if matches!(s(c, "/type"), "Ready" | "ContainersReady") {
                    c["status"] = json!("False");
                    c["reason"] = json!("PodCompleted");
                }
            }
        }
    });
    if !ns_name.is_empty() {
        st.logs.insert(ns_name, log.to_string());
        st.dirty = true;
    }
}

fn pods_of<'a>(st: &'a State, ns: &str, uid: &str) -> Vec<&'a Value> {
    owned(st, "Pod", ns, uid)
}

fn is_ready(p: &Value) -> bool {
    rank(p).0 == 0 && !terminating(p)
}

/// Workload statuses from their pods (and ReplicaSets).
fn statuses(st: &mut State) {
    let now = util::now_rfc3339();
    for rs in st.list_cloned("apps", "ReplicaSet", None) {
        let (ns, uid) = (
            meta(&rs, "namespace").to_string(),
            meta(&rs, "uid").to_string(),
        );
        let pods = pods_of(st, &ns, &uid);
        let total = pods.iter().filter(|p| !terminating(p)).count() as i64;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let gen = rs
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let k = obj_key("apps", "ReplicaSet", &ns, meta(&rs, "name"));
        st.update(&k, |r| {
            r["status"] = json!({"replicas": total, "fullyLabeledReplicas": total, "readyReplicas": ready,
                "availableReplicas": ready, "observedGeneration": gen});
            if ready == 0 {
                r["status"].as_object_mut().map(|m| { m.remove("readyReplicas"); m.remove("availableReplicas") });
            }
        });
    }
    for d in st.list_cloned("apps", "Deployment", None) {
        let (ns, uid) = (
            meta(&d, "namespace").to_string(),
            meta(&d, "uid").to_string(),
        );
        let want = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let tpl = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let current = format!("{}-{}", meta(&d, "name"), short_hash(&tpl.to_string(), 10));
        let sets: Vec<Value> = owned(st, "ReplicaSet", &ns, &uid)
            .into_iter()
            .cloned()
            .collect();
        let (mut total, mut ready, mut updated) = (0, 0, 0);
        for rs in &sets {
            let r = n(rs, "/status/replicas");
            total += r;
            ready += n(rs, "/status/readyReplicas");
            if meta(rs, "name") == current {
                updated = r;
            }
        }
        let available = ready >= want;
        let gen = d
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let k = obj_key("apps", "Deployment", &ns, meta(&d, "name"));
        st.update(&k, |dep| {
            let old = dep.pointer("/status/conditions/0/status").and_then(Value::as_str).unwrap_or("").to_string();
            let avail_s = if available { "True" } else { "False" };
            let ts = if old == avail_s {
                dep.pointer("/status/conditions/0/lastTransitionTime").cloned().unwrap_or(json!(now))
            } else {
                json!(now)
            };
            let progressed = updated >= want && ready >= want && total == updated;
            let mut s = json!({"observedGeneration": gen, "replicas": total, "updatedReplicas": updated,
                "readyReplicas": ready, "availableReplicas": ready,
                "conditions": [
                    {"type": "Available", "status": avail_s,
                     "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                     "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                     "lastTransitionTime": ts, "lastUpdateTime": ts},
                    {"type": "Progressing", "status": "True",
                     "reason": if progressed { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                     "message": if progressed { format!("ReplicaSet \"{current}\" has successfully progressed.") } else { format!("ReplicaSet \"{current}\" is progressing.") },
                     "lastTransitionTime": ts, "lastUpdateTime": ts}]});
            let m = s.as_object_mut().expect("object");
            if ready == 0 {
                m.remove("readyReplicas");
                m.remove("availableReplicas");
            }
            if want - ready > 0 {
                m.insert("unavailableReplicas".into(), json!(want - ready));
            }
            if updated == 0 {
                m.remove("updatedReplicas");
            }
            dep["status"] = s;
        });
    }
    for sts in st.list_cloned("apps", "StatefulSet", None) {
        let (ns, uid) = (
            meta(&sts, "namespace").to_string(),
            meta(&sts, "uid").to_string(),
        );
        let pods = pods_of(st, &ns, &uid);
        let total = pods.iter().filter(|p| !terminating(p)).count() as i64;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let gen = sts
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let rev = sts_revision(&sts);
        let live: Vec<&&Value> = pods.iter().filter(|p| !terminating(p)).collect();
        let updated = live
            .iter()
            .filter(|p| s(p, "/metadata/labels/controller-revision-hash") == rev)
            .count() as i64;
        // The revision the pods had before this update, until every pod is on the new one.
        let current = live
            .iter()
            .map(|p| s(p, "/metadata/labels/controller-revision-hash").to_string())
            .find(|r| *r != rev && !r.is_empty())
            .unwrap_or_else(|| rev.clone());
        let current_n = live
            .iter()
            .filter(|p| s(p, "/metadata/labels/controller-revision-hash") == current)
            .count() as i64;
        let k = obj_key("apps", "StatefulSet", &ns, meta(&sts, "name"));
        st.update(&k, |o| {
            o["status"] = json!({"observedGeneration": gen, "replicas": total, "readyReplicas": ready,
                "currentReplicas": current_n, "updatedReplicas": updated, "availableReplicas": ready,
                "currentRevision": current, "updateRevision": rev, "collisionCount": 0});
        });
    }
    let nodes: Vec<Value> = st.list_cloned("", "Node", None);
    for ds in st.list_cloned("apps", "DaemonSet", None) {
        let (ns, uid) = (
            meta(&ds, "namespace").to_string(),
            meta(&ds, "uid").to_string(),
        );
        let mut tpl = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        daemonset_tolerations(&mut tpl["spec"]);
        let hash = short_hash(&tpl.to_string(), 10);
        let desired = nodes
            .iter()
            .filter(|nd| fits(nd, &tpl["spec"], true))
            .count() as i64;
        let pods = pods_of(st, &ns, &uid);
        let scheduled = pods.iter().filter(|p| !terminating(p)).count() as i64;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let updated = pods
            .iter()
            .filter(|p| {
                !terminating(p) && s(p, "/metadata/labels/controller-revision-hash") == hash
            })
            .count() as i64;
        let gen = ds
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let k = obj_key("apps", "DaemonSet", &ns, meta(&ds, "name"));
        st.update(&k, |o| {
            o["status"] = json!({"currentNumberScheduled": scheduled, "desiredNumberScheduled": desired,
                "numberAvailable": ready, "numberMisscheduled": 0, "numberReady": ready,
                "observedGeneration": gen, "updatedNumberScheduled": updated,
                "numberUnavailable": (desired - ready).max(0)});
            let m = o["status"].as_object_mut().expect("object");
            if ready >= desired {
                m.remove("numberUnavailable");
            }
            if ready == 0 {
                m.remove("numberAvailable");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_back_off_doubles_to_five_minutes() {
        assert_eq!(crash_loop(0), (0, "10s".into(), 0));
        assert_eq!(crash_loop(9), (0, "10s".into(), 0));
        assert_eq!(crash_loop(10), (1, "20s".into(), 10));
        assert_eq!(crash_loop(30), (2, "40s".into(), 30));
        assert_eq!(crash_loop(70), (3, "1m20s".into(), 70));
        assert_eq!(crash_loop(150), (4, "2m40s".into(), 150));
        assert_eq!(crash_loop(310), (5, "5m0s".into(), 310));
        assert_eq!(crash_loop(909), (6, "5m0s".into(), 610));
    }

    #[test]
    fn toleration_matching() {
        let node = json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "value": "true", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}, "metadata": {"labels": {}}});
        assert!(!fits(&node, &json!({}), false));
        assert!(fits(
            &node,
            &json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}),
            false
        ));
        assert!(fits(
            &node,
            &json!({"tolerations": [{"operator": "Exists"}]}),
            false
        ));
        let cordoned = json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(!fits(&cordoned, &json!({}), false));
        assert!(
            fits(&cordoned, &json!({}), true),
            "DaemonSets ignore cordons"
        );
    }

    #[test]
    fn deployment_to_pods_with_owner_references() {
        let mut st = State::default();
        st.ensure_namespace("default");
        crate::nodes::register(
            &mut st,
            &crate::nodes::NodeInfo {
                name: "w1".into(),
                password: "p".into(),
                role: "agent".into(),
                internal_ip: "10.0.0.2".into(),
                version: "v1".into(),
                ..Default::default()
            },
            "t",
        )
        .unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
        objects::create(
            &mut st,
            &builtin("Deployment"),
            Some("default"),
            d,
            false,
            "t",
        )
        .unwrap();
        for _ in 0..3 {
            run(&mut st);
        }
        let rs = st.list("apps", "ReplicaSet", Some("default"));
        assert_eq!(rs.len(), 1);
        let pods = st.list("", "Pod", Some("default"));
        assert_eq!(pods.len(), 2);
        for p in &pods {
            assert_eq!(s(p, "/metadata/ownerReferences/0/kind"), "ReplicaSet");
            assert_eq!(s(p, "/spec/nodeName"), "w1");
            assert_eq!(s(p, "/status/phase"), "Running");
        }
        let dep = st.get("apps", "Deployment", "default", "web").unwrap();
        assert_eq!(dep["status"]["readyReplicas"], 2);
        assert_eq!(dep["status"]["observedGeneration"], 1);
    }
}
