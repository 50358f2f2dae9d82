//! Phase `artifacts`: the downloads and uploads of every host that needs them, side by side,
//! before any server is touched: the serial server phase then only restarts, and a refused
//! download stops the run with nothing restarted.

use super::{Cx, Group, Mode, Phase};

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let groups = cx
        .inv
        .nodes
        .iter()
        .filter_map(|n| Group::on_host(&n.name, cx.hosts.get(&n.name)?.artifacts()))
        .collect();
    let mut p = Phase::of("artifacts", Mode::Parallel, groups)?;
    p.on_error = Some("no k3s service was restarted; fix the cause and run again");
    Some(p)
}
