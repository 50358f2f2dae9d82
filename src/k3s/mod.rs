//! k3s itself: where it lives on a host, the files that configure it, its tokens.
//!
//! Paths and formats follow what k3s's install.sh produces (reference/k3s-facts.md §2–§4),
//! so a host installed by `bootstrap` looks like one installed by install.sh.

pub mod artifacts;
pub mod config;
pub mod flags;
pub mod snapshot;
pub mod token;
pub mod unit;

pub const BIN_PATH: &str = "/usr/local/bin/k3s";
/// Links install.sh creates next to the binary (relative, to `k3s`).
pub const LINKS: [&str; 3] = ["kubectl", "crictl", "ctr"];
pub const CONFIG_DIR: &str = "/etc/rancher/k3s";
pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
pub const CONFIG_DROPIN_DIR: &str = "/etc/rancher/k3s/config.yaml.d";
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
pub const DATA_DIR: &str = "/var/lib/rancher/k3s";
pub const SERVER_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";
pub const AGENT_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/agent-token";
pub const ETCD_DB_DIR: &str = "/var/lib/rancher/k3s/server/db";
/// A server's copy of the cluster's CAs and service key (k3s's bootstrap data, written from
/// the datastore: pkg/daemons/control/deps/deps.go:101-175).
pub const SERVER_TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls";
/// The CA that signs the admin certificate of k3s.yaml.
pub const CLIENT_CA_PATH: &str = "/var/lib/rancher/k3s/server/tls/client-ca.crt";
/// A server's `passwd` and `ipsec.psk` (bootstrap data too).
pub const SERVER_CRED_DIR: &str = "/var/lib/rancher/k3s/server/cred";
/// Where k3s keeps etcd snapshots by default (k3s pkg/etcd/snapshot.go:72-102,
/// `<data-dir>/server/db/snapshots`, created 0700).
pub const SNAPSHOT_DIR: &str = "/var/lib/rancher/k3s/server/db/snapshots";
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
pub const NODE_PASSWORD_PATH: &str = "/etc/rancher/node/password";
pub const SUPERVISOR_PORT: u16 = 6443;

/// The sha256 of `bytes`, hex: how a file on a host is compared with what it should hold.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The supervisor URL (`https://host:6443`, IPv6 bracketed) agents and joining servers use.
pub fn server_url(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{SUPERVISOR_PORT}")
    } else {
        format!("https://{host}:{SUPERVISOR_PORT}")
    }
}

/// What a node runs: a server (control plane + etcd) or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    /// The k3s subcommand.
    pub fn command(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }

    /// The systemd service install.sh names for this role.
    pub fn service(self) -> &'static str {
        match self {
            Role::Server => "k3s",
            Role::Agent => "k3s-agent",
        }
    }

    pub fn unit_path(self) -> String {
        format!("/etc/systemd/system/{}.service", self.service())
    }

    pub fn env_path(self) -> String {
        format!("/etc/systemd/system/{}.service.env", self.service())
    }

    /// The uninstall script install.sh writes for this role.
    pub fn uninstall_script(self) -> String {
        format!("/usr/local/bin/{}-uninstall.sh", self.service())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.command())
    }
}
