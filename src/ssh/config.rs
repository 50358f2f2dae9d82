//! A small `~/.ssh/config` reader and the resolver that turns an inventory's SSH settings into an
//! [`SshTarget`].
//!
//! Only what `bootstrap` acts on is read: `Host` blocks with `*`/`?`/`!` patterns, `HostName`,
//! `User`, `Port`, `IdentityFile`, `ProxyJump`, `UserKnownHostsFile` and
//! `GlobalKnownHostsFile` (each with several files), `HostKeyAlias` and `Include`. As in
//! OpenSSH, the first value found for a keyword wins and `IdentityFile` accumulates; an
//! `Include` inside a `Host` or `Match` block applies the included file only under that block's
//! condition, and the including file's next lines belong to that block again. `Match` blocks are
//! not evaluated: they are skipped with a warning rather than guessed at, and so is everything
//! a `Match` includes.
//!
//! Precedence: values given explicitly (the inventory) win over the ssh config, which wins over
//! the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{HostKeyPolicy, RetryPolicy, SshError, SshTarget};

/// Default timeout for the TCP connect plus the SSH handshake of one attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout for one remote command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// How deep `ProxyJump` chains and `Include` files may nest.
const MAX_DEPTH: usize = 8;

/// One option line inside a block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OptionLine {
    key: String,
    args: Vec<String>,
    file: PathBuf,
    line: usize,
}

/// What a block's options are conditional on.
#[derive(Debug, Clone)]
enum Cond {
    /// A `Host` line's patterns.
    Host(Vec<String>),
    /// A `Match` line: never applied (see the module doc).
    Match,
}

#[derive(Debug, Clone)]
struct Block {
    /// Every condition must hold: a `Host` line's, and those of the blocks that `Include`d the
    /// file it is in. The implicit block before the first `Host` line has none.
    conds: Vec<Cond>,
    options: Vec<OptionLine>,
}

impl Block {
    fn applies(&self, host: &str) -> bool {
        self.conds.iter().all(|c| match c {
            Cond::Host(p) => pattern_list_match(host, p.iter().map(String::as_str)),
            Cond::Match => false,
        })
    }
}

/// A parsed ssh config file.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

/// What the ssh config says about one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Every `IdentityFile` that applies, in order, with `~` and `%` tokens expanded.
    pub identity_files: Vec<PathBuf>,
    /// `ProxyJump`; `Some("none")` is normalised to `None` by the resolver.
    pub proxy_jump: Option<String>,
    /// `UserKnownHostsFile`: empty when not set; `none` is `/dev/null`.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// `GlobalKnownHostsFile`: empty when not set.
    pub global_known_hosts_files: Vec<PathBuf>,
    pub host_key_alias: Option<String>,
}

/// SSH settings given explicitly, typically from the inventory. `None` means "not given": the
/// ssh config, then the defaults, decide.
#[derive(Debug, Clone, Default)]
pub struct TargetSpec {
    /// Display name for messages (the inventory's node name); defaults to `host`.
    pub name: Option<String>,
    /// The host as the user wrote it: an address, a DNS name or an ssh config alias.
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub policy: Option<HostKeyPolicy>,
    /// `[user@]host[:port]`, comma-separated for several hops, or `"none"` to disable a
    /// `ProxyJump` from the ssh config.
    pub bastion: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub command_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

impl TargetSpec {
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            ..Self::default()
        }
    }
}

fn config_err(file: &Path, line: usize, message: impl Into<String>) -> SshError {
    SshError::Config {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// The home directory, from `$HOME`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Expands a leading `~/` (or a lone `~`) to the home directory.
pub fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        if let Some(h) = home_dir() {
            return h;
        }
    }
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(h) = home_dir() {
            return h.join(rest);
        }
    }
    PathBuf::from(path)
}

/// Splits an option line into keyword and arguments. Accepts `Key value`, `Key=value` and
/// `Key = value`; double quotes group words.
fn split_line(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let key_end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let key = line[..key_end].to_ascii_lowercase();
    let mut rest = line[key_end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for c in rest.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    args.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            '#' if !in_quotes && !has_token => break,
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if has_token {
        args.push(cur);
    }
    Some((key, args))
}

/// `*` and `?` wildcard match, case-insensitive, as OpenSSH's `match_pattern`.
pub fn wildcard_match(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let (mut ti, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A pattern list as in `Host a b !c` or known_hosts `a,b,!c`: a negated match vetoes, otherwise
/// any positive match wins.
pub fn pattern_list_match<'a>(host: &str, patterns: impl IntoIterator<Item = &'a str>) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard_match(host, neg) {
                return false;
            }
        } else if wildcard_match(host, p) {
            matched = true;
        }
    }
    matched
}

impl SshConfig {
    /// An empty config: every lookup gives only defaults.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses config text; `file` is only used in error messages and to resolve `Include`.
    pub fn parse(text: &str, file: &Path) -> Result<Self, SshError> {
        let mut cfg = SshConfig {
            blocks: vec![Block {
                conds: vec![],
                options: vec![],
            }],
        };
        cfg.parse_into(text, file, 0, &[])?;
        Ok(cfg)
    }

    /// Parses one file whose every block is also conditional on `outer` (the conditions of
    /// the block that included it).
    fn parse_into(
        &mut self,
        text: &str,
        file: &Path,
        depth: usize,
        outer: &[Cond],
    ) -> Result<(), SshError> {
        let under = |c: Cond| outer.iter().cloned().chain(std::iter::once(c)).collect();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let Some((key, args)) = split_line(raw) else {
                continue;
            };
            match key.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(config_err(file, line, "`Host` needs at least one pattern"));
                    }
                    self.blocks.push(Block {
                        conds: under(Cond::Host(args)),
                        options: vec![],
                    });
                }
                "match" => {
                    tracing::warn!(
                        file = %file.display(),
                        line,
                        "ssh config `Match` blocks are not evaluated by bootstrap; their options are ignored"
                    );
                    self.blocks.push(Block {
                        conds: under(Cond::Match),
                        options: vec![],
                    });
                }
                "include" => {
                    if depth >= MAX_DEPTH {
                        return Err(config_err(file, line, "`Include` nested too deeply"));
                    }
                    // As OpenSSH: the included files apply under the current block's condition,
                    // and after them this file's lines belong to that block again.
                    let enclosing = self
                        .blocks
                        .last()
                        .map(|b| b.conds.clone())
                        .unwrap_or_default();
                    for arg in &args {
                        for path in expand_include(arg) {
                            let Ok(text) = std::fs::read_to_string(&path) else {
                                continue;
                            };
                            self.blocks.push(Block {
                                conds: enclosing.clone(),
                                options: vec![],
                            });
                            self.parse_into(&text, &path, depth + 1, &enclosing)?;
                        }
                    }
                    self.blocks.push(Block {
                        conds: enclosing,
                        options: vec![],
                    });
                }
                _ => {
                    if args.is_empty() {
                        return Err(config_err(file, line, format!("`{key}` needs a value")));
                    }
                    if key == "port" {
                        let v = &args[0];
                        if v.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
                            return Err(config_err(
                                file,
                                line,
                                format!("`Port {v}` is not a port number (1-65535)"),
                            ));
                        }
                    }
                    let opt = OptionLine {
                        key,
                        args,
                        file: file.to_path_buf(),
                        line,
                    };
                    if let Some(block) = self.blocks.last_mut() {
                        block.options.push(opt);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads and parses a config file. A missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, SshError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty()),
            Err(e) => Err(SshError::LocalIo {
                path: path.to_path_buf(),
                message: format!("cannot read ssh config: {e}"),
            }),
        }
    }

    /// Reads `~/.ssh/config` (empty when there is none).
    pub fn load_default() -> Result<Self, SshError> {
        match home_dir() {
            Some(h) => Self::load(&h.join(".ssh").join("config")),
            None => Ok(Self::empty()),
        }
    }

    /// What the config says for `host` (the name as written, before `HostName`).
    pub fn lookup(&self, host: &str) -> HostConfig {
        let mut out = HostConfig::default();
        let mut raw_identity: Vec<String> = Vec::new();
        let mut raw_user_kh: Option<&[String]> = None;
        let mut raw_global_kh: Option<&[String]> = None;
        for block in &self.blocks {
            if !block.applies(host) {
                continue;
            }
            for opt in &block.options {
                let v = &opt.args[0];
                match opt.key.as_str() {
                    "hostname" if out.hostname.is_none() => {
                        out.hostname = Some(v.replace("%h", host).replace("%%", "%"))
                    }
                    "user" if out.user.is_none() => out.user = Some(v.clone()),
                    "port" if out.port.is_none() => out.port = v.parse().ok(),
                    "proxyjump" if out.proxy_jump.is_none() => out.proxy_jump = Some(v.clone()),
                    "userknownhostsfile" if raw_user_kh.is_none() => raw_user_kh = Some(&opt.args),
                    "globalknownhostsfile" if raw_global_kh.is_none() => {
                        raw_global_kh = Some(&opt.args)
                    }
                    "hostkeyalias" if out.host_key_alias.is_none() => {
                        out.host_key_alias = Some(v.clone())
                    }
                    "identityfile" => raw_identity.push(v.clone()),
                    _ => {}
                }
            }
        }
        let hostname = out.hostname.clone().unwrap_or_else(|| host.to_string());
        let port = out.port.unwrap_or(22);
        let user = out.user.clone().unwrap_or_else(|| "root".into());
        let expand = |p: &String| expand_tilde(&expand_tokens(p, &hostname, port, &user));
        out.identity_files = raw_identity.iter().map(expand).collect();
        let files = |raw: Option<&[String]>| -> Vec<PathBuf> {
            raw.unwrap_or_default()
                .iter()
                .map(|p| {
                    if p.eq_ignore_ascii_case("none") {
                        PathBuf::from(DEV_NULL)
                    } else {
                        expand(p)
                    }
                })
                .collect()
        };
        out.user_known_hosts_files = files(raw_user_kh);
        out.global_known_hosts_files = files(raw_global_kh);
        out
    }

    /// Builds an [`SshTarget`] from explicit settings, this config and the defaults.
    pub fn resolve(&self, spec: &TargetSpec) -> Result<SshTarget, SshError> {
        self.resolve_depth(spec, 0)
    }

    fn resolve_depth(&self, spec: &TargetSpec, depth: usize) -> Result<SshTarget, SshError> {
        if spec.host.trim().is_empty() {
            return Err(SshError::InvalidTarget {
                message: "host is empty".into(),
            });
        }
        let hc = self.lookup(&spec.host);
        let host = hc.hostname.clone().unwrap_or_else(|| spec.host.clone());
        let port = spec.port.or(hc.port).unwrap_or(22);
        let user = spec
            .user
            .clone()
            .or(hc.user.clone())
            .unwrap_or_else(|| "root".into());
        let identity_file = match &spec.identity_file {
            Some(p) => Some(expand_tilde(&p.to_string_lossy())),
            // As OpenSSH, config identities that do not exist are skipped silently.
            None => hc.identity_files.iter().find(|p| p.exists()).cloned(),
        };
        // As OpenSSH: the first user file records new keys; every user file and every global
        // file is read.
        let user_files = match &spec.known_hosts {
            Some(p) => vec![expand_tilde(&p.to_string_lossy())],
            None if hc.user_known_hosts_files.is_empty() => default_known_hosts(),
            None => hc.user_known_hosts_files.clone(),
        };
        let global_files = if hc.global_known_hosts_files.is_empty() {
            DEFAULT_GLOBAL_KNOWN_HOSTS
                .iter()
                .map(PathBuf::from)
                .collect()
        } else {
            hc.global_known_hosts_files.clone()
        };
        let mut files = user_files.into_iter().chain(global_files);
        let known_hosts = files.next().unwrap_or_else(|| PathBuf::from(DEV_NULL));
        let mut also_known_hosts: Vec<PathBuf> = Vec::new();
        for f in files {
            if f != known_hosts && !also_known_hosts.contains(&f) {
                also_known_hosts.push(f);
            }
        }
        let jump = spec
            .bastion
            .clone()
            .or(hc.proxy_jump.clone())
            .filter(|j| !j.eq_ignore_ascii_case("none"));
        let bastion = match jump {
            None => None,
            Some(chain) => {
                if depth >= MAX_DEPTH {
                    return Err(SshError::InvalidTarget {
                        message: format!(
                            "bastion chain for {} is too deep (loop in ProxyJump?)",
                            spec.host
                        ),
                    });
                }
                Some(Box::new(
                    self.resolve_jump_chain(&chain, spec, &user, depth)?,
                ))
            }
        };
        Ok(SshTarget {
            name: spec.name.clone().unwrap_or_else(|| spec.host.clone()),
            host,
            port,
            user,
            identity_file,
            known_hosts,
            also_known_hosts,
            host_key_alias: hc.host_key_alias.clone(),
            policy: spec.policy.unwrap_or_default(),
            record_new: true,
            bastion,
            connect_timeout: spec.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            command_timeout: spec.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
            retry: spec.retry.unwrap_or_default(),
        })
    }

    /// `a,b,c` means: connect to `a`, through it to `b`, through that to `c`, and through `c` to
    /// the target. So the last hop is the target's bastion and the first has none.
    fn resolve_jump_chain(
        &self,
        chain: &str,
        target: &TargetSpec,
        target_user: &str,
        depth: usize,
    ) -> Result<SshTarget, SshError> {
        let hops: Vec<&str> = chain
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let mut prev: Option<SshTarget> = None;
        for hop in hops {
            let (user, host, port) = parse_jump(hop)?;
            let hc = self.lookup(&host);
            let spec = TargetSpec {
                name: Some(format!("bastion {host}")),
                host,
                port,
                user: user.or(hc.user.clone()).or(Some(target_user.to_string())),
                identity_file: target.identity_file.clone(),
                known_hosts: target.known_hosts.clone(),
                policy: target.policy,
                // Within an explicit chain the order is given; a hop's own ProxyJump is ignored
                // except for the first hop, where OpenSSH would apply it too.
                bastion: Some(if prev.is_none() {
                    hc.proxy_jump.clone().unwrap_or_else(|| "none".into())
                } else {
                    "none".into()
                }),
                connect_timeout: target.connect_timeout,
                command_timeout: target.command_timeout,
                retry: target.retry,
            };
            let mut t = self.resolve_depth(&spec, depth + 1)?;
            if let Some(p) = prev.take() {
                t.bastion = Some(Box::new(p));
            }
            prev = Some(t);
        }
        prev.ok_or_else(|| SshError::InvalidTarget {
            message: format!("bastion `{chain}` names no host"),
        })
    }
}

/// `UserKnownHostsFile none`, and a known_hosts that knows nothing and records nothing.
pub const DEV_NULL: &str = "/dev/null";

/// OpenSSH's `GlobalKnownHostsFile` default.
const DEFAULT_GLOBAL_KNOWN_HOSTS: [&str; 2] =
    ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// OpenSSH's `UserKnownHostsFile` default: `~/.ssh/known_hosts ~/.ssh/known_hosts2`.
fn default_known_hosts() -> Vec<PathBuf> {
    let dir = home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".ssh");
    vec![dir.join("known_hosts"), dir.join("known_hosts2")]
}

/// `%h`, `%p`, `%r`, `%u`, `%d`, `%%` as OpenSSH expands them in `IdentityFile`.
fn expand_tokens(s: &str, host: &str, port: u16, user: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&port.to_string()),
            Some('r') => out.push_str(user),
            Some('u') => out.push_str(&std::env::var("USER").unwrap_or_default()),
            Some('d') => out.push_str(&home_dir().unwrap_or_default().to_string_lossy()),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn expand_include(arg: &str) -> Vec<PathBuf> {
    let mut path = expand_tilde(arg);
    if path.is_relative() {
        if let Some(h) = home_dir() {
            path = h.join(".ssh").join(path);
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !name.contains('*') && !name.contains('?') {
        return vec![path];
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| wildcard_match(&e.file_name().to_string_lossy(), &name))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Parses one jump hop: `[ssh://][user@]host[:port]`, with `[v6addr]:port`.
pub fn parse_jump(hop: &str) -> Result<(Option<String>, String, Option<u16>), SshError> {
    let bad = |why: &str| SshError::InvalidTarget {
        message: format!("bastion `{hop}`: {why}; expected [user@]host[:port]"),
    };
    let s = hop.strip_prefix("ssh://").unwrap_or(hop);
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(bad("empty user")),
        None => (None, s),
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("junk after `]`")),
        };
        (h.to_string(), port)
    } else if rest.matches(':').count() == 1 {
        let (h, p) = rest.split_once(':').ok_or_else(|| bad("bad port"))?;
        (h.to_string(), Some(p))
    } else {
        (rest.to_string(), None)
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        ),
        None => None,
    };
    Ok((user, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
# global defaults come first in OpenSSH files, but `Host *` at the end is the usual idiom
Host bastion
    HostName 198.51.100.7
    User jumper
    Port 2222

Host worker-? !worker-9
    HostName 10.0.0.%h
    User = deploy
    IdentityFile ~/.ssh/worker_key
    ProxyJump bastion

Host "quoted name" other
    Port=2200

Match host foo
    User ignored

Host *
    User fallback
    Port 22
    IdentityFile ~/.ssh/id_%r
"#;

    fn cfg() -> SshConfig {
        SshConfig::parse(CFG, Path::new("/test/config")).expect("parses")
    }

    #[test]
    fn wildcard() {
        assert!(wildcard_match("worker-1", "worker-?"));
        assert!(wildcard_match("worker-1", "*"));
        assert!(wildcard_match("a.example.com", "*.example.com"));
        assert!(!wildcard_match("example.com", "*.example.com"));
        assert!(wildcard_match("Worker-1", "worker-*"));
        assert!(!wildcard_match("worker-10", "worker-?"));
        assert!(wildcard_match("abcbd", "a*b?"));
        assert!(pattern_list_match("worker-1", ["worker-?", "!worker-9"]));
        assert!(!pattern_list_match("worker-9", ["worker-?", "!worker-9"]));
        assert!(!pattern_list_match("x", ["!y"]));
    }

    #[test]
    fn split_forms() {
        assert_eq!(
            split_line("  User = deploy").unwrap(),
            ("user".into(), vec!["deploy".into()])
        );
        assert_eq!(
            split_line("Port=2200").unwrap(),
            ("port".into(), vec!["2200".into()])
        );
        assert_eq!(
            split_line("IdentityFile \"/a b/key\" # comment").unwrap(),
            ("identityfile".into(), vec!["/a b/key".into()])
        );
        assert!(split_line("# x").is_none());
        assert!(split_line("   ").is_none());
    }

    #[test]
    fn first_value_wins_and_identity_accumulates() {
        let hc = cfg().lookup("worker-1");
        assert_eq!(hc.hostname.as_deref(), Some("10.0.0.worker-1"));
        assert_eq!(hc.user.as_deref(), Some("deploy"));
        assert_eq!(hc.port, Some(22));
        assert_eq!(hc.proxy_jump.as_deref(), Some("bastion"));
        assert_eq!(hc.identity_files.len(), 2);
        assert!(hc.identity_files[0].ends_with(".ssh/worker_key"));
        assert!(hc.identity_files[1].ends_with(".ssh/id_deploy"));
    }

    #[test]
    fn negation_and_match_blocks() {
        let hc = cfg().lookup("worker-9");
        assert_eq!(hc.hostname, None);
        assert_eq!(hc.user.as_deref(), Some("fallback"));
        let foo = cfg().lookup("foo");
        assert_eq!(
            foo.user.as_deref(),
            Some("fallback"),
            "Match blocks are skipped"
        );
        let q = cfg().lookup("quoted name");
        assert_eq!(q.port, Some(2200));
    }

    #[test]
    fn bad_port_is_an_error_with_line() {
        let err = SshConfig::parse("Host x\n  Port abc\n", Path::new("/c")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/c:2"), "{msg}");
        assert!(msg.contains("Port abc"), "{msg}");
    }

    #[test]
    fn explicit_wins_over_config_wins_over_defaults() {
        let c = cfg();
        let mut spec = TargetSpec::new("worker-1");
        let t = c.resolve(&spec).unwrap();
        assert_eq!(t.host, "10.0.0.worker-1");
        assert_eq!(t.user, "deploy");
        assert_eq!(t.port, 22);
        assert_eq!(t.name, "worker-1");
        assert_eq!(t.policy, HostKeyPolicy::Strict);
        let b = t.bastion.as_ref().expect("ProxyJump from config");
        assert_eq!(
            (b.host.as_str(), b.port, b.user.as_str()),
            ("198.51.100.7", 2222, "jumper")
        );
        assert!(b.bastion.is_none());

        spec.user = Some("root".into());
        spec.port = Some(2022);
        spec.bastion = Some("none".into());
        spec.policy = Some(HostKeyPolicy::AcceptNew);
        let t = c.resolve(&spec).unwrap();
        assert_eq!((t.user.as_str(), t.port), ("root", 2022));
        assert!(t.bastion.is_none());
        assert_eq!(t.policy, HostKeyPolicy::AcceptNew);

        let t = SshConfig::empty()
            .resolve(&TargetSpec::new("203.0.113.10"))
            .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("203.0.113.10", 22, "root")
        );
        assert!(t.known_hosts.ends_with(".ssh/known_hosts"));
        assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn jump_chains() {
        let mut spec = TargetSpec::new("10.1.0.5");
        spec.user = Some("deploy".into());
        spec.bastion = Some("a@first:2200,second".into());
        let t = SshConfig::empty().resolve(&spec).unwrap();
        let second = t.bastion.as_ref().unwrap();
        assert_eq!(
            (second.host.as_str(), second.user.as_str()),
            ("second", "deploy")
        );
        let first = second.bastion.as_ref().unwrap();
        assert_eq!(
            (first.host.as_str(), first.port, first.user.as_str()),
            ("first", 2200, "a")
        );
        assert!(first.bastion.is_none());
    }

    #[test]
    fn parse_jump_forms() {
        assert_eq!(parse_jump("h").unwrap(), (None, "h".into(), None));
        assert_eq!(
            parse_jump("u@h:22").unwrap(),
            (Some("u".into()), "h".into(), Some(22))
        );
        assert_eq!(
            parse_jump("ssh://u@[::1]:2200").unwrap(),
            (Some("u".into()), "::1".into(), Some(2200))
        );
        assert_eq!(
            parse_jump("fe80::1").unwrap(),
            (None, "fe80::1".into(), None)
        );
        assert!(parse_jump("h:notaport").is_err());
        assert!(parse_jump("@h").is_err());
    }

    #[test]
    fn include_under_a_block_applies_under_it_and_the_block_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("inc.conf"),
            "User from-include\nHost lab-*\n  Port 2200\n",
        )
        .unwrap();
        let d = dir.path().display();
        let text = format!(
            "Host prod\n  Include {d}/inc.conf\n  UserKnownHostsFile /k1 /k2\n\
             Match all\n  Include {d}/inc.conf\n\
             Host *\n  GlobalKnownHostsFile /g\n  HostKeyAlias alias-%h\n"
        );
        let c = SshConfig::parse(&text, Path::new("/c")).unwrap();
        let prod = c.lookup("prod");
        assert_eq!(prod.user.as_deref(), Some("from-include"));
        assert_eq!(prod.port, None, "lab-* inside prod's include needs both");
        assert_eq!(
            prod.user_known_hosts_files,
            vec![PathBuf::from("/k1"), PathBuf::from("/k2")],
            "the line after the Include belongs to Host prod"
        );
        assert_eq!(prod.global_known_hosts_files, vec![PathBuf::from("/g")]);
        let lab = c.lookup("lab-1");
        assert_eq!(
            lab.user, None,
            "an include under Host prod or Match is not for lab-1"
        );
        assert_eq!(lab.port, None);
        assert!(lab.user_known_hosts_files.is_empty());
        assert_eq!(lab.host_key_alias.as_deref(), Some("alias-%h"));
        let t = c.resolve(&TargetSpec::new("prod")).unwrap();
        assert_eq!(t.known_hosts, PathBuf::from("/k1"));
        assert_eq!(
            t.also_known_hosts,
            vec![PathBuf::from("/k2"), PathBuf::from("/g")]
        );
    }

    #[test]
    fn include_files() {
        let dir = tempfile::tempdir().unwrap();
        let inc = dir.path().join("extra.conf");
        std::fs::write(&inc, "Host inc\n  User included\n").unwrap();
        let text = format!(
            "Include {}/*.conf\nHost *\n  User other\n",
            dir.path().display()
        );
        let c = SshConfig::parse(&text, Path::new("/c")).unwrap();
        assert_eq!(c.lookup("inc").user.as_deref(), Some("included"));
        assert_eq!(c.lookup("zzz").user.as_deref(), Some("other"));
    }

    #[test]
    fn missing_file_is_empty() {
        let c = SshConfig::load(Path::new("/nonexistent/ssh/config")).unwrap();
        assert_eq!(c.lookup("x"), HostConfig::default());
    }
}
