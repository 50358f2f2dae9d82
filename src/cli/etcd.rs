//! `etcd snapshot`, `etcd list` and `etcd restore`: backups of the cluster's etcd and the way
//! back from them (the steps are in [`crate::plan::etcd`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::run::{converge, finish, take_out_request, tolerant_hosts};
use super::Ctx;
use crate::facts;
use crate::k3s::snapshot::{self, Record};
use crate::outcome::usage;
use crate::plan::etcd::{self as plan_etcd, Source};
use crate::report::OutputFormat;

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

pub async fn snapshot(cx: &Ctx, name: Option<&str>, fetch: bool) -> Result<()> {
    if let Some(n) = name {
        check_name(n)?;
    }
    let inv = &cx.inv;
    let local = facts::local::read(inv)?;
    let req = take_out_request(inv, tolerant_hosts(inv, |_| false)?, None);
    let r = converge(cx, inv, req, local, "etcd snapshot", false, |f| {
        plan_etcd::snapshot(inv, f, name, fetch)
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
    match cx.rep.format() {
        OutputFormat::Json => cx.rep.emit(serde_json::json!({"event": "snapshots", "cluster": inv.cluster.name, "snapshots": rows})),
        OutputFormat::Text => {
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

/// What `SNAPSHOT` names: a file on this machine (or the name of a copy in
/// `.bootstrap/snapshots/`), which must have its record; else a snapshot the cluster knows.
fn source(cx: &Ctx, arg: &str) -> Result<Source> {
    let given = PathBuf::from(arg);
    let copy = cx.inv.snapshots_dir().join(arg);
    let file = [given, copy].into_iter().find(|p| p.is_file());
    let Some(file) = file else {
        if arg.contains('/') {
            return Err(usage(format!("{arg}: no such file")));
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

pub async fn restore(
    cx: &Ctx,
    arg: &str,
    yes: bool,
    plan_only: bool,
    delete_stale: bool,
) -> Result<()> {
    let inv = &cx.inv;
    let src = source(cx, arg)?;
    if !plan_only {
        // Where the snapshot goes on the first server, said before anything happens.
        let first = &inv.first_server().name;
        let upload = match &src {
            Source::Copy { record, .. } => format!(
                "; the copy is uploaded to {first}:{}",
                plan_etcd::restore_path(&record.name)
            ),
            Source::Named(n) => format!(
                "; a snapshot held by another server comes through this machine to {first}:{}",
                plan_etcd::restore_path(n)
            ),
        };
        super::confirm(
            &format!(
                "restore cluster {} from {arg}: k3s stops on every server, etcd goes back to the snapshot (what changed since is lost), the other servers' etcd data is moved aside and they join again{upload}",
                inv.cluster.name
            ),
            yes,
        )?;
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
        plan_etcd::restore(inv, f, &src, &stamp, delete_stale)
    })
    .await;
    let cluster = inv.cluster.name.clone();
    finish(cx, plan_only, r, |_| {
        format!("{cluster}: restored from {arg}, every node Ready")
    })
}
