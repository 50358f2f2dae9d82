//! The steps a plan is made of. Each [`Action`] says what changes (or what is waited for) and
//! carries everything its execution needs, so the executor decides nothing; its text is what
//! `plan` prints and what `up` reports once it is done.

use std::path::PathBuf;

use crate::addons::longhorn::PrereqFix;
use crate::addons::sealed_secrets::SealingKey;
use crate::addons::{HelmRelease, ManifestFile, Owner};
use crate::inventory::{InstallSource, K3sVersion};
use crate::k3s::token::TokenBackup;
use crate::k3s::Role;
use crate::os::OsStep;

use super::labels::NodeDrift;

/// A file bootstrap keeps on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
    /// Holds a secret: never shown in a plan or diff.
    pub secret: bool,
}

impl FileSpec {
    pub fn sha256(&self) -> String {
        crate::k3s::sha256_hex(&self.content)
    }
}

/// Where release files come from (the inventory's `[install]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub source: InstallSource,
    pub mirror: String,
    /// The operator-side cache for uploads.
    pub cache_dir: PathBuf,
    /// Hashes pinned in the inventory, by release file name (they win over the sums file).
    pub sha256: std::collections::BTreeMap<String, String>,
}

/// Where a secret the run saves came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Read from a server (its config.yaml, or the cluster's Secret).
    Cluster,
    /// Made by this run: nobody held one.
    New,
}

/// A manifest file k3s's deploy controller must have applied, as the add-on wait checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub file: String,
    pub owner: Owner,
    pub addon: String,
    pub sha256: String,
}

/// What a drain does about pods that declare no controller, which kubectl will not evict
/// without `--force` and which stop it before it evicts anything (kubectl
/// pkg/drain/filters.go:236-251, pkg/cmd/drain/drain.go:366-370).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmanaged {
    /// Refuse before anything changes, naming them: the node is going away and they would
    /// die without eviction (node remove and replace without `--force`).
    Refuse,
    /// Delete them (`--force`, the operator asked for it).
    Delete,
    /// Leave them running and drain what kubectl will (an upgrade restarts k3s, which keeps
    /// pods running).
    Leave,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    // ---- on a host, over its SSH session
    /// Fix one of Longhorn's node prerequisites.
    Prerequisite(PrereqFix),
    /// Change one of the host's own settings (`[os]`).
    Os(OsStep),
    /// Put release file `file` (the k3s binary for `arch`) of `to` on the host: in place on a
    /// fresh host, staged beside it on one that runs k3s (moved in at its turn).
    InstallBinary {
        from: Option<K3sVersion>,
        to: K3sVersion,
        arch: &'static str,
        file: &'static str,
        staged: bool,
        release: Release,
    },
    /// Remove temp files of bootstrap an interrupted run left on this host.
    RemoveLeftovers {
        paths: Vec<String>,
    },
    /// The release's air-gap images tarball into the images directory.
    InstallImages {
        version: K3sVersion,
        release: Release,
        arch: &'static str,
        file: String,
        sha256: String,
    },
    /// Move the staged binary into place (an upgrade, at this host's turn).
    /// Read the cluster CA's hash from the first server's `server/token` once it started, for
    /// the joins planned before it existed (their files hold [`PENDING_CA_HASH`]).
    ///
    /// [`PENDING_CA_HASH`]: crate::k3s::token::PENDING_CA_HASH
    LearnCaHash,
    PlaceStagedBinary {
        from: Option<K3sVersion>,
        to: K3sVersion,
    },
    /// The links install.sh makes beside the binary.
    Links(Vec<&'static str>),
    WriteFile {
        file: FileSpec,
        reason: &'static str,
    },
    /// Enable and start the service, then wait until it is ready.
    Start {
        role: Role,
        daemon_reload: bool,
        /// The node this host joins through while it starts (an agent, a server without
        /// data), watched during the wait so that its death is noticed and named.
        via: Option<String>,
    },
    /// Restart the service (the binary, unit or a setting k3s reads only at start changed),
    /// then wait until it is ready.
    Restart {
        role: Role,
        reason: String,
        daemon_reload: bool,
        /// As for `Start`.
        via: Option<String>,
    },
    /// Stop and uninstall k3s as k3s-uninstall.sh does.
    Uninstall,
    /// Write a file into this server's manifests directory.
    WriteManifest(ManifestFile),
    /// Remove a manifest bootstrap wrote earlier; with `delete_objects`, its objects are
    /// deleted through this server's kubectl first (a HelmChart's uninstall Job included).
    RemoveManifest {
        file: String,
        delete_objects: bool,
        /// The file is a HelmChart (an add-on's or a chart's): its release name, which must
        /// be gone once the HelmChart is (helm-controller's delete Job succeeds even when the
        /// uninstall did not, klipper-helm `entry`:23).
        release: Option<String>,
    },
    /// The record of the extra manifests bootstrap wrote on this server.
    WriteExtraRecord {
        names: Vec<String>,
    },
    /// `k3s etcd-snapshot save` on this server (`name`: the base name, k3s's `on-demand`
    /// when none); the file it made is learned for the steps after it.
    EtcdSnapshot {
        name: Option<String>,
        dir: String,
        /// How long k3s's own client may take: 2 minutes, plus `etcd-s3-timeout` when it
        /// uploads to S3 (k3s pkg/cli/etcdsnapshot/etcd_snapshot.go:30, :73-74).
        timeout_secs: u64,
        /// `s3://bucket/folder` when k3s uploads it there (config.yaml has S3 on), for the
        /// message when k3s refuses because it cannot reach S3 (k3s
        /// pkg/etcd/snapshot_handler.go:87-94).
        s3: Option<String>,
        /// `--etcd-s3=false`: on the server only, whatever config.yaml says.
        no_s3: bool,
    },
    /// Check, before anything stops, that the snapshot file is on this server.
    CheckSnapshot {
        path: String,
    },
    /// Put the operator's copy `local` at `remote` (0600), checked first against the sha256
    /// of its record; a `.zip` goes uncompressed (k3s v1.36.3 cannot restore a compressed
    /// snapshot from an absolute path, k3s issue #14526).
    UploadSnapshot {
        local: PathBuf,
        remote: String,
    },
    /// Stop the service and wait until it is inactive.
    Stop {
        role: Role,
    },
    /// `k3s server --cluster-reset --cluster-reset-restore-path=PATH` in the foreground:
    /// etcd restored from the snapshot with this server its only member; k3s exits by
    /// itself once done.
    ClusterReset {
        path: String,
        /// `--etcd-s3=false`: the path is a file, not an S3 object name.
        no_s3: bool,
    },
    /// A directory k3s needs and does not make itself (a custom snapshot directory), with its
    /// mode.
    MakeDir {
        path: String,
        mode: u32,
    },
    /// Keep what a restore of a named snapshot checked (`.bootstrap/restore.json`), so the
    /// same command finishes an interrupted restore.
    RecordRestore {
        dir: PathBuf,
        record: crate::k3s::snapshot::RestoreRecord,
    },
    /// The restore is done: its record goes.
    ForgetRestore {
        dir: PathBuf,
    },
    /// Move this server's etcd data (`server/db`) and its copies of the cluster's CAs and
    /// credentials (`server/tls`, `server/cred`) aside, never deleting them, so that it joins
    /// the restored cluster as a new member and k3s writes the restored cluster's files: a
    /// joining server whose files differ from the datastore's and are newer is refused by k3s
    /// ("newer than datastore and could cause a cluster outage", pkg/cluster/bootstrap.go
    /// :354-393); with the directories gone it writes them all from the datastore (:251-266).
    MoveDataAside {
        stamp: String,
    },

    // ---- through a server's kubectl
    /// Wait until the Node is Ready (on `version`, when given).
    WaitNodeReady {
        node: String,
        version: Option<K3sVersion>,
    },
    /// Wait until every one of these Nodes is registered and Ready.
    WaitNodesReady {
        nodes: Vec<String>,
    },
    /// Name the Nodes not in `keep` (a restored snapshot's hosts the inventory no longer
    /// has), or delete them.
    StaleNodes {
        keep: Vec<String>,
        delete: bool,
    },
    /// Cordon and drain (at most `limit_secs`, capped by the run's timeout).
    Drain {
        node: String,
        limit_secs: Option<u64>,
        unmanaged: Unmanaged,
    },
    Uncordon {
        node: String,
    },
    /// Delete the Node (in k3s: its node-password Secret and, for a server, its etcd member).
    DeleteNode {
        node: String,
    },
    /// Delete the node-password Secret of a node that joins the restored cluster: the
    /// snapshot holds the one of the host it was taken with, which a new host's password
    /// would not match; k3s records the current one when the node registers.
    ForgetNodePassword {
        node: String,
    },
    /// Label and taint changes on one Node.
    Labels {
        node: String,
        drift: NodeDrift,
    },
    /// Wait until these HelmCharts (add-ons and charts) are healthy and k3s applied these
    /// files; a failed install Job ends the wait with its logs.
    WaitAddons {
        releases: Vec<HelmRelease>,
        /// The `wait_for` resources to read with the health objects.
        waits: Vec<String>,
        applied: Vec<Applied>,
    },

    // ---- on this machine
    /// Make `.bootstrap/` the operator's alone again (it is `mode` now).
    PrivateStateDir {
        path: PathBuf,
        mode: u32,
    },
    SaveTokens {
        path: PathBuf,
        tokens: TokenBackup,
        source: Source,
    },
    SaveSealingKey {
        dir: PathBuf,
        key: SealingKey,
        source: Source,
    },
    /// The admin kubeconfig, built from the CA and admin certificate and key of the server's
    /// k3s.yaml (src/kubeconfig.rs), beside the inventory (and merged into `merge`).
    /// `content` is the server's k3s.yaml and `client_ca` its client CA when the facts hold
    /// the current ones; `None` reads them from `from` once the servers are up. `ca_hash`: the
    /// CA the cluster's tokens pin, when the plan knows it (else the one this run learns).
    WriteKubeconfig {
        path: PathBuf,
        /// The context, cluster and user name in it.
        name: String,
        from: String,
        url: String,
        content: Option<String>,
        client_ca: Option<String>,
        ca_hash: Option<String>,
        merge: Option<PathBuf>,
    },
    WriteInventory {
        path: PathBuf,
        text: String,
    },
    /// Copy the snapshot at `remote` on host `from` (`None`: the one this run's save made)
    /// into `dir`, with its record, 0600.
    FetchSnapshot {
        from: String,
        remote: Option<String>,
        dir: PathBuf,
        cluster: String,
        /// The token hash k3s recorded for it, when known (else the server's own token's).
        token_hash: Option<String>,
        server_token: String,
    },
    /// Download the snapshot `object` from the bucket of `s3` with this machine's S3 client
    /// into `dir`, with its record (the token hash k3s put on the object), 0600.
    DownloadSnapshot {
        s3: Box<crate::inventory::EtcdS3>,
        object: Box<crate::s3::Object>,
        node: String,
        cluster: String,
        dir: PathBuf,
        token_hash: String,
        server_token: String,
    },
    /// Put `.bootstrap/` (as `secrets export` archives it), encrypted to the age recipients of
    /// `s3`, beside the snapshots in its bucket, unless that is what was put there last.
    UploadSecrets {
        s3: Box<crate::inventory::EtcdS3>,
        state_dir: PathBuf,
        cluster: String,
    },
}

/// Where a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum On {
    /// Over this host's session.
    Host(String),
    /// Through this server's kubectl.
    Api(String),
    /// On the operator's machine.
    Local,
}

impl Action {
    /// Whether it changes the cluster (counted in the summary); waits and this machine's
    /// files are not.
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Action::WaitNodeReady { .. }
                | Action::WaitNodesReady { .. }
                | Action::StaleNodes { delete: false, .. }
                | Action::WaitAddons { .. }
                | Action::PrivateStateDir { .. }
                | Action::SaveTokens { .. }
                | Action::SaveSealingKey { .. }
                | Action::WriteKubeconfig { .. }
                | Action::WriteInventory { .. }
                | Action::LearnCaHash
                | Action::CheckSnapshot { .. }
                | Action::FetchSnapshot { .. }
                | Action::DownloadSnapshot { .. }
                | Action::UploadSecrets { .. }
                | Action::RecordRestore { .. }
                | Action::ForgetRestore { .. }
        )
    }
}

fn names(list: &[String]) -> String {
    list.join(", ")
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Prerequisite(fix) => write!(f, "{fix}"),
            Action::Os(step) => write!(f, "{step}"),
            Action::InstallBinary {
                to, staged: true, ..
            } => write!(f, "stage k3s {to} (in place at its turn)"),
            Action::InstallBinary { from: None, to, .. } => write!(f, "install k3s {to}"),
            Action::InstallBinary {
                from: Some(old),
                to,
                ..
            } => write!(f, "replace k3s {old} with {to}"),
            Action::InstallImages { file, .. } => write!(f, "install air-gap images {file}"),
            Action::RemoveLeftovers { paths } => write!(
                f,
                "remove what an interrupted run left: {}",
                names(paths)
            ),
            Action::PlaceStagedBinary { from: Some(old), to } => {
                write!(f, "replace k3s {old} with {to}")
            }
            Action::PlaceStagedBinary { from: None, to } => write!(f, "put k3s {to} in place"),
            Action::LearnCaHash => write!(f, "read the cluster CA hash joins are pinned to"),
            Action::Links(l) => write!(f, "link {} to k3s", l.join(", ")),
            Action::WriteFile { file, reason } => write!(f, "write {} ({reason})", file.path),
            Action::Start { role, .. } => write!(f, "enable and start {}", role.service()),
            Action::Restart { role, reason, .. } => {
                write!(f, "restart {} ({reason})", role.service())
            }
            Action::Uninstall => f.write_str("stop and uninstall k3s"),
            Action::WriteManifest(m) => write!(f, "{}: write {}", m.owner, m.file),
            Action::RemoveManifest {
                file,
                delete_objects: true,
                release: Some(k),
            } if k == "longhorn" => write!(
                f,
                "remove {file} (uninstalls Longhorn: every Longhorn volume and its data is deleted)"
            ),
            Action::RemoveManifest {
                file,
                delete_objects: true,
                release: Some(k),
            } => write!(f, "remove {file} (uninstalls {k}, file removed)"),
            Action::RemoveManifest {
                file,
                delete_objects: true,
                ..
            } => write!(f, "remove {file} (objects deleted, file removed)"),
            Action::RemoveManifest { file, .. } => write!(f, "remove {file}"),
            Action::WriteExtraRecord { names: n } if n.is_empty() => {
                f.write_str("forget the extra manifests' record")
            }
            Action::WriteExtraRecord { names: n } => {
                write!(f, "record the extra manifests ({})", names(n))
            }
            Action::WaitNodeReady {
                node,
                version: Some(v),
            } => write!(f, "wait until {node} is Ready on {v}"),
            Action::WaitNodeReady { node, version: None } => {
                write!(f, "wait until {node} is Ready")
            }
            Action::WaitNodesReady { nodes } => {
                write!(f, "wait until every node is Ready ({})", names(nodes))
            }
            Action::Drain {
                node,
                unmanaged: Unmanaged::Delete,
                ..
            } => write!(f, "cordon and drain {node}, deleting pods that have no controller"),
            Action::Drain { node, .. } => write!(f, "cordon and drain {node}"),
            Action::Uncordon { node } => write!(f, "uncordon {node}"),
            Action::StaleNodes { delete: true, .. } => {
                f.write_str("delete the Nodes the inventory does not name")
            }
            Action::StaleNodes { delete: false, .. } => {
                f.write_str("name the Nodes the inventory does not name")
            }
            Action::DeleteNode { node } => write!(f, "delete the Node {node}"),
            Action::Labels { drift, .. } => write!(f, "{drift}"),
            Action::WaitAddons {
                releases, applied, ..
            } => {
                let a: Vec<String> = releases.iter().map(|r| r.name.clone()).collect();
                match (a.is_empty(), applied.is_empty()) {
                    (false, true) => write!(f, "wait until {} healthy", a.join(", ")),
                    (false, false) => write!(
                        f,
                        "wait until {} healthy and every manifest applied",
                        a.join(", ")
                    ),
                    (true, _) => f.write_str("wait until k3s applied every manifest"),
                }
            }
            Action::PrivateStateDir { path, mode } => write!(
                f,
                "make {} private: mode {mode:04o} to 0700 (it holds the token and key backups)",
                path.display()
            ),
            Action::SaveTokens { path, source, .. } => write!(
                f,
                "write the token backup {} ({})",
                path.display(),
                match source {
                    Source::Cluster => "the tokens from the cluster",
                    Source::New => "new tokens",
                }
            ),
            Action::SaveSealingKey { dir, source, .. } => write!(
                f,
                "write the Sealed Secrets key backup {}/sealed-secrets.key ({}); keep it safe: it opens every SealedSecret",
                dir.display(),
                match source {
                    Source::Cluster => "the key from the cluster",
                    Source::New => "a new RSA 4096 key",
                }
            ),
            Action::WriteKubeconfig { path, merge, .. } => {
                write!(f, "write the kubeconfig {}", path.display())?;
                if let Some(m) = merge {
                    write!(f, " and merge it into {}", m.display())?;
                }
                Ok(())
            }
            Action::WriteInventory { path, .. } => write!(f, "write {}", path.display()),
            Action::EtcdSnapshot { name, dir, .. } => write!(
                f,
                "take an etcd snapshot ({}-<node>-<time>) into {dir}",
                name.as_deref().unwrap_or("on-demand")
            ),
            Action::CheckSnapshot { path } => write!(f, "check that {path} is there"),
            Action::UploadSnapshot { local, remote, .. } => {
                write!(f, "upload {} to {remote}", local.display())
            }
            Action::Stop { role } => write!(f, "stop {}", role.service()),
            Action::ClusterReset { path, no_s3 } => write!(
                f,
                "restore etcd from {path}{} (k3s server --cluster-reset; this server becomes the only member)",
                if !path.starts_with('/') && !no_s3 {
                    ", which k3s downloads from S3"
                } else {
                    ""
                }
            ),
            Action::MakeDir { path, mode } => write!(
                f,
                "create {path} ({mode:04o}): k3s makes only its default snapshot directory"
            ),
            Action::RecordRestore { dir, record } => write!(
                f,
                "record in {} that {} is being restored (token hash {}), so the same command finishes it",
                crate::k3s::snapshot::RestoreRecord::path(dir).display(),
                record.snapshot,
                record.token_hash
            ),
            Action::ForgetRestore { dir } => write!(
                f,
                "remove {}",
                crate::k3s::snapshot::RestoreRecord::path(dir).display()
            ),
            Action::MoveDataAside { stamp } => write!(
                f,
                "move the etcd data and the cluster's certificates aside to {}-before-restore-{stamp}, {}-before-restore-{stamp} and {}-before-restore-{stamp} (rejoins as a new member, its CAs from the restored cluster)",
                crate::k3s::ETCD_DB_DIR,
                crate::k3s::SERVER_TLS_DIR,
                crate::k3s::SERVER_CRED_DIR
            ),
            Action::ForgetNodePassword { node } => write!(
                f,
                "delete {node}'s node-password Secret (recorded again when it registers)"
            ),
            Action::FetchSnapshot { from, remote, dir, .. } => write!(
                f,
                "copy {} from {from} to {}",
                remote.as_deref().unwrap_or("the snapshot"),
                dir.display()
            ),
            Action::DownloadSnapshot { s3, object, dir, .. } => write!(
                f,
                "download {} ({} bytes) from s3://{}/{} to {}",
                object.name,
                object.size,
                s3.bucket,
                object.key,
                dir.display()
            ),
            Action::UploadSecrets { s3, state_dir, .. } => write!(
                f,
                "put {} encrypted to {} age recipient(s) at {}",
                state_dir.display(),
                s3.secrets_recipients.len(),
                crate::s3::secrets_place(s3)
            ),
        }
    }
}

/// One step and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub on: On,
    pub action: Action,
}

impl Step {
    pub fn host(host: &str, action: Action) -> Step {
        Step {
            on: On::Host(host.to_string()),
            action,
        }
    }

    pub fn api(server: &str, action: Action) -> Step {
        Step {
            on: On::Api(server.to_string()),
            action,
        }
    }

    pub fn local(action: Action) -> Step {
        Step {
            on: On::Local,
            action,
        }
    }
}
