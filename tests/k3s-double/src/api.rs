//! Server-side object semantics shared by kubectl, the deploy controller and controllers:
//! apply (create/configure/unchanged) and delete with their cluster side effects.

use serde_json::{json, Map, Value};

use crate::kinds::{self, KindInfo};
use crate::store::{kind_of, meta, obj_key, State};
use crate::util;

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl Applied {
    pub fn word(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// Error texts follow kubectl; `source` is the file name kubectl would print.
pub fn resolve_manifest(st: &State, o: &Value, source: &str) -> Result<KindInfo, String> {
    let av = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = kind_of(o);
    let name = meta(o, "name");
    let mut missing = vec![];
    if av.is_empty() {
        missing.push("apiVersion not set");
    }
    if kind.is_empty() {
        missing.push("kind not set");
    }
    if !missing.is_empty() {
        return Err(format!(
            "error: error validating \"{source}\": error validating data: [{}]; if you choose to ignore these errors, turn validation off with --validate=false",
            missing.join(", ")
        ));
    }
    if name.is_empty() {
        return Err(format!(
            "error: error when retrieving current configuration of:\nResource: \"{kind}\", Name: \"\", Namespace: \"\"\nfrom server for: \"{source}\": resource name may not be empty"
        ));
    }
    let all = st.kinds();
    kinds::by_kind(&all, av, kind).cloned().ok_or_else(|| {
        format!(
            "error: resource mapping not found for name: \"{name}\" namespace: \"{}\" from \"{source}\": no matches for kind \"{kind}\" in version \"{av}\"\nensure CRDs are installed first",
            meta(o, "namespace")
        )
    })
}

fn initial_status(o: &mut Value) {
    match kind_of(o) {
        "CustomResourceDefinition" => {
            let now = util::now_rfc3339();
            let names = o.pointer("/spec/names").cloned().unwrap_or(json!({}));
            o["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
                "storedVersions": [o.pointer("/spec/versions/0/name").cloned().unwrap_or(json!("v1"))],
            });
        }
        "Namespace" => {
            o["status"] = json!({"phase": "Active"});
            let name = meta(o, "name").to_string();
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        _ => {}
    }
}

fn merge_map(cur: &mut Value, old_applied: Option<&Value>, new: Option<&Value>) {
    let cur_map = match cur.as_object_mut() {
        Some(m) => m,
        None => {
            *cur = json!({});
            cur.as_object_mut().expect("object")
        }
    };
    if let Some(Value::Object(old)) = old_applied {
        for k in old.keys() {
            if new.and_then(|n| n.get(k)).is_none() {
                cur_map.remove(k);
            }
        }
    }
    if let Some(Value::Object(n)) = new {
        for (k, v) in n {
            cur_map.insert(k.clone(), v.clone());
        }
    }
}

/// kubectl-apply-like upsert. The manifest's namespace is already resolved by the caller.
pub fn apply_object(
    st: &mut State,
    mut o: Value,
    ki: &KindInfo,
    ns: &str,
) -> Result<Applied, String> {
    let name = meta(&o, "name").to_string();
    if ki.namespaced {
        if !st.namespace_exists(ns) {
            return Err(format!("namespaces \"{ns}\" not found"));
        }
        o["metadata"]["namespace"] = json!(ns);
    } else if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("namespace");
    }
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(Value::Object(a)) = m.get_mut("annotations") {
            a.remove(LAST_APPLIED);
        }
    }
    let applied_text = serde_json::to_string(&o).unwrap_or_default();
    let key = obj_key(
        &ki.group,
        &ki.kind,
        if ki.namespaced { ns } else { "" },
        &name,
    );
    let existing = st.objects.get(&key).cloned();
    let result = match existing {
        None => {
            let mut new = o.clone();
            new["metadata"]["annotations"] = {
                let mut a = new
                    .pointer("/metadata/annotations")
                    .cloned()
                    .unwrap_or(json!({}));
                a[LAST_APPLIED] = json!(applied_text.clone() + "\n");
                a
            };
            initial_status(&mut new);
            st.put(new);
            Applied::Created
        }
        Some(cur) => {
            let old_text = cur
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    LAST_APPLIED.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_end()
                .to_string();
            if old_text == applied_text {
                return Ok(Applied::Unchanged);
            }
            let old: Value = serde_json::from_str(&old_text).unwrap_or(json!({}));
            let mut next = cur.clone();
            let next_map = next.as_object_mut().expect("object");
            for (k, v) in o.as_object().cloned().unwrap_or_default() {
                if k != "metadata" && k != "status" {
                    next_map.insert(k, v);
                }
            }
            if let Some(old_map) = old.as_object() {
                for k in old_map.keys() {
                    if k != "metadata" && k != "status" && o.get(k).is_none() {
                        next_map.remove(k);
                    }
                }
            }
            for field in ["labels", "annotations"] {
                let mut cur_f = next
                    .pointer(&format!("/metadata/{field}"))
                    .cloned()
                    .unwrap_or(json!({}));
                merge_map(
                    &mut cur_f,
                    old.pointer(&format!("/metadata/{field}")),
                    o.pointer(&format!("/metadata/{field}")),
                );
                next["metadata"][field] = cur_f;
            }
            next["metadata"]["annotations"][LAST_APPLIED] = json!(applied_text + "\n");
            st.put(next);
            Applied::Configured
        }
    };
    Ok(result)
}

/// Deletes an object with the side effects the cluster would run.
pub fn delete_object(st: &mut State, key: &str, origin: &str) -> Option<Value> {
    let obj = st.objects.get(key).cloned()?;
    match kind_of(&obj) {
        "Node" => {
            let name = meta(&obj, "name").to_string();
            st.delete(key);
            // Pods bound to a deleted node are garbage-collected (then rescheduled).
            let pods: Vec<String> = st
                .objects
                .iter()
                .filter(|(_, p)| {
                    kind_of(p) == "Pod"
                        && p.pointer("/spec/nodeName").and_then(Value::as_str)
                            == Some(name.as_str())
                })
                .map(|(k, _)| k.clone())
                .collect();
            for p in pods {
                st.delete(&p);
            }
            st.event(origin, "node-deleted", json!({"name": name}));
            if let Some(pos) = st.members.iter().position(|m| m.node == name) {
                let m = st.members.remove(pos);
                st.removed_members.push(m.name.clone());
                st.event(
                    origin,
                    "etcd-member-removed",
                    json!({"member": m.name, "name": name, "address": m.address}),
                );
            }
        }
        "Namespace" => {
            let ns = meta(&obj, "name").to_string();
            let inner: Vec<String> = st
                .objects
                .iter()
                .filter(|(_, o)| meta(o, "namespace") == ns)
                .map(|(k, _)| k.clone())
                .collect();
            for k in inner {
                delete_object(st, &k, origin);
            }
            st.delete(key);
        }
        "HelmChart" => {
            crate::controllers::on_helmchart_deleted(st, &obj, origin);
            st.delete(key);
        }
        _ => {
            st.delete(key);
        }
    }
    Some(obj)
}

/// `k=v,k!=v,k,!k` label selectors.
pub fn selector_matches(sel: &str, labels: Option<&Map<String, Value>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    sel.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k.trim()) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(term).is_some()
            }
        })
}

pub fn labels_of(o: &Value) -> Option<&Map<String, Value>> {
    o.pointer("/metadata/labels").and_then(Value::as_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_create_configure_unchanged() {
        let mut st = State::default();
        st.ensure_namespace("default");
        let all = kinds::builtin();
        let ki = kinds::by_kind(&all, "v1", "ConfigMap").unwrap().clone();
        let cm = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","labels":{"a":"1"}},"data":{"k":"v"}});
        assert_eq!(
            apply_object(&mut st, cm.clone(), &ki, "default").unwrap(),
            Applied::Created
        );
        assert_eq!(
            apply_object(&mut st, cm, &ki, "default").unwrap(),
            Applied::Unchanged
        );
        let cm2 =
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"w"}});
        assert_eq!(
            apply_object(&mut st, cm2, &ki, "default").unwrap(),
            Applied::Configured
        );
        let o = st.get("", "ConfigMap", "default", "x").unwrap();
        assert_eq!(o.pointer("/data/k").unwrap(), "w");
        assert!(o.pointer("/metadata/labels/a").is_none());
        assert!(apply_object(
            &mut st,
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"y"}}),
            &ki,
            "nope"
        )
        .is_err());
    }

    #[test]
    fn selectors() {
        let l = json!({"a":"1","b":"2"});
        let m = l.as_object();
        assert!(selector_matches("a=1", m));
        assert!(selector_matches("a=1,b", m));
        assert!(!selector_matches("a!=1", m));
        assert!(selector_matches("!c", m));
        assert!(!selector_matches("c", m));
    }
}
