//! Phase `os`: the hosts' own settings from `[os]` (kernel settings, time sync, security
//! updates, swap; src/os.rs decides), side by side, before k3s changes anywhere; and the
//! clock check every join passes: a host whose clock is further from this machine's than
//! `os.max_clock_offset` is not joined (a warning for one that already runs k3s). A problem no
//! step can solve stops the plan, so nothing changes.

use anyhow::{bail, Result};

use super::{Action, Cx, FileSpec, Group, Mode, Phase};
use crate::inventory::Node;
use crate::os;

/// `offset` seconds as "612.3 s ahead of" / "2.0 s behind".
pub fn offset_text(offset: f64) -> String {
    if offset >= 0.0 {
        format!("{offset:.1} s ahead of")
    } else {
        format!("{:.1} s behind", -offset)
    }
}

/// The clock check of host `n`, whose os steps are `steps`: a host not yet in the cluster
/// (no Node, and no etcd data on a server) is not joined while its clock is off by more than
/// the bound, unless its os steps start a time sync client, after which the run waits for the
/// clock to be stepped; a joined one gets a warning. Also said: when every host is off the
/// same way, this machine's clock is the likelier culprit.
fn clock(
    cx: &Cx<'_>,
    n: &Node,
    steps: &mut Vec<os::OsStep>,
    warnings: &mut Vec<String>,
    errors: &mut Vec<String>,
) {
    let bound = cx.inv.max_clock_offset_secs();
    let Some(o) = cx.facts.clocks.get(&n.name).copied() else {
        return;
    };
    if o.abs() <= f64::from(bound) {
        return;
    }
    let text = format!(
        "{}: its clock is {} this machine's (more than os.max_clock_offset = {bound} s)",
        n.name,
        offset_text(o)
    );
    let joined = cx.nodes.iter().any(|x| x.name == n.name)
        || (n.role == crate::k3s::Role::Server
            && cx.facts.host(&n.name).is_some_and(|f| f.server_db));
    let all_off = cx.facts.clocks.len() > 1
        && cx
            .facts
            .clocks
            .values()
            .all(|x| x.abs() > f64::from(bound) && x.signum() == o.signum())
        && {
            let (lo, hi) = cx
                .facts
                .clocks
                .values()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            hi - lo <= f64::from(bound)
        };
    let culprit = if all_off {
        " Every host agrees with the others and not with this machine: this machine's clock is the likelier one to be wrong; fix it, or run from a machine whose clock is right."
    } else {
        ""
    };
    if joined {
        warnings.push(format!(
            "{text}: etcd and certificates suffer from clock skew; fix its time sync.{culprit}"
        ));
    } else if os::starts_time_sync(steps) && !all_off {
        steps.push(os::OsStep::WaitClock { bound_secs: bound });
        warnings.push(format!(
            "{text}: its time sync client starts first, and it is joined once its clock is right"
        ));
    } else {
        let fix = if cx.inv.os.as_ref().is_some_and(|o| o.time_sync) {
            "its time sync client runs but has not set the clock: check that it reaches an NTP server (chronyc sources, timedatectl timesync-status)"
        } else {
            "set its time, or let bootstrap keep it (os.time_sync = true)"
        };
        errors.push(format!(
            "{text}, so it is not joined: etcd and TLS need agreeing clocks. {fix}, then re-run.{culprit}"
        ));
    }
}

pub(crate) fn phase(cx: &Cx<'_>, warnings: &mut Vec<String>) -> Result<Option<Phase>> {
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    for n in &cx.inv.nodes {
        let Some(f) = cx.facts.host(&n.name) else {
            continue;
        };
        let mut p = os::plan_host(&n.name, &f.os_id, cx.inv.os.as_ref(), &f.os);
        clock(cx, n, &mut p.steps, warnings, &mut errors);
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
