//! The pure parts of a lab: its shape, node names and addresses, and the inventory text.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

pub const DEFAULT_K3S_VERSION: &str = "v1.36.3+k3s1";

/// The port the lab's HTTP mirror listens on, on the lab's host address.
pub const MIRROR_PORT: u16 = 8080;

/// Host addresses start at .11 so .1-.10 stay free for the host side of the lab.
const FIRST_NODE_HOST: usize = 11;
pub const MAX_NODES: usize = 240;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    pub name: String,
    pub nodes: usize,
    pub servers: usize,
    pub spares: usize,
    pub k3s_versions: Vec<String>,
    /// Give every node a DNS name (`<node>.<lab>.lab.test`), resolvable on this machine and in
    /// the nodes; the inventory then names hosts by it.
    pub dns: bool,
    /// Nodes behind a NAT'd address (like a cloud floating IP): the operator and the other
    /// nodes reach them at `10.214.<lab>.<host>`, which is not on the node's interface.
    pub nat: Vec<String>,
}

impl LabSpec {
    pub fn new(name: &str, nodes: usize) -> Self {
        LabSpec {
            name: name.to_string(),
            nodes,
            servers: 1,
            spares: 0,
            k3s_versions: vec![DEFAULT_K3S_VERSION.to_string()],
            dns: false,
            nat: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.nodes == 0 {
            bail!("a lab needs at least one node");
        }
        if self.servers == 0 || self.servers > self.nodes {
            bail!(
                "servers must be between 1 and the node count ({}), got {}",
                self.nodes,
                self.servers
            );
        }
        if self.nodes + self.spares > MAX_NODES {
            bail!("at most {MAX_NODES} nodes (including spares) fit in a lab subnet");
        }
        if self.k3s_versions.is_empty() {
            bail!("at least one k3s version is needed");
        }
        for v in &self.k3s_versions {
            if v.is_empty() || v.contains('/') || v.starts_with('.') {
                bail!("invalid k3s version {v:?}");
            }
        }
        let names: Vec<String> = plan_nodes(self, 1).into_iter().map(|n| n.name).collect();
        for n in &self.nat {
            if !names.contains(n) {
                bail!(
                    "--nat {n:?}: the lab has no such node (it has {})",
                    names.join(", ")
                );
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    Server,
    Agent,
    Spare,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNode {
    pub name: String,
    /// The address on the node's interface.
    pub addr: Ipv4Addr,
    pub kind: NodeKind,
    /// The NAT'd address others reach it at, when behind NAT.
    pub public: Option<Ipv4Addr>,
    /// Its DNS name, when the lab gives names.
    pub dns: Option<String>,
}

impl LabNode {
    /// The address the operator and the other nodes use: the name, else the NAT'd address,
    /// else the interface address.
    pub fn host(&self) -> String {
        self.dns
            .clone()
            .or_else(|| self.public.map(|p| p.to_string()))
            .unwrap_or_else(|| self.addr.to_string())
    }

    /// The IP address others reach it at.
    pub fn reachable(&self) -> Ipv4Addr {
        self.public.unwrap_or(self.addr)
    }
}

/// Lab names end up in netns names, interface-free paths and machine names: keep them short
/// and boring.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() || name.len() > 20 || !ok_chars {
        bail!("invalid lab name {name:?}: use 1-20 characters of [a-z0-9-]");
    }
    if name.starts_with('-') || name.ends_with('-') {
        bail!("invalid lab name {name:?}: must not start or end with '-'");
    }
    Ok(())
}

pub fn subnet_host(index: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, index, host)
}

/// The NAT'd ("public") range of a lab: host `h` of lab `i` is 10.214.i.h.
pub fn public_host(index: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 214, index, host)
}

/// The router inside the lab's bridge namespace that NATs the public range.
pub fn router_addr(index: u8) -> Ipv4Addr {
    subnet_host(index, 2)
}

pub fn dns_name(lab: &str, node: &str) -> String {
    format!("{node}.{lab}.lab.test")
}

/// Servers first (`master-N`), then agents (`worker-N`), then spares (`spare-N`), with
/// addresses .11, .12, ... in that order.
pub fn plan_nodes(spec: &LabSpec, index: u8) -> Vec<LabNode> {
    let mut out = Vec::new();
    let agents = spec.nodes - spec.servers;
    let groups = [
        ("master", spec.servers, NodeKind::Server),
        ("worker", agents, NodeKind::Agent),
        ("spare", spec.spares, NodeKind::Spare),
    ];
    for (prefix, count, kind) in groups {
        for n in 1..=count {
            let host = (FIRST_NODE_HOST + out.len()) as u8;
            let name = format!("{prefix}-{n}");
            out.push(LabNode {
                public: spec.nat.contains(&name).then(|| public_host(index, host)),
                dns: spec.dns.then(|| dns_name(&spec.name, &name)),
                name,
                addr: subnet_host(index, host),
                kind,
            });
        }
    }
    out
}

fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub struct InventoryInput<'a> {
    pub lab_name: &'a str,
    pub k3s_version: &'a str,
    pub mirror_url: &'a str,
    pub identity_file: &'a Path,
    pub known_hosts: &'a Path,
    pub nodes: &'a [LabNode],
}

pub fn render_inventory(i: &InventoryInput) -> String {
    let mut s = String::new();
    s.push_str("# Written by `cargo xtask lab up`; rewritten on every `up`.\n");
    s.push_str(&format!(
        "[cluster]\nname = {}\nk3s_version = {}\n\n",
        toml_str(&format!("lab-{}", i.lab_name)),
        toml_str(i.k3s_version)
    ));
    s.push_str(&format!(
        "[install]\nsource = \"download\"\nmirror = {}\nallow_http = true  # the lab's mirror, on its private bridge\n\n",
        toml_str(i.mirror_url)
    ));
    s.push_str(&format!(
        "[ssh]\nuser = \"root\"\nidentity_file = {}\nknown_hosts = {}\nhost_key_policy = \"strict\"\n",
        toml_str(&i.identity_file.to_string_lossy()),
        toml_str(&i.known_hosts.to_string_lossy())
    ));
    for n in i.nodes {
        let role = match n.kind {
            NodeKind::Server => "server",
            NodeKind::Agent => "agent",
            NodeKind::Spare => continue,
        };
        s.push_str(&format!(
            "\n[[node]]\nname = {}\nhost = {}\nrole = \"{role}\"\n",
            toml_str(&n.name),
            toml_str(&n.host())
        ));
    }
    let spares: Vec<_> = i
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Spare)
        .collect();
    if !spares.is_empty() {
        s.push_str("\n# Spare nodes: booted and in known_hosts, not part of the cluster.\n");
        for n in spares {
            s.push_str(&format!("# spare {} = {}\n", n.name, n.host()));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["default", "a", "t-3", "lab-42x"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "Default",
            "a_b",
            "a/b",
            "-a",
            "a-",
            "a.b",
            &"x".repeat(21),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn three_nodes_match_the_seed() {
        let nodes = plan_nodes(&LabSpec::new("x", 3), 7);
        let got: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.addr.to_string(), n.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("master-1", "10.213.7.11".to_string(), NodeKind::Server),
                ("worker-1", "10.213.7.12".to_string(), NodeKind::Agent),
                ("worker-2", "10.213.7.13".to_string(), NodeKind::Agent),
            ]
        );
    }

    #[test]
    fn servers_and_spares_are_named_in_order() {
        let spec = LabSpec {
            servers: 3,
            spares: 2,
            ..LabSpec::new("x", 4)
        };
        let names: Vec<_> = plan_nodes(&spec, 1).into_iter().map(|n| n.name).collect();
        assert_eq!(
            names,
            ["master-1", "master-2", "master-3", "worker-1", "spare-1", "spare-2"]
        );
    }

    #[test]
    fn spec_validation() {
        assert!(LabSpec::new("ok", 3).validate().is_ok());
        assert!(LabSpec::new("ok", 0).validate().is_err());
        let too_many_servers = LabSpec {
            servers: 4,
            ..LabSpec::new("ok", 3)
        };
        assert!(too_many_servers.validate().is_err());
        assert!(LabSpec::new("ok", 241).validate().is_err());
    }

    #[test]
    fn inventory_lists_cluster_nodes_and_mentions_spares() {
        let spec = LabSpec {
            spares: 1,
            ..LabSpec::new("demo", 2)
        };
        let nodes = plan_nodes(&spec, 5);
        let text = render_inventory(&InventoryInput {
            lab_name: "demo",
            k3s_version: DEFAULT_K3S_VERSION,
            mirror_url: "http://10.213.5.1:8080",
            identity_file: Path::new("/var/lib/bootstrap-lab/demo/id_ed25519"),
            known_hosts: Path::new("/var/lib/bootstrap-lab/demo/known_hosts"),
            nodes: &nodes,
        });
        let expected = r#"# Written by `cargo xtask lab up`; rewritten on every `up`.
[cluster]
name = "lab-demo"
k3s_version = "v1.36.3+k3s1"

[install]
source = "download"
mirror = "http://10.213.5.1:8080"
allow_http = true  # the lab's mirror, on its private bridge

[ssh]
user = "root"
identity_file = "/var/lib/bootstrap-lab/demo/id_ed25519"
known_hosts = "/var/lib/bootstrap-lab/demo/known_hosts"
host_key_policy = "strict"

[[node]]
name = "master-1"
host = "10.213.5.11"
role = "server"

[[node]]
name = "worker-1"
host = "10.213.5.12"
role = "agent"

# Spare nodes: booted and in known_hosts, not part of the cluster.
# spare spare-1 = 10.213.5.13
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn names_and_nat_change_the_hosts_the_inventory_uses() {
        let spec = LabSpec {
            dns: true,
            nat: vec!["worker-1".into()],
            ..LabSpec::new("net", 2)
        };
        spec.validate().unwrap();
        let nodes = plan_nodes(&spec, 4);
        assert_eq!(nodes[0].host(), "master-1.net.lab.test");
        assert_eq!(nodes[1].public, Some(public_host(4, 12)));
        assert_eq!(nodes[1].reachable().to_string(), "10.214.4.12");
        let nat_only = LabSpec {
            nat: vec!["master-1".into()],
            ..LabSpec::new("n", 1)
        };
        assert_eq!(plan_nodes(&nat_only, 4)[0].host(), "10.214.4.11");
        let bad = LabSpec {
            nat: vec!["worker-9".into()],
            ..LabSpec::new("n", 1)
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
