//! Pod subresources: `eviction` (kubernetes `pkg/registry/core/pod/storage/eviction.go`, with
//! PodDisruptionBudgets) and `log`.

use serde_json::{json, Value};

use super::select::{labels_of, LabelSelector};
use crate::kinds::KindInfo;
use crate::objects::{self, DeleteOptions};
use crate::status::{self, ApiError};
use crate::store::{meta, obj_key, State};

/// The eviction API: delete the pod unless a PodDisruptionBudget forbids it now.
pub fn evict(
    st: &mut State,
    pods: &KindInfo,
    ns: &str,
    name: &str,
    body: &Value,
    origin: &str,
) -> Result<Value, ApiError> {
    let key = obj_key("", "Pod", ns, name);
    let Some(pod) = st.objects.get(&key).cloned() else {
        return Err(ApiError::not_found(pods, name));
    };
    let body_name = meta(body, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let opts = delete_options(body.get("deleteOptions").unwrap_or(&Value::Null));
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    // canIgnorePDB: terminal, pending or already terminating pods go without a budget check.
    let ignore_pdb = matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some();
    if !ignore_pdb {
        let pdbs: Vec<Value> = st
            .list("policy", "PodDisruptionBudget", Some(ns))
            .into_iter()
            .filter(|b| match b.pointer("/spec/selector") {
                None | Some(Value::Null) => false,
                Some(sel) => LabelSelector::from_object(sel).matches(labels_of(&pod)),
            })
            .cloned()
            .collect();
        if pdbs.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = pdbs.first() {
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let healthy = pdb
                .pointer("/status/currentHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let desired = pdb
                .pointer("/status/desiredHealthy")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            // IfHealthyBudget: an unready pod may go while the budget is met.
            let unready_ok = !objects::pod_ready(&pod) && healthy >= desired;
            if allowed <= 0 && !unready_ok {
                return Err(ApiError {
                    code: 429,
                    reason: "TooManyRequests",
                    message: "Cannot evict pod as it would violate the pod's disruption budget."
                        .into(),
                    details: json!({"causes": [{"reason": "DisruptionBudget",
                        "message": format!("The disruption budget {} needs {desired} healthy pods and has {healthy} currently", meta(pdb, "name"))}]}),
                });
            }
            if !unready_ok {
                let pk = obj_key("policy", "PodDisruptionBudget", ns, meta(pdb, "name"));
                let now = crate::util::now_rfc3339();
                st.update(&pk, |b| {
                    b["status"]["disruptionsAllowed"] = json!(allowed - 1);
                    b["status"]["disruptedPods"][name] = json!(now);
                });
            }
        }
    }
    objects::request_delete(st, &key, &opts, origin);
    st.event(
        origin,
        "evict",
        json!({"node": pod.pointer("/spec/nodeName").cloned().unwrap_or(Value::Null), "namespace": ns, "pod": name}),
    );
    let mut s = status::success(Value::Null);
    s.as_object_mut().map(|m| m.remove("details"));
    s["code"] = json!(201);
    Ok(s)
}

pub fn delete_options(v: &Value) -> DeleteOptions {
    DeleteOptions {
        grace_seconds: v.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation: v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(
                || match v.get("orphanDependents").and_then(Value::as_bool) {
                    Some(true) => Some("Orphan".into()),
                    _ => None,
                },
            ),
        precondition_uid: v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: v
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty()),
    }
}

/// `GET pods/<name>/log`: the container's output, `tailLines` and `limitBytes` honoured.
pub fn log(
    st: &State,
    pods: &KindInfo,
    ns: &str,
    name: &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<String, ApiError> {
    let Some(pod) = st.get("", "Pod", ns, name) else {
        return Err(ApiError::not_found(pods, name));
    };
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.contains(c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.clone()
        }
        None => match containers.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ApiError::bad_request(format!(
                    "pod {name} has no containers"
                )))
            }
            many => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    many.join(" ")
                )))
            }
        },
    };
    let started = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("name").and_then(Value::as_str) == Some(container.as_str())
                    && (c.pointer("/state/waiting").is_none()
                        || c.pointer("/lastState/terminated").is_some())
            })
        });
    if !started {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    // `previous=true`: the container instance before the last restart (kubelet
    // `pkg/kubelet/kuberuntime/kuberuntime_container.go` GetContainerLogs), an error when
    // there is none.
    let previous = q.get("previous").is_some_and(|v| v == "true");
    let restarted = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("name").and_then(Value::as_str) == Some(container.as_str())
                    && c.pointer("/lastState/terminated").is_some()
            })
        });
    if previous && !restarted {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    // While it still backs off, the terminated instance is the one that logged last.
    let key = if previous && st.logs.contains_key(&format!("{ns}/{name}#previous")) {
        format!("{ns}/{name}#previous")
    } else {
        format!("{ns}/{name}")
    };
    let text = st.logs.get(&key).cloned().unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(t) = q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        if t < lines.len() {
            lines = lines[lines.len() - t..].to_vec();
        }
    }
    let mut out: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if let Some(limit) = q.get("limitBytes").and_then(|t| t.parse::<usize>().ok()) {
        out.truncate(limit);
    }
    Ok(out)
}
