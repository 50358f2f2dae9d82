//! The end-to-end suite that runs on either testbed: the local lab (the
//! default, with the k3s double) or the Vagrant/Lima VMs with real k3s
//! (`BOOTSTRAP_E2E=vagrant`, after `vagrant up` in vagrant/). Everything here
//! goes through the `bootstrap` binary and SSH only, so it means the same on
//! both.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::*;

/// The Vagrant VMs are one cluster: the tests take turns on them (and on the lab too, so the
/// machine is not loaded with two labs at once).
static SERIAL: Mutex<()> = Mutex::new(());

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
    /// None (with the reason printed) when the chosen testbed is not there. `name` names the
    /// lab, with `servers` of its three nodes servers.
    fn acquire(name: &str, servers: usize) -> Option<Testbed> {
        if vagrant_mode() {
            match vagrant_inventory() {
                Ok(inv) => Some(Testbed::Vagrant(inv, Workdir::new())),
                Err(why) => {
                    skip(&format!("BOOTSTRAP_E2E=vagrant but {why}"));
                    None
                }
            }
        } else {
            let lab = lab(name, 3, servers, 0);
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
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = Testbed::acquire("e2e", 1) else {
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
    // The API at the first server's host (or the inventory's api_endpoint), as YAML reads it.
    let inv: toml::Value =
        toml::from_str(&std::fs::read_to_string(bed.inventory()).unwrap()).unwrap();
    let host = inv["cluster"]
        .get("api_endpoint")
        .and_then(|v| v.as_str())
        .map(String::from)
        .unwrap_or_else(|| {
            inv["node"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["role"].as_str() == Some("server"))
                .expect("a server")["host"]
                .as_str()
                .unwrap()
                .to_string()
        });
    assert!(
        text.replace('"', "")
            .contains(&format!("server: https://{host}:6443")),
        "{text}"
    );
    // Real k3s (and the k3s double) answer through it.
    assert!(kubectl(kubeconfig, &["get", "nodes", "-o", "name"]).contains("node/"));
}

/// An upstream kubectl on the testbed's cluster, through the kubeconfig `up` wrote.
fn kubectl(kubeconfig: &str, args: &[&str]) -> String {
    let bin = xtask::lab::kubectl::find().expect("an upstream kubectl (BOOTSTRAP_LAB_KUBECTL)");
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `revision:status:hash` of every helm release record of `name` in `ns`, oldest first.
fn releases(kubeconfig: &str, ns: &str, name: &str) -> Vec<String> {
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            "secrets",
            "-n",
            ns,
            "-l",
            &format!("owner=helm,name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.version}:{.metadata.labels.status}{\"\\n\"}{end}",
        ],
    );
    let mut r: Vec<(u32, String)> = out
        .lines()
        .filter_map(|l| {
            let (v, s) = l.split_once(':')?;
            Some((v.parse().ok()?, s.to_string()))
        })
        .collect();
    r.sort();
    r.into_iter().map(|(v, s)| format!("{v}:{s}")).collect()
}

/// Issue 26 (B4, B7): the add-ons installed and judged healthy, on real k3s with the
/// BOOTSTRAP_E2E=vagrant testbed (helm-controller's own Job and release records, the hash
/// where it writes it); then a values-only change (Traefik's redirect) is waited for until
/// helm's newest release is deployed with the new configuration: `up` returns with revision 2
/// deployed, not with revision 1 judged current.
#[test]
fn addons_healthy_and_a_values_only_change_waited_for() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = Testbed::acquire("e2e-addons", 1) else {
        return;
    };
    let base = std::fs::read_to_string(bed.inventory()).unwrap();
    let work = bed.work();
    let with = |redirect: bool| {
        format!(
            "{base}\n[addons.sealed_secrets]\n\n[addons.traefik]\nnamespace = \"ingress-system\"\nredirect_https = {redirect}\ntolerations = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]\n"
        )
    };
    work.write_inventory(&with(true));
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    let up = |work: &Workdir| {
        let out = work.run(&["up", inv, "--output", "json", "--timeout", "900"]);
        assert!(out.status.success(), "{}", text(&out));
        summary(&out)
    };
    let first = up(work);
    assert_eq!(first["ok"], true, "{first}");
    let status = work.run(&["status", inv, "--output", "json"]);
    let st: serde_json::Value = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "status")
        .unwrap_or_else(|| panic!("{}", text(&status)));
    for a in st["addons"].as_array().unwrap() {
        assert_eq!(a["healthy"], true, "{a}");
    }
    let kc = first["kubeconfig"].as_str().unwrap().to_string();
    assert_eq!(releases(&kc, "ingress-system", "traefik"), ["1:deployed"]);
    // Values only: the chart version is the same, helm-controller makes a new Job, and `up`
    // returns once that one's release is deployed.
    work.write_inventory(&with(false));
    let second = up(work);
    assert_eq!(second["ok"], true, "{second}");
    assert_eq!(
        releases(&kc, "ingress-system", "traefik"),
        ["1:superseded", "2:deployed"]
    );
    let again = up(work);
    assert_eq!(again["changes"], 0, "{again}");
    // Dropping the add-on alone would bring k3s's bundled Traefik back as the same HelmChart:
    // refused, nothing changed. With `traefik` disabled the add-ons go, for the other tests
    // on the same machines.
    work.write_inventory(&base);
    let refused = work.run(&["up", inv, "--output", "json"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("HelmChart kube-system/traefik"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        releases(&kc, "ingress-system", "traefik"),
        ["1:superseded", "2:deployed"]
    );
    assert!(base.contains("[cluster]\n"), "{base}");
    work.write_inventory(&base.replacen("[cluster]\n", "[cluster]\ndisable = [\"traefik\"]\n", 1));
    assert_eq!(up(work)["ok"], true);
    assert!(releases(&kc, "ingress-system", "traefik").is_empty());
}

/// Issue 26 (C11, C13, C14): an HA cluster (every node a server) snapshotted, changed,
/// restored from the operator's copy: the data back, three etcd members, every node Ready, a
/// re-run with no changes. On the Vagrant VMs the cluster is reset first and after, since it
/// takes the seed's machines.
#[test]
fn ha_snapshot_and_restore() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bed) = Testbed::acquire("e2e-ha", 3) else {
        return;
    };
    let base = std::fs::read_to_string(bed.inventory()).unwrap();
    let work = bed.work();
    let vagrant = matches!(bed, Testbed::Vagrant(..));
    let ha = if vagrant {
        // Every node a server; flannel's interface is a cluster-wide server setting.
        let mut t = base
            .replace("role = \"agent\"", "role = \"server\"")
            .replace(", \"flannel-iface\" = \"eth1\"", "");
        t = t.replacen(
            "\n[install]",
            "\n[cluster.server_config]\nflannel-iface = \"eth1\"\n\n[install]",
            1,
        );
        t
    } else {
        base.clone()
    };
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = work.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        out
    };
    if vagrant {
        work.write_inventory(&base);
        run(&["reset", inv, "--yes"]);
    }
    work.write_inventory(&ha);
    let out = run(&["up", inv, "--output", "json", "--timeout", "900"]);
    let kc = summary(&out)["kubeconfig"].as_str().unwrap().to_string();
    kubectl(
        &kc,
        &[
            "create",
            "configmap",
            "keepme",
            "-n",
            "default",
            "--from-literal=a=b",
        ],
    );
    run(&["etcd", "snapshot", inv, "--name", "e2e"]);
    let copy = std::fs::read_dir(work.path(".bootstrap/snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("e2e-") && !n.to_string_lossy().ends_with(".json")
            })
        })
        .expect("the copy");
    kubectl(&kc, &["delete", "configmap", "keepme", "-n", "default"]);
    run(&[
        "etcd",
        "restore",
        inv,
        copy.to_str().unwrap(),
        "--yes",
        "--timeout",
        "900",
    ]);
    kubectl(&kc, &["get", "configmap", "keepme", "-n", "default"]);
    let nodes = kubectl(&kc, &["get", "nodes", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{nodes}");
    assert!(items.iter().all(is_ready), "{nodes}");
    let etcd = items
        .iter()
        .filter(|n| n["metadata"]["labels"]["node-role.kubernetes.io/etcd"] == "true")
        .count();
    assert_eq!(etcd, 3, "{nodes}");
    let out = run(&["up", inv, "--output", "json", "--timeout", "900"]);
    assert_eq!(summary(&out)["changes"], 0, "{}", text(&out));
    if vagrant {
        run(&["reset", inv, "--yes"]);
    }
}
