//! Phase `prerequisites`: Longhorn's node prerequisites on every node (reference/addons.md
//! §3.2), side by side, before k3s changes anywhere. A problem no fix can solve stops the
//! plan, so nothing changes.

use anyhow::{bail, Result};

use super::{Action, Cx, Group, Mode, Phase};
use crate::addons::longhorn;

pub(crate) fn phase(cx: &Cx<'_>, warnings: &mut Vec<String>) -> Result<Option<Phase>> {
    if cx.inv.addons.longhorn.is_none() {
        return Ok(None);
    }
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    for n in &cx.inv.nodes {
        let Some(f) = cx.facts.host(&n.name) else {
            continue;
        };
        let p = longhorn::plan_prereqs(&n.name, &f.os_id, &f.addons.prereq);
        warnings.extend(p.warnings);
        errors.extend(p.errors);
        groups.extend(Group::on_host(
            &n.name,
            p.fixes.into_iter().map(Action::Prerequisite).collect(),
        ));
    }
    if !errors.is_empty() {
        bail!(
            "Longhorn's node prerequisites cannot be met, so nothing was changed:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(Phase::of("prerequisites", Mode::Parallel, groups))
}
