//! The lab's Debian package repository: the packages lab nodes install with apt beyond the
//! node rootfs (Longhorn's prerequisites, time sync, unattended-upgrades) and every dependency
//! of theirs the rootfs lacks, downloaded on the host once and served by each lab's mirror
//! under `/debian/`. Nodes reach no other package mirror, so what they install is what the
//! tool would install on a Debian VPS, from the same Debian archive, with real apt.
//!
//! The packages are resolved by apt itself, inside a throwaway overlay of the rootfs (so the
//! versions are the ones the rootfs's apt picks, and dependencies the rootfs already has are
//! left out), then indexed with `apt-ftparchive` into a dists-style repository. Unsigned:
//! nodes trust it with `[trusted=yes]` (apt still checks every file against the Release
//! file's hashes); see xtask/src/lab/README.md.

use super::node::mounts_under;
use super::rootfs::{CACHE_ROOT, DEBIAN_MIRROR, SUITE};
use super::util::{cmd, hex, run, sha256_file, write_mode, FileLock, SANE_PATH};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What lab nodes can install with apt, besides what the rootfs holds (each with its
/// dependencies, resolved on its own: chrony and systemd-timesyncd conflict).
pub const PACKAGES: &[&str] = &[
    // Longhorn's prerequisites (src/addons/longhorn.rs, PACKAGES).
    "open-iscsi",
    "nfs-common",
    "cryptsetup",
    "dmsetup",
    // Time sync, one or the other, and automatic security updates.
    "chrony",
    "systemd-timesyncd",
    "unattended-upgrades",
];

/// Bump when the way the repository is built or laid out changes.
const RECIPE_VERSION: &str = "2";

/// Where the mirror serves the repository: `http://<lab host>:<port>/debian`.
pub const URL_PATH: &str = "debian";
const COMPONENT: &str = "main";
/// The download directory apt uses inside the overlay.
const ARCHIVES: &str = "var/cache/lab-repo";

/// The node's `/etc/apt/sources.list`: the lab's mirror, and nothing else.
pub fn sources_list(mirror_url: &str) -> String {
    format!(
        "# The lab's package mirror (xtask/src/lab/repo.rs), unsigned: trusted for this lab only.\n\
         deb [trusted=yes] {mirror_url}/{URL_PATH} {SUITE} {COMPONENT}\n"
    )
}

fn cache_key(rootfs_status_sha: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!(
        "{RECIPE_VERSION}|{SUITE}|{DEBIAN_MIRROR}|{}|status={rootfs_status_sha}",
        PACKAGES.join(",")
    ));
    hex(&h.finalize())[..12].to_string()
}

fn lock_path(root: &Path, key: &str) -> PathBuf {
    root.join(format!(".lock-repo-{key}"))
}

/// The cached repository for `rootfs`, built on first use. Keyed by the package list and the
/// rootfs's installed packages (its dpkg status), so either changing rebuilds it; built under a
/// lock in a temporary directory and renamed into place.
pub fn ensure_repo(rootfs: &Path) -> Result<PathBuf> {
    let root = Path::new(CACHE_ROOT);
    let status = sha256_file(&rootfs.join("var/lib/dpkg/status"))?;
    let key = cache_key(&status);
    let dir = root.join(format!("repo-{key}"));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let _lock = FileLock::acquire(&lock_path(root, &key))?;
    if dir.join(".complete").is_file() {
        return Ok(dir); // someone else built it while we waited
    }
    let tmp = root.join(format!("repo-{key}.building"));
    remove_build_dir(&tmp)?;
    eprintln!("lab: building the nodes' package repository with apt (once, under a minute)...");
    let started = Instant::now();
    let out = build(rootfs, &tmp, &key)
        .with_context(|| format!("building the lab's package repository in {}", tmp.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&out, &dir)?;
    remove_build_dir(&tmp)?;
    eprintln!(
        "lab: package repository {} built in {:.0?}",
        dir.display(),
        started.elapsed()
    );
    prune_old_repos(root, &dir);
    Ok(dir)
}

/// Unmounts whatever an interrupted build left mounted under `dir`, then removes it.
fn remove_build_dir(dir: &Path) -> Result<()> {
    for m in mounts_under(dir) {
        unmount(&m)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove stale {}", dir.display()))?;
    }
    Ok(())
}

fn unmount(m: &Path) -> Result<()> {
    let m_s = m.to_string_lossy().into_owned();
    if run(cmd("umount", &[&m_s])).is_err() {
        run(cmd("umount", &["-l", &m_s])).with_context(|| format!("cannot unmount {m_s}"))?;
    }
    Ok(())
}

/// Unmounts the build's overlay when the build ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.0) {
            eprintln!("lab: {e:#}");
        }
    }
}

/// Runs `argv` chrooted into `root` with a clean environment (the host's proxy settings kept,
/// as debootstrap keeps them).
fn chroot(root: &Path, argv: &[&str]) -> Command {
    let mut c = cmd("chroot", &[&root.to_string_lossy()]);
    c.args(argv)
        .env_clear()
        .env("PATH", SANE_PATH)
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
    for (k, v) in std::env::vars_os() {
        let k_s = k.to_string_lossy().to_ascii_lowercase();
        if matches!(k_s.as_str(), "http_proxy" | "https_proxy" | "no_proxy") {
            c.env(k, v);
        }
    }
    c
}

/// `name` as the Debian pool names it: no epoch (apt's download names carry it as `%3a`,
/// which would not survive a URL).
fn pool_name(name: &str) -> String {
    let mut parts = name.splitn(3, '_');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(pkg), Some(ver), Some(rest)) => {
            let ver = ver.split_once("%3a").map_or(ver, |(_, v)| v);
            format!("{pkg}_{ver}_{rest}")
        }
        _ => name.to_string(),
    }
}

/// Resolves and downloads the packages in an overlay of `rootfs` under `tmp`, lays out the
/// repository in `tmp/repo` and returns that path.
fn build(rootfs: &Path, tmp: &Path, key: &str) -> Result<PathBuf> {
    let (upper, work, merged, out) = (
        tmp.join("upper"),
        tmp.join("work"),
        tmp.join("merged"),
        tmp.join("repo"),
    );
    for d in [&upper, &work, &merged, &out] {
        std::fs::create_dir_all(d)?;
    }
    super::util::mount_overlay(rootfs, &upper, &work, &merged)?;
    let _mounted = Mounted(merged.clone());

    // The chroot shares the host's network: the host's resolver, the Debian archive the
    // rootfs came from.
    if let Ok(resolv) = std::fs::read("/etc/resolv.conf") {
        let dest = merged.join("etc/resolv.conf");
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, resolv)?;
    }
    std::fs::write(
        merged.join("etc/apt/sources.list"),
        format!("deb {DEBIAN_MIRROR} {SUITE} {COMPONENT}\n"),
    )?;
    run(chroot(
        &merged,
        &["apt-get", "update", "-q", "-o", "Acquire::Retries=3"],
    ))
    .context("apt-get update (from the host, through the rootfs's apt)")?;
    let archives = format!("Dir::Cache::archives=/{ARCHIVES}/");
    for p in PACKAGES {
        run(chroot(
            &merged,
            &[
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "--download-only",
                "-o",
                "Acquire::Retries=3",
                "-o",
                &archives,
                p,
            ],
        ))
        .with_context(|| format!("downloading {p} and its dependencies"))?;
    }
    let arch = run(chroot(&merged, &["dpkg", "--print-architecture"]))?
        .trim()
        .to_string();

    let pool = out.join("pool").join(COMPONENT);
    std::fs::create_dir_all(&pool)?;
    let mut debs = Vec::new();
    for e in std::fs::read_dir(merged.join(ARCHIVES))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") {
            let to = pool_name(&name);
            std::fs::copy(e.path(), pool.join(&to))?;
            debs.push(to);
        }
    }
    debs.sort();
    // Every package is either in the rootfs already or in the repository now.
    for p in PACKAGES {
        let installed = run(chroot(
            &merged,
            &["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", p],
        ))
        .is_ok_and(|s| s.starts_with("ii"));
        if !installed && !debs.iter().any(|d| d.starts_with(&format!("{p}_"))) {
            bail!("apt downloaded no {p}");
        }
    }

    let dist = out.join("dists").join(SUITE);
    let bin = dist.join(COMPONENT).join(format!("binary-{arch}"));
    std::fs::create_dir_all(&bin)?;
    let mut c = cmd(
        "apt-ftparchive",
        &["packages", &format!("pool/{COMPONENT}")],
    );
    c.current_dir(&out);
    let packages = run(c).context("apt-ftparchive packages")?;
    std::fs::write(bin.join("Packages"), &packages)?;
    let gz = std::fs::File::create(bin.join("Packages.gz"))?;
    let mut c = cmd("gzip", &["-9", "-n", "-c"]);
    c.arg(bin.join("Packages")).stdout(gz);
    let status = c.status().context("cannot run gzip")?;
    if !status.success() {
        bail!("gzip Packages failed ({status})");
    }
    // Origin, Label, Suite, Version and Codename as the Debian archive's Release says them: a
    // partial mirror of it, as a node's apt pinning and unattended-upgrades' origin patterns
    // see it on a VPS.
    let mut fields = upstream_release_fields(&merged.join("var/lib/apt/lists"));
    fields.extend([
        ("Architectures".to_string(), arch.clone()),
        ("Components".to_string(), COMPONENT.to_string()),
        (
            "Description".to_string(),
            "Packages lab nodes install beyond their rootfs (xtask/src/lab/repo.rs)".to_string(),
        ),
    ]);
    let mut c = Command::new("apt-ftparchive");
    for (k, v) in &fields {
        c.args(["-o", &format!("APT::FTPArchive::Release::{k}={v}")]);
    }
    c.args(["release", &format!("dists/{SUITE}")])
        .current_dir(&out);
    // Captured, then written: apt-ftparchive would hash a half-written Release in its dir.
    let release = run(c).context("apt-ftparchive release")?;
    std::fs::write(dist.join("Release"), release)?;

    let mut manifest = format!("{key}\n");
    for d in &debs {
        manifest.push_str(d);
        manifest.push('\n');
    }
    write_mode(&out.join("packages.txt"), manifest.as_bytes(), 0o644)?;
    std::fs::write(out.join(".complete"), key.as_bytes())?;
    Ok(out)
}

/// The identifying fields of the Debian archive's Release file apt fetched into `lists`
/// (Debian's defaults for the suite where one is missing).
fn upstream_release_fields(lists: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_dir(lists)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(&format!("_dists_{SUITE}_InRelease"))
                || n.ends_with(&format!("_dists_{SUITE}_Release"))
        })
        .find_map(|e| std::fs::read_to_string(e.path()).ok())
        .unwrap_or_default();
    release_fields(&text)
}

fn release_fields(release: &str) -> Vec<(String, String)> {
    let defaults = [
        ("Origin", "Debian"),
        ("Label", "Debian"),
        ("Suite", SUITE),
        ("Version", ""),
        ("Codename", SUITE),
    ];
    defaults
        .iter()
        .filter_map(|(k, default)| {
            let found = release
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .map(str::trim)
                .filter(|v| !v.is_empty() && !v.contains(['\n', '=']));
            let v = found.unwrap_or(default);
            (!v.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Repositories a running lab's mirror serves (its `mirror/debian` link).
fn repos_in_use() -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(super::state::LAB_ROOT) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("mirror").join(URL_PATH)).ok())
        .collect()
}

/// Removes repositories of older recipes or rootfs builds that no lab serves, and builds
/// that were interrupted (their lock is free).
fn prune_old_repos(root: &Path, keep: &Path) {
    let in_use = repos_in_use();
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("repo-") else {
            continue;
        };
        if path == keep || in_use.contains(&path) {
            continue;
        }
        if let Some(key) = rest.strip_suffix(".building") {
            if let Ok(Some(_lock)) = FileLock::try_acquire(&lock_path(root, key)) {
                if let Err(e) = remove_build_dir(&path) {
                    eprintln!("lab: {e:#}");
                }
            }
            continue;
        }
        eprintln!("lab: removing old package repository {}", path.display());
        if let Err(e) = std::fs::remove_dir_all(&path) {
            eprintln!("lab: cannot remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_drop_the_epoch() {
        assert_eq!(
            pool_name("cryptsetup_2%3a2.6.1-4~deb12u2_amd64.deb"),
            "cryptsetup_2.6.1-4~deb12u2_amd64.deb"
        );
        assert_eq!(
            pool_name("open-iscsi_2.1.8-1_amd64.deb"),
            "open-iscsi_2.1.8-1_amd64.deb"
        );
    }

    #[test]
    fn nodes_use_only_the_labs_mirror() {
        let s = sources_list("http://10.213.7.1:8080");
        let lines: Vec<&str> = s.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["deb [trusted=yes] http://10.213.7.1:8080/debian bookworm main"]
        );
    }

    #[test]
    fn release_fields_are_debians() {
        let inrelease = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\nLabel: Debian\nSuite: oldstable\nVersion: 12.15\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nSHA256:\n 0123 5 main/Release\n";
        let f = release_fields(inrelease);
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Origin"), Some("Debian"));
        assert_eq!(get("Suite"), Some("oldstable"));
        assert_eq!(get("Version"), Some("12.15"));
        assert_eq!(get("Codename"), Some("bookworm"));
        let f = release_fields("");
        assert_eq!(
            f,
            [
                ("Origin".to_string(), "Debian".to_string()),
                ("Label".to_string(), "Debian".to_string()),
                ("Suite".to_string(), "bookworm".to_string()),
                ("Codename".to_string(), "bookworm".to_string()),
            ]
        );
    }

    #[test]
    fn the_key_follows_the_package_list_and_the_rootfs() {
        assert_ne!(cache_key("a"), cache_key("b"));
        assert_eq!(cache_key("a"), cache_key("a"));
    }
}
