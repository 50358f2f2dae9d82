//! Correct on real k3s (issue 11): each test is named after the behaviour of upstream k3s or
//! kubectl it holds the tool to, and fails on a tool that behaves as the lab's old double
//! let it.

mod common;

use common::*;
use xtask::lab::{Lab, LabSpec};

/// These tests plant what they check through the lab's own access to its nodes (mounts,
/// processes, partitions, files): under `BOOTSTRAP_E2E=vagrant` they say so and skip.
fn lab_only() -> bool {
    if vagrant_mode() {
        skip("lab-only test (plants state on lab nodes), BOOTSTRAP_E2E=vagrant");
    }
    vagrant_mode()
}

fn exec_ok(lab: &Lab, node: &str, script: &str) -> String {
    sh(lab, node, script)
}

/// Item 7: killall unmounts before it removes (`umount -f && rm -rf`), kills a shim's whole
/// process tree, and the uninstall script keeps k3s while another k3s unit is installed.
#[test]
fn killall_and_uninstall_follow_install_sh() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-killall", 1, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "killall").render());
    work.up_json();
    // A busy volume mount under a pod, as Longhorn or a CSI driver leaves one, and a shim
    // with a grandchild.
    exec_ok(
        &lab,
        "master-1",
        r#"set -e
v=/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/data
mkdir -p $v && mount -t tmpfs tmpfs $v && echo precious > $v/db
setsid sh -c "cd $v && exec sleep 600" </dev/null >/dev/null 2>&1 &
d=/var/lib/rancher/k3s/data/test/bin
mkdir -p $d && printf '#!/bin/sh\nsh -c "sleep 601 & wait" &\nwait\n' > $d/containerd-shim-runc-v2
chmod +x $d/containerd-shim-runc-v2
setsid $d/containerd-shim-runc-v2 </dev/null >/dev/null 2>&1 &
sleep 1"#,
    );
    exec_ok(
        &lab,
        "master-1",
        "/usr/local/bin/k3s-killall.sh >/dev/null 2>&1 || true",
    );
    let left = exec_ok(
        &lab,
        "master-1",
        "cat /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/data/db; \
         pgrep -f '[c]ontainerd-shim-runc-v2' >/dev/null && echo shim-left; \
         ps -e -o args= | grep -c '^sleep 60[01]$' || true",
    );
    let mut lines = left.lines();
    assert_eq!(
        lines.next(),
        Some("precious"),
        "a busy mount lost its data: {left}"
    );
    assert!(!left.contains("shim-left"), "{left}");
    // One sleep left: the one holding the mount busy; the shim's grandchild is gone too.
    assert_eq!(lines.last(), Some("1"), "{left}");
    // Another k3s unit on the host: the uninstall script leaves k3s itself in place.
    exec_ok(
        &lab,
        "master-1",
        "printf '[Unit]\\nDescription=other\\n' > /etc/systemd/system/k3s-other.service",
    );
    let out = exec_ok(
        &lab,
        "master-1",
        "/usr/local/bin/k3s-uninstall.sh 2>&1; ls /usr/local/bin/k3s",
    );
    assert!(out.contains("Additional k3s services installed"), "{out}");
    assert!(out.trim_end().ends_with("/usr/local/bin/k3s"), "{out}");
    exec_ok(
        &lab,
        "master-1",
        "pkill -f '[s]leep 60[01]'; umount /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/data; true",
    );
}

/// `bootstrap ARGS...`, killed after `secs` (a run that would block for days must not hang the
/// suite); `None` when it had to be killed.
fn run_bounded(work: &Workdir, args: &[&str], secs: u64) -> Option<std::process::Output> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin())
        .args(args)
        .env("HOME", work.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bootstrap");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The kubeconfig `up` wrote, used with upstream kubectl from this machine: TLS is checked
/// against the cluster CA and the name the kubeconfig dials.
fn kubectl_from_here(work: &Workdir, name: &str, args: &[&str]) -> std::process::Output {
    let kubectl = xtask::lab::kubectl::find().expect("an upstream kubectl");
    std::process::Command::new(kubectl)
        .env("KUBECONFIG", work.path(&format!("{name}.kubeconfig")))
        .env("HOME", work.home.path())
        .args(args)
        .output()
        .expect("running kubectl")
}

/// `up` of the whole lab (bounded: a join that cannot check the certificate retries until
/// the timeout), then every node Ready through upstream kubectl and the kubeconfig.
fn up_and_reach_from_here(lab: &Lab, name: &str) -> Workdir {
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(lab, name).render());
    let inv = work.inventory();
    let out = run_bounded(
        &work,
        &["up", inv.to_str().unwrap(), "--timeout", "60"],
        300,
    )
    .expect("up did not finish");
    assert!(out.status.success(), "{}", text(&out));
    assert_all_ready_from_here(lab, &work, name);
    work
}

/// Every node of the lab Ready in the cluster, through upstream kubectl and the kubeconfig.
fn assert_all_ready_from_here(lab: &Lab, work: &Workdir, name: &str) {
    let out = kubectl_from_here(work, name, &["get", "nodes", "--no-headers"]);
    let t = text(&out);
    assert!(out.status.success(), "kubectl get nodes: {t}");
    for n in lab.nodes() {
        let line = t
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n.name.as_str()))
            .unwrap_or_else(|| panic!("{} is not in the cluster: {t}", n.name));
        assert_eq!(line.split_whitespace().nth(1), Some("Ready"), "{t}");
    }
}

/// Item 1: inventory hosts given as DNS names (as most VPS users write them) are in the
/// serving certificate: a second server joins through the first one's name, an agent through
/// it, and the kubeconfig, which names it too, works from here.
#[test]
fn serving_certificate_covers_hosts_given_as_dns_names() {
    if lab_only() {
        return;
    }
    let mut spec = LabSpec::new("rk-dns", 3);
    spec.servers = 2;
    spec.dns = true;
    let lab = lab_with(spec);
    let work = up_and_reach_from_here(&lab, "dns");
    let host = lab.node("master-1").unwrap().host();
    assert!(host.ends_with(".lab.test"), "{host}");
    let kc = std::fs::read_to_string(work.path("dns.kubeconfig")).unwrap();
    // Quoted or not, as YAML reads it.
    assert!(
        kc.replace('"', "")
            .contains(&format!("server: https://{host}:6443")),
        "{kc}"
    );
}

/// Item 1: a server behind a NAT'd address (a cloud floating IP, not on its interface) is in
/// the serving certificate: the other server joins through that address and the kubeconfig
/// works through it.
#[test]
fn serving_certificate_covers_a_server_behind_nat() {
    if lab_only() {
        return;
    }
    let mut spec = LabSpec::new("rk-nat", 3);
    spec.servers = 2;
    spec.nat = vec!["master-1".into()];
    let lab = lab_with(spec);
    let public = lab.node("master-1").unwrap().host();
    let on_interface = exec_ok(&lab, "master-1", "ip -o -4 addr show");
    assert!(
        !on_interface.contains(&format!("{public}/")),
        "{on_interface}"
    );
    up_and_reach_from_here(&lab, "nat");
}

/// Item 2: joins carry the full token (`K10<CA hash>::...`) that pins the cluster CA, so no
/// joiner trusts the CA on first use; and the tokens are recovered from k3s's own token
/// files when no config bootstrap wrote holds them and the operator's backup is gone.
#[test]
fn joins_pin_the_cluster_ca_with_the_full_token() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-pin", 3, 2, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "pin").render());
    work.up_json();
    let token = exec_ok(&lab, "master-1", "cat /var/lib/rancher/k3s/server/token");
    let hash = token
        .trim()
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .map(|(h, _)| h.to_string())
        .expect("a secure token");
    let agent_cfg = exec_ok(&lab, "worker-1", "cat /etc/rancher/k3s/config.yaml");
    assert!(
        agent_cfg.contains(&format!("token: \"K10{hash}::node:")),
        "the agent's token does not pin the CA"
    );
    let dropin = exec_ok(
        &lab,
        "master-2",
        "cat /etc/rancher/k3s/config.yaml.d/50-bootstrap-join.yaml",
    );
    assert!(
        dropin.contains(&format!("token: \"K10{hash}::server:")),
        "the joining server's token does not pin the CA"
    );
    for (node, unit) in [("master-2", "k3s"), ("worker-1", "k3s-agent")] {
        let log = exec_ok(&lab, node, &format!("journalctl -u {unit} --no-pager"));
        assert!(
            !log.contains("Use the full token"),
            "{node} trusted the CA on first use"
        );
    }
    // A re-run changes nothing.
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
    // The servers' configs hold no token (as when k3s was installed by hand with K3S_TOKEN)
    // and the backup is gone: the tokens come from k3s's server/token and agent-token.
    let backup = work.path(".bootstrap/tokens.json");
    let before = std::fs::read_to_string(&backup).unwrap();
    std::fs::remove_file(&backup).unwrap();
    for s in ["master-1", "master-2"] {
        exec_ok(
            &lab,
            s,
            "sed -i '/^token:/d; /^agent-token:/d' /etc/rancher/k3s/config.yaml",
        );
    }
    work.up_json();
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), before);
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
}

/// Cut `node` off from `peers` (both directions), its link to this machine left up: k3s
/// keeps running there, and its etcd loses quorum.
fn partition(lab: &Lab, node: &str, peers: &[&str]) {
    let mut script = String::from("set -e\n");
    for p in peers {
        let a = lab.node(p).unwrap().reachable();
        script.push_str(&format!(
            "iptables -I INPUT -s {a} -j DROP\niptables -I OUTPUT -d {a} -j DROP\n"
        ));
    }
    exec_ok(lab, node, &script);
}

/// Item 3: the join target is chosen by API health, not systemd state. master-1 runs (its
/// unit is active) but is cut off from the other servers, so its etcd lacks quorum; a server
/// added now joins through master-2, whose API answers.
#[test]
fn join_target_is_chosen_by_api_health_not_systemd_state() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-readyz", 3, 3, 1);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "readyz").render());
    work.up_json();
    partition(&lab, "master-1", &["master-2", "master-3"]);
    // Until etcd notices (k3s's election timeout is seconds), master-1 still answers.
    let t = std::time::Instant::now();
    while lab
        .exec("master-1", &["k3s", "kubectl", "get", "--raw", "/readyz"])
        .unwrap()
        .status
        .success()
    {
        assert!(t.elapsed().as_secs() < 60, "master-1 kept its quorum");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(
        exec_ok(&lab, "master-1", "systemctl is-active k3s").trim(),
        "active"
    );
    let inv = work.inventory();
    let spare = lab.node("spare-1").unwrap().host();
    let out = run_bounded(
        &work,
        &[
            "node",
            "add",
            inv.to_str().unwrap(),
            "master-4",
            "--host",
            &spare,
            "--role",
            "server",
            "--timeout",
            "45",
        ],
        240,
    )
    .expect("node add did not finish");
    let log = text(&out);
    let dropin = exec_ok(
        &lab,
        "spare-1",
        "cat /etc/rancher/k3s/config.yaml.d/50-bootstrap-join.yaml 2>/dev/null || true",
    );
    let m2 = lab.node("master-2").unwrap().host();
    assert!(
        dropin.contains(&format!("server: \"https://{m2}:6443\"")),
        "master-4 was not sent to the healthy master-2:\n{dropin}\n{log}"
    );
    let members = exec_ok(
        &lab,
        "master-2",
        "cat /var/lib/rancher/k3s/server/double/members.json",
    );
    assert!(members.contains("\"master-4\""), "{members}\n{log}");
    let ready = nodes(&lab, "master-2");
    assert!(is_ready(node(&ready, "master-4")), "{log}");
}

/// Item 4: `reset --node` of a server deletes its Node (and so its etcd member, removed by
/// k3s's Node removal handler, which needs quorum) before it uninstalls the host, and is
/// refused, changing nothing, when the servers left would lack quorum.
#[test]
fn reset_of_a_server_deletes_its_node_first_under_the_quorum_guard() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-reset", 4, 4, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "reset").render());
    work.up_json();
    let inv = work.inventory();
    record_node_at_stop(&lab, "master-4", "master-4", "master-1");
    run_ok(
        &work,
        &[
            "reset",
            inv.to_str().unwrap(),
            "--node",
            "master-4",
            "--yes",
        ],
    );
    // What the API said of master-4 when its host's k3s was being stopped: already gone.
    let at_stop = node_at_stop(&lab, "master-4");
    assert!(
        at_stop.contains("NotFound") || at_stop.contains("not found"),
        "master-4's host was stopped while its Node was still there: {at_stop}"
    );
    let ev = events(&lab, "master-1");
    let deleted = ev
        .iter()
        .position(|(k, _, e)| k == "node-deleted" && e.to_string().contains("master-4"))
        .expect("the Node master-4 was deleted");
    // Once its member is gone, master-4's own stop no longer reaches the cluster's log.
    let stopped = ev
        .iter()
        .position(|(k, n, _)| k == "stop" && n == "master-4");
    assert!(
        stopped.is_none_or(|s| deleted < s),
        "master-4's host was uninstalled before its Node (and etcd member) went"
    );
    assert!(ev
        .iter()
        .any(|(k, _, e)| k == "etcd-member-removed" && e.to_string().contains("master-4")));
    // master-3 goes down: resetting master-2 now would leave master-1 alone of three.
    lab.fault("master-3", xtask::lab::Fault::Stop).unwrap();
    let t = std::time::Instant::now();
    while is_ready(node(&nodes(&lab, "master-1"), "master-3")) {
        assert!(t.elapsed().as_secs() < 120, "master-3 stayed Ready");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let out = work.run(&[
        "reset",
        inv.to_str().unwrap(),
        "--node",
        "master-2",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("quorum"), "{}", text(&out));
    assert_eq!(
        exec_ok(&lab, "master-2", "systemctl is-active k3s").trim(),
        "active"
    );
}

/// Item 5: deleting a Node is bounded. A Node whose finalizer stays (here one of the
/// operator's; k3s's etcd finalizer stays the same way while the member cannot go) makes
/// `kubectl delete node` wait up to 168 hours; `node remove` gives up after the timeout and
/// names what is stuck.
#[test]
fn deleting_a_node_is_bounded_and_names_what_is_stuck() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-delete", 2, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "delete").render());
    work.up_json();
    exec_ok(
        &lab,
        "master-1",
        r#"k3s kubectl patch node worker-1 --type merge -p '{"metadata":{"finalizers":["example.com/hold"]}}'"#,
    );
    let inv = work.inventory();
    let out = run_bounded(
        &work,
        &[
            "node",
            "remove",
            inv.to_str().unwrap(),
            "worker-1",
            "--timeout",
            "20",
        ],
        180,
    )
    .expect("node remove blocked on the Node's deletion");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("still being deleted after 20s"), "{t}");
    assert!(t.contains("example.com/hold"), "{t}");
    // The inventory still names it: the run did not finish.
    let now = std::fs::read_to_string(&inv).unwrap();
    assert!(now.contains("name = \"worker-1\""), "{now}");
    exec_ok(
        &lab,
        "master-1",
        r#"k3s kubectl patch node worker-1 --type merge -p '{"metadata":{"finalizers":null}}' || true"#,
    );
}

/// Item 6: a pod without a controller stops kubectl's drain before it evicts anything, and
/// the node would then be deleted with the pod on it. `node remove` refuses, naming the pod
/// and changing nothing; with `--force` it drains with kubectl's `--force` and goes on.
#[test]
fn drain_refuses_pods_without_a_controller_unless_forced() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-drain", 2, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "drain").render());
    work.up_json();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\n  namespace: default\nspec:\n  nodeName: worker-1\n  containers:\n  - name: c\n    image: busybox\n";
    let o = lab
        .exec_stdin(
            "master-1",
            &["k3s", "kubectl", "apply", "-f", "-"],
            pod.as_bytes(),
        )
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inv = work.inventory();
    let before = std::fs::read_to_string(&inv).unwrap();
    let out = work.run(&["node", "remove", inv.to_str().unwrap(), "worker-1"]);
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("default/bare"), "{t}");
    assert!(t.contains("--force"), "{t}");
    // Nothing changed: not cordoned, k3s still there, the pod still there, the inventory.
    let n = nodes(&lab, "master-1");
    assert!(n
        .iter()
        .find(|n| n["metadata"]["name"] == "worker-1")
        .is_some_and(|n| n["spec"]["unschedulable"].is_null()));
    assert_eq!(
        exec_ok(&lab, "worker-1", "systemctl is-active k3s-agent").trim(),
        "active"
    );
    exec_ok(&lab, "master-1", "k3s kubectl get pod bare -n default");
    assert_eq!(std::fs::read_to_string(&inv).unwrap(), before);
    // --force: the pod is deleted and the node goes.
    run_ok(
        &work,
        &[
            "node",
            "remove",
            inv.to_str().unwrap(),
            "worker-1",
            "--force",
        ],
    );
    let left = exec_ok(
        &lab,
        "master-1",
        "k3s kubectl get pod bare -n default --ignore-not-found -o name; k3s kubectl get node worker-1 --ignore-not-found -o name",
    );
    assert!(left.trim().is_empty(), "{left}");
}

/// Item 8: an upgrade that skips a minor version is refused before anything changes, naming
/// the minor to go through.
#[test]
fn upgrades_refuse_to_skip_a_minor_version() {
    if lab_only() {
        return;
    }
    const OLD: &str = "v1.34.6+k3s1";
    let mut spec = LabSpec::new("rk-minor", 1);
    spec.k3s_versions = vec![OLD.to_string(), xtask::lab::DEFAULT_K3S_VERSION.to_string()];
    let lab = lab_with(spec);
    let work = Workdir::new();
    let mut b = InventoryBuilder::new(&lab, "minor");
    b.version = OLD.to_string();
    work.write_inventory(&b.render());
    work.up_json();
    b.version = xtask::lab::DEFAULT_K3S_VERSION.to_string();
    work.write_inventory(&b.render());
    let inv = work.inventory();
    let out = work.run(&["up", inv.to_str().unwrap()]);
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("skips a minor version"), "{t}");
    assert!(t.contains("v1.35"), "{t}");
    let v = exec_ok(&lab, "master-1", "k3s --version");
    assert!(v.contains(OLD), "{v}");
}

/// Item 9: the env file is the operator's (proxy settings live there): a re-run neither
/// empties it nor restarts k3s.
#[test]
fn the_env_file_keeps_what_the_operator_put_there() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-env", 2, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "env").render());
    work.up_json();
    let env = "HTTP_PROXY=http://proxy.example:3128\nNO_PROXY=127.0.0.0/8,10.0.0.0/8\n";
    for (n, f) in [
        ("master-1", "/etc/systemd/system/k3s.service.env"),
        ("worker-1", "/etc/systemd/system/k3s-agent.service.env"),
    ] {
        exec_ok(
            &lab,
            n,
            &format!("printf '{}' > {f}", env.replace('\n', "\\n")),
        );
    }
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
    for (n, f) in [
        ("master-1", "/etc/systemd/system/k3s.service.env"),
        ("worker-1", "/etc/systemd/system/k3s-agent.service.env"),
    ] {
        assert_eq!(exec_ok(&lab, n, &format!("cat {f}")), env, "{n}");
    }
}

/// Item 10: an existing kubectl, crictl or ctr that is not k3s's is left alone, as install.sh
/// does; `https-listen-port`, which would move every URL the tool builds, is refused.
#[test]
fn links_leave_other_tools_alone_and_the_listen_port_is_refused() {
    if lab_only() {
        return;
    }
    let lab = lab("rk-links", 1, 1, 0);
    exec_ok(
        &lab,
        "master-1",
        "printf '#!/bin/sh\\necho mine\\n' > /usr/local/bin/kubectl && chmod +x /usr/local/bin/kubectl && \
         printf '#!/bin/sh\\necho crictl\\n' > /usr/bin/crictl && chmod +x /usr/bin/crictl",
    );
    let work = Workdir::new();
    let base = InventoryBuilder::new(&lab, "links").render();
    work.write_inventory(&base);
    work.up_json();
    assert_eq!(
        exec_ok(&lab, "master-1", "/usr/local/bin/kubectl"),
        "mine\n"
    );
    assert_eq!(
        exec_ok(
            &lab,
            "master-1",
            "[ -e /usr/local/bin/crictl ] && echo linked; readlink /usr/local/bin/ctr"
        ),
        "k3s\n"
    );
    let (sum, _) = work.up_json();
    assert_eq!(sum["changes"], 0, "{sum}");
    let with_port = base.replacen(
        "[install]",
        "[cluster.server_config]\nhttps-listen-port = 7443\n\n[install]",
        1,
    );
    work.write_inventory(&with_port);
    let out = work.run(&["plan", work.inventory().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("https-listen-port"), "{t}");
}
