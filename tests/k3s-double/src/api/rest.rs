//! Resource paths and their verbs: `/api/v1/...` and `/apis/<group>/<version>/...`, get, list,
//! watch, create, update, patch, delete, deletecollection, and the subresources served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::select::{labels_of, FieldSelector, LabelSelector};
use super::{patch, pods, table, watch};
use crate::kinds::{self, KindInfo};
use crate::net::server::{full, HttpResponse};
use crate::objects::{self, Deleted};
use crate::server::Server;
use crate::status::{self, ApiError};
use crate::store::{meta, State};

/// A parsed resource path.
#[derive(Debug)]
pub struct Route {
    pub ki: KindInfo,
    pub version: String,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// `segs` are the path segments after `/api/v1` or `/apis/<g>/<v>`.
pub fn route(
    kinds: &[KindInfo],
    group: &str,
    version: &str,
    segs: &[&str],
) -> Result<Route, ApiError> {
    let find = |plural: &str| -> Result<KindInfo, ApiError> {
        kinds::by_resource(kinds, group, plural)
            .filter(|k| k.versions.iter().any(|v| v == version))
            .cloned()
            .ok_or_else(not_found_path)
    };
    let mk = |ki: KindInfo, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Route {
        ki,
        version: version.to_string(),
        ns: ns.map(str::to_string),
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
    };
    match segs {
        ["namespaces", name, sub] if group.is_empty() && matches!(*sub, "status" | "finalize") => {
            Ok(mk(find("namespaces")?, None, Some(name), Some(sub)))
        }
        ["namespaces", ns, res, rest @ ..] => {
            let ki = find(res)?;
            if !ki.namespaced {
                return Err(not_found_path());
            }
            match rest {
                [] => Ok(mk(ki, Some(ns), None, None)),
                [name] => Ok(mk(ki, Some(ns), Some(name), None)),
                [name, sub] => {
                    if !ki.subresources.iter().any(|s| s == sub) {
                        return Err(not_found_path());
                    }
                    Ok(mk(ki, Some(ns), Some(name), Some(sub)))
                }
                _ => Err(not_found_path()),
            }
        }
        [res] => Ok(mk(find(res)?, None, None, None)),
        [res, name] => {
            let ki = find(res)?;
            if ki.namespaced {
                return Err(not_found_path());
            }
            Ok(mk(ki, None, Some(name), None))
        }
        [res, name, sub] => {
            let ki = find(res)?;
            if ki.namespaced || !ki.subresources.iter().any(|s| s == sub) {
                return Err(not_found_path());
            }
            Ok(mk(ki, None, Some(name), Some(sub)))
        }
        _ => Err(not_found_path()),
    }
}

pub fn error(e: &ApiError) -> HttpResponse {
    full(
        e.code,
        "application/json",
        serde_json::to_vec(&e.to_json()).unwrap_or_default(),
    )
}

fn ok_json(code: u16, v: &Value) -> HttpResponse {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// The object as served at the request's version.
fn served(ki: &KindInfo, version: &str, mut o: Value) -> Value {
    o["apiVersion"] = json!(if ki.group.is_empty() {
        version.to_string()
    } else {
        format!("{}/{version}", ki.group)
    });
    o["kind"] = json!(ki.kind);
    o
}

/// A request as the REST layer sees it.
pub struct Call {
    pub method: String,
    pub query: HashMap<String, String>,
    pub accept: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The node the request came in on (for the double's event log).
    pub origin: String,
}

impl Call {
    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }
    fn body_json(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        if self
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            return super::proto::decode(&self.body).map_err(|e| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the k3s double cannot decode this protobuf body: {e}"),
                )
            });
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&self.body) {
            return Ok(v);
        }
        serde_yaml::from_slice::<serde_yaml::Value>(&self.body)
            .ok()
            .and_then(|y| serde_json::to_value(y).ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "the object provided is unrecognized (must be of type JSON or YAML)",
                )
            })
    }
}

fn selectors(
    ki: &KindInfo,
    q: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let l = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let f = FieldSelector::parse(
        &ki.kind,
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
    )
    .map_err(ApiError::bad_request)?;
    Ok((l, f))
}

fn list_items(st: &State, r: &Route, l: &LabelSelector, f: &FieldSelector) -> Vec<Value> {
    let ns = if r.ki.namespaced {
        r.ns.as_deref()
    } else {
        None
    };
    st.list(&r.ki.group, &r.ki.kind, ns)
        .into_iter()
        .filter(|o| l.matches(labels_of(o)) && f.matches(o))
        .cloned()
        .collect()
}

/// Reads run on the state as it is; writes run the controllers at once (as a real cluster's
/// react within milliseconds) and commit.
pub async fn handle(srv: Arc<Server>, r: Route, c: Call) -> HttpResponse {
    let method = c.method.as_str();
    let name = r.name.clone();
    match (method, name.as_deref(), r.sub.as_deref()) {
        ("GET", None, None) => {
            let (l, f) = match selectors(&r.ki, &c.query) {
                Ok(s) => s,
                Err(e) => return error(&e),
            };
            let is_watch = c
                .query
                .get("watch")
                .is_some_and(|w| w == "true" || w == "1");
            if is_watch {
                let from = c
                    .query
                    .get("resourceVersion")
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v > 0);
                let timeout = c
                    .query
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1800));
                return watch::start(
                    srv,
                    watch::Watch {
                        ns: r.ns.clone(),
                        version: r.version.clone(),
                        ki: r.ki,
                        labels: l,
                        fields: f,
                        from,
                        timeout,
                        bookmarks: c
                            .query
                            .get("allowWatchBookmarks")
                            .is_some_and(|b| b == "true"),
                        as_table: table::wants_table(&c.accept),
                    },
                );
            }
            let st = srv.state.lock().expect("state lock");
            let items = list_items(&st, &r, &l, &f);
            let rv = st.current_rv();
            drop(st);
            if table::wants_table(&c.accept) {
                return ok_json(
                    200,
                    &table::table(
                        &r.ki,
                        &items,
                        Some(rv),
                        c.query.get("includeObject").is_some_and(|i| i == "Object"),
                    ),
                );
            }
            let builtin = kinds::builtin()
                .iter()
                .any(|k| k.kind == r.ki.kind && k.group == r.ki.group);
            let items: Vec<Value> = items
                .into_iter()
                .map(|o| {
                    let mut o = served(&r.ki, &r.version, o);
                    if builtin {
                        // Typed lists from the apiserver carry no kind/apiVersion per item.
                        if let Some(m) = o.as_object_mut() {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                    }
                    o
                })
                .collect();
            let list = json!({
                "kind": format!("{}List", r.ki.kind),
                "apiVersion": served(&r.ki, &r.version, json!({}))["apiVersion"],
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            });
            ok_json(200, &list)
        }
        ("GET", Some(n), sub) => {
            let st = srv.state.lock().expect("state lock");
            let ns = r.ns.as_deref().unwrap_or("");
            if sub == Some("log") {
                return match pods::log(&st, &r.ki, ns, n, &c.query) {
                    Ok(text) => full(200, "text/plain", text),
                    Err(e) => error(&e),
                };
            }
            if sub == Some("scale") {
                return error(&ApiError::method_not_allowed(
                    "the k3s double does not serve scale",
                ));
            }
            match st.objects.get(&objects::key(&r.ki, ns, n)) {
                None => error(&ApiError::not_found(&r.ki, n)),
                Some(o) => {
                    if table::wants_table(&c.accept) {
                        ok_json(
                            200,
                            &table::table(&r.ki, std::slice::from_ref(o), None, false),
                        )
                    } else {
                        ok_json(200, &served(&r.ki, &r.version, o.clone()))
                    }
                }
            }
        }
        _ => write(srv, r, c).await,
    }
}

async fn write(srv: Arc<Server>, r: Route, c: Call) -> HttpResponse {
    let body = match c.body_json() {
        Ok(b) => b,
        Err(e) => return error(&e),
    };
    let mut st = srv.state.lock().expect("state lock");
    let result = write_locked(&mut st, &r, &c, body);
    if st.dirty {
        srv.tick_controllers(&mut st);
    }
    srv.commit(&mut st);
    match result {
        Ok((code, v)) => ok_json(code, &v),
        Err(e) => error(&e),
    }
}

fn write_locked(
    st: &mut State,
    r: &Route,
    c: &Call,
    body: Value,
) -> Result<(u16, Value), ApiError> {
    let ns = r.ns.as_deref().unwrap_or("");
    let origin = c.origin.as_str();
    let dry = c.dry_run();
    match (c.method.as_str(), r.name.as_deref(), r.sub.as_deref()) {
        ("POST", None, None) => {
            let o = objects::create(st, &r.ki, r.ns.as_deref(), body, dry, origin)?;
            Ok((201, served(&r.ki, &r.version, o)))
        }
        ("POST", Some(n), Some("eviction")) => {
            let s = pods::evict(st, &r.ki, ns, n, &body, origin)?;
            Ok((201, s))
        }
        ("PUT", Some(n), sub) => {
            let sub = match sub {
                Some("finalize") => {
                    // Namespaces: only spec.finalizers changes here.
                    let k = objects::key(&r.ki, ns, n);
                    if !st.objects.contains_key(&k) {
                        return Err(ApiError::not_found(&r.ki, n));
                    }
                    let fins = body
                        .pointer("/spec/finalizers")
                        .cloned()
                        .unwrap_or(json!([]));
                    st.update(&k, |o| o["spec"]["finalizers"] = fins);
                    let o = st.objects.get(&k).cloned().unwrap_or(Value::Null);
                    return Ok((200, served(&r.ki, &r.version, o)));
                }
                other => other,
            };
            let o = objects::update(st, &r.ki, ns, n, body, sub, dry, origin)?;
            Ok((200, served(&r.ki, &r.version, o)))
        }
        ("PATCH", Some(n), sub) => {
            let k = objects::key(&r.ki, ns, n);
            let is_apply = c.content_type.starts_with("application/apply-patch");
            let Some(cur) = st.objects.get(&k).cloned() else {
                if is_apply && sub.is_none() {
                    // Server-side apply creates what does not exist.
                    let mut o = body;
                    o["metadata"]["name"] = json!(n);
                    let created = objects::create(st, &r.ki, r.ns.as_deref(), o, dry, origin)?;
                    return Ok((201, served(&r.ki, &r.version, created)));
                }
                return Err(ApiError::not_found(&r.ki, n));
            };
            let mut next = cur.clone();
            let ct = c.content_type.split(';').next().unwrap_or("").trim();
            match ct {
                "application/json-patch+json" => {
                    patch::json_patch(&mut next, &body).map_err(|e| ApiError::new(422, "Invalid", e))?
                }
                "application/merge-patch+json" => patch::merge(&mut next, &body),
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                    if c.query.get("fieldManager").is_none_or(|f| f.is_empty()) {
                        return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requires fieldManager to be set"));
                    }
                    patch::merge(&mut next, &body)
                }
                "application/strategic-merge-patch+json" => {
                    let builtin = kinds::builtin().iter().any(|k| k.kind == r.ki.kind && k.group == r.ki.group);
                    if !builtin {
                        return Err(ApiError::new(415, "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"));
                    }
                    patch::strategic(&r.ki.kind, &mut next, &body).map_err(|e| ApiError::new(422, "Invalid", e))?
                }
                other => {
                    return Err(ApiError::new(415, "UnsupportedMediaType", format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                    )))
                }
            }
            // The patch's resourceVersion (if any) is a precondition; otherwise none.
            let want_rv = body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            match want_rv {
                Some(rv) => next["metadata"]["resourceVersion"] = json!(rv),
                None => {
                    if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                }
            }
            let o = objects::update(st, &r.ki, ns, n, next, sub, dry, origin)?;
            Ok((200, served(&r.ki, &r.version, o)))
        }
        ("DELETE", Some(n), None) => {
            let mut opts = pods::delete_options(&body);
            if let Some(g) = c
                .query
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse().ok())
            {
                opts.grace_seconds = Some(g);
            }
            if let Some(p) = c.query.get("propagationPolicy") {
                opts.propagation = Some(p.clone());
            }
            opts.dry_run |= dry;
            match objects::delete(st, &r.ki, ns, n, &opts, origin)? {
                Deleted::Now(o) => Ok((
                    200,
                    status::success({
                        let mut d = json!({"name": n, "kind": r.ki.plural, "uid": meta(&o, "uid")});
                        if !r.ki.group.is_empty() {
                            d["group"] = json!(r.ki.group);
                        }
                        d
                    }),
                )),
                Deleted::Pending(o) => Ok((200, served(&r.ki, &r.version, o))),
            }
        }
        ("DELETE", None, None) => {
            let (l, f) = selectors(&r.ki, &c.query)?;
            let opts = pods::delete_options(&body);
            let items = list_items(st, r, &l, &f);
            let mut out = Vec::new();
            for o in items {
                let ons = meta(&o, "namespace").to_string();
                if let Ok(d) = objects::delete(st, &r.ki, &ons, meta(&o, "name"), &opts, origin) {
                    out.push(match d {
                        Deleted::Now(o) | Deleted::Pending(o) => served(&r.ki, &r.version, o),
                    });
                }
            }
            Ok((
                200,
                json!({"kind": format!("{}List", r.ki.kind), "apiVersion": served(&r.ki, &r.version, json!({}))["apiVersion"],
                "metadata": {"resourceVersion": st.current_rv().to_string()}, "items": out}),
            ))
        }
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_to_routes() {
        let all = kinds::builtin();
        let r = route(
            &all,
            "",
            "v1",
            &["namespaces", "kube-system", "pods", "p", "eviction"],
        )
        .unwrap();
        assert_eq!(
            (
                r.ki.kind.as_str(),
                r.ns.as_deref(),
                r.name.as_deref(),
                r.sub.as_deref()
            ),
            ("Pod", Some("kube-system"), Some("p"), Some("eviction"))
        );
        let r = route(&all, "", "v1", &["namespaces", "prod"]).unwrap();
        assert_eq!(
            (r.ki.kind.as_str(), r.name.as_deref()),
            ("Namespace", Some("prod"))
        );
        let r = route(&all, "", "v1", &["namespaces"]).unwrap();
        assert_eq!(r.ki.kind, "Namespace");
        let r = route(&all, "", "v1", &["nodes", "w1"]).unwrap();
        assert_eq!(
            (r.ki.kind.as_str(), r.name.as_deref()),
            ("Node", Some("w1"))
        );
        let r = route(&all, "", "v1", &["namespaces", "x", "status"]).unwrap();
        assert_eq!(
            (r.ki.kind.as_str(), r.name.as_deref(), r.sub.as_deref()),
            ("Namespace", Some("x"), Some("status"))
        );
        assert!(route(&all, "apps", "v1", &["widgets"]).is_err());
        let r = route(&all, "apps", "v1", &["deployments"]).unwrap();
        assert_eq!(r.ns, None);
    }
}
