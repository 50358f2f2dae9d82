//! `etcd snapshot`, `etcd list` and `etcd restore`: backups of the cluster's etcd and the way
//! back from them (the steps are in [`crate::plan::etcd`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::run::{converge, finish, take_out_request, tolerant_hosts};
use super::Ctx;
use crate::facts;
use crate::k3s::snapshot::{self, Record};
use crate::outcome::usage;
use crate::plan::etcd::{self as plan_etcd, Source};
use crate::report::OutputFormat;
use crate::s3;

/// A snapshot base name k3s can name its ETCDSnapshotFile after (k3s
/// pkg/etcd/snapshot/types.go:91-115 falls back to another name otherwise).
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "--name {name:?}: expected lowercase letters, digits, '-' and '.', starting with a letter or digit"
        )))
    }
}

pub async fn snapshot(cx: &Ctx, name: Option<&str>, fetch: bool, no_s3: bool) -> Result<()> {
    if let Some(n) = name {
        check_name(n)?;
    }
    let inv = &cx.inv;
    let local = facts::local::read(inv)?;
    let req = take_out_request(inv, tolerant_hosts(inv, |_| false)?, None);
    let r = converge(cx, inv, req, local, "etcd snapshot", false, |f| {
        plan_etcd::snapshot(inv, f, name, fetch, no_s3)
    })
    .await;
    let cluster = inv.cluster.name.clone();
    finish(cx, false, r, |_| format!("{cluster}: etcd snapshot taken"))
}

/// The operator's copies in `dir`, with their records.
fn copies(dir: &Path) -> Result<Vec<(PathBuf, Record)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            continue;
        }
        if let Some(r) = snapshot::load_record(&path)
            .with_context(|| format!("reading the record of {}", path.display()))?
        {
            out.push((path, r));
        }
    }
    out.sort_by(|a, b| (&a.1.created, &a.1.name).cmp(&(&b.1.created, &b.1.name)));
    Ok(out)
}

pub async fn list(cx: &Ctx) -> Result<()> {
    let inv = &cx.inv;
    let local = copies(&inv.snapshots_dir())?;
    let (_, facts) = super::show::read(cx, false, false, false, true, false).await?;
    let mut rows: Vec<serde_json::Value> = facts
        .cluster
        .snapshots
        .iter()
        .map(|s| {
            serde_json::json!({"name": s.name, "where": s.place(), "location": s.location,
                "size": s.size, "created": s.created, "token_hash": s.token_hash})
        })
        .collect();
    for (path, r) in &local {
        rows.push(serde_json::json!({"name": r.name, "where": "here", "location": path.display().to_string(),
            "size": r.size, "created": r.created, "token_hash": r.token_hash}));
    }
    // The bucket as this machine's S3 client lists it: what is there even when no server
    // answers, or when the cluster has not listed it yet.
    let mut bucket_error = None;
    if inv.etcd.as_ref().is_some_and(|e| e.s3.is_some()) {
        match bucket(inv).await {
            Ok((place, listed)) => {
                for (o, meta) in listed {
                    let location = format!("{place}{}", o.key.rsplit('/').next().unwrap_or(&o.key));
                    let known = rows
                        .iter()
                        .any(|r| r["where"] == "s3" && r["name"] == o.name.as_str());
                    if !known {
                        rows.push(
                            serde_json::json!({"name": o.name, "where": "s3", "location": location,
                            "size": o.size, "created": o.created(),
                            "token_hash": meta.get(crate::s3::TOKEN_HASH_KEY)}),
                        );
                    }
                }
            }
            Err(e) => bucket_error = Some(format!("{e:#}")),
        }
    }
    match cx.rep.format() {
        OutputFormat::Json => cx.rep.emit(serde_json::json!({"event": "snapshots", "cluster": inv.cluster.name, "snapshots": rows, "bucket_error": bucket_error})),
        OutputFormat::Text => {
            if let Some(e) = &bucket_error {
                eprintln!(
                    "{}",
                    crate::report::clean(&format!(
                        "warning: the bucket could not be listed from this machine: {e}"
                    ))
                );
            }
            if facts.cluster.api.is_none() {
                eprintln!(
                    "{}",
                    crate::report::clean(&format!(
                        "warning: no server's API answered, so only the copies on this machine are listed: {}",
                        facts.cluster.unanswered.join("; ")
                    ))
                );
            }
            // Names and locations come from the cluster: printed clean.
            let mut table = format!(
                "{:<48} {:<12} {:>12} {:<21} LOCATION\n",
                "NAME", "WHERE", "SIZE", "CREATED"
            );
            for r in &rows {
                table.push_str(&format!(
                    "{:<48} {:<12} {:>12} {:<21} {}\n",
                    r["name"].as_str().unwrap_or(""),
                    r["where"].as_str().unwrap_or(""),
                    r["size"].as_u64().unwrap_or(0),
                    r["created"].as_str().unwrap_or(""),
                    r["location"].as_str().unwrap_or("")
                ));
            }
            print!("{}", crate::report::clean(&table));
            if rows.is_empty() {
                println!("(no snapshots; take one with `bootstrap etcd snapshot`)");
            }
        }
    }
    Ok(())
}

/// The bucket's snapshots with their metadata, listed by this machine (`s3://bucket/folder/`
/// first).
async fn bucket(
    inv: &crate::inventory::Inventory,
) -> Result<(String, Vec<(s3::Object, BTreeMap<String, String>)>)> {
    let s3 = inv
        .etcd
        .as_ref()
        .and_then(|e| e.s3.clone())
        .ok_or_else(|| usage("the inventory has no [etcd.s3]: there is no bucket to read"))?;
    tokio::task::spawn_blocking(move || {
        let c = s3::Client::new(&s3)?;
        let mut out = Vec::new();
        for o in c.snapshots()? {
            // Gone since the listing (k3s's retention runs at any time): left out.
            if let Some(meta) = c.metadata(&o.key)? {
                out.push((o, meta));
            }
        }
        Ok((c.place.clone(), out))
    })
    .await
    .context("listing the bucket stopped")?
}

/// The bucket's snapshot `pick` (`latest`: the newest by the time in its name), as a source.
async fn from_bucket(inv: &crate::inventory::Inventory, pick: &str) -> Result<Option<Source>> {
    let (place, listed) = bucket(inv).await?;
    let found = if pick == "latest" {
        listed
            .into_iter()
            .max_by_key(|(o, _)| (o.created_unix(), o.name.clone()))
    } else {
        listed.into_iter().find(|(o, _)| o.name == pick)
    };
    if found.is_none() && pick == "latest" {
        return Err(usage(format!("{place} holds no snapshot")));
    }
    Ok(found.map(|(object, meta)| Source::Bucket {
        token_hash: meta
            .get(s3::TOKEN_HASH_KEY)
            .filter(|h| !h.is_empty())
            .cloned(),
        // Empty on a server: k3s starts its S3 controller before NODE_NAME is set
        // (pkg/etcd/etcd.go:451, pkg/agent/config/config.go:516).
        node: meta
            .get(s3::NODE_NAME_KEY)
            .filter(|n| !n.is_empty())
            .cloned(),
        object: Box::new(object),
    }))
}

/// What `SNAPSHOT` names: a file on this machine (or the name of a copy in
/// `.bootstrap/snapshots/`), which must have its record; else a snapshot the cluster knows,
/// or one in the bucket of `[etcd.s3]`.
async fn source(cx: &Ctx, arg: &str) -> Result<Source> {
    let given = PathBuf::from(arg);
    let copy = cx.inv.snapshots_dir().join(arg);
    let file = [given, copy].into_iter().find(|p| p.is_file());
    let Some(file) = file else {
        if arg.contains('/') {
            return Err(usage(format!("{arg}: no such file")));
        }
        if cx.inv.etcd.as_ref().is_some_and(|e| e.s3.is_some()) {
            match from_bucket(&cx.inv, arg).await {
                Ok(Some(s)) => return Ok(s),
                Ok(None) => {}
                Err(e) => cx.rep.warn(&format!(
                    "the bucket could not be listed from this machine ({e:#}); looking for {arg} in the cluster only"
                )),
            }
        }
        return Ok(Source::Named(arg.to_string()));
    };
    let record = snapshot::load_record(&file)
        .with_context(|| format!("reading the record of {}", file.display()))?
        .ok_or_else(|| {
            usage(format!(
                "{} has no record beside it ({}): without the token it was taken with it cannot be checked, and k3s would fail after moving the data aside",
                file.display(),
                snapshot::record_path(&file).display()
            ))
        })?;
    if record.cluster != cx.inv.cluster.name {
        cx.rep.warn(&format!(
            "{} was taken on cluster {}, this inventory is cluster {}",
            file.display(),
            record.cluster,
            cx.inv.cluster.name
        ));
    }
    Ok(Source::Copy { file, record })
}

/// What `etcd restore` was given: a snapshot (a copy, or a name), or `--from-s3`.
pub enum What {
    Given(String),
    Bucket(String),
}

/// `--from-s3`: the bucket's snapshot, checked against the server token in `.bootstrap/`
/// before anything else happens.
async fn bucket_source(cx: &Ctx, pick: &str) -> Result<Source> {
    let inv = &cx.inv;
    if inv.etcd.as_ref().is_none_or(|e| e.s3.is_none()) {
        return Err(usage(
            "--from-s3 reads the bucket of [etcd.s3], and the inventory has none",
        ));
    }
    let local = facts::local::read(inv)?;
    let Some(tokens) = local.token_backup else {
        return Err(usage(format!(
            "there is no server token in {}: a snapshot cannot be opened without the token it was taken with. Bring .bootstrap/ back first: `bootstrap secrets import {} ARCHIVE` with the archive `bootstrap secrets export` wrote{}",
            inv.token_backup_path().display(),
            inv.path().display(),
            match inv.etcd.as_ref().and_then(|e| e.s3.as_ref()) {
                Some(s) if !s.secrets_recipients.is_empty() => format!(
                    " (up keeps one in s3://{}/{}{})",
                    s.bucket,
                    s3::prefix(s.folder.as_deref()),
                    s3::SECRETS_KEY
                ),
                _ => String::new(),
            }
        )));
    };
    let src = from_bucket(inv, pick).await?.ok_or_else(|| {
        usage(format!(
            "the bucket holds no snapshot {pick}; `bootstrap etcd list` shows them"
        ))
    })?;
    if let Source::Bucket {
        object,
        token_hash: Some(t),
        ..
    } = &src
    {
        let ours = snapshot::token_hash(&tokens.server);
        if *t != ours {
            return Err(usage(format!(
                "refusing to restore {}: it was taken with a server token whose hash is {t}, and the token in {} hashes to {ours}; k3s would fail with \"bootstrap data already found and encrypted with different token\". Nothing was changed. Import the secrets of that cluster (bootstrap secrets import), or pick another snapshot",
                object.name,
                inv.token_backup_path().display()
            )));
        }
    }
    Ok(src)
}

pub async fn restore(
    cx: &Ctx,
    what: &What,
    yes: bool,
    plan_only: bool,
    delete_stale: bool,
) -> Result<()> {
    let (src, arg) = match what {
        What::Given(arg) => (source(cx, arg).await?, arg.clone()),
        What::Bucket(pick) => {
            let s = bucket_source(cx, pick).await?;
            let n = s.name().to_string();
            (s, n)
        }
    };
    let from_s3 = matches!(what, What::Bucket(_));
    if !plan_only {
        confirm_restore(cx, &src, &arg, from_s3, yes)?;
    }
    restore_from(cx, &src, &arg, from_s3, plan_only, delete_stale || from_s3).await
}

/// The question before a restore: what stops, and where the snapshot goes.
fn confirm_restore(cx: &Ctx, src: &Source, arg: &str, install: bool, yes: bool) -> Result<()> {
    let inv = &cx.inv;
    let first = &inv.first_server().name;
    let upload = match src {
        Source::Copy { record, .. } => format!(
            "; the copy is uploaded to {first}:{}",
            plan_etcd::restore_path(&record.name)
        ),
        Source::Named(n) => format!(
            "; a snapshot held by another server comes through this machine to {first}:{}",
            plan_etcd::restore_path(n)
        ),
        Source::Bucket { object, .. } => format!(
            "; it is downloaded from S3 ({} bytes) to {} and uploaded to {first}:{}",
            object.size,
            inv.snapshots_dir().display(),
            plan_etcd::restore_path(&object.name)
        ),
    };
    super::confirm(
        &format!(
            "restore cluster {} from {arg}: k3s stops on every server, etcd goes back to the snapshot (what changed since is lost), the other servers' etcd data is moved aside and they join again{upload}{}",
            inv.cluster.name,
            if install {
                "; hosts without a cluster get k3s first, and the Nodes of hosts that are gone are deleted"
            } else {
                ""
            }
        ),
        yes,
    )
}

/// The restore itself; with `install`, hosts where no server answers get k3s first (the
/// inventory's cluster, on its tokens), which the snapshot then replaces (docs.k3s.io
/// "Restoring To New Hosts").
async fn restore_from(
    cx: &Ctx,
    src: &Source,
    arg: &str,
    install: bool,
    plan_only: bool,
    delete_stale: bool,
) -> Result<()> {
    let inv = &cx.inv;
    // Onto new hosts, a snapshot in the bucket is held here first: the new cluster's own
    // scheduled snapshots go to the same bucket and its retention could prune this one
    // before k3s reads it.
    let held;
    let src = match src {
        Source::Bucket {
            object,
            node,
            token_hash: Some(hash),
        } if install && !plan_only => {
            let s3 = inv
                .etcd
                .as_ref()
                .and_then(|e| e.s3.as_ref())
                .ok_or_else(|| usage("the inventory has no [etcd.s3]"))?;
            let tokens = facts::local::read(inv)?.token_backup.ok_or_else(|| {
                usage(format!(
                    "there is no server token in {}",
                    inv.token_backup_path().display()
                ))
            })?;
            let (file, record) = crate::apply::download_snapshot(
                s3,
                object,
                node.as_deref().unwrap_or("s3"),
                &inv.cluster.name,
                &inv.snapshots_dir(),
                hash,
                &tokens.server,
            )
            .await?;
            cx.rep.info(&format!(
                "snapshot {} downloaded to {} before anything is installed (should this run stop, `bootstrap etcd restore {} {}` finishes it)",
                object.name,
                file.display(),
                inv.path().display(),
                file.display()
            ));
            held = Source::Copy { file, record };
            &held
        }
        s => s,
    };
    if install && !plan_only {
        let (_, facts) = super::show::read(cx, false, false, false, false, false).await?;
        if facts.cluster.api.is_none() {
            cx.rep.info(&format!(
                "no server of {} answers: installing k3s on the inventory's hosts first, then restoring {arg} onto them",
                inv.cluster.name
            ));
            if let Err(e) = super::run::install(cx).await {
                return finish(cx, false, Err(e), |_| String::new());
            }
        }
    }
    let local = facts::local::read(inv)?;
    let mut req = take_out_request(inv, tolerant_hosts(inv, |_| true)?, None);
    req.snapshots = true;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let r = converge(cx, inv, req, local, "etcd restore", plan_only, |f| {
        plan_etcd::restore(inv, f, src, &stamp, delete_stale)
    })
    .await;
    // Onto new hosts, the snapshot's Nodes carry what the inventory said then (the hosts
    // recorded on them, labels and taints changed since): converged again, so the next run
    // has nothing to do.
    let r = match r {
        Ok(Some(report)) if install => super::run::install(cx).await.map(|_| Some(report)),
        other => other,
    };
    let cluster = inv.cluster.name.clone();
    finish(cx, plan_only, r, |_| {
        format!("{cluster}: restored from {arg}, every node Ready")
    })
}

/// The newest snapshot here or in the bucket (`latest`), or the one named `pick`: a copy in
/// `.bootstrap/snapshots/` first, else the bucket's.
async fn newest_or_named(cx: &Ctx, pick: &str) -> Result<Source> {
    let inv = &cx.inv;
    let mut here: Vec<Source> = copies(&inv.snapshots_dir())?
        .into_iter()
        .map(|(file, record)| Source::Copy { file, record })
        .collect();
    let in_bucket = if inv.etcd.as_ref().is_some_and(|e| e.s3.is_some()) {
        match from_bucket(inv, pick).await {
            Ok(s) => s,
            Err(e) if pick == "latest" && !here.is_empty() => {
                cx.rep.warn(&format!("the bucket could not be listed from this machine ({e:#}); taking the newest copy here"));
                None
            }
            Err(e) if pick == "latest" => return Err(e),
            Err(e) => {
                cx.rep.warn(&format!(
                    "the bucket could not be listed from this machine: {e:#}"
                ));
                None
            }
        }
    } else {
        None
    };
    let unix = |s: &Source| match s {
        Source::Copy { record, .. } => time::OffsetDateTime::parse(
            &record.created,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .unwrap_or(0),
        Source::Bucket { object, .. } => object.created_unix(),
        Source::Named(_) => 0,
    };
    if pick == "latest" {
        here.extend(in_bucket);
        return here
            .into_iter()
            .max_by_key(|s| (unix(s), s.name().to_string()))
            .ok_or_else(|| {
                usage(format!(
                    "there is no snapshot in {}{}",
                    inv.snapshots_dir().display(),
                    if inv.etcd.as_ref().is_some_and(|e| e.s3.is_some()) {
                        " nor in the bucket"
                    } else {
                        " (and the inventory has no [etcd.s3])"
                    }
                ))
            });
    }
    if let Some(s) = here.into_iter().find(|s| s.name() == pick) {
        return Ok(s);
    }
    if let Ok(s) = source(cx, pick).await {
        if !matches!(s, Source::Named(_)) {
            return Ok(s);
        }
    }
    in_bucket.ok_or_else(|| {
        usage(format!(
            "no snapshot {pick} here ({}) or in the bucket; `bootstrap etcd list` shows them",
            inv.snapshots_dir().display()
        ))
    })
}

/// The snapshot's token hash against the server token in `.bootstrap/`: checked before
/// anything is installed or stopped.
fn check_token(cx: &Ctx, src: &Source) -> Result<()> {
    let inv = &cx.inv;
    let local = facts::local::read(inv)?;
    let Some(tokens) = local.token_backup else {
        return Err(usage(format!(
            "there is no server token in {}: bring .bootstrap/ back first with `bootstrap secrets import {} ARCHIVE`",
            inv.token_backup_path().display(),
            inv.path().display()
        )));
    };
    let ours = snapshot::token_hash(&tokens.server);
    let theirs = match src {
        Source::Copy { record, .. } => Some(record.token_hash.clone()),
        Source::Bucket { token_hash, .. } => token_hash.clone(),
        Source::Named(_) => None,
    };
    match theirs {
        Some(t) if t == ours => Ok(()),
        Some(t) => Err(usage(format!(
            "refusing to restore {}: it was taken with a server token whose hash is {t}, and the token in {} hashes to {ours}. Nothing was changed",
            src.name(),
            inv.token_backup_path().display()
        ))),
        None => Err(usage(format!(
            "refusing to restore {}: it carries no token hash, so whether this cluster's token opens it cannot be checked. Nothing was changed",
            src.name()
        ))),
    }
}

/// `node replace NAME --host NEW --from-snapshot latest|NAME` for the only server, whose host
/// is lost: the inventory moves NAME to NEW, k3s is installed there, and the snapshot restored
/// onto it under the same name (its labels and taints come back with its Node); the agents
/// keep their k3s and rejoin with their configs pinned to the restored CA.
pub async fn replace_only_server(
    cx: &mut Ctx,
    name: &str,
    new_host: &str,
    pick: &str,
    yes: bool,
    plan_only: bool,
) -> Result<()> {
    let path = cx.inv.path().to_path_buf();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let old = cx
        .inv
        .node(name)
        .ok_or_else(|| usage(cx.inv.unknown_node(name)))?
        .clone();
    if !old.is_server() || cx.inv.servers().count() != 1 {
        return Err(usage(format!(
            "--from-snapshot is for the only server of a cluster whose host is lost; {name} is {}: replace it without --from-snapshot",
            if old.is_server() { "one of several servers, which keep the cluster" } else { "an agent" }
        )));
    }
    if let Some(other) = cx
        .inv
        .nodes
        .iter()
        .find(|n| n.host == new_host && n.name != name)
    {
        return Err(usage(format!(
            "{new_host} is already the host of node {}",
            other.name
        )));
    }
    if old.host == new_host {
        return Err(usage(format!("{name} is already on {new_host}")));
    }
    let new_text = crate::inventory::edit::set_host(&text, &path, name, new_host).map_err(usage)?;
    let new_inv = crate::inventory::edit::validate(&new_text, &path).map_err(usage)?;
    let src = newest_or_named(cx, pick).await?;
    check_token(cx, &src)?;
    // Only for a lost server: one that answers keeps the cluster, and a snapshot would lose
    // what changed since it was taken.
    let (_, facts) = super::show::read(cx, false, false, false, false, false).await?;
    if facts.cluster.api.is_some() {
        return Err(usage(format!(
            "{name} still answers at {}: a restore would lose what changed since {} was taken. Add a server (bootstrap node add --role server), then replace {name} without --from-snapshot",
            old.host,
            src.name()
        )));
    }
    let arg = src.name().to_string();
    if plan_only {
        println!(
            "node replace {name} --from-snapshot {pick}:
  write {} with {name} on {new_host}
  install k3s on {new_host} as {name} (the inventory's cluster, on its tokens)
  restore {arg} onto it ({}), then rejoin the agents pinned to the restored CA
run it without --plan to apply",
            path.display(),
            match &src {
                Source::Copy { file, .. } => file.display().to_string(),
                Source::Bucket { object, .. } => format!("downloaded from S3: {}", object.key),
                Source::Named(n) => n.clone(),
            }
        );
        return Ok(());
    }
    super::confirm(
        &format!(
            "{name} ({}) cannot be reached and is the only server: only a snapshot brings the cluster back. Move {name} to {new_host} in {}, install k3s there and restore {arg} onto it (what changed since it was taken is lost); the agents rejoin",
            old.host,
            path.display()
        ),
        yes,
    )?;
    crate::inventory::edit::write(&path, &new_text)?;
    cx.rep.info(&format!(
        "{} written: {name} is on {new_host}",
        path.display()
    ));
    cx.inv = new_inv;
    restore_from(cx, &src, &arg, true, false, false).await
}
