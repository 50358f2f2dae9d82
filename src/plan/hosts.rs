//! What each host of the inventory needs: its binary, links, unit, environment, scripts,
//! config.yaml and join drop-in, and whether k3s must start or restart. The artifacts,
//! servers, agents and upgrade phases each take their part of these per-host plans. Also the
//! checks that stop a run before anything changes (wrong init system, architecture, role,
//! a downgrade), and how servers and agents join (which server, cluster-init or not).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::config::{etcd, node_config};
use super::{Action, FileSpec, Release};
use crate::facts::{Facts, HostFacts};
use crate::inventory::{InstallSource, Inventory, K3sVersion, Node};
use crate::k3s::config::{ConfigError, K3sConfig, Value};
use crate::k3s::token::TokenBackup;
use crate::k3s::{self, server_url, Role};

/// The join drop-in bootstrap writes on a new server.
pub const JOIN_DROPIN: &str = "50-bootstrap-join.yaml";

/// How a server node enters the cluster; written once, at install, into a config drop-in
/// (k3s ignores both keys once its etcd data exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// Start a new cluster (`cluster-init`). Only when no server has data.
    Init,
    /// Join through this supervisor URL.
    Via(String),
    /// The single server of a SQLite cluster: nothing to write.
    Sqlite,
}

/// The join drop-in's bytes; a joining server gets `token`, the secure form that pins the
/// cluster CA, there (drop-ins are read after config.yaml and a later value wins, k3s
/// pkg/configfilearg/parser.go:246-292).
pub fn join_dropin(join: &Join, token: Option<&str>) -> String {
    let mut c = K3sConfig::new(Role::Server);
    match join {
        Join::Init => {
            c.set("cluster-init", Value::Bool(true));
        }
        Join::Sqlite => return String::new(),
        Join::Via(url) => {
            c.set_str("server", url);
            if let Some(t) = token {
                c.set_str("token", t);
            }
        }
    }
    c.render().unwrap_or_default()
}

/// The actions for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    pub node: String,
    pub role: Role,
    pub actions: Vec<Action>,
    /// Whether k3s on this host is new (join drop-in written, Node registers).
    pub fresh: bool,
}

impl HostPlan {
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty()
    }

    /// An installed k3s moves to another version (a rolling-upgrade step).
    pub fn is_upgrade(&self) -> bool {
        !self.fresh
            && self
                .actions
                .iter()
                .any(|a| matches!(a, Action::InstallBinary { .. }))
    }

    pub fn restarts(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Start { .. } | Action::Restart { .. }))
    }

    /// The downloads and uploads, done for every host before any service restarts.
    pub fn artifacts(&self) -> Vec<Action> {
        self.actions
            .iter()
            .filter(|a| {
                matches!(
                    a,
                    Action::RemoveLeftovers { .. }
                        | Action::InstallBinary { .. }
                        | Action::InstallImages { .. }
                )
            })
            .cloned()
            .collect()
    }

    /// The rest, at the host's turn: a staged binary is moved into place.
    pub fn at_its_turn(&self) -> Vec<Action> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::InstallBinary {
                    from,
                    to,
                    staged: true,
                    ..
                } => Some(Action::PlaceStagedBinary {
                    from: *from,
                    to: *to,
                }),
                Action::RemoveLeftovers { .. }
                | Action::InstallBinary { .. }
                | Action::InstallImages { .. } => None,
                other => Some(other.clone()),
            })
            .collect()
    }
}

/// config.yaml keys a change of which needs no restart: bootstrap applies labels and taints
/// through the API, so k3s does not have to re-read them.
const LIVE_KEYS: [&str; 2] = ["node-label", "node-taint"];

/// Strip the keys in [`LIVE_KEYS`] from a config.yaml text, for comparing what matters to a
/// running k3s. Works on the shape `K3sConfig` renders.
fn without_live_keys(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let is_item = line.starts_with("  - ");
        if !is_item {
            skipping = LIVE_KEYS.iter().any(|k| line.starts_with(&format!("{k}:")));
        }
        if !skipping && !line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Inputs to plan one host.
pub struct HostInput<'a> {
    pub node: &'a Node,
    pub facts: &'a HostFacts,
    pub config: &'a K3sConfig,
    /// How a fresh server joins; ignored for agents and installed servers.
    pub join: Option<&'a Join>,
    /// The token a joining server's drop-in gives it (pinned to the cluster CA).
    pub join_token: Option<&'a str>,
    /// The node of the inventory this host joins through when it has not joined yet (its
    /// `server:` names that node's host), watched while k3s starts.
    pub via: Option<&'a str>,
    /// This host starts a new cluster that others join in the same run: read its CA hash
    /// once it runs.
    pub learn_ca: bool,
    pub version: K3sVersion,
    /// The air-gap images tarball wanted on the host: (file name, sha256).
    pub images: Option<(&'a str, &'a str)>,
    pub release: &'a Release,
    /// registries.yaml from `[registries]` (`None`: bootstrap's own file goes, if any).
    pub registries: Option<&'a FileSpec>,
}

/// The plan for one host.
pub fn plan_host(input: &HostInput<'_>) -> Result<HostPlan, ConfigError> {
    let HostInput {
        node,
        facts,
        config,
        join,
        join_token,
        via,
        learn_ca,
        version,
        images,
        release,
        registries,
    } = input;
    let role = node.role;
    let svc = facts.service(role);
    let fresh = !svc.is_installed();
    let mut actions = Vec::new();
    // An upload or write cut off mid-way (a lost link, a killed run) leaves its temp file;
    // the next run removes it, in the artifacts phase, before anything else.
    if !facts.leftovers.is_empty() {
        actions.push(Action::RemoveLeftovers {
            paths: facts.leftovers.clone(),
        });
    }
    let mut restart_reasons: Vec<String> = Vec::new();

    if facts.bin_version != Some(*version) || !facts.bin_present {
        let (arch, file) = facts.k3s_arch().unwrap_or(("amd64", "k3s"));
        actions.push(Action::InstallBinary {
            from: facts.bin_version,
            to: *version,
            arch,
            file,
            staged: !fresh,
            release: (*release).clone(),
        });
        if !fresh {
            restart_reasons.push(format!("k3s {version}"));
        }
    }
    if let Some((file, sha)) = images {
        if facts.images.get(*file).map(String::as_str) != Some(*sha) {
            actions.push(Action::InstallImages {
                version: *version,
                release: (*release).clone(),
                arch: facts.k3s_arch().map(|(a, _)| a).unwrap_or("amd64"),
                file: file.to_string(),
                sha256: sha.to_string(),
            });
        }
    }
    let links = facts.missing_links();
    if !links.is_empty() {
        actions.push(Action::Links(links));
    }
    let mut unit_changed = false;
    let unit = FileSpec {
        path: role.unit_path(),
        mode: 0o644,
        content: k3s::unit::render_unit(role)
            .map_err(ConfigError::from)?
            .into_bytes(),
        secret: false,
    };
    if svc.unit_sha256.as_deref() != Some(unit.sha256().as_str()) {
        if !fresh {
            restart_reasons.push("unit changed".into());
        }
        unit_changed = true;
        actions.push(Action::WriteFile {
            file: unit,
            reason: "unit",
        });
    }
    let env = FileSpec {
        path: role.env_path(),
        mode: 0o600,
        content: k3s::unit::render_env(role).into_bytes(),
        secret: true,
    };
    // The env file is the operator's (proxy settings, CONTAINERD_* and K3S_* variables live
    // there): created empty and 0600 when missing, as install.sh:1027-1033 (create_env_file)
    // does, and never rewritten once it exists.
    if svc.env_sha256.is_none() {
        actions.push(Action::WriteFile {
            file: env,
            reason: "environment",
        });
    }
    // The scripts install.sh leaves beside the binary; no restart needed.
    let scripts = [
        (
            "/usr/local/bin/k3s-killall.sh".to_string(),
            k3s::unit::render_killall(),
            facts.killall_sha256.as_deref(),
        ),
        (
            role.uninstall_script(),
            k3s::unit::render_uninstall(role),
            svc.uninstall_sha256.as_deref(),
        ),
    ];
    for (path, text, current) in scripts {
        let file = FileSpec {
            path,
            mode: 0o755,
            content: text.map_err(ConfigError::from)?.into_bytes(),
            secret: false,
        };
        if current != Some(file.sha256().as_str()) {
            actions.push(Action::WriteFile {
                file,
                reason: "script",
            });
        }
    }
    let text = config.render()?;
    let cfg = FileSpec {
        path: k3s::CONFIG_PATH.into(),
        mode: 0o600,
        content: text.clone().into_bytes(),
        secret: true,
    };
    if facts.config_sha256.as_deref() != Some(cfg.sha256().as_str())
        || facts.config_mode != Some(0o600)
    {
        let needs_restart = match facts.config.as_deref() {
            Some(cur) => without_live_keys(cur) != without_live_keys(&text),
            None => true,
        };
        if !fresh && needs_restart {
            restart_reasons.push("configuration changed".into());
        }
        let reason = if needs_restart {
            "configuration"
        } else {
            "labels or taints"
        };
        actions.push(Action::WriteFile { file: cfg, reason });
    }
    // k3s reads registries.yaml only when it starts (its agent's containerd configuration).
    match registries {
        Some(file) => {
            let sha = file.sha256();
            if facts.registries_sha256.as_deref() != Some(sha.as_str())
                || facts.registries_mode != Some(0o600)
            {
                if !fresh && facts.registries_sha256.as_deref() != Some(sha.as_str()) {
                    restart_reasons.push("registries changed".into());
                }
                actions.push(Action::WriteFile {
                    file: (*file).clone(),
                    reason: "registries",
                });
            }
        }
        None if facts.registries_ours && facts.registries_sha256.is_some() => {
            if !fresh {
                restart_reasons.push("registries removed".into());
            }
            actions.push(Action::Os(crate::os::OsStep::RemoveFile(
                crate::inventory::REGISTRIES_PATH.into(),
            )));
        }
        None => {}
    }
    // Whether a server joins is decided by its etcd data, never by its unit file: a run
    // stopped after the unit was written but before this drop-in leaves a host with a unit
    // and no data, and a server started without `server:` there forms a cluster of its own
    // (k3s pkg/cluster/managed.go:84-103, assignManagedDriver: data on disk is used as it is,
    // and without it etcd joins only with `server` and a token, else kine starts a one-node
    // SQLite datastore; k3s ignores both keys once data exists). So every server without data gets the
    // drop-in, rewritten whenever its target changed, and one that is already running (an
    // activating server retrying a join that cannot succeed) restarts to read it.
    if role == Role::Server && !facts.server_db {
        if let Some(join) = join.filter(|j| **j != Join::Sqlite) {
            let path = format!("{}/{}", k3s::CONFIG_DROPIN_DIR, JOIN_DROPIN);
            let file = FileSpec {
                path,
                mode: 0o600,
                content: join_dropin(join, *join_token).into_bytes(),
                secret: true,
            };
            if facts.dropins.get(JOIN_DROPIN).map(String::as_str) != Some(file.sha256().as_str()) {
                if !fresh {
                    restart_reasons.push("join target".into());
                }
                actions.push(Action::WriteFile {
                    file,
                    reason: "join",
                });
            }
        }
    }
    let daemon_reload = unit_changed || fresh;
    // A unit that is running, or still starting (an agent retrying a join that cannot
    // succeed stays `activating`), reads a changed config only when restarted: `systemctl
    // start` on it joins the start job already under way (systemd merges the jobs) and changes
    // nothing. So a change restarts whatever is not inactive.
    let running = matches!(
        svc.active.as_str(),
        "active" | "activating" | "reloading" | "deactivating"
    );
    // A host that has joined needs nobody to start; one that has not waits on its target.
    let joined = match role {
        Role::Server => facts.server_db,
        Role::Agent => !fresh,
    };
    let via = (!joined).then(|| via.map(str::to_string)).flatten();
    if running && !restart_reasons.is_empty() {
        actions.push(Action::Restart {
            role,
            reason: restart_reasons.join(", "),
            daemon_reload,
            via,
        });
    } else if !svc.is_active() || svc.enabled != "enabled" {
        actions.push(Action::Start {
            role,
            daemon_reload,
            via,
        });
    }
    if *learn_ca {
        actions.push(Action::LearnCaHash);
    }
    Ok(HostPlan {
        node: node.name.clone(),
        role,
        actions,
        fresh,
    })
}

/// Host-level problems the plan cannot fix, and a downgrade, which k3s does not support
/// (etcd and the datastore schema only move forward).
pub fn check(inv: &Inventory, facts: &Facts) -> Result<()> {
    let mut errors = Vec::new();
    let mut down = Vec::new();
    let mut skips = Vec::new();
    for n in &inv.nodes {
        let Some(f) = facts.host(&n.name) else {
            continue;
        };
        if f.init != "systemd" {
            errors.push(format!(
                "{}: init system is {}; bootstrap installs k3s as a systemd service",
                n.name, f.init
            ));
        }
        if let Err(e) = f.k3s_arch() {
            errors.push(format!("{}: {e}", n.name));
        }
        if inv.install.source == InstallSource::Download && !f.has_curl {
            errors.push(format!(
                "{}: curl is not installed, and install.source = \"download\" needs it on the host; install curl or use source = \"upload\"",
                n.name
            ));
        }
        if inv.registries.as_ref().is_some_and(|g| g.has_file())
            && f.registries_sha256.is_some()
            && !f.registries_ours
        {
            errors.push(format!(
                "{}: {} is not bootstrap's (someone wrote it by hand), and [registries] would replace it: move its settings into [registries], remove the file, then re-run",
                n.name,
                crate::inventory::REGISTRIES_PATH
            ));
        }
        if let Some(role) = f.installed_role() {
            if role != n.role {
                errors.push(format!(
                    "{}: k3s is installed as {role} but the inventory says {}; a node does not change role in place: remove it (bootstrap reset --node {}) and add it again",
                    n.name, n.role, n.name
                ));
            }
        }
        if let Some(v) = f.bin_version {
            if v > inv.cluster.k3s_version {
                down.push(format!("{} runs {v}", n.name));
            } else if skips_a_minor(v, inv.cluster.k3s_version) {
                skips.push(format!("{} runs {v}", n.name));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    if !skips.is_empty() {
        let want = inv.cluster.k3s_version;
        bail!(
            "k3s_version {want} skips a minor version ({}); k3s upgrades one minor version at a time (https://docs.k3s.io/upgrades/manual, after Kubernetes' version skew policy), so nothing was changed: set k3s_version to a v{}.{} release, run up, then move on",
            skips.join(", "),
            want.major,
            want.minor.saturating_sub(1)
        );
    }
    if !down.is_empty() {
        bail!(
            "k3s_version {} is older than what runs on the hosts ({}); k3s does not support downgrades, so nothing was changed: set k3s_version to the version they run or newer",
            inv.cluster.k3s_version,
            down.join(", ")
        );
    }
    Ok(())
}

/// Whether moving from `from` to `to` skips a minor version (patch jumps are fine).
pub fn skips_a_minor(from: K3sVersion, to: K3sVersion) -> bool {
    to > from && (to.major != from.major || to.minor > from.minor + 1)
}

/// A server of the inventory that holds cluster data: the one whose API answered the facts'
/// reads first, else one where k3s runs, else any. A fresh server joins through it, never a
/// dead host. Chosen by API health, not systemd state: a server that is active while its
/// etcd lacks quorum makes a joiner retry until it gives up (k3s pkg/etcd/etcd.go:497-520),
/// and the facts' `kubectl get` is a quorum read that such a server cannot answer.
pub fn existing_server<'a>(inv: &'a Inventory, facts: &Facts) -> Option<&'a Node> {
    let data = |n: &&Node| facts.host(&n.name).is_some_and(|f| f.server_db);
    let answered = facts.cluster.api.as_deref();
    inv.servers()
        .filter(data)
        .find(|n| Some(n.name.as_str()) == answered)
        .or_else(|| {
            inv.servers()
                .filter(data)
                .find(|n| facts.host(&n.name).is_some_and(|f| f.server.is_active()))
        })
        .or_else(|| inv.servers().find(data))
}

/// The `server:` a host's current config.yaml names.
fn current_server(config: Option<&str>) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(config?).ok()?;
    doc.get("server")?.as_str().map(String::from)
}

/// Where a fresh server joins, or whether it starts the cluster.
pub fn join_of(inv: &Inventory, facts: &Facts, node: &Node) -> Option<Join> {
    if node.role != Role::Server {
        return None;
    }
    let first = inv.servers().next();
    let exists = existing_server(inv, facts);
    if let (Some(ep), Some(_)) = (&inv.cluster.api_endpoint, exists) {
        // The fixed registration address, whenever there is one (docs.k3s.io/datastore/ha).
        return Some(Join::Via(server_url(ep)));
    }
    Some(match exists {
        Some(e) => Join::Via(server_url(&e.host)),
        None if first.map(|f| &f.name) == Some(&node.name) => {
            if etcd(inv) {
                Join::Init
            } else {
                Join::Sqlite
            }
        }
        None => Join::Via(server_url(
            inv.cluster
                .api_endpoint
                .as_deref()
                .or(first.map(|f| f.host.as_str()))
                .unwrap_or_default(),
        )),
    })
}

/// The server URL agents get: the endpoint, else the server a fresh server would join (the
/// first server of the inventory while its API answers), else the first server.
pub fn agent_url(inv: &Inventory, facts: &Facts) -> String {
    if let Some(ep) = &inv.cluster.api_endpoint {
        return server_url(ep);
    }
    server_url(
        &existing_server(inv, facts)
            .unwrap_or(inv.first_server())
            .host,
    )
}

/// Every host's plan, by node name.
pub fn plan_all(
    inv: &Inventory,
    facts: &Facts,
    tokens: &TokenBackup,
) -> Result<BTreeMap<String, HostPlan>> {
    let agent = agent_url(inv, facts);
    // Joins are pinned to the cluster CA (the secure token form): its hash from a server's
    // server/token, or, for a cluster this run creates, the one its first server writes,
    // read as soon as it runs. Only a cluster whose servers' token files cannot be read
    // joins with a bare password (trust on first use; the plan warns).
    let new_cluster = existing_server(inv, facts).is_none();
    let ca = super::secrets::ca_hash(inv, facts)?
        .or_else(|| new_cluster.then(|| k3s::token::PENDING_CA_HASH.to_string()));
    let server_join_token = k3s::token::join_token(&tokens.server, "server", ca.as_deref());
    let server_urls: Vec<String> = inv.servers().map(|s| server_url(&s.host)).collect();
    let release = Release {
        source: inv.install.source,
        mirror: inv.install.mirror.clone(),
        cache_dir: inv.install.cache_dir.clone(),
        sha256: inv.install.sha256.clone(),
    };
    let registries = inv
        .registries
        .as_ref()
        .filter(|g| g.has_file())
        .map(|g| FileSpec {
            path: crate::inventory::REGISTRIES_PATH.into(),
            mode: 0o600,
            content: g.render().into_bytes(),
            secret: true,
        });
    let mut plans = BTreeMap::new();
    for n in &inv.nodes {
        let Some(f) = facts.host(&n.name) else {
            continue;
        };
        // An installed agent keeps the server it was given while that is still one of the
        // inventory's servers: no restart for nothing.
        let current = (n.role == Role::Agent && inv.cluster.api_endpoint.is_none())
            .then(|| current_server(f.config.as_deref()))
            .flatten()
            .filter(|u| server_urls.contains(u));
        let config = node_config(
            inv,
            n,
            tokens,
            current.as_deref().unwrap_or(&agent),
            ca.as_deref(),
        );
        let join = join_of(inv, facts, n);
        // The node whose host this one's `server:` names (none behind an api_endpoint).
        let target_url = match (&join, n.role) {
            (Some(Join::Via(u)), _) => Some(u.clone()),
            (_, Role::Agent) => Some(current.clone().unwrap_or_else(|| agent.clone())),
            _ => None,
        };
        let via = target_url.and_then(|u| {
            inv.servers()
                .find(|s| s.name != n.name && server_url(&s.host) == u)
                .map(|s| s.name.as_str())
        });
        let starts_cluster =
            matches!(join, Some(Join::Init | Join::Sqlite)) && new_cluster && inv.nodes.len() > 1;
        let images = f
            .k3s_arch()
            .ok()
            .and_then(|(arch, _)| facts.local.images.get(arch))
            .map(|(file, sha)| (file.as_str(), sha.as_str()));
        let p = plan_host(&HostInput {
            node: n,
            facts: f,
            config: &config,
            join: join.as_ref(),
            join_token: Some(server_join_token.as_str()),
            via,
            learn_ca: starts_cluster,
            version: inv.cluster.k3s_version,
            images,
            release: &release,
            registries: registries.as_ref(),
        })
        .with_context(|| format!("{}: rendering its configuration", n.name))?;
        plans.insert(n.name.clone(), p);
    }
    Ok(plans)
}
