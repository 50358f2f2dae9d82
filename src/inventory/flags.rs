//! Checks of config.yaml keys in the inventory against the flags k3s accepts per
//! role (the lists live in [`crate::k3s::flags`]), and the keys the tool writes itself.

use crate::k3s::flags::{AGENT_FLAGS, SERVER_FLAGS};
use crate::k3s::Role;

/// How a key relates to a role's flag list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The key is a flag name.
    Flag,
    /// The key is an alias of this flag.
    Alias(&'static str),
    Unknown,
}

fn table(role: Role) -> &'static str {
    match role {
        Role::Server => SERVER_FLAGS,
        Role::Agent => AGENT_FLAGS,
    }
}

pub(crate) fn lookup(role: Role, key: &str) -> Lookup {
    for line in table(role).lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        if name == key {
            return Lookup::Flag;
        }
        if words.any(|alias| alias == key) {
            return Lookup::Alias(name);
        }
    }
    Lookup::Unknown
}

/// Every flag name of a role (no aliases), for "did you mean" hints.
pub(crate) fn names(role: Role) -> impl Iterator<Item = &'static str> {
    table(role)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
}

/// Keys the tool renders itself, with the inventory setting to use instead.
pub(crate) fn managed(key: &str) -> Option<&'static str> {
    Some(match key {
        "token" | "token-file" | "agent-token" | "agent-token-file" => {
            "bootstrap generates the cluster's tokens and writes them to 0600 files"
        }
        "server" => "bootstrap points joining nodes at api_endpoint or the first server",
        "cluster-init" => "bootstrap sets it on the first server only, and only for a new cluster",
        "cluster-reset" | "cluster-reset-restore-path" => {
            "it is a one-off recovery operation, not configuration"
        }
        "node-name" | "with-node-id" => "the node's `name` in the inventory is its node name",
        "node-label" => "use the node's `labels` table",
        "node-taint" => "use the node's `taints` list",
        "config" => "bootstrap writes /etc/rancher/k3s/config.yaml itself",
        "data-dir" => "bootstrap relies on the default data dir /var/lib/rancher/k3s",
        "write-kubeconfig" | "write-kubeconfig-name" => {
            "bootstrap reads the admin kubeconfig from its default path"
        }
        "tls-san" => "use [cluster] tls_san",
        // k3s serves the supervisor and the apiserver on https-listen-port
        // (pkg/cli/cmds/server.go:200-211, default 6443); every URL bootstrap builds (joins, agents,
        // the kubeconfig, api_endpoint) uses 6443.
        "https-listen-port" | "supervisor-port" | "apiserver-port" => {
            "bootstrap reaches servers on port 6443 (joins, agents, the kubeconfig); another port is not supported"
        }
        "flannel-backend" => "use [cluster] flannel_backend",
        "disable" => "use [cluster] disable",
        "cluster-cidr" => "use [cluster] cluster_cidr",
        "service-cidr" => "use [cluster] service_cidr",
        "cluster-dns" => "use [cluster] cluster_dns",
        "cluster-domain" => "use [cluster] cluster_domain",
        "datastore-endpoint" | "datastore-cafile" | "datastore-certfile" | "datastore-keyfile" => {
            "use [cluster] datastore; external datastores are not supported"
        }
        _ => return None,
    })
}

/// Server settings that must be identical on every server (`CriticalControlArgs`,
/// reference/k3s-facts.md §6.1); a per-node value would make joins fail.
pub(crate) fn critical(key: &str) -> bool {
    matches!(
        key,
        "cluster-dns"
            | "cluster-cidr"
            | "cluster-domain"
            | "service-cidr"
            | "disable-cloud-controller"
            | "disable-helm-controller"
            | "disable-network-policy"
            | "disable-kube-proxy"
            | "disable"
            | "secrets-encryption"
            | "secrets-encryption-provider"
            | "embedded-registry"
            | "supervisor-metrics"
            | "flannel-backend"
            | "flannel-ipv6-masq"
            | "flannel-external-ip"
            | "egress-selector-mode"
            | "agent-token"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_embedded() {
        assert_eq!(names(Role::Server).count(), 126);
        assert_eq!(names(Role::Agent).count(), 46);
        assert_eq!(lookup(Role::Server, "tls-san"), Lookup::Flag);
        assert_eq!(lookup(Role::Agent, "tls-san"), Lookup::Unknown);
        assert_eq!(lookup(Role::Agent, "node-ip"), Lookup::Flag);
        assert_eq!(lookup(Role::Agent, "i"), Lookup::Alias("node-ip"));
        assert_eq!(lookup(Role::Server, "d"), Lookup::Alias("data-dir"));
        assert!(managed("token").is_some());
        assert!(managed("kubelet-arg").is_none());
    }
}
