//! The inventory exactly as written: every field that validation may complain about carries its
//! byte span, and every table denies unknown keys so a typo is an error, not a silent default.
//!
//! Tables themselves are never wrapped in `Spanned`: toml cannot give a span to a table built
//! from dotted keys (`cluster.name = "x"`) and fails with a confusing type error, so errors about
//! a whole table point at one of its keys instead.
//!
//! Enumerated values (role, source, policies, ...) are read as strings and checked in
//! `validate`, so that several bad values are all reported in one run instead of serde stopping
//! at the first.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;
pub(crate) type SpannedMap<V> = BTreeMap<S<String>, S<V>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInventory {
    pub cluster: RawCluster,
    #[serde(default)]
    pub install: Option<RawInstall>,
    #[serde(default)]
    pub ssh: Option<RawSsh>,
    #[serde(default, rename = "node")]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub variables: SpannedMap<String>,
    #[serde(default)]
    pub addons: Option<RawAddons>,
    #[serde(default)]
    pub manifests: Vec<RawManifest>,
    #[serde(default)]
    pub charts: Vec<RawChart>,
    #[serde(default)]
    pub etcd: Option<RawEtcd>,
    #[serde(default)]
    pub os: Option<RawOs>,
    #[serde(default)]
    pub registries: Option<RawRegistries>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOs {
    #[serde(default)]
    pub sysctl: SpannedMap<toml::Value>,
    pub time_sync: Option<bool>,
    pub max_clock_offset: Option<S<i64>>,
    pub updates: Option<S<String>>,
    pub swap: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistries {
    pub embedded_registry: Option<bool>,
    #[serde(default)]
    pub mirrors: SpannedMap<RawMirror>,
    #[serde(default)]
    pub configs: SpannedMap<RawRegistryConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMirror {
    #[serde(default)]
    pub endpoint: Vec<S<String>>,
    #[serde(default)]
    pub rewrite: SpannedMap<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistryConfig {
    pub username: Option<S<String>>,
    /// Refused: a password never sits in the inventory (any type, so the refusal never
    /// echoes it).
    pub password: Option<S<toml::Value>>,
    pub password_file: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub token_file: Option<S<String>>,
    pub token_env: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub cert_file: Option<S<String>>,
    pub key_file: Option<S<String>>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    pub snapshot_schedule: Option<S<String>>,
    pub snapshot_retention: Option<S<i64>>,
    pub snapshot_dir: Option<S<String>>,
    pub snapshot_compress: Option<bool>,
    pub disable_snapshots: Option<bool>,
    pub s3: Option<RawEtcdS3>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcdS3 {
    pub endpoint: Option<S<String>>,
    pub bucket: S<String>,
    pub folder: Option<S<String>>,
    pub region: Option<S<String>>,
    pub endpoint_ca: Option<S<String>>,
    pub skip_ssl_verify: Option<bool>,
    pub insecure: Option<bool>,
    pub allow_insecure: Option<bool>,
    pub retention: Option<S<i64>>,
    pub credentials_file: Option<S<String>>,
    pub credentials: Option<S<String>>,
    pub secrets_recipients: Option<Vec<S<String>>>,
    pub proxy: Option<S<String>>,
    pub timeout: Option<S<toml::Value>>,
    pub bucket_lookup_type: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: S<String>,
    pub k3s_version: Option<S<String>>,
    pub api_endpoint: Option<S<String>>,
    #[serde(default)]
    pub tls_san: Vec<S<String>>,
    pub flannel_backend: Option<S<String>>,
    #[serde(default)]
    pub disable: Vec<S<String>>,
    pub cluster_cidr: Option<S<String>>,
    pub service_cidr: Option<S<String>>,
    pub cluster_dns: Option<S<String>>,
    pub cluster_domain: Option<S<String>>,
    pub datastore: Option<S<String>>,
    #[serde(default)]
    pub server_config: SpannedMap<toml::Value>,
    #[serde(default)]
    pub agent_config: SpannedMap<toml::Value>,
    pub allow_files_outside_inventory: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstall {
    pub source: Option<S<String>>,
    pub mirror: Option<S<String>>,
    pub cache_dir: Option<S<String>>,
    pub airgap_images: Option<bool>,
    pub allow_http: Option<bool>,
    pub sha256: Option<SpannedMap<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    pub user: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub identity_file: Option<S<String>>,
    pub known_hosts: Option<S<String>>,
    pub host_key_policy: Option<S<String>>,
    pub bastion: Option<S<String>>,
    pub connect_timeout: Option<S<toml::Value>>,
    pub command_timeout: Option<S<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: S<String>,
    pub host: S<String>,
    pub role: S<String>,
    pub port: Option<S<i64>>,
    pub user: Option<S<String>>,
    pub identity_file: Option<S<String>>,
    pub bastion: Option<S<String>>,
    #[serde(default)]
    pub labels: SpannedMap<String>,
    #[serde(default)]
    pub api_labels: SpannedMap<String>,
    #[serde(default)]
    pub taints: Vec<S<String>>,
    #[serde(default)]
    pub config: SpannedMap<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAddons {
    pub longhorn: Option<RawLonghorn>,
    pub traefik: Option<RawTraefik>,
    pub cert_manager: Option<RawCertManager>,
    pub sealed_secrets: Option<RawSealedSecrets>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLonghorn {
    pub version: Option<S<String>>,
    pub replicas: Option<S<i64>>,
    pub data_path: Option<S<String>>,
    #[serde(default)]
    pub storage_classes: Vec<RawStorageClass>,
    pub backup_target: Option<S<String>>,
    pub backup_target_credential_secret: Option<S<String>>,
    pub chart_archive: Option<S<String>>,
    #[serde(default)]
    pub recurring_jobs: Vec<RawRecurringJob>,
    pub uninstall: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecurringJob {
    pub name: S<String>,
    pub task: S<String>,
    pub cron: S<String>,
    pub retain: S<i64>,
    pub concurrency: Option<S<i64>>,
    pub groups: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorageClass {
    pub name: S<String>,
    pub reclaim_policy: Option<S<String>>,
    pub replicas: Option<S<i64>>,
    pub default: Option<S<bool>>,
    pub allow_volume_expansion: Option<bool>,
    pub volume_binding_mode: Option<S<String>>,
    pub fs_type: Option<S<String>>,
    pub data_locality: Option<S<String>>,
    pub disk_selector: Option<Vec<S<String>>>,
    #[serde(default)]
    pub parameters: SpannedMap<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTraefik {
    pub version: Option<S<String>>,
    pub namespace: Option<S<String>>,
    pub redirect_https: Option<bool>,
    pub chart_archive: Option<S<String>>,
    #[serde(default)]
    pub node_selector: SpannedMap<String>,
    pub tolerations: Option<Vec<S<String>>>,
    pub crds_applied: Option<S<String>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: S<String>,
    pub namespace: S<String>,
    pub host: S<String>,
    pub tls_issuer: Option<S<String>>,
    pub sticky_cookie: Option<S<String>>,
    pub services: Vec<RawWeightedService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeightedService {
    pub name: S<String>,
    pub namespace: Option<S<String>>,
    pub port: S<i64>,
    pub weight: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertManager {
    pub version: Option<S<String>>,
    pub acme_email: Option<S<String>>,
    pub ingress_class: Option<S<String>>,
    pub issuers: Option<RawIssuers>,
    pub chart_archive: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuers {
    pub staging: Option<bool>,
    pub production: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSealedSecrets {
    pub version: Option<S<String>>,
    pub chart_archive: Option<S<String>>,
    pub crds_applied: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    pub path: S<String>,
    pub name: Option<S<String>>,
    #[serde(default)]
    pub after: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChart {
    pub name: S<String>,
    pub repo: S<String>,
    pub chart: S<String>,
    pub version: Option<S<String>>,
    pub namespace: S<String>,
    /// Not spanned: a table built from dotted keys has no span (see the top of this file).
    pub values: Option<toml::Table>,
    pub values_file: Option<S<String>>,
    pub chart_archive: Option<S<String>>,
    pub timeout: Option<S<toml::Value>>,
    pub failure_policy: Option<S<String>>,
    #[serde(default)]
    pub node_selector: SpannedMap<String>,
    pub tolerations: Option<Vec<S<String>>>,
    #[serde(default)]
    pub after: Vec<S<String>>,
    #[serde(default)]
    pub wait_for: Vec<S<String>>,
}
