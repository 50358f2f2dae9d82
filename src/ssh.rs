//! The SSH engine: one russh connection per host, reused for every step.
//!
//! - [`Session::connect`] verifies the host key against known_hosts (strict by default), then
//!   authenticates with the key file or ssh-agent, retrying only connect-level failures.
//!   [`Session::connect_with`] does the same and runs a first command in the round trip that
//!   checks privileges, so reading a host once costs one round trip.
//! - [`Session::exec`] runs a [`Cmd`] (as root through `sudo -n` when the login user is not root),
//!   with secrets passed on stdin, never in argv, and a per-command timeout.
//! - [`Session::put_file`] writes a file atomically (temp file, mode first, fsync, rename) and
//!   skips it when the remote sha256 already matches.
//!
//! Errors name the host and say what to try; registered secrets are masked in every message
//! (see [`redact`]).

pub mod config;
pub mod known_hosts;
pub mod quote;
pub mod redact;
mod session;
mod sftp;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::{SshConfig, TargetSpec};
pub use quote::{sh_join, sh_quote};
pub use redact::{redact, register_secret, Redactor};
pub use session::{scan_host_key, wrap_command, Session, SessionStats};

/// Resolves explicit settings against `~/.ssh/config` and the defaults: explicit values win
/// over the ssh config, which wins over the defaults. See [`SshConfig::resolve`].
pub fn resolve(spec: &TargetSpec) -> Result<SshTarget> {
    SshConfig::load_default()?.resolve(spec)
}

/// What to do with a host key known_hosts does not have. A *changed* key is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse unknown keys: the operator adds them after verifying (ssh-keyscan).
    #[default]
    Strict,
    /// Record unknown keys on first contact (trust on first use).
    AcceptNew,
}

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(Self::Strict),
            "accept-new" => Ok(Self::AcceptNew),
            other => Err(format!(
                "unknown host_key_policy `{other}`; expected \"strict\" or \"accept-new\""
            )),
        }
    }
}

impl fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::AcceptNew => "accept-new",
        })
    }
}

/// Connect retries: only connect-level failures (refused, unreachable, timed out, reset during
/// the handshake) are retried, never an authentication or host-key failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
        }
    }
}

/// Everything needed to reach one host. Build it with [`SshConfig::resolve`] to honour
/// `~/.ssh/config`, or directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Display name for messages (the inventory's node name).
    pub name: String,
    /// Address or DNS name to connect to (after ssh config `HostName`).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// A private key file; `None` means ssh-agent, then the default `~/.ssh/id_*` files.
    pub identity_file: Option<PathBuf>,
    /// The known_hosts file a new key is recorded in (the first `UserKnownHostsFile`).
    pub known_hosts: PathBuf,
    /// Further files a host key is looked up in, never written: the other
    /// `UserKnownHostsFile`s and the `GlobalKnownHostsFile`s, as OpenSSH reads them.
    pub also_known_hosts: Vec<PathBuf>,
    /// `HostKeyAlias`: the name the host key is recorded and looked up under instead of
    /// `host` and `port`.
    pub host_key_alias: Option<String>,
    pub policy: HostKeyPolicy,
    /// With `accept-new`, whether a new host key is written to known_hosts (`false` for a
    /// command that must change nothing, such as `plan`: the key is trusted for that run only).
    pub record_new: bool,
    /// Reach this host through another one (ProxyJump).
    pub bastion: Option<Box<SshTarget>>,
    /// Timeout for TCP connect plus SSH handshake, per attempt.
    pub connect_timeout: Duration,
    /// Default timeout for each command; a [`Cmd`] may override it.
    pub command_timeout: Duration,
    pub retry: RetryPolicy,
}

impl SshTarget {
    /// A target with the defaults: port 22, user root, `~/.ssh/known_hosts`, strict.
    /// Every known_hosts file the host key is looked up in, the recording one first.
    pub fn known_hosts_files(&self) -> Vec<&Path> {
        std::iter::once(self.known_hosts.as_path())
            .chain(self.also_known_hosts.iter().map(PathBuf::as_path))
            .collect()
    }

    /// The name and port the host key is recorded under: `HostKeyAlias` (port 22, as OpenSSH
    /// writes it), else the host.
    pub fn key_name(&self) -> (&str, u16) {
        match &self.host_key_alias {
            Some(a) => (a, 22),
            None => (&self.host, self.port),
        }
    }

    pub fn new(host: impl Into<String>) -> Self {
        let host = host.into();
        let known_hosts = config::home_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".ssh")
            .join("known_hosts");
        Self {
            name: host.clone(),
            host,
            port: 22,
            user: "root".into(),
            identity_file: None,
            known_hosts,
            also_known_hosts: Vec::new(),
            host_key_alias: None,
            policy: HostKeyPolicy::Strict,
            record_new: true,
            bastion: None,
            connect_timeout: config::DEFAULT_CONNECT_TIMEOUT,
            command_timeout: config::DEFAULT_COMMAND_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// `name (user@host:port)` for messages, shortened when the parts coincide.
    pub fn describe(&self) -> String {
        let addr = if self.port == 22 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        if self.name == self.host {
            addr
        } else {
            format!("{} ({addr})", self.name)
        }
    }
}

/// A command to run on a host. The text is visible to every user of the host (argv), so it must
/// hold no secret: pass secrets with [`Cmd::stdin`].
#[derive(Clone, PartialEq, Eq)]
pub struct Cmd {
    text: String,
    stdin: Option<Vec<u8>>,
    label: Option<String>,
    timeout: Option<Duration>,
    privileged: bool,
    marked: bool,
    secret_output: bool,
    output_limit: Option<usize>,
}

/// The most a command may print (stdout and stderr together) unless it says otherwise: a host
/// that streams without end fails the command instead of filling this machine's memory.
pub const OUTPUT_LIMIT: usize = 16 << 20;

/// The run every command is marked with (`BOOTSTRAP_RUN=<id>` in its environment, inherited
/// by what it starts), so an interrupted run can find and stop what it left running on a host.
static RUN_MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Mark every command from now on with run `id` (hex); the first call wins.
pub fn mark_run(id: &str) {
    if id.bytes().all(|b| b.is_ascii_hexdigit()) {
        let _ = RUN_MARKER.set(id.to_string());
    }
}

/// The run marker, once set.
pub fn run_marker() -> Option<&'static str> {
    RUN_MARKER.get().map(String::as_str)
}

impl Cmd {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            stdin: None,
            label: None,
            timeout: None,
            privileged: true,
            marked: true,
            secret_output: false,
            output_limit: None,
        }
    }

    /// Its standard output holds secrets (tokens, keys, a kubeconfig, even in base64): never
    /// shown in an error, whatever goes wrong.
    pub fn secret_output(mut self) -> Self {
        self.secret_output = true;
        self
    }

    pub fn is_secret_output(&self) -> bool {
        self.secret_output
    }

    /// Allows more output than [`OUTPUT_LIMIT`] (a step that reads many objects at once).
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = Some(bytes);
        self
    }

    pub fn output_limit_bytes(&self) -> usize {
        self.output_limit.unwrap_or(OUTPUT_LIMIT)
    }

    /// Not marked with the run (the command that stops the run's marked commands).
    pub fn unmarked(mut self) -> Self {
        self.marked = false;
        self
    }

    pub fn is_marked(&self) -> bool {
        self.marked
    }

    /// Data written to the command's stdin, followed by EOF. This is where secrets go.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// A short name for progress lines and errors (defaults to the first words of the text).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Overrides the target's command timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs as the login user even when it is not root (no sudo).
    pub fn unprivileged(mut self) -> Self {
        self.privileged = false;
        self
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn stdin_data(&self) -> Option<&[u8]> {
        self.stdin.as_deref()
    }

    pub fn is_privileged(&self) -> bool {
        self.privileged
    }

    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }

    /// The label, or the command's first line cut to 60 characters, redacted.
    pub fn display_label(&self) -> String {
        let raw = match &self.label {
            Some(l) => l.clone(),
            None => {
                let first = self.text.lines().next().unwrap_or("").trim();
                let mut s: String = first.chars().take(60).collect();
                if first.chars().count() > 60 || self.text.lines().count() > 1 {
                    s.push('…');
                }
                s
            }
        };
        redact(&raw)
    }
}

impl fmt::Debug for Cmd {
    // Stdin is never printed: it is where secrets travel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd")
            .field("text", &redact(&self.text))
            .field(
                "stdin",
                &self.stdin.as_ref().map(|s| format!("<{} bytes>", s.len())),
            )
            .field("label", &self.label)
            .field("timeout", &self.timeout)
            .field("privileged", &self.privileged)
            .finish()
    }
}

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// `None` when the command ended without an exit status (killed by a signal).
    pub exit_code: Option<u32>,
    /// The signal that ended the command, if any.
    pub signal: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command's stdout holds secrets ([`Cmd::secret_output`]): never in a message.
    pub secret_stdout: bool,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// How it ended, for messages: `exited 1`, `was killed by TERM`.
    pub fn status_text(&self) -> String {
        match (&self.exit_code, &self.signal) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("was killed by {s}"),
            (None, None) => "ended without an exit status".into(),
        }
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The last `lines` lines of stderr (or of stdout when stderr is empty and stdout holds
    /// no secret), redacted.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let quiet = self.stderr.iter().all(u8::is_ascii_whitespace);
        if quiet && self.secret_stdout {
            return "(nothing on stderr; what it printed holds secrets and is not shown)".into();
        }
        let src = if quiet { &self.stdout } else { &self.stderr };
        tail(&String::from_utf8_lossy(src), lines)
    }
}

/// Last `lines` non-empty lines of `text`, redacted.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    redact(&all[start..].join("\n"))
}

/// What [`Session::put_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Content, mode and owner already matched: nothing was written.
    Unchanged,
    /// The file was written (or only its mode/owner were corrected).
    Written,
}

/// The content for [`Session::put_file`].
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Bytes(&'a [u8]),
    /// A local file, streamed in chunks (it may be large).
    Path(&'a std::path::Path),
}

impl<'a> From<&'a [u8]> for Source<'a> {
    fn from(b: &'a [u8]) -> Self {
        Source::Bytes(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Source<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Source::Bytes(b)
    }
}

impl<'a> From<&'a str> for Source<'a> {
    fn from(s: &'a str) -> Self {
        Source::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a String> for Source<'a> {
    fn from(s: &'a String) -> Self {
        Source::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a std::path::Path> for Source<'a> {
    fn from(p: &'a std::path::Path) -> Self {
        Source::Path(p)
    }
}

impl<'a> From<&'a PathBuf> for Source<'a> {
    fn from(p: &'a PathBuf) -> Self {
        Source::Path(p)
    }
}

/// Errors of the SSH engine. Each names the host and says what to try.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{file}:{line}: {message}")]
    Config {
        file: PathBuf,
        line: usize,
        message: String,
    },

    #[error("invalid ssh target: {message}")]
    InvalidTarget { message: String },

    #[error("{path}: {message}")]
    LocalIo { path: PathBuf, message: String },

    #[error("{host}: cannot connect after {attempts} attempt(s): {reason}; check that the host is up, that sshd listens on port {port} and that no firewall blocks it")]
    Connect {
        host: String,
        port: u16,
        attempts: u32,
        reason: String,
    },

    #[error("{0}")]
    HostKeyUnknown(Box<UnknownHostKey>),

    #[error("{0}")]
    HostKeyChanged(Box<ChangedHostKey>),

    #[error("{0}")]
    HostKeyTypeChanged(Box<TypeChangedHostKey>),

    #[error("{host}: host key {fingerprint} for {host_id} is marked @revoked in {file}:{line}; refusing to connect")]
    HostKeyRevoked {
        host: String,
        host_id: String,
        file: PathBuf,
        line: usize,
        fingerprint: String,
    },

    #[error("{host}: the server presented a host certificate, which bootstrap does not verify; disable HostCertificate on the server or record its plain key in known_hosts")]
    HostCertificate { host: String },

    #[error("{host}: cannot read or update {file}: {message}")]
    KnownHostsIo {
        host: String,
        file: PathBuf,
        message: String,
    },

    #[error("{host}: the key {path} is encrypted and no ssh-agent holds it; load it into ssh-agent (eval $(ssh-agent); ssh-add {path}) and run again")]
    KeyEncrypted { host: String, path: PathBuf },

    #[error("{host}: cannot load key {path}: {message}")]
    KeyLoad {
        host: String,
        path: PathBuf,
        message: String,
    },

    #[error("{host}: authentication as {user} failed (tried: {tried}); check that the public key is in ~{user}/.ssh/authorized_keys on the host, or set ssh.identity_file")]
    AuthFailed {
        host: String,
        user: String,
        tried: String,
    },

    #[error("{host}: no credentials to log in as {user}: no identity_file, no ssh-agent (SSH_AUTH_SOCK is unset or empty) and no ~/.ssh/id_ed25519, id_ecdsa or id_rsa; set ssh.identity_file or start ssh-agent and ssh-add your key")]
    NoCredentials { host: String, user: String },

    #[error("user {user} on {host} cannot run sudo without a password: add '{user} ALL=(ALL) NOPASSWD:ALL' to /etc/sudoers.d/{user}, or connect as root{detail}")]
    SudoPassword {
        host: String,
        user: String,
        detail: String,
    },

    #[error("{host}: `{label}` timed out after {after:?}; the host may be overloaded, or raise the timeout (--timeout)")]
    Timeout {
        host: String,
        label: String,
        after: Duration,
    },

    #[error("{host}: `{label}` failed with {status}{}", stderr_suffix(.stderr_tail))]
    CommandFailed {
        host: String,
        label: String,
        status: String,
        stderr_tail: String,
    },

    #[error("{host}: {what}: {message}")]
    Channel {
        host: String,
        what: String,
        message: String,
    },

    #[error("{host}: file transfer of {path} failed ({op}): {message}")]
    Sftp {
        host: String,
        path: String,
        op: String,
        message: String,
    },

    #[error(
        "{host}: the connection was lost: {message}; run again (steps already done are skipped)"
    )]
    Disconnected { host: String, message: String },

    #[error("{host}: `{label}` printed more than {} MiB, so it was stopped; a command that floods its output is broken, or the host is not what it should be", .limit >> 20)]
    TooMuchOutput {
        host: String,
        label: String,
        limit: usize,
    },

    #[error("{host}: the login shell printed before `{label}` ran, so no command's output can be trusted to be its own: {banner:?}; make non-interactive shells quiet (the profile or ~/.bashrc of the login user; sshd's Banner goes elsewhere and is fine)")]
    ShellBanner {
        host: String,
        label: String,
        banner: String,
    },
}

/// Details of a host key that known_hosts does not have (boxed: errors stay small).
#[derive(Debug, thiserror::Error)]
#[error("{host}: host key for {host_id} is not in {file}; verify it and add it (ssh-keyscan -p {port} {addr} >> {file}), or set ssh.host_key_policy = \"accept-new\" (offered key {fingerprint})")]
pub struct UnknownHostKey {
    pub host: String,
    pub host_id: String,
    pub addr: String,
    pub port: u16,
    pub file: PathBuf,
    pub fingerprint: String,
}

/// A server that offers only a key type known_hosts has no entry of, for a host it has keys of.
#[derive(Debug, thiserror::Error)]
#[error("{host}: known_hosts ({file}) records a {recorded} key for {host_id}, but the server offered only {offered_type} ({offered}); a host with a recorded key is only trusted with a recorded key, so this is treated as a changed key. If the server's keys really changed, verify the new one, remove the old entry (ssh-keygen -R '{host_id}' -f {file}) and run again")]
pub struct TypeChangedHostKey {
    pub host: String,
    pub host_id: String,
    pub file: PathBuf,
    pub recorded: String,
    pub offered_type: String,
    pub offered: String,
}

/// Details of a host key that differs from the recorded one.
#[derive(Debug, thiserror::Error)]
#[error("{host}: HOST KEY CHANGED for {host_id}: the server offered {offered} but {file}:{line} records {recorded} (`{entry}`). This can be a man-in-the-middle attack, or the host was reinstalled. If the change is expected, verify the new key, remove the old entry (ssh-keygen -R '{host_id}' -f {file}) and run again")]
pub struct ChangedHostKey {
    pub host: String,
    pub host_id: String,
    pub file: PathBuf,
    /// 1-based line of the recorded entry.
    pub line: usize,
    /// The recorded known_hosts line.
    pub entry: String,
    /// Fingerprint of the recorded key.
    pub recorded: String,
    /// Fingerprint of the key the server offered.
    pub offered: String,
}

fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n{tail}")
    }
}

impl SshError {
    /// Connect-level failures are worth retrying; authentication and host keys never are.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SshError::Connect { .. })
    }
}

pub type Result<T, E = SshError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parse() {
        assert_eq!(
            "strict".parse::<HostKeyPolicy>().unwrap(),
            HostKeyPolicy::Strict
        );
        assert_eq!(
            "accept-new".parse::<HostKeyPolicy>().unwrap(),
            HostKeyPolicy::AcceptNew
        );
        assert!("yes".parse::<HostKeyPolicy>().is_err());
        assert_eq!(HostKeyPolicy::AcceptNew.to_string(), "accept-new");
    }

    #[test]
    fn cmd_label_and_debug_hide_secrets() {
        register_secret("sup3r-s3cret-token");
        let c = Cmd::new(
            "echo sup3r-s3cret-token | k3s something --with-a-very-long-argument-list-here",
        )
        .stdin(b"sup3r-s3cret-token".to_vec());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sup3r-s3cret-token"), "{dbg}");
        assert!(dbg.contains("<18 bytes>"));
        let label = c.display_label();
        assert!(!label.contains("sup3r"), "{label}");
        assert!(label.ends_with('…'));
        assert_eq!(Cmd::new("true").label("probe").display_label(), "probe");
    }

    #[test]
    fn tail_and_errors() {
        let out = CmdOutput {
            exit_code: Some(2),
            signal: None,
            stdout: b"out".to_vec(),
            stderr: b"l1\nl2\n\nl3\n".to_vec(),
            secret_stdout: false,
        };
        assert_eq!(out.stderr_tail(2), "l2\nl3");
        let quiet = CmdOutput {
            exit_code: Some(1),
            stdout: b"only stdout".to_vec(),
            ..Default::default()
        };
        assert_eq!(quiet.stderr_tail(5), "only stdout");
        // A command whose stdout holds secrets never falls back to it (security review 3 M2).
        let secret = CmdOutput {
            exit_code: Some(1),
            stdout: b"config.b64\tdG9rZW46IHNlY3JldA==".to_vec(),
            secret_stdout: true,
            ..Default::default()
        };
        assert!(
            !secret.stderr_tail(5).contains("dG9r"),
            "{}",
            secret.stderr_tail(5)
        );
        let e = SshError::CommandFailed {
            host: "worker-1".into(),
            label: "install".into(),
            status: "exit code 2".into(),
            stderr_tail: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "worker-1: `install` failed with exit code 2:\nboom"
        );
        let e = SshError::SudoPassword {
            host: "worker-1".into(),
            user: "deploy".into(),
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "user deploy on worker-1 cannot run sudo without a password: add 'deploy ALL=(ALL) NOPASSWD:ALL' to /etc/sudoers.d/deploy, or connect as root"
        );
    }

    #[test]
    fn describe() {
        let mut t = SshTarget::new("10.0.0.5");
        assert_eq!(t.describe(), "10.0.0.5");
        t.name = "worker-1".into();
        t.port = 2222;
        assert_eq!(t.describe(), "worker-1 (10.0.0.5:2222)");
    }
}
