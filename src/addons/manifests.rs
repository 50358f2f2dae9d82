//! The inventory's extra manifests (`[[manifests]]`): rendered with tera and the inventory's
//! `[variables]` (`{{ variables.NAME }}`), written to the manifests directory as `<name>.yaml`.

use super::{AddonError, PREFIX};
use crate::inventory::Inventory;

/// Render one manifest's text.
pub fn render(
    name: &str,
    text: &str,
    variables: &std::collections::BTreeMap<String, String>,
) -> Result<String, AddonError> {
    let mut ctx = tera::Context::new();
    ctx.insert("variables", variables);
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    // tera's get_env() would put this machine's environment into the cluster, and make the
    // file differ from one shell to the next: only [variables] go in.
    tera.register_function("get_env", |_: &std::collections::HashMap<String, tera::Value>| {
        Err(tera::Error::msg(
            "get_env() is disabled in manifests: put the value in [variables] and use {{ variables.NAME }}",
        ))
    });
    tera.add_raw_template(name, text)
        .and_then(|_| tera.render(name, &ctx))
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            AddonError::Other(format!("rendering manifest {name}: {msg}"))
        })
}

/// One extra manifest, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub name: String,
    pub content: String,
    /// HelmCharts that must be healthy before the file is written (`after`).
    pub after: Vec<String>,
}

/// Every extra manifest of `inv`, rendered.
pub fn render_all(inv: &Inventory) -> Result<Vec<Extra>, AddonError> {
    let mut out = Vec::new();
    for m in &inv.manifests {
        if m.name.starts_with(PREFIX) {
            return Err(AddonError::Other(format!(
                "manifest {}: names starting with \"{PREFIX}\" are reserved for bootstrap's add-ons; give it another name",
                m.name
            )));
        }
        let text = std::fs::read_to_string(&m.path).map_err(|e| {
            AddonError::Other(format!("reading manifest {}: {e}", m.path.display()))
        })?;
        out.push(Extra {
            name: m.name.clone(),
            content: render(&m.name, &text, &inv.variables)?,
            after: m.after.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn get_env_is_refused_in_manifests() {
        let vars = std::collections::BTreeMap::from([("x".to_string(), "1".to_string())]);
        assert_eq!(render("m", "v: {{ variables.x }}", &vars).unwrap(), "v: 1");
        let e = render("m", "home: {{ get_env(name=\"HOME\") }}", &vars)
            .unwrap_err()
            .to_string();
        assert!(e.contains("get_env() is disabled"), "{e}");
    }
}
