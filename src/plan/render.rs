//! A plan as `bootstrap plan` shows it: text by phase, or one JSON event.

use serde_json::json;

use super::{report_host, Mode, Plan};

fn mode(m: Mode) -> String {
    match m {
        Mode::Serial => "one at a time".into(),
        Mode::Parallel => "side by side".into(),
        Mode::Batches(n) => format!("{n} at a time"),
        Mode::OneScript => "in one script".into(),
    }
}

/// The plan, phase by phase, each host's steps under it; `apply` says how to apply it.
pub fn text(plan: &Plan, apply: &str) -> String {
    let mut out = String::new();
    for w in &plan.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    for p in &plan.phases {
        if p.groups.len() > 1 {
            out.push_str(&format!("{} ({}):\n", p.name, mode(p.mode)));
        } else {
            out.push_str(&format!("{}:\n", p.name));
        }
        for g in &p.groups {
            out.push_str(&format!("  {}:\n", g.host));
            for s in &g.steps {
                let on = report_host(g, s);
                let who = if on == g.host {
                    String::new()
                } else {
                    format!("{on}: ")
                };
                out.push_str(&format!("    - {who}{}\n", s.action));
            }
        }
    }
    for u in &plan.unreachable {
        out.push_str(&format!("not reachable, left out: {u}\n"));
    }
    if !plan.clocks.is_empty() {
        let c: Vec<String> = plan
            .clocks
            .iter()
            .map(|(h, ms)| format!("{h} {:+.1}s", *ms as f64 / 1000.0))
            .collect();
        out.push_str(&format!("clocks against this machine: {}\n", c.join(", ")));
    }
    let changes = plan.changes();
    let steps = plan.steps().count();
    if steps == 0 {
        out.push_str(&format!("{}: nothing to do\n", plan.cluster));
    } else {
        out.push_str(&format!(
            "{}: {changes} change(s) planned in {steps} step(s); {apply}\n",
            plan.cluster
        ));
    }
    out
}

/// The plan as one `plan` event.
pub fn json(plan: &Plan) -> serde_json::Value {
    json!({
        "event": "plan",
        "cluster": plan.cluster,
        "phases": plan.phases.iter().map(|p| json!({
            "phase": p.name,
            "mode": mode(p.mode),
            "groups": p.groups.iter().map(|g| json!({
                "host": g.host,
                "steps": g.steps.iter().map(|s| json!({
                    "host": report_host(g, s),
                    "action": s.action.to_string(),
                    "change": s.action.is_change(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "warnings": plan.warnings,
        "unreachable": plan.unreachable,
        "clocks": plan.clocks.iter().map(|(h, ms)| (h.clone(), json!(*ms as f64 / 1000.0))).collect::<serde_json::Map<_, _>>(),
        "changes": plan.changes(),
        "steps": plan.steps().count(),
    })
}
