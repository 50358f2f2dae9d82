//! The steps on the operator's machine: the backups in `.bootstrap/`, the kubeconfig, the
//! inventory file.

use std::time::Duration;

use anyhow::{Context, Result};

use super::learned::Learned;
use crate::connect::Sessions;
use crate::inventory::edit;
use crate::k3s::{self, snapshot, token};
use crate::kubeconfig;
use crate::plan::Action;
use crate::report::Reporter;
use crate::ssh::{sh_quote, Cmd};

/// The most a kubeconfig or a CA file read from a server may be (k3s's are a few KiB).
const SMALL_FILE: u64 = 1 << 20;

pub(super) async fn run(
    sessions: &Sessions,
    action: &Action,
    rep: &Reporter,
    learned: &Learned,
) -> Result<Duration> {
    match action {
        Action::FetchSnapshot {
            from,
            remote,
            dir,
            cluster,
            token_hash,
            server_token,
        } => {
            let path = match remote {
                Some(p) => p.clone(),
                None => learned
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .context("no snapshot was taken before the copy")?,
            };
            let name = snapshot::local_name(&path)
                .map_err(|e| anyhow::anyhow!("{from}: {path}: {e}; nothing was copied"))?
                .to_string();
            let s = sessions
                .get(from)
                .with_context(|| format!("{from}: not connected"))?;
            let info = s
                .run_ok(
                    &Cmd::new(format!(
                        "stat -c %s {p} && date -u -r {p} +%Y-%m-%dT%H:%M:%SZ",
                        p = sh_quote(&path)
                    ))
                    .label("stat the snapshot"),
                )
                .await?
                .stdout_str();
            let mut lines = info.lines();
            let size: u64 = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
            let created = lines.next().unwrap_or("").trim().to_string();
            let bytes = s
                .get_file(&path, size)
                .await
                .with_context(|| format!("{from}: copying {path}"))?;
            if bytes.len() as u64 != size {
                anyhow::bail!(
                    "{from}: {path} is {size} bytes but {} arrived; nothing was written",
                    bytes.len()
                );
            }
            let file = dir.join(&name);
            let record = snapshot::Record {
                cluster: cluster.clone(),
                name: name.clone(),
                node: from.clone(),
                path: path.clone(),
                created,
                size,
                sha256: k3s::sha256_hex(&bytes),
                // The hash k3s gave the snapshot (its record's annotation, read by the save or
                // with the snapshot), else the one of the token this tool holds.
                token_hash: token_hash
                    .clone()
                    .or_else(|| {
                        learned
                            .snapshot_token_hash
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone()
                    })
                    .unwrap_or_else(|| snapshot::token_hash(server_token)),
                server_token: server_token.clone(),
            };
            snapshot::save_copy(&file, &bytes, &record)
                .with_context(|| format!("writing {}", file.display()))?;
            rep.info(&format!(
                "snapshot {name} copied to {} with its record {} (it holds the server token: keep both safe, 0600)",
                file.display(),
                snapshot::record_path(&file).display()
            ));
        }
        Action::DownloadSnapshot {
            s3,
            object,
            node,
            cluster,
            dir,
            token_hash,
            server_token,
        } => {
            let (file, _) =
                download_snapshot(s3, object, node, cluster, dir, token_hash, server_token).await?;
            rep.info(&format!(
                "snapshot {} downloaded from s3://{}/{} to {} with its record",
                object.name,
                s3.bucket,
                object.key,
                file.display()
            ));
        }
        Action::UploadSecrets {
            s3,
            state_dir,
            cluster,
        } => {
            let place = crate::s3::secrets_place(s3);
            let digest =
                crate::secrets::offsite_digest(state_dir, cluster, &s3.secrets_recipients, &place);
            if digest.is_some() && digest == crate::secrets::uploaded(state_dir) {
                return Ok(Duration::ZERO);
            }
            let created = crate::report::rfc3339(time::OffsetDateTime::now_utc());
            let sealed =
                crate::secrets::archive_of(state_dir, cluster, &created).and_then(|(a, _)| {
                    let rs = s3
                        .secrets_recipients
                        .iter()
                        .map(|r| crate::secrets::parse_recipient(r))
                        .collect::<Result<Vec<_>, _>>()?;
                    crate::secrets::encrypt(&a.to_bytes(), &crate::secrets::Key::Recipients(rs))
                });
            let s3c = (**s3).clone();
            let put = match sealed {
                Ok(bytes) => tokio::task::spawn_blocking(move || {
                    let c = crate::s3::Client::new(&s3c)?;
                    c.put(&c.secrets_key(), &bytes, "application/octet-stream")
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
                Err(e) => Err(anyhow::anyhow!(e)),
            };
            // The cluster converges even when the bucket does not answer: said, and tried
            // again by the next run (nothing recorded).
            match put {
                Ok(()) => {
                    if let Some(d) = digest {
                        crate::local::write_private(
                            &state_dir.join(crate::secrets::UPLOADED_RECORD),
                            format!("{d}\n").as_bytes(),
                        )
                        .with_context(|| format!("writing {}", crate::secrets::UPLOADED_RECORD))?;
                    }
                    rep.info(&format!(
                        "{} put at {place}, encrypted",
                        state_dir.display()
                    ));
                }
                Err(e) => rep.warn(&format!(
                    "{} could not be put at {place} ({e:#}); the next run tries again",
                    state_dir.display()
                )),
            }
        }
        Action::PrivateStateDir { path, mode } => {
            crate::local::private_dir(path)
                .with_context(|| format!("making {} private", path.display()))?;
            rep.info(&format!(
                "{} was mode {mode:04o}; it is 0700 now",
                path.display()
            ));
        }
        Action::SaveTokens { path, tokens, .. } => {
            token::save_backup(path, tokens)
                .with_context(|| format!("writing the token backup {}", path.display()))?;
            rep.info(&format!("token backup written to {}", path.display()));
        }
        Action::SaveSealingKey { dir, key, .. } => {
            key.save_backup(dir)
                .context("writing the Sealed Secrets key backup")?;
            let (_, path) = crate::addons::sealed_secrets::SealingKey::backup_paths(dir);
            rep.info(&format!(
                "sealed-secrets: key backup written to {} (keep it safe: it opens every SealedSecret)",
                path.display()
            ));
        }
        Action::WriteKubeconfig {
            path,
            name: cluster,
            from,
            url,
            content,
            client_ca,
            ca_hash,
            merge,
        } => {
            let (text, client_ca) = match (content, client_ca) {
                (Some(t), Some(ca)) => (t.clone(), ca.clone().into_bytes()),
                _ => {
                    let s = sessions
                        .get(from)
                        .with_context(|| format!("{from}: not connected"))?;
                    let bytes = s.get_file(k3s::KUBECONFIG_PATH, SMALL_FILE).await?;
                    let text =
                        String::from_utf8(bytes).context("the server's kubeconfig is not UTF-8")?;
                    (text, s.get_file(k3s::CLIENT_CA_PATH, SMALL_FILE).await?)
                }
            };
            let learned_hash = learned
                .ca_hash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let pins = kubeconfig::Pins {
                ca_hash: ca_hash.as_deref().or(learned_hash.as_deref()),
                client_ca: Some(&client_ca),
            };
            let ours = kubeconfig::rewrite(&text, &pins, cluster, url)
                .with_context(|| format!("{from}: {}", k3s::KUBECONFIG_PATH))?;
            if crate::local::read_optional(path)?.as_deref() != Some(ours.as_str()) {
                crate::local::write_private(path, ours.as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            rep.info(&format!("kubeconfig written to {}", path.display()));
            if let Some(target) = merge {
                let existing = crate::local::read_optional(target)
                    .with_context(|| format!("reading {}", target.display()))?
                    .unwrap_or_default();
                let merged = kubeconfig::merge(&existing, &ours, &target.display().to_string())?;
                // A linked ~/.kube/config stays a link: the file it points to is replaced.
                let file = crate::local::through_links(target);
                crate::local::write_private(&file, merged.as_bytes())
                    .with_context(|| format!("writing {}", file.display()))?;
                let what = if kubeconfig::has_context(&existing, cluster) {
                    "replaced its cluster, user and context"
                } else {
                    "added a cluster, user and context"
                };
                let current = match kubeconfig::current_context(&existing) {
                    Some(c) if c != *cluster => format!(
                        "; the current context stays {c} (kubectl config use-context {cluster} to switch)"
                    ),
                    Some(_) => String::new(),
                    None => format!("; the current context is now {cluster}"),
                };
                rep.info(&format!(
                    "merged into {}: {what} named {cluster}{current}",
                    target.display()
                ));
            }
        }
        Action::WriteInventory { path, text } => {
            edit::write(path, text)?;
            rep.info(&format!("{} written", path.display()));
        }
        Action::RecordRestore { dir, record } => {
            record.save(dir).with_context(|| {
                format!("writing {}", snapshot::RestoreRecord::path(dir).display())
            })?;
        }
        Action::ForgetRestore { dir } => {
            snapshot::RestoreRecord::remove(dir).with_context(|| {
                format!("removing {}", snapshot::RestoreRecord::path(dir).display())
            })?;
        }
        other => anyhow::bail!("`{other}` does not run on this machine"),
    }
    Ok(Duration::ZERO)
}

/// Downloads the snapshot `object` from the bucket of `s3` into `dir` with its record (0600),
/// its size checked against the listing's; the copy and its record.
pub async fn download_snapshot(
    s3: &crate::inventory::EtcdS3,
    object: &crate::s3::Object,
    node: &str,
    cluster: &str,
    dir: &std::path::Path,
    token_hash: &str,
    server_token: &str,
) -> Result<(std::path::PathBuf, snapshot::Record)> {
    let name = snapshot::local_name(&object.name)
        .map_err(|e| {
            anyhow::anyhow!(
                "s3://{}/{}: {e}; nothing was downloaded",
                s3.bucket,
                object.key
            )
        })?
        .to_string();
    let (s3c, obj) = (s3.clone(), object.clone());
    let bytes = tokio::task::spawn_blocking(move || {
        crate::s3::Client::new(&s3c)?.get(&obj.key, obj.size.saturating_add(1))
    })
    .await
    .context("the S3 download stopped")??;
    if bytes.len() as u64 != object.size {
        anyhow::bail!(
            "s3://{}/{} is {} bytes in the listing but {} arrived; nothing was written",
            s3.bucket,
            object.key,
            object.size,
            bytes.len()
        );
    }
    let file = dir.join(&name);
    let record = snapshot::Record {
        cluster: cluster.to_string(),
        name,
        node: node.to_string(),
        path: format!("s3://{}/{}", s3.bucket, object.key),
        created: object.created(),
        size: object.size,
        sha256: k3s::sha256_hex(&bytes),
        token_hash: token_hash.to_string(),
        server_token: server_token.to_string(),
    };
    snapshot::save_copy(&file, &bytes, &record)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok((file, record))
}
