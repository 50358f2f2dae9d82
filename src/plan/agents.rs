//! Phase `agents`: every agent that is not moving to another version, side by side (bounded
//! by `--parallel`). Those that are go in the upgrade phase.

use super::{Cx, Group, Mode, Phase};

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let groups = cx
        .inv
        .agents()
        .filter_map(|n| {
            let p = cx.hosts.get(&n.name).filter(|p| !p.is_upgrade())?;
            Group::on_host(&n.name, p.at_its_turn())
        })
        .collect();
    Phase::of("agents", Mode::Parallel, groups)
}
