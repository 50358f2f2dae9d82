//! The deploy (AddOn) controller: `server/manifests` → Addon objects, like k3s's pkg/deploy.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::common::Op;
use crate::kinds;
use crate::objects;
use crate::server::Server;
use crate::store::{key_of, kind_of, meta, State};
use crate::util;

pub const INTERVAL: Duration = Duration::from_secs(15);
const OBJECTS_ANN: &str = "k3s-double/objects";

const PACKAGED: &[(&str, &str)] = &[
    ("ccm.yaml", include_str!("data/manifests/ccm.yaml")),
    ("coredns.yaml", include_str!("data/manifests/coredns.yaml")),
    (
        "local-storage.yaml",
        include_str!("data/manifests/local-storage.yaml"),
    ),
    (
        "rolebindings.yaml",
        include_str!("data/manifests/rolebindings.yaml"),
    ),
    (
        "runtimes.yaml",
        include_str!("data/manifests/runtimes.yaml"),
    ),
    ("traefik.yaml", include_str!("data/manifests/traefik.yaml")),
    (
        "metrics-server/aggregated-metrics-reader.yaml",
        include_str!("data/manifests/metrics-server/aggregated-metrics-reader.yaml"),
    ),
    (
        "metrics-server/auth-delegator.yaml",
        include_str!("data/manifests/metrics-server/auth-delegator.yaml"),
    ),
    (
        "metrics-server/auth-reader.yaml",
        include_str!("data/manifests/metrics-server/auth-reader.yaml"),
    ),
    (
        "metrics-server/metrics-apiservice.yaml",
        include_str!("data/manifests/metrics-server/metrics-apiservice.yaml"),
    ),
    (
        "metrics-server/metrics-server-deployment.yaml",
        include_str!("data/manifests/metrics-server/metrics-server-deployment.yaml"),
    ),
    (
        "metrics-server/metrics-server-service.yaml",
        include_str!("data/manifests/metrics-server/metrics-server-service.yaml"),
    ),
    (
        "metrics-server/resource-reader.yaml",
        include_str!("data/manifests/metrics-server/resource-reader.yaml"),
    ),
];

/// Addon name: the file name up to its first dot.
pub fn addon_name(path: &Path) -> String {
    let f = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    f.split('.').next().unwrap_or(f).to_string()
}

pub fn is_manifest(path: &Path) -> bool {
    let f = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !f.starts_with('.') && (f.ends_with(".yaml") || f.ends_with(".yml") || f.ends_with(".json"))
}

/// `disable` matches the basename with its last extension stripped, or any parent dir name.
pub fn is_disabled(root: &Path, path: &Path, disable: &[String]) -> bool {
    let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
    if disable.iter().any(|d| d == stem) {
        return true;
    }
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.parent()
        .map(|p| {
            p.components()
                .any(|c| disable.iter().any(|d| c.as_os_str() == d.as_str()))
        })
        .unwrap_or(false)
}

/// Writes packaged manifests (rewritten at every start) unless disabled.
pub fn stage(root: &Path, disable: &[String]) {
    for (rel, content) in PACKAGED {
        let p = root.join(rel);
        if is_disabled(root, &p, disable) {
            continue;
        }
        if let Err(e) = util::write_file(&p, content.as_bytes(), 0o600) {
            util::error(format!("failed to stage {}: {e}", p.display()));
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, top: bool) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let is_link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if p.is_dir() {
            if is_link && !top {
                continue;
            }
            walk(&p, out, false);
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
}

pub fn list_manifests(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    walk(root, &mut v, true);
    v.sort();
    v
}

pub fn watch(srv: Arc<Server>) {
    let root = srv.ctx.data_dir.join("server/manifests");
    stage(&root, &srv.ctx.disable);
    let mut seen: HashMap<PathBuf, SystemTime> = HashMap::new();
    let mut first = true;
    loop {
        pass(&srv, &root, &mut seen, first);
        first = false;
        std::thread::sleep(INTERVAL);
    }
}

fn pass(srv: &Server, root: &Path, seen: &mut HashMap<PathBuf, SystemTime>, force: bool) {
    let disable = &srv.ctx.disable;
    // Disabled names: delete their Addon (and objects) even when the file is already gone.
    for d in disable {
        let exists = srv
            .state
            .lock()
            .expect("state lock")
            .get("k3s.cattle.io", "Addon", "kube-system", d)
            .is_some();
        let file_exists = list_manifests(root).iter().any(|p| addon_name(p) == *d);
        if exists && !file_exists {
            let _ = srv.submit(&Op::DeleteAddon {
                node: srv.ctx.node.clone(),
                name: d.clone(),
            });
        }
    }
    for path in list_manifests(root) {
        let name = addon_name(&path);
        if is_disabled(root, &path, disable) {
            util::info(format!("Removing disabled manifest {}", path.display()));
            let _ = std::fs::remove_file(&path);
            if let Err(e) = srv.submit(&Op::DeleteAddon {
                node: srv.ctx.node.clone(),
                name,
            }) {
                util::error(format!("Failed to remove disabled addon: {e}"));
            }
            continue;
        }
        if PathBuf::from(format!("{}.skip", path.display())).exists() {
            continue;
        }
        let Ok(mtime) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        if !force && seen.get(&path) == Some(&mtime) {
            continue;
        }
        let Ok(content) = std::fs::read(&path) else {
            continue;
        };
        let checksum = util::sha256_hex(&content);
        if !force {
            let same = srv
                .state
                .lock()
                .expect("state lock")
                .get("k3s.cattle.io", "Addon", "kube-system", &name)
                .and_then(|a| a.pointer("/spec/checksum"))
                .and_then(Value::as_str)
                == Some(checksum.as_str());
            if same {
                seen.insert(path.clone(), mtime);
                continue;
            }
        }
        let text = String::from_utf8_lossy(&content).to_string();
        let docs = match parse_docs(&text) {
            Ok(d) => d,
            Err(e) => {
                util::error(format!(
                    "Failed to process config for {}: {e}",
                    path.display()
                ));
                continue;
            }
        };
        let op = Op::ApplyAddon {
            node: srv.ctx.node.clone(),
            name: name.clone(),
            path: path.display().to_string(),
            checksum,
            docs,
        };
        match srv.submit(&op) {
            Ok(_) => {
                seen.insert(path.clone(), mtime);
            }
            Err(e) => util::error(format!(
                "Failed to apply AddOn kube-system/{name} from {}: {e}",
                path.display()
            )),
        }
    }
}

/// The documents of a manifest file (`List` objects unpacked, empty documents skipped).
pub fn parse_docs(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(de).map_err(|e| e.to_string())?;
        let j: Value = serde_json::to_value(v).map_err(|e| e.to_string())?;
        if j.is_null() {
            continue;
        }
        if kind_of(&j) == "List" {
            out.extend(
                j.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        } else {
            out.push(j);
        }
    }
    Ok(out)
}

/// Applies one manifest file as Addon `kube-system/<name>`, pruning objects removed from it.
pub fn apply_addon(
    st: &mut State,
    origin: &str,
    name: &str,
    path: &str,
    checksum: &str,
    docs: &[Value],
) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut keys = BTreeSet::new();
    let mut changed = Vec::new();
    for d in docs {
        let av = d.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let all = st.kinds();
        let Some(ki) = kinds::by_kind(&all, av, kind_of(d)).cloned() else {
            errors.push(format!(
                "failed to process {path}: no matches for kind \"{}\" in version \"{av}\"",
                kind_of(d)
            ));
            continue;
        };
        if meta(d, "name").is_empty() {
            errors.push(format!(
                "failed to process {path}: resource name may not be empty"
            ));
            continue;
        }
        let ns = match meta(d, "namespace") {
            "" => "default".to_string(),
            x => x.to_string(),
        };
        match objects::upsert(st, &ki, &ns, d.clone(), origin) {
            Ok(r) => {
                let mut probe = d.clone();
                if ki.namespaced {
                    probe["metadata"]["namespace"] = json!(ns);
                } else if let Some(m) = probe.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("namespace");
                }
                keys.insert(key_of(&probe));
                if r {
                    changed.push(format!("{}/{} applied", ki.qualified(), meta(d, "name")));
                }
            }
            Err(e) => errors.push(e.message),
        }
    }
    let prev: BTreeSet<String> = st
        .get("k3s.cattle.io", "Addon", "kube-system", name)
        .and_then(|a| {
            a.pointer(&format!(
                "/metadata/annotations/{}",
                OBJECTS_ANN.replace('/', "~1")
            ))
        })
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    if errors.is_empty() {
        for k in prev.difference(&keys) {
            objects::request_delete(st, k, &objects::DeleteOptions::default(), origin);
            changed.push(format!("{k} pruned"));
        }
    }
    let all: BTreeSet<String> = if errors.is_empty() {
        keys.clone()
    } else {
        keys.union(&prev).cloned().collect()
    };
    let addon = json!({
        "apiVersion": "k3s.cattle.io/v1", "kind": "Addon",
        "metadata": {"name": name, "namespace": "kube-system",
            "annotations": {OBJECTS_ANN: serde_json::to_string(&all).unwrap_or_default()}},
        "spec": {"source": path, "checksum": if errors.is_empty() { checksum } else { "" }},
    });
    let cur = st
        .get("k3s.cattle.io", "Addon", "kube-system", name)
        .cloned();
    let differs = cur
        .as_ref()
        .map(|c| {
            c.get("spec") != addon.get("spec")
                || c.pointer("/metadata/annotations") != addon.pointer("/metadata/annotations")
        })
        .unwrap_or(true);
    if differs {
        let ak = crate::store::obj_key("k3s.cattle.io", "Addon", "kube-system", name);
        if st.objects.contains_key(&ak) {
            st.replace(&ak, addon);
        } else {
            st.put(addon);
        }
    }
    if errors.is_empty() {
        st.event(
            origin,
            "addon-applied",
            json!({"name": name, "source": path, "checksum": checksum, "changes": changed}),
        );
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

pub fn delete_addon(st: &mut State, origin: &str, name: &str) {
    let Some(a) = st
        .get("k3s.cattle.io", "Addon", "kube-system", name)
        .cloned()
    else {
        return;
    };
    let objs: BTreeSet<String> = a
        .pointer(&format!(
            "/metadata/annotations/{}",
            OBJECTS_ANN.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    for k in &objs {
        objects::request_delete(st, k, &objects::DeleteOptions::default(), origin);
    }
    st.remove(&crate::store::obj_key(
        "k3s.cattle.io",
        "Addon",
        "kube-system",
        name,
    ));
    st.event(
        origin,
        "addon-deleted",
        json!({"name": name, "objects": objs.len()}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert_eq!(
            addon_name(Path::new("/m/traefik-config.yaml")),
            "traefik-config"
        );
        assert_eq!(addon_name(Path::new("/m/a.b.yaml")), "a");
        assert!(is_manifest(Path::new("/m/x.json")));
        assert!(!is_manifest(Path::new("/m/.x.yaml")));
        assert!(!is_manifest(Path::new("/m/x.yaml.skip")));
        let root = Path::new("/m");
        let d = vec!["metrics-server".to_string(), "traefik".to_string()];
        assert!(is_disabled(
            root,
            Path::new("/m/metrics-server/resource-reader.yaml"),
            &d
        ));
        assert!(is_disabled(root, Path::new("/m/traefik.yaml"), &d));
        assert!(!is_disabled(root, Path::new("/m/traefik-config.yaml"), &d));
    }

    #[test]
    fn addon_prunes_removed_objects() {
        let mut st = State::default();
        st.ensure_namespace("default");
        st.ensure_namespace("kube-system");
        let cm = |n: &str| json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":n}});
        apply_addon(&mut st, "s", "x", "/m/x.yaml", "c1", &[cm("a"), cm("b")]).unwrap();
        assert_eq!(st.list("", "ConfigMap", Some("default")).len(), 2);
        apply_addon(&mut st, "s", "x", "/m/x.yaml", "c2", &[cm("a")]).unwrap();
        assert_eq!(st.list("", "ConfigMap", Some("default")).len(), 1);
        delete_addon(&mut st, "s", "x");
        assert_eq!(st.list("", "ConfigMap", Some("default")).len(), 0);
    }
}
