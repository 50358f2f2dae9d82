//! Disaster recovery on lab hosts (issue 16): `etcd snapshot`, `etcd list` and `etcd restore`
//! on a seed cluster (one server, two agents) and on three servers, a restore refused for
//! another cluster's token, one interrupted and finished by the same command, and one onto
//! hosts wiped by `reset`, from the operator's copy alone.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use xtask::lab::Lab;

fn inv(work: &Workdir) -> String {
    work.inventory().to_str().unwrap().to_string()
}

/// `etcd snapshot --name NAME`: the copy's file name, checked to be 0600 beside its record.
fn snapshot(work: &Workdir, name: &str) -> String {
    let out = run_ok(work, &["etcd", "snapshot", &inv(work), "--name", name]);
    let dir = work.path(".bootstrap/snapshots");
    let copies: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", dir.display(), text(&out)))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}-")) && !n.ends_with(".json"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}\n{}", text(&out));
    let file = copies[0].clone();
    for f in [file.clone(), format!("{file}.json")] {
        let mode = std::fs::metadata(dir.join(&f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    file
}

fn configmap(lab: &Lab, server: &str) -> bool {
    lab.exec(
        server,
        &[
            "k3s",
            "kubectl",
            "get",
            "configmap",
            "-n",
            "default",
            "keepme",
        ],
    )
    .map(|o| o.status.success())
    .unwrap_or(false)
}

fn all_ready(lab: &Lab, server: &str, want: usize) {
    let n = nodes(lab, server);
    assert_eq!(n.len(), want, "{n:#?}");
    assert!(n.iter().all(is_ready), "{n:#?}");
}

fn no_changes(work: &Workdir, when: &str) {
    let (s, out) = work.up_json();
    assert_eq!(
        s["changes"],
        0,
        "{when}: the next up changed things:\n{}",
        text(&out)
    );
}

fn members(lab: &Lab, server: &str) -> usize {
    let m: Value = serde_json::from_str(&sh(
        lab,
        server,
        "cat /var/lib/rancher/k3s/server/double/members.json",
    ))
    .unwrap();
    m.as_array().map(Vec::len).unwrap_or(0)
}

/// `etcd restore --yes --output json`, stopped with SIGINT once the restore step on
/// `server` began; returns its exit code and what it printed.
fn interrupted_restore(work: &Workdir, snapshot: &str, server: &str) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args([
            "etcd",
            "restore",
            &inv(work),
            snapshot,
            "--yes",
            "--output",
            "json",
        ])
        .env("HOME", work.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = String::new();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["event"] == "step"
            && v["host"] == server
            && v["step"]
                .as_str()
                .is_some_and(|s| s.starts_with("restore etcd from"))
        {
            // Into the foreground `k3s server --cluster-reset`.
            std::thread::sleep(Duration::from_millis(500));
            let st = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(st.success());
            break;
        }
        assert!(Instant::now() < deadline, "no restore step:\n{seen}");
    }
    let o = child.wait_with_output().unwrap();
    seen.push_str(&String::from_utf8_lossy(&o.stdout));
    seen.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code(), seen)
}

/// A lab cluster `name` converged by `up`, with the ConfigMap `default/keepme` the restores
/// must bring back; `None` (skipped) under `BOOTSTRAP_E2E=vagrant`.
fn cluster_with_configmap(
    name: &str,
    nodes: usize,
    servers: usize,
) -> Option<(xtask::lab::LabGuard, Workdir)> {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test, BOOTSTRAP_E2E=vagrant");
        return None;
    }
    let lab = lab(name, nodes, servers, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, name).render());
    work.up_json();
    sh(
        &lab,
        "master-1",
        "k3s kubectl create configmap keepme -n default --from-literal=a=b",
    );
    Some((lab, work))
}

#[test]
fn seed_snapshot_restore_refusal_interrupt_and_wiped_hosts() {
    let Some((lab, work)) = cluster_with_configmap("et-seed", 3, 1) else {
        return;
    };
    let t0 = Instant::now();

    let copy = snapshot(&work, "before");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(work.path(&format!(".bootstrap/snapshots/{copy}.json"))).unwrap(),
    )
    .unwrap();
    let remote = record["path"].as_str().unwrap().to_string();
    assert!(
        remote.starts_with("/var/lib/rancher/k3s/server/db/snapshots/before-master-1-"),
        "{record}"
    );
    let out = run_ok(&work, &["etcd", "list", &inv(&work)]);
    let listed = text(&out);
    assert!(
        listed.lines().filter(|l| l.starts_with(&copy)).count() == 2,
        "on master-1 and here:\n{listed}"
    );
    eprintln!("snapshot and list: ok at {:?}", t0.elapsed());

    // What happens after the snapshot, to be undone.
    sh(
        &lab,
        "master-1",
        "k3s kubectl delete configmap keepme -n default",
    );
    sh(
        &lab,
        "master-1",
        "k3s kubectl label node worker-1 drifted=yes",
    );

    // A snapshot of another cluster's token: refused before anything stops.
    let rec_path = work.path(&format!(".bootstrap/snapshots/{copy}.json"));
    let good = std::fs::read_to_string(&rec_path).unwrap();
    let mut other = record.clone();
    other["token_hash"] = Value::from("0123456789ab");
    std::fs::write(&rec_path, other.to_string()).unwrap();
    let out = work.run(&["etcd", "restore", &inv(&work), &copy, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("Nothing was stopped"), "{}", text(&out));
    assert_eq!(
        sh(&lab, "master-1", "systemctl is-active k3s").trim(),
        "active"
    );
    std::fs::write(&rec_path, good).unwrap();
    eprintln!("wrong token refused: ok at {:?}", t0.elapsed());

    // Ctrl-C inside the restore, then the same command finishes the job.
    let (code, said) = interrupted_restore(&work, &copy, "master-1");
    assert_eq!(code, Some(130), "{said}");
    let out = run_ok(&work, &["etcd", "restore", &inv(&work), &copy, "--yes"]);
    assert!(text(&out).contains("restored from"), "{}", text(&out));
    assert!(configmap(&lab, "master-1"), "the ConfigMap is back");
    all_ready(&lab, "master-1", 3);
    let old = sh(
        &lab,
        "master-1",
        "ls -d /var/lib/rancher/k3s/server/db/etcd-old-* | wc -l",
    );
    assert!(
        old.trim().parse::<u32>().unwrap() >= 1,
        "k3s kept the data it replaced"
    );
    no_changes(&work, "after the restore");
    let w1 = node(&nodes(&lab, "master-1"), "worker-1").clone();
    assert!(!labels(&w1).contains_key("drifted"), "{w1}");
    eprintln!("interrupted restore finished: ok at {:?}", t0.elapsed());

    // Every host wiped: a new cluster, then the operator's copy brings the old one back.
    run_ok(&work, &["reset", &inv(&work), "--yes"]);
    work.up_json();
    assert!(!configmap(&lab, "master-1"));
    let copy_path = work.path(&format!(".bootstrap/snapshots/{copy}"));
    run_ok(
        &work,
        &[
            "etcd",
            "restore",
            &inv(&work),
            copy_path.to_str().unwrap(),
            "--yes",
        ],
    );
    assert!(
        configmap(&lab, "master-1"),
        "the ConfigMap is back on wiped hosts"
    );
    all_ready(&lab, "master-1", 3);
    work.up_json();
    no_changes(&work, "after restoring onto wiped hosts");
    eprintln!("restore onto wiped hosts: ok at {:?}", t0.elapsed());
}

#[test]
fn ha_restore_leaves_three_members() {
    let Some((lab, work)) = cluster_with_configmap("et-ha", 4, 3) else {
        return;
    };
    let t0 = Instant::now();
    let copy = snapshot(&work, "ha");
    sh(
        &lab,
        "master-1",
        "k3s kubectl delete configmap keepme -n default",
    );
    // --plan shows the steps and changes nothing.
    let out = run_ok(&work, &["etcd", "restore", &inv(&work), &copy, "--plan"]);
    let shown = text(&out);
    for want in [
        "stop k3s",
        "k3s server --cluster-reset",
        "move the etcd data aside to /var/lib/rancher/k3s/server/db-before-restore-",
    ] {
        assert!(shown.contains(want), "{want}:\n{shown}");
    }
    assert!(!configmap(&lab, "master-1"));
    assert_eq!(
        sh(&lab, "master-2", "systemctl is-active k3s").trim(),
        "active"
    );
    let out = run_ok(&work, &["etcd", "restore", &inv(&work), &copy, "--yes"]);
    eprintln!("{}", text(&out));
    assert!(text(&out).contains("restored from"), "{}", text(&out));
    for s in ["master-1", "master-2", "master-3"] {
        assert!(configmap(&lab, s), "{s}: the ConfigMap is back");
    }
    all_ready(&lab, "master-1", 4);
    assert_eq!(members(&lab, "master-1"), 3);
    for s in ["master-2", "master-3"] {
        let aside = sh(
            &lab,
            s,
            "ls -d /var/lib/rancher/k3s/server/db-before-restore-* | wc -l",
        );
        assert_eq!(aside.trim(), "1", "{s} keeps its old data aside");
    }
    no_changes(&work, "after the HA restore");
    eprintln!("HA restore: ok at {:?}", t0.elapsed());

    // A snapshot another server took, restored by its name: copied here from master-2 (its
    // token hash from the cluster's record of it), then uploaded to the first server.
    sh(&lab, "master-2", "k3s etcd-snapshot save --name m2");
    sh(
        &lab,
        "master-1",
        "k3s kubectl create configmap later -n default --from-literal=a=b",
    );
    let out = run_ok(&work, &["etcd", "list", &inv(&work)]);
    let listed = text(&out);
    let name = listed
        .lines()
        .find(|l| l.starts_with("m2-master-2-"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no m2 snapshot listed:\n{listed}"))
        .to_string();
    let out = run_ok(&work, &["etcd", "restore", &inv(&work), &name, "--yes"]);
    assert!(text(&out).contains("copied to"), "{}", text(&out));
    assert!(configmap(&lab, "master-1"));
    let later = lab
        .exec(
            "master-1",
            &[
                "k3s",
                "kubectl",
                "get",
                "configmap",
                "-n",
                "default",
                "later",
            ],
        )
        .unwrap();
    assert!(!later.status.success(), "made after the snapshot, so gone");
    assert_eq!(members(&lab, "master-1"), 3);
    assert!(work
        .path(&format!(".bootstrap/snapshots/{name}.json"))
        .is_file());
    eprintln!("restore by name from master-2: ok at {:?}", t0.elapsed());

    // Scheduled snapshots from [etcd]: the servers restart one at a time with the flags,
    // and the schedule makes snapshots the cluster lists.
    let base = InventoryBuilder::new(&lab, "et-ha").render();
    let with_etcd = base.replacen(
        "\n[install]",
        "\n[etcd]\nsnapshot_schedule = \"* * * * *\"\nsnapshot_retention = 2\n\n[install]",
        1,
    );
    work.write_inventory(&with_etcd);
    let (s, out) = work.up_json();
    let restarts = text(&out)
        .matches("restart k3s (configuration changed)")
        .count();
    assert!(restarts >= 3, "{s}\n{}", text(&out));
    for m in ["master-1", "master-2", "master-3"] {
        let cfg = sh(&lab, m, "cat /etc/rancher/k3s/config.yaml");
        assert!(
            cfg.contains("etcd-snapshot-schedule-cron: \"* * * * *\""),
            "{m}: {cfg}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let out = run_ok(&work, &["etcd", "list", &inv(&work)]);
        let listed = text(&out);
        if listed
            .lines()
            .any(|l| l.starts_with("etcd-snapshot-master-"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled snapshot listed:\n{listed}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    no_changes(&work, "with [etcd]");
    eprintln!("scheduled snapshots: ok at {:?}", t0.elapsed());
}
