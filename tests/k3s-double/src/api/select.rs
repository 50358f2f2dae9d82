//! Label selectors (apimachinery `labels.Parse`) and field selectors (`fields.ParseSelector`
//! with the field labels each kind supports, as the apiserver's `GetAttrs` functions).

use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn set_of(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: expected '(' in {s:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for term in split_top(s) {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            let r = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set_of(v)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(k.trim().into(), set_of(v)?)
            } else if t.contains(' ') || t.contains('(') {
                return Err(format!("unable to parse requirement: found '{t}', expected: in, notin, =, ==, !=, gt, lt"));
            } else {
                Req::Exists(t.to_string())
            };
            reqs.push(r);
        }
        Ok(LabelSelector(reqs))
    }

    /// A `metav1.LabelSelector` (matchLabels, matchExpressions) from an object.
    pub fn from_object(sel: &Value) -> LabelSelector {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or("").to_string()));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let vals: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            reqs.push(
                match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => Req::In(k, vals),
                    "NotIn" => Req::NotIn(k, vals),
                    "Exists" => Req::Exists(k),
                    _ => Req::NotExists(k),
                },
            );
        }
        LabelSelector(reqs)
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

pub fn labels_of(o: &Value) -> Option<&Map<String, Value>> {
    o.pointer("/metadata/labels").and_then(Value::as_object)
}

/// Field labels the apiserver accepts for a kind, and where each lives in the object.
fn field_path(kind: &str, field: &str) -> Option<&'static str> {
    Some(match (kind, field) {
        (_, "metadata.name") => "/metadata/name",
        (_, "metadata.namespace") => "/metadata/namespace",
        ("Pod", "spec.nodeName") => "/spec/nodeName",
        ("Pod", "spec.restartPolicy") => "/spec/restartPolicy",
        ("Pod", "spec.schedulerName") => "/spec/schedulerName",
        ("Pod", "spec.serviceAccountName") => "/spec/serviceAccountName",
        ("Pod", "spec.hostNetwork") => "/spec/hostNetwork",
        ("Pod", "status.phase") => "/status/phase",
        ("Pod", "status.podIP") => "/status/podIP",
        ("Pod", "status.nominatedNodeName") => "/status/nominatedNodeName",
        ("Node", "spec.unschedulable") => "/spec/unschedulable",
        ("Namespace", "status.phase") => "/status/phase",
        ("Secret", "type") => "/type",
        ("Job", "status.successful") => "/status/succeeded",
        ("Event", "involvedObject.kind") => "/involvedObject/kind",
        ("Event", "involvedObject.name") => "/involvedObject/name",
        ("Event", "involvedObject.namespace") => "/involvedObject/namespace",
        ("Event", "involvedObject.uid") => "/involvedObject/uid",
        ("Event", "reason") => "/reason",
        ("Event", "type") => "/type",
        _ => return None,
    })
}

#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, String, bool)>);

impl FieldSelector {
    pub fn parse(kind: &str, s: &str) -> Result<FieldSelector, String> {
        let mut out = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (f, v, neg) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let path = field_path(kind, f.trim())
                .ok_or_else(|| format!("field label not supported: {}", f.trim()))?;
            out.push((path.to_string(), v.trim().to_string(), neg));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, o: &Value) -> bool {
        self.0.iter().all(|(path, want, neg)| {
            let got = match o.pointer(path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    if path == "/spec/unschedulable" || path == "/spec/hostNetwork" {
                        "false".into()
                    } else {
                        String::new()
                    }
                }
            };
            (got == *want) != *neg
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let l = json!({"a": "1", "b": "2"});
        let m = l.as_object();
        for (s, want) in [
            ("a=1", true),
            ("a=1,b", true),
            ("a!=1", false),
            ("!c", true),
            ("c", false),
            ("a in (1,3)", true),
            ("b notin (2)", false),
        ] {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(m), want, "{s}");
        }
        let sel = LabelSelector::from_object(
            &json!({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "In", "values": ["2"]}]}),
        );
        assert!(sel.matches(m));
    }

    #[test]
    fn field_selectors() {
        let p = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("Pod", "spec.nodeName=w1")
            .unwrap()
            .matches(&p));
        assert!(!FieldSelector::parse("Pod", "spec.nodeName=w2")
            .unwrap()
            .matches(&p));
        assert!(
            FieldSelector::parse("Pod", "status.phase!=Pending,metadata.name==a")
                .unwrap()
                .matches(&p)
        );
        assert_eq!(
            FieldSelector::parse("ConfigMap", "spec.nodeName=x").unwrap_err(),
            "field label not supported: spec.nodeName"
        );
    }
}
