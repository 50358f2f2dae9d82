//! The shared, read-only Debian root filesystem every node boots from (as overlayfs lower dir).

use super::util::{cmd, hex, run, sh, write_mode, FileLock};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const CACHE_ROOT: &str = "/var/cache/bootstrap-lab";
pub const SUITE: &str = "bookworm";
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Everything a node needs to look like a small VPS: systemd as init, sshd, sudo, and what the
/// tool and the k3s double use on hosts (curl downloads, iptables, kmod, procps).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "iproute2",
    "sudo",
    "ca-certificates",
    "iptables",
    "kmod",
    "curl",
    "procps",
];

/// Bump when the customisation below changes, so old caches are not reused.
const RECIPE_VERSION: &str = "5";

/// Where the node image keeps upstream kubectl; the k3s double's `kubectl` execs it
/// (tests/k3s-double/src/kubectl.rs). Off PATH, so install.sh's link logic is unaffected.
pub const NODE_KUBECTL: &str = "usr/lib/k3s-double/kubectl";

/// Host commands the lab runs, and the Debian package that provides each.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("ssh-keygen", "openssh-client"),
    ("ssh", "openssh-client"),
    ("tar", "tar"),
    ("gzip", "gzip"),
    ("mount", "mount"),
    // NAT'd lab nodes (a router namespace), and the TLS checks tests make from the host.
    ("iptables", "iptables"),
    ("openssl", "openssl"),
    // Indexes the lab's package repository (repo.rs).
    ("apt-ftparchive", "apt-utils"),
    // `cargo xtask test` validates vagrant/Vagrantfile with Debian's Vagrant.
    ("vagrant", "vagrant"),
];

/// Installs whatever host tool is missing (CI starts from a fresh Debian machine).
pub fn ensure_host_tools() -> Result<()> {
    let mut missing: Vec<&str> = HOST_TOOLS
        .iter()
        .filter(|(tool, _)| !super::util::have(tool))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// Installs Debian packages on the host with apt (under the cache's apt lock).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let _lock = FileLock::acquire(&Path::new(CACHE_ROOT).join(".lock-apt"))?;
    eprintln!("lab: installing host packages: {}", packages.join(" "));
    run(cmd("apt-get", &["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(packages);
    run(cmd("apt-get", &args).env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

fn cache_key(kubectl_sha: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!(
        "{RECIPE_VERSION}|{SUITE}|{DEBIAN_MIRROR}|{}|kubectl={kubectl_sha}",
        PACKAGES.join(",")
    ));
    hex(&h.finalize())[..12].to_string()
}

/// The cached rootfs, built on first use. Built under a lock in a temporary directory and
/// renamed into place, so an interrupted build never leaves a half cache behind.
pub fn ensure_rootfs() -> Result<PathBuf> {
    let root = Path::new(CACHE_ROOT);
    let kubectl = super::kubectl::find()?;
    // The binary's identity without hashing 60 MB on every lab start: path, size and mtime.
    let m = std::fs::metadata(&kubectl)?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let key = cache_key(&format!("{}:{}:{mtime}", kubectl.display(), m.len()));
    let dir = root.join(format!("rootfs-{key}"));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let _lock = FileLock::acquire(&root.join(format!(".lock-rootfs-{key}")))?;
    if dir.join(".complete").is_file() {
        return Ok(dir); // someone else built it while we waited
    }
    let tmp = root.join(format!("rootfs-{key}.building"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    eprintln!("lab: building the node rootfs with debootstrap (once, ~1-2 min)...");
    let include = format!("--include={}", PACKAGES.join(","));
    let tmp_s = tmp.to_string_lossy().into_owned();
    run(cmd(
        "debootstrap",
        &["--variant=minbase", &include, SUITE, &tmp_s, DEBIAN_MIRROR],
    ))
    .context("debootstrap failed")?;
    customize(&tmp)?;
    let dest = tmp.join(NODE_KUBECTL);
    std::fs::create_dir_all(dest.parent().context("no parent")?)?;
    std::fs::copy(&kubectl, &dest)
        .with_context(|| format!("cannot copy {} into the node image", kubectl.display()))?;
    std::fs::write(tmp.join(".complete"), key.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    prune_old_caches(root, &dir);
    Ok(dir)
}

/// Removes rootfs caches of older recipes that no running node uses as its lower dir.
fn prune_old_caches(root: &Path, keep: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let in_use = mounts.contains(&format!("lowerdir={}", path.display()));
        if name.starts_with("rootfs-") && path != keep && !in_use {
            eprintln!("lab: removing old rootfs cache {}", path.display());
            if let Err(e) = std::fs::remove_dir_all(&path) {
                eprintln!("lab: cannot remove {}: {e}", path.display());
            }
        }
    }
}

fn chroot(root: &Path, args: &[&str]) -> Result<String> {
    let mut c = cmd("chroot", &[&root.to_string_lossy()]);
    c.args(args).env("PATH", super::util::SANE_PATH);
    run(&mut c)
}

fn customize(root: &Path) -> Result<()> {
    // Host keys are per node (generated before each first boot); a shared one would make
    // every node the same host to SSH.
    for e in std::fs::read_dir(root.join("etc/ssh"))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(e.path())?;
        }
    }
    write_mode(
        &root.join("etc/ssh/sshd_config.d/lab.conf"),
        b"# bootstrap lab\nHostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n",
        0o644,
    )?;

    chroot(root, &["useradd", "-m", "-s", "/bin/bash", "deploy"])?;
    write_mode(
        &root.join("etc/sudoers.d/deploy"),
        b"deploy ALL=(ALL:ALL) NOPASSWD:ALL\n",
        0o440,
    )?;
    // In the sudo group but with a password nobody knows: "sudo without a password" fails.
    chroot(
        root,
        &["useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "nosudo"],
    )?;
    let password = super::util::random_hex(16)?;
    let mut c = cmd("chroot", &[&root.to_string_lossy(), "chpasswd"]);
    c.env("PATH", super::util::SANE_PATH)
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().context("cannot run chpasswd")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("no stdin for chpasswd")?;
        stdin.write_all(format!("nosudo:{password}\n").as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("chpasswd failed");
    }

    // Units that fail, hang or waste CPU in a container.
    let mask = [
        "systemd-networkd-wait-online.service",
        "console-getty.service",
        "getty@.service",
        "serial-getty@.service",
        "getty-static.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
        // Remounting an overlay root is meaningless in a container and fails now and then under load.
        "systemd-remount-fs.service",
        // Only writes a runlevel record to utmp, and times out on the bus when 30 nodes boot.
        "systemd-update-utmp-runlevel.service",
        // systemd-timesyncd is not masked: the lab's repository has it, and a real install
        // enables it (its ConditionVirtualization=!container then skips it, as
        // ConditionCapability=CAP_SYS_TIME skips chrony: see README.md here).
    ];
    for unit in mask {
        let link = root.join("etc/systemd/system").join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link)
            .with_context(|| format!("cannot mask {unit}"))?;
    }

    // Empty: each node writes its own before boot.
    std::fs::write(root.join("etc/machine-id"), b"")?;
    std::fs::write(root.join("etc/hostname"), b"localhost\n")?;
    // apt: the lab's own mirror only, written per node (node.rs personalize; repo.rs), and
    // no package lists from the archive debootstrap used: nodes cannot reach it.
    std::fs::write(
        root.join("etc/apt/sources.list"),
        b"# Written per node when its lab is made: the lab's package mirror.\n",
    )?;
    for e in std::fs::read_dir(root.join("var/lib/apt/lists"))?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) && e.file_name() != "lock" {
            std::fs::remove_file(e.path())?;
        }
    }
    // Package cache: not needed, and it makes the rootfs twice as big.
    let _ = sh(
        "sh",
        &[
            "-c",
            &format!(
                "rm -f {}/var/cache/apt/archives/*.deb",
                root.to_string_lossy()
            ),
        ],
    );
    Ok(())
}
