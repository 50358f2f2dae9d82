//! Templates from `templates/`, embedded in the binary and rendered with tera.
//!
//! Every file the tool writes on a host that is not pure data is rendered here,
//! so golden tests can pin the exact bytes.

use std::sync::OnceLock;

use tera::{Context, Tera};

/// (name, source) of every template; names are paths under `templates/`.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "k3s/k3s.service",
        include_str!("../templates/k3s/k3s.service"),
    ),
    (
        "k3s/config.yaml",
        include_str!("../templates/k3s/config.yaml"),
    ),
    (
        "k3s/killall-body.sh",
        include_str!("../templates/k3s/killall-body.sh"),
    ),
    (
        "k3s/remove-body.sh",
        include_str!("../templates/k3s/remove-body.sh"),
    ),
    (
        "k3s/k3s-killall.sh",
        include_str!("../templates/k3s/k3s-killall.sh"),
    ),
    (
        "k3s/k3s-uninstall.sh",
        include_str!("../templates/k3s/k3s-uninstall.sh"),
    ),
    ("k3s/reset.sh", include_str!("../templates/k3s/reset.sh")),
    (
        "addons/helmchart.yaml",
        include_str!("../templates/addons/helmchart.yaml"),
    ),
    (
        "addons/longhorn-values.yaml",
        include_str!("../templates/addons/longhorn-values.yaml"),
    ),
    (
        "addons/longhorn-storage.yaml",
        include_str!("../templates/addons/longhorn-storage.yaml"),
    ),
    (
        "addons/longhorn-recurring.yaml",
        include_str!("../templates/addons/longhorn-recurring.yaml"),
    ),
    (
        "addons/traefik-values.yaml",
        include_str!("../templates/addons/traefik-values.yaml"),
    ),
    (
        "addons/traefik-routes.yaml",
        include_str!("../templates/addons/traefik-routes.yaml"),
    ),
    (
        "addons/cert-manager-values.yaml",
        include_str!("../templates/addons/cert-manager-values.yaml"),
    ),
    (
        "addons/cert-manager-issuers.yaml",
        include_str!("../templates/addons/cert-manager-issuers.yaml"),
    ),
    (
        "addons/sealed-secrets-values.yaml",
        include_str!("../templates/addons/sealed-secrets-values.yaml"),
    ),
    (
        "addons/sealed-secrets-key.yaml",
        include_str!("../templates/addons/sealed-secrets-key.yaml"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("rendering template {name}: {source}")]
pub struct TemplateError {
    name: String,
    #[source]
    source: tera::Error,
}

fn engine() -> &'static Result<Tera, String> {
    static ENGINE: OnceLock<Result<Tera, String>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| format!("{e:?}"))?;
        Ok(tera)
    })
}

/// Render the template `name` with `ctx`.
pub fn render(name: &str, ctx: &Context) -> Result<String, TemplateError> {
    let tera = engine().as_ref().map_err(|e| TemplateError {
        name: name.to_string(),
        source: tera::Error::msg(e.clone()),
    })?;
    tera.render(name, ctx).map_err(|source| TemplateError {
        name: name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses() {
        assert!(
            super::engine().is_ok(),
            "{:?}",
            super::engine().as_ref().err()
        );
    }
}
