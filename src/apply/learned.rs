//! What a run learns as it goes and later steps use: filled by the steps that learn it
//! (`host`, `local`), kept by the runner for the whole run.

/// What a run learns as it goes and later steps use.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    /// The cluster CA's hash, once the first server of a new cluster wrote its token.
    pub ca_hash: std::sync::Mutex<Option<String>>,
    /// The snapshot this run's `k3s etcd-snapshot save` made: its path on the server.
    pub snapshot: std::sync::Mutex<Option<String>>,
    /// The token hash k3s recorded for that snapshot (its ETCDSnapshotFile's annotation).
    pub snapshot_token_hash: std::sync::Mutex<Option<String>>,
}
