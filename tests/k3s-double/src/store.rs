//! The replicated cluster state: objects (as the apiserver stores them, each write with a new
//! resourceVersion), recent deletions for watches, the event log, etcd members, bootstrap data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::kinds::{self, KindInfo};
use crate::util;

/// What k3s keeps in its encrypted bootstrap data (`pkg/bootstrap`): the CAs and passwords.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Bootstrap {
    pub server_ca_crt: String,
    pub server_ca_key: String,
    pub client_ca_crt: String,
    pub client_ca_key: String,
    /// Password of user `server` (the server token's secret part).
    pub server_password: String,
    /// Password of user `node` (agent token); equals server_password when unset.
    pub agent_password: String,
    /// The datastore's timestamp of these files (unix seconds): the mtime of the files the
    /// first server stored them from (k3s `pkg/bootstrap/bootstrap.go` ReadFromDisk), which
    /// every file written from the datastore gets too (:79, `os.Chtimes`).
    #[serde(default)]
    pub stamp: i64,
}

impl Bootstrap {
    pub fn server_ca(&self) -> crate::pki::Ca {
        crate::pki::Ca {
            cert_pem: self.server_ca_crt.clone(),
            key_pem: self.server_ca_key.clone(),
        }
    }
    pub fn client_ca(&self) -> crate::pki::Ca {
        crate::pki::Ca {
            cert_pem: self.client_ca_crt.clone(),
            key_pem: self.client_ca_key.clone(),
        }
    }
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

/// A deleted object, kept a while so a watch started at an older resourceVersion sees it go.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tombstone {
    pub rv: u64,
    pub key: String,
    pub obj: Value,
}

const TOMBSTONES_KEPT: usize = 2000;

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
    /// resourceVersion at which each object was created (ADDED vs MODIFIED in watches).
    #[serde(default)]
    pub created_rv: BTreeMap<String, u64>,
    #[serde(default)]
    pub tombstones: Vec<Tombstone>,
    pub events: Vec<Event>,
    pub members: Vec<Member>,
    /// Members removed from the cluster; their k3s exits when it sees this.
    #[serde(default)]
    pub removed_members: Vec<String>,
    /// Container logs by `ns/pod`.
    #[serde(default)]
    pub logs: BTreeMap<String, String>,
    /// Crash-looping containers by `ns/pod`: when the kubelet starts the container again
    /// (CrashLoopBackOff: 10 s doubling to 5 min, kubelet `pkg/kubelet/kubelet.go`
    /// `MaxContainerBackOff`).
    #[serde(default)]
    pub restarts: BTreeMap<String, i64>,
    /// The `crash` test knob: per workload (`ns/Kind/name`) named there, the pod templates it
    /// ran when the knob appeared; pods of any other template crash.
    #[serde(default)]
    pub crash_baseline: BTreeMap<String, Vec<String>>,
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

pub fn rv_of(o: &Value) -> u64 {
    meta(o, "resourceVersion").parse().unwrap_or(0)
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

/// Objects whose `metadata.generation` the apiserver keeps (it bumps on spec changes): those
/// with a spec, except the core kinds whose strategies do not track it.
fn has_generation(o: &Value) -> bool {
    o.get("spec").is_some()
        && !matches!(
            kind_of(o),
            "Node"
                | "Pod"
                | "Namespace"
                | "Service"
                | "PersistentVolume"
                | "PersistentVolumeClaim"
                | "Endpoints"
                | "ResourceQuota"
                | "LimitRange"
                | "ServiceAccount"
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

    pub fn list_cloned(&self, group: &str, kind: &str, ns: Option<&str>) -> Vec<Value> {
        self.list(group, kind, ns).into_iter().cloned().collect()
    }

    pub fn bump_rv(&mut self) -> u64 {
        self.next_rv += 1;
        self.next_rv
    }

    /// The current resourceVersion of the store (what a list returns).
    pub fn current_rv(&self) -> u64 {
        self.next_rv
    }

    /// Stores an object: a new one gets uid, creationTimestamp and generation 1; an existing
    /// one keeps its uid and creationTimestamp. Every call is a write with a new
    /// resourceVersion. Returns true when it was created.
    pub fn put(&mut self, mut o: Value) -> bool {
        let key = key_of(&o);
        let existing = self.objects.get(&key);
        let created = existing.is_none();
        let (uid, ts, gen) = match existing {
            Some(e) => (
                meta(e, "uid").to_string(),
                meta(e, "creationTimestamp").to_string(),
                generation_after(e, &o),
            ),
            None => (
                match meta(&o, "uid") {
                    "" => new_uid(),
                    u => u.to_string(),
                },
                util::now_rfc3339(),
                1,
            ),
        };
        let rv = self.bump_rv();
        let gen_kept = has_generation(&o);
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(ts));
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            if gen_kept {
                m.insert("generation".into(), json!(gen));
            }
        }
        if created {
            self.created_rv.insert(key.clone(), rv);
        }
        self.objects.insert(key, o);
        self.dirty = true;
        created
    }

    /// Changes an object in place; a write (new resourceVersion) only when something changed.
    /// Returns whether it changed.
    pub fn update(&mut self, key: &str, f: impl FnOnce(&mut Value)) -> bool {
        let Some(cur) = self.objects.get(key) else {
            return false;
        };
        let mut next = cur.clone();
        f(&mut next);
        if next == *cur {
            return false;
        }
        let gen = generation_after(cur, &next);
        let gen_kept = has_generation(&next);
        let rv = self.bump_rv();
        if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            if gen_kept {
                m.insert("generation".into(), json!(gen));
            }
        }
        self.objects.insert(key.to_string(), next);
        self.dirty = true;
        true
    }

    /// Replaces an object that exists (same key) with `new`, keeping identity fields.
    pub fn replace(&mut self, key: &str, new: Value) -> bool {
        self.update(key, |o| {
            let keep: Vec<(String, Value)> = ["uid", "creationTimestamp", "generation"]
                .iter()
                .filter_map(|f| {
                    o.pointer(&format!("/metadata/{f}"))
                        .map(|v| (f.to_string(), v.clone()))
                })
                .collect();
            *o = new;
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                for (f, v) in keep {
                    m.insert(f, v);
                }
            }
        })
    }

    /// Removes an object now (the end of a deletion), recording the tombstone.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.bump_rv();
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        self.created_rv.remove(key);
        if kind_of(&obj) == "Pod" {
            let k = format!("{}/{}", meta(&obj, "namespace"), meta(&obj, "name"));
            self.logs.remove(&k);
            self.logs.remove(&format!("{k}#previous"));
            self.restarts.remove(&k);
        }
        self.tombstones.push(Tombstone {
            rv,
            key: key.to_string(),
            obj: obj.clone(),
        });
        if self.tombstones.len() > TOMBSTONES_KEPT {
            let drop = self.tombstones.len() - TOMBSTONES_KEPT;
            self.tombstones.drain(..drop);
        }
        self.dirty = true;
        Some(obj)
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

fn generation_after(old: &Value, new: &Value) -> i64 {
    let g = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if old.get("spec") != new.get("spec") {
        g + 1
    } else {
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_bump_resource_versions_and_deletes_leave_tombstones() {
        let mut s = State::default();
        s.put(json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"d"},"data":{"k":"1"}}));
        let k = obj_key("", "ConfigMap", "d", "a");
        let rv1 = rv_of(&s.objects[&k]);
        assert!(!s.update(&k, |_| {}), "no change, no write");
        assert!(s.update(&k, |o| o["data"]["k"] = json!("2")));
        let rv2 = rv_of(&s.objects[&k]);
        assert!(rv2 > rv1);
        assert_eq!(s.created_rv[&k], rv1);
        let gone = s.remove(&k).unwrap();
        assert!(rv_of(&gone) > rv2);
        assert_eq!(s.tombstones.last().unwrap().key, k);
        s.put(json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"w","namespace":"d"},"spec":{"replicas":1}}));
        let k = obj_key("apps", "Deployment", "d", "w");
        assert_eq!(s.objects[&k]["metadata"]["generation"], 1);
        s.update(&k, |o| o["status"] = json!({"replicas": 1}));
        assert_eq!(
            s.objects[&k]["metadata"]["generation"], 1,
            "status is not spec"
        );
        s.update(&k, |o| o["spec"]["replicas"] = json!(2));
        assert_eq!(s.objects[&k]["metadata"]["generation"], 2);
    }
}
