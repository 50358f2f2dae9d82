//! The replicated cluster state: objects, event log, etcd members, bootstrap secrets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::kinds::{self, KindInfo};
use crate::util;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Bootstrap {
    pub ca_crt: String,
    pub ca_key: String,
    pub admin_crt: String,
    pub admin_key: String,
    /// Password of user `server` (the server token's secret part).
    pub server_password: String,
    /// Password of user `node` (agent token); equals server_password when unset.
    pub agent_password: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub node: String,
    pub address: String,
    #[serde(rename = "peerURL")]
    pub peer_url: String,
    #[serde(rename = "clientURL")]
    pub client_url: String,
    /// host:port of the node's supervisor/API (the double's transport).
    pub api: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub ts: String,
    pub node: String,
    pub kind: String,
    pub detail: Value,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Bumped by each new leader, so a restarted server's stale history never wins on `rev`.
    #[serde(default)]
    pub epoch: u64,
    pub rev: u64,
    /// Who wrote `rev`; breaks ties between equal revisions.
    pub writer: String,
    pub cluster_id: String,
    pub bootstrap: Bootstrap,
    pub objects: BTreeMap<String, Value>,
    pub events: Vec<Event>,
    pub members: Vec<Member>,
    /// Members removed from the cluster; their k3s exits when it sees this.
    #[serde(default)]
    pub removed_members: Vec<String>,
    /// Container logs by `ns/pod-or-job`.
    #[serde(default)]
    pub logs: BTreeMap<String, String>,
    pub next_rv: u64,
    /// Set by mutations; cleared when committed. Not persisted meaningfully.
    #[serde(skip)]
    pub dirty: bool,
}

pub fn obj_key(group: &str, kind: &str, ns: &str, name: &str) -> String {
    format!("{group}/{kind}/{ns}/{name}")
}

pub fn meta<'a>(o: &'a Value, field: &str) -> &'a str {
    o.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn api_group(o: &Value) -> &str {
    let av = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    av.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

pub fn kind_of(o: &Value) -> &str {
    o.get("kind").and_then(Value::as_str).unwrap_or("")
}

pub fn key_of(o: &Value) -> String {
    obj_key(
        api_group(o),
        kind_of(o),
        meta(o, "namespace"),
        meta(o, "name"),
    )
}

pub fn new_uid() -> String {
    let h = util::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl State {
    pub fn kinds(&self) -> Vec<KindInfo> {
        let mut all = kinds::builtin();
        for (k, o) in &self.objects {
            if k.starts_with("apiextensions.k8s.io/CustomResourceDefinition/") {
                if let Some(ki) = kinds::from_crd(o) {
                    if !all.iter().any(|x| x.kind == ki.kind && x.group == ki.group) {
                        all.push(ki);
                    }
                }
            }
        }
        all
    }

    pub fn event(&mut self, node: &str, kind: &str, detail: Value) {
        let seq = self.events.last().map(|e| e.seq).unwrap_or(0) + 1;
        self.events.push(Event {
            seq,
            ts: util::now_rfc3339(),
            node: node.to_string(),
            kind: kind.to_string(),
            detail,
        });
        self.dirty = true;
    }

    pub fn get(&self, group: &str, kind: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&obj_key(group, kind, ns, name))
    }

    pub fn get_mut(&mut self, group: &str, kind: &str, ns: &str, name: &str) -> Option<&mut Value> {
        self.dirty = true;
        self.objects.get_mut(&obj_key(group, kind, ns, name))
    }

    pub fn list(&self, group: &str, kind: &str, ns: Option<&str>) -> Vec<&Value> {
        let prefix = match ns {
            Some(ns) => format!("{group}/{kind}/{ns}/"),
            None => format!("{group}/{kind}/"),
        };
        self.objects
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .collect()
    }

    pub fn bump_rv(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    /// Stores an object, filling uid/resourceVersion/creationTimestamp.
    /// Returns true when it was created.
    pub fn put(&mut self, mut o: Value) -> bool {
        let key = key_of(&o);
        let existing = self.objects.get(&key);
        let created = existing.is_none();
        let (uid, ts) = match existing {
            Some(e) => (
                meta(e, "uid").to_string(),
                meta(e, "creationTimestamp").to_string(),
            ),
            None => (new_uid(), util::now_rfc3339()),
        };
        let rv = self.bump_rv();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(ts));
            m.insert("resourceVersion".into(), json!(rv));
        }
        self.objects.insert(key, o);
        self.dirty = true;
        created
    }

    /// Deletes an object and garbage-collects what it owned (ownerReferences).
    pub fn delete(&mut self, key: &str) -> Option<Value> {
        let removed = self.objects.remove(key)?;
        self.dirty = true;
        self.gc();
        Some(removed)
    }

    pub fn gc(&mut self) {
        loop {
            let uids: std::collections::HashSet<String> = self
                .objects
                .values()
                .map(|o| meta(o, "uid").to_string())
                .collect();
            let orphans: Vec<String> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    let refs = o
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    !refs.is_empty()
                        && refs.iter().all(|r| {
                            !uids.contains(r.get("uid").and_then(Value::as_str).unwrap_or(""))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            if orphans.is_empty() {
                break;
            }
            for k in orphans {
                if let Some(o) = self.objects.remove(&k) {
                    if kind_of(&o) == "Pod" {
                        self.logs.remove(&format!(
                            "{}/{}",
                            meta(&o, "namespace"),
                            meta(&o, "name")
                        ));
                    }
                }
            }
            self.dirty = true;
        }
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get("", "Namespace", "", ns).is_some()
    }

    pub fn ensure_namespace(&mut self, ns: &str) {
        if !self.namespace_exists(ns) {
            self.put(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            }));
        }
    }

    /// The double's control ConfigMap `kube-system/k3s-double`, data key split on commas.
    pub fn control_list(&self, key: &str) -> Vec<String> {
        self.get("", "ConfigMap", "kube-system", "k3s-double")
            .and_then(|c| c.pointer(&format!("/data/{key}")))
            .and_then(Value::as_str)
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Newer wins: higher epoch, then revision, then writer name.
    pub fn newer_than(&self, other: &State) -> bool {
        (self.epoch, self.rev, &self.writer) > (other.epoch, other.rev, &other.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_collects_owned_objects() {
        let mut s = State::default();
        s.put(json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}));
        let uid = meta(s.get("", "Node", "", "n1").unwrap(), "uid").to_string();
        s.put(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"n1.node-password.k3s","namespace":"kube-system",
            "ownerReferences":[{"apiVersion":"v1","kind":"Node","name":"n1","uid":uid}]}}));
        s.put(json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"other","namespace":"kube-system"}}));
        assert_eq!(s.list("", "Secret", Some("kube-system")).len(), 2);
        s.delete(&obj_key("", "Node", "", "n1"));
        assert_eq!(s.list("", "Secret", None).len(), 1);
    }
}
