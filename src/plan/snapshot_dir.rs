//! Phase `snapshot directory`: a custom etcd snapshot directory (`[etcd] snapshot_dir`) made on
//! every server, 0700, before k3s starts with it. k3s creates only its default directory
//! (pkg/etcd/snapshot.go:69-102); with another one missing, each scheduled snapshot fails with
//! `failed to get etcd-snapshot-dir` in k3s's log only (:254-257), and no record says so.

use super::{Action, Cx, Group, Mode, Phase};

/// The mode k3s gives its own snapshot directory (snapshot.go:96).
pub const MODE: u32 = 0o700;

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let dir = cx.inv.custom_snapshot_dir()?;
    let groups = cx
        .inv
        .servers()
        .filter_map(|n| {
            let f = cx.facts.host(&n.name)?;
            let right = f.snapshot_dir.as_deref() == Some(&format!("{MODE:o}"));
            Group::on_host(
                &n.name,
                (!right)
                    .then(|| Action::MakeDir {
                        path: dir.clone(),
                        mode: MODE,
                    })
                    .into_iter()
                    .collect(),
            )
        })
        .collect();
    Phase::of("snapshot directory", Mode::Parallel, groups)
}
