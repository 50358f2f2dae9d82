//! Lab tests for the double's etcd snapshots and cluster resets: `k3s etcd-snapshot`, the
//! ETCDSnapshotFile objects, scheduled snapshots, `k3s server --cluster-reset` with and
//! without a restore path, and a stale peer after a restore. Like cluster.rs, each test owns
//! a lab (names `dsnap-*`) and needs root.

mod common;

use common::*;

use std::io::Read;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::lab::{Lab, LabSpec};

const DB: &str = "/var/lib/rancher/k3s/server/db";
const SNAPS: &str = "/var/lib/rancher/k3s/server/db/snapshots";
const RESET_DONE: &str = "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes";

/// `k3s etcd-snapshot save ARGS`: the name of the one snapshot saved (from stderr's
/// `Snapshot <name> saved.`).
fn save(lab: &Lab, node: &str, args: &str) -> String {
    let o = sh(lab, node, &format!("k3s etcd-snapshot save {args}"));
    assert!(o.status.success(), "save: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.stdout.is_empty(),
        "save prints on stderr only: {}",
        text(&o)
    );
    let line = err
        .lines()
        .find(|l| l.contains(" saved.\""))
        .unwrap_or_else(|| panic!("no saved line: {err}"));
    assert!(
        line.starts_with("time=\"") && line.contains(" level=info msg=\"Snapshot "),
        "{line}"
    );
    line.split("msg=\"Snapshot ")
        .nth(1)
        .and_then(|r| r.strip_suffix(" saved.\""))
        .expect("name")
        .to_string()
}

fn snapshot_files(lab: &Lab, node: &str) -> Vec<Value> {
    let o = kubectl(lab, node, "get etcdsnapshotfiles -o json");
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn cr_for<'a>(items: &'a [Value], file: &str) -> Option<&'a Value> {
    items.iter().find(|o| o["spec"]["snapshotName"] == file)
}

/// A foreground `k3s server ARGS` (the unit stopped), as an operator runs a reset.
fn foreground(lab: &Lab, node: &str, args: &str) -> Output {
    sh(lab, node, &format!("k3s server {args}"))
}

#[test]
fn save_list_prune_delete_and_schedule() {
    let lab = lab(LabSpec::new("dsnap-save", 1));
    install(
        &lab,
        "master-1",
        "server",
        "cluster-init: true\ntoken: s3cret\netcd-snapshot-schedule-cron: \"* * * * *\"\n",
    );
    let started = Instant::now();
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");

    // save: the file, its mode, the CLI's lines; keys not valid for etcd-snapshot are dropped.
    let o = sh(&lab, "master-1", "k3s etcd-snapshot save");
    assert!(o.status.success(), "{}", text(&o));
    for k in ["token", "cluster-init", "etcd-snapshot-schedule-cron"] {
        assert!(
            text(&o).contains(&format!(
                "level=warning msg=\"Unknown flag --{k} found in config.yaml, skipping\""
            )),
            "{}",
            text(&o)
        );
    }
    let name = save(&lab, "master-1", "");
    assert!(name.starts_with("on-demand-master-1-"), "{name}");
    let ts: i64 = name.rsplit('-').next().unwrap().parse().expect("unix time");
    let modes = ok(
        &lab,
        "master-1",
        &format!("stat -c '%a %s' {SNAPS}/{name} && stat -c %a {SNAPS}"),
    );
    let mut l = modes.lines();
    let (mode, size) = l.next().unwrap().split_once(' ').unwrap();
    assert_eq!(mode, "600");
    assert_eq!(l.next(), Some("700"));
    // The snapshot is the double's state JSON.
    let content: Value =
        serde_json::from_str(&ok(&lab, "master-1", &format!("cat {SNAPS}/{name}"))).unwrap();
    assert!(content["cluster_id"].is_string());

    // The ETCDSnapshotFile, read by upstream kubectl.
    let location = format!("file://{SNAPS}/{name}");
    let items = snapshot_files(&lab, "master-1");
    let cr = cr_for(&items, &name).unwrap_or_else(|| panic!("no CR for {name}: {items:?}"));
    let digest = sha256_hex(format!("master-1{location}").as_bytes());
    assert_eq!(
        cr["metadata"]["name"],
        format!("local-{name}-{}", &digest[..6])
    );
    assert_eq!(cr["apiVersion"], "k3s.cattle.io/v1");
    assert_eq!(cr["kind"], "ETCDSnapshotFile");
    assert!(cr["metadata"]["namespace"].is_null(), "cluster-scoped");
    assert_eq!(
        cr["metadata"]["labels"]["etcd.k3s.cattle.io/snapshot-storage-node"],
        "master-1"
    );
    assert_eq!(
        cr["metadata"]["annotations"]["etcd.k3s.cattle.io/snapshot-token-hash"],
        sha256_hex(b"s3cret")[..12]
    );
    assert_eq!(cr["spec"]["nodeName"], "master-1");
    assert_eq!(cr["spec"]["location"], location);
    assert_eq!(cr["status"]["readyToUse"], true);
    assert_eq!(cr["status"]["size"], size);
    assert_eq!(
        cr["status"]["creationTime"].as_str().map(|s| s.len()),
        Some(20)
    );

    // ls: the table and json; a bad format.
    let table = ok(&lab, "master-1", "k3s etcd-snapshot ls 2>/dev/null");
    let mut rows = table.lines();
    let header = rows.next().unwrap();
    assert!(header.starts_with("Name "), "{table}");
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["Name", "Location", "Size", "Created"]);
    let row = rows
        .find(|r| r.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], location);
    assert_eq!(cells[2], size);
    assert!(cells[3].ends_with('Z') && cells[3].len() == 20, "{row}");
    // Column starts line up (tabwriter).
    assert_eq!(header.find("Location"), row.find("file://"), "{table}");
    let o = sh(
        &lab,
        "master-1",
        "k3s etcd-snapshot list -o json 2>/dev/null",
    );
    let list: Value = serde_json::from_slice(&o.stdout).expect("ls json");
    assert_eq!(list["kind"], "List");
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["spec"]["snapshotName"] == name.as_str())
        .expect("item");
    assert_eq!(item["metadata"]["name"], format!("local-{name}"));
    let o = sh(&lab, "master-1", "k3s etcd-snapshot ls -o wide");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("level=fatal msg=\"Error: invalid output format: wide\""),
        "{}",
        text(&o)
    );

    // Compressed: one Deflate entry named like the uncompressed snapshot, mode 0600.
    let zipped = save(&lab, "master-1", "--snapshot-compress --name zipped");
    assert!(
        zipped.starts_with("zipped-master-1-") && zipped.ends_with(".zip"),
        "{zipped}"
    );
    assert_eq!(
        ok(&lab, "master-1", &format!("stat -c %a {SNAPS}/{zipped}")).trim(),
        "600"
    );
    let bytes = lab
        .exec("master-1", &["cat", &format!("{SNAPS}/{zipped}")])
        .expect("cat")
        .stdout;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    assert_eq!(z.len(), 1);
    let mut e = z.by_index(0).unwrap();
    assert_eq!(e.name(), zipped.trim_end_matches(".zip"));
    assert_eq!(e.compression(), zip::CompressionMethod::Deflated);
    let mut inner = String::new();
    e.read_to_string(&mut inner).unwrap();
    assert!(serde_json::from_str::<Value>(&inner).is_ok());
    assert!(!ok(&lab, "master-1", &format!("ls {SNAPS}"))
        .contains(&format!("{}\n", zipped.trim_end_matches(".zip"))));

    // A non-default dir must exist; the server keeps the details in its log.
    let o = sh(&lab, "master-1", "k3s etcd-snapshot save --dir /nope");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("level=fatal msg=\"Error: see server log for details: Internal error occurred: etcd-snapshot error ID "),
        "{}",
        text(&o)
    );
    wait_for("the server's reason", Duration::from_secs(5), || {
        journal(&lab, "master-1", "server")
            .contains("failed to get etcd-snapshot-dir: stat /nope: no such file or directory")
    });

    // prune keeps the newest N with the prefix; save never prunes.
    let mut pruned = Vec::new();
    for _ in 0..3 {
        pruned.push(save(&lab, "master-1", "--name p"));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let o = sh(
        &lab,
        "master-1",
        "k3s etcd-snapshot prune --name p --snapshot-retention 1",
    );
    assert!(o.status.success(), "{}", text(&o));
    for gone in &pruned[..2] {
        assert!(
            text(&o).contains(&format!("msg=\"Snapshot {gone} deleted.\"")),
            "{}",
            text(&o)
        );
    }
    let left = ok(&lab, "master-1", &format!("ls {SNAPS}"));
    assert!(
        left.contains(&pruned[2]) && !left.contains(&pruned[0]),
        "{left}"
    );
    assert!(left.contains(&name), "other prefixes stay: {left}");
    let items = snapshot_files(&lab, "master-1");
    assert!(cr_for(&items, &pruned[0]).is_none() && cr_for(&items, &pruned[2]).is_some());

    // delete: found and not found.
    let o = sh(
        &lab,
        "master-1",
        &format!("k3s etcd-snapshot delete {zipped} nope"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("level=info msg=\"Snapshot {zipped} deleted.\""))
            && text(&o).contains("level=warning msg=\"Snapshot nope not found.\""),
        "{}",
        text(&o)
    );
    assert!(cr_for(&snapshot_files(&lab, "master-1"), &zipped).is_none());

    // The schedule (`* * * * *`): a scheduled snapshot within about a minute of the start.
    let remaining = Duration::from_secs(75).saturating_sub(started.elapsed());
    wait_for(
        "a scheduled snapshot",
        remaining.max(Duration::from_secs(5)),
        || ok(&lab, "master-1", &format!("ls {SNAPS}")).contains("etcd-snapshot-master-1-"),
    );
    wait_for("its ETCDSnapshotFile", Duration::from_secs(10), || {
        snapshot_files(&lab, "master-1").iter().any(|o| {
            o["spec"]["snapshotName"]
                .as_str()
                .unwrap_or("")
                .starts_with("etcd-snapshot-master-1-")
        })
    });
    assert!(ts > 0);
}

#[test]
fn cluster_reset_restores_one_server() {
    let lab = lab(LabSpec::new("dsnap-reset", 1));
    install(
        &lab,
        "master-1",
        "server",
        "cluster-init: true\ntoken: s3cret\n",
    );
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    ok(
        &lab,
        "master-1",
        "k3s kubectl create configmap keep-me -n default --from-literal=a=1",
    );
    let snap = save(&lab, "master-1", "");
    let zipped = save(&lab, "master-1", "--snapshot-compress --name zipped");
    ok(
        &lab,
        "master-1",
        "k3s kubectl delete configmap keep-me -n default",
    );
    ok(&lab, "master-1", "systemctl stop k3s");

    // Flag checks, before anything is touched.
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset-restore-path={SNAPS}/{snap}"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("level=fatal msg=\"Error: invalid flag use; --cluster-reset required with --cluster-reset-restore-path\""), "{}", text(&o));
    write(
        &lab,
        "master-1",
        "/etc/rancher/k3s/config.yaml.d/90-join.yaml",
        "server: https://192.0.2.1:6443\n",
    );
    let o = foreground(&lab, "master-1", "--cluster-reset");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot perform cluster-reset while server URL is set - remove server from configuration before resetting"), "{}", text(&o));
    ok(
        &lab,
        "master-1",
        "rm /etc/rancher/k3s/config.yaml.d/90-join.yaml",
    );
    let o = foreground(
        &lab,
        "master-1",
        "--cluster-reset --cluster-reset-restore-path=/nope",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("level=fatal msg=\"Error: starting kubernetes: failed to start cluster: start managed database: etcd: snapshot path does not exist: /nope\""), "{}", text(&o));
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset --cluster-reset-restore-path={SNAPS}"),
    );
    assert!(
        text(&o).contains(&format!(
            "etcd: snapshot path must be a file, not a directory: {SNAPS}"
        )),
        "{}",
        text(&o)
    );

    // With etcd-s3 the path names an S3 object, not a local file: without any other S3
    // setting no client can be made (k3s `pkg/etcd/etcd.go` 389-398, `s3.go` 149-151).
    // tests/snapshots_s3.rs restores from the lab's S3.
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset --cluster-reset-restore-path={SNAPS}/{zipped} --etcd-s3"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("level=info msg=\"Retrieving etcd snapshot {SNAPS}/{zipped} from S3\""))
            && text(&o).contains("level=fatal msg=\"Error: starting kubernetes: failed to start cluster: start managed database: failed to initialize S3 client: s3 configuration was not set\""),
        "{}",
        text(&o)
    );

    // An absolute .zip path: this k3s joins it to the snapshot dir (#14526) and fails first.
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset --cluster-reset-restore-path={SNAPS}/{zipped}"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains(&format!(
            "open {SNAPS}{SNAPS}/{zipped}: no such file or directory"
        )),
        "{}",
        text(&o)
    );
    let db = ok(&lab, "master-1", &format!("ls {DB}"));
    assert!(
        !db.contains("etcd-old-") && db.contains("state.json") && !db.contains("reset-flag"),
        "{db}"
    );

    // The wrong token: the data is moved and restored, then the bootstrap check is fatal.
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset --cluster-reset-restore-path={SNAPS}/{snap} --token wrong"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(
            "level=fatal msg=\"bootstrap data already found and encrypted with different token\""
        ),
        "{}",
        text(&o)
    );
    let db = ok(&lab, "master-1", &format!("ls {DB}"));
    assert!(
        db.contains("etcd-old-") && db.contains("reset-flag"),
        "{db}"
    );

    // The restore.
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset --cluster-reset-restore-path={SNAPS}/{snap}"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(
            "msg=\"Pre-restore etcd database moved to /var/lib/rancher/k3s/server/db/etcd-old-"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "level=error msg=\"Shutdown request received: \\\"{RESET_DONE}\\\"\""
        )),
        "{out}"
    );
    let old = ok(&lab, "master-1", &format!("ls -d {DB}/etcd-old-*/ && ls {DB}/etcd-old-*/ && stat -c %a {DB}/reset-flag && stat -c %s {DB}/reset-flag"));
    assert!(
        old.contains("state.json") && old.contains("600\n0\n"),
        "{old}"
    );
    let m = members(&lab, "master-1");
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0]["name"].as_str().unwrap().starts_with("master-1-"));
    // A second plain reset is refused while the reset-flag is there.
    let o = foreground(&lab, "master-1", "--cluster-reset");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains(&format!("Managed etcd cluster membership was previously reset, please remove the cluster-reset flag and start k3s normally. If you need to perform another cluster reset, you must first manually delete the file at {DB}/reset-flag")), "{}", text(&o));

    // A normal start: the deleted object is back, the reset-flag goes.
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    let o = kubectl(
        &lab,
        "master-1",
        "get configmap keep-me -n default -o jsonpath={.data.a}",
    );
    assert_eq!(text(&o), "1");
    wait_for("the reset-flag cleared", Duration::from_secs(10), || {
        !ok(&lab, "master-1", &format!("ls {DB}")).contains("reset-flag")
    });
    assert!(journal(&lab, "master-1", "server").contains(
        "Cleared etcd member removal annotations from node master-1 after cluster reset"
    ));
    assert_eq!(members(&lab, "master-1").len(), 1);
}

#[test]
fn restore_on_one_of_three_and_stale_peers() {
    let lab = three_servers("dsnap-ha");
    assert_eq!(members(&lab, "master-1").len(), 3);
    let snap = save(&lab, "master-1", "");
    ok(
        &lab,
        "master-2",
        "k3s kubectl create namespace after-snapshot",
    );
    for n in ["master-1", "master-2", "master-3"] {
        ok(&lab, n, "systemctl stop k3s");
    }
    let o = foreground(
        &lab,
        "master-1",
        &format!("--cluster-reset --cluster-reset-restore-path={SNAPS}/{snap}"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    assert_eq!(members(&lab, "master-1").len(), 1);
    assert!(!kubectl(&lab, "master-1", "get namespace after-snapshot")
        .status
        .success());

    // A peer with its pre-restore data stays out: another cluster ID.
    start(&lab, "master-2", "server");
    wait_for("the cluster ID mismatch", Duration::from_secs(30), || {
        journal(&lab, "master-2", "server")
            .contains("request sent was ignored by remote peer due to cluster ID mismatch")
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(state(&lab, "master-2", "server"), "activating");
    assert!(journal(&lab, "master-1", "server").contains("request cluster ID mismatch"));
    assert_eq!(members(&lab, "master-1").len(), 1);
    assert!(!kubectl(&lab, "master-1", "get namespace after-snapshot")
        .status
        .success());

    // Its db moved aside, it joins the restored cluster as a new member; so does master-3.
    for n in ["master-2", "master-3"] {
        ok(
            &lab,
            n,
            &format!("systemctl stop k3s; mv {DB} {DB}.pre-restore"),
        );
        start(&lab, n, "server");
        wait_active(&lab, n, "server");
    }
    wait_for("three members", Duration::from_secs(30), || {
        members(&lab, "master-1").len() == 3
    });
    for n in ["master-2", "master-3"] {
        assert_eq!(members(&lab, n).len(), 3, "{n}");
        assert!(!kubectl(&lab, n, "get namespace after-snapshot")
            .status
            .success());
    }
}
