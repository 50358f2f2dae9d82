//! Shared support for the end-to-end tests: a testbed of real hosts (a lab,
//! or the Vagrant VMs when `BOOTSTRAP_E2E=vagrant`), and the `bootstrap`
//! binary run as a user would run it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xtask::lab::{LabGuard, LabSpec};

/// The `bootstrap` binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bootstrap"))
}

/// Where end-to-end tests run: the local lab unless `BOOTSTRAP_E2E=vagrant`.
pub fn vagrant_mode() -> bool {
    std::env::var("BOOTSTRAP_E2E").as_deref() == Ok("vagrant")
}

/// A test that skips itself says why, and appends that to `$BOOTSTRAP_SKIP_LOG` when it is
/// set: `cargo xtask test` (CI) sets it and fails when anything was skipped, so a switch left
/// in CI's environment cannot turn lab tests into passes.
pub fn skip(why: &str) {
    eprintln!("skipped: {why}");
    if let Some(log) = std::env::var_os("BOOTSTRAP_SKIP_LOG") {
        use std::io::Write;
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

/// The Vagrant inventory, or why the Vagrant run cannot happen.
pub fn vagrant_inventory() -> Result<PathBuf, String> {
    // vagrant/lima/up.sh writes its own; BOOTSTRAP_E2E_INVENTORY points at it.
    let p = std::env::var_os("BOOTSTRAP_E2E_INVENTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant/inventory.toml"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} does not exist: run `vagrant up` in vagrant/ (or vagrant/lima/up.sh) first",
            p.display()
        ))
    }
}

/// A lab for one test, torn down when dropped (even on panic).
pub fn lab(name: &str, nodes: usize, servers: usize, spares: usize) -> LabGuard {
    let mut spec = LabSpec::new(name, nodes);
    spec.servers = servers;
    spec.spares = spares;
    // A lab left by an interrupted run of the same test is removed first.
    lab_with(spec)
}

/// A lab of any shape (names, NAT'd addresses), torn down when dropped.
pub fn lab_with(spec: LabSpec) -> LabGuard {
    let _ = xtask::lab::Lab::down_by_name(&spec.name);
    LabGuard::up(&spec).unwrap_or_else(|e| panic!("lab {} did not come up: {e:#}", spec.name))
}

/// A scratch directory holding an inventory and what `bootstrap` writes
/// beside it (`.bootstrap/`, the kubeconfig).
pub struct Workdir {
    pub dir: tempfile::TempDir,
    /// HOME for the tool: empty, so the machine's ~/.ssh/config plays no part.
    pub home: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("tempdir"),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn inventory(&self) -> PathBuf {
        self.path("inventory.toml")
    }

    pub fn write_inventory(&self, text: &str) {
        std::fs::write(self.inventory(), text).expect("write inventory");
    }

    /// Run `bootstrap ARGS...` and return its output.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("KUBECONFIG")
            .output()
            .expect("run bootstrap")
    }

    /// `bootstrap up INVENTORY --output json`, asserting success; returns the summary event.
    pub fn up_json(&self) -> (serde_json::Value, Output) {
        let inv = self.inventory();
        let out = self.run(&["up", inv.to_str().unwrap(), "--output", "json"]);
        assert!(
            out.status.success(),
            "bootstrap up failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (summary(&out), out)
    }
}

/// A `bootstrap ... --output json` run in progress, its events read as they come.
pub struct Running {
    child: std::process::Child,
    events: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    seen: Vec<String>,
}

impl Workdir {
    /// Start `bootstrap ARGS... --output json` and return at once.
    pub fn spawn_json(&self, args: &[&str]) -> Running {
        let mut child = Command::new(bin())
            .args(args)
            .args(["--output", "json"])
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("KUBECONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run bootstrap");
        let out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            events: rx,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }
}

impl Running {
    /// The first event (from now on) that `want` accepts, within `limit`; panics with what
    /// was seen otherwise.
    pub fn wait_for(
        &mut self,
        limit: std::time::Duration,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if want(&v) {
                            return v;
                        }
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no such event within {limit:?}; seen:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Send SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let st = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Wait for the run to end: its exit code, every stdout line and its stderr.
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().expect("wait");
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        self.seen.extend(self.events.iter());
        (status.code(), self.seen.join("\n"), err)
    }
}

/// The last `summary` event of a JSON run.
pub fn summary(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == "summary")
        .unwrap_or_else(|| {
            panic!(
                "no summary event in:\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
}

/// Whether `path` exists on `node`; an exec that fails (rather than `test` saying no) fails
/// the test, so "gone" means gone.
pub fn exists(lab: &xtask::lab::Lab, node: &str, path: &str) -> bool {
    let o = lab
        .exec(
            node,
            &[
                "sh",
                "-c",
                &format!("if [ -e '{path}' ]; then echo yes; else echo no; fi"),
            ],
        )
        .unwrap_or_else(|e| panic!("exec on {node}: {e:#}"));
    match String::from_utf8_lossy(&o.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "`test -e {path}` on {node} said {other:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// A drop-in on `host` whose k3s unit, when stopped, records what the API on `api` (another
/// server, at its lab address) says of Node `name`: read it with [`node_at_stop`]. Shows
/// whether a removal deleted the Node before it stopped the host.
pub fn record_node_at_stop(lab: &xtask::lab::Lab, host: &str, name: &str, api: &str) {
    let addr = lab.node(api).expect("the API server").addr;
    sh(
        lab,
        host,
        &format!(
            "mkdir -p /etc/systemd/system/k3s.service.d && cat > /etc/systemd/system/k3s.service.d/zz-order.conf <<'EOF'\n[Service]\nExecStop=/bin/sh -c 'k3s kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml --server https://{addr}:6443 get node {name} -o name > /run/node-at-stop 2>&1; true'\nEOF\nsystemctl daemon-reload"
        ),
    );
}

/// What [`record_node_at_stop`] recorded (NotFound: the Node was gone when the host stopped),
/// its drop-in removed.
pub fn node_at_stop(lab: &xtask::lab::Lab, host: &str) -> String {
    let said = sh(lab, host, "cat /run/node-at-stop");
    sh(
        lab,
        host,
        "rm -rf /etc/systemd/system/k3s.service.d /run/node-at-stop; systemctl daemon-reload",
    );
    said
}

/// Run a shell command on a lab node (through nsenter, not SSH) and return stdout.
pub fn sh(lab: &xtask::lab::Lab, node: &str, script: &str) -> String {
    let out = lab.exec(node, &["sh", "-c", script]).expect("lab exec");
    assert!(
        out.status.success(),
        "`{script}` on {node} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every Node as the cluster reports it, through `k3s kubectl` on `server`.
pub fn nodes(lab: &xtask::lab::Lab, server: &str) -> Vec<serde_json::Value> {
    let json = sh(lab, server, "k3s kubectl get nodes -o json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("nodes json");
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no items in the Node list: {v}"))
}

pub fn node<'a>(nodes: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    nodes
        .iter()
        .find(|n| n["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("node {name} not in the cluster"))
}

pub fn is_ready(n: &serde_json::Value) -> bool {
    n["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn labels(n: &serde_json::Value) -> BTreeMap<String, String> {
    n["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Taints as `key=value:Effect` strings, sorted.
pub fn taints(n: &serde_json::Value) -> Vec<String> {
    let mut t: Vec<String> = n["spec"]["taints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    let v = t["value"].as_str().unwrap_or("");
                    if v.is_empty() {
                        format!(
                            "{}:{}",
                            t["key"].as_str().unwrap_or(""),
                            t["effect"].as_str().unwrap_or("")
                        )
                    } else {
                        format!(
                            "{}={}:{}",
                            t["key"].as_str().unwrap_or(""),
                            v,
                            t["effect"].as_str().unwrap_or("")
                        )
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

/// The files `up` must leave alone on a re-run (config, binary, its links and scripts, units),
/// with their mtimes, plus the time each k3s service last started.
pub fn fingerprint(lab: &xtask::lab::Lab, node: &str) -> String {
    sh(
        lab,
        node,
        "{ find /etc/rancher -type f; ls -d /usr/local/bin/k3s /usr/local/bin/k3s-*.sh /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr /etc/systemd/system/k3s* 2>/dev/null; } \
         | sort | while read -r f; do stat -c '%n %y %a' \"$f\"; done; \
         for s in k3s k3s-agent; do echo \"$s $(systemctl show -p ActiveEnterTimestampMonotonic,NRestarts --value $s | tr '\\n' ' ')\"; done",
    )
}

/// An inventory for a lab's nodes, with the settings tests vary.
pub struct InventoryBuilder<'a> {
    pub lab: &'a xtask::lab::Lab,
    pub name: &'a str,
    pub version: String,
    pub user: &'a str,
    pub source: &'a str,
    pub known_hosts: PathBuf,
    pub policy: &'a str,
    pub cache_dir: Option<PathBuf>,
    pub airgap_images: bool,
    /// Extra lines per node name (labels, taints...).
    pub extra: BTreeMap<String, String>,
    /// Nodes to leave out (e.g. spares).
    pub skip_spares: bool,
}

impl<'a> InventoryBuilder<'a> {
    pub fn new(lab: &'a xtask::lab::Lab, name: &'a str) -> Self {
        InventoryBuilder {
            lab,
            name,
            version: xtask::lab::DEFAULT_K3S_VERSION.to_string(),
            user: "root",
            source: "download",
            known_hosts: lab.known_hosts_path(),
            policy: "strict",
            cache_dir: None,
            airgap_images: false,
            extra: BTreeMap::new(),
            skip_spares: true,
        }
    }

    pub fn render(&self) -> String {
        use xtask::lab::NodeKind;
        let mut s = format!(
            "[cluster]\nname = \"{}\"\nk3s_version = \"{}\"\n\n[install]\nsource = \"{}\"\nmirror = \"{}\"\nallow_http = true\n",
            self.name,
            self.version,
            self.source,
            self.lab.mirror_url()
        );
        if let Some(c) = &self.cache_dir {
            s.push_str(&format!("cache_dir = \"{}\"\n", c.display()));
        }
        if self.airgap_images {
            s.push_str("airgap_images = true\n");
        }
        s.push_str(&format!(
            "\n[ssh]\nuser = \"{}\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nhost_key_policy = \"{}\"\nconnect_timeout = 5\n",
            self.user,
            self.lab.operator_key_path().display(),
            self.known_hosts.display(),
            self.policy
        ));
        for n in self.lab.nodes() {
            let role = match n.kind {
                NodeKind::Server => "server",
                NodeKind::Agent => "agent",
                NodeKind::Spare if self.skip_spares => continue,
                NodeKind::Spare => "agent",
            };
            s.push_str(&format!(
                "\n[[node]]\nname = \"{}\"\nhost = \"{}\"\nrole = \"{role}\"\n{}",
                n.name,
                n.host(),
                self.extra.get(&n.name).map(String::as_str).unwrap_or("")
            ));
        }
        s
    }
}

/// Everything on `node` that could hold a secret in a process's command line.
pub fn cmdlines(lab: &xtask::lab::Lab, node: &str) -> String {
    lab.exec(
        node,
        &[
            "sh",
            "-c",
            "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done",
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_else(|e| panic!("reading the command lines: {e:#}"))
}

/// The k3s double's replicated event log on `server`, as (kind, node, event)
/// in order.
pub fn events(lab: &xtask::lab::Lab, server: &str) -> Vec<(String, String, serde_json::Value)> {
    sh(
        lab,
        server,
        "cat /var/lib/rancher/k3s/server/double/events.jsonl",
    )
    .lines()
    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    .map(|v| {
        (
            v["kind"].as_str().unwrap_or("").to_string(),
            v["node"].as_str().unwrap_or("").to_string(),
            v,
        )
    })
    .collect()
}

/// What a command printed, stdout then stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `bootstrap ARGS...`, asserting it fails with exit code 1 (a run that failed, not bad
/// input); returns its stderr.
pub fn run_failed(work: &Workdir, args: &[&str]) -> String {
    let out = work.run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bootstrap {args:?}:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `bootstrap ARGS...`, asserting success.
pub fn run_ok(work: &Workdir, args: &[&str]) -> std::process::Output {
    let out = work.run(args);
    assert!(
        out.status.success(),
        "bootstrap {args:?} failed ({:?}):\n{}",
        out.status,
        text(&out)
    );
    out
}

/// Whether ConfigMap default/keepme exists, as the API on `server` says.
pub fn configmap(lab: &xtask::lab::Lab, server: &str) -> bool {
    configmap_named(lab, server, "keepme")
}

/// Whether ConfigMap default/`name` exists, as the API on `server` says. Anything but found or
/// NotFound (an exec that failed, an API that does not answer) fails the test: a "not there"
/// must mean not there.
pub fn configmap_named(lab: &xtask::lab::Lab, server: &str, name: &str) -> bool {
    let o = lab
        .exec(
            server,
            &["k3s", "kubectl", "get", "configmap", "-n", "default", name],
        )
        .unwrap_or_else(|e| panic!("exec on {server}: {e:#}"));
    if o.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "kubectl on {server}: {err}"
    );
    false
}

pub fn all_ready(lab: &xtask::lab::Lab, server: &str, want: usize) {
    let n = nodes(lab, server);
    assert_eq!(n.len(), want, "{n:#?}");
    assert!(n.iter().all(is_ready), "{n:#?}");
}

pub fn no_changes(work: &Workdir, when: &str) {
    let (s, out) = work.up_json();
    assert_eq!(
        s["changes"],
        0,
        "{when}: the next up changed things:\n{}",
        text(&out)
    );
}

pub fn members(lab: &xtask::lab::Lab, server: &str) -> usize {
    let m: serde_json::Value = serde_json::from_str(&sh(
        lab,
        server,
        "cat /var/lib/rancher/k3s/server/double/members.json",
    ))
    .unwrap();
    m.as_array().map(Vec::len).unwrap_or(0)
}

/// The provider is gone: master-1..3 and worker-1 stopped, and `text` (their inventory) with
/// their hosts moved to spare-1..4, other addresses under the same names.
pub fn lose_every_host(lab: &xtask::lab::Lab, text: &str) -> String {
    let pairs = [
        ("master-1", "spare-1"),
        ("master-2", "spare-2"),
        ("master-3", "spare-3"),
        ("worker-1", "spare-4"),
    ];
    let mut moved = text.to_string();
    for (node, spare) in pairs {
        lab.fault(node, xtask::lab::Fault::Stop).unwrap();
        let (old, new) = (lab.host_of(node).unwrap(), lab.host_of(spare).unwrap());
        moved = moved.replace(&format!("host = \"{old}\""), &format!("host = \"{new}\""));
    }
    assert_ne!(moved, text);
    moved
}
