//! End-to-end tests of `bootstrap::ssh` against real hosts: a 3-node lab (Debian containers
//! with sshd, root login by key, `deploy` with passwordless sudo, `nosudo` without).
//!
//! One lab serves every scenario (booting one per test would cost more than the tests), so the
//! scenarios run in sequence inside one test; the stop fault comes last. `LabGuard` tears the
//! lab down on success and on panic. The lab needs root; elsewhere the test says so and passes.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bootstrap::ssh::known_hosts::fingerprint;
use bootstrap::ssh::{
    register_secret, Cmd, HostKeyPolicy, PutOutcome, RetryPolicy, Session, SshError, SshTarget,
};
use russh::keys::ssh_key::PublicKey;
use sha2::{Digest, Sha256};
use xtask::lab::{Fault, LabGuard, LabSpec};

/// Any valid ed25519 key that no lab node has: "another key" for the changed-key scenario.
const FOREIGN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

struct Ctx {
    lab: LabGuard,
    scratch: tempfile::TempDir,
}

impl Ctx {
    fn addr(&self, node: &str) -> String {
        self.lab
            .node(node)
            .unwrap_or_else(|| panic!("lab has no node {node}"))
            .addr
            .to_string()
    }

    fn target(&self, node: &str, user: &str) -> SshTarget {
        let mut t = SshTarget::new(self.addr(node));
        t.name = node.to_string();
        t.user = user.to_string();
        t.identity_file = Some(self.lab.operator_key_path());
        t.known_hosts = self.lab.known_hosts_path();
        t.connect_timeout = Duration::from_secs(5);
        t.command_timeout = Duration::from_secs(60);
        t
    }

    async fn connect(&self, node: &str, user: &str) -> Session {
        Session::connect(&self.target(node, user))
            .await
            .unwrap_or_else(|e| panic!("connect {user}@{node}: {e}"))
    }

    /// Runs a command as root inside the node, not over SSH: the independent observer.
    fn on_node(&self, node: &str, script: &str) -> String {
        let out = self
            .lab
            .exec(node, &["sh", "-c", script])
            .unwrap_or_else(|e| panic!("lab exec on {node}: {e:#}"));
        assert!(
            out.status.success(),
            "`{script}` on {node} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn scratch_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.scratch.path().join(name);
        std::fs::write(&p, content).expect("write scratch file");
        p
    }

    /// The node's real host key, from the lab's known_hosts.
    fn host_key(&self, node: &str) -> PublicKey {
        let addr = self.addr(node);
        let text = std::fs::read_to_string(self.lab.known_hosts_path()).expect("lab known_hosts");
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(addr.as_str()))
            .unwrap_or_else(|| panic!("{addr} not in the lab's known_hosts"));
        let key: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
        PublicKey::from_openssh(&key.join(" ")).expect("lab host key parses")
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_engine_against_the_lab() {
    if !is_root() {
        common::skip("the ssh lab test needs root for the lab");
        return;
    }
    // A lab an interrupted run of this test left goes first, as common::lab does.
    let _ = xtask::lab::Lab::down_by_name("ssh-test");
    let lab = LabGuard::up(&LabSpec::new("ssh-test", 3)).expect("lab up");
    let ctx = Ctx {
        lab,
        scratch: tempfile::tempdir().expect("tempdir"),
    };

    let steps: &[&str] = &[
        "exec as root",
        "exec as deploy via sudo",
        "nosudo gets a clear error",
        "connect and a first command in one round trip",
        "strict refuses an unknown key",
        "accept-new records the key",
        "changed key is refused",
        "every known_hosts file and HostKeyAlias",
        "bastion",
        "put_file",
        "large file",
        "secrets never in argv",
        "command timeout",
        "stopped node",
    ];
    for step in steps {
        let started = Instant::now();
        eprintln!("--- {step}");
        match *step {
            "exec as root" => exec_as_root(&ctx).await,
            "exec as deploy via sudo" => exec_as_deploy(&ctx).await,
            "nosudo gets a clear error" => nosudo(&ctx).await,
            "connect and a first command in one round trip" => connect_with(&ctx).await,
            "strict refuses an unknown key" => strict_unknown(&ctx).await,
            "accept-new records the key" => accept_new(&ctx).await,
            "changed key is refused" => changed_key(&ctx).await,
            "every known_hosts file and HostKeyAlias" => known_hosts_files(&ctx).await,
            "bastion" => bastion(&ctx).await,
            "put_file" => put_file(&ctx).await,
            "large file" => large_file(&ctx).await,
            "secrets never in argv" => secrets_not_in_argv(&ctx).await,
            "command timeout" => command_timeout(&ctx).await,
            "stopped node" => stopped_node(&ctx).await,
            other => unreachable!("{other}"),
        }
        eprintln!("    ok in {:?}", started.elapsed());
    }
}

async fn exec_as_root(ctx: &Ctx) {
    let s = ctx.connect("master-1", "root").await;
    assert!(s.is_root());
    let out = s.run_ok(&Cmd::new("id -u; hostname")).await.expect("id");
    let text = out.stdout_str();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"));
    assert_eq!(lines.next(), Some("master-1"));

    let out = s
        .exec(&Cmd::new("echo out; echo err >&2; exit 7"))
        .await
        .expect("exec");
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");

    let err = s
        .run_ok(&Cmd::new("echo broken >&2; exit 3").label("break things"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("master-1") && msg.contains("break things") && msg.contains("broken"),
        "{msg}"
    );
    assert!(msg.contains("exit code 3"), "{msg}");

    // The session is shared across tasks: one connection, many concurrent channels.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.run_ok(&Cmd::new(format!("echo {i}"))).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let out = t.await.expect("join").expect("parallel exec");
        assert_eq!(out.stdout_str().trim(), i.to_string());
    }
    // probe + 3 above + 8 parallel
    assert_eq!(s.stats().commands, 12, "{:?}", s.stats());
    s.close().await.expect("close");
}

async fn exec_as_deploy(ctx: &Ctx) {
    let s = ctx.connect("worker-1", "deploy").await;
    assert!(!s.is_root());
    let out = s.run_ok(&Cmd::new("id -u")).await.expect("sudo id");
    assert_eq!(
        out.stdout_str().trim(),
        "0",
        "privileged commands run as root"
    );
    let out = s
        .run_ok(&Cmd::new("id -un").unprivileged())
        .await
        .expect("plain id");
    assert_eq!(out.stdout_str().trim(), "deploy");
    // Quoting survives sudo's `sh -c`.
    let out = s
        .run_ok(&Cmd::new("printf '%s|' \"it's\" '$HOME' && echo").label("quoting"))
        .await
        .expect("quoting");
    assert_eq!(out.stdout_str(), "it's|$HOME|\n");
    let out = s
        .run_ok(&Cmd::new("cat").stdin(b"through sudo".to_vec()))
        .await
        .expect("stdin");
    assert_eq!(out.stdout_str(), "through sudo");
}

async fn nosudo(ctx: &Ctx) {
    let err = Session::connect(&ctx.target("worker-1", "nosudo"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SshError::SudoPassword { .. }), "{msg}");
    assert!(
        msg.starts_with(
            "user nosudo on worker-1 cannot run sudo without a password: add 'nosudo ALL=(ALL) NOPASSWD:ALL' to /etc/sudoers.d/nosudo, or connect as root"
        ),
        "{msg}"
    );
}

/// `connect_with`: the privilege check and the first command share one round trip, for root,
/// for a sudo user (the command runs as root, quoting and stdin intact) and for a user without
/// sudo (the same error as `connect`, and the command does not run).
async fn connect_with(ctx: &Ctx) {
    let first = Cmd::new("printf '%s|' \"it's\" \"$(id -u)\"; cat").stdin(b"in".to_vec());
    for user in ["root", "deploy"] {
        let (s, out) = Session::connect_with(&ctx.target("worker-1", user), &first)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(out.stdout_str(), "it's|0|in", "{user}");
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(s.is_root(), user == "root");
        assert_eq!(s.stats().round_trips(), 1, "{user}");
        // Later commands know the privilege: the second runs through sudo for deploy.
        let out = s.run_ok(&Cmd::new("id -u")).await.expect("second command");
        assert_eq!(out.stdout_str().trim(), "0");
        let out = s
            .run_ok(&Cmd::new("id -un").unprivileged())
            .await
            .expect("unprivileged");
        assert_eq!(out.stdout_str().trim(), user);
    }
    let marker = "/tmp/.connect-with-ran";
    let _ = ctx.on_node("worker-1", &format!("rm -f {marker}"));
    let err = Session::connect_with(
        &ctx.target("worker-1", "nosudo"),
        &Cmd::new(format!("touch {marker}")),
    )
    .await
    .expect_err("nosudo must fail");
    assert!(matches!(err, SshError::SudoPassword { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("user nosudo on worker-1 cannot run sudo without a password"),
        "{err}"
    );
    let left = ctx.on_node("worker-1", &format!("ls {marker} 2>/dev/null; true"));
    assert!(left.trim().is_empty(), "the command ran: {left}");
}

fn accepted_logins(ctx: &Ctx, node: &str) -> usize {
    ctx.on_node(
        node,
        "journalctl -q --no-pager -o cat 2>/dev/null | grep -c 'Accepted publickey' || true",
    )
    .trim()
    .parse()
    .unwrap_or(0)
}

/// A TCP forwarder on 127.0.0.1 to `addr`:22 for the rest of the test; returns its port and
/// the number of connections it took.
async fn counting_forwarder(addr: &str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, target) = (count.clone(), format!("{addr}:22"));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (port, count)
}

async fn strict_unknown(ctx: &Ctx) {
    let kh = ctx.scratch_file("empty_known_hosts", "");
    let mut t = ctx.target("worker-2", "root");
    t.known_hosts = kh.clone();
    // First prove the login counter counts: one real login adds one.
    let before_real = accepted_logins(ctx, "worker-2");
    ctx.connect("worker-2", "root")
        .await
        .close()
        .await
        .expect("close");
    let logins_before = accepted_logins(ctx, "worker-2");
    assert_eq!(
        logins_before,
        before_real + 1,
        "the sshd journal shows logins"
    );
    let err = Session::connect(&t).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{msg}");
    let addr = ctx.addr("worker-2");
    assert!(
        msg.contains(&format!("host key for {addr} is not in {}", kh.display())),
        "{msg}"
    );
    assert!(
        msg.contains("ssh-keyscan") && msg.contains("accept-new"),
        "{msg}"
    );
    assert!(
        msg.contains(&fingerprint(&ctx.host_key("worker-2"))),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        "",
        "strict never writes known_hosts"
    );
    // Refused during the key exchange: the host never saw a login.
    assert_eq!(accepted_logins(ctx, "worker-2"), logins_before);
    // Through a forwarder that counts connections: a refusal is never retried.
    let (via, connections) = counting_forwarder(&addr).await;
    t.host = "127.0.0.1".into();
    t.port = via;
    t.retry.attempts = 3;
    let err = Session::connect(&t).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a host-key refusal is never retried"
    );
}

async fn accept_new(ctx: &Ctx) {
    let kh = ctx.scratch.path().join("accept-new").join("known_hosts");
    let mut t = ctx.target("worker-2", "root");
    t.known_hosts = kh.clone();
    t.policy = HostKeyPolicy::AcceptNew;
    let s = Session::connect(&t).await.expect("accept-new connects");
    assert_eq!(s.notes().len(), 1, "{:?}", s.notes());
    assert!(
        s.notes()[0].contains("recorded new host key"),
        "{:?}",
        s.notes()
    );
    let text = std::fs::read_to_string(&kh).expect("known_hosts written");
    let key = ctx.host_key("worker-2");
    assert_eq!(
        text,
        format!("{} {}\n", ctx.addr("worker-2"), key.to_openssh().unwrap())
    );
    // Now known: strict accepts it, and nothing more is written.
    t.policy = HostKeyPolicy::Strict;
    let s = Session::connect(&t).await.expect("strict after accept-new");
    assert!(s.notes().is_empty());
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), text);
}

async fn changed_key(ctx: &Ctx) {
    let addr = ctx.addr("worker-2");
    let entry = format!("{addr} {FOREIGN_KEY}");
    let kh = ctx.scratch_file("changed_known_hosts", &format!("# edited\n{entry}\n"));
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut t = ctx.target("worker-2", "root");
        t.known_hosts = kh.clone();
        t.policy = policy;
        let err = Session::connect(&t).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, SshError::HostKeyChanged { .. }),
            "{policy}: {msg}"
        );
        let offered = fingerprint(&ctx.host_key("worker-2"));
        let recorded = fingerprint(&PublicKey::from_openssh(FOREIGN_KEY).unwrap());
        assert!(msg.contains(&offered) && msg.contains(&recorded), "{msg}");
        assert!(msg.contains(&entry), "names the known_hosts line: {msg}");
        assert!(msg.contains(&format!("{}:2", kh.display())), "{msg}");
    }
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("# edited\n{entry}\n"),
        "a changed key is never recorded"
    );
}

/// As OpenSSH: a key recorded under the `HostKeyAlias` is the host's key; a key recorded in a
/// second user file or a global file is known (and nothing is recorded again), and a different
/// key there is a change, named with the file that records it (review 3, L2).
async fn known_hosts_files(ctx: &Ctx) {
    let addr = ctx.addr("worker-2");
    let key = ctx.host_key("worker-2").to_openssh().unwrap();
    let empty = ctx.scratch_file("kh-first", "");
    let alias_kh = ctx.scratch_file("kh-alias", &format!("worker-2-key {key}\n"));
    let mut t = ctx.target("worker-2", "root");
    t.known_hosts = alias_kh.clone();
    let err = Session::connect(&t).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
    t.host_key_alias = Some("worker-2-key".into());
    Session::connect(&t)
        .await
        .expect("strict accepts the key recorded under the alias");

    let second = ctx.scratch_file("kh-second", &format!("{addr} {key}\n"));
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut t = ctx.target("worker-2", "root");
        t.known_hosts = empty.clone();
        t.also_known_hosts = vec![ctx.scratch.path().join("missing"), second.clone()];
        t.policy = policy;
        let s = Session::connect(&t)
            .await
            .unwrap_or_else(|e| panic!("{policy}: the second file knows the key: {e}"));
        assert!(s.notes().is_empty(), "{policy}: {:?}", s.notes());
        assert_eq!(std::fs::read_to_string(&empty).unwrap(), "", "{policy}");
    }

    let global = ctx.scratch_file("kh-global", &format!("{addr} {FOREIGN_KEY}\n"));
    let mut t = ctx.target("worker-2", "root");
    t.known_hosts = empty.clone();
    t.also_known_hosts = vec![global.clone()];
    t.policy = HostKeyPolicy::AcceptNew;
    let err = Session::connect(&t).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{msg}");
    assert!(msg.contains(&format!("{}:1", global.display())), "{msg}");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
}

async fn bastion(ctx: &Ctx) {
    let mut t = ctx.target("worker-2", "deploy");
    t.bastion = Some(Box::new(ctx.target("master-1", "root")));
    let s = Session::connect(&t).await.expect("through the bastion");
    let out = s.run_ok(&Cmd::new("hostname")).await.expect("hostname");
    assert_eq!(out.stdout_str().trim(), "worker-2");
    let r = s
        .put_file("/etc/bootstrap-test/via-bastion", "x\n", 0o644, None)
        .await
        .expect("put");
    assert_eq!(r, PutOutcome::Written);

    // The target's host key is checked too, not just the bastion's.
    let kh = ctx.scratch_file("bastion_only", &{
        let all = std::fs::read_to_string(ctx.lab.known_hosts_path()).unwrap();
        let b = ctx.addr("master-1");
        all.lines()
            .filter(|l| l.starts_with(&format!("{b} ")))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    });
    let mut t = ctx.target("worker-2", "root");
    t.known_hosts = kh.clone();
    let mut b = ctx.target("master-1", "root");
    b.known_hosts = kh;
    t.bastion = Some(Box::new(b));
    let err = Session::connect(&t).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
}

fn stat(ctx: &Ctx, node: &str, path: &str) -> String {
    ctx.on_node(node, &format!("stat -c '%a %u %g %y' {path}"))
        .trim()
        .to_string()
}

async fn put_file(ctx: &Ctx) {
    let path = "/etc/bootstrap-test/dir/app.conf";
    for user in ["root", "deploy"] {
        ctx.on_node("worker-1", "rm -rf /etc/bootstrap-test");
        let s = ctx.connect("worker-1", user).await;
        let before = s.stats();
        let r = s
            .put_file(path, "key: value\n", 0o640, Some((0, 65534)))
            .await
            .expect("first put");
        assert_eq!(r, PutOutcome::Written, "{user}");
        let st1 = stat(ctx, "worker-1", path);
        assert!(st1.starts_with("640 0 65534 "), "{user}: {st1}");
        assert_eq!(
            ctx.on_node("worker-1", &format!("cat {path}")),
            "key: value\n"
        );

        let r = s
            .put_file(path, "key: value\n", 0o640, Some((0, 65534)))
            .await
            .expect("second put");
        assert_eq!(r, PutOutcome::Unchanged, "{user}");
        assert_eq!(
            stat(ctx, "worker-1", path),
            st1,
            "{user}: an unchanged put leaves mtime alone"
        );

        // A mode-only drift is corrected without rewriting.
        ctx.on_node("worker-1", &format!("chmod 644 {path}"));
        let r = s
            .put_file(path, "key: value\n", 0o640, Some((0, 65534)))
            .await
            .expect("mode fix");
        assert_eq!(r, PutOutcome::Written);
        assert!(stat(ctx, "worker-1", path).starts_with("640 0 65534 "));

        // A secret file from a local path; owner defaults to root whoever logs in.
        let local = ctx.scratch_file("token", "s3cret-token-value\n");
        let r = s
            .put_file("/etc/bootstrap-test/token", &local, 0o600, None)
            .await
            .expect("token");
        assert_eq!(r, PutOutcome::Written);
        assert!(
            stat(ctx, "worker-1", "/etc/bootstrap-test/token").starts_with("600 0 0 "),
            "{user}"
        );
        let back = s
            .get_file("/etc/bootstrap-test/token", 1 << 20)
            .await
            .expect("get_file");
        assert_eq!(back, b"s3cret-token-value\n");

        // Nothing is left behind: no temp files, no staging directories.
        let left = ctx.on_node(
            "worker-1",
            "find /etc/bootstrap-test /home/deploy /root -name '*bootstrap-tmp*' -o -name '.bootstrap-upload-*'",
        );
        assert_eq!(left.trim(), "", "{user}: leftovers");
        let stats = s.stats();
        assert!(stats.transfers > before.transfers, "{user}: {stats:?}");
        eprintln!("    {user}: {stats:?}");
    }
    // The unchanged put costs exactly one round trip.
    let s = ctx.connect("worker-1", "root").await;
    let before = s.stats().round_trips();
    let r = s
        .put_file(path, "key: value\n", 0o640, Some((0, 65534)))
        .await
        .expect("put");
    assert_eq!(r, PutOutcome::Unchanged);
    assert_eq!(s.stats().round_trips() - before, 1);
}

async fn large_file(ctx: &Ctx) {
    // 48 MiB keeps a debug-build test quick; the 100 MB throughput check is the benchmark's.
    let size = 48 << 20;
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = ctx.scratch.path().join("large.bin");
    std::fs::write(&local, &data).expect("write large file");
    let want = sha256_hex(&data);
    for user in ["root", "deploy"] {
        let s = ctx.connect("master-1", user).await;
        let remote = format!("/var/tmp/large-{user}.bin");
        let started = Instant::now();
        let r = s
            .put_file(&remote, &local, 0o644, None)
            .await
            .expect("large put");
        assert_eq!(r, PutOutcome::Written);
        let secs = started.elapsed().as_secs_f64();
        eprintln!("    {user}: {} MiB in {secs:.2}s", size >> 20);
        let remote_sum = ctx.on_node("master-1", &format!("sha256sum {remote}"));
        assert_eq!(remote_sum.split_whitespace().next(), Some(want.as_str()));
        let back = s.get_file(&remote, 1 << 30).await.expect("large get");
        assert_eq!(back.len(), data.len());
        assert_eq!(sha256_hex(&back), want);
        assert_eq!(
            s.put_file(&remote, &local, 0o644, None)
                .await
                .expect("again"),
            PutOutcome::Unchanged
        );
    }
}

async fn secrets_not_in_argv(ctx: &Ctx) {
    let secret = format!("K10{}::server:not-in-argv", hex::encode(rand_bytes()));
    register_secret(secret.clone());
    for user in ["root", "deploy"] {
        let runner = ctx.connect("worker-2", user).await;
        let observer = ctx.connect("worker-2", "root").await;
        let cmd = Cmd::new("read -r token; sleep 3; printf %s \"$token\" | sha256sum")
            .stdin(format!("{secret}\n").into_bytes())
            .label("use the token");
        let job = tokio::spawn(async move { runner.run_ok(&cmd).await });
        // Read the command lines once the command runs (its `sleep 3` is there), not before.
        let mut seen = String::new();
        for _ in 0..100 {
            seen = observer
                .run_ok(&Cmd::new(
                    "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null",
                ))
                .await
                .expect("read cmdlines")
                .stdout_str();
            if seen.contains("sleep 3") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen.contains("sleep 3"),
            "{user}: the command was running while observed:\n{seen}"
        );
        assert!(
            !seen.contains(&secret),
            "{user}: the secret is visible in /proc/*/cmdline"
        );
        let out = job.await.expect("join").expect("command with secret");
        assert_eq!(
            out.stdout_str().split_whitespace().next(),
            Some(sha256_hex(secret.as_bytes()).as_str())
        );
        // And errors that echo it back are redacted.
        let err = observer
            .run_ok(
                &Cmd::new("cat >&2; exit 1")
                    .stdin(secret.clone().into_bytes())
                    .label("echo"),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains(&secret) && err.contains("[REDACTED]"),
            "{err}"
        );
    }
}

fn rand_bytes() -> [u8; 8] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64 ^ u64::from(std::process::id())).to_le_bytes()
}

async fn command_timeout(ctx: &Ctx) {
    for (user, n) in [("root", 31), ("deploy", 32)] {
        let s = ctx.connect("master-1", user).await;
        let started = Instant::now();
        let err = s
            .exec(
                &Cmd::new(format!("sh -c 'sleep {n}; echo done'"))
                    .label("slow")
                    .timeout(Duration::from_secs(1)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::Timeout { .. }), "{err}");
        assert!(
            err.to_string().contains("`slow` timed out after 1s"),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The command and its children die on the host too, not only our wait for them: the
        // host-side limit is 2 s here, so they must be gone well within 10 s.
        let pattern = format!("sleep {}[{}]", n / 10, n % 10);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = ctx.on_node(
                "master-1",
                &format!("grep -l '{pattern}' /proc/[0-9]*/cmdline 2>/dev/null || true"),
            );
            if left.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{user}: the timed-out command still runs"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The session is still usable after a timed-out command.
        s.run_ok(&Cmd::new("true")).await.expect("after timeout");
        // The target's default timeout applies too.
        let mut t = ctx.target("master-1", user);
        t.command_timeout = Duration::from_millis(800);
        let s = Session::connect(&t).await.expect("connect");
        let err = s.exec(&Cmd::new("sleep 20")).await.unwrap_err();
        assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    }
}

async fn stopped_node(ctx: &Ctx) {
    ctx.lab
        .fault("worker-1", Fault::Stop)
        .expect("stop worker-1");
    let mut t = ctx.target("worker-1", "root");
    t.connect_timeout = Duration::from_secs(2);
    t.retry = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(200),
    };
    let started = Instant::now();
    let err = Session::connect(&t).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("    gave up after {elapsed:?}");
    let msg = err.to_string();
    assert!(
        matches!(err, SshError::Connect { attempts: 3, .. }),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!(
            "worker-1 ({}): cannot connect after 3 attempt(s)",
            ctx.addr("worker-1")
        )),
        "{msg}"
    );
    assert!(msg.contains("check that the host is up"), "{msg}");
    // 200 ms + 400 ms of backoff at least, and at most three 2 s timeouts on top.
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}
