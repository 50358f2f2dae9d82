//! cert-manager (reference/addons.md §5) with its CRDs, and the Let's Encrypt staging and
//! production ClusterIssuers (ACME HTTP-01 through the Traefik ingress class, §5.4).

use serde::Serialize;

use super::{helmchart, major_minor, AddonError, AddonKind, ManifestFile, Owner, Stage, PREFIX};
use crate::inventory::CertManager;
use crate::templates;

pub const REPO: &str = "https://charts.jetstack.io";
pub const NAMESPACE: &str = "cert-manager";

/// `crds.enabled` from v1.15, `installCRDs` before (§5.2).
pub fn crds_key(version: &str) -> &'static str {
    match major_minor(version) {
        Some((1, minor)) if minor < 15 => "installCRDs",
        Some((0, _)) => "installCRDs",
        _ => "crds",
    }
}

#[derive(Serialize)]
struct IssuerCtx {
    name: &'static str,
    server: &'static str,
}

/// The HelmChart, and the ClusterIssuers once cert-manager's CRDs and webhook are up.
pub fn files(
    c: &CertManager,
    chart_content: Option<&str>,
) -> Result<Vec<ManifestFile>, AddonError> {
    let mut ctx = tera::Context::new();
    ctx.insert("crds_key", crds_key(&c.version));
    let values = templates::render("addons/cert-manager-values.yaml", &ctx)?;
    let chart = helmchart(
        AddonKind::CertManager,
        REPO,
        &c.version,
        NAMESPACE,
        true,
        &values,
        chart_content,
    )?;
    let mut out = vec![chart];
    let issuers: Vec<IssuerCtx> = c
        .issuers()
        .into_iter()
        .map(|i| IssuerCtx {
            name: i.name(),
            server: i.server_url(),
        })
        .collect();
    if let (false, Some(email)) = (issuers.is_empty(), &c.acme_email) {
        let mut ctx = tera::Context::new();
        ctx.insert("issuers", &issuers);
        ctx.insert("email", email);
        ctx.insert("ingress_class", &c.ingress_class);
        out.push(ManifestFile {
            file: format!("{PREFIX}cert-manager-issuers.yaml"),
            content: templates::render("addons/cert-manager-issuers.yaml", &ctx)?,
            mode: 0o600,
            owner: Owner::Addon(AddonKind::CertManager),
            stage: Stage::After(vec![AddonKind::CertManager.chart_name().into()]),
        });
    }
    Ok(out)
}
