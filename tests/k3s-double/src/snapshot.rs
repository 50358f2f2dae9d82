//! etcd snapshots: `k3s etcd-snapshot save|ls|delete|prune` (a client of the running server,
//! k3s `pkg/cli/etcdsnapshot/etcd_snapshot.go`), the server's `/db/snapshot` handler
//! (`pkg/etcd/snapshot_handler.go`), the files in the snapshot dir (`pkg/etcd/snapshot.go`),
//! the ETCDSnapshotFile objects that record them (`pkg/etcd/snapshot/types.go`), the copies
//! in S3 (`src/s3.rs`, k3s `pkg/etcd/s3`), and the scheduled snapshots (robfig/cron, as
//! `setSnapshotFunction`).
//!
//! A snapshot is the member's replicated `State` serialized as JSON: what the double keeps
//! instead of etcd's bbolt database.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::common::Op;
use crate::config::{self, Config, Role};
use crate::net::client::{self, Request};
use crate::net::server::{full, HttpResponse};
use crate::s3::{self, EtcdS3};
use crate::server::{Auth, Server};
use crate::{common, join, util};

/// `pkg/etcd/snapshot/types.go` 39-40.
pub const LABEL_STORAGE_NODE: &str = "etcd.k3s.cattle.io/snapshot-storage-node";
pub const ANNOTATION_TOKEN_HASH: &str = "etcd.k3s.cattle.io/snapshot-token-hash";
/// `snapshot.CompressedExtension` (`pkg/etcd/snapshot/types.go` 32).
pub const COMPRESSED_EXT: &str = ".zip";
/// `snapshot.ExtraMetadataConfigMapName` (`types.go` 42).
pub const EXTRA_METADATA_CONFIGMAP: &str = "k3s-etcd-snapshot-extra-metadata";
const GROUP: &str = "k3s.cattle.io";
const KIND: &str = "ETCDSnapshotFile";
/// `errorTTL` and `s3ReconcileTTL` (`snapshot.go` 45-49).
const ERROR_TTL: i64 = 24 * 3600;
const S3_RECONCILE_TTL: i64 = 60;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The CLI's request body (`snapshot_handler.go` 27-36).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub operation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<EtcdS3>,
}

/// `managed.SnapshotResult` (`pkg/cluster/managed/drivers.go` 49-54).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// The snapshot settings of one operation: the server's, overridden by the request's
/// (`withRequest`, `snapshot_handler.go` 145-178; the dir and the S3 settings are the
/// request's only: a CLI request without `--s3` does not touch S3, whatever the server has).
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: Option<String>,
    pub name: String,
    pub compress: bool,
    pub retention: i64,
    pub s3: Option<EtcdS3>,
}

impl Settings {
    /// The server's own settings (scheduled snapshots, reconcile).
    pub fn of_server(cfg: &Config) -> Settings {
        Settings {
            dir: cfg.get("etcd-snapshot-dir").map(str::to_string),
            name: cfg
                .get("etcd-snapshot-name")
                .unwrap_or("etcd-snapshot")
                .to_string(),
            compress: cfg.bool("etcd-snapshot-compress"),
            retention: cfg
                .get("etcd-snapshot-retention")
                .and_then(|r| r.parse().ok())
                .unwrap_or(5),
            s3: s3::server_config(cfg).ok().flatten(),
        }
    }

    fn with_request(cfg: &Config, sr: &SnapshotRequest) -> Settings {
        let mut s = Settings::of_server(cfg);
        s.dir = sr.dir.clone();
        s.s3 = sr.s3.clone();
        if let Some(n) = sr.name.first() {
            s.name = n.clone();
        }
        if let Some(c) = sr.compress {
            s.compress = c;
        }
        if let Some(r) = sr.retention {
            s.retention = r;
        }
        s
    }
}

/// A file in the snapshot dir, as `listLocalSnapshots` sees it.
#[derive(Clone, Debug)]
pub struct LocalFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub ts: i64,
    /// The extra metadata saved beside it (`<dir>/../.metadata/<name>`), base64.
    pub metadata: String,
}

/// `snapshot.File` (`pkg/etcd/snapshot/types.go` 56-77): a snapshot as k3s handles it
/// between the disk or S3 and its ETCDSnapshotFile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapFile {
    pub name: String,
    pub location: String,
    /// Extra metadata as stored (the JSON of the ConfigMap's data), base64.
    pub metadata: String,
    /// The error of a failed snapshot, base64.
    pub message: String,
    pub node_name: String,
    pub created_at: i64,
    pub size: u64,
    /// `Status == SuccessfulStatus`.
    pub successful: bool,
    pub s3: Option<EtcdS3>,
    pub compressed: bool,
    /// The extra-metadata ConfigMap's data at save time.
    pub metadata_source: Option<BTreeMap<String, String>>,
    pub node_source: String,
    pub token_hash: String,
}

impl SnapFile {
    /// A local file (`listLocalSnapshots`, `snapshot.go` 420-454).
    pub fn local(node: &str, f: &LocalFile) -> SnapFile {
        SnapFile {
            name: f.name.clone(),
            location: format!("file://{}", f.path.display()),
            metadata: f.metadata.clone(),
            node_name: node.to_string(),
            created_at: f.ts,
            size: f.size,
            successful: true,
            compressed: f.name.ends_with(COMPRESSED_EXT),
            ..Default::default()
        }
    }

    /// `GenerateConfigMapKey` (`types.go` 79-87).
    pub fn configmap_key(&self) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if self.node_name == "s3" {
            format!("s3-{name}")
        } else {
            format!("local-{name}")
        }
    }

    /// `GenerateName` (`types.go` 89-115): `local-` or `s3-`, the lowercased name (or
    /// `etcd-snapshot-<node>-<ts>` when that is no DNS-1123 name), and 6 hex of
    /// sha256(node + location), the node being `NodeSource` when set.
    pub fn generate_name(&self) -> String {
        let mut name = self.name.to_lowercase();
        let nodename = if self.node_source.is_empty() {
            &self.node_name
        } else {
            &self.node_source
        };
        let digest = util::sha256_hex(format!("{nodename}{}", self.location).as_bytes());
        if !crate::objects::is_dns1123_subdomain(&name) || name.len() + 13 > 253 {
            let short = nodename.split('.').next().unwrap_or(nodename);
            name = format!("etcd-snapshot-{short}-{}", self.created_at);
            if self.compressed {
                name.push_str(COMPRESSED_EXT);
            }
        }
        let prefix = if self.node_name == "s3" {
            "s3"
        } else {
            "local"
        };
        format!("{prefix}-{name}-{}", &digest[..6])
    }

    /// `ToETCDSnapshotFile` (`types.go` 181-253) onto a new object named by `GenerateName`.
    pub fn to_object(&self) -> Value {
        let node = if self.node_source.is_empty() {
            &self.node_name
        } else {
            &self.node_source
        };
        let mut o = json!({
            "apiVersion": "k3s.cattle.io/v1",
            "kind": KIND,
            "metadata": {"name": self.generate_name(), "labels": {}},
            "spec": {
                "snapshotName": self.name,
                "nodeName": node,
                "location": self.location,
            },
            "status": {
                "creationTime": util::rfc3339(self.created_at),
                "readyToUse": self.successful,
                "size": quantity(self.size),
            },
        });
        if !self.message.is_empty() {
            let message = base64::engine::general_purpose::STANDARD
                .decode(&self.message)
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_else(|_| "etcd snapshot failed".into());
            o["status"]["error"] = json!({
                "time": util::rfc3339(self.created_at),
                "message": message,
            });
        }
        let metadata: Option<BTreeMap<String, String>> = match &self.metadata_source {
            Some(m) => Some(m.clone()),
            None if !self.metadata.is_empty() => base64::engine::general_purpose::STANDARD
                .decode(&self.metadata)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
            None => None,
        };
        if let Some(m) = metadata.filter(|m| !m.is_empty()) {
            o["spec"]["metadata"] = json!(m);
        }
        if !self.token_hash.is_empty() {
            o["metadata"]["annotations"] = json!({ ANNOTATION_TOKEN_HASH: self.token_hash });
        }
        match &self.s3 {
            None => o["metadata"]["labels"][LABEL_STORAGE_NODE] = json!(node),
            Some(c) => {
                o["metadata"]["labels"][LABEL_STORAGE_NODE] = json!("s3");
                let mut s3 = serde_json::Map::new();
                for (k, v) in [
                    ("endpoint", &c.endpoint),
                    ("endpointCA", &c.endpoint_ca),
                    ("bucket", &c.bucket),
                    ("bucketLookup", &c.bucket_lookup),
                    ("region", &c.region),
                    ("prefix", &c.folder),
                ] {
                    if !v.is_empty() {
                        s3.insert(k.into(), json!(v));
                    }
                }
                if c.skip_ssl_verify {
                    s3.insert("skipSSLVerify".into(), json!(true));
                }
                if c.insecure {
                    s3.insert("insecure".into(), json!(true));
                }
                o["spec"]["s3"] = Value::Object(s3);
            }
        }
        o
    }
}

pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server/db/snapshots")
}

/// Go's wording of an I/O error (`stat /x: no such file or directory`).
pub fn go_err(op: &str, path: &Path, e: &std::io::Error) -> String {
    format!("{op} {}: {}", path.display(), go_errno(e))
}

/// The errno text Go prints (`no such file or directory`).
pub fn go_errno(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::AlreadyExists => "file exists".to_string(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    }
}

/// `snapshotDir` (`snapshot.go` 72-102): only the default dir is created (0700).
pub fn snapshot_dir(data_dir: &Path, dir: Option<&str>, create: bool) -> Result<PathBuf, String> {
    let default = default_dir(data_dir);
    let dir = dir.map(PathBuf::from).unwrap_or_else(|| default.clone());
    let create = create && dir == default;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(&dir).map_err(|e| go_err("mkdir", &dir, &e))?;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            Ok(dir)
        }
        Err(e) => Err(go_err("stat", &dir, &e)),
    }
}

/// The timestamp of a snapshot: the integer after the last `-` (`.zip` stripped), else mtime
/// (`snapshot.go` 425-429).
fn file_ts(name: &str, path: &Path) -> i64 {
    let base = name.strip_suffix(COMPRESSED_EXT).unwrap_or(name);
    let tail = base.rsplit_once('-').map(|(_, t)| t).unwrap_or(base);
    tail.parse().unwrap_or_else(|_| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}

/// Every regular file under the dir, recursively (`listLocalSnapshots`, `snapshot.go` 420-456).
pub fn list_local(dir: &Path) -> Result<Vec<LocalFile>, String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| go_err("open", &d, &e))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                todo.push(p);
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            // The extra metadata beside it, if any (`snapshot.go` 431-438).
            let metadata = std::fs::read(metadata_path(&p))
                .map(|m| b64(&m))
                .unwrap_or_default();
            out.push(LocalFile {
                ts: file_ts(&name, &p),
                // Like k3s, the location joins the dir and the base name.
                path: dir.join(&name),
                name,
                size: m.len(),
                metadata,
            });
        }
    }
    Ok(out)
}

/// `snapshotRetention` (`snapshot.go` 932-980): files whose name starts with the prefix,
/// newest first by timestamp; those past `retention` are removed.
pub fn retention(retention: i64, prefix: &str, dir: &Path) -> Result<Vec<String>, String> {
    if retention < 1 {
        return Ok(vec![]);
    }
    util::info(format!(
        "Applying snapshot retention={retention} to local snapshots with prefix {prefix} in {}",
        dir.display()
    ));
    let mut files: Vec<LocalFile> = list_local(dir)?
        .into_iter()
        .filter(|f| f.name.starts_with(prefix))
        .collect();
    if files.len() as i64 <= retention {
        return Ok(vec![]);
    }
    files.sort_by_key(|f| std::cmp::Reverse(f.ts));
    let mut deleted = Vec::new();
    for f in &files[retention as usize..] {
        let p = dir.join(&f.name);
        util::info(format!("Removing local snapshot {}", p.display()));
        std::fs::remove_file(&p).map_err(|e| go_err("remove", &p, &e))?;
        let m = metadata_path(&p);
        if let Err(e) = std::fs::remove_file(&m) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(go_err("remove", &m, &e));
            }
        }
        deleted.push(f.name.clone());
    }
    Ok(deleted)
}

/// `resource.NewQuantity(n, DecimalSI).String()`: the canonical form uses the largest SI
/// suffix that keeps the number whole (5000 → `5k`).
pub fn quantity(n: u64) -> String {
    const SUFFIX: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let (mut v, mut i) = (n, 0);
    while v != 0 && v % 1000 == 0 && i < SUFFIX.len() - 1 {
        v /= 1000;
        i += 1;
    }
    format!("{v}{}", SUFFIX[i])
}

/// `util.ShortHash(password, 12)` (`pkg/util/token.go` 51-70).
pub fn token_hash(password: &str) -> String {
    util::sha256_hex(password.as_bytes())[..12].to_string()
}

/// An item of `ls -o json`: named by the ConfigMap key (`local-<name>`, `s3-<name>`;
/// `k3s.NewETCDSnapshotFile("", k, ...)`, `snapshot.go` 530-546), not by the object's name.
fn list_item(sf: &SnapFile) -> Value {
    let mut o = sf.to_object();
    let mut meta = json!({
        "name": sf.configmap_key(),
        "creationTimestamp": null,
        "labels": o["metadata"]["labels"].clone(),
    });
    if let Some(a) = o["metadata"].get("annotations") {
        meta["annotations"] = a.clone();
    }
    o["metadata"] = meta;
    o
}

fn label_of(o: &Value) -> Option<&str> {
    o.pointer(&format!(
        "/metadata/labels/{}",
        LABEL_STORAGE_NODE.replace('/', "~1")
    ))
    .and_then(Value::as_str)
}

/// Creates `item`, or updates the object of that name: spec and status replaced, labels and
/// annotations added (`addSnapshotData`, `snapshot.go` 616-661).
pub fn add_object(st: &mut crate::store::State, item: Value) -> bool {
    let key = crate::store::key_of(&item);
    if st.objects.contains_key(&key) {
        st.update(&key, |o| {
            for f in ["spec", "status"] {
                o[f] = item[f].clone();
            }
            let meta = &mut o["metadata"];
            for f in ["labels", "annotations"] {
                if let Some(m) = item["metadata"][f].as_object() {
                    if !meta[f].is_object() {
                        meta[f] = json!({});
                    }
                    for (k, v) in m {
                        meta[f][k] = v.clone();
                    }
                }
            }
        });
        false
    } else {
        st.put(item);
        true
    }
}

/// `generateETCDSnapshotFileConfigMapKey` (`snapshot.go` 663-671).
fn object_key(o: &Value) -> String {
    let sf = SnapFile {
        name: o
            .pointer("/spec/snapshotName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        node_name: if o.pointer("/spec/s3").is_some_and(|s| !s.is_null()) {
            "s3".into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    sf.configmap_key()
}

/// The leader's side of `Op::SyncSnapshotFiles` (`reconcileSnapshotData`, `snapshot.go`
/// 718-860). This node's objects become `items` (created, updated, or deleted when their file
/// is gone). With `s3` (the S3 listing, when it could be listed), the `s3`-labelled objects
/// are reconciled as k3s does: one whose key and name match a listed snapshot is in sync and
/// left alone; one that does not is deleted unless it is a failure record younger than 24 h
/// or an S3 record created less than a minute ago (another server's upload racing the
/// listing), or named in `deleted`; listed snapshots without an object are created.
/// Returns the snapshot names created and deleted.
pub fn sync_objects(
    st: &mut crate::store::State,
    node: &str,
    items: Vec<Value>,
    s3: Option<Vec<Value>>,
    deleted: &[String],
) -> (Vec<String>, Vec<String>) {
    let snap = |o: &Value| {
        o.pointer("/spec/snapshotName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (mut created, mut removed) = (Vec::new(), Vec::new());
    let keys: Vec<String> = items.iter().map(crate::store::key_of).collect();
    let stale: Vec<(String, String)> = st
        .list(GROUP, KIND, None)
        .into_iter()
        .filter(|o| label_of(o) == Some(node))
        .filter(|o| !keys.contains(&crate::store::key_of(o)))
        .map(|o| (crate::store::key_of(o), snap(o)))
        .collect();
    for (k, n) in stale {
        st.remove(&k);
        removed.push(n);
    }
    for item in items {
        let n = snap(&item);
        if add_object(st, item) {
            created.push(n);
        }
    }
    let Some(s3) = s3 else {
        return (created, removed);
    };
    let now = util::now_secs();
    let mut listed: BTreeMap<String, Value> = s3.into_iter().map(|o| (object_key(&o), o)).collect();
    let existing: Vec<Value> = st
        .list(GROUP, KIND, None)
        .into_iter()
        .filter(|o| label_of(o) == Some("s3"))
        .cloned()
        .collect();
    for esf in existing {
        let key = object_key(&esf);
        let name = crate::store::meta(&esf, "name").to_string();
        if listed
            .get(&key)
            .is_some_and(|o| crate::store::meta(o, "name") == name)
        {
            listed.remove(&key);
            continue;
        }
        let snapshot_name = snap(&esf);
        if !deleted.contains(&snapshot_name) {
            let error_time = esf
                .pointer("/status/error/time")
                .and_then(Value::as_str)
                .and_then(util::parse_rfc3339);
            if let Some(t) = error_time {
                if now < t + ERROR_TTL {
                    continue;
                }
            } else if esf.pointer("/spec/s3").is_some_and(|s| !s.is_null()) {
                let created_at =
                    util::parse_rfc3339(crate::store::meta(&esf, "creationTimestamp")).unwrap_or(0);
                if now < created_at + S3_RECONCILE_TTL {
                    continue;
                }
            }
        }
        st.remove(&crate::store::obj_key(GROUP, KIND, "", &name));
        removed.push(snapshot_name);
    }
    for item in listed.into_values() {
        let n = snap(&item);
        add_object(st, item);
        created.push(n);
    }
    (created, removed)
}

/// `addSnapshotData` (`snapshot.go` 616-661), through the leader.
fn add_snapshot_data(srv: &Server, sf: &SnapFile) -> Result<(), String> {
    srv.submit(&Op::AddSnapshotFile {
        item: sf.to_object(),
    })
    .map(|_| ())
}

/// `reconcileSnapshotData` (`snapshot.go` 714-914): this node's files, and with S3 settings
/// the S3 listing, made the ETCDSnapshotFile objects (through the leader). Without an S3
/// client the whole reconcile fails (unless the S3 settings come from a missing config
/// secret); a failed listing only leaves the S3 objects alone.
pub fn reconcile_all(
    srv: &Server,
    s: &Settings,
    res: Option<&SnapshotResult>,
) -> Result<(), String> {
    util::info("Reconciling ETCDSnapshotFile resources");
    let r = (|| {
        let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), true)
            .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
        let node = &srv.ctx.node;
        let items = list_local(&dir)?
            .iter()
            .map(|f| SnapFile::local(node, f).to_object())
            .collect();
        let mut s3_items = None;
        if let Some(cfg) = &s.s3 {
            match s3::get_client(Some(srv), cfg) {
                Err(e) => {
                    util::warn(format!("Unable to initialize S3 client: {e}"));
                    if !e.no_config_secret {
                        return Err(format!("failed to initialize S3 client: {e}"));
                    }
                }
                Ok(c) => match c.list_snapshots() {
                    Err(e) => util::error(format!(
                        "Error retrieving S3 snapshots for reconciliation: {e}"
                    )),
                    Ok(m) => s3_items = Some(m.values().map(SnapFile::to_object).collect()),
                },
            }
        }
        let v = srv.submit(&Op::SyncSnapshotFiles {
            node: node.clone(),
            items,
            s3: s3_items,
            deleted: res.map(|r| r.deleted.clone()).unwrap_or_default(),
        })?;
        let names = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        for n in names("deleted") {
            util::info(format!("Deleting ETCDSnapshotFile for {n}"));
        }
        for n in names("created") {
            util::info(format!("Creating ETCDSnapshotFile for {n}"));
        }
        Ok(())
    })();
    util::info("Reconciliation of ETCDSnapshotFile resources complete");
    r
}

static SAVING: Mutex<()> = Mutex::new(());

fn write_zip(zip_path: &Path, entry: &str, data: &[u8]) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(zip_path)?;
    std::fs::set_permissions(zip_path, std::fs::Permissions::from_mode(0o600))?;
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file(entry, opts).map_err(std::io::Error::other)?;
    z.write_all(data)?;
    let f = z.finish().map_err(std::io::Error::other)?;
    f.sync_all()
}

/// The one entry of a compressed snapshot (`decompressSnapshot`, `snapshot.go` 157-202).
pub fn read_zip(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| go_err("open", path, &e))?;
    let mut z = zip::ZipArchive::new(f).map_err(|e| format!("zip: {e}"))?;
    if z.len() != 1 {
        return Err("unexpected compressed etcd snapshot contents".into());
    }
    let mut e = z.by_index(0).map_err(|e| format!("zip: {e}"))?;
    let mut out = Vec::new();
    e.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The data of the `k3s-etcd-snapshot-extra-metadata` ConfigMap in kube-system, when it
/// exists (`snapshot.go` 229-241).
fn extra_metadata(st: &crate::store::State) -> Option<BTreeMap<String, String>> {
    let cm = st.get("", "ConfigMap", "kube-system", EXTRA_METADATA_CONFIGMAP)?;
    Some(
        cm.get("data")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Go's `json.Marshal` of a `map[string]string`: keys sorted, `<`, `>`, `&` escaped.
fn go_json_map(m: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_string(m)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .into_bytes()
}

/// The extra-metadata file of a snapshot: `<dir of the snapshot>/../.metadata/<name>`.
pub fn metadata_path(snapshot_path: &Path) -> PathBuf {
    let name = snapshot_path.file_name().unwrap_or_default();
    let dir = snapshot_path.parent().unwrap_or(Path::new("/"));
    dir.parent()
        .unwrap_or(Path::new("/"))
        .join(s3::METADATA_DIR)
        .join(name)
}

/// `saveSnapshotMetadata` (`snapshot.go` 982-1001): the ConfigMap's data as JSON, written
/// (mode 0700, as k3s writes it) only when there is some.
fn save_metadata(
    snapshot_path: &Path,
    extra: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    let Some(m) = extra.filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    let p = metadata_path(snapshot_path);
    util::info(format!("Saving snapshot metadata to {}", p.display()));
    let dir = p.parent().unwrap_or(Path::new("/"));
    s3::mkdir_all(dir).map_err(|e| go_err("mkdir", dir, &e))?;
    util::write_file(&p, &go_json_map(m), 0o700).map_err(|e| go_err("open", &p, &e))
}

/// `e.Snapshot` (`snapshot.go` 204-216): save, then reconcile the objects. A reconcile
/// error comes back beside the result, as k3s returns both.
pub fn snapshot(srv: &Server, s: &Settings) -> Result<(SnapshotResult, Option<String>), String> {
    let res = save(srv, s)?;
    let err = reconcile_all(srv, s, Some(&res)).err();
    Ok((res, err))
}

/// `e.snapshot` (`snapshot.go` 218-407): save, compress, record, local retention, then with
/// S3 settings the upload, its record (or a failure record when no client can be made) and
/// S3 retention.
pub fn save(srv: &Server, s: &Settings) -> Result<SnapshotResult, String> {
    let Ok(_guard) = SAVING.try_lock() else {
        return Err("snapshot save already in progress".into());
    };
    let (body, password, quorum, extra) = {
        let st = srv.state.lock().expect("state lock");
        (
            serde_json::to_vec(&*st).map_err(|e| e.to_string())?,
            st.bootstrap.server_password.clone(),
            srv.has_quorum(&st),
            extra_metadata(&st),
        )
    };
    if !quorum {
        // The status call to the local member times out without a leader.
        return Err("failed to check etcd status for snapshot: context deadline exceeded".into());
    }
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), true)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    let node = &srv.ctx.node;
    let now = util::now_secs();
    let name = format!("{}-{node}-{now}", s.name);
    let mut path = dir.join(&name);
    util::info(format!("Saving etcd snapshot to {}", path.display()));
    // etcd's SaveWithVersion writes `<path>.part` (0600) and renames it.
    let part = dir.join(format!("{name}.part"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&part)?;
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&part, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&part);
        util::error(format!("Failed to take etcd snapshot: {e}"));
        return Err(format!("failed to save snapshot: {e}"));
    }
    if s.compress {
        util::info(format!("Compressing etcd snapshot file: {name}"));
        let zip_path = dir.join(format!("{name}{COMPRESSED_EXT}"));
        let r = write_zip(&zip_path, &name, &body);
        if let Err(e) = std::fs::remove_file(&path) {
            util::warn(format!("Failed to remove uncompress snapshot file: {e}"));
        }
        if let Err(e) = r {
            return Err(format!("failed to compress snapshot: {e}"));
        }
        path = zip_path;
        util::info(format!("Compressed snapshot: {}", path.display()));
    }
    let size = std::fs::metadata(&path)
        .map_err(|e| {
            format!(
                "unable to retrieve snapshot information from local snapshot: {}",
                go_err("stat", &path, &e)
            )
        })?
        .len();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let local = SnapFile {
        name: file_name.clone(),
        location: format!("file://{}", path.display()),
        node_name: node.clone(),
        created_at: now,
        successful: true,
        size,
        compressed: s.compress,
        metadata_source: extra.clone(),
        token_hash: token_hash(&password),
        ..Default::default()
    };
    let mut res = SnapshotResult {
        created: vec![file_name.clone()],
        deleted: vec![],
    };
    if let Err(e) = save_metadata(&path, extra.as_ref()) {
        util::warn(format!("Failed to save local snapshot metadata: {e}"));
    }
    if let Err(e) = add_snapshot_data(srv, &local) {
        util::warn(format!("Failed to sync ETCDSnapshotFile: {e}"));
    }
    match retention(s.retention, &s.name, &dir) {
        Ok(d) => res.deleted = d,
        Err(e) => util::warn(format!(
            "Failed to apply local snapshot retention policy: {e}"
        )),
    }
    if let Some(cfg) = &s.s3 {
        let sf = match s3::get_client(Some(srv), cfg) {
            Err(e) => {
                util::warn(format!("Unable to initialize S3 client: {e}"));
                (!e.no_config_secret).then(|| SnapFile {
                    name: file_name.clone(),
                    node_name: "s3".into(),
                    created_at: now,
                    message: b64(format!("failed to initialize S3 client: {e}").as_bytes()),
                    successful: false,
                    s3: Some(cfg.clone()),
                    metadata_source: extra.clone(),
                    ..Default::default()
                })
            }
            Ok(c) => {
                util::info(format!("Saving etcd snapshot {name} to S3"));
                let (sf, err) = c.upload(&path, extra.as_ref(), now);
                match err {
                    Some(e) => {
                        util::error(format!("Error received during snapshot upload to S3: {e}"))
                    }
                    None => {
                        res.created.push(sf.name.clone());
                        util::info(format!("S3 upload complete for {name}"));
                    }
                }
                let (deleted, err) = c.snapshot_retention(&s.name);
                res.deleted.extend(deleted);
                if let Some(e) = err {
                    util::warn(format!("Failed to apply S3 snapshot retention policy: {e}"));
                }
                Some(sf)
            }
        };
        if let Some(sf) = sf {
            if let Err(e) = add_snapshot_data(srv, &sf) {
                util::warn(format!("Failed to sync ETCDSnapshotFile: {e}"));
            }
        }
    }
    Ok(res)
}

/// The S3 client of an operation that needs one (`ListSnapshots`, `DeleteSnapshots`): none
/// without S3 settings or with a missing config secret; an error otherwise.
fn s3_client_or_fail(srv: &Server, s: &Settings) -> Result<Option<Arc<s3::Client>>, String> {
    let Some(cfg) = &s.s3 else {
        return Ok(None);
    };
    match s3::get_client(Some(srv), cfg) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            util::warn(format!("Unable to initialize S3 client: {e}"));
            if e.no_config_secret {
                Ok(None)
            } else {
                Err(format!("failed to initialize S3 client: {e}"))
            }
        }
    }
}

/// `ListSnapshots` (`snapshot.go` 510-549): S3's first (when set), then the local files.
fn list(srv: &Server, s: &Settings) -> Result<Value, String> {
    let mut items: Vec<Value> = Vec::new();
    if let Some(c) = s3_client_or_fail(srv, s)? {
        let m = c.list_snapshots().map_err(|e| e.msg)?;
        items.extend(m.values().map(list_item));
    }
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), true)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    items.extend(
        list_local(&dir)?
            .iter()
            .map(|f| list_item(&SnapFile::local(&srv.ctx.node, f))),
    );
    Ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
}

/// `DeleteSnapshots` (`snapshot.go` 551-614): each name locally and in S3.
fn delete(
    srv: &Server,
    s: &Settings,
    names: &[String],
) -> Result<(SnapshotResult, Option<String>), String> {
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), false)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    let client = s3_client_or_fail(srv, s)?;
    let mut res = SnapshotResult::default();
    for n in names {
        let p = dir.join(n);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                let _ = std::fs::remove_file(metadata_path(&p));
                util::info(format!("Snapshot {n} deleted locally"));
                res.deleted.push(n.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_file(metadata_path(&p));
                util::info(format!("Snapshot {n} not found locally"))
            }
            Err(e) => util::error(format!("Failed to delete local snapshot {n}: {e}")),
        }
        if let Some(c) = &client {
            match c.delete_snapshot(n) {
                Err(e) if e.is_not_exist() => util::info(format!("Snapshot {n} not found in S3")),
                Err(e) => util::error(format!("Failed to delete S3 snapshot {n}: {e}")),
                Ok(()) => {
                    res.deleted.push(n.clone());
                    util::info(format!("Snapshot {n} deleted from S3"));
                }
            }
        }
    }
    let err = reconcile_all(srv, s, Some(&res)).err();
    Ok((res, err))
}

/// `PruneSnapshots` (`snapshot.go` 479-508): local retention, then S3's.
fn prune(srv: &Server, s: &Settings) -> Result<(SnapshotResult, Option<String>), String> {
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), false)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    let mut res = SnapshotResult::default();
    match retention(s.retention, &s.name, &dir) {
        Ok(d) => res.deleted = d,
        Err(e) => util::error(format!("Error applying snapshot retention policy: {e}")),
    }
    if let Some(cfg) = &s.s3 {
        match s3::get_client(Some(srv), cfg) {
            Err(e) => util::warn(format!("Unable to initialize S3 client: {e}")),
            Ok(c) => {
                let (deleted, err) = c.snapshot_retention(&s.name);
                if let Some(e) = err {
                    util::error(format!("Error applying S3 snapshot retention policy: {e}"));
                }
                res.deleted.extend(deleted);
            }
        }
    }
    let err = reconcile_all(srv, s, Some(&res)).err();
    Ok((res, err))
}

fn status_resp(code: u16, reason: &str, message: &str, cause: Option<&str>) -> HttpResponse {
    let mut v = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(c) = cause {
        v["details"] = json!({"causes": [{"message": c}]});
    }
    full(
        code,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

/// `util.SendError` with a 500: an `InternalError` Status.
fn send_error(err: &str) -> HttpResponse {
    util::error(format!("Sending HTTP/1.1 500 response: {err}"));
    status_resp(
        500,
        "InternalError",
        &format!("Internal error occurred: {err}"),
        Some(err),
    )
}

/// `util.SendError` with a 400: `apierrors.NewBadRequest`.
fn send_bad_request(err: &str) -> HttpResponse {
    util::error(format!("Sending HTTP/1.1 400 response: {err}"));
    status_resp(400, "BadRequest", err, None)
}

/// `util.SendErrorWithID` (`pkg/util/apierrors.go` 25-29): the details stay in the log.
fn send_error_with_id(err: &str) -> HttpResponse {
    let id = u32::from_str_radix(&util::random_hex(4), 16).unwrap_or(0) % 99999;
    util::error(format!("etcd-snapshot error ID {id:05}: {err}"));
    send_error(&format!("etcd-snapshot error ID {id:05}"))
}

/// `POST /db/snapshot`: routed only on etcd members, for the `server` role
/// (`pkg/etcd/etcd.go` 737-739).
pub fn handle(srv: Arc<Server>, method: &str, auth_h: &str, body: &[u8]) -> HttpResponse {
    if srv.member_name().is_none() {
        return full(404, "text/plain", "404 page not found\n");
    }
    if srv.check_basic(auth_h) != Auth::Server {
        return status_resp(401, "Unauthorized", "Unauthorized", None);
    }
    if method != "POST" {
        return send_error_with_id(&format!(
            "{method} is not supported: the server does not allow this method on the requested resource (snapshot.k3s.cattle.io)"
        ));
    }
    let sr: SnapshotRequest = match serde_json::from_slice(body) {
        Ok(sr) => sr,
        Err(e) => return send_error_with_id(&e.to_string()),
    };
    let s = Settings::with_request(&srv.ctx.cfg, &sr);
    let json = |v: &Value| {
        full(
            200,
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        )
    };
    let result = |r: &SnapshotResult, err: Option<String>| {
        if let Some(e) = err {
            util::warn(format!("Error in etcd-snapshot handler: {e}"));
        }
        json(&serde_json::to_value(r).unwrap_or(Value::Null))
    };
    // Every operation first makes sure an S3 client can be had, refusing with 400
    // (`handleList`/`handleSave`/`handlePrune`/`handleDelete`, `snapshot_handler.go` 70-136).
    let s3_check = || -> Option<HttpResponse> {
        let cfg = s.s3.as_ref()?;
        s3::get_client(Some(&srv), cfg)
            .err()
            .map(|e| send_bad_request(&format!("failed to initialize S3 client: {e}")))
    };
    match sr.operation.as_str() {
        "list" => s3_check().unwrap_or_else(|| match list(&srv, &s) {
            Ok(v) => json(&v),
            Err(e) => send_error_with_id(&e),
        }),
        "save" => s3_check().unwrap_or_else(|| match snapshot(&srv, &s) {
            Ok((r, err)) => result(&r, err),
            Err(e) => send_error_with_id(&e),
        }),
        "prune" => s3_check().unwrap_or_else(|| match prune(&srv, &s) {
            Ok((r, err)) => result(&r, err),
            Err(e) => send_error(&e),
        }),
        "delete" => s3_check().unwrap_or_else(|| match delete(&srv, &s, &sr.name) {
            Ok((r, err)) => result(&r, err),
            Err(e) => send_error(&e),
        }),
        _ => {
            let id = u32::from_str_radix(&util::random_hex(4), 16).unwrap_or(0) % 99999;
            util::error(format!(
                "etcd-snapshot error ID {id:05}: invalid snapshot operation"
            ));
            status_resp(
                400,
                "BadRequest",
                &format!("etcd-snapshot error ID {id:05}"),
                None,
            )
        }
    }
}

// ---- scheduled snapshots ----

/// A 5-field cron spec as robfig/cron's standard parser reads it (minute hour dom month dow;
/// `*`, `?`, `*/n`, `a-b`, `a-b/n`, `n/m`, lists, month and day names, `@hourly`-style
/// descriptors). When both day fields are restricted, either matching is enough.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    fields: [Vec<bool>; 5],
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn cron_value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + offset);
    }
    s.parse().map_err(|_| {
        format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
    })
}

fn cron_field(
    spec: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<(Vec<bool>, bool), String> {
    let mut bits = vec![false; max as usize + 1];
    let mut star = false;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                Some(
                    s.parse::<u32>()
                        .map_err(|_| format!("failed to parse int from {s}"))?,
                ),
            ),
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none() {
                star = true;
            }
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (cron_value(a, names, offset)?, cron_value(b, names, offset)?)
        } else {
            let v = cron_value(range, names, offset)?;
            (v, if step.is_some() { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("end of range ({hi}) above maximum ({max}): {part}"));
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(format!("step of range should be a positive number: {part}"));
        }
        let mut v = lo;
        while v <= hi {
            bits[v as usize] = true;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Cron {
    pub fn parse(spec: &str) -> Result<Cron, String> {
        let spec = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s => s,
        };
        let f: Vec<&str> = spec.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                f.len(),
                f.join(" ")
            ));
        }
        let (mi, _) = cron_field(f[0], 0, 59, &[], 0)?;
        let (h, _) = cron_field(f[1], 0, 23, &[], 0)?;
        let (dom, dom_star) = cron_field(f[2], 1, 31, &[], 0)?;
        let (mo, _) = cron_field(f[3], 1, 12, &MONTHS, 1)?;
        let (mut dow, dow_star) = cron_field(f[4], 0, 7, &DAYS, 0)?;
        if dow[7] {
            dow[0] = true;
        }
        Ok(Cron {
            fields: [mi, h, dom, mo, dow],
            dom_star,
            dow_star,
        })
    }

    /// Whether the minute starting at `secs` (UTC) is one the spec names.
    pub fn matches(&self, secs: i64) -> bool {
        let days = secs.div_euclid(86400);
        let rem = secs.rem_euclid(86400);
        let (minute, hour) = ((rem % 3600) / 60, rem / 3600);
        let date = util::rfc3339(secs);
        let month: usize = date[5..7].parse().unwrap_or(1);
        let dom: usize = date[8..10].parse().unwrap_or(1);
        let dow = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let [mi, h, d, mo, w] = &self.fields;
        let day = if self.dom_star || self.dow_star {
            d[dom] && w[dow]
        } else {
            d[dom] || w[dow]
        };
        mi[minute as usize] && h[hour as usize] && mo[month] && day
    }
}

/// Scheduled snapshots (`setSnapshotFunction`, `snapshot.go` 917-928): at each minute the
/// spec names, after 0-5 s of jitter, a snapshot with the server's settings and its retention.
/// A run that is still going when the next minute comes makes that minute skipped
/// (`SkipIfStillRunning`). An invalid spec schedules nothing (k3s ignores AddJob's error).
pub fn schedule(srv: Arc<Server>) {
    let spec = srv
        .ctx
        .cfg
        .get("etcd-snapshot-schedule-cron")
        .unwrap_or("0 */12 * * *")
        .to_string();
    let settings = Settings::of_server(&srv.ctx.cfg);
    // `@every <duration>`: robfig/cron v3 parser.go hands the rest to time.ParseDuration and
    // makes a ConstantDelaySchedule (constantdelay.go: under a second is a second, rounded down
    // to whole seconds; each run that long after the previous activation).
    if let Some(every) = every(&spec) {
        let Ok(delay) = every else {
            return;
        };
        std::thread::spawn(move || loop {
            std::thread::sleep(delay);
            scheduled(&srv, &settings);
        });
        return;
    }
    let Ok(cron) = Cron::parse(&spec) else {
        return;
    };
    std::thread::spawn(move || loop {
        let now = util::now_secs();
        let next = (now / 60 + 1) * 60;
        std::thread::sleep(Duration::from_secs((next - now) as u64));
        if !cron.matches(next) {
            continue;
        }
        scheduled(&srv, &settings);
    });
}

/// The delay of an `@every <duration>` spec: under a second is a second, the rest rounded
/// down to whole seconds (robfig/cron v3 constantdelay.go `Every`); `None` for another spec.
fn every(spec: &str) -> Option<Result<Duration, String>> {
    let d = spec.trim().strip_prefix("@every ")?;
    Some(crate::s3::parse_go_duration(d).map(|d| Duration::from_secs(d.as_secs().max(1))))
}

/// One scheduled snapshot, after 0-5 s of jitter.
fn scheduled(srv: &Arc<Server>, settings: &Settings) {
    let jitter = u64::from_str_radix(&util::random_hex(2), 16).unwrap_or(0) % 5000;
    std::thread::sleep(Duration::from_millis(jitter));
    // `e.Snapshot`: an S3 client that cannot be made does not stop the local save; it is
    // logged and recorded (`snapshot.go` 356-375).
    match snapshot(srv, settings) {
        Err(e) | Ok((_, Some(e))) => util::error(format!("Failed to take scheduled snapshot: {e}")),
        Ok(_) => {}
    }
}

/// Reconciles the ETCDSnapshotFile objects once etcd is ready, retrying after 1, 2, 4, 8, 16
/// and then every 32 s until it succeeds, then at once and every
/// `etcd-snapshot-reconcile-interval` (default 10m, up to 5 % later), failures only logged
/// (`pkg/cluster/cluster.go` 91-109: a `wait.Backoff` of 5 steps, then `JitterUntil`).
pub fn reconcile_loop(srv: Arc<Server>) {
    let interval = srv
        .ctx
        .cfg
        .get("etcd-snapshot-reconcile-interval")
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(600));
    std::thread::spawn(move || {
        let mut delay = 1;
        loop {
            let s = Settings::of_server(&srv.ctx.cfg);
            match reconcile_all(&srv, &s, None) {
                Ok(()) => break,
                Err(e) => util::error(format!("Failed to record snapshots for cluster: {e}")),
            }
            if common::sleep_or_stop(Duration::from_secs(delay)) {
                return;
            }
            delay = (delay * 2).min(32);
        }
        loop {
            let s = Settings::of_server(&srv.ctx.cfg);
            if let Err(e) = reconcile_all(&srv, &s, None) {
                util::error(format!("Failed to record snapshots for cluster: {e}"));
            }
            let jitter =
                u64::from_str_radix(&util::random_hex(2), 16).unwrap_or(0) as f64 / 65535.0;
            if common::sleep_or_stop(interval.mul_f64(1.0 + 0.05 * jitter)) {
                return;
            }
        }
    });
}

/// Go durations as flags take them (`10m`, `1h30m`, `90s`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    (total > 0.0).then(|| Duration::from_secs_f64(total))
}

// ---- the CLI ----

fn fatal_err(msg: impl AsRef<str>) -> ! {
    util::fatal(format!("Error: {}", msg.as_ref()))
}

fn print_usage() {
    println!("NAME:\n   k3s etcd-snapshot - Manage etcd snapshots\n\nUSAGE:\n   k3s etcd-snapshot command [command options]\n\nCOMMANDS:\n   save      Trigger an immediate etcd snapshot\n   delete    Delete given snapshot(s)\n   ls, list, l  List snapshots\n   prune     Remove snapshots that match the name prefix that exceed the configured retention count");
}

/// `k3s etcd-snapshot <sub> [flags] [args]`.
pub fn main(args: &[String]) -> ! {
    let Some(sub) = args.first().map(String::as_str) else {
        print_usage();
        std::process::exit(0);
    };
    let sub = match sub {
        "save" | "delete" | "prune" => sub,
        "ls" | "list" | "l" => "ls",
        "help" | "--help" | "-h" => {
            print_usage();
            std::process::exit(0);
        }
        other => {
            eprintln!("No help topic for '{other}'");
            std::process::exit(3);
        }
    };
    // Flags first, then arguments (Go's flag package stops at the first argument).
    let flags = config::flags(Role::EtcdSnapshot);
    let mut flag_args = Vec::new();
    let mut positional = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if !positional.is_empty() || !a.starts_with('-') || a == "-" {
            positional.push(a.clone());
            continue;
        }
        if a == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        flag_args.push(a.clone());
        let name = a.trim_start_matches('-');
        if name.contains('=') {
            continue;
        }
        let is_bool = flags
            .iter()
            .find(|f| f.name == name || f.aliases.iter().any(|x| x == name))
            .map(|f| f.is_bool())
            .unwrap_or(false);
        if !is_bool {
            if let Some(v) = args.get(i) {
                flag_args.push(v.clone());
                i += 1;
            }
        }
    }
    let cfg = match config::load(Role::EtcdSnapshot, &flag_args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            let msg = match &e {
                config::ConfigError::Usage(f) => format!("flag provided but not defined: -{f}"),
                config::ConfigError::Other(s) => s.clone(),
            };
            fatal_err(msg);
        }
    };
    if sub != "ls" && cfg.values.contains_key("output") {
        eprintln!("Incorrect Usage: flag provided but not defined: -output");
        fatal_err("flag provided but not defined: -output");
    }
    for w in &cfg.warnings {
        util::warn(w);
    }
    crate::logging::init(&cfg);
    let mut sr = SnapshotRequest::default();
    match sub {
        "save" => {
            if !positional.is_empty() {
                fatal_err("this command does not take any arguments");
            }
            sr.operation = "save".into();
            // Save never prunes (`etcd_snapshot.go` 116-118).
            sr.retention = Some(0);
        }
        "delete" => {
            if positional.is_empty() {
                fatal_err("no snapshots given for removal");
            }
            sr.operation = "delete".into();
        }
        "ls" => {
            if let Some(o) = cfg.get("output") {
                if !["json", "yaml", "table"].contains(&o) {
                    fatal_err(format!("invalid output format: {o}"));
                }
            }
            sr.operation = "list".into();
        }
        _ => sr.operation = "prune".into(),
    }
    // `commandSetup` (`etcd_snapshot.go` 36-92): only what was set is sent.
    if cfg.values.contains_key("dir") {
        sr.dir = cfg.get("dir").map(str::to_string);
    }
    if cfg.values.contains_key("snapshot-compress") {
        sr.compress = Some(cfg.bool("snapshot-compress"));
    }
    if sub != "save" && cfg.values.contains_key("snapshot-retention") {
        sr.retention = cfg.get("snapshot-retention").and_then(|r| r.parse().ok());
    }
    // The S3 settings, and a request timeout extended by the S3 timeout (`etcd_snapshot.go`
    // 51-75).
    sr.s3 = s3::cli_config(&cfg, sub == "save");
    let timeout = Duration::from_secs(120) + sr.s3.as_ref().map(|c| c.timeout).unwrap_or_default();
    match sub {
        "save" | "prune" => sr.name = vec![cfg.get("name").unwrap_or("on-demand").to_string()],
        "delete" => sr.name = positional.clone(),
        _ => {}
    }
    let data_dir = cfg.data_dir().join("server");
    let token = match cfg.get("etcd-token") {
        Some(t) => t.to_string(),
        None => {
            let p = data_dir.join("token");
            match std::fs::read_to_string(&p) {
                Ok(t) => t.trim_end_matches('\n').to_string(),
                Err(e) => fatal_err(go_err("open", &p, &e)),
            }
        }
    };
    let server = cfg.get("etcd-server").unwrap_or("https://127.0.0.1:6443");
    let v = match join::validate(server, &token) {
        Ok(v) => v,
        Err(e) => fatal_err(e),
    };
    let url = v.target.url("/db/snapshot");
    let body = serde_json::to_vec(&sr).unwrap_or_default();
    let req = Request::post("/db/snapshot", body)
        .header("Authorization", &client::basic_auth("server", &v.password))
        .header("Content-Type", "application/json");
    let r = match client::call(&v.target, &v.trust(), None, req, timeout) {
        Ok(r) => r,
        Err(e) => fatal_err(format!(
            "see server log for details: {}",
            e.go("POST", &url)
        )),
    };
    if !(200..300).contains(&r.status) {
        let resp = r.json();
        let msg = if resp.get("kind").and_then(Value::as_str) == Some("Status") {
            resp.get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        } else {
            format!("{url}: {} {}", r.status, join::status_text(r.status))
        };
        fatal_err(format!("see server log for details: {msg}"));
    }
    match sub {
        "ls" => print_list(&r.body, cfg.get("output")),
        _ => {
            let res: SnapshotResult = match serde_json::from_slice(&r.body) {
                Ok(res) => res,
                Err(e) => fatal_err(e.to_string()),
            };
            if sub == "save" {
                for n in &res.created {
                    util::info(format!("Snapshot {n} saved."));
                }
            } else {
                for n in &res.deleted {
                    util::info(format!("Snapshot {n} deleted."));
                }
            }
            if sub == "delete" {
                for n in &positional {
                    if !res.deleted.contains(n) {
                        util::warn(format!("Snapshot {n} not found."));
                    }
                }
            }
        }
    }
    std::process::exit(0);
}

fn print_list(body: &[u8], format: Option<&str>) {
    let mut list: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => fatal_err(e.to_string()),
    };
    sort_list(&mut list);
    match format {
        Some("json") => {
            // printers.JSONPrinter: four-space indentation.
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            let _ = list.serialize(&mut ser);
            println!("{}", String::from_utf8_lossy(&out));
        }
        Some("yaml") => print!("{}", serde_yaml::to_string(&list).unwrap_or_default()),
        _ => print!("{}", table(&list)),
    }
}

/// The items oldest first, ties by name; `sort.Slice` is not stable, the double keeps the
/// server's order (S3's first) for ties.
fn sort_list(list: &mut Value) {
    if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
        // Oldest first, ties by name (`etcd_snapshot.go` 238-243).
        items.sort_by(|a, b| {
            let k = |o: &Value| {
                (
                    o.pointer("/status/creationTime")
                        .and_then(Value::as_str)
                        .and_then(util::parse_rfc3339)
                        .unwrap_or(0),
                    o.pointer("/spec/snapshotName")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            };
            k(a).cmp(&k(b))
        });
    }
}

/// The `ls` table (`etcd_snapshot.go` 259-264).
fn table(list: &Value) -> String {
    let mut rows = vec![[
        "Name".to_string(),
        "Location".to_string(),
        "Size".to_string(),
        "Created".to_string(),
    ]];
    for o in list["items"].as_array().into_iter().flatten() {
        let s = |p: &str| {
            o.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        rows.push([
            s("/spec/snapshotName"),
            s("/spec/location"),
            quantity_value(&s("/status/size")).to_string(),
            s("/status/creationTime"),
        ]);
    }
    tabwrite(&rows)
}

/// `tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)`: each column as wide as its widest cell plus one
/// space; the last column is not padded.
pub fn tabwrite(rows: &[[String; 4]]) -> String {
    let mut widths = [0usize; 3];
    for r in rows {
        for (i, w) in widths.iter_mut().enumerate() {
            *w = (*w).max(r[i].len() + 1);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}", r[i], w = *w));
        }
        out.push_str(&r[3]);
        out.push('\n');
    }
    out
}

/// A quantity's value in bytes (`12k` → 12000).
fn quantity_value(q: &str) -> u64 {
    let (num, mult) = match q.chars().last() {
        Some('k') => (&q[..q.len() - 1], 1_000u64),
        Some('M') => (&q[..q.len() - 1], 1_000_000),
        Some('G') => (&q[..q.len() - 1], 1_000_000_000),
        Some('T') => (&q[..q.len() - 1], 1_000_000_000_000),
        Some('P') => (&q[..q.len() - 1], 1_000_000_000_000_000),
        Some('E') => (&q[..q.len() - 1], 1_000_000_000_000_000_000),
        _ => (q, 1),
    };
    num.parse::<u64>().unwrap_or(0) * mult
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_specs() {
        assert_eq!(every("@every 20s"), Some(Ok(Duration::from_secs(20))));
        assert_eq!(every("@every 1m30s"), Some(Ok(Duration::from_secs(90))));
        assert_eq!(every("@every 500ms"), Some(Ok(Duration::from_secs(1))));
        assert_eq!(every("@every 2.5s"), Some(Ok(Duration::from_secs(2))));
        assert!(matches!(every("@every soon"), Some(Err(_))));
        assert_eq!(every("* * * * *"), None);
        let c = Cron::parse("0 */12 * * *").unwrap();
        assert!(c.matches(0)); // 1970-01-01T00:00
        assert!(c.matches(12 * 3600));
        assert!(!c.matches(60));
        assert!(!c.matches(3600));
        let every = Cron::parse("* * * * *").unwrap();
        assert!(every.matches(61 * 60));
        let c = Cron::parse("5,10-12 1 * * mon-fri").unwrap();
        // 1970-01-05 was a Monday.
        let mon = 4 * 86400 + 3600;
        assert!(c.matches(mon + 5 * 60) && c.matches(mon + 11 * 60));
        assert!(!c.matches(mon + 6 * 60));
        assert!(!c.matches(mon - 86400 + 5 * 60), "Sunday");
        // Both day fields restricted: either matches (robfig `dayMatches`).
        let c = Cron::parse("0 0 1 * 1").unwrap();
        assert!(c.matches(0), "the 1st");
        assert!(c.matches(4 * 86400), "a Monday");
        assert!(!c.matches(86400));
        assert!(Cron::parse("* * * *").is_err());
        assert!(Cron::parse("61 * * * *").is_err());
        assert_eq!(Cron::parse("@hourly"), Cron::parse("0 * * * *"));
    }

    #[test]
    fn names_sizes_and_table() {
        assert_eq!(quantity(5_062_688), "5062688");
        assert_eq!(quantity(12_000), "12k");
        assert_eq!(quantity(0), "0");
        assert_eq!(quantity_value("12k"), 12_000);
        let f = LocalFile {
            name: "on-demand-m1-1700000000".into(),
            path: PathBuf::from("/d/on-demand-m1-1700000000"),
            size: 10,
            ts: 1_700_000_000,
            metadata: String::new(),
        };
        let digest = util::sha256_hex(b"m1file:///d/on-demand-m1-1700000000");
        let mut sf = SnapFile::local("m1", &f);
        assert_eq!(
            sf.generate_name(),
            format!("local-on-demand-m1-1700000000-{}", &digest[..6])
        );
        sf.token_hash = "abc".into();
        let o = sf.to_object();
        assert_eq!(o["status"]["size"], "10");
        assert_eq!(o["metadata"]["annotations"][ANNOTATION_TOKEN_HASH], "abc");
        assert_eq!(o["metadata"]["labels"][LABEL_STORAGE_NODE], "m1");
        assert!(o["spec"].get("s3").is_none());
        let t = tabwrite(&[
            [
                "Name".into(),
                "Location".into(),
                "Size".into(),
                "Created".into(),
            ],
            ["a-long".into(), "file:///x".into(), "5".into(), "T".into()],
        ]);
        assert_eq!(
            t,
            "Name   Location  Size Created\na-long file:///x 5    T\n"
        );
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m0s"), Some(Duration::from_secs(5400)));
    }

    fn s3_cfg(bucket: &str, folder: &str) -> EtcdS3 {
        EtcdS3 {
            bucket: bucket.into(),
            folder: folder.into(),
            endpoint: "s3.example.com".into(),
            region: "us-east-1".into(),
            skip_ssl_verify: true,
            retention: 5,
            timeout: Duration::from_secs(300),
            ..Default::default()
        }
    }

    /// The S3 snapshot of the k3s docs' recording, as `Client.Upload` describes it.
    fn docs_s3_file() -> SnapFile {
        SnapFile {
            name: "on-demand-k3s-server-1-1730308816".into(),
            location: "s3://etcd/k3s-test/on-demand-k3s-server-1-1730308816".into(),
            node_name: "s3".into(),
            created_at: 1_730_308_816,
            size: 2_891_808,
            successful: true,
            s3: Some(s3_cfg("etcd", "k3s-test")),
            token_hash: "b4b83cda3099".into(),
            ..Default::default()
        }
    }

    #[test]
    fn s3_object_as_the_recording_has_it() {
        // etcdsnapshotfile-s3.yaml: values from the k3s docs' `kubectl describe`; the name's
        // suffix is sha256("s3" + location), i.e. NODE_NAME was empty in the S3 controller.
        let rec = xtask::fixtures::json("etcdsnapshotfile-s3.yaml");
        let o = docs_s3_file().to_object();
        assert_eq!(o["metadata"]["name"], rec["metadata"]["name"]);
        assert_eq!(o["metadata"]["labels"], rec["metadata"]["labels"]);
        assert_eq!(o["metadata"]["annotations"], rec["metadata"]["annotations"]);
        assert_eq!(o["spec"], rec["spec"]);
        assert_eq!(o["status"], rec["status"]);
        // With NODE_NAME known, spec.nodeName and the digest are the node's.
        let mut sf = docs_s3_file();
        sf.node_source = "k3s-server-1".into();
        let o = sf.to_object();
        assert_eq!(o["spec"]["nodeName"], "k3s-server-1");
        assert_eq!(o["metadata"]["labels"][LABEL_STORAGE_NODE], "s3");
        assert!(o["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("s3-on-demand-k3s-server-1-1730308816-"));
        assert_ne!(o["metadata"]["name"], rec["metadata"]["name"]);
        // `ls -o json` names it by the legacy ConfigMap key.
        assert_eq!(
            list_item(&docs_s3_file())["metadata"]["name"],
            "s3-on-demand-k3s-server-1-1730308816"
        );
    }

    #[test]
    fn s3_failure_record() {
        let sf = SnapFile {
            name: "etcd-snapshot-m1-1700000000".into(),
            node_name: "s3".into(),
            created_at: 1_700_000_000,
            message: b64(b"failed to initialize S3 client: bucket b does not exist"),
            s3: Some(s3_cfg("b", "")),
            ..Default::default()
        };
        let o = sf.to_object();
        let digest = util::sha256_hex(b"s3");
        assert_eq!(
            o["metadata"]["name"],
            format!("s3-etcd-snapshot-m1-1700000000-{}", &digest[..6])
        );
        assert_eq!(o["spec"]["location"], "");
        assert_eq!(o["spec"]["nodeName"], "s3");
        assert_eq!(o["status"]["readyToUse"], false);
        assert_eq!(o["status"]["size"], "0");
        assert_eq!(
            o["status"]["error"]["message"],
            "failed to initialize S3 client: bucket b does not exist"
        );
        assert_eq!(o["status"]["error"]["time"], "2023-11-14T22:13:20Z");
        assert!(o["metadata"].get("annotations").is_none());
    }

    #[test]
    fn extra_metadata_in_the_object() {
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "<v>".to_string());
        assert_eq!(go_json_map(&m), br#"{"k":"\u003cv\u003e"}"#.to_vec());
        let mut sf = docs_s3_file();
        sf.metadata = b64(br#"{"a":"1"}"#);
        assert_eq!(sf.to_object()["spec"]["metadata"], json!({"a": "1"}));
        sf.metadata_source = Some(m);
        assert_eq!(sf.to_object()["spec"]["metadata"], json!({"k": "<v>"}));
        assert_eq!(
            metadata_path(Path::new("/var/lib/rancher/k3s/server/db/snapshots/x.zip")),
            PathBuf::from("/var/lib/rancher/k3s/server/db/.metadata/x.zip")
        );
    }

    #[test]
    fn ls_table_with_s3_rows_as_recorded() {
        // etcd-snapshot-ls-k3s-v1.28.15.txt (k3s issue 11053): S3 rows come first for the
        // same snapshot, as the server lists S3 before the disk.
        let a = "etcd-snapshot-v12815rc1-pool1-bw8gq-lcs4g-1729886400";
        let b = "etcd-snapshot-v12815rc1-pool1-bw8gq-fjmq9-1729886401";
        let s3 = |name: &str, ts: i64, size: u64| SnapFile {
            name: name.into(),
            location: format!("s3://justin-snapshot-buckets/v12815rc1/{name}"),
            node_name: "s3".into(),
            created_at: ts,
            size,
            successful: true,
            s3: Some(s3_cfg("justin-snapshot-buckets", "v12815rc1")),
            ..Default::default()
        };
        let local = LocalFile {
            name: a.into(),
            path: PathBuf::from(format!("/var/lib/rancher/k3s/server/db/snapshots/{a}")),
            size: 10_330_144,
            ts: 1_729_886_400,
            metadata: String::new(),
        };
        let mut list = json!({"items": [
            list_item(&s3(b, 1_729_886_401, 10_346_528)),
            list_item(&s3(a, 1_729_886_400, 10_330_144)),
            list_item(&SnapFile::local("pool1-bw8gq-lcs4g", &local)),
        ]});
        sort_list(&mut list);
        let want = xtask::fixtures::text("etcd-snapshot-ls-k3s-v1.28.15.txt");
        assert_eq!(table(&list).trim_end(), want.trim_end());
    }

    fn esf(st: &mut crate::store::State, o: Value, age: i64) -> String {
        let key = crate::store::key_of(&o);
        st.put(o);
        let then = util::rfc3339(util::now_secs() - age);
        st.objects.get_mut(&key).unwrap()["metadata"]["creationTimestamp"] = json!(then);
        key
    }

    #[test]
    fn s3_reconcile_as_k3s_does_it() {
        let mut st = crate::store::State::default();
        let file = |name: &str| SnapFile {
            name: name.into(),
            location: format!("s3://b/{name}"),
            node_name: "s3".into(),
            created_at: 1_700_000_000,
            size: 5,
            successful: true,
            s3: Some(s3_cfg("b", "")),
            ..Default::default()
        };
        let kept = esf(&mut st, file("listed").to_object(), 3600);
        let rv = st.objects[&kept]["metadata"]["resourceVersion"].clone();
        let fresh = esf(&mut st, file("fresh").to_object(), 10);
        let old = esf(&mut st, file("old").to_object(), 120);
        let gone = esf(&mut st, file("removed").to_object(), 10);
        let mut failed = file("failed");
        failed.successful = false;
        failed.location.clear();
        failed.message = b64(b"x");
        failed.created_at = util::now_secs() - 3600;
        let failed_recent = esf(&mut st, failed.to_object(), 3600);
        let mut failed_old = failed.clone();
        failed_old.name = "failed-old".into();
        failed_old.created_at = util::now_secs() - 25 * 3600;
        let failed_old = esf(&mut st, failed_old.to_object(), 25 * 3600);
        let other_node = esf(
            &mut st,
            SnapFile {
                name: "n2-file".into(),
                location: "file:///x/n2-file".into(),
                node_name: "n2".into(),
                successful: true,
                ..Default::default()
            }
            .to_object(),
            3600,
        );
        let listing = vec![file("listed").to_object(), file("new").to_object()];
        let (created, deleted) = sync_objects(
            &mut st,
            "n1",
            vec![],
            Some(listing),
            &["removed".to_string()],
        );
        assert_eq!(created, vec!["new"]);
        let mut deleted = deleted;
        deleted.sort();
        assert_eq!(deleted, vec!["failed-old", "old", "removed"]);
        for k in [&kept, &fresh, &failed_recent, &other_node] {
            assert!(st.objects.contains_key(k), "{k} kept");
        }
        for k in [&old, &gone, &failed_old] {
            assert!(!st.objects.contains_key(k), "{k} deleted");
        }
        assert_eq!(
            st.objects[&kept]["metadata"]["resourceVersion"], rv,
            "an object in sync is not updated"
        );
        // Without a listing the S3 objects are left alone.
        let before = st.objects.len();
        sync_objects(&mut st, "n1", vec![], None, &[]);
        assert_eq!(st.objects.len(), before);
    }
}
