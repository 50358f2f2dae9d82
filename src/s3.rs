//! The tool's own S3 client, for the bucket `[etcd.s3]` names: the servers upload their
//! snapshots there (k3s does, pkg/etcd/s3/s3.go), and this machine lists, reads and writes
//! the same folder when the servers are gone (`etcd restore --from-s3`), or puts the
//! operator's encrypted secrets beside the snapshots.
//!
//! Requests are signed by `rusty-s3` (SigV4 presigned URLs) and sent by `ureq` over rustls;
//! nothing here signs by hand. The settings are k3s's: the endpoint without a scheme (https,
//! or http with `insecure`), the endpoint CA as the only roots when given (s3.go:563-588
//! `loadEndpointCAs` makes a pool of those alone), the bucket looked up by path unless the
//! endpoint is AWS's (minio's `BucketLookupAuto`, s3.go:590-602), and the folder as a key
//! prefix (s3.go:258-260).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use rusty_s3::actions::{GetObject, HeadObject, ListObjectsV2, PutObject};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::inventory::EtcdS3;

/// k3s's folder for the snapshots' extra metadata (pkg/etcd/snapshot/types.go `MetadataDir`).
pub const METADATA_DIR: &str = ".metadata";
/// The user metadata k3s puts on every snapshot object (s3.go:38-40, 290-297): canonical
/// MIME header keys after `x-amz-meta-`, read back lowercased.
pub const TOKEN_HASH_KEY: &str = "k3s-token-hash";
pub const NODE_NAME_KEY: &str = "k3s-node-name";
/// Where the operator's encrypted secrets go, under the folder: k3s takes every object of the
/// folder for a snapshot except those in a `.metadata` directory (s3.go ListSnapshots), reads
/// a `.metadata/` object only for the snapshot of the same name, and deletes only
/// `.metadata/<snapshot>` (DeleteSnapshot); so the archive is never listed or pruned as one.
pub const SECRETS_KEY: &str = ".metadata/bootstrap-secrets.age";

/// How long a signed request stays valid: long enough for a slow upload to start.
const SIGNED_FOR: Duration = Duration::from_secs(900);

/// An object of the snapshot folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    /// The file name (the key's last component), which is the snapshot's name.
    pub name: String,
    pub size: u64,
    /// RFC 3339, as S3 gives it.
    pub last_modified: String,
}

impl Object {
    /// When the snapshot was taken, as k3s reads it from an S3 listing: the unix time after
    /// the name's last `-` (`.zip` cut), else the object's modification time (s3.go
    /// ListSnapshots).
    pub fn created_unix(&self) -> i64 {
        let base = self.name.strip_suffix(".zip").unwrap_or(&self.name);
        base.rsplit_once('-')
            .and_then(|(_, t)| t.parse::<i64>().ok())
            .or_else(|| {
                time::OffsetDateTime::parse(
                    &self.last_modified,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
                .map(|t| t.unix_timestamp())
            })
            .unwrap_or(0)
    }

    /// [`created_unix`](Self::created_unix) as RFC 3339 (UTC), as `etcd list` shows times.
    pub fn created(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.created_unix())
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// Where the credentials for this machine's requests came from (never the values).
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: Credentials,
    folder: String,
    /// `s3://bucket/folder`, for messages.
    pub place: String,
    /// Where the credentials came from.
    pub credentials_from: String,
}

/// `~/.aws/credentials` (or `$AWS_SHARED_CREDENTIALS_FILE`), profile `$AWS_PROFILE` or
/// `default`: the file minio's `FileAWSCredentials` reads, which k3s tries after static keys
/// (s3.go:210-225).
fn shared_credentials() -> Option<(Credentials, String)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials"))
        })?;
    let text = std::fs::read_to_string(&path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let c = parse_shared_credentials(&text, &profile)?;
    Some((c, format!("{} [{profile}]", path.display())))
}

/// The `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` of `[profile]`
/// in an AWS shared credentials file (INI).
pub fn parse_shared_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut section = String::new();
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            keys.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let key = keys.get("aws_access_key_id").filter(|v| !v.is_empty())?;
    let secret = keys
        .get("aws_secret_access_key")
        .filter(|v| !v.is_empty())?;
    Some(
        match keys.get("aws_session_token").filter(|v| !v.is_empty()) {
            Some(t) => Credentials::new_with_token(key.clone(), secret.clone(), t.clone()),
            None => Credentials::new(key.clone(), secret.clone()),
        },
    )
}

/// minio's `BucketLookupAuto` as k3s configures it (s3.go:590-602): virtual-host style for
/// AWS's endpoints and `aliyun`, path style elsewhere; `dns` and `path` force one.
pub fn url_style(endpoint: &str, lookup: Option<&str>, bucket: &str) -> UrlStyle {
    match lookup.map(str::to_ascii_lowercase).as_deref() {
        Some("dns") => UrlStyle::VirtualHost,
        Some("path") => UrlStyle::Path,
        _ if endpoint.contains("aliyun") => UrlStyle::VirtualHost,
        _ if endpoint.ends_with("amazonaws.com") && !bucket.contains('.') => UrlStyle::VirtualHost,
        _ => UrlStyle::Path,
    }
}

/// The folder as a key prefix: `folder/`, or nothing.
pub fn prefix(folder: Option<&str>) -> String {
    match folder.map(|f| f.trim_matches('/')) {
        Some(f) if !f.is_empty() => format!("{f}/"),
        _ => String::new(),
    }
}

/// Whether `key` (under the folder) is a snapshot, as k3s's listing takes it: anything but
/// the `.metadata/` objects (s3.go SnapshotRetention and ListSnapshots skip
/// `path.Base(path.Dir(key)) == ".metadata"`).
pub fn is_snapshot_key(key: &str) -> bool {
    let dir = key.rsplit_once('/').map_or("", |(d, _)| d);
    dir.rsplit('/').next() != Some(METADATA_DIR) && !key.ends_with('/')
}

impl Client {
    /// A client for `s3`, with this machine's credentials: the inventory's static keys, else
    /// `$AWS_ACCESS_KEY_ID`/`$AWS_SECRET_ACCESS_KEY`, else the shared credentials file.
    pub fn new(s3: &EtcdS3) -> Result<Client> {
        let endpoint = s3.endpoint.as_deref().unwrap_or("s3.amazonaws.com");
        let scheme = if s3.insecure { "http" } else { "https" };
        let url = url::Url::parse(&format!("{scheme}://{endpoint}"))
            .with_context(|| format!("etcd.s3 endpoint {endpoint}"))?;
        let bucket = Bucket::new(
            url,
            url_style(endpoint, s3.bucket_lookup_type.as_deref(), &s3.bucket),
            s3.bucket.clone(),
            s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
        )
        .map_err(|e| anyhow!("etcd.s3 bucket {} at {endpoint}: {e}", s3.bucket))?;
        let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        let (credentials, credentials_from) = match &s3.credentials {
            Some(c) => (
                Credentials::new(c.access_key.clone(), c.secret_key.clone()),
                c.from.clone(),
            ),
            None => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(k), Some(s)) => (
                    match env("AWS_SESSION_TOKEN") {
                        Some(t) => Credentials::new_with_token(k, s, t),
                        None => Credentials::new(k, s),
                    },
                    "$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY on this machine".into(),
                ),
                _ => shared_credentials().ok_or_else(|| {
                    anyhow!(
                        "no S3 credentials on this machine for s3://{}: [etcd.s3] names none (the servers use their own), and neither $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY nor ~/.aws/credentials has any; export them or set credentials_file in [etcd.s3]",
                        s3.bucket
                    )
                })?,
            },
        };
        let mut tls = ureq::tls::TlsConfig::builder().unversioned_rustls_crypto_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ));
        if s3.skip_ssl_verify {
            tls = tls.disable_verification(true);
        } else if let Some(ca) = &s3.endpoint_ca {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(ca)
                .context("etcd.s3 endpoint_ca")?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("no certificates loaded from etcd.s3 endpoint_ca");
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let timeout =
            Duration::from_secs(s3.timeout_secs.unwrap_or(crate::inventory::S3_TIMEOUT_SECS));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_global(Some(timeout))
            .build()
            .into();
        let folder = prefix(s3.folder.as_deref());
        Ok(Client {
            agent,
            place: format!("s3://{}/{}", s3.bucket, folder),
            bucket,
            credentials,
            folder,
            credentials_from,
        })
    }

    fn fail(&self, what: &str, resp: ureq::http::Response<ureq::Body>) -> anyhow::Error {
        let status = resp.status();
        let mut body = String::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(4096)
            .read_to_string(&mut body);
        // S3's error document: its Code and Message say what went wrong.
        let tag = |t: &str| {
            body.split_once(&format!("<{t}>"))
                .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
                .map(|(v, _)| v.to_string())
        };
        let detail = match (tag("Code"), tag("Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            _ => String::new(),
        };
        anyhow!(
            "S3 {what} in {}: HTTP {}{}",
            self.place,
            status.as_u16(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", crate::report::clean(&detail))
            }
        )
    }

    fn send_err(&self, what: &str, e: ureq::Error) -> anyhow::Error {
        anyhow!("S3 {what} in {}: {e}", self.place)
    }

    /// Every object under the folder (recursively), snapshots and metadata alike.
    pub fn list_all(&self) -> Result<Vec<Object>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            if !self.folder.is_empty() {
                list.with_prefix(self.folder.as_str());
            }
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let url = list.sign(SIGNED_FOR);
            let resp = self
                .agent
                .get(url.as_str())
                .call()
                .map_err(|e| self.send_err("listing", e))?;
            if !resp.status().is_success() {
                return Err(self.fail("listing", resp));
            }
            let body = resp
                .into_body()
                .read_to_string()
                .map_err(|e| self.send_err("listing", e))?;
            let parsed = ListObjectsV2::parse_response(&body)
                .map_err(|e| anyhow!("S3 listing of {}: {e}", self.place))?;
            for c in parsed.contents {
                let name = c.key.rsplit('/').next().unwrap_or(&c.key).to_string();
                out.push(Object {
                    name,
                    size: c.size.unwrap_or(0),
                    last_modified: c.last_modified.unwrap_or_default(),
                    key: c.key,
                });
            }
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// The snapshots in the folder, oldest first (by the time k3s reads from the name).
    pub fn snapshots(&self) -> Result<Vec<Object>> {
        let mut all: Vec<Object> = self
            .list_all()?
            .into_iter()
            .filter(|o| is_snapshot_key(&o.key[self.folder.len().min(o.key.len())..]))
            // k3s skips empty objects (s3.go ListSnapshots).
            .filter(|o| o.size > 0)
            .collect();
        all.sort_by(|a, b| (a.created_unix(), &a.name).cmp(&(b.created_unix(), &b.name)));
        Ok(all)
    }

    /// The user metadata of `key` (`x-amz-meta-*`, lowercased, prefix removed); `None` when
    /// the object is gone (pruned between a listing and this).
    pub fn metadata(&self, key: &str) -> Result<Option<BTreeMap<String, String>>> {
        let url = HeadObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNED_FOR);
        let resp = self
            .agent
            .head(url.as_str())
            .call()
            .map_err(|e| self.send_err(&format!("reading {key}"), e))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.fail(&format!("reading {key}"), resp));
        }
        Ok(Some(
            resp.headers()
                .iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str().to_ascii_lowercase();
                    let m = k.strip_prefix("x-amz-meta-")?.to_string();
                    Some((m, v.to_str().ok()?.to_string()))
                })
                .collect(),
        ))
    }

    /// `key`'s content, at most `limit` bytes.
    pub fn get(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        let url = GetObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNED_FOR);
        let resp = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|e| self.send_err(&format!("downloading {key}"), e))?;
        if !resp.status().is_success() {
            return Err(self.fail(&format!("downloading {key}"), resp));
        }
        resp.into_body()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.send_err(&format!("downloading {key}"), e))
    }

    /// Writes `key` (under the bucket, not the folder) with `body`.
    pub fn put(&self, key: &str, body: &[u8], content_type: &str) -> Result<()> {
        let mut put = PutObject::new(&self.bucket, Some(&self.credentials), key);
        put.headers_mut()
            .insert("content-type", content_type.to_string());
        let url = put.sign(SIGNED_FOR);
        let resp = self
            .agent
            .put(url.as_str())
            .header("content-type", content_type)
            .send(body)
            .map_err(|e| self.send_err(&format!("uploading {key}"), e))?;
        if !resp.status().is_success() {
            return Err(self.fail(&format!("uploading {key}"), resp));
        }
        Ok(())
    }

    /// The key of the operator's encrypted secrets: [`SECRETS_KEY`] in the folder.
    pub fn secrets_key(&self) -> String {
        format!("{}{SECRETS_KEY}", self.folder)
    }
}

/// `s3://bucket/folder/.metadata/bootstrap-secrets.age`: where `up` puts the operator's
/// encrypted secrets.
pub fn secrets_place(s3: &EtcdS3) -> String {
    format!(
        "s3://{}/{}{SECRETS_KEY}",
        s3.bucket,
        prefix(s3.folder.as_deref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_objects_are_not_snapshots() {
        assert!(is_snapshot_key("on-demand-m-1-1700000000"));
        assert!(is_snapshot_key("f/on-demand-m-1-1700000000.zip"));
        assert!(!is_snapshot_key(".metadata/on-demand-m-1-1700000000"));
        assert!(!is_snapshot_key("f/.metadata/on-demand-m-1-1700000000"));
        assert!(!is_snapshot_key("f/"));
    }

    #[test]
    fn folder_prefix_and_url_style() {
        assert_eq!(prefix(None), "");
        assert_eq!(prefix(Some("")), "");
        assert_eq!(prefix(Some("/a/b/")), "a/b/");
        assert!(matches!(
            url_style("10.0.0.1:9443", None, "b"),
            UrlStyle::Path
        ));
        assert!(matches!(
            url_style("s3.amazonaws.com", None, "b"),
            UrlStyle::VirtualHost
        ));
        assert!(matches!(
            url_style("s3.amazonaws.com", None, "b.c"),
            UrlStyle::Path
        ));
        assert!(matches!(
            url_style("minio:9000", Some("dns"), "b"),
            UrlStyle::VirtualHost
        ));
        assert!(matches!(
            url_style("s3.amazonaws.com", Some("path"), "b"),
            UrlStyle::Path
        ));
    }

    #[test]
    fn shared_credentials_file_profiles() {
        let text = "# c\n[default]\naws_access_key_id = AK\naws_secret_access_key=SK\n\n[other]\naws_access_key_id = O\naws_secret_access_key = OS\naws_session_token = T\n[empty]\naws_access_key_id =\n";
        let d = parse_shared_credentials(text, "default").unwrap();
        assert_eq!((d.key(), d.secret(), d.token()), ("AK", "SK", None));
        let o = parse_shared_credentials(text, "other").unwrap();
        assert_eq!(o.token(), Some("T"));
        assert!(parse_shared_credentials(text, "empty").is_none());
        assert!(parse_shared_credentials(text, "missing").is_none());
    }
}
