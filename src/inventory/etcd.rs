//! `[etcd]`: embedded etcd's scheduled snapshots and their S3 copies, rendered into every
//! server's config.yaml as k3s's own `etcd-snapshot-*` and `etcd-s3*` flags (k3s
//! pkg/cli/cmds/server.go:400-433 and the `etcd-s3` block after it). S3 credentials never sit
//! in the inventory: they come from `credentials_file` or the environment and reach the
//! servers only inside their 0600 config.yaml.

use std::fmt;
use std::path::Path;

use base64::Engine;

use super::error::{ErrorKind, Report};
use super::raw::{self, S};
use super::resolve_path;
use super::values::{count_up_to, shipped_path, Shipped};

/// The environment variables S3 credentials are read from without `credentials_file`: the
/// names k3s itself reads for `etcd-s3-access-key`, `-secret-key` and `-session-token`.
pub const ENV_ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Temporary (STS) credentials' third part: refused, see [`SESSION_TOKEN_WHY`].
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Why temporary credentials do not work: k3s's `etcd-snapshot` client builds its S3 request
/// without the session token (pkg/cli/etcdsnapshot/etcd_snapshot.go:57-72), and the server
/// refuses the whole save when the S3 client cannot start (pkg/etcd/snapshot_handler.go:87-94),
/// so every `bootstrap etcd snapshot` would fail with no local snapshot either; and the token
/// written into config.yaml expires within hours, after which the scheduled uploads fail.
pub(crate) const SESSION_TOKEN_WHY: &str = "temporary credentials (a session token) do not work with k3s: its etcd-snapshot client drops the token, so every on-demand snapshot fails (\"failed to initialize S3 client\") and takes no local snapshot either, and the token in config.yaml expires within hours, after which scheduled uploads stop. Use the static keys of a user allowed only this bucket";

/// k3s's client timeout for `etcd-snapshot save` (pkg/cli/etcdsnapshot/etcd_snapshot.go:30).
pub const SNAPSHOT_CLIENT_SECS: u64 = 120;
/// `etcd-s3-timeout`'s default (pkg/cli/cmds/server.go:521-525).
pub const S3_TIMEOUT_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Etcd {
    /// `etcd-snapshot-schedule-cron` (k3s default `0 */12 * * *`).
    pub snapshot_schedule: Option<String>,
    /// `etcd-snapshot-retention` (k3s default 5).
    pub snapshot_retention: Option<u32>,
    /// `etcd-snapshot-dir`: an absolute path on the servers.
    pub snapshot_dir: Option<String>,
    pub snapshot_compress: bool,
    pub disable_snapshots: bool,
    pub s3: Option<EtcdS3>,
}

/// Where the servers copy their snapshots (k3s `etcd-s3*`).
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdS3 {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub folder: Option<String>,
    pub region: Option<String>,
    /// The endpoint's CA bundle, base64 of its PEM: k3s takes base64 data as well as a path
    /// (pkg/etcd/s3/s3.go:563-585, `loadEndpointCAs`), so nothing but config.yaml is written.
    pub endpoint_ca: Option<String>,
    pub skip_ssl_verify: bool,
    pub insecure: bool,
    /// `etcd-s3-retention`; 0 keeps everything. Unset: k3s takes `snapshot_retention` when
    /// that is set, else 5 (pkg/cli/server/server.go:220-222), counted over every server's
    /// snapshots in the folder together.
    pub retention: Option<u32>,
    /// `etcd-s3-proxy`: `none`, or a URL with scheme and host (pkg/etcd/s3/s3.go:192-208).
    pub proxy: Option<String>,
    /// `etcd-s3-timeout`, seconds (k3s: 5 minutes).
    pub timeout_secs: Option<u64>,
    /// `etcd-s3-bucket-lookup-type`: `auto`, `dns` or `path` (s3.go:590-602).
    pub bucket_lookup_type: Option<String>,
    /// The keys written into the servers' config.yaml: from `credentials_file`, or the
    /// operator's environment when `credentials = "env"` says so. None: the servers use
    /// their own, as k3s finds them after static keys: root's `~/.aws/credentials`, then the
    /// instance role (pkg/etcd/s3/s3.go:210-225).
    pub credentials: Option<S3Credentials>,
    /// age recipients (`age1...`) the operator's `.bootstrap/` is encrypted to when `up`
    /// puts it beside the snapshots; empty: it is not uploaded.
    pub secrets_recipients: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key: String,
    pub secret_key: String,
    /// Where they came from, for messages (never the values).
    pub from: String,
}

impl fmt::Debug for EtcdS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdS3")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("folder", &self.folder)
            .field("region", &self.region)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| c.from.as_str()),
            )
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// The config.yaml keys, sorted by the config itself; booleans only when on.
    pub fn server_keys(&self) -> Vec<(&'static str, Key)> {
        let mut keys = Vec::new();
        if let Some(c) = &self.snapshot_schedule {
            keys.push(("etcd-snapshot-schedule-cron", Key::Str(c.clone())));
        }
        if let Some(n) = self.snapshot_retention {
            keys.push(("etcd-snapshot-retention", Key::Str(n.to_string())));
        }
        if let Some(d) = &self.snapshot_dir {
            keys.push(("etcd-snapshot-dir", Key::Str(d.clone())));
        }
        if self.snapshot_compress {
            keys.push(("etcd-snapshot-compress", Key::Bool));
        }
        if self.disable_snapshots {
            keys.push(("etcd-disable-snapshots", Key::Bool));
        }
        if let Some(s3) = &self.s3 {
            keys.push(("etcd-s3", Key::Bool));
            keys.push(("etcd-s3-bucket", Key::Str(s3.bucket.clone())));
            let opt = [
                ("etcd-s3-endpoint", &s3.endpoint),
                ("etcd-s3-folder", &s3.folder),
                ("etcd-s3-region", &s3.region),
                ("etcd-s3-endpoint-ca", &s3.endpoint_ca),
                ("etcd-s3-proxy", &s3.proxy),
                ("etcd-s3-bucket-lookup-type", &s3.bucket_lookup_type),
            ];
            for (k, v) in opt {
                if let Some(v) = v {
                    keys.push((k, Key::Str(v.clone())));
                }
            }
            if let Some(n) = s3.retention {
                keys.push(("etcd-s3-retention", Key::Str(n.to_string())));
            }
            if let Some(t) = s3.timeout_secs {
                keys.push(("etcd-s3-timeout", Key::Str(format!("{t}s"))));
            }
            if s3.skip_ssl_verify {
                keys.push(("etcd-s3-skip-ssl-verify", Key::Bool));
            }
            if s3.insecure {
                keys.push(("etcd-s3-insecure", Key::Bool));
            }
            if let Some(c) = &s3.credentials {
                keys.push(("etcd-s3-access-key", Key::Str(c.access_key.clone())));
                keys.push(("etcd-s3-secret-key", Key::Str(c.secret_key.clone())));
            }
        }
        keys
    }

    /// How long k3s's own `etcd-snapshot save` may take: its client timeout, plus the S3
    /// timeout when it uploads.
    pub fn snapshot_timeout_secs(&self) -> u64 {
        SNAPSHOT_CLIENT_SECS
            + self
                .s3
                .as_ref()
                .map(|s| s.timeout_secs.unwrap_or(S3_TIMEOUT_SECS))
                .unwrap_or(0)
    }

    /// Where the servers keep their snapshots.
    pub fn dir(&self) -> &str {
        self.snapshot_dir
            .as_deref()
            .unwrap_or(crate::k3s::SNAPSHOT_DIR)
    }
}

/// A config.yaml value of `[etcd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Str(String),
    /// `true`.
    Bool,
}

/// The `[etcd]` key that renders a k3s server flag, for a flag written in `server_config`.
pub(crate) fn key_for_flag(flag: &str) -> Option<String> {
    Some(match flag {
        "etcd-snapshot-schedule-cron" => "snapshot_schedule".into(),
        "etcd-snapshot-retention" => "snapshot_retention".into(),
        "etcd-snapshot-dir" => "snapshot_dir".into(),
        "etcd-snapshot-compress" => "snapshot_compress".into(),
        "etcd-disable-snapshots" => "disable_snapshots".into(),
        "etcd-s3" => "[etcd.s3]".into(),
        "etcd-s3-access-key" | "etcd-s3-secret-key" => "[etcd.s3] credentials_file".into(),
        "etcd-s3-endpoint"
        | "etcd-s3-endpoint-ca"
        | "etcd-s3-skip-ssl-verify"
        | "etcd-s3-bucket"
        | "etcd-s3-region"
        | "etcd-s3-folder"
        | "etcd-s3-insecure"
        | "etcd-s3-retention"
        | "etcd-s3-proxy"
        | "etcd-s3-timeout"
        | "etcd-s3-bucket-lookup-type" => format!(
            "[etcd.s3] {}",
            flag.strip_prefix("etcd-s3-")?.replace('-', "_")
        ),
        _ => return None,
    })
}

/// A robfig/cron (v3.0.1) schedule as k3s parses `etcd-snapshot-schedule-cron`: `cron.New()`
/// with the standard parser (k3s pkg/etcd/etcd.go:166; robfig `parser.go`:217-219): an
/// optional `CRON_TZ=<zone> ` or `TZ=<zone> ` prefix (`parser.go`:95-103), then five fields or
/// a descriptor (`@daily`, `@every 6h`). Each field is a list of `*`, `?`, a number, a range
/// `a-b`, with an optional `/step`; month and day-of-week take names (JAN-DEC, SUN-SAT, any
/// case) and only they do. k3s drops the parser's error (pkg/etcd/snapshot.go:919): a schedule
/// robfig refuses silently takes no snapshots, hence the check here.
pub(crate) fn cron(spec: &str) -> Result<(), String> {
    let mut spec = spec.trim();
    for tz in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = spec.strip_prefix(tz) {
            let (zone, after) = rest
                .split_once(' ')
                .ok_or("a time zone prefix needs the schedule after it")?;
            if zone.is_empty()
                || zone.starts_with('/')
                || zone.contains("..")
                || !zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
            {
                return Err(format!(
                    "\"{zone}\" is not a time zone name such as Europe/Berlin"
                ));
            }
            // Go's time.LoadLocation reads the same tz database; where this machine has it,
            // a zone it lacks is refused here rather than ignored by k3s.
            let db = std::path::Path::new("/usr/share/zoneinfo");
            if zone != "UTC" && zone != "Local" && db.is_dir() && !db.join(zone).is_file() {
                return Err(format!("\"{zone}\" is not a time zone in the tz database"));
            }
            spec = after.trim();
            break;
        }
    }
    if let Some(d) = spec.strip_prefix('@') {
        // robfig hands what follows `@every ` to time.ParseDuration as it is (parser.go:426).
        if let Some(every) = d.strip_prefix("every ") {
            return go_duration(every).then_some(()).ok_or_else(|| {
                format!("@every needs a Go duration such as 6h or 90m, not \"{every}\"")
            });
        }
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => Err(format!("unknown descriptor @{d}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let specs: [(&str, u32, u32, &[&str], u32); 5] = [
        ("minute", 0, 59, &[], 0),
        ("hour", 0, 23, &[], 0),
        ("day-of-month", 1, 31, &[], 0),
        ("month", 1, 12, &MONTHS, 1),
        ("day-of-week", 0, 6, &DAYS, 0),
    ];
    for (f, (what, lo, hi, names, first)) in fields.iter().zip(specs) {
        let value = |e: &str| -> Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(e)) {
                return Ok(i as u32 + first);
            }
            match e.parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                Ok(n) => Err(format!("{n} is out of range {lo}-{hi} for {what}")),
                Err(_) if names.is_empty() => Err(format!(
                    "\"{e}\" is not a number (names are only for month and day-of-week)"
                )),
                Err(_) => Err(format!("\"{e}\" is not a number or a {what} name")),
            }
        };
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(s) = step {
                if s.parse::<u32>().map_or(true, |n| n == 0) {
                    return Err(format!("\"{part}\": the step must be a positive number"));
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            let ends: Vec<&str> = range.split('-').collect();
            if ends.len() > 2 || ends.iter().any(|e| e.is_empty()) {
                return Err(format!("\"{part}\" is not a number, range or *"));
            }
            let start = value(ends[0])?;
            if let Some(end) = ends.get(1) {
                let end = value(end)?;
                if start > end {
                    return Err(format!(
                        "\"{part}\": the beginning of the range ({start}) is beyond its end ({end})"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Go's time.ParseDuration syntax: one or more `<number><unit>`, unit ns, us, ms, s, m or h.
fn go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(&rest[..unit], "ns" | "us" | "ms" | "s" | "m" | "h") {
            return false;
        }
        rest = &rest[unit..];
    }
    true
}

/// A retention: 0 keeps every snapshot (k3s: `retention < 1`, pkg/etcd/snapshot.go:933,
/// pkg/etcd/s3/s3.go:391), else at most 1000.
fn retention(r: &mut Report, v: &S<i64>, what: &str) -> Option<u32> {
    if *v.get_ref() == 0 {
        return Some(0);
    }
    count_up_to(r, v, what, 1000)
}

/// Reads S3 credentials from a TOML file (`access_key`, `secret_key`); a `session_token` is
/// refused ([`SESSION_TOKEN_WHY`]).
fn credentials_file(path: &Path) -> Result<S3Credentials, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        access_key: String,
        secret_key: String,
        session_token: Option<String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading it: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("reading it: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "is open to others than its owner (mode {:04o}): it holds the key to every snapshot of the cluster; chmod 600 it",
                mode & 0o7777
            ));
        }
    }
    let f: File = toml::from_str(&text).map_err(|e| {
        format!(
            "{}; expected access_key = \"...\" and secret_key = \"...\"",
            e.message()
        )
    })?;
    if f.session_token.is_some_and(|t| !t.is_empty()) {
        return Err(format!("has a session_token: {SESSION_TOKEN_WHY}"));
    }
    if f.access_key.is_empty() || f.secret_key.is_empty() {
        return Err("access_key and secret_key must not be empty".into());
    }
    Ok(S3Credentials {
        access_key: f.access_key,
        secret_key: f.secret_key,
        from: path.display().to_string(),
    })
}

/// Credentials from the environment; `Err` when they are temporary ones.
fn credentials_env() -> Result<Option<S3Credentials>, String> {
    let get = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(access_key), Some(secret_key)) = (get(ENV_ACCESS_KEY), get(ENV_SECRET_KEY)) else {
        return Ok(None);
    };
    if get(ENV_SESSION_TOKEN).is_some() {
        return Err(format!(
            "the credentials in the environment come with ${ENV_SESSION_TOKEN}: {SESSION_TOKEN_WHY}, in credentials_file"
        ));
    }
    Ok(Some(S3Credentials {
        access_key,
        secret_key,
        from: format!("${ENV_ACCESS_KEY} and ${ENV_SECRET_KEY}"),
    }))
}

fn s3(s: raw::RawEtcdS3, r: &mut Report, shipped: &Shipped) -> Option<EtcdS3> {
    let mut ok = true;
    // As the install mirror's allow_http: every snapshot holds every Secret of the cluster.
    for (key, set, what) in [
        ("insecure", s.insecure, "plain http, readable and changeable on the way"),
        ("skip_ssl_verify", s.skip_ssl_verify, "TLS to an endpoint whose certificate is not checked, so anyone on the way can pose as it"),
    ] {
        if set == Some(true) && s.allow_insecure != Some(true) {
            r.error(
                r.key_span(key),
                ErrorKind::InvalidValue,
                format!("etcd.s3 {key} = true sends every snapshot, that is every Secret of the cluster, over {what}; give the endpoint's CA in endpoint_ca instead, or set allow_insecure = true in [etcd.s3] for an endpoint on a network you trust"),
            );
            ok = false;
        }
    }
    let bucket = s.bucket.get_ref().clone();
    // S3 bucket names: 3-63 characters of a-z, 0-9, '.', '-'.
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        r.error(
            s.bucket.span(),
            ErrorKind::InvalidName,
            format!("etcd.s3 bucket \"{bucket}\" is not a valid bucket name; expected 3 to 63 characters of a-z, 0-9, '.' and '-'"),
        );
        ok = false;
    }
    if let Some(e) = &s.endpoint {
        let v = e.get_ref();
        if v.contains("://") || v.contains('/') || v.is_empty() {
            r.error(
                e.span(),
                ErrorKind::InvalidHost,
                format!("etcd.s3 endpoint \"{v}\" must be a host[:port] without a scheme or path (k3s adds https://, or http:// with insecure = true)"),
            );
            ok = false;
        }
    }
    let endpoint_ca = match &s.endpoint_ca {
        None => None,
        Some(v) => {
            let read = shipped_path(r, v, "etcd.s3 endpoint_ca", shipped)
                .map(|p| std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display())));
            match read {
                None => {
                    ok = false;
                    None
                }
                Some(Ok(pem))
                    if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") =>
                {
                    Some(base64::engine::general_purpose::STANDARD.encode(pem))
                }
                Some(Ok(_)) => {
                    r.error(
                        v.span(),
                        ErrorKind::InvalidPath,
                        "etcd.s3 endpoint_ca: the file holds no PEM certificate".to_string(),
                    );
                    ok = false;
                    None
                }
                Some(Err(e)) => {
                    r.error(
                        v.span(),
                        ErrorKind::InvalidPath,
                        format!("etcd.s3 endpoint_ca: {e}"),
                    );
                    ok = false;
                    None
                }
            }
        }
    };
    let retention = s
        .retention
        .as_ref()
        .and_then(|v| retention(r, v, "etcd.s3 retention"));
    // Static keys only where the inventory asks for them: a file, or the operator's own
    // environment when `credentials = "env"` says so (audit 3 part 1 #9: copying a personal
    // key to every server unasked is not the tool's to do). Otherwise k3s's chain on the
    // servers: root's ~/.aws/credentials, then the instance role (s3.go:210-225).
    let from_env = match &s.credentials {
        None => false,
        Some(v) if v.get_ref() == "env" => true,
        Some(v) => {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                format!("etcd.s3 credentials \"{}\": the only value is \"env\" (copy ${ENV_ACCESS_KEY} and ${ENV_SECRET_KEY} of this machine into the servers' config.yaml); for a file use credentials_file, and for the servers' own (root's ~/.aws/credentials or the instance role) leave both out", v.get_ref()),
            );
            ok = false;
            false
        }
    };
    let credentials: Option<Option<S3Credentials>> = match (&s.credentials_file, from_env) {
        (Some(v), true) => {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                "etcd.s3 has both credentials_file and credentials = \"env\"; keep one".to_string(),
            );
            None
        }
        (Some(v), false) => match resolve_path(v.get_ref(), shipped.base)
            .map_err(|e| e.to_string())
            .and_then(|p| credentials_file(&p).map_err(|e| format!("{}: {e}", p.display())))
        {
            Ok(c) => Some(Some(c)),
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidPath,
                    format!("etcd.s3 credentials_file {e}"),
                );
                None
            }
        },
        (None, true) => match credentials_env() {
            Ok(Some(c)) => Some(Some(c)),
            Ok(None) => {
                r.error(
                    s.credentials.as_ref().map_or(s.bucket.span(), |c| c.span()),
                    ErrorKind::MissingKey,
                    format!("etcd.s3 credentials = \"env\", but ${ENV_ACCESS_KEY} and ${ENV_SECRET_KEY} are not both set"),
                );
                None
            }
            Err(e) => {
                r.error(
                    s.credentials.as_ref().map_or(s.bucket.span(), |c| c.span()),
                    ErrorKind::InvalidValue,
                    format!("etcd.s3: {e}"),
                );
                None
            }
        },
        (None, false) => Some(None),
    };
    let mut secrets_recipients = Vec::new();
    for v in s.secrets_recipients.iter().flatten() {
        let k = v.get_ref();
        if crate::secrets::parse_recipient(k).is_ok() {
            secrets_recipients.push(k.clone());
        } else {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                format!("etcd.s3 secrets_recipients: \"{k}\" is not an age public key (age1...); make one with `age-keygen` and keep its identity file off the cluster"),
            );
            ok = false;
        }
    }
    let proxy = match &s.proxy {
        None => None,
        Some(v) => {
            let p = v.get_ref();
            let url_ok = p.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && !rest.is_empty() && !rest.starts_with('/')
            });
            if p == "none" || url_ok {
                Some(p.clone())
            } else {
                r.error(
                    v.span(),
                    ErrorKind::InvalidValue,
                    format!("etcd.s3 proxy \"{p}\" must be \"none\" (no proxy, not even the environment's) or a URL with scheme and host, such as \"http://proxy.example.com:3128\" (k3s: proxy URL must include scheme and host)"),
                );
                ok = false;
                None
            }
        }
    };
    let bucket_lookup_type = match &s.bucket_lookup_type {
        None => None,
        Some(v) if matches!(v.get_ref().as_str(), "auto" | "dns" | "path") => {
            Some(v.get_ref().clone())
        }
        Some(v) => {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                format!("etcd.s3 bucket_lookup_type \"{}\" is not one k3s knows; expected \"auto\", \"dns\" (virtual-host style) or \"path\"", v.get_ref()),
            );
            ok = false;
            None
        }
    };
    let timeout_secs = match &s.timeout {
        None => None,
        Some(v) => match super::syntax::duration(v.get_ref()) {
            Ok(d) if d.as_secs() >= 1 => Some(d.as_secs()),
            Ok(_) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidDuration,
                    "etcd.s3 timeout must be at least 1s".to_string(),
                );
                ok = false;
                None
            }
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidDuration,
                    format!("etcd.s3 timeout is not valid: {e}; e.g. \"10m\""),
                );
                ok = false;
                None
            }
        },
    };
    let credentials = credentials?;
    ok.then(|| EtcdS3 {
        endpoint: s.endpoint.map(S::into_inner),
        bucket,
        folder: s.folder.map(S::into_inner).filter(|f| !f.is_empty()),
        region: s.region.map(S::into_inner),
        endpoint_ca,
        skip_ssl_verify: s.skip_ssl_verify.unwrap_or(false),
        insecure: s.insecure.unwrap_or(false),
        retention,
        proxy,
        timeout_secs,
        bucket_lookup_type,
        credentials,
        secrets_recipients,
    })
}

pub(crate) fn etcd(e: raw::RawEtcd, r: &mut Report, shipped: &Shipped) -> Etcd {
    if let Some(v) = &e.snapshot_schedule {
        if let Err(why) = cron(v.get_ref()) {
            r.error(
                v.span(),
                ErrorKind::InvalidValue,
                format!(
                    "etcd snapshot_schedule \"{}\" is not a cron schedule: {why}",
                    v.get_ref()
                ),
            );
        }
    }
    if let Some(v) = &e.snapshot_dir {
        let d = v.get_ref();
        if !d.starts_with('/') || d.contains("..") || d.contains(char::is_whitespace) {
            r.error(
                v.span(),
                ErrorKind::InvalidPath,
                format!("etcd snapshot_dir \"{d}\" must be an absolute path on the servers, without '..' or spaces"),
            );
        }
    }
    Etcd {
        snapshot_schedule: e.snapshot_schedule.map(S::into_inner),
        snapshot_retention: e
            .snapshot_retention
            .as_ref()
            .and_then(|v| retention(r, v, "etcd snapshot_retention")),
        snapshot_dir: e
            .snapshot_dir
            .map(S::into_inner)
            .map(|d| d.trim_end_matches('/').to_string()),
        snapshot_compress: e.snapshot_compress.unwrap_or(false),
        disable_snapshots: e.disable_snapshots.unwrap_or(false),
        s3: e.s3.and_then(|s| s3(s, r, shipped)),
    }
}

#[cfg(test)]
mod tests {
    use super::cron;

    #[test]
    fn cron_schedules_as_robfig_reads_them() {
        for ok in [
            "0 */12 * * *",
            "*/5 * * * *",
            "0 3 * * 1-5",
            "15,45 0-6 1 JAN MON",
            "@daily",
            "@every 6h",
        ] {
            assert!(cron(ok).is_ok(), "{ok}: {:?}", cron(ok));
        }
        for bad in [
            "0 */12 * *",
            "61 * * * *",
            "*/0 * * * *",
            "@sometimes",
            "a-b-c * * * *",
        ] {
            assert!(cron(bad).is_err(), "{bad}");
        }
    }
}
