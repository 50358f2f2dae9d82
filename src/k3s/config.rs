//! `/etc/rancher/k3s/config.yaml`, rendered per role from `templates/k3s/config.yaml`.

use std::collections::BTreeMap;

use serde::Serialize;
use tera::Context;

use super::{flags, Role};
use crate::templates::{self, TemplateError};

/// One config.yaml value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bool(bool),
    List(Vec<String>),
}

/// A config.yaml for one role. Keys are kept sorted so the same inventory
/// always renders the same bytes (a re-run must not rewrite the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sConfig {
    role: Role,
    entries: BTreeMap<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("`{key}` is not a k3s {role} flag; k3s {role} would {consequence}")]
    NotAFlag {
        key: String,
        role: Role,
        consequence: &'static str,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
}

#[derive(Serialize)]
struct Entry {
    key: String,
    value: String,
    items: Vec<String>,
}

impl K3sConfig {
    pub fn new(role: Role) -> Self {
        K3sConfig {
            role,
            entries: BTreeMap::new(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.entries.insert(key.to_string(), value);
        self
    }

    pub fn set_str(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.set(key, Value::Str(value.into()))
    }

    /// Sets a list; an empty list leaves the key out.
    pub fn set_list(&mut self, key: &str, items: Vec<String>) -> &mut Self {
        if items.is_empty() {
            self.entries.remove(key);
            self
        } else {
            self.set(key, Value::List(items))
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// Every key must be a real flag of the role: an agent given a server-only
    /// key does not start, a server skips unknown keys silently.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for key in self.entries.keys() {
            if !flags::is_flag(self.role, key) {
                return Err(ConfigError::NotAFlag {
                    key: key.clone(),
                    role: self.role,
                    consequence: match self.role {
                        Role::Agent => "refuse to start (\"flag provided but not defined\")",
                        Role::Server => "ignore it with a warning",
                    },
                });
            }
        }
        Ok(())
    }

    /// The file's bytes. Scalars are written as YAML double-quoted strings
    /// (JSON string syntax is valid YAML), so no value can break the document.
    pub fn render(&self) -> Result<String, ConfigError> {
        self.validate()?;
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .map(|(key, value)| match value {
                Value::Str(s) => Entry {
                    key: key.clone(),
                    value: quote(s),
                    items: vec![],
                },
                Value::Bool(b) => Entry {
                    key: key.clone(),
                    value: b.to_string(),
                    items: vec![],
                },
                Value::List(items) => Entry {
                    key: key.clone(),
                    value: String::new(),
                    items: items.iter().map(|s| quote(s)).collect(),
                },
            })
            .collect();
        let mut ctx = Context::new();
        ctx.insert("entries", &entries);
        Ok(templates::render("k3s/config.yaml", &ctx)?)
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_quoted_yaml() {
        let mut c = K3sConfig::new(Role::Server);
        c.set_str("node-name", "master-1")
            .set("cluster-init", Value::Bool(true))
            .set_list("tls-san", vec!["k8s.example.com".into(), "10.0.0.1".into()])
            .set_list("node-taint", vec![]);
        let text = c.render().unwrap();
        assert_eq!(
            text,
            "# Written by bootstrap from the inventory; a change here is undone by the next `bootstrap up`.\n\
             cluster-init: true\n\
             node-name: \"master-1\"\n\
             tls-san:\n  - \"k8s.example.com\"\n  - \"10.0.0.1\"\n"
        );
    }

    #[test]
    fn values_with_yaml_syntax_stay_strings() {
        let mut c = K3sConfig::new(Role::Agent);
        c.set_list("node-label", vec!["a=b: c # d".into(), "x=\"y\"".into()]);
        let text = c.render().unwrap();
        assert!(text.contains("  - \"a=b: c # d\"\n"));
        assert!(text.contains("  - \"x=\\\"y\\\"\"\n"));
    }

    #[test]
    fn agent_refuses_server_only_keys() {
        let mut c = K3sConfig::new(Role::Agent);
        c.set_list("disable", vec!["traefik".into()]);
        let err = c.render().unwrap_err().to_string();
        assert!(err.contains("`disable` is not a k3s agent flag"), "{err}");
    }
}
