//! Controllers run by the leader: node readiness, pods for workloads, Jobs, helm-controller.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::api;
use crate::kinds;
use crate::nodes;
use crate::server::Ctx;
use crate::store::{kind_of, meta, obj_key, State};
use crate::util;

const CHARTS: &str = include_str!("../charts.json");
pub const NOT_READY_AFTER_SECS: u64 = 40;

pub fn tick(st: &mut State, ctx: &Ctx, hbs: &HashMap<String, Instant>, leader_since: Instant) {
    node_readiness(st, &ctx.node, hbs, leader_since);
    helm(st, ctx);
    jobs(st);
    workloads(st);
}

fn set_if_changed(st: &mut State, key: &str, new: Value) {
    if st.objects.get(key) != Some(&new) {
        let mut new = new;
        let rv = st.bump_rv();
        new["metadata"]["resourceVersion"] = json!(rv);
        st.objects.insert(key.to_string(), new);
        st.dirty = true;
    }
}

fn node_readiness(st: &mut State, origin: &str, hbs: &HashMap<String, Instant>, since: Instant) {
    let names: Vec<String> = st
        .list("", "Node", None)
        .iter()
        .map(|n| meta(n, "name").to_string())
        .collect();
    for name in names {
        let last = hbs
            .get(&name)
            .copied()
            .map(|h| h.max(since))
            .unwrap_or(since);
        let fresh = last.elapsed().as_secs() < NOT_READY_AFTER_SECS;
        let key = obj_key("", "Node", "", &name);
        let Some(node) = st.objects.get(&key).cloned() else {
            continue;
        };
        let status = nodes::ready_status(&node).to_string();
        let now = util::now_rfc3339();
        if fresh && status != "True" {
            let mut n = node.clone();
            n["status"]["conditions"] = nodes::conditions(
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
                &now,
            );
            set_if_changed(st, &key, n);
            st.event(origin, "node-ready", json!({"name": name}));
        } else if !fresh && status == "True" {
            let mut n = node.clone();
            n["status"]["conditions"] = nodes::conditions(
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
                &now,
            );
            let mut taints = n
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": effect, "timeAdded": now}));
            }
            n["spec"]["taints"] = json!(taints);
            set_if_changed(st, &key, n);
            st.event(
                origin,
                "node-notready",
                json!({"name": name, "reason": "NodeStatusUnknown"}),
            );
        }
        if fresh && status != "True" {
            // Clear the node-lifecycle taints the notready transition added.
            if let Some(n) = st.objects.get_mut(&key) {
                if let Some(t) = n.pointer_mut("/spec/taints").and_then(Value::as_array_mut) {
                    t.retain(|t| {
                        t.get("key").and_then(Value::as_str)
                            != Some("node.kubernetes.io/unreachable")
                    });
                    if t.is_empty() {
                        if let Some(spec) = n.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.remove("taints");
                        }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------ scheduling

fn tolerates(tols: &[Value], taint: &Value) -> bool {
    let tk = taint.get("key").and_then(Value::as_str).unwrap_or("");
    let tv = taint.get("value").and_then(Value::as_str).unwrap_or("");
    let te = taint.get("effect").and_then(Value::as_str).unwrap_or("");
    tols.iter().any(|t| {
        let k = t.get("key").and_then(Value::as_str).unwrap_or("");
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        let v = t.get("value").and_then(Value::as_str).unwrap_or("");
        let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
        let key_ok = (k.is_empty() && op == "Exists") || k == tk;
        let val_ok = op == "Exists" || v == tv;
        let eff_ok = e.is_empty() || e == te;
        key_ok && val_ok && eff_ok
    })
}

/// Can a pod with `spec` run on `node`? DaemonSet pods tolerate the node-lifecycle taints.
pub fn eligible(node: &Value, spec: &Value, daemonset: bool) -> bool {
    let mut tols: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if daemonset {
        for k in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/disk-pressure",
            "node.kubernetes.io/memory-pressure",
            "node.kubernetes.io/pid-pressure",
        ] {
            tols.push(json!({"key": k, "operator": "Exists"}));
        }
    } else {
        if !nodes::is_ready(node)
            || node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true)
        {
            return false;
        }
    }
    let taints = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in &taints {
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        if (effect == "NoSchedule" || effect == "NoExecute") && !tolerates(&tols, t) {
            return false;
        }
    }
    if let Some(sel) = spec.get("nodeSelector").and_then(Value::as_object) {
        let labels = api::labels_of(node);
        for (k, v) in sel {
            if labels.and_then(|l| l.get(k)) != Some(v) {
                return false;
            }
        }
    }
    true
}

fn held(st: &State, ns: &str, kind: &str, name: &str) -> bool {
    let all = kinds::builtin();
    st.control_list("hold").iter().any(|h| {
        let parts: Vec<&str> = h.split('/').collect();
        parts.len() == 3
            && parts[0] == ns
            && parts[2] == name
            && kinds::resolve(&all, parts[1])
                .map(|k| k.kind == kind)
                .unwrap_or(false)
    })
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

fn workloads(st: &mut State) {
    let nodes: Vec<Value> = st.list("", "Node", None).into_iter().cloned().collect();
    let mut wls: Vec<Value> = Vec::new();
    for k in ["Deployment", "StatefulSet", "DaemonSet"] {
        wls.extend(st.list("apps", k, None).into_iter().cloned());
    }
    for wl in wls {
        reconcile_workload(st, &wl, &nodes);
    }
}

fn reconcile_workload(st: &mut State, wl: &Value, nodes: &[Value]) {
    let kind = kind_of(wl).to_string();
    let ns = meta(wl, "namespace").to_string();
    let name = meta(wl, "name").to_string();
    let uid = meta(wl, "uid").to_string();
    let tpl = wl.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let spec = tpl.get("spec").cloned().unwrap_or(json!({}));
    let is_ds = kind == "DaemonSet";
    let hold = held(st, &ns, &kind, &name);
    let tpl_hash = short_hash(&tpl.to_string(), 10);
    let (owner_kind, owner_name) = match kind.as_str() {
        "Deployment" => ("ReplicaSet", format!("{name}-{tpl_hash}")),
        k => (k, name.clone()),
    };
    let mut pods: Vec<Value> = st
        .list("", "Pod", Some(&ns))
        .into_iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences/0/uid")
                .and_then(Value::as_str)
                == Some(uid.as_str())
        })
        .cloned()
        .collect();
    let node_by_name: HashMap<String, &Value> = nodes
        .iter()
        .map(|n| (meta(n, "name").to_string(), n))
        .collect();
    // Pods on vanished nodes go away.
    for p in &pods {
        let nn = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !nn.is_empty() && !node_by_name.contains_key(nn) {
            st.objects.remove(&obj_key("", "Pod", &ns, meta(p, "name")));
            st.dirty = true;
        }
    }
    pods.retain(|p| {
        let nn = p
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        nn.is_empty() || node_by_name.contains_key(nn)
    });
    let new_pod = |pod_name: String, node: Option<&str>| -> Value {
        let mut labels = tpl
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if kind == "Deployment" {
            labels["pod-template-hash"] = json!(tpl_hash);
        }
        let mut pspec = spec.clone();
        if let Some(n) = node {
            pspec["nodeName"] = json!(n);
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": pspec,
            "status": {"phase": "Pending"}
        })
    };
    if is_ds {
        let want: Vec<&str> = nodes
            .iter()
            .filter(|n| eligible(n, &spec, true))
            .map(|n| meta(n, "name"))
            .collect();
        for p in &pods {
            let nn = p
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !want.contains(&nn) {
                st.objects.remove(&obj_key("", "Pod", &ns, meta(p, "name")));
                st.dirty = true;
            }
        }
        for n in &want {
            if !pods
                .iter()
                .any(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(*n))
            {
                st.put(new_pod(
                    format!("{name}-{}", util::random_suffix(5)),
                    Some(n),
                ));
            }
        }
    } else {
        let replicas = wl
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        if pods.len() > replicas {
            pods.sort_by_key(|p| meta(p, "name").to_string());
            for p in pods.iter().skip(replicas) {
                st.objects.remove(&obj_key("", "Pod", &ns, meta(p, "name")));
                st.dirty = true;
            }
        }
        let existing: Vec<String> = pods.iter().map(|p| meta(p, "name").to_string()).collect();
        let mut i = 0;
        let mut count = pods.len();
        while count < replicas {
            let pod_name = if kind == "StatefulSet" {
                loop {
                    let n = format!("{name}-{i}");
                    i += 1;
                    if !existing.contains(&n) {
                        break n;
                    }
                }
            } else {
                format!("{owner_name}-{}", util::random_suffix(5))
            };
            st.put(new_pod(pod_name, None));
            count += 1;
        }
        // Schedule pending pods onto the least loaded eligible node.
        let mine: Vec<Value> = st
            .list("", "Pod", Some(&ns))
            .into_iter()
            .filter(|p| {
                p.pointer("/metadata/ownerReferences/0/uid")
                    .and_then(Value::as_str)
                    == Some(uid.as_str())
            })
            .cloned()
            .collect();
        let mut load: HashMap<String, usize> = HashMap::new();
        for p in &mine {
            if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
                *load.entry(n.to_string()).or_default() += 1;
            }
        }
        for p in mine
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").is_none())
        {
            let best = nodes
                .iter()
                .filter(|n| eligible(n, &spec, false))
                .min_by_key(|n| {
                    (
                        load.get(meta(n, "name")).copied().unwrap_or(0),
                        meta(n, "name").to_string(),
                    )
                });
            if let Some(n) = best {
                let nn = meta(n, "name").to_string();
                *load.entry(nn.clone()).or_default() += 1;
                let key = obj_key("", "Pod", &ns, meta(p, "name"));
                if let Some(pod) = st.objects.get_mut(&key) {
                    pod["spec"]["nodeName"] = json!(nn);
                    st.dirty = true;
                }
            }
        }
    }
    // Pod status and workload status.
    let mine: Vec<(String, Value)> = st
        .objects
        .iter()
        .filter(|(_, p)| {
            kind_of(p) == "Pod"
                && p.pointer("/metadata/ownerReferences/0/uid")
                    .and_then(Value::as_str)
                    == Some(uid.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut ready = 0i64;
    let mut scheduled = 0i64;
    for (key, p) in &mine {
        let nn = p.pointer("/spec/nodeName").and_then(Value::as_str);
        let node_ready = nn
            .and_then(|n| node_by_name.get(n))
            .map(|n| nodes::is_ready(n))
            .unwrap_or(false);
        let is_ready = nn.is_some() && node_ready && !hold;
        if nn.is_some() {
            scheduled += 1;
        }
        if is_ready {
            ready += 1;
        }
        let mut np = p.clone();
        let phase = if nn.is_some() { "Running" } else { "Pending" };
        let rs = if is_ready { "True" } else { "False" };
        let old_status = p.get("status").cloned().unwrap_or(json!({}));
        let since = if old_status.get("phase").and_then(Value::as_str) == Some(phase)
            && old_status
                .pointer("/conditions/1/status")
                .and_then(Value::as_str)
                == Some(rs)
        {
            old_status
                .pointer("/conditions/1/lastTransitionTime")
                .cloned()
                .unwrap_or(json!(util::now_rfc3339()))
        } else {
            json!(util::now_rfc3339())
        };
        let mut status = json!({"phase": phase, "conditions": [
            {"type": "PodScheduled", "status": if nn.is_some() { "True" } else { "False" }, "lastTransitionTime": since},
            {"type": "Ready", "status": rs, "lastTransitionTime": since},
            {"type": "ContainersReady", "status": rs, "lastTransitionTime": since},
        ], "qosClass": "BestEffort"});
        if let Some(n) = nn.and_then(|n| node_by_name.get(n)) {
            status["hostIP"] = n
                .pointer("/status/addresses/0/address")
                .cloned()
                .unwrap_or(Value::Null);
            status["podIP"] = json!(format!(
                "10.42.0.{}",
                2 + (util::sha256_hex(meta(p, "name").as_bytes()).as_bytes()[0] % 250)
            ));
        }
        if nn.is_none() {
            status["conditions"][0]["reason"] = json!("Unschedulable");
            status["conditions"][0]["message"] = json!(
                "0/N nodes are available: node(s) had untolerated taint(s) or were unschedulable."
            );
        }
        np["status"] = status;
        set_if_changed(st, key, np);
    }
    let key = obj_key("apps", &kind, &ns, &name);
    let Some(mut w) = st.objects.get(&key).cloned() else {
        return;
    };
    let total = mine.len() as i64;
    let gen = w
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let status = if is_ds {
        json!({"currentNumberScheduled": scheduled, "desiredNumberScheduled": total, "numberAvailable": ready,
            "numberMisscheduled": 0, "numberReady": ready, "observedGeneration": gen, "updatedNumberScheduled": scheduled,
            "numberUnavailable": total - ready})
    } else {
        let want = w
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let available = ready >= want;
        let old_cond_status = w
            .pointer("/status/conditions/0/status")
            .and_then(Value::as_str)
            .unwrap_or("");
        let avail_s = if available { "True" } else { "False" };
        let ts = if old_cond_status == avail_s {
            w.pointer("/status/conditions/0/lastTransitionTime")
                .cloned()
                .unwrap_or(json!(util::now_rfc3339()))
        } else {
            json!(util::now_rfc3339())
        };
        let mut s = json!({"replicas": total, "readyReplicas": ready, "availableReplicas": ready,
        "updatedReplicas": total, "observedGeneration": gen, "currentReplicas": total,
        "conditions": [
            {"type": "Available", "status": avail_s,
             "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
             "lastTransitionTime": ts, "lastUpdateTime": ts},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": format!("ReplicaSet \"{name}-{tpl_hash}\" has successfully progressed."),
             "lastTransitionTime": ts, "lastUpdateTime": ts}
        ]});
        if ready == 0 {
            s.as_object_mut().map(|m| m.remove("readyReplicas"));
            s.as_object_mut().map(|m| m.remove("availableReplicas"));
            s["unavailableReplicas"] = json!(want);
        }
        if kind == "StatefulSet" {
            s["availableReplicas"] = json!(ready);
            s["readyReplicas"] = json!(ready);
            s.as_object_mut().map(|m| m.remove("conditions"));
        }
        s
    };
    if w.get("status") != Some(&status) {
        w["status"] = status;
        set_if_changed(st, &key, w);
    }
}

// ------------------------------------------------------------ jobs

fn job_done(j: &Value) -> bool {
    j.pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        > 0
        || j.pointer("/status/conditions")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .any(|c| c.get("type").and_then(Value::as_str) == Some("Failed"))
            })
            .unwrap_or(false)
}

fn complete_job(st: &mut State, key: &str, log: &str) {
    let now = util::now_rfc3339();
    if let Some(j) = st.objects.get(key).cloned() {
        let mut j = j;
        j["status"] = json!({"succeeded": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
        "startTime": j.pointer("/status/startTime").cloned().unwrap_or(json!(now)), "completionTime": now,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}
        ]});
        set_if_changed(st, key, j.clone());
        st.logs.insert(
            format!("{}/{}", meta(&j, "namespace"), meta(&j, "name")),
            log.to_string(),
        );
    }
}

fn fail_job(st: &mut State, key: &str, log: &str) {
    let now = util::now_rfc3339();
    if let Some(j) = st.objects.get(key).cloned() {
        let mut j = j;
        j["status"] = json!({"failed": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {},
        "startTime": j.pointer("/status/startTime").cloned().unwrap_or(json!(now)),
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}
        ]});
        set_if_changed(st, key, j.clone());
        st.logs.insert(
            format!("{}/{}", meta(&j, "namespace"), meta(&j, "name")),
            log.to_string(),
        );
    }
}

fn started_secs_ago(j: &Value) -> i64 {
    let ts = j
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .unwrap_or_else(|| meta(j, "creationTimestamp"));
    util::parse_rfc3339(ts)
        .map(|t| util::now_secs() - t)
        .unwrap_or(0)
}

/// Plain Jobs (not helm-controller's) succeed ~2 s after they start unless listed in fail-jobs.
fn jobs(st: &mut State) {
    let fails = st.control_list("fail-jobs");
    let jobs: Vec<Value> = st.list("batch", "Job", None).into_iter().cloned().collect();
    for j in jobs {
        if j.pointer("/metadata/labels/helmcharts.helm.cattle.io~1chart")
            .is_some()
            || job_done(&j)
        {
            continue;
        }
        let key = obj_key("batch", "Job", meta(&j, "namespace"), meta(&j, "name"));
        if j.pointer("/status/startTime").is_none() {
            let mut j2 = j.clone();
            j2["status"] = json!({"active": 1, "ready": 0, "startTime": util::now_rfc3339()});
            set_if_changed(st, &key, j2);
            continue;
        }
        if started_secs_ago(&j) >= 2 {
            if fails.iter().any(|f| f == meta(&j, "name")) {
                fail_job(
                    st,
                    &key,
                    "Error: the k3s double failed this job (fail-jobs)\n",
                );
            } else {
                complete_job(st, &key, "");
            }
        }
    }
}

// ------------------------------------------------------------ helm-controller

fn chart_hash(st: &State, chart: &Value) -> String {
    let ns = meta(chart, "namespace");
    let name = meta(chart, "name");
    let cfg = st
        .get("helm.cattle.io", "HelmChartConfig", ns, name)
        .and_then(|c| c.get("spec"))
        .cloned()
        .unwrap_or(Value::Null);
    util::sha256_hex(
        format!(
            "{}{}",
            chart.get("spec").cloned().unwrap_or(Value::Null),
            cfg
        )
        .as_bytes(),
    )
    .to_uppercase()
}

fn helm(st: &mut State, ctx: &Ctx) {
    let fails = st.control_list("fail-jobs");
    let charts: Vec<Value> = st
        .list("helm.cattle.io", "HelmChart", None)
        .into_iter()
        .cloned()
        .collect();
    for chart in charts {
        let ns = meta(&chart, "namespace").to_string();
        let name = meta(&chart, "name").to_string();
        let job_name = format!("helm-install-{name}");
        let job_key = obj_key("batch", "Job", &ns, &job_name);
        let hash = format!("SHA256={}", chart_hash(st, &chart));
        let job = st.objects.get(&job_key).cloned();
        let job_hash = job
            .as_ref()
            .and_then(|j| j.pointer("/metadata/annotations/helmcharts.helm.cattle.io~1configHash"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let chart_key = obj_key("helm.cattle.io", "HelmChart", &ns, &name);
        if job.is_none() || job_hash != hash {
            if job.is_some() {
                st.objects.remove(&job_key);
            }
            let target = chart
                .pointer("/spec/targetNamespace")
                .and_then(Value::as_str)
                .unwrap_or(&ns)
                .to_string();
            let now = util::now_rfc3339();
            let job = json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job_name, "namespace": ns,
                    "labels": {"helmcharts.helm.cattle.io/chart": name},
                    "annotations": {"helmcharts.helm.cattle.io/configHash": hash},
                    "ownerReferences": [{"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "name": name, "uid": meta(&chart, "uid"), "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"backoffLimit": chart.pointer("/spec/backOffLimit").cloned().unwrap_or(json!(1000)), "completions": 1, "parallelism": 1,
                    "template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": hash}, "labels": {"helmcharts.helm.cattle.io/chart": name}},
                        "spec": {"containers": [{"name": "helm", "image": "rancher/klipper-helm:v0.13.3-build20260727", "args": ["install"],
                            "env": [{"name": "NAME", "value": name}, {"name": "VERSION", "value": chart.pointer("/spec/version").cloned().unwrap_or(json!(""))},
                                    {"name": "REPO", "value": chart.pointer("/spec/repo").cloned().unwrap_or(json!(""))}, {"name": "TARGET_NAMESPACE", "value": target},
                                    {"name": "CHART", "value": chart.pointer("/spec/chart").cloned().unwrap_or(json!(""))}]}],
                            "restartPolicy": "OnFailure", "serviceAccountName": format!("helm-{name}")}}},
                "status": {"active": 1, "ready": 1, "startTime": now}
            });
            st.put(job);
            if let Some(c) = st.objects.get(&chart_key).cloned() {
                let mut c = c;
                c["status"] = json!({"jobName": job_name, "conditions": [
                    {"type": "JobCreated", "status": "True", "reason": "Job created", "message": format!("Applying HelmChart using Job {ns}/{job_name}")}
                ]});
                set_if_changed(st, &chart_key, c);
            }
            st.event(
                &ctx.node,
                "helm-job-created",
                json!({"chart": name, "namespace": ns, "job": job_name}),
            );
            continue;
        }
        let job = job.expect("checked");
        let failed_now = job_done(&job) && job.pointer("/status/succeeded").is_none();
        if failed_now && !fails.contains(&name) {
            // Retry a failed install once the test stops failing it (helm-controller's backoff).
            let mut j = job.clone();
            j["status"] = json!({"active": 1, "ready": 1, "startTime": util::now_rfc3339()});
            set_if_changed(st, &job_key, j);
            continue;
        }
        if job_done(&job) || started_secs_ago(&job) < 2 {
            continue;
        }
        let target = chart
            .pointer("/spec/targetNamespace")
            .and_then(Value::as_str)
            .unwrap_or(&ns)
            .to_string();
        let create_ns = chart
            .pointer("/spec/createNamespace")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let chart_ref = chart
            .pointer("/spec/chart")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cmd = format!("+ helm_v3 install --namespace {target} {name} {chart_ref}");
        if fails.contains(&name) {
            fail_job(st, &job_key, &format!("{cmd}\nError: INSTALLATION FAILED: failed post-install: 1 error occurred:\n\t* timed out waiting for the condition (k3s double: fail-jobs)\n"));
            if let Some(c) = st.objects.get(&chart_key).cloned() {
                let mut c = c;
                if let Some(conds) = c
                    .pointer_mut("/status/conditions")
                    .and_then(Value::as_array_mut)
                {
                    conds.retain(|x| x.get("type").and_then(Value::as_str) != Some("Failed"));
                    conds.push(json!({"type": "Failed", "status": "True", "reason": "Job failed", "message": "Job has reached the specified backoff limit"}));
                }
                set_if_changed(st, &chart_key, c);
            }
            st.event(
                &ctx.node,
                "helm-job-failed",
                json!({"chart": name, "namespace": ns, "job": job_name, "reason": "fail-jobs"}),
            );
            continue;
        }
        if !st.namespace_exists(&target) {
            if create_ns {
                st.ensure_namespace(&target);
            } else {
                fail_job(st, &job_key, &format!("{cmd}\nError: INSTALLATION FAILED: create: failed to create: namespaces \"{target}\" not found\n"));
                st.event(&ctx.node, "helm-job-failed", json!({"chart": name, "namespace": ns, "job": job_name, "reason": format!("namespace {target} not found")}));
                continue;
            }
        }
        install_chart(st, ctx, &chart, &target);
        let log = format!("{cmd}\nNAME: {name}\nLAST DEPLOYED: {}\nNAMESPACE: {target}\nSTATUS: deployed\nREVISION: 1\nTEST SUITE: None\n", util::now_rfc3339());
        complete_job(st, &job_key, &log);
        if let Some(c) = st.objects.get(&chart_key).cloned() {
            let mut c = c;
            if let Some(conds) = c
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut)
            {
                conds.retain(|x| x.get("type").and_then(Value::as_str) != Some("Failed"));
            }
            set_if_changed(st, &chart_key, c);
        }
        st.event(
            &ctx.node,
            "helm-job-complete",
            json!({"chart": name, "namespace": ns, "job": job_name}),
        );
    }
}

fn chart_entry(chart: &Value) -> Option<Value> {
    let all: Value = serde_json::from_str(CHARTS).ok()?;
    let name = meta(chart, "name");
    if let Some(e) = all.get(name) {
        return Some(e.clone());
    }
    let c = chart
        .pointer("/spec/chart")
        .and_then(Value::as_str)
        .unwrap_or("");
    let base = c.rsplit('/').next().unwrap_or(c);
    let base = base.split(".tgz").next().unwrap_or(base);
    all.as_object()?
        .iter()
        .find(|(k, _)| base == k.as_str() || base.starts_with(&format!("{k}-")))
        .map(|(_, v)| v.clone())
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
    let fullname = values
        .get("fullnameOverride")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| release.clone());
    let servicelb = !ctx.disable.iter().any(|d| d == "servicelb");
    let Some(entry) = chart_entry(chart) else {
        return;
    };
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
    let packaged = chart
        .pointer("/spec/chart")
        .and_then(Value::as_str)
        .is_some_and(|c| c.contains("%{KUBERNETES_API}%"));
    if let (false, Some(extra)) = (
        packaged,
        entry.get("upstreamIncludes").and_then(Value::as_str),
    ) {
        let all: Value = serde_json::from_str(CHARTS).unwrap_or(Value::Null);
        if let Some(more) = all
            .pointer(&format!("/{extra}/objects"))
            .and_then(Value::as_array)
        {
            objs.splice(0..0, more.iter().cloned());
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
        let mut l = labels.clone();
        l.insert("app.kubernetes.io/name".into(), json!(name));
        let meta_ns =
            json!({"name": name, "namespace": ns, "labels": l, "annotations": annotations});
        let meta_cl = json!({"name": name, "labels": l, "annotations": annotations});
        let tolerations = spec.get("tolerations").cloned().unwrap_or(json!([]));
        let pod_tpl = json!({"metadata": {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release}},
            "spec": {"containers": [{"name": name, "image": spec.get("image").cloned().unwrap_or(json!("k3s-double/placeholder:latest"))}],
                     "tolerations": tolerations}});
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
                    o["spec"]["replicas"] = spec.get("replicas").cloned().unwrap_or(json!(1));
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
            "LonghornNodes" => {
                for n in &nodes {
                    let nn = meta(n, "name");
                    let now = util::now_rfc3339();
                    let conds: Vec<Value> = ["Ready", "Schedulable", "MountPropagation", "RequiredPackages", "Multipathd", "KernelModulesLoaded", "NFSClientInstalled"]
                        .iter().map(|t| json!({"type": t, "status": "True", "reason": "", "message": "", "lastTransitionTime": now})).collect();
                    let o = json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Node",
                        "metadata": {"name": nn, "namespace": ns, "labels": l},
                        "spec": {"allowScheduling": true, "name": nn}, "status": {"conditions": conds}});
                    if st
                        .kinds()
                        .iter()
                        .any(|k| k.group == "longhorn.io" && k.kind == "Node")
                    {
                        st.put(o);
                    }
                }
                continue;
            }
            _ => continue,
        };
        st.put(obj);
    }
    // Helm's release record.
    st.put(json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": format!("sh.helm.release.v1.{release}.v1"), "namespace": target,
            "labels": {"name": release, "owner": "helm", "status": "deployed", "version": "1", "k3s-double/chart": chart_id}},
        "data": {"release": ""}}));
}

/// helm-controller's finalizer: run helm-delete-<name> and remove what the chart created.
pub fn on_helmchart_deleted(st: &mut State, chart: &Value, origin: &str) {
    let ns = meta(chart, "namespace").to_string();
    let name = meta(chart, "name").to_string();
    let chart_id = format!("{ns}.{name}");
    let owned: Vec<String> = st
        .objects
        .iter()
        .filter(|(_, o)| {
            o.pointer("/metadata/labels/k3s-double~1chart")
                .and_then(Value::as_str)
                == Some(chart_id.as_str())
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in owned {
        api::delete_object(st, &k, origin);
    }
    let job_name = format!("helm-delete-{name}");
    let key = obj_key("batch", "Job", &ns, &job_name);
    st.objects.remove(&key);
    st.put(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name, "namespace": ns, "labels": {"helmcharts.helm.cattle.io/chart": name}},
        "spec": {"template": {"spec": {"containers": [{"name": "helm", "image": "rancher/klipper-helm:v0.13.3-build20260727", "args": ["delete"]}], "restartPolicy": "OnFailure"}}},
        "status": {"active": 1, "startTime": util::now_rfc3339()}}));
    complete_job(
        st,
        &key,
        &format!(
            "+ helm_v3 uninstall {name} --namespace {}\nrelease \"{name}\" uninstalled\n",
            chart
                .pointer("/spec/targetNamespace")
                .and_then(Value::as_str)
                .unwrap_or(&ns)
        ),
    );
    st.event(
        origin,
        "helm-job-created",
        json!({"chart": name, "namespace": ns, "job": job_name}),
    );
    st.event(
        origin,
        "helm-job-complete",
        json!({"chart": name, "namespace": ns, "job": job_name}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toleration_matching() {
        let node = json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "value": "true", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}, "metadata": {"labels": {}}});
        assert!(!eligible(&node, &json!({}), false));
        assert!(eligible(
            &node,
            &json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]}),
            false
        ));
        assert!(eligible(
            &node,
            &json!({"tolerations": [{"operator": "Exists"}]}),
            false
        ));
        let cordoned = json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(!eligible(&cordoned, &json!({}), false));
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
        ] {
            assert!(v.get(c).is_some(), "{c}");
        }
    }
}
