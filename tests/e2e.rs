//! The end-to-end suite that runs on either testbed: the local lab (the
//! default, with the k3s double) or the Vagrant/Lima VMs with real k3s
//! (`BOOTSTRAP_E2E=vagrant`, after `vagrant up` in vagrant/). Everything here
//! goes through the `bootstrap` binary and SSH only, so it means the same on
//! both.

mod common;

use std::path::PathBuf;

use common::*;

/// Where the suite runs, and what keeps that testbed alive.
enum Testbed {
    /// The guard tears the lab down when the test ends.
    Lab {
        _lab: Box<xtask::lab::LabGuard>,
        work: Workdir,
    },
    Vagrant(PathBuf, Workdir),
}

impl Testbed {
    /// None (with the reason printed) when the chosen testbed is not there.
    fn acquire() -> Option<Testbed> {
        if vagrant_mode() {
            match vagrant_inventory() {
                Ok(inv) => Some(Testbed::Vagrant(inv, Workdir::new())),
                Err(why) => {
                    eprintln!("skipped: BOOTSTRAP_E2E=vagrant but {why}");
                    None
                }
            }
        } else {
            let lab = lab("e2e", 3, 1, 0);
            let work = Workdir::new();
            let mut b = InventoryBuilder::new(&lab, "e2e");
            b.extra.insert(
                "master-1".into(),
                "taints = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]\n".into(),
            );
            b.extra.insert(
                "worker-1".into(),
                "labels = { \"node.role\" = \"database\" }\n".into(),
            );
            work.write_inventory(&b.render());
            Some(Testbed::Lab {
                _lab: Box::new(lab),
                work,
            })
        }
    }

    fn inventory(&self) -> PathBuf {
        match self {
            Testbed::Lab { work, .. } => work.inventory(),
            Testbed::Vagrant(inv, _) => inv.clone(),
        }
    }

    fn work(&self) -> &Workdir {
        match self {
            Testbed::Lab { work, .. } | Testbed::Vagrant(_, work) => work,
        }
    }
}

fn run_json(bed: &Testbed, cmd: &str) -> serde_json::Value {
    let inv = bed.inventory();
    // Real k3s takes minutes to start on a small VM; the double seconds.
    let mut args = vec![cmd, inv.to_str().unwrap(), "--output", "json"];
    if cmd == "up" {
        args.extend(["--timeout", "900"]);
    }
    let out = bed.work().run(&args);
    assert!(
        out.status.success(),
        "bootstrap {cmd} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == "summary" || v["event"] == "status")
        .expect("a summary or status event")
}

#[test]
fn seed_shape_converges_and_stays_converged() {
    let Some(bed) = Testbed::acquire() else {
        return;
    };
    let first = run_json(&bed, "up");
    assert_eq!(first["ok"], true, "{first}");

    let status = run_json(&bed, "status");
    assert_eq!(status["healthy"], true, "{status}");
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{status}");
    for n in nodes {
        assert_eq!(n["ready"], true, "{n}");
    }

    let again = run_json(&bed, "up");
    assert_eq!(again["changes"], 0, "a re-run changed things: {again}");

    let kubeconfig = again["kubeconfig"].as_str().expect("kubeconfig path");
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    assert!(!text.contains("127.0.0.1"), "{text}");
}
