//! `etcd snapshot` and `etcd restore`: k3s's own procedure (docs.k3s.io/cli/etcd-snapshot,
//! "Restoring Snapshots"; upstream's test tests/docker/snapshotrestore/snapshotrestore_test.go
//! :84-133 in the same order): stop k3s on every server; on the first, restore with
//! `--cluster-reset --cluster-reset-restore-path` (k3s exits by itself once etcd holds the
//! snapshot and this server is its only member, pkg/etcd/etcd.go:321-432) and start it; move
//! each other server's `server/db` aside ("otherwise the nodes may join the old cluster",
//! snapshotrestore_test.go:122-123) and start it joined to the first, one at a time. Every
//! step can run again: an interrupted restore is finished by the same command.

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use super::hosts::{join_dropin, Join, JOIN_DROPIN};
use super::lifecycle::unreachable;
use super::{Action, FileSpec, Group, Mode, Phase, Plan, Step};
use crate::facts::{Facts, SnapshotFile};
use crate::inventory::{Datastore, Inventory, Node};
use crate::k3s::snapshot::{self, Record};
use crate::k3s::token::{self, PENDING_CA_HASH};
use crate::k3s::{self, server_url, Role};
use crate::outcome::usage;

/// Where a restore reads its snapshot: an operator's copy, with its record, uploaded to the
/// first server; or a snapshot the cluster knows, used where it is when that is the first
/// server (uncompressed), else copied here and uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Copy {
        file: PathBuf,
        record: Record,
    },
    Named(String),
    /// A snapshot in the bucket of `[etcd.s3]`, as this machine's S3 client listed it, with
    /// the object's `k3s-token-hash` and `k3s-node-name` metadata (k3s pkg/etcd/s3/s3.go:38-40,
    /// 290-297). Downloaded here and restored as a copy: a compressed one cannot be
    /// restored by k3s v1.36.3 from its own download (k3s issue #14526).
    Bucket {
        object: Box<crate::s3::Object>,
        token_hash: Option<String>,
        node: Option<String>,
    },
}

impl Source {
    /// The snapshot's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Copy { record, .. } => &record.name,
            Source::Named(n) => n,
            Source::Bucket { object, .. } => &object.name,
        }
    }
}

/// Where an uploaded snapshot waits on the first server: outside the snapshot directory,
/// which k3s lists and prunes whole (pkg/etcd/snapshot.go:420-456, 932-980).
pub const RESTORE_DIR: &str = "/var/lib/rancher/k3s/server/restore";

/// Where a snapshot uploaded for a restore goes on the first server: a name of the
/// directory's own, from the sha256 of the snapshot's name (k3s reads the file whatever its
/// name; it is uploaded uncompressed, so it never ends in `.zip`).
pub fn restore_path(name: &str) -> String {
    format!(
        "{RESTORE_DIR}/snapshot-{}",
        &crate::k3s::sha256_hex(name.as_bytes())[..16]
    )
}

fn needs_etcd(inv: &Inventory) -> Result<()> {
    if inv.cluster.datastore != Datastore::Etcd {
        return Err(usage(format!(
            "cluster {} runs on SQLite (datastore = \"sqlite\"): there is no etcd to snapshot or restore",
            inv.cluster.name
        )));
    }
    Ok(())
}

/// `etcd snapshot [--name N]`: a snapshot on the server whose API answered, and unless
/// `keep_remote_only`, its copy in `.bootstrap/snapshots/` with its record.
pub fn snapshot(
    inv: &Inventory,
    facts: &Facts,
    name: Option<&str>,
    fetch: bool,
    no_s3: bool,
) -> Result<Plan> {
    needs_etcd(inv)?;
    let api = facts.cluster.api.clone().ok_or_else(|| {
        anyhow!(
            "a snapshot needs a server whose etcd has quorum, and no server's API answered: {}",
            facts.cluster.unanswered.join("; ")
        )
    })?;
    let (tokens, _) = super::secrets::tokens(inv, facts)?;
    // Where k3s's CLI saves: the `etcd-snapshot-dir` of config.yaml (k3s
    // pkg/cli/etcdsnapshot/etcd_snapshot.go:45-47), whichever way the inventory sets it.
    let dir = match (
        &inv.etcd,
        inv.cluster.server_config.get("etcd-snapshot-dir"),
    ) {
        (Some(e), _) => e.dir().to_string(),
        (None, Some(toml::Value::String(d))) => d.trim_end_matches('/').to_string(),
        _ => k3s::SNAPSHOT_DIR.to_string(),
    };
    let mut plan = Plan::new(inv, &api);
    // k3s's own client timeout, with the S3 upload's when config.yaml has S3 on.
    let timeout_secs = match &inv.etcd {
        Some(e) => e.snapshot_timeout_secs(),
        None => {
            let s3 = inv
                .cluster
                .server_config
                .get("etcd-s3")
                .is_some_and(|v| v.as_bool() == Some(true));
            crate::inventory::SNAPSHOT_CLIENT_SECS
                + if s3 {
                    crate::inventory::S3_TIMEOUT_SECS
                } else {
                    0
                }
        }
    };
    let mut steps = vec![Step::host(
        &api,
        Action::EtcdSnapshot {
            name: name.map(String::from),
            dir,
            timeout_secs,
            s3: (!no_s3)
                .then(|| inv.etcd.as_ref().and_then(|e| e.s3.as_ref()))
                .flatten()
                .map(|s| {
                    format!(
                        "s3://{}/{}",
                        s.bucket,
                        crate::s3::prefix(s.folder.as_deref())
                    )
                }),
            no_s3,
        },
    )];
    if fetch {
        steps.push(Step::local(Action::FetchSnapshot {
            from: api.clone(),
            remote: None,
            dir: inv.snapshots_dir(),
            cluster: inv.cluster.name.clone(),
            token_hash: None,
            server_token: tokens.server.clone(),
        }));
    }
    plan.phases.push(Phase::single("snapshot", &api, steps));
    Ok(plan)
}

/// The snapshot the cluster knows by `name` (not an S3 copy).
fn named<'a>(facts: &'a Facts, name: &str) -> Result<&'a SnapshotFile> {
    if facts.cluster.api.is_none() {
        return Err(usage(format!(
            "no server's API answered, so the snapshots the cluster knows cannot be read ({}); restore a copy on this machine instead (bootstrap etcd list shows them)",
            facts.cluster.unanswered.join("; ")
        )));
    }
    let all: Vec<&SnapshotFile> = facts
        .cluster
        .snapshots
        .iter()
        .filter(|s| s.name == name)
        .collect();
    if let Some(s) = all.iter().find(|s| !s.s3) {
        return Ok(s);
    }
    if !all.is_empty() {
        return Err(usage(format!(
            "{name} is only in S3; bootstrap restores a snapshot that is on a server or on this machine (every save also keeps it on the server that took it)"
        )));
    }
    let known: Vec<&str> = facts
        .cluster
        .snapshots
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    Err(usage(format!(
        "the cluster knows no snapshot {name}{}",
        if known.is_empty() {
            String::new()
        } else {
            format!(" (it knows {})", known.join(", "))
        }
    )))
}

/// `etcd restore SNAPSHOT`: refused, before anything stops, when the token this tool holds
/// is not the one the snapshot is encrypted with (k3s would find out only after moving the
/// data aside: `bootstrap data already found and encrypted with different token`,
/// pkg/cluster/storage.go:341, checked after the restore, etcd.go:347-352).
pub fn restore(
    inv: &Inventory,
    facts: &Facts,
    source: &Source,
    stamp: &str,
    delete_stale: bool,
) -> Result<Plan> {
    needs_etcd(inv)?;
    let down: Vec<String> = inv
        .servers()
        .filter(|s| facts.host(&s.name).is_none())
        .map(|s| unreachable(facts, &s.name))
        .collect();
    if !down.is_empty() {
        return Err(anyhow!(
            "a restore stops and restarts every server, and these cannot be reached: {}; bring them back, or replace them (bootstrap node replace) first",
            down.join("; ")
        ));
    }
    let first = inv.first_server();
    let (tokens, _) = super::secrets::tokens(inv, facts)?;
    let ours = snapshot::token_hash(&tokens.server);
    // A named snapshot's record in the cluster, found once. Its token hash is the one k3s
    // recorded when it took the snapshot; a restore of it interrupted after the first server
    // started again left that record without one, and the hash it checked in
    // `.bootstrap/restore.json`.
    // A name in the bucket that a server also holds is restored from the server's file.
    let on_server;
    let source = match source {
        Source::Bucket { object, .. }
            if facts.cluster.api.is_some()
                && facts
                    .cluster
                    .snapshots
                    .iter()
                    .any(|s| s.name == object.name && !s.s3) =>
        {
            on_server = Source::Named(object.name.clone());
            &on_server
        }
        s => s,
    };
    let (name, theirs, known) = match source {
        Source::Copy { record, .. } => (record.name.clone(), Some(record.token_hash.clone()), None),
        Source::Bucket {
            object, token_hash, ..
        } => {
            if token_hash.is_none() {
                return Err(usage(format!(
                    "refusing to restore {}: the object s3://{}/{} has no k3s-token-hash metadata (k3s puts it on every snapshot it uploads), so whether this cluster's token opens it cannot be checked. Nothing was stopped",
                    object.name,
                    inv.etcd.as_ref().and_then(|e| e.s3.as_ref()).map_or("", |s| s.bucket.as_str()),
                    object.key
                )));
            }
            (object.name.clone(), token_hash.clone(), None)
        }
        Source::Named(n) => {
            let kept = facts.local.restore.as_ref().filter(|r| r.snapshot == *n);
            let s = match (named(facts, n), kept) {
                (Ok(s), _) => s.clone(),
                // Every server stopped by the interrupted run: the cluster cannot say where
                // the snapshot is, the record of what the run checked can.
                (Err(_), Some(r)) if facts.cluster.api.is_none() && !r.node.is_empty() => {
                    SnapshotFile {
                        name: n.clone(),
                        node: r.node.clone(),
                        location: r.location.clone(),
                        token_hash: Some(r.token_hash.clone()),
                        ..Default::default()
                    }
                }
                (Err(e), _) => return Err(e),
            };
            let kept = kept
                .filter(|r| r.location == s.location)
                .map(|r| r.token_hash.clone());
            let hash = s.token_hash.clone().or(kept);
            (n.clone(), hash, Some(s))
        }
    };
    match theirs {
        Some(t) if t == ours => {}
        Some(t) => {
            return Err(usage(format!(
                "refusing to restore {name}: it was taken with a server token whose hash is {t}, and this cluster's token (from {}) hashes to {ours}; k3s would move the etcd data aside and then fail with \"bootstrap data already found and encrypted with different token\". Nothing was stopped. Put the token of that cluster in {} (its record beside the copy holds it), or restore a snapshot of this cluster",
                inv.token_backup_path().display(),
                inv.token_backup_path().display(),
            )))
        }
        None => {
            return Err(usage(format!(
                "refusing to restore {name}: the cluster records no token hash for it (k3s records one only when the snapshot is taken, not for files it finds later), so whether this cluster's token opens it cannot be checked; restore the copy `bootstrap etcd snapshot` fetched into {}",
                inv.snapshots_dir().display()
            )))
        }
    }
    let api = first.name.clone();
    let mut plan = Plan::new(inv, &api);
    // Where the snapshot is on the first server, and how it gets there.
    // The remote name is fixed by the snapshot's, never taken from it: a record's `name`
    // is not this machine's to trust (security review 3 M1).
    let upload = |plan: &mut Plan, local: PathBuf, name: &str| {
        let remote = restore_path(name);
        plan.phases.push(Phase::single(
            "upload",
            &first.name,
            vec![Step::host(
                &first.name,
                Action::UploadSnapshot {
                    local,
                    remote: remote.clone(),
                },
            )],
        ));
        remote
    };
    let path = match (source, known.as_ref()) {
        (Source::Copy { file, record }, _) => upload(&mut plan, file.clone(), &record.name),
        // Uncompressed: k3s downloads it by its name in the folder itself (with S3 in
        // config.yaml the restore path is an object name, pkg/etcd/etcd.go:389-409).
        (Source::Bucket { object, .. }, _) if !object.name.ends_with(".zip") => object.name.clone(),
        // Compressed: k3s v1.36.3 cannot restore what it downloads (k3s issue #14526: the
        // downloaded path is joined to the snapshot dir again), so it comes through this
        // machine and goes up uncompressed.
        (Source::Bucket { object, node, .. }, _) => {
            let s3 = inv
                .etcd
                .as_ref()
                .and_then(|e| e.s3.clone())
                .ok_or_else(|| usage(format!("{}: the inventory has no [etcd.s3]", object.name)))?;
            plan.phases.push(Phase::single(
                "download",
                "local",
                vec![Step::local(Action::DownloadSnapshot {
                    s3: Box::new(s3),
                    object: object.clone(),
                    node: node.clone().unwrap_or_else(|| "s3".into()),
                    cluster: inv.cluster.name.clone(),
                    dir: inv.snapshots_dir(),
                    token_hash: ours.clone(),
                    server_token: tokens.server.clone(),
                })],
            ));
            let local = inv.snapshots_dir().join(
                snapshot::local_name(&object.name).map_err(|e| anyhow!("{}: {e}", object.name))?,
            );
            upload(&mut plan, local, &object.name)
        }
        (Source::Named(n), None) => unreachable!("{n} was found above"),
        (Source::Named(n), Some(s)) => {
            let path = s
                .path()
                .ok_or_else(|| anyhow!("{n}: unexpected location {}", s.location))?
                .to_string();
            if s.node != first.name || n.ends_with(".zip") {
                // Through this machine: from the server that holds it (the restore runs on
                // the first server), and uncompressed on the way (k3s issue #14526).
                if facts.host(&s.node).is_none() {
                    return Err(anyhow!(
                        "{n} is on {}, which cannot be reached ({}); restore a copy on this machine instead",
                        s.node,
                        unreachable(facts, &s.node)
                    ));
                }
                plan.phases.push(Phase::single(
                    "fetch",
                    &s.node,
                    vec![Step::local(Action::FetchSnapshot {
                        from: s.node.clone(),
                        remote: Some(path.clone()),
                        dir: inv.snapshots_dir(),
                        cluster: inv.cluster.name.clone(),
                        token_hash: s.token_hash.clone(),
                        server_token: tokens.server.clone(),
                    })],
                ));
                // Where the fetch puts it: the file's own name, checked.
                let local = inv
                    .snapshots_dir()
                    .join(snapshot::local_name(&path).map_err(|e| anyhow!("{n}: {e}"))?);
                upload(&mut plan, local, n)
            } else {
                plan.phases.push(Phase::single(
                    "check",
                    &first.name,
                    vec![Step::host(
                        &first.name,
                        Action::CheckSnapshot { path: path.clone() },
                    )],
                ));
                path
            }
        }
    };
    // What was checked, kept until the restore is done (for a snapshot the cluster knows: a
    // copy carries its record).
    let keep = match (source, known.as_ref()) {
        (Source::Named(n), Some(s)) => Some(snapshot::RestoreRecord {
            snapshot: n.clone(),
            node: s.node.clone(),
            location: s.location.clone(),
            token_hash: ours.clone(),
        }),
        _ => None,
    };
    if let Some(record) = &keep {
        plan.phases.push(Phase::single(
            "record",
            "local",
            vec![Step::local(Action::RecordRestore {
                dir: inv.state_dir(),
                record: record.clone(),
            })],
        ));
    }
    let stops = inv
        .servers()
        .filter_map(|s| Group::on_host(&s.name, vec![Action::Stop { role: Role::Server }]))
        .collect();
    plan.phases
        .extend(Phase::of("stop servers", Mode::Parallel, stops));
    plan.phases.push(Phase::single(
        "restore",
        &first.name,
        [
            Action::ClusterReset {
                no_s3: inv.etcd.as_ref().is_some_and(|e| e.s3.is_some())
                    && !matches!(source, Source::Bucket { object, .. } if object.name == path),
                path,
            },
            Action::Start {
                role: Role::Server,
                daemon_reload: false,
                via: None,
            },
            Action::LearnCaHash,
        ]
        .into_iter()
        .map(|a| Step::host(&first.name, a))
        .collect(),
    ));
    // The restored cluster's CA is the snapshot's: joins are pinned to it once the first
    // server wrote its token (PENDING_CA_HASH is replaced then).
    let target = server_url(inv.cluster.api_endpoint.as_deref().unwrap_or(&first.host));
    let join_token = token::join_token(&tokens.server, "server", Some(PENDING_CA_HASH));
    let mut servers = Vec::new();
    for s in inv.servers().filter(|s| s.name != first.name) {
        let dropin = FileSpec {
            path: format!("{}/{}", k3s::CONFIG_DROPIN_DIR, JOIN_DROPIN),
            mode: 0o600,
            content: join_dropin(&Join::Via(target.clone()), Some(&join_token)).into_bytes(),
            secret: true,
        };
        servers.push(rejoin(
            s,
            &api,
            vec![
                Action::MoveDataAside {
                    stamp: stamp.to_string(),
                },
                Action::WriteFile {
                    file: dropin,
                    reason: "join",
                },
            ],
            Action::Start {
                role: Role::Server,
                daemon_reload: false,
                via: Some(first.name.clone()),
            },
        ));
    }
    plan.phases
        .extend(Phase::of("rejoin servers", Mode::Serial, servers));
    let mut agents = Vec::new();
    for a in inv.agents() {
        if facts.host(&a.name).is_none() {
            plan.unreachable.push(unreachable(facts, &a.name));
            continue;
        }
        let config = super::config::node_config(inv, a, &tokens, &target, Some(PENDING_CA_HASH));
        let file = FileSpec {
            path: k3s::CONFIG_PATH.to_string(),
            mode: 0o600,
            content: config.render()?.into_bytes(),
            secret: true,
        };
        agents.push(rejoin(
            a,
            &api,
            vec![Action::WriteFile {
                file,
                reason: "configuration",
            }],
            Action::Restart {
                role: Role::Agent,
                reason: "the cluster was restored".into(),
                daemon_reload: false,
                via: Some(first.name.clone()),
            },
        ));
    }
    plan.phases
        .extend(Phase::of("rejoin agents", Mode::Serial, agents));
    let nodes: Vec<String> = inv
        .nodes
        .iter()
        .filter(|n| facts.host(&n.name).is_some())
        .map(|n| n.name.clone())
        .collect();
    plan.phases.push(Phase::single(
        "nodes-ready",
        &api,
        vec![
            Step::api(&api, Action::WaitNodesReady { nodes }),
            // The snapshot's Nodes that the inventory no longer has (hosts replaced since it
            // was taken): k3s keeps them, NotReady, until someone deletes them (docs
            // "Restoring To New Hosts").
            Step::api(
                &api,
                Action::StaleNodes {
                    keep: inv.nodes.iter().map(|n| n.name.clone()).collect(),
                    delete: delete_stale,
                },
            ),
        ],
    ));
    if keep.is_some() {
        plan.phases.push(Phase::single(
            "done",
            "local",
            vec![Step::local(Action::ForgetRestore {
                dir: inv.state_dir(),
            })],
        ));
    }
    Ok(plan)
}

/// A node's steps to join the restored cluster: `before` on its host, its node-password
/// Secret forgotten through the first server, then `start`.
fn rejoin(n: &Node, api: &str, before: Vec<Action>, start: Action) -> Group {
    let mut steps: Vec<Step> = before.into_iter().map(|a| Step::host(&n.name, a)).collect();
    steps.push(Step::api(
        api,
        Action::ForgetNodePassword {
            node: n.name.clone(),
        },
    ));
    steps.push(Step::host(&n.name, start));
    Group {
        host: n.name.clone(),
        steps,
    }
}
