//! Sealed Secrets (reference/addons.md §6) in kube-system as `sealed-secrets-controller` (what
//! kubeseal assumes), with a sealing key the tool owns: RSA 4096 generated with rcgen, backed
//! up 0600 in `.bootstrap/`, applied as the active sealing-key Secret before the controller's
//! first start, and the same on every run and after a rebuild (the backup, else the cluster's
//! Secret, is reused before anything is generated).

use std::path::{Path, PathBuf};

use base64::Engine;

use super::{helmchart, AddonError, AddonKind, ManifestFile, Owner, Stage, PREFIX};
use crate::inventory::SealedSecrets;
use crate::templates;

pub const REPO: &str = "https://bitnami.github.io/sealed-secrets";
pub const NAMESPACE: &str = "kube-system";
/// kubeseal's default `--controller-name`.
pub const CONTROLLER: &str = "sealed-secrets-controller";
/// The Secret holding the tool's sealing key.
pub const KEY_SECRET: &str = "sealed-secrets-bootstrap-key";
/// The label that makes the controller use a Secret as a sealing key.
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// Reads the key Secret (empty output when it does not exist).
pub const GET_KEY: &str =
    "k3s kubectl get secret sealed-secrets-bootstrap-key -n kube-system -o json --ignore-not-found";

/// The sealing key: a self-signed certificate and its RSA private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct SealingKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<secret>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating the Sealed Secrets key: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {message}")]
    Backup { path: PathBuf, message: String },
    #[error("the cluster's {KEY_SECRET} Secret is not usable: {0}")]
    Cluster(String),
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

impl SealingKey {
    /// A new RSA 4096 key and a self-signed certificate valid from five minutes ago (the
    /// controller orders keys by NotBefore and renews keys older than its renew period, so an
    /// rcgen default of 1975 would be replaced at once, §6.2) for ten years (kubeseal refuses
    /// an expired certificate).
    pub fn generate() -> Result<SealingKey, KeyError> {
        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "sealed-secret");
        dn.push(rcgen::DnType::OrganizationName, "sealed-secret");
        p.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + time::Duration::days(3650);
        let cert = p.self_signed(&key)?;
        let k = SealingKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        k.register();
        Ok(k)
    }

    /// Mask the private key (and its base64 form, as it appears in the Secret) from every
    /// output from now on.
    pub fn register(&self) {
        crate::ssh::register_secret(self.key_pem.clone());
        crate::ssh::register_secret(b64(&self.key_pem));
        for line in self.key_pem.lines() {
            if !line.starts_with("-----") {
                crate::ssh::register_secret(line.to_string());
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        if !self.cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err("the certificate is not PEM".into());
        }
        if !(self.key_pem.contains("-----BEGIN PRIVATE KEY-----")
            || self.key_pem.contains("-----BEGIN RSA PRIVATE KEY-----"))
        {
            return Err("the private key is not an RSA PEM key".into());
        }
        Ok(())
    }

    /// The backup files in `state_dir`: (certificate, private key).
    pub fn backup_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
        (
            state_dir.join("sealed-secrets.crt"),
            state_dir.join("sealed-secrets.key"),
        )
    }

    /// The backup, if there is one.
    pub fn load_backup(state_dir: &Path) -> Result<Option<SealingKey>, KeyError> {
        let (crt, key) = Self::backup_paths(state_dir);
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::Backup {
                path: p.to_path_buf(),
                message: e.to_string(),
            }),
        };
        match (read(&crt)?, read(&key)?) {
            (Some(c), Some(k)) => {
                let sk = SealingKey {
                    cert_pem: c,
                    key_pem: k,
                };
                sk.register();
                sk.check().map_err(|message| KeyError::Backup {
                    path: key.clone(),
                    message,
                })?;
                Ok(Some(sk))
            }
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => Err(KeyError::Backup {
                path: key,
                message: format!(
                    "only one of {} and its certificate exists; restore both from where you keep them, or remove both to take the key from the cluster",
                    "sealed-secrets.key"
                ),
            }),
        }
    }

    /// Write the backup (0600 both).
    pub fn save_backup(&self, state_dir: &Path) -> std::io::Result<()> {
        let (crt, key) = Self::backup_paths(state_dir);
        crate::local::write_private(&key, self.key_pem.as_bytes())?;
        crate::local::write_private(&crt, self.cert_pem.as_bytes())
    }

    /// The key from `kubectl get secret ... -o json` output; `None` when it is empty (no
    /// Secret).
    pub fn from_secret_json(json: &str) -> Result<Option<SealingKey>, KeyError> {
        if json.trim().is_empty() {
            return Ok(None);
        }
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| KeyError::Cluster(e.to_string()))?;
        let field = |k: &str| -> Result<String, KeyError> {
            let enc = v["data"][k]
                .as_str()
                .ok_or_else(|| KeyError::Cluster(format!("no data.{k}")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(enc.trim())
                .map_err(|e| KeyError::Cluster(format!("data.{k}: {e}")))?;
            String::from_utf8(bytes).map_err(|_| KeyError::Cluster(format!("data.{k} is not text")))
        };
        let key_pem = field("tls.key")?;
        let sk = SealingKey {
            cert_pem: field("tls.crt")?,
            key_pem,
        };
        sk.register();
        sk.check().map_err(KeyError::Cluster)?;
        Ok(Some(sk))
    }
}

/// The key Secret and the HelmChart. The Secret's file sorts before the chart's
/// (`bootstrap-sealed-secrets-key` < `bootstrap-sealed-secrets.`), and the deploy controller
/// applies files in sorted order, so the key exists before the controller first starts and
/// reads its keys.
pub fn files(
    s: &SealedSecrets,
    key: &SealingKey,
    chart_content: Option<&str>,
) -> Result<Vec<ManifestFile>, AddonError> {
    let mut ctx = tera::Context::new();
    ctx.insert("name", KEY_SECRET);
    ctx.insert("crt", &b64(&key.cert_pem));
    ctx.insert("key", &b64(&key.key_pem));
    let secret = templates::render("addons/sealed-secrets-key.yaml", &ctx)?;
    let values = templates::render("addons/sealed-secrets-values.yaml", &tera::Context::new())?;
    let chart = helmchart(
        AddonKind::SealedSecrets,
        REPO,
        &s.version,
        NAMESPACE,
        false,
        &values,
        chart_content,
    )?;
    Ok(vec![
        ManifestFile {
            file: key_file(),
            content: secret,
            // It holds the private key.
            mode: 0o600,
            owner: Owner::Addon(AddonKind::SealedSecrets),
            stage: Stage::Base,
        },
        chart,
    ])
}

/// The key Secret's file name.
pub fn key_file() -> String {
    format!("{PREFIX}sealed-secrets-key.yaml")
}
