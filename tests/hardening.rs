//! Hardening (issue 14): each test reproduces an attack or a race the security review found,
//! on lab hosts where it crosses SSH.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn spawn_up(work: &Workdir) -> std::process::Child {
    Command::new(bin())
        .args(["up", work.inventory().to_str().unwrap()])
        .env("HOME", work.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bootstrap up")
}

/// Item 1: two runs started together against an expired lock: one takes it over, the other
/// is refused or comes after; never both "took over".
#[test]
fn an_expired_lock_is_taken_over_by_one_run_only() {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test (plants a lock), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-lock", 1, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "lock").render());
    work.up_json();
    for round in 0..8 {
        let now: u64 = sh(&lab, "master-1", "date +%s").trim().parse().unwrap();
        sh(
            &lab,
            "master-1",
            &format!(
                "printf 'id=dead\\nwho=ci@elsewhere\\npid=4242\\ncommand=up\\nsince={}\\nexpires={}\\n' > /var/lib/bootstrap/lock",
                now - 100,
                now - 10
            ),
        );
        let a = spawn_up(&work);
        let b = spawn_up(&work);
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let took: Vec<String> = outs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .filter(|e| e.contains("took over a lock"))
            .collect();
        assert_eq!(
            took.len(),
            1,
            "round {round}: {} runs took the expired lock over:\n{}",
            took.len(),
            took.join("\n---\n")
        );
        for o in &outs {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() || e.contains("locked by another run"),
                "round {round}: {e}"
            );
        }
    }
}

/// Item 3: with `accept-new`, a host with a recorded key is only trusted with a recorded key
/// (a server offering only another type is a change), a new key is said when recorded, and
/// `plan` writes nothing to known_hosts.
#[test]
fn accept_new_trusts_only_recorded_key_types_and_plan_records_nothing() {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test (reconfigures sshd), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-keys", 1, 1, 0);
    let work = Workdir::new();
    let kh = work.path("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let mut b = InventoryBuilder::new(&lab, "keys");
    b.known_hosts = kh.clone();
    b.policy = "accept-new";
    work.write_inventory(&b.render());
    let inv = work.inventory();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // plan: trusted for that run, nothing written.
    let out = work.run(&["plan", inv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("trusted for this run only"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), "");
    // up: recorded, and said.
    let out = work.run(&["up", inv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recorded new host key"),
        "{}",
        text(&out)
    );
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");
    assert!(!recorded.contains("ecdsa"), "{recorded}");
    // sshd now offers only an ECDSA key, a type never recorded: refused, nothing appended.
    // (sshd skips a HostKey whose file is missing and serves the others.)
    sh(
        &lab,
        "master-1",
        "[ -f /etc/ssh/ssh_host_ecdsa_key ] || ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key; \
         printf 'HostKey /etc/ssh/ssh_host_ecdsa_key\\n' > /etc/ssh/sshd_config.d/00-only-ecdsa.conf; \
         mv /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.off; systemctl restart ssh",
    );
    for cmd in ["plan", "up"] {
        let out = work.run(&[cmd, inv.to_str().unwrap()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {t}");
        assert!(t.contains("offered only ecdsa"), "{cmd}: {t}");
        assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded, "{cmd}");
    }
    sh(
        &lab,
        "master-1",
        "rm -f /etc/ssh/sshd_config.d/00-only-ecdsa.conf; mv /etc/ssh/ssh_host_ed25519_key.off /etc/ssh/ssh_host_ed25519_key; systemctl restart ssh",
    );
}

/// Item 5: a hash pinned in the inventory wins over the mirror's sums: a mirror serving
/// another binary with matching sums (a compromised or impersonated mirror) is refused before
/// anything is installed; with the right pin the install goes on.
#[test]
fn a_pinned_sha256_wins_over_the_mirrors_sums() {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test (the lab mirror), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-pin", 1, 1, 0);
    let version = xtask::lab::DEFAULT_K3S_VERSION;
    let real = std::fs::read(lab.mirror_dir().join(version).join("k3s")).unwrap();
    let real_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&real))
    };
    let work = Workdir::new();
    let base = InventoryBuilder::new(&lab, "pin").render();
    let pinned = |sha: &str| {
        base.replacen(
            "\n[ssh]",
            &format!("\n[install.sha256]\nk3s = \"{sha}\"\n\n[ssh]"),
            1,
        )
    };
    // The pin names another file than the one the mirror (and its sums) serve.
    work.write_inventory(&pinned(&"0".repeat(64)));
    let out = work.run(&["up", work.inventory().to_str().unwrap()]);
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("the inventory pins"), "{t}");
    assert_eq!(
        sh(
            &lab,
            "master-1",
            "[ -e /usr/local/bin/k3s ] && echo there || echo absent"
        )
        .trim(),
        "absent"
    );
    work.write_inventory(&pinned(&real_sha));
    work.up_json();
}

/// master-1 with Longhorn's prerequisites in place but open-iscsi's iscsiadm, so `up` plans
/// the apt install; `apt_get` is the body of the stand-in apt-get, `also` more set-up. Returns
/// a workdir whose inventory (named `name`) enables Longhorn.
fn longhorn_without_iscsiadm(
    lab: &xtask::lab::Lab,
    name: &str,
    apt_get: &str,
    also: &str,
) -> Workdir {
    sh(
        lab,
        "master-1",
        &format!(
        "mkdir -p /usr/local/sbin && for b in mount.nfs cryptsetup dmsetup; do \
           printf '#!/bin/sh\\nexit 0\\n' > /usr/local/sbin/$b; chmod 755 /usr/local/sbin/$b; done; \
         printf '[Unit]\\nDescription=lab stand-in for iscsid\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' \
           > /etc/systemd/system/iscsid.service; systemctl daemon-reload && systemctl enable --now iscsid.service; \
             printf '#!/bin/sh\\n%s\\n' '{apt_get}' > /usr/local/sbin/apt-get; chmod 755 /usr/local/sbin/apt-get; {also}"
        ),
    );
    let work = Workdir::new();
    let base = InventoryBuilder::new(lab, name).render();
    work.write_inventory(&format!("{base}\n[addons.longhorn]\nreplicas = 1\n"));
    work
}

/// Item 6: SIGTERM while a step's remote command runs (Longhorn's apt-get, here a stand-in
/// that would run five minutes): the command is stopped on the host before the run lets go of
/// the lock, and the run exits 130.
#[test]
fn an_interrupted_run_stops_its_remote_commands_before_releasing_the_lock() {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test (a stand-in apt-get), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-stop", 1, 1, 0);
    // An apt-get that would hang for five minutes.
    let work = longhorn_without_iscsiadm(&lab, "stop", "exec sleep 301", "");
    let child = spawn_up(&work);
    let t = std::time::Instant::now();
    while sh(
        &lab,
        "master-1",
        "pgrep -x sleep -a | grep -c 'sleep 301' || true",
    )
    .trim()
        == "0"
    {
        assert!(
            t.elapsed().as_secs() < 90,
            "the stand-in apt-get never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert_eq!(
        sh(
            &lab,
            "master-1",
            "pgrep -x sleep -a | grep -c 'sleep 301' || true"
        )
        .trim(),
        "0",
        "the remote command outlived the run: {err}"
    );
    assert_eq!(
        sh(
            &lab,
            "master-1",
            "[ -e /var/lib/bootstrap/lock ] && echo held || echo free"
        )
        .trim(),
        "free"
    );
}

/// Item 2: a symlink planted at the apt log's old fixed path (`/tmp/.bootstrap-apt.log`, which
/// any user of the host can create) never makes root write through it: the log goes to a
/// fresh mktemp file.
#[test]
fn a_symlink_planted_in_tmp_is_never_written_through_as_root() {
    if vagrant_mode() {
        eprintln!("skipped: lab-only test (a stand-in apt-get), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-tmp", 1, 1, 0);
    // An apt-get that prints and fails, and the trap at the old log path.
    let work = longhorn_without_iscsiadm(
        &lab,
        "tmp",
        "echo E: no mirror here; exit 100",
        "echo 'root only' > /etc/bootstrap-victim; chmod 600 /etc/bootstrap-victim; \
         ln -sf /etc/bootstrap-victim /tmp/.bootstrap-apt.log",
    );
    let out = work.run(&["up", work.inventory().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no mirror here"),
        "the apt log was not shown: {err}"
    );
    assert_eq!(
        sh(&lab, "master-1", "cat /etc/bootstrap-victim"),
        "root only\n"
    );
}
