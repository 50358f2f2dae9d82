//! Local facts: what the operator's machine holds for the cluster (the token and sealing-key
//! backups, the kubeconfig beside the inventory, the release sums of the air-gap images), and
//! the secrets a new cluster would get.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use crate::addons::sealed_secrets::SealingKey;
use crate::addons::AddonsSpec;
use crate::inventory::Inventory;
use crate::k3s::artifacts::{self, Cache};
use crate::k3s::token::{self, TokenBackup};

/// What this machine holds.
#[derive(Debug, Clone, Default)]
pub struct LocalFacts {
    /// The add-ons and extra manifests, rendered from the inventory and its files.
    pub addons: AddonsSpec,
    pub token_backup: Option<TokenBackup>,
    pub sealing_backup: Option<SealingKey>,
    /// The kubeconfig beside the inventory, as it is now.
    pub kubeconfig: Option<String>,
    /// The kubeconfig `kubeconfig --merge` merges into, and its text (empty when missing).
    pub merge_target: Option<(PathBuf, String)>,
    /// Per architecture, the air-gap images tarball and its sha256 from the release sums.
    pub images: BTreeMap<String, (String, String)>,
    /// Tokens for a cluster that has none yet (used only when no server has data and there is
    /// no backup).
    pub new_tokens: Option<TokenBackup>,
    /// A sealing key for a cluster that has none (made only when Sealed Secrets is enabled and
    /// neither the backup nor the cluster holds one).
    pub new_sealing_key: Option<SealingKey>,
    /// What an earlier `etcd restore` of a named snapshot checked, when it did not finish.
    pub restore: Option<crate::k3s::snapshot::RestoreRecord>,
    /// With `[etcd.s3] secrets_recipients`: what the off-site archive of `.bootstrap/` would
    /// hold now, and what `up` last put in the bucket (digests, [`crate::secrets::offsite_digest`]).
    pub secrets_offsite: Option<(Option<String>, Option<String>)>,
    /// The mode of `.bootstrap/` when others than its owner may use it (made by hand, or by
    /// an older version): the backups in it must be the operator's alone.
    pub open_state_dir: Option<u32>,
}

/// The add-ons' files, the backups and the kubeconfig beside `inv`: read before any host is
/// contacted, so a bad file stops the run first.
pub fn read(inv: &Inventory) -> Result<LocalFacts> {
    let addons = AddonsSpec::from_inventory(inv).map_err(|e| anyhow!("{e}"))?;
    let path = inv.token_backup_path();
    let token_backup = token::load_backup(&path)
        .with_context(|| format!("reading the token backup {}", path.display()))?;
    if let Some(t) = &token_backup {
        crate::ssh::register_secret(t.server.clone());
        crate::ssh::register_secret(t.agent.clone());
    }
    if let Some(s3) = inv.etcd.as_ref().and_then(|e| e.s3.as_ref()) {
        if let Some(c) = &s3.credentials {
            for s in [&c.access_key, &c.secret_key] {
                crate::ssh::register_secret(s.clone());
            }
        }
    }
    for s in inv.registries.iter().flat_map(|g| g.secrets()) {
        crate::ssh::register_secret(s);
    }
    // S3 keys still accepted in `[cluster.server_config]` (with a warning) are masked too.
    for key in [
        "etcd-s3-secret-key",
        "etcd-s3-access-key",
        "etcd-s3-session-token",
        "token",
        "agent-token",
    ] {
        if let Some(v) = inv.cluster.server_config.get(key).and_then(|v| v.as_str()) {
            crate::ssh::register_secret(v.to_string());
        }
    }
    let sealing_backup = if inv.addons.sealed_secrets.is_some() {
        SealingKey::load_backup(&inv.state_dir())?
    } else {
        None
    };
    let kc = inv.kubeconfig_path();
    let kubeconfig =
        crate::local::read_optional(&kc).with_context(|| format!("reading {}", kc.display()))?;
    let restore =
        crate::k3s::snapshot::RestoreRecord::load(&inv.state_dir()).with_context(|| {
            format!(
                "reading {}",
                crate::k3s::snapshot::RestoreRecord::path(&inv.state_dir()).display()
            )
        })?;
    let open_state_dir = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(inv.state_dir())
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
            .filter(|m| m & 0o077 != 0)
    };
    let secrets_offsite = inv
        .etcd
        .as_ref()
        .and_then(|e| e.s3.as_ref())
        .filter(|s| !s.secrets_recipients.is_empty())
        .map(|s| {
            let dir = inv.state_dir();
            (
                crate::secrets::offsite_digest(
                    &dir,
                    &inv.cluster.name,
                    &s.secrets_recipients,
                    &crate::s3::secrets_place(s),
                ),
                crate::secrets::uploaded(&dir),
            )
        });
    Ok(LocalFacts {
        addons,
        token_backup,
        sealing_backup,
        kubeconfig,
        restore,
        open_state_dir,
        secrets_offsite,
        ..Default::default()
    })
}

/// The file `kubeconfig --merge` merges into: the first of `$KUBECONFIG`, else
/// `~/.kube/config`; with its current text.
pub fn merge_target() -> Result<(PathBuf, String)> {
    let target = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| crate::ssh::config::home_dir().map(|h| h.join(".kube/config")))
        .ok_or_else(|| {
            anyhow!("neither KUBECONFIG nor HOME is set; cannot find the kubeconfig to merge into")
        })?;
    let text = crate::local::read_optional(&target)
        .with_context(|| format!("reading {}", target.display()))?
        .unwrap_or_default();
    Ok((target, text))
}

/// The air-gap images' release hash for each architecture in `arches`, from the cache's copy
/// of the release sums (fetched from the mirror the first time).
pub fn image_sums(
    inv: &Inventory,
    arches: impl IntoIterator<Item = &'static str>,
) -> Result<BTreeMap<String, (String, String)>> {
    let cache = Cache {
        dir: inv.install.cache_dir.clone(),
    };
    let version = inv.cluster.k3s_version.to_string();
    let mut out = BTreeMap::new();
    for arch in arches {
        if out.contains_key(arch) {
            continue;
        }
        let file = artifacts::airgap_images_file(arch);
        let sha = cache
            .expected(
                &inv.install.mirror,
                &version,
                arch,
                &file,
                inv.install.sha256.get(&file).map(String::as_str),
            )
            .context("looking up the air-gap images in the release sums")?;
        out.insert(arch.to_string(), (file, sha));
    }
    Ok(out)
}

/// A new server token and agent token.
pub fn new_tokens() -> Result<TokenBackup> {
    Ok(TokenBackup {
        server: token::generate().map_err(|e| anyhow!("generating the server token: {e}"))?,
        agent: token::generate().map_err(|e| anyhow!("generating the agent token: {e}"))?,
    })
}
