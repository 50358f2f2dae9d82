//! Phase `upgrade`: agents moving to another version, `--max-unavailable` at a time. Each is
//! cordoned and drained, gets the staged binary and restarts, is Ready on the new version,
//! and is uncordoned; a failed batch stops the run before more nodes go down. A drain that
//! does not finish is reported and the upgrade goes on (as `kubectl drain --timeout` leaves
//! the node cordoned).

use super::{Action, Cx, Group, Mode, Phase, Step, Unmanaged};

/// The longest a drain of an upgrade may take, in seconds (capped by `--timeout`).
const DRAIN_LIMIT: u64 = 300;

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let groups: Vec<Group> = cx
        .inv
        .agents()
        .filter_map(|n| {
            let p = cx.hosts.get(&n.name).filter(|p| p.is_upgrade())?;
            let name = &n.name;
            let mut steps = vec![Step::api(
                &cx.api,
                Action::Drain {
                    node: name.clone(),
                    limit_secs: Some(DRAIN_LIMIT),
                    unmanaged: Unmanaged::Leave,
                },
            )];
            steps.extend(p.at_its_turn().into_iter().map(|a| Step::host(name, a)));
            steps.push(Step::api(
                &cx.api,
                Action::WaitNodeReady {
                    node: name.clone(),
                    version: Some(cx.inv.cluster.k3s_version),
                },
            ));
            steps.push(Step::api(&cx.api, Action::Uncordon { node: name.clone() }));
            Some(Group {
                host: name.clone(),
                steps,
            })
        })
        .collect();
    Phase::of(
        "upgrade",
        Mode::Batches(cx.settings.max_unavailable.max(1)),
        groups,
    )
}
