//! One node: its overlay root, the files written before first boot, the nspawn process, and
//! getting commands into it.

use super::spec::LabNode;
use super::util::{cmd, random_hex, run, write_mode, ProcRef, SANE_PATH};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct NodePaths {
    pub dir: PathBuf,
}

impl NodePaths {
    pub fn new(lab_dir: &Path, node: &str) -> NodePaths {
        NodePaths {
            dir: lab_dir.join("nodes").join(node),
        }
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
}

pub fn is_mountpoint(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m == path)
}

/// Mount points at or below `path`, deepest first (the order to unmount them in).
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(path))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

pub fn mount_overlay(lower: &Path, p: &NodePaths) -> Result<()> {
    for d in [p.upper(), p.work(), p.merged()] {
        std::fs::create_dir_all(&d)?;
    }
    if is_mountpoint(&p.merged()) {
        return Ok(());
    }
    super::util::mount_overlay(lower, &p.upper(), &p.work(), &p.merged())?;
    Ok(())
}

fn passwd_ids(root: &Path, user: &str) -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == user {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("no user {user} in the node rootfs")
}

/// Writes the node's identity into its (mounted) root before the first boot: machine-id,
/// hostname, hosts, apt's sources (`apt_sources`: the lab's mirror), its SSH host key, and the
/// operator key for root, deploy and nosudo. Returns the host public key line
/// (`ssh-ed25519 AAAA...`).
pub fn personalize(
    p: &NodePaths,
    node: &LabNode,
    all: &[LabNode],
    host_addr: Ipv4Addr,
    apt_sources: &str,
    operator_pub: &str,
) -> Result<String> {
    let root = p.merged();
    std::fs::write(root.join("etc/apt/sources.list"), apt_sources)?;
    std::fs::write(
        root.join("etc/machine-id"),
        format!("{}\n", random_hex(16)?),
    )?;
    std::fs::write(root.join("etc/hostname"), format!("{}\n", node.name))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    hosts.push_str(&format!("{host_addr}\tlab-host\n"));
    for n in all {
        hosts.push_str(&format!("{}\t{}\n", n.addr, n.name));
    }
    // DNS names resolve to the address others reach a node at (NAT'd or not), as a public
    // DNS record would.
    for n in all {
        if let Some(d) = &n.dns {
            hosts.push_str(&format!("{}\t{d}\n", n.reachable()));
        }
    }
    std::fs::write(root.join("etc/hosts"), hosts)?;

    let key = root.join("etc/ssh/ssh_host_ed25519_key");
    if !key.exists() {
        run(cmd(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &format!("root@{}", node.name),
                "-f",
                &key.to_string_lossy(),
            ],
        ))?;
    }
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    let public: Vec<&str> = public.split_whitespace().take(2).collect();

    for (user, home) in [
        ("root", "root"),
        ("deploy", "home/deploy"),
        ("nosudo", "home/nosudo"),
    ] {
        let (uid, gid) = passwd_ids(&root, user)?;
        let ssh_dir = root.join(home).join(".ssh");
        std::fs::create_dir_all(&ssh_dir)?;
        std::fs::set_permissions(
            &ssh_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let ak = ssh_dir.join("authorized_keys");
        write_mode(&ak, operator_pub.as_bytes(), 0o600)?;
        std::os::unix::fs::chown(&ssh_dir, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&ak, Some(uid), Some(gid))?;
    }
    Ok(public.join(" "))
}

/// Hierarchies where systemd inside a container keeps its units: the unified one on a pure
/// cgroup v2 host, `name=systemd` (and `unified` if present) on a hybrid host.
fn cgroup_bases() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|d| root.join(d))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

fn cgroup_dirs(machine: &str) -> Vec<PathBuf> {
    cgroup_bases()
        .into_iter()
        .map(|b| b.join("bootstrap-lab").join(machine))
        .collect()
}

/// Creates the node's own cgroups and returns their `cgroup.procs` files. Without systemd on
/// the host nobody gives nspawn a scope: every container would share its parent's cgroup and
/// the containers' systemds would tear down each other's units (exit status 219/CGROUP).
fn prepare_cgroups(machine: &str) -> Result<Vec<std::ffi::CString>> {
    let mut out = Vec::new();
    for dir in cgroup_dirs(machine) {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
        let procs = dir.join("cgroup.procs");
        out.push(std::ffi::CString::new(
            procs.to_string_lossy().into_owned(),
        )?);
    }
    Ok(out)
}

/// Removes the node's cgroups (and whatever empty sub-cgroups its systemd left), deepest first.
pub fn remove_cgroups(machine: &str) {
    fn rm(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for dir in cgroup_dirs(machine) {
        rm(&dir);
    }
}

/// Boots the node: `systemd-nspawn` with the node's systemd as init, detached in its own
/// session and cgroup so it outlives the caller, console to `console.log`.
pub fn boot(p: &NodePaths, machine: &str, netns: &str) -> Result<ProcRef> {
    remove_cgroups(machine);
    let cgroup_procs = prepare_cgroups(machine)?;
    let console = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.console())?;
    let mut c = Command::new("systemd-nspawn");
    c.args([
        "--quiet",
        "--boot",
        // The host's PID 1 is not systemd here: no scope unit, no machined registration.
        "--keep-unit",
        "--register=no",
        "--console=passive",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
    ])
    .arg(format!("--directory={}", p.merged().display()))
    .arg(format!("--machine={machine}"))
    .arg(format!("--network-namespace-path=/run/netns/{netns}"))
    .env("PATH", SANE_PATH)
    // The node's own network namespace: its net.* sysctls are its own to set, as a VPS's are
    // (nspawn leaves all of /proc/sys read-only with a namespace given by path). The rest of
    // /proc/sys stays read-only: it is the host's kernel.
    .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
    .stdin(Stdio::null())
    .stdout(console.try_clone()?)
    .stderr(console);
    // SAFETY: only async-signal-safe calls (setsid, open, write, close) on memory prepared
    // before the fork.
    unsafe {
        c.pre_exec(move || {
            libc::setsid();
            for procs in &cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = c.spawn().context("cannot start systemd-nspawn")?;
    ProcRef::of(child.id())
}

/// The container's init: the child of nspawn that lives in another PID namespace.
pub fn container_init(nspawn: &ProcRef) -> Result<i32> {
    if !nspawn.alive() {
        bail!("the node is not running");
    }
    let own_ns = std::fs::read_link(format!("/proc/{}/ns/pid", nspawn.pid))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nspawn.pid))
            .unwrap_or_default();
        for c in children.split_whitespace() {
            let Ok(pid) = c.parse::<i32>() else { continue };
            if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) {
                if ns != own_ns {
                    return Ok(pid);
                }
            }
        }
        if Instant::now() > deadline || !nspawn.alive() {
            bail!(
                "cannot find the init process of container (nspawn PID {})",
                nspawn.pid
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `argv` inside the container's namespaces (works without sshd), with a clean env.
pub fn exec(init_pid: i32, argv: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    if argv.is_empty() {
        bail!("nothing to run");
    }
    let mut c = Command::new("nsenter");
    c.arg(format!("--target={init_pid}"))
        .args([
            "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd",
        ])
        .arg("--")
        .args(argv)
        .env_clear()
        .env("PATH", SANE_PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("USER", "root")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Some(input) = stdin else {
        return c
            .stdin(Stdio::null())
            .output()
            .context("cannot run nsenter");
    };
    let mut child = c
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run nsenter")?;
    let mut pipe = child.stdin.take().context("no stdin pipe")?;
    let input = input.to_vec();
    // Fed from a thread so a command that writes a lot before reading cannot deadlock us.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// Whether an SSH server answers on `addr:22` with its banner.
pub fn ssh_banner(addr: Ipv4Addr) -> bool {
    let sa = SocketAddr::from((addr, 22));
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-")
}

/// Waits until every node answers with an SSH banner; fails early if a node's nspawn died.
pub fn wait_ssh(nodes: &[(String, Ipv4Addr, ProcRef, PathBuf)], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<_> = nodes.iter().collect();
    while !pending.is_empty() {
        let results: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .iter()
                .map(|(_, addr, _, _)| s.spawn(move || ssh_banner(*addr)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(false))
                .collect()
        });
        let mut still = Vec::new();
        for (n, ok) in pending.into_iter().zip(results) {
            if ok {
                continue;
            }
            let (name, _, proc_ref, console) = n;
            if !proc_ref.alive() {
                bail!(
                    "node {name} stopped while booting; console:\n{}",
                    tail(console, 30)
                );
            }
            still.push(n);
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<&str> = pending.iter().map(|n| n.0.as_str()).collect();
            bail!(
                "sshd did not answer within {timeout:?} on: {}",
                names.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
