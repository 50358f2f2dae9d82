//! `bootstrap up` end to end on lab hosts (issue: inventory to a converged
//! cluster, idempotent on every re-run). Each test boots its own lab.

mod common;

use common::*;
use xtask::lab::{Lab, NodeKind};

/// The lab's inventory with the seed's shape: a tainted control plane and
/// labelled workers.
fn seed_inventory(lab: &Lab, extra_worker_1: &str) -> String {
    let mut s = format!(
        "[cluster]\nname = \"seed\"\nk3s_version = \"v1.36.3+k3s1\"\n\n\
         [install]\nsource = \"download\"\nmirror = \"{}\"\nallow_http = true\n\n\
         [ssh]\nuser = \"root\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\n",
        lab.mirror_url(),
        lab.operator_key_path().display(),
        lab.known_hosts_path().display()
    );
    for n in lab.nodes() {
        let (role, extra) = match (n.kind, n.name.as_str()) {
            (NodeKind::Server, _) => (
                "server",
                "taints = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]\n"
                    .to_string(),
            ),
            (NodeKind::Agent, "worker-1") => ("agent", extra_worker_1.to_string()),
            (NodeKind::Agent, _) => (
                "agent",
                "labels = { \"node.role\" = \"app\" }\n".to_string(),
            ),
            (NodeKind::Spare, _) => continue,
        };
        s.push_str(&format!(
            "\n[[node]]\nname = \"{}\"\nhost = \"{}\"\nrole = \"{role}\"\n{extra}",
            n.name, n.addr
        ));
    }
    s
}

#[test]
fn seed_topology_converges_and_reruns_change_nothing() {
    if vagrant_mode() {
        skip("lab-only test (faults and file checks), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-seed", 3, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&seed_inventory(
        &lab,
        "labels = { \"node.role\" = \"database\", \"tier\" = \"gold\" }\n",
    ));

    // From scratch.
    let (sum, out) = work.up_json();
    assert!(sum["changes"].as_u64().unwrap() > 0, "{sum}");
    let all = nodes(&lab, "master-1");
    assert_eq!(all.len(), 3);
    for n in &all {
        assert!(is_ready(n), "not Ready: {n}");
    }
    let m = node(&all, "master-1");
    assert_eq!(
        taints(m),
        vec!["node-role.kubernetes.io/control-plane=true:NoSchedule"]
    );
    let w1 = labels(node(&all, "worker-1"));
    assert_eq!(w1.get("node.role").map(String::as_str), Some("database"));
    assert_eq!(w1.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(
        labels(node(&all, "worker-2"))
            .get("node.role")
            .map(String::as_str),
        Some("app")
    );
    assert!(taints(node(&all, "worker-1")).is_empty());

    // The kubeconfig: 0600, our names, the server's lab address.
    let kc = work.path("seed.kubeconfig");
    let meta = std::fs::metadata(&kc).expect("kubeconfig written");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&kc).unwrap();
    let master = lab.node("master-1").unwrap().addr;
    assert!(
        // Quoted or not, as YAML reads it.
        text.replace('"', "")
            .contains(&format!("server: https://{master}:6443")),
        "{text}"
    );
    assert!(
        text.replace('"', "").contains("current-context: seed"),
        "{text}"
    );

    // Tokens never in the output, and kept as a 0600 backup in a 0700 directory.
    for (path, want) in [(".bootstrap", 0o700), (".bootstrap/tokens.json", 0o600)] {
        let mode = std::fs::metadata(work.path(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "{path} is {mode:o}");
    }
    let tokens: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path(".bootstrap/tokens.json")).unwrap(),
    )
    .unwrap();
    let server_token = tokens["server"].as_str().unwrap().to_string();
    let agent_token = tokens["agent"].as_str().unwrap().to_string();
    assert_ne!(server_token, agent_token);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(&server_token) && !all.contains(&agent_token));

    // Second run: nothing changes, no file touched, no restart.
    let before: Vec<String> = ["master-1", "worker-1", "worker-2"]
        .iter()
        .map(|n| fingerprint(&lab, n))
        .collect();
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
    // Facts in one round trip per host: that is an agent's whole no-op re-run; a server's
    // adds the run lock's release.
    let rt = &sum["round_trips"];
    assert_eq!(rt.as_object().map(|m| m.len()), Some(3), "{sum}");
    assert_eq!(rt["worker-1"], 1, "{sum}");
    assert_eq!(rt["worker-2"], 1, "{sum}");
    assert_eq!(rt["master-1"], 2, "{sum}");
    let after: Vec<String> = ["master-1", "worker-1", "worker-2"]
        .iter()
        .map(|n| fingerprint(&lab, n))
        .collect();
    assert_eq!(before, after);

    // `plan` on the converged cluster: nothing to do, nothing changed.
    let inv = work.inventory();
    let out = work.run(&["plan", inv.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seed: nothing to do"));

    // `status`: every node Ready, no drift.
    let out = work.run(&["status", inv.to_str().unwrap(), "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "status")
        .expect("a status event");
    assert_eq!(st["healthy"], true, "{st}");
    assert_eq!(st["nodes"].as_array().unwrap().len(), 3);

    // `kubeconfig --merge` adds the context to ~/.kube/config, once.
    for _ in 0..2 {
        let out = work.run(&["kubeconfig", inv.to_str().unwrap(), "--merge"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let merged = std::fs::read_to_string(work.home.path().join(".kube/config")).unwrap();
    assert!(merged.contains("current-context: seed"), "{merged}");
    assert_eq!(merged.matches("name: seed").count(), 3, "{merged}");
    {
        use std::os::unix::fs::PermissionsExt;
        let kube = work.home.path().join(".kube");
        let mode = std::fs::metadata(&kube).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "~/.kube is made the user's alone");
    }
    // A ~/.kube/config that is a link (dotfiles) and has its own current context: written
    // through the link, the context kept, and the run says so.
    let real = work.home.path().join("dotfiles-kubeconfig");
    std::fs::write(
        &real,
        "apiVersion: v1\nkind: Config\ncurrent-context: other\ncontexts:\n- name: other\n  context: {cluster: other, user: other}\nclusters: []\nusers: []\n",
    )
    .unwrap();
    let cfg = work.home.path().join(".kube/config");
    std::fs::remove_file(&cfg).unwrap();
    std::os::unix::fs::symlink(&real, &cfg).unwrap();
    let out = work.run(&["kubeconfig", inv.to_str().unwrap(), "--merge"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("the current context stays other"), "{said}");
    assert!(std::fs::symlink_metadata(&cfg)
        .unwrap()
        .file_type()
        .is_symlink());
    let merged = std::fs::read_to_string(&real).unwrap();
    assert!(merged.contains("current-context: other"), "{merged}");
    assert!(merged.contains("name: seed"), "{merged}");

    // Someone else's label survives everything that follows.
    sh(
        &lab,
        "master-1",
        "k3s kubectl label node worker-1 team=payments",
    );

    // Change one label, remove one, add a taint: exactly those change.
    work.write_inventory(&seed_inventory(
        &lab,
        "labels = { \"node.role\" = \"db\" }\ntaints = [\"dedicated=db:NoSchedule\"]\n",
    ));
    let before_restart = fingerprint(&lab, "worker-1");
    // `status` sees the drift before the run...
    let status = || {
        let out = work.run(&["status", inv.to_str().unwrap(), "--output", "json"]);
        let st = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .rfind(|v| v["event"] == "status")
            .unwrap_or_else(|| panic!("no status event: {}", common::text(&out)));
        (out.status.code(), st)
    };
    let (_, st) = status();
    assert_eq!(st["healthy"], false, "{st}");
    let notes = |st: &serde_json::Value, host: &str| -> Vec<String> {
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["host"] == host)
            .unwrap_or_else(|| panic!("no {host} in {st}"))["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        notes(&st, "worker-1"),
        ["drift: label node.role=db, remove label tier, taint dedicated=db:NoSchedule"],
        "{st}"
    );
    assert!(notes(&st, "worker-2").is_empty(), "{st}");
    let (sum, _) = work.up_json();
    assert!(sum["changes"].as_u64().unwrap() > 0);
    // ...and none after it.
    let (code, st) = status();
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["healthy"], true, "{st}");
    for n in ["master-1", "worker-1", "worker-2"] {
        assert!(notes(&st, n).is_empty(), "{n}: {st}");
    }
    let all = nodes(&lab, "master-1");
    let w1 = node(&all, "worker-1");
    let l = labels(w1);
    assert_eq!(l.get("node.role").map(String::as_str), Some("db"));
    assert!(!l.contains_key("tier"), "removed label still there: {l:?}");
    assert_eq!(l.get("team").map(String::as_str), Some("payments"));
    assert_eq!(taints(w1), vec!["dedicated=db:NoSchedule"]);
    assert_eq!(
        labels(node(&all, "worker-2"))
            .get("node.role")
            .map(String::as_str),
        Some("app")
    );
    // A label/taint change rewrites config.yaml but never restarts k3s.
    let restarts = |fp: &str| {
        fp.lines()
            .filter(|l| l.starts_with("k3s"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        restarts(&before_restart),
        restarts(&fingerprint(&lab, "worker-1"))
    );

    // `.bootstrap/` gone: the tokens come back from the cluster, no changes.
    std::fs::remove_dir_all(work.path(".bootstrap")).unwrap();
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
    let tokens2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path(".bootstrap/tokens.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tokens, tokens2);

    // The scripts install.sh leaves on a host are there, and they work: the
    // agent's uninstall script removes k3s from worker-2, and `up` puts it back.
    assert_eq!(
        sh(
            &lab,
            "master-1",
            "stat -c %a /usr/local/bin/k3s-killall.sh /usr/local/bin/k3s-uninstall.sh"
        ),
        "755\n755\n"
    );
    sh(
        &lab,
        "worker-2",
        "/usr/local/bin/k3s-agent-uninstall.sh >/dev/null",
    );
    assert_eq!(
        sh(
            &lab,
            "worker-2",
            "ls /usr/local/bin/k3s* /etc/systemd/system/k3s* /etc/rancher/k3s 2>/dev/null | wc -l"
        )
        .trim(),
        "0"
    );
    let (sum, _) = work.up_json();
    assert!(sum["changes"].as_u64().unwrap() > 0);
    assert!(is_ready(node(&nodes(&lab, "master-1"), "worker-2")));
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // The kubeconfig `up` wrote works with upstream kubectl on this machine (TLS checked
    // against the cluster CA, the admin client certificate): the nodes Ready, a label and a
    // taint, a drain.
    let kubectl = xtask::lab::kubectl::find().expect("an upstream kubectl");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&kubectl)
            .env("KUBECONFIG", &kc)
            .env("HOME", work.home.path())
            .args(args)
            .output()
            .expect("running kubectl");
        let t = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "kubectl {args:?}: {t}");
        t
    };
    let table = run(&["get", "nodes"]);
    for n in ["master-1", "worker-1", "worker-2"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n} missing: {table}"));
        assert_eq!(line.split_whitespace().nth(1), Some("Ready"), "{table}");
    }
    assert_eq!(
        run(&["label", "node", "worker-2", "from-host=yes"]),
        "node/worker-2 labeled\n"
    );
    assert_eq!(
        run(&["taint", "node", "worker-2", "from-host=yes:NoSchedule"]),
        "node/worker-2 tainted\n"
    );
    let out = run(&[
        "drain",
        "worker-2",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    assert!(out.contains("node/worker-2 drained"), "{out}");
    let w2 = node(&nodes(&lab, "master-1"), "worker-2").clone();
    assert_eq!(
        labels(&w2).get("from-host").map(String::as_str),
        Some("yes")
    );
    assert_eq!(w2["spec"]["unschedulable"], true);
}

#[test]
fn ha_servers_join_one_after_another() {
    if vagrant_mode() {
        skip("lab-only test (reads the k3s double's event log), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-ha", 5, 3, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "ha").render());

    // `plan` on fresh hosts lists the installs and changes nothing.
    let inv = work.inventory();
    let out = work.run(&["plan", inv.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("install k3s v1.36.3+k3s1"), "{text}");
    assert!(text.contains("change(s) planned"), "{text}");
    for n in lab.nodes() {
        assert_eq!(
            sh(
                &lab,
                &n.name,
                "ls /usr/local/bin/k3s /etc/rancher 2>/dev/null | wc -l"
            )
            .trim(),
            "0"
        );
    }
    assert!(!work.path(".bootstrap").exists());

    work.up_json();
    let all = nodes(&lab, "master-1");
    assert_eq!(all.iter().filter(|n| is_ready(n)).count(), 5);
    for s in ["master-1", "master-2", "master-3"] {
        assert_eq!(
            labels(node(&all, s))
                .get("node-role.kubernetes.io/etcd")
                .map(String::as_str),
            Some("true")
        );
    }

    let ev = events(&lab, "master-1");
    let pos = |kind: &str, node: &str| {
        ev.iter()
            .position(|(k, n, _)| k == kind && n == node)
            .unwrap_or_else(|| {
                panic!(
                    "no {kind} event for {node} in {:#?}",
                    ev.iter().map(|e| &e.2).collect::<Vec<_>>()
                )
            })
    };
    assert_eq!(ev.iter().filter(|(k, _, _)| k == "cluster-init").count(), 1);
    assert_eq!(
        pos("cluster-init", "master-1"),
        ev.iter().position(|(k, _, _)| k == "cluster-init").unwrap()
    );
    // master-3 starts joining only after master-2 is a Ready member.
    assert!(pos("node-ready", "master-2") < pos("server-join", "master-3"));
    assert!(pos("node-ready", "master-1") < pos("server-join", "master-2"));

    // The same cluster from every server, and a re-run changes nothing.
    assert_eq!(nodes(&lab, "master-3").len(), 5);
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
}

/// README, global options: `--parallel N` bounds the hosts worked on at once, `-q` says
/// nothing when all is well, `-v` says every step. With `--parallel 1` and worker-1's join
/// blocked (its start waits until `--timeout`), the agents' steps come one host after the
/// other, never interleaved: worker-2 is not worked on while worker-1 waits.
#[test]
fn parallel_bounds_the_hosts_at_once_and_q_and_v_set_what_is_said() {
    if vagrant_mode() {
        skip("lab-only test (blocks a join), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-par", 3, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "par").render());
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    lab.fault("worker-1", xtask::lab::Fault::BlockJoin).unwrap();
    struct Unblock<'a>(&'a Lab);
    impl Drop for Unblock<'_> {
        fn drop(&mut self) {
            let _ = self.0.fault("worker-1", xtask::lab::Fault::UnblockJoin);
        }
    }
    let unblock = Unblock(&lab);
    let out = work.run(&[
        "up",
        inv,
        "--parallel",
        "1",
        "--timeout",
        "10",
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let server_started = events
        .iter()
        .position(|e| {
            e["event"] == "action"
                && e["host"] == "master-1"
                && e["action"] == "enable and start k3s"
        })
        .unwrap_or_else(|| panic!("master-1 never started: {}", text(&out)));
    let hosts: Vec<&str> = events[server_started..]
        .iter()
        .filter(|e| e["event"] == "step" || e["event"] == "action")
        .filter_map(|e| e["host"].as_str())
        .filter(|h| h.starts_with("worker-"))
        .collect();
    let mut runs = hosts.clone();
    runs.dedup();
    assert!(
        runs.len() == 2,
        "the agents' steps, in the order they came: {hosts:?}\n{}",
        text(&out)
    );
    drop(unblock);
    work.up_json();

    // -q: nothing when all is well; -v: every step, host by host.
    let quiet = run_ok(&work, &["up", inv, "-q"]);
    assert_eq!(text(&quiet), "", "-q said something");
    let verbose = run_ok(&work, &["up", inv, "-v"]);
    let said = String::from_utf8_lossy(&verbose.stderr);
    for n in ["master-1", "worker-1", "worker-2"] {
        assert!(
            said.contains(&format!("{n}: connect and read facts")),
            "{n}: {said}"
        );
    }
    let plain = run_ok(&work, &["up", inv]);
    assert!(
        !String::from_utf8_lossy(&plain.stderr).contains("connect and read facts"),
        "{}",
        text(&plain)
    );
}
