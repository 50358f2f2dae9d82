//! The russh wrapper: connect (host key, auth, retries, bastion), exec, and the file transfer
//! front end. One [`Session`] per host, shared by every step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::{Algorithm, PublicKey};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

use super::known_hosts::{self, HostKeyStatus};
use super::quote::{sh_quote, sudo_wrap};
use super::sftp::Sftp;
use super::{tail, Cmd, CmdOutput, HostKeyPolicy, PutOutcome, Result, Source, SshError, SshTarget};

/// The privilege probe's shell: sets `t` (yes when the host has `timeout(1)`), `u` (the uid)
/// and `s` (`ok` or `no` for sudo without a password, empty for root; `out` holds what sudo
/// said).
const PROBE: &str =
    "if command -v timeout >/dev/null 2>&1; then t=yes; else t=no; fi; u=$(id -u); s=; out=; \
    if [ \"$u\" != 0 ]; then if out=$(sudo -n true 2>&1 </dev/null); then s=ok; else s=no; fi; fi";
/// The first line [`Session::connect_with`] prints before the command's own output.
const MARK: &str = "@@bootstrap-probe ";

/// Round trips made by a session, for the run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionStats {
    /// Remote commands run (including the hash check of `put_file`).
    pub commands: u64,
    /// File transfers (uploads and downloads).
    pub transfers: u64,
}

impl SessionStats {
    pub fn round_trips(&self) -> u64 {
        self.commands + self.transfers
    }
}

/// A connection to one host. Cheap to clone; clones share the connection and the counters.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    target: SshTarget,
    /// `name (addr)` used in every message.
    who: String,
    handle: Handle<Client>,
    /// Keeps the bastion connection (and so the tunnel) alive as long as this session.
    _bastion: Option<Session>,
    is_root: AtomicBool,
    /// The host has `timeout(1)`: commands run under it, so a timed-out command dies on the
    /// host too (sshd does not kill a command when its channel closes).
    has_timeout: AtomicBool,
    notes: Vec<String>,
    commands: AtomicU64,
    transfers: AtomicU64,
    sftp: tokio::sync::Mutex<Option<Arc<Sftp>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.inner.who)
            .field("user", &self.inner.target.user)
            .field("is_root", &self.is_root())
            .finish()
    }
}

/// The russh handler: it only checks the server's host key.
pub(crate) struct Client {
    who: String,
    /// The name and port the key is recorded under (see [`SshTarget::key_name`]).
    host: String,
    port: u16,
    /// Where a new key is recorded.
    known_hosts: PathBuf,
    /// Every file the key is looked up in, `known_hosts` first.
    lookup: Vec<PathBuf>,
    policy: HostKeyPolicy,
    record_new: bool,
    notes: Arc<StdMutex<Vec<String>>>,
}

#[derive(Debug)]
pub(crate) enum ClientError {
    Russh(russh::Error),
    Refused(SshError),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Russh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, ClientError> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                return Err(ClientError::Refused(SshError::HostCertificate {
                    host: self.who.clone(),
                }))
            }
        };
        self.verify(key)
            .map(|()| true)
            .map_err(ClientError::Refused)
    }
}

/// A handler that only records the host key the server offers, then ends the handshake.
struct Scanner {
    key: Arc<StdMutex<Option<PublicKey>>>,
}

impl client::Handler for Scanner {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, russh::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = server_key {
            *self.key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.clone());
        }
        Ok(false)
    }
}

/// The host key `host:port` offers (as `ssh-keyscan` reads it), without authenticating.
pub async fn scan_host_key(
    host: &str,
    port: u16,
    timeout: Duration,
    known_hosts: &std::path::Path,
) -> std::result::Result<PublicKey, String> {
    let key = Arc::new(StdMutex::new(None));
    let handler = Scanner { key: key.clone() };
    // The types recorded for the host first, as a connection asks: a host that has one
    // proves that one.
    let mut cfg = client::Config::default();
    let mut target = SshTarget::new(host);
    target.port = port;
    target.known_hosts = known_hosts.to_path_buf();
    cfg.preferred.key = preferred_keys(&target).into();
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        // The handler refuses the key it recorded, so the handshake ends here.
        let _ = client::connect_stream(Arc::new(cfg), tcp, handler).await;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r?,
        Err(_) => return Err(format!("timed out after {timeout:?}")),
    }
    let found = key.lock().unwrap_or_else(|e| e.into_inner()).take();
    found.ok_or_else(|| "the server offered no host key".into())
}

impl Client {
    fn verify(&self, key: &PublicKey) -> Result<()> {
        let host_id = known_hosts::host_id(&self.host, self.port);
        let io_err = |e: std::io::Error| SshError::KnownHostsIo {
            host: self.who.clone(),
            file: self.known_hosts.clone(),
            message: e.to_string(),
        };
        let offered = known_hosts::fingerprint(key);
        let files: Vec<&Path> = self.lookup.iter().map(PathBuf::as_path).collect();
        let (status, said_by) =
            known_hosts::check_files(&files, &self.host, self.port, key).map_err(io_err)?;
        let said_by = said_by.unwrap_or_else(|| self.known_hosts.clone());
        match status {
            HostKeyStatus::Known => Ok(()),
            HostKeyStatus::Changed {
                line,
                entry,
                recorded_fingerprint,
            } => Err(SshError::HostKeyChanged(Box::new(super::ChangedHostKey {
                host: self.who.clone(),
                host_id,
                file: said_by.clone(),
                line,
                entry,
                recorded: recorded_fingerprint,
                offered,
            }))),
            HostKeyStatus::Revoked { line } => Err(SshError::HostKeyRevoked {
                host: self.who.clone(),
                host_id,
                file: said_by.clone(),
                line,
                fingerprint: offered,
            }),
            HostKeyStatus::Unknown => match self.policy {
                HostKeyPolicy::Strict => {
                    Err(SshError::HostKeyUnknown(Box::new(super::UnknownHostKey {
                        host: self.who.clone(),
                        host_id,
                        addr: self.host.clone(),
                        port: self.port,
                        file: self.known_hosts.clone(),
                        fingerprint: offered,
                    })))
                }
                HostKeyPolicy::AcceptNew => {
                    // Nothing recorded for this key type; a host with a key of another type
                    // recorded is not new: a server offering only an unrecorded type is a
                    // change (the handshake offers the recorded types first).
                    let recorded = known_hosts::known_algorithms_in(&files, &self.host, self.port);
                    if !recorded.is_empty() {
                        return Err(SshError::HostKeyTypeChanged(Box::new(
                            super::TypeChangedHostKey {
                                host: self.who.clone(),
                                host_id,
                                file: self.known_hosts.clone(),
                                recorded: recorded
                                    .iter()
                                    .map(|a| a.as_str().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                offered_type: key.algorithm().as_str().to_string(),
                                offered,
                            },
                        )));
                    }
                    let note = if self.record_new {
                        known_hosts::learn(&self.known_hosts, &self.host, self.port, key)
                            .map_err(io_err)?;
                        format!(
                            "{}: recorded new host key {} {offered} for {host_id} in {}",
                            self.who,
                            key.algorithm(),
                            self.known_hosts.display()
                        )
                    } else {
                        format!(
                            "{}: new host key {} {offered} for {host_id} trusted for this run only; `bootstrap up` records it in {}",
                            self.who,
                            key.algorithm(),
                            self.known_hosts.display()
                        )
                    };
                    info!("{note}");
                    if let Ok(mut n) = self.notes.lock() {
                        n.push(note);
                    }
                    Ok(())
                }
            },
        }
    }
}

enum AttemptError {
    Retry(String),
    Fatal(SshError),
}

fn russh_reason(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io.to_string(),
        russh::Error::Disconnect | russh::Error::HUP => {
            "the server closed the connection during the handshake".into()
        }
        other => other.to_string(),
    }
}

fn classify(e: ClientError) -> AttemptError {
    match e {
        ClientError::Refused(err) => AttemptError::Fatal(err),
        ClientError::Russh(
            e @ (russh::Error::NoCommonAlgo { .. }
            | russh::Error::WrongServerSig
            | russh::Error::UnknownKey),
        ) => AttemptError::Fatal(SshError::Channel {
            host: String::new(),
            what: "SSH handshake".into(),
            message: e.to_string(),
        }),
        ClientError::Russh(e) => AttemptError::Retry(russh_reason(&e)),
    }
}

/// Host key types recorded for the host go first, so the server proves the key we know.
fn preferred_keys(target: &SshTarget) -> Vec<Algorithm> {
    let (host, port) = target.key_name();
    let known = known_hosts::known_algorithms_in(&target.known_hosts_files(), host, port);
    let mut out: Vec<Algorithm> = Vec::new();
    for alg in russh::Preferred::DEFAULT.key.iter() {
        if known.iter().any(|k| same_key_type(k, alg)) {
            out.push(alg.clone());
        }
    }
    for alg in russh::Preferred::DEFAULT.key.iter() {
        if !out.contains(alg) {
            out.push(alg.clone());
        }
    }
    out
}

fn is_rsa(a: &Algorithm) -> bool {
    matches!(a, Algorithm::Rsa { .. })
}

fn same_key_type(a: &Algorithm, b: &Algorithm) -> bool {
    // A recorded `ssh-rsa` key is verified by any of the RSA signature algorithms.
    (is_rsa(a) && is_rsa(b)) || a == b
}

/// How long sent data may stay unacknowledged before the connection counts as lost.
pub const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle connection is probed (SSH keepalive), so a dead peer is noticed within
/// `KEEPALIVE_INTERVAL + DEAD_PEER_TIMEOUT` even when nothing is being sent.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// A peer that powered off or whose link was cut sends nothing back, not even a reset: Linux
/// keeps retransmitting queued data for about 15 minutes (tcp_retries2 = 15, tcp(7)) and the
/// SSH keepalive never gets a turn behind it. `TCP_USER_TIMEOUT` (RFC 5482, tcp(7)) makes the
/// kernel drop the connection once sent data, a keepalive included, has gone unacknowledged
/// for [`DEAD_PEER_TIMEOUT`]; every read and write then fails and the session reports the
/// connection lost.
fn set_dead_peer_timeout(tcp: &tokio::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(DEAD_PEER_TIMEOUT)) {
        debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

fn russh_config(target: &SshTarget) -> Arc<client::Config> {
    let mut cfg = client::Config {
        nodelay: true,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: 4,
        // A larger receive window keeps downloads streaming on links with latency.
        window_size: 8 * 1024 * 1024,
        ..Default::default()
    };
    cfg.preferred.key = preferred_keys(target).into();
    Arc::new(cfg)
}

impl Session {
    /// Connects, verifies the host key, authenticates and, for a non-root user, checks once that
    /// `sudo -n` works.
    pub async fn connect(target: &SshTarget) -> Result<Session> {
        Self::connect_inner(target, true).await
    }

    async fn connect_inner(target: &SshTarget, probe_privilege: bool) -> Result<Session> {
        let who = target.describe();
        let bastion = match &target.bastion {
            Some(b) => Some(Box::pin(Self::connect_inner(b, false)).await?),
            None => None,
        };
        let notes = Arc::new(StdMutex::new(Vec::new()));
        let attempts = target.retry.attempts.max(1);
        let mut backoff = target.retry.initial_backoff;
        let mut attempt = 0;
        let mut handle = loop {
            attempt += 1;
            match Self::attempt(target, &who, bastion.as_ref(), notes.clone()).await {
                Ok(h) => break h,
                Err(AttemptError::Fatal(SshError::Channel { what, message, .. })) => {
                    return Err(SshError::Channel {
                        host: who,
                        what,
                        message,
                    })
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry(reason)) => {
                    if attempt >= attempts {
                        return Err(SshError::Connect {
                            host: who,
                            port: target.port,
                            attempts: attempt,
                            reason,
                        });
                    }
                    debug!(host = %who, attempt, %reason, "connect failed, retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        };
        let auth_deadline = handshake_deadline(target) * 2;
        match tokio::time::timeout(auth_deadline, authenticate(&mut handle, target, &who)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(SshError::Channel {
                    host: who,
                    what: "authentication".into(),
                    message: format!("the host did not answer within {auth_deadline:?}"),
                })
            }
        }
        let notes = notes.lock().map(|n| n.clone()).unwrap_or_default();
        let session = Session {
            inner: Arc::new(Inner {
                target: target.clone(),
                who,
                handle,
                _bastion: bastion,
                is_root: AtomicBool::new(target.user == "root"),
                has_timeout: AtomicBool::new(false),
                notes,
                commands: AtomicU64::new(0),
                transfers: AtomicU64::new(0),
                sftp: tokio::sync::Mutex::new(None),
            }),
        };
        if probe_privilege {
            let is_root = session.probe_privilege().await?;
            session.inner.is_root.store(is_root, Ordering::Relaxed);
        }
        Ok(session)
    }

    async fn attempt(
        target: &SshTarget,
        who: &str,
        bastion: Option<&Session>,
        notes: Arc<StdMutex<Vec<String>>>,
    ) -> Result<Handle<Client>, AttemptError> {
        let (key_host, key_port) = target.key_name();
        let handler = Client {
            who: who.to_string(),
            host: key_host.to_string(),
            port: key_port,
            known_hosts: target.known_hosts.clone(),
            lookup: target
                .known_hosts_files()
                .into_iter()
                .map(Path::to_path_buf)
                .collect(),
            policy: target.policy,
            record_new: target.record_new,
            notes,
        };
        let config = russh_config(target);
        let fut = async {
            match bastion {
                Some(b) => {
                    let channel = b
                        .inner
                        .handle
                        .channel_open_direct_tcpip(
                            target.host.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| {
                            AttemptError::Retry(format!(
                                "bastion {} cannot open a tunnel to it: {e}",
                                b.inner.who
                            ))
                        })?;
                    client::connect_stream(config, channel.into_stream(), handler)
                        .await
                        .map_err(classify)
                }
                None => {
                    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                        .await
                        .map_err(|e| AttemptError::Retry(e.to_string()))?;
                    let _ = tcp.set_nodelay(true);
                    set_dead_peer_timeout(&tcp);
                    client::connect_stream(config, tcp, handler)
                        .await
                        .map_err(classify)
                }
            }
        };
        match tokio::time::timeout(target.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(AttemptError::Retry(format!(
                "timed out after {:?}",
                target.connect_timeout
            ))),
        }
    }

    /// Connects like [`Session::connect`] and runs `first` in the same round trip as the
    /// privilege check: the command line asks `id -u` (and `sudo -n true` for another user)
    /// and then runs `first` as [`Session::exec`] would, so a host that is read once costs one
    /// round trip, not two. A user without passwordless sudo gets the same error as from
    /// `connect`, and `first` does not run.
    pub async fn connect_with(target: &SshTarget, first: &Cmd) -> Result<(Session, CmdOutput)> {
        let session = Self::connect_inner(target, false).await?;
        let limit = first.timeout_override().unwrap_or(target.command_timeout);
        let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0) + 1;
        let body = sh_quote(&marked(first));
        let run = |sudo: &str| {
            format!(
                "if [ \"$t\" = yes ]; then exec {sudo}timeout -k 5 {secs} sh -c {body}; else exec {sudo}sh -c {body}; fi"
            )
        };
        let as_root = run("");
        let via_sudo = if first.is_privileged() {
            run("sudo -n ")
        } else {
            as_root.clone()
        };
        let line = format!(
            "{PROBE}\nif [ \"$u\" = 0 ] || [ \"$s\" = ok ]; then printf '{MARK} uid=%s sudo=%s timeout=%s\\n' \"$u\" \"$s\" \"$t\"; else printf '{MARK} uid=%s sudo=no\\n%s\\n' \"$u\" \"$out\"; exit 0; fi\nif [ \"$u\" = 0 ]; then {as_root}; else {via_sudo}; fi"
        );
        let mut out = session.exec_line(first, &line).await?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The probe's mark comes first unless the login shell printed something before it; then
        // nothing after it is the command's alone. Only what came before the mark is shown:
        // the rest may be the command's secret output (security review 3 M2).
        let Some(at) = text.find(MARK) else {
            let status = if first.is_secret_output() {
                "unexpected output (not shown: it may hold secrets)".to_string()
            } else {
                format!("unexpected output {:?}", tail(&text, 3))
            };
            return Err(SshError::CommandFailed {
                host: session.inner.who.clone(),
                label: first.display_label(),
                status,
                stderr_tail: out.stderr_tail(5),
            });
        };
        if at > 0 {
            let before: Vec<&str> = text[..at].lines().take(5).collect();
            let banner: String = before.join("\n").chars().take(400).collect();
            return Err(SshError::ShellBanner {
                host: session.inner.who.clone(),
                label: first.display_label(),
                banner: crate::ssh::redact::redact(&banner),
            });
        }
        let (head, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let probe = head.strip_prefix(MARK).unwrap_or(head);
        let mut said = probe.replace(' ', "\n");
        if said.lines().any(|l| l == "sudo=no") {
            said = format!("{said}\n{rest}");
        }
        let is_root = session.judge_privilege(&said)?;
        session.inner.is_root.store(is_root, Ordering::Relaxed);
        out.stdout = rest.as_bytes().to_vec();
        Ok((session, out))
    }

    /// One round trip: who am I, and may I sudo without a password?
    async fn probe_privilege(&self) -> Result<bool> {
        let probe = format!("{PROBE}\necho \"timeout=$t\"; echo \"uid=$u\"; echo \"sudo=$s\"; [ \"$s\" = no ] && printf '%s\\n' \"$out\"; true");
        let out = self
            .exec(&Cmd::new(probe).unprivileged().label("check privileges"))
            .await?;
        self.judge_privilege(&out.stdout_str())
    }

    /// Reads the probe's `timeout=`, `uid=` and `sudo=` lines: whether the user is root; an
    /// error when it is not and cannot sudo without a password.
    fn judge_privilege(&self, text: &str) -> Result<bool> {
        self.inner
            .has_timeout
            .store(text.lines().any(|l| l == "timeout=yes"), Ordering::Relaxed);
        let uid = text
            .lines()
            .find_map(|l| l.strip_prefix("uid="))
            .map(str::trim);
        match uid {
            Some("0") => Ok(true),
            Some(_) if text.lines().any(|l| l == "sudo=ok") => Ok(false),
            Some(_) => {
                let said: Vec<&str> = text
                    .lines()
                    .skip_while(|l| *l != "sudo=no")
                    .skip(1)
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                let detail = if said.is_empty() {
                    String::new()
                } else {
                    format!(" (sudo said: {})", said.join(" "))
                };
                Err(SshError::SudoPassword {
                    host: self.inner.target.name.clone(),
                    user: self.inner.target.user.clone(),
                    detail,
                })
            }
            None => Err(SshError::CommandFailed {
                host: self.inner.who.clone(),
                label: "check privileges".into(),
                status: format!("unexpected output {:?}", tail(text, 3)),
                stderr_tail: String::new(),
            }),
        }
    }

    pub fn target(&self) -> &SshTarget {
        &self.inner.target
    }

    /// `name (address)`, as used in messages.
    pub fn who(&self) -> &str {
        &self.inner.who
    }

    /// Whether the login user is root (else commands go through `sudo -n`).
    pub fn is_root(&self) -> bool {
        self.inner.is_root.load(Ordering::Relaxed)
    }

    /// Things worth telling the user about the connection, such as a host key recorded under
    /// `accept-new`.
    pub fn notes(&self) -> &[String] {
        &self.inner.notes
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            commands: self.inner.commands.load(Ordering::Relaxed),
            transfers: self.inner.transfers.load(Ordering::Relaxed),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Closes the connection politely. Other clones become unusable.
    pub async fn close(&self) -> Result<()> {
        if let Some(sftp) = self.inner.sftp.lock().await.take() {
            sftp.close();
        }
        self.inner
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|e| self.lost(e))
    }

    /// How long a step of the protocol may take before the host is given up on (a channel
    /// confirmed, an SFTP session started): see [`handshake_deadline`].
    fn deadline(&self) -> Duration {
        handshake_deadline(&self.inner.target)
    }

    fn lost(&self, e: impl std::fmt::Display) -> SshError {
        SshError::Disconnected {
            host: self.inner.who.clone(),
            message: e.to_string(),
        }
    }

    fn channel_err(&self, what: &str, e: impl std::fmt::Display) -> SshError {
        if self.inner.handle.is_closed() {
            self.lost(e)
        } else {
            SshError::Channel {
                host: self.inner.who.clone(),
                what: what.to_string(),
                message: e.to_string(),
            }
        }
    }

    /// The command line actually sent: see [`wrap_command`].
    pub fn command_line(&self, cmd: &Cmd) -> String {
        let limit = cmd
            .timeout_override()
            .unwrap_or(self.inner.target.command_timeout);
        wrap_command(
            &marked(cmd),
            cmd.is_privileged() && !self.is_root(),
            self.inner
                .has_timeout
                .load(Ordering::Relaxed)
                .then_some(limit),
        )
    }

    /// Runs a command and returns its output, whatever its exit code. Fails only when the
    /// command could not run or timed out.
    pub async fn exec(&self, cmd: &Cmd) -> Result<CmdOutput> {
        let line = self.command_line(cmd);
        self.exec_line(cmd, &line).await
    }

    /// Runs `line` as the command line of `cmd` (its label, stdin and timeout).
    async fn exec_line(&self, cmd: &Cmd, line: &str) -> Result<CmdOutput> {
        self.inner.commands.fetch_add(1, Ordering::Relaxed);
        let label = cmd.display_label();
        let limit = cmd
            .timeout_override()
            .unwrap_or(self.inner.target.command_timeout);
        debug!(host = %self.inner.who, %label, "exec");
        let started = Instant::now();
        // A host that answers keepalives but never confirms a channel is not waited on past
        // the handshake deadline (security review 3 M4, E6).
        let opening = self.deadline();
        let channel =
            match tokio::time::timeout(opening, self.inner.handle.channel_open_session()).await {
                Ok(c) => c.map_err(|e| {
                    self.channel_err(&format!("cannot open a channel for `{label}`"), e)
                })?,
                Err(_) => {
                    return Err(self.channel_err(
                        &format!("cannot open a channel for `{label}`"),
                        format!("the host did not confirm it within {opening:?}"),
                    ))
                }
            };
        let (mut rd, wr) = channel.split();
        let cap = cmd.output_limit_bytes();
        let stdin = cmd.stdin_data().map(<[u8]>::to_vec);
        let run = async {
            wr.exec(true, line.as_bytes().to_vec())
                .await
                .map_err(|e| self.channel_err(&format!("cannot start `{label}`"), e))?;
            let feed = async {
                if let Some(data) = stdin {
                    if !data.is_empty() {
                        wr.data(&data[..]).await?;
                    }
                }
                wr.eof().await
            };
            let mut out = CmdOutput {
                secret_stdout: cmd.is_secret_output(),
                ..Default::default()
            };
            let mut flooded = false;
            let read = async {
                let mut refused = false;
                while let Some(msg) = rd.wait().await {
                    let room = cap.saturating_sub(out.stdout.len() + out.stderr.len());
                    match msg {
                        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, ext: 1 }
                            if data.len() > room =>
                        {
                            flooded = true;
                            break;
                        }
                        ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => {
                            out.stderr.extend_from_slice(&data)
                        }
                        ChannelMsg::ExitStatus { exit_status } => out.exit_code = Some(exit_status),
                        ChannelMsg::ExitSignal { signal_name, .. } => {
                            out.signal = Some(format!("{signal_name:?}"))
                        }
                        ChannelMsg::Failure => refused = true,
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                refused
            };
            // Stdin is written while output is read, so a command that talks before it has read
            // all its input cannot deadlock against us.
            let (fed, refused) = tokio::join!(feed, read);
            if flooded {
                let _ = wr.signal(Sig::TERM).await;
                let _ = wr.close().await;
                return Err(SshError::TooMuchOutput {
                    host: self.inner.who.clone(),
                    label: label.clone(),
                    limit: cap,
                });
            }
            if refused {
                return Err(self.channel_err(
                    &format!("cannot start `{label}`"),
                    "the server refused the exec request",
                ));
            }
            if let Err(e) = fed {
                // A command that exits without reading stdin closes the channel under us; its
                // exit status is what matters then.
                if out.exit_code.is_none() && out.signal.is_none() {
                    return Err(self.channel_err(&format!("cannot send stdin to `{label}`"), e));
                }
            }
            // sshd reports how every command ended, with exit-status or exit-signal (RFC 4254
            // 6.10); a channel that closes with neither lost its connection (the host powered
            // off, its sshd was killed, the link went dead).
            if out.exit_code.is_none() && out.signal.is_none() {
                return Err(self.lost(format!("`{label}` did not finish")));
            }
            Ok(out)
        };
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(out)) => {
                debug!(host = %self.inner.who, %label, code = ?out.exit_code, elapsed = ?started.elapsed(), "exec done");
                Ok(out)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // Best effort: sshd forwards the signal to the command (OpenSSH >= 7.9), and
                // closing the channel hangs up its pipes.
                let _ = wr.signal(Sig::TERM).await;
                let _ = wr.close().await;
                Err(SshError::Timeout {
                    host: self.inner.who.clone(),
                    label,
                    after: limit,
                })
            }
        }
    }

    /// Runs a command and turns a non-zero exit into an error naming host, label and the
    /// stderr tail.
    pub async fn run_ok(&self, cmd: &Cmd) -> Result<CmdOutput> {
        let out = self.exec(cmd).await?;
        if out.success() {
            return Ok(out);
        }
        let status = match (&out.exit_code, &out.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "no exit status".to_string(),
        };
        Err(SshError::CommandFailed {
            host: self.inner.who.clone(),
            label: cmd.display_label(),
            status,
            stderr_tail: out.stderr_tail(20),
        })
    }

    async fn sftp(&self) -> Result<Arc<Sftp>> {
        let mut slot = self.inner.sftp.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let timeout = self.inner.target.command_timeout.as_secs().clamp(30, 3600);
        let opening = self.deadline();
        let open = async {
            let channel = self
                .inner
                .handle
                .channel_open_session()
                .await
                .map_err(|e| e.to_string())?;
            Sftp::open(channel, timeout).await
        };
        let s = match tokio::time::timeout(opening, open).await {
            Ok(r) => {
                Arc::new(r.map_err(|e| self.channel_err("cannot start the SFTP subsystem", e))?)
            }
            Err(_) => {
                return Err(self.channel_err(
                    "cannot start the SFTP subsystem",
                    format!("the host did not answer within {opening:?}"),
                ))
            }
        };
        *slot = Some(s.clone());
        Ok(s)
    }

    fn sftp_err(&self, path: &str, op: &str, message: impl std::fmt::Display) -> SshError {
        if self.inner.handle.is_closed() {
            return self.lost(message);
        }
        SshError::Sftp {
            host: self.inner.who.clone(),
            path: path.to_string(),
            op: op.to_string(),
            message: super::redact(&message.to_string()),
        }
    }

    /// A failed SFTP write, explained. OpenSSH's sftp-server answers a full disk (ENOSPC) with
    /// the generic SSH_FX_FAILURE, "Failure" (sftp-server.c errno_to_portable), so the free
    /// space of `dir` is read to say so when it is what failed.
    async fn write_err(
        &self,
        remote: &str,
        dir: &str,
        size: u64,
        e: impl std::fmt::Display,
    ) -> SshError {
        let err = self.sftp_err(remote, "write", &e);
        if matches!(err, SshError::Disconnected { .. }) {
            return err;
        }
        let df = Cmd::new(format!("df -Pk -- {} | tail -n 1", sh_quote(dir)))
            .label(format!("free space of {dir}"));
        let Ok(out) = self.run_ok(&df).await else {
            return err;
        };
        let line = out.stdout_str();
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(avail), Some(mount)) = (f.get(3).and_then(|a| a.parse::<u64>().ok()), f.get(5))
        else {
            return err;
        };
        if avail.saturating_mul(1024) >= size {
            return err;
        }
        SshError::Sftp {
            host: self.inner.who.clone(),
            path: remote.to_string(),
            op: "write".into(),
            message: format!(
                "no space left on {mount} ({} free, {} needed); free some space on the host and run again (the server said: {e})",
                human_bytes(avail.saturating_mul(1024)),
                human_bytes(size)
            ),
        }
    }

    /// Writes `remote` atomically with `mode` and `owner` (uid, gid; `None` means root when the
    /// file is created), unless its sha256, mode and owner already match.
    ///
    /// The data goes to a temp file in the same directory that has its final mode before any
    /// byte is written, is fsynced, and is renamed over the target, so a reader (or a crash)
    /// sees the old file or the new one, never a part. When the login user is not root, SFTP
    /// runs as that user: the data is staged in a private (0700) directory in its home and
    /// moved into place with `sudo -n install` and `mv`, which gives the same result.
    pub async fn put_file<'a>(
        &self,
        remote: &str,
        source: impl Into<Source<'a>>,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<PutOutcome> {
        let what = format!("the transfer of {remote}");
        self.unless_lost(&what, self.put_file_now(remote, source.into(), mode, owner))
            .await
    }

    async fn put_file_now(
        &self,
        remote: &str,
        source: Source<'_>,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<PutOutcome> {
        let mode = mode & 0o7777;
        let (dir, name) = split_remote(remote).ok_or_else(|| {
            self.sftp_err(
                remote,
                "check",
                "the remote path must be absolute, name a file, and have no `.`, `..` or empty component",
            )
        })?;
        // One command: create the directory if needed, then report the current state. The
        // local hash is computed meanwhile.
        let check = format!(
            "d={dir}; f={file}; [ -d \"$d\" ] || mkdir -p -m 0755 -- \"$d\" || exit 3; \
             if [ -f \"$f\" ]; then stat -c 'meta %a %u %g' -- \"$f\" && sha256sum -- \"$f\"; else echo absent; fi",
            dir = sh_quote(dir),
            file = sh_quote(remote),
        );
        let check = Cmd::new(check).label(format!("check {remote}"));
        let (local, out) = tokio::join!(local_sha256(&source), self.run_ok(&check));
        let (digest, size) = local?;
        let out = out?;
        let state = parse_remote_state(&out.stdout_str());
        let want_owner = owner.unwrap_or((0, 0));
        if let Some(st) = &state {
            if st.sha256 == digest {
                let mode_ok = st.mode == mode;
                let owner_ok = owner.is_none_or(|o| o == (st.uid, st.gid));
                if mode_ok && owner_ok {
                    debug!(host = %self.inner.who, path = remote, "unchanged");
                    return Ok(PutOutcome::Unchanged);
                }
                let fix = format!(
                    "chmod {mode:o} -- {f} && chown {}:{} -- {f}",
                    owner.map_or(st.uid, |o| o.0),
                    owner.map_or(st.gid, |o| o.1),
                    f = sh_quote(remote)
                );
                self.run_ok(&Cmd::new(fix).label(format!("fix mode/owner of {remote}")))
                    .await?;
                return Ok(PutOutcome::Written);
            }
        }

        self.inner.transfers.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let tmp_name = format!(".{name}.bootstrap-tmp-{}", rand_hex());
        let sftp = self.sftp().await?;
        if self.is_root() {
            let tmp = format!("{}/{tmp_name}", dir.trim_end_matches('/'));
            let res = async {
                if let Err(e) = sftp.write_new(&tmp, mode, Some(want_owner), source).await {
                    return Err(self.write_err(remote, dir, size, e).await);
                }
                if !sftp.can_fsync() {
                    self.run_ok(
                        &Cmd::new(format!("sync -- {}", sh_quote(&tmp)))
                            .label(format!("sync {remote}")),
                    )
                    .await?;
                }
                sftp.rename_over(&tmp, remote)
                    .await
                    .map_err(|e| self.sftp_err(remote, "rename", e))
            }
            .await;
            if res.is_err() {
                let _ = sftp.remove(&tmp).await;
            }
            res?;
        } else {
            // A private (0700) staging directory: in the login user's home, or in /tmp when
            // the home is not writable. mkdir fails on an existing name, so nobody else can
            // have prepared it.
            let home = sftp.home().await.unwrap_or_else(|_| "/tmp".to_string());
            let mut stage = String::new();
            let mut last_err = String::new();
            for base in [home.trim_end_matches('/'), "/tmp"] {
                let candidate = format!("{base}/.bootstrap-upload-{}", rand_hex());
                match sftp.mkdir_private(&candidate).await {
                    Ok(()) => {
                        stage = candidate;
                        break;
                    }
                    Err(e) => last_err = format!("{candidate}: {e}"),
                }
            }
            if stage.is_empty() {
                return Err(self.sftp_err(remote, "stage", last_err));
            }
            let staged = format!("{stage}/data");
            let res = async {
                if let Err(e) = sftp.write_new(&staged, 0o600, None, source).await {
                    return Err(self.write_err(remote, &stage, size, e).await);
                }
                let tmp = format!("{}/{tmp_name}", dir.trim_end_matches('/'));
                // umask 077 keeps the copy private until install sets the final mode; sync makes
                // the data durable before the rename publishes it.
                let script = format!(
                    "set -e; umask 077; trap 'rm -rf -- {stage}; rm -f -- {tmp}' EXIT; \
                     install -m {mode:o} -o {uid} -g {gid} -- {staged} {tmp}; sync -- {tmp}; mv -f -- {tmp} {target}; trap 'rm -rf -- {stage}' EXIT",
                    stage = sh_quote(&stage),
                    staged = sh_quote(&staged),
                    tmp = sh_quote(&tmp),
                    target = sh_quote(remote),
                    uid = want_owner.0,
                    gid = want_owner.1,
                );
                self.run_ok(&Cmd::new(script).label(format!("install {remote}"))).await.map(|_| ())
            }
            .await;
            if res.is_err() {
                let _ = sftp.remove(&staged).await;
                let _ = sftp.rmdir(&stage).await;
            }
            res?;
        }
        debug!(host = %self.inner.who, path = remote, bytes = size, elapsed = ?started.elapsed(), "written");
        Ok(PutOutcome::Written)
    }

    /// Reads a remote file whole, at most `limit` bytes (a larger file, or one that grows
    /// while it is read, is an error). Root-only files are readable too: without root login
    /// the content comes through `sudo -n head`, never shown in an error.
    pub async fn get_file(&self, remote: &str, limit: u64) -> Result<Vec<u8>> {
        if !self.is_root() {
            let out = self
                .run_ok(
                    &Cmd::new(format!("head -c {} -- {}", limit + 1, sh_quote(remote)))
                        .label(format!("read {remote}"))
                        .secret_output()
                        .output_limit(usize::try_from(limit + 1).unwrap_or(usize::MAX)),
                )
                .await?;
            if out.stdout.len() as u64 > limit {
                return Err(self.sftp_err(
                    remote,
                    "read",
                    format!("it is more than the {limit} bytes expected; not read"),
                ));
            }
            return Ok(out.stdout);
        }
        self.inner.transfers.fetch_add(1, Ordering::Relaxed);
        let read = async {
            let sftp = self.sftp().await?;
            sftp.read_all(remote, limit)
                .await
                .map_err(|e| self.sftp_err(remote, "read", e))
        };
        self.unless_lost(&format!("the transfer of {remote}"), read)
            .await
    }

    /// Runs the SFTP work `fut` unless the connection ends first. russh-sftp settles a pending
    /// request only by its reply or its own timeout (russh-sftp 3.0.1 src/client/rawsession.rs
    /// 254-263): when the channel under it ends, its reader stops (src/client/mod.rs 107-124)
    /// but nothing fails what is pending, so a peer that died mid-upload would be waited on
    /// for the whole request timeout. The session's end (the dead-peer timeout on the socket
    /// or the keepalive) is watched instead.
    async fn unless_lost<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let closed = async {
            while !self.inner.handle.is_closed() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        // A whole transfer gets the command timeout, however its requests are answered.
        let limit = self.inner.target.command_timeout;
        tokio::select! {
            r = fut => r,
            _ = closed => Err(self.lost(format!("{what} did not finish"))),
            _ = tokio::time::sleep(limit) => Err(SshError::Timeout {
                host: self.inner.who.clone(),
                label: what.to_string(),
                after: limit,
            }),
        }
    }
}

/// How long one exchange of the protocol may take (a channel opened, an SFTP session
/// started; authentication gets twice that): three times the connect timeout, and at least
/// 15 s more than a dead peer takes to be noticed (keepalive interval plus the dead-peer
/// timeout), so a host that powered off mid-run is reported lost, not slow. Keepalives do not
/// bound these, since a host can answer them and never the request.
pub(crate) fn handshake_deadline(t: &SshTarget) -> Duration {
    let noticed_dead = KEEPALIVE_INTERVAL + DEAD_PEER_TIMEOUT;
    (t.connect_timeout * 3).max(noticed_dead + Duration::from_secs(15))
}

/// `bytes` for a person: KiB, MiB or GiB with one decimal.
fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

/// The command line for `text`: `sh -c` under `timeout(1)` when a limit is given, so the
/// command's whole process group is killed on the host when it overruns, and behind `sudo -n`
/// when it needs root and the login user is not root. The host-side limit is one second longer
/// than ours (rounded up), so our timer fires first and reports a timeout rather than exit 124.
/// `cmd`'s text with the run's mark: the shell that runs it is started with
/// `BOOTSTRAP_RUN=<id>` in its environment (inside the shell sudo starts, so the mark survives
/// sudo's clean environment), and so is everything it starts. Stopping the marked processes
/// stops the script itself, not only its current child.
fn marked(cmd: &Cmd) -> String {
    match super::run_marker().filter(|_| cmd.is_marked()) {
        Some(id) => format!("exec env BOOTSTRAP_RUN={id} sh -c {}", sh_quote(cmd.text())),
        None => cmd.text().to_string(),
    }
}

pub fn wrap_command(text: &str, sudo: bool, limit: Option<Duration>) -> String {
    let inner = match limit {
        Some(limit) => {
            let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0) + 1;
            format!("timeout -k 5 {secs} sh -c {}", sh_quote(text))
        }
        None if sudo => return sudo_wrap(text),
        None => return text.to_string(),
    };
    if sudo {
        format!("sudo -n {inner}")
    } else {
        inner
    }
}

/// Authenticates with the key file, then ssh-agent, then the default key files.
async fn authenticate(handle: &mut Handle<Client>, target: &SshTarget, who: &str) -> Result<()> {
    let user = target.user.as_str();
    let mut tried: Vec<String> = Vec::new();
    let mut encrypted: Option<PathBuf> = None;
    let lost = |e: russh::Error| SshError::Disconnected {
        host: who.to_string(),
        message: e.to_string(),
    };

    if let Some(path) = &target.identity_file {
        match load_key(path, who)? {
            Some(key) => {
                if try_key(handle, user, key).await.map_err(lost)? {
                    return Ok(());
                }
                tried.push(format!("key file {}", path.display()));
            }
            None => encrypted = Some(path.clone()),
        }
    }

    let agent_sock = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty());
    if agent_sock.is_some() {
        match AgentClient::connect_env().await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(ids) => {
                    for id in ids {
                        let AgentIdentity::PublicKey { key, comment } = id else {
                            continue;
                        };
                        let hash = rsa_hash(handle, &key.algorithm()).await;
                        match handle
                            .authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                            .await
                        {
                            Ok(r) if r.success() => return Ok(()),
                            Ok(_) => {}
                            Err(e) => {
                                warn!(host = %who, "ssh-agent could not sign with {comment}: {e}")
                            }
                        }
                        tried.push(
                            format!("agent key {} {}", known_hosts::fingerprint(&key), comment)
                                .trim()
                                .to_string(),
                        );
                    }
                }
                Err(e) => warn!(host = %who, "cannot list ssh-agent keys: {e}"),
            },
            Err(e) => warn!(host = %who, "cannot reach ssh-agent: {e}"),
        }
    }

    if let Some(path) = encrypted {
        return Err(SshError::KeyEncrypted {
            host: who.to_string(),
            path,
        });
    }

    if target.identity_file.is_none() {
        if let Some(home) = super::config::home_dir() {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let path = home.join(".ssh").join(name);
                if !path.exists() {
                    continue;
                }
                // Encrypted default keys are skipped: only an agent can use them.
                let Ok(Some(key)) = load_key(&path, who) else {
                    continue;
                };
                if try_key(handle, user, key).await.map_err(lost)? {
                    return Ok(());
                }
                tried.push(format!("key file {}", path.display()));
            }
        }
    }

    if tried.is_empty() {
        return Err(SshError::NoCredentials {
            host: who.to_string(),
            user: user.to_string(),
        });
    }
    Err(SshError::AuthFailed {
        host: who.to_string(),
        user: user.to_string(),
        tried: tried.join(", "),
    })
}

/// Loads a private key; `Ok(None)` when it is encrypted.
fn load_key(path: &Path, who: &str) -> Result<Option<PrivateKey>> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(Some(k)),
        Err(russh::keys::Error::KeyIsEncrypted) => Ok(None),
        Err(e) => Err(SshError::KeyLoad {
            host: who.to_string(),
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

async fn rsa_hash(handle: &Handle<Client>, alg: &Algorithm) -> Option<russh::keys::HashAlg> {
    if !is_rsa(alg) {
        return None;
    }
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

async fn try_key(
    handle: &mut Handle<Client>,
    user: &str,
    key: PrivateKey,
) -> std::result::Result<bool, russh::Error> {
    let hash = rsa_hash(handle, &key.algorithm()).await;
    let r = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await?;
    Ok(r.success())
}

/// `(dir, name)` of an absolute remote path.
/// An absolute remote path naming a file, as (directory, name); `None` for anything else,
/// and for a path with an empty, `.` or `..` component anywhere: what is written is never
/// somewhere other than where the path reads (a `..` from a record once wrote
/// `/root/.ssh/authorized_keys`, security review 3 M1).
fn split_remote(remote: &str) -> Option<(&str, &str)> {
    if !remote.starts_with('/') || remote.ends_with('/') {
        return None;
    }
    if remote[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    let (dir, name) = remote.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((if dir.is_empty() { "/" } else { dir }, name))
}

#[derive(Debug, PartialEq, Eq)]
struct RemoteState {
    mode: u32,
    uid: u32,
    gid: u32,
    sha256: String,
}

fn parse_remote_state(out: &str) -> Option<RemoteState> {
    let mut lines = out.lines();
    let meta = lines.next()?.strip_prefix("meta ")?;
    let mut it = meta.split_whitespace();
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let sha256 = lines
        .next()?
        .split_whitespace()
        .next()?
        .to_ascii_lowercase();
    if sha256.len() != 64 {
        return None;
    }
    Some(RemoteState {
        mode,
        uid,
        gid,
        sha256,
    })
}

async fn local_sha256(source: &Source<'_>) -> Result<(String, u64)> {
    match source {
        Source::Bytes(b) => Ok((hex::encode(Sha256::digest(b)), b.len() as u64)),
        Source::Path(p) => {
            let io = |e: std::io::Error| SshError::LocalIo {
                path: p.to_path_buf(),
                message: e.to_string(),
            };
            let mut f = tokio::fs::File::open(p).await.map_err(io)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                h.update(&buf[..n]);
            }
            Ok((hex::encode(h.finalize()), total))
        }
    }
}

pub(crate) fn rand_hex() -> String {
    let v: u64 = rand::random();
    format!("{v:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_wrapping() {
        assert_eq!(wrap_command("id -u", false, None), "id -u");
        assert_eq!(
            wrap_command("echo 'a' | cat", true, None),
            "sudo -n sh -c 'echo '\\''a'\\'' | cat'"
        );
        assert_eq!(
            wrap_command("sleep 1", false, Some(Duration::from_millis(1500))),
            "timeout -k 5 3 sh -c 'sleep 1'"
        );
        assert_eq!(
            wrap_command("sleep 1", true, Some(Duration::from_secs(10))),
            "sudo -n timeout -k 5 11 sh -c 'sleep 1'"
        );
        // The wrapped text survives a real shell unchanged.
        let text = "printf '%s|' \"it's\" '$HOME'";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(wrap_command(text, false, Some(Duration::from_secs(5))))
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's|$HOME|");
    }

    #[test]
    fn remote_paths() {
        assert_eq!(
            split_remote("/etc/rancher/k3s/config.yaml"),
            Some(("/etc/rancher/k3s", "config.yaml"))
        );
        assert_eq!(split_remote("/x"), Some(("/", "x")));
        assert_eq!(split_remote("relative/x"), None);
        assert_eq!(split_remote("/etc/"), None);
        assert_eq!(split_remote("/etc/.."), None);
        for bad in [
            "/var/lib/rancher/k3s/server/restore/../../../../../../root/.ssh/authorized_keys",
            "/etc/./x",
            "/etc//x",
            "/../x",
        ] {
            assert_eq!(split_remote(bad), None, "{bad}");
        }
    }

    #[test]
    fn remote_state() {
        let out = "meta 600 0 0\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  /etc/x\n";
        assert_eq!(
            parse_remote_state(out),
            Some(RemoteState {
                mode: 0o600,
                uid: 0,
                gid: 0,
                sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
            })
        );
        assert_eq!(parse_remote_state("absent\n"), None);
        assert_eq!(parse_remote_state("meta 644 0 0\n"), None);
    }

    #[tokio::test]
    async fn hashes_bytes_and_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data = vec![7u8; 3 << 20];
        std::fs::write(&p, &data).unwrap();
        let a = local_sha256(&Source::Bytes(&data)).await.unwrap();
        let b = local_sha256(&Source::Path(&p)).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.1, 3 << 20);
    }

    #[test]
    fn key_preference_puts_known_types_first() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "10.0.0.5 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBL9Q57ZgYa++ccbgjGUbIKiLf+FMKwjDnlMj47OpBiIqmgt524UmD3m1yQDm8U7SXUBVQgSmriM+4/cFKFMxoXs=\n").unwrap();
        let mut t = SshTarget::new("10.0.0.5");
        t.known_hosts = kh;
        let prefs = preferred_keys(&t);
        assert_eq!(
            prefs[0],
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP256
            }
        );
        assert_eq!(prefs.len(), russh::Preferred::DEFAULT.key.len());
    }
}
