//! What "healthy" means for each add-on (reference/addons.md §3.5, §4.6, §5.5, §6.5): its
//! `helm-install-<name>` Job completed (klipper-helm runs without `--wait`, so that alone proves
//! little), its CRDs exist, and its own Deployments and DaemonSets are ready. Everything is read
//! with one `kubectl get` and judged by pure functions.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{AddonKind, ManifestFile};

/// The kinds the health checks look at, read together with one `kubectl get -A`.
pub const KINDS: &str = "customresourcedefinitions,csidrivers,storageclasses,ingressclasses,deployments,daemonsets,services,jobs,helmcharts,addons";

/// One read of everything the health checks look at.
pub fn get_all() -> String {
    format!("k3s kubectl get {KINDS} -A -o json")
}

/// Objects by (kind, namespace, name).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    objects: BTreeMap<(String, String, String), Value>,
}

impl Snapshot {
    /// Parse `kubectl get ... -o json` (a List).
    pub fn parse(json: &str) -> Result<Snapshot, String> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| format!("could not read `kubectl get -o json`: {e}"))?;
        let mut s = Snapshot::default();
        let items = match v.get("items").and_then(Value::as_array) {
            Some(i) => i.clone(),
            None => vec![v],
        };
        for o in items {
            let kind = o["kind"].as_str().unwrap_or("").to_string();
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            s.objects.insert((kind, ns, name), o);
        }
        Ok(s)
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(kind.to_string(), ns.to_string(), name.to_string()))
    }

    fn with_prefix(&self, kind: &str, ns: &str, prefix: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((k, n, name), _)| k == kind && n == ns && name.starts_with(prefix))
            .map(|(_, v)| v)
            .collect()
    }

    /// Whether the deploy controller applied this exact file content.
    pub fn file_applied(&self, f: &ManifestFile) -> bool {
        self.get("Addon", "kube-system", f.addon_name())
            .and_then(|a| a["spec"]["checksum"].as_str())
            == Some(f.sha256().as_str())
    }
}

/// A workload or object an add-on must have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    kind: &'static str,
    namespace: String,
    /// A name, or a prefix when it ends with '-' and `prefix` is set.
    name: String,
    prefix: bool,
}

fn want(kind: &'static str, ns: &str, name: &str) -> Want {
    Want {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        prefix: false,
    }
}

fn crd(name: &str) -> Want {
    want("CustomResourceDefinition", "", name)
}

/// What each add-on must have once installed. `traefik_ns` is the Traefik namespace.
fn wants(kind: AddonKind, traefik_ns: &str) -> Vec<Want> {
    match kind {
        AddonKind::Longhorn => {
            let ns = super::longhorn::NAMESPACE;
            let mut w: Vec<Want> = [
                "volumes.longhorn.io",
                "nodes.longhorn.io",
                "settings.longhorn.io",
                "engineimages.longhorn.io",
            ]
            .iter()
            .map(|c| crd(c))
            .collect();
            w.push(want("DaemonSet", ns, "longhorn-manager"));
            w.push(want("Deployment", ns, "longhorn-driver-deployer"));
            w.push(want("Deployment", ns, "longhorn-ui"));
            // Created later by the driver deployer: wait for them to appear as well.
            w.push(want("DaemonSet", ns, "longhorn-csi-plugin"));
            for d in [
                "csi-attacher",
                "csi-provisioner",
                "csi-resizer",
                "csi-snapshotter",
            ] {
                w.push(want("Deployment", ns, d));
            }
            w.push(Want {
                kind: "DaemonSet",
                namespace: ns.into(),
                name: "engine-image-ei-".into(),
                prefix: true,
            });
            w.push(want("CSIDriver", "", "driver.longhorn.io"));
            w.push(want("StorageClass", "", "longhorn"));
            w
        }
        AddonKind::Traefik => vec![
            crd("ingressroutes.traefik.io"),
            crd("middlewares.traefik.io"),
            crd("traefikservices.traefik.io"),
            want("Deployment", traefik_ns, "traefik"),
            want("IngressClass", "", "traefik"),
        ],
        AddonKind::CertManager => {
            let ns = super::cert_manager::NAMESPACE;
            vec![
                crd("certificates.cert-manager.io"),
                crd("issuers.cert-manager.io"),
                crd("clusterissuers.cert-manager.io"),
                crd("certificaterequests.cert-manager.io"),
                crd("orders.acme.cert-manager.io"),
                crd("challenges.acme.cert-manager.io"),
                want("Deployment", ns, "cert-manager"),
                want("Deployment", ns, "cert-manager-cainjector"),
                want("Deployment", ns, "cert-manager-webhook"),
            ]
        }
        AddonKind::SealedSecrets => {
            let ns = super::sealed_secrets::NAMESPACE;
            let c = super::sealed_secrets::CONTROLLER;
            vec![
                crd("sealedsecrets.bitnami.com"),
                want("Deployment", ns, c),
                want("Service", ns, c),
            ]
        }
    }
}

fn int(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

/// Why a workload is not ready, or `None` when it is.
fn workload_problem(kind: &str, o: &Value) -> Option<String> {
    match kind {
        "Deployment" | "StatefulSet" => {
            let want = int(o, "/spec/replicas").unwrap_or(1);
            let ready = int(o, "/status/readyReplicas").unwrap_or(0);
            (ready < want).then(|| format!("{ready}/{want} replicas ready"))
        }
        "DaemonSet" => {
            let ready = int(o, "/status/numberReady").unwrap_or(0);
            match int(o, "/status/desiredNumberScheduled") {
                None => Some("not scheduled yet".into()),
                Some(want) if ready < want => Some(format!("{ready}/{want} pods ready")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// State of the helm-controller Job of an add-on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// No HelmChart or no Job yet.
    Pending,
    Running,
    Complete,
    Failed,
}

/// One add-on's health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddonHealth {
    pub addon: AddonKind,
    pub job: JobState,
    /// What is missing or not ready (empty = healthy).
    pub problems: Vec<String>,
}

impl AddonHealth {
    pub fn healthy(&self) -> bool {
        self.job == JobState::Complete && self.problems.is_empty()
    }

    /// One line: `ok` or the first problems.
    pub fn summary(&self) -> String {
        if self.healthy() {
            return "healthy".into();
        }
        let mut parts = Vec::new();
        match self.job {
            JobState::Pending => parts.push("waiting for the HelmChart's install Job".to_string()),
            JobState::Running => {
                parts.push(format!("Job kube-system/{} running", self.addon.job_name()))
            }
            JobState::Failed => {
                parts.push(format!("Job kube-system/{} failed", self.addon.job_name()))
            }
            JobState::Complete => {}
        }
        parts.extend(self.problems.iter().take(4).cloned());
        if self.problems.len() > 4 {
            parts.push(format!("{} more", self.problems.len() - 4));
        }
        parts.join("; ")
    }
}

fn job_state(s: &Snapshot, kind: AddonKind) -> JobState {
    let chart = s.get("HelmChart", "kube-system", kind.chart_name());
    let Some(chart) = chart else {
        return JobState::Pending;
    };
    let cond_true = |v: &Value, t: &str| {
        v.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    let Some(job) = s.get("Job", "kube-system", &kind.job_name()) else {
        return if cond_true(chart, "Failed") {
            JobState::Failed
        } else {
            JobState::Pending
        };
    };
    if cond_true(job, "Failed") || cond_true(chart, "Failed") {
        JobState::Failed
    } else if int(job, "/status/succeeded").unwrap_or(0) >= 1 || cond_true(job, "Complete") {
        JobState::Complete
    } else {
        JobState::Running
    }
}

/// Judge one add-on from a snapshot.
pub fn evaluate(s: &Snapshot, kind: AddonKind, traefik_ns: &str) -> AddonHealth {
    let job = job_state(s, kind);
    let mut problems = Vec::new();
    for w in wants(kind, traefik_ns) {
        let what = if w.namespace.is_empty() {
            format!("{} {}", w.kind, w.name)
        } else {
            format!("{} {}/{}", w.kind, w.namespace, w.name)
        };
        let found: Vec<&Value> = if w.prefix {
            s.with_prefix(w.kind, &w.namespace, &w.name)
        } else {
            s.get(w.kind, &w.namespace, &w.name).into_iter().collect()
        };
        if found.is_empty() {
            let what = if w.prefix { format!("{what}*") } else { what };
            problems.push(format!("{what} missing"));
            continue;
        }
        for o in found {
            if let Some(p) = workload_problem(w.kind, o) {
                let name = o["metadata"]["name"].as_str().unwrap_or(&w.name);
                problems.push(format!(
                    "{} {}/{} not ready ({p})",
                    w.kind, w.namespace, name
                ));
            }
        }
    }
    AddonHealth {
        addon: kind,
        job,
        problems,
    }
}

/// The command that prints the install Job's last log lines.
pub fn job_logs_command(kind: AddonKind) -> String {
    format!(
        "k3s kubectl logs job/{} -n kube-system --tail 20 2>&1",
        kind.job_name()
    )
}
