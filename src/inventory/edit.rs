//! Edits to the inventory file that keep its comments and layout
//! (`toml_edit`), for `node add|replace|remove`. Every edit is validated as a
//! whole inventory before it is written; a bad edit leaves the file as it was.

use std::collections::BTreeMap;
use std::path::Path;

use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table};

use super::{Inventory, InventoryError};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("{0}")]
    Refused(String),
    #[error("the edited inventory would not be valid, so the file was left as it was:\n{0}")]
    Invalid(InventoryError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A node to append.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub name: String,
    pub host: String,
    pub role: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
}

fn parse(text: &str, path: &Path) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>().map_err(|e| EditError::Toml {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn nodes_mut(doc: &mut DocumentMut) -> Option<&mut ArrayOfTables> {
    doc.get_mut("node").and_then(Item::as_array_of_tables_mut)
}

fn index_of(doc: &mut DocumentMut, name: &str) -> Option<usize> {
    nodes_mut(doc)?
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

/// The text with `node` appended after the last `[[node]]`.
pub fn add_node(text: &str, path: &Path, node: &NewNode) -> Result<String, EditError> {
    let mut doc = parse(text, path)?;
    if index_of(&mut doc, &node.name).is_some() {
        return Err(EditError::Refused(format!(
            "a node named {:?} is already in {}; use `bootstrap node replace` to move it to another host",
            node.name,
            path.display()
        )));
    }
    let mut t = Table::new();
    t.insert("name", value(node.name.as_str()));
    t.insert("host", value(node.host.as_str()));
    t.insert("role", value(node.role.as_str()));
    if !node.labels.is_empty() {
        let mut labels = InlineTable::new();
        for (k, v) in &node.labels {
            labels.insert(k, v.as_str().into());
        }
        t.insert("labels", value(labels));
    }
    if !node.taints.is_empty() {
        let mut a = Array::new();
        for taint in &node.taints {
            a.push(taint.as_str());
        }
        t.insert("taints", value(a));
    }
    // Right after the last node, so the file keeps its order.
    let last = nodes_mut(&mut doc).and_then(|a| a.iter().filter_map(Table::position).max());
    if let Some(pos) = last {
        t.set_position(pos);
    }
    match doc.get_mut("node") {
        Some(item) => match item.as_array_of_tables_mut() {
            Some(a) => a.push(t),
            None => {
                return Err(EditError::Refused(format!(
                    "`node` in {} is not an array of tables ([[node]])",
                    path.display()
                )))
            }
        },
        None => {
            let mut a = ArrayOfTables::new();
            a.push(t);
            doc.insert("node", Item::ArrayOfTables(a));
        }
    }
    Ok(doc.to_string())
}

/// The text with node `name`'s host set to `host`.
pub fn set_host(text: &str, path: &Path, name: &str, host: &str) -> Result<String, EditError> {
    let mut doc = parse(text, path)?;
    let i = index_of(&mut doc, name).ok_or_else(|| not_found(name, path))?;
    let t = nodes_mut(&mut doc)
        .and_then(|a| a.get_mut(i))
        .ok_or_else(|| not_found(name, path))?;
    // Keep the comment after the old value.
    let decor = t
        .get("host")
        .and_then(Item::as_value)
        .map(|v| v.decor().clone());
    t.insert("host", value(host));
    if let (Some(d), Some(v)) = (decor, t.get_mut("host").and_then(Item::as_value_mut)) {
        *v.decor_mut() = d;
    }
    Ok(doc.to_string())
}

/// The text without node `name`.
pub fn remove_node(text: &str, path: &Path, name: &str) -> Result<String, EditError> {
    let mut doc = parse(text, path)?;
    let i = index_of(&mut doc, name).ok_or_else(|| not_found(name, path))?;
    if let Some(a) = nodes_mut(&mut doc) {
        a.remove(i);
    }
    Ok(doc.to_string())
}

fn not_found(name: &str, path: &Path) -> EditError {
    EditError::Refused(format!("no node named {name:?} in {}", path.display()))
}

/// Validate `text` as the whole inventory at `path`.
pub fn validate(text: &str, path: &Path) -> Result<Inventory, EditError> {
    Inventory::from_str_at(text, path).map_err(EditError::Invalid)
}

/// Validate `new`, the inventory at `path` with a node added to `old`, reporting problems
/// where the person can find them: a line of the file as it is on disk, or the command-line
/// argument of the node being added (its lines are in no file yet).
pub fn validate_added(old: &str, new: &str, path: &Path) -> Result<Inventory, EditError> {
    let e = match Inventory::from_str_at(new, path) {
        Ok(inv) => return Ok(inv),
        Err(e) => e,
    };
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    // The edit inserts one block: where it starts, and how many lines it has.
    let start = old_lines
        .iter()
        .zip(&new_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(old_lines.len());
    let added = new_lines.len().saturating_sub(old_lines.len());
    let mut out = Vec::new();
    for d in e.diagnostics() {
        let i = d.line.saturating_sub(1);
        if d.file != path || i < start {
            out.push(d.to_string());
        } else if i < start + added {
            let arg = match new_lines[i].split('=').next().unwrap_or("").trim() {
                "host" => "--host",
                "role" => "--role",
                "labels" => "--label",
                "taints" => "--taint",
                _ => "NAME",
            };
            out.push(format!("{arg}: error: {}", d.message));
        } else {
            let mut d = d.clone();
            d.line -= added;
            out.push(d.to_string());
        }
    }
    if out.is_empty() {
        return Err(EditError::Invalid(e));
    }
    Err(EditError::Refused(format!(
        "the node cannot be added, so {} was left as it was:\n{}",
        path.display(),
        out.join("\n")
    )))
}

/// Write `text` to `path` atomically (a temp file under a random name created exclusively,
/// fsync, rename), keeping the mode.
pub fn write(path: &Path, text: &str) -> Result<(), EditError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    crate::local::write_atomic(path, text.as_bytes(), mode).map_err(|source| EditError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"# The lab cluster.
[cluster]
name = "lab" # short

[[node]]
name = "master-1"
host = "10.0.0.1"   # first server
role = "server"

# Workers below.
[[node]]
name = "worker-1"
host = "10.0.0.2"
role = "agent"
labels = { "node.role" = "db" }

[addons.traefik]
"#;

    fn p() -> &'static Path {
        Path::new("/tmp/inv.toml")
    }

    #[test]
    fn add_keeps_comments_and_goes_after_the_last_node() {
        let n = NewNode {
            name: "worker-2".into(),
            host: "10.0.0.3".into(),
            role: "agent".into(),
            labels: [("a".to_string(), "b".to_string())].into(),
            taints: vec!["k=v:NoSchedule".into()],
        };
        let out = add_node(INV, p(), &n).unwrap();
        assert!(out.starts_with("# The lab cluster.\n[cluster]\nname = \"lab\" # short\n"));
        assert!(out.contains("host = \"10.0.0.1\"   # first server"));
        assert!(out.contains("# Workers below."));
        let w2 = out.find("name = \"worker-2\"").unwrap();
        assert!(w2 > out.find("name = \"worker-1\"").unwrap());
        assert!(w2 < out.find("[addons.traefik]").unwrap(), "{out}");
        assert!(out.contains("labels = { a = \"b\" }"), "{out}");
        assert!(out.contains("taints = [\"k=v:NoSchedule\"]"), "{out}");
        let doc: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(doc["node"].as_array().unwrap().len(), 3);
        assert!(add_node(&out, p(), &n).is_err());
    }

    #[test]
    fn problems_of_an_added_node_point_at_its_argument_others_at_the_file_on_disk() {
        // worker-1 has a bad label on disk, after where the new node goes in.
        let inv = INV.replace(
            "[addons.traefik]",
            "[[node]]\nname = \"worker-9\"\nhost = \"10.0.0.9\"\nrole = \"agent\"\nlabels = { \"bad key!\" = \"x\" }\n\n[addons.traefik]",
        );
        let n = NewNode {
            name: "worker-2".into(),
            host: "10.0.0.3".into(),
            role: "agent".into(),
            labels: Default::default(),
            taints: vec!["k=v:NoSchedul".into()],
        };
        let out = add_node(&inv, p(), &n).unwrap();
        let e = validate_added(&inv, &out, p()).unwrap_err().to_string();
        assert!(
            e.contains("--taint: error: ") && e.contains("did you mean NoSchedule?"),
            "{e}"
        );
        let bad_line = inv.lines().position(|l| l.contains("bad key!")).unwrap() + 1;
        assert!(e.contains(&format!("/tmp/inv.toml:{bad_line}:")), "{e}");
    }

    #[test]
    fn set_host_and_remove() {
        let out = set_host(INV, p(), "master-1", "10.0.0.9").unwrap();
        assert!(
            out.contains("host = \"10.0.0.9\"   # first server"),
            "{out}"
        );
        assert_eq!(out.len(), INV.len());
        let out = remove_node(INV, p(), "worker-1").unwrap();
        assert!(!out.contains("worker-1"));
        assert!(out.contains("master-1") && out.contains("[addons.traefik]"));
        assert!(remove_node(INV, p(), "nope").is_err());
    }
}
