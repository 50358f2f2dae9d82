//! Connect: how every node of the inventory is reached (its SSH settings over
//! `~/.ssh/config`), and the sessions a run holds once connected.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::inventory::{Inventory, Node};
use crate::k3s::Role;
use crate::outcome::usage;
use crate::ssh::{HostKeyPolicy, Session, SshConfig, SshTarget, TargetSpec};

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

/// Every node of `inv`, required. Mistakes on this machine (an unreadable ~/.ssh/config, a
/// key file or known_hosts file that is not there) are refused here, all at once and before
/// any connection, as bad input (exit 2).
pub fn hosts(inv: &Inventory) -> Result<Vec<Host>> {
    let ssh_config = ssh_config()?;
    let hosts = inv
        .nodes
        .iter()
        .map(|n| host(inv, &ssh_config, n, &n.name, &n.host))
        .collect::<Result<Vec<Host>>>()?;
    check_local(hosts.iter().map(|h| &h.target))?;
    Ok(hosts)
}

/// Node `name` of `inv` at `address` (its old host), not required.
pub fn old_host(inv: &Inventory, node: &Node, address: &str) -> Result<Host> {
    let ssh_config = ssh_config()?;
    let mut h = host(inv, &ssh_config, node, &retired(&node.name), address)?;
    h.required = false;
    check_local(std::iter::once(&h.target))?;
    Ok(h)
}

fn ssh_config() -> Result<SshConfig> {
    SshConfig::load_default().map_err(|e| usage(format!("reading ~/.ssh/config: {e}")))
}

/// What on this machine keeps `targets` (and their bastions) from being reached: key files
/// and known_hosts files that are missing or unreadable. One line per file, every target.
fn check_local<'a>(targets: impl Iterator<Item = &'a SshTarget>) -> Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let mut note = |p: String| {
        if !problems.contains(&p) {
            problems.push(p);
        }
    };
    let mut warned: Vec<String> = Vec::new();
    let mut warn = |w: String| {
        if !warned.contains(&w) {
            tracing::warn!("{w}");
            warned.push(w);
        }
    };
    for t in targets {
        let mut t = Some(t);
        while let Some(cur) = t {
            if let Some(key) = &cur.identity_file {
                if let Err(e) = std::fs::File::open(key) {
                    note(format!(
                        "the SSH key {} (identity_file, for {}) cannot be read: {e}",
                        key.display(),
                        cur.name
                    ));
                }
            }
            if cur.known_hosts == Path::new(crate::ssh::config::DEV_NULL) {
                warn(format!(
                    "known_hosts is {} (from ~/.ssh/config's UserKnownHostsFile, or the inventory's known_hosts), so {}; set [ssh] known_hosts to a real file",
                    crate::ssh::config::DEV_NULL,
                    match cur.policy {
                        HostKeyPolicy::Strict => "no host key can be verified and every connection is refused",
                        HostKeyPolicy::AcceptNew => "every host key is accepted as new on every run: the host's identity is never checked",
                    }
                ));
            }
            let elsewhere = cur.also_known_hosts.iter().any(|f| f.exists());
            match std::fs::metadata(&cur.known_hosts) {
                Ok(_) => {
                    if let Err(e) = std::fs::File::open(&cur.known_hosts) {
                        note(format!(
                            "the known_hosts file {} cannot be read: {e}",
                            cur.known_hosts.display()
                        ));
                    }
                }
                Err(_) if cur.policy == HostKeyPolicy::Strict && !elsewhere => note(format!(
                    "the known_hosts file {} does not exist, and with host_key_policy = \"strict\" no host key can be checked: record the hosts' keys first (ssh-keyscan -H HOST >> {}, after checking the fingerprints), or set host_key_policy = \"accept-new\"",
                    cur.known_hosts.display(),
                    cur.known_hosts.display()
                )),
                Err(_) => {}
            }
            t = cur.bastion.as_deref();
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(usage(format!(
            "nothing was contacted:\n  {}",
            problems.join("\n  ")
        )))
    }
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
    /// For a command that changes nothing (`plan`, `status`): a new host key that `accept-new`
    /// would record is trusted for this run only, and known_hosts is left as it is.
    pub fn read_only(&mut self) {
        let mut t = Some(&mut self.target);
        while let Some(cur) = t {
            cur.record_new = false;
            t = cur.bastion.as_deref_mut();
        }
    }

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

    /// Every session, with its host key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Session)> {
        self.map.iter()
    }

    /// Round trips per host, for the summary and the benchmark.
    pub fn round_trips(&self) -> BTreeMap<String, u64> {
        self.map
            .iter()
            .map(|(k, s)| (k.clone(), s.stats().round_trips()))
            .collect()
    }
}
