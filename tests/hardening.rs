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

/// A lab of `nodes` (`servers` of them servers) and its cluster `name`, converged by `up`;
/// `None` (the test skipped, saying `why` it needs the lab) against Vagrant VMs.
fn converged(
    lab_name: &str,
    nodes: usize,
    servers: usize,
    name: &str,
    why: &str,
) -> Option<(xtask::lab::LabGuard, Workdir)> {
    if vagrant_mode() {
        skip(&format!("lab-only test ({why}), BOOTSTRAP_E2E=vagrant"));
        return None;
    }
    let lab = lab(lab_name, nodes, servers, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, name).render());
    work.up_json();
    Some((lab, work))
}

/// Item 1 (issue 33: the race forced): two runs against an expired lock, both held inside the
/// lock's read-then-write by a slow `sed` stand-in on the server (a second on every read of
/// `expires=`): exactly one takes it over, the other is refused naming it. Without the flock
/// around that window both would take it over.
#[test]
fn an_expired_lock_is_taken_over_by_one_run_only() {
    let Some((lab, work)) = converged("hd-lock", 1, 1, "lock", "plants a lock") else {
        return;
    };
    let slow_sed = "printf '#!/bin/sh\\ncase \"$*\" in *expires=*) echo in >> /run/slow-sed.log; sleep 1;; esac\\nexec /usr/bin/sed \"$@\"\\n' > /usr/local/bin/sed && chmod 755 /usr/local/bin/sed";
    sh(&lab, "master-1", slow_sed);
    struct Restore<'a>(&'a xtask::lab::Lab);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = self.0.exec(
                "master-1",
                &["rm", "-f", "/usr/local/bin/sed", "/run/slow-sed.log"],
            );
        }
    }
    let _restore = Restore(&lab);
    for round in 0..3 {
        let now: u64 = sh(&lab, "master-1", "date +%s").trim().parse().unwrap();
        sh(
            &lab,
            "master-1",
            &format!(
                "rm -f /run/slow-sed.log; printf 'id=dead\\nwho=ci@elsewhere\\npid=4242\\ncommand=up\\nsince={}\\nexpires={}\\n' > /var/lib/bootstrap/lock",
                now - 100,
                now - 10
            ),
        );
        let a = spawn_up(&work);
        let b = spawn_up(&work);
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let errs: Vec<String> = outs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        // Both runs reached the lock's reads (the stand-in saw both).
        let reads = sh(&lab, "master-1", "wc -l < /run/slow-sed.log");
        let reads: usize = reads.trim().parse().unwrap();
        assert!(reads >= 4, "round {round}: {reads} reads of the lock");
        let took = errs
            .iter()
            .filter(|e| e.contains("took over a lock"))
            .count();
        assert_eq!(
            took,
            1,
            "round {round}: {took} runs took the expired lock over:\n{}",
            errs.join("\n---\n")
        );
        let refused = outs
            .iter()
            .zip(&errs)
            .filter(|(o, e)| !o.status.success() && e.contains("locked by another run"))
            .count();
        assert_eq!(refused, 1, "round {round}: {}", errs.join("\n---\n"));
    }
}

/// Issue 33: a run that lives past its TTL keeps its lock. With a TTL of 6 s and an agent that
/// cannot join (the run waits for it), the lock's expiry moves forward while the run lives, a
/// second run started after the TTL is refused naming the first, and the first finishes once
/// the agent can join. Without renewal the second run would take the lock over.
#[test]
fn a_run_that_outlives_its_ttl_keeps_its_lock() {
    if vagrant_mode() {
        skip("lab-only test (blocks a join), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-renew", 2, 1, 0);
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "renew").render());
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    let ttl = [("BOOTSTRAP_LOCK_TTL", "6")];
    lab.fault("worker-1", xtask::lab::Fault::BlockJoin).unwrap();
    let first = spawn_with(&work, &["up", inv, "--timeout", "120"], &ttl);
    let id = wait_for_lock(&lab, "master-1");
    let expiry = || -> u64 {
        let t = sh(&lab, "master-1", "cat /var/lib/bootstrap/lock");
        assert!(t.contains(&format!("id={id}")), "the first run's lock: {t}");
        t.lines()
            .find_map(|l| l.strip_prefix("expires="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no expires= in {t}"))
    };
    let first_expiry = expiry();
    // Past the TTL the lock would have expired without renewal.
    std::thread::sleep(std::time::Duration::from_secs(9));
    let later_expiry = expiry();
    assert!(
        later_expiry > first_expiry,
        "renewed: expires {first_expiry} then {later_expiry}"
    );
    let second = spawn_with(&work, &["up", inv], &ttl)
        .wait_with_output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{said}");
    assert!(said.contains("locked by another run"), "{said}");
    assert!(!said.contains("took over"), "{said}");
    assert!(expiry() >= later_expiry);
    lab.fault("worker-1", xtask::lab::Fault::UnblockJoin)
        .unwrap();
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the first run finishes: {err}");
}

/// Item 3: with `accept-new`, a host with a recorded key is only trusted with a recorded key
/// (a server offering only another type is a change), a new key is said when recorded, and
/// `plan` writes nothing to known_hosts.
#[test]
fn accept_new_trusts_only_recorded_key_types_and_plan_records_nothing() {
    if vagrant_mode() {
        skip("lab-only test (reconfigures sshd), BOOTSTRAP_E2E=vagrant");
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
    // status: the same (it reads, so it records nothing either).
    let out = work.run(&["status", inv.to_str().unwrap()]);
    assert!(
        text(&out).contains("master-1"),
        "status connected: {}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        "",
        "status wrote known_hosts"
    );
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
        skip("lab-only test (the lab mirror), BOOTSTRAP_E2E=vagrant");
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
/// the lock (the stand-in records, when its SIGTERM comes, whether the lock is still there),
/// and the run exits 130.
#[test]
fn an_interrupted_run_stops_its_remote_commands_before_releasing_the_lock() {
    if vagrant_mode() {
        skip("lab-only test (a stand-in apt-get), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-stop", 1, 1, 0);
    // An apt-get that would hang for five minutes.
    let work = longhorn_without_iscsiadm(&lab, "stop", "exec sleep 301", "");
    sh(
        &lab,
        "master-1",
        "cat > /usr/local/sbin/apt-get <<'EOF'\n#!/bin/sh\ntrap 'if [ -e /var/lib/bootstrap/lock ]; then echo held; else echo free; fi > /run/lock-at-stop; exit 143' TERM\nsleep 301 &\nwait\nEOF\nchmod 755 /usr/local/sbin/apt-get; rm -f /run/lock-at-stop",
    );
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
        sh(&lab, "master-1", "cat /run/lock-at-stop").trim(),
        "held",
        "the lock was released before the run's command was stopped"
    );
    assert!(
        !exists(&lab, "master-1", "/var/lib/bootstrap/lock"),
        "the lock is left held"
    );
}

/// Item 2: a symlink planted at the apt log's old fixed path (`/tmp/.bootstrap-apt.log`, which
/// any user of the host can create) never makes root write through it: the log goes to a
/// fresh mktemp file.
#[test]
fn a_symlink_planted_in_tmp_is_never_written_through_as_root() {
    if vagrant_mode() {
        skip("lab-only test (a stand-in apt-get), BOOTSTRAP_E2E=vagrant");
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

/// Issue 27 (H1): a root on a server poisons k3s.yaml (an `exec` plugin, an extra `prod`
/// cluster pointing elsewhere). `kubeconfig --merge` and `up` refuse it, naming what k3s never
/// writes; neither `~/.kube/config` (with the operator's own `prod`) nor the kubeconfig beside
/// the inventory changes. Once k3s writes its file again, the kubeconfig is built from its CA
/// and admin certificate and key only.
#[test]
fn a_poisoned_k3s_yaml_never_reaches_the_operators_kubeconfig() {
    let Some((lab, work)) = converged("hd-kc", 1, 1, "kc", "edits k3s.yaml as root") else {
        return;
    };
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    let beside = work.path("kc.kubeconfig");
    let ours_before = std::fs::read_to_string(&beside).unwrap();
    let kube = work.home.path().join(".kube");
    std::fs::create_dir_all(&kube).unwrap();
    let operators = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod.example.com:6443\nusers:\n- name: prod\n  user:\n    token: prod-admin-bearer-token\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: prod\ncurrent-context: prod\n";
    std::fs::write(kube.join("config"), operators).unwrap();
    let marker = "/tmp/bootstrap-h1-marker";
    let _ = std::fs::remove_file(marker);
    // What the attacker writes: k3s's file with an exec plugin and a second `prod`.
    let orig = sh(&lab, "master-1", "cat /etc/rancher/k3s/k3s.yaml");
    let mut d: serde_yaml::Value = serde_yaml::from_str(&orig).unwrap();
    d["users"][0]["user"]["exec"] = serde_yaml::from_str(&format!(
        "{{apiVersion: client.authentication.k8s.io/v1, command: sh, args: [-c, 'id > {marker}'], interactiveMode: Never}}"
    ))
    .unwrap();
    let prod: serde_yaml::Value = serde_yaml::from_str(
        "{name: prod, cluster: {server: 'https://127.0.0.66:6443', insecure-skip-tls-verify: true}}",
    )
    .unwrap();
    d["clusters"].as_sequence_mut().unwrap().push(prod);
    let poisoned = serde_yaml::to_string(&d).unwrap();
    lab.exec_stdin(
        "master-1",
        &["sh", "-c", "cat > /etc/rancher/k3s/k3s.yaml"],
        poisoned.as_bytes(),
    )
    .unwrap();
    let out = work.run(&["kubeconfig", inv, "--merge"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("which k3s never writes") && said.contains("master-1"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(kube.join("config")).unwrap(),
        operators
    );
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), ours_before);
    let up = work.run(&["up", inv]);
    assert!(!up.status.success(), "{}", text(&up));
    assert!(
        text(&up).contains("which k3s never writes"),
        "{}",
        text(&up)
    );
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), ours_before);
    assert!(!std::path::Path::new(marker).exists());
    // k3s's own file back: merged as one cluster, user and context, beside the operator's.
    lab.exec_stdin(
        "master-1",
        &["sh", "-c", "cat > /etc/rancher/k3s/k3s.yaml"],
        orig.as_bytes(),
    )
    .unwrap();
    let out = work.run(&["kubeconfig", inv, "--merge"]);
    assert!(out.status.success(), "{}", text(&out));
    let merged = std::fs::read_to_string(kube.join("config")).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&merged).unwrap();
    let names = |k: &str| -> Vec<String> {
        v[k].as_sequence()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("clusters"), ["prod", "kc"]);
    assert_eq!(names("users"), ["prod", "kc"]);
    assert_eq!(
        v["clusters"][0]["cluster"]["server"],
        "https://prod.example.com:6443"
    );
    assert_eq!(v["current-context"], "prod");
    assert!(
        !merged.contains("exec") && !merged.contains("insecure"),
        "{merged}"
    );
}

/// Issue 27 (M2): hosts whose login shell prints a banner before every command. The run
/// stops with the banner named and nothing of the facts' output: no base64 of config.yaml
/// (the tokens: the agent's holds its join token) or of k3s.yaml (the admin key) reaches the
/// terminal or the JSON events, from the server or from the agent.
#[test]
fn a_banner_printing_host_leaks_no_secret_in_any_encoding() {
    let Some((lab, work)) = converged("hd-banner", 2, 1, "banner", "edits root's .bashrc") else {
        return;
    };
    let mut secrets: Vec<(String, String)> = Vec::new();
    for (node, file) in [
        ("master-1", "/etc/rancher/k3s/config.yaml"),
        ("master-1", "/etc/rancher/k3s/k3s.yaml"),
        ("worker-1", "/etc/rancher/k3s/config.yaml"),
    ] {
        let b64 = sh(&lab, node, &format!("base64 -w0 {file}"));
        secrets.push((format!("{node}:{file}"), b64));
    }
    for node in ["master-1", "worker-1"] {
        sh(
            &lab,
            node,
            &format!("printf 'echo Welcome to {node}, managed by hand\\n' | cat - /root/.bashrc > /root/.bashrc.new && mv /root/.bashrc.new /root/.bashrc"),
        );
    }
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    for args in [vec!["plan", inv], vec!["up", inv, "--output", "json"]] {
        let out = work.run(&args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        let said = text(&out);
        for (what, b64) in &secrets {
            // No 24 characters of either file's base64 anywhere in what was said.
            let chars: Vec<char> = b64.chars().collect();
            for w in chars.windows(24).step_by(4) {
                let w: String = w.iter().collect();
                assert!(
                    !said.contains(&w),
                    "{args:?}: the base64 of {what} leaked ({w}):\n{said}"
                );
            }
        }
        assert!(
            !said.contains("config.b64") && !said.contains("kubeconfig.b64"),
            "{said}"
        );
        for node in ["master-1", "worker-1"] {
            assert!(
                said.contains("the login shell printed before")
                    && said.contains(&format!("Welcome to {node}")),
                "{args:?}: {said}"
            );
        }
    }
    for node in ["master-1", "worker-1"] {
        sh(&lab, node, "sed -i '1d' /root/.bashrc");
    }
    work.up_json();
}

fn spawn_with(work: &Workdir, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(bin());
    c.args(args)
        .env("HOME", work.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn bootstrap")
}

/// The run's lock id on `node` once it is there (the run is reading or writing).
fn wait_for_lock(lab: &xtask::lab::Lab, node: &str) -> String {
    let t = std::time::Instant::now();
    loop {
        let id = sh(
            lab,
            node,
            "sed -n 's/^id=//p' /var/lib/bootstrap/lock 2>/dev/null || true",
        );
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
        assert!(t.elapsed().as_secs() < 60, "no lock taken on {node}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Issue 27 (M3): the lock holds while the run does. A run whose lock another run took over
/// (here: the lock file rewritten, as a run would after an expiry) stops before its next step,
/// naming the holder; a run stopped (SIGSTOP, a Ctrl-Z or a laptop lid) for longer than the
/// TTL stops before its next step once it goes on, since another run may have taken over.
/// Each run is held inside a step (a joining node whose port 6443 is blocked) until its
/// renewals have seen the change, so the step boundary that must refuse always comes after.
#[test]
fn a_lost_or_unrenewed_lock_stops_the_run_between_steps() {
    if vagrant_mode() {
        skip("lab-only test (rewrites the lock), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-lost", 2, 1, 1);
    // Every renewal on master-1 begins with `grep -qx id=<its id> <lock>`: a stand-in logs it.
    sh(
        &lab,
        "master-1",
        "cat > /usr/local/bin/grep <<'EOF'\n#!/bin/sh\ncase \"$*\" in *'-qx id='*) echo renewal >> /run/renewals.log;; esac\nexec /usr/bin/grep \"$@\"\nEOF\nchmod 755 /usr/local/bin/grep",
    );
    struct Restore<'a>(&'a xtask::lab::Lab);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = self.0.exec(
                "master-1",
                &["rm", "-f", "/usr/local/bin/grep", "/run/renewals.log"],
            );
            let _ = self.0.fault("worker-1", xtask::lab::Fault::UnblockJoin);
            let _ = self.0.fault("spare-1", xtask::lab::Fault::UnblockJoin);
        }
    }
    let _restore = Restore(&lab);
    // From now on, two renewals: the first one's answer was read before the second was sent.
    let two_renewals = |child: &mut std::process::Child| {
        sh(&lab, "master-1", ": > /run/renewals.log");
        let t = std::time::Instant::now();
        while sh(&lab, "master-1", "cat /run/renewals.log")
            .lines()
            .count()
            < 2
        {
            if child.try_wait().unwrap().is_some() {
                let out = std::mem::replace(child, Command::new("true").spawn().unwrap())
                    .wait_with_output()
                    .unwrap();
                panic!("the run ended before two renewals: {}", text(&out));
            }
            assert!(
                t.elapsed().as_secs() < 120,
                "the run renews its lock no more"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "lost").render());
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    let ttl = [("BOOTSTRAP_LOCK_TTL", "6")];

    // Taken over: the run waits for worker-1 to join while its lock is replaced.
    lab.fault("worker-1", xtask::lab::Fault::BlockJoin).unwrap();
    let mut child = spawn_with(&work, &["up", inv, "--timeout", "120"], &ttl);
    let mine = wait_for_lock(&lab, "master-1");
    let now: u64 = sh(&lab, "master-1", "date +%s").trim().parse().unwrap();
    sh(
        &lab,
        "master-1",
        &format!(
            "printf 'id=feedfacefeedface\\nwho=ci@elsewhere\\npid=77\\ncommand=up\\nsince={now}\\nexpires={}\\n' > /var/lib/bootstrap/lock",
            now + 600
        ),
    );
    two_renewals(&mut child);
    lab.fault("worker-1", xtask::lab::Fault::UnblockJoin)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stopped between steps")
            && err.contains("this run's lock was taken")
            && err.contains("ci@elsewhere"),
        "{err}"
    );
    // The other run's lock is left alone.
    assert!(sh(&lab, "master-1", "cat /var/lib/bootstrap/lock").contains("id=feedfacefeedface"));
    assert!(!sh(&lab, "master-1", "cat /var/lib/bootstrap/lock").contains(&mine));
    sh(&lab, "master-1", "rm -f /var/lib/bootstrap/lock");

    // Stopped for longer than the TTL, then continued: the run waits for spare-1 to join.
    let mut b = InventoryBuilder::new(&lab, "lost");
    b.skip_spares = false;
    work.write_inventory(&b.render());
    lab.fault("spare-1", xtask::lab::Fault::BlockJoin).unwrap();
    let child = spawn_with(&work, &["up", inv, "--timeout", "120"], &ttl);
    wait_for_lock(&lab, "master-1");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    // The scenario itself: stopped for longer than the lock's 6 s.
    std::thread::sleep(std::time::Duration::from_secs(10));
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    // No renewal can succeed now (the lock's expiry has passed), and a step boundary reads
    // how long ago the last one did: whichever step the run is in, it stops after it.
    lab.fault("spare-1", xtask::lab::Fault::UnblockJoin)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("stopped between steps")
            && (err.contains("was not renewed") || err.contains("had expired")),
        "{err}"
    );
    // Nothing is left half-held: the next run goes through.
    work.up_json();
}

/// Issue 27 (M3): a run needs the lock on a majority of the servers, so two runs that each
/// reach part of the cluster never both go on; and a lock whose run is gone but whose commands
/// still run on a host is not taken over until they end (waited for, then refused).
#[test]
fn a_lock_needs_a_majority_and_an_expired_runs_commands_to_end() {
    let Some((lab, work)) = converged("hd-major", 3, 3, "major", "plants a lock") else {
        return;
    };
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();

    // An expired lock whose run still has a command running on master-1.
    let now: u64 = sh(&lab, "master-1", "date +%s").trim().parse().unwrap();
    sh(
        &lab,
        "master-1",
        &format!(
            "printf 'id=0badc0de0badc0de\\nwho=ops@laptop\\npid=4242\\ncommand=etcd restore\\nsince={}\\nexpires={}\\n' > /var/lib/bootstrap/lock; \
             setsid env BOOTSTRAP_RUN=0badc0de0badc0de sleep 600 >/dev/null 2>&1 < /dev/null &",
            now - 300,
            now - 100
        ),
    );
    let child = spawn_with(&work, &["up", inv], &[("BOOTSTRAP_LOCK_WAIT", "4")]);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("expired, but commands that run started still run there")
            && err.contains("ops@laptop"),
        "{err}"
    );
    assert!(sh(&lab, "master-1", "cat /var/lib/bootstrap/lock").contains("id=0badc0de0badc0de"));
    // Once they end, the lock is taken over as before.
    sh(&lab, "master-1", "pkill -f '^sleep 600$' || true");
    let (sum, _) = work.up_json();
    assert_eq!(sum["ok"], true, "{sum}");

    // Two of three servers unreachable: the lock on one is not enough.
    lab.fault("master-2", xtask::lab::Fault::Stop).unwrap();
    lab.fault("master-3", xtask::lab::Fault::Stop).unwrap();
    let out = work.run(&["etcd", "snapshot", inv]);
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the run lock was taken on 1 of 3 servers; a run needs a majority (2)"),
        "{err}"
    );
    assert!(
        !exists(&lab, "master-1", "/var/lib/bootstrap/lock"),
        "the lock is left held"
    );
}

/// What every node's sshd ran for the tool: a `ForceCommand` wrapper logs each command as it
/// arrives (`$SSH_ORIGINAL_COMMAND`, SFTP's server included), then runs it.
const LOG_COMMANDS: &str = r#"mkdir -p /usr/local/sbin && cat > /usr/local/sbin/log-command <<'X'
#!/bin/sh
printf '%s\n--\n' "$SSH_ORIGINAL_COMMAND" >> /var/log/ssh-commands.log
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
X
chmod 755 /usr/local/sbin/log-command
echo 'ForceCommand /usr/local/sbin/log-command' > /etc/ssh/sshd_config.d/zz-log-commands.conf
systemctl reload ssh || systemctl reload sshd"#;

/// Issue 33: no token, in any form, is ever in a command line. Every command the tool sends to
/// any node during `up`, `etcd snapshot`, `etcd restore` and `node add` is recorded where it
/// arrives (sshd's ForceCommand, so nothing is sampled), and neither token appears in that
/// record: raw, in k3s's `K10<hash>::server:` form, or base64 of either.
#[test]
fn no_token_is_in_any_command_sent_to_a_node() {
    if vagrant_mode() {
        skip("lab-only test (reconfigures sshd), BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("hd-argv", 2, 1, 1);
    for n in lab.nodes() {
        sh(&lab, &n.name, LOG_COMMANDS);
    }
    let work = Workdir::new();
    work.write_inventory(&InventoryBuilder::new(&lab, "argv").render());
    work.up_json();
    let inv = work.inventory();
    let inv = inv.to_str().unwrap();
    let out = run_ok(&work, &["etcd", "snapshot", inv, "--name", "argv"]);
    let copy = std::fs::read_dir(work.path(".bootstrap/snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_none())
        .unwrap_or_else(|| panic!("no copy: {}", text(&out)));
    run_ok(
        &work,
        &["etcd", "restore", inv, copy.to_str().unwrap(), "--yes"],
    );
    let spare = lab.node("spare-1").unwrap().addr.to_string();
    run_ok(
        &work,
        &[
            "node", "add", inv, "worker-2", "--host", &spare, "--role", "agent",
        ],
    );

    let tokens: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.path(".bootstrap/tokens.json")).unwrap(),
    )
    .unwrap();
    let ca_hash = sh(
        &lab,
        "master-1",
        "sed -n 's/^K10\\([0-9a-f]*\\)::.*/\\1/p' /var/lib/rancher/k3s/server/token",
    );
    let mut forms: Vec<String> = Vec::new();
    for t in ["server", "agent"] {
        let token = tokens[t].as_str().unwrap().to_string();
        let full = format!("K10{}::server:{token}", ca_hash.trim());
        for s in [token, full] {
            forms.extend(base64_forms(&s));
            forms.push(s);
        }
    }
    let mut commands = 0;
    for n in lab.nodes() {
        let log = sh(
            &lab,
            &n.name,
            "cat /var/log/ssh-commands.log 2>/dev/null || true",
        );
        commands += log.matches("\n--\n").count();
        for f in &forms {
            assert!(
                !log.contains(f.as_str()),
                "{}: a command carried a token ({f}):\n{log}",
                n.name
            );
        }
    }
    // The record is of every command: the facts scripts, SFTP and k3s's install are in it.
    let master = sh(&lab, "master-1", "cat /var/log/ssh-commands.log");
    assert!(master.contains("sftp-server"), "{master}");
    assert!(commands > 20, "{commands} commands recorded");
}

/// `s` in base64 and base64url, at each of the three alignments it can have inside a longer
/// encoded text (what an encoded file that holds it would show).
fn base64_forms(s: &str) -> Vec<String> {
    use base64::Engine;
    let mut out = Vec::new();
    for pad in 0..3 {
        let mut bytes = vec![b'x'; pad];
        bytes.extend_from_slice(s.as_bytes());
        for e in [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let enc = e.encode(&bytes);
            // Drop the characters that mix the padding with the secret's first bytes and the
            // last, partial group.
            let skip = (pad * 4).div_ceil(3);
            let keep = enc.len().saturating_sub(4);
            if keep > skip + 8 {
                out.push(enc[skip..keep].to_string());
            }
        }
    }
    out
}
