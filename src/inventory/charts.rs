//! `[[charts]]`: any Helm chart, installed through k3s's HelmChart CRD like the add-ons, and the
//! `after` order shared with `[[manifests]]`.
//!
//! What the fields become is helm-controller's HelmChart spec (k3s-io/helm-controller
//! `pkg/apis/helm.cattle.io/v1/types.go` at 21a911f): `repo`/`chart`/`version` (:70-76; an
//! `oci://` reference goes whole into `chart`, chart.go:1543), `targetNamespace` +
//! `createNamespace` (:63-66), `timeout` (:118-120, a Go duration), `failurePolicy` (:13-20,
//! `abort`, `reinstall` or `retry`; `reinstall` when unset, :125).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

use super::error::{ErrorKind, Report};
use super::raw::{self, S};
use super::syntax;
use super::values::{chart_archive_value, placement, shipped_path, undefined_variables, Shipped};
use super::{Chart, ChartRepo, K3sVersion, WaitFor};

/// HelmChart names k3s itself uses in kube-system (its packaged Traefik, k3s
/// `manifests/traefik.yaml`) and the add-ons'. A chart of that name would take over theirs.
pub(crate) const RESERVED_CHART_NAMES: &[&str] = &[
    "traefik",
    "traefik-crd",
    "longhorn",
    "cert-manager",
    "sealed-secrets",
];

/// `helm-install-<name>` is the Job helm-controller makes (chart.go `job()`); a Job's name is
/// also its pods' `batch.kubernetes.io/job-name` label value, at most 63 characters.
const MAX_NAME: usize = 63 - "helm-install-".len();

/// The failure policies helm-controller accepts (types.go:13).
const FAILURE_POLICIES: &[&str] = &["reinstall", "abort", "retry"];

pub(crate) struct Built {
    pub charts: Vec<Chart>,
    /// Per chart, the span of each `after` entry (for the cycle check).
    after_spans: Vec<Vec<Range<usize>>>,
}

/// The first k3s release of each minor whose helm-controller knows `failurePolicy: retry`
/// (helm-controller v0.17.6 / v0.16.25, whose CRD adds it to the enum, `types.go`:13, with
/// klipper-helm v0.13.2, which acts on it; bundled by every k3s branch on 2026-07-22, the
/// day before the v1.36.3, v1.35.7 and v1.34.10 Kubernetes bumps). Minors not listed before
/// the first one do not have it; later minors do.
const RETRY_SINCE: [(u32, u32, u32); 3] = [(1, 34, 10), (1, 35, 7), (1, 36, 3)];

/// Whether k3s `v` bundles a helm-controller that accepts `failurePolicy: retry`.
pub(crate) fn knows_retry(v: &K3sVersion) -> bool {
    let (first_major, first_minor, _) = RETRY_SINCE[0];
    let (last_major, last_minor, _) = RETRY_SINCE[RETRY_SINCE.len() - 1];
    if (v.major, v.minor) < (first_major, first_minor) {
        return false;
    }
    if (v.major, v.minor) > (last_major, last_minor) {
        return true;
    }
    RETRY_SINCE
        .iter()
        .find(|(ma, mi, _)| (*ma, *mi) == (v.major, v.minor))
        .is_some_and(|(_, _, p)| v.patch >= *p)
}

/// Validate every `[[charts]]` entry.
pub(crate) fn charts(
    raw: &[raw::RawChart],
    r: &mut Report,
    shipped: &Shipped,
    shown_base: &Path,
    variables: &BTreeMap<String, String>,
    k3s: Option<&K3sVersion>,
) -> Built {
    let mut out = Vec::new();
    let mut after_spans = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for c in raw {
        let name = c.name.get_ref().clone();
        let what = format!("chart \"{name}\"");
        match syntax::dns_label(&name) {
            Err(e) => r.error(
                c.name.span(),
                ErrorKind::InvalidName,
                format!("{what}: the name is not valid: {e}; it names the HelmChart and the helm release"),
            ),
            Ok(()) if name.len() > MAX_NAME => r.error(
                c.name.span(),
                ErrorKind::InvalidName,
                format!("{what}: the name is {} characters long; the limit is {MAX_NAME}, as helm-controller's Job is helm-install-<name> and a Job name is at most 63", name.len()),
            ),
            Ok(()) => {}
        }
        if RESERVED_CHART_NAMES.contains(&name.as_str()) {
            r.error(
                c.name.span(),
                ErrorKind::Duplicate,
                format!("{what}: the HelmChart name is used by k3s or a bootstrap add-on (kube-system/{name}); give the chart another name (the release is named after it)"),
            );
        } else if !seen.insert(name.clone()) {
            r.error(
                c.name.span(),
                ErrorKind::Duplicate,
                format!(
                    "{what}: the name is used by another [[charts]] entry; names must be unique"
                ),
            );
        }
        let repo = repo(r, c, &what);
        if let Err(e) = syntax::dns_subdomain(c.chart.get_ref(), 253) {
            r.error(
                c.chart.span(),
                ErrorKind::InvalidName,
                format!("{what}: chart \"{}\" is not a chart name ({e}); give the name in the repository, e.g. \"loki\"", c.chart.get_ref()),
            );
        }
        let version = match &c.version {
            None => {
                r.error(
                    c.name.span(),
                    ErrorKind::MissingKey,
                    format!("{what}: `version` is missing; pin the chart version (e.g. version = \"1.2.3\"): without one helm installs whatever the repository's newest is, and a re-run could upgrade it"),
                );
                String::new()
            }
            Some(v) => {
                let s = v.get_ref();
                if let Err(e) = syntax::chart_version(s, s.starts_with('v')) {
                    let pinned =
                        if s.contains(['^', '~', '*', '>', '<', '=', 'x', ' ']) || s == "latest" {
                            " a range or \"latest\" is not pinned:"
                        } else {
                            ""
                        };
                    r.error(
                        v.span(),
                        ErrorKind::InvalidVersion,
                        format!("{what}: version \"{s}\" is not a pinned version:{pinned} {e}"),
                    );
                }
                s.clone()
            }
        };
        if let Err(e) = syntax::dns_label(c.namespace.get_ref()) {
            r.error(
                c.namespace.span(),
                ErrorKind::InvalidName,
                format!(
                    "{what}: namespace \"{}\" is not valid: {e}",
                    c.namespace.get_ref()
                ),
            );
        }
        let values = c
            .values
            .as_ref()
            .map(|t| values(r, t, &c.name, &what))
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        let values_file = c.values_file.as_ref().and_then(|v| {
            let p = shipped_path(r, v, "values_file", shipped)?;
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let shown = v.get_ref();
                    let shown_path = if Path::new(shown).is_absolute() || shown.starts_with('~') {
                        p.clone()
                    } else {
                        shown_base.join(shown)
                    };
                    for d in undefined_variables(&text, &shown_path, variables) {
                        r.error_in(d);
                    }
                    Some(p)
                }
                Err(e) => {
                    r.error(
                        v.span(),
                        ErrorKind::InvalidPath,
                        format!("{what}: values_file {}: {e}", p.display()),
                    );
                    None
                }
            }
        });
        let chart_archive = c
            .chart_archive
            .as_ref()
            .and_then(|v| chart_archive_value(r, v, shipped));
        let timeout = c
            .timeout
            .as_ref()
            .and_then(|t| match syntax::duration(t.get_ref()) {
                Ok(d) if d.as_secs() >= 1 => Some(d),
                Ok(_) => {
                    r.error(
                        t.span(),
                        ErrorKind::InvalidDuration,
                        format!("{what}: timeout must be at least 1s"),
                    );
                    None
                }
                Err(e) => {
                    r.error(
                        t.span(),
                        ErrorKind::InvalidDuration,
                        format!("{what}: timeout is not valid: {e}; e.g. \"10m\""),
                    );
                    None
                }
            });
        let failure_policy = match &c.failure_policy {
            None => "reinstall".to_string(),
            Some(p) if p.get_ref() == "retry" && k3s.is_some_and(|v| !knows_retry(v)) => {
                r.error(
                    p.span(),
                    ErrorKind::InvalidValue,
                    format!("{what}: failure_policy \"retry\" is not known to the helm-controller of k3s {}: its HelmChart CRD refuses it, so the chart would never be applied; it came with k3s v1.34.10+k3s1, v1.35.7+k3s1 and v1.36.3+k3s1. Use \"reinstall\" or \"abort\", or a newer k3s_version", k3s.map(|v| v.to_string()).unwrap_or_default()),
                );
                "reinstall".into()
            }
            Some(p) if FAILURE_POLICIES.contains(&p.get_ref().as_str()) => p.get_ref().clone(),
            Some(p) => {
                r.error(
                    p.span(),
                    ErrorKind::InvalidValue,
                    format!("{what}: failure_policy \"{}\" is not one helm-controller knows; expected \"reinstall\" (uninstall a failed release and install again; the default), \"abort\" (leave it for you) or \"retry\" (upgrade again)", p.get_ref()),
                );
                "reinstall".into()
            }
        };
        let (node_selector, tolerations) =
            placement(&c.node_selector, c.tolerations.as_ref(), r, &what);
        if let Some(obj) = values.as_object() {
            for (key, set) in [
                ("nodeSelector", !node_selector.is_empty()),
                ("tolerations", !tolerations.is_empty()),
            ] {
                if set && obj.contains_key(key) {
                    r.error(
                        c.name.span(),
                        ErrorKind::Conflict,
                        format!("{what}: values.{key} and the placement keys both set the chart's {key}; keep one"),
                    );
                }
            }
        }
        let mut wait_for = Vec::new();
        for w in &c.wait_for {
            match wait_for_value(w.get_ref()) {
                Ok(x) => wait_for.push(x),
                Err(e) => r.error(
                    w.span(),
                    ErrorKind::InvalidValue,
                    format!("{what}: wait_for \"{}\" is not valid: {e}; expected \"namespace/Kind/name\" (e.g. \"infra/Deployment/api\") or \"Kind/name\" for a cluster-scoped object", w.get_ref()),
                ),
            }
        }
        after_spans.push(c.after.iter().map(|a| a.span()).collect());
        out.push(Chart {
            name,
            repo,
            chart: c.chart.get_ref().clone(),
            version,
            namespace: c.namespace.get_ref().clone(),
            values,
            values_file,
            chart_archive,
            timeout,
            failure_policy,
            node_selector,
            tolerations,
            after: c.after.iter().map(|a| a.get_ref().clone()).collect(),
            wait_for,
        });
    }
    Built {
        charts: out,
        after_spans,
    }
}

fn repo(r: &mut Report, c: &raw::RawChart, what: &str) -> ChartRepo {
    let v = c.repo.get_ref();
    if let Some(rest) = v.strip_prefix("oci://") {
        let host = rest.split('/').next().unwrap_or("");
        if host.contains('@') {
            // As http_url refuses them: the repo goes whole into the HelmChart, where anyone
            // who reads HelmCharts, and every log of the install, sees it.
            r.error(
                c.repo.span(),
                ErrorKind::InvalidUrl,
                format!("{what}: repo \"oci://…@{}\" carries credentials, which would be stored in the HelmChart for anyone who can read it; give the registry path without them", rest.rsplit_once('@').map_or("", |(_, r)| r)),
            );
            return ChartRepo::Oci(String::new());
        }
        if let Err(e) = syntax::host(host.rsplit_once(':').map_or(host, |(h, _)| h)) {
            r.error(
                c.repo.span(),
                ErrorKind::InvalidUrl,
                format!("{what}: repo \"{v}\" has no registry host ({e}); e.g. \"oci://ghcr.io/org/charts\""),
            );
        }
        if rest.ends_with(&format!("/{}", c.chart.get_ref())) {
            r.error(
                c.repo.span(),
                ErrorKind::InvalidUrl,
                format!("{what}: repo \"{v}\" already ends with the chart name; give the registry path without it (the chart goes in `chart`)"),
            );
        }
        return ChartRepo::Oci(v.trim_end_matches('/').to_string());
    }
    match syntax::http_url(v) {
        Ok(u) if u.starts_with("https://") => ChartRepo::Https(u),
        Ok(u) => {
            r.error(
                c.repo.span(),
                ErrorKind::InvalidUrl,
                format!("{what}: repo \"{u}\" is plain http; charts run with cluster-admin rights, so bootstrap fetches them over https:// or oci:// only"),
            );
            ChartRepo::Https(u)
        }
        Err(e) => {
            r.error(
                c.repo.span(),
                ErrorKind::InvalidUrl,
                format!("{what}: repo \"{v}\" is not valid: {e}; expected an https:// chart repository or an oci:// registry path"),
            );
            ChartRepo::Https(v.clone())
        }
    }
}

/// The inline `values` table as JSON. TOML dates have no YAML counterpart helm would read the
/// same way, so they are refused.
fn values(r: &mut Report, t: &toml::Table, at: &S<String>, what: &str) -> serde_json::Value {
    fn dates(v: &toml::Value, path: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Datetime(_) => out.push(path.to_string()),
            toml::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    dates(x, &format!("{path}[{i}]"), out);
                }
            }
            toml::Value::Table(t) => {
                for (k, x) in t {
                    dates(x, &format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for (k, v) in t {
        dates(v, &format!("values.{k}"), &mut bad);
    }
    for p in &bad {
        r.error(
            at.span(),
            ErrorKind::WrongType,
            format!(
                "{what}: {p} is a TOML date; quote it (\"2024-04-01\") so the chart gets a string"
            ),
        );
    }
    serde_json::to_value(t).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
}

/// `namespace/Kind/name`, or `Kind/name` for a cluster-scoped object. `Kind` may carry its API
/// group (`Cluster.postgresql.cnpg.io`), as kubectl reads it.
pub(crate) fn wait_for_value(s: &str) -> Result<WaitFor, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let (namespace, kind, name) = match parts.as_slice() {
        [ns, k, n] => (*ns, *k, *n),
        [k, n] => ("", *k, *n),
        _ => return Err("it has not two or three parts separated by '/'".into()),
    };
    if !namespace.is_empty() {
        syntax::dns_label(namespace).map_err(|e| format!("namespace \"{namespace}\": {e}"))?;
    }
    let (k, group) = kind.split_once('.').unwrap_or((kind, ""));
    if !k.starts_with(|c: char| c.is_ascii_uppercase())
        || !k.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "kind \"{k}\" is not a Kind (written as in the object's `kind`, e.g. Deployment)"
        ));
    }
    if !group.is_empty() {
        syntax::dns_subdomain(group, 253).map_err(|e| format!("API group \"{group}\": {e}"))?;
    }
    syntax::dns_subdomain(name, 253).map_err(|e| format!("name \"{name}\": {e}"))?;
    Ok(WaitFor {
        namespace: namespace.into(),
        kind: k.into(),
        group: group.into(),
        name: name.into(),
    })
}

/// `after` of charts and manifests: each entry names a chart of the inventory or an add-on it
/// enables, and the charts' order has no cycle.
pub(crate) fn order_checks(
    built: &Built,
    manifests: &[(String, Vec<S<String>>)],
    addons: &[&str],
    r: &mut Report,
) {
    let names: Vec<&str> = built.charts.iter().map(|c| c.name.as_str()).collect();
    let known = |n: &str| names.contains(&n) || addons.contains(&n);
    let candidates: Vec<&str> = names.iter().chain(addons.iter()).copied().collect();
    let check = |owner: &str, a: &str, span: Range<usize>, r: &mut Report| {
        if known(a) {
            return;
        }
        let hint = if RESERVED_CHART_NAMES.contains(&a) {
            format!(" (the add-on {a} is not enabled in this inventory)")
        } else if let Some(c) = syntax::closest(a, candidates.iter().copied()) {
            format!(" (did you mean \"{c}\"?)")
        } else {
            String::new()
        };
        r.error(
            span,
            ErrorKind::InvalidValue,
            format!("{owner}: after \"{a}\" names no chart of the inventory nor an enabled add-on{hint}; `after` lists [[charts]] names and add-ons (longhorn, traefik, cert-manager, sealed-secrets)"),
        );
    };
    for (c, spans) in built.charts.iter().zip(&built.after_spans) {
        for (a, span) in c.after.iter().zip(spans) {
            check(&format!("chart \"{}\"", c.name), a, span.clone(), r);
        }
    }
    for (m, after) in manifests {
        for a in after {
            check(&format!("manifest \"{m}\""), a.get_ref(), a.span(), r);
        }
    }
    // Cycles among charts: depth-first, each cycle reported once at its first edge with every
    // edge's place.
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut state = vec![0u8; names.len()]; // 0 new, 1 on the path, 2 done
    let mut path: Vec<(usize, usize)> = Vec::new(); // (chart, after index)
    fn visit(
        i: usize,
        built: &Built,
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<(usize, usize)>,
        r: &mut Report,
    ) {
        state[i] = 1;
        for (k, a) in built.charts[i].after.iter().enumerate() {
            let Some(&j) = index.get(a.as_str()) else {
                continue;
            };
            path.push((i, k));
            if state[j] == 1 {
                let start = path.iter().position(|(c, _)| *c == j).unwrap_or(0);
                let edges: Vec<String> = path[start..]
                    .iter()
                    .map(|(c, e)| {
                        let span = built.after_spans[*c][*e].clone();
                        let (line, col) = r.index.position(span.start);
                        format!(
                            "\"{}\" after \"{}\" (line {line}, column {col})",
                            built.charts[*c].name, built.charts[*c].after[*e]
                        )
                    })
                    .collect();
                let (c0, e0) = path[start];
                r.error(
                    built.after_spans[c0][e0].clone(),
                    ErrorKind::Conflict,
                    format!("charts wait for each other in a cycle: {}; remove one of these `after` entries", edges.join(", ")),
                );
            } else if state[j] == 0 {
                visit(j, built, index, state, path, r);
            }
            path.pop();
        }
        state[i] = 2;
    }
    for i in 0..names.len() {
        if state[i] == 0 {
            visit(i, built, &index, &mut state, &mut path, r);
        }
    }
}
