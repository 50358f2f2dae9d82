//! What the apiserver does with an object on create, update and delete: admission defaults,
//! preconditions, status subresources, finalizers and graceful deletion. The REST layer
//! (`api/`), the deploy controller and the controllers all write through here.

use serde_json::{json, Map, Value};

use crate::kinds::KindInfo;
use crate::status::ApiError;
use crate::store::{meta, obj_key, State};
use crate::util;

/// Where the cluster IPs of Services come from (the default `service-cidr`).
const SERVICE_NET: &str = "10.43";

pub fn key(ki: &KindInfo, ns: &str, name: &str) -> String {
    obj_key(
        &ki.group,
        &ki.kind,
        if ki.namespaced { ns } else { "" },
        name,
    )
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns1123_subdomain(s)
}

fn validate_name(ki: &KindInfo, name: &str) -> Result<(), ApiError> {
    // RBAC objects take any path segment name (`system:coredns`): rbac validation's
    // ValidateRBACName is path.IsValidPathSegmentName.
    if ki.group == "rbac.authorization.k8s.io" {
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            return Err(ApiError::invalid(
                ki,
                name,
                &[("metadata.name".into(), format!("Invalid value: \"{name}\": may not contain '/' or '%', and may not be '.' or '..'"))],
            ));
        }
        return Ok(());
    }
    let label = matches!(ki.kind.as_str(), "Namespace" | "Service");
    let ok = if label {
        is_dns1123_label(name)
    } else {
        is_dns1123_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    let what = if label {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    } else {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    };
    Err(ApiError::invalid(
        ki,
        name,
        &[(
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {what}"),
        )],
    ))
}

fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.get("metadata").is_some_and(Value::is_object) {
        o["metadata"] = json!({});
    }
    o["metadata"].as_object_mut().expect("metadata object")
}

/// Fields a client cannot set; the server owns them.
fn strip_server_fields(o: &mut Value) {
    let m = meta_mut(o);
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
        "selfLink",
    ] {
        m.remove(f);
    }
}

fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

pub fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn add_finalizer(o: &mut Value, f: &str) {
    let mut fs = finalizers(o);
    if !fs.iter().any(|x| x == f) {
        fs.push(f.to_string());
        meta_mut(o).insert("finalizers".into(), json!(fs));
    }
}

pub fn remove_finalizer(o: &mut Value, f: &str) {
    let fs: Vec<String> = finalizers(o).into_iter().filter(|x| x != f).collect();
    let m = meta_mut(o);
    if fs.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(fs));
    }
}

fn next_cluster_ip(st: &State) -> String {
    let used: std::collections::HashSet<String> = st
        .list("", "Service", None)
        .iter()
        .filter_map(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    for i in 10u32..65000 {
        let ip = format!("{SERVICE_NET}.{}.{}", i / 256, i % 256);
        if !used.contains(&ip) {
            return ip;
        }
    }
    format!("{SERVICE_NET}.255.254")
}

/// The pod defaults the apiserver fills in (core/v1 `SetDefaults_PodSpec`) plus the
/// DefaultTolerationSeconds admission plugin's two NoExecute tolerations.
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        *spec = json!({});
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
}

fn default_tolerations(spec: &mut Value) {
    let mut tols = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = tols.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (k == key || (k.is_empty() && op == "Exists")) && (e.is_empty() || e == "NoExecute")
        });
        if !tolerated {
            tols.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = json!(tols);
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Admission and defaulting for a new object (already named and namespaced).
fn default_new(st: &State, ki: &KindInfo, o: &mut Value) {
    if ki.has_status() && !matches!(ki.kind.as_str(), "Namespace" | "CustomResourceDefinition") {
        if let Some(m) = o.as_object_mut() {
            m.remove("status");
        }
    }
    match ki.kind.as_str() {
        "Namespace" => {
            let name = meta(o, "name").to_string();
            let m = meta_mut(o);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
            o["spec"] = json!({"finalizers": ["kubernetes"]});
            o["status"] = json!({"phase": "Active"});
        }
        "Secret" => {
            if o.get("type").is_none() {
                o["type"] = json!("Opaque");
            }
            fold_string_data(o);
        }
        "Service" => {
            let spec = o
                .get_mut("spec")
                .filter(|s| s.is_object())
                .map(|s| s.take())
                .unwrap_or(json!({}));
            let mut spec = spec;
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            if spec.get("clusterIP").is_none() && spec["type"] != "ExternalName" {
                let ip = next_cluster_ip(st);
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if spec.get("sessionAffinity").is_none() {
                spec["sessionAffinity"] = json!("None");
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p.get("port").cloned().unwrap_or(json!(0));
                    }
                }
            }
            o["spec"] = spec;
            o["status"] = json!({"loadBalancer": {}});
        }
        "Pod" => {
            default_pod_spec(&mut o["spec"]);
            default_tolerations(&mut o["spec"]);
            o["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" => {
            if ki.kind != "DaemonSet" && o.pointer("/spec/replicas").is_none() {
                o["spec"]["replicas"] = json!(1);
            }
            if ki.kind == "Deployment" {
                for (k, v) in [
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                    (
                        "strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                    ),
                ] {
                    if o.pointer(&format!("/spec/{k}")).is_none() {
                        o["spec"][k] = v;
                    }
                }
            }
            if o.pointer("/spec/template/spec").is_some() {
                default_pod_spec(&mut o["spec"]["template"]["spec"]);
            }
        }
        "Job" => {
            let uid = meta(o, "uid").to_string();
            let name = meta(o, "name").to_string();
            for (k, v) in [
                ("backoffLimit", json!(6)),
                ("completions", json!(1)),
                ("parallelism", json!(1)),
                ("completionMode", json!("NonIndexed")),
                ("suspend", json!(false)),
            ] {
                if o.pointer(&format!("/spec/{k}")).is_none() {
                    o["spec"][k] = v;
                }
            }
            // The job controller's selector (batch/v1 `generateSelector`).
            if o.pointer("/spec/manualSelector").and_then(Value::as_bool) != Some(true) {
                o["spec"]["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                let labels = &mut o["spec"]["template"]["metadata"]["labels"];
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid.as_str()),
                    ("controller-uid", uid.as_str()),
                    ("batch.kubernetes.io/job-name", name.as_str()),
                    ("job-name", name.as_str()),
                ] {
                    labels[k] = json!(v);
                }
            }
            if o.pointer("/spec/template/spec").is_some() {
                default_pod_spec(&mut o["spec"]["template"]["spec"]);
            }
        }
        "CustomResourceDefinition" => {
            let now = util::now_rfc3339();
            let names = o.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let stored = o
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .and_then(|vs| {
                    vs.iter()
                        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                })
                .and_then(|v| v.get("name").cloned())
                .unwrap_or(json!("v1"));
            o["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
                "storedVersions": [stored],
            });
        }
        _ => {}
    }
}

fn fold_string_data(o: &mut Value) {
    if let Some(Value::Object(sd)) = o.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !o.get("data").is_some_and(Value::is_object) {
            o["data"] = json!({});
        }
        for (k, v) in sd {
            o["data"][k] = json!(b64(v.as_str().unwrap_or("")));
        }
    }
}

/// The namespace an object goes to: the request's, which the body must not contradict.
fn place(ki: &KindInfo, ns: Option<&str>, o: &mut Value) -> Result<String, ApiError> {
    let body_ns = meta(o, "namespace").to_string();
    if !ki.namespaced {
        meta_mut(o).remove("namespace");
        return Ok(String::new());
    }
    let ns = match ns {
        Some(n) => n.to_string(),
        None if !body_ns.is_empty() => body_ns.clone(),
        None => "default".into(),
    };
    if !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta_mut(o).insert("namespace".into(), json!(ns));
    Ok(ns)
}

fn check_namespace(st: &State, ki: &KindInfo, ns: &str) -> Result<(), ApiError> {
    if !ki.namespaced {
        return Ok(());
    }
    match st.get("", "Namespace", "", ns) {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(n) if terminating(n) => Err(ApiError {
            details: json!({"causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
            ..ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))
        }),
        Some(_) => Ok(()),
    }
}

fn check_kind(ki: &KindInfo, o: &Value) -> Result<(), ApiError> {
    let av = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
    let (g, v) = av.rsplit_once('/').unwrap_or(("", av));
    if (!kind.is_empty() && kind != ki.kind)
        || (!av.is_empty() && (g != ki.group || !ki.versions.iter().any(|x| x == v)))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            ki.api_version()
        )));
    }
    Ok(())
}

/// POST: a new object. `ns` is the request's namespace (None for cluster-scoped paths).
pub fn create(
    st: &mut State,
    ki: &KindInfo,
    ns: Option<&str>,
    mut o: Value,
    dry_run: bool,
    origin: &str,
) -> Result<Value, ApiError> {
    if !o.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    }
    check_kind(ki, &o)?;
    o["apiVersion"] = json!(ki.api_version());
    o["kind"] = json!(ki.kind);
    strip_server_fields(&mut o);
    if meta(&o, "name").is_empty() {
        let gen = meta(&o, "generateName").to_string();
        if gen.is_empty() {
            return Err(ApiError::invalid(
                ki,
                "",
                &[(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        meta_mut(&mut o).insert(
            "name".into(),
            json!(format!("{gen}{}", util::random_suffix(5))),
        );
    }
    let name = meta(&o, "name").to_string();
    validate_name(ki, &name)?;
    let ns = place(ki, ns, &mut o)?;
    check_namespace(st, ki, &ns)?;
    let k = key(ki, &ns, &name);
    if st.objects.contains_key(&k) {
        return Err(ApiError::already_exists(ki, &name));
    }
    meta_mut(&mut o).insert("uid".into(), json!(crate::store::new_uid()));
    default_new(st, ki, &mut o);
    if dry_run {
        return Ok(o);
    }
    st.put(o);
    // Controllers create with no origin: only API requests go to the event log.
    if !origin.is_empty() {
        st.event(
            origin,
            "create",
            json!({"kind": ki.kind, "namespace": ns, "name": name}),
        );
    }
    Ok(st.objects.get(&k).cloned().unwrap_or(Value::Null))
}

/// Creates or updates an object the cluster itself applies (k3s's deploy controller, the
/// double's charts), like wrangler's apply: the manifest's fields win, while what others
/// added (status, finalizers, owners, other labels and annotations) stays.
pub fn upsert(
    st: &mut State,
    ki: &KindInfo,
    ns: &str,
    o: Value,
    origin: &str,
) -> Result<bool, ApiError> {
    let name = meta(&o, "name").to_string();
    let k = key(ki, ns, &name);
    let Some(cur) = st.objects.get(&k).cloned() else {
        return create(st, ki, Some(ns).filter(|_| ki.namespaced), o, false, origin).map(|_| true);
    };
    let mut next = cur.clone();
    let nm = next.as_object_mut().expect("stored objects are objects");
    let keep = ["metadata", "status", "apiVersion", "kind"];
    nm.retain(|f, _| keep.contains(&f.as_str()) || o.get(f).is_some());
    for (f, v) in o.as_object().into_iter().flatten() {
        if !keep.contains(&f.as_str()) {
            nm.insert(f.clone(), v.clone());
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(Value::Object(m)) = o.pointer(&format!("/metadata/{field}")) {
            let slot = &mut next["metadata"][field];
            if !slot.is_object() {
                *slot = json!({});
            }
            for (a, b) in m {
                slot[a] = b.clone();
            }
        }
    }
    if ki.kind == "Secret" {
        fold_string_data(&mut next);
    }
    if next == cur {
        return Ok(false);
    }
    st.replace(&k, next);
    Ok(true)
}

fn check_immutable(ki: &KindInfo, cur: &Value, new: &Value) -> Result<(), ApiError> {
    if !matches!(ki.kind.as_str(), "Secret" | "ConfigMap") {
        return Ok(());
    }
    if cur.get("immutable").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let name = meta(cur, "name");
    for f in ["data", "binaryData", "stringData"] {
        if cur.get(f) != new.get(f) && !(f == "stringData" && new.get(f).is_none()) {
            return Err(ApiError::invalid(
                ki,
                name,
                &[(
                    f.into(),
                    "Forbidden: field is immutable when `immutable` is set".into(),
                )],
            ));
        }
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        return Err(ApiError::invalid(
            ki,
            name,
            &[(
                "immutable".into(),
                "Forbidden: field is immutable when `immutable` is set".into(),
            )],
        ));
    }
    Ok(())
}

/// PUT (and the end of PATCH): replaces the object, or only its status for `/status`.
#[allow(clippy::too_many_arguments)]
pub fn update(
    st: &mut State,
    ki: &KindInfo,
    ns: &str,
    name: &str,
    mut o: Value,
    subresource: Option<&str>,
    dry_run: bool,
    origin: &str,
) -> Result<Value, ApiError> {
    let k = key(ki, ns, name);
    let Some(cur) = st.objects.get(&k).cloned() else {
        return Err(ApiError::not_found(ki, name));
    };
    if !o.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not an object",
        ));
    }
    check_kind(ki, &o)?;
    let body_name = meta(&o, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let want_rv = meta(&o, "resourceVersion").to_string();
    if !want_rv.is_empty() && want_rv != meta(&cur, "resourceVersion") {
        return Err(ApiError::conflict(
            ki,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let next = match subresource {
        Some("status") => {
            let mut n = cur.clone();
            n["status"] = o.get("status").cloned().unwrap_or(Value::Null);
            n
        }
        Some(other) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({other})"
            )))
        }
        None => {
            o["apiVersion"] = json!(ki.api_version());
            o["kind"] = json!(ki.kind);
            if ki.namespaced {
                meta_mut(&mut o).insert("namespace".into(), json!(ns));
            } else {
                meta_mut(&mut o).remove("namespace");
            }
            meta_mut(&mut o).insert("name".into(), json!(name));
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cur.pointer(&format!("/metadata/{f}")) {
                    Some(v) => meta_mut(&mut o).insert(f.into(), v.clone()),
                    None => meta_mut(&mut o).remove(f),
                };
            }
            meta_mut(&mut o).remove("managedFields");
            if ki.has_status() {
                match cur.get("status") {
                    Some(s) => o["status"] = s.clone(),
                    None => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if ki.kind == "Secret" {
                fold_string_data(&mut o);
            }
            if ki.kind == "Namespace" {
                o["spec"] = cur.get("spec").cloned().unwrap_or(json!({}));
            }
            check_immutable(ki, &cur, &o)?;
            o
        }
    };
    if terminating(&cur) {
        // Finalizers can only be removed once deletion started (apiserver rejects new ones).
        let before = finalizers(&cur);
        let after = finalizers(&next);
        if after.iter().any(|f| !before.contains(f)) {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: no new finalizers can be added if the object is being deleted",
                ki.resource()
            )));
        }
    }
    if dry_run {
        return Ok(next);
    }
    st.replace(&k, next);
    let after = st.objects.get(&k).cloned().unwrap_or(Value::Null);
    if ki.kind == "Node" {
        node_events(st, &cur, &after, origin);
    }
    if terminating(&after) && finalizers(&after).is_empty() && ki.kind != "Namespace" {
        finish_delete(st, &k, origin);
    }
    Ok(after)
}

fn map_of(o: &Value, ptr: &str) -> Map<String, Value> {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The double's event log records what happened to Nodes (tests read it).
fn node_events(st: &mut State, before: &Value, after: &Value, origin: &str) {
    let name = meta(after, "name").to_string();
    for (field, kind) in [("labels", "label"), ("annotations", "annotate")] {
        let (b, a) = (
            map_of(before, &format!("/metadata/{field}")),
            map_of(after, &format!("/metadata/{field}")),
        );
        if a != b {
            let set: Map<String, Value> = a
                .iter()
                .filter(|(k, v)| b.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let removed: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
            st.event(
                origin,
                kind,
                json!({"kind": "Node", "name": name, "set": set, "removed": removed}),
            );
        }
    }
    let user_taints = |o: &Value| -> Vec<Value> {
        o.pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                t.get("key").and_then(Value::as_str) != Some("node.kubernetes.io/unschedulable")
            })
            .collect()
    };
    if user_taints(before) != user_taints(after) {
        st.event(
            origin,
            "taint",
            json!({"name": name, "taints": user_taints(after)}),
        );
    }
    let unsched =
        |o: &Value| o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
    if unsched(before) != unsched(after) {
        st.event(
            origin,
            if unsched(after) { "cordon" } else { "uncordon" },
            json!({"name": name}),
        );
    }
}

/// How a deletion was asked for (DeleteOptions, from the body or the query).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_seconds: Option<i64>,
    /// `Background` (default), `Foreground` or `Orphan`.
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// The outcome of a DELETE: gone now, or waiting (finalizers, graceful termination).
pub enum Deleted {
    Now(Value),
    Pending(Value),
}

/// DELETE on one object.
pub fn delete(
    st: &mut State,
    ki: &KindInfo,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
    origin: &str,
) -> Result<Deleted, ApiError> {
    let k = key(ki, ns, name);
    let Some(cur) = st.objects.get(&k).cloned() else {
        return Err(ApiError::not_found(ki, name));
    };
    if let Some(uid) = &opts.precondition_uid {
        if uid != meta(&cur, "uid") {
            return Err(ApiError::conflict(
                ki,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta(&cur, "uid")
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_rv {
        if rv != meta(&cur, "resourceVersion") {
            return Err(ApiError::conflict(ki, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta(&cur, "resourceVersion"))));
        }
    }
    if opts.dry_run {
        return Ok(Deleted::Now(cur));
    }
    st.event(
        origin,
        "delete",
        json!({"kind": ki.kind, "namespace": if ki.namespaced { ns } else { "" }, "name": name}),
    );
    Ok(request_delete(st, &k, opts, origin))
}

/// Starts (or finishes) deleting `key`, the way the generic registry store does.
pub fn request_delete(st: &mut State, k: &str, opts: &DeleteOptions, origin: &str) -> Deleted {
    let Some(cur) = st.objects.get(k).cloned() else {
        return Deleted::Now(Value::Null);
    };
    let kind = crate::store::kind_of(&cur).to_string();
    let now = util::now_rfc3339();
    // Graceful pod deletion: the kubelet ends the containers, then the pod goes
    // (pkg/registry/core/pod/strategy.go CheckGracefulDelete).
    let grace = if kind == "Pod" {
        let bound = cur.pointer("/spec/nodeName").is_some();
        let phase = cur
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        let spec_grace = cur
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let g = opts.grace_seconds.unwrap_or(spec_grace).max(0);
        if !bound || phase == "Succeeded" || phase == "Failed" {
            0
        } else {
            g
        }
    } else {
        0
    };
    let mut add = Vec::new();
    match opts.propagation.as_deref() {
        Some("Foreground") => add.push("foregroundDeletion"),
        Some("Orphan") => add.push("orphan"),
        _ => {}
    }
    let fin = finalizers(&cur);
    let is_ns = kind == "Namespace";
    if terminating(&cur) {
        // Already going: a shorter grace period is honoured (force delete with 0).
        if kind == "Pod" && (grace == 0 || opts.grace_seconds.is_some()) {
            let cur_grace = cur
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if grace < cur_grace {
                if grace == 0 && fin.is_empty() {
                    finish_delete(st, k, origin);
                    return Deleted::Now(cur);
                }
                st.update(k, |o| {
                    o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    o["metadata"]["deletionTimestamp"] =
                        json!(util::rfc3339(util::now_secs() + grace));
                });
            }
        }
        return Deleted::Pending(st.objects.get(k).cloned().unwrap_or(cur));
    }
    if grace == 0 && fin.is_empty() && add.is_empty() && !is_ns {
        finish_delete(st, k, origin);
        return Deleted::Now(cur);
    }
    st.update(k, |o| {
        for f in &add {
            add_finalizer(o, f);
        }
        o["metadata"]["deletionTimestamp"] = json!(if grace > 0 {
            util::rfc3339(util::now_secs() + grace)
        } else {
            now.clone()
        });
        o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if is_ns {
            o["status"]["phase"] = json!("Terminating");
        }
    });
    Deleted::Pending(st.objects.get(k).cloned().unwrap_or(cur))
}

/// The object is gone: remove it, and run what k3s and Kubernetes run when that happens.
pub fn finish_delete(st: &mut State, k: &str, origin: &str) {
    let Some(obj) = st.remove(k) else {
        return;
    };
    if crate::store::kind_of(&obj) == "Node" {
        st.event(origin, "node-deleted", json!({"name": meta(&obj, "name")}));
    }
}

/// A pod's Ready condition is True (what budgets and workload statuses count).
pub fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Ends a deletion that waited for finalizers once the last one is gone.
pub fn finish_if_done(st: &mut State, k: &str, origin: &str) {
    let Some(o) = st.objects.get(k) else {
        return;
    };
    let ns_pending = crate::store::kind_of(o) == "Namespace"
        && o.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if terminating(o) && finalizers(o).is_empty() && !ns_pending {
        finish_delete(st, k, origin);
    }
}

/// Removes finalizer `f` from `k` and, if that was the last, the object.
pub fn drop_finalizer(st: &mut State, k: &str, f: &str, origin: &str) {
    st.update(k, |o| remove_finalizer(o, f));
    finish_if_done(st, k, origin);
}

/// The objects that name `uid` as an owner.
pub fn dependents(st: &State, uid: &str) -> Vec<String> {
    st.objects
        .iter()
        .filter(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                })
        })
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    fn ki(kind: &str) -> KindInfo {
        kinds::builtin()
            .into_iter()
            .find(|k| k.kind == kind)
            .unwrap()
    }

    #[test]
    fn create_defaults_and_refusals() {
        let mut st = State::default();
        st.ensure_namespace("default");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let got = create(
            &mut st,
            &ki("ConfigMap"),
            Some("default"),
            cm.clone(),
            false,
            "t",
        )
        .unwrap();
        assert_eq!(got["metadata"]["namespace"], "default");
        assert!(!meta(&got, "uid").is_empty());
        let e = create(
            &mut st,
            &ki("ConfigMap"),
            Some("default"),
            cm.clone(),
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "AlreadyExists"));
        assert_eq!(e.message, "configmaps \"a\" already exists");
        let e = create(&mut st, &ki("ConfigMap"), Some("nope"), cm, false, "t").unwrap_err();
        assert_eq!(e.message, "namespaces \"nope\" not found");
        let bad =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
        let e = create(&mut st, &ki("ConfigMap"), Some("default"), bad, false, "t").unwrap_err();
        assert_eq!(e.code, 422);
        let sec = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}});
        let got = create(&mut st, &ki("Secret"), Some("default"), sec, false, "t").unwrap();
        assert_eq!(got["data"]["a"], "Yg==");
        assert_eq!(got["type"], "Opaque");
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}], "restartPolicy": "Never"}}}});
        let got = create(&mut st, &ki("Job"), Some("default"), job, false, "t").unwrap();
        assert_eq!(
            got["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            got["metadata"]["uid"]
        );
        assert_eq!(
            got["spec"]["template"]["metadata"]["labels"]["job-name"],
            "j"
        );
    }

    #[test]
    fn update_preconditions_status_and_finalizers() {
        let mut st = State::default();
        st.ensure_namespace("default");
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "finalizers": ["x/y"]},
            "spec": {"template": {"spec": {"containers": []}}}});
        let k = ki("Deployment");
        let got = create(&mut st, &k, Some("default"), d, false, "t").unwrap();
        let key = key(&k, "default", "w");
        st.update(&key, |o| o["status"] = json!({"replicas": 1}));
        let mut stale = got.clone();
        stale["spec"]["replicas"] = json!(3);
        let e = update(&mut st, &k, "default", "w", stale.clone(), None, false, "t").unwrap_err();
        assert_eq!(e.code, 409);
        stale["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        stale["status"] = json!({"replicas": 99});
        let got = update(&mut st, &k, "default", "w", stale, None, false, "t").unwrap();
        assert_eq!(got["spec"]["replicas"], 3);
        assert_eq!(got["status"]["replicas"], 1, "status only through /status");
        match request_delete(&mut st, &key, &DeleteOptions::default(), "t") {
            Deleted::Pending(o) => assert!(o["metadata"]["deletionTimestamp"].is_string()),
            Deleted::Now(_) => panic!("a finalizer holds it"),
        }
        let mut cur = st.objects[&key].clone();
        cur["metadata"]["finalizers"] = json!([]);
        update(&mut st, &k, "default", "w", cur, None, false, "t").unwrap();
        assert!(
            !st.objects.contains_key(&key),
            "gone once the last finalizer is removed"
        );
    }
}
