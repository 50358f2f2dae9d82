//! helm-controller (k3s-io/helm-controller v0.17.7 `pkg/controllers/chart/chart.go`): a
//! `helm-install-<name>` Job per HelmChart config (its pod runs on a node like any Job's, with
//! the nodeSelector and tolerations upstream sets), the finalizer
//! `wrangler.cattle.io/on-helm-chart-remove` and the `helm-delete-<name>` Job when a chart is
//! deleted. The double runs no charts: when an install Job's pod has run two seconds it
//! creates what the chart would (`charts.json`) and marks the Job complete.

use serde_json::{json, Map, Value};

use super::workloads::{self, finish_pod};
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

fn job_state(j: &Value) -> Option<&'static str> {
    let c = j.pointer("/status/conditions").and_then(Value::as_array)?;
    if c.iter()
        .any(|c| s(c, "/type") == "Complete" && s(c, "/status") == "True")
    {
        return Some("Complete");
    }
    if c.iter()
        .any(|c| s(c, "/type") == "Failed" && s(c, "/status") == "True")
    {
        return Some("Failed");
    }
    None
}

/// The Job helm-controller creates for a chart (`chart.go` job()).
fn job(chart: &Value, name: &str, action: &str, hash: &str, target: &str) -> Value {
    let chart_name = meta(chart, "name");
    let ns = meta(chart, "namespace");
    let mut spec = json!({
        "containers": [{"name": "helm", "image": JOB_IMAGE, "args": [action],
            "env": [{"name": "NAME", "value": chart_name},
                    {"name": "VERSION", "value": chart.pointer("/spec/version").cloned().unwrap_or(json!(""))},
                    {"name": "REPO", "value": chart.pointer("/spec/repo").cloned().unwrap_or(json!(""))},
                    {"name": "TARGET_NAMESPACE", "value": target},
                    {"name": "CHART", "value": chart.pointer("/spec/chart").cloned().unwrap_or(json!(""))}]}],
        "restartPolicy": "OnFailure",
        "serviceAccountName": format!("helm-{chart_name}"),
        "nodeSelector": {"kubernetes.io/os": "linux"},
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
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns,
            "labels": {CHART_LABEL: chart_name},
            "annotations": {"helmcharts.helm.cattle.io/configHash": hash},
            "ownerReferences": [controller_ref(chart)]},
        "spec": {"backoffLimit": chart.pointer("/spec/backOffLimit").cloned().unwrap_or(json!(1000)),
            "completions": 1, "parallelism": 1,
            "template": {"metadata": {"annotations": {"helmcharts.helm.cattle.io/configHash": hash},
                "labels": {CHART_LABEL: chart_name}}, "spec": spec}}
    })
}

/// The job's pod once it has been running for two seconds on a Ready node.
fn ripe_pod(st: &State, j: &Value) -> Option<String> {
    let uid = meta(j, "uid");
    let ns = meta(j, "namespace");
    st.list("", "Pod", Some(ns)).into_iter().find_map(|p| {
        let mine = super::controller_uid(p) == Some(uid);
        let running = s(p, "/status/phase") == "Running" && !terminating(p);
        let since = util::parse_rfc3339(s(p, "/status/startTime")).map(|t| util::now_secs() - t);
        (mine && running && since.is_some_and(|t| t >= 2))
            .then(|| obj_key("", "Pod", ns, meta(p, "name")))
    })
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
        if let Some(msg) = failed {
            conds.push(
                json!({"type": "Failed", "status": "True", "reason": "Job failed", "message": msg}),
            );
        }
        c["status"] = json!({"jobName": job_name, "conditions": conds});
    });
}

pub fn run(st: &mut State, ctx: &Ctx) {
    let fails = st.control_list("fail-jobs");
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
        let hash = format!("SHA256={}", chart_hash(st, &chart));
        let target = chart
            .pointer("/spec/targetNamespace")
            .and_then(Value::as_str)
            .unwrap_or(&ns)
            .to_string();
        let cur = st.objects.get(&job_key).cloned();
        let cur_hash = cur
            .as_ref()
            .map(|j| {
                s(
                    j,
                    "/metadata/annotations/helmcharts.helm.cattle.io~1configHash",
                )
                .to_string()
            })
            .unwrap_or_default();
        if cur.is_none() || cur_hash != hash {
            if cur.is_some() {
                objects::finish_delete(st, &job_key, "");
            }
            service_account(st, &chart);
            let j = job(&chart, &job_name, "install", &hash, &target);
            if let Err(e) = objects::create(st, &builtin("Job"), Some(&ns), j, false, "") {
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
        }
        let j = cur.expect("checked");
        match job_state(&j) {
            Some("Complete") => continue,
            Some(_) => {
                if !fails.contains(&name) {
                    // Retried once the test stops failing it (helm-controller's backoff).
                    st.update(&job_key, |j| {
                        j["status"] = json!({"startTime": util::now_rfc3339(), "active": 0});
                    });
                }
                continue;
            }
            None => {}
        }
        let Some(pod_key) = ripe_pod(st, &j) else {
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
        });
        let create_ns = chart
            .pointer("/spec/createNamespace")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let chart_ref = s(&chart, "/spec/chart").to_string();
        let cmd = format!("+ helm_v3 install --namespace {target} {name} {chart_ref}");
        let now = util::now_rfc3339();
        let failure = if fails.contains(&name) {
            Some(format!("{cmd}\nError: INSTALLATION FAILED: failed post-install: 1 error occurred:\n\t* timed out waiting for the condition (k3s double: fail-jobs)\n"))
        } else if !st.namespace_exists(&target) && !create_ns {
            Some(format!("{cmd}\nError: INSTALLATION FAILED: create: failed to create: namespaces \"{target}\" not found\n"))
        } else {
            None
        };
        match failure {
            Some(log) => {
                finish_pod(st, &pod_key, false, &log);
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
                    Some("Job has reached the specified backoff limit"),
                );
                st.event(&ctx.node, "helm-job-failed", json!({"chart": name, "namespace": ns, "job": job_name,
                    "reason": if fails.contains(&name) { "fail-jobs".to_string() } else { format!("namespace {target} not found") }}));
            }
            None => {
                if !st.namespace_exists(&target) {
                    let nsobj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target}});
                    let _ = objects::create(st, &builtin("Namespace"), None, nsobj, false, "");
                }
                install_chart(st, ctx, &chart, &target);
                let log = format!("{cmd}\nNAME: {name}\nLAST DEPLOYED: {now}\nNAMESPACE: {target}\nSTATUS: deployed\nREVISION: 1\nTEST SUITE: None\n");
                finish_pod(st, &pod_key, true, &log);
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

/// The OnRemove handler: run `helm-delete-<name>`, then remove what the chart made and let
/// the HelmChart go.
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
        let hash = format!("SHA256={}", chart_hash(st, chart));
        let mut job = job(chart, &job_name, "delete", &hash, &target);
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
    let Some(pod_key) = ripe_pod(st, &j) else {
        return;
    };
    let chart_id = format!("{ns}.{name}");
    let made: Vec<String> = st
        .objects
        .iter()
        .filter(|(_, o)| s(o, "/metadata/labels/k3s-double~1chart") == chart_id)
        .map(|(k, _)| k.clone())
        .collect();
    for k in made {
        objects::request_delete(st, &k, &objects::DeleteOptions::default(), "");
    }
    finish_pod(st, &pod_key, true, &format!("+ helm_v3 uninstall {name} --namespace {target} --wait\nrelease \"{name}\" uninstalled\n"));
    st.event(
        &ctx.node,
        "helm-job-complete",
        json!({"chart": name, "namespace": ns, "job": job_name}),
    );
    objects::finish_delete(st, &job_key, "");
    objects::drop_finalizer(st, &chart_key, FINALIZER, &ctx.node);
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
                    put(st, o);
                }
                continue;
            }
            _ => continue,
        };
        put(st, obj);
    }
    // Helm's release record.
    put(
        st,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": format!("sh.helm.release.v1.{release}.v1"), "namespace": target,
            "labels": {"name": release, "owner": "helm", "status": "deployed", "version": "1", "k3s-double/chart": chart_id}},
        "data": {"release": ""}}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
