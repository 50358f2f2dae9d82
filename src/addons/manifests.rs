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
        let content = render(&m.name, &text, &inv.variables)?;
        unsealed(&m.name, &content, inv)?;
        out.push(Extra {
            name: m.name.clone(),
            content,
            after: m.after.clone(),
        });
    }
    Ok(out)
}

/// The least a sealed value can be: sealed-secrets' hybrid encryption writes a 2-byte length,
/// the session key encrypted with RSA-OAEP (256 bytes for the smallest key it makes, 2048
/// bits), then the AES-GCM ciphertext with its 16-byte tag (`pkg/crypto/crypto.go`
/// HybridEncrypt).
const SEALED_MIN_BYTES: usize = 2 + 256 + 16;

/// A SealedSecret whose `encryptedData` holds something that cannot be a sealed value (a
/// placeholder such as `REPLACE-...`, plain text) is refused before any host is contacted:
/// the controller could never open it, its Secret would never exist, and whatever mounts it
/// would wait forever. The error names the variable that filled it in and how to seal it.
fn unsealed(name: &str, content: &str, inv: &Inventory) -> Result<(), AddonError> {
    use base64::Engine;
    let mut bad = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(content) {
        let Ok(v) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
            continue;
        };
        if v.get("kind").and_then(serde_yaml::Value::as_str) != Some("SealedSecret") {
            continue;
        }
        let field = |p: &[&str]| {
            p.iter()
                .try_fold(&v, |x, k| x.get(*k))
                .and_then(serde_yaml::Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (ns, secret) = (
            field(&["metadata", "namespace"]),
            field(&["metadata", "name"]),
        );
        let Some(data) = v
            .get("spec")
            .and_then(|s| s.get("encryptedData"))
            .and_then(serde_yaml::Value::as_mapping)
        else {
            continue;
        };
        for (k, val) in data {
            let key = k.as_str().unwrap_or("");
            let text = val.as_str().unwrap_or("");
            let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim());
            if decoded.is_ok_and(|b| b.len() >= SEALED_MIN_BYTES) {
                continue;
            }
            let from = inv
                .variables
                .iter()
                .find(|(_, v)| v.as_str() == text)
                .map(|(n, _)| format!(" (from [variables] {n})"))
                .unwrap_or_default();
            let shown: String = text.chars().take(40).collect();
            bad.push(format!(
                "manifest {name}: SealedSecret {ns}/{secret} key {key} is \"{shown}\"{from}, which is not a sealed value: the Sealed Secrets controller could not open it, so the Secret {ns}/{secret} would never exist. Seal the value with the cluster's key and put the output there: `bootstrap sealed-secrets cert {} > sealing.pem`, then `kubeseal --raw --cert sealing.pem --namespace {ns} --name {secret} --from-file FILE` (FILE holds the value of {key})",
                inv.path().display()
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(AddonError::Other(bad.join("\n")))
    }
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
