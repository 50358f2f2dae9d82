//! Phase `servers`: one at a time, a server that already has data first, so a fresh one
//! always joins a live cluster (the init server goes first when none has). A server that
//! (re)starts is a health gate: its Node is Ready (on the new version, for an upgrade)
//! before the next one is touched.

use super::{Action, Cx, Group, Mode, Phase, Step};

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let mut servers: Vec<&crate::inventory::Node> = cx.inv.servers().collect();
    servers.sort_by_key(|n| !cx.facts.host(&n.name).is_some_and(|f| f.server_db));
    let groups = servers
        .into_iter()
        .filter_map(|n| {
            let p = cx.hosts.get(&n.name)?;
            let mut g = Group::on_host(&n.name, p.at_its_turn())?;
            if p.restarts() {
                g.steps.push(Step::api(
                    &n.name,
                    Action::WaitNodeReady {
                        node: n.name.clone(),
                        version: p.is_upgrade().then_some(cx.inv.cluster.k3s_version),
                    },
                ));
            }
            Some(g)
        })
        .collect();
    Phase::of("servers", Mode::Serial, groups)
}
