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

/// The environment variables S3 credentials are read from without `credentials_file`: the
/// names k3s itself reads for `etcd-s3-access-key`, `-secret-key` and `-session-token`.
pub const ENV_ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

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
#[derive(Clone, PartialEq)]
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
    pub retention: Option<u32>,
    pub credentials: S3Credentials,
}

#[derive(Clone, PartialEq)]
pub struct S3Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
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
            .field("credentials", &self.credentials.from)
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
                ("etcd-s3-session-token", &s3.credentials.session_token),
            ];
            for (k, v) in opt {
                if let Some(v) = v {
                    keys.push((k, Key::Str(v.clone())));
                }
            }
            if let Some(n) = s3.retention {
                keys.push(("etcd-s3-retention", Key::Str(n.to_string())));
            }
            if s3.skip_ssl_verify {
                keys.push(("etcd-s3-skip-ssl-verify", Key::Bool));
            }
            if s3.insecure {
                keys.push(("etcd-s3-insecure", Key::Bool));
            }
            keys.push((
                "etcd-s3-access-key",
                Key::Str(s3.credentials.access_key.clone()),
            ));
            keys.push((
                "etcd-s3-secret-key",
                Key::Str(s3.credentials.secret_key.clone()),
            ));
        }
        keys
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
        f => format!(
            "[etcd.s3] {}",
            f.strip_prefix("etcd-s3-")?.replace('-', "_")
        ),
    })
}

/// A robfig/cron schedule as k3s parses `etcd-snapshot-schedule-cron` (cron.New()'s standard
/// parser: five fields, or a descriptor such as `@daily` or `@every 6h`).
pub(crate) fn cron(spec: &str) -> Result<(), String> {
    let spec = spec.trim();
    if let Some(d) = spec.strip_prefix('@') {
        if let Some(every) = d.strip_prefix("every ") {
            return go_duration(every.trim()).then_some(()).ok_or_else(|| {
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
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)];
    for (f, (lo, hi)) in fields.iter().zip(ranges) {
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
            for e in ends {
                // Month and weekday names (JAN, MON) are accepted by robfig/cron too.
                if e.chars().all(|c| c.is_ascii_alphabetic()) && e.len() == 3 {
                    continue;
                }
                match e.parse::<u32>() {
                    Ok(n) if (lo..=hi).contains(&n) => {}
                    _ => return Err(format!("\"{e}\" is out of range {lo}-{hi}")),
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

fn retention(r: &mut Report, v: &S<i64>, what: &str) -> Option<u32> {
    super::validate::count_up_to(r, v, what, 1000)
}

/// Reads S3 credentials from a TOML file (`access_key`, `secret_key`, optional
/// `session_token`).
fn credentials_file(path: &Path) -> Result<S3Credentials, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        access_key: String,
        secret_key: String,
        session_token: Option<String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading it: {e}"))?;
    let f: File = toml::from_str(&text).map_err(|e| {
        format!(
            "{}; expected access_key = \"...\" and secret_key = \"...\" (and optionally session_token)",
            e.message()
        )
    })?;
    if f.access_key.is_empty() || f.secret_key.is_empty() {
        return Err("access_key and secret_key must not be empty".into());
    }
    Ok(S3Credentials {
        access_key: f.access_key,
        secret_key: f.secret_key,
        session_token: f.session_token.filter(|t| !t.is_empty()),
        from: path.display().to_string(),
    })
}

fn credentials_env() -> Option<S3Credentials> {
    let get = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(S3Credentials {
        access_key: get(ENV_ACCESS_KEY)?,
        secret_key: get(ENV_SECRET_KEY)?,
        session_token: get(ENV_SESSION_TOKEN),
        from: format!("${ENV_ACCESS_KEY} and ${ENV_SECRET_KEY}"),
    })
}

fn s3(s: raw::RawEtcdS3, r: &mut Report, base: &Path) -> Option<EtcdS3> {
    let mut ok = true;
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
        Some(v) => match resolve_path(v.get_ref(), base)
            .map_err(|e| e.to_string())
            .and_then(|p| std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display())))
        {
            Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {
                Some(base64::engine::general_purpose::STANDARD.encode(pem))
            }
            Ok(_) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidPath,
                    "etcd.s3 endpoint_ca: the file holds no PEM certificate".to_string(),
                );
                ok = false;
                None
            }
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidPath,
                    format!("etcd.s3 endpoint_ca: {e}"),
                );
                ok = false;
                None
            }
        },
    };
    let retention = s
        .retention
        .as_ref()
        .and_then(|v| retention(r, v, "etcd.s3 retention"));
    let credentials = match &s.credentials_file {
        Some(v) => match resolve_path(v.get_ref(), base)
            .map_err(|e| e.to_string())
            .and_then(|p| credentials_file(&p).map_err(|e| format!("{}: {e}", p.display())))
        {
            Ok(c) => Some(c),
            Err(e) => {
                r.error(
                    v.span(),
                    ErrorKind::InvalidPath,
                    format!("etcd.s3 credentials_file {e}"),
                );
                None
            }
        },
        None => {
            let c = credentials_env();
            if c.is_none() {
                r.error(
                    s.bucket.span(),
                    ErrorKind::MissingKey,
                    format!("etcd.s3 needs credentials: set credentials_file (a TOML file beside the inventory with access_key and secret_key), or export {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}"),
                );
            }
            c
        }
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
        credentials,
    })
}

pub(crate) fn etcd(e: raw::RawEtcd, r: &mut Report, base: &Path) -> Etcd {
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
        s3: e.s3.and_then(|s| s3(s, r, base)),
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
