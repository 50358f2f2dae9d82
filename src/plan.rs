//! The plan: a pure function from (desired cluster, host facts, cluster facts)
//! to the actions each host and the cluster need. No I/O here, so every rule
//! of convergence is unit-tested below.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::facts::HostFacts;
use crate::k3s::config::{K3sConfig, Value};
use crate::k3s::{self, Role};

/// Annotation on each Node recording which labels and taints bootstrap set,
/// so it removes only its own when the inventory drops them.
pub const MANAGED_ANNOTATION: &str = "bootstrap.k3s.io/managed";

/// A taint as the inventory writes it: `key=value:Effect` or `key:Effect`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    pub fn parse(s: &str) -> Option<Taint> {
        let (kv, effect) = s.rsplit_once(':')?;
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() || !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return None;
        }
        Some(Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }

    /// `key=value:Effect`, as config.yaml and `kubectl taint` take it.
    pub fn spec(&self) -> String {
        if self.value.is_empty() {
            format!("{}:{}", self.key, self.effect)
        } else {
            format!("{}={}:{}", self.key, self.value, self.effect)
        }
    }

    /// `key:Effect`, which identifies a taint on a node.
    pub fn id(&self) -> String {
        format!("{}:{}", self.key, self.effect)
    }
}

/// One node as the inventory wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNode {
    pub name: String,
    pub host: String,
    pub role: Role,
    /// Labels set at registration (`node-label`) and through the API.
    pub labels: BTreeMap<String, String>,
    /// Labels the kubelet refuses at registration (`node-role.kubernetes.io/*`):
    /// set only through the API.
    pub api_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Extra config.yaml keys for this node only.
    pub config: BTreeMap<String, Value>,
}

impl DesiredNode {
    /// Every label bootstrap manages on this node.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut all = self.labels.clone();
        all.extend(self.api_labels.clone());
        all
    }
}

/// The cluster as the inventory wants it, reduced to what the plan needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub cluster_name: String,
    pub version: String,
    pub nodes: Vec<DesiredNode>,
    pub api_endpoint: Option<String>,
    pub tls_san: Vec<String>,
    pub flannel_backend: Option<String>,
    pub disable: Vec<String>,
    /// Embedded etcd (`cluster-init` on the first server) rather than SQLite.
    pub etcd: bool,
    /// Extra config.yaml keys for servers / agents (already checked as flags).
    pub server_config: BTreeMap<String, Value>,
    pub agent_config: BTreeMap<String, Value>,
}

/// Secrets the cluster is joined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub server: String,
    pub agent: String,
}

/// How a server node enters the cluster; written once, at install, into a
/// config drop-in (k3s ignores both keys once its etcd data exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// Start a new cluster (`cluster-init`). Only when no server has data.
    Init,
    /// Join through this supervisor URL.
    Via(String),
    /// The single server of a SQLite cluster: nothing to write.
    Sqlite,
}

pub const JOIN_DROPIN: &str = "50-bootstrap-join.yaml";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The supervisor URL agents and joining servers use.
pub fn server_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{}", k3s::SUPERVISOR_PORT)
    } else {
        format!("https://{host}:{}", k3s::SUPERVISOR_PORT)
    }
}

impl Desired {
    pub fn servers(&self) -> impl Iterator<Item = &DesiredNode> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    pub fn agents(&self) -> impl Iterator<Item = &DesiredNode> {
        self.nodes.iter().filter(|n| n.role == Role::Agent)
    }

    pub fn node(&self, name: &str) -> Option<&DesiredNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// config.yaml for `node`. Labels and taints go in too, so a new node
    /// registers with them; the API reconcile keeps them right afterwards.
    pub fn node_config(
        &self,
        node: &DesiredNode,
        tokens: &Tokens,
        agent_server: &str,
    ) -> K3sConfig {
        let mut c = K3sConfig::new(node.role);
        c.set_str("node-name", &node.name);
        c.set_list(
            "node-label",
            node.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        );
        c.set_list("node-taint", node.taints.iter().map(Taint::spec).collect());
        match node.role {
            Role::Server => {
                c.set_str("token", &tokens.server);
                c.set_str("agent-token", &tokens.agent);
                c.set_str("write-kubeconfig-mode", "0600");
                let mut sans: Vec<String> = self.tls_san.clone();
                if let Some(ep) = &self.api_endpoint {
                    if !sans.contains(ep) {
                        sans.push(ep.clone());
                    }
                }
                c.set_list("tls-san", sans);
                if let Some(fb) = &self.flannel_backend {
                    c.set_str("flannel-backend", fb);
                }
                c.set_list("disable", self.disable.clone());
                for (k, v) in &self.server_config {
                    c.set(k, v.clone());
                }
            }
            Role::Agent => {
                c.set_str("token", &tokens.agent);
                c.set_str("server", agent_server);
                for (k, v) in &self.agent_config {
                    c.set(k, v.clone());
                }
            }
        }
        for (k, v) in &node.config {
            c.set(k, v.clone());
        }
        c
    }
}

/// `vMAJOR.MINOR.PATCH+k3sN` as a comparable tuple.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32, u32)> {
    let (core, k3s) = v.strip_prefix('v')?.split_once("+k3s")?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c, k3s.parse().ok()?))
}

/// Hosts whose installed k3s is newer than `want`: k3s does not support
/// downgrades (etcd and the datastore schema only move forward).
pub fn downgrades<'a>(
    want: &str,
    installed: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let Some(w) = parse_version(want) else {
        return vec![];
    };
    installed
        .filter(|(_, v)| parse_version(v).is_some_and(|v| v > w))
        .map(|(n, v)| format!("{n} runs {v}"))
        .collect()
}

/// The join drop-in's bytes.
pub fn join_dropin(join: &Join) -> String {
    let mut c = K3sConfig::new(Role::Server);
    match join {
        Join::Init => c.set("cluster-init", Value::Bool(true)),
        Join::Sqlite => return String::new(),
        Join::Via(url) => c.set_str("server", url),
    };
    c.render().unwrap_or_default()
}

/// Label and taint changes for one Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDrift {
    pub set_labels: BTreeMap<String, String>,
    pub remove_labels: Vec<String>,
    pub add_taints: Vec<Taint>,
    pub remove_taints: Vec<Taint>,
    /// The new value of [`MANAGED_ANNOTATION`], when it changes.
    pub annotation: Option<String>,
}

impl NodeDrift {
    pub fn is_empty(&self) -> bool {
        self.set_labels.is_empty()
            && self.remove_labels.is_empty()
            && self.add_taints.is_empty()
            && self.remove_taints.is_empty()
            && self.annotation.is_none()
    }
}

/// What bootstrap recorded it manages on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Managed {
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// Taint ids `key:Effect`.
    #[serde(default)]
    pub taints: BTreeSet<String>,
}

/// A Node as the API shows it (the parts the plan reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub ready: bool,
    pub version: String,
    pub unschedulable: bool,
}

/// Labels and taints to change on `observed` so it matches `want`, touching
/// only what bootstrap set before or sets now (DESIGN "Labels and taints").
pub fn node_drift(want: &DesiredNode, observed: &ObservedNode) -> NodeDrift {
    let managed: Managed = observed
        .annotations
        .get(MANAGED_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let mut d = NodeDrift::default();
    let want_labels = want.all_labels();
    for (k, v) in &want_labels {
        if observed.labels.get(k) != Some(v) {
            d.set_labels.insert(k.clone(), v.clone());
        }
    }
    for k in &managed.labels {
        if !want_labels.contains_key(k) && observed.labels.contains_key(k) {
            d.remove_labels.push(k.clone());
        }
    }
    let want_ids: BTreeSet<String> = want.taints.iter().map(Taint::id).collect();
    for t in &want.taints {
        if !observed.taints.contains(t) {
            // A taint with the same key and effect but another value is replaced.
            if let Some(old) = observed.taints.iter().find(|o| o.id() == t.id()) {
                d.remove_taints.push(old.clone());
            }
            d.add_taints.push(t.clone());
        }
    }
    for o in &observed.taints {
        if managed.taints.contains(&o.id()) && !want_ids.contains(&o.id()) {
            d.remove_taints.push(o.clone());
        }
    }
    let now = Managed {
        labels: want_labels.keys().cloned().collect(),
        taints: want_ids,
    };
    if now != managed || !observed.annotations.contains_key(MANAGED_ANNOTATION) {
        d.annotation = Some(serde_json::to_string(&now).unwrap_or_default());
    }
    d
}

/// A file bootstrap keeps on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
    /// Holds a secret: never shown in a plan or diff.
    pub secret: bool,
}

impl FileSpec {
    pub fn sha256(&self) -> String {
        sha256_hex(&self.content)
    }
}

/// One step on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Put the k3s binary of `version` in place (install or upgrade).
    InstallBinary {
        from: Option<String>,
        to: String,
    },
    Links(Vec<&'static str>),
    /// Put the release's air-gap images tarball `file` (sha256 `sha256`) in
    /// the images directory; k3s imports it at start and watches the directory.
    InstallImages {
        file: String,
        sha256: String,
    },
    WriteFile {
        file: FileSpec,
        reason: &'static str,
    },
    /// Enable and start the service (it is not running).
    Start {
        service: &'static str,
    },
    /// Restart: the binary, unit or a setting k3s reads only at start changed.
    Restart {
        service: &'static str,
        reason: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::InstallBinary { from: None, to } => write!(f, "install k3s {to}"),
            Action::InstallBinary {
                from: Some(old),
                to,
            } => write!(f, "replace k3s {old} with {to}"),
            Action::Links(l) => write!(f, "link {} to k3s", l.join(", ")),
            Action::InstallImages { file, .. } => write!(f, "install air-gap images {file}"),
            Action::WriteFile { file, reason } => write!(f, "write {} ({reason})", file.path),
            Action::Start { service } => write!(f, "enable and start {service}"),
            Action::Restart { service, reason } => write!(f, "restart {service} ({reason})"),
        }
    }
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
                .any(|a| matches!(a, Action::InstallBinary { from: Some(_), .. }))
    }
    pub fn restarts(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Start { .. } | Action::Restart { .. }))
    }
}

/// config.yaml keys a change of which needs no restart: bootstrap applies
/// labels and taints through the API, so k3s does not have to re-read them.
const LIVE_KEYS: [&str; 2] = ["node-label", "node-taint"];

/// Strip the keys in [`LIVE_KEYS`] from a config.yaml text, for comparing
/// what matters to a running k3s. Works on the shape `K3sConfig` renders.
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
    pub node: &'a DesiredNode,
    pub facts: &'a HostFacts,
    /// The current config.yaml, when the host has one (read with the facts).
    pub current_config: Option<&'a str>,
    pub config: &'a K3sConfig,
    /// How a fresh server joins; ignored for agents and installed servers.
    pub join: Option<&'a Join>,
    pub version: &'a str,
    /// The air-gap images tarball wanted on the host: (file name, sha256).
    pub images: Option<(&'a str, &'a str)>,
}

/// The plan for one host.
pub fn plan_host(input: &HostInput<'_>) -> Result<HostPlan, crate::k3s::config::ConfigError> {
    let HostInput {
        node,
        facts,
        current_config,
        config,
        join,
        version,
        images,
    } = input;
    let role = node.role;
    let svc = facts.service(role);
    let fresh = !svc.is_installed();
    let mut actions = Vec::new();
    let mut restart_reasons: Vec<String> = Vec::new();

    if facts.bin_version.as_deref() != Some(*version) || facts.bin_sha256.is_none() {
        actions.push(Action::InstallBinary {
            from: facts.bin_version.clone(),
            to: version.to_string(),
        });
        if !fresh {
            restart_reasons.push(format!("k3s {version}"));
        }
    }
    if let Some((file, sha)) = images {
        if facts.images.get(*file).map(String::as_str) != Some(*sha) {
            actions.push(Action::InstallImages {
                file: file.to_string(),
                sha256: sha.to_string(),
            });
        }
    }
    let links = facts.missing_links();
    if !links.is_empty() {
        actions.push(Action::Links(links));
    }
    let unit = FileSpec {
        path: role.unit_path(),
        mode: 0o644,
        content: k3s::unit::render_unit(role)
            .map_err(crate::k3s::config::ConfigError::from)?
            .into_bytes(),
        secret: false,
    };
    if svc.unit_sha256.as_deref() != Some(unit.sha256().as_str()) {
        if !fresh {
            restart_reasons.push("unit changed".into());
        }
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
    if svc.env_sha256.as_deref() != Some(env.sha256().as_str()) || svc.env_mode != Some(0o600) {
        if !fresh {
            restart_reasons.push("environment changed".into());
        }
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
            content: text
                .map_err(crate::k3s::config::ConfigError::from)?
                .into_bytes(),
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
        let needs_restart = match current_config {
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
    if role == Role::Server && fresh && !facts.server_db {
        if let Some(join) = join.filter(|j| **j != Join::Sqlite) {
            let path = format!("{}/{}", k3s::CONFIG_DROPIN_DIR, JOIN_DROPIN);
            let file = FileSpec {
                path,
                mode: 0o600,
                content: join_dropin(join).into_bytes(),
                secret: false,
            };
            if facts.dropins.get(JOIN_DROPIN).map(String::as_str) != Some(file.sha256().as_str()) {
                actions.push(Action::WriteFile {
                    file,
                    reason: "join",
                });
            }
        }
    }
    if !svc.is_active() || svc.enabled != "enabled" {
        actions.push(Action::Start {
            service: role.service(),
        });
    } else if !restart_reasons.is_empty() {
        actions.push(Action::Restart {
            service: role.service(),
            reason: restart_reasons.join(", "),
        });
    }
    Ok(HostPlan {
        node: node.name.clone(),
        role,
        actions,
        fresh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role) -> DesiredNode {
        DesiredNode {
            name: name.into(),
            host: "10.0.0.1".into(),
            role,
            labels: BTreeMap::new(),
            api_labels: BTreeMap::new(),
            taints: vec![],
            config: BTreeMap::new(),
        }
    }

    fn tokens() -> Tokens {
        Tokens {
            server: "s".repeat(64),
            agent: "a".repeat(64),
        }
    }

    fn observed(labels: &[(&str, &str)], taints: &[&str], managed: Option<&str>) -> ObservedNode {
        let mut annotations = BTreeMap::new();
        if let Some(m) = managed {
            annotations.insert(MANAGED_ANNOTATION.to_string(), m.to_string());
        }
        ObservedNode {
            name: "n".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations,
            taints: taints.iter().map(|t| Taint::parse(t).unwrap()).collect(),
            ready: true,
            version: "v1".into(),
            unschedulable: false,
        }
    }

    #[test]
    fn taint_syntax() {
        let t = Taint::parse("node-role.kubernetes.io/control-plane=true:NoSchedule").unwrap();
        assert_eq!(t.key, "node-role.kubernetes.io/control-plane");
        assert_eq!(
            t.spec(),
            "node-role.kubernetes.io/control-plane=true:NoSchedule"
        );
        assert_eq!(
            Taint::parse("dedicated:NoExecute").unwrap().spec(),
            "dedicated:NoExecute"
        );
        assert!(Taint::parse("k=v:Sometimes").is_none());
        assert!(Taint::parse("novalue").is_none());
    }

    #[test]
    fn drift_adds_changes_and_removes_only_managed() {
        let mut want = node("n", Role::Agent);
        want.labels.insert("node.role".into(), "database".into());
        want.labels.insert("tier".into(), "b".into());
        want.taints
            .push(Taint::parse("db=true:NoSchedule").unwrap());
        let obs = observed(
            &[
                ("node.role", "database"),
                ("tier", "a"),
                ("old", "x"),
                ("foreign", "y"),
            ],
            &["gone=1:NoExecute", "theirs:NoSchedule"],
            Some(r#"{"labels":["node.role","tier","old"],"taints":["gone:NoExecute"]}"#),
        );
        let d = node_drift(&want, &obs);
        assert_eq!(
            d.set_labels,
            BTreeMap::from([("tier".to_string(), "b".to_string())])
        );
        assert_eq!(d.remove_labels, vec!["old".to_string()]);
        assert_eq!(
            d.add_taints,
            vec![Taint::parse("db=true:NoSchedule").unwrap()]
        );
        assert_eq!(
            d.remove_taints,
            vec![Taint::parse("gone=1:NoExecute").unwrap()]
        );
        let m: Managed = serde_json::from_str(d.annotation.as_deref().unwrap()).unwrap();
        assert_eq!(m.labels.len(), 2);
        assert!(m.taints.contains("db:NoSchedule"));
    }

    #[test]
    fn converged_node_has_no_drift() {
        let mut want = node("n", Role::Agent);
        want.labels.insert("a".into(), "1".into());
        let obs = observed(
            &[("a", "1"), ("other", "2")],
            &[],
            Some(r#"{"labels":["a"],"taints":[]}"#),
        );
        assert!(node_drift(&want, &obs).is_empty());
    }

    #[test]
    fn taint_value_change_replaces_it() {
        let mut want = node("n", Role::Agent);
        want.taints.push(Taint::parse("k=new:NoSchedule").unwrap());
        let obs = observed(
            &[],
            &["k=old:NoSchedule"],
            Some(r#"{"labels":[],"taints":["k:NoSchedule"]}"#),
        );
        let d = node_drift(&want, &obs);
        assert_eq!(
            d.remove_taints,
            vec![Taint::parse("k=old:NoSchedule").unwrap()]
        );
        assert_eq!(
            d.add_taints,
            vec![Taint::parse("k=new:NoSchedule").unwrap()]
        );
        assert!(d.annotation.is_none());
    }

    #[test]
    fn agent_config_holds_only_agent_keys() {
        let desired = Desired {
            disable: vec!["traefik".into()],
            tls_san: vec!["k8s.example.com".into()],
            flannel_backend: Some("wireguard-native".into()),
            ..Default::default()
        };
        let c = desired.node_config(&node("w", Role::Agent), &tokens(), "https://10.0.0.1:6443");
        c.validate().unwrap();
        let text = c.render().unwrap();
        assert!(!text.contains("disable"));
        assert!(text.contains(&format!("token: \"{}\"", "a".repeat(64))));
        let s = desired.node_config(&node("m", Role::Server), &tokens(), "");
        let text = s.render().unwrap();
        assert!(text.contains("disable:\n  - \"traefik\""));
        assert!(text.contains(&format!("agent-token: \"{}\"", "a".repeat(64))));
    }

    #[test]
    fn label_only_change_needs_no_restart() {
        let a = "node-label:\n  - \"a=1\"\nnode-name: \"n\"\ntoken: \"t\"\n";
        let b = "node-label:\n  - \"a=2\"\n  - \"b=3\"\nnode-name: \"n\"\nnode-taint:\n  - \"x:NoSchedule\"\ntoken: \"t\"\n";
        assert_eq!(without_live_keys(a), without_live_keys(b));
        let c = "node-name: \"n\"\ntoken: \"u\"\n";
        assert_ne!(without_live_keys(a), without_live_keys(c));
    }

    fn converged_facts(n: &DesiredNode, config: &K3sConfig) -> HostFacts {
        let mut f = HostFacts {
            bin_version: Some("v1.36.3+k3s1".into()),
            bin_sha256: Some("x".into()),
            config_sha256: Some(sha256_hex(config.render().unwrap().as_bytes())),
            config_mode: Some(0o600),
            killall_sha256: Some(sha256_hex(k3s::unit::render_killall().unwrap().as_bytes())),
            ..Default::default()
        };
        for l in k3s::LINKS {
            f.links.insert(l.into(), "k3s".into());
        }
        let svc = match n.role {
            Role::Server => &mut f.server,
            Role::Agent => &mut f.agent,
        };
        svc.unit_sha256 = Some(sha256_hex(
            k3s::unit::render_unit(n.role).unwrap().as_bytes(),
        ));
        svc.env_sha256 = Some(sha256_hex(b""));
        svc.uninstall_sha256 = Some(sha256_hex(
            k3s::unit::render_uninstall(n.role).unwrap().as_bytes(),
        ));
        svc.env_mode = Some(0o600);
        svc.active = "active".into();
        svc.enabled = "enabled".into();
        f
    }

    #[test]
    fn fresh_server_gets_everything_and_cluster_init() {
        let n = node("m", Role::Server);
        let c = Desired::default().node_config(&n, &tokens(), "");
        let facts = HostFacts::default();
        let p = plan_host(&HostInput {
            node: &n,
            facts: &facts,
            current_config: None,
            config: &c,
            join: Some(&Join::Init),
            version: "v1.36.3+k3s1",
            images: None,
        })
        .unwrap();
        assert!(p.fresh);
        let text: Vec<String> = p.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(text[0], "install k3s v1.36.3+k3s1");
        assert!(text.iter().any(|t| t.contains("50-bootstrap-join.yaml")));
        assert_eq!(p.actions.last(), Some(&Action::Start { service: "k3s" }));
        assert!(!p
            .actions
            .iter()
            .any(|a| matches!(a, Action::Restart { .. })));
    }

    #[test]
    fn converged_host_is_a_noop_and_never_rejoins() {
        let n = node("m", Role::Server);
        let c = Desired::default().node_config(&n, &tokens(), "");
        let mut facts = converged_facts(&n, &c);
        facts.server_db = true;
        let text = c.render().unwrap();
        let p = plan_host(&HostInput {
            node: &n,
            facts: &facts,
            current_config: Some(&text),
            config: &c,
            join: Some(&Join::Init),
            version: "v1.36.3+k3s1",
            images: None,
        })
        .unwrap();
        assert!(p.is_noop(), "{:?}", p.actions);
    }

    #[test]
    fn label_change_rewrites_config_without_restart() {
        let mut n = node("w", Role::Agent);
        let old = Desired::default().node_config(&n, &tokens(), "https://s:6443");
        let facts = converged_facts(&n, &old);
        n.labels.insert("a".into(), "b".into());
        let new = Desired::default().node_config(&n, &tokens(), "https://s:6443");
        let cur = old.render().unwrap();
        let p = plan_host(&HostInput {
            node: &n,
            facts: &facts,
            current_config: Some(&cur),
            config: &new,
            join: None,
            version: "v1.36.3+k3s1",
            images: None,
        })
        .unwrap();
        assert_eq!(p.actions.len(), 1, "{:?}", p.actions);
        assert!(!p.restarts());
    }

    #[test]
    fn version_change_restarts() {
        let n = node("w", Role::Agent);
        let c = Desired::default().node_config(&n, &tokens(), "https://s:6443");
        let facts = converged_facts(&n, &c);
        let cur = c.render().unwrap();
        let p = plan_host(&HostInput {
            node: &n,
            facts: &facts,
            current_config: Some(&cur),
            config: &c,
            join: None,
            version: "v1.36.4+k3s1",
            images: None,
        })
        .unwrap();
        assert!(p.restarts());
        assert_eq!(
            p.actions[0].to_string(),
            "replace k3s v1.36.3+k3s1 with v1.36.4+k3s1"
        );
    }

    #[test]
    fn versions_compare_and_downgrades_are_found() {
        assert_eq!(parse_version("v1.36.3+k3s1"), Some((1, 36, 3, 1)));
        assert_eq!(parse_version("1.36.3"), None);
        assert!(parse_version("v1.36.10+k3s1") > parse_version("v1.36.9+k3s2"));
        let d = downgrades(
            "v1.36.3+k3s1",
            [
                ("a", "v1.36.4+k3s1"),
                ("b", "v1.36.3+k3s1"),
                ("c", "v1.36.2+k3s1"),
            ]
            .into_iter(),
        );
        assert_eq!(d, vec!["a runs v1.36.4+k3s1".to_string()]);
    }

    #[test]
    fn server_url_brackets_ipv6() {
        assert_eq!(server_url("10.0.0.1"), "https://10.0.0.1:6443");
        assert_eq!(server_url("fd00::1"), "https://[fd00::1]:6443");
    }
}
