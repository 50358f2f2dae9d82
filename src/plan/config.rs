//! Each node's `/etc/rancher/k3s/config.yaml`, from the inventory: the cluster's settings for
//! its role, its own labels, taints and keys, and the tokens. Labels and taints go in too, so
//! a new node registers with them; the labels phase keeps them right afterwards.

use std::collections::BTreeMap;

use crate::inventory::{
    Datastore, EtcdKey, FlannelBackend, Inventory, Node, DEFAULT_CLUSTER_CIDR,
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_SERVICE_CIDR,
};
use crate::k3s::config::{K3sConfig, Value};
use crate::k3s::token::{self, TokenBackup};
use crate::k3s::Role;

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

/// The extra keys every server gets: `[cluster] server_config` plus the network settings
/// that differ from k3s's defaults.
fn server_keys(inv: &Inventory) -> BTreeMap<String, Value> {
    let c = &inv.cluster;
    let mut keys = config_map(&c.server_config);
    let defaults = [
        (
            "cluster-cidr",
            c.cluster_cidr.as_str(),
            DEFAULT_CLUSTER_CIDR,
        ),
        (
            "service-cidr",
            c.service_cidr.as_str(),
            DEFAULT_SERVICE_CIDR,
        ),
        (
            "cluster-domain",
            c.cluster_domain.as_str(),
            DEFAULT_CLUSTER_DOMAIN,
        ),
    ];
    for (key, value, default) in defaults {
        if value != default {
            keys.insert(key.into(), Value::Str(value.into()));
        }
    }
    if let Some(dns) = &c.cluster_dns {
        keys.insert("cluster-dns".into(), Value::Str(dns.clone()));
    }
    if inv.registries.as_ref().is_some_and(|g| g.embedded_registry) {
        keys.insert("embedded-registry".into(), Value::Bool(true));
    }
    for (k, v) in inv.etcd.iter().flat_map(|e| e.server_keys()) {
        let v = match v {
            EtcdKey::Str(s) => Value::Str(s),
            EtcdKey::Bool => Value::Bool(true),
        };
        keys.insert(k.into(), v);
    }
    keys
}

/// Whether the cluster runs embedded etcd (`cluster-init` on the first server).
pub fn etcd(inv: &Inventory) -> bool {
    inv.cluster.datastore == Datastore::Etcd
}

/// config.yaml for `node`; an agent joins through `agent_server`, with its token pinned to
/// the cluster CA `ca_hash` when that is known.
pub fn node_config(
    inv: &Inventory,
    node: &Node,
    tokens: &TokenBackup,
    agent_server: &str,
    ca_hash: Option<&str>,
) -> K3sConfig {
    let mut c = K3sConfig::new(node.role);
    c.set_str("node-name", &node.name);
    c.set_list("node-label", node.node_label_args());
    c.set_list(
        "node-taint",
        node.taints.iter().map(ToString::to_string).collect(),
    );
    match node.role {
        Role::Server => {
            c.set_str("token", &tokens.server);
            c.set_str("agent-token", &tokens.agent);
            c.set_str("write-kubeconfig-mode", "0600");
            c.set_list("tls-san", inv.tls_sans(node));
            if inv.cluster.flannel_backend != FlannelBackend::Vxlan {
                c.set_str("flannel-backend", inv.cluster.flannel_backend.as_str());
            }
            c.set_list("disable", inv.disabled_components());
            for (k, v) in server_keys(inv) {
                c.set(&k, v);
            }
        }
        Role::Agent => {
            c.set_str("token", token::join_token(&tokens.agent, "node", ca_hash));
            c.set_str("server", agent_server);
            for (k, v) in config_map(&inv.cluster.agent_config) {
                c.set(&k, v);
            }
        }
    }
    for (k, v) in config_map(&node.config) {
        c.set(&k, v);
    }
    c
}
