//! Connect: how every node of the inventory is reached (its SSH settings over
//! `~/.ssh/config`), and the sessions a run holds once connected.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::inventory::{Inventory, Node};
use crate::k3s::Role;
use crate::ssh::{Session, SshConfig, SshTarget, TargetSpec};

/// One host to connect to.
#[derive(Debug, Clone)]
pub struct Host {
    /// The key facts and sessions are filed under: the node name, or [`retired`]'s form for a
    /// node's old host.
    pub key: String,
    pub role: Role,
    pub target: SshTarget,
    /// A host that must answer: without it nothing is changed. Others (a host being replaced
    /// or removed, which may be dead) are tried once or twice, quickly.
    pub required: bool,
}

/// The key of node `name`'s old host in a replace or remove.
pub fn retired(name: &str) -> String {
    format!("{name} (old host)")
}

/// Every node of `inv`, required.
pub fn hosts(inv: &Inventory) -> Result<Vec<Host>> {
    let ssh_config = SshConfig::load_default().context("reading ~/.ssh/config")?;
    inv.nodes
        .iter()
        .map(|n| host(inv, &ssh_config, n, &n.name, &n.host))
        .collect()
}

/// Node `name` of `inv` at `address` (its old host), not required.
pub fn old_host(inv: &Inventory, node: &Node, address: &str) -> Result<Host> {
    let ssh_config = SshConfig::load_default().context("reading ~/.ssh/config")?;
    let mut h = host(inv, &ssh_config, node, &retired(&node.name), address)?;
    h.required = false;
    Ok(h)
}

fn host(inv: &Inventory, cfg: &SshConfig, n: &Node, key: &str, address: &str) -> Result<Host> {
    // Only what the inventory says explicitly: ~/.ssh/config fills the rest.
    let t = inv.ssh_overrides(n);
    let spec = TargetSpec {
        name: Some(n.name.clone()),
        host: address.to_string(),
        port: t.port,
        user: t.user.clone(),
        identity_file: t.identity_file.clone(),
        known_hosts: t.known_hosts.clone(),
        policy: t.host_key_policy,
        bastion: t.bastion.as_ref().map(|b| {
            let user = b.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
            format!("{user}{}:{}", b.host, b.port)
        }),
        connect_timeout: Some(t.connect_timeout),
        command_timeout: Some(t.command_timeout),
        retry: None,
    };
    let target = cfg
        .resolve(&spec)
        .with_context(|| format!("{}: resolving its SSH settings", n.name))?;
    Ok(Host {
        key: key.to_string(),
        role: n.role,
        target,
        required: true,
    })
}

impl Host {
    /// The target to dial: as configured, or once or twice quickly for a host that may be dead.
    pub fn dial(&self) -> SshTarget {
        if self.required {
            self.target.clone()
        } else {
            self.dial_quick()
        }
    }

    /// The target dialled once or twice quickly, whether the host is required or not.
    pub fn dial_quick(&self) -> SshTarget {
        let mut t = self.target.clone();
        t.retry.attempts = 2;
        t.connect_timeout = t.connect_timeout.min(Duration::from_secs(5));
        t
    }
}

/// The sessions of a run, by host key.
#[derive(Default, Clone)]
pub struct Sessions {
    map: BTreeMap<String, Session>,
}

impl Sessions {
    pub fn insert(&mut self, key: String, s: Session) {
        self.map.insert(key, s);
    }

    pub fn get(&self, key: &str) -> Option<&Session> {
        self.map.get(key)
    }

    /// Round trips per host, for the summary and the benchmark.
    pub fn round_trips(&self) -> BTreeMap<String, u64> {
        self.map
            .iter()
            .map(|(k, s)| (k.clone(), s.stats().round_trips()))
            .collect()
    }
}
