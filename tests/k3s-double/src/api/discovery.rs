//! Discovery (the legacy documents: `/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`), `/version`
//! and the OpenAPI v3 index kubectl reads to learn that the server validates fields itself.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::kinds::KindInfo;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// (group, versions in preference order) for every group that serves something.
pub fn groups(kinds: &[KindInfo]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for k in kinds {
        let entry = match out.iter_mut().find(|(g, _)| *g == k.group) {
            Some(e) => e,
            None => {
                out.push((k.group.clone(), Vec::new()));
                out.last_mut().expect("just pushed")
            }
        };
        for v in &k.versions {
            if !entry.1.contains(v) {
                entry.1.push(v.clone());
            }
        }
    }
    out
}

pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

pub fn api_group_list(kinds: &[KindInfo]) -> Value {
    let groups: Vec<Value> = groups(kinds)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(kinds: &[KindInfo], group: &str) -> Option<Value> {
    let (_, vs) = groups(kinds).into_iter().find(|(g, _)| g == group)?;
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": versions[0].clone()}),
    )
}

fn subresource(k: &KindInfo, sub: &str) -> Option<Value> {
    let name = format!("{}/{sub}", k.plural);
    let base = json!({"name": name, "singularName": "", "namespaced": k.namespaced});
    let mut r = base;
    match sub {
        "status" => {
            r["kind"] = json!(k.kind);
            r["verbs"] = json!(["get", "patch", "update"]);
        }
        "scale" => {
            r["group"] = json!("autoscaling");
            r["version"] = json!("v1");
            r["kind"] = json!("Scale");
            r["verbs"] = json!(["get", "patch", "update"]);
        }
        "eviction" => {
            r["group"] = json!("policy");
            r["version"] = json!("v1");
            r["kind"] = json!("Eviction");
            r["verbs"] = json!(["create"]);
        }
        "log" => {
            r["kind"] = json!("Pod");
            r["verbs"] = json!(["get"]);
        }
        "finalize" => {
            r["kind"] = json!("Namespace");
            r["verbs"] = json!(["update"]);
        }
        // Not served by the double, so not advertised.
        _ => return None,
    }
    Some(r)
}

pub fn resource_list(kinds: &[KindInfo], group: &str, version: &str) -> Option<Value> {
    let mine: Vec<&KindInfo> = kinds
        .iter()
        .filter(|k| k.group == group && k.versions.iter().any(|v| v == version))
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in mine {
        let mut r = json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": VERBS});
        if !k.short.is_empty() {
            r["shortNames"] = json!(k.short);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        for s in &k.subresources {
            if let Some(sr) = subresource(k, s) {
                resources.push(sr);
            }
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

pub fn version_info() -> Value {
    let v = crate::version();
    let minor = v
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0")
        .to_string();
    json!({
        "major": "1", "minor": minor, "emulationMajor": "1", "emulationMinor": minor,
        "minCompatibilityMajor": "1", "minCompatibilityMinor": minor,
        "gitVersion": v, "gitCommit": crate::util::sha256_hex(v.as_bytes())[..40].to_string(),
        "gitTreeState": "clean", "buildDate": "2026-08-12T00:00:00Z", "goVersion": "go1.24.6",
        "compiler": "gc", "platform": format!("linux/{}", crate::common::os_facts().0),
    })
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// One OpenAPI v3 document per group-version: the PATCH operation of each resource, with the
/// `fieldValidation` parameter (server-side field validation, so kubectl skips its own schema
/// validation: cli-runtime `query_param_verifier_v3.go`). No strategic-merge content type is
/// listed, so kubectl computes strategic patches from its built-in types (apply `patcher.go`).
pub fn openapi_gv(kinds: &[KindInfo], group: &str, version: &str) -> Option<Value> {
    let mut paths = BTreeMap::new();
    for k in kinds
        .iter()
        .filter(|k| k.group == group && k.versions.iter().any(|v| v == version))
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if k.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("{base}/{}/{{name}}", k.plural)
        };
        paths.insert(
            item,
            json!({"patch": {
                "operationId": format!("patch{}", k.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": k.kind},
                "parameters": [
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "requestBody": {"content": {
                    "application/json-patch+json": {"schema": {"type": "object"}},
                    "application/merge-patch+json": {"schema": {"type": "object"}},
                    "application/apply-patch+yaml": {"schema": {"type": "object"}},
                }},
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": crate::version()},
        "paths": paths, "components": {}}),
    )
}

pub fn openapi_root(kinds: &[KindInfo]) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in groups(kinds) {
        for v in vs {
            let doc = openapi_gv(kinds, &g, &v).unwrap_or(Value::Null);
            let hash = crate::util::sha256_hex(doc.to_string().as_bytes()).to_uppercase();
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", &hash[..64])}),
            );
        }
    }
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_is_advertised_as_kubectl_drain_looks_for_it() {
        let all = crate::kinds::builtin();
        let v1 = resource_list(&all, "", "v1").unwrap();
        let ev = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(
            (
                ev["kind"].as_str(),
                ev["group"].as_str(),
                ev["version"].as_str()
            ),
            (Some("Eviction"), Some("policy"), Some("v1"))
        );
        let groups = api_group_list(&all);
        assert!(groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps"));
        assert!(
            openapi_root(&all)["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }
}
