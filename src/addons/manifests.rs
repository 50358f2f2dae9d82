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

/// Every extra manifest of `inv`, rendered: (name, content).
pub fn render_all(inv: &Inventory) -> Result<Vec<(String, String)>, AddonError> {
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
        out.push((m.name.clone(), render(&m.name, &text, &inv.variables)?));
    }
    Ok(out)
}
