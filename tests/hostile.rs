//! A malicious or broken SSH host (security review 3, issue 27): a russh server in the test
//! suite that runs nothing. It accepts any key and answers every command with an endless
//! stream, or never confirms a channel while it goes on answering keepalives, or offers only a
//! host key of another type than the one recorded. Each test runs the `bootstrap` binary
//! against it and checks the run ends within its bound, with its memory below a cap.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use russh::server::{self, ChannelOpenHandle, Msg, Server as _, Session};
use russh::{Channel, ChannelId};

/// What the host does once a client is in.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Every command gets zeros on stdout, without end.
    Flood,
    /// A channel open is never confirmed (nor refused); keepalives are answered.
    NeverConfirm,
    /// Every command fails, with terminal escape sequences on stderr: a window title, a
    /// cleared screen, a carriage return over the line before.
    Escapes,
}

/// What [`Behaviour::Escapes`] prints: every kind of control the review named (L5).
const ESCAPES: &str = "\x1b]0;owned\x07\x1b[2J\x1b[1A\rerror: everything is fine\u{9b}31m\n";

#[derive(Clone)]
struct Hostile {
    behaviour: Behaviour,
    /// Channel opens held unanswered (dropping one would refuse it).
    held: Arc<Mutex<Vec<ChannelOpenHandle>>>,
}

impl server::Server for Hostile {
    type Handler = Self;
    fn new_client(&mut self, _: Option<SocketAddr>) -> Self {
        self.clone()
    }
}

impl server::Handler for Hostile {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _: &str,
        _: russh::server::PublicKeyOffer<'_>,
    ) -> Result<server::Auth, Self::Error> {
        Ok(server::Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<server::Auth, Self::Error> {
        Ok(server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.behaviour {
            Behaviour::NeverConfirm => self.held.lock().unwrap().push(reply),
            Behaviour::Flood | Behaviour::Escapes => reply.accept().await,
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        if let Behaviour::Escapes = self.behaviour {
            session.extended_data(channel, 1, ESCAPES.as_bytes().to_vec())?;
            session.exit_status_request(channel, 1)?;
            session.eof(channel)?;
            return session.close(channel);
        }
        let handle = session.handle();
        tokio::spawn(async move {
            let chunk = vec![b'0'; 32 * 1024];
            while handle.data(channel, chunk.clone()).await.is_ok() {}
        });
        Ok(())
    }
}

/// A hostile host listening on `addr` until dropped, with an ed25519 host key.
struct HostileHost {
    _rt: tokio::runtime::Runtime,
}

fn keygen(path: &Path, kind: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

impl HostileHost {
    fn start(addr: SocketAddr, behaviour: Behaviour, dir: &Path) -> HostileHost {
        let key_path = dir.join("hostile_host_ed25519");
        keygen(&key_path, "ed25519");
        let key = russh::keys::load_secret_key(&key_path, None).expect("host key");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = Arc::new(server::Config {
            keys: vec![key],
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            ..Default::default()
        });
        let socket = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let mut srv = Hostile {
            behaviour,
            held: Arc::new(Mutex::new(Vec::new())),
        };
        rt.spawn(async move {
            let _ = srv.run_on_socket(config, &socket).await;
        });
        HostileHost { _rt: rt }
    }
}

/// An inventory of one server at `addr`, a client key, accept-new into an empty known_hosts.
fn inventory(dir: &Path, addr: SocketAddr, extra_ssh: &str) -> PathBuf {
    let key = dir.join("operator_ed25519");
    keygen(&key, "ed25519");
    let inv = dir.join("inventory.toml");
    std::fs::write(
        &inv,
        format!(
            "[cluster]\nname = \"hostile\"\nk3s_version = \"v1.36.3+k3s1\"\n\n[ssh]\nuser = \"root\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nhost_key_policy = \"accept-new\"\n{extra_ssh}\n[[node]]\nname = \"m1\"\nhost = \"{}\"\nrole = \"server\"\n",
            addr.port(),
            key.display(),
            dir.join("known_hosts").display(),
            addr.ip()
        ),
    )
    .unwrap();
    inv
}

/// Runs `bootstrap ARGS`, sampling its peak resident memory (VmHWM) until it exits or
/// `limit` passes (then it is killed). Returns (exit status or None, stderr, seconds, peak KiB).
fn run_measured(home: &Path, args: &[&str], limit: Duration) -> (Option<i32>, String, f64, u64) {
    let mut child = Command::new(bin())
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bootstrap");
    let status = format!("/proc/{}/status", child.id());
    let t = Instant::now();
    let mut peak = 0u64;
    let code = loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    (code, err, t.elapsed().as_secs_f64(), peak)
}

/// Security review 3, M4 (E5): a host that answers the facts script with an endless stream.
/// The run stops at the output cap, with its memory bounded (the review saw 3 GiB in 12 s).
#[test]
fn an_endless_stream_ends_the_run_within_the_output_cap() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.61:2261".parse().unwrap();
    let _host = HostileHost::start(addr, Behaviour::Flood, dir.path());
    let inv = inventory(dir.path(), addr, "");
    let (code, err, secs, peak_kib) = run_measured(
        dir.path(),
        &["plan", inv.to_str().unwrap()],
        Duration::from_secs(120),
    );
    eprintln!(
        "flood: exit {code:?} after {secs:.1}s, peak RSS {} MiB",
        peak_kib / 1024
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("printed more than 64 MiB"), "{err}");
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB\n{err}");
}

/// Security review 3, M4 (E6): a host that never confirms a channel, answering keepalives.
/// The run fails within the handshake deadline (60 s here: longer than a dead peer takes to be noticed), not never (the review gave up
/// after 120 s with a 5 s command timeout).
#[test]
fn a_channel_never_confirmed_ends_the_run_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.62:2262".parse().unwrap();
    let _host = HostileHost::start(addr, Behaviour::NeverConfirm, dir.path());
    let inv = inventory(dir.path(), addr, "command_timeout = 5\n");
    let (code, err, secs, peak_kib) = run_measured(
        dir.path(),
        &["plan", inv.to_str().unwrap()],
        Duration::from_secs(120),
    );
    eprintln!(
        "stall: exit {code:?} after {secs:.1}s, peak RSS {} MiB",
        peak_kib / 1024
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not confirm it within 60s"), "{err}");
    assert!(secs < 90.0, "{secs}s\n{err}");
}

/// Security review 3, L5: a host whose commands print terminal escapes: the operator's
/// terminal gets them as visible text, never as controls.
#[test]
fn a_hosts_terminal_escapes_reach_the_terminal_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.64:2264".parse().unwrap();
    let _host = HostileHost::start(addr, Behaviour::Escapes, dir.path());
    let inv = inventory(dir.path(), addr, "");
    for cmd in ["plan", "up"] {
        let (code, err, _, _) = run_measured(
            dir.path(),
            &[cmd, inv.to_str().unwrap()],
            Duration::from_secs(120),
        );
        assert_eq!(code, Some(1), "{cmd}: {err}");
        assert!(err.contains("error: everything is fine"), "{cmd}: {err}");
        assert!(err.contains("\\x1b]0;owned\\x07"), "{cmd}: {err}");
        let controls: Vec<char> = err
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(controls.is_empty(), "{cmd}: {controls:?} in {err:?}");
    }
}

/// Security review 3, M5 (E4): `init --scan` when known_hosts records an ECDSA key for the
/// host and the host (a man in the middle) offers only ed25519: refused, even with `--yes`,
/// and nothing is added.
#[test]
fn init_scan_refuses_another_key_type_for_a_recorded_host() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.63:22".parse().unwrap();
    let _host = HostileHost::start(addr, Behaviour::Flood, dir.path());
    let ecdsa = dir.path().join("real_ecdsa");
    keygen(&ecdsa, "ecdsa");
    let pubkey = std::fs::read_to_string(ecdsa.with_extension("pub")).unwrap();
    let mut fields = pubkey.split_whitespace();
    let line = format!(
        "127.0.0.63 {} {}\n",
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, &line).unwrap();
    let out = Command::new(bin())
        .args([
            "init",
            "--server",
            "127.0.0.63",
            "--scan",
            "--yes",
            "--known-hosts",
        ])
        .arg(&kh)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("offers only ssh-ed25519")
            && err.contains("records a ecdsa-sha2-nistp256 key for it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), line);
}
