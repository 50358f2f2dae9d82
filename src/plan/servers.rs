//! Phase `servers`: one at a time, a server that already has data first, so a fresh one
//! always joins a live cluster (the init server goes first when none has). A server that
//! (re)starts is a health gate: its Node is Ready (on the new version, for an upgrade)
//! before the next one is touched.

use super::{Action, Cx, Group, Mode, Phase, Step};

pub(crate) fn phase(cx: &Cx<'_>) -> Option<Phase> {
    let mut servers: Vec<&crate::inventory::Node> = cx.inv.servers().collect();
    servers.sort_by_key(|n| !cx.facts.host(&n.name).is_some_and(|f| f.server_db));
    let groups: Vec<Group> = servers
        .into_iter()
        .filter_map(|n| {
            let p = cx.hosts.get(&n.name).filter(|p| !p.is_noop())?;
            let mut steps: Vec<Step> = p
                .at_its_turn()
                .into_iter()
                .map(|a| Step::host(&n.name, a))
                .collect();
            if p.restarts() {
                steps.push(Step::api(
                    &n.name,
                    Action::WaitNodeReady {
                        node: n.name.clone(),
                        version: p.is_upgrade().then_some(cx.inv.cluster.k3s_version),
                    },
                ));
            }
            (!steps.is_empty()).then(|| Group {
                host: n.name.clone(),
                steps,
            })
        })
        .collect();
    (!groups.is_empty()).then_some(Phase {
        name: "servers",
        mode: Mode::Serial,
        groups,
        on_error: None,
    })
}
