//! Resource types: the built-in table plus kinds registered by applied CRDs.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: String,
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub short: Vec<String>,
    pub namespaced: bool,
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
    /// `deployments.apps`, `nodes`: kubectl's resource name in errors.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const BUILTIN: &[(&str, &str, &str, &str, &str, bool)] = &[
    // kind, group, version, plural, shortnames, namespaced
    ("Node", "", "v1", "nodes", "no", false),
    ("Namespace", "", "v1", "namespaces", "ns", false),
    ("Pod", "", "v1", "pods", "po", true),
    ("Secret", "", "v1", "secrets", "", true),
    ("ConfigMap", "", "v1", "configmaps", "cm", true),
    ("Service", "", "v1", "services", "svc", true),
    ("ServiceAccount", "", "v1", "serviceaccounts", "sa", true),
    ("Endpoints", "", "v1", "endpoints", "ep", true),
    ("Event", "", "v1", "events", "ev", true),
    (
        "PersistentVolumeClaim",
        "",
        "v1",
        "persistentvolumeclaims",
        "pvc",
        true,
    ),
    (
        "PersistentVolume",
        "",
        "v1",
        "persistentvolumes",
        "pv",
        false,
    ),
    ("ResourceQuota", "", "v1", "resourcequotas", "quota", true),
    ("LimitRange", "", "v1", "limitranges", "limits", true),
    ("Deployment", "apps", "v1", "deployments", "deploy", true),
    ("DaemonSet", "apps", "v1", "daemonsets", "ds", true),
    ("StatefulSet", "apps", "v1", "statefulsets", "sts", true),
    ("ReplicaSet", "apps", "v1", "replicasets", "rs", true),
    ("Job", "batch", "v1", "jobs", "", true),
    ("CronJob", "batch", "v1", "cronjobs", "cj", true),
    (
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "crd,crds",
        false,
    ),
    (
        "StorageClass",
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "sc",
        false,
    ),
    ("CSIDriver", "storage.k8s.io", "v1", "csidrivers", "", false),
    (
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "",
        false,
    ),
    (
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "",
        false,
    ),
    ("Role", "rbac.authorization.k8s.io", "v1", "roles", "", true),
    (
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "",
        true,
    ),
    (
        "Ingress",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ing",
        true,
    ),
    (
        "IngressClass",
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "",
        false,
    ),
    (
        "NetworkPolicy",
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "netpol",
        true,
    ),
    (
        "PodDisruptionBudget",
        "policy",
        "v1",
        "poddisruptionbudgets",
        "pdb",
        true,
    ),
    (
        "PriorityClass",
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "pc",
        false,
    ),
    (
        "RuntimeClass",
        "node.k8s.io",
        "v1",
        "runtimeclasses",
        "",
        false,
    ),
    ("Lease", "coordination.k8s.io", "v1", "leases", "", true),
    (
        "APIService",
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "",
        false,
    ),
    (
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "",
        false,
    ),
    (
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "",
        false,
    ),
    ("HelmChart", "helm.cattle.io", "v1", "helmcharts", "", true),
    (
        "HelmChartConfig",
        "helm.cattle.io",
        "v1",
        "helmchartconfigs",
        "hcc",
        true,
    ),
    ("Addon", "k3s.cattle.io", "v1", "addons", "", true),
    (
        "ETCDSnapshotFile",
        "k3s.cattle.io",
        "v1",
        "etcdsnapshotfiles",
        "",
        false,
    ),
];

pub fn builtin() -> Vec<KindInfo> {
    BUILTIN
        .iter()
        .map(|(k, g, v, p, s, n)| KindInfo {
            kind: k.to_string(),
            group: g.to_string(),
            version: v.to_string(),
            plural: p.to_string(),
            singular: k.to_lowercase(),
            short: s
                .split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect(),
            namespaced: *n,
        })
        .collect()
}

/// A kind from an applied CustomResourceDefinition object.
pub fn from_crd(crd: &Value) -> Option<KindInfo> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let version = spec
        .get("versions")
        .and_then(|v| v.as_array())
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .or_else(|| vs.first())
        })
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let kind = names.get("kind")?.as_str()?.to_string();
    Some(KindInfo {
        group: spec.get("group")?.as_str()?.to_string(),
        version: version.to_string(),
        plural: names.get("plural")?.as_str()?.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        short: names
            .get("shortNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        kind,
    })
}

/// Finds a resource type by what a user types: `deploy`, `jobs.batch`, `crd`, `node`.
pub fn resolve<'a>(all: &'a [KindInfo], name: &str) -> Option<&'a KindInfo> {
    let name = name.to_lowercase();
    let matches = |k: &KindInfo, n: &str| {
        k.plural == n
            || k.singular == n
            || k.short.iter().any(|s| s == n)
            || k.kind.to_lowercase() == n
    };
    all.iter().find(|k| matches(k, &name)).or_else(|| {
        let (base, group) = name.split_once('.')?;
        all.iter().find(|k| matches(k, base) && k.group == group)
    })
}

/// Finds a kind from a manifest's apiVersion/kind.
pub fn by_kind<'a>(all: &'a [KindInfo], api_version: &str, kind: &str) -> Option<&'a KindInfo> {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    all.iter().find(|k| k.kind == kind && k.group == group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_user_names() {
        let all = builtin();
        assert_eq!(resolve(&all, "deploy").unwrap().kind, "Deployment");
        assert_eq!(resolve(&all, "jobs.batch").unwrap().kind, "Job");
        assert_eq!(
            resolve(&all, "crds").unwrap().kind,
            "CustomResourceDefinition"
        );
        assert_eq!(
            resolve(&all, "helmchart.helm.cattle.io").unwrap().kind,
            "HelmChart"
        );
        assert_eq!(resolve(&all, "Node").unwrap().qualified(), "node");
        assert_eq!(
            resolve(&all, "deployment").unwrap().qualified(),
            "deployment.apps"
        );
        assert!(resolve(&all, "bogus").is_none());
    }
}
