//! The plan without a host: per-host rules, the cluster's decisions (join target, tokens,
//! drift, add-on difference, upgrade order) and the day-two steps, from hand-made facts.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::node_config;
use super::hosts::{plan_host, HostInput};
use super::labels::{node_drift, registered, Managed};
use super::*;
use crate::addons::AddonsSpec;
use crate::facts::{ClusterFacts, HostFacts};
use crate::inventory::{Inventory, K3sVersion, Node, Taint};
use crate::k3s::{self, server_url, Role};

const V1: &str = "v1.36.3+k3s1";
const V2: &str = "v1.36.4+k3s1";

fn v(s: &str) -> K3sVersion {
    s.parse().unwrap()
}

fn inventory(extra_cluster: &str, nodes: &[(&str, &str, &str)]) -> Inventory {
    let mut s = format!("[cluster]\nname = \"t\"\nk3s_version = \"{V1}\"\n{extra_cluster}\n");
    for (name, role, extra) in nodes {
        let n: u32 = name.bytes().map(u32::from).sum::<u32>() % 200 + 10;
        s.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nhost = \"10.0.0.{n}\"\nrole = \"{role}\"\n{extra}\n"
        ));
    }
    Inventory::from_str_at(&s, Path::new("/nonexistent/t/inventory.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{s}"))
}

fn tokens() -> TokenBackup {
    TokenBackup {
        server: "s".repeat(64),
        agent: "a".repeat(64),
    }
}

fn fresh() -> HostFacts {
    HostFacts {
        os_id: "debian".into(),
        arch: "x86_64".into(),
        init: "systemd".into(),
        has_curl: true,
        ..Default::default()
    }
}

/// Facts of a host converged to `inv` (version `version`), joined through the first server.
/// The cluster CA's hash the converged servers' token files carry.
fn ca() -> String {
    crate::testdata::k3s_kubeconfig().ca_hash.clone()
}

fn converged(inv: &Inventory, name: &str, version: &str) -> HostFacts {
    let n = inv.node(name).unwrap();
    let url = server_url(&inv.first_server().host);
    let config = node_config(inv, n, &tokens(), &url, Some(&ca()));
    let text = config.render().unwrap();
    let mut f = fresh();
    f.bin_present = true;
    f.bin_version = Some(v(version));
    f.config_sha256 = Some(k3s::sha256_hex(text.as_bytes()));
    f.config_mode = Some(0o600);
    f.config = Some(text);
    f.killall_sha256 = Some(k3s::sha256_hex(
        k3s::unit::render_killall().unwrap().as_bytes(),
    ));
    for l in k3s::LINKS {
        f.links.insert(l.into(), "k3s".into());
    }
    if n.role == Role::Server {
        f.server_db = true;
        f.kubeconfig = Some(crate::testdata::k3s_kubeconfig().text.clone());
        f.client_ca = Some(crate::testdata::k3s_kubeconfig().client_ca.clone());
        f.token_file = Some(format!("K10{}::server:{}\n", ca(), tokens().server));
        f.agent_token_file = Some(format!("K10{}::node:{}\n", ca(), tokens().agent));
    }
    let svc = match n.role {
        Role::Server => &mut f.server,
        Role::Agent => &mut f.agent,
    };
    svc.unit_sha256 = Some(k3s::sha256_hex(
        k3s::unit::render_unit(n.role).unwrap().as_bytes(),
    ));
    svc.env_sha256 = Some(k3s::sha256_hex(b""));
    svc.uninstall_sha256 = Some(k3s::sha256_hex(
        k3s::unit::render_uninstall(n.role).unwrap().as_bytes(),
    ));
    svc.active = "active".into();
    svc.enabled = "enabled".into();
    f
}

/// The Node of a converged `name`: its labels, taints and the managed annotation.
fn node(inv: &Inventory, name: &str, version: &str) -> ObservedNode {
    let n = inv.node(name).unwrap();
    let mut o = registered(n);
    o.labels.extend(n.api_labels.clone());
    o.annotations.insert(
        MANAGED_ANNOTATION.into(),
        serde_json::to_string(&Managed {
            labels: n.all_labels().keys().cloned().collect(),
            taints: n.taints.iter().map(Taint::id).collect(),
            host: Some(n.host.clone()),
        })
        .unwrap(),
    );
    o.ready = true;
    o.kubelet_version = version.into();
    o.internal_ip = Some(n.host.clone());
    o
}

/// A converged cluster: every host and Node as `inv` wants them, the kubeconfig written.
fn cluster(inv: &Inventory) -> Facts {
    let mut f = Facts::default();
    for n in &inv.nodes {
        f.hosts.insert(n.name.clone(), converged(inv, &n.name, V1));
    }
    f.cluster = ClusterFacts {
        api: Some(inv.first_server().name.clone()),
        nodes: inv.nodes.iter().map(|n| node(inv, &n.name, V1)).collect(),
        ..Default::default()
    };
    f.local.token_backup = Some(tokens());
    f.local.addons = AddonsSpec::from_inventory(inv).unwrap();
    f.local.kubeconfig = Some(
        crate::kubeconfig::rewrite(
            &crate::testdata::k3s_kubeconfig().text,
            &crate::kubeconfig::Pins::default(),
            "t",
            &server_url(&inv.first_server().host),
        )
        .unwrap(),
    );
    f
}

fn new_cluster(inv: &Inventory) -> Facts {
    let mut f = Facts::default();
    for n in &inv.nodes {
        f.hosts.insert(n.name.clone(), fresh());
    }
    f.local.new_tokens = Some(tokens());
    f.local.addons = AddonsSpec::from_inventory(inv).unwrap();
    f
}

const SETTINGS: Settings = Settings { max_unavailable: 1 };

fn texts(plan: &Plan) -> Vec<String> {
    plan.steps()
        .map(|(p, h, s)| format!("{} {h}: {}", p.name, s.action))
        .collect()
}

fn seed() -> Inventory {
    inventory(
        "",
        &[
            (
                "master-1",
                "server",
                "taints = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]",
            ),
            ("worker-1", "agent", "labels = { tier = \"gold\" }"),
            ("worker-2", "agent", ""),
        ],
    )
}

fn ha() -> Inventory {
    inventory(
        "",
        &[
            ("master-1", "server", ""),
            ("master-2", "server", ""),
            ("master-3", "server", ""),
            ("worker-1", "agent", ""),
            ("worker-2", "agent", ""),
        ],
    )
}

// ---------------------------------------------------------------- the whole plan

#[test]
fn a_converged_cluster_plans_nothing() {
    let inv = seed();
    let plan = up(&inv, &cluster(&inv), &SETTINGS).unwrap();
    assert!(plan.phases.is_empty(), "{:#?}", texts(&plan));
    assert_eq!(plan.api, "master-1");
}

#[test]
fn a_new_cluster_runs_as_the_list_says() {
    let inv = seed();
    let plan = up(&inv, &new_cluster(&inv), &SETTINGS).unwrap();
    let names: Vec<&str> = plan.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "backups",
            "artifacts",
            "servers",
            "agents",
            "nodes-ready",
            "labels",
            "kubeconfig"
        ]
    );
    let t = texts(&plan);
    assert!(t[0].starts_with("backups local: write the token backup /nonexistent/t/.bootstrap/tokens.json (new tokens)"), "{t:#?}");
    assert!(t.contains(&"artifacts master-1: install k3s v1.36.3+k3s1".to_string()));
    // The server's health gate is part of its turn.
    let servers = &plan.phases[2].groups[0].steps;
    assert_eq!(
        servers.last().unwrap().action,
        Action::WaitNodeReady {
            node: "master-1".into(),
            version: None
        }
    );
    // Every fresh Node gets its managed record (and nothing else here).
    let labels: Vec<&String> = t.iter().filter(|l| l.starts_with("labels ")).collect();
    assert_eq!(labels.len(), 3, "{t:#?}");
    assert!(labels
        .iter()
        .all(|l| l.ends_with("record managed labels and taints")));
    // The kubeconfig is read after the server started.
    let Action::WriteKubeconfig { content, from, .. } = &plan.phases[6].groups[0].steps[0].action
    else {
        panic!("no kubeconfig step");
    };
    assert_eq!((content, from.as_str()), (&None, "master-1"));
    assert!(plan.changes() > 10);
}

// ---------------------------------------------------------------- joins and tokens

fn join_dropin_of(plan: &Plan, host: &str) -> Option<String> {
    plan.steps().find_map(|(_, h, s)| match &s.action {
        Action::WriteFile {
            file,
            reason: "join",
        } if h == host => Some(String::from_utf8(file.content.clone()).unwrap()),
        _ => None,
    })
}

#[test]
fn the_first_server_inits_and_the_others_join_it() {
    let inv = ha();
    let plan = up(&inv, &new_cluster(&inv), &SETTINGS).unwrap();
    assert!(join_dropin_of(&plan, "master-1")
        .unwrap()
        .contains("cluster-init: true"));
    let first = server_url(&inv.node("master-1").unwrap().host);
    for s in ["master-2", "master-3"] {
        assert!(join_dropin_of(&plan, s).unwrap().contains(&first), "{s}");
    }
    // Agents have no drop-in; they are told the first server.
    assert_eq!(join_dropin_of(&plan, "worker-1"), None);
    // SQLite: one server, nothing to write.
    let inv = inventory("datastore = \"sqlite\"", &[("m", "server", "")]);
    let plan = up(&inv, &new_cluster(&inv), &SETTINGS).unwrap();
    assert_eq!(join_dropin_of(&plan, "m"), None);
}

#[test]
fn a_new_first_server_joins_a_live_one_never_inits() {
    // master-1 is being replaced: its host is fresh; master-2 has data and runs.
    let inv = ha();
    let mut f = cluster(&inv);
    f.hosts.insert("master-1".into(), fresh());
    f.hosts.get_mut("master-3").unwrap().server.active = "failed".into();
    f.cluster.nodes.retain(|n| n.name != "master-1");
    f.cluster.api = Some("master-2".into());
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let dropin = join_dropin_of(&plan, "master-1").unwrap();
    assert!(!dropin.contains("cluster-init"), "{dropin}");
    assert!(
        dropin.contains(&server_url(&inv.node("master-2").unwrap().host)),
        "{dropin}"
    );
    // A server with data goes first; the fresh one joins after.
    let servers: Vec<&str> = plan
        .phases
        .iter()
        .find(|p| p.name == "servers")
        .unwrap()
        .groups
        .iter()
        .map(|g| g.host.as_str())
        .collect();
    assert_eq!(servers, ["master-3", "master-1"]);
}

#[test]
fn the_join_target_is_the_server_whose_api_answered_not_the_first_active_one() {
    // master-1 runs (systemd says active) but its API did not answer: etcd lacks quorum there.
    let inv = ha();
    let mut f = cluster(&inv);
    f.hosts.insert("master-3".into(), fresh());
    f.cluster.nodes.retain(|n| n.name != "master-3");
    f.cluster.api = Some("master-2".into());
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let m2 = server_url(&inv.node("master-2").unwrap().host);
    assert!(join_dropin_of(&plan, "master-3").unwrap().contains(&m2));
    // No API answered: a server where k3s runs, as before.
    f.cluster.api = None;
    f.hosts.get_mut("master-1").unwrap().server.active = "failed".into();
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert!(join_dropin_of(&plan, "master-3").unwrap().contains(&m2));
}

#[test]
fn servers_join_through_api_endpoint_whenever_it_is_set() {
    let inv = inventory(
        "api_endpoint = \"k8s.example.com\"",
        &[
            ("master-1", "server", ""),
            ("master-2", "server", ""),
            ("master-3", "server", ""),
        ],
    );
    // A server added to a live cluster.
    let mut f = cluster(&inv);
    f.hosts.insert("master-3".into(), fresh());
    f.cluster.nodes.retain(|n| n.name != "master-3");
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let dropin = join_dropin_of(&plan, "master-3").unwrap();
    assert!(dropin.contains("https://k8s.example.com:6443"), "{dropin}");
    // A new cluster: the first server inits, the others join through the endpoint.
    let plan = up(&inv, &new_cluster(&inv), &SETTINGS).unwrap();
    assert!(join_dropin_of(&plan, "master-1")
        .unwrap()
        .contains("cluster-init"));
    assert!(join_dropin_of(&plan, "master-2")
        .unwrap()
        .contains("https://k8s.example.com:6443"));
}

#[test]
fn an_upgrade_that_skips_a_minor_version_is_refused_a_patch_jump_is_not() {
    use super::hosts::skips_a_minor;
    assert!(skips_a_minor(v("v1.34.2+k3s1"), v("v1.36.3+k3s1")));
    assert!(!skips_a_minor(v("v1.35.9+k3s1"), v("v1.36.3+k3s1")));
    assert!(!skips_a_minor(v("v1.36.0+k3s1"), v("v1.36.9+k3s2")));
    assert!(!skips_a_minor(v("v1.36.3+k3s1"), v("v1.36.3+k3s1")));
    let inv = seed();
    let mut f = cluster(&inv);
    f.hosts.get_mut("worker-2").unwrap().bin_version = Some(v("v1.34.2+k3s1"));
    let e = up(&inv, &f, &SETTINGS).unwrap_err().to_string();
    assert!(
        e.contains("skips a minor version (worker-2 runs v1.34.2+k3s1)") && e.contains("v1.35"),
        "{e}"
    );
}

#[test]
fn an_installed_node_without_its_node_is_waited_for_and_labelled() {
    // worker-2's k3s runs but its Node has not registered (an interrupted run, a slow join).
    let inv = seed();
    let mut f = cluster(&inv);
    f.cluster.nodes.retain(|n| n.name != "worker-2");
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let t = texts(&plan);
    assert!(t.iter().any(|l| l.starts_with("nodes-ready")), "{t:#?}");
    assert!(
        t.contains(&"labels worker-2: record managed labels and taints".to_string()),
        "{t:#?}"
    );
}

#[test]
fn tokens_come_from_the_cluster_then_the_backup_then_new() {
    let inv = seed();
    let mut f = cluster(&inv);
    // The cluster's config wins over a different backup, which is then rewritten.
    f.local.token_backup = Some(TokenBackup {
        server: "old".into(),
        agent: "old".into(),
    });
    let (t, src) = secrets::tokens(&inv, &f).unwrap();
    assert_eq!((t, src), (tokens(), Some(Source::Cluster)));
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert_eq!(
        texts(&plan),
        ["backups local: write the token backup /nonexistent/t/.bootstrap/tokens.json (the tokens from the cluster)"]
    );
    // A server whose config bootstrap did not write (installed by hand): k3s's own token
    // files hold the tokens.
    for h in f.hosts.values_mut() {
        h.config = None;
    }
    f.local.token_backup = None;
    assert_eq!(
        secrets::tokens(&inv, &f).unwrap(),
        (tokens(), Some(Source::Cluster))
    );
    // No config and no token file anywhere: the backup.
    for h in f.hosts.values_mut() {
        h.token_file = None;
        h.agent_token_file = None;
    }
    f.local.token_backup = Some(tokens());
    assert_eq!(secrets::tokens(&inv, &f).unwrap(), (tokens(), None));
    // No backup either, but a server has data: refused.
    f.local.token_backup = None;
    f.local.new_tokens = Some(tokens());
    let e = secrets::tokens(&inv, &f).unwrap_err().to_string();
    assert!(e.contains("holds the cluster token"), "{e}");
    // A new cluster: new tokens.
    let f = new_cluster(&inv);
    assert_eq!(
        secrets::tokens(&inv, &f).unwrap(),
        (tokens(), Some(Source::New))
    );
}

// ---------------------------------------------------------------- labels and taints

#[test]
fn drift_adds_changes_and_removes_only_managed() {
    let inv = inventory(
        "",
        &[
            ("m", "server", ""),
            (
                "n",
                "agent",
                "labels = { \"node.role\" = \"database\", tier = \"b\" }\ntaints = [\"db=true:NoSchedule\"]",
            ),
        ],
    );
    let want = inv.node("n").unwrap();
    let mut obs = ObservedNode {
        name: "n".into(),
        ..Default::default()
    };
    for (k, val) in [
        ("node.role", "database"),
        ("tier", "a"),
        ("old", "x"),
        ("foreign", "y"),
    ] {
        obs.labels.insert(k.into(), val.into());
    }
    obs.taints = vec![
        Taint::parse("gone=1:NoExecute").unwrap(),
        Taint::parse("theirs:NoSchedule").unwrap(),
    ];
    obs.annotations.insert(
        MANAGED_ANNOTATION.into(),
        r#"{"labels":["node.role","tier","old"],"taints":["gone:NoExecute"]}"#.into(),
    );
    let d = node_drift(want, &obs);
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
    assert_eq!(
        d.to_string(),
        "label tier=b, remove label old, taint db=true:NoSchedule, remove taint gone=1:NoExecute"
    );
}

#[test]
fn taint_value_change_replaces_it() {
    let inv = inventory(
        "",
        &[
            ("m", "server", ""),
            ("n", "agent", "taints = [\"k=new:NoSchedule\"]"),
        ],
    );
    let mut obs = ObservedNode {
        taints: vec![Taint::parse("k=old:NoSchedule").unwrap()],
        ..Default::default()
    };
    obs.annotations.insert(
        MANAGED_ANNOTATION.into(),
        serde_json::to_string(&Managed {
            labels: Default::default(),
            taints: ["k:NoSchedule".to_string()].into(),
            host: Some(inv.node("n").unwrap().host.clone()),
        })
        .unwrap(),
    );
    let d = node_drift(inv.node("n").unwrap(), &obs);
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
fn a_label_change_rewrites_config_without_restart_and_labels_through_the_api() {
    let inv = seed();
    let f = cluster(&inv);
    let changed = inventory(
        "",
        &[
            (
                "master-1",
                "server",
                "taints = [\"node-role.kubernetes.io/control-plane=true:NoSchedule\"]",
            ),
            (
                "worker-1",
                "agent",
                "labels = { tier = \"silver\" }\ntaints = [\"dedicated=db:NoSchedule\"]",
            ),
            ("worker-2", "agent", ""),
        ],
    );
    let plan = up(&changed, &f, &SETTINGS).unwrap();
    assert_eq!(
        texts(&plan),
        [
            "agents worker-1: write /etc/rancher/k3s/config.yaml (labels or taints)",
            "labels worker-1: label tier=silver, taint dedicated=db:NoSchedule",
        ]
    );
    assert_eq!(plan.phases[1].mode, Mode::OneScript);
    // `status` sees the same drift before the run.
    let st = status::status(&changed, &f).unwrap();
    let w1 = st.nodes.iter().find(|r| r.node == "worker-1").unwrap();
    assert_eq!(
        w1.notes,
        ["drift: label tier=silver, taint dedicated=db:NoSchedule"]
    );
    assert!(!st.healthy);
}

// ---------------------------------------------------------------- per host

#[test]
fn agent_config_holds_only_agent_keys() {
    let inv = inventory(
        "tls_san = [\"k8s.example.com\"]\nflannel_backend = \"wireguard-native\"\ndisable = [\"traefik\"]",
        &[("m", "server", ""), ("w", "agent", "")],
    );
    let c = node_config(
        &inv,
        inv.node("w").unwrap(),
        &tokens(),
        "https://10.0.0.1:6443",
        Some(&ca()),
    );
    c.validate().unwrap();
    let text = c.render().unwrap();
    assert!(!text.contains("disable"));
    // An agent's token pins the cluster CA.
    assert!(text.contains(&format!("token: \"K10{}::node:{}\"", ca(), "a".repeat(64))));
    let s = node_config(&inv, inv.node("m").unwrap(), &tokens(), "", Some(&ca()));
    let text = s.render().unwrap();
    assert!(text.contains("disable:\n  - \"traefik\""), "{text}");
    assert!(text.contains(&format!("agent-token: \"{}\"", "a".repeat(64))));
    // Every server's host is in the certificate, then the extra names.
    let m = &inv.node("m").unwrap().host;
    assert!(
        text.contains(&format!("tls-san:\n  - \"{m}\"\n  - \"k8s.example.com\"")),
        "{text}"
    );
}

fn host_plan(n: &Node, f: &HostFacts, config_for: &Inventory, version: &str) -> HostPlan {
    let url = server_url(&config_for.first_server().host);
    let c = node_config(config_for, n, &tokens(), &url, Some(&ca()));
    plan_host(&HostInput {
        node: n,
        facts: f,
        config: &c,
        join: Some(&Join::Init),
        join_token: None,
        via: None,
        learn_ca: false,
        version: v(version),
        images: None,
        release: &Release {
            source: crate::inventory::InstallSource::Download,
            mirror: "https://mirror".into(),
            cache_dir: "/c".into(),
            sha256: Default::default(),
        },
        registries: None,
    })
    .unwrap()
}

#[test]
fn fresh_server_gets_everything_and_cluster_init() {
    let inv = seed();
    let n = inv.node("master-1").unwrap();
    let p = host_plan(n, &fresh(), &inv, V1);
    assert!(p.fresh);
    let text: Vec<String> = p.actions.iter().map(|a| a.to_string()).collect();
    assert_eq!(text[0], "install k3s v1.36.3+k3s1");
    assert!(text.iter().any(|t| t.contains("50-bootstrap-join.yaml")));
    assert_eq!(
        p.actions.last(),
        Some(&Action::Start {
            role: Role::Server,
            daemon_reload: true,
            via: None,
        })
    );
    assert_eq!(p.artifacts().len(), 1);
    assert!(!p
        .at_its_turn()
        .iter()
        .any(|a| matches!(a, Action::InstallBinary { .. })));
}

#[test]
fn a_version_change_is_staged_then_put_in_place_and_restarts() {
    let inv = seed();
    let n = inv.node("worker-2").unwrap();
    let f = converged(&inv, "worker-2", V1);
    let p = host_plan(n, &f, &inv, V2);
    assert!(p.is_upgrade() && p.restarts());
    assert_eq!(
        p.artifacts()[0].to_string(),
        "stage k3s v1.36.4+k3s1 (in place at its turn)"
    );
    let turn: Vec<String> = p.at_its_turn().iter().map(ToString::to_string).collect();
    assert_eq!(
        turn,
        [
            "replace k3s v1.36.3+k3s1 with v1.36.4+k3s1",
            "restart k3s-agent (k3s v1.36.4+k3s1)"
        ]
    );
}

#[test]
fn converged_host_is_a_noop_and_never_rejoins() {
    let inv = seed();
    let f = converged(&inv, "master-1", V1);
    assert!(host_plan(inv.node("master-1").unwrap(), &f, &inv, V1).is_noop());
}

// ---------------------------------------------------------------- upgrades

#[test]
fn an_upgrade_goes_server_by_server_then_agents_in_batches() {
    let inv = ha();
    let f = cluster(&inv);
    let up2 = {
        let mut i = inv.clone();
        i.cluster.k3s_version = v(V2);
        i
    };
    let plan = up(&up2, &f, &Settings { max_unavailable: 2 }).unwrap();
    let names: Vec<&str> = plan.phases.iter().map(|p| p.name).collect();
    // The API server restarted: its kubeconfig is read again.
    assert_eq!(
        names,
        [
            "artifacts",
            "servers",
            "upgrade",
            "nodes-ready",
            "kubeconfig"
        ]
    );
    assert!(plan.phases[0].groups.iter().all(|g| g.steps[0]
        .action
        .to_string()
        .starts_with("stage k3s v1.36.4")));
    assert_eq!(plan.phases[0].groups.len(), 5);
    let servers = &plan.phases[1];
    assert_eq!(servers.mode, Mode::Serial);
    for g in &servers.groups {
        assert_eq!(
            g.steps.last().unwrap(),
            &Step::api(
                &g.host,
                Action::WaitNodeReady {
                    node: g.host.clone(),
                    version: Some(v(V2))
                }
            )
        );
    }
    let agents = &plan.phases[2];
    assert_eq!(agents.mode, Mode::Batches(2));
    let w1: Vec<String> = agents.groups[0]
        .steps
        .iter()
        .map(|s| s.action.to_string())
        .collect();
    assert_eq!(
        w1,
        [
            "cordon and drain worker-1",
            "replace k3s v1.36.3+k3s1 with v1.36.4+k3s1",
            "restart k3s-agent (k3s v1.36.4+k3s1)",
            "wait until worker-1 is Ready on v1.36.4+k3s1",
            "uncordon worker-1",
        ]
    );
    assert_eq!(agents.groups[0].steps[0].on, On::Api("master-1".into()));
    // A downgrade is refused before anything.
    let mut f = f;
    f.hosts.get_mut("worker-1").unwrap().bin_version = Some(v(V2));
    let e = up(&inv, &f, &SETTINGS).unwrap_err().to_string();
    assert!(
        e.contains("downgrades") && e.contains("worker-1 runs v1.36.4+k3s1"),
        "{e}"
    );
}

// ---------------------------------------------------------------- add-ons

#[test]
fn dropping_the_traefik_addon_is_refused_unless_traefik_stays_disabled() {
    // Without `traefik` in `disable`, k3s's bundled Traefik would come back as the same
    // HelmChart kube-system/traefik and take the add-on's chart over before its removal.
    let (inv, f) = with_dropped("bootstrap-traefik.yaml");
    let err = up(&inv, &f, &SETTINGS).unwrap_err().to_string();
    assert!(err.contains("HelmChart kube-system/traefik"), "{err}");
    assert!(
        err.contains("add \"traefik\" to `disable` in [cluster]"),
        "{err}"
    );
    assert!(err.contains("Nothing was changed"), "{err}");

    let mut inv = inv;
    inv.cluster.disable = vec!["traefik".into()];
    let t = texts(&up(&inv, &f, &SETTINGS).unwrap());
    assert!(
        t.contains(
            &"add-ons m1: remove bootstrap-traefik.yaml (uninstalls traefik, file removed)"
                .to_string()
        ),
        "{t:?}"
    );
}

fn with_extra() -> Inventory {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(
        dir.join("app.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: app\n",
    )
    .unwrap();
    let text = "[cluster]\nname = \"t\"\nk3s_version = \"v1.36.3+k3s1\"\n\n[[manifests]]\npath = \"app.yaml\"\n\n[[node]]\nname = \"m1\"\nhost = \"10.0.0.1\"\nrole = \"server\"\n\n[[node]]\nname = \"m2\"\nhost = \"10.0.0.2\"\nrole = \"server\"\n";
    std::fs::write(dir.join("inventory.toml"), text).unwrap();
    Inventory::load(dir.join("inventory.toml")).unwrap()
}

/// [`with_extra`], with `file` (a manifest bootstrap wrote earlier, since dropped from the
/// inventory) on both servers and an empty object snapshot.
fn with_dropped(file: &str) -> (Inventory, Facts) {
    let inv = with_extra();
    let mut f = cluster(&inv);
    for s in ["m1", "m2"] {
        let h = f.hosts.get_mut(s).unwrap();
        h.manifests.insert(file.into(), "x".into());
    }
    f.cluster.objects = Some(crate::addons::health::Snapshot::default());
    (inv, f)
}

#[test]
fn addon_difference_writes_what_differs_and_removes_what_was_dropped() {
    // m1 holds a chart bootstrap wrote earlier and the inventory dropped; m2 has it too.
    let (inv, mut f) = with_dropped("bootstrap-cert-manager.yaml");
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let t = texts(&plan);
    assert_eq!(
        t,
        [
            "add-ons m1: remove bootstrap-cert-manager.yaml (uninstalls cert-manager, file removed)",
            "add-ons m1: record the extra manifests (app)",
            "add-ons m1: manifest app: write app.yaml",
            "add-ons m2: remove bootstrap-cert-manager.yaml",
            "add-ons m2: record the extra manifests (app)",
            "add-ons m2: manifest app: write app.yaml",
            "add-on health add-ons: wait until k3s applied every manifest",
        ]
    );
    // Once written and applied: nothing, not even a health read.
    let spec = &f.local.addons;
    let files = spec.files(None).unwrap();
    let mut objects = serde_json::json!({"items": []});
    for s in ["m1", "m2"] {
        let h = f.hosts.get_mut(s).unwrap();
        h.manifests.clear();
        h.addons.extra_record = vec!["app".into()];
        for m in &files {
            h.manifests.insert(m.file.clone(), m.sha256());
        }
    }
    for m in &files {
        objects["items"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "kind": "Addon", "metadata": {"name": m.addon_name(), "namespace": "kube-system"},
                "spec": {"checksum": m.sha256()},
            }));
    }
    f.cluster.objects = Some(crate::addons::health::Snapshot::parse(&objects.to_string()).unwrap());
    assert!(up(&inv, &f, &SETTINGS).unwrap().phases.is_empty());
    // Written but not yet applied: only the wait.
    f.cluster.objects = Some(crate::addons::health::Snapshot::default());
    assert_eq!(
        texts(&up(&inv, &f, &SETTINGS).unwrap()),
        ["add-on health add-ons: wait until k3s applied every manifest"]
    );
}

#[test]
fn crd_dependent_files_wait_for_their_chart() {
    let inv =
        Inventory::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory/seed.toml")).unwrap();
    let mut f = new_cluster(&inv);
    f.local.new_sealing_key = Some(crate::addons::sealed_secrets::SealingKey {
        cert_pem: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n".into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----\n".into(),
    });
    for h in f.hosts.values_mut() {
        h.addons.prereq = crate::addons::longhorn::PrereqFacts {
            binaries: ["iscsiadm", "mount.nfs", "cryptsetup", "dmsetup"]
                .iter()
                .map(|b| (b.to_string(), true))
                .collect(),
            iscsid: ("active".into(), String::new()),
            modules: [
                ("iscsi_tcp", "loaded"),
                ("dm_crypt", "loaded"),
                ("nfs", "loaded"),
            ]
            .iter()
            .map(|(m, s)| (m.to_string(), s.to_string()))
            .collect(),
            ..Default::default()
        };
    }
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let health = plan
        .phases
        .iter()
        .find(|p| p.name == "add-on health")
        .unwrap();
    let t: Vec<String> = health.groups[0]
        .steps
        .iter()
        .map(|s| s.action.to_string())
        .collect();
    // Each CRD-dependent file comes after a wait for what it needs; the last wait is for all.
    let first_wait = t.iter().position(|l| l.starts_with("wait until")).unwrap();
    assert_eq!(first_wait, 0, "{t:#?}");
    assert!(
        t.last().unwrap().contains("every manifest applied"),
        "{t:#?}"
    );
    assert!(
        t.iter()
            .any(|l| l.contains("bootstrap-traefik-routes.yaml")),
        "{t:#?}"
    );
    assert!(!plan
        .phases
        .iter()
        .find(|p| p.name == "add-ons")
        .unwrap()
        .groups
        .iter()
        .flat_map(|g| &g.steps)
        .any(|s| s.action.to_string().contains("traefik-routes")));
    // The sealing key's backup is written first, and said to be new.
    assert!(
        texts(&plan)[1].contains("a new RSA 4096 key"),
        "{:#?}",
        texts(&plan)
    );
}

// ---------------------------------------------------------------- day two

#[test]
fn quorum_rules() {
    use lifecycle::quorum_after_removal;
    let m = |v: &[(&str, bool)]| -> BTreeMap<String, bool> {
        v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    };
    assert!(quorum_after_removal(&m(&[("a", true)]), "a").is_err());
    assert!(quorum_after_removal(&m(&[("a", true), ("b", true), ("c", true)]), "a").is_ok());
    // a is dead: removing it leaves b and c, both Ready.
    assert!(quorum_after_removal(&m(&[("a", false), ("b", true), ("c", true)]), "a").is_ok());
    // c is dead: removing a leaves b (Ready) and c (not): 1 of 2 < 2.
    assert!(quorum_after_removal(&m(&[("a", true), ("b", true), ("c", false)]), "a").is_err());
    assert!(quorum_after_removal(&m(&[("a", true), ("b", true)]), "a").is_ok());
}

#[test]
fn replacing_a_server_deletes_its_node_before_the_old_host_stops() {
    let old = ha();
    let mut new = old.clone();
    new.nodes
        .iter_mut()
        .find(|n| n.name == "master-2")
        .unwrap()
        .host = "10.9.9.9".into();
    let mut f = cluster(&old);
    let old_host = old.node("master-2").unwrap().host.clone();
    let mut residue = converged(&old, "master-2", V1);
    residue.residue = vec!["/usr/local/bin/k3s".into()];
    f.hosts.insert(crate::connect::retired("master-2"), residue);
    f.hosts.insert("master-2".into(), fresh());
    f.cluster.api = Some("master-1".into());
    let plan =
        lifecycle::replace(&new, "text", "master-2", &old_host, false, &f, &SETTINGS).unwrap();
    let t = texts(&plan);
    assert_eq!(
        &t[..4],
        [
            "retire master-2: cordon and drain master-2",
            "retire master-2: delete the Node master-2",
            "retire master-2 (old host): stop and uninstall k3s",
            "inventory local: write /nonexistent/t/inventory.toml",
        ]
    );
    // The new host joins a live server and registers afresh: its Node gets its labels.
    assert!(join_dropin_of(&plan, "master-2")
        .unwrap()
        .contains("https://10.0.0."));
    assert!(t.contains(&"labels master-2: record managed labels and taints".to_string()));
    // An agent's Node goes after its host, so it cannot register again.
    let mut new = old.clone();
    new.nodes
        .iter_mut()
        .find(|n| n.name == "worker-1")
        .unwrap()
        .host = "10.9.9.8".into();
    let mut f = cluster(&old);
    let mut residue = converged(&old, "worker-1", V1);
    residue.residue = vec!["/usr/local/bin/k3s".into()];
    f.hosts.insert(crate::connect::retired("worker-1"), residue);
    f.hosts.insert("worker-1".into(), fresh());
    let plan = lifecycle::replace(
        &new,
        "text",
        "worker-1",
        &old.node("worker-1").unwrap().host,
        false,
        &f,
        &SETTINGS,
    )
    .unwrap();
    assert_eq!(
        &texts(&plan)[..3],
        [
            "retire worker-1: cordon and drain worker-1",
            "retire worker-1 (old host): stop and uninstall k3s",
            "retire worker-1: delete the Node worker-1",
        ]
    );
}

/// Issue 26 (C12): running `node replace` again after the new host registered never touches
/// the Node it just moved, though k3s's InternalIP is never the inventory's host when that is
/// a DNS name or a NAT'd address: what decides is the host bootstrap recorded on the Node,
/// else an address k3s records that the new host has.
#[test]
fn a_replace_run_again_leaves_the_node_it_moved() {
    let old = ha();
    for new_host in ["worker-1.lab.test", "203.0.113.7"] {
        let mut new = old.clone();
        new.nodes
            .iter_mut()
            .find(|n| n.name == "worker-1")
            .unwrap()
            .host = new_host.into();
        let mut f = cluster(&new);
        // The Node registered from the new host: InternalIP its interface address, and no
        // record of bootstrap's yet (the run stopped before the labels phase).
        let n = f
            .cluster
            .nodes
            .iter_mut()
            .find(|n| n.name == "worker-1")
            .unwrap();
        n.annotations.clear();
        n.internal_ip = Some("10.0.0.77".into());
        n.addresses = vec!["10.0.0.77".into()];
        let h = f.hosts.get_mut("worker-1").unwrap();
        h.addresses = vec!["10.0.0.77".into()];
        h.node_password = true;
        let plan =
            lifecycle::replace(&new, "text", "worker-1", new_host, false, &f, &SETTINGS).unwrap();
        let t = texts(&plan);
        assert!(
            !t.iter()
                .any(|s| s.contains("drain worker-1") || s.contains("delete the Node worker-1")),
            "{new_host}: {t:#?}"
        );
        // Recorded by bootstrap: that decides, whatever the addresses.
        let n = f
            .cluster
            .nodes
            .iter_mut()
            .find(|n| n.name == "worker-1")
            .unwrap();
        n.annotations.insert(
            MANAGED_ANNOTATION.into(),
            serde_json::to_string(&Managed {
                host: Some(new_host.into()),
                ..Default::default()
            })
            .unwrap(),
        );
        n.addresses.clear();
        let plan =
            lifecycle::replace(&new, "text", "worker-1", new_host, false, &f, &SETTINGS).unwrap();
        assert!(!texts(&plan)
            .iter()
            .any(|s| s.contains("delete the Node worker-1")));
    }
    // The same host name on a rebuilt machine (k3s not running there yet): the Node that
    // records it is the old machine's, and goes.
    let mut f = cluster(&old);
    {
        let h = f.hosts.get_mut("worker-1").unwrap();
        h.node_password = false;
        h.agent.active = "inactive".into();
    }
    let same = old.node("worker-1").unwrap().host.clone();
    let plan = lifecycle::replace(&old, "text", "worker-1", &same, false, &f, &SETTINGS).unwrap();
    assert!(
        texts(&plan).contains(&"retire worker-1: delete the Node worker-1".to_string()),
        "{:#?}",
        texts(&plan)
    );
    // The Node still of the old host (recorded there) is taken out.
    let mut new = old.clone();
    new.nodes
        .iter_mut()
        .find(|n| n.name == "worker-1")
        .unwrap()
        .host = "worker-1.lab.test".into();
    let f = cluster(&old);
    let plan = lifecycle::replace(
        &new,
        "text",
        "worker-1",
        &old.node("worker-1").unwrap().host,
        false,
        &f,
        &SETTINGS,
    )
    .unwrap();
    assert!(texts(&plan).contains(&"retire worker-1: delete the Node worker-1".to_string()));
}

#[test]
fn removing_refuses_a_quorum_loss_and_reset_skips_clean_hosts() {
    let inv = ha();
    let mut f = cluster(&inv);
    f.cluster
        .nodes
        .iter_mut()
        .find(|n| n.name == "master-3")
        .unwrap()
        .ready = false;
    let e = lifecycle::remove(&inv, "t", "master-1", false, &f).unwrap_err();
    assert!(crate::outcome::is_usage(&e), "{e}");
    assert!(e.to_string().contains("etcd needs 2 for quorum"), "{e}");
    let forced = lifecycle::remove(&inv, "t", "master-1", true, &f).unwrap();
    assert!(forced.warnings.iter().any(|w| w.contains("--force")));
    // Issue 26 (C17): a server removed while its host cannot be reached rejoins by itself if
    // it comes back (k3s's tombstone with `server:` set): the warning says so and how to stop it.
    let mut gone = f.clone();
    gone.hosts.remove("master-3");
    gone.unreachable
        .insert("master-3".into(), "connection timed out".into());
    let plan = lifecycle::remove(&inv, "t", "master-3", true, &gone).unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("master-3: the host is unreachable")
                && w.contains("rejoins the cluster by itself")
                && w.contains("k3s-uninstall.sh")),
        "{:#?}",
        plan.warnings
    );
    // reset: a clean host gets nothing; one that did not answer is named.
    let mut f = cluster(&inv);
    for (name, h) in f.hosts.iter_mut() {
        h.residue = if name == "worker-2" {
            vec![]
        } else {
            vec!["/var/lib/rancher/k3s".into()]
        };
    }
    f.hosts.remove("worker-1");
    f.unreachable
        .insert("worker-1".into(), "connection refused".into());
    let plan = lifecycle::reset(&inv, None, false, &f).unwrap();
    let t = texts(&plan);
    assert_eq!(t.len(), 3, "{t:#?}");
    assert!(t.iter().all(|l| l.contains("servers master-")), "{t:#?}");
    assert_eq!(plan.unreachable, ["worker-1: connection refused"]);
}

#[test]
fn reset_of_one_server_deletes_its_node_first_under_the_quorum_guard() {
    let inv = ha();
    let mut f = cluster(&inv);
    for h in f.hosts.values_mut() {
        h.residue = vec!["/var/lib/rancher/k3s".into()];
    }
    f.cluster.api = Some("master-1".into());
    let plan = lifecycle::reset(&inv, Some("master-3"), false, &f).unwrap();
    assert_eq!(
        texts(&plan),
        [
            "reset master-3: delete the Node master-3",
            "reset master-3: stop and uninstall k3s",
        ]
    );
    // An agent's Node goes after its host.
    let plan = lifecycle::reset(&inv, Some("worker-1"), false, &f).unwrap();
    assert_eq!(
        texts(&plan),
        [
            "reset worker-1: stop and uninstall k3s",
            "reset worker-1: delete the Node worker-1",
        ]
    );
    // master-2 is down: taking master-3 out would cost etcd its quorum.
    f.cluster
        .nodes
        .iter_mut()
        .find(|n| n.name == "master-2")
        .unwrap()
        .ready = false;
    let e = lifecycle::reset(&inv, Some("master-3"), false, &f).unwrap_err();
    assert!(crate::outcome::is_usage(&e), "{e}");
    assert!(e.to_string().contains("quorum"), "{e}");
    assert!(lifecycle::reset(&inv, Some("master-3"), true, &f).is_ok());
}

#[test]
fn versions_compare_and_urls_bracket_ipv6() {
    assert!(v("v1.36.10+k3s1") > v("v1.36.9+k3s2"));
    assert!("1.36.3".parse::<K3sVersion>().is_err());
    assert_eq!(server_url("10.0.0.1"), "https://10.0.0.1:6443");
    assert_eq!(server_url("fd00::1"), "https://[fd00::1]:6443");
}

#[test]
fn a_changed_config_restarts_an_agent_stuck_activating() {
    // A first run whose agents could not join leaves k3s-agent `activating`; `systemctl start`
    // would do nothing to it, so the corrected config restarts it.
    let inv = seed();
    let mut f = cluster(&inv);
    let w = f.hosts.get_mut("worker-2").unwrap();
    w.agent.active = "activating".into();
    w.config_sha256 = Some("stale".into());
    w.config = Some("server: https://10.9.9.9:6443\n".into());
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let t = texts(&plan);
    assert!(
        t.iter()
            .any(|s| s.contains("worker-2: restart k3s-agent (configuration changed)")),
        "{t:#?}"
    );
    assert!(
        !t.iter().any(|s| s.contains("worker-2: enable and start")),
        "{t:#?}"
    );
    // Nothing changed: left to go on starting.
    let mut f = cluster(&inv);
    f.hosts.get_mut("worker-2").unwrap().agent.active = "activating".into();
    let t = texts(&up(&inv, &f, &SETTINGS).unwrap());
    assert!(!t.iter().any(|s| s.contains("worker-2: restart")), "{t:#?}");
}

#[test]
fn an_interrupted_runs_temp_files_are_removed_first_and_nothing_else_moves() {
    let inv = seed();
    let mut f = cluster(&inv);
    let tmp = "/usr/local/bin/..k3s.bootstrap-upload.bootstrap-tmp-0a1b";
    f.hosts.get_mut("worker-1").unwrap().leftovers = vec![tmp.into()];
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert_eq!(
        texts(&plan),
        [format!(
            "artifacts worker-1: remove what an interrupted run left: {tmp}"
        )]
    );
}

#[test]
fn a_server_with_a_unit_but_no_data_still_joins_and_a_stale_target_restarts_it() {
    // A run stopped after master-2's unit was written, before its config and drop-in: the
    // unit file makes it look installed, but it has no etcd data, so it joins.
    let inv = ha();
    let mut f = cluster(&inv);
    let m2 = f.hosts.get_mut("master-2").unwrap();
    m2.server_db = false;
    m2.token_file = None;
    m2.agent_token_file = None;
    m2.config = None;
    m2.config_sha256 = None;
    m2.server.active = "inactive".into();
    m2.server.enabled = "disabled".into();
    f.cluster.nodes.retain(|n| n.name != "master-2");
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    let first = server_url(&inv.node("master-1").unwrap().host);
    let dropin = join_dropin_of(&plan, "master-2").expect("master-2 gets its join drop-in");
    assert!(dropin.contains(&first), "{dropin}");
    assert!(!dropin.contains("cluster-init"), "{dropin}");
    let t = texts(&plan);
    assert!(
        t.iter().any(|s| s.contains("master-2: enable and start")),
        "{t:#?}"
    );
    // The same host still activating, its drop-in naming a server that is gone: rewritten,
    // and the unit restarted to read it.
    let m2 = f.hosts.get_mut("master-2").unwrap();
    m2.server.active = "activating".into();
    m2.server.enabled = "enabled".into();
    m2.dropins.insert(
        JOIN_DROPIN.into(),
        k3s::sha256_hex(b"server: https://10.9.9.9:6443\n"),
    );
    let t = texts(&up(&inv, &f, &SETTINGS).unwrap());
    assert!(
        t.iter()
            .any(|s| s.contains("master-2: restart k3s (") && s.contains("join target)")),
        "{t:#?}"
    );
    // A server with data never gets one: k3s ignores it, and rewriting it would restart it.
    let t = texts(&up(&inv, &cluster(&inv), &SETTINGS).unwrap());
    assert!(t.is_empty(), "{t:#?}");
}

#[test]
fn an_etcd_table_reaches_every_server_config_one_restart_at_a_time() {
    let before = ha();
    let facts = cluster(&before);
    let nodes = [
        ("master-1", "server", ""),
        ("master-2", "server", ""),
        ("master-3", "server", ""),
        ("worker-1", "agent", ""),
        ("worker-2", "agent", ""),
    ];
    let after = inventory(
        "[etcd]\nsnapshot_schedule = \"0 */6 * * *\"\nsnapshot_retention = 10\n",
        &nodes,
    );
    let cfg = node_config(&after, after.node("master-2").unwrap(), &tokens(), "", None)
        .render()
        .unwrap();
    assert!(
        cfg.contains("etcd-snapshot-schedule-cron: \"0 */6 * * *\"\n"),
        "{cfg}"
    );
    assert!(cfg.contains("etcd-snapshot-retention: \"10\"\n"), "{cfg}");
    let agent = node_config(&after, after.node("worker-1").unwrap(), &tokens(), "", None)
        .render()
        .unwrap();
    assert!(!agent.contains("etcd-"), "{agent}");
    let plan = up(&after, &facts, &SETTINGS).unwrap();
    let servers = plan
        .phases
        .iter()
        .find(|p| p.name == "servers")
        .expect("a servers phase");
    assert_eq!(servers.mode, Mode::Serial);
    let t = texts(&plan);
    for m in ["master-1", "master-2", "master-3"] {
        assert!(
            t.iter()
                .any(|s| s.contains(&format!("{m}: restart k3s (configuration changed)"))),
            "{t:#?}"
        );
    }
    assert!(
        !t.iter()
            .any(|s| s.contains(" worker-1:") || s.contains(" worker-2:")),
        "{t:#?}"
    );
}

// ---------------------------------------------------------------- etcd snapshots

fn with_snapshot(inv: &Inventory, on: &str, hash: Option<String>) -> Facts {
    let mut f = cluster(inv);
    f.cluster.snapshots = vec![crate::facts::SnapshotFile {
        name: format!("on-demand-{on}-1764763200"),
        node: on.into(),
        s3: false,
        location: format!("file://{}/on-demand-{on}-1764763200", k3s::SNAPSHOT_DIR),
        size: 4096,
        created: "2026-12-03T12:00:00Z".into(),
        token_hash: hash,
    }];
    f
}

fn held_hash(inv: &Inventory, f: &Facts) -> String {
    let (t, _) = secrets::tokens(inv, f).unwrap();
    crate::k3s::snapshot::token_hash(&t.server)
}

#[test]
fn a_restore_follows_k3s_order_and_every_other_server_rejoins() {
    let inv = ha();
    let f0 = cluster(&inv);
    let f = with_snapshot(&inv, "master-1", Some(held_hash(&inv, &f0)));
    let src = etcd::Source::Named("on-demand-master-1-1764763200".into());
    let plan = etcd::restore(&inv, &f, &src, "1764770000", false).unwrap();
    let names: Vec<&str> = plan.phases.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "check",
            "record",
            "stop servers",
            "restore",
            "rejoin servers",
            "rejoin agents",
            "nodes-ready",
            "done"
        ]
    );
    assert_eq!(plan.phases[2].mode, Mode::Parallel);
    assert_eq!(plan.phases[2].groups.len(), 3);
    assert_eq!(plan.phases[4].mode, Mode::Serial);
    let t = texts(&plan);
    let path = format!("{}/on-demand-master-1-1764763200", k3s::SNAPSHOT_DIR);
    let want = [
        format!("check master-1: check that {path} is there"),
        format!("restore master-1: restore etcd from {path} (k3s server --cluster-reset; this server becomes the only member)"),
        "restore master-1: enable and start k3s".to_string(),
        "restore master-1: read the cluster CA hash joins are pinned to".to_string(),
        "rejoin servers master-2: move the etcd data and the cluster's certificates aside to /var/lib/rancher/k3s/server/db-before-restore-1764770000, /var/lib/rancher/k3s/server/tls-before-restore-1764770000 and /var/lib/rancher/k3s/server/cred-before-restore-1764770000 (rejoins as a new member, its CAs from the restored cluster)".to_string(),
        "rejoin servers master-2: write /etc/rancher/k3s/config.yaml.d/50-bootstrap-join.yaml (join)".to_string(),
        "rejoin servers master-2: delete master-2's node-password Secret (recorded again when it registers)".to_string(),
        "rejoin servers master-2: enable and start k3s".to_string(),
        "rejoin agents worker-1: restart k3s-agent (the cluster was restored)".to_string(),
    ];
    for w in &want {
        assert!(t.contains(w), "missing {w}\n{t:#?}");
    }
    // The join drop-in and the agents' configs are pinned to the restored CA, learned once
    // the first server runs again.
    let files: Vec<&FileSpec> = plan
        .steps()
        .filter_map(|(_, _, s)| match &s.action {
            Action::WriteFile { file, .. } => Some(file),
            _ => None,
        })
        .collect();
    assert_eq!(files.len(), 4);
    for file in files {
        let text = String::from_utf8_lossy(&file.content);
        assert!(text.contains(crate::k3s::token::PENDING_CA_HASH), "{text}");
        assert!(text.contains("server: \"https://10."), "{text}");
    }
    // The first server is never moved aside.
    assert!(!t.iter().any(|s| s.contains("master-1: move")), "{t:#?}");
    // What was checked is kept until the end, and Nodes the inventory lacks are named.
    assert!(
        t.iter().any(
            |s| s.contains("restore.json that on-demand-master-1-1764763200 is being restored")
        ),
        "{t:#?}"
    );
    assert!(
        t.contains(&"nodes-ready master-1: name the Nodes the inventory does not name".to_string()),
        "{t:#?}"
    );
    let plan = etcd::restore(&inv, &f, &src, "1764770000", true).unwrap();
    assert!(texts(&plan).contains(
        &"nodes-ready master-1: delete the Nodes the inventory does not name".to_string()
    ));
}

/// Issue 26 (C13): a restore of a snapshot the cluster knows by name, interrupted once the
/// first server ran again, finds the snapshot recorded without a token hash (k3s records one
/// only when it takes a snapshot); the hash the first run checked, kept in
/// `.bootstrap/restore.json`, lets the same command finish.
#[test]
fn an_interrupted_named_restore_is_finished_with_the_hash_it_checked() {
    let inv = ha();
    let f0 = cluster(&inv);
    let hash = held_hash(&inv, &f0);
    let src = etcd::Source::Named("on-demand-master-1-1764763200".into());
    let mut f = with_snapshot(&inv, "master-1", None);
    let e = etcd::restore(&inv, &f, &src, "1", false).unwrap_err();
    assert!(e.to_string().contains("records no token hash"), "{e}");
    f.local.restore = Some(crate::k3s::snapshot::RestoreRecord {
        snapshot: "on-demand-master-1-1764763200".into(),
        node: "master-1".into(),
        location: f.cluster.snapshots[0].location.clone(),
        token_hash: hash.clone(),
    });
    assert!(etcd::restore(&inv, &f, &src, "1", false).is_ok());
    // Interrupted while every server was stopped: no API to list snapshots; the record says
    // where it is.
    let mut down = f.clone();
    down.cluster.api = None;
    down.cluster.snapshots.clear();
    down.cluster.unanswered = vec!["master-1: k3s is not running here".into()];
    let plan = etcd::restore(&inv, &down, &src, "1", false).unwrap();
    assert!(texts(&plan)
        .iter()
        .any(|t| t.contains("check that /var/lib/rancher/k3s/server/db/snapshots/on-demand-master-1-1764763200 is there")));
    let mut no_record = down.clone();
    no_record.local.restore = None;
    assert!(etcd::restore(&inv, &no_record, &src, "1", false).is_err());
    // Kept for another snapshot, or another place: not this one's.
    let mut other = f.clone();
    other.local.restore.as_mut().unwrap().location = "file:///elsewhere".into();
    assert!(etcd::restore(&inv, &other, &src, "1", false).is_err());
}

#[test]
fn a_restore_with_another_token_or_a_server_missing_is_refused_before_anything_stops() {
    let inv = ha();
    let src = etcd::Source::Named("on-demand-master-1-1764763200".into());
    let f = with_snapshot(&inv, "master-1", Some("0123456789ab".into()));
    let e = etcd::restore(&inv, &f, &src, "1", false).unwrap_err();
    assert!(crate::outcome::is_usage(&e), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("Nothing was stopped") && m.contains("0123456789ab"),
        "{m}"
    );
    // No token hash recorded: cannot be checked, refused.
    let f = with_snapshot(&inv, "master-1", None);
    let e = etcd::restore(&inv, &f, &src, "1", false).unwrap_err();
    assert!(e.to_string().contains("records no token hash"), "{e}");
    // A server that cannot be reached.
    let f0 = cluster(&inv);
    let mut f = with_snapshot(&inv, "master-1", Some(held_hash(&inv, &f0)));
    f.hosts.remove("master-3");
    f.unreachable
        .insert("master-3".into(), "connection timed out".into());
    let e = etcd::restore(&inv, &f, &src, "1", false).unwrap_err();
    assert!(
        e.to_string().contains("master-3: connection timed out"),
        "{e}"
    );
    // A snapshot on another server comes through this machine, uncompressed on the way.
    let mut f = with_snapshot(&inv, "master-2", Some(held_hash(&inv, &f0)));
    f.cluster.snapshots[0].name.push_str(".zip");
    f.cluster.snapshots[0].location.push_str(".zip");
    let src = etcd::Source::Named("on-demand-master-2-1764763200.zip".into());
    let plan = etcd::restore(&inv, &f, &src, "1", false).unwrap();
    let t = texts(&plan);
    assert_eq!(
        t[..2],
        [
            format!("fetch master-2: copy {}/on-demand-master-2-1764763200.zip from master-2 to /nonexistent/t/.bootstrap/snapshots", k3s::SNAPSHOT_DIR),
            format!("upload master-1: upload /nonexistent/t/.bootstrap/snapshots/on-demand-master-2-1764763200.zip to {}", etcd::restore_path("on-demand-master-2-1764763200.zip")),
        ]
    );
    let reset = format!("restore master-1: restore etcd from {} (k3s server --cluster-reset; this server becomes the only member)", etcd::restore_path("on-demand-master-2-1764763200.zip"));
    assert!(t.contains(&reset), "{t:#?}");
}

#[test]
fn a_copy_is_uploaded_first_and_a_snapshot_needs_the_api() {
    let inv = seed();
    let f = cluster(&inv);
    let record = crate::k3s::snapshot::Record {
        cluster: "t".into(),
        name: "on-demand-master-1-1.zip".into(),
        node: "master-1".into(),
        path: "/x".into(),
        created: "2026-12-03T12:00:00Z".into(),
        size: 1,
        sha256: "00".repeat(32),
        token_hash: held_hash(&inv, &f),
        server_token: "s".into(),
    };
    let src = etcd::Source::Copy {
        file: "/ops/.bootstrap/snapshots/on-demand-master-1-1.zip".into(),
        record,
    };
    let plan = etcd::restore(&inv, &f, &src, "1", false).unwrap();
    let t = texts(&plan);
    assert_eq!(
        t[0],
        format!(
            "upload master-1: upload /ops/.bootstrap/snapshots/on-demand-master-1-1.zip to {}",
            etcd::restore_path("on-demand-master-1-1.zip")
        )
    );
    // A record whose name is a path names nothing remote: the upload goes where it always
    // does (security review 3 M1).
    let mut evil = match &src {
        etcd::Source::Copy { record, .. } => record.clone(),
        _ => unreachable!(),
    };
    evil.name = "../../../../../../root/.ssh/authorized_keys".into();
    let plan = etcd::restore(
        &inv,
        &f,
        &etcd::Source::Copy {
            file: "/ops/.bootstrap/snapshots/on-demand-master-1-1.zip".into(),
            record: evil,
        },
        "1",
        false,
    )
    .unwrap();
    let up = &texts(&plan)[0];
    assert!(
        up.contains(&format!("to {}/snapshot-", etcd::RESTORE_DIR)) && !up.contains(".."),
        "{up}"
    );
    // One server: nobody rejoins but the agents.
    assert!(!plan.phases.iter().any(|p| p.name == "rejoin servers"));

    let p = etcd::snapshot(&inv, &f, Some("before-upgrade"), true, false).unwrap();
    let t = texts(&p);
    assert_eq!(
        t,
        [
            format!("snapshot master-1: take an etcd snapshot (before-upgrade-<node>-<time>) into {}", k3s::SNAPSHOT_DIR),
            "snapshot master-1: copy the snapshot from master-1 to /nonexistent/t/.bootstrap/snapshots".to_string(),
        ]
    );
    let mut down = f.clone();
    down.cluster.api = None;
    down.cluster.unanswered = vec!["master-1: etcdserver: request timed out".into()];
    let e = etcd::snapshot(&inv, &down, None, true, false).unwrap_err();
    assert!(e.to_string().contains("request timed out"), "{e}");
}

fn with_charts() -> Inventory {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(
        dir.join("db.yaml"),
        "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata:\n  name: pg\n  namespace: infra\nspec:\n  instances: 3\n",
    )
    .unwrap();
    std::fs::write(dir.join("c-values.yaml"), "replicas: {{ variables.n }}\n").unwrap();
    let chart = |name: &str, after: &str| {
        format!("[[charts]]\nname = \"{name}\"\nrepo = \"https://charts.example.com\"\nchart = \"{name}\"\nversion = \"1.0.0\"\nnamespace = \"ns-{name}\"\n{after}\n")
    };
    let text = format!(
        "[cluster]\nname = \"t\"\nk3s_version = \"v1.36.3+k3s1\"\n\n[variables]\nn = \"2\"\n\n{}{}{}values_file = \"c-values.yaml\"\n\n[[manifests]]\npath = \"db.yaml\"\nafter = [\"c\"]\n\n[[node]]\nname = \"m1\"\nhost = \"10.0.0.1\"\nrole = \"server\"\n\n[[node]]\nname = \"m2\"\nhost = \"10.0.0.2\"\nrole = \"server\"\n",
        chart("c", "after = [\"b\"]"),
        chart("a", ""),
        chart("b", "after = [\"a\"]"),
    );
    std::fs::write(dir.join("inventory.toml"), text).unwrap();
    Inventory::load(dir.join("inventory.toml")).unwrap()
}

#[test]
fn charts_are_written_in_after_order_each_once_its_dependency_is_healthy() {
    let inv = with_charts();
    let mut f = cluster(&inv);
    for s in ["m1", "m2"] {
        f.hosts
            .get_mut(s)
            .unwrap()
            .manifests
            .insert("bootstrap-chart-old.yaml".into(), "x".into());
    }
    f.cluster.objects = Some(crate::addons::health::Snapshot::default());
    let t = texts(&up(&inv, &f, &SETTINGS).unwrap());
    assert_eq!(
        t,
        [
            "add-ons m1: remove bootstrap-chart-old.yaml (uninstalls old, file removed)",
            "add-ons m1: record the extra manifests (db)",
            "add-ons m1: chart a: write bootstrap-chart-a.yaml",
            "add-ons m2: remove bootstrap-chart-old.yaml",
            "add-ons m2: record the extra manifests (db)",
            "add-ons m2: chart a: write bootstrap-chart-a.yaml",
            "add-on health add-ons: wait until a healthy",
            "add-on health m1: chart b: write bootstrap-chart-b.yaml",
            "add-on health m2: chart b: write bootstrap-chart-b.yaml",
            "add-on health add-ons: wait until b healthy",
            "add-on health m1: chart c: write bootstrap-chart-c.yaml",
            "add-on health m2: chart c: write bootstrap-chart-c.yaml",
            "add-on health add-ons: wait until c healthy",
            "add-on health m1: manifest db: write db.yaml",
            "add-on health m2: manifest db: write db.yaml",
            "add-on health add-ons: wait until c, a, b healthy and every manifest applied",
        ]
    );
    // The values file is rendered with [variables]; the chart's file names its release.
    let files = f.local.addons.files(None).unwrap();
    let c = files
        .iter()
        .find(|m| m.file == "bootstrap-chart-b.yaml")
        .unwrap();
    assert!(
        c.content.contains("  valuesContent: |-\n    replicas: 2\n"),
        "{}",
        c.content
    );
    assert!(
        c.content
            .contains("targetNamespace: \"ns-b\"\n  createNamespace: true"),
        "{}",
        c.content
    );
    assert!(
        c.content.contains("failurePolicy: reinstall"),
        "{}",
        c.content
    );
}

/// Review 3, L4: a `.bootstrap/` others may read is made private again on the next run, even
/// one that changes nothing else; a private one adds no step.
#[test]
fn an_open_state_dir_is_made_private_by_the_next_run() {
    let inv = ha();
    let mut f = cluster(&inv);
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert!(plan.phases.is_empty(), "{:?}", plan.phases);
    f.local.open_state_dir = Some(0o755);
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert_eq!(plan.phases.len(), 1);
    let step = &plan.phases[0].groups[0].steps[0];
    assert_eq!(
        step.action,
        Action::PrivateStateDir {
            path: inv.state_dir(),
            mode: 0o755
        }
    );
    assert!(
        step.action.to_string().contains("0755 to 0700"),
        "{}",
        step.action
    );
}

// ---------------------------------------------------------------- [registries], clocks

/// Three servers and an agent, with `extra` after `[cluster]`.
fn three_and_one(extra: &str) -> Inventory {
    inventory(
        extra,
        &[
            ("master-1", "server", ""),
            ("master-2", "server", ""),
            ("master-3", "server", ""),
            ("worker-1", "agent", ""),
        ],
    )
}

/// `f` with registries.yaml as `inv` renders it, bootstrap's.
fn with_registries(mut f: Facts, inv: &Inventory) -> Facts {
    let text = inv.registries.as_ref().unwrap().render();
    for h in f.hosts.values_mut() {
        h.registries_sha256 = Some(k3s::sha256_hex(text.as_bytes()));
        h.registries_mode = Some(0o600);
        h.registries_ours = true;
    }
    f
}

#[test]
fn a_registries_change_restarts_servers_one_at_a_time_then_agents() {
    let old = with_mirror("https://a.example.com");
    let facts = with_registries(cluster(&old), &old);
    assert!(up(&old, &facts, &SETTINGS).unwrap().phases.is_empty());

    let new = with_mirror("https://b.example.com");
    let plan = up(&new, &facts, &SETTINGS).unwrap();
    let servers = plan.phases.iter().find(|p| p.name == "servers").unwrap();
    assert_eq!(servers.mode, Mode::Serial);
    let hosts: Vec<&str> = servers.groups.iter().map(|g| g.host.as_str()).collect();
    assert_eq!(hosts, ["master-1", "master-2", "master-3"]);
    for g in &servers.groups {
        let t: Vec<String> = g.steps.iter().map(|s| s.action.to_string()).collect();
        assert_eq!(
            t,
            [
                "write /etc/rancher/k3s/registries.yaml (registries)".to_string(),
                "restart k3s (registries changed)".to_string(),
                format!("wait until {} is Ready", g.host),
            ],
            "{t:?}"
        );
        // The file holds credentials: never shown.
        match &g.steps[0].action {
            Action::WriteFile { file, .. } => {
                assert!(file.secret && file.mode == 0o600)
            }
            other => panic!("{other}"),
        }
    }
    let agents = plan.phases.iter().find(|p| p.name == "agents").unwrap();
    assert!(texts(&plan)
        .contains(&"agents worker-1: restart k3s-agent (registries changed)".to_string()));
    assert_eq!(agents.groups.len(), 1);

    // The table goes: bootstrap's file goes, the nodes restart.
    let plain = three_and_one("");
    let plan = up(&plain, &with_registries(cluster(&plain), &old), &SETTINGS).unwrap();
    let t = texts(&plan);
    assert!(
        t.contains(&"servers master-1: os: remove /etc/rancher/k3s/registries.yaml".to_string()),
        "{t:#?}"
    );
    assert!(
        t.contains(&"servers master-1: restart k3s (registries removed)".to_string()),
        "{t:#?}"
    );

    // A registries.yaml the operator wrote is not overwritten.
    let mut theirs = with_registries(cluster(&old), &old);
    theirs.hosts.get_mut("worker-1").unwrap().registries_ours = false;
    let err = up(&new, &theirs, &SETTINGS).unwrap_err().to_string();
    assert!(
        err.contains("worker-1: /etc/rancher/k3s/registries.yaml is not bootstrap's"),
        "{err}"
    );
}

fn with_mirror(endpoint: &str) -> Inventory {
    three_and_one(&format!(
        "[registries.mirrors.\"docker.io\"]\nendpoint = [\"{endpoint}\"]\n"
    ))
}

#[test]
fn a_host_whose_clock_is_off_is_not_joined_and_a_joined_one_is_warned_about() {
    let inv = seed();
    let mut facts = new_cluster(&inv);
    facts.clocks.insert("master-1".into(), 0.02);
    facts.clocks.insert("worker-2".into(), 612.5);
    let err = up(&inv, &facts, &SETTINGS).unwrap_err().to_string();
    assert!(
        err.contains("worker-2: its clock is 612.5 s ahead of this machine's (more than os.max_clock_offset = 30 s), so it is not joined"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");

    let mut facts = cluster(&inv);
    facts.clocks.insert("worker-2".into(), -45.0);
    let plan = up(&inv, &facts, &SETTINGS).unwrap();
    assert!(plan.phases.is_empty(), "{:#?}", texts(&plan));
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("worker-2: its clock is 45.0 s behind this machine's")),
        "{:?}",
        plan.warnings
    );
    assert_eq!(plan.clocks, vec![("worker-2".to_string(), -45000)]);
    let text = crate::plan::render::text(&plan, "run up");
    assert!(
        text.contains("clocks against this machine: worker-2 -45.0s"),
        "{text}"
    );
}

#[test]
fn a_new_host_off_in_time_waits_for_the_client_it_starts_and_this_machine_is_named_when_all_agree()
{
    let inv = inventory(
        "[os]\ntime_sync = true\n",
        &[("master-1", "server", ""), ("worker-1", "agent", "")],
    );
    let mut facts = new_cluster(&inv);
    for f in facts.hosts.values_mut() {
        f.os.cap_sys_time = Some(true);
        f.os.units.insert(
            "chrony.service".into(),
            crate::os::UnitState {
                load: "loaded".into(),
                active: "active".into(),
                enabled: "enabled".into(),
            },
        );
    }
    // worker-1 has chrony but stopped: started, then waited for, then joined.
    facts.hosts.get_mut("worker-1").unwrap().os.units.insert(
        "chrony.service".into(),
        crate::os::UnitState {
            load: "loaded".into(),
            active: "inactive".into(),
            enabled: "disabled".into(),
        },
    );
    facts.clocks.insert("master-1".into(), 0.1);
    facts.clocks.insert("worker-1".into(), -300.0);
    let plan = up(&inv, &facts, &SETTINGS).unwrap();
    let t = texts(&plan);
    let enable = t
        .iter()
        .position(|l| l == "os worker-1: os: enable and start chrony.service")
        .unwrap_or_else(|| panic!("{t:#?}"));
    assert_eq!(
        t[enable + 1],
        "os worker-1: os: wait until its clock is within 30 s of this machine's"
    );

    // Its client already runs and the clock is still off: not joined, and said why.
    facts.hosts.get_mut("worker-1").unwrap().os.units.insert(
        "chrony.service".into(),
        crate::os::UnitState {
            load: "loaded".into(),
            active: "active".into(),
            enabled: "enabled".into(),
        },
    );
    let err = up(&inv, &facts, &SETTINGS).unwrap_err().to_string();
    assert!(err.contains("check that it reaches an NTP server"), "{err}");

    // Every host 5 minutes behind, and agreeing: this machine is the suspect.
    facts.clocks.insert("master-1".into(), -301.0);
    let err = up(&inv, &facts, &SETTINGS).unwrap_err().to_string();
    assert!(
        err.contains("this machine's clock is the likelier one to be wrong"),
        "{err}"
    );
}

/// Issue 28: a snapshot only in the bucket is downloaded here and restored as a copy, its
/// token hash (the object's `k3s-token-hash`) checked before anything stops; one a server
/// also holds is restored from the server.
#[test]
fn a_snapshot_in_the_bucket_is_downloaded_checked_and_restored_as_a_copy() {
    let inv = inventory(
        "\n[etcd.s3]\nbucket = \"snaps\"\nendpoint = \"10.0.0.1:9443\"\nfolder = \"t\"",
        &[("master-1", "server", ""), ("worker-1", "agent", "")],
    );
    let f = cluster(&inv);
    let object = crate::s3::Object {
        key: "t/on-demand-master-1-1764763200.zip".into(),
        name: "on-demand-master-1-1764763200.zip".into(),
        size: 4096,
        last_modified: "2026-12-03T12:00:01Z".into(),
    };
    let src = |hash: Option<String>| etcd::Source::Bucket {
        object: Box::new(object.clone()),
        token_hash: hash,
        node: Some("master-1".into()),
    };
    let plan = etcd::restore(&inv, &f, &src(Some(held_hash(&inv, &f))), "1", false).unwrap();
    let t = texts(&plan);
    assert_eq!(
        t[..2],
        [
            "download local: download on-demand-master-1-1764763200.zip (4096 bytes) from s3://snaps/t/on-demand-master-1-1764763200.zip to /nonexistent/t/.bootstrap/snapshots".to_string(),
            format!("upload master-1: upload /nonexistent/t/.bootstrap/snapshots/on-demand-master-1-1764763200.zip to {}", etcd::restore_path("on-demand-master-1-1764763200.zip")),
        ]
    );
    assert!(
        t.iter().any(|s| s.starts_with("stop servers master-1")),
        "{t:#?}"
    );
    // Another token: refused, nothing stops.
    let e = etcd::restore(&inv, &f, &src(Some("0123456789ab".into())), "1", false).unwrap_err();
    assert!(crate::outcome::is_usage(&e), "{e}");
    assert!(e.to_string().contains("Nothing was stopped"), "{e}");
    // No k3s-token-hash on the object: cannot be checked, refused.
    let e = etcd::restore(&inv, &f, &src(None), "1", false).unwrap_err();
    assert!(e.to_string().contains("no k3s-token-hash"), "{e}");
    // The same name on a server: restored from there, nothing downloaded.
    let mut f2 = with_snapshot(&inv, "master-1", Some(held_hash(&inv, &f)));
    f2.cluster.snapshots[0].name = object.name.clone();
    f2.cluster.snapshots[0].location = format!("file://{}/{}", k3s::SNAPSHOT_DIR, object.name);
    let plan = etcd::restore(&inv, &f2, &src(Some(held_hash(&inv, &f))), "1", false).unwrap();
    assert!(
        !texts(&plan).iter().any(|s| s.contains("download")),
        "{:#?}",
        texts(&plan)
    );
    // Uncompressed: k3s downloads it itself, by its name in the folder.
    let plain = etcd::Source::Bucket {
        object: Box::new(crate::s3::Object {
            key: "t/on-demand-master-1-1764763200".into(),
            name: "on-demand-master-1-1764763200".into(),
            ..object.clone()
        }),
        token_hash: Some(held_hash(&inv, &f)),
        node: None,
    };
    let plan = etcd::restore(&inv, &f, &plain, "1", false).unwrap();
    let t = texts(&plan);
    assert!(!t.iter().any(|s| s.contains("download local")), "{t:#?}");
    assert!(
        t.contains(&"restore master-1: restore etcd from on-demand-master-1-1764763200, which k3s downloads from S3 (k3s server --cluster-reset; this server becomes the only member)".to_string()),
        "{t:#?}"
    );
    assert!(plan
        .steps()
        .any(|(_, _, s)| matches!(&s.action, Action::ClusterReset { no_s3: false, .. })));
}

/// Issue 28 (6): with `secrets_recipients`, `.bootstrap/` goes to the bucket when it changed
/// since the last upload (or this run writes into it), and a converged run puts nothing.
#[test]
fn the_secrets_go_off_site_only_when_they_changed() {
    let inv = inventory(
        "\n[etcd.s3]\nbucket = \"snaps\"\nendpoint = \"10.0.0.1:9443\"\nsecrets_recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]",
        &[("master-1", "server", "")],
    );
    let mut f = cluster(&inv);
    f.local.secrets_offsite = Some((Some("d1".into()), Some("d1".into())));
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert!(
        !texts(&plan).iter().any(|t| t.contains("age recipient")),
        "{:#?}",
        texts(&plan)
    );
    f.local.secrets_offsite = Some((Some("d2".into()), Some("d1".into())));
    let plan = up(&inv, &f, &SETTINGS).unwrap();
    assert!(
        texts(&plan).contains(&"backups local: put /nonexistent/t/.bootstrap encrypted to 1 age recipient(s) at s3://snaps/.metadata/bootstrap-secrets.age".to_string()),
        "{:#?}",
        texts(&plan)
    );
}
