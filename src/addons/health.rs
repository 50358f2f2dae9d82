//! What "healthy" means for each add-on (reference/addons.md §3.5, §4.6, §5.5, §6.5): the
//! newest helm release record is `deployed` with the config hash of the current
//! `helm-install-<name>` Job (what helm-controller itself checks, `chart.go`:646-656; a completed
//! Job alone proves little: klipper-helm runs without `--wait`, and `entry` exits 0 without
//! touching the release in some paths), that Job is complete for the chart version and values
//! written, the CRDs exist, and the add-on's own workloads are rolled out as `kubectl rollout
//! status` means it. Failures are read from the same snapshot: the install pod's terminated
//! attempts, a failed release, the chart's `Failed` condition, the workloads' pods. Everything is
//! read with one shell command ([`get_all`]) and judged by pure functions.
//!
//! Where helm-controller (v0.17.7, `pkg/controllers/chart/chart.go`) writes what this reads:
//! the config hash only on the Job's pod template, `spec.template.metadata.annotations
//! ["helmcharts.helm.cattle.io/configHash"] = "SHA256=<64 hex>"` (`hashObjects`, :1473-1501),
//! and the same value cut after `=` to 63 characters as the env `CONFIG_HASH` (:628-631,
//! :684-690); the Job's own metadata carries labels only (:854-860). klipper-helm labels the
//! release Secret with that value (`entry`:257-259). The values the Job installs are the
//! Secret `chart-values-<name>`, key `HelmChartValuesContent` = `spec.valuesContent`
//! (:1061-1086), applied in the same pass as the Job but before it (wrangler applies by kind
//! in order: Secret, ConfigMap, ServiceAccount, ClusterRoleBinding, Job), and a changed Job is
//! replaced, never patched (`reconcileJob`), so a Job seen after the Secret is the new one or
//! on its way out.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{AddonKind, HelmRelease, ManifestFile};

/// The kinds the health checks read whole, with one `kubectl get -A -o json`. CRDs are read
/// apart ([`GET_CRDS`]): with the platform installed they are ~10 MB of JSON.
pub const KINDS: &str =
    "csidrivers,storageclasses,ingressclasses,deployments,daemonsets,services,jobs,helmcharts,addons";

/// Marks a section of [`get_all`]'s output; the name follows on the same line.
const MARK: &str = "#bootstrap-";
/// Section names.
pub const NOW: &str = "now";
pub const VALUES: &str = "values";
pub const OBJECTS: &str = "objects";
pub const CRDS: &str = "crds";
pub const RELEASES: &str = "releases";
pub const HELM_PODS: &str = "helm-pods";
pub const POD_STATES: &str = "pods";
pub const WAITS: &str = "wait-for";

/// Every CRD's name and `Established` status, one `name<TAB>status` line each.
pub const GET_CRDS: &str = r#"k3s kubectl get customresourcedefinitions -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{.status.conditions[?(@.type=="Established")].status}{"\n"}{end}'"#;

/// helm's release records, metadata only: the apiserver's Table with each row's object
/// metadata (what `kubectl get` asks for by default, kubectl `pkg/cmd/get/get.go`
/// transformRequests; a record's data holds the whole chart, hundreds of KB). One line each:
/// `namespace name type data age labels`. helm's Secret driver labels them `owner=helm`,
/// `name`, `version`, `status` (helm `pkg/storage/driver/secrets.go`:259-266); klipper-helm
/// adds `helmcharts.helm.cattle.io/configHash` (`entry`:257-259).
pub const GET_RELEASES: &str = "k3s kubectl get secrets -A -l owner=helm --field-selector type=helm.sh/release.v1 --show-labels --no-headers";

/// helm-controller's values Secrets (type `helmcharts.helm.cattle.io/values`, chart.go:49,
/// :1061-1086), one `name sha256 sha256 times...` line each: the sha256 of the base64 text of
/// `HelmChartValuesContent` and of `values-01_HelmChart.yaml` (the key before v0.16.7), then
/// the times of its managed fields (when each writer last wrote it). The values never leave
/// the server; only their digests do.
pub const GET_VALUES: &str = r#"o=$(k3s kubectl get secrets -n kube-system --field-selector type=helmcharts.helm.cattle.io/values --show-managed-fields -o jsonpath='{range .items[*]}{.metadata.name}{"|"}{.data.HelmChartValuesContent}{"|"}{.data.values-01_HelmChart\.yaml}{"|"}{.metadata.managedFields[*].time}{"\n"}{end}' OPTS) && printf '%s\n' "$o" | while IFS='|' read -r n a b t; do [ -n "$n" ] && printf '%s %s %s %s\n' "$n" "$(printf '%s' "$a" | sha256sum | cut -c1-64)" "$(printf '%s' "$b" | sha256sum | cut -c1-64)" "$t"; done; true"#;

/// helm-controller's Job pods (label `helmcharts.helm.cattle.io/chart`, chart.go:866-868).
pub const GET_HELM_PODS: &str =
    "k3s kubectl get pods -n kube-system -l helmcharts.helm.cattle.io/chart -o json";

/// One pod's state in one line, as kubectl's jsonpath prints it for one object: `namespace
/// name ownerKind/ownerName phase containers`, where each container is
/// `name:ready:reason:restarts` (init containers prefixed `init-`).
pub const POD_STATE: &str = r#"{.metadata.namespace}{"\t"}{.metadata.name}{"\t"}{.metadata.ownerReferences[0].kind}{"/"}{.metadata.ownerReferences[0].name}{"\t"}{.status.phase}{"\t"}{range .status.initContainerStatuses[*]}init-{.name}:{.ready}:{.state.waiting.reason}{.state.terminated.reason}:{.restartCount} {end}{range .status.containerStatuses[*]}{.name}:{.ready}:{.state.waiting.reason}{.state.terminated.reason}:{.restartCount} {end}{"\n"}"#;

/// Every pod's [`POD_STATE`] line.
pub fn get_pod_states() -> String {
    format!("k3s kubectl get pods -A -o jsonpath='{{range .items[*]}}{POD_STATE}{{end}}'")
}

fn mark(name: &str) -> String {
    format!("printf '\\n{MARK}{name}\\n'")
}

/// One read of everything the health checks look at, in sections: the server's clock, the
/// values Secrets' digests (read before the Jobs: a Job seen after its Secret is the one
/// made for it), `kubectl get` of [`KINDS`] (plus `extra_kinds`), the CRDs, the release
/// records, the helm pods, every pod's state, then each of `waits` (the charts' `wait_for`
/// resources, `Kind` or `Kind.group`). A resource whose CRD does not exist yet reads as no
/// objects.
pub fn get_all_with(extra_kinds: &str, opts: &str, waits: &[String]) -> String {
    let mut out = format!(
        "printf '{MARK}{NOW}\\n' && date +%s && {} && {{ {}; }} && {} && k3s kubectl get {extra_kinds}{KINDS} -A -o json {opts} && {} && {GET_CRDS} {opts} && {} && {GET_RELEASES} {opts} && {} && {GET_HELM_PODS} {opts} && {} && {} {opts}",
        mark(VALUES),
        GET_VALUES.replace("OPTS", opts),
        mark(OBJECTS),
        mark(CRDS),
        mark(RELEASES),
        mark(HELM_PODS),
        mark(POD_STATES),
        get_pod_states(),
    );
    for w in waits {
        out.push_str(&format!(
            " && {} && {{ k3s kubectl get {} -A -o json {opts} 2>/dev/null || echo '{{\"items\": []}}'; }}",
            mark(WAITS),
            crate::ssh::sh_quote(w)
        ));
    }
    out
}

/// [`get_all_with`] for the health kinds alone.
pub fn get_all(waits: &[String]) -> String {
    get_all_with("", "", waits)
}

/// The sections of [`get_all`]'s output, in order (a section may come more than once). Text
/// without marks is one `objects` section (a bare `kubectl get -o json`).
pub fn sections(text: &str) -> Vec<(&str, String)> {
    if !text.lines().any(|l| l.starts_with(MARK)) {
        return vec![(OBJECTS, text.to_string())];
    }
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(MARK) {
            out.push((name.trim(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The `kubectl get -o json` List of [`get_all`]'s output.
pub fn objects_part(text: &str) -> String {
    sections(text)
        .into_iter()
        .find(|(n, _)| *n == OBJECTS)
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// One helm release record (metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub namespace: String,
    pub name: String,
    pub revision: u64,
    pub status: String,
    pub config_hash: String,
}

impl ReleaseRecord {
    /// One line of [`GET_RELEASES`]: `namespace name type data age labels`.
    fn from_table_line(line: &str) -> Option<ReleaseRecord> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return None;
        }
        let labels: BTreeMap<&str, &str> = f[f.len() - 1]
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if labels.get("owner") != Some(&"helm") {
            return None;
        }
        Some(ReleaseRecord {
            namespace: f[0].to_string(),
            name: labels.get("name")?.to_string(),
            revision: labels.get("version")?.parse().ok()?,
            status: labels.get("status").unwrap_or(&"").to_string(),
            config_hash: labels
                .get(CONFIG_HASH_KEY)
                .copied()
                .unwrap_or("")
                .to_string(),
        })
    }
}

/// A pod's state as [`POD_STATE`] prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    /// `Kind/name` of its controller (`/` for none).
    pub owner: String,
    pub phase: String,
    /// (container, ready, waiting or terminated reason, restarts)
    pub containers: Vec<(String, bool, String, u64)>,
}

impl PodState {
    fn parse(line: &str) -> Option<PodState> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 || f[1].is_empty() {
            return None;
        }
        let containers = f
            .get(4)
            .unwrap_or(&"")
            .split_whitespace()
            .filter_map(|c| {
                let p: Vec<&str> = c.split(':').collect();
                (p.len() == 4).then(|| {
                    (
                        p[0].to_string(),
                        p[1] == "true",
                        p[2].to_string(),
                        p[3].parse().unwrap_or(0),
                    )
                })
            })
            .collect();
        Some(PodState {
            namespace: f[0].to_string(),
            name: f[1].to_string(),
            owner: f[2].to_string(),
            phase: f[3].to_string(),
            containers,
        })
    }

    /// Every container ready (init containers done).
    pub fn ready(&self) -> bool {
        self.phase == "Running"
            && self
                .containers
                .iter()
                .all(|(n, r, why, _)| *r || (n.starts_with("init-") && why == "Completed"))
    }

    /// Why it is not ready, in the kubelet's words: `CrashLoopBackOff (3 restarts)`.
    pub fn reason(&self) -> String {
        let bad = self.containers.iter().find(|(n, r, why, _)| {
            !(*r || why.is_empty() || (n.starts_with("init-") && why == "Completed"))
        });
        match bad {
            Some((n, _, why, restarts)) => {
                let init = if n.starts_with("init-") {
                    "init container: "
                } else {
                    ""
                };
                if *restarts > 0 {
                    format!("{init}{why} ({restarts} restarts)")
                } else {
                    format!("{init}{why}")
                }
            }
            None if self.phase != "Running" => self.phase.clone(),
            None => "not ready".into(),
        }
    }
}

/// What [`GET_VALUES`] says of one `chart-values-<name>` Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuesSecret {
    /// [`values_digest`] of `HelmChartValuesContent`.
    pub content: String,
    /// Of `values-01_HelmChart.yaml` (helm-controller before v0.16.7).
    pub legacy: String,
    /// The latest time of its managed fields (unix seconds): when it was last written.
    pub written: Option<i64>,
}

/// Objects by (kind, API group, namespace, name), helm's release records, the values
/// Secrets' digests and every pod's state.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    objects: BTreeMap<(String, String, String, String), Value>,
    releases: Vec<ReleaseRecord>,
    /// Whether the output had the release records at all (an old reader did not ask).
    has_releases: bool,
    /// `chart-values-<name>` → digests of its values keys and when it was last written.
    values: Option<BTreeMap<String, ValuesSecret>>,
    pods: Vec<PodState>,
    /// The server's clock (unix seconds) when it was read.
    pub now: Option<i64>,
}

/// The API group of an object's `apiVersion` ("" for the core group).
fn group_of(o: &Value) -> String {
    o["apiVersion"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .map(|(g, _)| g.to_string())
        .unwrap_or_default()
}

impl Snapshot {
    /// Parse [`get_all`]'s output, or a bare `kubectl get ... -o json` (a List).
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        let mut s = Snapshot::default();
        for (name, body) in sections(text) {
            match name {
                NOW => s.now = body.trim().parse().ok(),
                OBJECTS | WAITS | HELM_PODS if !body.trim().is_empty() => s.add_list(&body)?,
                CRDS => {
                    for line in body.lines() {
                        let (n, est) = line.split_once('\t').unwrap_or((line, ""));
                        if n.trim().is_empty() {
                            continue;
                        }
                        let mut crd = serde_json::json!({"apiVersion": "apiextensions.k8s.io/v1",
                            "kind": "CustomResourceDefinition", "metadata": {"name": n.trim()}});
                        if !est.trim().is_empty() {
                            crd["status"] = serde_json::json!({"conditions": [{"type": "Established", "status": est.trim()}]});
                        }
                        s.insert(crd);
                    }
                }
                RELEASES => {
                    s.has_releases = true;
                    s.releases
                        .extend(body.lines().filter_map(ReleaseRecord::from_table_line));
                }
                VALUES => {
                    let v = s.values.get_or_insert_with(BTreeMap::new);
                    for line in body.lines() {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        if f.len() >= 3 {
                            let written = f[3..].iter().filter_map(|t| epoch(t)).max();
                            v.insert(
                                f[0].to_string(),
                                ValuesSecret {
                                    content: f[1].to_string(),
                                    legacy: f[2].to_string(),
                                    written,
                                },
                            );
                        }
                    }
                }
                POD_STATES => s.pods.extend(body.lines().filter_map(PodState::parse)),
                _ => {}
            }
        }
        Ok(s)
    }

    fn add_list(&mut self, json: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| format!("could not read `kubectl get -o json`: {e}"))?;
        let items = match v.get("items").and_then(Value::as_array) {
            Some(i) => i.clone(),
            None => vec![v],
        };
        for o in items {
            self.insert(o);
        }
        Ok(())
    }

    fn insert(&mut self, o: Value) {
        let kind = o["kind"].as_str().unwrap_or("").to_string();
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.objects.insert((kind, group_of(&o), ns, name), o);
    }

    /// The newest release record of `name` in `namespace` (helm-controller `latestRelease`).
    pub fn latest_release(&self, namespace: &str, name: &str) -> Option<&ReleaseRecord> {
        self.releases
            .iter()
            .filter(|r| r.namespace == namespace && r.name == name)
            .max_by_key(|r| r.revision)
    }

    /// Every pod's state, as read.
    pub fn pods(&self) -> &[PodState] {
        &self.pods
    }

    /// Every release record of `name`, in any namespace.
    pub fn releases_named(&self, name: &str) -> Vec<&ReleaseRecord> {
        self.releases.iter().filter(|r| r.name == name).collect()
    }

    /// The object of `kind` (of any API group) named `name` in `ns`.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|((k, _, n, x), _)| k == kind && n == ns && x == name)
            .map(|(_, v)| v)
    }

    /// The object of `kind` in API group `group` (any group when `None`).
    fn get_in(&self, kind: &str, group: Option<&str>, ns: &str, name: &str) -> Option<&Value> {
        match group {
            None => self.get(kind, ns, name),
            Some(g) => self.objects.get(&(
                kind.to_string(),
                g.to_string(),
                ns.to_string(),
                name.to_string(),
            )),
        }
    }

    fn with_prefix(&self, kind: &str, ns: &str, prefix: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((k, _, n, name), _)| k == kind && n == ns && name.starts_with(prefix))
            .map(|(_, v)| v)
            .collect()
    }

    /// Whether the deploy controller applied this exact file content.
    pub fn file_applied(&self, f: &ManifestFile) -> bool {
        self.get("Addon", "kube-system", f.addon_name())
            .and_then(|a| a["spec"]["checksum"].as_str())
            == Some(f.sha256().as_str())
    }

    /// The pods a workload runs: owned by it, or by one of its ReplicaSets
    /// (`<deployment>-<pod-template-hash>`).
    fn pods_of(&self, kind: &str, ns: &str, name: &str) -> Vec<&PodState> {
        self.pods
            .iter()
            .filter(|p| p.namespace == ns)
            .filter(|p| {
                let (k, owner) = p.owner.split_once('/').unwrap_or(("", ""));
                match kind {
                    "Deployment" => {
                        k == "ReplicaSet" && owner.rsplit_once('-').is_some_and(|(d, _)| d == name)
                    }
                    _ => k == kind && owner == name,
                }
            })
            .collect()
    }
}

/// The release label and pod-template annotation helm-controller uses for the config hash
/// (chart.go:55).
pub const CONFIG_HASH_KEY: &str = "helmcharts.helm.cattle.io/configHash";

/// The digest [`GET_VALUES`] prints for values content `values`: sha256 of its base64 text
/// (a Secret's data as the API shows it).
pub fn values_digest(values: &str) -> String {
    use base64::Engine;
    crate::k3s::sha256_hex(
        base64::engine::general_purpose::STANDARD
            .encode(values.as_bytes())
            .as_bytes(),
    )
}

/// A workload or object a release must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The object's `kind`.
    pub kind: String,
    /// Empty for a cluster-scoped object.
    pub namespace: String,
    /// The object's API group, when the inventory names one (`Kind.group`): two kinds of the
    /// same name in different groups are then told apart.
    pub group: Option<String>,
    /// A name, or a prefix when it ends with '-' and `prefix` is set.
    pub name: String,
    pub prefix: bool,
}

fn want(kind: &str, ns: &str, name: &str) -> Want {
    Want {
        kind: kind.to_string(),
        namespace: ns.to_string(),
        group: None,
        name: name.to_string(),
        prefix: false,
    }
}

fn crd(name: &str) -> Want {
    want("CustomResourceDefinition", "", name)
}

/// What each add-on must have once installed. `traefik_ns` is the Traefik namespace.
pub fn addon_wants(kind: AddonKind, traefik_ns: &str) -> Vec<Want> {
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
                name: "engine-image-ei-".into(),
                prefix: true,
                ..want("DaemonSet", ns, "")
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

/// Why a workload is not rolled out, in the terms of `kubectl rollout status` (kubectl
/// `pkg/polymorphichelpers/rollout_status.go`:59-152), or `None` when it is. A new
/// ReplicaSet's pods that crash while the old pod stays Ready leave `updatedReplicas`
/// available short of the spec: not rolled out, though every counted pod is ready.
pub(crate) fn workload_problem(kind: &str, o: &Value) -> Option<String> {
    let generation = int(o, "/metadata/generation").unwrap_or(0);
    let observed = int(o, "/status/observedGeneration").unwrap_or(0);
    let unobserved =
        || (generation > observed).then(|| "the new spec is not observed yet".to_string());
    match kind {
        "Deployment" => {
            if let Some(p) = unobserved() {
                return Some(p);
            }
            let progressing = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"));
            if progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
                return Some("it exceeded its progress deadline".into());
            }
            let want = int(o, "/spec/replicas").unwrap_or(1);
            let replicas = int(o, "/status/replicas").unwrap_or(0);
            let updated = int(o, "/status/updatedReplicas").unwrap_or(0);
            let available = int(o, "/status/availableReplicas").unwrap_or(0);
            if updated < want {
                Some(format!("{updated} of {want} new replicas updated"))
            } else if replicas > updated {
                Some(format!(
                    "{} old replicas pending termination",
                    replicas - updated
                ))
            } else if available < updated {
                Some(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                None
            }
        }
        "StatefulSet" => {
            let want = int(o, "/spec/replicas").unwrap_or(1);
            let ready = int(o, "/status/readyReplicas").unwrap_or(0);
            let on_delete =
                o.pointer("/spec/updateStrategy/type") == Some(&Value::from("OnDelete"));
            if !on_delete && (observed == 0 || generation > observed) {
                return Some("the new spec is not observed yet".into());
            }
            if ready < want {
                return Some(format!("{ready}/{want} pods ready"));
            }
            if on_delete {
                return None;
            }
            let updated = int(o, "/status/updatedReplicas").unwrap_or(0);
            match int(o, "/spec/updateStrategy/rollingUpdate/partition") {
                Some(p) => (updated < want - p)
                    .then(|| format!("{updated} of {} new pods updated", want - p)),
                None => {
                    let cur = o["status"]["currentRevision"].as_str().unwrap_or("");
                    let upd = o["status"]["updateRevision"].as_str().unwrap_or("");
                    (cur != upd).then(|| format!("{updated} pods at revision {upd}"))
                }
            }
        }
        "DaemonSet" => {
            let on_delete =
                o.pointer("/spec/updateStrategy/type") == Some(&Value::from("OnDelete"));
            let desired = match int(o, "/status/desiredNumberScheduled") {
                None => return Some("not scheduled yet".into()),
                Some(d) => d,
            };
            let available = int(o, "/status/numberAvailable").unwrap_or(0);
            if on_delete {
                return (available < desired)
                    .then(|| format!("{available} of {desired} pods available"));
            }
            if let Some(p) = unobserved() {
                return Some(p);
            }
            let updated = int(o, "/status/updatedNumberScheduled").unwrap_or(0);
            if updated < desired {
                Some(format!("{updated} of {desired} new pods updated"))
            } else if available < desired {
                Some(format!("{available} of {desired} updated pods available"))
            } else {
                None
            }
        }
        // Anything else with conditions (a CRD's `Established`, an operator's `Ready`, a
        // Job's `Complete`): the first of those it carries must be True.
        _ => {
            let conds = o.pointer("/status/conditions").and_then(Value::as_array)?;
            ["Ready", "Available", "Established", "Complete"]
                .iter()
                .find_map(|t| conds.iter().find(|c| c["type"] == *t))
                .filter(|c| c["status"] != "True")
                .map(|c| {
                    let why = c["message"].as_str().or(c["reason"].as_str()).unwrap_or("");
                    format!(
                        "{} is {}{}",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or("Unknown"),
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    )
                })
        }
    }
}

/// State of the helm-controller Job of an add-on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// No HelmChart or no Job yet, or only the Job of an earlier chart config.
    Pending,
    Running,
    Complete,
    Failed,
}

/// A failed attempt of the install Job, as its pod shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// The pod (one per Job; its container restarts, `restartPolicy: OnFailure`).
    pub pod: String,
    /// Failed attempts so far (the container's restarts, or 1 for a terminated container).
    pub failures: u64,
    /// What klipper-helm wrote to the termination log (`lastState.terminated.message`).
    pub message: String,
    /// When the failed attempt ended (server clock, unix seconds), when known.
    #[serde(skip)]
    pub finished: Option<i64>,
}

/// One HelmChart's health (an add-on's or a chart's).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddonHealth {
    pub chart: HelmRelease,
    pub job: JobState,
    /// The newest release record: (revision, status).
    pub release: Option<(u64, String)>,
    /// The newest release carries the current Job's config hash.
    pub release_current: bool,
    /// The last failed attempt of the current install Job, if any.
    pub failed_attempt: Option<Attempt>,
    /// The HelmChart's `Failed` condition when it means the Job used up its retries (or the
    /// chart is refused): helm-controller will not try again by itself.
    pub chart_failed: Option<String>,
    /// A `Failed` condition helm-controller clears by itself on its next pass ("Job create
    /// failed", chart.go:376-390): shown, not a reason to stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_note: Option<String>,
    /// What is missing or not ready (empty = healthy).
    pub problems: Vec<String>,
    /// When the install Job completed (server clock, unix seconds): helm is done with it.
    #[serde(skip)]
    pub job_completed: Option<i64>,
}

impl AddonHealth {
    pub fn healthy(&self) -> bool {
        self.job == JobState::Complete
            && self.release_current
            && self.release.as_ref().is_some_and(|(_, s)| s == "deployed")
            && self.chart_failed.is_none()
            && self.problems.is_empty()
    }

    /// The release is failed (with the current config, or under `abort` with any): what
    /// helm-controller's next attempt does with it depends on the failure policy.
    pub fn release_failed(&self) -> bool {
        self.release.as_ref().is_some_and(|(_, s)| s == "failed")
    }

    /// helm-controller will not get this chart installed without the operator: the Job used
    /// up its retries, or a failed release waits under `failurePolicy: abort`.
    pub fn stuck(&self) -> bool {
        self.chart_failed.is_some()
            || self.job == JobState::Failed
            || (self.release_failed() && self.chart.failure_policy == "abort")
    }

    /// One line: `healthy` or the first problems.
    pub fn summary(&self) -> String {
        if self.healthy() {
            return "healthy".into();
        }
        let mut parts = Vec::new();
        if let Some(m) = &self.chart_failed {
            parts.push(format!(
                "HelmChart kube-system/{} failed: {m}",
                self.chart.name
            ));
        }
        if let Some(m) = &self.chart_note {
            parts.push(format!("helm-controller: {m} (it tries again by itself)"));
        }
        match self.job {
            JobState::Pending => parts.push(
                "waiting for helm-controller's install Job for the current chart".to_string(),
            ),
            JobState::Running => {
                let mut p = format!("Job kube-system/{} running", self.chart.job_name());
                if let Some(a) = &self.failed_attempt {
                    p.push_str(&format!(
                        " ({} failed attempt{}: {})",
                        a.failures,
                        if a.failures == 1 { "" } else { "s" },
                        a.message.trim()
                    ));
                }
                parts.push(p)
            }
            JobState::Failed => {
                parts.push(format!("Job kube-system/{} failed", self.chart.job_name()))
            }
            JobState::Complete => {}
        }
        match &self.release {
            None if self.job == JobState::Complete => {
                parts.push(format!("no helm release {}", self.chart.name))
            }
            Some((rev, status)) if status != "deployed" => parts.push(format!(
                "helm release {} revision {rev} is {status}",
                self.chart.name
            )),
            Some((rev, _)) if !self.release_current && self.job == JobState::Complete => parts
                .push(format!(
                    "helm release {} revision {rev} is not of the current chart config",
                    self.chart.name
                )),
            _ => {}
        }
        parts.extend(self.problems.iter().take(4).cloned());
        if self.problems.len() > 4 {
            parts.push(format!("{} more", self.problems.len() - 4));
        }
        parts.join("; ")
    }
}

fn cond<'a>(v: &'a Value, t: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == t && c["status"] == "True")
}

fn env<'a>(job: &'a Value, name: &str) -> Option<&'a str> {
    job.pointer("/spec/template/spec/containers/0/env")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// The config hash helm-controller gave the Job, as klipper-helm labels the release with it:
/// the pod template's annotation `SHA256=<hex>` (chart.go:1500) cut after `=` to 63
/// characters (chart.go:628-631), else the env `CONFIG_HASH` it injects from it (:684-690).
/// Never the Job's own metadata: helm-controller writes none there (:854-860).
fn job_config_hash(job: &Value) -> String {
    let a = job
        .pointer("/spec/template/metadata/annotations")
        .and_then(|a| a.get(CONFIG_HASH_KEY))
        .and_then(Value::as_str)
        .unwrap_or("");
    if a.is_empty() {
        return env(job, "CONFIG_HASH").unwrap_or("").to_string();
    }
    let h = a.split_once('=').map(|(_, h)| h).unwrap_or(a);
    h.chars().take(63).collect()
}

/// The Job is the one helm-controller made for the chart written: its `VERSION` is the
/// chart's (helm-controller replaces it within moments of a change; until then the old Job
/// and release would look current), and, when the values Secrets were read, helm-controller
/// holds the values written (`chart-values-<name>`; it applies that Secret before the Job in
/// the same pass, so a Job read after it is the new one). `Err` says what is not current.
fn job_matches_chart(
    s: &Snapshot,
    job: &Value,
    chart: &Value,
    rel: &HelmRelease,
) -> Result<(), String> {
    if job.pointer("/metadata/deletionTimestamp").is_some() {
        return Err("the previous Job is being replaced".into());
    }
    let want_version = chart["spec"]["version"].as_str().unwrap_or("");
    if env(job, "VERSION").unwrap_or("") != want_version {
        return Err(format!(
            "the Job is not yet the one for version {want_version}"
        ));
    }
    if let (Some(values), Some(want)) = (&s.values, &rel.values_digest) {
        let secret = format!("chart-values-{}", rel.name);
        match values.get(&secret) {
            Some(v) if v.content == *want || v.legacy == *want => {
                // A Job made before the Secret last changed is the previous values' (the
                // Secret goes first in a pass, the Job is replaced after it).
                let made = job["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(epoch);
                if let (Some(made), Some(written)) = (made, v.written) {
                    if made < written {
                        return Err(
                            "the Job is older than helm-controller's copy of the values".into()
                        );
                    }
                }
            }
            _ => return Err("helm-controller has not taken the new values yet".into()),
        }
    }
    Ok(())
}

/// An RFC 3339 time as the API writes it (`2026-12-03T12:00:02Z`) in unix seconds.
pub fn epoch(t: &str) -> Option<i64> {
    let t = t.trim();
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = time.trim_end_matches('Z');
    let time = time.split(['+', '.']).next()?;
    let mut h = time.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (
        h.next()?.parse().ok()?,
        h.next()?.parse().ok()?,
        h.next()?.parse().ok()?,
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// The Job's pod (helm-controller's pods restart in place, `restartPolicy: OnFailure`).
fn job_pods<'a>(s: &'a Snapshot, job: &Value) -> Vec<&'a Value> {
    let uid = job["metadata"]["uid"].as_str();
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    s.objects
        .iter()
        .filter(|((k, _, ns, _), _)| k == "Pod" && ns == "kube-system")
        .map(|(_, p)| p)
        .filter(|p| {
            let owner = &p["metadata"]["ownerReferences"][0];
            owner["name"] == name && (uid.is_none() || owner["uid"].as_str() == uid)
        })
        .collect()
}

/// The last failed attempt of `job`'s pod.
fn failed_attempt(s: &Snapshot, job: &Value) -> Option<Attempt> {
    job_pods(s, job)
        .into_iter()
        .filter_map(|p| {
            let c = &p["status"]["containerStatuses"][0];
            let restarts = c["restartCount"].as_u64().unwrap_or(0);
            let term = if c["state"]["terminated"]["exitCode"].as_i64().unwrap_or(0) != 0 {
                Some((&c["state"]["terminated"], restarts + 1))
            } else if c["lastState"]["terminated"]["exitCode"]
                .as_i64()
                .unwrap_or(0)
                != 0
            {
                Some((&c["lastState"]["terminated"], restarts))
            } else {
                None
            }?;
            Some(Attempt {
                pod: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                failures: term.1.max(1),
                message: term.0["message"].as_str().unwrap_or("").trim().to_string(),
                finished: term.0["finishedAt"].as_str().and_then(epoch),
            })
        })
        .max_by_key(|a| a.failures)
}

/// Judge one HelmChart from a snapshot.
pub fn evaluate(s: &Snapshot, rel: &HelmRelease) -> AddonHealth {
    let release_ns = rel.namespace.as_str();
    let chart = s.get("HelmChart", "kube-system", &rel.name);
    let job = s.get("Job", "kube-system", &rel.job_name());
    // "Job create failed" is set on any error of a pass (a List that failed, a ConfigMap the
    // API refused) and cleared by the next one (chart.go:376-390); the others stay until
    // someone acts (:319-358).
    let failed = chart.and_then(|c| cond(c, "Failed"));
    let transient = failed.is_some_and(|c| c["reason"] == "Job create failed");
    let failed_msg = failed.map(|c| c["message"].as_str().unwrap_or("Failed").to_string());
    let mut pending_why = None;
    let job_state = match (chart, job) {
        (None, _) | (_, None) => JobState::Pending,
        (Some(c), Some(j)) => {
            if let Err(why) = job_matches_chart(s, j, c, rel) {
                // helm-controller has not replaced the Job for the chart written yet: what
                // the old one did (failed included) is no verdict on the new chart.
                pending_why = Some(why);
                JobState::Pending
            } else if cond(j, "Failed").is_some() {
                JobState::Failed
            } else if j["status"]["succeeded"].as_i64().unwrap_or(0) >= 1
                || cond(j, "Complete").is_some()
            {
                JobState::Complete
            } else {
                JobState::Running
            }
        }
    };
    // The chart's `Failed` condition speaks of the Job there is; while that is the old chart's,
    // helm-controller replaces it (chart.go:338-375) and the condition with it.
    let (chart_failed, chart_note) = if transient || pending_why.is_some() {
        (None, failed_msg)
    } else {
        (failed_msg, None)
    };
    let latest = s.latest_release(release_ns, &rel.name);
    let release_current = match (latest, job) {
        // helm-controller from v0.17.4 (v0.16.23) hashes the Job's config and klipper-helm
        // (v0.13.0+) labels the release with it; an older pair labels nothing, and then the
        // newest release is all there is to judge.
        (Some(r), Some(j)) if !job_config_hash(j).is_empty() && env(j, "CONFIG_HASH").is_some() => {
            !r.config_hash.is_empty() && r.config_hash == job_config_hash(j)
        }
        (Some(_), Some(_)) => true,
        // A reader that did not ask for the records judges by the Job alone.
        _ => !s.has_releases && job_state == JobState::Complete,
    };
    let release = latest
        .map(|r| (r.revision, r.status.clone()))
        .or_else(|| (!s.has_releases).then(|| (0, "deployed".to_string())));
    let failed_attempt = match (job_state.clone(), job) {
        (JobState::Running | JobState::Failed, Some(j)) => failed_attempt(s, j),
        _ => None,
    };
    let job_completed = match (&job_state, job) {
        (JobState::Complete, Some(j)) => j["status"]["completionTime"].as_str().and_then(epoch),
        _ => None,
    };
    let mut problems = Vec::new();
    if let Some(why) = pending_why {
        problems.push(why);
    }
    for w in &rel.wants {
        let kind = match &w.group {
            Some(g) => format!("{}.{g}", w.kind),
            None => w.kind.clone(),
        };
        let what = if w.namespace.is_empty() {
            format!("{kind} {}", w.name)
        } else {
            format!("{kind} {}/{}", w.namespace, w.name)
        };
        let found: Vec<&Value> = if w.prefix {
            s.with_prefix(&w.kind, &w.namespace, &w.name)
        } else {
            s.get_in(&w.kind, w.group.as_deref(), &w.namespace, &w.name)
                .into_iter()
                .collect()
        };
        if found.is_empty() {
            let what = if w.prefix { format!("{what}*") } else { what };
            problems.push(format!("{what} missing"));
            continue;
        }
        for o in found {
            if let Some(p) = workload_problem(&w.kind, o) {
                let name = o["metadata"]["name"].as_str().unwrap_or(&w.name);
                let mut line = format!("{} {}/{} not ready ({p})", w.kind, w.namespace, name);
                if !s.pods.is_empty() {
                    let bad: Vec<String> = s
                        .pods_of(&w.kind, &w.namespace, name)
                        .into_iter()
                        .filter(|p| !p.ready())
                        .take(3)
                        .map(|p| format!("pod {}: {}", p.name, p.reason()))
                        .collect();
                    if !bad.is_empty() {
                        line.push_str(&format!(": {}", bad.join(", ")));
                    }
                }
                problems.push(line);
            }
        }
    }
    AddonHealth {
        chart: rel.clone(),
        job: job_state,
        release,
        release_current,
        failed_attempt,
        chart_failed,
        chart_note,
        problems,
        job_completed,
    }
}

/// Indent log lines for an error message (`(no log)` when there are none).
pub fn indent(text: &str) -> String {
    let t: Vec<String> = text
        .trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect();
    if t.is_empty() {
        "    (no log)".into()
    } else {
        t.join("\n")
    }
}

/// What Helm 4 (v4.1.4, the Helm of klipper-helm v0.13.3) prints when a hook did not finish
/// within `--timeout`: the status waiter's `resource Job/<ns>/<name> not ready. status:
/// InProgress, ...` joined with `context deadline exceeded` (helm `pkg/kube/statuswait.go`:
/// 201-216); Helm 3 said `timed out waiting for the condition`.
fn hook_timed_out(text: &str) -> bool {
    text.contains("context deadline exceeded")
        || (text.contains("not ready. status: InProgress") && text.contains("failed post-"))
        || text.contains("timed out waiting for the condition")
}

/// The error for an add-on whose install failed: what failed, the pod's log (`logs`), and the
/// exact way out. Pure.
pub fn failure_report(h: &AddonHealth, logs: &str) -> String {
    let name = h.chart.name.as_str();
    let ns = h.chart.namespace.as_str();
    let policy = h.chart.failure_policy.as_str();
    let mut head = format!("{}: helm-controller could not install the chart", h.chart);
    if let Some(a) = &h.failed_attempt {
        head.push_str(&format!(
            " (pod kube-system/{}, failed attempt {}",
            a.pod, a.failures
        ));
        if !a.message.is_empty() {
            head.push_str(&format!(": \"{}\"", a.message.lines().last().unwrap_or("")));
        }
        head.push(')');
    }
    if let Some((rev, status)) = &h.release {
        if status != "deployed" {
            head.push_str(&format!("; helm release {name} revision {rev} is {status}"));
        }
    }
    let mut out = head;
    if !logs.trim().is_empty() {
        out.push_str(&format!(":\n{}", indent(logs)));
    }
    let mut hints = Vec::new();
    let text = format!(
        "{logs}\n{}",
        h.failed_attempt
            .as_ref()
            .map(|a| a.message.as_str())
            .unwrap_or("")
    );
    if hook_timed_out(&text) {
        let limit = h.chart.timeout.as_deref().unwrap_or("5m (helm's default)");
        hints.push(format!(
            "a hook of the chart did not finish within helm's timeout ({limit}){}; the usual cause is image pulls on a slow link: see `k3s kubectl -n {ns} get pods` and `k3s kubectl -n {ns} describe pods`",
            if h.chart.addon == Some(AddonKind::CertManager) {
                " (cert-manager's startupapicheck waits for the API and its webhook)"
            } else {
                ""
            }
        ));
    }
    if text.contains("not a valid chart repository")
        || text.contains("cannot be reached")
        || (text.contains("version") && text.contains("not found in"))
    {
        hints.push(format!(
            "the server could not fetch the chart: check that the chart version exists and its repository is reachable from the servers, or give `chart_archive` in {}",
            h.chart.inventory_place()
        ));
    }
    let fix = if h.chart_failed.is_some() || h.job == JobState::Failed {
        format!(
            "the Job used up its retries and helm-controller makes no new one for an unchanged chart: remove the cause, then `k3s kubectl -n kube-system delete job {}` on a server (helm-controller creates it again) and run `bootstrap up`",
            h.chart.job_name()
        )
    } else if policy == "abort"
        && (h.release_failed() || text.contains("waiting for operator intervention"))
    {
        let rev = h.release.as_ref().map(|(r, _)| *r).unwrap_or(1);
        let why = match h.chart.addon {
            Some(AddonKind::Longhorn) => "a reinstall would delete its volumes".to_string(),
            _ => format!("as {} says", h.chart.inventory_place()),
        };
        format!(
            "failurePolicy is abort for {name} ({why}), so helm-controller waits for you: remove the cause, then on a server `k3s kubectl -n {ns} delete secret sh.helm.release.v1.{name}.v{rev}` (the failed release record; helm-controller then upgrades from the revision before it, or installs again over what is there) and run `bootstrap up`"
        )
    } else {
        let how = if policy == "retry" {
            "it upgrades a failed release again"
        } else {
            "it uninstalls a failed release and installs again"
        };
        format!(
            "helm-controller tries again by itself (failurePolicy {policy}: {how}), next after the kubelet's back-off of at most 5 minutes: remove the cause; this run waits for that attempt until its deadline, and `bootstrap up` again waits for the next"
        )
    };
    for hint in hints {
        out.push_str(&format!("\n  {hint}"));
    }
    out.push_str(&format!("\n  {fix}"));
    out
}

/// The command that prints the install Job's last log lines.
pub fn job_logs_command(rel: &HelmRelease) -> String {
    format!(
        "k3s kubectl logs job/{} -n kube-system --tail 20 2>&1",
        rel.job_name()
    )
}
