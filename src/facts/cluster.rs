//! Cluster facts: what the API says, read with `k3s kubectl` on one server in the same round
//! trip as its host facts: every Node, the objects add-on health is judged from, and the
//! sealing key Secret when the operator has no backup of it. Parsed by pure functions.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::addons::health::{self, Snapshot};
use crate::addons::sealed_secrets::{self, SealingKey};
use crate::inventory::{K3sVersion, Taint, TaintEffect};

/// The command that reads every Node as JSON (the executor polls it while it waits).
pub const GET_NODES: &str = "k3s kubectl get nodes -o json";

/// A Node as the API shows it (the parts the plan reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub ready: bool,
    /// The kubelet's version as the Node reports it (`v1.36.3+k3s1`).
    pub kubelet_version: String,
    pub unschedulable: bool,
    pub internal_ip: Option<String>,
    /// Every address k3s records for it: `status.addresses` (InternalIP, ExternalIP) and the
    /// `k3s.io/internal-ip` / `k3s.io/external-ip` annotations, comma-separated for dual stack
    /// (k3s pkg/agent/run.go:437-456, pkg/cloudprovider/instances.go:38-108).
    pub addresses: Vec<String>,
}

impl ObservedNode {
    pub fn version(&self) -> Option<K3sVersion> {
        self.kubelet_version.parse().ok()
    }
}

/// What the cluster's API said, through one server.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// The server that answered; `None` when none did (a new cluster, or every server down).
    pub api: Option<String>,
    /// Why the servers asked did not answer, for messages.
    pub unanswered: Vec<String>,
    pub nodes: Vec<ObservedNode>,
    /// The objects add-on health is judged from (when add-ons were asked for).
    pub objects: Option<Snapshot>,
    /// The Sealed Secrets key Secret, when it was asked for and exists.
    pub sealing_key: Option<SealingKey>,
    /// Whether the key Secret was read (it may not exist); when not, nobody may make a key.
    pub sealing_key_read: bool,
    /// The etcd snapshots the cluster records (when they were asked for).
    pub snapshots: Vec<SnapshotFile>,
}

/// An etcd snapshot as k3s records it in an ETCDSnapshotFile (k3s-io/api
/// `k3s.cattle.io/v1/types.go:32-115`; filled by k3s pkg/etcd/snapshot/types.go:234-241).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The file name (`spec.snapshotName`), `.zip` included.
    pub name: String,
    /// `spec.nodeName`: the server holding it; for an S3 copy the server that uploaded it (k3s
    /// pkg/etcd/snapshot/types.go:192-196, pkg/etcd/s3/s3.go:85, :281), or `s3`.
    pub node: String,
    /// A copy in S3: `spec.s3` set, or an `s3://` location (types.go:238-252).
    pub s3: bool,
    /// `file:///...` or `s3://bucket/key`.
    pub location: String,
    pub size: u64,
    /// RFC 3339.
    pub created: String,
    /// The first 12 hex digits of sha256 of the server token it is encrypted with
    /// (annotation `etcd.k3s.cattle.io/snapshot-token-hash`).
    pub token_hash: Option<String>,
}

impl SnapshotFile {
    /// The path on its server, for a local one.
    pub fn path(&self) -> Option<&str> {
        self.location.strip_prefix("file://")
    }

    /// Where it is, for a person: the server's name, or `s3`.
    pub fn place(&self) -> &str {
        if self.s3 {
            "s3"
        } else {
            &self.node
        }
    }
}

/// A Kubernetes Quantity as k3s writes a snapshot's size: `resource.NewQuantity(size,
/// DecimalSI)` (k3s pkg/etcd/snapshot/types.go:190), whose canonical form has an SI suffix
/// (`5062688` stays, `12000` is `12k`); binary suffixes are read too.
fn quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, suffix) = q.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The ETCDSnapshotFile items of a `kubectl get -o json` List.
pub fn parse_snapshots(json: &str) -> Result<Vec<SnapshotFile>, ParseError> {
    let list: List = serde_json::from_str(json)?;
    let s = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut out: Vec<SnapshotFile> = list
        .items
        .iter()
        .filter(|i| i.get("kind").and_then(|k| k.as_str()) == Some("ETCDSnapshotFile"))
        .map(|i| SnapshotFile {
            name: s(i, "/spec/snapshotName"),
            node: s(i, "/spec/nodeName"),
            s3: i.pointer("/spec/s3").is_some_and(|v| !v.is_null())
                || s(i, "/spec/location").starts_with("s3://"),
            location: s(i, "/spec/location"),
            size: match i.pointer("/status/size") {
                Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(serde_json::Value::String(q)) => quantity(q).unwrap_or(0),
                _ => 0,
            },
            created: s(i, "/status/creationTime"),
            token_hash: i
                .pointer("/metadata/annotations/etcd.k3s.cattle.io~1snapshot-token-hash")
                .and_then(|x| x.as_str())
                .map(String::from),
        })
        .collect();
    out.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    Ok(out)
}

impl ClusterFacts {
    pub fn node(&self, name: &str) -> Option<&ObservedNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The script that reads the cluster on a server: `cluster.*` lines, contents base64. It
/// reads, never writes. `addons` adds the add-on health kinds to the one `kubectl get`;
/// `sealing_key` reads the key Secret too.
pub fn query_script(addons: bool, waits: &[String], sealing_key: bool, snapshots: bool) -> String {
    let get = if addons {
        health::get_all_with("nodes,", "--request-timeout=20s", waits)
    } else if snapshots {
        "k3s kubectl get nodes,etcdsnapshotfiles.k3s.cattle.io -o json --request-timeout=20s"
            .to_string()
    } else {
        "k3s kubectl get nodes -A -o json --request-timeout=20s".to_string()
    };
    let key = if sealing_key {
        format!(
            "  if o=$({} --request-timeout=20s 2>/dev/null); then printf 'cluster.key\\t%s\\n' \"$(printf '%s' \"$o\" | base64 -w0)\"; fi\n",
            sealed_secrets::GET_KEY
        )
    } else {
        String::new()
    };
    format!(
        r#"if [ -x /usr/local/bin/k3s ] && systemctl is-active -q k3s 2>/dev/null; then
  if o=$({get} 2>&1); then
    printf 'cluster.objects\t%s\n' "$(printf '%s' "$o" | base64 -w0)"
  else
    printf 'cluster.error\t%s\n' "$(printf '%s' "$o" | tail -n 1 | tr '\t' ' ')"
  fi
{key}else
  printf 'cluster.error\tk3s is not running here\n'
fi
printf 'cluster.end\tok\n'
"#
    )
}

/// What one server's [`query_script`] printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The API answered: the objects (a `kubectl get -o json` List) and, when the key Secret
    /// was read, its JSON (`None` inside: there is none).
    Objects {
        json: String,
        key: Option<Option<String>>,
    },
    /// It did not, and why.
    NoApi(String),
}

/// Parse the output of [`query_script`].
pub fn parse_answer(out: &str) -> Answer {
    let mut json = None;
    let mut key = None;
    let mut error = None;
    let mut ended = false;
    for line in out.lines() {
        let Some((k, v)) = line.split_once('\t') else {
            continue;
        };
        match k {
            "cluster.objects" => json = super::b64(v.trim()),
            "cluster.key" => key = Some(super::b64(v.trim())),
            "cluster.error" => error = Some(v.trim().to_string()),
            "cluster.end" => ended = true,
            _ => {}
        }
    }
    match (json, ended) {
        (Some(json), true) => Answer::Objects { json, key },
        (_, false) => Answer::NoApi("the output ended early".into()),
        (None, true) => Answer::NoApi(error.unwrap_or_else(|| "no answer".into())),
    }
}

/// The cluster facts from an [`Answer::Objects`] of server `api`.
pub fn from_answer(
    api: &str,
    json: &str,
    key: Option<Option<&str>>,
) -> Result<ClusterFacts, String> {
    let nodes = parse_nodes(&health::objects_part(json)).map_err(|e| e.to_string())?;
    let objects = Snapshot::parse(json)?;
    let snapshots = parse_snapshots(&health::objects_part(json)).map_err(|e| e.to_string())?;
    let sealing_key = match key.flatten() {
        Some(k) => SealingKey::from_secret_json(k).map_err(|e| e.to_string())?,
        None => None,
    };
    Ok(ClusterFacts {
        api: Some(api.to_string()),
        unanswered: Vec::new(),
        nodes,
        objects: Some(objects),
        sealing_key,
        sealing_key_read: key.is_some(),
        snapshots,
    })
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct NodeJson {
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    taints: Vec<TaintJson>,
    #[serde(default)]
    unschedulable: bool,
}

#[derive(Deserialize)]
struct TaintJson {
    key: String,
    #[serde(default)]
    value: String,
    effect: String,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default, rename = "nodeInfo")]
    node_info: NodeInfo,
    #[serde(default)]
    addresses: Vec<Address>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

#[derive(Deserialize, Default)]
struct NodeInfo {
    #[serde(default, rename = "kubeletVersion")]
    kubelet_version: String,
}

#[derive(Deserialize)]
struct Address {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not read `kubectl get nodes -o json`: {0}")]
pub struct ParseError(#[from] serde_json::Error);

/// The Nodes of a `kubectl get ... -o json` List (items of kind Node, or every item of a
/// `get nodes`).
pub fn parse_nodes(json: &str) -> Result<Vec<ObservedNode>, ParseError> {
    let list: List = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for item in list.items {
        if item.get("kind").is_some_and(|k| k != "Node") {
            continue;
        }
        let n: NodeJson = serde_json::from_value(item)?;
        let internal_ip = n
            .status
            .addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .map(|a| a.address.clone())
            .or_else(|| {
                n.metadata
                    .annotations
                    .get("k3s.io/internal-ip")
                    .and_then(|a| a.split(',').next().map(str::to_string))
            });
        let mut addresses: Vec<String> = n
            .status
            .addresses
            .iter()
            .filter(|a| a.kind == "InternalIP" || a.kind == "ExternalIP")
            .map(|a| a.address.clone())
            .collect();
        for k in ["k3s.io/internal-ip", "k3s.io/external-ip"] {
            if let Some(v) = n.metadata.annotations.get(k) {
                addresses.extend(v.split(',').map(|a| a.trim().to_string()));
            }
        }
        addresses.retain(|a| !a.is_empty());
        addresses.sort();
        addresses.dedup();
        out.push(ObservedNode {
            ready: n
                .status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True"),
            kubelet_version: n.status.node_info.kubelet_version,
            name: n.metadata.name,
            labels: n.metadata.labels,
            annotations: n.metadata.annotations,
            // The API admits only the three effects.
            taints: n
                .spec
                .taints
                .into_iter()
                .filter_map(|t| {
                    Some(Taint {
                        key: t.key,
                        value: (!t.value.is_empty()).then_some(t.value),
                        effect: TaintEffect::parse(&t.effect)?,
                    })
                })
                .collect(),
            unschedulable: n.spec.unschedulable,
            internal_ip,
            addresses,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_files_as_k3s_records_them() {
        let json = r#"{"items":[
          {"kind":"Node","metadata":{"name":"m"}},
          {"kind":"ETCDSnapshotFile","metadata":{"name":"local-b-m-2-abcdef",
             "annotations":{"etcd.k3s.cattle.io/snapshot-token-hash":"0123456789ab"}},
           "spec":{"snapshotName":"b-m-2","nodeName":"m","location":"file:///d/b-m-2"},
           "status":{"size":"12k","creationTime":"2026-12-03T12:00:02Z","readyToUse":true}},
          {"kind":"ETCDSnapshotFile","metadata":{"name":"s3-a-m-1-abcdef"},
           "spec":{"snapshotName":"a-m-1","nodeName":"s3","location":"s3://bk/a-m-1"},
           "status":{"size":"5062688","creationTime":"2026-12-03T12:00:01Z"}}]}"#;
        let s = parse_snapshots(json).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].size, s[0].token_hash.as_deref()),
            ("a-m-1", 5_062_688, None)
        );
        assert_eq!(s[1].size, 12_000);
        assert_eq!(s[1].path(), Some("/d/b-m-2"));
        assert_eq!(s[1].token_hash.as_deref(), Some("0123456789ab"));
        assert_eq!(quantity("3Mi"), Some(3 << 20));
        assert_eq!(quantity("1.5k"), None);
    }

    const NODES: &str = r#"{"apiVersion":"v1","items":[
      {"kind":"Node","metadata":{"name":"master-1","labels":{"node-role.kubernetes.io/control-plane":"true"},
        "annotations":{"bootstrap.k3s.io/managed":"{\"labels\":[],\"taints\":[]}"}},
       "spec":{"taints":[{"key":"node-role.kubernetes.io/control-plane","value":"true","effect":"NoSchedule"}]},
       "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.36.3+k3s1"},
         "addresses":[{"type":"InternalIP","address":"10.0.0.1"},{"type":"Hostname","address":"master-1"}]}},
      {"metadata":{"name":"worker-1"},"spec":{"unschedulable":true},
       "status":{"conditions":[{"type":"Ready","status":"Unknown"}],"nodeInfo":{"kubeletVersion":"v1.36.3+k3s1"}}},
      {"kind":"Deployment","metadata":{"name":"traefik","namespace":"kube-system"}}
    ],"kind":"List","metadata":{"resourceVersion":""}}"#;

    #[test]
    fn parses_node_list() {
        let nodes = parse_nodes(NODES).unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].ready);
        assert_eq!(
            nodes[0].taints[0].to_string(),
            "node-role.kubernetes.io/control-plane=true:NoSchedule"
        );
        assert_eq!(nodes[0].internal_ip.as_deref(), Some("10.0.0.1"));
        assert!(!nodes[1].ready);
        assert!(nodes[1].unschedulable);
        assert_eq!(nodes[1].version(), "v1.36.3+k3s1".parse().ok());
    }

    /// Nodes as real k3s clusters recorded them (tests/fixtures/upstream): names, readiness,
    /// versions, taints, and every address k3s records (status and `k3s.io/*-ip`).
    #[test]
    fn nodes_recorded_from_real_k3s() {
        use crate::testdata;
        let list = testdata::list(&[
            ("node-server-sqlite-k3s-v1.29.json", "Node"),
            ("node-agent-k3s-v1.29.json", "Node"),
        ]);
        let nodes = parse_nodes(&list).unwrap();
        assert_eq!(nodes.len(), 2);
        let (m, w) = (&nodes[0], &nodes[1]);
        assert_eq!((m.name.as_str(), w.name.as_str()), ("kmaster", "kworker1"));
        assert!(m.ready && w.ready);
        assert_eq!(w.version(), "v1.29.4+k3s1".parse().ok());
        assert_eq!(m.internal_ip.as_deref(), Some("192.168.186.216"));
        assert_eq!(w.addresses, ["192.168.186.217"]);
        assert!(m.taints.is_empty());
        // IPv6, with an external IP: in the addresses from the annotations.
        let frag = testdata::json("node-annotations-external-ip-ipv6-k3s-2022-fragment.yaml");
        let mut node = frag["items"][0].clone();
        node["metadata"]["name"] = serde_json::Value::from("ip6");
        let nodes = parse_nodes(&serde_json::json!({"items": [node]}).to_string()).unwrap();
        assert_eq!(
            nodes[0].addresses,
            ["2600:1f1c:ab4:ee48:b0e8:6e19:17b:1cc7"]
        );
        assert_eq!(
            nodes[0].internal_ip.as_deref(),
            Some("2600:1f1c:ab4:ee48:b0e8:6e19:17b:1cc7")
        );
    }

    /// ETCDSnapshotFiles as k3s writes them: an S3 copy is told by `spec.s3` and its `s3://`
    /// location, whatever `spec.nodeName` says (`s3` in the docs' recording; the uploading
    /// server's name in current k3s, pkg/etcd/snapshot/types.go:192-196).
    #[test]
    fn snapshot_files_recorded_from_real_k3s() {
        use crate::testdata;
        let local = testdata::json("etcdsnapshotfile-local.yaml");
        let s3 = testdata::json("etcdsnapshotfile-s3.yaml");
        let mut s3_named = s3.clone();
        s3_named["spec"]["nodeName"] = serde_json::Value::from("k3s-server-1");
        s3_named["metadata"]["name"] = serde_json::Value::from("s3-other");
        let json = serde_json::json!({"items": [local, s3, s3_named]}).to_string();
        let all = parse_snapshots(&json).unwrap();
        assert_eq!(all.len(), 3);
        let l = all.iter().find(|s| !s.s3).unwrap();
        assert_eq!(l.node, "k3s-server-1");
        assert_eq!(l.place(), "k3s-server-1");
        assert_eq!(
            l.path(),
            Some("/var/lib/rancher/k3s/server/db/snapshots/on-demand-k3s-server-1-1730308816")
        );
        assert_eq!(l.size, 2_891_808);
        assert_eq!(l.token_hash.as_deref(), Some("b4b83cda3099"));
        let s3s: Vec<&SnapshotFile> = all.iter().filter(|s| s.s3).collect();
        assert_eq!(s3s.len(), 2);
        assert!(s3s.iter().all(|s| s.place() == "s3" && s.path().is_none()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_nodes("not json").is_err());
        assert!(parse_nodes("{\"items\":[{\"metadata\":{}}]}").is_err());
    }

    #[test]
    fn answers_and_silences() {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let out = format!("cluster.objects\t{}\ncluster.end\tok\n", b(NODES));
        let Answer::Objects { json, key } = parse_answer(&out) else {
            panic!("no objects");
        };
        assert_eq!(key, None);
        let f = from_answer("master-1", &json, None).unwrap();
        assert!(!f.sealing_key_read);
        let out = format!(
            "cluster.objects\t{}\ncluster.key\t-\ncluster.end\tok\n",
            b(NODES)
        );
        let Answer::Objects { key, .. } = parse_answer(&out) else {
            panic!("no objects");
        };
        assert_eq!(key, Some(None));
        assert_eq!(f.api.as_deref(), Some("master-1"));
        assert_eq!(f.nodes.len(), 2);
        assert!(f
            .objects
            .unwrap()
            .get("Deployment", "kube-system", "traefik")
            .is_some());
        assert_eq!(
            parse_answer("cluster.error\tk3s is not running here\ncluster.end\tok\n"),
            Answer::NoApi("k3s is not running here".into())
        );
        assert!(matches!(
            parse_answer("cluster.objects\tAAAA\n"),
            Answer::NoApi(_)
        ));
    }
}
