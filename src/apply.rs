//! Apply: connect, gather facts, plan, and converge the cluster in phases.
//!
//! Phase order (DESIGN "Architecture"): connect → facts → validate hosts →
//! tokens → first server → other servers (serial, health-gated) → agents
//! (parallel, bounded) → labels/taints → kubeconfig → summary. Every host is
//! connected and its facts read before anything changes anywhere, so a host
//! that cannot be reached or trusted stops the run with nothing changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::Semaphore;

use crate::cluster;
use crate::facts::{HostFacts, HOST_FACTS_SCRIPT};
use crate::inventory::{self, Inventory};
use crate::k3s::artifacts::{self, Cache};
use crate::k3s::config::Value;
use crate::k3s::token::{self, TokenBackup};
use crate::k3s::{self, Role};
use crate::kubeconfig;
use crate::plan::{self, Action, Desired, DesiredNode, HostPlan, Join, ObservedNode, Tokens};
use crate::report::Reporter;
use crate::ssh::{self, Cmd, Session, SshConfig, SshTarget, TargetSpec};

/// Where the k3s binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallSource {
    /// Each host downloads from the mirror and checks the release sums.
    Download,
    /// The operator's cache (filled from the mirror once, checked) is uploaded.
    Upload,
}

#[derive(Debug, Clone)]
pub struct InstallSpec {
    pub source: InstallSource,
    pub mirror: String,
    pub cache_dir: PathBuf,
    pub airgap_images: bool,
}

/// One inventory node with how to reach it.
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub node: DesiredNode,
    pub target: SshTarget,
}

/// Everything `up` needs, resolved from the inventory.
#[derive(Debug, Clone)]
pub struct UpSpec {
    pub desired: Desired,
    pub hosts: Vec<HostSpec>,
    pub install: InstallSpec,
    /// `.bootstrap/` beside the inventory.
    pub state_dir: PathBuf,
    pub kubeconfig_path: PathBuf,
    /// Add-ons and extra manifests, rendered from the inventory (src/addons).
    pub addons: crate::addons::AddonsSpec,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub parallel: usize,
    /// Deadline for each wait (a service to become ready, nodes to be Ready).
    pub timeout: Duration,
    /// Agents upgraded at once (cordoned, drained, upgraded, uncordoned).
    pub max_unavailable: usize,
}

/// One connected host and what it looks like.
struct Live {
    spec: HostSpec,
    session: Session,
    facts: HostFacts,
}

/// What a run did, for the summary and tests.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UpReport {
    pub changes: usize,
    pub round_trips: BTreeMap<String, u64>,
    pub kubeconfig: Option<PathBuf>,
    pub plans: Vec<PlannedHost>,
    /// Wall seconds per phase, for the benchmark.
    pub phases: BTreeMap<String, f64>,
    /// Wall seconds spent blocked on k3s itself (services starting, nodes
    /// turning Ready); the rest of the run is the tool's own share.
    pub waiting_seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedHost {
    pub node: String,
    pub role: String,
    pub actions: Vec<String>,
}

fn config_value(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::Str(s.clone()),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => Value::List(
            items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        other => Value::Str(other.to_string()),
    }
}

fn config_map(m: &BTreeMap<String, toml::Value>) -> BTreeMap<String, Value> {
    m.iter()
        .map(|(k, v)| (k.clone(), config_value(v)))
        .collect()
}

impl UpSpec {
    /// Resolve a validated inventory into what `up` needs; `~/.ssh/config`
    /// fills what the inventory leaves open.
    pub fn from_inventory(inv: &Inventory) -> Result<UpSpec> {
        let ssh_config = SshConfig::load_default().context("reading ~/.ssh/config")?;
        let c = &inv.cluster;
        let mut server_config = config_map(&c.server_config);
        let defaults = [
            ("cluster-cidr", c.cluster_cidr.as_str(), "10.42.0.0/16"),
            ("service-cidr", c.service_cidr.as_str(), "10.43.0.0/16"),
            ("cluster-domain", c.cluster_domain.as_str(), "cluster.local"),
        ];
        for (key, value, default) in defaults {
            if value != default {
                server_config.insert(key.into(), Value::Str(value.into()));
            }
        }
        if let Some(dns) = &c.cluster_dns {
            server_config.insert("cluster-dns".into(), Value::Str(dns.clone()));
        }
        let desired = Desired {
            cluster_name: c.name.clone(),
            version: c.k3s_version.to_string(),
            nodes: inv
                .nodes
                .iter()
                .map(|n| DesiredNode {
                    name: n.name.clone(),
                    host: n.host.clone(),
                    role: match n.role {
                        inventory::Role::Server => Role::Server,
                        inventory::Role::Agent => Role::Agent,
                    },
                    labels: n.labels.clone(),
                    api_labels: n.api_labels.clone(),
                    taints: n
                        .taints
                        .iter()
                        .map(|t| plan::Taint {
                            key: t.key.clone(),
                            value: t.value.clone().unwrap_or_default(),
                            effect: t.effect.as_str().into(),
                        })
                        .collect(),
                    config: config_map(&n.config),
                })
                .collect(),
            api_endpoint: c.api_endpoint.clone(),
            tls_san: inv.tls_sans(),
            flannel_backend: (c.flannel_backend != inventory::FlannelBackend::Vxlan)
                .then(|| c.flannel_backend.as_str().to_string()),
            disable: inv.disabled_components(),
            etcd: c.datastore == inventory::Datastore::Etcd,
            server_config,
            agent_config: config_map(&c.agent_config),
        };
        let mut hosts = Vec::new();
        for n in &inv.nodes {
            // Only what the inventory says explicitly: ~/.ssh/config fills the rest.
            let t = inv.ssh_overrides(n);
            let spec = TargetSpec {
                name: Some(n.name.clone()),
                host: t.host.clone(),
                port: t.port,
                user: t.user.clone(),
                identity_file: t.identity_file.clone(),
                known_hosts: t.known_hosts.clone(),
                policy: t.host_key_policy.map(|p| match p {
                    inventory::HostKeyPolicy::Strict => ssh::HostKeyPolicy::Strict,
                    inventory::HostKeyPolicy::AcceptNew => ssh::HostKeyPolicy::AcceptNew,
                }),
                bastion: t.bastion.as_ref().map(|b| {
                    let user = b.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                    format!("{user}{}:{}", b.host, b.port)
                }),
                connect_timeout: Some(t.connect_timeout),
                command_timeout: Some(t.command_timeout),
                retry: None,
            };
            let target = ssh_config
                .resolve(&spec)
                .with_context(|| format!("{}: resolving its SSH settings", n.name))?;
            hosts.push(HostSpec {
                node: desired
                    .node(&n.name)
                    .cloned()
                    .ok_or_else(|| anyhow!("{} vanished from the inventory", n.name))?,
                target,
            });
        }
        Ok(UpSpec {
            install: InstallSpec {
                source: match inv.install.source {
                    inventory::InstallSource::Download => InstallSource::Download,
                    inventory::InstallSource::Upload => InstallSource::Upload,
                },
                mirror: inv.install.mirror.clone(),
                cache_dir: inv.install.cache_dir.clone(),
                airgap_images: inv.install.airgap_images,
            },
            state_dir: inv.state_dir(),
            kubeconfig_path: inv.base_dir().join(format!("{}.kubeconfig", c.name)),
            addons: crate::addons::AddonsSpec::from_inventory(inv).map_err(|e| anyhow!("{e}"))?,
            desired,
            hosts,
        })
    }
}

fn token_backup_path(spec: &UpSpec) -> PathBuf {
    spec.state_dir.join("tokens.json")
}

/// Connect to every host and read its facts, in parallel (bounded). Fails,
/// naming every host that failed, before anything is changed.
async fn gather(spec: &UpSpec, opts: &Options, rep: &Reporter) -> Result<Vec<Live>> {
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut tasks = Vec::new();
    for h in &spec.hosts {
        rep.host(&h.node.name, h.node.role.command());
        let h = h.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let session = Session::connect(&h.target).await?;
            let out = session
                .run_ok(&Cmd::new(HOST_FACTS_SCRIPT).label("read host facts"))
                .await?;
            let facts =
                HostFacts::parse(&out.stdout_str()).map_err(|e| anyhow!("{}: {e}", h.node.name))?;
            Ok::<_, anyhow::Error>(Live {
                spec: h,
                session,
                facts,
            })
        }));
    }
    let mut live = Vec::new();
    let mut errors = Vec::new();
    for (task, h) in tasks.into_iter().zip(&spec.hosts) {
        rep.step(&h.node.name, "connect and read facts");
        match task.await {
            Ok(Ok(l)) => {
                if let Some(c) = &l.facts.config {
                    register_config_secrets(c);
                }
                rep.step(&h.node.name, "facts read");
                live.push(l)
            }
            Ok(Err(e)) => {
                rep.done(&h.node.name, Err(e.to_string()));
                errors.push(format!("{}: {e:#}", h.node.name));
            }
            Err(e) => errors.push(format!("{}: {e}", h.node.name)),
        }
    }
    if !errors.is_empty() {
        bail!(
            "could not reach every host, so nothing was changed:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(live)
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

/// Host-level problems the plan cannot fix.
fn validate_hosts(live: &[Live], spec: &UpSpec) -> Result<()> {
    let mut errors = Vec::new();
    for l in live {
        let n = &l.spec.node;
        if l.facts.init != "systemd" {
            errors.push(format!(
                "{}: init system is {}; bootstrap installs k3s as a systemd service",
                n.name, l.facts.init
            ));
        }
        if let Err(e) = l.facts.k3s_arch() {
            errors.push(format!("{}: {e}", n.name));
        }
        if spec.install.source == InstallSource::Download && !l.facts.has_curl {
            errors.push(format!(
                "{}: curl is not installed, and install.source = \"download\" needs it on the host; install curl or use source = \"upload\"",
                n.name
            ));
        }
        if let Some(role) = l.facts.installed_role() {
            if role != n.role {
                errors.push(format!(
                    "{}: k3s is installed as {role} but the inventory says {}; a node does not change role in place: remove it (bootstrap reset --node {}) and add it again",
                    n.name, n.role, n.name
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

/// The cluster's tokens: from a live server first (the cluster is the source
/// of truth), else the backup, else new ones when no server has data yet.
fn resolve_tokens(live: &[Live], spec: &UpSpec, rep: &Reporter) -> Result<Tokens> {
    let path = token_backup_path(spec);
    let from_cluster = live
        .iter()
        .filter(|l| l.spec.node.role == Role::Server)
        .find_map(|l| {
            l.facts
                .config
                .as_deref()
                .and_then(token::from_server_config)
        });
    let backup = token::load_backup(&path)
        .with_context(|| format!("reading the token backup {}", path.display()))?;
    let any_data = live.iter().any(|l| l.facts.server_db);
    let tokens = match (from_cluster, backup.clone()) {
        (Some(t), _) => t,
        (None, Some(b)) => b,
        (None, None) if !any_data => {
            rep.info("generating a new server token and agent token");
            TokenBackup {
                server: token::generate().map_err(|e| anyhow!("generating the server token: {e}"))?,
                agent: token::generate().map_err(|e| anyhow!("generating the agent token: {e}"))?,
            }
        }
        (None, None) => bail!(
            "a server has cluster data but neither its config.yaml nor {} holds the cluster token; restore the backup from where you keep it",
            path.display()
        ),
    };
    ssh::register_secret(tokens.server.clone());
    ssh::register_secret(tokens.agent.clone());
    if backup.as_ref() != Some(&tokens) {
        token::save_backup(&path, &tokens)
            .with_context(|| format!("writing the token backup {}", path.display()))?;
        rep.info(&format!("token backup written to {}", path.display()));
    }
    Ok(Tokens {
        server: tokens.server,
        agent: tokens.agent,
    })
}

/// The address agents (and joining servers when no endpoint is set) use.
fn agent_server_url(spec: &UpSpec) -> Result<String> {
    if let Some(ep) = &spec.desired.api_endpoint {
        return Ok(plan::server_url(ep));
    }
    let first = spec
        .desired
        .servers()
        .next()
        .ok_or_else(|| anyhow!("the inventory has no server"))?;
    Ok(plan::server_url(&first.host))
}

/// The `server:` a host's current config.yaml names.
fn current_server(config: Option<&str>) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(config?).ok()?;
    doc.get("server")?.as_str().map(String::from)
}

/// Plan every host. `joins` gives fresh servers their way in.
fn plan_all(live: &[Live], spec: &UpSpec, tokens: &Tokens) -> Result<Vec<HostPlan>> {
    let agent_url = agent_server_url(spec)?;
    // With air-gap images, the release's hash of the tarball for each
    // architecture, from the operator-side cache of the sums file.
    let mut images: BTreeMap<&str, (String, String)> = BTreeMap::new();
    if spec.install.airgap_images {
        let cache = Cache {
            dir: spec.install.cache_dir.clone(),
        };
        for l in live {
            let (arch, _) = l.facts.k3s_arch()?;
            if images.contains_key(arch) {
                continue;
            }
            let file = artifacts::airgap_images_file(arch);
            let sha = cache
                .expected(&spec.install.mirror, &spec.desired.version, arch, &file)
                .context("looking up the air-gap images in the release sums")?;
            images.insert(arch, (file, sha));
        }
    }
    // A cluster exists when any server has etcd data; then nobody runs
    // cluster-init again (replacing the first server included), and a fresh
    // server joins through a LIVE one (k3s running on data), never a dead host.
    let existing = live
        .iter()
        .find(|l| {
            l.spec.node.role == Role::Server && l.facts.server_db && l.facts.server.is_active()
        })
        .or_else(|| {
            live.iter()
                .find(|l| l.spec.node.role == Role::Server && l.facts.server_db)
        });
    let init_server = spec.desired.servers().next().map(|n| n.name.clone());
    let server_urls: Vec<String> = spec
        .desired
        .servers()
        .map(|s| plan::server_url(&s.host))
        .collect();
    // Agents: without a fixed endpoint, the first server (by the inventory)
    // unless the cluster exists and that one is not live yet (it is being
    // replaced): then the live server a fresh server would join.
    let agent_url = match (&spec.desired.api_endpoint, existing) {
        (None, Some(e)) => {
            let first_live = spec.desired.servers().next().is_some_and(|f| {
                live.iter().any(|l| {
                    l.spec.node.name == f.name && l.facts.server_db && l.facts.server.is_active()
                })
            });
            if first_live {
                agent_url
            } else {
                plan::server_url(&e.spec.node.host)
            }
        }
        _ => agent_url,
    };
    let mut plans = Vec::new();
    for l in live {
        let n = &l.spec.node;
        // An installed agent keeps the server it was given while that is
        // still one of the inventory's servers: no restart for nothing.
        let current = (n.role == Role::Agent && spec.desired.api_endpoint.is_none())
            .then(|| current_server(l.facts.config.as_deref()))
            .flatten()
            .filter(|u| server_urls.contains(u));
        let config = spec
            .desired
            .node_config(n, tokens, current.as_deref().unwrap_or(&agent_url));
        let join = match (n.role, existing) {
            (Role::Agent, _) => None,
            (Role::Server, Some(e)) => Some(Join::Via(plan::server_url(&e.spec.node.host))),
            (Role::Server, None) if Some(&n.name) == init_server.as_ref() => {
                Some(if spec.desired.etcd {
                    Join::Init
                } else {
                    Join::Sqlite
                })
            }
            (Role::Server, None) => Some(Join::Via(match &spec.desired.api_endpoint {
                Some(ep) => plan::server_url(ep),
                None => plan::server_url(
                    &spec
                        .desired
                        .servers()
                        .next()
                        .map(|s| s.host.clone())
                        .unwrap_or_default(),
                ),
            })),
        };
        let p = plan::plan_host(&plan::HostInput {
            node: n,
            facts: &l.facts,
            current_config: l.facts.config.as_deref(),
            config: &config,
            join: join.as_ref(),
            version: &spec.desired.version,
            images: l
                .facts
                .k3s_arch()
                .ok()
                .and_then(|(arch, _)| images.get(arch))
                .map(|(f, s)| (f.as_str(), s.as_str())),
        })
        .with_context(|| format!("{}: rendering its configuration", n.name))?;
        plans.push(p);
    }
    Ok(plans)
}

/// Execute one host's plan, then wait until its service is up.
async fn execute(l: &Live, p: &HostPlan, opts: &Options, rep: &Reporter) -> Result<Duration> {
    let name = &l.spec.node.name;
    let s = &l.session;
    let mut waited = Duration::ZERO;
    let role = p.role;
    let mut unit_changed = false;
    for action in &p.actions {
        match action {
            // Put in place (fresh host) or staged (upgrade) by the artifacts
            // phase; an upgrade moves the staged binary in now, at its turn.
            Action::InstallBinary { .. } if !p.fresh => {
                rep.step(name, &action.to_string());
                s.run_ok(
                    &Cmd::new(format!(
                        "mv -f {} {}",
                        ssh::sh_quote(STAGED_BIN),
                        ssh::sh_quote(k3s::BIN_PATH)
                    ))
                    .label("put the staged k3s in place"),
                )
                .await?;
            }
            Action::InstallBinary { .. } | Action::InstallImages { .. } => continue,
            Action::Links(links) => {
                rep.step(name, &action.to_string());
                s.run_ok(
                    &Cmd::new(artifacts::links_script(links)).label("link kubectl, crictl, ctr"),
                )
                .await?;
            }
            Action::WriteFile { file, .. } => {
                rep.step(name, &action.to_string());
                if file.path.ends_with(".service") {
                    unit_changed = true;
                }
                // put_file creates a missing parent directory in its check.
                s.put_file(
                    &file.path,
                    ssh::Source::Bytes(&file.content),
                    file.mode,
                    Some((0, 0)),
                )
                .await?;
            }
            Action::Start { .. } | Action::Restart { .. } => {
                rep.step(name, &action.to_string());
                let svc = role.service();
                let verb = if matches!(action, Action::Start { .. }) {
                    "start"
                } else {
                    "restart"
                };
                let reload = if unit_changed || p.fresh {
                    "systemctl daemon-reload && "
                } else {
                    ""
                };
                // --no-block: with Type=notify and TimeoutStartSec=0 a failed
                // join would block `systemctl start` forever.
                s.run_ok(
                    &Cmd::new(format!(
                        "{reload}systemctl enable {svc} >/dev/null 2>&1 && systemctl {verb} --no-block {svc}"
                    ))
                    .label(format!("{verb} {svc}")),
                )
                .await?;
                let t = Instant::now();
                wait_active(l, role, opts, rep).await?;
                waited += t.elapsed();
            }
        }
        rep.change(name, &action.to_string());
    }
    if unit_changed && !p.restarts() {
        s.run_ok(&Cmd::new("systemctl daemon-reload").label("daemon-reload"))
            .await?;
    }
    Ok(waited)
}

/// Where a new k3s binary waits, verified, until its host's turn to restart.
const STAGED_BIN: &str = "/usr/local/bin/.k3s.bootstrap-staged";

/// The binary goes straight into place on a fresh host (nothing runs it
/// yet) and is staged on a host that runs k3s (a rolling upgrade).
async fn install_binary(l: &Live, spec: &UpSpec, fresh: bool) -> Result<()> {
    let (arch, binary) = l.facts.k3s_arch()?;
    let dest = if fresh { k3s::BIN_PATH } else { STAGED_BIN };
    install_artifact(l, spec, arch, binary, dest, 0o755).await
}

/// Downloads and uploads for every host that needs them, side by side
/// (bounded), before any server is touched: the serial server phase then
/// only restarts, and a refused download stops the run with nothing restarted.
async fn artifacts_phase(
    live: &[Live],
    plans: &[HostPlan],
    spec: &UpSpec,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let results = futures::future::join_all(live.iter().zip(plans).map(|(l, p)| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await;
            let name = &l.spec.node.name;
            for action in &p.actions {
                match action {
                    Action::InstallBinary { .. } => {
                        rep.step(name, &action.to_string());
                        install_binary(l, spec, p.fresh).await?;
                        let what = if p.fresh {
                            action.to_string()
                        } else {
                            format!("stage k3s {} (in place at its turn)", spec.desired.version)
                        };
                        rep.change(name, &what);
                    }
                    Action::InstallImages { file, .. } => {
                        rep.step(name, &action.to_string());
                        install_images(l, spec, file).await?;
                        rep.change(name, &action.to_string());
                    }
                    _ => {}
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    }))
    .await;
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    if !errors.is_empty() {
        bail!(
            "{}\nno k3s service was restarted; fix the cause and run again",
            errors.join("\n")
        );
    }
    Ok(())
}

async fn install_images(l: &Live, spec: &UpSpec, file: &str) -> Result<()> {
    let (arch, _) = l.facts.k3s_arch()?;
    let dest = format!("{}/{file}", k3s::IMAGES_DIR);
    install_artifact(l, spec, arch, file, &dest, 0o644).await
}

/// Put release file `file` at `dest` on the host: downloaded there, or
/// uploaded from the operator's cache. Either way its sha256 is checked
/// against the release sums on the host, and only a match replaces `dest`.
async fn install_artifact(
    l: &Live,
    spec: &UpSpec,
    arch: &str,
    file: &str,
    dest: &str,
    mode: u32,
) -> Result<()> {
    let version = &spec.desired.version;
    let name = &l.spec.node.name;
    let script = match spec.install.source {
        InstallSource::Download => {
            artifacts::download_script(&spec.install.mirror, version, arch, file, dest, mode)
        }
        InstallSource::Upload => {
            let cache = Cache {
                dir: spec.install.cache_dir.clone(),
            };
            let mirror = spec.install.mirror.clone();
            let (v, a, f) = (version.clone(), arch.to_string(), file.to_string());
            let (path, want) =
                tokio::task::spawn_blocking(move || cache.verified(&mirror, &v, &a, &f))
                    .await?
                    .with_context(|| {
                        format!("{name}: preparing {file} of k3s {version} for upload")
                    })?;
            let (dir, base) = dest.rsplit_once('/').unwrap_or(("", dest));
            let tmp = format!("{dir}/.{base}.bootstrap-upload");
            l.session
                .put_file(&tmp, ssh::Source::Path(&path), mode, Some((0, 0)))
                .await?;
            artifacts::verify_and_move_script(&tmp, dest, &want)
        }
    };
    let out = l
        .session
        .exec(&Cmd::new(script).label(format!("install {file} of k3s {version}")))
        .await?;
    if !out.success() {
        bail!(
            "{name}: installing {file} of k3s {version} from {} failed; {dest} was left as it was:\n{}",
            spec.install.mirror,
            out.stderr_tail(10)
        );
    }
    Ok(())
}

/// Poll until the service is active (k3s sends READY only when it is), or
/// fail at the deadline with the journal's tail.
async fn wait_active(l: &Live, role: Role, opts: &Options, rep: &Reporter) -> Result<()> {
    let svc = role.service();
    let name = &l.spec.node.name;
    rep.step(name, &format!("waiting for {svc} to be ready"));
    let deadline = Instant::now() + opts.timeout;
    let probe = match role {
        Role::Server => format!(
            "systemctl is-active {svc} && k3s kubectl get --raw /readyz >/dev/null 2>&1 && echo api-ok"
        ),
        Role::Agent => format!("systemctl is-active {svc}"),
    };
    loop {
        let out = l
            .session
            .exec(&Cmd::new(probe.clone()).label(format!("check {svc}")))
            .await?;
        let text = out.stdout_str();
        let ready = match role {
            Role::Server => text.contains("api-ok"),
            Role::Agent => text.trim() == "active",
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let journal = l
                .session
                .exec(
                    &Cmd::new(format!(
                        "journalctl -u {svc} -n 15 --no-pager 2>&1 | tail -n 15"
                    ))
                    .label("journal"),
                )
                .await
                .map(|o| o.stdout_str())
                .unwrap_or_default();
            bail!(
                "{name}: {svc} did not become ready within {:?} (state: {}); last log lines:\n{}",
                opts.timeout,
                text.lines().next().unwrap_or("unknown"),
                ssh::redact(&journal)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Read every Node through `server`.
async fn get_nodes(server: &Live) -> Result<Vec<ObservedNode>> {
    let out = server
        .session
        .run_ok(&Cmd::new(cluster::GET_NODES).label("kubectl get nodes"))
        .await?;
    Ok(cluster::parse_nodes(&out.stdout_str())?)
}

/// Wait until every inventory node is registered and Ready.
async fn wait_nodes_ready(
    server: &Live,
    spec: &UpSpec,
    opts: &Options,
    rep: &Reporter,
) -> Result<Vec<ObservedNode>> {
    let deadline = Instant::now() + opts.timeout;
    loop {
        let nodes = get_nodes(server).await?;
        let missing: Vec<&str> = spec
            .desired
            .nodes
            .iter()
            .filter(|d| !nodes.iter().any(|n| n.name == d.name && n.ready))
            .map(|d| d.name.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(nodes);
        }
        for m in &missing {
            rep.step(m, "waiting for the node to be Ready");
        }
        if Instant::now() > deadline {
            bail!(
                "these nodes are not Ready after {:?}: {}; check `journalctl -u k3s-agent` (or k3s) on them",
                opts.timeout,
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Converge the cluster. With `dry_run`, plan only.
pub async fn up(spec: &UpSpec, opts: &Options, rep: &Reporter, dry_run: bool) -> Result<UpReport> {
    let gather_start = Instant::now();
    let live = gather(spec, opts, rep).await?;
    let gathered = gather_start.elapsed().as_secs_f64();
    validate_hosts(&live, spec)?;
    let down = plan::downgrades(
        &spec.desired.version,
        live.iter().filter_map(|l| {
            l.facts
                .bin_version
                .as_deref()
                .map(|v| (l.spec.node.name.as_str(), v))
        }),
    );
    if !down.is_empty() {
        bail!(
            "k3s_version {} is older than what runs on the hosts ({}); k3s does not support downgrades, so nothing was changed: set k3s_version to the version they run or newer",
            spec.desired.version,
            down.join(", ")
        );
    }
    let tokens = if dry_run {
        // A plan must not write the backup; use what exists or placeholders.
        let from_cluster = live.iter().find_map(|l| {
            l.facts
                .config
                .as_deref()
                .and_then(token::from_server_config)
        });
        let backup = token::load_backup(&token_backup_path(spec)).ok().flatten();
        match from_cluster.or(backup) {
            Some(t) => Tokens {
                server: t.server,
                agent: t.agent,
            },
            None => Tokens {
                server: "<new>".into(),
                agent: "<new>".into(),
            },
        }
    } else {
        resolve_tokens(&live, spec, rep)?
    };
    let plans = plan_all(&live, spec, &tokens)?;
    let mut report = UpReport {
        plans: plans
            .iter()
            .map(|p| PlannedHost {
                node: p.node.clone(),
                role: p.role.command().into(),
                actions: p.actions.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        ..Default::default()
    };
    report.phases.insert("connect-facts".into(), gathered);

    let by_name: BTreeMap<&str, (&Live, &HostPlan)> = live
        .iter()
        .zip(&plans)
        .map(|(l, p)| (l.spec.node.name.as_str(), (l, p)))
        .collect();

    if dry_run {
        let observed = match healthy_server(&live) {
            Some(s) => get_nodes(s).await.unwrap_or_default(),
            None => vec![],
        };
        for d in &spec.desired.nodes {
            if let Some(o) = observed.iter().find(|o| o.name == d.name) {
                let drift = plan::node_drift(d, o);
                if !drift.is_empty() {
                    if let Some(p) = report.plans.iter_mut().find(|p| p.node == d.name) {
                        p.actions.push(describe_drift(&drift));
                    }
                }
            }
        }
        plan_addons(&live, spec, rep, &mut report)?;
        for l in &live {
            rep.done(&l.spec.node.name, Ok(()));
        }
        report.round_trips = round_trips(&live);
        return Ok(report);
    }

    // Node prerequisites of the add-ons (Longhorn), before k3s changes anywhere.
    let phase_start = Instant::now();
    prerequisites(&live, spec, opts, rep, &mut report).await?;
    report
        .phases
        .insert("prerequisites".into(), phase_start.elapsed().as_secs_f64());

    let phase_start = Instant::now();
    artifacts_phase(&live, &plans, spec, opts, rep).await?;
    report
        .phases
        .insert("artifacts".into(), phase_start.elapsed().as_secs_f64());

    // Servers, one at a time: a server that already has data first, so a
    // fresh one always joins a live cluster; the init server when none has.
    let mut servers: Vec<&DesiredNode> = spec.desired.servers().collect();
    servers.sort_by_key(|n| {
        let has_data = by_name
            .get(n.name.as_str())
            .is_some_and(|(l, _)| l.facts.server_db);
        !has_data
    });
    let mut waiting = Duration::ZERO;
    let phase_start = Instant::now();
    for n in servers {
        let (l, p) = by_name[n.name.as_str()];
        if !p.is_noop() {
            waiting += execute(l, p, opts, rep).await?;
            if p.restarts() {
                // Health gate: this server's Node is Ready before the next one.
                let t = Instant::now();
                let version = p.is_upgrade().then_some(spec.desired.version.as_str());
                wait_node_ready(l, &n.name, version, opts, rep).await?;
                waiting += t.elapsed();
            }
        }
    }
    report
        .phases
        .insert("servers".into(), phase_start.elapsed().as_secs_f64());
    let phase_start = Instant::now();
    // Agents in parallel, bounded; those moving to another version after,
    // in batches (rolling upgrade).
    let (upgrades, parallel): (Vec<&DesiredNode>, Vec<&DesiredNode>) = spec
        .desired
        .agents()
        .partition(|n| by_name[n.name.as_str()].1.is_upgrade());
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let results = futures::future::join_all(
        parallel
            .iter()
            .map(|n| {
                let (l, p) = by_name[n.name.as_str()];
                let sem = sem.clone();
                async move {
                    let _permit = sem.acquire().await;
                    if p.is_noop() {
                        return Ok(Duration::ZERO);
                    }
                    execute(l, p, opts, rep).await
                }
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let mut errors = Vec::new();
    let mut agents_waiting = Duration::ZERO;
    if errors_ok(&parallel, results, rep, &mut errors, &mut agents_waiting) && !upgrades.is_empty()
    {
        let server = healthy_server(&live).ok_or_else(|| anyhow!("no server is running k3s"))?;
        for batch in upgrades.chunks(opts.max_unavailable.max(1)) {
            let results = futures::future::join_all(batch.iter().map(|n| {
                let (l, p) = by_name[n.name.as_str()];
                upgrade_agent(server, l, p, spec, opts, rep)
            }))
            .await;
            let mut batch_waiting = Duration::ZERO;
            if !errors_ok(batch, results, rep, &mut errors, &mut batch_waiting) {
                // Stop: a failed batch must not take more nodes down.
                break;
            }
            agents_waiting += batch_waiting;
        }
    }
    waiting += agents_waiting;
    report
        .phases
        .insert("agents".into(), phase_start.elapsed().as_secs_f64());
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }

    let server = healthy_server(&live).ok_or_else(|| anyhow!("no server is running k3s"))?;
    let any_started = plans.iter().any(HostPlan::restarts);
    let phase_start = Instant::now();
    let nodes = if any_started {
        let nodes = wait_nodes_ready(server, spec, opts, rep).await?;
        waiting += phase_start.elapsed();
        nodes
    } else {
        get_nodes(server).await?
    };
    report
        .phases
        .insert("nodes-ready".into(), phase_start.elapsed().as_secs_f64());
    let phase_start = Instant::now();
    reconcile_labels(server, spec, &nodes, rep).await?;
    let addons_start = Instant::now();
    addons_phase(&live, server, spec, opts, rep, &mut report).await?;
    report
        .phases
        .insert("addons".into(), addons_start.elapsed().as_secs_f64());
    report.kubeconfig = write_kubeconfig(server, any_started, spec, rep).await?;
    report.phases.insert(
        "labels-kubeconfig".into(),
        phase_start.elapsed().as_secs_f64(),
    );
    report.waiting_seconds = waiting.as_secs_f64();
    for l in &live {
        rep.done(&l.spec.node.name, Ok(()));
    }
    report.round_trips = round_trips(&live);
    Ok(report)
}

fn round_trips(live: &[Live]) -> BTreeMap<String, u64> {
    live.iter()
        .map(|l| (l.spec.node.name.clone(), l.session.stats().round_trips()))
        .collect()
}

/// Collect a phase's results: errors reported and kept, the longest wait
/// added (side by side, the longest wait is what the run waited). True when
/// every host succeeded.
fn errors_ok(
    nodes: &[&DesiredNode],
    results: Vec<Result<Duration>>,
    rep: &Reporter,
    errors: &mut Vec<String>,
    waiting: &mut Duration,
) -> bool {
    let mut ok = true;
    for (n, r) in nodes.iter().zip(results) {
        match r {
            Ok(w) => *waiting = (*waiting).max(w),
            Err(e) => {
                ok = false;
                rep.done(&n.name, Err(format!("{e:#}")));
                errors.push(format!("{e:#}"));
            }
        }
    }
    ok
}

/// One agent of a rolling upgrade: cordon and drain it (through `server`),
/// install the new version and restart, wait until its Node is Ready on the
/// new version, uncordon. A drain that does not finish is reported and the
/// upgrade goes on (as `kubectl drain --timeout` then leaves the node cordoned).
async fn upgrade_agent(
    server: &Live,
    l: &Live,
    p: &HostPlan,
    spec: &UpSpec,
    opts: &Options,
    rep: &Reporter,
) -> Result<Duration> {
    let name = &l.spec.node.name;
    let api = &server.session;
    crate::lifecycle::drain(api, name, opts.timeout.min(Duration::from_secs(300)), rep).await?;
    let mut waited = execute(l, p, opts, rep).await?;
    let t = Instant::now();
    wait_node_ready(server, name, Some(&spec.desired.version), opts, rep).await?;
    waited += t.elapsed();
    rep.step(name, "uncordon");
    api.run_ok(
        &Cmd::new(format!(
            "k3s kubectl uncordon {}",
            ssh::quote::sh_quote(name)
        ))
        .label("kubectl uncordon"),
    )
    .await?;
    rep.change(name, "uncordoned");
    Ok(waited)
}

/// A server whose k3s is running (after this run's changes).
fn healthy_server(live: &[Live]) -> Option<&Live> {
    live.iter()
        .find(|l| l.spec.node.role == Role::Server && l.facts.server.is_installed())
        .or_else(|| live.iter().find(|l| l.spec.node.role == Role::Server))
}

/// Wait until `name` is Ready (on `version`, when given), asking `l`.
async fn wait_node_ready(
    l: &Live,
    name: &str,
    version: Option<&str>,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    rep.step(name, "waiting for the node to be Ready");
    let deadline = Instant::now() + opts.timeout;
    loop {
        let nodes = get_nodes(l).await?;
        if nodes
            .iter()
            .any(|n| n.name == name && n.ready && version.is_none_or(|v| n.version == v))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: the node is not Ready{} after {:?}",
                version.map(|v| format!(" on {v}")).unwrap_or_default(),
                opts.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn describe_drift(d: &plan::NodeDrift) -> String {
    let mut parts = Vec::new();
    for (k, v) in &d.set_labels {
        parts.push(format!("label {k}={v}"));
    }
    for k in &d.remove_labels {
        parts.push(format!("remove label {k}"));
    }
    for t in &d.add_taints {
        parts.push(format!("taint {}", t.spec()));
    }
    for t in &d.remove_taints {
        parts.push(format!("remove taint {}", t.spec()));
    }
    if parts.is_empty() && d.annotation.is_some() {
        parts.push("record managed labels and taints".into());
    }
    parts.join(", ")
}

/// Labels and taints through the API, in one round trip for all nodes.
async fn reconcile_labels(
    server: &Live,
    spec: &UpSpec,
    nodes: &[ObservedNode],
    rep: &Reporter,
) -> Result<()> {
    let mut script = String::new();
    for d in &spec.desired.nodes {
        let Some(o) = nodes.iter().find(|o| o.name == d.name) else {
            continue;
        };
        let drift = plan::node_drift(d, o);
        if drift.is_empty() {
            continue;
        }
        rep.change(&d.name, &describe_drift(&drift));
        script.push_str(&cluster::drift_script(&d.name, &drift));
    }
    if script.is_empty() {
        return Ok(());
    }
    rep.step(&server.spec.node.name, "reconcile labels and taints");
    server
        .session
        .run_ok(&Cmd::new(format!("set -e\n{script}")).label("kubectl label/taint"))
        .await?;
    Ok(())
}

/// Fetch the admin kubeconfig, rewrite its address and names, write it 0600
/// beside the inventory when it differs.
async fn write_kubeconfig(
    server: &Live,
    reread: bool,
    spec: &UpSpec,
    rep: &Reporter,
) -> Result<Option<PathBuf>> {
    // k3s rewrites its kubeconfig at every start; the copy read with the
    // facts is current unless something (re)started during this run.
    let text = match server.facts.kubeconfig.clone() {
        Some(t) if !reread => t,
        _ => {
            let bytes = server.session.get_file(k3s::KUBECONFIG_PATH).await?;
            String::from_utf8(bytes).context("the server's kubeconfig is not UTF-8")?
        }
    };
    let address = spec
        .desired
        .api_endpoint
        .clone()
        .unwrap_or_else(|| server.spec.node.host.clone());
    let ours = kubeconfig::rewrite(
        &text,
        &spec.desired.cluster_name,
        &plan::server_url(&address),
    )?;
    let path = &spec.kubeconfig_path;
    if std::fs::read_to_string(path).ok().as_deref() == Some(ours.as_str()) {
        return Ok(Some(path.clone()));
    }
    write_private(path, ours.as_bytes())?;
    rep.info(&format!("kubeconfig written to {}", path.display()));
    Ok(Some(path.clone()))
}

/// Write a file with mode 0600 atomically.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("bootstrap-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

// ------------------------------------------------------------------ add-ons (src/addons)

/// The add-on changes as one pseudo-host entry of the plan ("add-ons", role "cluster").
fn push_addon_actions(report: &mut UpReport, actions: Vec<String>) {
    if !actions.is_empty() {
        report.plans.push(PlannedHost {
            node: "add-ons".into(),
            role: "cluster".into(),
            actions,
        });
    }
}

/// For `plan`: Longhorn prerequisites per host and the add-on manifest changes.
fn plan_addons(live: &[Live], spec: &UpSpec, rep: &Reporter, report: &mut UpReport) -> Result<()> {
    if spec.addons.longhorn.is_some() {
        for l in live {
            let name = &l.spec.node.name;
            let p =
                crate::addons::longhorn::plan_prereqs(name, &l.facts.os_id, &l.facts.addons.prereq);
            for w in p.warnings.iter().chain(&p.errors) {
                rep.warn(w);
            }
            if let Some(h) = report.plans.iter_mut().find(|h| &h.node == name) {
                h.actions.extend(p.fixes.iter().map(ToString::to_string));
            }
        }
    }
    let servers = addon_servers(live);
    push_addon_actions(
        report,
        crate::addons::converge::plan(&servers, &spec.addons)?,
    );
    Ok(())
}

fn addon_servers(live: &[Live]) -> Vec<crate::addons::converge::Server<'_>> {
    live.iter()
        .filter(|l| l.spec.node.role == Role::Server)
        .map(|l| crate::addons::converge::Server {
            name: &l.spec.node.name,
            session: &l.session,
            facts: &l.facts,
        })
        .collect()
}

/// Longhorn's node prerequisites on every node (reference/addons.md §3.2): problems that
/// cannot be fixed stop the run before anything changes; the fixes run in parallel, and a
/// node's failed fix names the node and what apt (or systemctl, modprobe) said.
async fn prerequisites(
    live: &[Live],
    spec: &UpSpec,
    opts: &Options,
    rep: &Reporter,
    report: &mut UpReport,
) -> Result<()> {
    use crate::addons::longhorn;
    if spec.addons.longhorn.is_none() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut work = Vec::new();
    for l in live {
        let p = longhorn::plan_prereqs(&l.spec.node.name, &l.facts.os_id, &l.facts.addons.prereq);
        for w in &p.warnings {
            rep.warn(w);
        }
        errors.extend(p.errors.clone());
        if !p.fixes.is_empty() {
            work.push((l, p.fixes));
        }
    }
    if !errors.is_empty() {
        bail!(
            "Longhorn's node prerequisites cannot be met, so nothing was changed:\n  {}",
            errors.join("\n  ")
        );
    }
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let results = futures::future::join_all(work.iter().map(|(l, fixes)| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await;
            let name = &l.spec.node.name;
            let mut done = Vec::new();
            for fix in fixes {
                rep.step(name, &fix.to_string());
                let out = l
                    .session
                    .exec(&Cmd::new(longhorn::fix_script(fix)).label(fix.to_string()))
                    .await?;
                if !out.success() {
                    bail!("{}", longhorn::fix_error(name, fix, &out.stderr_tail(15)));
                }
                rep.change(name, &fix.to_string());
                done.push(fix.to_string());
            }
            Ok::<_, anyhow::Error>(done)
        }
    }))
    .await;
    let mut errors = Vec::new();
    for ((l, _), r) in work.iter().zip(results) {
        match r {
            Ok(done) => {
                if let Some(h) = report.plans.iter_mut().find(|h| h.node == l.spec.node.name) {
                    h.actions.extend(done);
                }
            }
            Err(e) => {
                rep.done(&l.spec.node.name, Err(format!("{e:#}")));
                errors.push(format!("{e:#}"));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

/// The add-on phase (src/addons/converge.rs) through `server`'s kubectl.
async fn addons_phase(
    live: &[Live],
    server: &Live,
    spec: &UpSpec,
    opts: &Options,
    rep: &Reporter,
    report: &mut UpReport,
) -> Result<()> {
    let servers = addon_servers(live);
    let kubectl = crate::addons::converge::Server {
        name: &server.spec.node.name,
        session: &server.session,
        facts: &server.facts,
    };
    let done =
        crate::addons::converge::converge(&servers, &kubectl, &spec.addons, opts.timeout, rep)
            .await?;
    push_addon_actions(report, done);
    Ok(())
}
