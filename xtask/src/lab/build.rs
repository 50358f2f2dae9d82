//! Building the k3s double and finding the xtask binary (which also runs the mirror).

use super::util::{cmd, run};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if let Ok(m) = meta.modified() {
                newest = newest.max(Some(m));
            }
        }
    }
    newest
}

/// Builds the k3s double reporting `version` and returns the path of a copy kept per version
/// (`target/k3s-double/<version>/k3s`). Skips cargo when that copy is newer than the double's
/// sources.
pub fn build_double(version: &str) -> Result<PathBuf> {
    if version.is_empty() || version.contains('/') || version.starts_with('.') {
        bail!("invalid k3s version {version:?}");
    }
    let root = workspace_root();
    let crate_dir = root.join("tests/k3s-double");
    let out = target_dir().join("k3s-double").join(version).join("k3s");
    let sources = [
        newest_mtime(&crate_dir.join("src")),
        std::fs::metadata(crate_dir.join("Cargo.toml"))
            .and_then(|m| m.modified())
            .ok(),
        std::fs::metadata(crate_dir.join("build.rs"))
            .and_then(|m| m.modified())
            .ok(),
        // Embedded with include_str!: the chart objects the double creates.
        std::fs::metadata(crate_dir.join("charts.json"))
            .and_then(|m| m.modified())
            .ok(),
    ]
    .into_iter()
    .flatten()
    .max();
    if let (Ok(built), Some(src)) = (std::fs::metadata(&out).and_then(|m| m.modified()), sources) {
        if built > src {
            return Ok(out);
        }
    }
    // One build at a time: parallel tests asking for different versions would otherwise race
    // on target/double/k3s between build and copy.
    let _lock = super::util::FileLock::acquire(&target_dir().join(".lab-double.lock"))?;
    let mut c = cmd(
        &cargo(),
        &[
            "build",
            "--quiet",
            "--profile",
            "double",
            "-p",
            "k3s-double",
        ],
    );
    c.current_dir(&root).env("K3S_DOUBLE_VERSION", version);
    run(&mut c).context("building the k3s double failed")?;
    let built = target_dir().join("double/k3s");
    let dir = out.parent().context("no parent")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".k3s.tmp");
    std::fs::copy(&built, &tmp).with_context(|| format!("cannot copy {}", built.display()))?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The xtask binary, to run the mirror as its own process: ourselves when we are xtask,
/// otherwise (a test binary linking the library) built on demand.
pub fn xtask_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BOOTSTRAP_LAB_XTASK") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "xtask") {
        return Ok(me);
    }
    let _lock = super::util::FileLock::acquire(&target_dir().join(".lab-xtask.lock"))?;
    let mut c = cmd(
        &cargo(),
        &["build", "--quiet", "-p", "xtask", "--bin", "xtask"],
    );
    c.current_dir(workspace_root());
    run(&mut c).context("building xtask (for the lab mirror) failed")?;
    Ok(target_dir().join("debug/xtask"))
}
