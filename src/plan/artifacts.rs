//! Phase `artifacts`: the downloads and uploads of every host that needs them, side by side,
//! before any server is touched: the serial server phase then only restarts, and a refused
//! download stops the run with nothing restarted.

use super::{Cx, Group, Mode, Phase, Step};

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let groups: Vec<Group> = cx
        .inv
        .nodes
        .iter()
        .filter_map(|n| {
            let steps: Vec<Step> = cx
                .hosts
                .get(&n.name)?
                .artifacts()
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
        name: "artifacts",
        mode: Mode::Parallel,
        groups,
        on_error: Some("no k3s service was restarted; fix the cause and run again"),
    })
}
