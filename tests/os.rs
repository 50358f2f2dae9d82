//! The bare VPS made ready (issue 32) on lab hosts: `[os]` (kernel settings, time sync,
//! security updates) and `[registries]` (k3s's registries.yaml, its credentials, a rolling
//! restart when it changes), and the clock check that keeps a host with a wrong clock out.
//!
//! Lab nodes are containers (xtask/src/lab/README.md lists what that changes): only the
//! `net.*` settings are theirs to set, systemd skips chrony for want of CAP_SYS_TIME, and the
//! apt timers are masked. The tests check what the tool wrote and said in those places, and
//! what is live everywhere else. apt installs the real packages from the lab's mirror.

mod common;

use common::*;
use xtask::lab::Lab;

/// Neither a real value nor the default of any node: a change the test can see.
const SOMAXCONN: &str = "4242";
const PASSWORD: &str = "lab-registry-pa55word-7d1c";

fn os_table() -> String {
    format!(
        r#"
[os]
sysctl = {{ "fs.inotify.max_user_instances" = 8192, "fs.inotify.max_user_watches" = 524288, "vm.max_map_count" = 262144, "net.core.somaxconn" = {SOMAXCONN} }}
time_sync = true
updates = "security"
swap = "keep"
"#
    )
}

fn registries_table(endpoint: &str) -> String {
    format!(
        r#"
[registries]
embedded_registry = true

[registries.mirrors."docker.io"]
endpoint = ["{endpoint}"]

[registries.configs."mirror.lab.example:5000"]
username = "pull"
password_file = "registry-password"
"#
    )
}

fn os_lab(name: &str, nodes: usize, servers: usize, spares: usize) -> Option<xtask::lab::LabGuard> {
    if vagrant_mode() {
        skip("lab-only test (the lab's package mirror, a shimmed clock), BOOTSTRAP_E2E=vagrant");
        return None;
    }
    Some(lab(name, nodes, servers, spares))
}

fn journal_and_cmdlines(lab: &Lab, node: &str) -> String {
    format!(
        "{}{}",
        sh(
            lab,
            node,
            "journalctl --no-pager -q 2>/dev/null | tail -n 20000"
        ),
        cmdlines(lab, node)
    )
}

#[test]
fn os_and_registries_converge_rerun_and_roll_on_a_mirror_change() {
    let Some(lab) = os_lab("os-seed", 4, 3, 0) else {
        return;
    };
    let work = Workdir::new();
    std::fs::write(work.path("registry-password"), format!("{PASSWORD}\n")).unwrap();
    let base = InventoryBuilder::new(&lab, "osseed").render();
    let first = format!(
        "{base}{}{}",
        os_table(),
        registries_table("https://mirror.lab.example:5000")
    );
    work.write_inventory(&first);
    let (sum, out) = work.up_json();
    assert!(sum["changes"].as_u64().unwrap() > 0, "{sum}");
    let printed = text(&out);
    assert!(!printed.contains(PASSWORD), "the password was printed");

    for n in lab.nodes() {
        let node = n.name.as_str();
        // The file, and the value a container may set live.
        let conf = sh(&lab, node, "cat /etc/sysctl.d/90-bootstrap.conf");
        for line in [
            "fs.inotify.max_user_instances = 8192",
            "vm.max_map_count = 262144",
            &format!("net.core.somaxconn = {SOMAXCONN}"),
        ] {
            assert!(conf.contains(line), "{node}: {conf}");
        }
        assert_eq!(
            sh(&lab, node, "cat /proc/sys/net/core/somaxconn").trim(),
            SOMAXCONN,
            "{node}"
        );
        // Time sync: chrony from the mirror, enabled; systemd skips it in a container.
        assert_eq!(
            sh(&lab, node, "dpkg-query -W -f '${Status}' chrony"),
            "install ok installed",
            "{node}"
        );
        assert_eq!(
            sh(&lab, node, "systemctl is-enabled chrony.service || true").trim(),
            "enabled",
            "{node}"
        );
        // unattended-upgrades installed; what apt reads: security origins only, no reboot.
        assert_eq!(
            sh(
                &lab,
                node,
                "dpkg-query -W -f '${Status}' unattended-upgrades"
            ),
            "install ok installed"
        );
        let apt = sh(
            &lab,
            node,
            "apt-config dump Unattended-Upgrade; apt-config dump APT::Periodic",
        );
        assert!(
            apt.contains("Unattended-Upgrade::Automatic-Reboot \"false\";"),
            "{node}: {apt}"
        );
        let origins: Vec<&str> = apt
            .lines()
            .filter(|l| l.starts_with("Unattended-Upgrade::Origins-Pattern:: "))
            .collect();
        assert!(!origins.is_empty(), "{node}: {apt}");
        assert!(
            origins
                .iter()
                .all(|l| l.contains("Debian-Security") || l.contains("-security")),
            "{node}: not security only: {origins:?}"
        );
        assert!(
            apt.contains("APT::Periodic::Unattended-Upgrade \"1\";"),
            "{apt}"
        );
        // registries.yaml: 0600, the mirror in it.
        let reg = sh(
            &lab,
            node,
            "stat -c %a /etc/rancher/k3s/registries.yaml; cat /etc/rancher/k3s/registries.yaml",
        );
        assert!(reg.starts_with("600\n"), "{node}: {reg}");
        assert!(reg.contains("https://mirror.lab.example:5000"), "{reg}");
        // What k3s made of it when it started: containerd's hosts.toml for docker.io.
        let hosts = sh(
            &lab,
            node,
            "cat /var/lib/rancher/k3s/agent/etc/containerd/certs.d/docker.io/hosts.toml",
        );
        assert!(
            hosts.contains("https://mirror.lab.example:5000"),
            "{node}: {hosts}"
        );
        // The password is in the file only: no command line, no log.
        assert!(
            !journal_and_cmdlines(&lab, node).contains(PASSWORD),
            "{node}: the registry password is in a log or a command line"
        );
    }
    // What a container cannot do is said, not hidden.
    assert!(printed.contains("no CAP_SYS_TIME"), "{printed}");
    assert!(
        printed.contains("/proc/sys is read-only inside this container"),
        "{printed}"
    );

    // A further up changes nothing.
    let (again, out) = work.up_json();
    assert_eq!(again["changes"], 0, "{}", text(&out));

    // A mirror change restarts every node, one server at a time.
    let before = events(&lab, "master-1").len();
    work.write_inventory(&format!(
        "{base}{}{}",
        os_table(),
        registries_table("https://mirror2.lab.example:5000")
    ));
    let plan = text(&run_ok(
        &work,
        &["plan", work.inventory().to_str().unwrap()],
    ));
    assert!(plan.contains("restart k3s (registries changed)"), "{plan}");
    let (sum, _) = work.up_json();
    assert!(sum["changes"].as_u64().unwrap() > 0, "{sum}");
    let ev: Vec<_> = events(&lab, "master-1").into_iter().skip(before).collect();
    let dump = || format!("{:#?}", ev.iter().map(|e| &e.2).collect::<Vec<_>>());
    let pos = |kind: &str, name: &str| {
        ev.iter()
            .position(|(k, n, v)| k == kind && (n == name || v["detail"]["name"] == name))
            .unwrap_or_else(|| panic!("no {kind} for {name}: {}", dump()))
    };
    for pair in ["master-1", "master-2", "master-3"].windows(2) {
        // Each server is back before the next one stops.
        assert!(
            pos("start", pair[0]) < pos("stop", pair[1]),
            "{} {}: {}",
            pair[0],
            pair[1],
            dump()
        );
    }
    for n in lab.nodes() {
        // Every k3s re-read it: the new mirror is in containerd's hosts.toml.
        let hosts = sh(
            &lab,
            &n.name,
            "cat /var/lib/rancher/k3s/agent/etc/containerd/certs.d/docker.io/hosts.toml",
        );
        assert!(hosts.contains("mirror2.lab.example"), "{}: {hosts}", n.name);
    }

    // [registries] and [os] go: bootstrap's files go, the values from before come back.
    let somaxconn_before = sh(
        &lab,
        "worker-1",
        "grep '^# before net.core.somaxconn' /etc/sysctl.d/90-bootstrap.conf | sed 's/.*= //'",
    );
    work.write_inventory(&base);
    let (_, out) = work.up_json();
    for n in lab.nodes() {
        let node = n.name.as_str();
        for f in [
            "/etc/rancher/k3s/registries.yaml",
            "/etc/sysctl.d/90-bootstrap.conf",
            "/etc/apt/apt.conf.d/52bootstrap-unattended-upgrades",
        ] {
            assert!(
                !exists(&lab, node, f),
                "{node}: {f} is still there\n{}",
                text(&out)
            );
        }
        // The package it installed stays (the README says so).
        assert_eq!(
            sh(&lab, node, "dpkg-query -W -f '${Status}' chrony"),
            "install ok installed"
        );
    }
    assert_eq!(
        sh(&lab, "worker-1", "cat /proc/sys/net/core/somaxconn").trim(),
        somaxconn_before.trim()
    );
    let (again, out) = work.up_json();
    assert_eq!(again["changes"], 0, "{}", text(&out));
}

/// A stand-in for `date` that runs the node's clock 10 minutes ahead when asked for the
/// epoch: a container shares the host's kernel clock, so the lab shims how the node reads it.
const FAST_DATE: &str = r#"#!/bin/sh
if [ "$1" = "+%s.%N" ]; then t=$(/bin/date +%s.%N); echo "$((${t%.*}+600)).${t#*.}"; else exec /bin/date "$@"; fi
"#;

/// As [`FAST_DATE`] until chrony is enabled, then right: what chrony's first sync does to a
/// VPS's clock (systemd does not start chrony in a container, so the lab stands in for it).
const FAST_UNTIL_CHRONY: &str = r#"#!/bin/sh
if [ "$1" = "+%s.%N" ] && ! systemctl is-enabled -q chrony.service 2>/dev/null; then t=$(/bin/date +%s.%N); echo "$((${t%.*}+600)).${t#*.}"; else exec /bin/date "$@"; fi
"#;

#[test]
fn a_node_whose_clock_is_off_is_not_joined() {
    let Some(lab) = os_lab("os-clock", 2, 1, 1) else {
        return;
    };
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "osclock").render());
    let inv = work.inventory();
    let inv_s = inv.to_str().unwrap();
    let shim = |on: bool| {
        if on {
            lab.exec_stdin(
                "worker-1",
                &[
                    "sh",
                    "-c",
                    "cat >/usr/local/bin/date && chmod 755 /usr/local/bin/date",
                ],
                FAST_DATE.as_bytes(),
            )
            .unwrap();
        } else {
            sh(&lab, "worker-1", "rm -f /usr/local/bin/date");
        }
    };
    shim(true);
    let err = run_failed(&work, &["up", inv_s]);
    assert!(
        err.contains("worker-1: its clock is 6") && err.contains("s ahead of this machine's"),
        "{err}"
    );
    assert!(err.contains("so it is not joined"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    for n in ["master-1", "worker-1"] {
        assert!(
            !exists(&lab, n, "/usr/local/bin/k3s"),
            "{n}: k3s was installed"
        );
    }

    // With the clock right it joins; once joined, a wrong clock is a warning, and status
    // shows every node's offset.
    shim(false);
    run_ok(&work, &["up", inv_s]);
    shim(true);
    let plan = text(&run_ok(&work, &["plan", inv_s]));
    assert!(plan.contains("warning: worker-1: its clock is 6"), "{plan}");
    assert!(
        plan.contains("clocks against this machine: master-1 "),
        "{plan}"
    );
    assert!(plan.contains(", worker-1 +60"), "{plan}");
    let out = work.run(&["status", inv_s, "--output", "json"]);
    let st: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "status")
        .unwrap_or_else(|| panic!("{}", text(&out)));
    let rows = st["nodes"].as_array().unwrap();
    let worker = rows.iter().find(|r| r["host"] == "worker-1").unwrap();
    let off = worker["clock_offset"].as_f64().unwrap();
    assert!((590.0..610.0).contains(&off), "{worker}");
    assert!(
        worker["notes"]
            .to_string()
            .contains("ahead of this machine's"),
        "{worker}"
    );
    let master = rows.iter().find(|r| r["host"] == "master-1").unwrap();
    assert!(
        master["clock_offset"].as_f64().unwrap().abs() < 5.0,
        "{master}"
    );
    assert_eq!(st["healthy"], false);

    // A new node off in time, with os.time_sync: chrony is installed and started first, the
    // run waits until the clock is right, then the node joins.
    lab.exec_stdin(
        "spare-1",
        &[
            "sh",
            "-c",
            "cat >/usr/local/bin/date && chmod 755 /usr/local/bin/date",
        ],
        FAST_UNTIL_CHRONY.as_bytes(),
    )
    .unwrap();
    let mut b = InventoryBuilder::new(&lab, "osclock");
    b.skip_spares = false;
    work.write_inventory(&format!("{}\n[os]\ntime_sync = true\n", b.render()));
    let plan = text(&run_ok(&work, &["plan", inv_s]));
    assert!(
        plan.contains("spare-1: its clock is 6")
            && plan.contains("its time sync client starts first"),
        "{plan}"
    );
    let out = text(&run_ok(&work, &["up", inv_s, "--output", "json"]));
    assert!(
        out.contains("os: wait until its clock is within 30 s of this machine's"),
        "{out}"
    );
    assert!(exists(&lab, "spare-1", "/usr/local/bin/k3s"), "{out}");
    assert!(
        is_ready(node(&nodes(&lab, "master-1"), "spare-1")),
        "spare-1 did not join:\n{out}"
    );
}
