//! Resource types: the built-in table (what discovery serves) plus kinds from applied CRDs.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: String,
    pub group: String,
    /// The version objects are stored and served at first (the preferred one).
    pub version: String,
    /// Every served version (CRDs may serve several; the double stores one copy).
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub short: Vec<String>,
    pub namespaced: bool,
    pub categories: Vec<String>,
    /// Subresources: `status`, `scale`, and for pods `eviction`, `log`.
    pub subresources: Vec<String>,
    /// CRD `additionalPrinterColumns` of the served version (empty for built-ins).
    pub printer_columns: Vec<Value>,
}

impl KindInfo {
    /// `deployment.apps`, `namespace`: kubectl's name prefix in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_lowercase()
        } else {
            format!("{}.{}", self.kind.to_lowercase(), self.group)
        }
    }
    /// `deployments.apps`, `nodes`: the resource name in API errors.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }
}

// kind, group, version, plural, shortnames, namespaced, categories, subresources
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const BUILTIN: &[Row] = &[
    ("Node", "", "v1", "nodes", "no", false, "", "status,proxy"),
    ("Namespace", "", "v1", "namespaces", "ns", false, "", "status,finalize"),
    ("Pod", "", "v1", "pods", "po", true, "all", "status,eviction,log,binding,exec,attach,portforward,proxy,ephemeralcontainers,resize"),
    ("Secret", "", "v1", "secrets", "", true, "", ""),
    ("ConfigMap", "", "v1", "configmaps", "cm", true, "", ""),
    ("Service", "", "v1", "services", "svc", true, "all", "status,proxy"),
    ("ServiceAccount", "", "v1", "serviceaccounts", "sa", true, "", "token"),
    ("Endpoints", "", "v1", "endpoints", "ep", true, "", ""),
    ("Event", "", "v1", "events", "ev", true, "", ""),
    ("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims", "pvc", true, "", "status"),
    ("PersistentVolume", "", "v1", "persistentvolumes", "pv", false, "", "status"),
    ("ResourceQuota", "", "v1", "resourcequotas", "quota", true, "", "status"),
    ("LimitRange", "", "v1", "limitranges", "limits", true, "", ""),
    ("PodTemplate", "", "v1", "podtemplates", "", true, "", ""),
    ("ReplicationController", "", "v1", "replicationcontrollers", "rc", true, "all", "status,scale"),
    ("Deployment", "apps", "v1", "deployments", "deploy", true, "all", "status,scale"),
    ("DaemonSet", "apps", "v1", "daemonsets", "ds", true, "all", "status"),
    ("StatefulSet", "apps", "v1", "statefulsets", "sts", true, "all", "status,scale"),
    ("ReplicaSet", "apps", "v1", "replicasets", "rs", true, "all", "status,scale"),
    ("ControllerRevision", "apps", "v1", "controllerrevisions", "", true, "", ""),
    ("Job", "batch", "v1", "jobs", "", true, "all", "status"),
    ("CronJob", "batch", "v1", "cronjobs", "cj", true, "all", "status"),
    ("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers", "hpa", true, "all", "status"),
    ("CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions", "crd,crds", false, "api-extensions", "status"),
    ("StorageClass", "storage.k8s.io", "v1", "storageclasses", "sc", false, "", ""),
    ("CSIDriver", "storage.k8s.io", "v1", "csidrivers", "", false, "", ""),
    ("CSINode", "storage.k8s.io", "v1", "csinodes", "", false, "", ""),
    ("VolumeAttachment", "storage.k8s.io", "v1", "volumeattachments", "", false, "", "status"),
    ("ClusterRole", "rbac.authorization.k8s.io", "v1", "clusterroles", "", false, "", ""),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "", false, "", ""),
    ("Role", "rbac.authorization.k8s.io", "v1", "roles", "", true, "", ""),
    ("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings", "", true, "", ""),
    ("Ingress", "networking.k8s.io", "v1", "ingresses", "ing", true, "", "status"),
    ("IngressClass", "networking.k8s.io", "v1", "ingressclasses", "", false, "", ""),
    ("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", "netpol", true, "", ""),
    ("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", "", true, "", ""),
    ("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", "pdb", true, "", "status"),
    ("PriorityClass", "scheduling.k8s.io", "v1", "priorityclasses", "pc", false, "", ""),
    ("RuntimeClass", "node.k8s.io", "v1", "runtimeclasses", "", false, "", ""),
    ("Lease", "coordination.k8s.io", "v1", "leases", "", true, "", ""),
    ("APIService", "apiregistration.k8s.io", "v1", "apiservices", "", false, "api-extensions", "status"),
    ("MutatingWebhookConfiguration", "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "", false, "api-extensions", ""),
    ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "", false, "api-extensions", ""),
    ("CertificateSigningRequest", "certificates.k8s.io", "v1", "certificatesigningrequests", "csr", false, "", "status,approval"),
    // k3s's own CRDs (k3s `pkg/crd`, helm-controller), registered at start like k3s does.
    ("HelmChart", "helm.cattle.io", "v1", "helmcharts", "", true, "", "status"),
    ("HelmChartConfig", "helm.cattle.io", "v1", "helmchartconfigs", "hcc", true, "", ""),
    ("Addon", "k3s.cattle.io", "v1", "addons", "", true, "", ""),
    ("ETCDSnapshotFile", "k3s.cattle.io", "v1", "etcdsnapshotfiles", "", false, "", "status"),
];

fn split(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn builtin() -> Vec<KindInfo> {
    BUILTIN
        .iter()
        .map(|(k, g, v, p, s, n, c, sub)| KindInfo {
            kind: k.to_string(),
            group: g.to_string(),
            version: v.to_string(),
            versions: vec![v.to_string()],
            plural: p.to_string(),
            singular: k.to_lowercase(),
            short: split(s),
            namespaced: *n,
            categories: split(c),
            subresources: split(sub),
            printer_columns: vec![],
        })
        .collect()
}

/// The kind an applied CustomResourceDefinition serves (nothing until it is Established).
pub fn from_crd(crd: &Value) -> Option<KindInfo> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let vs = spec.get("versions").and_then(Value::as_array)?;
    let served: Vec<&Value> = vs
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .collect();
    let storage = vs
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| served.first().copied())?;
    let kind = names.get("kind")?.as_str()?.to_string();
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut subresources = vec![];
    if let Some(sub) = storage.get("subresources").and_then(Value::as_object) {
        subresources.extend(sub.keys().cloned());
    }
    Some(KindInfo {
        group: spec.get("group")?.as_str()?.to_string(),
        version: storage.get("name")?.as_str()?.to_string(),
        versions: served
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
            .collect(),
        plural: names.get("plural")?.as_str()?.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        short: strs(names.get("shortNames")),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        categories: strs(names.get("categories")),
        subresources,
        printer_columns: storage
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        kind,
    })
}

/// Finds a resource type by its plural name in a group.
pub fn by_resource<'a>(all: &'a [KindInfo], group: &str, plural: &str) -> Option<&'a KindInfo> {
    all.iter().find(|k| k.group == group && k.plural == plural)
}

/// Finds a kind from a manifest's apiVersion/kind.
pub fn by_kind<'a>(all: &'a [KindInfo], api_version: &str, kind: &str) -> Option<&'a KindInfo> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    all.iter()
        .find(|k| k.kind == kind && k.group == group && k.versions.iter().any(|v| v == version))
}

/// Finds a resource type by what a user types in the double's control ConfigMap: `deployment`.
pub fn resolve<'a>(all: &'a [KindInfo], name: &str) -> Option<&'a KindInfo> {
    let name = name.to_lowercase();
    all.iter().find(|k| {
        k.plural == name
            || k.singular == name
            || k.short.contains(&name)
            || k.kind.to_lowercase() == name
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_and_crd_kinds() {
        let all = builtin();
        assert_eq!(resolve(&all, "deploy").unwrap().kind, "Deployment");
        assert_eq!(by_resource(&all, "batch", "jobs").unwrap().kind, "Job");
        assert_eq!(
            by_kind(&all, "helm.cattle.io/v1", "HelmChart")
                .unwrap()
                .qualified(),
            "helmchart.helm.cattle.io"
        );
        assert!(by_kind(&all, "apps/v1beta1", "Deployment").is_none());
        let crd = json!({"spec": {"group": "traefik.io", "scope": "Namespaced",
            "names": {"kind": "IngressRoute", "plural": "ingressroutes", "singular": "ingressroute"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}}}]}});
        let k = from_crd(&crd).unwrap();
        assert_eq!(k.api_version(), "traefik.io/v1alpha1");
        assert!(k.has_status());
        assert!(k.namespaced);
    }
}
