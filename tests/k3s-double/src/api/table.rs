//! Server-side printing: `meta.k8s.io/v1` Tables with the columns the apiserver's printers give
//! (kubernetes `pkg/printers/internalversion/printers.go`), CRDs' additionalPrinterColumns, and
//! NAME/AGE for the rest. kubectl's default `get` output is these tables.

use serde_json::{json, Value};

use crate::kinds::KindInfo;
use crate::store::meta;
use crate::util;

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}
fn n(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn col(name: &str, ty: &str, priority: i64) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn age(o: &Value) -> String {
    util::age(meta(o, "creationTimestamp"))
}

fn node_roles(v: &Value) -> String {
    let mut roles: Vec<String> = v
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, val)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                        .or_else(|| {
                            (k == "kubernetes.io/role")
                                .then(|| val.as_str().unwrap_or("").to_string())
                        })
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_status(v: &Value) -> String {
    let mut st = match crate::nodes::ready_status(v) {
        "True" => "Ready".to_string(),
        "" => "Unknown".to_string(),
        _ => "NotReady".to_string(),
    };
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

fn address(v: &Value, ty: &str) -> String {
    v.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| s(x, "/type") == ty))
        .map(|x| s(x, "/address").to_string())
        .unwrap_or_else(|| "<none>".into())
}

fn pod_status(v: &Value) -> String {
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let reason = s(v, "/status/reason");
    if !reason.is_empty() {
        return reason.into();
    }
    match s(v, "/status/phase") {
        "" => "Pending".into(),
        "Succeeded" => "Completed".into(),
        "Failed" => "Error".into(),
        "Pending" if v.pointer("/spec/nodeName").is_some() => "ContainerCreating".into(),
        p => p.into(),
    }
}

fn pod_ready(v: &Value) -> String {
    let total = v
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let ready = v
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count()
        })
        .unwrap_or(0);
    format!("{ready}/{total}")
}

fn ports(v: &Value) -> String {
    let p: Vec<String> = v
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let np = n(p, "/nodePort");
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    if np > 0 {
                        format!("{}:{np}/{proto}", n(p, "/port"))
                    } else {
                        format!("{}/{proto}", n(p, "/port"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if p.is_empty() {
        "<none>".into()
    } else {
        p.join(",")
    }
}

fn job_status(v: &Value) -> &'static str {
    let conds = v.pointer("/status/conditions").and_then(Value::as_array);
    let has = |t: &str| {
        conds.is_some_and(|c| {
            c.iter()
                .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
        })
    };
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if v.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn duration(v: &Value) -> String {
    let start = util::parse_rfc3339(s(v, "/status/startTime"));
    let end = util::parse_rfc3339(s(v, "/status/completionTime")).unwrap_or_else(util::now_secs);
    match start {
        Some(st) => util::human_duration((end - st).max(0)),
        None => String::new(),
    }
}

fn int_or_str(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(x)) => x.to_string(),
        Some(Value::String(x)) => x.clone(),
        _ => "N/A".into(),
    }
}

/// (columns, cells for one object).
fn printer(ki: &KindInfo, o: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(meta(o, "name"));
    match ki.kind.as_str() {
        "Node" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
                col("External-IP", "string", 1),
                col("OS-Image", "string", 1),
                col("Kernel-Version", "string", 1),
                col("Container-Runtime", "string", 1),
            ],
            vec![
                name,
                json!(node_status(o)),
                json!(node_roles(o)),
                json!(age(o)),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(address(o, "InternalIP")),
                json!(address(o, "ExternalIP")),
                json!(s(o, "/status/nodeInfo/osImage")),
                json!(s(o, "/status/nodeInfo/kernelVersion")),
                json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ],
        ),
        "Pod" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            vec![
                name,
                json!(pod_ready(o)),
                json!(pod_status(o)),
                json!("0"),
                json!(age(o)),
                json!(match s(o, "/status/podIP") {
                    "" => "<none>",
                    ip => ip,
                }),
                json!(match s(o, "/spec/nodeName") {
                    "" => "<none>",
                    x => x,
                }),
                json!("<none>"),
                json!("<none>"),
            ],
        ),
        "Deployment" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
                json!(age(o)),
            ],
        ),
        "ReplicaSet" => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(n(o, "/spec/replicas")),
                json!(n(o, "/status/replicas")),
                json!(n(o, "/status/readyReplicas")),
                json!(age(o)),
            ],
        ),
        "StatefulSet" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                json!(age(o)),
            ],
        ),
        "DaemonSet" => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Node Selector", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(n(o, "/status/desiredNumberScheduled")),
                json!(n(o, "/status/currentNumberScheduled")),
                json!(n(o, "/status/numberReady")),
                json!(n(o, "/status/updatedNumberScheduled")),
                json!(n(o, "/status/numberAvailable")),
                json!(o
                    .pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .map(|m| m
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(","))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "<none>".into())),
                json!(age(o)),
            ],
        ),
        "Job" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(job_status(o)),
                json!(format!(
                    "{}/{}",
                    n(o, "/status/succeeded"),
                    o.pointer("/spec/completions")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(duration(o)),
                json!(age(o)),
            ],
        ),
        "Namespace" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            vec![name, json!(s(o, "/status/phase")), json!(age(o))],
        ),
        "Secret" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(s(o, "/type")),
                json!(o
                    .get("data")
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .unwrap_or(0)),
                json!(age(o)),
            ],
        ),
        "ConfigMap" => (
            vec![
                col("Name", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(
                    o.get("data")
                        .and_then(Value::as_object)
                        .map(|m| m.len())
                        .unwrap_or(0)
                        + o.get("binaryData")
                            .and_then(Value::as_object)
                            .map(|m| m.len())
                            .unwrap_or(0)
                ),
                json!(age(o)),
            ],
        ),
        "Service" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Cluster-IP", "string", 0),
                col("External-IP", "string", 0),
                col("Port(s)", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(s(o, "/spec/type")),
                json!(match s(o, "/spec/clusterIP") {
                    "" => "<none>",
                    ip => ip,
                }),
                json!(o
                    .pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .map(|a| a
                        .iter()
                        .map(|i| s(i, "/ip").to_string())
                        .collect::<Vec<_>>()
                        .join(","))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| if s(o, "/spec/type") == "LoadBalancer" {
                        "<pending>".into()
                    } else {
                        "<none>".into()
                    })),
                json!(ports(o)),
                json!(age(o)),
            ],
        ),
        "PodDisruptionBudget" => (
            vec![
                col("Name", "string", 0),
                col("Min Available", "string", 0),
                col("Max Unavailable", "string", 0),
                col("Allowed Disruptions", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(int_or_str(o.pointer("/spec/minAvailable"))),
                json!(int_or_str(o.pointer("/spec/maxUnavailable"))),
                json!(n(o, "/status/disruptionsAllowed")),
                json!(age(o)),
            ],
        ),
        "StorageClass" => (
            vec![
                col("Name", "string", 0),
                col("Provisioner", "string", 0),
                col("ReclaimPolicy", "string", 0),
                col("VolumeBindingMode", "string", 0),
                col("AllowVolumeExpansion", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                json!(if s(
                    o,
                    "/metadata/annotations/storageclass.kubernetes.io~1is-default-class"
                ) == "true"
                {
                    format!("{} (default)", meta(o, "name"))
                } else {
                    meta(o, "name").to_string()
                }),
                json!(s(o, "/provisioner")),
                json!(match s(o, "/reclaimPolicy") {
                    "" => "Delete",
                    x => x,
                }),
                json!(match s(o, "/volumeBindingMode") {
                    "" => "Immediate",
                    x => x,
                }),
                json!(o
                    .get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
                json!(age(o)),
            ],
        ),
        "CustomResourceDefinition" => (
            vec![col("Name", "string", 0), col("Created At", "date", 0)],
            vec![name, json!(meta(o, "creationTimestamp"))],
        ),
        // k3s's HelmChart CRD printer columns (helm-controller `pkg/crd`).
        "HelmChart" => (
            vec![
                col("Name", "string", 0),
                col("Job", "string", 0),
                col("Chart", "string", 0),
                col("TargetNamespace", "string", 0),
                col("Version", "string", 0),
                col("Repo", "string", 0),
                col("HelmVersion", "string", 0),
                col("Bootstrap", "string", 0),
            ],
            vec![
                name,
                json!(s(o, "/status/jobName")),
                json!(s(o, "/spec/chart")),
                json!(s(o, "/spec/targetNamespace")),
                json!(s(o, "/spec/version")),
                json!(s(o, "/spec/repo")),
                json!(s(o, "/spec/helmVersion")),
                json!(o
                    .pointer("/spec/bootstrap")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
            ],
        ),
        "Addon" => (
            vec![
                col("Name", "string", 0),
                col("Source", "string", 0),
                col("Checksum", "string", 0),
            ],
            vec![
                name,
                json!(s(o, "/spec/source")),
                json!(s(o, "/spec/checksum")),
            ],
        ),
        _ if !ki.printer_columns.is_empty() => {
            let mut cols = vec![col("Name", "string", 0)];
            let mut cells = vec![name];
            for c in &ki.printer_columns {
                cols.push(json!({"name": c.get("name").cloned().unwrap_or(json!("")),
                    "type": c.get("type").cloned().unwrap_or(json!("string")),
                    "format": c.get("format").cloned().unwrap_or(json!("")),
                    "description": c.get("description").cloned().unwrap_or(json!("")),
                    "priority": c.get("priority").cloned().unwrap_or(json!(0))}));
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let v = jsonpath_first(o, path);
                cells.push(match (c.get("type").and_then(Value::as_str), v) {
                    (Some("date"), Some(Value::String(ts))) => json!(util::age(&ts)),
                    (_, Some(v)) => v,
                    (_, None) => Value::Null,
                });
            }
            (cols, cells)
        }
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            vec![name, json!(age(o))],
        ),
    }
}

/// The first value a simple CRD JSONPath (`.spec.x`, `.status.conditions[?(@.type=="Ready")].status`) selects.
fn jsonpath_first(o: &Value, path: &str) -> Option<Value> {
    let mut cur = vec![o.clone()];
    let mut rest = path.trim().trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            cur = cur.iter().filter_map(|v| v.get(key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            let mut next = vec![];
            for v in &cur {
                let arr = v.as_array().cloned().unwrap_or_default();
                if inner == "*" {
                    next.extend(arr);
                } else if let Ok(i) = inner.parse::<usize>() {
                    next.extend(arr.get(i).cloned());
                } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                {
                    let (field, want) = f.split_once("==")?;
                    let want = want.trim().trim_matches('"').trim_matches('\'');
                    next.extend(
                        arr.into_iter()
                            .filter(|x| x.get(field.trim()).and_then(Value::as_str) == Some(want)),
                    );
                }
            }
            cur = next;
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    cur.into_iter().next()
}

fn partial(o: &Value) -> Value {
    let mut m = o.get("metadata").cloned().unwrap_or(json!({}));
    if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m})
}

/// A Table for these objects (a single get, or a list with its resourceVersion).
pub fn table(ki: &KindInfo, objs: &[Value], rv: Option<u64>, include_object: bool) -> Value {
    let probe = objs.first().cloned().unwrap_or(json!({}));
    let (cols, _) = printer(ki, &probe);
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let (_, cells) = printer(ki, o);
            let object = if include_object {
                o.clone()
            } else {
                partial(o)
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": cols, "rows": rows})
}

/// Whether the client asked for a Table (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rows_read_like_kubectl() {
        let all = crate::kinds::builtin();
        let ki = all.iter().find(|k| k.kind == "Node").unwrap();
        let node = json!({"metadata": {"name": "m1", "creationTimestamp": util::now_rfc3339(),
            "labels": {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/etcd": "true"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.36.3+k3s1"}}});
        let t = table(ki, &[node], Some(7), false);
        assert_eq!(t["rows"][0]["cells"][1], "Ready,SchedulingDisabled");
        assert_eq!(t["rows"][0]["cells"][2], "control-plane,etcd");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
        assert_eq!(
            jsonpath_first(
                &json!({"status": {"conditions": [{"type": "A", "status": "x"}, {"type": "Ready", "status": "True"}]}}),
                ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            Some(json!("True"))
        );
    }
}
