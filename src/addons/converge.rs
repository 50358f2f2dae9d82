//! The add-on phase of `up`: remove what the inventory dropped, write what changed to the
//! manifests directory of every server, then wait (with the run's deadline) until every add-on is
//! healthy, writing the CRD-dependent files as soon as the charts they need are.
//!
//! Round trips: the host facts already hold every manifest's sha256, so unchanged files cost
//! nothing; the sealing key comes from the backup; one `kubectl get` judges health. A no-op
//! re-run therefore costs one round trip on one server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::health::{self, AddonHealth, JobState, Snapshot};
use super::sealed_secrets::{self, SealingKey};
use super::{
    AddonKind, AddonsSpec, ManifestFile, Owner, Stage, EXTRA_RECORD, MANIFESTS_DIR, PREFIX,
};
use crate::facts::HostFacts;
use crate::report::Reporter;
use crate::ssh::{self, sh_quote, Cmd, Session};

/// One server: its name, session and the facts read at the start of the run.
pub struct Server<'a> {
    pub name: &'a str,
    pub session: &'a Session,
    pub facts: &'a HostFacts,
}

/// A manifest bootstrap wrote earlier that the inventory no longer asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stale {
    /// Companions first (their CRDs go with the chart), then charts, then extras.
    order: u8,
    file: String,
}

fn stale_files(servers: &[Server<'_>], desired: &BTreeSet<String>) -> Vec<Stale> {
    let mut out = BTreeSet::new();
    for s in servers {
        for f in s.facts.manifests.keys() {
            if f.starts_with(PREFIX) && !desired.contains(f) {
                let chart = AddonKind::ALL.iter().any(|k| &k.chart_file() == f);
                out.insert(Stale {
                    order: if chart { 1 } else { 0 },
                    file: f.clone(),
                });
            }
        }
        for n in &s.facts.addons.extra_record {
            let f = format!("{n}.yaml");
            if !desired.contains(&f) {
                out.insert(Stale { order: 2, file: f });
            }
        }
    }
    out.into_iter().collect()
}

fn extra_record(spec: &AddonsSpec) -> Vec<String> {
    let mut v: Vec<String> = spec.extras.iter().map(|(n, _)| n.clone()).collect();
    v.sort();
    v
}

/// The sealing key: the backup, else the cluster's Secret, else a new one. The backup is
/// (re)written whenever it was missing.
async fn resolve_key(
    kubectl: &Server<'_>,
    spec: &AddonsSpec,
    rep: &Reporter,
) -> Result<SealingKey> {
    if let Some(k) = SealingKey::load_backup(&spec.state_dir)? {
        return Ok(k);
    }
    let out = kubectl
        .session
        .run_ok(&Cmd::new(sealed_secrets::GET_KEY).label("read the sealing key Secret"))
        .await?;
    let key = match SealingKey::from_secret_json(&out.stdout_str())? {
        Some(k) => {
            rep.info("sealed-secrets: sealing key recovered from the cluster");
            k
        }
        None => {
            rep.info("sealed-secrets: generating a new sealing key (RSA 4096)");
            tokio::task::spawn_blocking(SealingKey::generate).await??
        }
    };
    key.save_backup(&spec.state_dir)
        .context("writing the Sealed Secrets key backup")?;
    let (_, path) = SealingKey::backup_paths(&spec.state_dir);
    rep.info(&format!(
        "sealed-secrets: key backup written to {} (keep it safe: it opens every SealedSecret)",
        path.display()
    ));
    Ok(key)
}

/// What the phase would do, for `plan` (reads nothing beyond the facts and the backup).
pub fn plan(servers: &[Server<'_>], spec: &AddonsSpec) -> Result<Vec<String>> {
    let backup = if spec.sealed_secrets.is_some() {
        SealingKey::load_backup(&spec.state_dir)?
    } else {
        None
    };
    let placeholder = SealingKey {
        cert_pem: String::new(),
        key_pem: String::new(),
    };
    let files = spec.files(backup.as_ref().or(Some(&placeholder)))?;
    let desired: BTreeSet<String> = files.iter().map(|f| f.file.clone()).collect();
    let mut actions = Vec::new();
    for s in stale_files(servers, &desired) {
        actions.push(format!("remove {} (objects deleted, file removed)", s.file));
    }
    for f in &files {
        let key_unknown = backup.is_none() && f.file == sealed_secrets::key_file();
        let missing: Vec<&str> = servers
            .iter()
            .filter(|s| match s.facts.manifests.get(&f.file) {
                None => true,
                Some(_) if key_unknown => false,
                Some(sha) => *sha != f.sha256(),
            })
            .map(|s| s.name)
            .collect();
        if missing.is_empty() {
            continue;
        }
        let what = match &f.owner {
            Owner::Addon(k) => format!("add-on {k}"),
            Owner::Extra(n) => format!("manifest {n}"),
        };
        let note = if key_unknown {
            " (sealing key from the cluster, or a new one)"
        } else {
            ""
        };
        actions.push(format!(
            "{what}: write {}{note} on {}",
            f.file,
            missing.join(", ")
        ));
    }
    Ok(actions)
}

/// Write `files` on every server where the content differs; returns what was written.
async fn write_files(
    servers: &[Server<'_>],
    files: &[&ManifestFile],
    rep: &Reporter,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for s in servers {
        for f in files {
            if s.facts.manifests.get(&f.file) == Some(&f.sha256()) {
                continue;
            }
            rep.step(s.name, &format!("write {}", f.file));
            s.session
                .put_file(
                    &f.path(),
                    ssh::Source::Bytes(f.content.as_bytes()),
                    f.mode,
                    Some((0, 0)),
                )
                .await
                .with_context(|| format!("{}: writing {}", s.name, f.path()))?;
            let msg = format!("{}: write {}", f.owner, f.file);
            rep.change(s.name, &msg);
            done.push(format!("{}: {msg}", s.name));
        }
    }
    Ok(done)
}

/// Remove stale manifests: objects deleted through kubectl on a server holding the file (a
/// HelmChart's deletion runs helm-controller's `helm-delete` Job), then the file and its Addon.
/// kubectl waits (up to `timeout`) until the objects are gone: a HelmChart stays until its
/// uninstall Job is done (helm-controller's finalizer), and the file stays until then so a
/// failed or interrupted removal is tried again by the next run.
async fn remove_stale(
    servers: &[Server<'_>],
    stale: &[Stale],
    record: &[String],
    timeout: Duration,
    rep: &Reporter,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut scripts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for st in stale {
        let path = format!("{MANIFESTS_DIR}/{}", st.file);
        let holders: Vec<usize> = servers
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.facts.manifests.contains_key(&st.file)
                    || s.facts
                        .addons
                        .extra_record
                        .iter()
                        .any(|n| format!("{n}.yaml") == st.file)
            })
            .map(|(i, _)| i)
            .collect();
        let Some(first) = holders.first() else {
            continue;
        };
        let q = sh_quote(&path);
        let addon = sh_quote(super::addon_name(&st.file));
        scripts.entry(*first).or_default().push(format!(
            "if [ -f {q} ]; then k3s kubectl delete -f {q} --ignore-not-found --timeout={secs}s >/dev/null || exit 1; fi; \
             k3s kubectl delete addons.k3s.cattle.io {addon} -n kube-system --ignore-not-found --wait=false >/dev/null || exit 1",
            secs = timeout.as_secs().max(1)
        ));
        for h in &holders {
            scripts.entry(*h).or_default().push(format!("rm -f -- {q}"));
        }
        let who = servers[*first].name;
        rep.change(who, &format!("remove {}", st.file));
        done.push(format!("{who}: remove {}", st.file));
    }
    // The record of extra manifests follows the inventory.
    let record_text = if record.is_empty() {
        None
    } else {
        Some(format!("{}\n", record.join("\n")))
    };
    for (i, s) in servers.iter().enumerate() {
        if s.facts.addons.extra_record == record {
            continue;
        }
        let path = sh_quote(&format!("{MANIFESTS_DIR}/{EXTRA_RECORD}"));
        let line = match &record_text {
            None => format!("rm -f -- {path}"),
            Some(t) => format!(
                "mkdir -p {dir} && printf '%s' {text} > {path}.tmp && mv -f {path}.tmp {path}",
                dir = sh_quote(MANIFESTS_DIR),
                text = sh_quote(t),
            ),
        };
        scripts.entry(i).or_default().push(line);
    }
    for (i, lines) in scripts {
        let s = &servers[i];
        s.session
            .run_ok(&Cmd::new(lines.join("\n")).label("remove dropped add-on manifests"))
            .await
            .with_context(|| format!("{}: removing add-on manifests", s.name))?;
    }
    Ok(done)
}

/// The add-on phase. `kubectl` is the server whose k3s answers cluster queries.
pub async fn converge(
    servers: &[Server<'_>],
    kubectl: &Server<'_>,
    spec: &AddonsSpec,
    timeout: Duration,
    rep: &Reporter,
) -> Result<Vec<String>> {
    let record = extra_record(spec);
    let leftovers = servers.iter().any(|s| {
        s.facts.manifests.keys().any(|f| f.starts_with(PREFIX))
            || !s.facts.addons.extra_record.is_empty()
    });
    if spec.is_empty() && !leftovers {
        return Ok(vec![]);
    }
    let key = match spec.sealed_secrets {
        Some(_) => Some(resolve_key(kubectl, spec, rep).await?),
        None => None,
    };
    let mut files = spec.files(key.as_ref())?;
    // Sorted by name: the deploy controller's order, so the key Secret precedes its chart.
    files.sort_by(|a, b| a.file.cmp(&b.file));
    let desired: BTreeSet<String> = files.iter().map(|f| f.file.clone()).collect();
    let stale = stale_files(servers, &desired);
    let mut done = remove_stale(servers, &stale, &record, timeout, rep).await?;

    let base: Vec<&ManifestFile> = files.iter().filter(|f| f.stage == Stage::Base).collect();
    done.extend(write_files(servers, &base, rep).await?);
    let mut pending: Vec<&ManifestFile> = files.iter().filter(|f| f.stage != Stage::Base).collect();
    // Files already on every server with the right content need no health gate.
    pending.retain(|f| {
        !servers
            .iter()
            .all(|s| s.facts.manifests.get(&f.file) == Some(&f.sha256()))
    });
    let enabled = spec.enabled();
    let traefik_ns = spec
        .traefik
        .as_ref()
        .map(|t| t.namespace.clone())
        .unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let mut reported: BTreeSet<AddonKind> = BTreeSet::new();
    let mut last_step: BTreeMap<AddonKind, String> = BTreeMap::new();
    let changed = !done.is_empty();
    loop {
        let out = kubectl
            .session
            .run_ok(&Cmd::new(health::GET_ALL).label("read add-on health"))
            .await?;
        let snap = Snapshot::parse(&out.stdout_str()).map_err(|e| anyhow!(e))?;
        let states: Vec<AddonHealth> = enabled
            .iter()
            .map(|k| health::evaluate(&snap, *k, &traefik_ns))
            .collect();
        let failed: Vec<&AddonHealth> = states
            .iter()
            .filter(|h| h.job == JobState::Failed)
            .collect();
        if !failed.is_empty() {
            let mut msg = Vec::new();
            for h in failed {
                let logs = job_logs(kubectl, h.addon).await;
                msg.push(format!(
                    "add-on {}: the helm install Job kube-system/{} failed (HelmChart kube-system/{}, failurePolicy abort); last log lines:\n{}",
                    h.addon,
                    h.addon.job_name(),
                    h.addon.chart_name(),
                    indent(&logs)
                ));
            }
            bail!("{}", msg.join("\n"));
        }
        let healthy: BTreeSet<AddonKind> = states
            .iter()
            .filter(|h| h.healthy())
            .map(|h| h.addon)
            .collect();
        for h in &states {
            if h.healthy() {
                if changed && reported.insert(h.addon) {
                    rep.info(&format!("add-on {}: healthy", h.addon));
                }
            } else {
                let line = format!("add-on {}: {}", h.addon, h.summary());
                if last_step.get(&h.addon) != Some(&line) {
                    rep.step(kubectl.name, &line);
                    last_step.insert(h.addon, line);
                }
            }
        }
        // CRD-dependent files, once what they need is healthy.
        let ready: Vec<&ManifestFile> = pending
            .iter()
            .copied()
            .filter(|f| match &f.stage {
                Stage::After(deps) => deps.iter().all(|d| healthy.contains(d)),
                Stage::Base => true,
            })
            .collect();
        if !ready.is_empty() {
            done.extend(write_files(servers, &ready, rep).await?);
            pending.retain(|f| !ready.iter().any(|r| r.file == f.file));
            continue;
        }
        let unapplied: Vec<&ManifestFile> = files
            .iter()
            .filter(|f| !pending.iter().any(|p| p.file == f.file) && !snap.file_applied(f))
            .collect();
        if healthy.len() == enabled.len() && pending.is_empty() && unapplied.is_empty() {
            return Ok(done);
        }
        if Instant::now() > deadline {
            let mut msg = Vec::new();
            for h in states.iter().filter(|h| !h.healthy()) {
                let logs = if h.job == JobState::Complete {
                    String::new()
                } else {
                    format!(
                        "\n  last log lines of Job kube-system/{}:\n{}",
                        h.addon.job_name(),
                        indent(&job_logs(kubectl, h.addon).await)
                    )
                };
                msg.push(format!(
                    "add-on {} is not healthy after {:?}: {}{logs}",
                    h.addon,
                    timeout,
                    h.summary()
                ));
            }
            for f in &pending {
                msg.push(format!(
                    "{}: {} was not written because what it needs is not healthy",
                    f.owner, f.file
                ));
            }
            for f in &unapplied {
                msg.push(format!(
                    "{}: k3s has not applied {} (Addon kube-system/{}); see `k3s kubectl get events -n kube-system` on a server",
                    f.owner,
                    f.file,
                    f.addon_name()
                ));
            }
            bail!("{}", msg.join("\n"));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn indent(text: &str) -> String {
    let t: Vec<String> = text
        .trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect();
    if t.is_empty() {
        "    (no log)".into()
    } else {
        t.join("\n")
    }
}

async fn job_logs(kubectl: &Server<'_>, kind: AddonKind) -> String {
    match kubectl
        .session
        .exec(&Cmd::new(health::job_logs_command(kind)).label("helm Job logs"))
        .await
    {
        Ok(o) => ssh::redact(&o.stdout_str()),
        Err(e) => format!("(could not read the logs: {e})"),
    }
}

/// Health of every enabled add-on, for `bootstrap status`: one `kubectl get`.
pub async fn status(session: &Session, spec: &AddonsSpec) -> Result<Vec<AddonHealth>> {
    let enabled = spec.enabled();
    if enabled.is_empty() {
        return Ok(vec![]);
    }
    let out = session
        .run_ok(&Cmd::new(health::GET_ALL).label("read add-on health"))
        .await?;
    let snap = Snapshot::parse(&out.stdout_str()).map_err(|e| anyhow!(e))?;
    let ns = spec
        .traefik
        .as_ref()
        .map(|t| t.namespace.clone())
        .unwrap_or_default();
    Ok(enabled
        .iter()
        .map(|k| health::evaluate(&snap, *k, &ns))
        .collect())
}
