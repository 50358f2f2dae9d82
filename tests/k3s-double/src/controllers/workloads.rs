//! Workload controllers (Deployment → ReplicaSet → Pods, StatefulSet, DaemonSet, Job), the
//! scheduler, and the kubelets' part: pods start on Ready nodes, stop when deleted (after the
//! grace period when their container ignores SIGTERM), and plain Jobs' pods finish.
//!
//! Test knobs on pods (annotations): `k3s-double/ignore-sigterm: "true"` keeps a deleted pod
//! running until its grace period ends.

use std::collections::HashMap;

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
        if !mine.iter().any(|r| meta(r, "name") == rs_name) {
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
                        "deployment.kubernetes.io/max-replicas": replicas.to_string(),
                        "deployment.kubernetes.io/revision": revision.to_string()},
                    "ownerReferences": [controller_ref(&d)]},
                "spec": {"replicas": replicas, "selector": selector, "template": rs_tpl}});
            if let Err(e) = objects::create(st, &builtin("ReplicaSet"), Some(&ns), rs, false, "") {
                util::error(format!(
                    "failed to create replicaset {rs_name}: {}",
                    e.message
                ));
            }
        }
        for rs in owned(st, "ReplicaSet", &ns, &uid)
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
        {
            let want = if meta(&rs, "name") == rs_name {
                replicas
            } else {
                0
            };
            let k = obj_key("apps", "ReplicaSet", &ns, meta(&rs, "name"));
            st.update(&k, |r| r["spec"]["replicas"] = json!(want));
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
        let parallel = s(&sts, "/spec/podManagementPolicy") == "Parallel";
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
        if terminating(&j)
            || job_finished(&j)
            || j.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
        {
            continue;
        }
        let ns = meta(&j, "namespace").to_string();
        let name = meta(&j, "name").to_string();
        let uid = meta(&j, "uid").to_string();
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
        let key = obj_key("batch", "Job", &ns, &name);
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
        let ready = node_ready && !held(st, &p) && !backing_off;
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
        let rev = format!(
            "{}-{}",
            meta(&sts, "name"),
            short_hash(
                &sts.pointer("/spec/template")
                    .cloned()
                    .unwrap_or(json!({}))
                    .to_string(),
                10
            )
        );
        let k = obj_key("apps", "StatefulSet", &ns, meta(&sts, "name"));
        st.update(&k, |o| {
            o["status"] = json!({"observedGeneration": gen, "replicas": total, "readyReplicas": ready,
                "currentReplicas": total, "updatedReplicas": total, "availableReplicas": ready,
                "currentRevision": rev, "updateRevision": rev, "collisionCount": 0});
        });
    }
    for ds in st.list_cloned("apps", "DaemonSet", None) {
        let (ns, uid) = (
            meta(&ds, "namespace").to_string(),
            meta(&ds, "uid").to_string(),
        );
        let pods = pods_of(st, &ns, &uid);
        let scheduled = pods.iter().filter(|p| !terminating(p)).count() as i64;
        let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
        let gen = ds
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let k = obj_key("apps", "DaemonSet", &ns, meta(&ds, "name"));
        st.update(&k, |o| {
            o["status"] = json!({"currentNumberScheduled": scheduled, "desiredNumberScheduled": scheduled,
                "numberAvailable": ready, "numberMisscheduled": 0, "numberReady": ready,
                "observedGeneration": gen, "updatedNumberScheduled": scheduled,
                "numberUnavailable": scheduled - ready});
            if ready == scheduled {
                o["status"].as_object_mut().map(|m| m.remove("numberUnavailable"));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
