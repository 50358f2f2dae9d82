//! Node lifecycle (kube-controller-manager `nodelifecycle`): NotReady after the monitor grace
//! period, the `unreachable` taints, pods marked not ready and evicted once their toleration
//! runs out; and k3s's etcd member controller (`pkg/etcd/member_controller.go`): deleting the
//! Node of an etcd member removes the member first, and the Node waits until it can.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::s;
use crate::objects::{self, DeleteOptions};
use crate::store::{meta, obj_key, State};
use crate::{nodes, util};

/// `--node-monitor-grace-period`: 50 s since Kubernetes 1.32 (kubernetes/kubernetes#127352
/// discusses the raised default; kube-controller-manager's NodeLifecycleController options).
pub const NOT_READY_AFTER_SECS: u64 = 50;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const ETCD_FINALIZER: &str = "wrangler.cattle.io/managed-etcd-controller";

fn taints(n: &Value) -> Vec<Value> {
    n.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn set_taints(n: &mut Value, t: Vec<Value>) {
    if t.is_empty() {
        if let Some(spec) = n.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("taints");
        }
    } else {
        n["spec"]["taints"] = json!(t);
    }
}

pub fn lifecycle(st: &mut State, hbs: &HashMap<String, Instant>, since: Instant, origin: &str) {
    let names: Vec<String> = st
        .list("", "Node", None)
        .iter()
        .map(|n| meta(n, "name").to_string())
        .collect();
    let now = util::now_rfc3339();
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
        if fresh && status != "True" {
            st.update(&key, |n| {
                n["status"]["conditions"] = nodes::conditions(
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                    &now,
                );
                let t: Vec<Value> = taints(n)
                    .into_iter()
                    .filter(|t| s(t, "/key") != UNREACHABLE)
                    .collect();
                set_taints(n, t);
            });
            st.event(origin, "node-ready", json!({"name": name}));
        } else if !fresh && status == "True" {
            st.update(&key, |n| {
                n["status"]["conditions"] = nodes::conditions(
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                    &now,
                );
                let mut t = taints(n);
                for effect in ["NoSchedule", "NoExecute"] {
                    t.push(json!({"key": UNREACHABLE, "effect": effect, "timeAdded": now}));
                }
                set_taints(n, t);
            });
            st.event(
                origin,
                "node-notready",
                json!({"name": name, "reason": "NodeStatusUnknown"}),
            );
        }
    }
    taint_eviction(st);
}

/// NoExecute taints: pods that do not tolerate them go now; pods that tolerate them for a
/// while go when `tolerationSeconds` has passed since the taint was added.
fn taint_eviction(st: &mut State) {
    let nodes: Vec<Value> = st.list_cloned("", "Node", None);
    let now = util::now_secs();
    let mut evict = Vec::new();
    for node in &nodes {
        let no_exec: Vec<Value> = taints(node)
            .into_iter()
            .filter(|t| s(t, "/effect") == "NoExecute")
            .collect();
        if no_exec.is_empty() {
            continue;
        }
        let name = meta(node, "name");
        for p in st.list("", "Pod", None) {
            if s(p, "/spec/nodeName") != name || p.pointer("/metadata/deletionTimestamp").is_some()
            {
                continue;
            }
            let tols = p
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for t in &no_exec {
                let added = util::parse_rfc3339(s(t, "/timeAdded")).unwrap_or(now);
                let matching: Vec<&Value> = tols.iter().filter(|x| tolerates(x, t)).collect();
                let due = if matching.is_empty() {
                    true
                } else {
                    matching
                        .iter()
                        .filter_map(|x| x.get("tolerationSeconds").and_then(Value::as_i64))
                        .min()
                        .is_some_and(|secs| now >= added + secs)
                        && !matching
                            .iter()
                            .any(|x| x.get("tolerationSeconds").is_none())
                };
                if due {
                    evict.push(obj_key("", "Pod", meta(p, "namespace"), meta(p, "name")));
                    break;
                }
            }
        }
    }
    for k in evict {
        objects::request_delete(st, &k, &DeleteOptions::default(), "");
    }
}

pub fn tolerates(tol: &Value, taint: &Value) -> bool {
    let k = s(tol, "/key");
    let op = tol
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or("Equal");
    let e = s(tol, "/effect");
    let key_ok = (k.is_empty() && op == "Exists") || k == s(taint, "/key");
    let val_ok = op == "Exists" || s(tol, "/value") == s(taint, "/value");
    let eff_ok = e.is_empty() || e == s(taint, "/effect");
    key_ok && val_ok && eff_ok
}

/// k3s's managed-etcd controller. Every Node carries its finalizer (wrangler's OnRemove);
/// a deleted etcd Node keeps it until the member is removed, which etcd refuses while the
/// removal would break the active quorum (etcd `mayRemoveMember`, strict reconfig check).
pub fn etcd_members(st: &mut State, origin: &str, members_up: &[String]) {
    if st.members.is_empty() {
        return;
    }
    let nodes: Vec<Value> = st.list_cloned("", "Node", None);
    for node in nodes {
        let name = meta(&node, "name").to_string();
        let key = obj_key("", "Node", "", &name);
        let fins = objects::finalizers(&node);
        let deleting = node.pointer("/metadata/deletionTimestamp").is_some();
        if !deleting {
            if !fins.iter().any(|f| f == ETCD_FINALIZER) {
                st.update(&key, |n| objects::add_finalizer(n, ETCD_FINALIZER));
            }
            continue;
        }
        if !fins.iter().any(|f| f == ETCD_FINALIZER) {
            continue;
        }
        let is_etcd = node
            .pointer("/metadata/labels/node-role.kubernetes.io~1etcd")
            .is_some();
        let member_name =
            s(&node, "/metadata/annotations/etcd.k3s.cattle.io~1node-name").to_string();
        let pos = st
            .members
            .iter()
            .position(|m| m.name == member_name || m.node == name);
        let Some(pos) = pos.filter(|_| is_etcd) else {
            objects::drop_finalizer(st, &key, ETCD_FINALIZER, origin);
            continue;
        };
        let m = st.members[pos].clone();
        let voting = st.members.len();
        let active = st
            .members
            .iter()
            .filter(|x| members_up.contains(&x.node))
            .count();
        let target_up = members_up.contains(&m.node);
        // A downed member is safe to remove; an active one only if the rest keep a quorum.
        if target_up && active.saturating_sub(1) < 1 + (voting - 1) / 2 {
            let msg = format!(
                "Removing etcd member {} from cluster due to node delete failed: etcdserver: unhealthy cluster",
                m.name
            );
            if !st
                .events
                .iter()
                .rev()
                .take(50)
                .any(|e| e.kind == "etcd-member-remove-refused" && e.detail["member"] == m.name)
            {
                util::error(&msg);
                st.event(origin, "etcd-member-remove-refused", json!({"member": m.name, "name": name, "reason": "etcdserver: unhealthy cluster"}));
            }
            continue;
        }
        st.members.remove(pos);
        st.removed_members.push(m.name.clone());
        st.dirty = true;
        st.event(
            origin,
            "etcd-member-removed",
            json!({"member": m.name, "name": name, "address": m.address}),
        );
        objects::drop_finalizer(st, &key, ETCD_FINALIZER, origin);
    }
}
