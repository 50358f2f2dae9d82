//! The lab's S3 servers (moto, xtask/src/lab/s3.rs) on a real 1-node lab: reachable from a
//! node over HTTPS with the lab's CA (and refused without it) and over HTTP, inspected through
//! the S3 API with boto3, stopped with the lab. Needs root, like every lab test.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};
use xtask::lab::{Lab, LabGuard, LabSpec, S3Server, S3_HTTPS_PORT, S3_HTTP_PORT};

fn lab(spec: LabSpec) -> LabGuard {
    Lab::down_by_name(&spec.name).expect("clearing a leftover lab");
    let start = Instant::now();
    let lab = LabGuard::up(&spec).unwrap_or_else(|e| panic!("lab up {}: {e:#}", spec.name));
    eprintln!(
        "lab {} up in {:.1}s",
        spec.name,
        start.elapsed().as_secs_f64()
    );
    lab
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn node_sh(lab: &Lab, script: &str) -> Output {
    lab.exec("master-1", &["sh", "-c", script]).expect("exec")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn listening(endpoint: &str) -> bool {
    let addr: SocketAddr = endpoint.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn s3_https_with_the_lab_ca_and_http_from_a_node_inspected_with_boto3() {
    let lab = lab(LabSpec::new("xt-s3", 1));
    let start = Instant::now();
    let s3 = lab.s3_up().unwrap_or_else(|e| panic!("s3 up: {e:#}"));
    eprintln!("s3 up in {:.1}s: {s3:?}", start.elapsed().as_secs_f64());
    let host = lab.host_addr();
    assert_eq!(s3.https_endpoint, format!("{host}:{S3_HTTPS_PORT}"));
    assert_eq!(s3.http_endpoint, format!("{host}:{S3_HTTP_PORT}"));
    assert_eq!(s3.region, "us-east-1");
    assert!(s3.ca_pem.starts_with(lab.dir()), "{}", s3.ca_pem.display());
    let written: S3Server =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("s3.json")).unwrap()).unwrap();
    assert_eq!(written, s3);
    assert_eq!(lab.s3(), Some(s3.clone()));
    assert_eq!(lab.s3_running(), (true, true));

    // Idempotent: the same servers, not new ones.
    let pids = lab.s3_pids();
    assert_eq!(pids.len(), 2);
    assert_eq!(lab.s3_up().unwrap(), s3);
    assert_eq!(lab.s3_pids(), pids);
    for p in &pids {
        assert!(lab.recorded_pids().contains(p));
    }

    // Buckets through boto3: two servers, each with its own.
    s3.create_bucket(true, "etcd-snapshots").unwrap();
    s3.create_bucket(false, "plain-snapshots").unwrap();
    assert_eq!(s3.list_buckets(true).unwrap(), ["etcd-snapshots"]);
    assert_eq!(s3.list_buckets(false).unwrap(), ["plain-snapshots"]);

    // From the node: HTTPS with the lab's CA, as k3s would be given it (etcd-s3-endpoint-ca).
    let ca = std::fs::read(&s3.ca_pem).unwrap();
    ok(lab
        .exec_stdin("master-1", &["sh", "-c", "cat > /tmp/lab-s3-ca.pem"], &ca)
        .unwrap());
    let https = s3.url(true);
    let listing = ok(node_sh(
        &lab,
        &format!("curl -fsS --cacert /tmp/lab-s3-ca.pem {https}/"),
    ));
    assert!(listing.contains("<Name>etcd-snapshots</Name>"), "{listing}");
    // Without it: refused, the certificate is not one the node trusts (curl exit 60).
    let refused = node_sh(&lab, &format!("curl -sS {https}/"));
    assert_eq!(refused.status.code(), Some(60), "{}", text(&refused));
    assert!(text(&refused).contains("certificate"), "{}", text(&refused));
    // Plain HTTP.
    let http = s3.url(false);
    let listing = ok(node_sh(&lab, &format!("curl -fsS {http}/")));
    assert!(
        listing.contains("<Name>plain-snapshots</Name>") && !listing.contains("etcd-snapshots"),
        "{listing}"
    );

    // An upload from the node (path style, user metadata as k3s sets it), seen with boto3.
    ok(node_sh(
        &lab,
        &format!(
            "printf 'snapshot from the node' | curl -fsS --cacert /tmp/lab-s3-ca.pem -T - \
             -H 'x-amz-meta-node-name: master-1' {https}/etcd-snapshots/lab/on-demand-master-1"
        ),
    ));
    let objects = s3.list(true, "etcd-snapshots", "lab/").unwrap();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let o = &objects[0];
    assert_eq!(o.key, "lab/on-demand-master-1");
    assert_eq!(o.size, "snapshot from the node".len() as u64);
    assert_eq!(
        o.metadata,
        BTreeMap::from([("node-name".to_string(), "master-1".to_string())])
    );
    assert!(
        o.last_modified.ends_with('Z') && o.last_modified.contains('T'),
        "{}",
        o.last_modified
    );
    assert_eq!(
        s3.get(true, "etcd-snapshots", &o.key).unwrap(),
        b"snapshot from the node"
    );

    // put/get/list/delete on both servers, binary-safe.
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for (https, bucket) in [(true, "etcd-snapshots"), (false, "plain-snapshots")] {
        let meta = BTreeMap::from([("cluster-id".to_string(), "c-1".to_string())]);
        s3.put_with_metadata(https, bucket, "dir/a", &body, &meta)
            .unwrap();
        s3.put(https, bucket, "dir/b", b"").unwrap();
        assert_eq!(s3.get(https, bucket, "dir/a").unwrap(), body);
        let listed = s3.list(https, bucket, "dir/").unwrap();
        let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(keys, [("dir/a", 70_000), ("dir/b", 0)]);
        assert_eq!(listed[0].metadata, meta);
        assert!(listed[1].metadata.is_empty());
        s3.delete(https, bucket, "dir/a").unwrap();
        let keys: Vec<String> = s3
            .list(https, bucket, "dir/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["dir/b"]);
        let err = s3.get(https, bucket, "dir/a").unwrap_err();
        assert!(format!("{err:#}").contains("NoSuchKey"), "{err:#}");
    }

    // s3_down stops both, s3_up starts new ones with the same CA and keys (buckets are gone:
    // moto keeps them in memory).
    lab.s3_down().unwrap();
    for p in &pids {
        assert!(!pid_alive(*p), "S3 server {p} still alive after s3_down");
    }
    assert_eq!(lab.s3_running(), (false, false));
    assert!(lab.s3_pids().is_empty());
    assert!(!listening(&s3.https_endpoint) && !listening(&s3.http_endpoint));
    assert_eq!(lab.s3_up().unwrap(), s3);
    assert_eq!(std::fs::read(&s3.ca_pem).unwrap(), ca);
    assert!(s3.list_buckets(true).unwrap().is_empty());
    let pids = lab.s3_pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| pid_alive(*p)));

    // Dropping the guard tears the lab down, S3 servers included. (No connection attempt
    // afterwards: the lab's host address is gone, so it would leave through the default route.)
    let dir = lab.dir().to_path_buf();
    drop(lab);
    for p in &pids {
        assert!(!pid_alive(*p), "S3 server {p} still alive after lab down");
    }
    assert!(!dir.exists(), "{} left", dir.display());
}
