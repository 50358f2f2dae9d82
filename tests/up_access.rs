//! Who `bootstrap up` trusts and how it gets root: host keys (strict,
//! accept-new, changed), root and `deploy` via sudo, a user without
//! passwordless sudo; and that tokens never show in any process's arguments
//! or in the tool's output.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn host_keys_strict_accept_new_and_changed() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-keys", 2, 1, 0);
    let work = Workdir::new();
    let kh = work.path("known_hosts");

    // Strict with an empty known_hosts: refused, nothing changed on any host.
    std::fs::write(&kh, "").unwrap();
    let mut b = InventoryBuilder::new(&lab, "keys");
    b.known_hosts = kh.clone();
    work.write_inventory(&b.render());
    let inv = work.inventory();
    let out = work.run(&["up", inv.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not in") && err.contains("accept-new"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    for n in ["master-1", "worker-1"] {
        assert_eq!(
            sh(
                &lab,
                n,
                "ls /usr/local/bin/k3s /etc/rancher 2>/dev/null | wc -l"
            )
            .trim(),
            "0"
        );
    }
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), "");

    // accept-new records the keys it sees, and they are the nodes' real keys.
    b.policy = "accept-new";
    work.write_inventory(&b.render());
    work.up_json();
    let learned = std::fs::read_to_string(&kh).unwrap();
    let real = std::fs::read_to_string(lab.known_hosts_path()).unwrap();
    for n in lab.nodes() {
        let key = |text: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{} ", n.addr)))
                .map(|l| l.split_whitespace().nth(2).unwrap_or("").to_string())
        };
        assert!(
            key(&learned).is_some(),
            "{} not recorded:\n{learned}",
            n.addr
        );
        assert_eq!(key(&learned), key(&real));
    }

    // A changed key is refused even with accept-new, naming both fingerprints.
    let master = lab.node("master-1").unwrap().addr;
    let other = tempfile::tempdir().unwrap();
    let k = other.path().join("k");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", k.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let fake = std::fs::read_to_string(k.with_extension("pub")).unwrap();
    let fake_key: Vec<&str> = fake.split_whitespace().take(2).collect();
    let rewritten: String = learned
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{master} ")) {
                format!("{master} {} {}\n", fake_key[0], fake_key[1])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&kh, &rewritten).unwrap();
    let before = fingerprint(&lab, "master-1");
    let out = work.run(&["up", inv.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("HOST KEY CHANGED"), "{err}");
    // Both fingerprints, the offered one and the recorded one.
    let fps: std::collections::BTreeSet<&str> = err
        .split("SHA256:")
        .skip(1)
        .map(|r| {
            r.split(|c: char| c.is_whitespace() || c == ')')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(fps.len(), 2, "{err}");
    assert_eq!(before, fingerprint(&lab, "master-1"));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), rewritten);
}

#[test]
fn deploy_user_with_sudo_and_tokens_never_exposed() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("up-sudo", 3, 1, 0);
    let work = Workdir::new();

    // nosudo: a clear error naming the fix, nothing installed.
    let mut b = InventoryBuilder::new(&lab, "sudo");
    b.user = "nosudo";
    work.write_inventory(&b.render());
    let inv = work.inventory();
    let out = work.run(&["up", inv.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot run sudo without a password"), "{err}");
    assert!(err.contains("NOPASSWD"), "{err}");
    assert_eq!(
        sh(
            &lab,
            "master-1",
            "ls /usr/local/bin/k3s 2>/dev/null | wc -l"
        )
        .trim(),
        "0"
    );

    // deploy with passwordless sudo: converges. Meanwhile, watch every
    // process's arguments on every node.
    b.user = "deploy";
    work.write_inventory(&b.render());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let watcher = {
        let stop = stop.clone();
        let seen = seen.clone();
        let names: Vec<String> = lab.nodes().iter().map(|n| n.name.clone()).collect();
        let lab_name = "up-sudo".to_string();
        std::thread::spawn(move || {
            let lab = xtask::lab::Lab::open(&lab_name).expect("open lab");
            while !stop.load(Ordering::Relaxed) {
                for n in &names {
                    let c = cmdlines(&lab, n);
                    seen.lock().unwrap().push_str(&c);
                }
            }
        })
    };
    let (sum, out) = work.up_json();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(sum["changes"].as_u64().unwrap() > 0);
    assert_eq!(
        nodes(&lab, "master-1")
            .iter()
            .filter(|n| is_ready(n))
            .count(),
        3
    );

    let tokens: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path(".bootstrap/tokens.json")).unwrap(),
    )
    .unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() > 1000,
        "the watcher saw too little: {}",
        seen.len()
    );
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for t in [
        tokens["server"].as_str().unwrap(),
        tokens["agent"].as_str().unwrap(),
    ] {
        assert!(!seen.contains(t), "a token was in a process's command line");
        assert!(!output.contains(t), "a token was in the tool's output");
    }
    // The files that hold them are 0600 root.
    for n in ["master-1", "worker-1"] {
        assert_eq!(
            sh(&lab, n, "stat -c '%a %U' /etc/rancher/k3s/config.yaml").trim(),
            "600 root"
        );
    }
}
