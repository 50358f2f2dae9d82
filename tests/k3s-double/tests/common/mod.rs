//! What the double's lab tests share: a lab per test, commands in its nodes, the double
//! installed as install.sh leaves k3s, and waits.
#![allow(dead_code)]

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::lab::{build_double, Lab, LabGuard, LabSpec, DEFAULT_K3S_VERSION};

pub fn lab(spec: LabSpec) -> LabGuard {
    Lab::down_by_name(&spec.name).expect("clearing a leftover lab");
    LabGuard::up(&spec).unwrap_or_else(|e| panic!("lab up {}: {e:#}", spec.name))
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn sh(lab: &Lab, node: &str, script: &str) -> Output {
    lab.exec(node, &["sh", "-c", script]).expect("exec")
}

pub fn ok(lab: &Lab, node: &str, script: &str) -> String {
    let o = sh(lab, node, script);
    assert!(
        o.status.success(),
        "{node}: `{script}` failed: {}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn write(lab: &Lab, node: &str, path: &str, content: &str) {
    let o = lab
        .exec_stdin(
            node,
            &[
                "sh",
                "-c",
                &format!("mkdir -p \"$(dirname {path})\" && cat > {path}"),
            ],
            content.as_bytes(),
        )
        .expect("exec");
    assert!(o.status.success(), "writing {path} on {node}: {}", text(&o));
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn kubectl(lab: &Lab, node: &str, args: &str) -> Output {
    sh(lab, node, &format!("k3s kubectl {args}"))
}

pub fn members(lab: &Lab, server: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(
        lab,
        server,
        "cat /var/lib/rancher/k3s/server/double/members.json",
    ))
    .expect("members")
    .as_array()
    .cloned()
    .unwrap_or_default()
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The unit install.sh writes (reference/k3s-facts.md §2.2), for `k3s` or `k3s-agent`.
pub fn unit(role: &str) -> String {
    let svc = if role == "server" { "k3s" } else { "k3s-agent" };
    format!(
        "[Unit]\nDescription=Lightweight Kubernetes\nDocumentation=https://k3s.io\nWants=network-online.target\nAfter=network-online.target\n\n[Install]\nWantedBy=multi-user.target\n\n[Service]\nType=notify\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/sysconfig/%N\nEnvironmentFile=-/etc/systemd/system/{svc}.service.env\nKillMode=process\nDelegate=yes\nUser=root\n# Having non-zero Limit*s causes performance problems due to accounting overhead\n# in the kernel. We recommend using cgroups to do container-local accounting.\nLimitNOFILE=1048576\nLimitNPROC=infinity\nLimitCORE=infinity\nTasksMax=infinity\nTimeoutStartSec=0\nRestart=always\nRestartSec=5s\nExecStartPre=-/sbin/modprobe br_netfilter\nExecStartPre=-/sbin/modprobe overlay\nExecStart=/usr/local/bin/k3s \\\n    {role} \\\n\n"
    )
}

pub fn install(lab: &Lab, node: &str, role: &str, config: &str) {
    let bin = build_double(DEFAULT_K3S_VERSION).expect("building the double");
    let bytes = std::fs::read(&bin).expect("reading the double");
    let o = lab
        .exec_stdin(node, &["sh", "-c", "cat > /usr/local/bin/k3s.tmp && chmod 755 /usr/local/bin/k3s.tmp && mv /usr/local/bin/k3s.tmp /usr/local/bin/k3s && ln -sf k3s /usr/local/bin/kubectl"], &bytes)
        .expect("exec");
    assert!(o.status.success(), "{}", text(&o));
    write(
        lab,
        node,
        &format!("/etc/systemd/system/{}.service", svc(role)),
        &unit(role),
    );
    write(lab, node, "/etc/rancher/k3s/config.yaml", config);
}

pub fn start(lab: &Lab, node: &str, role: &str) {
    let s = svc(role);
    ok(lab, node, &format!("systemctl daemon-reload && systemctl enable {s} 2>/dev/null; systemctl start --no-block {s}"));
}

pub fn state(lab: &Lab, node: &str, role: &str) -> String {
    String::from_utf8_lossy(&sh(lab, node, &format!("systemctl is-active {}", svc(role))).stdout)
        .trim()
        .to_string()
}

pub fn wait_active(lab: &Lab, node: &str, role: &str) {
    wait_for(
        &format!("{} on {node} to be active", svc(role)),
        Duration::from_secs(60),
        || state(lab, node, role) == "active",
    );
}

pub fn journal(lab: &Lab, node: &str, role: &str) -> String {
    ok(
        lab,
        node,
        &format!("journalctl -u {} --no-pager -n 400", svc(role)),
    )
}

pub fn svc(role: &str) -> &'static str {
    if role == "server" {
        "k3s"
    } else {
        "k3s-agent"
    }
}

/// A lab `name` of three servers running the double with embedded etcd: master-1 starts the
/// cluster (token `s3cret`), the others join through it.
pub fn three_servers(name: &str) -> LabGuard {
    let mut spec = LabSpec::new(name, 3);
    spec.servers = 3;
    let lab = lab(spec);
    let first = lab.node("master-1").expect("master-1").addr;
    install(
        &lab,
        "master-1",
        "server",
        "cluster-init: true\ntoken: s3cret\n",
    );
    start(&lab, "master-1", "server");
    wait_active(&lab, "master-1", "server");
    for n in ["master-2", "master-3"] {
        install(
            &lab,
            n,
            "server",
            &format!("server: https://{first}:6443\ntoken: s3cret\n"),
        );
        start(&lab, n, "server");
        wait_active(&lab, n, "server");
    }
    lab
}
