//! `k3s server`: bootstrap or join, the HTTPS listener on 6443, replication between servers,
//! controllers.
//!
//! Replication stands in for etcd: the first reachable member (in join order) leads and is
//! the only writer; the others pass every write to it and take its state after each commit.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{self, Op};
use crate::config::Config;
use crate::net::client::{self, Request, Target};
use crate::net::server::{full, HttpResponse};
use crate::net::tls::{self, DynamicCert, Trust};
use crate::nodes::{self, NodeInfo};
use crate::registries::Registry;
use crate::serving::{self, Serving};
use crate::store::{Bootstrap, Member, State};
use crate::{controllers, deploy, join, pki, token, util, version, version_line};

pub struct Ctx {
    pub cfg: Config,
    pub data_dir: PathBuf,
    pub node: String,
    pub ip: String,
    pub port: u16,
    pub api: String,
    pub disable: Vec<String>,
}

/// Headers a server sends with its replication requests to a peer: its node name and its
/// cluster ID, which etcd's rafthttp checks on every message (`X-Etcd-Cluster-ID`).
pub const PEER_NODE: &str = "X-K3s-Double-Peer";
pub const PEER_CLUSTER: &str = "X-K3s-Double-Cluster";

pub struct Server {
    pub ctx: Ctx,
    pub state: Mutex<State>,
    pub peers_up: Mutex<HashMap<String, bool>>,
    pub heartbeats: Mutex<HashMap<String, Instant>>,
    pub leader_since: Mutex<Option<Instant>>,
    push: (Mutex<u64>, Condvar),
    refused: Mutex<HashMap<String, Instant>>,
    events_written: Mutex<u64>,
    /// When a cluster ID mismatch with a peer was last logged, by peer.
    mismatch_logged: Mutex<HashMap<String, Instant>>,
    member_name: Option<String>,
    /// False until a restarted clustered server has caught up with a quorum of peers.
    synced: std::sync::atomic::AtomicBool,
    pub serving: Serving,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Node,
    Server,
}

pub(crate) fn read_token(cfg: &Config, key: &str, file_key: &str) -> Option<String> {
    if let Some(t) = cfg.get(key) {
        return Some(t.to_string());
    }
    let f = cfg.get(file_key)?;
    std::fs::read_to_string(f)
        .ok()
        .map(|s| s.trim().to_string())
}

fn json_resp(code: u16, v: &Value) -> HttpResponse {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

impl Server {
    /// This server's etcd member name; None without embedded etcd.
    pub fn member_name(&self) -> Option<&str> {
        self.member_name.as_deref()
    }

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

    /// Leading takes a quorum: a raft candidate becomes leader only once a majority voted for
    /// it (go.etcd.io/raft `raft.go`, `stepCandidate`: `becomeLeader` on `quorum.VoteWon`
    /// only). A member cut off from the others (a node going silent while it shuts down)
    /// must not start a new epoch of its own, or its stale state would win when it returns.
    pub fn is_leader(&self, st: &State) -> bool {
        match self.leader(st) {
            None => true,
            Some(m) => m.node == self.ctx.node && self.has_quorum(st),
        }
    }

    /// The cluster's server CA bundle: what `/cacerts` serves and peers trust.
    pub fn server_ca(&self) -> Vec<u8> {
        self.state
            .lock()
            .expect("state lock")
            .bootstrap
            .server_ca_crt
            .clone()
            .into_bytes()
    }

    /// The leader's API address when it is another server.
    pub fn leader_elsewhere(&self) -> Option<String> {
        let st = self.state.lock().expect("state lock");
        self.leader(&st)
            .filter(|m| m.node != self.ctx.node)
            .map(|m| m.api)
    }

    pub fn mark_down(&self, api: &str) {
        self.peers_up
            .lock()
            .expect("peers lock")
            .insert(api.to_string(), false);
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

    /// (caught up with the cluster, etcd has quorum).
    pub fn health(&self) -> (bool, bool) {
        let st = self.state.lock().expect("state lock");
        (
            self.synced.load(std::sync::atomic::Ordering::SeqCst),
            self.has_quorum(&st),
        )
    }

    /// Which members this server sees up, by node name (itself included).
    pub fn members_up(&self, st: &State) -> Vec<String> {
        let up = self.peers_up.lock().expect("peers lock");
        st.members
            .iter()
            .filter(|m| m.node == self.ctx.node || *up.get(&m.api).unwrap_or(&false))
            .map(|m| m.node.clone())
            .collect()
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
        mark_data(&db, !st.members.is_empty());
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

    /// Basic auth against the passwd file's two users (k3s `pkg/server/auth`).
    pub fn check_basic(&self, h: &str) -> Auth {
        let st = self.state.lock().expect("state lock");
        match parse_basic(h) {
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

    /// Runs `log` unless a mismatch with this peer was logged in the last 30 s.
    fn note_mismatch(&self, key: &str, log: impl FnOnce()) {
        let mut seen = self.mismatch_logged.lock().expect("mismatch lock");
        if seen
            .get(key)
            .map(|t| t.elapsed() > Duration::from_secs(30))
            .unwrap_or(true)
        {
            seen.insert(key.to_string(), Instant::now());
            log();
        }
    }

    /// A peer answered with another cluster ID: etcd ignores it (it is not counted).
    fn peer_mismatch(&self, peer: &str, theirs: &str, mine: &str) {
        self.note_mismatch(&format!("to/{peer}"), || {
            util::etcd_log(
                "warn",
                "rafthttp/stream.go:653",
                "request sent was ignored by remote peer due to cluster ID mismatch",
                &[
                    ("remote-peer", peer),
                    ("remote-peer-cluster-id", theirs),
                    ("local-member-cluster-id", mine),
                ],
            )
        });
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

    /// A name seen on a connection (SNI, local address, Host header).
    pub fn learn_name(&self, name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let st = self.state.lock().ok()?;
        self.serving.learn(&st, name)
    }

    /// The double's own paths under `/v1-k3s-double/` (replication, joins, heartbeats).
    #[allow(clippy::too_many_arguments)] // the request's parts, as the listener read them
    pub fn supervisor(
        &self,
        method: &str,
        path: &str,
        auth_h: &str,
        forwarded: bool,
        origin: &str,
        (peer_node, peer_cluster): (&str, &str),
        body: Vec<u8>,
    ) -> HttpResponse {
        let auth = self.check_basic(auth_h);
        if matches!(path, "ping" | "state") && !peer_cluster.is_empty() {
            // etcd's rafthttp refuses a peer of another cluster (`http.go` checkClusterCompatibilityFromHeader).
            let mine = self.state.lock().expect("state lock").cluster_id.clone();
            if peer_cluster != mine {
                self.note_mismatch(&format!("from/{peer_node}"), || {
                    util::etcd_log(
                        "warn",
                        "rafthttp/http.go:500",
                        "request cluster ID mismatch",
                        &[
                            ("local-member-cluster-id", &mine),
                            ("remote-peer", peer_node),
                            ("remote-peer-cluster-id", peer_cluster),
                        ],
                    )
                });
                return json_resp(412, &json!({"cluster": mine}));
            }
        }
        match (method, path) {
            ("GET", "ping") => {
                if !self.synced.load(std::sync::atomic::Ordering::SeqCst) {
                    return full(503, "text/plain", "not synced");
                }
                let st = self.state.lock().expect("state lock");
                json_resp(
                    200,
                    &json!({"epoch": st.epoch, "rev": st.rev, "writer": st.writer, "node": self.ctx.node, "cluster": st.cluster_id}),
                )
            }
            ("GET", "state") => {
                if auth != Auth::Server {
                    return full(401, "text/plain", "Unauthorized");
                }
                let st = self.state.lock().expect("state lock");
                full(
                    200,
                    "application/json",
                    serde_json::to_vec(&*st).unwrap_or_default(),
                )
            }
            ("POST", "state") => {
                if auth != Auth::Server {
                    return full(401, "text/plain", "Unauthorized");
                }
                match serde_json::from_slice::<State>(&body) {
                    Ok(s) => {
                        self.adopt(s);
                        let st = self.state.lock().expect("state lock");
                        let _ = self.serving.refresh(&st);
                        json_resp(200, &json!({}))
                    }
                    Err(e) => full(400, "text/plain", e.to_string()),
                }
            }
            ("POST", "refused") => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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
                json_resp(200, &json!({}))
            }
            ("POST", "op") => self.handle_op(&body, auth_h, auth, forwarded, origin),
            _ => full(404, "text/plain", "404 page not found"),
        }
    }

    fn handle_op(
        &self,
        body: &[u8],
        auth_h: &str,
        auth: Auth,
        forwarded: bool,
        origin: &str,
    ) -> HttpResponse {
        let op: Op = match serde_json::from_slice(body) {
            Ok(op) => op,
            Err(e) => return json_resp(400, &json!({"error": e.to_string()})),
        };
        let origin = if origin.is_empty() {
            self.ctx.node.clone()
        } else {
            origin.to_string()
        };
        for _attempt in 0..3 {
            let (leader, quorum, ca) = {
                let st = self.state.lock().expect("state lock");
                (
                    self.leader(&st),
                    self.has_quorum(&st),
                    st.bootstrap.server_ca_crt.clone(),
                )
            };
            if !quorum {
                return json_resp(503, &json!({"error": "etcdserver: request timed out"}));
            }
            match leader {
                Some(l) if l.node != self.ctx.node && !forwarded => {
                    let Ok(t) = Target::from_host_port(&l.api, 6443) else {
                        break;
                    };
                    let req = Request::post("/v1-k3s-double/op", body.to_vec())
                        .header("Authorization", auth_h)
                        .header("X-K3s-Double-Forwarded", "1")
                        .header(crate::api::ORIGIN, &origin);
                    match client::call(
                        &t,
                        &Trust::Ca(ca.into_bytes()),
                        None,
                        req,
                        Duration::from_secs(60),
                    ) {
                        Ok(r) => {
                            return full(r.status, "application/json", r.body);
                        }
                        Err(_) => {
                            // The leader just died: mark it down and pick the next one.
                            self.mark_down(&l.api);
                            continue;
                        }
                    }
                }
                _ => {
                    let (code, v) = self.execute(op, auth, &origin);
                    return json_resp(code, &v);
                }
            }
        }
        json_resp(503, &json!({"error": "etcdserver: leader changed"}))
    }

    pub fn execute(&self, op: Op, auth: Auth, _origin: &str) -> (u16, Value) {
        match op {
            Op::Join { role, node, member } => {
                let mut st = self.state.lock().expect("state lock");
                let ok = match role.as_str() {
                    "server" => auth == Auth::Server,
                    _ => auth == Auth::Server || auth == Auth::Node,
                };
                if !ok {
                    self.note_refused(&mut st, &node.name, "invalid token");
                    return (401, json!({"error": "Unauthorized"}));
                }
                if let Err(msg) = nodes::register(&mut st, &node, &node.name) {
                    self.note_refused(&mut st, &node.name, "node password rejected");
                    return (403, json!({"error": msg}));
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
                self.tick_controllers(&mut st);
                self.commit(&mut st);
                let servers: Vec<String> = if st.members.is_empty() {
                    vec![self.ctx.api.clone()]
                } else {
                    st.members.iter().map(|m| m.api.clone()).collect()
                };
                let mut resp = json!({"servers": servers});
                if self.ctx.cfg.bool("embedded-registry") {
                    // `controlConfig.EmbeddedRegistry`, served on the supervisor port
                    // (`pkg/agent/config/config.go`:538, 713).
                    resp["embedded_registry"] = json!(self.ctx.port);
                }
                if role == "server" {
                    resp["state"] = serde_json::to_value(&*st).unwrap_or(Value::Null);
                }
                (200, resp)
            }
            Op::Heartbeat { node } => {
                if auth == Auth::None {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let st = self.state.lock().expect("state lock");
                if st.get("", "Node", "", &node).is_none() {
                    return (404, json!({"error": format!("nodes \"{node}\" not found")}));
                }
                self.heartbeats
                    .lock()
                    .expect("hb lock")
                    .insert(node, Instant::now());
                let servers: Vec<String> = st.members.iter().map(|m| m.api.clone()).collect();
                (200, json!({"servers": servers}))
            }
            Op::Event { node, kind, detail } => {
                if auth == Auth::None {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                st.event(&node, &kind, detail);
                self.commit(&mut st);
                (200, json!({}))
            }
            Op::ApplyAddon {
                node,
                name,
                path,
                checksum,
                docs,
            } => {
                if auth != Auth::Server {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                let r = deploy::apply_addon(&mut st, &node, &name, &path, &checksum, &docs);
                self.tick_controllers(&mut st);
                self.commit(&mut st);
                match r {
                    Ok(()) => (200, json!({})),
                    Err(e) => (422, json!({"error": e})),
                }
            }
            Op::DeleteAddon { node, name } => {
                if auth != Auth::Server {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                deploy::delete_addon(&mut st, &node, &name);
                self.commit(&mut st);
                (200, json!({}))
            }
            Op::SyncSnapshotFiles {
                node,
                items,
                s3,
                deleted,
            } => {
                if auth != Auth::Server {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                let (created, deleted) =
                    crate::snapshot::sync_objects(&mut st, &node, items, s3, &deleted);
                self.commit(&mut st);
                (200, json!({"created": created, "deleted": deleted}))
            }
            Op::AddSnapshotFile { item } => {
                if auth != Auth::Server {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                crate::snapshot::add_object(&mut st, item);
                self.commit(&mut st);
                (200, json!({}))
            }
            Op::DeleteNodePassword { node } => {
                if auth != Auth::Server {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                let key = crate::store::obj_key(
                    "",
                    "Secret",
                    "kube-system",
                    &format!("{node}.node-password.k3s"),
                );
                st.remove(&key);
                self.commit(&mut st);
                (200, json!({}))
            }
            Op::AddServingNames { names } => {
                if auth != Auth::Server {
                    return (401, json!({"error": "Unauthorized"}));
                }
                let mut st = self.state.lock().expect("state lock");
                let r = serving::add_names(&mut st, &names);
                self.commit(&mut st);
                let _ = self.serving.refresh(&st);
                match r {
                    Ok(_) => (200, json!({})),
                    Err(e) => (500, json!({"error": e})),
                }
            }
        }
    }

    /// Runs an op as this server (locally when leader, else through the leader).
    pub fn submit(&self, op: &Op) -> Result<Value, String> {
        let (leader, pw, quorum, ca) = {
            let st = self.state.lock().expect("state lock");
            (
                self.leader(&st),
                st.bootstrap.server_password.clone(),
                self.has_quorum(&st),
                st.bootstrap.server_ca_crt.clone(),
            )
        };
        if !quorum {
            return Err("etcdserver: request timed out".into());
        }
        match leader {
            Some(l) if l.node != self.ctx.node => {
                let auth = client::basic_auth("server", &pw);
                let t = Target::from_host_port(&l.api, 6443)?;
                match common::post_op(
                    &t,
                    &Trust::Ca(ca.into_bytes()),
                    &auth,
                    op,
                    Duration::from_secs(30),
                ) {
                    Ok((200, v)) => Ok(v),
                    Ok((_, v)) => Err(common::resp_message(&v)),
                    Err(e) => {
                        self.mark_down(&l.api);
                        Err(e.to_string())
                    }
                }
            }
            _ => {
                let (status, v) = self.execute(op.clone(), Auth::Server, &self.ctx.node);
                if status == 200 {
                    Ok(v)
                } else {
                    Err(common::resp_message(&v))
                }
            }
        }
    }

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
        let up = self.members_up(st);
        controllers::tick(st, &self.ctx, &hbs, since, &up);
    }
}

pub fn parse_basic(h: &str) -> Option<(String, String)> {
    let b = h.strip_prefix("Basic ")?;
    let dec = base64::engine::general_purpose::STANDARD
        .decode(b.trim())
        .ok()?;
    let s = String::from_utf8(dec).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn kubeconfig(ctx: &Ctx, ca: &str, crt: &str, key: &str) -> String {
    let e = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let name = ctx.cfg.get("write-kubeconfig-name").unwrap_or("default");
    let host = match ctx.cfg.get("bind-address") {
        Some(a) if a != "0.0.0.0" => a.to_string(),
        _ => "127.0.0.1".into(),
    };
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://{host}:{}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: {name}\n  name: {name}\ncurrent-context: {name}\nkind: Config\npreferences: {{}}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        e(ca),
        ctx.port,
        e(crt),
        e(key)
    )
}

/// The admin client certificate (`client-admin.crt`: system:admin in system:masters, then the
/// client CA), kept while it was signed by the current client CA.
fn admin_cert(tls_dir: &Path, b: &Bootstrap) -> Result<(String, String), String> {
    let crt_p = tls_dir.join("client-admin.crt");
    let key_p = tls_dir.join("client-admin.key");
    if let (Ok(c), Ok(k)) = (
        std::fs::read_to_string(&crt_p),
        std::fs::read_to_string(&key_p),
    ) {
        if c.ends_with(&b.client_ca_crt) && pki::certs(c.as_bytes()).is_ok() {
            return Ok((c, k));
        }
    }
    let (c, k) = b.client_ca().sign(
        "system:admin",
        &["system:masters"],
        &[],
        pki::Usage::Client,
        365,
    )?;
    util::write_file(&crt_p, c.as_bytes(), 0o644).map_err(|e| e.to_string())?;
    util::write_file(&key_p, k.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    Ok((c, k))
}

/// What k3s's own test for "this server has data" looks at, beside the double's
/// `state.json`: etcd's WAL directory (`pkg/etcd/etcd.go`:305-318 IsInitialized), or the
/// SQLite database a server without etcd keeps (kine's `server/db/state.db`).
pub(crate) fn mark_data(db: &Path, etcd: bool) {
    if etcd {
        let wal = db.join("etcd/member/wal");
        if !wal.is_dir() {
            let _ = std::fs::create_dir_all(&wal);
        }
    } else {
        let f = db.join("state.db");
        if !f.exists() {
            let _ = util::write_file(&f, b"", 0o600);
        }
    }
}

/// The bootstrap files the double keeps, under `server/`, with their datastore content: of
/// k3s's set (ControlRuntimeBootstrap, `pkg/daemons/control/deps/deps.go`:101-175) the CAs it
/// uses and `cred/passwd`.
fn bootstrap_files(b: &Bootstrap) -> Vec<(&'static str, String)> {
    vec![
        ("tls/server-ca.crt", b.server_ca_crt.clone()),
        ("tls/server-ca.key", b.server_ca_key.clone()),
        ("tls/client-ca.crt", b.client_ca_crt.clone()),
        ("tls/client-ca.key", b.client_ca_key.clone()),
        (
            "cred/passwd",
            format!(
                "{},node,node,k3s:agent\n{},server,server,k3s:server\n",
                b.agent_password, b.server_password
            ),
        ),
    ]
}

/// k3s's WriteToDiskFromStorage (`pkg/bootstrap/bootstrap.go`:61-85): every bootstrap file
/// from the datastore, directories 0700, files 0600, each file's mtime the datastore's
/// timestamp.
pub(crate) fn write_bootstrap(ctx: &Ctx, b: &Bootstrap) -> Result<(), String> {
    let server = ctx.data_dir.join("server");
    for (rel, data) in bootstrap_files(b) {
        let p = server.join(rel);
        util::write_file(&p, data.as_bytes(), 0o600).map_err(|e| e.to_string())?;
        if b.stamp > 0 {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(b.stamp as u64);
            if let Ok(f) = std::fs::File::options().write(true).open(&p) {
                let _ = f.set_modified(t);
            }
        }
    }
    Ok(())
}

/// k3s's ReconcileBootstrapData (`pkg/cluster/bootstrap.go`:248-401) for the files the double
/// keeps, on every start of a server with data (`http` false: against its own datastore) and
/// on a join (`http` true: against the data the server it joins sent). On the join path a
/// missing or empty `cred` or `tls` directory means everything is written from the datastore
/// without comparing (:251-266). Otherwise each file is compared: identical, nothing; missing
/// or different and not newer, written from the datastore; different and 3 s or more newer
/// than the datastore's timestamp (`isNewerFile`, :403-436), fatal, since k3s would otherwise
/// replace the cluster's CAs with those on this disk.
pub(crate) fn reconcile_bootstrap(ctx: &Ctx, b: &Bootstrap, http: bool) {
    let server = ctx.data_dir.join("server");
    util::info("Reconciling bootstrap data between datastore and disk");
    let empty = |d: &str| {
        std::fs::read_dir(server.join(d))
            .map(|mut it| it.next().is_none())
            .unwrap_or(true)
    };
    if http && (empty("cred") || empty("tls")) {
        if let Err(e) = write_bootstrap(ctx, b) {
            util::fatal(format!("failed to write bootstrap data: {e}"));
        }
        return;
    }
    let mut newer = Vec::new();
    let mut update = false;
    for (rel, data) in bootstrap_files(b) {
        let p = server.join(rel);
        match std::fs::read(&p) {
            Err(_) => {
                util::warn(format!("{} doesn't exist. continuing...", p.display()));
                update = true;
            }
            Ok(disk) if disk == data.as_bytes() => {}
            Ok(_) => {
                let mtime = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                if mtime - b.stamp >= 3 {
                    newer.push(p.display().to_string());
                } else {
                    util::warn(format!(
                        "{} will be updated from the datastore.",
                        p.display()
                    ));
                }
                update = true;
            }
        }
    }
    if !newer.is_empty() {
        util::fatal(format!(
            "{} newer than datastore and could cause a cluster outage. Remove the file(s) from disk and restart to be recreated from datastore.",
            newer.join(", ")
        ));
    }
    if update {
        util::warn("Updating bootstrap data on disk from datastore");
        if let Err(e) = write_bootstrap(ctx, b) {
            util::fatal(format!("failed to write bootstrap data: {e}"));
        }
    }
}

pub(crate) fn write_files(ctx: &Ctx, st: &State) -> Result<(), String> {
    let b = &st.bootstrap;
    let server = ctx.data_dir.join("server");
    let tls = server.join("tls");
    let io = |e: std::io::Error| e.to_string();
    let (crt, key) = admin_cert(&tls, b)?;
    let hash = token::ca_hash(b.server_ca_crt.as_bytes());
    let server_token = token::format(&hash, "server", &b.server_password);
    util::write_file(
        &server.join("token"),
        format!("{server_token}\n").as_bytes(),
        0o600,
    )
    .map_err(io)?;
    util::symlink_force("token", &server.join("node-token")).map_err(io)?;
    if b.agent_password != b.server_password {
        let t = token::format(&hash, "node", &b.agent_password);
        util::write_file(
            &server.join("agent-token"),
            format!("{t}\n").as_bytes(),
            0o600,
        )
        .map_err(io)?;
    } else {
        util::symlink_force("token", &server.join("agent-token")).map_err(io)?;
    }
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
    util::write_file(
        &kc_path,
        kubeconfig(ctx, &b.server_ca_crt, &crt, &key).as_bytes(),
        mode,
    )
    .map_err(io)?;
    if kc_path != default_kc {
        let _ = util::symlink_force(&kc_path.to_string_lossy(), default_kc);
    }
    Ok(())
}

/// A CA pair already on disk (custom CAs placed before the first start), else a new one;
/// k3s fills in only the missing pairs (`deps.go` createSigningCertKey).
fn ca_pair(tls: &Path, what: &str) -> Result<pki::Ca, String> {
    match (
        std::fs::read_to_string(tls.join(format!("{what}-ca.crt"))),
        std::fs::read_to_string(tls.join(format!("{what}-ca.key"))),
    ) {
        (Ok(c), Ok(k)) => {
            util::info(format!("Using existing {what} CA certificate and key"));
            Ok(pki::Ca {
                cert_pem: c,
                key_pem: k,
            })
        }
        _ => pki::new_ca(what),
    }
}

pub(crate) fn new_cluster(ctx: &Ctx, etcd: bool) -> Result<State, String> {
    let tls = ctx.data_dir.join("server/tls");
    let server_ca = ca_pair(&tls, "server")?;
    let client_ca = ca_pair(&tls, "client")?;
    let server_password = read_token(&ctx.cfg, "token", "token-file")
        .map(|t| token::parse(&t).password)
        .unwrap_or_else(|| util::random_hex(16));
    let agent_password = read_token(&ctx.cfg, "agent-token", "agent-token-file")
        .map(|t| token::parse(&t).password)
        .unwrap_or_else(|| server_password.clone());
    let mut st = State {
        cluster_id: util::random_hex(8),
        bootstrap: Bootstrap {
            server_ca_crt: server_ca.cert_pem,
            server_ca_key: server_ca.key_pem,
            client_ca_crt: client_ca.cert_pem,
            client_ca_key: client_ca.key_pem,
            server_password,
            agent_password,
            stamp: util::now_secs(),
        },
        ..Default::default()
    };
    // The first server stores what it has on disk, and its files keep that timestamp.
    if let Err(e) = write_bootstrap(ctx, &st.bootstrap) {
        return Err(format!("failed to write bootstrap data: {e}"));
    }
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
    Ok(st)
}

pub(crate) fn my_member(ctx: &Ctx) -> Member {
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

/// The server's own agent reading registries.yaml (k3s `agent.Run` → `config.Get`, between
/// `PrepareServer` and `StartServer`, `pkg/cli/server/server.go`:553-628): retried until it
/// parses; a stop meanwhile exits.
fn agent_registries(ctx: &Ctx) -> Registry {
    match crate::registries::wait_valid(&ctx.cfg) {
        Some(r) => r,
        None => std::process::exit(0),
    }
}

/// Joins an existing cluster through `server:`. A failure is fatal, as in k3s: the process
/// exits and systemd starts it again (`Restart=always`), so the unit keeps activating.
fn join_cluster(ctx: &Ctx, url: &str, tok: &str) -> (State, Member, Registry) {
    let v = match join::validate(url, tok) {
        Ok(v) => v,
        Err(e) => {
            if e.starts_with("token CA hash does not match") {
                if let Ok(t) = Target::from_url(url) {
                    let _ = client::call(
                        &t,
                        &Trust::Insecure,
                        None,
                        Request::post(
                            "/v1-k3s-double/refused",
                            json!({"name": ctx.node, "reason": "token CA hash mismatch"})
                                .to_string()
                                .into_bytes(),
                        ),
                        Duration::from_secs(5),
                    );
                }
            }
            util::fatal(format!(
                "starting kubernetes: preparing server: failed to validate token: {e}"
            ))
        }
    };
    let auth = client::basic_auth("server", &v.password);
    let bootstrap_url = v.target.url("/v1-k3s/server-bootstrap");
    // The bootstrap data first, reconciled with this disk before the member is added (k3s
    // `Cluster.bootstrap` → httpBootstrap, pkg/cluster/bootstrap.go:460-506, runs in
    // prepare(), before etcd's MemberAdd): a disk with newer CAs of another cluster is fatal
    // here, and the cluster never sees this server.
    match client::call(
        &v.target,
        &v.trust(),
        None,
        Request::get("/v1-k3s-double/state").header("Authorization", &auth),
        Duration::from_secs(15),
    ) {
        Ok(r) if r.status == 200 => match serde_json::from_slice::<State>(&r.body) {
            Ok(st) => reconcile_bootstrap(ctx, &st.bootstrap, true),
            Err(e) => util::fatal(format!(
                "starting kubernetes: preparing server: failed to bootstrap cluster data: {e}"
            )),
        },
        Ok(r) if r.status == 401 => util::fatal(format!(
            "starting kubernetes: preparing server: failed to get bootstrap data: {bootstrap_url}: 401 Unauthorized"
        )),
        // Any other answer ends the start as well (httpBootstrap returns the error and
        // prepare() fails): the server never joins on data it could not compare.
        Ok(r) => util::fatal(format!(
            "starting kubernetes: preparing server: failed to get bootstrap data: {bootstrap_url}: {} {}",
            r.status,
            join::status_text(r.status)
        )),
        Err(e) => util::fatal(format!(
            "starting kubernetes: preparing server: failed to get bootstrap data: {}",
            e.go("GET", &bootstrap_url)
        )),
    }
    // The local agent's config (registries.yaml) before etcd's MemberAdd, which k3s does in
    // control.Server after agent.Run returned (`pkg/cli/server/server.go`:626, 628).
    let registry = agent_registries(ctx);
    let member = my_member(ctx);
    let op = Op::Join {
        role: "server".into(),
        node: node_info(ctx, true, &member.name),
        member: Some(member.clone()),
    };
    match common::post_op(&v.target, &v.trust(), &auth, &op, Duration::from_secs(30)) {
        Ok((200, r)) => match serde_json::from_value::<State>(r.get("state").cloned().unwrap_or(Value::Null)) {
            Ok(st) => (st, member, registry),
            Err(e) => util::fatal(format!("starting kubernetes: preparing server: bad bootstrap data: {e}")),
        },
        Ok((401, _)) => util::fatal(format!(
            "starting kubernetes: preparing server: failed to get bootstrap data: {bootstrap_url}: 401 Unauthorized"
        )),
        Ok((_, r)) => util::fatal(format!("starting kubernetes: preparing server: {}", common::resp_message(&r))),
        Err(e) => util::fatal(format!(
            "starting kubernetes: preparing server: failed to get bootstrap data: {}",
            e.go("GET", &bootstrap_url)
        )),
    }
}

fn peer(srv: &Server, api: &str, req: Request, timeout: Duration) -> Option<client::Response> {
    let t = Target::from_host_port(api, 6443).ok()?;
    let cluster = srv.state.lock().expect("state lock").cluster_id.clone();
    let req = req
        .header(PEER_NODE, &srv.ctx.node)
        .header(PEER_CLUSTER, &cluster);
    client::call(&t, &Trust::Ca(srv.server_ca()), None, req, timeout).ok()
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
            let info = peer(
                &srv,
                &m.api,
                Request::get("/v1-k3s-double/ping"),
                Duration::from_millis(1500),
            )
            .filter(|r| r.status == 200 || r.status == 412)
            .map(|r| r.json());
            let theirs = info
                .as_ref()
                .and_then(|v| v.get("cluster").and_then(Value::as_str))
                .map(str::to_string);
            let ok = theirs.as_deref() == Some(cluster.as_str());
            if let (false, Some(t)) = (ok, &theirs) {
                srv.peer_mismatch(&m.node, t, &cluster);
            }
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
            let req = Request::get("/v1-k3s-double/state")
                .header("Authorization", &client::basic_auth("server", &pw));
            if let Some(r) = peer(&srv, &api, req, Duration::from_secs(10)) {
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
        let auth = client::basic_auth("server", &pw);
        let mut reachable = 1;
        for m in members.iter().filter(|m| m.node != srv.ctx.node) {
            let Some(r) = peer(
                srv,
                &m.api,
                Request::get("/v1-k3s-double/state").header("Authorization", &auth),
                Duration::from_secs(5),
            ) else {
                continue;
            };
            if r.status == 412 {
                let theirs = r.json();
                let theirs = theirs.get("cluster").and_then(Value::as_str).unwrap_or("");
                srv.peer_mismatch(&m.node, theirs, &cluster);
                continue;
            }
            if r.status != 200 {
                continue;
            }
            if let Ok(s) = serde_json::from_slice::<State>(&r.body) {
                if s.cluster_id == cluster {
                    reachable += 1;
                    srv.adopt(s);
                } else {
                    srv.peer_mismatch(&m.node, &s.cluster_id, &cluster);
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
        let auth = client::basic_auth("server", &pw);
        for m in members.iter().filter(|m| m.node != srv.ctx.node) {
            let up = *srv
                .peers_up
                .lock()
                .expect("peers lock")
                .get(&m.api)
                .unwrap_or(&true);
            if up {
                let _ = peer(
                    &srv,
                    &m.api,
                    Request::post("/v1-k3s-double/state", body.clone())
                        .header("Authorization", &auth),
                    Duration::from_secs(5),
                );
            }
        }
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

/// Keeps the shared serving certificate holding this server's names (and what it learned),
/// and serves the shared one once it does.
fn serving_loop(srv: Arc<Server>) {
    loop {
        let missing = {
            let st = srv.state.lock().expect("state lock");
            let _ = srv.serving.refresh(&st);
            srv.serving.missing(&st)
        };
        if !missing.is_empty() {
            match srv.submit(&Op::AddServingNames {
                names: missing.clone(),
            }) {
                Ok(_) => srv.serving.clear_pending(&missing),
                Err(e) => util::warn(format!(
                    "dynamiclistener: cannot store the serving certificate yet: {e}"
                )),
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

pub fn run(cfg: Config) -> ! {
    for w in &cfg.warnings {
        util::warn(w);
    }
    crate::logging::init(&cfg);
    common::install_signal_handlers();
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
    // `etcd-s3-timeout must be greater than 0s` comes before the cluster-reset flag checks
    // (k3s `pkg/cli/server/server.go` 214-217, 245-247).
    if let Err(e) = crate::s3::server_config(&ctx.cfg) {
        util::fatal(format!("Error: {e}"));
    }
    crate::reset::check_flags(&ctx);
    if ctx.cfg.bool("cluster-reset") {
        crate::reset::run(&ctx);
    }
    let db = ctx.data_dir.join("server/db");
    // Set by a cluster reset, cleared once this first normal start is up (`managed.go` 58-64).
    let reset_done = crate::reset::reset_flag(&ctx.data_dir).exists();
    if db.join("removed").exists() {
        util::fatal("etcd cluster join failed: the member has been permanently removed from the cluster; data-dir used by this member must be removed");
    }
    let existing = std::fs::read(db.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok());
    let (mut st, joined_registry) = match existing {
        Some(st) => {
            if let Some(t) = read_token(&ctx.cfg, "token", "token-file") {
                if token::parse(&t).password != st.bootstrap.server_password {
                    util::fatal("starting kubernetes: preparing server: bootstrap data already found and encrypted with different token");
                }
            }
            if !st.members.is_empty() {
                util::info("Managed etcd cluster bootstrap already complete and initialized");
            }
            reconcile_bootstrap(&ctx, &st.bootstrap, false);
            (st, None)
        }
        None => match ctx.cfg.get("server") {
            Some(url) => {
                let Some(tok) = read_token(&ctx.cfg, "token", "token-file") else {
                    util::fatal("starting kubernetes: preparing server: token is required to join a cluster")
                };
                let url = url.to_string();
                let (st, _m, registry) = join_cluster(&ctx, &url, &tok);
                (st, Some(registry))
            }
            None => match new_cluster(&ctx, ctx.cfg.bool("cluster-init")) {
                Ok(st) => (st, None),
                Err(e) => util::fatal(format!("starting kubernetes: preparing server: {e}")),
            },
        },
    };
    let joined = joined_registry.is_some();
    // The local agent: registries.yaml read (retried while it does not parse: nothing of
    // etcd or the apiserver starts meanwhile) and containerd's hosts.toml written.
    let registry = joined_registry.unwrap_or_else(|| agent_registries(&ctx));
    if !ctx.cfg.bool("disable-agent") {
        let embedded = ctx
            .cfg
            .bool("embedded-registry")
            .then(|| crate::registries::Embedded::new(&ctx.data_dir, ctx.port));
        crate::registries::apply(&ctx.cfg, registry, embedded, &ctx.ip);
    }
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
    let member_name = st
        .members
        .iter()
        .find(|m| m.node == ctx.node)
        .map(|m| m.name.clone());
    st.dirty = true;
    let sans = serving::config_sans(&ctx.cfg, &ctx.node, std::slice::from_ref(&ctx.ip));
    let security = !matches!(ctx.cfg.get("tls-san-security"), Some("false"));
    let srv_cell: Arc<std::sync::OnceLock<std::sync::Weak<Server>>> =
        Arc::new(std::sync::OnceLock::new());
    let cell = srv_cell.clone();
    let resolver = Arc::new(DynamicCert::new(move |name| {
        cell.get()
            .and_then(|w| w.upgrade())
            .and_then(|s| s.learn_name(name))
    }));
    let srv = Arc::new(Server {
        serving: Serving::new(resolver.clone(), sans, security),
        ctx,
        state: Mutex::new(State::default()),
        peers_up: Mutex::new(HashMap::new()),
        heartbeats: Mutex::new(HashMap::new()),
        leader_since: Mutex::new(None),
        push: (Mutex::new(0), Condvar::new()),
        refused: Mutex::new(HashMap::new()),
        events_written: Mutex::new(0),
        mismatch_logged: Mutex::new(HashMap::new()),
        member_name: member_name.clone(),
        synced: std::sync::atomic::AtomicBool::new(false),
    });
    let _ = srv_cell.set(Arc::downgrade(&srv));
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
        if let Err(e) = srv.serving.refresh(&g) {
            util::fatal(format!("failed to create the serving certificate: {e}"));
        }
    }
    let tls_cfg = {
        let st = srv.state.lock().expect("state lock");
        match tls::server_config(resolver, st.bootstrap.client_ca_crt.as_bytes()) {
            Ok(c) => c,
            Err(e) => util::fatal(format!("failed to set up TLS: {e}")),
        }
    };
    let listener =
        match crate::net::rt().block_on(tokio::net::TcpListener::bind(("0.0.0.0", srv.ctx.port))) {
            Ok(l) => l,
            Err(e) => util::fatal(format!("failed to listen on 0.0.0.0:{}: {e}", srv.ctx.port)),
        };
    {
        let srv2 = srv.clone();
        let on_accept: Arc<dyn Fn(std::net::SocketAddr) + Send + Sync> = Arc::new(move |local| {
            srv2.learn_name(&local.ip().to_string());
        });
        let srv3 = srv.clone();
        crate::net::rt().spawn(crate::net::server::serve(
            listener,
            tls_cfg,
            on_accept,
            move |conn, req| crate::api::handle(srv3.clone(), conn, req),
        ));
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
        let srv4 = srv.clone();
        std::thread::spawn(move || serving_loop(srv4));
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
    if reset_done {
        // The restored Secret may hold another password than this host's.
        let del = Op::DeleteNodePassword {
            node: srv.ctx.node.clone(),
        };
        while let Err(e) = srv.submit(&del) {
            util::error(format!(
                "Failed to delete node password secret for {}: {e}",
                srv.ctx.node
            ));
            if common::sleep_or_stop(Duration::from_secs(1)) {
                std::process::exit(0);
            }
        }
    }
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
    // Snapshots are reconciled and scheduled only when they are not disabled (k3s
    // `pkg/cluster/cluster.go` 91, `pkg/etcd/etcd.go` 445-448).
    if member_name.is_some() && !srv.ctx.cfg.bool("etcd-disable-snapshots") {
        crate::snapshot::reconcile_loop(srv.clone());
        crate::snapshot::schedule(srv.clone());
    }
    if reset_done {
        // metadata_controller (`pkg/etcd/metadata_controller.go` 62-94).
        let flag = crate::reset::reset_flag(&srv.ctx.data_dir);
        if std::fs::remove_file(&flag).is_ok() {
            util::info(format!(
                "Cleared etcd member removal annotations from node {} after cluster reset",
                srv.ctx.node
            ));
        }
    }
    while !common::sleep_or_stop(Duration::from_secs(3600)) {}
    util::info("Received SIGTERM, shutting down");
    // The event log's record of the stop (tests read it; k3s has no such log). A peer that
    // restarted a moment ago may lead or not be seen yet: tried for a few seconds.
    let stop = Op::Event {
        node: srv.ctx.node.clone(),
        kind: "stop".into(),
        detail: json!({"role": "server"}),
    };
    let until = Instant::now() + Duration::from_secs(10);
    while srv.submit(&stop).is_err() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::process::exit(0);
}
