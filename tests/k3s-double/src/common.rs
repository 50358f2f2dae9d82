//! Pieces shared by server and agent: node identity, signals, the op protocol.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::net::client::{self, Request, Target};
use crate::net::tls::Trust;
use crate::nodes::NodeInfo;
use crate::store::Member;
use crate::util;

pub const NODE_DIR: &str = "/etc/rancher/node";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)] // a handful per second at most
pub enum Op {
    Join {
        role: String,
        node: NodeInfo,
        #[serde(default)]
        member: Option<Member>,
    },
    Heartbeat {
        node: String,
    },
    Event {
        node: String,
        kind: String,
        detail: Value,
    },
    /// Names for the shared serving certificate (dynamiclistener's `AddCN`).
    AddServingNames {
        names: Vec<String>,
    },
    ApplyAddon {
        node: String,
        name: String,
        path: String,
        checksum: String,
        docs: Vec<Value>,
    },
    DeleteAddon {
        node: String,
        name: String,
    },
    /// This node's ETCDSnapshotFile objects become these, and with `s3` (the S3 listing)
    /// the `s3` ones are reconciled (k3s `reconcileSnapshotData`); `deleted` names the
    /// snapshots the operation removed. Answers `{created, deleted}` snapshot names.
    SyncSnapshotFiles {
        node: String,
        items: Vec<Value>,
        #[serde(default)]
        s3: Option<Vec<Value>>,
        #[serde(default)]
        deleted: Vec<String>,
    },
    /// One ETCDSnapshotFile created or updated (k3s `addSnapshotData`).
    AddSnapshotFile {
        item: Value,
    },
    /// The first start after a cluster reset drops the node's password Secret (k3s
    /// `pkg/cluster/managed.go` 58-62, `deleteNodePasswdSecret`).
    DeleteNodePassword {
        node: String,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps in small steps; returns true if a stop signal arrived.
pub fn sleep_or_stop(d: Duration) -> bool {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if stopping() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stopping()
}

/// `/etc/rancher/node/password`: created on first contact, reused after.
pub fn node_password() -> String {
    let p = Path::new(NODE_DIR).join("password");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return s;
        }
    }
    let pw = util::random_hex(16);
    if let Err(e) = util::write_file(&p, format!("{pw}\n").as_bytes(), 0o600) {
        util::warn(format!("failed to write {}: {e}", p.display()));
    }
    pw
}

pub fn node_name(cfg: &Config) -> String {
    let base = cfg
        .get("node-name")
        .map(str::to_string)
        .unwrap_or_else(util::hostname)
        .to_lowercase();
    if cfg.bool("with-node-id") {
        let p = Path::new(NODE_DIR).join("id");
        let id = match std::fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let id = util::random_hex(4);
                let _ = util::write_file(&p, id.as_bytes(), 0o644);
                id
            }
        };
        format!("{base}-{id}")
    } else {
        base
    }
}

/// The address this host uses toward `target` (or the default route), else any non-loopback IPv4.
pub fn local_ip(cfg: &Config, target: Option<&str>) -> String {
    if let Some(ip) = cfg.list("node-ip").first() {
        return ip.clone();
    }
    let probe = |dst: &str| -> Option<String> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect(dst).ok()?;
        let ip = s.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
    };
    if let Some(t) = target.and_then(|t| Target::from_url(t).ok()) {
        if let Some(ip) = probe(&format!("{}:{}", t.host, t.port)) {
            return ip;
        }
    }
    if let Some(ip) = probe("8.8.8.8:53") {
        return ip;
    }
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = trie.lines().collect();
        for w in lines.windows(2) {
            if w[1].contains("/32 host LOCAL") {
                let ip = w[0].trim().trim_start_matches("|-- ").trim();
                if !ip.starts_with("127.") {
                    return ip.to_string();
                }
            }
        }
    }
    "127.0.0.1".into()
}

pub fn os_facts() -> (String, String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
    .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into());
    (arch, kernel, os)
}

/// `k3s.io/node-env`: K3S_* variables with secrets redacted, as k3s records them.
pub fn node_env() -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in std::env::vars() {
        if k.starts_with("K3S_") {
            let v = if k.contains("TOKEN") || k.contains("PASSWORD") {
                "********".to_string()
            } else {
                v
            };
            m.insert(k, Value::String(v));
        }
    }
    m
}

/// Args as k3s records them in `k3s.io/node-args`, secrets redacted.
pub fn node_args(role: &str, cfg: &Config) -> Vec<String> {
    let mut a = vec![role.to_string()];
    for (k, vs) in &cfg.values {
        for v in vs {
            a.push(format!("--{k}"));
            if k.contains("token") || k.contains("secret") {
                a.push("********".into());
            } else {
                a.push(v.clone());
            }
        }
    }
    a
}

/// Sends an op to a server's `/v1-k3s-double/op` over TLS (trusting the cluster CA).
pub fn post_op(
    target: &Target,
    trust: &Trust,
    auth: &str,
    op: &Op,
    timeout: Duration,
) -> Result<(u16, Value), client::NetError> {
    let body = serde_json::to_vec(op).map_err(|e| client::NetError(e.to_string()))?;
    let r = client::call(
        target,
        trust,
        None,
        Request::post("/v1-k3s-double/op", body).header("Authorization", auth),
        timeout,
    )?;
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).to_string()));
    Ok((r.status, v))
}

pub fn resp_message(v: &Value) -> String {
    v.get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}
