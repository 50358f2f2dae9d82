//! Finding an upstream kubectl on this machine: the lab puts it in the node image (k3s embeds
//! upstream kubectl, so `k3s kubectl` in a node is the real one), and tests use it from the host.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `kubectl version --client -o json` → gitVersion, if the binary runs.
fn client_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.pointer("/clientVersion/gitVersion")
        .and_then(|g| g.as_str())
        .map(str::to_string)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// The newest `kubectl.1.NN` beside a file (the Cloud SDK ships them next to its dispatcher).
fn newest_versioned(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(minor) = name
            .strip_prefix("kubectl.1.")
            .and_then(|m| m.parse::<u32>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| minor > *b) {
            best = Some((minor, e.path()));
        }
    }
    best.map(|(_, p)| p)
}

/// The upstream kubectl to use: `BOOTSTRAP_LAB_KUBECTL`, else the newest versioned binary
/// beside the `kubectl` on PATH, else that `kubectl` itself when it is not a dispatcher.
pub fn find() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BOOTSTRAP_LAB_KUBECTL") {
        let p = PathBuf::from(p);
        client_version(&p).with_context(|| {
            format!(
                "BOOTSTRAP_LAB_KUBECTL={} does not run as kubectl",
                p.display()
            )
        })?;
        return Ok(p);
    }
    if let Some(k) = on_path("kubectl") {
        let real = std::fs::canonicalize(&k).unwrap_or(k.clone());
        if let Some(dir) = real.parent() {
            if let Some(v) = newest_versioned(dir) {
                if client_version(&v).is_some() {
                    return Ok(v);
                }
            }
        }
        if let Some(ver) = client_version(&real) {
            if !ver.contains("dispatcher") {
                return Ok(real);
            }
        }
    }
    bail!(
        "no upstream kubectl found: the lab needs one (k3s's `kubectl` is upstream kubectl, and the tests \
         run it). Install a static kubectl binary, e.g. from https://dl.k8s.io/release/v1.33.1/bin/linux/amd64/kubectl \
         into /usr/local/bin, or the `kubectl` package from pkgs.k8s.io; or point BOOTSTRAP_LAB_KUBECTL at one"
    )
}

/// The version a kubectl binary reports (`v1.33.1`).
pub fn version(bin: &Path) -> String {
    client_version(bin).unwrap_or_else(|| "unknown".into())
}
