//! Lab tests for the double's S3 snapshot storage against the lab's real S3 server (moto,
//! `Lab::s3_up`): the upload with k3s's user metadata, the ETCDSnapshotFile of the S3 copy,
//! `ls`/`delete`/`prune` through S3 and S3 retention, the refusals of an on-demand save when no
//! S3 client can be made (in k3s's and minio's words), a scheduled save's failure record, and
//! a cluster reset restoring a snapshot downloaded from S3 (a compressed one failing as k3s
//! issue #14526 has it). Each test owns a lab (names `ds3-*`) and needs root.

mod common;

use common::*;

use std::time::Duration;

use serde_json::Value;
use xtask::lab::{Lab, LabSpec};

const SNAPS: &str = "/var/lib/rancher/k3s/server/db/snapshots";
const CA: &str = "/etc/rancher/k3s/s3-ca.pem";
const RESET_DONE: &str = "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes";

/// The names in a CLI run's `Snapshot <name> saved.` lines, in order.
fn saved(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("msg=\"Snapshot ").nth(1))
        .filter_map(|r| r.strip_suffix(" saved.\""))
        .map(str::to_string)
        .collect()
}

fn deleted(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("msg=\"Snapshot ").nth(1))
        .filter_map(|r| r.strip_suffix(" deleted.\""))
        .map(str::to_string)
        .collect()
}

fn save_ok(lab: &Lab, args: &str) -> Vec<String> {
    let o = sh(lab, "master-1", &format!("k3s etcd-snapshot save {args}"));
    assert!(o.status.success(), "save {args}: {}", text(&o));
    saved(&text(&o))
}

fn snapshot_files(lab: &Lab) -> Vec<Value> {
    let o = kubectl(lab, "master-1", "get etcdsnapshotfiles -o json");
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn s3_record<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items.iter().find(|o| {
        o["spec"]["snapshotName"] == name
            && o["metadata"]["labels"]["etcd.k3s.cattle.io/snapshot-storage-node"] == "s3"
    })
}

#[test]
fn s3_save_ls_prune_delete_refusals_and_restore() {
    let lab = lab(LabSpec::new("ds3-save", 1));
    let s3 = lab.s3_up().expect("s3 up");
    s3.create_bucket(true, "etcd").expect("bucket");
    s3.create_bucket(false, "plain")
        .expect("bucket on the http server");
    let ca = std::fs::read_to_string(&s3.ca_pem).expect("the lab's S3 CA");
    write(&lab, "master-1", CA, &ca);
    let ep = s3.https_endpoint.clone();
    let config = format!(
        "cluster-init: true\ntoken: s3cret\netcd-s3: true\netcd-s3-endpoint: {ep}\netcd-s3-endpoint-ca: {CA}\netcd-s3-bucket: etcd\netcd-s3-folder: k3s\netcd-s3-access-key: {}\netcd-s3-secret-key: {}\n",
        s3.access_key, s3.secret_key
    );
    install(&lab, "master-1", "server", &config);
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");

    // save: the CLI reads the etcd-s3 keys of config.yaml; saved locally and in S3.
    let names = save_ok(&lab, "");
    assert_eq!(names.len(), 2, "local and S3: {names:?}");
    assert_eq!(names[0], names[1]);
    let name = names[0].clone();
    let size = ok(&lab, "master-1", &format!("stat -c %s {SNAPS}/{name}"));
    let objects = s3.list(true, "etcd", "k3s/").expect("list");
    let obj = objects
        .iter()
        .find(|o| o.key == format!("k3s/{name}"))
        .unwrap_or_else(|| panic!("no k3s/{name} in {objects:?}"));
    assert_eq!(obj.size.to_string(), size.trim());
    let uid = ok(
        &lab,
        "master-1",
        "k3s kubectl get ns kube-system -o jsonpath='{.metadata.uid}'",
    );
    assert_eq!(obj.metadata.get("k3s-cluster-id"), Some(&uid));
    assert_eq!(
        obj.metadata.get("k3s-token-hash").map(String::as_str),
        Some(&sha256_hex(b"s3cret")[..12])
    );
    assert_eq!(
        obj.metadata
            .get("k3s-node-name")
            .map(String::as_str)
            .unwrap_or(""),
        "",
        "NODE_NAME is not set when k3s's S3 controller starts"
    );
    let body = s3.get(true, "etcd", &format!("k3s/{name}")).expect("get");
    assert!(serde_json::from_slice::<Value>(&body).is_ok());

    // The ETCDSnapshotFile of the S3 copy.
    let location = format!("s3://etcd/k3s/{name}");
    let items = snapshot_files(&lab);
    let cr = s3_record(&items, &name).unwrap_or_else(|| panic!("no S3 record: {items:?}"));
    let digest = sha256_hex(format!("s3{location}").as_bytes());
    assert_eq!(
        cr["metadata"]["name"],
        format!("s3-{name}-{}", &digest[..6])
    );
    assert_eq!(cr["spec"]["nodeName"], "s3");
    assert_eq!(cr["spec"]["location"], location.as_str());
    assert_eq!(
        cr["spec"]["s3"],
        serde_json::json!({"bucket": "etcd", "endpoint": ep, "endpointCA": CA, "prefix": "k3s", "region": "us-east-1"})
    );
    assert_eq!(
        cr["metadata"]["annotations"]["etcd.k3s.cattle.io/snapshot-token-hash"],
        sha256_hex(b"s3cret")[..12]
    );
    assert_eq!(cr["status"]["readyToUse"], true);
    assert_eq!(cr["status"]["size"], size.trim());

    // ls: the S3 row before the file row of the same snapshot.
    let table = ok(&lab, "master-1", "k3s etcd-snapshot ls 2>/dev/null");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with(&name)).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].contains(&location) && rows[1].contains("file://"),
        "{table}"
    );
    let o = sh(&lab, "master-1", "k3s etcd-snapshot ls -o json 2>/dev/null");
    let list: Value = serde_json::from_slice(&o.stdout).expect("ls json");
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["metadata"]["name"] == format!("s3-{name}")));

    // Refusals: no client, no save (not even locally), in k3s's words on the CLI.
    let before = ok(&lab, "master-1", &format!("ls {SNAPS} | wc -l"));
    let o = sh(&lab, "master-1", "k3s etcd-snapshot save --s3-bucket nope");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("level=fatal msg=\"Error: see server log for details: failed to initialize S3 client: bucket nope does not exist\""),
        "{}",
        text(&o)
    );
    let o = sh(&lab, "master-1", "k3s etcd-snapshot save --s3-endpoint-ca=");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("failed to initialize S3 client: failed to test for existence of bucket etcd: Head \\\"https://{ep}/etcd/\\\": tls: failed to verify certificate: x509: certificate signed by unknown authority")),
        "{}",
        text(&o)
    );
    assert_eq!(ok(&lab, "master-1", &format!("ls {SNAPS} | wc -l")), before);
    // Plain HTTP (etcd-s3-insecure) to the other server.
    let names = save_ok(
        &lab,
        &format!(
            "--name plain --s3-insecure --s3-endpoint {} --s3-bucket plain",
            s3.http_endpoint
        ),
    );
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(s3
        .list(false, "plain", "k3s/plain-")
        .expect("list")
        .iter()
        .any(|o| o.key == format!("k3s/{}", names[0])));

    // prune: S3 retention counts every server's objects with the prefix, newest first.
    let mut p = Vec::new();
    for _ in 0..3 {
        p.push(save_ok(&lab, "--name p")[0].clone());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let o = sh(
        &lab,
        "master-1",
        "k3s etcd-snapshot prune --name p --s3-retention 1 --snapshot-retention 10",
    );
    assert!(o.status.success(), "{}", text(&o));
    // Newest first past the retention (`s3.go` 424-437).
    assert_eq!(
        deleted(&text(&o)),
        vec![p[1].clone(), p[0].clone()],
        "{}",
        text(&o)
    );
    let keys: Vec<String> = s3
        .list(true, "etcd", "k3s/p-")
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, vec![format!("k3s/{}", p[2])]);
    let local = ok(&lab, "master-1", &format!("ls {SNAPS}"));
    assert!(
        p.iter().all(|n| local.contains(n.as_str())),
        "local retention 10: {local}"
    );
    let items = snapshot_files(&lab);
    assert!(s3_record(&items, &p[0]).is_none() && s3_record(&items, &p[2]).is_some());

    // delete: the local file and the S3 object, each reported.
    let o = sh(
        &lab,
        "master-1",
        &format!("k3s etcd-snapshot delete {}", p[2]),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(deleted(&text(&o)), vec![p[2].clone(), p[2].clone()]);
    assert!(s3.list(true, "etcd", "k3s/p-").expect("list").is_empty());
    assert!(s3_record(&snapshot_files(&lab), &p[2]).is_none());

    // A compressed snapshot in S3, for the restore below.
    let zipped = save_ok(&lab, "--name z --snapshot-compress")[0].clone();
    assert!(zipped.ends_with(".zip"), "{zipped}");
    ok(
        &lab,
        "master-1",
        &format!("rm {SNAPS}/{zipped} {SNAPS}/{name}"),
    );

    // Restore from S3: stop the server, reset with the object's name.
    ok(&lab, "master-1", "systemctl stop k3s");
    let o = sh(
        &lab,
        "master-1",
        &format!("k3s server --cluster-reset --cluster-reset-restore-path={zipped}"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let doubled = format!("{SNAPS}{SNAPS}/{zipped}");
    assert!(
        text(&o).contains(&format!("Retrieving etcd snapshot {zipped} from S3"))
            && text(&o).contains(&format!(
                "level=fatal msg=\"Error: starting kubernetes: failed to start cluster: start managed database: open {doubled}: no such file or directory\""
            )),
        "{}",
        text(&o)
    );
    assert_eq!(
        ok(&lab, "master-1", &format!("stat -c %a {SNAPS}/{zipped}")).trim(),
        "600",
        "downloaded before the restore failed"
    );
    let o = sh(
        &lab,
        "master-1",
        &format!("k3s server --cluster-reset --cluster-reset-restore-path={name}"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("S3 download complete for {SNAPS}/{name}"))
            && text(&o).contains(RESET_DONE),
        "{}",
        text(&o)
    );
    assert_eq!(
        ok(&lab, "master-1", &format!("stat -c %a {SNAPS}/{name}")).trim(),
        "600"
    );
    ok(
        &lab,
        "master-1",
        "test -d /var/lib/rancher/k3s/server/db/.metadata",
    );
}

#[test]
fn scheduled_save_without_a_bucket_records_the_failure() {
    let lab = lab(LabSpec::new("ds3-sched", 1));
    let s3 = lab.s3_up().expect("s3 up");
    let config = format!(
        "cluster-init: true\ntoken: s3cret\netcd-snapshot-schedule-cron: \"* * * * *\"\netcd-s3: true\netcd-s3-insecure: true\netcd-s3-endpoint: {}\netcd-s3-bucket: missing\n",
        s3.http_endpoint
    );
    install(&lab, "master-1", "server", &config);
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    let mut record = Value::Null;
    wait_for(
        "the scheduled snapshot's S3 failure record",
        Duration::from_secs(100),
        || {
            record = snapshot_files(&lab)
                .into_iter()
                .find(|o| {
                    o["metadata"]["labels"]["etcd.k3s.cattle.io/snapshot-storage-node"] == "s3"
                })
                .unwrap_or(Value::Null);
            !record.is_null()
        },
    );
    let name = record["spec"]["snapshotName"].as_str().unwrap().to_string();
    assert!(name.starts_with("etcd-snapshot-master-1-"), "{record}");
    assert_eq!(record["status"]["readyToUse"], false);
    assert_eq!(record["spec"]["location"], "");
    assert_eq!(
        record["status"]["error"]["message"],
        "failed to initialize S3 client: bucket missing does not exist"
    );
    let digest = sha256_hex(b"s3");
    assert_eq!(
        record["metadata"]["name"],
        format!("s3-{name}-{}", &digest[..6])
    );
    // The local save happened all the same.
    ok(&lab, "master-1", &format!("test -f {SNAPS}/{name}"));
    let j = journal(&lab, "master-1", "server");
    assert!(
        j.contains(
            "level=warning msg=\"Unable to initialize S3 client: bucket missing does not exist\""
        ),
        "{j}"
    );
}

/// The request line moto logged for the PUT of `key`.
fn put_line(lab: &Lab, key: &str) -> String {
    let log = std::fs::read_to_string(lab.dir().join("s3/moto-http.log")).unwrap_or_default();
    log.lines()
        .find(|l| l.contains(&format!("\"PUT /etcd/{key}")))
        .unwrap_or_else(|| panic!("no PUT of {key} in moto's log:\n{log}"))
        .to_string()
}

#[test]
fn credentials_static_then_shared_file_then_anonymous() {
    let lab = lab(LabSpec::new("ds3-creds", 1));
    let s3 = lab.s3_up().expect("s3 up");
    s3.create_bucket(false, "etcd").expect("bucket");
    let config = format!(
        "cluster-init: true\ntoken: s3cret\netcd-s3: true\netcd-s3-insecure: true\netcd-s3-endpoint: {}\netcd-s3-bucket: etcd\n",
        s3.http_endpoint
    );
    install(&lab, "master-1", "server", &config);
    // The server runs as root (User=root in the unit), so minio's FileAWSCredentials reads
    // /root/.aws/credentials.
    write(
        &lab,
        "master-1",
        "/root/.aws/credentials",
        "[default]\naws_access_key_id = fromfile\naws_secret_access_key = s\n",
    );
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    let from_file = save_ok(&lab, "")[0].clone();
    assert!(put_line(&lab, &from_file).contains("X-Amz-Credential=fromfile/"));
    let static_keys = save_ok(
        &lab,
        "--name static --s3-access-key static --s3-secret-key s",
    )[0]
    .clone();
    assert!(put_line(&lab, &static_keys).contains("X-Amz-Credential=static/"));
    // No keys anywhere (and no instance metadata service): unsigned requests, from the same
    // cached client, since minio asks its credentials chain again for every request.
    ok(&lab, "master-1", "rm /root/.aws/credentials");
    let anonymous = save_ok(&lab, "--name anon")[0].clone();
    let line = put_line(&lab, &anonymous);
    assert!(!line.contains("X-Amz-"), "{line}");
}
