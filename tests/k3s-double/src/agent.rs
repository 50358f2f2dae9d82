//! `k3s agent`: the client load balancer on 127.0.0.1:6444, token validation through it, node
//! registration, heartbeats.
//!
//! As in k3s, the agent talks to the servers through its local load balancer
//! (`pkg/agent/proxy/apiproxy.go` NewSupervisorProxy; `pkg/agent/run.go`
//! createProxyAndValidateToken), so the serving certificate is checked against 127.0.0.1, not
//! against the `server:` address; with `disable-apiserver-lb` it is checked against that
//! address.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, Op};
use crate::config::Config;
use crate::join::{self, Validated};
use crate::net::client::{self, Target};
use crate::nodes::{self, NodeInfo};
use crate::registries;
use crate::{util, version, version_line};

fn node_info(cfg: &Config, name: &str, ip: &str) -> NodeInfo {
    let (arch, kernel, os) = common::os_facts();
    NodeInfo {
        name: name.to_string(),
        password: common::node_password(),
        role: "agent".into(),
        labels: cfg.list("node-label"),
        taints: cfg.list("node-taint"),
        internal_ip: ip.to_string(),
        external_ip: cfg.list("node-external-ip").first().cloned(),
        etcd: false,
        args: common::node_args("agent", cfg),
        env: common::node_env(),
        version: version().to_string(),
        arch,
        kernel,
        os_image: os,
        member: String::new(),
    }
}

/// The agent's load balancer: TCP to the servers it knows, the `server:` address last.
fn start_lb(port: u16, default: String, servers: Arc<Mutex<Vec<String>>>) -> Result<(), String> {
    let rt = crate::net::rt();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .map_err(|e| format!("failed to listen on 127.0.0.1:{port}: {e}"))?;
    rt.spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let mut candidates = servers.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if !candidates.contains(&default) {
                candidates.push(default.clone());
            }
            tokio::spawn(async move {
                for c in candidates {
                    if let Ok(Ok(mut out)) = tokio::time::timeout(
                        Duration::from_secs(3),
                        tokio::net::TcpStream::connect(&c),
                    )
                    .await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

/// What the server's answer tells the agent: the servers for its load balancer, and whether
/// the embedded registry is on (k3s: `controlConfig.EmbeddedRegistry` from `/v1-k3s/config`,
/// `pkg/agent/config/config.go`:538), with the supervisor port it is served on.
struct Joined {
    servers: Vec<String>,
    embedded: Option<u16>,
}

/// Registers the node (k3s's config.Get: retried forever while the server says no).
fn register(v: &Validated, lb_url: &str, info: &NodeInfo) -> Result<Joined, String> {
    let auth = client::basic_auth("node", &v.password);
    let op = Op::Join {
        role: "agent".into(),
        node: info.clone(),
        member: None,
    };
    let cfg_url = format!("{lb_url}/v1-k3s/config");
    match common::post_op(&v.target, &v.trust(), &auth, &op, Duration::from_secs(30)) {
        Ok((200, r)) => Ok(Joined {
            servers: r
                .get("servers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            embedded: r
                .get("embedded_registry")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok()),
        }),
        Ok((401, _)) => Err(format!(
            "failed to retrieve configuration from server: {cfg_url}: 401 Unauthorized"
        )),
        Ok((403, r)) => Err(common::resp_message(&r)),
        Ok((_, r)) => Err(common::resp_message(&r)),
        Err(e) => Err(format!(
            "failed to retrieve configuration from server: {}",
            e.go("GET", &cfg_url)
        )),
    }
}

fn send(v: &Validated, auth: &str, op: &Op) -> Option<Value> {
    match common::post_op(&v.target, &v.trust(), auth, op, Duration::from_secs(10)) {
        Ok((200, r)) => Some(r),
        _ => None,
    }
}

pub fn run(cfg: Config) -> ! {
    crate::logging::init(&cfg);
    common::install_signal_handlers();
    util::info(format!("Starting k3s agent {}", version_line()));
    let Some(url) = cfg.get("server").map(str::to_string) else {
        util::fatal("--server is required")
    };
    let tok = cfg.get("token").map(str::to_string).or_else(|| {
        cfg.get("token-file")
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string())
    });
    let Some(tok) = tok else {
        util::fatal("--token is required")
    };
    let name = common::node_name(&cfg);
    if let Err(e) = nodes::check_kubelet_labels(&cfg.list("node-label")) {
        util::fatal(format!(
            "kubelet exited: failed to validate kubelet flags: {e}"
        ));
    }
    let default = match Target::from_url(&url) {
        Ok(t) => t.authority(),
        Err(e) => util::fatal(e),
    };
    let servers: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let supervisor = if cfg.bool("disable-apiserver-lb") {
        url.clone()
    } else {
        let port: u16 = cfg
            .get("lb-server-port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(6444);
        if let Err(e) = start_lb(port, default.clone(), servers.clone()) {
            util::fatal(e);
        }
        format!("https://127.0.0.1:{port}")
    };
    let v = loop {
        match join::validate(&supervisor, &tok) {
            Ok(v) => break v,
            Err(e) => {
                if e.starts_with("token CA hash does not match") {
                    // The double's event log records refusals (tests read them).
                    if let Ok(t) = Target::from_url(&supervisor) {
                        let body =
                            json!({"name": name, "reason": "token CA hash mismatch"}).to_string();
                        let _ = client::call(
                            &t,
                            &crate::net::tls::Trust::Insecure,
                            None,
                            client::Request::post("/v1-k3s-double/refused", body.into_bytes()),
                            Duration::from_secs(5),
                        );
                    }
                }
                util::error(format!(
                    "Failed to validate connection to cluster at {url}: {e}"
                ))
            }
        }
        if common::sleep_or_stop(Duration::from_secs(2)) {
            std::process::exit(0);
        }
    };
    let ip = common::local_ip(&cfg, Some(&url));
    let info = node_info(&cfg, &name, &ip);
    // k3s's config.get reads registries.yaml on every attempt, before it asks for the
    // kubelet's certificates (the node-password check): a file that does not parse keeps the
    // node from registering (`pkg/agent/config/config.go`:698 and 734; src/registries.rs).
    let (learned, registry, embedded) = loop {
        let attempt = registries::load(&registries::path(&cfg))
            .and_then(|r| register(&v, &supervisor, &info).map(|j| (j, r)));
        match attempt {
            Ok((j, r)) => break (j.servers, r, j.embedded),
            Err(e) => util::info(format!(
                "Waiting to retrieve agent configuration; server is not ready: {e}"
            )),
        }
        if common::sleep_or_stop(Duration::from_secs(5)) {
            std::process::exit(0);
        }
    };
    registries::apply(
        &cfg,
        registry,
        embedded.map(|port| registries::Embedded::new(&cfg.data_dir(), port)),
        &ip,
    );
    *servers.lock().unwrap_or_else(|p| p.into_inner()) = learned.clone();
    let dd = cfg.data_dir().join("agent");
    let mut known = learned;
    if !known.contains(&default) {
        known.push(default.clone());
    }
    let _ = util::write_file(
        &dd.join("double/servers.json"),
        serde_json::to_string(&known).unwrap_or_default().as_bytes(),
        0o600,
    );
    let auth = client::basic_auth("node", &v.password);
    send(
        &v,
        &auth,
        &Op::Event {
            node: name.clone(),
            kind: "start".into(),
            detail: json!({"role": "agent", "version": version()}),
        },
    );
    util::info(format!(
        "k3s agent is up and running; node {name} registered"
    ));
    crate::notify::ready();
    loop {
        match send(&v, &auth, &Op::Heartbeat { node: name.clone() }) {
            Some(r) => {
                // Learn servers added later (the agent's load balancer does this in k3s).
                let list: Vec<String> = r
                    .get("servers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect();
                if !list.is_empty() {
                    *servers.lock().unwrap_or_else(|p| p.into_inner()) = list;
                }
            }
            None => util::warn("failed to post node status to any server"),
        }
        if common::sleep_or_stop(Duration::from_secs(5)) {
            break;
        }
    }
    util::info("Received SIGTERM, shutting down");
    send(
        &v,
        &auth,
        &Op::Event {
            node: name,
            kind: "stop".into(),
            detail: json!({"role": "agent"}),
        },
    );
    std::process::exit(0);
}
