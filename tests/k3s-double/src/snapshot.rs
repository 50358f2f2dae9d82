//! etcd snapshots: `k3s etcd-snapshot save|ls|delete|prune` (a client of the running server,
//! k3s `pkg/cli/etcdsnapshot/etcd_snapshot.go`), the server's `/db/snapshot` handler
//! (`pkg/etcd/snapshot_handler.go`), the files in the snapshot dir (`pkg/etcd/snapshot.go`),
//! the ETCDSnapshotFile objects that record them (`pkg/etcd/snapshot/types.go`), and the
//! scheduled snapshots (robfig/cron, as `setSnapshotFunction`).
//!
//! A snapshot is the member's replicated `State` serialized as JSON: what the double keeps
//! instead of etcd's bbolt database.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::common::Op;
use crate::config::{self, Config, Role};
use crate::net::client::{self, Request};
use crate::net::server::{full, HttpResponse};
use crate::server::{Auth, Server};
use crate::{common, join, util};

/// `pkg/etcd/snapshot/types.go` 39-40.
pub const LABEL_STORAGE_NODE: &str = "etcd.k3s.cattle.io/snapshot-storage-node";
pub const ANNOTATION_TOKEN_HASH: &str = "etcd.k3s.cattle.io/snapshot-token-hash";
/// `snapshot.CompressedExtension` (`pkg/etcd/snapshot/types.go` 32).
pub const COMPRESSED_EXT: &str = ".zip";
const GROUP: &str = "k3s.cattle.io";
const KIND: &str = "ETCDSnapshotFile";

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
    pub s3: Option<Value>,
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
/// (`withRequest`, `snapshot_handler.go` 145-178; the dir is the request's only).
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: Option<String>,
    pub name: String,
    pub compress: bool,
    pub retention: i64,
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
        }
    }

    fn with_request(cfg: &Config, sr: &SnapshotRequest) -> Settings {
        let mut s = Settings::of_server(cfg);
        s.dir = sr.dir.clone();
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
}

pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server/db/snapshots")
}

/// Go's wording of an I/O error (`stat /x: no such file or directory`).
pub fn go_err(op: &str, path: &Path, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::AlreadyExists => "file exists".to_string(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_lowercase()
        }
    };
    format!("{op} {}: {what}", path.display())
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
            out.push(LocalFile {
                ts: file_ts(&name, &p),
                // Like k3s, the location joins the dir and the base name.
                path: dir.join(&name),
                name,
                size: m.len(),
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
        let _ = std::fs::remove_file(dir.join("..").join(".metadata").join(&f.name));
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

/// `File.GenerateName` (`types.go` 91-115).
pub fn cr_name(node: &str, f: &LocalFile) -> String {
    let location = format!("file://{}", f.path.display());
    let digest = util::sha256_hex(format!("{node}{location}").as_bytes());
    let mut name = f.name.to_lowercase();
    if !crate::objects::is_dns1123_subdomain(&name) || name.len() + 13 > 253 {
        let short = node.split('.').next().unwrap_or(node);
        name = format!("etcd-snapshot-{short}-{}", f.ts);
        if f.name.ends_with(COMPRESSED_EXT) {
            name.push_str(COMPRESSED_EXT);
        }
    }
    format!("local-{name}-{}", &digest[..6])
}

/// `util.ShortHash(password, 12)` (`pkg/util/token.go` 51-70).
pub fn token_hash(password: &str) -> String {
    util::sha256_hex(password.as_bytes())[..12].to_string()
}

/// The ETCDSnapshotFile k3s keeps for a local snapshot (`ToETCDSnapshotFile`, `types.go`
/// 182-253). Only a snapshot saved now carries the token hash; one found on disk does not
/// (`listLocalSnapshots` sets no TokenHash).
pub fn cr_object(node: &str, f: &LocalFile, token_hash: Option<&str>) -> Value {
    let mut o = json!({
        "apiVersion": "k3s.cattle.io/v1",
        "kind": KIND,
        "metadata": {"name": cr_name(node, f), "labels": {LABEL_STORAGE_NODE: node}},
        "spec": {
            "snapshotName": f.name,
            "nodeName": node,
            "location": format!("file://{}", f.path.display()),
        },
        "status": {
            "creationTime": util::rfc3339(f.ts),
            "readyToUse": true,
            "size": quantity(f.size),
        },
    });
    if let Some(h) = token_hash {
        o["metadata"]["annotations"] = json!({ ANNOTATION_TOKEN_HASH: h });
    }
    o
}

/// An item of `ls -o json`: named by the ConfigMap key (`local-<name>`, `types.go` 81-87),
/// not by the object's name.
fn list_item(node: &str, f: &LocalFile) -> Value {
    let key: String = f
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
    let mut o = cr_object(node, f, None);
    o["metadata"] = json!({
        "name": format!("local-{key}"),
        "creationTimestamp": null,
        "labels": {LABEL_STORAGE_NODE: node},
    });
    o
}

/// The leader's side of `Op::SyncSnapshotFiles`: this node's objects become `items` (created,
/// updated, or deleted when their file is gone; `reconcileSnapshotData`, `snapshot.go` 718-914).
pub fn sync_objects(st: &mut crate::store::State, node: &str, items: Vec<Value>) {
    let keys: Vec<String> = items.iter().map(crate::store::key_of).collect();
    let stale: Vec<String> = st
        .list(GROUP, KIND, None)
        .into_iter()
        .filter(|o| {
            o.pointer(&format!(
                "/metadata/labels/{}",
                LABEL_STORAGE_NODE.replace('/', "~1")
            ))
            .and_then(Value::as_str)
                == Some(node)
        })
        .map(crate::store::key_of)
        .filter(|k| !keys.contains(k))
        .collect();
    for k in stale {
        st.remove(&k);
    }
    for (item, key) in items.into_iter().zip(keys) {
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
        } else {
            st.put(item);
        }
    }
}

/// Records this node's snapshots in `dir` as ETCDSnapshotFile objects (through the leader).
pub fn reconcile(srv: &Server, dir: &Path, fresh: &[(String, String)]) -> Result<(), String> {
    let node = &srv.ctx.node;
    let items = list_local(dir)?
        .iter()
        .map(|f| {
            let h = fresh
                .iter()
                .find(|(n, _)| *n == f.name)
                .map(|(_, h)| h.as_str());
            cr_object(node, f, h)
        })
        .collect();
    srv.submit(&Op::SyncSnapshotFiles {
        node: node.clone(),
        items,
    })
    .map(|_| ())
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

/// `e.Snapshot` (`snapshot.go` 221-400), local part: save, compress, record, retention.
pub fn save(srv: &Server, s: &Settings) -> Result<SnapshotResult, String> {
    let Ok(_guard) = SAVING.try_lock() else {
        return Err("snapshot save already in progress".into());
    };
    let (body, password, quorum) = {
        let st = srv.state.lock().expect("state lock");
        (
            serde_json::to_vec(&*st).map_err(|e| e.to_string())?,
            st.bootstrap.server_password.clone(),
            srv.has_quorum(&st),
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
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut res = SnapshotResult {
        created: vec![file_name.clone()],
        deleted: vec![],
    };
    let fresh = vec![(file_name, token_hash(&password))];
    if let Err(e) = reconcile(srv, &dir, &fresh) {
        util::warn(format!("Failed to sync ETCDSnapshotFile: {e}"));
    }
    match retention(s.retention, &s.name, &dir) {
        Ok(d) => res.deleted = d,
        Err(e) => util::warn(format!(
            "Failed to apply local snapshot retention policy: {e}"
        )),
    }
    if !res.deleted.is_empty() {
        if let Err(e) = reconcile(srv, &dir, &fresh) {
            util::warn(format!("Failed to sync ETCDSnapshotFile: {e}"));
        }
    }
    Ok(res)
}

fn list(srv: &Server, s: &Settings) -> Result<Value, String> {
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), true)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    let items: Vec<Value> = list_local(&dir)?
        .iter()
        .map(|f| list_item(&srv.ctx.node, f))
        .collect();
    Ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
}

fn delete(srv: &Server, s: &Settings, names: &[String]) -> Result<SnapshotResult, String> {
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), false)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    let mut res = SnapshotResult::default();
    for n in names {
        let p = dir.join(n);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                let _ = std::fs::remove_file(dir.join("..").join(".metadata").join(n));
                util::info(format!("Snapshot {n} deleted locally"));
                res.deleted.push(n.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                util::info(format!("Snapshot {n} not found locally"))
            }
            Err(e) => util::error(format!("Failed to delete local snapshot {n}: {e}")),
        }
    }
    reconcile(srv, &dir, &[])?;
    Ok(res)
}

fn prune(srv: &Server, s: &Settings) -> Result<SnapshotResult, String> {
    let dir = snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), true)
        .map_err(|e| format!("failed to get etcd-snapshot-dir: {e}"))?;
    let deleted = retention(s.retention, &s.name, &dir)?;
    reconcile(srv, &dir, &[])?;
    Ok(SnapshotResult {
        created: vec![],
        deleted,
    })
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

/// `util.SendErrorWithID` (`pkg/util/apierrors.go` 25-29): the details stay in the log.
fn send_error_with_id(err: &str) -> HttpResponse {
    let id = u32::from_str_radix(&util::random_hex(4), 16).unwrap_or(0) % 99999;
    util::error(format!("etcd-snapshot error ID {id:05}: {err}"));
    send_error(&format!("etcd-snapshot error ID {id:05}"))
}

fn warn_s3_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        util::warn("etcd-s3 is set, but the k3s double does not talk to S3: snapshots are saved, listed, pruned and restored locally only")
    });
}

/// Warns once when the server's config names S3 (the double keeps snapshots locally only).
pub fn check_s3(cfg: &Config) {
    if cfg.values.keys().any(|k| k.starts_with("etcd-s3")) {
        warn_s3_once();
    }
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
    if sr.s3.is_some() {
        warn_s3_once();
    }
    let s = Settings::with_request(&srv.ctx.cfg, &sr);
    let json = |v: &Value| {
        full(
            200,
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        )
    };
    let result = |r: &SnapshotResult| json(&serde_json::to_value(r).unwrap_or(Value::Null));
    match sr.operation.as_str() {
        "list" => match list(&srv, &s) {
            Ok(v) => json(&v),
            Err(e) => send_error_with_id(&e),
        },
        "save" => match save(&srv, &s) {
            Ok(r) => result(&r),
            Err(e) => send_error_with_id(&e),
        },
        "prune" => match prune(&srv, &s) {
            Ok(r) => result(&r),
            Err(e) => send_error(&e),
        },
        "delete" => match delete(&srv, &s, &sr.name) {
            Ok(r) => result(&r),
            Err(e) => send_error(&e),
        },
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
    let Ok(cron) = Cron::parse(&spec) else {
        return;
    };
    let settings = Settings::of_server(&srv.ctx.cfg);
    std::thread::spawn(move || loop {
        let now = util::now_secs();
        let next = (now / 60 + 1) * 60;
        std::thread::sleep(Duration::from_secs((next - now) as u64));
        if !cron.matches(next) {
            continue;
        }
        let jitter = u64::from_str_radix(&util::random_hex(2), 16).unwrap_or(0) % 5000;
        std::thread::sleep(Duration::from_millis(jitter));
        if let Err(e) = save(&srv, &settings) {
            util::error(format!("Failed to take scheduled snapshot: {e}"));
        }
    });
}

/// Reconciles the ETCDSnapshotFile objects once etcd is ready, then every
/// `etcd-snapshot-reconcile-interval` (default 10m; `pkg/cluster/cluster.go` 91-109).
pub fn reconcile_loop(srv: Arc<Server>) {
    let interval = srv
        .ctx
        .cfg
        .get("etcd-snapshot-reconcile-interval")
        .and_then(parse_duration)
        .unwrap_or(Duration::from_secs(600));
    std::thread::spawn(move || loop {
        let s = Settings::of_server(&srv.ctx.cfg);
        match snapshot_dir(&srv.ctx.data_dir, s.dir.as_deref(), true) {
            Ok(dir) => {
                if let Err(e) = reconcile(&srv, &dir, &[]) {
                    util::error(format!("Failed to reconcile snapshot data: {e}"));
                    if !common::sleep_or_stop(Duration::from_secs(5)) {
                        continue;
                    }
                }
            }
            Err(e) => util::error(format!("Failed to reconcile snapshot data: {e}")),
        }
        std::thread::sleep(interval);
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
    if cfg.bool("s3") {
        let s3: serde_json::Map<String, Value> = cfg
            .values
            .iter()
            .filter(|(k, _)| k.starts_with("s3-"))
            .map(|(k, v)| (k.clone(), json!(v.last())))
            .collect();
        sr.s3 = Some(Value::Object(s3));
    }
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
    let r = match client::call(&v.target, &v.trust(), None, req, Duration::from_secs(120)) {
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
        _ => {
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
            print!("{}", tabwrite(&rows));
        }
    }
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
        };
        let digest = util::sha256_hex(b"m1file:///d/on-demand-m1-1700000000");
        assert_eq!(
            cr_name("m1", &f),
            format!("local-on-demand-m1-1700000000-{}", &digest[..6])
        );
        let o = cr_object("m1", &f, Some("abc"));
        assert_eq!(o["status"]["size"], "10");
        assert_eq!(o["metadata"]["annotations"][ANNOTATION_TOKEN_HASH], "abc");
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
}
