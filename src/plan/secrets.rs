//! Phase `backups`: the cluster's tokens and the Sealed Secrets key, and their backups in
//! `.bootstrap/`, first, before any host changes. The cluster is the source of truth: a
//! server's config.yaml (or the key Secret) first, else the backup, else new ones when the
//! cluster has none yet.

use anyhow::{bail, Result};

use super::{Action, Phase, Source, Step};
use crate::addons::sealed_secrets::SealingKey;
use crate::facts::Facts;
use crate::inventory::Inventory;
use crate::k3s::token::{self, TokenBackup};

/// The tokens this run joins nodes with, and where they came from (`None`: the backup).
pub fn tokens(inv: &Inventory, facts: &Facts) -> Result<(TokenBackup, Option<Source>)> {
    // k3s's own token files first (they are what the cluster runs on, whoever wrote the
    // config), then a server's config.yaml.
    let from_files = inv.servers().find_map(|n| {
        let f = facts.host(&n.name)?;
        token::from_token_files(f.token_file.as_deref()?, f.agent_token_file.as_deref())
    });
    let from_cluster = from_files.or_else(|| {
        inv.servers().find_map(|n| {
            facts
                .host(&n.name)?
                .config
                .as_deref()
                .and_then(token::from_server_config)
        })
    });
    let any_data = inv
        .nodes
        .iter()
        .any(|n| facts.host(&n.name).is_some_and(|f| f.server_db));
    Ok(
        match (from_cluster, &facts.local.token_backup, &facts.local.new_tokens) {
            (Some(t), _, _) => (t, Some(Source::Cluster)),
            (None, Some(b), _) => (b.clone(), None),
            (None, None, Some(new)) if !any_data => (new.clone(), Some(Source::New)),
            (None, None, _) => bail!(
                "a server has cluster data but neither its config.yaml nor {} holds the cluster token; restore the backup from where you keep it",
                inv.token_backup_path().display()
            ),
        },
    )
}

/// The hash of the cluster CA that joins are pinned to, from the servers' `server/token`;
/// `None` when no server has written one yet. Servers whose tokens name different CAs are
/// not one cluster: refused.
pub fn ca_hash(inv: &Inventory, facts: &Facts) -> Result<Option<String>> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for n in inv.servers() {
        if let Some(h) = facts
            .host(&n.name)
            .and_then(|f| f.token_file.as_deref())
            .and_then(token::ca_hash)
        {
            seen.push((&n.name, h));
        }
    }
    if let Some((a, ha)) = seen.first() {
        if let Some((b, _)) = seen.iter().find(|(_, h)| h != ha) {
            bail!(
                "{a} and {b} hold tokens of different cluster CAs: they are not one cluster; reset the one that should not be there (bootstrap reset --node NAME) and run again"
            );
        }
    }
    Ok(seen.first().map(|(_, h)| h.to_string()))
}

/// The sealing key (when Sealed Secrets is on) and where it came from (`None`: the backup).
pub fn sealing_key(inv: &Inventory, facts: &Facts) -> Result<Option<(SealingKey, Option<Source>)>> {
    if inv.addons.sealed_secrets.is_none() {
        return Ok(None);
    }
    let l = &facts.local;
    Ok(Some(
        match (&l.sealing_backup, &facts.cluster.sealing_key, &l.new_sealing_key) {
            (Some(k), _, _) => (k.clone(), None),
            (None, Some(k), _) => (k.clone(), Some(Source::Cluster)),
            (None, None, Some(k)) => (k.clone(), Some(Source::New)),
            (None, None, None) => bail!(
                "the Sealed Secrets key is not in {} and no server's API answered to read it from the cluster ({}); bring a server up, or restore the backup, and run again",
                inv.state_dir().display(),
                facts.cluster.unanswered.join("; ")
            ),
        },
    ))
}

/// `backups`: write what the operator's backup lacks.
pub fn phase(inv: &Inventory, facts: &Facts, tokens: &TokenBackup) -> Result<Option<Phase>> {
    let mut steps = Vec::new();
    if let Some(mode) = facts.local.open_state_dir {
        steps.push(Step::local(Action::PrivateStateDir {
            path: inv.state_dir(),
            mode,
        }));
    }
    if facts.local.token_backup.as_ref() != Some(tokens) {
        let (_, source) = self::tokens(inv, facts)?;
        steps.push(Step::local(Action::SaveTokens {
            path: inv.token_backup_path(),
            tokens: tokens.clone(),
            source: source.unwrap_or(Source::Cluster),
        }));
    }
    if let Some((key, Some(source))) = sealing_key(inv, facts)? {
        steps.push(Step::local(Action::SaveSealingKey {
            dir: inv.state_dir(),
            key,
            source,
        }));
    }
    // `.bootstrap/` off-site, when the inventory names recipients: after what this phase
    // writes into it, and only when that or anything else there changed since the last upload.
    if let (Some(s3), Some((now, last))) = (
        inv.etcd.as_ref().and_then(|e| e.s3.as_ref()),
        &facts.local.secrets_offsite,
    ) {
        if !steps.is_empty() || now.is_none() || now != last {
            steps.push(Step::local(Action::UploadSecrets {
                s3: Box::new(s3.clone()),
                state_dir: inv.state_dir(),
                cluster: inv.cluster.name.clone(),
            }));
        }
    }
    Ok((!steps.is_empty()).then(|| Phase::single("backups", "local", steps)))
}
