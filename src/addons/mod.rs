//! Add-ons: Longhorn, Traefik, cert-manager and Sealed Secrets installed through k3s's
//! HelmChart CRD, plus the inventory's extra manifests.
//!
//! Everything goes through the manifests directory of every server
//! (reference/k3s-facts.md §3.3): the deploy controller applies each file as an `Addon`, and
//! helm-controller turns each HelmChart into a `helm-install-<name>` Job. Files are rendered from
//! `templates/addons/` (byte-identical on every run, so a re-run writes nothing) and named
//! `bootstrap-<...>.yaml`, which is how a later run recognises what it installed. Extra manifests
//! keep the name the inventory gives them and are recorded in a dotfile the deploy controller
//! ignores ([`EXTRA_RECORD`]).
//!
//! Objects that need a chart's CRDs (ClusterIssuers, TraefikServices, IngressRoutes,
//! Certificates) live in separate files that are written only once the charts they depend on are
//! healthy, so the deploy controller never applies them against missing CRDs (it would retry every
//! 15 s, but the Addon would carry errors meanwhile, and a run could not tell "not yet" from
//! "wrong").
//!
//! An inventory `[[charts]]` entry ([`charts`]) goes the same way: a HelmChart file
//! `bootstrap-chart-<name>.yaml`, judged, reported and removed by the same code as the
//! add-ons. Each HelmChart, an add-on's or a chart's, is described by one [`HelmRelease`]:
//! that is all health, failure reports and removal look at.
//!
//! Submodules: one per add-on ([`longhorn`], [`traefik`], [`cert_manager`], [`sealed_secrets`]),
//! [`charts`] for the inventory's charts, [`manifests`] for the extra manifests, [`health`] for
//! what "healthy" means. The phases that
//! write and wait are planned in `plan/addons.rs` and run by the executor (src/apply).

pub mod cert_manager;
pub mod charts;
pub mod health;
pub mod longhorn;
pub mod manifests;
pub mod sealed_secrets;
pub mod traefik;
pub mod yaml11;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::inventory::Inventory;
use crate::templates;

/// k3s's manifests directory on servers.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// File-name prefix of every add-on manifest bootstrap writes.
pub const PREFIX: &str = "bootstrap-";
/// Dotfile in the manifests dir listing the extra manifests bootstrap wrote (one name a line).
/// The deploy controller ignores dotfiles.
pub const EXTRA_RECORD: &str = ".bootstrap-extra";

/// The four add-ons, in install-wait order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AddonKind {
    Longhorn,
    Traefik,
    CertManager,
    SealedSecrets,
}

impl AddonKind {
    pub const ALL: [AddonKind; 4] = [
        AddonKind::Longhorn,
        AddonKind::Traefik,
        AddonKind::CertManager,
        AddonKind::SealedSecrets,
    ];

    /// The HelmChart (and release) name; the Job is `helm-install-<name>` in kube-system.
    pub fn chart_name(&self) -> &'static str {
        match self {
            AddonKind::Longhorn => "longhorn",
            AddonKind::Traefik => "traefik",
            AddonKind::CertManager => "cert-manager",
            AddonKind::SealedSecrets => "sealed-secrets",
        }
    }

    /// How the inventory names it (`[addons.<name>]`).
    pub fn inventory_name(&self) -> &'static str {
        match self {
            AddonKind::Longhorn => "longhorn",
            AddonKind::Traefik => "traefik",
            AddonKind::CertManager => "cert_manager",
            AddonKind::SealedSecrets => "sealed_secrets",
        }
    }

    /// The HelmChart manifest's file name.
    pub fn chart_file(&self) -> String {
        format!("{PREFIX}{}.yaml", self.chart_name())
    }

    /// The Job helm-controller runs for the install.
    pub fn job_name(&self) -> String {
        format!("helm-install-{}", self.chart_name())
    }

    /// helm-controller's `failurePolicy` for the chart: what the install Job does when it finds
    /// the release failed (klipper-helm `entry`:68-99).
    pub fn failure_policy(&self) -> &'static str {
        match self {
            // `reinstall` uninstalls first, and uninstalling Longhorn deletes every volume
            // (reference/addons.md §2, kube-hetzner#2054): a failed Longhorn release waits for
            // the operator instead.
            AddonKind::Longhorn => "abort",
            // A reinstall loses nothing of these: Traefik's and Sealed Secrets' CRDs live in the
            // charts' crds/ directories, which `helm uninstall` never deletes, cert-manager's
            // carry `helm.sh/resource-policy: keep` (`crds.keep`, cert-manager-values.yaml), and
            // the sealing key is bootstrap's own Secret. So helm-controller repairs a failed
            // release by itself (uninstall, install), and no re-run is ever stuck on it.
            AddonKind::Traefik | AddonKind::CertManager | AddonKind::SealedSecrets => "reinstall",
        }
    }

    /// `spec.timeout`, helm's `--timeout` for install and upgrade (helm-controller `chart.go`:986-991;
    /// 5 minutes when unset). Hooks run inside it: cert-manager's post-install
    /// `startupapicheck` waits up to its own 5 minutes (cert-manager-values.yaml) for the API
    /// and webhook, after image pulls that take minutes on a small VPS.
    pub fn helm_timeout(&self) -> Option<&'static str> {
        match self {
            AddonKind::CertManager => Some("10m"),
            _ => None,
        }
    }

    /// The namespace of the release and its workloads, when fixed by the add-on.
    pub fn fixed_namespace(&self) -> Option<&'static str> {
        match self {
            AddonKind::Longhorn => Some(longhorn::NAMESPACE),
            AddonKind::Traefik => None,
            AddonKind::CertManager => Some(cert_manager::NAMESPACE),
            AddonKind::SealedSecrets => Some(sealed_secrets::NAMESPACE),
        }
    }

    /// The add-on whose HelmChart file is `file`.
    pub fn of_chart_file(file: &str) -> Option<AddonKind> {
        AddonKind::ALL.into_iter().find(|k| k.chart_file() == file)
    }

    /// The add-on whose HelmChart is named `name` (no inventory chart may take these names).
    pub fn of_chart_name(name: &str) -> Option<AddonKind> {
        AddonKind::ALL.into_iter().find(|k| k.chart_name() == name)
    }

    /// The add-on's HelmChart as health, reports and removal see it (`traefik_ns`: where the
    /// Traefik release lives).
    pub fn release(&self, traefik_ns: &str) -> HelmRelease {
        HelmRelease {
            name: self.chart_name().to_string(),
            namespace: self.fixed_namespace().unwrap_or(traefik_ns).to_string(),
            addon: Some(*self),
            failure_policy: self.failure_policy().to_string(),
            timeout: self.helm_timeout().map(str::to_string),
            wants: health::addon_wants(*self, traefik_ns),
            values_digest: None,
        }
    }
}

/// One HelmChart bootstrap manages, an add-on's or an inventory chart's: its names, and what
/// "installed" requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelmRelease {
    /// The HelmChart's name in kube-system and the helm release's; the Job is
    /// `helm-install-<name>`.
    pub name: String,
    /// The release namespace.
    pub namespace: String,
    /// The add-on, when it is one.
    #[serde(skip)]
    pub addon: Option<AddonKind>,
    /// `spec.failurePolicy` (what the install Job does with a failed release).
    #[serde(skip)]
    pub failure_policy: String,
    /// `spec.timeout`, when set.
    #[serde(skip)]
    pub timeout: Option<String>,
    /// Objects that must exist and be ready.
    #[serde(skip)]
    pub wants: Vec<health::Want>,
    /// [`health::values_digest`] of the `valuesContent` written, when known: the Job is the
    /// current one only once helm-controller's values Secret holds it.
    #[serde(skip)]
    pub values_digest: Option<String>,
}

impl HelmRelease {
    /// The Job helm-controller runs for the install.
    pub fn job_name(&self) -> String {
        format!("helm-install-{}", self.name)
    }

    /// helm's `--timeout` in seconds: `spec.timeout` as the tool writes it (`10m`, `600s`), else
    /// helm's default of 5 minutes (helm `pkg/cmd/install.go`:195).
    pub fn helm_timeout_secs(&self) -> u64 {
        let Some(t) = self.timeout.as_deref() else {
            return 300;
        };
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().unwrap_or(300);
        match unit {
            "h" => n * 3600,
            "m" => n * 60,
            _ => n,
        }
    }

    /// Where the inventory configures it, for messages.
    pub fn inventory_place(&self) -> String {
        match self.addon {
            Some(k) => format!("[addons.{}]", k.inventory_name()),
            None => format!("the [[charts]] entry \"{}\"", self.name),
        }
    }
}

impl std::fmt::Display for HelmRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addon {
            Some(_) => write!(f, "add-on {}", self.name),
            None => write!(f, "chart {}", self.name),
        }
    }
}

impl std::fmt::Display for AddonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.chart_name())
    }
}

/// When a file may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// At once.
    Base,
    /// Once these HelmCharts (add-ons or charts, by name) are healthy: their CRDs exist.
    After(Vec<String>),
}

/// Who a manifest file belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Addon(AddonKind),
    /// An inventory `[[charts]]` entry, by name.
    Chart(String),
    /// An inventory `[[manifests]]` entry, by name.
    Extra(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Addon(k) => write!(f, "add-on {k}"),
            Owner::Chart(n) => write!(f, "chart {n}"),
            Owner::Extra(n) => write!(f, "manifest {n}"),
        }
    }
}

/// One file for the manifests directory of every server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// File name in [`MANIFESTS_DIR`]; the AddOn name is the part before the first dot.
    pub file: String,
    pub content: String,
    pub mode: u32,
    pub owner: Owner,
    pub stage: Stage,
}

impl ManifestFile {
    pub fn path(&self) -> String {
        format!("{MANIFESTS_DIR}/{}", self.file)
    }

    pub fn sha256(&self) -> String {
        crate::k3s::sha256_hex(self.content.as_bytes())
    }

    /// k3s's `Addon` object name for this file.
    pub fn addon_name(&self) -> &str {
        addon_name(&self.file)
    }
}

/// The AddOn name k3s derives from a file name: everything before the first dot.
pub fn addon_name(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// What the add-on phase needs from the inventory, resolved once before any host is touched.
#[derive(Debug, Clone, Default)]
pub struct AddonsSpec {
    pub longhorn: Option<crate::inventory::Longhorn>,
    pub traefik: Option<crate::inventory::Traefik>,
    pub cert_manager: Option<crate::inventory::CertManager>,
    pub sealed_secrets: Option<crate::inventory::SealedSecrets>,
    /// Extra manifests, rendered with the inventory's variables.
    pub extras: Vec<manifests::Extra>,
    /// The inventory's charts, with their values rendered.
    pub charts: Vec<charts::ChartSpec>,
    /// Air-gap chart archives, base64, by add-on.
    pub chart_content: BTreeMap<AddonKind, String>,
    /// `.bootstrap/` beside the inventory (the sealing key backup lives there).
    pub state_dir: PathBuf,
    /// `[addons.longhorn] uninstall = true`: Longhorn is to be removed (and is not enabled).
    pub longhorn_uninstall: bool,
}

/// Errors rendering add-on manifests.
#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    #[error(transparent)]
    Template(#[from] templates::TemplateError),
    #[error("{0}")]
    Other(String),
}

impl AddonsSpec {
    /// Resolve the add-ons of a validated inventory: reads and renders the extra manifests and
    /// the chart archives, so a bad file fails the run before any host is contacted.
    pub fn from_inventory(inv: &Inventory) -> Result<AddonsSpec, AddonError> {
        let a = &inv.addons;
        let extras = manifests::render_all(inv)?;
        let charts = charts::resolve_all(inv)?;
        let mut chart_content = BTreeMap::new();
        for (kind, path) in [
            (
                AddonKind::Longhorn,
                a.longhorn.as_ref().and_then(|x| x.chart_archive.as_ref()),
            ),
            (
                AddonKind::Traefik,
                a.traefik.as_ref().and_then(|x| x.chart_archive.as_ref()),
            ),
            (
                AddonKind::CertManager,
                a.cert_manager
                    .as_ref()
                    .and_then(|x| x.chart_archive.as_ref()),
            ),
            (
                AddonKind::SealedSecrets,
                a.sealed_secrets
                    .as_ref()
                    .and_then(|x| x.chart_archive.as_ref()),
            ),
        ] {
            if let Some(p) = path {
                use base64::Engine;
                let bytes = std::fs::read(p).map_err(|e| {
                    AddonError::Other(format!("reading the chart archive {}: {e}", p.display()))
                })?;
                chart_content.insert(
                    kind,
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                );
            }
        }
        Ok(AddonsSpec {
            longhorn: a.longhorn.clone().filter(|l| !l.uninstall),
            longhorn_uninstall: a.longhorn.as_ref().is_some_and(|l| l.uninstall),
            traefik: a.traefik.clone(),
            cert_manager: a.cert_manager.clone(),
            sealed_secrets: a.sealed_secrets.clone(),
            extras,
            charts,
            chart_content,
            state_dir: inv.state_dir(),
        })
    }

    /// The enabled add-ons, in order.
    pub fn enabled(&self) -> Vec<AddonKind> {
        AddonKind::ALL
            .into_iter()
            .filter(|k| match k {
                AddonKind::Longhorn => self.longhorn.is_some(),
                AddonKind::Traefik => self.traefik.is_some(),
                AddonKind::CertManager => self.cert_manager.is_some(),
                AddonKind::SealedSecrets => self.sealed_secrets.is_some(),
            })
            .collect()
    }

    /// Nothing to install and nothing bootstrap may have installed before: the phase only
    /// needs to look for leftovers.
    pub fn is_empty(&self) -> bool {
        self.enabled().is_empty() && self.extras.is_empty() && self.charts.is_empty()
    }

    /// Every HelmChart to install, add-ons first, then the charts in inventory order.
    pub fn releases(&self) -> Vec<HelmRelease> {
        let ns = self.traefik_namespace();
        let mut out: Vec<HelmRelease> = self.enabled().iter().map(|k| k.release(&ns)).collect();
        out.extend(self.charts.iter().map(|c| c.release()));
        out
    }

    /// [`releases`](Self::releases), each with the digest of the values its HelmChart file in
    /// `files` carries (health then waits until helm-controller holds those values).
    pub fn releases_for(&self, files: &[ManifestFile]) -> Vec<HelmRelease> {
        let mut out = self.releases();
        for r in &mut out {
            r.values_digest = files
                .iter()
                .find(|f| {
                    f.file == charts::file_name(&r.name)
                        || r.addon.is_some_and(|k| k.chart_file() == f.file)
                })
                .and_then(|f| helmchart_values(&f.content))
                .map(|v| health::values_digest(&v));
        }
        out
    }

    /// The Traefik add-on's namespace ("" when it is off).
    pub fn traefik_namespace(&self) -> String {
        self.traefik
            .as_ref()
            .map(|t| t.namespace.clone())
            .unwrap_or_default()
    }

    /// The resources (`Kind` or `Kind.group`) of every chart's `wait_for`, which the health
    /// read fetches beside its own kinds.
    pub fn wait_kinds(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> = self
            .charts
            .iter()
            .flat_map(|c| c.chart.wait_for.iter().map(|w| w.resource()))
            .collect();
        set.into_iter().collect()
    }

    /// Every file the manifests directories should hold. `key` is the Sealed Secrets sealing key
    /// (required when that add-on is enabled).
    pub fn files(
        &self,
        key: Option<&sealed_secrets::SealingKey>,
    ) -> Result<Vec<ManifestFile>, AddonError> {
        let mut out = Vec::new();
        for x in &self.extras {
            out.push(ManifestFile {
                file: format!("{}.yaml", x.name),
                content: x.content.clone(),
                mode: 0o600,
                owner: Owner::Extra(x.name.clone()),
                stage: stage(&x.after),
            });
        }
        for c in &self.charts {
            out.push(c.file()?);
        }
        let content = |k: AddonKind| self.chart_content.get(&k).map(String::as_str);
        if let Some(l) = &self.longhorn {
            out.extend(longhorn::files(l, content(AddonKind::Longhorn))?);
        }
        if let Some(t) = &self.traefik {
            out.extend(traefik::files(
                t,
                self.cert_manager.is_some(),
                content(AddonKind::Traefik),
            )?);
        }
        if let Some(c) = &self.cert_manager {
            out.extend(cert_manager::files(c, content(AddonKind::CertManager))?);
        }
        if let Some(s) = &self.sealed_secrets {
            let key = key.ok_or_else(|| {
                AddonError::Other("the Sealed Secrets sealing key is not resolved".into())
            })?;
            out.extend(sealed_secrets::files(
                s,
                key,
                content(AddonKind::SealedSecrets),
            )?);
        }
        Ok(out)
    }
}

/// `Base` without dependencies, else `After` them.
pub(crate) fn stage(after: &[String]) -> Stage {
    if after.is_empty() {
        Stage::Base
    } else {
        Stage::After(after.to_vec())
    }
}

/// What templates/addons/helmchart.yaml renders: one HelmChart.
pub(crate) struct HelmChartDoc<'a> {
    /// Who it belongs to, for the file's first line ("longhorn add-on", "loki chart").
    pub managed_by: String,
    pub name: &'a str,
    /// `spec.repo`; empty for an OCI chart, whose reference is all in `chart`.
    pub repo: &'a str,
    pub chart: &'a str,
    pub version: &'a str,
    pub target_namespace: &'a str,
    pub create_namespace: bool,
    pub values: &'a str,
    pub chart_content: Option<&'a str>,
    pub failure_policy: &'a str,
    pub timeout: Option<&'a str>,
}

impl HelmChartDoc<'_> {
    pub(crate) fn render(&self) -> Result<String, AddonError> {
        let mut ctx = tera::Context::new();
        ctx.insert("managed_by", &self.managed_by);
        ctx.insert("name", self.name);
        ctx.insert("repo", self.repo);
        ctx.insert("chart", self.chart);
        ctx.insert("version", self.version);
        ctx.insert("target_namespace", self.target_namespace);
        ctx.insert("create_namespace", &self.create_namespace);
        ctx.insert("values", self.values.trim());
        ctx.insert("chart_content", &self.chart_content);
        ctx.insert("failure_policy", self.failure_policy);
        ctx.insert("timeout", &self.timeout);
        Ok(templates::render("addons/helmchart.yaml", &ctx)?)
    }
}

/// A HelmChart file's `spec.valuesContent` as the API stores it (the YAML block scalar read).
pub fn helmchart_values(content: &str) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(content).ok()?;
    if doc.get("kind").and_then(serde_yaml::Value::as_str) != Some("HelmChart") {
        return None;
    }
    Some(
        doc.get("spec")
            .and_then(|s| s.get("valuesContent"))
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("")
            .to_string(),
    )
}

/// The add-on's HelmChart manifest file.
pub(crate) fn helmchart(
    kind: AddonKind,
    repo: &str,
    version: &str,
    target_namespace: &str,
    create_namespace: bool,
    values: &str,
    chart_content: Option<&str>,
) -> Result<ManifestFile, AddonError> {
    let content = HelmChartDoc {
        managed_by: format!("{} add-on", kind.inventory_name()),
        name: kind.chart_name(),
        repo,
        chart: kind.chart_name(),
        version,
        target_namespace,
        create_namespace,
        values,
        chart_content,
        failure_policy: kind.failure_policy(),
        timeout: kind.helm_timeout(),
    }
    .render()?;
    Ok(ManifestFile {
        file: kind.chart_file(),
        content,
        // Values may hold credentials (a backup secret's name, an embedded chart).
        mode: 0o600,
        owner: Owner::Addon(kind),
        stage: Stage::Base,
    })
}

/// The chart major version (`41.3.0` → 41, `v1.21.2` → 1) and minor.
pub(crate) fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim_start_matches('v');
    let mut it = v.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Per-host facts for the add-ons, read by the host facts script (`addons.*` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddonFacts {
    pub prereq: longhorn::PrereqFacts,
    /// Extra manifests bootstrap wrote on this server ([`EXTRA_RECORD`]).
    pub extra_record: Vec<String>,
}

impl AddonFacts {
    /// One `addons.<key>` line of the facts script (the prefix already stripped).
    pub fn parse_line(&mut self, key: &str, value: &str) {
        if key == "extra" {
            self.extra_record = value.split_whitespace().map(String::from).collect();
        } else if let Some(k) = key.strip_prefix("lh.") {
            self.prereq.parse_line(k, value);
        }
    }
}
