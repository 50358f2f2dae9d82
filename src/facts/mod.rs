//! Facts: everything the plan reads, gathered once into one value before anything is planned.
//!
//! - [`host`]: each host's state, one script in the round trip that connects to it.
//! - [`cluster`]: what the API says (Nodes, add-on objects, the sealing key), read on one
//!   server in that same round trip; another server is asked only when it does not answer.
//! - [`local`]: what this machine holds (backups, the kubeconfig, release sums).
//!
//! [`read`] connects and runs the scripts; [`Reads::into_facts`] turns what they printed into
//! [`Facts`], failing, with every host that failed named, before anything is planned. A server
//! may get a prelude before its facts (the run lock of src/apply), in the same round trip.

pub mod cluster;
pub mod host;
pub mod local;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tokio::sync::Semaphore;

pub use cluster::{ClusterFacts, ObservedNode, SnapshotFile};
pub use host::{HostFacts, ServiceFacts};
pub use local::LocalFacts;

use crate::connect::{Host, Sessions};
use crate::inventory::Inventory;
use crate::k3s::{token, Role};
use crate::report::Reporter;
use crate::ssh::{self, Cmd, Session};

/// Everything the plan reads.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// By host key (the node name; [`crate::connect::retired`] for a node's old host).
    pub hosts: BTreeMap<String, HostFacts>,
    /// Hosts that need not answer and did not, with why.
    pub unreachable: BTreeMap<String, String>,
    pub cluster: ClusterFacts,
    pub local: LocalFacts,
    /// Each host's clock offset against this machine's, in seconds (ahead: positive).
    pub clocks: BTreeMap<String, f64>,
}

impl Facts {
    pub fn host(&self, key: &str) -> Option<&HostFacts> {
        self.hosts.get(key)
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub hosts: Vec<Host>,
    /// Read every host's facts; without it, only the cluster is read (through the servers).
    pub host_facts: bool,
    /// The servers to read the cluster through, in order of preference.
    pub api_from: Vec<String>,
    /// Read the add-on objects with the Nodes.
    pub addons: bool,
    /// With `addons`: the charts' `wait_for` resources to read too.
    pub waits: Vec<String>,
    /// Read Longhorn's node prerequisites with the host facts.
    pub longhorn: bool,
    /// A custom etcd snapshot directory whose state to read with the host facts.
    pub snapshot_dir: Option<String>,
    /// The kernel settings (`[os.sysctl]` keys) to read with the host facts.
    pub sysctl: Vec<String>,
    /// Read every host's clock (the host facts read it too).
    pub clock: bool,
    /// Read the sealing key Secret (Sealed Secrets is on and there is no backup).
    pub sealing_key: bool,
    /// Read the etcd snapshots the cluster knows (its ETCDSnapshotFile objects).
    pub snapshots: bool,
    /// Make the secrets a new cluster needs when nobody holds them yet.
    pub new_secrets: bool,
    /// Also find the kubeconfig `kubeconfig --merge` merges into.
    pub merge_target: bool,
    /// Run first on every server, before its facts (the run lock); its output is kept.
    pub prelude: Option<String>,
    /// Show per-host progress.
    pub progress: bool,
}

/// What every host printed.
pub struct Reads {
    hosts: Vec<Host>,
    sessions: Sessions,
    errors: BTreeMap<String, String>,
    /// Hosts whose facts script may have run (and its prelude taken the run lock) though its
    /// output could not be used: the lock is let go of there.
    started: std::collections::BTreeSet<String>,
    sections: BTreeMap<String, BTreeMap<String, String>>,
    /// When each host's output arrived, by this machine's clock.
    received: BTreeMap<String, std::time::SystemTime>,
    cluster: ClusterFacts,
    pub elapsed: Duration,
}

const SECTION: &str = "@@bootstrap ";

/// The most the facts script may print: on the API server it carries the cluster's objects
/// (Deployments, DaemonSets, Jobs, HelmCharts of every namespace), far more than a command's
/// usual limit on a large cluster, and still a bound.
const CLUSTER_OUTPUT_LIMIT: usize = 64 << 20;

fn section(name: &str, body: &str) -> String {
    format!("printf '{SECTION}{name}\\n'\n{body}\n")
}

fn split_sections(out: &str) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix(SECTION) {
            current = Some(name.trim().to_string());
            map.entry(name.trim().to_string()).or_default();
            continue;
        }
        if let Some(c) = &current {
            let s = map.entry(c.clone()).or_default();
            s.push_str(line);
            s.push('\n');
        }
    }
    map
}

/// The longest one host's facts read may run (less when the command timeout is): the lock's wait for
/// an expired run's commands (at most 120 s, see `BOOTSTRAP_LOCK_WAIT`) and reads that take
/// seconds fit in it; a host that never finishes its answer does not hold the run (or the
/// other servers' locks) for the command timeout.
pub const FACTS_DEADLINE: Duration = Duration::from_secs(180);

/// Connect to the hosts of `req` (bounded by `parallel`) and run, in one round trip each, the
/// prelude (servers), the host facts script and, on the first server of `api_from`, the
/// cluster query. When that server does not answer, the next ones are asked in turn.
pub async fn read(req: &Request, parallel: usize, rep: &Reporter) -> Reads {
    let started = Instant::now();
    let query = cluster::query_script(req.addons, &req.waits, req.sealing_key, req.snapshots);
    let host_script = host::script(req.longhorn, req.snapshot_dir.as_deref(), &req.sysctl);
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    // A JoinSet: when the read is dropped (Ctrl-C), no host gets a command after that.
    let mut tasks = tokio::task::JoinSet::new();
    for h in &req.hosts {
        let mut script = String::new();
        if let (Role::Server, Some(p)) = (h.role, &req.prelude) {
            script.push_str(&section("prelude", p));
        }
        if req.host_facts {
            script.push_str(&section("host", &host_script));
        }
        if req.api_from.first() == Some(&h.key) {
            script.push_str(&section("cluster", &query));
        }
        if script.is_empty() && !req.clock {
            continue;
        }
        // Last, so the time it prints is the one closest to the output's arrival.
        if req.host_facts || req.clock {
            script.push_str(&section("clock", "date +%s.%N"));
        }
        if req.progress {
            rep.host(&h.key, h.role.command());
            rep.step(&h.key, "connect and read facts");
        }
        let target = h.dial();
        let sem = sem.clone();
        let key = h.key.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = Session::connect_with(
                &target,
                &Cmd::new(script)
                    .label("read facts")
                    .secret_output()
                    .output_limit(CLUSTER_OUTPUT_LIMIT)
                    .timeout(target.command_timeout.min(FACTS_DEADLINE)),
            )
            .await;
            (key, r, std::time::SystemTime::now())
        });
    }
    let mut reads = Reads {
        hosts: req.hosts.clone(),
        sessions: Sessions::default(),
        errors: BTreeMap::new(),
        started: Default::default(),
        sections: BTreeMap::new(),
        received: BTreeMap::new(),
        cluster: ClusterFacts::default(),
        elapsed: Duration::ZERO,
    };
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r);
    }
    // In the order of the request, as the progress lines were.
    let order = |k: &str| req.hosts.iter().position(|h| h.key == k);
    results.sort_by_key(|r| r.as_ref().ok().and_then(|(k, _, _)| order(k)));
    for t in results {
        match t {
            Ok((key, Ok((session, out)), at)) => {
                reads.received.insert(key.clone(), at);
                // What the connection learned (a host key recorded or trusted for this run)
                // is said, not only logged.
                for note in session.notes() {
                    rep.warn(note);
                }
                if out.success() {
                    reads
                        .sections
                        .insert(key.clone(), split_sections(&out.stdout_str()));
                } else {
                    reads.errors.insert(
                        key.clone(),
                        format!("reading its facts failed: {}", out.stderr_tail(10)),
                    );
                    reads.started.insert(key.clone());
                }
                reads.sessions.insert(key, session);
            }
            Ok((key, Err(e), _)) => {
                if req.progress {
                    rep.done(&key, Err(e.to_string()));
                }
                if matches!(
                    e,
                    ssh::SshError::CommandFailed { .. }
                        | ssh::SshError::ShellBanner { .. }
                        | ssh::SshError::TooMuchOutput { .. }
                        | ssh::SshError::Timeout { .. }
                        | ssh::SshError::Disconnected { .. }
                ) {
                    reads.started.insert(key.clone());
                }
                reads.errors.insert(key, format!("{e:#}"));
            }
            Err(e) => {
                reads.errors.insert("?".into(), e.to_string());
            }
        }
    }
    reads.cluster = reads.ask_cluster(req, &query).await;
    reads.elapsed = started.elapsed();
    reads
}

impl Reads {
    /// What the prelude printed on each server that ran it, with its session.
    pub fn preludes(&self) -> Vec<(String, Session, String)> {
        self.sections
            .iter()
            .filter_map(|(k, s)| {
                let out = s.get("prelude")?;
                Some((k.clone(), self.sessions.get(k)?.clone(), out.clone()))
            })
            .collect()
    }

    /// Every host of the request that could not be reached or read, servers first, so one
    /// run names every problem (an unknown host key on each of them, say).
    pub fn unreachable_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| self.errors.contains_key(&h.key))
            .collect();
        hosts.sort_by_key(|h| h.role != Role::Server);
        hosts
            .iter()
            .map(|h| format!("{}: {}", h.key, self.errors[&h.key]))
            .collect()
    }

    /// The servers whose facts script may have taken the run lock though what it printed
    /// could not be read.
    pub fn servers_started_unread(&self) -> Vec<Host> {
        self.hosts
            .iter()
            .filter(|h| h.role == Role::Server && self.started.contains(&h.key))
            .cloned()
            .collect()
    }

    /// How many servers the request names (the run lock needs a majority of them).
    pub fn server_count(&self) -> usize {
        self.hosts.iter().filter(|h| h.role == Role::Server).count()
    }

    /// Servers of the request that could not be reached.
    pub fn unreachable_servers(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.role == Role::Server && self.errors.contains_key(&h.key))
            .map(|h| format!("{}: {}", h.key, self.errors[&h.key]))
            .collect()
    }

    async fn ask_cluster(&mut self, req: &Request, query: &str) -> ClusterFacts {
        let mut unanswered = Vec::new();
        for (i, key) in req.api_from.iter().enumerate() {
            let out = if i == 0 {
                match self.sections.get(key).and_then(|s| s.get("cluster")) {
                    Some(o) => o.clone(),
                    None => {
                        let why = self.errors.get(key).cloned().unwrap_or_default();
                        unanswered.push(format!("{key}: {why}"));
                        continue;
                    }
                }
            } else {
                let cmd = Cmd::new(query)
                    .label("read the cluster")
                    .secret_output()
                    .output_limit(CLUSTER_OUTPUT_LIMIT);
                let out = match self.sessions.get(key) {
                    Some(s) => s.exec(&cmd).await.map_err(|e| e.to_string()),
                    None if self.errors.contains_key(key) => Err(self.errors[key].clone()),
                    None => {
                        let Some(h) = self.hosts.iter().find(|h| &h.key == key) else {
                            continue;
                        };
                        match Session::connect_with(&h.dial(), &cmd).await {
                            Ok((s, o)) => {
                                self.sessions.insert(key.clone(), s);
                                Ok(o)
                            }
                            Err(e) => {
                                self.errors.insert(key.clone(), format!("{e:#}"));
                                Err(format!("{e:#}"))
                            }
                        }
                    }
                };
                match out {
                    Ok(o) => o.stdout_str(),
                    Err(e) => {
                        unanswered.push(format!("{key}: {e}"));
                        continue;
                    }
                }
            };
            match cluster::parse_answer(&out) {
                cluster::Answer::Objects { json, key: secret } => {
                    match cluster::from_answer(key, &json, secret.as_ref().map(|s| s.as_deref())) {
                        Ok(mut c) => {
                            c.unanswered = unanswered;
                            return c;
                        }
                        Err(e) => unanswered.push(format!("{key}: {e}")),
                    }
                }
                cluster::Answer::NoApi(why) => unanswered.push(format!("{key}: {why}")),
            }
        }
        ClusterFacts {
            unanswered,
            ..Default::default()
        }
    }

    /// The sessions, for a caller that stops here (releasing the run lock).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Parse what every host printed into [`Facts`], with `local` (read by [`local::read`]
    /// before connecting). Fails, naming every required host that could not be reached or
    /// read, before anything is planned.
    pub async fn into_facts(
        self,
        inv: &Inventory,
        req: &Request,
        mut local: LocalFacts,
    ) -> Result<(Sessions, Facts)> {
        let mut facts = Facts {
            cluster: self.cluster,
            ..Default::default()
        };
        let mut errors = Vec::new();
        for (key, sections) in &self.sections {
            let offset = sections
                .get("clock")
                .zip(self.received.get(key))
                .and_then(|(text, at)| clock_offset(text, *at));
            if let Some(o) = offset {
                facts.clocks.insert(key.clone(), o);
            }
        }
        for h in &self.hosts {
            let problem = match (self.errors.get(&h.key), self.sections.get(&h.key)) {
                (Some(e), _) => Some(e.clone()),
                (None, Some(s)) if req.host_facts => match s.get("host") {
                    Some(text) => match HostFacts::parse(text) {
                        Ok(f) => {
                            if let Some(c) = &f.config {
                                register_config_secrets(c);
                            }
                            // An adopted cluster's tokens live in k3s's own files.
                            for t in [&f.token_file, &f.agent_token_file].into_iter().flatten() {
                                ssh::register_secret(t.trim().to_string());
                                if let Some(p) = token::password(t.trim()) {
                                    ssh::register_secret(p.to_string());
                                }
                            }
                            facts.hosts.insert(h.key.clone(), f);
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    },
                    None => Some("its facts script did not run".into()),
                },
                _ => None,
            };
            if let Some(p) = problem {
                if h.required && req.host_facts {
                    errors.push(format!("{}: {p}", h.key));
                } else {
                    facts.unreachable.insert(h.key.clone(), p);
                }
            }
        }
        if !errors.is_empty() {
            bail!(
                "could not reach every host, so nothing was changed:\n  {}",
                errors.join("\n  ")
            );
        }
        if req.merge_target {
            local.merge_target = Some(local::merge_target()?);
        }
        if inv.install.airgap_images && req.host_facts {
            let arches: Vec<&'static str> = facts
                .hosts
                .values()
                .filter_map(|f| f.k3s_arch().ok().map(|(a, _)| a))
                .collect();
            let inv2 = inv.clone();
            local.images =
                tokio::task::spawn_blocking(move || local::image_sums(&inv2, arches)).await??;
        }
        if req.new_secrets {
            let held = facts.hosts.values().any(|f| {
                f.config
                    .as_deref()
                    .and_then(token::from_server_config)
                    .is_some()
            });
            if !held && local.token_backup.is_none() {
                let t = local::new_tokens()?;
                ssh::register_secret(t.server.clone());
                ssh::register_secret(t.agent.clone());
                local.new_tokens = Some(t);
            }
            // A cluster whose key Secret could not be read may hold a key: never make one
            // then.
            let cluster_known = facts.cluster.sealing_key_read
                || (facts.cluster.api.is_none() && !facts.hosts.values().any(|f| f.server_db));
            if inv.addons.sealed_secrets.is_some()
                && local.sealing_backup.is_none()
                && facts.cluster.sealing_key.is_none()
                && cluster_known
            {
                let key = tokio::task::spawn_blocking(
                    crate::addons::sealed_secrets::SealingKey::generate,
                )
                .await
                .map_err(|e| anyhow!("{e}"))??;
                local.new_sealing_key = Some(key);
            }
        }
        facts.local = local;
        Ok((self.sessions, facts))
    }
}

/// Secrets in a config.yaml read from a host are masked from then on.
fn register_config_secrets(config: &str) {
    if let Some(t) = token::from_server_config(config) {
        ssh::register_secret(t.server);
        ssh::register_secret(t.agent);
    }
    if let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(config) {
        if let Some(t) = doc.get("token").and_then(|v| v.as_str()) {
            ssh::register_secret(t.to_string());
        }
    }
}

/// How far the host's clock (`date +%s.%N` as it printed it, the last thing it printed) is
/// ahead of this machine's when the output arrived, in seconds (negative: behind). The error
/// is the time the output took to arrive.
fn clock_offset(text: &str, received: std::time::SystemTime) -> Option<f64> {
    let host: f64 = text.trim().parse().ok()?;
    let here = received
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(host - here)
}

/// Base64 text (`-` or empty for none) decoded as UTF-8.
pub(crate) fn b64(v: &str) -> Option<String> {
    use base64::Engine;
    if v == "-" || v.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_the_output() {
        let out = "@@bootstrap prelude\nacquired\n@@bootstrap host\nos.id\tdebian\nend\tok\n@@bootstrap cluster\ncluster.end\tok\n";
        let s = split_sections(out);
        assert_eq!(s["prelude"], "acquired\n");
        assert_eq!(s["host"], "os.id\tdebian\nend\tok\n");
        assert_eq!(s["cluster"], "cluster.end\tok\n");
        // A prelude that stops the script leaves no host section.
        let s = split_sections("@@bootstrap prelude\nheld 5\nid=x\n");
        assert!(!s.contains_key("host"));
    }
}
