//! The lab: Debian containers booted with `systemd-nspawn` on a private bridge, reachable from
//! the host, with an HTTP mirror serving k3s-double releases and a Debian package repository.
//! See xtask/src/lab/README.md and DESIGN.md, "The lab".

mod build;
mod hosts;
pub mod kubectl;
mod mirror;
mod net;
mod node;
mod repo;
mod rootfs;
mod s3;
mod spec;
mod state;
mod util;

pub use build::{build_double, workspace_root};
pub use mirror::{percent_decode, serve as serve_mirror};
pub use s3::{S3Object, S3Server, MOTO_REQUIREMENT, S3_HTTPS_PORT, S3_HTTP_PORT};
pub use spec::{
    dns_name, plan_nodes, render_inventory, validate_name, InventoryInput, LabNode, LabSpec,
    NodeKind, DEFAULT_K3S_VERSION, MIRROR_PORT,
};
pub use state::{list_labs, LAB_ROOT};

/// Install the host packages the lab needs, build the node rootfs and the S3 server's venv, once;
/// what `Lab::up` would do first, done up front (CI, demo).
pub fn prepare() -> anyhow::Result<()> {
    // An upstream kubectl first: without one there is no lab, and the message says what to do.
    kubectl::find()?;
    rootfs::ensure_host_tools()?;
    let rootfs = rootfs::ensure_rootfs()?;
    repo::ensure_repo(&rootfs)?;
    // The Python venv with moto's S3 server and boto3 (`Lab::s3_up`).
    s3::ensure_venv()?;
    Ok(())
}

use anyhow::{bail, Context, Result};
use node::NodePaths;
use state::{NodeState, State};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use util::{cmd, run, ProcRef};

/// How long `up`/`start` wait for sshd on every node.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a node gets to power off cleanly before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Power the node off (its disk survives). Its address goes silent: packets to it are
    /// dropped, not refused, as for a real host that is off.
    Stop,
    /// Boot a stopped node again on the same disk, wait for sshd.
    Start,
    /// Take the node's link down at the bridge.
    Cut,
    /// Bring it back up.
    Heal,
    /// Stop ssh.service and kill every sshd, sessions included.
    KillSshd,
    /// Start ssh.service again and wait for its banner.
    RestartSshd,
    /// Slow the node's link to 2 Mbit/s each way (a long upload).
    Throttle,
    /// Give the link its speed back.
    Unthrottle,
    /// Drop what the node sends to port 6443: it cannot reach a supervisor, so it cannot join.
    BlockJoin,
    /// Let it through again.
    UnblockJoin,
}

impl std::str::FromStr for Fault {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Fault> {
        Ok(match s {
            "stop" => Fault::Stop,
            "start" => Fault::Start,
            "cut" => Fault::Cut,
            "heal" => Fault::Heal,
            "kill-sshd" => Fault::KillSshd,
            "restart-sshd" => Fault::RestartSshd,
            "throttle" => Fault::Throttle,
            "unthrottle" => Fault::Unthrottle,
            "block-join" => Fault::BlockJoin,
            "unblock-join" => Fault::UnblockJoin,
            _ => bail!(
                "unknown fault {s:?} (stop|start|cut|heal|kill-sshd|restart-sshd|throttle|unthrottle|block-join|unblock-join)"
            ),
        })
    }
}

pub struct Lab {
    name: String,
    dir: PathBuf,
    index: u8,
    nodes: Vec<LabNode>,
    state: Mutex<State>,
}

fn require_root() -> Result<()> {
    // SAFETY: trivial syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces, mounts, nspawn)");
    }
    Ok(())
}

/// systemd in each container takes inotify instances; the defaults run out past ~20 nodes.
fn raise_inotify_limits() {
    for (key, min) in [
        ("max_user_instances", 8192u64),
        ("max_user_watches", 524288),
    ] {
        let path = format!("/proc/sys/fs/inotify/{key}");
        let cur: u64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cur < min {
            if let Err(e) = std::fs::write(&path, min.to_string()) {
                eprintln!("lab: cannot raise {path} to {min}: {e}");
            }
        }
    }
}

fn nodes_of(state: &State) -> Vec<LabNode> {
    state
        .nodes
        .iter()
        .map(|n| LabNode {
            name: n.name.clone(),
            addr: n.addr,
            kind: n.kind,
            public: n.public,
            dns: n.dns.clone(),
        })
        .collect()
}

/// Checks the name is free, picks the lowest free subnet index and writes the first state
/// file, all under the global lock so parallel `up`s never collide.
fn reserve(spec: &LabSpec, rootfs: &Path) -> Result<State> {
    std::fs::create_dir_all(LAB_ROOT)?;
    let _lock = state::global_lock()?;
    let dir = state::lab_dir(&spec.name);
    if dir.exists() {
        bail!(
            "lab {:?} already exists ({}); remove it first with `cargo xtask lab down --name {}`",
            spec.name,
            dir.display(),
            spec.name
        );
    }
    let used = state::used_indexes();
    let index = (1u8..=250)
        .find(|i| !used.contains(i) && !net::link_exists(&format!("bsl{i}")))
        .context("no free lab subnet (250 labs exist?)")?;
    let planned = plan_nodes(spec, index);
    let st = State {
        name: spec.name.clone(),
        index,
        bridge_netns: format!("bsl-{}", spec.name),
        host_if: format!("bsl{index}"),
        mirror_port: MIRROR_PORT,
        mirror: None,
        rootfs: Some(rootfs.to_path_buf()),
        k3s_versions: spec.k3s_versions.clone(),
        nodes: planned
            .iter()
            .map(|n| NodeState {
                name: n.name.clone(),
                addr: n.addr,
                kind: n.kind,
                netns: format!("bsl-{}-{}", spec.name, n.name),
                peer_if: n.name.clone(),
                machine: format!("bsl{index}-{}", n.name),
                nspawn: None,
                public: n.public,
                dns: n.dns.clone(),
            })
            .collect(),
        hosts_file: false,
        s3_https: None,
        s3_http: None,
    };
    std::fs::create_dir_all(dir.join("nodes"))?;
    st.save()?;
    Ok(st)
}

impl Lab {
    /// Builds and boots a lab; on failure removes whatever it had created.
    pub fn up(spec: &LabSpec) -> Result<Lab> {
        spec.validate()?;
        require_root()?;
        rootfs::ensure_host_tools()?;
        let rootfs = rootfs::ensure_rootfs()?;
        let repo = repo::ensure_repo(&rootfs)?;
        let mut doubles = Vec::new();
        for v in &spec.k3s_versions {
            doubles.push((v.clone(), build_double(v)?));
        }
        let xtask = build::xtask_binary()?;
        raise_inotify_limits();
        let st = reserve(spec, &rootfs)?;
        let lab = Lab::from_state(st);
        match lab.bring_up(&rootfs, &repo, &doubles, &xtask) {
            Ok(()) => Ok(lab),
            Err(e) => {
                if std::env::var_os("BOOTSTRAP_LAB_KEEP").is_none() {
                    if let Err(e2) = lab.down() {
                        eprintln!("lab: cleanup after failed up also failed: {e2:#}");
                    }
                }
                Err(e.context(format!("lab up {:?} failed", spec.name)))
            }
        }
    }

    fn from_state(st: State) -> Lab {
        Lab {
            name: st.name.clone(),
            dir: state::lab_dir(&st.name),
            index: st.index,
            nodes: nodes_of(&st),
            state: Mutex::new(st),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bring_up(
        &self,
        rootfs: &Path,
        repo: &Path,
        doubles: &[(String, PathBuf)],
        xtask: &Path,
    ) -> Result<()> {
        let st = self.state().clone();
        net::setup_bridge(&st.bridge_netns, &st.host_if, self.host_addr())?;

        let key = self.operator_key_path();
        run(cmd(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                &format!("operator@lab-{}", self.name),
                "-f",
                &key.to_string_lossy(),
            ],
        ))?;
        let operator_pub = std::fs::read_to_string(key.with_extension("pub"))?;

        std::fs::create_dir_all(self.mirror_dir())?;
        for (version, binary) in doubles {
            mirror::publish(&self.mirror_dir(), version, binary)?;
        }
        // The package repository, served from the cache (which keeps it while a lab links it).
        std::os::unix::fs::symlink(repo, self.mirror_dir().join(repo::URL_PATH))
            .context("cannot link the package repository into the mirror")?;
        self.start_mirror(xtask)?;
        let apt_sources = repo::sources_list(&self.mirror_url());

        let public_net = format!("{}/24", spec::public_host(self.index, 0));
        let nat: Vec<(Ipv4Addr, Ipv4Addr)> = self
            .nodes
            .iter()
            .filter_map(|n| n.public.map(|p| (p, n.addr)))
            .collect();
        if !nat.is_empty() {
            net::setup_nat(
                &st.bridge_netns,
                &st.host_if,
                spec::router_addr(self.index),
                &public_net,
                &nat,
            )?;
        }
        let names: Vec<(String, String)> = self
            .nodes
            .iter()
            .filter_map(|n| n.dns.clone().map(|d| (n.reachable().to_string(), d)))
            .collect();
        if !names.is_empty() {
            let _lock = state::global_lock()?;
            {
                let mut g = self.state();
                g.hosts_file = true;
                g.save()?;
            }
            hosts::add(&self.name, &names)?;
        }
        let mut known_hosts = String::new();
        for n in &st.nodes {
            let p = NodePaths::new(&self.dir, &n.name);
            net::setup_node(
                &st.bridge_netns,
                &n.netns,
                &n.peer_if,
                n.addr,
                self.host_addr(),
            )?;
            if !nat.is_empty() {
                net::route_public(&n.netns, spec::router_addr(self.index), &public_net)?;
            }
            node::mount_overlay(rootfs, &p)?;
            let lab_node = self.node(&n.name).context("node vanished")?;
            let host_key = node::personalize(
                &p,
                lab_node,
                &self.nodes,
                self.host_addr(),
                &apt_sources,
                &operator_pub,
            )?;
            let mut names = vec![n.addr.to_string()];
            names.extend(n.public.map(|a| a.to_string()));
            names.extend(n.dns.clone());
            known_hosts.push_str(&format!("{} {host_key}\n", names.join(",")));
        }
        util::write_mode(&self.known_hosts_path(), known_hosts.as_bytes(), 0o644)?;
        self.write_inventory()?;

        let mut waits = Vec::new();
        for n in &st.nodes {
            let p = NodePaths::new(&self.dir, &n.name);
            let proc_ref = node::boot(&p, &n.machine, &n.netns)?;
            let mut guard = self.state();
            if let Some(ns) = guard.node_mut(&n.name) {
                ns.nspawn = Some(proc_ref);
            }
            guard.save()?;
            waits.push((n.name.clone(), n.addr, proc_ref, p.console()));
        }
        node::wait_ssh(&waits, BOOT_TIMEOUT)?;
        let names: Vec<String> = st.nodes.iter().map(|n| n.name.clone()).collect();
        wait_booted(self, &names)
    }

    fn write_inventory(&self) -> Result<()> {
        let first_version = self.state().k3s_versions.first().cloned();
        let text = render_inventory(&InventoryInput {
            lab_name: &self.name,
            k3s_version: first_version.as_deref().unwrap_or(DEFAULT_K3S_VERSION),
            mirror_url: &self.mirror_url(),
            identity_file: &self.operator_key_path(),
            known_hosts: &self.known_hosts_path(),
            nodes: &self.nodes,
        });
        std::fs::write(self.inventory_path(), text)?;
        Ok(())
    }

    fn start_mirror(&self, xtask: &Path) -> Result<()> {
        let addr = SocketAddr::from((self.host_addr(), self.state().mirror_port));
        let log = std::fs::File::create(self.dir.join("mirror.log"))?;
        let mut c = std::process::Command::new(xtask);
        c.args(["lab", "serve-mirror", "--dir"])
            .arg(self.mirror_dir())
            .arg("--addr")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = c.spawn().context("cannot start the mirror")?;
        let proc_ref = ProcRef::of(child.id())?;
        {
            let mut st = self.state();
            st.mirror = Some(proc_ref);
            st.save()?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || !proc_ref.alive() {
                bail!(
                    "the mirror did not start on {addr}:\n{}",
                    node::tail(&self.dir.join("mirror.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Opens a running lab from its state file.
    pub fn open(name: &str) -> Result<Lab> {
        validate_name(name)?;
        Ok(Lab::from_state(State::load(name)?))
    }

    pub fn down(&self) -> Result<()> {
        Lab::down_by_name(&self.name)
    }

    /// Removes everything lab `name` left behind, from whatever state file exists; succeeds
    /// when nothing is left. Only processes recorded in the state file are signalled.
    pub fn down_by_name(name: &str) -> Result<()> {
        validate_name(name)?;
        require_root()?;
        let dir = state::lab_dir(name);
        let st = State::load(name).ok();
        {
            // Names in the machine's /etc/hosts go first: nothing else depends on them.
            let _lock = state::global_lock()?;
            hosts::remove(name)?;
        }
        if let Some(st) = &st {
            let procs: Vec<ProcRef> = st.nodes.iter().filter_map(|n| n.nspawn).collect();
            util::terminate_all(&procs, STOP_GRACE);
            // The mirror and the S3 servers (s3.rs), together.
            let servers: Vec<ProcRef> = [st.mirror, st.s3_https, st.s3_http]
                .into_iter()
                .flatten()
                .collect();
            util::terminate_all(&servers, Duration::from_secs(5));
        }
        if let Some(st) = &st {
            for n in &st.nodes {
                node::remove_cgroups(&n.machine);
            }
        }
        // Unmount before deleting anything under the lab dir: removing files through a
        // still-mounted overlay would only write whiteouts, and rm would fail on busy mounts.
        for m in node::mounts_under(&dir) {
            let m_s = m.to_string_lossy().into_owned();
            if util::sh("umount", &[&m_s]).is_err() {
                util::sh("umount", &["-l", &m_s])
                    .with_context(|| format!("cannot unmount {m_s}"))?;
            }
        }
        let mut errors = Vec::new();
        if let Some(st) = &st {
            // First, and synchronously: a veth left to die with its namespace lingers until
            // the kernel's asynchronous netns cleanup runs, and could block index reuse.
            if let Err(e) = net::delete_link(&st.host_if) {
                errors.push(e);
            }
            for n in &st.nodes {
                if let Err(e) = net::delete_netns(&n.netns) {
                    errors.push(e);
                }
            }
            if let Err(e) = net::delete_netns(&st.bridge_netns) {
                errors.push(e);
            }
        }
        for ns in net::lab_netns(name) {
            if let Err(e) = net::delete_netns(&ns) {
                errors.push(e);
            }
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e.context(format!("lab down {name:?}")));
        }
        let left = node::mounts_under(&dir);
        if !left.is_empty() {
            bail!("mounts left under {}: {left:?}", dir.display());
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// What the inventory names a node by (its DNS name, NAT'd or own address).
    pub fn host_of(&self, name: &str) -> Option<String> {
        self.node(name).map(LabNode::host)
    }

    fn node_state(&self, name: &str) -> Result<NodeState> {
        self.state()
            .node(name)
            .cloned()
            .with_context(|| format!("lab {:?} has no node {name:?}", self.name))
    }

    /// Whether the node's nspawn (and so the node) is running.
    pub fn is_running(&self, node: &str) -> Result<bool> {
        Ok(self.node_state(node)?.nspawn.is_some_and(|p| p.alive()))
    }

    /// Whether the node's link is up (not cut).
    pub fn is_linked(&self, node: &str) -> Result<bool> {
        let n = self.node_state(node)?;
        Ok(net::peer_link_up(&self.state().bridge_netns, &n.peer_if))
    }

    fn init_pid(&self, node: &str) -> Result<i32> {
        let n = self.node_state(node)?;
        let p = n
            .nspawn
            .with_context(|| format!("node {node} is stopped"))?;
        node::container_init(&p).with_context(|| format!("node {node}"))
    }

    /// Runs `argv` as root inside the node (through its init's namespaces, not SSH).
    pub fn exec(&self, node: &str, argv: &[&str]) -> Result<Output> {
        node::exec(self.init_pid(node)?, argv, None)
    }

    pub fn exec_stdin(&self, node: &str, argv: &[&str], stdin: &[u8]) -> Result<Output> {
        node::exec(self.init_pid(node)?, argv, Some(stdin))
    }

    pub fn fault(&self, node: &str, fault: Fault) -> Result<()> {
        let n = self.node_state(node)?;
        let bridge = self.state().bridge_netns.clone();
        match fault {
            Fault::Stop => {
                // Silent first: a powered-off host says nothing, not even a last FIN.
                net::set_silent(&n.netns, true)?;
                if let Some(p) = n.nspawn {
                    util::terminate_all(&[p], STOP_GRACE);
                    if p.alive() {
                        bail!("node {node} (nspawn PID {}) did not stop", p.pid);
                    }
                }
                node::remove_cgroups(&n.machine);
                let mut st = self.state();
                if let Some(ns) = st.node_mut(node) {
                    ns.nspawn = None;
                }
                st.save()?;
            }
            Fault::Start => {
                if n.nspawn.is_some_and(|p| p.alive()) {
                    return Ok(());
                }
                let p = NodePaths::new(&self.dir, node);
                let rootfs = self.state().rootfs.clone().context("no rootfs in state")?;
                net::set_silent(&n.netns, false)?;
                node::mount_overlay(&rootfs, &p)?;
                let proc_ref = node::boot(&p, &n.machine, &n.netns)?;
                {
                    let mut st = self.state();
                    if let Some(ns) = st.node_mut(node) {
                        ns.nspawn = Some(proc_ref);
                    }
                    st.save()?;
                }
                node::wait_ssh(
                    &[(n.name.clone(), n.addr, proc_ref, p.console())],
                    BOOT_TIMEOUT,
                )?;
                wait_booted(self, std::slice::from_ref(&n.name))?;
            }
            Fault::Cut => net::set_peer_link(&bridge, &n.peer_if, false)?,
            Fault::Heal => net::set_peer_link(&bridge, &n.peer_if, true)?,
            Fault::Throttle => net::set_throttle(&bridge, &n.peer_if, &n.netns, Some(2000))?,
            Fault::Unthrottle => net::set_throttle(&bridge, &n.peer_if, &n.netns, None)?,
            Fault::BlockJoin => net::set_port_blocked(&n.netns, 6443, true)?,
            Fault::UnblockJoin => net::set_port_blocked(&n.netns, 6443, false)?,
            Fault::KillSshd => {
                // Debian's ssh.service uses KillMode=process: stopping it leaves sessions
                // alive, hence the kill of every sshd left.
                let script = "systemctl stop ssh.service ssh.socket >/dev/null 2>&1; \
                              pkill -KILL -x sshd; sleep 0.1; ! pgrep -x sshd >/dev/null";
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let out = self.exec(node, &["sh", "-c", script])?;
                    if out.status.success() {
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("sshd on {node} would not die");
                    }
                }
            }
            Fault::RestartSshd => {
                let out = self.exec(
                    node,
                    &[
                        "sh",
                        "-c",
                        "systemctl reset-failed ssh.service 2>/dev/null; systemctl start ssh.service",
                    ],
                )?;
                util::check("systemctl start ssh.service", &out)?;
                let p = n
                    .nspawn
                    .with_context(|| format!("node {node} is stopped"))?;
                node::wait_ssh(
                    &[(
                        n.name.clone(),
                        n.addr,
                        p,
                        NodePaths::new(&self.dir, node).console(),
                    )],
                    Duration::from_secs(60),
                )?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    pub fn operator_key_path(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn host_addr(&self) -> Ipv4Addr {
        spec::subnet_host(self.index, 1)
    }

    pub fn mirror_url(&self) -> String {
        format!("http://{}:{}", self.host_addr(), self.state().mirror_port)
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    /// The package repository the mirror serves under `/debian/` (in the host's cache).
    pub fn package_repo(&self) -> Option<PathBuf> {
        std::fs::read_link(self.mirror_dir().join(repo::URL_PATH)).ok()
    }

    /// What every node's `/etc/apt/sources.list` says: the lab's mirror, and nothing else.
    pub fn apt_sources(&self) -> String {
        repo::sources_list(&self.mirror_url())
    }

    /// Whether the mirror process recorded in the state is running.
    pub fn mirror_running(&self) -> bool {
        self.state().mirror.is_some_and(|p| p.alive())
    }

    /// Every PID the lab recorded (nspawn per node, mirror, S3 servers): for tests checking
    /// teardown.
    pub fn recorded_pids(&self) -> Vec<i32> {
        let st = self.state();
        st.nodes
            .iter()
            .filter_map(|n| n.nspawn)
            .chain(st.mirror)
            .chain(st.s3_https)
            .chain(st.s3_http)
            .map(|p| p.pid)
            .collect()
    }

    /// The host-side interface into the lab bridge (`bsl<i>`).
    pub fn host_interface(&self) -> String {
        self.state().host_if.clone()
    }

    /// Builds the double at `version` and puts its release files on the mirror.
    pub fn publish_k3s(&self, version: &str) -> Result<()> {
        let binary = build_double(version)?;
        mirror::publish(&self.mirror_dir(), version, &binary)?;
        let mut st = self.state();
        if !st.k3s_versions.iter().any(|v| v == version) {
            st.k3s_versions.push(version.to_string());
            st.save()?;
        }
        Ok(())
    }
}

/// Owns a lab and tears it down when dropped, also when a test panics. Set
/// `BOOTSTRAP_LAB_KEEP=1` to keep it for a post-mortem.
pub struct LabGuard(Lab);

impl LabGuard {
    pub fn new(lab: Lab) -> LabGuard {
        LabGuard(lab)
    }

    pub fn up(spec: &LabSpec) -> Result<LabGuard> {
        Lab::up(spec).map(LabGuard)
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::env::var_os("BOOTSTRAP_LAB_KEEP").is_some() {
            eprintln!("lab: keeping {:?} (BOOTSTRAP_LAB_KEEP)", self.0.name);
            return;
        }
        if let Err(e) = self.0.down() {
            eprintln!("lab: down {:?} failed: {e:#}", self.0.name);
        }
    }
}

/// Lists the failed units of a node and the last lines each logged.
const FAILED_UNITS_REPORT: &str = "systemctl --failed --no-legend --plain; \
    for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do \
    journalctl -b -q --no-pager -u \"$u\" | tail -n 5; done";

/// Waits until systemd in each node finished booting: until then `/run/nologin` refuses SSH
/// logins of non-root users, which an early sshd banner does not show.
fn wait_booted(lab: &Lab, nodes: &[String]) -> Result<()> {
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || -> Result<()> {
                    let secs = BOOT_TIMEOUT.as_secs().to_string();
                    let out = lab.exec(
                        n,
                        &["timeout", &secs, "systemctl", "is-system-running", "--wait"],
                    )?;
                    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    match state.as_str() {
                        "running" => Ok(()),
                        "degraded" => {
                            // Reported, not fatal: a unit failing under load must not fail
                            // every test, but the log says why.
                            let failed = lab.exec(n, &["sh", "-c", FAILED_UNITS_REPORT])?;
                            eprintln!(
                                "lab: node {n} booted degraded:\n{}",
                                String::from_utf8_lossy(&failed.stdout).trim()
                            );
                            Ok(())
                        }
                        _ => bail!("node {n} did not finish booting (state {state:?})"),
                    }
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("boot waiter panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}
