//! Phase `agents`: every agent that is not moving to another version, side by side (bounded
//! by `--parallel`). Those that are go in the upgrade phase.

use super::{Cx, Group, Mode, Phase, Step};

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let groups: Vec<Group> = cx
        .inv
        .agents()
        .filter_map(|n| {
            let p = cx
                .hosts
                .get(&n.name)
                .filter(|p| !p.is_noop() && !p.is_upgrade())?;
            let steps: Vec<Step> = p
                .at_its_turn()
                .into_iter()
                .map(|a| Step::host(&n.name, a))
                .collect();
            (!steps.is_empty()).then(|| Group {
                host: n.name.clone(),
                steps,
            })
        })
        .collect();
    (!groups.is_empty()).then_some(Phase {
        name: "agents",
        mode: Mode::Parallel,
        groups,
        on_error: None,
    })
}
