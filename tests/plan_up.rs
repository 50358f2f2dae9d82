//! One writer (issue 10): in every scenario the steps a command executes are exactly the
//! steps its plan printed just before, read from the JSON events: a fresh cluster, a label
//! change, an add-on added, a node added, an upgrade, a node removed, a dead node replaced,
//! a reset. A plan changes nothing, the inventory included, and after each run but the reset
//! the plan is empty.

mod common;

use common::*;
use xtask::lab::{Lab, LabGuard, LabSpec};

const V1: &str = "v1.36.3+k3s1";
const V2: &str = "v1.36.4+k3s1";

fn events(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (host, step) of every step of the `plan` event, sorted.
fn planned(work: &Workdir, args: &[&str]) -> Vec<(String, String)> {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = work.run(&a);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    let ev = events(&out);
    let plan = ev
        .iter()
        .find(|e| e["event"] == "plan")
        .unwrap_or_else(|| panic!("no plan event: {}", text(&out)));
    let mut steps = Vec::new();
    for p in plan["phases"].as_array().unwrap() {
        for g in p["groups"].as_array().unwrap() {
            for s in g["steps"].as_array().unwrap() {
                steps.push((
                    s["host"].as_str().unwrap().to_string(),
                    s["action"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    assert_eq!(plan["steps"].as_u64(), Some(steps.len() as u64));
    steps.sort();
    steps
}

/// (host, step) of every `action` event of a run, sorted.
fn executed(work: &Workdir, args: &[&str]) -> Vec<(String, String)> {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = work.run(&a);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    let mut steps: Vec<(String, String)> = events(&out)
        .iter()
        .filter(|e| e["event"] == "action")
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    steps.sort();
    steps
}

/// The plan of `plan_args`, then the run of `run_args`: the same steps, and not none.
fn same(work: &Workdir, what: &str, plan_args: &[&str], run_args: &[&str]) {
    let before = std::fs::read_to_string(work.inventory()).unwrap();
    let plan = planned(work, plan_args);
    assert_eq!(
        before,
        std::fs::read_to_string(work.inventory()).unwrap(),
        "{what}: the plan changed the inventory"
    );
    assert!(!plan.is_empty(), "{what}: nothing planned");
    let run = executed(work, run_args);
    assert_eq!(
        plan, run,
        "{what}: executed steps differ from the planned ones"
    );
    let inv = work.inventory();
    assert_eq!(
        planned(work, &["plan", inv.to_str().unwrap()]),
        vec![],
        "{what}: not converged after the run"
    );
    eprintln!("{what}: {} steps, as planned", run.len());
}

fn addr(lab: &Lab, node: &str) -> String {
    lab.node(node).unwrap().addr.to_string()
}

#[test]
fn up_executes_exactly_the_plan() {
    if vagrant_mode() {
        skip("lab-only test (a spare host and two k3s versions), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let mut spec = LabSpec::new("plan-up", 3);
    spec.servers = 1;
    spec.spares = 1;
    spec.k3s_versions = vec![V1.to_string(), V2.to_string()];
    let _ = Lab::down_by_name("plan-up");
    let lab = LabGuard::up(&spec).unwrap_or_else(|e| panic!("lab plan-up: {e:#}"));
    let work = Workdir::new();
    let mut b = InventoryBuilder::new(&lab, "pu");
    b.version = V1.into();
    b.extra
        .insert("worker-1".into(), "labels = { tier = \"gold\" }\n".into());
    work.write_inventory(&b.render());
    let inv = work.inventory();
    let inv_s = inv.to_str().unwrap();

    same(&work, "fresh", &["plan", inv_s], &["up", inv_s]);

    b.extra.insert(
        "worker-1".into(),
        "labels = { tier = \"silver\" }\ntaints = [\"dedicated=db:NoSchedule\"]\n".into(),
    );
    work.write_inventory(&b.render());
    same(&work, "label change", &["plan", inv_s], &["up", inv_s]);

    let with_addon = format!(
        "{}\n[addons.traefik]\nnamespace = \"ingress-system\"\n",
        b.render()
    );
    work.write_inventory(&with_addon);
    same(&work, "add-on added", &["plan", inv_s], &["up", inv_s]);

    let spare = addr(&lab, "spare-1");
    let add = [
        "node",
        "add",
        inv_s,
        "worker-3",
        "--host",
        &spare,
        "--role",
        "agent",
        "--label",
        "tier=bronze",
    ];
    let mut add_plan = add.to_vec();
    add_plan.push("--plan");
    same(&work, "node added", &add_plan, &add);

    let upgraded = std::fs::read_to_string(&inv).unwrap().replace(V1, V2);
    std::fs::write(&inv, upgraded).unwrap();
    same(&work, "upgrade", &["plan", inv_s], &["up", inv_s]);
    let all = nodes(&lab, "master-1");
    assert_eq!(all.len(), 4, "three nodes and the one added: {all:#?}");
    for n in all {
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], V2, "{n}");
    }

    // node remove, node replace (of a dead agent, onto the host just freed) and reset: the
    // plan changes nothing, the run does exactly what it printed.
    same(
        &work,
        "node removed",
        &["node", "remove", inv_s, "worker-3", "--plan"],
        &["node", "remove", inv_s, "worker-3"],
    );
    lab.fault("worker-2", xtask::lab::Fault::Stop).unwrap();
    same(
        &work,
        "node replaced",
        &[
            "node", "replace", inv_s, "worker-2", "--host", &spare, "--plan",
        ],
        &["node", "replace", inv_s, "worker-2", "--host", &spare],
    );
    let before = std::fs::read_to_string(&inv).unwrap();
    let plan = planned(&work, &["reset", inv_s, "--yes", "--plan"]);
    assert_eq!(before, std::fs::read_to_string(&inv).unwrap());
    assert!(!plan.is_empty(), "reset: nothing planned");
    for n in ["master-1", "spare-1"] {
        assert!(
            exists(&lab, n, "/usr/local/bin/k3s"),
            "reset --plan removed k3s on {n}"
        );
    }
    let run = executed(&work, &["reset", inv_s, "--yes"]);
    assert_eq!(
        plan, run,
        "reset: executed steps differ from the planned ones"
    );
    for n in ["master-1", "worker-1", "spare-1"] {
        assert!(
            !exists(&lab, n, "/usr/local/bin/k3s"),
            "reset left k3s on {n}"
        );
    }
}
