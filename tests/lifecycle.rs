//! Day two on lab hosts (issue 5): node add, replace (agent, joined server,
//! first server), remove, rolling upgrade, reset, and one run at a time.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use xtask::lab::{Fault, Lab, LabGuard, LabSpec};

const V1: &str = "v1.36.3+k3s1";
const V2: &str = "v1.36.4+k3s1";

fn addr(lab: &Lab, node: &str) -> String {
    lab.node(node).unwrap().addr.to_string()
}

/// Nothing of k3s left on `node`: no unit, binary, config, data, links.
fn assert_clean(lab: &Lab, node: &str) {
    let left = sh(
        lab,
        node,
        "for f in /etc/systemd/system/k3s.service /etc/systemd/system/k3s-agent.service \
         /etc/systemd/system/k3s.service.env /etc/systemd/system/k3s-agent.service.env \
         /usr/local/bin/k3s /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr \
         /usr/local/bin/k3s-killall.sh /usr/local/bin/k3s-uninstall.sh /etc/rancher/k3s \
         /var/lib/rancher/k3s /var/lib/kubelet /run/k3s; do [ -e \"$f\" ] && echo \"$f\"; done; \
         for s in k3s k3s-agent; do systemctl is-active -q $s && echo \"$s active\"; \
         systemctl list-unit-files $s.service 2>/dev/null | grep -q \"^$s.service\" && echo \"$s unit\"; done; \
         pgrep -x k3s >/dev/null && echo 'k3s process'; true",
    );
    assert!(left.trim().is_empty(), "{node} still has: {left}");
}

fn ready_names(lab: &Lab, server: &str) -> Vec<String> {
    let mut v: Vec<String> = nodes(lab, server)
        .iter()
        .filter(|n| is_ready(n))
        .map(|n| n["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

fn pods_on(lab: &Lab, server: &str) -> Vec<(String, String)> {
    let json = sh(lab, server, "k3s kubectl get pods -n default -o json");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\nspec:\n  replicas: 4\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n";

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn replace_dead_agent_add_nodes_remove_agent_with_workloads() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("lc-seed", 3, 1, 3);
    let work = Workdir::new();
    let mut b = InventoryBuilder::new(&lab, "seed");
    b.extra.insert(
        "master-1".into(),
        "taints = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]\n".into(),
    );
    b.extra.insert(
        "worker-2".into(),
        "labels = { \"node.role\" = \"app\" }\ntaints = [\"dedicated=app:PreferNoSchedule\"]\n"
            .into(),
    );
    let mut inv = String::from("# the lab seed cluster (comments stay)\n");
    inv.push_str(&b.render());
    work.write_inventory(&inv);
    let invp = work.inventory();
    let inv_s = invp.to_str().unwrap();
    work.up_json();
    let old_pw = sh(&lab, "worker-2", "cat /etc/rancher/node/password");

    // Replace a dead agent.
    lab.fault("worker-2", Fault::Stop).unwrap();
    let spare1 = addr(&lab, "spare-1");
    let t = Instant::now();
    let out = run_ok(
        &work,
        &["node", "replace", inv_s, "worker-2", "--host", &spare1],
    );
    eprintln!("replace dead agent: {:?}", t.elapsed());
    let all = nodes(&lab, "master-1");
    assert_eq!(
        ready_names(&lab, "master-1"),
        ["master-1", "worker-1", "worker-2"],
        "{}",
        text(&out)
    );
    let w2 = node(&all, "worker-2");
    assert_eq!(labels(w2).get("node.role").map(String::as_str), Some("app"));
    assert_eq!(taints(w2), vec!["dedicated=app:PreferNoSchedule"]);
    assert_eq!(
        w2["status"]["addresses"][0]["address"].as_str(),
        Some(spare1.as_str())
    );
    // The old Node (and its node password) went; the new host's was accepted.
    let ev = events(&lab, "master-1");
    assert!(ev
        .iter()
        .any(|(k, _, v)| k == "node-deleted" && v["detail"]["name"] == "worker-2"));
    assert!(!ev
        .iter()
        .any(|(k, n, _)| k == "join-refused" && n == "worker-2"));
    let new_pw = sh(&lab, "spare-1", "cat /etc/rancher/node/password");
    assert_ne!(old_pw, new_pw);
    assert!(sh(
        &lab,
        "master-1",
        "k3s kubectl -n kube-system get secret worker-2.node-password.k3s -o name"
    )
    .contains("worker-2.node-password.k3s"));
    let text_now = std::fs::read_to_string(&invp).unwrap();
    assert!(text_now.starts_with("# the lab seed cluster (comments stay)\n"));
    assert!(text_now.contains(&format!("host = \"{spare1}\"")));
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // Bad input changes nothing (exit 2).
    let before = std::fs::read_to_string(&invp).unwrap();
    let out = work.run(&[
        "node",
        "add",
        inv_s,
        "worker-3",
        "--host",
        &addr(&lab, "spare-2"),
        "--role",
        "agent",
        "--label",
        "node-role.kubernetes.io/worker=true",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = work.run(&[
        "node",
        "add",
        inv_s,
        "worker-1",
        "--host",
        &addr(&lab, "spare-2"),
        "--role",
        "agent",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(before, std::fs::read_to_string(&invp).unwrap());

    // Add an agent and a server; other nodes see no change.
    let fp_before = fingerprint(&lab, "worker-1");
    let t = Instant::now();
    run_ok(
        &work,
        &[
            "node",
            "add",
            inv_s,
            "worker-3",
            "--host",
            &addr(&lab, "spare-2"),
            "--role",
            "agent",
            "--label",
            "tier=gold",
            "--taint",
            "gpu=yes:NoSchedule",
        ],
    );
    run_ok(
        &work,
        &[
            "node",
            "add",
            inv_s,
            "master-2",
            "--host",
            &addr(&lab, "spare-3"),
            "--role",
            "server",
        ],
    );
    eprintln!("two node adds: {:?}", t.elapsed());
    assert_eq!(fp_before, fingerprint(&lab, "worker-1"));
    let all = nodes(&lab, "master-1");
    assert_eq!(all.iter().filter(|n| is_ready(n)).count(), 5);
    let w3 = node(&all, "worker-3");
    assert_eq!(labels(w3).get("tier").map(String::as_str), Some("gold"));
    assert_eq!(taints(w3), vec!["gpu=yes:NoSchedule"]);
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // Remove an agent that runs workloads.
    lab.exec_stdin(
        "master-1",
        &["k3s", "kubectl", "apply", "-f", "-"],
        DEPLOYMENT.as_bytes(),
    )
    .unwrap();
    wait_until("pods on worker-1", Duration::from_secs(60), || {
        pods_on(&lab, "master-1")
            .iter()
            .any(|(_, n)| n == "worker-1")
    });
    let t = Instant::now();
    run_ok(&work, &["node", "remove", inv_s, "worker-1"]);
    eprintln!("remove agent: {:?}", t.elapsed());
    // The drain: the Node cordoned, then its pods evicted through the eviction API.
    let ev = events(&lab, "master-1");
    assert!(ev
        .iter()
        .any(|(k, _, v)| k == "cordon" && v["detail"]["name"] == "worker-1"));
    assert!(ev
        .iter()
        .any(|(k, _, v)| k == "evict" && v["detail"]["node"] == "worker-1"));
    assert!(ev
        .iter()
        .any(|(k, _, v)| k == "node-deleted" && v["detail"]["name"] == "worker-1"));
    assert!(nodes(&lab, "master-1")
        .iter()
        .all(|n| n["metadata"]["name"] != "worker-1"));
    wait_until("pods rescheduled", Duration::from_secs(60), || {
        let p = pods_on(&lab, "master-1");
        p.len() == 4 && p.iter().all(|(_, n)| !n.is_empty() && n != "worker-1")
    });
    assert_clean(&lab, "worker-1");
    assert!(!std::fs::read_to_string(&invp)
        .unwrap()
        .contains("\"worker-1\""));
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // A server goes: its Node (and etcd member) first, then its host stops and is cleaned,
    // then the inventory drops it. What the API said of the Node when k3s on its host was
    // being stopped is recorded by a drop-in on that host.
    record_node_at_stop(&lab, "spare-3", "master-2", "master-1");
    let out = work.run(&["node", "remove", inv_s, "master-2"]);
    assert!(out.status.success(), "{}", text(&out));
    let at_stop = node_at_stop(&lab, "spare-3");
    assert!(
        at_stop.contains("NotFound") || at_stop.contains("not found"),
        "master-2's host was stopped while its Node was still there: {at_stop}"
    );
    let ev = events(&lab, "master-1");
    assert!(ev
        .iter()
        .any(|(k, _, v)| k == "etcd-member-removed" && v.to_string().contains("master-2")));
    let members: serde_json::Value = serde_json::from_str(&sh(
        &lab,
        "master-1",
        "cat /var/lib/rancher/k3s/server/double/members.json",
    ))
    .unwrap();
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
    assert_clean(&lab, "spare-3");
    assert!(!std::fs::read_to_string(&invp)
        .unwrap()
        .contains("\"master-2\""));

    // The last server cannot go.
    let out = work.run(&["node", "remove", inv_s, "master-1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("last server"), "{}", text(&out));
}

#[test]
fn ha_replace_joined_then_first_server_then_rolling_upgrade() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let mut spec = LabSpec::new("lc-ha", 5);
    spec.servers = 3;
    spec.spares = 2;
    spec.k3s_versions = vec![V1.to_string(), V2.to_string()];
    let _ = Lab::down_by_name("lc-ha");
    let lab = LabGuard::up(&spec).unwrap_or_else(|e| panic!("lab lc-ha: {e:#}"));
    let work = Workdir::new();
    let mut b = InventoryBuilder::new(&lab, "ha");
    b.version = V1.into();
    work.write_inventory(&b.render());
    let invp = work.inventory();
    let inv_s = invp.to_str().unwrap();
    work.up_json();

    // A joined server, alive.
    let t = Instant::now();
    run_ok(
        &work,
        &[
            "node",
            "replace",
            inv_s,
            "master-2",
            "--host",
            &addr(&lab, "spare-1"),
        ],
    );
    eprintln!("replace joined server: {:?}", t.elapsed());
    // The cluster stayed up: a remaining server answers.
    assert_eq!(ready_names(&lab, "master-3").len(), 5);
    assert_clean(&lab, "master-2");

    // The first server, dead.
    lab.fault("master-1", Fault::Stop).unwrap();
    let t = Instant::now();
    run_ok(
        &work,
        &[
            "node",
            "replace",
            inv_s,
            "master-1",
            "--host",
            &addr(&lab, "spare-2"),
        ],
    );
    eprintln!("replace first server: {:?}", t.elapsed());
    assert_eq!(
        ready_names(&lab, "master-3"),
        ["master-1", "master-2", "master-3", "worker-1", "worker-2"]
    );
    let ev = events(&lab, "master-3");
    assert_eq!(
        ev.iter().filter(|(k, _, _)| k == "cluster-init").count(),
        1,
        "{:#?}",
        ev.iter().map(|e| &e.2).collect::<Vec<_>>()
    );
    let members: serde_json::Value = serde_json::from_str(&sh(
        &lab,
        "master-3",
        "cat /var/lib/rancher/k3s/server/double/members.json",
    ))
    .unwrap();
    let mut got: Vec<(String, String)> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["node"].as_str().unwrap().to_string(),
                m["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("master-1".to_string(), addr(&lab, "spare-2")),
            ("master-2".to_string(), addr(&lab, "spare-1")),
            ("master-3".to_string(), addr(&lab, "master-3")),
        ]
    );
    // The new first server joined through a live one, never cluster-init.
    let dropin = sh(
        &lab,
        "spare-2",
        "cat /etc/rancher/k3s/config.yaml.d/50-bootstrap-join.yaml",
    );
    assert!(!dropin.contains("cluster-init"), "{dropin}");
    assert!(!dropin.contains(&addr(&lab, "master-1")), "{dropin}");
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // Rolling upgrade, with a pod pinned to each agent so that its drain has one to evict.
    for a in ["worker-1", "worker-2"] {
        let pinned = DEPLOYMENT
            .replace("name: web", &format!("name: pinned-{a}"))
            .replace("replicas: 4", "replicas: 1")
            .replace("app: web", &format!("app: pinned-{a}"))
            .replace(
                "    spec:\n      containers:",
                &format!("    spec:\n      nodeSelector: {{kubernetes.io/hostname: {a}}}\n      containers:"),
            );
        lab.exec_stdin(
            "master-3",
            &["k3s", "kubectl", "apply", "-f", "-"],
            pinned.as_bytes(),
        )
        .unwrap();
    }
    wait_until("a pod on each agent", Duration::from_secs(60), || {
        let p = pods_on(&lab, "master-3");
        ["worker-1", "worker-2"]
            .iter()
            .all(|a| p.iter().any(|(_, n)| n == a))
    });
    let ev = events(&lab, "master-3");
    let seq_before = ev.len();
    let text_inv = std::fs::read_to_string(&invp).unwrap().replace(V1, V2);
    std::fs::write(&invp, &text_inv).unwrap();
    let t = Instant::now();
    run_ok(&work, &["up", inv_s, "--max-unavailable", "1"]);
    eprintln!("rolling upgrade: {:?}", t.elapsed());
    let all = nodes(&lab, "master-3");
    assert_eq!(all.len(), 5, "{all:#?}");
    for n in all {
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], V2, "{n}");
        assert!(is_ready(&n));
        assert_ne!(n["spec"]["unschedulable"], true, "{n}");
    }
    let ev: Vec<_> = events(&lab, "master-3")
        .into_iter()
        .skip(seq_before)
        .collect();
    let dump = || format!("{:#?}", ev.iter().map(|e| &e.2).collect::<Vec<_>>());
    let pos = |kind: &str, name: &str| {
        ev.iter()
            .position(|(k, n, v)| {
                k == kind
                    && (n == name || v["detail"]["name"] == name)
                    && (kind != "start" || v["detail"]["version"] == V2)
            })
            .unwrap_or_else(|| panic!("no {kind} for {name}: {}", dump()))
    };
    // Servers one at a time: each is back on V2 before the next stops.
    let mut servers: Vec<(usize, usize)> = ["master-1", "master-2", "master-3"]
        .iter()
        .map(|s| (pos("stop", s), pos("start", s)))
        .collect();
    servers.sort();
    for w in servers.windows(2) {
        assert!(w[0].1 < w[1].0, "servers overlapped: {}", dump());
    }
    // Agents: cordon, drain (its pod evicted), restart on V2, uncordon; one batch at a time.
    let mut agents = Vec::new();
    for a in ["worker-1", "worker-2"] {
        let (c, s, u) = (pos("cordon", a), pos("start", a), pos("uncordon", a));
        assert!(c < s && s < u, "{a}: {}", dump());
        let evicted = ev
            .iter()
            .position(|(k, _, v)| k == "evict" && v["detail"]["node"] == a)
            .unwrap_or_else(|| panic!("{a}'s pod was not evicted: {}", dump()));
        assert!(c < evicted && evicted < s, "{a}: {}", dump());
        agents.push((c, u));
    }
    agents.sort();
    assert!(
        agents[0].1 < agents[1].0,
        "agent batches overlapped: {}",
        dump()
    );
    assert!(servers.last().unwrap().1 < agents[0].0);

    // A downgrade is refused before anything changes.
    std::fs::write(&invp, text_inv.replace(V2, V1)).unwrap();
    let before = fingerprint(&lab, "worker-1");
    let out = work.run(&["up", inv_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("downgrade"), "{}", text(&out));
    assert_eq!(before, fingerprint(&lab, "worker-1"));
}

fn spawn_up(work: &Workdir) -> std::process::Child {
    Command::new(bin())
        .args(["up", work.inventory().to_str().unwrap(), "--output", "json"])
        .env("HOME", work.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigint(child: &std::process::Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn one_run_at_a_time_interrupts_and_reset() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("lc-lock", 3, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "lock").render());
    let inv_s = work.inventory().to_str().unwrap().to_string();
    let lock = "/var/lib/bootstrap/lock";

    // Two at once: the second refuses, naming the first. Then SIGINT the first once the
    // server is installed. worker-1 cannot join (its port 6443 is blocked), so the first run
    // cannot end before the signal comes.
    lab.fault("worker-1", Fault::BlockJoin).unwrap();
    let first = spawn_up(&work);
    wait_until("the lock", Duration::from_secs(60), || {
        exists(&lab, "master-1", lock)
    });
    let out = work.run(&["up", &inv_s]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("locked by another run"), "{msg}");
    assert!(msg.contains(&format!("(pid {})", first.id())), "{msg}");
    assert!(msg.contains("`bootstrap up`"), "{msg}");
    wait_until("the server install", Duration::from_secs(60), || {
        exists(&lab, "master-1", "/usr/local/bin/k3s")
    });
    sigint(&first);
    let o = first.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(!exists(&lab, "master-1", lock), "lock not released");
    lab.fault("worker-1", Fault::UnblockJoin).unwrap();

    // Interrupt during the agents' install. worker-2's link goes down once its unit is
    // written (the agents phase), so the run is surely still going when the signal comes.
    let second = spawn_up(&work);
    wait_until("an agent install", Duration::from_secs(120), || {
        exists(&lab, "worker-2", "/etc/systemd/system/k3s-agent.service")
    });
    lab.fault("worker-2", Fault::Cut).unwrap();
    sigint(&second);
    let o = second.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(!exists(&lab, "master-1", lock), "lock not released");
    lab.fault("worker-2", Fault::Heal).unwrap();

    // The next run converges.
    work.up_json();
    assert_eq!(ready_names(&lab, "master-1").len(), 3);
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");

    // A crashed run's lock: refused while it lives, taken over once expired.
    let now: u64 = sh(&lab, "master-1", "date +%s").trim().parse().unwrap();
    sh(
        &lab,
        "master-1",
        &format!("mkdir -p /var/lib/bootstrap; printf 'id=dead\\nwho=ci@elsewhere\\npid=4242\\ncommand=up\\nsince={}\\nexpires={}\\n' > {lock}", now - 10, now + 3600),
    );
    let out = work.run(&["up", &inv_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("ci@elsewhere (pid 4242)"),
        "{}",
        text(&out)
    );
    sh(
        &lab,
        "master-1",
        &format!("sed -i 's/^expires=.*/expires={}/' {lock}", now - 5),
    );
    let out = run_ok(&work, &["up", &inv_s]);
    assert!(text(&out).contains("took over a lock"), "{}", text(&out));
    assert!(!exists(&lab, "master-1", lock));

    // Interrupted while the facts are read (a worker's link is down, so its connect
    // retries): the lock the servers' facts script took goes too.
    lab.fault("worker-2", Fault::Cut).unwrap();
    let third = spawn_up(&work);
    wait_until("the lock", Duration::from_secs(60), || {
        exists(&lab, "master-1", lock)
    });
    sigint(&third);
    let o = third.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(!exists(&lab, "master-1", lock), "lock not released");
    lab.fault("worker-2", Fault::Heal).unwrap();

    // reset: asks (refuses without a terminal), then removes everything.
    let out = work.run(&["reset", &inv_s]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--yes"));
    assert!(exists(&lab, "worker-1", "/usr/local/bin/k3s"));
    let t = Instant::now();
    run_ok(&work, &["reset", &inv_s, "--yes"]);
    eprintln!("reset: {:?}", t.elapsed());
    for n in ["master-1", "worker-1", "worker-2"] {
        assert_clean(&lab, n);
    }
    work.up_json();
    assert_eq!(ready_names(&lab, "master-1").len(), 3);
}

/// Issue 26 (C12): `node replace` run again after the new host registered never touches the
/// Node it moved, when the host is a DNS name (k3s's InternalIP is then never the inventory's
/// host) or an address behind NAT (a cloud floating IP, not on the node's interface): what
/// decides is the host bootstrap recorded on the Node, else an address k3s records that the
/// new host has. The record is removed before each re-run, as when the first run stopped
/// before its labels phase, so both ways are exercised.
#[test]
fn a_replace_run_again_leaves_the_moved_node_with_dns_and_nat_hosts() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let mut spec = LabSpec::new("lc-rerun", 3);
    spec.spares = 2;
    spec.dns = true;
    spec.nat = vec!["spare-2".into()];
    let lab = LabGuard::up(&spec).unwrap();
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "rerun").render());
    let invp = work.inventory();
    let inv = invp.to_str().unwrap();
    work.up_json();
    for (node, spare) in [("worker-1", "spare-1"), ("worker-2", "spare-2")] {
        let host = lab.host_of(spare).unwrap();
        let out = run_ok(&work, &["node", "replace", inv, node, "--host", &host]);
        assert!(
            text(&out).contains(&format!("delete the Node {node}")),
            "{}",
            text(&out)
        );
        let uid = |lab: &Lab| {
            node_of(lab, node)["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let moved = uid(&lab);
        for forget in [false, true] {
            if forget {
                sh(
                    &lab,
                    "master-1",
                    &format!("k3s kubectl annotate node {node} bootstrap.k3s.io/managed-"),
                );
            }
            let plan = run_ok(
                &work,
                &["node", "replace", inv, node, "--host", &host, "--plan"],
            );
            assert!(
                !text(&plan).contains(&format!("delete the Node {node}"))
                    && !text(&plan).contains(&format!("drain {node}")),
                "{node} on {host} (record forgotten: {forget}):\n{}",
                text(&plan)
            );
            run_ok(&work, &["node", "replace", inv, node, "--host", &host]);
            assert_eq!(uid(&lab), moved, "{node}: the moved Node was replaced");
            assert!(is_ready(&node_of(&lab, node)));
        }
    }
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
}

fn node_of(lab: &Lab, name: &str) -> serde_json::Value {
    node(&nodes(lab, "master-1"), name).clone()
}
