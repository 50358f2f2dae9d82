//! Phase `os`: the hosts' own settings from `[os]` (kernel settings, time sync, security
//! updates, swap; src/os.rs decides), side by side, before k3s changes anywhere; and the
//! clock check every join passes: a host whose clock is further from this machine's than
//! `os.max_clock_offset` is not joined (a warning for one that already runs k3s). A problem no
//! step can solve stops the plan, so nothing changes.

use anyhow::{bail, Result};

use super::{Action, Cx, FileSpec, Group, Mode, Phase};
use crate::os;

/// `offset` seconds as "612.3 s ahead of" / "2.0 s behind".
pub fn offset_text(offset: f64) -> String {
    if offset >= 0.0 {
        format!("{offset:.1} s ahead of")
    } else {
        format!("{:.1} s behind", -offset)
    }
}

/// Hosts whose clock is off by more than the bound: errors for those not yet joined (no k3s
/// service installed), warnings for the others.
fn clocks(cx: &Cx<'_>, warnings: &mut Vec<String>, errors: &mut Vec<String>) {
    let bound = cx.inv.max_clock_offset_secs();
    for n in &cx.inv.nodes {
        let Some(o) = cx.facts.clocks.get(&n.name).copied() else {
            continue;
        };
        if o.abs() <= f64::from(bound) {
            continue;
        }
        let text = format!(
            "{}: its clock is {} this machine's (more than os.max_clock_offset = {bound} s)",
            n.name,
            offset_text(o)
        );
        if cx.hosts.get(&n.name).is_some_and(|p| p.fresh) {
            errors.push(format!(
                "{text}, so it is not joined: etcd and TLS need agreeing clocks. Set its time (enable chrony or systemd-timesyncd, or os.time_sync = true on a host that has an NTP server in reach), then re-run"
            ));
        } else {
            warnings.push(format!(
                "{text}: etcd and certificates suffer from clock skew; fix its time sync"
            ));
        }
    }
}

pub(crate) fn phase(cx: &Cx<'_>, warnings: &mut Vec<String>) -> Result<Option<Phase>> {
    let mut errors = Vec::new();
    clocks(cx, warnings, &mut errors);
    let mut groups = Vec::new();
    for n in &cx.inv.nodes {
        let Some(f) = cx.facts.host(&n.name) else {
            continue;
        };
        let p = os::plan_host(&n.name, &f.os_id, cx.inv.os.as_ref(), &f.os);
        warnings.extend(p.warnings);
        errors.extend(p.errors);
        let mut actions: Vec<Action> = p
            .files
            .into_iter()
            .map(|(path, content)| Action::WriteFile {
                file: FileSpec {
                    path,
                    mode: 0o644,
                    content: content.into_bytes(),
                    secret: false,
                },
                reason: "os",
            })
            .collect();
        actions.extend(p.steps.into_iter().map(Action::Os));
        groups.extend(Group::on_host(&n.name, actions));
    }
    if !errors.is_empty() {
        bail!(
            "the hosts' own settings cannot be made right, so nothing was changed:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(Phase::of("os", Mode::Parallel, groups))
}
