//! `k3s server`: bootstrap or join, the API, replication, controllers.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{self, Op};
use crate::config::Config;
use crate::http::{self, Request, Response};
use crate::nodes::{self, NodeInfo};
use crate::store::{Bootstrap, Member, State};
use crate::{controllers, deploy, kubectl, token, util, version, version_line};

pub struct Ctx {
    pub cfg: Config,
    pub data_dir: PathBuf,
    pub node: String,
    pub ip: String,
    pub port: u16,
    pub api: String,
    pub disable: Vec<String>,
}

pub struct Server {
    pub ctx: Ctx,
    pub state: Mutex<State>,
    pub peers_up: Mutex<HashMap<String, bool>>,
    pub heartbeats: Mutex<HashMap<String, Instant>>,
    pub leader_since: Mutex<Option<Instant>>,
    push: (Mutex<u64>, Condvar),
    refused: Mutex<HashMap<String, Instant>>,
    events_written: Mutex<u64>,
    member_name: Option<String>,
    /// False until a restarted clustered server has caught up with a quorum of peers.
    synced: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Node,
    Server,
    Admin,
}

fn fake_pem(label: &str, what: &str) -> String {
    let mut body = format!("k3s-double {what} ").into_bytes();
    body.extend(util::random_bytes(180));
    let b = base64::engine::general_purpose::STANDARD.encode(body);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn admin_bearer(admin_key_pem: &[u8]) -> String {
    util::sha256_hex(admin_key_pem)
}

fn read_token(cfg: &Config, key: &str, file_key: &str) -> Option<String> {
    if let Some(t) = cfg.get(key) {
        return Some(t.to_string());
    }
    let f = cfg.get(file_key)?;
    std::fs::read_to_string(f)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Server {
    fn db_dir(&self) -> PathBuf {
        self.ctx.data_dir.join("server/db")
    }

    /// Leader = first member (in join order) that is reachable; self when not clustered.
    pub fn leader(&self, st: &State) -> Option<Member> {
        if st.members.is_empty() {
            return None;
        }
        let up = self.peers_up.lock().expect("peers lock");
        st.members
            .iter()
            .find(|m| m.node == self.ctx.node || *up.get(&m.api).unwrap_or(&false))
            .cloned()
    }

    pub fn is_leader(&self, st: &State) -> bool {
        match self.leader(st) {
            None => true,
            Some(m) => m.node == self.ctx.node,
        }
    }

    pub fn has_quorum(&self, st: &State) -> bool {
        if st.members.len() <= 1 {
            return true;
        }
        let up = self.peers_up.lock().expect("peers lock");
        let n = st
            .members
            .iter()
            .filter(|m| m.node == self.ctx.node || *up.get(&m.api).unwrap_or(&false))
            .count();
        n * 2 > st.members.len()
    }

    fn persist(&self, st: &State) {
        let db = self.db_dir();
        match serde_json::to_vec(st) {
            Ok(b) => {
                if let Err(e) = util::write_file(&db.join("state.json"), &b, 0o600) {
                    util::error(format!("failed to persist state: {e}"));
                }
            }
            Err(e) => util::error(format!("failed to encode state: {e}")),
        }
        let dd = self.ctx.data_dir.join("server/double");
        let members = serde_json::to_vec_pretty(&st.members).unwrap_or_default();
        let _ = util::write_file(&dd.join("members.json"), &members, 0o644);
        let mut written = self.events_written.lock().expect("events lock");
        let path = dd.join("events.jsonl");
        let last = st.events.last().map(|e| e.seq).unwrap_or(0);
        let line = |e: &crate::store::Event| serde_json::to_string(e).unwrap_or_default() + "\n";
        if last < *written || *written == 0 || !path.exists() {
            let all: String = st.events.iter().map(line).collect();
            let _ = util::write_file(&path, all.as_bytes(), 0o644);
        } else if last > *written {
            let new: String = st
                .events
                .iter()
                .filter(|e| e.seq > *written)
                .map(line)
                .collect();
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
                let _ = f.write_all(new.as_bytes());
            }
        }
        *written = last;
    }

    pub fn commit(&self, st: &mut State) {
        if !st.dirty {
            return;
        }
        st.dirty = false;
        st.rev += 1;
        st.writer = self.ctx.node.clone();
        self.persist(st);
        let (lock, cv) = &self.push;
        *lock.lock().expect("push lock") = st.rev;
        cv.notify_all();
    }

    fn adopt(&self, incoming: State) -> bool {
        let mut st = self.state.lock().expect("state lock");
        if !incoming.newer_than(&st) || incoming.cluster_id != st.cluster_id {
            return false;
        }
        // Append to events.jsonl only if the new history extends the one already written.
        let extends = match st.events.last() {
            None => true,
            Some(last) => incoming
                .events
                .iter()
                .find(|e| e.seq == last.seq)
                .map(|e| e.ts == last.ts && e.kind == last.kind && e.node == last.node)
                .unwrap_or(false),
        };
        if !extends {
            *self.events_written.lock().expect("events lock") = 0;
        }
        *st = incoming;
        st.dirty = false;
        self.persist(&st);
        true
    }

    fn auth(&self, req: &Request, st: &State) -> Auth {
        let Some(h) = req.header("Authorization") else {
            return Auth::None;
        };
        if let Some(b) = h.strip_prefix("Bearer ") {
            if b.trim() == admin_bearer(st.bootstrap.admin_key.as_bytes()) {
                return Auth::Admin;
            }
            return Auth::None;
        }
        match http::parse_basic(h) {
            Some((u, p)) if u == "server" && p == st.bootstrap.server_password => Auth::Server,
            Some((u, p))
                if u == "node"
                    && (p == st.bootstrap.agent_password || p == st.bootstrap.server_password) =>
            {
                Auth::Node
            }
            _ => Auth::None,
        }
    }

    fn note_refused(&self, st: &mut State, node: &str, reason: &str) {
        let key = format!("{node}/{reason}");
        let mut seen = self.refused.lock().expect("refused lock");
        let fresh = seen
            .get(&key)
            .map(|t| t.elapsed() > Duration::from_secs(60))
            .unwrap_or(true);
        if fresh {
            seen.insert(key, Instant::now());
            st.event(
                &self.ctx.node,
                "join-refused",
                json!({"name": node, "reason": reason}),
            );
            self.commit(st);
        }
    }

    fn handle(&self, req: Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/cacerts") => {
                let st = self.state.lock().expect("state lock");
                Response::new(200, st.bootstrap.ca_crt.clone())
            }
            ("GET", "/readyz") | ("GET", "/healthz") | ("GET", "/livez") => {
                Response::new(200, "ok")
            }
            ("GET", "/ping") => {
                if !self.synced.load(std::sync::atomic::Ordering::SeqCst) {
                    return Response::new(503, "not synced");
                }
                let st = self.state.lock().expect("state lock");
                Response::json(
                    200,
                    &json!({"epoch": st.epoch, "rev": st.rev, "writer": st.writer, "node": self.ctx.node, "cluster": st.cluster_id}),
                )
            }
            ("GET", "/v1/state") => {
                let st = self.state.lock().expect("state lock");
                if self.auth(&req, &st) != Auth::Server {
                    return Response::new(401, "Unauthorized");
                }
                Response::new(200, serde_json::to_vec(&*st).unwrap_or_default())
            }
            ("POST", "/v1/state") => {
                {
                    let st = self.state.lock().expect("state lock");
                    if self.auth(&req, &st) != Auth::Server {
                        return Response::new(401, "Unauthorized");
                    }
                }
                match serde_json::from_slice::<State>(&req.body) {
                    Ok(s) => {
                        self.adopt(s);
                        Response::new(200, "{}")
                    }
                    Err(e) => Response::new(400, e.to_string()),
                }
            }
            ("POST", "/v1/refused") => {
                let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let node = v
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let mut st = self.state.lock().expect("state lock");
                self.note_refused(&mut st, &node, &reason);
                Response::new(200, "{}")
            }
            ("POST", "/v1/op") => self.handle_op(req),
            _ => Response::new(404, "404 page not found"),
        }
    }

    fn handle_op(&self, req: Request) -> Response {
        let op: Op = match serde_json::from_slice(&req.body) {
            Ok(op) => op,
            Err(e) => return Response::json(400, &json!({"error": e.to_string()})),
        };
        let forwarded = req.header("X-K3s-Double-Forwarded").is_some();
        let origin = req
            .header("X-K3s-Double-Origin")
            .map(str::to_string)
            .unwrap_or_else(|| self.ctx.node.clone());
        let auth_h = req.header("Authorization").unwrap_or("").to_string();
        for _attempt in 0..3 {
            let (auth, leader, quorum) = {
                let st = self.state.lock().expect("state lock");
                (self.auth(&req, &st), self.leader(&st), self.has_quorum(&st))
            };
            if !quorum {
                return Response::json(503, &json!({"error": "etcdserver: request timed out"}));
            }
            match leader {
                Some(l) if l.node != self.ctx.node && !forwarded => {
                    match http::call(
                        &l.api,
                        "POST",
                        "/v1/op",
                        &[
                            ("Authorization", &auth_h),
                            ("X-K3s-Double-Forwarded", "1"),
                            ("X-K3s-Double-Origin", &origin),
                        ],
                        &req.body,
                        Duration::from_secs(3600),
                    ) {
                        Ok(r) => return r,
                        Err(_) => {
                            // The leader just died: mark it down and pick the next one.
                            self.peers_up
                                .lock()
                                .expect("peers lock")
                                .insert(l.api.clone(), false);
                            continue;
                        }
                    }
                }
                _ => return self.execute(op, auth, &origin),
            }
        }
        Response::json(503, &json!({"error": "etcdserver: leader changed"}))
    }

    pub fn execute(&self, op: Op, auth: Auth, origin: &str) -> Response {
        match op {
            Op::Join { role, node, member } => {
                let mut st = self.state.lock().expect("state lock");
                let ok = match role.as_str() {
                    "server" => auth == Auth::Server,
                    _ => auth == Auth::Server || auth == Auth::Node,
                };
                if !ok {
                    self.note_refused(&mut st, &node.name, "invalid token");
                    return Response::json(401, &json!({"error": "Unauthorized"}));
                }
                if let Err(msg) = nodes::register(&mut st, &node, &node.name) {
                    self.note_refused(&mut st, &node.name, "node password rejected");
                    return Response::json(403, &json!({"error": msg}));
                }
                if role == "server" {
                    if let Some(m) = member {
                        if !st.members.iter().any(|x| x.name == m.name) {
                            st.members.retain(|x| x.node != m.node);
                            st.event(
                                &node.name,
                                "etcd-member-added",
                                json!({"member": m.name, "address": m.address}),
                            );
                            st.event(
                                &node.name,
                                "server-join",
                                json!({"name": node.name, "member": m.name}),
                            );
                            st.members.push(m);
                        }
                    }
                } else {
                    st.event(&node.name, "agent-join", json!({"name": node.name}));
                }
                self.heartbeats
                    .lock()
                    .expect("hb lock")
                    .insert(node.name.clone(), Instant::now());
                self.commit(&mut st);
                let servers: Vec<String> = if st.members.is_empty() {
                    vec![self.ctx.api.clone()]
                } else {
                    st.members.iter().map(|m| m.api.clone()).collect()
                };
                let mut resp = json!({"servers": servers});
                if role == "server" {
                    resp["state"] = serde_json::to_value(&*st).unwrap_or(Value::Null);
                }
                Response::json(200, &resp)
            }
            Op::Heartbeat { node } => {
                if auth == Auth::None {
                    return Response::json(401, &json!({"error": "Unauthorized"}));
                }
                let st = self.state.lock().expect("state lock");
                if st.get("", "Node", "", &node).is_none() {
                    return Response::json(
                        404,
                        &json!({"error": format!("nodes \"{node}\" not found")}),
                    );
                }
                self.heartbeats
                    .lock()
                    .expect("hb lock")
                    .insert(node, Instant::now());
                let servers: Vec<String> = st.members.iter().map(|m| m.api.clone()).collect();
                Response::json(200, &json!({"servers": servers}))
            }
            Op::Event { node, kind, detail } => {
                if auth == Auth::None {
                    return Response::json(401, &json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                st.event(&node, &kind, detail);
                self.commit(&mut st);
                Response::json(200, &json!({}))
            }
            Op::Kubectl { req } => {
                if auth != Auth::Admin {
                    return Response::json(
                        200,
                        &json!({"stdout": "", "stderr": "error: You must be logged in to the server (Unauthorized)\n", "code": 1}),
                    );
                }
                let out = kubectl::serve(self, &req, origin);
                Response::json(200, &serde_json::to_value(out).unwrap_or(Value::Null))
            }
            Op::ApplyAddon {
                node,
                name,
                path,
                checksum,
                docs,
            } => {
                if auth != Auth::Server {
                    return Response::json(401, &json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                let r = deploy::apply_addon(&mut st, &node, &name, &path, &checksum, &docs);
                self.commit(&mut st);
                match r {
                    Ok(()) => Response::json(200, &json!({})),
                    Err(e) => Response::json(422, &json!({"error": e})),
                }
            }
            Op::DeleteAddon { node, name } => {
                if auth != Auth::Server {
                    return Response::json(401, &json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                deploy::delete_addon(&mut st, &node, &name);
                self.commit(&mut st);
                Response::json(200, &json!({}))
            }
        }
    }

    /// Runs an op as this server (locally when leader, else through the leader).
    pub fn submit(&self, op: &Op) -> Result<Value, String> {
        let (leader, pw, quorum) = {
            let st = self.state.lock().expect("state lock");
            (
                self.leader(&st),
                st.bootstrap.server_password.clone(),
                self.has_quorum(&st),
            )
        };
        if !quorum {
            return Err("etcdserver: request timed out".into());
        }
        match leader {
            Some(l) if l.node != self.ctx.node => {
                let auth = http::basic_auth("server", &pw);
                match common::post_op(&l.api, &auth, op, Duration::from_secs(30)) {
                    Ok((200, v)) => Ok(v),
                    Ok((_, v)) => Err(common::resp_message(&v)),
                    Err(e) => {
                        self.peers_up
                            .lock()
                            .expect("peers lock")
                            .insert(l.api.clone(), false);
                        Err(e.to_string())
                    }
                }
            }
            _ => {
                let r = self.execute(op.clone(), Auth::Server, &self.ctx.node);
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                if r.status == 200 {
                    Ok(v)
                } else {
                    Err(common::resp_message(&v))
                }
            }
        }
    }
}

fn kubeconfig(ctx: &Ctx, b: &Bootstrap) -> String {
    let e = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let name = ctx.cfg.get("write-kubeconfig-name").unwrap_or("default");
    let host = match ctx.cfg.get("bind-address") {
        Some(a) if a != "0.0.0.0" => a.to_string(),
        _ => "127.0.0.1".into(),
    };
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{host}:{}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: {name}\n  name: {name}\ncurrent-context: {name}\nkind: Config\npreferences: {{}}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        e(&b.ca_crt),
        ctx.port,
        e(&b.admin_crt),
        e(&b.admin_key)
    )
}

fn write_files(ctx: &Ctx, st: &State) -> std::io::Result<()> {
    let b = &st.bootstrap;
    let server = ctx.data_dir.join("server");
    let tls = server.join("tls");
    let ca_path = tls.join("server-ca.crt");
    if std::fs::read_to_string(&ca_path).ok().as_deref() != Some(b.ca_crt.as_str()) {
        util::write_file(&ca_path, b.ca_crt.as_bytes(), 0o644)?;
    }
    let key_path = tls.join("server-ca.key");
    if !key_path.exists() {
        util::write_file(&key_path, b.ca_key.as_bytes(), 0o600)?;
    }
    for (n, data) in [
        ("client-ca.crt", &b.ca_crt),
        ("client-admin.crt", &b.admin_crt),
    ] {
        util::write_file(&tls.join(n), data.as_bytes(), 0o644)?;
    }
    util::write_file(&tls.join("client-admin.key"), b.admin_key.as_bytes(), 0o600)?;
    let hash = token::ca_hash(b.ca_crt.as_bytes());
    let server_token = token::format(&hash, "server", &b.server_password);
    util::write_file(
        &server.join("token"),
        format!("{server_token}\n").as_bytes(),
        0o600,
    )?;
    util::symlink_force("token", &server.join("node-token"))?;
    if b.agent_password != b.server_password {
        let t = token::format(&hash, "node", &b.agent_password);
        util::write_file(
            &server.join("agent-token"),
            format!("{t}\n").as_bytes(),
            0o600,
        )?;
    } else {
        util::symlink_force("token", &server.join("agent-token"))?;
    }
    let passwd = format!(
        "{},node,node,k3s:agent\n{},server,server,k3s:server\n",
        b.agent_password, b.server_password
    );
    util::write_file(&server.join("cred/passwd"), passwd.as_bytes(), 0o600)?;
    let default_kc = Path::new("/etc/rancher/k3s/k3s.yaml");
    let kc_path = ctx
        .cfg
        .get("write-kubeconfig")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_kc.to_path_buf());
    let mode = ctx
        .cfg
        .get("write-kubeconfig-mode")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o600);
    util::write_file(&kc_path, kubeconfig(ctx, b).as_bytes(), mode)?;
    if kc_path != default_kc {
        let _ = util::symlink_force(&kc_path.to_string_lossy(), default_kc);
    }
    Ok(())
}

fn new_cluster(ctx: &Ctx, etcd: bool) -> State {
    let tls = ctx.data_dir.join("server/tls");
    let custom = (
        std::fs::read_to_string(tls.join("server-ca.crt")),
        std::fs::read_to_string(tls.join("server-ca.key")),
    );
    let (ca_crt, ca_key) = match custom {
        (Ok(c), Ok(k)) => {
            util::info("Using existing server CA certificate and key");
            (c, k)
        }
        _ => (
            fake_pem("CERTIFICATE", "k3s-server-ca"),
            fake_pem("EC PRIVATE KEY", "k3s-server-ca"),
        ),
    };
    let server_password = read_token(&ctx.cfg, "token", "token-file")
        .map(|t| token::parse(&t).password)
        .unwrap_or_else(|| util::random_hex(16));
    let agent_password = read_token(&ctx.cfg, "agent-token", "agent-token-file")
        .map(|t| token::parse(&t).password)
        .unwrap_or_else(|| server_password.clone());
    let mut st = State {
        cluster_id: util::random_hex(8),
        bootstrap: Bootstrap {
            ca_crt,
            ca_key,
            admin_crt: fake_pem("CERTIFICATE", "system:admin"),
            admin_key: fake_pem("EC PRIVATE KEY", "system:admin"),
            server_password,
            agent_password,
        },
        ..Default::default()
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        st.ensure_namespace(ns);
    }
    if etcd {
        st.members.push(my_member(ctx));
        st.event(
            &ctx.node,
            "etcd-member-added",
            json!({"member": st.members[0].name, "address": ctx.ip}),
        );
    }
    st.event(
        &ctx.node,
        "cluster-init",
        json!({"etcd": etcd, "name": ctx.node}),
    );
    st
}

fn my_member(ctx: &Ctx) -> Member {
    Member {
        name: format!("{}-{}", ctx.node, util::random_hex(4)),
        node: ctx.node.clone(),
        address: ctx.ip.clone(),
        peer_url: format!("https://{}:2380", ctx.ip),
        client_url: format!("https://{}:2379", ctx.ip),
        api: ctx.api.clone(),
    }
}

fn node_info(ctx: &Ctx, etcd: bool, member: &str) -> NodeInfo {
    let (arch, kernel, os) = common::os_facts();
    NodeInfo {
        name: ctx.node.clone(),
        password: common::node_password(),
        role: "server".into(),
        labels: ctx.cfg.list("node-label"),
        taints: ctx.cfg.list("node-taint"),
        internal_ip: ctx.ip.clone(),
        external_ip: ctx.cfg.list("node-external-ip").first().cloned(),
        etcd,
        args: common::node_args("server", &ctx.cfg),
        env: common::node_env(),
        version: version().to_string(),
        arch,
        kernel,
        os_image: os,
        member: member.to_string(),
    }
}

/// Joins an existing cluster through `server:`; retries forever like k3s.
fn join_cluster(ctx: &Ctx, url: &str, tok: &str) -> (State, Member) {
    let t = token::parse(tok);
    let addr = http::host_port(url);
    let member = my_member(ctx);
    loop {
        match try_join(ctx, &addr, url, &t, &member) {
            Ok(st) => return (st, member),
            Err(e) => util::error(e),
        }
        if common::sleep_or_stop(Duration::from_secs(5)) {
            std::process::exit(0);
        }
    }
}

fn try_join(
    ctx: &Ctx,
    addr: &str,
    url: &str,
    t: &token::Token,
    member: &Member,
) -> Result<State, String> {
    let ca = http::call(addr, "GET", "/cacerts", &[], &[], Duration::from_secs(10))
        .map_err(|e| format!("failed to get CA certs: Get \"{url}/cacerts\": {e}"))?;
    if let Some(h) = &t.ca_hash {
        let actual = token::ca_hash(&ca.body);
        if *h != actual {
            let _ = http::call(
                addr,
                "POST",
                "/v1/refused",
                &[],
                json!({"name": ctx.node, "reason": "token CA hash mismatch"})
                    .to_string()
                    .as_bytes(),
                Duration::from_secs(5),
            );
            return Err(format!(
                "token CA hash does not match the Cluster CA certificate hash: {h} != {actual}"
            ));
        }
    }
    let op = Op::Join {
        role: "server".into(),
        node: node_info(ctx, true, &member.name),
        member: Some(member.clone()),
    };
    let auth = http::basic_auth("server", &t.password);
    match common::post_op(addr, &auth, &op, Duration::from_secs(30)) {
        Ok((200, v)) => {
            serde_json::from_value::<State>(v.get("state").cloned().unwrap_or(Value::Null))
                .map_err(|e| format!("bad bootstrap data: {e}"))
        }
        Ok((401, _)) => Err(format!(
            "failed to get bootstrap data: {url}/v1-k3s/server-bootstrap: 401 Unauthorized"
        )),
        Ok((_, v)) => Err(common::resp_message(&v)),
        Err(e) => Err(format!("failed to join cluster at {url}: {e}")),
    }
}

fn serve_conn(srv: &Server, mut s: TcpStream) {
    match http::read_request(&mut s) {
        Ok(req) => {
            let resp = srv.handle(req);
            let _ = http::write_response(&mut s, &resp);
        }
        Err(_) => {
            let _ = http::write_response(&mut s, &Response::new(400, "bad request"));
        }
    }
}

fn sync_loop(srv: Arc<Server>) {
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let (members, mine, cluster) = {
            let st = srv.state.lock().expect("state lock");
            (
                st.members.clone(),
                (st.epoch, st.rev, st.writer.clone()),
                st.cluster_id.clone(),
            )
        };
        let mut newest: Option<((u64, u64, String), String)> = None;
        for m in members.iter().filter(|m| m.node != srv.ctx.node) {
            let r = http::call(
                &m.api,
                "GET",
                "/ping",
                &[],
                &[],
                Duration::from_millis(1500),
            );
            let info = r
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
            let ok = info
                .as_ref()
                .map(|v| v.get("cluster").and_then(Value::as_str) == Some(cluster.as_str()))
                .unwrap_or(false);
            srv.peers_up
                .lock()
                .expect("peers lock")
                .insert(m.api.clone(), ok);
            if let (true, Some(v)) = (ok, info) {
                let theirs = (
                    v.get("epoch").and_then(Value::as_u64).unwrap_or(0),
                    v.get("rev").and_then(Value::as_u64).unwrap_or(0),
                    v.get("writer")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                );
                if theirs > mine && newest.as_ref().map(|(n, _)| theirs > *n).unwrap_or(true) {
                    newest = Some((theirs, m.api.clone()));
                }
            }
        }
        if let Some((_, api)) = newest {
            let pw = srv
                .state
                .lock()
                .expect("state lock")
                .bootstrap
                .server_password
                .clone();
            let auth = http::basic_auth("server", &pw);
            if let Ok(r) = http::call(
                &api,
                "GET",
                "/v1/state",
                &[("Authorization", &auth)],
                &[],
                Duration::from_secs(10),
            ) {
                if let Ok(s) = serde_json::from_slice::<State>(&r.body) {
                    srv.adopt(s);
                }
            }
        }
        let (leader, removed) = {
            let st = srv.state.lock().expect("state lock");
            let removed = srv
                .member_name
                .as_ref()
                .map(|n| st.removed_members.contains(n))
                .unwrap_or(false);
            (srv.is_leader(&st), removed)
        };
        if removed {
            let _ = util::write_file(&srv.db_dir().join("removed"), b"removed\n", 0o600);
            std::thread::sleep(Duration::from_secs(2));
            util::fatal("etcd cluster join failed: the member has been permanently removed from the cluster; data-dir used by this member must be removed");
        }
        let mut ls = srv.leader_since.lock().expect("leader lock");
        match (leader, ls.is_some()) {
            (true, false) => {
                *ls = Some(Instant::now());
                drop(ls);
                let mut st = srv.state.lock().expect("state lock");
                st.epoch += 1;
                st.dirty = true;
                srv.commit(&mut st);
                util::info(format!(
                    "This server is now the leader of the double's replicated state (epoch {})",
                    st.epoch
                ));
                continue;
            }
            (false, true) => *ls = None,
            _ => {}
        }
    }
}

/// Like etcd on restart: catch up with the newest state a quorum of peers has before serving.
fn initial_sync(srv: &Server) {
    loop {
        let (members, cluster, pw) = {
            let st = srv.state.lock().expect("state lock");
            (
                st.members.clone(),
                st.cluster_id.clone(),
                st.bootstrap.server_password.clone(),
            )
        };
        let auth = http::basic_auth("server", &pw);
        let mut reachable = 1;
        for m in members.iter().filter(|m| m.node != srv.ctx.node) {
            let Ok(r) = http::call(
                &m.api,
                "GET",
                "/v1/state",
                &[("Authorization", &auth)],
                &[],
                Duration::from_secs(5),
            ) else {
                continue;
            };
            if r.status != 200 {
                continue;
            }
            if let Ok(s) = serde_json::from_slice::<State>(&r.body) {
                if s.cluster_id == cluster {
                    reachable += 1;
                    srv.adopt(s);
                }
            }
        }
        if reachable * 2 > members.len() {
            return;
        }
        util::info(format!(
            "Waiting for etcd quorum: {reachable} of {} members reachable",
            members.len()
        ));
        if common::sleep_or_stop(Duration::from_secs(2)) {
            std::process::exit(0);
        }
    }
}

fn push_loop(srv: Arc<Server>) {
    let mut pushed = 0u64;
    loop {
        {
            let (lock, cv) = &srv.push;
            let mut g = lock.lock().expect("push lock");
            while *g <= pushed {
                let (ng, _) = cv
                    .wait_timeout(g, Duration::from_secs(5))
                    .expect("push wait");
                g = ng;
            }
            pushed = *g;
        }
        let (body, members, pw) = {
            let st = srv.state.lock().expect("state lock");
            (
                serde_json::to_vec(&*st).unwrap_or_default(),
                st.members.clone(),
                st.bootstrap.server_password.clone(),
            )
        };
        let auth = http::basic_auth("server", &pw);
        for m in members.iter().filter(|m| m.node != srv.ctx.node) {
            if *srv
                .peers_up
                .lock()
                .expect("peers lock")
                .get(&m.api)
                .unwrap_or(&true)
            {
                let _ = http::call(
                    &m.api,
                    "POST",
                    "/v1/state",
                    &[("Authorization", &auth)],
                    &body,
                    Duration::from_secs(5),
                );
            }
        }
    }
}

impl Server {
    pub fn tick_controllers(&self, st: &mut State) {
        if !self.is_leader(st) || !self.has_quorum(st) {
            return;
        }
        let since = self
            .leader_since
            .lock()
            .expect("leader lock")
            .unwrap_or_else(Instant::now);
        let hbs = self.heartbeats.lock().expect("hb lock").clone();
        controllers::tick(st, &self.ctx, &hbs, since);
    }
}

fn controller_loop(srv: Arc<Server>) {
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let mut st = srv.state.lock().expect("state lock");
        srv.tick_controllers(&mut st);
        srv.commit(&mut st);
    }
}

pub fn run(cfg: Config) -> ! {
    common::install_signal_handlers();
    for w in &cfg.warnings {
        util::warn(w);
    }
    util::info(format!("Starting k3s {}", version_line()));
    let node = common::node_name(&cfg);
    if let Err(e) = nodes::check_kubelet_labels(&cfg.list("node-label")) {
        util::fatal(format!(
            "kubelet exited: failed to validate kubelet flags: {e}"
        ));
    }
    let data_dir = cfg.data_dir();
    let port: u16 = cfg
        .get("https-listen-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(6443);
    let ip = common::local_ip(&cfg, cfg.get("server"));
    let ctx = Ctx {
        api: format!("{ip}:{port}"),
        disable: cfg.list("disable"),
        cfg,
        data_dir,
        node,
        ip,
        port,
    };
    let db = ctx.data_dir.join("server/db");
    if db.join("removed").exists() {
        util::fatal("etcd cluster join failed: the member has been permanently removed from the cluster; data-dir used by this member must be removed");
    }
    let existing = std::fs::read(db.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok());
    let (mut st, joined) = match existing {
        Some(st) => {
            if let Some(t) = read_token(&ctx.cfg, "token", "token-file") {
                if token::parse(&t).password != st.bootstrap.server_password {
                    util::fatal("starting kubernetes: preparing server: bootstrap data already found and encrypted with different token");
                }
            }
            if !st.members.is_empty() {
                util::info("Managed etcd cluster bootstrap already complete and initialized");
            }
            (st, false)
        }
        None => match ctx.cfg.get("server") {
            Some(url) => {
                let Some(tok) = read_token(&ctx.cfg, "token", "token-file") else {
                    util::fatal("starting kubernetes: preparing server: token is required to join a cluster")
                };
                let url = url.to_string();
                let (st, _m) = join_cluster(&ctx, &url, &tok);
                (st, true)
            }
            None => (new_cluster(&ctx, ctx.cfg.bool("cluster-init")), false),
        },
    };
    if let Some(me) = st.members.iter_mut().find(|m| m.node == ctx.node) {
        if me.api != ctx.api {
            me.api = ctx.api.clone();
            me.address = ctx.ip.clone();
            st.dirty = true;
        }
    }
    if let Err(e) = write_files(&ctx, &st) {
        util::fatal(format!("failed to write server files: {e}"));
    }
    let listener = match TcpListener::bind(("0.0.0.0", ctx.port)) {
        Ok(l) => l,
        Err(e) => util::fatal(format!("failed to listen on 0.0.0.0:{}: {e}", ctx.port)),
    };
    let member_name = st
        .members
        .iter()
        .find(|m| m.node == ctx.node)
        .map(|m| m.name.clone());
    st.dirty = true;
    let srv = Arc::new(Server {
        ctx,
        state: Mutex::new(State::default()),
        peers_up: Mutex::new(HashMap::new()),
        heartbeats: Mutex::new(HashMap::new()),
        leader_since: Mutex::new(None),
        push: (Mutex::new(0), Condvar::new()),
        refused: Mutex::new(HashMap::new()),
        events_written: Mutex::new(0),
        member_name: member_name.clone(),
        synced: std::sync::atomic::AtomicBool::new(false),
    });
    {
        let mut g = srv.state.lock().expect("state lock");
        *g = st;
        if joined || g.members.len() > 1 {
            // Our copy came from the leader or may be stale: never let it look newer than peers'.
            g.dirty = false;
            srv.persist(&g);
        } else {
            srv.commit(&mut g);
        }
    }
    {
        let srv = srv.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let srv = srv.clone();
                std::thread::spawn(move || serve_conn(&srv, s));
            }
        });
    }
    // Peers first: a restarted server catches up before it leads anything.
    let clustered = srv.state.lock().expect("state lock").members.len() > 1;
    {
        let srv = srv.clone();
        std::thread::spawn(move || sync_loop(srv));
    }
    if clustered && !joined {
        initial_sync(&srv);
    }
    srv.synced.store(true, std::sync::atomic::Ordering::SeqCst);
    {
        let srv2 = srv.clone();
        std::thread::spawn(move || push_loop(srv2));
        let srv3 = srv.clone();
        std::thread::spawn(move || controller_loop(srv3));
    }
    // Register our own Node (node-password rule applies to servers too).
    let info = node_info(
        &srv.ctx,
        member_name.is_some(),
        member_name.as_deref().unwrap_or(""),
    );
    let join = Op::Join {
        role: "server".into(),
        node: info,
        member: None,
    };
    loop {
        match srv.submit(&join) {
            Ok(_) => break,
            Err(e) => util::error(format!("Failed to register node {}: {e}", srv.ctx.node)),
        }
        // A joining server sees its peers as up only after the first probe:
        // retry soon rather than at the 5 s heartbeat pace.
        if common::sleep_or_stop(Duration::from_secs(1)) {
            std::process::exit(0);
        }
    }
    let _ = srv.submit(&Op::Event {
        node: srv.ctx.node.clone(),
        kind: "start".into(),
        detail: json!({"role": "server", "version": version()}),
    });
    {
        let srv = srv.clone();
        std::thread::spawn(move || deploy::watch(srv));
    }
    {
        let srv = srv.clone();
        std::thread::spawn(move || loop {
            let _ = srv.submit(&Op::Heartbeat {
                node: srv.ctx.node.clone(),
            });
            std::thread::sleep(Duration::from_secs(5));
        });
    }
    util::info("k3s is up and running");
    crate::notify::ready();
    while !common::sleep_or_stop(Duration::from_secs(3600)) {}
    util::info("Received SIGTERM, shutting down");
    let _ = srv.submit(&Op::Event {
        node: srv.ctx.node.clone(),
        kind: "stop".into(),
        detail: json!({"role": "server"}),
    });
    std::process::exit(0);
}
