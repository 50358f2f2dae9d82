//! `cargo xtask test` (what CI runs) and `cargo xtask demo` (the main job on
//! the local lab). Both work from a fresh clone on a fresh Debian machine:
//! they install what they need first.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::lab::{self, Lab, LabSpec};

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Install host packages, build the lab rootfs once, then fmt, clippy and
/// every test of the workspace; fail if a test left a lab behind.
pub fn test(extra: &[String]) -> Result<()> {
    let root = lab::workspace_root();
    lab::prepare().context("preparing the lab (host packages, rootfs, S3 venv)")?;
    let kubectl = lab::kubectl::find()?;
    eprintln!(
        "xtask: upstream kubectl {} ({}) runs in the lab's nodes and in the tests",
        lab::kubectl::version(&kubectl),
        kubectl.display()
    );
    let labs_before: BTreeSet<String> = lab::list_labs().into_iter().collect();
    vagrant_validate(&root)?;
    cargo(&root, &["fmt", "--all", "--", "--check"])?;
    cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    // The switches that make lab tests skip themselves (the Vagrant mode) or pass whatever
    // they render (BLESS) are not CI's: cleared, and any test that still skips fails the run.
    for switch in ["BOOTSTRAP_E2E", "BOOTSTRAP_E2E_INVENTORY", "BLESS"] {
        if std::env::var_os(switch).is_some() {
            eprintln!("xtask: {switch} is set; the tests run without it");
        }
        std::env::remove_var(switch);
    }
    let skip_log = root.join("target/skipped-tests.log");
    let _ = std::fs::remove_file(&skip_log);
    std::env::set_var("BOOTSTRAP_SKIP_LOG", &skip_log);
    let result = cargo(&root, &args);
    let left: Vec<String> = lab::list_labs()
        .into_iter()
        .filter(|l| !labs_before.contains(l))
        .collect();
    for l in &left {
        eprintln!("xtask: a test left lab {l} behind; removing it");
        let _ = Lab::down_by_name(l);
    }
    result?;
    if !left.is_empty() {
        bail!("tests left labs behind: {}", left.join(", "));
    }
    let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
    if !skipped.trim().is_empty() {
        bail!("tests skipped themselves, which CI does not allow:\n{skipped}");
    }
    Ok(())
}

/// `vagrant validate` of vagrant/Vagrantfile with Debian's Vagrant (no provider can run here:
/// nested KVM does not boot, so the providers' own settings are not validated). The
/// Vagrantfile needs the operator's public key: a throwaway one is made for the check.
fn vagrant_validate(root: &Path) -> Result<()> {
    let dir = root.join("target/vagrant-validate");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .context("running ssh-keygen")?;
    if !st.success() {
        bail!("ssh-keygen failed ({st})");
    }
    eprintln!("xtask: vagrant validate vagrant/Vagrantfile");
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(root.join("vagrant"))
        .env("BOOTSTRAP_SSH_KEY", &key)
        .env("VAGRANT_HOME", dir.join("vagrant.d"))
        .output()
        .context("running vagrant (Debian package vagrant)")?;
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.contains("validated successfully") {
        bail!(
            "vagrant validate failed ({}):
{said}",
            out.status
        );
    }
    Ok(())
}

/// Boot a 3-node lab named `demo`, converge it with `bootstrap up`, show
/// `bootstrap status`. The lab stays up for exploring.
pub fn demo() -> Result<()> {
    let root = lab::workspace_root();
    lab::prepare()?;
    cargo(&root, &["build", "--release", "-p", "bootstrap"])?;
    let _ = Lab::down_by_name("demo");
    let lab = Lab::up(&LabSpec::new("demo", 3))?;
    let inv = lab.inventory_path();
    let bin = root.join("target/release/bootstrap");
    for cmd in ["up", "status"] {
        eprintln!("\n$ bootstrap {cmd} {}", inv.display());
        let status = Command::new(&bin)
            .arg(cmd)
            .arg(&inv)
            .status()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !status.success() {
            bail!("bootstrap {cmd} failed ({status}); the lab is still up: cargo xtask lab down --name demo");
        }
    }
    eprintln!(
        "\nThe lab stays up. Try:\n  {bin} plan {inv}\n  cargo xtask lab exec --name demo master-1 -- k3s kubectl get nodes\n  cargo xtask lab down --name demo",
        bin = bin.display(),
        inv = inv.display()
    );
    Ok(())
}
