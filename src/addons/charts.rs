//! The inventory's `[[charts]]`: one HelmChart each (`bootstrap-chart-<name>.yaml`), written
//! and judged like an add-on's.
//!
//! Values: `values_file` rendered with `[variables]` (as manifests are), the inline `values`
//! merged over it key by key (helm's own order for `-f` then `--set`), then the placement keys
//! as the chart's top-level `nodeSelector` and `tolerations`. An OCI chart is named whole in
//! `spec.chart` with no `spec.repo` (helm-controller chart.go:1543 at 21a911f).

use serde_json::{json, Map, Value};

use super::health::Want;
use super::{stage, AddonError, HelmChartDoc, HelmRelease, ManifestFile, Owner, PREFIX};
use crate::inventory::{Chart, ChartRepo, Inventory};

/// File-name prefix of a chart's HelmChart manifest (the add-ons' files never start so).
pub const FILE_PREFIX: &str = "bootstrap-chart-";

/// The HelmChart file of the chart `name`.
pub fn file_name(name: &str) -> String {
    format!("{FILE_PREFIX}{name}.yaml")
}

/// The chart a HelmChart file of bootstrap's belongs to, from its name.
pub fn of_file(file: &str) -> Option<&str> {
    file.strip_prefix(FILE_PREFIX)?.strip_suffix(".yaml")
}

/// One chart, resolved before any host is contacted.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartSpec {
    pub chart: Chart,
    /// `valuesContent`: YAML.
    pub values: String,
    /// `chart_archive`, base64.
    pub content: Option<String>,
}

/// Deep merge: `over`'s keys replace `base`'s, tables merge key by key.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(x) if x.is_object() && v.is_object() => merge(x, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The chart's values: the file, the inline table over it, the placement keys.
pub fn values(c: &Chart, file_text: Option<&str>, inv: &Inventory) -> Result<Value, AddonError> {
    let mut v = Value::Object(Map::new());
    if let (Some(text), Some(path)) = (file_text, &c.values_file) {
        let what = format!("chart {}: values_file {}", c.name, path.display());
        let rendered = super::manifests::render(&what, text, &inv.variables)?;
        let y: serde_yaml::Value = serde_yaml::from_str(&rendered)
            .map_err(|e| AddonError::Other(format!("{what}: not YAML: {e}")))?;
        let j: Value =
            serde_json::to_value(y).map_err(|e| AddonError::Other(format!("{what}: {e}")))?;
        match j {
            Value::Object(_) => v = j,
            Value::Null => {}
            _ => {
                return Err(AddonError::Other(format!(
                    "{what}: the file must be a YAML mapping of the chart's values"
                )))
            }
        }
    }
    // The inventory refuses inline `values` that set a placement key the entry sets too
    // (inventory/charts.rs); the file's keys are known only once it is rendered, here.
    for (key, set) in [
        ("nodeSelector", !c.node_selector.is_empty()),
        ("tolerations", !c.tolerations.is_empty()),
    ] {
        if set && v.get(key).is_some() {
            return Err(AddonError::Other(format!(
                "chart {}: the values_file sets {key} and so do the entry's placement keys; keep one",
                c.name
            )));
        }
    }
    merge(&mut v, &c.values);
    if !c.node_selector.is_empty() {
        v["nodeSelector"] = json!(c.node_selector);
    }
    if !c.tolerations.is_empty() {
        let t: Vec<Value> = c
            .tolerations
            .iter()
            .map(|t| {
                let mut o = json!({"key": t.key, "effect": t.effect.as_str()});
                match &t.value {
                    Some(val) => {
                        o["operator"] = json!("Equal");
                        o["value"] = json!(val);
                    }
                    None => o["operator"] = json!("Exists"),
                }
                o
            })
            .collect();
        v["tolerations"] = Value::Array(t);
    }
    Ok(v)
}

/// Every chart of `inv`, with its values file read and rendered and its archive read.
pub fn resolve_all(inv: &Inventory) -> Result<Vec<ChartSpec>, AddonError> {
    let mut out = Vec::new();
    for c in &inv.charts {
        let text = match &c.values_file {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                AddonError::Other(format!(
                    "chart {}: reading values_file {}: {e}",
                    c.name,
                    p.display()
                ))
            })?),
            None => None,
        };
        let v = values(c, text.as_deref(), inv)?;
        // Helm reads values as YAML 1.1: strings such as `on` or `no` must stay strings.
        let yaml = super::yaml11::to_string(&v);
        let content = match &c.chart_archive {
            Some(p) => {
                use base64::Engine;
                let bytes = std::fs::read(p).map_err(|e| {
                    AddonError::Other(format!(
                        "chart {}: reading the chart archive {}: {e}",
                        c.name,
                        p.display()
                    ))
                })?;
                Some(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            None => None,
        };
        out.push(ChartSpec {
            chart: c.clone(),
            values: yaml,
            content,
        });
    }
    Ok(out)
}

impl ChartSpec {
    /// The HelmChart file.
    pub fn file(&self) -> Result<ManifestFile, AddonError> {
        let c = &self.chart;
        let (repo, chart) = match &c.repo {
            ChartRepo::Https(u) => (u.clone(), c.chart.clone()),
            ChartRepo::Oci(r) => (String::new(), format!("{r}/{}", c.chart)),
        };
        let chart = if self.content.is_some() {
            c.chart.clone()
        } else {
            chart
        };
        let timeout = c.timeout.map(|d| format!("{}s", d.as_secs()));
        let content = HelmChartDoc {
            managed_by: format!("{} chart", c.name),
            name: &c.name,
            repo: &repo,
            chart: &chart,
            version: &c.version,
            target_namespace: &c.namespace,
            create_namespace: true,
            values: &self.values,
            chart_content: self.content.as_deref(),
            failure_policy: &c.failure_policy,
            timeout: timeout.as_deref(),
        }
        .render()?;
        debug_assert!(file_name(&c.name).starts_with(PREFIX));
        Ok(ManifestFile {
            file: file_name(&c.name),
            content,
            mode: 0o600,
            owner: Owner::Chart(c.name.clone()),
            stage: stage(&c.after),
        })
    }

    /// The chart's HelmChart as health, reports and removal see it.
    pub fn release(&self) -> HelmRelease {
        let c = &self.chart;
        HelmRelease {
            name: c.name.clone(),
            namespace: c.namespace.clone(),
            addon: None,
            failure_policy: c.failure_policy.clone(),
            timeout: c.timeout.map(|d| format!("{}s", d.as_secs())),
            wants: c
                .wait_for
                .iter()
                .map(|w| Want {
                    kind: w.kind.clone(),
                    namespace: w.namespace.clone(),
                    group: (!w.group.is_empty()).then(|| w.group.clone()),
                    name: w.name.clone(),
                    prefix: false,
                })
                .collect(),
            values_digest: None,
        }
    }
}
