//! Disaster recovery against a real S3 server (issue 28): the lab's moto, over HTTPS with its
//! own CA and over plain HTTP. Scheduled snapshots land in the bucket and retention prunes it
//! (seen through the S3 server's own API, not the tool's); every host and `.bootstrap/` lost,
//! the cluster comes back from the bucket with the exported secrets; the only server lost,
//! `node replace --from-snapshot` brings it back on a spare while the agents keep their k3s;
//! a snapshot of another token is refused before anything stops; an S3 outage is named and
//! `--no-s3` still takes a snapshot.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use xtask::lab::{Lab, S3Server};

const BUCKET: &str = "k3s-snaps";
const PASSPHRASE: &str = "correct horse battery staple, twice over";

fn inv(work: &Workdir) -> String {
    work.inventory().to_str().unwrap().to_string()
}

/// `bootstrap ARGS...` with extra environment.
fn run_env(work: &Workdir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.args(args)
        .env("HOME", work.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("KUBECONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bootstrap")
}

/// The snapshots in the bucket under `folder/`, as the S3 server lists them.
fn in_bucket(s3: &S3Server, https: bool, folder: &str) -> Vec<xtask::lab::S3Object> {
    s3.list(https, BUCKET, &format!("{folder}/"))
        .unwrap()
        .into_iter()
        .filter(|o| !o.key.contains("/.metadata/"))
        .collect()
}

/// Whether k3s is active on every one of `hosts`.
fn active(lab: &Lab, hosts: &[&str]) -> bool {
    hosts.iter().all(|h| {
        sh(
            lab,
            h,
            "systemctl is-active k3s k3s-agent 2>/dev/null | grep -c '^active' || true",
        )
        .trim()
            != "0"
    })
}

/// HA (3 servers + 1 agent) with scheduled snapshots in the bucket over HTTPS: the bucket
/// fills and is pruned; `etcd list` shows it; a snapshot of another token is refused before
/// any server stops; then every host and `.bootstrap/` are lost, the secrets come back from
/// their archive, and `etcd restore --from-s3 latest` brings the cluster back onto new hosts
/// with other addresses.
#[test]
fn everything_lost_comes_back_from_the_bucket() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("dr-all", 4, 3, 4);
    let s3 = lab.s3_up().unwrap();
    s3.create_bucket(true, BUCKET).unwrap();
    let work = Workdir::new();
    std::fs::write(
        work.path("s3.toml"),
        format!(
            "access_key = \"{}\"\nsecret_key = \"{}\"\n",
            s3.access_key, s3.secret_key
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        work.path("s3.toml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // The operator's age key: `.bootstrap/` goes to the bucket encrypted to it.
    #[allow(deprecated)] // X25519, what age-keygen prints
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key_file = work.home.path().join("age-key.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &key_file,
            format!("{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
    }
    // The endpoint's CA beside the inventory, as the README says to keep it.
    std::fs::copy(&s3.ca_pem, work.path("s3-ca.pem")).unwrap();
    let etcd = format!(
        "\n[etcd]\nsnapshot_schedule = \"@every 20s\"\nsnapshot_retention = 5\n\n[etcd.s3]\nendpoint = \"{}\"\nendpoint_ca = \"s3-ca.pem\"\nbucket = \"{BUCKET}\"\nfolder = \"dr-all\"\nretention = 2\ncredentials_file = \"s3.toml\"\nsecrets_recipients = [\"{recipient}\"]\n",
        s3.https_endpoint,
    );
    let text0 = format!("{}{etcd}", InventoryBuilder::new(&lab, "dr-all").render());
    work.write_inventory(&text0);
    work.up_json();
    // `.bootstrap/` is in the bucket, encrypted: no token in plain text.
    let offsite = s3
        .get(true, BUCKET, "dr-all/.metadata/bootstrap-secrets.age")
        .unwrap();
    let tokens = std::fs::read_to_string(work.path(".bootstrap/tokens.json")).unwrap();
    let server_token: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    let server_token = server_token["server"].as_str().unwrap().to_string();
    assert!(
        !String::from_utf8_lossy(&offsite).contains(&server_token),
        "the token in plain text in the bucket"
    );
    // A converged run puts nothing again.
    let (sum, out) = work.up_json();
    assert_eq!(sum["changes"], 0, "{}", text(&out));
    assert!(!text(&out).contains("encrypted"), "{}", text(&out));
    sh(
        &lab,
        "master-1",
        "k3s kubectl create configmap keepme -n default --from-literal=a=b",
    );
    // Scheduled snapshots, every 20 s on each server, land in the bucket; retention 2 is
    // counted over the servers together (k3s pkg/etcd/s3/s3.go SnapshotRetention), so the
    // bucket never holds more than 2 of them once k3s pruned it.
    let t0 = Instant::now();
    let mut seen = BTreeSet::new();
    let pruned = loop {
        let now: Vec<String> = in_bucket(&s3, true, "dr-all")
            .into_iter()
            .filter(|o| o.key.contains("/etcd-snapshot-"))
            .map(|o| o.key)
            .collect();
        seen.extend(now.iter().cloned());
        if seen.len() > 2 && now.len() <= 2 && !now.is_empty() {
            break now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "no pruned bucket after 240 s: seen {seen:?}, now {now:?}"
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    eprintln!(
        "bucket pruned to {pruned:?} after {} snapshots, at {:?}",
        seen.len(),
        t0.elapsed()
    );
    // An on-demand snapshot goes to the bucket too (never pruned by the scheduled ones'
    // retention, which counts their name's prefix), with k3s's metadata.
    run_ok(
        &work,
        &[
            "etcd",
            "snapshot",
            &inv(&work),
            "--name",
            "held",
            "--no-fetch",
        ],
    );
    let objects = in_bucket(&s3, true, "dr-all");
    let o = objects
        .iter()
        .find(|o| o.key.starts_with("dr-all/held-"))
        .unwrap_or_else(|| panic!("{objects:?}"));
    assert!(o.size > 0, "{o:?}");
    assert_eq!(
        o.metadata.get("k3s-token-hash").map(String::len),
        Some(12),
        "{o:?}"
    );
    // `etcd list` shows the bucket's snapshots with size and time.
    let out = run_ok(&work, &["etcd", "list", &inv(&work), "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "snapshots")
        .flat_map(|e| e["snapshots"].as_array().cloned().unwrap_or_default())
        .collect();
    let s3_rows: Vec<&serde_json::Value> = rows.iter().filter(|r| r["where"] == "s3").collect();
    assert!(
        s3_rows.iter().any(|r| r["size"].as_u64().unwrap_or(0) > 0
            && r["created"].as_str().is_some_and(|c| c.starts_with("20"))),
        "{rows:#?}"
    );
    // A snapshot of another cluster's token: refused before any server stops.
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("k3s-token-hash".to_string(), "0123456789ab".to_string());
    meta.insert("k3s-node-name".to_string(), "master-1".to_string());
    let bytes = s3.get(true, BUCKET, &o.key).unwrap();
    s3.put_with_metadata(
        true,
        BUCKET,
        "dr-all/other-master-1-1700000000",
        &bytes,
        &meta,
    )
    .unwrap();
    let out = work.run(&[
        "etcd",
        "restore",
        &inv(&work),
        "other-master-1-1700000000",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("0123456789ab") && text(&out).contains("Nothing was stopped"),
        "{}",
        text(&out)
    );
    assert!(active(&lab, &["master-1", "master-2", "master-3"]));
    s3.delete(true, BUCKET, "dr-all/other-master-1-1700000000")
        .unwrap();
    // A snapshot only in the bucket, of this cluster's token: k3s downloads it by its name
    // and restores it (uncompressed, so not through this machine).
    sh(
        &lab,
        "master-1",
        "k3s kubectl create configmap after-the-snapshot -n default --from-literal=a=b",
    );
    meta.insert(
        "k3s-token-hash".to_string(),
        o.metadata["k3s-token-hash"].clone(),
    );
    s3.put_with_metadata(
        true,
        BUCKET,
        "dr-all/copy-master-1-1700000000",
        &bytes,
        &meta,
    )
    .unwrap();
    let out = run_ok(
        &work,
        &[
            "etcd",
            "restore",
            &inv(&work),
            "copy-master-1-1700000000",
            "--yes",
        ],
    );
    assert!(
        text(&out).contains("which k3s downloads from S3"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("downloaded from s3://"),
        "{}",
        text(&out)
    );
    assert!(configmap(&lab, "master-2"), "the snapshot's ConfigMap");
    assert!(
        !configmap_named(&lab, "master-2", "after-the-snapshot"),
        "made after the snapshot: gone"
    );
    all_ready(&lab, "master-1", 4);
    // The operator's secrets, off-site.
    let archive = work.home.path().join("secrets.age");
    let out = run_env(
        &work,
        &[
            "secrets",
            "export",
            &inv(&work),
            "-o",
            archive.to_str().unwrap(),
        ],
        &[("BOOTSTRAP_SECRETS_PASSPHRASE", PASSPHRASE)],
    );
    assert!(out.status.success(), "{}", text(&out));

    // The provider is gone: every host, and this machine's .bootstrap/ with it.
    let moved = lose_every_host(&lab, &text0);
    work.write_inventory(&moved);
    std::fs::remove_dir_all(work.path(".bootstrap")).unwrap();
    std::fs::remove_file(work.path("kubeconfig")).ok();
    // Without the token, the restore says which command brings it back.
    let out = work.run(&[
        "etcd",
        "restore",
        &inv(&work),
        "--from-s3",
        "latest",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("bootstrap secrets import"),
        "{}",
        text(&out)
    );
    // The archive from the bucket, opened with the operator's key (the one exported with a
    // passphrase works the same way: tests/secrets.rs).
    let from_bucket = work.home.path().join("from-bucket.age");
    std::fs::write(
        &from_bucket,
        s3.get(true, BUCKET, "dr-all/.metadata/bootstrap-secrets.age")
            .unwrap(),
    )
    .unwrap();
    let out = work.run(&[
        "secrets",
        "import",
        &inv(&work),
        from_bucket.to_str().unwrap(),
        "--identity",
        key_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(work.path(".bootstrap/tokens.json")).unwrap(),
        tokens
    );
    assert!(archive.is_file());
    let t1 = Instant::now();
    let out = run_ok(
        &work,
        &[
            "etcd",
            "restore",
            &inv(&work),
            "--from-s3",
            "latest",
            "--yes",
        ],
    );
    assert!(text(&out).contains("restored from"), "{}", text(&out));
    // Held here before anything is installed: the new cluster's own scheduled snapshots go
    // to the same bucket, and its retention would prune this one.
    assert!(
        text(&out).contains("before anything is installed"),
        "{}",
        text(&out)
    );
    eprintln!(
        "restored from the bucket onto new hosts in {:?}",
        t1.elapsed()
    );
    for s in ["spare-1", "spare-2", "spare-3"] {
        assert!(configmap(&lab, s), "{s}: the ConfigMap is back");
    }
    all_ready(&lab, "spare-1", 4);
    assert_eq!(members(&lab, "spare-1"), 3);
    no_changes(&work, "after restoring from the bucket");
}

/// The seed's shape (1 server, 2 agents) with compressed snapshots in the bucket over plain
/// HTTP and the operator's own keys copied because the inventory says `credentials = "env"`: the
/// server's host is lost, `node replace --from-snapshot latest` brings master-1 back on a
/// spare, the agents rejoin with the k3s they had; then S3 goes away and `etcd snapshot`
/// names it, and `--no-s3` still takes one.
#[test]
fn the_only_server_lost_comes_back_from_a_snapshot() {
    if vagrant_mode() {
        skip("lab-only test, BOOTSTRAP_E2E=vagrant");
        return;
    }
    let lab = lab("dr-one", 3, 1, 1);
    let s3 = lab.s3_up().unwrap();
    s3.create_bucket(false, BUCKET).unwrap();
    let work = Workdir::new();
    let env = [
        ("AWS_ACCESS_KEY_ID", s3.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key.as_str()),
    ];
    let etcd = format!(
        "\n[etcd]\nsnapshot_compress = true\n\n[etcd.s3]\nendpoint = \"{}\"\ninsecure = true\nallow_insecure = true\nbucket = \"{BUCKET}\"\nfolder = \"dr-one\"\ncredentials = \"env\"\n",
        s3.http_endpoint
    );
    let taint = "taints = [\"dedicated=control:NoSchedule\"]\nlabels = { tier = \"control\" }\n";
    let mut b = InventoryBuilder::new(&lab, "dr-one");
    b.extra.insert("master-1".into(), taint.into());
    let text0 = format!("{}{etcd}", b.render());
    work.write_inventory(&text0);
    let out = run_env(&work, &["up", &inv(&work), "--output", "json"], &env);
    assert!(out.status.success(), "{}", text(&out));
    // The keys went to the server's config.yaml because the inventory asked for it.
    assert!(
        sh(
            &lab,
            "master-1",
            "grep -c etcd-s3-access-key /etc/rancher/k3s/config.yaml"
        )
        .trim()
            == "1"
    );
    sh(
        &lab,
        "master-1",
        "k3s kubectl create configmap keepme -n default --from-literal=a=b",
    );
    let out = run_env(
        &work,
        &[
            "etcd",
            "snapshot",
            &inv(&work),
            "--name",
            "before",
            "--no-fetch",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    let objects = in_bucket(&s3, false, "dr-one");
    assert!(
        objects
            .iter()
            .any(|o| o.key.starts_with("dr-one/before-master-1-")),
        "{objects:?}"
    );
    let binary = |n: &str| sh(&lab, n, "stat -c %i:%Y /usr/local/bin/k3s");
    let agents_before = (binary("worker-1"), binary("worker-2"));

    // The server's host is gone.
    lab.fault("master-1", xtask::lab::Fault::Stop).unwrap();
    let spare = lab.host_of("spare-1").unwrap();
    let plain = run_env(
        &work,
        &["node", "replace", &inv(&work), "master-1", "--host", &spare],
        &env,
    );
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
    assert!(
        text(&plain).contains("only a snapshot brings the cluster back")
            && text(&plain).contains("--from-snapshot"),
        "{}",
        text(&plain)
    );
    // Held here first, and (compressed) uploaded uncompressed: k3s v1.36.3 cannot restore a
    // compressed snapshot it downloads or is given by path (#14526).
    let out = run_env(
        &work,
        &[
            "node",
            "replace",
            &inv(&work),
            "master-1",
            "--host",
            &spare,
            "--from-snapshot",
            "latest",
            "--yes",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("before anything is installed"),
        "{}",
        text(&out)
    );
    assert!(configmap(&lab, "spare-1"), "the ConfigMap is back");
    all_ready(&lab, "spare-1", 3);
    let n = nodes(&lab, "spare-1");
    let m = node(&n, "master-1");
    assert_eq!(labels(m).get("tier").map(String::as_str), Some("control"));
    assert!(
        taints(m).iter().any(|t| t.starts_with("dedicated=control")),
        "{m:#?}"
    );
    assert_eq!(
        (binary("worker-1"), binary("worker-2")),
        agents_before,
        "the agents keep the k3s they had"
    );
    let out = run_env(&work, &["up", &inv(&work), "--output", "json"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(summary(&out)["changes"], 0, "{}", text(&out));

    // S3 goes away: k3s takes no snapshot at all, and the message names S3.
    lab.s3_down().unwrap();
    let out = run_env(
        &work,
        &["etcd", "snapshot", &inv(&work), "--no-fetch"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("S3") && text(&out).contains("--no-s3"),
        "{}",
        text(&out)
    );
    let out = run_env(
        &work,
        &[
            "etcd",
            "snapshot",
            &inv(&work),
            "--no-s3",
            "--name",
            "local",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
}
