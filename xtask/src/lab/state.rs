//! The lab's state file: everything `down` needs to undo, written before each step so a crash
//! half-way through `up` still leaves a complete list of what to remove.

use super::spec::NodeKind;
use super::util::{write_atomic, FileLock, ProcRef};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const LAB_ROOT: &str = "/var/lib/bootstrap-lab";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub addr: Ipv4Addr,
    pub kind: NodeKind,
    /// Network namespace of the node (a file under /run/netns).
    pub netns: String,
    /// The node's veth peer inside the bridge namespace (cut/heal flip it).
    pub peer_if: String,
    pub machine: String,
    /// The running `systemd-nspawn`, if any.
    pub nspawn: Option<ProcRef>,
    #[serde(default)]
    pub public: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub index: u8,
    pub bridge_netns: String,
    pub host_if: String,
    pub mirror_port: u16,
    pub mirror: Option<ProcRef>,
    pub rootfs: Option<PathBuf>,
    pub k3s_versions: Vec<String>,
    pub nodes: Vec<NodeState>,
    /// Whether this lab wrote its names into the machine's /etc/hosts (`down` removes them).
    #[serde(default)]
    pub hosts_file: bool,
    /// The lab's S3 servers (moto, s3.rs), HTTPS and plain HTTP, while started: `down` and
    /// `s3_down` stop them.
    #[serde(default)]
    pub s3_https: Option<ProcRef>,
    #[serde(default)]
    pub s3_http: Option<ProcRef>,
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(LAB_ROOT).join(name)
}

pub fn state_path(name: &str) -> PathBuf {
    lab_dir(name).join("state.json")
}

/// Serializes lab creation (index allocation) and teardown across processes.
pub fn global_lock() -> Result<FileLock> {
    FileLock::acquire(&Path::new(LAB_ROOT).join(".lock"))
}

impl State {
    pub fn load(name: &str) -> Result<State> {
        let path = state_path(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("no lab {name:?} (cannot read {})", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))
    }

    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomic(&state_path(&self.name), text.as_bytes())
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeState> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }
}

/// Names of the labs that have a state file.
pub fn list_labs() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(LAB_ROOT) {
        for e in rd.flatten() {
            if e.path().join("state.json").is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Indexes in use by other labs, read from their state files. Call with the global lock held.
pub fn used_indexes() -> Vec<u8> {
    list_labs()
        .iter()
        .filter_map(|n| State::load(n).ok())
        .map(|s| s.index)
        .collect()
}
