//! `k3s agent`: join a server with the token, register the Node, heartbeat.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, Op};
use crate::config::Config;
use crate::nodes::{self, NodeInfo};
use crate::{http, token, util, version, version_line};

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

fn try_join(
    url: &str,
    addr: &str,
    t: &token::Token,
    info: &NodeInfo,
) -> Result<Vec<String>, String> {
    let ca = http::call(addr, "GET", "/cacerts", &[], &[], Duration::from_secs(10))
        .map_err(|e| format!("Failed to validate connection to cluster at {url}: failed to get CA certs: Get \"{url}/cacerts\": {e}"))?;
    if let Some(h) = &t.ca_hash {
        let actual = token::ca_hash(&ca.body);
        if *h != actual {
            let _ = http::call(
                addr,
                "POST",
                "/v1/refused",
                &[],
                json!({"name": info.name, "reason": "token CA hash mismatch"})
                    .to_string()
                    .as_bytes(),
                Duration::from_secs(5),
            );
            return Err(format!("Failed to validate connection to cluster at {url}: token CA hash does not match the Cluster CA certificate hash: {h} != {actual}"));
        }
    }
    let auth = http::basic_auth("node", &t.password);
    let op = Op::Join {
        role: "agent".into(),
        node: info.clone(),
        member: None,
    };
    match common::post_op(addr, &auth, &op, Duration::from_secs(30)) {
        Ok((200, v)) => Ok(v
            .get("servers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_else(|| vec![addr.to_string()])),
        Ok((401, _)) => Err(format!(
            "Failed to validate connection to cluster at {url}: token is not valid: {url}/v1-k3s/config: 401 Unauthorized"
        )),
        Ok((403, v)) => Err(common::resp_message(&v)),
        Ok((_, v)) => Err(format!("Failed to connect to {url}: {}", common::resp_message(&v))),
        Err(e) => Err(format!("Failed to validate connection to cluster at {url}: {e}")),
    }
}

/// Sends to the first server that answers; returns its reply.
fn send(servers: &[String], auth: &str, op: &Op) -> Option<Value> {
    for s in servers {
        if let Ok((200, v)) = common::post_op(s, auth, op, Duration::from_secs(10)) {
            return Some(v);
        }
    }
    None
}

pub fn run(cfg: Config) -> ! {
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
    let t = token::parse(&tok);
    let addr = http::host_port(&url);
    let ip = common::local_ip(&cfg, Some(&url));
    let info = node_info(&cfg, &name, &ip);
    let mut servers = loop {
        match try_join(&url, &addr, &t, &info) {
            Ok(s) => break s,
            Err(e) => util::error(e),
        }
        if common::sleep_or_stop(Duration::from_secs(5)) {
            std::process::exit(0);
        }
    };
    if !servers.contains(&addr) {
        servers.push(addr.clone());
    }
    let dd = cfg.data_dir().join("agent");
    let _ = util::write_file(
        &dd.join("double/servers.json"),
        serde_json::to_string(&servers)
            .unwrap_or_default()
            .as_bytes(),
        0o600,
    );
    let auth = http::basic_auth("node", &t.password);
    send(
        &servers,
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
        match send(&servers, &auth, &Op::Heartbeat { node: name.clone() }) {
            Some(v) => {
                // Learn servers added later (the agent's load balancer does this in k3s).
                for s in v
                    .get("servers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(s) = s.as_str() {
                        if !servers.iter().any(|x| x == s) {
                            servers.push(s.to_string());
                        }
                    }
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
        &servers,
        &auth,
        &Op::Event {
            node: name,
            kind: "stop".into(),
            detail: json!({"role": "agent"}),
        },
    );
    std::process::exit(0);
}
