//! The garbage collector (ownerReferences, foreground and orphan deletion), pod GC (pods on
//! Nodes that are gone), the namespace controller (a deleted namespace empties, then goes), and
//! the disruption controller (PodDisruptionBudget status, which evictions read).

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::api::select::{labels_of, LabelSelector};
use crate::objects::{self, DeleteOptions};
use crate::store::{kind_of, meta, obj_key, State};
use crate::util;

fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

pub fn run(st: &mut State, origin: &str) {
    owners(st, origin);
    pod_gc(st, origin);
    namespaces(st, origin);
}

fn owners(st: &mut State, origin: &str) {
    let uids: HashSet<String> = st
        .objects
        .values()
        .map(|o| meta(o, "uid").to_string())
        .collect();
    // Dependents whose owners are all gone go (background propagation).
    let orphans: Vec<String> = st
        .objects
        .iter()
        .filter(|(_, o)| !terminating(o))
        .filter(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    !refs.is_empty()
                        && refs.iter().all(|r| {
                            !uids.contains(r.get("uid").and_then(Value::as_str).unwrap_or(""))
                        })
                })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in orphans {
        objects::request_delete(st, &k, &DeleteOptions::default(), origin);
    }
    // Owners deleted in the foreground wait for their dependents; orphaning owners first
    // strip themselves from their dependents.
    let waiting: Vec<(String, String, Vec<String>)> = st
        .objects
        .iter()
        .filter(|(_, o)| terminating(o))
        .map(|(k, o)| {
            (
                k.clone(),
                meta(o, "uid").to_string(),
                objects::finalizers(o),
            )
        })
        .filter(|(_, _, f)| f.iter().any(|x| x == "foregroundDeletion" || x == "orphan"))
        .collect();
    for (k, uid, fins) in waiting {
        let deps = objects::dependents(st, &uid);
        if fins.iter().any(|f| f == "orphan") {
            for d in &deps {
                st.update(d, |o| {
                    if let Some(refs) = o
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                    }
                });
            }
            objects::drop_finalizer(st, &k, "orphan", origin);
            continue;
        }
        if deps.is_empty() {
            objects::drop_finalizer(st, &k, "foregroundDeletion", origin);
        } else {
            let fg = DeleteOptions {
                propagation: Some("Foreground".into()),
                ..Default::default()
            };
            for d in deps {
                objects::request_delete(st, &d, &fg, origin);
            }
        }
    }
}

/// Pods bound to a Node that no longer exists are deleted at once (podgc `gcOrphaned`).
fn pod_gc(st: &mut State, origin: &str) {
    let nodes: HashSet<String> = st
        .list("", "Node", None)
        .iter()
        .map(|n| meta(n, "name").to_string())
        .collect();
    let gone: Vec<String> = st
        .list("", "Pod", None)
        .iter()
        .filter(|p| {
            p.pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !nodes.contains(n))
        })
        .map(|p| obj_key("", "Pod", meta(p, "namespace"), meta(p, "name")))
        .collect();
    for k in gone {
        objects::finish_delete(st, &k, origin);
    }
}

fn namespaces(st: &mut State, origin: &str) {
    let deleting: Vec<String> = st
        .list("", "Namespace", None)
        .iter()
        .filter(|n| terminating(n))
        .map(|n| meta(n, "name").to_string())
        .collect();
    for ns in deleting {
        let inside: Vec<String> = st
            .objects
            .iter()
            .filter(|(_, o)| meta(o, "namespace") == ns && kind_of(o) != "Namespace")
            .map(|(k, _)| k.clone())
            .collect();
        if inside.is_empty() {
            let k = obj_key("", "Namespace", "", &ns);
            st.update(&k, |o| o["spec"]["finalizers"] = json!([]));
            objects::finish_if_done(st, &k, origin);
            continue;
        }
        for k in inside {
            objects::request_delete(st, &k, &DeleteOptions::default(), origin);
        }
    }
}

/// `minAvailable` / `maxUnavailable` as a count of `expected` (percentages round up).
fn scaled(v: &Value, expected: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => (p * expected + 99) / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// PodDisruptionBudget status (the disruption controller): healthy pods against the budget.
pub fn disruption(st: &mut State) {
    let pdbs: Vec<Value> = st.list_cloned("policy", "PodDisruptionBudget", None);
    let now = util::now_secs();
    for pdb in pdbs {
        let ns = meta(&pdb, "namespace").to_string();
        let name = meta(&pdb, "name").to_string();
        let sel = pdb
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        let pods: Vec<Value> = if sel.is_null() {
            vec![]
        } else {
            let ls = LabelSelector::from_object(&sel);
            st.list("", "Pod", Some(&ns))
                .into_iter()
                .filter(|p| ls.matches(labels_of(p)))
                .cloned()
                .collect()
        };
        let active: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
        let expected = active.len() as i64;
        // Evictions in flight (disruptedPods) count as gone for two minutes, as upstream.
        let disrupted: serde_json::Map<String, Value> = pdb
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(p, ts)| {
                        util::parse_rfc3339(ts.as_str().unwrap_or(""))
                            .is_some_and(|t| now - t < 120)
                            && active.iter().any(|x| meta(x, "name") == p.as_str())
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let healthy = active
            .iter()
            .filter(|p| objects::pod_ready(p) && !disrupted.contains_key(meta(p, "name")))
            .count() as i64;
        let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
            scaled(min, expected)
        } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
            (expected - scaled(max, expected)).max(0)
        } else {
            expected
        };
        let allowed = (healthy - desired).max(0);
        let gen = pdb
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let key = obj_key("policy", "PodDisruptionBudget", &ns, &name);
        let ts = util::now_rfc3339();
        st.update(&key, |b| {
            let old_status = b
                .pointer("/status/conditions/0/status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let ok = if allowed > 0 { "True" } else { "False" };
            let since = if old_status == ok {
                b.pointer("/status/conditions/0/lastTransitionTime")
                    .cloned()
                    .unwrap_or(json!(ts))
            } else {
                json!(ts)
            };
            b["status"] = json!({"observedGeneration": gen, "expectedPods": expected,
                "currentHealthy": healthy, "desiredHealthy": desired, "disruptionsAllowed": allowed,
                "disruptedPods": disrupted,
                "conditions": [{"type": "DisruptionAllowed", "status": ok,
                    "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" },
                    "message": "", "observedGeneration": gen, "lastTransitionTime": since}]});
        });
    }
}
