//! The admin kubeconfig, built, never copied. k3s writes `/etc/rancher/k3s/k3s.yaml` on each
//! server with `127.0.0.1` and everything named `default`, from exactly three files: the
//! server CA, the admin client certificate and its key (k3s `pkg/clientaccess/kubeconfig.go`
//! `WriteClientKubeConfig`). Whoever is root on a server can write anything there (an `exec`
//! plugin, a `proxy-url`, extra clusters named like the operator's others), so bootstrap takes
//! those three values and nothing else, checks them (base64 of PEM; the CA the cluster's
//! tokens pin; the certificate signed by the cluster's client CA), refuses a file with anything
//! k3s does not write, and builds a kubeconfig of one cluster, one user and one context.

use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("the server's kubeconfig is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("the server's kubeconfig has no {0}")]
    Missing(&'static str),
    #[error("the server's kubeconfig {0}, which k3s never writes: bootstrap takes only the CA and the admin certificate and key from that file, and refuses it as it is (someone with root on that server changed it; see what else they changed)")]
    Refused(String),
    #[error("{path} is not a kubeconfig this tool can merge into: {reason}")]
    Unmergeable { path: String, reason: String },
}

/// What the tool knows of the cluster before it reads a server's kubeconfig.
#[derive(Debug, Clone, Default)]
pub struct Pins<'a> {
    /// The CA hash the cluster's tokens carry (`K10<sha256 of server-ca.crt>`).
    pub ca_hash: Option<&'a str>,
    /// The servers' `server/tls/client-ca.crt` (PEM), which signs the admin certificate.
    pub client_ca: Option<&'a [u8]>,
}

/// The three values taken from a server's kubeconfig, each the base64 of PEM as k3s writes
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCredentials {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

fn refuse(what: String) -> KubeconfigError {
    KubeconfigError::Refused(what)
}

/// `map`'s keys outside `allowed`, as `at.key`.
fn extra_keys(map: &Mapping, allowed: &[&str], at: &str) -> Result<(), KubeconfigError> {
    for k in map.keys() {
        let name = k.as_str().unwrap_or("?");
        if !allowed.contains(&name) {
            return Err(refuse(format!("has `{at}{name}`")));
        }
    }
    Ok(())
}

/// The single item of the list `key`, as a mapping with only `allowed` keys.
fn only_item<'a>(
    doc: &'a Mapping,
    key: &'static str,
    allowed: &[&str],
) -> Result<&'a Mapping, KubeconfigError> {
    let list = doc
        .get(key)
        .and_then(Value::as_sequence)
        .ok_or(KubeconfigError::Missing(key))?;
    match list.as_slice() {
        [one] => {
            let m = one
                .as_mapping()
                .ok_or_else(|| refuse(format!("has `{key}[0]` that is not a mapping")))?;
            extra_keys(m, allowed, &format!("{key}[0]."))?;
            Ok(m)
        }
        [] => Err(KubeconfigError::Missing(key)),
        more => Err(refuse(format!("has {} `{key}`, not one", more.len()))),
    }
}

fn inner<'a>(
    item: &'a Mapping,
    key: &'static str,
    allowed: &[&str],
    at: &str,
) -> Result<&'a Mapping, KubeconfigError> {
    let m = item
        .get(key)
        .and_then(Value::as_mapping)
        .ok_or(KubeconfigError::Missing(key))?;
    extra_keys(m, allowed, &format!("{at}{key}."))?;
    Ok(m)
}

fn string<'a>(m: &'a Mapping, key: &'static str) -> Result<&'a str, KubeconfigError> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or(KubeconfigError::Missing(key))
}

/// The PEM blocks of a base64 value, each `(label, der)`; refused unless every block has a
/// label in `labels` and there is at least one.
fn pem_blocks(
    b64: &str,
    what: &str,
    labels: &[&str],
) -> Result<Vec<(String, Vec<u8>)>, KubeconfigError> {
    use base64::Engine;
    let bad = |why: &str| refuse(format!("has a `{what}` that is {why}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad("not base64"))?;
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = pem.map_err(|_| bad("not PEM"))?;
        if !labels.contains(&pem.label.as_str()) {
            return Err(bad(&format!("a PEM `{}` block", pem.label)));
        }
        out.push((pem.label, pem.contents));
    }
    if out.is_empty() {
        return Err(bad("not PEM"));
    }
    Ok(out)
}

/// The first certificate of PEM `bytes`, as DER.
fn first_cert_der(bytes: &[u8]) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(bytes)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
}

/// Takes the CA and the admin certificate and key from k3s's kubeconfig, refusing anything
/// k3s does not write and checking each value against `pins`.
pub fn credentials(k3s_yaml: &str, pins: &Pins<'_>) -> Result<AdminCredentials, KubeconfigError> {
    let doc: Value = serde_yaml::from_str(k3s_yaml)?;
    let doc = doc
        .as_mapping()
        .ok_or(KubeconfigError::Missing("top-level mapping"))?;
    extra_keys(
        doc,
        &[
            "apiVersion",
            "kind",
            "clusters",
            "contexts",
            "current-context",
            "preferences",
            "users",
        ],
        "",
    )?;
    if let Some(p) = doc.get("preferences") {
        if p.as_mapping().is_none_or(|m| !m.is_empty()) {
            return Err(refuse("has `preferences` set".into()));
        }
    }
    let cluster_item = only_item(doc, "clusters", &["name", "cluster"])?;
    let cluster = inner(
        cluster_item,
        "cluster",
        &["certificate-authority-data", "server"],
        "clusters[0].",
    )?;
    let user_item = only_item(doc, "users", &["name", "user"])?;
    let user = inner(
        user_item,
        "user",
        &["client-certificate-data", "client-key-data"],
        "users[0].",
    )?;
    let context_item = only_item(doc, "contexts", &["name", "context"])?;
    let context = inner(
        context_item,
        "context",
        &["cluster", "user"],
        "contexts[0].",
    )?;
    if context.get("cluster") != cluster_item.get("name")
        || context.get("user") != user_item.get("name")
    {
        return Err(refuse(
            "has a context that names another cluster or user".into(),
        ));
    }

    let ca = string(cluster, "certificate-authority-data")?;
    let cert = string(user, "client-certificate-data")?;
    let key = string(user, "client-key-data")?;
    let ca_blocks = pem_blocks(ca, "certificate-authority-data", &["CERTIFICATE"])?;
    let cert_blocks = pem_blocks(cert, "client-certificate-data", &["CERTIFICATE"])?;
    pem_blocks(
        key,
        "client-key-data",
        &["EC PRIVATE KEY", "PRIVATE KEY", "RSA PRIVATE KEY"],
    )?;
    for (_, der) in ca_blocks.iter().chain(&cert_blocks) {
        x509_parser::parse_x509_certificate(der)
            .map_err(|_| refuse("has a certificate that does not parse".into()))?;
    }

    if let Some(want) = pins.ca_hash {
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .unwrap_or_default();
        let got = hex::encode(Sha256::digest(&pem));
        if !got.eq_ignore_ascii_case(want) {
            return Err(refuse(format!(
                "names a CA (sha256 {got}) other than the one the cluster's tokens pin ({want})"
            )));
        }
    }
    if let Some(client_ca) = pins.client_ca {
        let ca_der = first_cert_der(client_ca).ok_or_else(|| {
            refuse("cannot be checked: the server's client-ca.crt holds no certificate".into())
        })?;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).map_err(|_| {
            refuse("cannot be checked: the server's client-ca.crt does not parse".into())
        })?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&cert_blocks[0].1)
            .map_err(|_| refuse("has a certificate that does not parse".into()))?;
        leaf.verify_signature(Some(ca_cert.public_key()))
            .map_err(|_| {
                refuse("has an admin certificate the cluster's client CA did not sign".into())
            })?;
    }
    Ok(AdminCredentials {
        ca: ca.trim().to_string(),
        cert: cert.trim().to_string(),
        key: key.trim().to_string(),
    })
}

/// The kubeconfig bootstrap writes: API address `server_url`, one cluster, one user and one
/// context, all named `name`, the current context set; nothing but the three checked values.
pub fn build(c: &AdminCredentials, name: &str, server_url: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    certificate-authority-data: {ca}\n    server: {url}\nusers:\n- name: {n}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\ncurrent-context: {n}\npreferences: {{}}\n",
        n = q(name),
        ca = q(&c.ca),
        url = q(server_url),
        cert = q(&c.cert),
        key = q(&c.key),
    )
}

/// [`credentials`], then [`build`].
pub fn rewrite(
    k3s_yaml: &str,
    pins: &Pins<'_>,
    name: &str,
    server_url: &str,
) -> Result<String, KubeconfigError> {
    Ok(build(&credentials(k3s_yaml, pins)?, name, server_url))
}

/// Merge `ours` (from [`build`]: one cluster, one user, one context) into `existing` (the
/// text of `~/.kube/config`, possibly empty): the entries named like ours are replaced,
/// everything else is kept, and a file without a current context gets ours.
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
        if new_items.len() != 1 {
            return Err(KubeconfigError::Refused(format!(
                "to merge has {} `{key}`, not one",
                new_items.len()
            )));
        }
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
mod tests;
