//! Phase `prerequisites`: Longhorn's node prerequisites on every node (reference/addons.md
//! §3.2), side by side, before k3s changes anywhere. A problem no fix can solve stops the
//! plan, so nothing changes.

use anyhow::{bail, Result};

use super::{Action, Cx, Group, Mode, Phase, Step};
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
        if !p.fixes.is_empty() {
            groups.push(Group {
                host: n.name.clone(),
                steps: p
                    .fixes
                    .into_iter()
                    .map(|fix| Step::host(&n.name, Action::Prerequisite(fix)))
                    .collect(),
            });
        }
    }
    if !errors.is_empty() {
        bail!(
            "Longhorn's node prerequisites cannot be met, so nothing was changed:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok((!groups.is_empty()).then_some(Phase {
        name: "prerequisites",
        mode: Mode::Parallel,
        groups,
        on_error: None,
    }))
}
