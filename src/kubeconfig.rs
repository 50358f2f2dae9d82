//! The admin kubeconfig: k3s writes it on each server with `127.0.0.1` and
//! names everything `default`; the operator needs the API's real address and
//! names that do not collide with other clusters in `~/.kube/config`.

use serde_yaml::{Mapping, Value};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("the server's kubeconfig is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("the server's kubeconfig has no {0}")]
    Missing(&'static str),
    #[error("{path} is not a kubeconfig this tool can merge into: {reason}")]
    Unmergeable { path: String, reason: String },
}

fn seq<'a>(doc: &'a mut Value, key: &'static str) -> Result<&'a mut Vec<Value>, KubeconfigError> {
    doc.get_mut(key)
        .and_then(Value::as_sequence_mut)
        .ok_or(KubeconfigError::Missing(key))
}

fn first_mapping<'a>(
    doc: &'a mut Value,
    key: &'static str,
) -> Result<&'a mut Mapping, KubeconfigError> {
    seq(doc, key)?
        .first_mut()
        .and_then(Value::as_mapping_mut)
        .ok_or(KubeconfigError::Missing(key))
}

/// Rewrite k3s's kubeconfig: API address `server_url`, cluster, user and
/// context all named `name`, current-context set.
pub fn rewrite(k3s_yaml: &str, name: &str, server_url: &str) -> Result<String, KubeconfigError> {
    let mut doc: Value = serde_yaml::from_str(k3s_yaml)?;
    let n = Value::from(name);
    {
        let cluster = first_mapping(&mut doc, "clusters")?;
        cluster.insert("name".into(), n.clone());
        let inner = cluster
            .get_mut("cluster")
            .and_then(Value::as_mapping_mut)
            .ok_or(KubeconfigError::Missing("clusters[0].cluster"))?;
        inner.insert("server".into(), Value::from(server_url));
    }
    first_mapping(&mut doc, "users")?.insert("name".into(), n.clone());
    {
        let ctx = first_mapping(&mut doc, "contexts")?;
        ctx.insert("name".into(), n.clone());
        let mut inner = Mapping::new();
        inner.insert("cluster".into(), n.clone());
        inner.insert("user".into(), n.clone());
        ctx.insert("context".into(), Value::Mapping(inner));
    }
    doc.as_mapping_mut()
        .ok_or(KubeconfigError::Missing("top-level mapping"))?
        .insert("current-context".into(), n);
    Ok(serde_yaml::to_string(&doc)?)
}

/// Merge the rewritten kubeconfig `ours` (from [`rewrite`]) into `existing`
/// (the text of `~/.kube/config`, possibly empty): entries named like ours are
/// replaced, everything else is kept, current-context becomes ours.
pub fn merge(existing: &str, ours: &str, path: &str) -> Result<String, KubeconfigError> {
    let unmergeable = |reason: &str| KubeconfigError::Unmergeable {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let ours: Value = serde_yaml::from_str(ours)?;
    let mut doc: Value = if existing.trim().is_empty() {
        serde_yaml::from_str("apiVersion: v1\nkind: Config\npreferences: {}\nclusters: []\nusers: []\ncontexts: []\n")?
    } else {
        serde_yaml::from_str(existing).map_err(|e| unmergeable(&e.to_string()))?
    };
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| unmergeable("its top level is not a mapping"))?;
    for key in ["clusters", "users", "contexts"] {
        let new_items = ours
            .get(key)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let entry = map
            .entry(key.into())
            .or_insert_with(|| Value::Sequence(vec![]));
        if entry.is_null() {
            *entry = Value::Sequence(vec![]);
        }
        let list = entry
            .as_sequence_mut()
            .ok_or_else(|| unmergeable(&format!("`{key}` is not a list")))?;
        for item in new_items {
            let name = item.get("name").cloned();
            list.retain(|old| old.get("name") != name.as_ref());
            list.push(item);
        }
    }
    // The operator's current context stays; only a file without one gets ours.
    let has_current = map
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if let (false, Some(cur)) = (has_current, ours.get("current-context")) {
        map.insert("current-context".into(), cur.clone());
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// The `current-context` of a kubeconfig text, if it names one.
pub fn current_context(text: &str) -> Option<String> {
    let doc: Value = serde_yaml::from_str(text).ok()?;
    doc.get("current-context")?
        .as_str()
        .filter(|c| !c.is_empty())
        .map(String::from)
}

/// Whether a kubeconfig text has a context named `name`.
pub fn has_context(text: &str, name: &str) -> bool {
    serde_yaml::from_str::<Value>(text)
        .ok()
        .and_then(|d| d.get("contexts").and_then(Value::as_sequence).cloned())
        .is_some_and(|l| {
            l.iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K3S_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    #[test]
    fn rewrite_sets_address_and_names() {
        let out = rewrite(K3S_YAML, "dirtbikechina", "https://k8s.example.com:6443").unwrap();
        let v: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://k8s.example.com:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["clusters"][0]["name"], "dirtbikechina");
        assert_eq!(v["users"][0]["name"], "dirtbikechina");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["contexts"][0]["context"]["user"], "dirtbikechina");
        assert_eq!(v["current-context"], "dirtbikechina");
        assert!(!out.contains("127.0.0.1"));
    }

    #[test]
    fn merge_replaces_same_names_and_keeps_others() {
        let a = rewrite(K3S_YAML, "a", "https://1.1.1.1:6443").unwrap();
        let b = rewrite(K3S_YAML, "b", "https://2.2.2.2:6443").unwrap();
        let merged = merge("", &a, "cfg").unwrap();
        let merged = merge(&merged, &b, "cfg").unwrap();
        let a2 = rewrite(K3S_YAML, "a", "https://3.3.3.3:6443").unwrap();
        let merged = merge(&merged, &a2, "cfg").unwrap();
        let v: Value = serde_yaml::from_str(&merged).unwrap();
        let clusters = v["clusters"].as_sequence().unwrap();
        assert_eq!(clusters.len(), 2);
        // The first merge set the context; b's merge kept it.
        assert_eq!(v["current-context"], "a");
        assert_eq!(current_context(&merged).as_deref(), Some("a"));
        assert!(has_context(&merged, "b") && !has_context(&merged, "c"));
        assert!(merged.contains("https://3.3.3.3:6443"));
        assert!(!merged.contains("https://1.1.1.1:6443"));
        assert!(merged.contains("https://2.2.2.2:6443"));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(rewrite("clusters: 3", "a", "https://x:6443").is_err());
        assert!(rewrite(": : :", "a", "https://x:6443").is_err());
        assert!(merge("- not a map", &rewrite(K3S_YAML, "a", "u").unwrap(), "cfg").is_err());
    }
}
