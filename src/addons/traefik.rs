//! Traefik from the upstream chart (reference/addons.md §4) in its own namespace, replacing
//! k3s's bundled one (the inventory adds `traefik` to `disable`), with the HTTP→HTTPS redirect
//! under the values key the pinned chart major reads (§4.3) and weighted routes as
//! `traefik.io/v1alpha1` TraefikService + IngressRoute objects (§4.4, §4.5).

use serde::Serialize;

use super::{helmchart, major_minor, AddonError, AddonKind, ManifestFile, Owner, Stage, PREFIX};
use crate::inventory::Traefik;
use crate::templates;

pub const REPO: &str = "https://traefik.github.io/charts";

/// Where the chart major reads the web entrypoint's redirect (§4.3): `ports.web.redirectTo`
/// up to v33, `ports.web.redirections` for v34–v38, `ports.web.http.redirections` from v39.
pub fn redirect_layout(version: &str) -> &'static str {
    match major_minor(version) {
        Some((m, _)) if m <= 33 => "redirectTo",
        Some((m, _)) if m <= 38 => "redirections",
        _ => "http",
    }
}

#[derive(Serialize)]
struct ServiceCtx<'a> {
    name: &'a str,
    namespace: &'a str,
    port: u16,
    weight: u32,
}

#[derive(Serialize)]
struct RouteCtx<'a> {
    name: &'a str,
    namespace: &'a str,
    host: &'a str,
    issuer: Option<&'static str>,
    sticky_cookie: Option<&'a str>,
    services: Vec<ServiceCtx<'a>>,
}

#[derive(Serialize)]
struct TolerationCtx {
    key: String,
    /// `Equal` with a value, `Exists` without.
    operator: &'static str,
    value: Option<String>,
    effect: &'static str,
}

/// The HelmChart, and the routes file when the inventory has routes.
pub fn files(
    t: &Traefik,
    with_cert_manager: bool,
    chart_content: Option<&str>,
) -> Result<Vec<ManifestFile>, AddonError> {
    let mut ctx = tera::Context::new();
    ctx.insert("cross_namespace", &t.needs_cross_namespace());
    ctx.insert(
        "redirect",
        if t.redirect_https {
            redirect_layout(&t.version)
        } else {
            ""
        },
    );
    // Placement: the chart's top-level `nodeSelector` and `tolerations` (traefik-helm-chart
    // v41.3.0 `traefik/values.yaml`:1236-1238).
    let tolerations: Vec<TolerationCtx> = t
        .tolerations
        .iter()
        .map(|x| TolerationCtx {
            key: x.key.clone(),
            operator: if x.value.is_some() { "Equal" } else { "Exists" },
            value: x.value.clone(),
            effect: x.effect.as_str(),
        })
        .collect();
    let node_selector: Vec<(&String, &String)> = t.node_selector.iter().collect();
    ctx.insert("node_selector", &node_selector);
    ctx.insert("tolerations", &tolerations);
    let values = templates::render("addons/traefik-values.yaml", &ctx)?;
    let chart = helmchart(
        AddonKind::Traefik,
        REPO,
        &t.version,
        &t.namespace,
        true,
        &values,
        chart_content,
    )?;
    let mut out = vec![chart];
    if !t.routes.is_empty() {
        let routes: Vec<RouteCtx> = t
            .routes
            .iter()
            .map(|r| RouteCtx {
                name: &r.name,
                namespace: &r.namespace,
                host: &r.host,
                issuer: r.tls_issuer.filter(|_| with_cert_manager).map(|i| i.name()),
                sticky_cookie: r.sticky_cookie.as_deref(),
                services: r
                    .services
                    .iter()
                    .map(|s| ServiceCtx {
                        name: &s.name,
                        namespace: &s.namespace,
                        port: s.port,
                        weight: s.weight,
                    })
                    .collect(),
            })
            .collect();
        let needs_certs = routes.iter().any(|r| r.issuer.is_some());
        let mut ctx = tera::Context::new();
        ctx.insert("routes", &routes);
        ctx.insert("redirect", &t.redirect_https);
        let mut after = vec![AddonKind::Traefik.chart_name().to_string()];
        if needs_certs {
            after.push(AddonKind::CertManager.chart_name().to_string());
        }
        out.push(ManifestFile {
            file: format!("{PREFIX}traefik-routes.yaml"),
            content: templates::render("addons/traefik-routes.yaml", &ctx)?,
            mode: 0o600,
            owner: Owner::Addon(AddonKind::Traefik),
            stage: Stage::After(after),
        });
    }
    Ok(out)
}
