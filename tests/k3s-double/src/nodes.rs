//! Node registration, the node-password rule, labels and taints.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::store::{meta, obj_key, State};
use crate::util;

pub const PASSWORD_REJECTED: &str = "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try enabling a unique node name with the --with-node-id flag";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub password: String,
    pub role: String,
    pub labels: Vec<String>,
    pub taints: Vec<String>,
    pub internal_ip: String,
    #[serde(default)]
    pub external_ip: Option<String>,
    pub etcd: bool,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Map<String, Value>,
    pub version: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub os_image: String,
    /// etcd member name (`<node>-<8hex>`) for servers with embedded etcd.
    #[serde(default)]
    pub member: String,
}

const KUBELET_ALLOWED: &[&str] = &[
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// The kubelet's check of `--node-labels`: restricted kubernetes.io/k8s.io labels fail startup.
pub fn check_kubelet_labels(labels: &[String]) -> Result<(), String> {
    let mut bad = Vec::new();
    for l in labels {
        let key = l.split_once('=').map(|(k, _)| k).unwrap_or(l);
        let Some((prefix, _)) = key.split_once('/') else {
            continue;
        };
        let ns = prefix.to_lowercase();
        let restricted = ns == "kubernetes.io"
            || ns.ends_with(".kubernetes.io")
            || ns == "k8s.io"
            || ns.ends_with(".k8s.io");
        if !restricted {
            continue;
        }
        let allowed_prefix = ns == "kubelet.kubernetes.io"
            || ns.ends_with(".kubelet.kubernetes.io")
            || ns == "node.kubernetes.io"
            || ns.ends_with(".node.kubernetes.io");
        if allowed_prefix || KUBELET_ALLOWED.contains(&key) {
            continue;
        }
        bad.push(key.to_string());
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{}]\n--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io) or be in the specifically allowed set (beta.kubernetes.io/arch, beta.kubernetes.io/instance-type, beta.kubernetes.io/os, failure-domain.beta.kubernetes.io/region, failure-domain.beta.kubernetes.io/zone, kubernetes.io/arch, kubernetes.io/hostname, kubernetes.io/os, node.kubernetes.io/instance-type, topology.kubernetes.io/region, topology.kubernetes.io/zone)",
        bad.join(" ")
    ))
}

/// `key=value:Effect` or `key:Effect`.
pub fn parse_taint(s: &str) -> Option<Value> {
    let (kv, effect) = s.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (k, v) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kv, None),
    };
    if k.is_empty() {
        return None;
    }
    let mut t = json!({"key": k, "effect": effect});
    if let Some(v) = v {
        t["value"] = json!(v);
    }
    Some(t)
}

pub fn password_hash(pw: &str) -> String {
    // Real k3s stores an scrypt hash; a salted sha256 keeps the same contract here.
    format!(
        "$sha256$k3s-double${}",
        util::sha256_hex(format!("k3s-double:{pw}").as_bytes())
    )
}

fn secret_name(node: &str) -> String {
    format!("{}.node-password.k3s", node.to_lowercase())
}

/// Checks the node password against the stored secret. Err = k3s's rejection message.
pub fn check_password(st: &State, name: &str, pw: &str) -> Result<(), String> {
    if let Some(sec) = st.get("", "Secret", "kube-system", &secret_name(name)) {
        let stored = sec
            .pointer("/data/hash")
            .and_then(Value::as_str)
            .unwrap_or("");
        if stored != b64(&password_hash(pw)) {
            return Err(PASSWORD_REJECTED.to_string());
        }
    }
    Ok(())
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn split_label(l: &str) -> (String, String) {
    match l.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (l.to_string(), String::new()),
    }
}

/// Registers a node or re-applies its node-labels. Returns Err with the rejection message.
pub fn register(st: &mut State, info: &NodeInfo, origin: &str) -> Result<bool, String> {
    check_password(st, &info.name, &info.password)?;
    let key = obj_key("", "Node", "", &info.name);
    let now = util::now_rfc3339();
    let created = !st.objects.contains_key(&key);
    if created {
        let mut labels = Map::new();
        let arch = if info.arch.is_empty() {
            "amd64"
        } else {
            &info.arch
        };
        for (k, v) in [
            ("beta.kubernetes.io/arch", arch),
            ("beta.kubernetes.io/instance-type", "k3s"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch),
            ("kubernetes.io/hostname", info.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("node.kubernetes.io/instance-type", "k3s"),
        ] {
            labels.insert(k.into(), json!(v));
        }
        if info.role == "server" {
            labels.insert(
                "node-role.kubernetes.io/control-plane".into(),
                json!("true"),
            );
            if info.etcd {
                labels.insert("node-role.kubernetes.io/etcd".into(), json!("true"));
            }
        }
        for l in &info.labels {
            let (k, v) = split_label(l);
            labels.insert(k, json!(v));
        }
        let taints: Vec<Value> = info.taints.iter().filter_map(|t| parse_taint(t)).collect();
        let mut spec = json!({
            "podCIDR": "10.42.0.0/24",
            "podCIDRs": ["10.42.0.0/24"],
            "providerID": format!("k3s://{}", info.name),
        });
        if !taints.is_empty() {
            spec["taints"] = json!(taints);
        }
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": info.name, "labels": labels, "annotations": {}},
            "spec": spec,
            "status": {
                "addresses": addresses(info),
                "allocatable": {"cpu": "2", "ephemeral-storage": "19316009748", "memory": "3911468Ki", "pods": "110"},
                "capacity": {"cpu": "2", "ephemeral-storage": "19856500Ki", "memory": "3911468Ki", "pods": "110"},
                "conditions": conditions("True", "KubeletReady", "kubelet is posting ready status", &now),
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "architecture": arch,
                    "bootID": crate::store::new_uid(),
                    "containerRuntimeVersion": "containerd://2.1.5-k3s1",
                    "kernelVersion": info.kernel,
                    "kubeProxyVersion": info.version,
                    "kubeletVersion": info.version,
                    "machineID": util::random_hex(16),
                    "operatingSystem": "linux",
                    "osImage": info.os_image,
                    "systemUUID": crate::store::new_uid(),
                }
            }
        });
        st.put(node);
        let uid = meta(st.get("", "Node", "", &info.name).expect("just put"), "uid").to_string();
        st.put(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "k3s.cattle.io/node-password",
            "immutable": true,
            "metadata": {
                "name": secret_name(&info.name),
                "namespace": "kube-system",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": info.name, "uid": uid}],
            },
            "data": {"hash": b64(&password_hash(&info.password))},
        }));
        st.event(
            origin,
            "node-registered",
            json!({"name": info.name, "role": info.role, "labels": info.labels, "taints": info.taints}),
        );
        st.event(origin, "node-ready", json!({"name": info.name}));
        if !info.taints.is_empty() {
            st.event(
                origin,
                "taint",
                json!({"name": info.name, "taints": info.taints, "source": "registration"}),
            );
        }
    } else {
        // Mutable node-labels: add/update on every start, never remove.
        let mut changed = Vec::new();
        st.update(&key, |node| {
            if let Some(labels) = node
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                for l in &info.labels {
                    let (k, v) = split_label(l);
                    if labels.get(&k).and_then(Value::as_str) != Some(v.as_str()) {
                        labels.insert(k, json!(v));
                        changed.push(l.clone());
                    }
                }
            }
        });
        if !changed.is_empty() {
            st.event(
                origin,
                "label",
                json!({"name": info.name, "labels": changed, "source": "node-label"}),
            );
        }
    }
    // Annotations and addresses k3s keeps current on every start.
    st.update(&key, |node| {
        if let Some(ann) = node
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            ann.insert("k3s.io/hostname".into(), json!(info.name));
            ann.insert("k3s.io/internal-ip".into(), json!(info.internal_ip));
            if let Some(ext) = &info.external_ip {
                ann.insert("k3s.io/external-ip".into(), json!(ext));
            }
            ann.insert(
                "k3s.io/node-args".into(),
                json!(serde_json::to_string(&info.args).unwrap_or_default()),
            );
            ann.insert(
                "k3s.io/node-env".into(),
                json!(serde_json::to_string(&info.env).unwrap_or_default()),
            );
            ann.insert(
                "k3s.io/node-config-hash".into(),
                json!(
                    util::sha256_hex(format!("{:?}{:?}", info.args, info.env).as_bytes())[..52]
                        .to_uppercase()
                ),
            );
            ann.insert("node.alpha.kubernetes.io/ttl".into(), json!("0"));
            ann.insert(
                "volumes.kubernetes.io/controller-managed-attach-detach".into(),
                json!("true"),
            );
            if info.etcd {
                ann.insert(
                    "etcd.k3s.cattle.io/node-name".into(),
                    json!(if info.member.is_empty() {
                        &info.name
                    } else {
                        &info.member
                    }),
                );
                ann.insert(
                    "etcd.k3s.cattle.io/node-address".into(),
                    json!(info.internal_ip),
                );
            }
        }
        node["status"]["nodeInfo"]["kubeletVersion"] = json!(info.version);
        node["status"]["nodeInfo"]["kubeProxyVersion"] = json!(info.version);
        node["status"]["addresses"] = addresses(info);
    });
    Ok(created)
}

/// `status.addresses` as k3s's cloud provider sets them (`pkg/cloudprovider/instances.go`).
fn addresses(info: &NodeInfo) -> Value {
    let mut a = vec![json!({"type": "InternalIP", "address": info.internal_ip})];
    if let Some(ext) = &info.external_ip {
        a.push(json!({"type": "ExternalIP", "address": ext}));
    }
    a.push(json!({"type": "Hostname", "address": info.name}));
    json!(a)
}

pub fn conditions(ready: &str, reason: &str, msg: &str, now: &str) -> Value {
    let mut c = vec![];
    for (t, r, m) in [
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        let status = if ready == "Unknown" {
            "Unknown"
        } else {
            "False"
        };
        let (r, m) = if ready == "Unknown" {
            ("NodeStatusUnknown", "Kubelet stopped posting node status.")
        } else {
            (r, m)
        };
        c.push(
            json!({"type": t, "status": status, "reason": r, "message": m,
            "lastHeartbeatTime": now, "lastTransitionTime": now}),
        );
    }
    c.push(
        json!({"type": "Ready", "status": ready, "reason": reason, "message": msg,
        "lastHeartbeatTime": now, "lastTransitionTime": now}),
    );
    json!(c)
}

pub fn ready_status(node: &Value) -> &str {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("Unknown")
}

pub fn is_ready(node: &Value) -> bool {
    ready_status(node) == "True"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, pw: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            password: pw.into(),
            role: "agent".into(),
            labels: vec!["node.role=database".into()],
            taints: vec!["dedicated=db:NoSchedule".into()],
            internal_ip: "10.0.0.2".into(),
            version: "v1.36.3+k3s1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn password_rule_and_labels() {
        let mut st = State::default();
        assert!(register(&mut st, &info("w1", "p1"), "w1").unwrap());
        let n = st.get("", "Node", "", "w1").unwrap();
        assert_eq!(n.pointer("/metadata/labels/node.role").unwrap(), "database");
        assert_eq!(n.pointer("/spec/taints/0/key").unwrap(), "dedicated");
        assert_eq!(
            register(&mut st, &info("w1", "other"), "w1").unwrap_err(),
            PASSWORD_REJECTED
        );
        // Restart with a new label and no taints: label added, taint kept.
        let mut i = info("w1", "p1");
        i.labels = vec!["tier=gold".into()];
        i.taints.clear();
        assert!(!register(&mut st, &i, "w1").unwrap());
        let n = st.get("", "Node", "", "w1").unwrap();
        assert_eq!(n.pointer("/metadata/labels/node.role").unwrap(), "database");
        assert_eq!(n.pointer("/metadata/labels/tier").unwrap(), "gold");
        assert!(n.pointer("/spec/taints/0").is_some());
        st.remove(&obj_key("", "Node", "", "w1"));
        let secret = obj_key("", "Secret", "kube-system", "w1.node-password.k3s");
        st.remove(&secret);
        assert!(register(&mut st, &info("w1", "other"), "w1").unwrap());
    }

    #[test]
    fn kubelet_label_check() {
        assert!(
            check_kubelet_labels(&["node.role=db".into(), "node.kubernetes.io/x=1".into()]).is_ok()
        );
        let e = check_kubelet_labels(&["node-role.kubernetes.io/worker=true".into()]).unwrap_err();
        assert!(e.starts_with("unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [node-role.kubernetes.io/worker]"));
    }

    #[test]
    fn taints_parse() {
        assert_eq!(
            parse_taint("a=b:NoSchedule").unwrap(),
            json!({"key":"a","value":"b","effect":"NoSchedule"})
        );
        assert_eq!(
            parse_taint("a:NoExecute").unwrap(),
            json!({"key":"a","effect":"NoExecute"})
        );
        assert!(parse_taint("a=b").is_none());
    }
}
