//! The inventory: which hosts make the cluster, how to reach them, what k3s and which add-ons
//! they run. Loaded from TOML and validated whole before any host is touched.
//!
//! [`Inventory::load`] parses the file into a span-carrying raw form (`raw`), then `validate`
//! checks every value and builds the typed model below. All problems are collected and returned
//! together as an [`InventoryError`] whose `Display` prints one
//! `file:line:col: error: what is wrong; what would be right` line each. Legal but risky choices
//! (an even number of etcd servers, ...) become [`Warning`]s on the loaded inventory.
//!
//! Labels and taints: `labels` go into k3s's `node-label` (applied at registration) *and* are
//! reconciled through the API; labels the kubelet refuses at registration
//! (`node-role.kubernetes.io/worker` and other `kubernetes.io`/`k8s.io` keys) are rejected there
//! and accepted only in `api_labels`, which must never be rendered into config.yaml: they are
//! applied through the API after the node has registered.

mod charts;
pub mod edit;
mod error;
mod etcd;
mod flags;
pub mod init;
mod os;
mod raw;
mod registries;
mod syntax;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use etcd::{
    Etcd, EtcdS3, Key as EtcdKey, S3Credentials, S3_TIMEOUT_SECS, SNAPSHOT_CLIENT_SECS,
};
pub use os::{Os, Swap, Updates, DEFAULT_MAX_CLOCK_OFFSET_SECS, RECOMMENDED_SYSCTL};
pub use registries::{
    Mirror, Registries, RegistryConfig, Secret, REGISTRIES_HEADER, REGISTRIES_PATH,
};

/// A node's role and the SSH host-key policy are the k3s and SSH layers' own types.
pub use crate::k3s::Role;
pub use crate::ssh::HostKeyPolicy;
pub use error::{Diagnostic, ErrorKind, InventoryError, Warning};

/// k3s release used when `cluster.k3s_version` is not set (the stable channel when written).
pub const DEFAULT_K3S_VERSION: &str = "v1.36.3+k3s1";
/// Where k3s release artifacts are downloaded from unless `install.mirror` says otherwise.
pub const DEFAULT_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";
/// Longhorn chart (charts.longhorn.io), verified in reference/addons.md §3.1. No `v` prefix.
pub const LONGHORN_CHART_VERSION: &str = "1.12.1";
/// Upstream Traefik chart (traefik.github.io/charts); newest seen in reference/addons.md §0
/// (v39+ value layout, `traefik.io/v1alpha1` CRDs).
pub const TRAEFIK_CHART_VERSION: &str = "41.3.0";
/// cert-manager chart (charts.jetstack.io); its versions carry a `v` (reference/addons.md §5.1).
/// v1.21.1 is the newest v1.21 tag of cert-manager/cert-manager (2026-07-29): no v1.21.2 tag
/// exists there, so the pin stays on the release that can be confirmed.
pub const CERT_MANAGER_CHART_VERSION: &str = "v1.21.1";
/// Sealed Secrets chart (bitnami.github.io/sealed-secrets), app 0.38.4: tag helm-v2.19.1 of
/// bitnami/sealed-secrets, `helm/sealed-secrets/Chart.yaml`:4,17 (reference/addons.md §1).
/// A chart with app >= 0.40.0 carries a security fix; bump once its version is confirmed.
pub const SEALED_SECRETS_CHART_VERSION: &str = "2.19.1";
/// Namespace the Traefik add-on is installed into (the seed's `ingress-system`).
pub const DEFAULT_TRAEFIK_NAMESPACE: &str = "ingress-system";
/// Longhorn's default data path on every node.
pub const DEFAULT_LONGHORN_DATA_PATH: &str = "/var/lib/longhorn/";
/// k3s defaults (flag usage text, reference/k3s-facts.md §9).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
pub const DEFAULT_SSH_USER: &str = "root";
pub const DEFAULT_SSH_PORT: u16 = 22;
pub const DEFAULT_KNOWN_HOSTS: &str = "~/.ssh/known_hosts";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// Directory beside the inventory that holds caches and backups.
pub const STATE_DIR_NAME: &str = crate::local::STATE_DIR_NAME;
/// Names of the ClusterIssuers the cert-manager add-on creates.
pub const LETSENCRYPT_STAGING_ISSUER: &str = "letsencrypt-staging";
pub const LETSENCRYPT_PRODUCTION_ISSUER: &str = "letsencrypt-prod";
pub const LETSENCRYPT_STAGING_URL: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_PRODUCTION_URL: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// A validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub cluster: Cluster,
    pub install: Install,
    pub ssh: Ssh,
    /// In file order; the first server is the one that initialises the cluster.
    pub nodes: Vec<Node>,
    /// Free strings for rendering extra manifests (`{{ variables.NAME }}`).
    pub variables: BTreeMap<String, String>,
    pub addons: Addons,
    pub manifests: Vec<Manifest>,
    /// `[[charts]]`: Helm charts beside the add-ons, in inventory order.
    pub charts: Vec<Chart>,
    /// `[etcd]`: snapshots and their S3 copies (none: k3s's defaults).
    pub etcd: Option<Etcd>,
    /// `[os]`: the hosts' own settings (none: nothing on the hosts changes).
    pub os: Option<Os>,
    /// `[registries]`: k3s's registries.yaml and embedded registry.
    pub registries: Option<Registries>,
    path: PathBuf,
    base_dir: PathBuf,
    warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// DNS label; names the kubeconfig context.
    pub name: String,
    pub k3s_version: K3sVersion,
    /// Fixed address (DNS name or IP, no port) for joining servers/agents and the kubeconfig.
    pub api_endpoint: Option<String>,
    /// Extra SANs for the apiserver certificate (see [`Inventory::tls_sans`]).
    pub tls_san: Vec<String>,
    pub flannel_backend: FlannelBackend,
    /// k3s packaged components to disable, as written (see [`Inventory::disabled_components`]).
    pub disable: Vec<String>,
    /// Pod CIDR(s), comma-separated for dual stack.
    pub cluster_cidr: String,
    pub service_cidr: String,
    /// Cluster DNS address(es); k3s picks `.10` of the service CIDR when unset.
    pub cluster_dns: Option<String>,
    pub cluster_domain: String,
    pub datastore: Datastore,
    /// Extra config.yaml keys for every server (checked against the server flag list).
    pub server_config: BTreeMap<String, toml::Value>,
    /// Extra config.yaml keys for every agent (checked against the agent flag list).
    pub agent_config: BTreeMap<String, toml::Value>,
}

/// `vMAJOR.MINOR.PATCH+k3sN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct K3sVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub k3s: u32,
}

impl std::str::FromStr for K3sVersion {
    type Err = String;
    /// `vMAJOR.MINOR.PATCH+k3sN`, as the inventory, `k3s --version` and a Node's
    /// `kubeletVersion` write it; the error says what is wrong.
    fn from_str(s: &str) -> Result<K3sVersion, String> {
        let (major, minor, patch, k3s) = syntax::k3s_version(s)?;
        Ok(K3sVersion {
            major,
            minor,
            patch,
            k3s,
        })
    }
}

impl K3sVersion {
    /// The version as it appears in release URLs (`+` encoded as `%2B`).
    pub fn url_encoded(&self) -> String {
        self.to_string().replace('+', "%2B")
    }
}

impl fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{}.{}.{}+k3s{}",
            self.major, self.minor, self.patch, self.k3s
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlannelBackend {
    Vxlan,
    HostGw,
    WireguardNative,
    None,
}

impl FlannelBackend {
    /// The `flannel-backend` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::WireguardNative => "wireguard-native",
            FlannelBackend::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datastore {
    /// Embedded etcd: `cluster-init` on the first server, HA-capable.
    Etcd,
    /// k3s's default SQLite: one server only.
    Sqlite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Install {
    pub source: InstallSource,
    /// Base URL without a trailing '/'; artifacts are at `<mirror>/<version%2B>/<file>`.
    pub mirror: String,
    /// Operator-side artifact cache for `upload` (absolute).
    pub cache_dir: PathBuf,
    pub airgap_images: bool,
    /// sha256 of release files (`k3s`, `k3s-arm64`, the images tarball) of `k3s_version`,
    /// pinned in the inventory: they win over the mirror's sums file.
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallSource {
    /// Each host downloads from the mirror.
    Download,
    /// The operator downloads once into the cache and uploads over SSH.
    Upload,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    /// Absolute; `None` means ssh-agent.
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub bastion: Option<Bastion>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Which of the above were written in `[ssh]` (the rest are defaults).
    pub(crate) explicit: SshExplicit,
}

/// Which `[ssh]` settings the inventory wrote, so `~/.ssh/config` can fill the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SshExplicit {
    pub user: bool,
    pub port: bool,
    pub known_hosts: bool,
    pub host_key_policy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bastion {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Kubernetes node name (k3s `node-name`).
    pub name: String,
    /// IP address or DNS name used for SSH.
    pub host: String,
    pub role: Role,
    /// Per-node SSH overrides; see [`Inventory::ssh_overrides`].
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub bastion: Option<Bastion>,
    /// Labels for `node-label` and API reconciliation.
    pub labels: BTreeMap<String, String>,
    /// Labels applied only through the API after registration. Never render into config.yaml.
    pub api_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Extra config.yaml keys for this node only (checked against its role's flags).
    pub config: BTreeMap<String, toml::Value>,
}

impl Node {
    pub fn is_server(&self) -> bool {
        self.role == Role::Server
    }

    /// `node-label` values (`key=value`), safe for the kubelet.
    pub fn node_label_args(&self) -> Vec<String> {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// Every label the tool manages on this node (registration and API-only).
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut all = self.labels.clone();
        all.extend(self.api_labels.clone());
        all
    }

    /// Whether pods without tolerations may be scheduled here.
    pub fn schedulable(&self) -> bool {
        !self
            .taints
            .iter()
            .any(|t| matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

impl Taint {
    /// `key=value:Effect` or `key:Effect`, checked as the inventory checks it.
    pub fn parse(s: &str) -> Result<Taint, String> {
        let (key, value, effect) = syntax::taint(s)?;
        let effect =
            TaintEffect::parse(&effect).ok_or_else(|| format!("unknown effect {effect}"))?;
        Ok(Taint { key, value, effect })
    }

    /// `key:Effect`, which identifies a taint on a node.
    pub fn id(&self) -> String {
        format!("{}:{}", self.key, self.effect.as_str())
    }
}

impl fmt::Display for Taint {
    /// `key=value:Effect` or `key:Effect`, the form `node-taint` and kubectl take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{}", self.key, v, self.effect.as_str()),
            None => write!(f, "{}:{}", self.key, self.effect.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn parse(s: &str) -> Option<TaintEffect> {
        match s {
            "NoSchedule" => Some(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
            "NoExecute" => Some(TaintEffect::NoExecute),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

/// Only what the inventory wrote for one node (node overrides over `[ssh]`); `None` means
/// "not set here", so `~/.ssh/config` and then the built-in defaults decide.
#[derive(Debug, Clone, PartialEq)]
pub struct SshOverrides {
    pub node: String,
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: Option<HostKeyPolicy>,
    pub bastion: Option<Bastion>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

/// Add-ons: present in the inventory = enabled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Addons {
    pub longhorn: Option<Longhorn>,
    pub traefik: Option<Traefik>,
    pub cert_manager: Option<CertManager>,
    pub sealed_secrets: Option<SealedSecrets>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Longhorn {
    pub version: String,
    /// Default replica count (chart default class and UI-created volumes).
    pub replicas: u32,
    pub data_path: String,
    pub storage_classes: Vec<StorageClass>,
    /// `s3://`, `nfs://`, `cifs://` or `azblob://` URL.
    pub backup_target: Option<String>,
    /// Secret in longhorn-system holding the backup credentials.
    pub backup_target_credential_secret: Option<String>,
    /// Local chart archive embedded as `chartContent` (air gap); absolute.
    pub chart_archive: Option<PathBuf>,
    /// Longhorn `RecurringJob`s (snapshots and backups on a schedule).
    pub recurring_jobs: Vec<RecurringJob>,
    /// `uninstall = true`: remove Longhorn, and with it every volume. The only way bootstrap
    /// removes it: it sets Longhorn's `deleting-confirmation-flag`, without which Longhorn's
    /// uninstall refuses.
    pub uninstall: bool,
}

/// A Longhorn `RecurringJob` (longhorn.io/v1beta2, chart `crds.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringJob {
    pub name: String,
    /// `snapshot`, `backup`, ... (the CRD's enum).
    pub task: String,
    /// Five-field cron, in the manager's time zone (UTC).
    pub cron: String,
    /// How many snapshots or backups the job keeps.
    pub retain: u32,
    pub concurrency: u32,
    /// Volume groups it applies to (`default` = every volume without a job of its own).
    pub groups: Vec<String>,
}

impl Longhorn {
    /// Whether the chart's own `longhorn` class should be the cluster default (no inventory
    /// class claims it).
    pub fn chart_class_is_default(&self) -> bool {
        !self.storage_classes.iter().any(|c| c.default)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageClass {
    pub name: String,
    pub reclaim_policy: ReclaimPolicy,
    pub replicas: u32,
    pub default: bool,
    pub allow_volume_expansion: bool,
    pub volume_binding_mode: VolumeBindingMode,
    pub fs_type: Option<String>,
    pub data_locality: Option<String>,
    /// Further Longhorn StorageClass parameters, passed through.
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimPolicy {
    Delete,
    Retain,
}

impl ReclaimPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReclaimPolicy::Delete => "Delete",
            ReclaimPolicy::Retain => "Retain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeBindingMode {
    Immediate,
    WaitForFirstConsumer,
}

impl VolumeBindingMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            VolumeBindingMode::Immediate => "Immediate",
            VolumeBindingMode::WaitForFirstConsumer => "WaitForFirstConsumer",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Traefik {
    pub version: String,
    pub namespace: String,
    pub redirect_https: bool,
    pub routes: Vec<WeightedRoute>,
    /// Local chart archive embedded as `chartContent` (air gap); absolute.
    pub chart_archive: Option<PathBuf>,
    /// Pod placement: the chart's `nodeSelector` and `tolerations` (values.yaml of 41.3.0).
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Taint>,
    /// The chart version whose crds/ the operator applied (helm never upgrades them).
    pub crds_applied: Option<String>,
}

impl Traefik {
    /// Routes reference Services in other namespaces, so the CRD provider must allow it.
    pub fn needs_cross_namespace(&self) -> bool {
        self.routes
            .iter()
            .any(|r| r.services.iter().any(|s| s.namespace != r.namespace))
    }
}

/// An IngressRoute for `host` backed by a weighted TraefikService.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedRoute {
    pub name: String,
    pub namespace: String,
    pub host: String,
    /// Certificate from this ClusterIssuer; `None` = no TLS section.
    pub tls_issuer: Option<AcmeIssuer>,
    /// Sticky sessions: the cookie that pins a client to the service it got first.
    pub sticky_cookie: Option<String>,
    pub services: Vec<WeightedService>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedService {
    pub name: String,
    /// Resolved: the route's namespace unless given.
    pub namespace: String,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertManager {
    pub version: String,
    /// Required when an issuer is enabled.
    pub acme_email: Option<String>,
    /// IngressClass the HTTP-01 solver uses.
    pub ingress_class: String,
    pub staging: bool,
    pub production: bool,
    /// Local chart archive embedded as `chartContent` (air gap); absolute.
    pub chart_archive: Option<PathBuf>,
}

impl CertManager {
    pub fn issuers(&self) -> Vec<AcmeIssuer> {
        let mut v = Vec::new();
        if self.staging {
            v.push(AcmeIssuer::Staging);
        }
        if self.production {
            v.push(AcmeIssuer::Production);
        }
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeIssuer {
    Staging,
    Production,
}

impl AcmeIssuer {
    /// ClusterIssuer name.
    pub fn name(&self) -> &'static str {
        match self {
            AcmeIssuer::Staging => LETSENCRYPT_STAGING_ISSUER,
            AcmeIssuer::Production => LETSENCRYPT_PRODUCTION_ISSUER,
        }
    }

    pub fn server_url(&self) -> &'static str {
        match self {
            AcmeIssuer::Staging => LETSENCRYPT_STAGING_URL,
            AcmeIssuer::Production => LETSENCRYPT_PRODUCTION_URL,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SealedSecrets {
    pub version: String,
    /// Local chart archive embedded as `chartContent` (air gap); absolute.
    pub chart_archive: Option<PathBuf>,
    /// The chart version whose crds/ the operator applied (helm never upgrades them).
    pub crds_applied: Option<String>,
}

/// An extra manifest applied through k3s's manifests directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Absolute path of the source file.
    pub path: PathBuf,
    /// AddOn name (file name in the manifests dir without `.yaml`): RFC 1123, unique.
    pub name: String,
    /// Charts and add-ons (HelmChart names) that must be healthy before the file is written.
    pub after: Vec<String>,
}

/// A `[[charts]]` entry: a Helm chart installed through k3s's HelmChart CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The HelmChart's name in kube-system, and the helm release's.
    pub name: String,
    pub repo: ChartRepo,
    /// The chart's name in the repository.
    pub chart: String,
    /// Pinned: MAJOR.MINOR.PATCH, with the repository's `v` when it uses one.
    pub version: String,
    /// The release namespace (created).
    pub namespace: String,
    /// Inline `values`, as JSON (an object).
    pub values: serde_json::Value,
    /// `values_file`, absolute; rendered with `[variables]`, then `values` merged over it.
    pub values_file: Option<PathBuf>,
    /// Local chart archive embedded as `chartContent` (air gap); absolute.
    pub chart_archive: Option<PathBuf>,
    /// helm's `--timeout` for install and upgrade (5 minutes when unset).
    pub timeout: Option<std::time::Duration>,
    /// helm-controller's `failurePolicy`: `reinstall`, `abort` or `retry`.
    pub failure_policy: String,
    /// Pod placement: the chart's top-level `nodeSelector` and `tolerations` values.
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Taint>,
    /// Charts and add-ons (HelmChart names) that must be healthy before this one is written.
    pub after: Vec<String>,
    /// Objects that must exist and be ready for the chart to count as healthy.
    pub wait_for: Vec<WaitFor>,
}

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartRepo {
    /// A classic chart repository (`index.yaml`), https only.
    Https(String),
    /// An OCI registry path, `oci://host/path` (the chart's name is appended).
    Oci(String),
}

/// An object a chart's health waits for: `namespace/Kind/name` (namespace empty when
/// cluster-scoped; `group` empty when not given).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct WaitFor {
    pub namespace: String,
    pub kind: String,
    pub group: String,
    pub name: String,
}

impl WaitFor {
    /// What `kubectl get` takes for its kind: `Kind` or `Kind.group`.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.resource(), self.name)
        } else {
            write!(f, "{}/{}/{}", self.namespace, self.resource(), self.name)
        }
    }
}

impl Inventory {
    /// How far a host's clock may be from this machine's before a join is refused.
    pub fn max_clock_offset_secs(&self) -> u32 {
        self.os
            .as_ref()
            .map_or(DEFAULT_MAX_CLOCK_OFFSET_SECS, |o| o.max_clock_offset_secs)
    }

    /// Reads, parses and validates the inventory at `path`. Nothing else happens before this
    /// succeeds.
    pub fn load(path: impl AsRef<Path>) -> Result<Inventory, InventoryError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Self::from_str_at(&text, path),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.into_bytes();
                let prefix = String::from_utf8_lossy(bytes.get(..valid).unwrap_or_default());
                let (line, column) = error::LineIndex::new(&prefix).position(prefix.len());
                Err(InventoryError::Invalid {
                    diagnostics: vec![Diagnostic {
                        file: path.to_path_buf(),
                        line,
                        column,
                        kind: ErrorKind::NotUtf8,
                        message: "the file is not UTF-8 text; save it as UTF-8".into(),
                    }],
                })
            }
        }
    }

    /// Parses and validates `text` as if it were the file at `path` (relative paths inside it
    /// resolve against `path`'s directory; `path` need not exist).
    pub fn from_str_at(text: &str, path: &Path) -> Result<Inventory, InventoryError> {
        validate::parse(text, path)
    }

    /// The inventory file as given to [`Inventory::load`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Absolute directory of the inventory file.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// `<base_dir>/.bootstrap`: caches and backups.
    pub fn state_dir(&self) -> PathBuf {
        self.base_dir.join(STATE_DIR_NAME)
    }

    /// `<state_dir>/tokens.json`: the backup of the cluster's tokens.
    pub fn token_backup_path(&self) -> PathBuf {
        self.state_dir().join("tokens.json")
    }

    /// The servers' etcd snapshot directory when it is not k3s's default one, which k3s
    /// creates only for the default (pkg/etcd/snapshot.go:69-102): from `[etcd]`, or an
    /// `etcd-snapshot-dir` written in `[cluster.server_config]`.
    pub fn custom_snapshot_dir(&self) -> Option<String> {
        if self.cluster.datastore != Datastore::Etcd {
            return None;
        }
        let dir = match (
            &self.etcd,
            self.cluster.server_config.get("etcd-snapshot-dir"),
        ) {
            (Some(e), _) => e.snapshot_dir.clone(),
            (None, Some(toml::Value::String(d))) => Some(d.trim_end_matches('/').to_string()),
            _ => None,
        }?;
        (dir != crate::k3s::SNAPSHOT_DIR).then_some(dir)
    }

    /// `<state_dir>/snapshots`: the copies of etcd snapshots `etcd snapshot` fetched.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir().join("snapshots")
    }

    /// `<base_dir>/<cluster>.kubeconfig`: where the admin kubeconfig is written.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.base_dir
            .join(format!("{}.kubeconfig", self.cluster.name))
    }

    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    pub fn servers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    pub fn agents(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Agent)
    }

    /// The first server in file order (validation guarantees one exists).
    pub fn first_server(&self) -> &Node {
        match self.servers().next() {
            Some(n) => n,
            None => unreachable!("validation guarantees at least one server"),
        }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// What to say of a node name the inventory does not have: the closest name, and every
    /// name it has.
    pub fn unknown_node(&self, name: &str) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let hint = syntax::closest(name, names.iter().copied())
            .map(|n| format!(" (did you mean {n:?}?)"))
            .unwrap_or_default();
        format!(
            "no node named {name:?} in {}{hint}; its nodes are {}",
            self.path().display(),
            names.join(", ")
        )
    }

    /// `tls-san` for server `server`: `api_endpoint`, the server's own `host`, then `tls_san`,
    /// without duplicates. Every address a client dials must be in the certificate: k3s's
    /// names only the node's own addresses besides `tls-san` (k3s
    /// pkg/cli/server/server.go:299-305), and with `tls-san-security` (the default) names
    /// learned from connections are dropped unless configured or a server Node's address
    /// (pkg/cluster/address_controller.go:35-45), so a DNS name or a NAT'd address must be
    /// listed. Clients dial a server by its own host (joins, agents, the kubeconfig) or the
    /// endpoint; the servers share one certificate (dynamiclistener's `k3s-serving` Secret),
    /// so each adding its own host covers them all, and adding a server restarts no other.
    pub fn tls_sans(&self, server: &Node) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self
            .cluster
            .api_endpoint
            .iter()
            .chain(std::iter::once(&server.host))
            .chain(&self.cluster.tls_san)
        {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// `disable` for servers: the inventory's list plus what enabled add-ons replace
    /// (`traefik` for the Traefik add-on, `local-storage` for Longhorn), sorted.
    pub fn disabled_components(&self) -> Vec<String> {
        let mut out: Vec<String> = self.cluster.disable.clone();
        if self.addons.traefik.is_some() {
            out.push("traefik".into());
        }
        if self.addons.longhorn.is_some() {
            out.push("local-storage".into());
        }
        out.sort();
        out.dedup();
        out
    }

    /// What the inventory itself says about reaching `node`, without built-in defaults, for
    /// merging with `~/.ssh/config` (src/connect.rs).
    pub fn ssh_overrides(&self, node: &Node) -> SshOverrides {
        let e = self.ssh.explicit;
        SshOverrides {
            node: node.name.clone(),
            host: node.host.clone(),
            port: node.port.or(e.port.then_some(self.ssh.port)),
            user: node
                .user
                .clone()
                .or_else(|| e.user.then(|| self.ssh.user.clone())),
            identity_file: node
                .identity_file
                .clone()
                .or_else(|| self.ssh.identity_file.clone()),
            known_hosts: e.known_hosts.then(|| self.ssh.known_hosts.clone()),
            host_key_policy: e.host_key_policy.then_some(self.ssh.host_key_policy),
            bastion: node.bastion.clone().or_else(|| self.ssh.bastion.clone()),
            connect_timeout: self.ssh.connect_timeout,
            command_timeout: self.ssh.command_timeout,
        }
    }
}

/// Expands a leading `~` or `~/` to `$HOME` and resolves a relative path against `base`.
/// `~user/` is not supported.
pub fn resolve_path(raw: &str, base: &Path) -> Result<PathBuf, String> {
    let home = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("\"{raw}\" starts with '~' but HOME is not set"))
    };
    if raw.is_empty() {
        return Err("the path is empty".into());
    }
    let path = if raw == "~" {
        home()?
    } else if let Some(rest) = raw.strip_prefix("~/") {
        home()?.join(rest)
    } else if raw.starts_with('~') {
        return Err(format!(
            "\"{raw}\": only \"~/\" is expanded; write the full path"
        ));
    } else {
        PathBuf::from(raw)
    };
    Ok(if path.is_absolute() {
        path
    } else {
        base.join(path)
    })
}

#[cfg(test)]
mod tests;
