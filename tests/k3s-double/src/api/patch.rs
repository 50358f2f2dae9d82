//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! (apimachinery `strategicpatch`) with the merge keys of the built-in types kubectl patches.

use serde_json::{Map, Value};

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

fn tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent<'a>(doc: &'a mut Value, toks: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("doc is missing path: {t}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("invalid array index {t}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of bounds"))?
            }
            _ => return Err(format!("cannot index into a scalar at {t}")),
        };
    }
    Ok(cur)
}

fn add_at(doc: &mut Value, toks: &[String], v: Value) -> Result<(), String> {
    let Some((last, head)) = toks.split_last() else {
        *doc = v;
        return Ok(());
    };
    match parent(doc, head)? {
        Value::Object(m) => {
            m.insert(last.clone(), v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err("cannot add to a scalar".into()),
    }
}

fn remove_at(doc: &mut Value, toks: &[String]) -> Result<Value, String> {
    let (last, head) = toks
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent(doc, head)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}: missing value")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            Ok(a.remove(i))
        }
        _ => Err("cannot remove from a scalar".into()),
    }
}

/// RFC 6902 operations, applied in order; any failure leaves `doc` unchanged.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let mut work = doc.clone();
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = tokens(op.get("path").and_then(Value::as_str).unwrap_or(""))?;
        let value = || op.get("value").cloned().ok_or("missing value");
        match name {
            "add" => add_at(&mut work, &path, value()?)?,
            "remove" => {
                remove_at(&mut work, &path)?;
            }
            "replace" => {
                remove_at(&mut work, &path)?;
                add_at(&mut work, &path, value()?)?;
            }
            "test" => {
                let got = parent(&mut work, &path)?;
                if *got != value()? {
                    return Err("testing value failed".into());
                }
            }
            "move" | "copy" => {
                let from = tokens(op.get("from").and_then(Value::as_str).unwrap_or(""))?;
                let v = if name == "move" {
                    remove_at(&mut work, &from)?
                } else {
                    parent(&mut work, &from)?.clone()
                };
                add_at(&mut work, &path, v)?;
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    *doc = work;
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// `patchStrategy:"merge"` with this `patchMergeKey`.
    Key(&'static str),
    /// A list of scalars merged as a set (`metadata.finalizers`).
    Set,
    /// No strategy: the patch's list replaces the whole list.
    Replace,
}

/// The `patchStrategy`/`patchMergeKey` tags of k8s.io/api for the lists kubectl patches.
fn strategy(kind: &str, path: &[String]) -> ListStrategy {
    let last = path.last().map(String::as_str).unwrap_or("");
    let parent = path
        .len()
        .checked_sub(2)
        .and_then(|i| path.get(i))
        .map(String::as_str);
    match last {
        "finalizers" if path.len() == 2 && path[0] == "metadata" => ListStrategy::Set,
        "ownerReferences" => ListStrategy::Key("uid"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "webhooks" => ListStrategy::Key("name"),
        "volumeMounts" => ListStrategy::Key("mountPath"),
        "volumeDevices" => ListStrategy::Key("devicePath"),
        "hostAliases" => ListStrategy::Key("ip"),
        "topologySpreadConstraints" => ListStrategy::Key("topologyKey"),
        "conditions" | "addresses" => ListStrategy::Key("type"),
        "ports" if matches!(parent, Some("containers" | "initContainers")) => {
            ListStrategy::Key("containerPort")
        }
        "ports" if kind == "Service" && path.len() == 2 => ListStrategy::Key("port"),
        _ => ListStrategy::Replace,
    }
}

fn is_directive(k: &str) -> bool {
    k.starts_with('$')
}

/// Strategic merge patch onto `target` for a built-in `kind`.
pub fn strategic(kind: &str, target: &mut Value, patch: &Value) -> Result<(), String> {
    smp_map(kind, &mut Vec::new(), target, patch)
}

fn smp_map(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Value,
    patch: &Value,
) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            *target = Value::Object(m);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("Unknown patch type: {other}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        if let Some(t) = target.as_object_mut() {
            t.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
            if let Some(Value::Array(a)) = target.get_mut(field) {
                a.retain(|x| !drop.contains(&x));
            }
            continue;
        }
        if is_directive(k) {
            continue; // $setElementOrder/..., $retainKeys, $patch handled above
        }
        let t = target.as_object_mut().expect("object");
        if v.is_null() {
            t.remove(k);
            continue;
        }
        path.push(k.clone());
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match v {
            Value::Object(_) => {
                smp_map(kind, path, slot, v)?;
                if slot.is_null() {
                    t.remove(k);
                }
            }
            Value::Array(items) => smp_list(kind, path, slot, items)?,
            other => *slot = other.clone(),
        }
        path.pop();
    }
    Ok(())
}

fn smp_list(
    kind: &str,
    path: &mut Vec<String>,
    target: &mut Value,
    items: &[Value],
) -> Result<(), String> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect(),
        );
        return Ok(());
    }
    match strategy(kind, path) {
        ListStrategy::Replace => {
            *target = Value::Array(items.to_vec());
        }
        ListStrategy::Set => {
            let mut cur = target.as_array().cloned().unwrap_or_default();
            for i in items {
                if !cur.contains(i) {
                    cur.push(i.clone());
                }
            }
            *target = Value::Array(cur);
        }
        ListStrategy::Key(mk) => {
            let mut cur = target.as_array().cloned().unwrap_or_default();
            for i in items {
                let Some(kv) = i.get(mk) else {
                    return Err(format!(
                        "map: {i} does not contain declared merge key: {mk}"
                    ));
                };
                let pos = cur.iter().position(|c| c.get(mk) == Some(kv));
                if i.get("$patch").and_then(Value::as_str) == Some("delete") {
                    if let Some(p) = pos {
                        cur.remove(p);
                    }
                    continue;
                }
                match pos {
                    Some(p) => smp_map(kind, path, &mut cur[p], i)?,
                    None => {
                        let mut fresh = Value::Object(Map::new());
                        smp_map(kind, path, &mut fresh, i)?;
                        cur.push(fresh);
                    }
                }
            }
            *target = Value::Array(cur);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut d = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        merge(
            &mut d,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}}),
        );
        assert_eq!(
            d,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "remove", "path": "/a/0"},
                {"op": "copy", "from": "/b", "path": "/d"},
            ]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": [2, 3], "b": {"c": 2}, "d": {"c": 2}}));
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/zz"}])).is_err());
        assert_eq!(d["a"], json!([2, 3]), "a failed patch changes nothing");
    }

    #[test]
    fn strategic_merge_of_node_and_pod_lists() {
        // kubectl cordon: {"spec":{"unschedulable":true}}; taint replaces the whole list.
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        strategic("Node", &mut node, &json!({"spec": {"unschedulable": true, "taints": [{"key": "b", "effect": "NoExecute"}]}})).unwrap();
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        strategic("Node", &mut node, &json!({"spec": {"unschedulable": null}})).unwrap();
        assert!(node["spec"].get("unschedulable").is_none());
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"}]}}}});
        strategic(
            "Deployment",
            &mut d,
            &json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "x:2"}, {"$patch": "delete", "name": "b"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "x:2"}])
        );
        let mut m = json!({"metadata": {"finalizers": ["a"]}});
        strategic("ConfigMap", &mut m, &json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]}})).unwrap();
        assert_eq!(m["metadata"]["finalizers"], json!(["b"]));
    }
}
