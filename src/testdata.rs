//! Objects and outputs recorded from real clusters (`tests/fixtures/upstream/`, each with a
//! header naming its source): the contract the parsers are tested against. A file's leading
//! `#` lines are its header; YAML is read as JSON.

pub use xtask::fixtures::{hash_on_job_metadata, json, text};

/// Fixture objects as the `items` of a `kubectl get -o json` List (kubectl leaves items
/// without `kind` when a single-kind list is printed: it is filled in from `kind`).
pub fn list(items: &[(&str, &str)]) -> String {
    let items: Vec<serde_json::Value> = items
        .iter()
        .map(|(name, kind)| {
            let mut v = json(name);
            if v.get("kind").is_none() {
                v["kind"] = serde_json::Value::from(*kind);
            }
            v
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// A k3s admin kubeconfig as k3s writes it (`WriteClientKubeConfig`: the server CA, the admin
/// certificate followed by the client CA, the key), with the CAs that made it. Generated, not
/// recorded: a recorded one would carry a real cluster's admin key.
pub struct K3sKubeconfig {
    pub text: String,
    /// `server/tls/server-ca.crt`.
    pub server_ca: String,
    /// `server/tls/client-ca.crt`.
    pub client_ca: String,
    /// The hash the cluster's tokens carry: sha256 of `server-ca.crt`.
    pub ca_hash: String,
}

fn self_signed_ca(cn: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_string());
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

/// One generated cluster's admin kubeconfig, the same for every test of a run.
pub fn k3s_kubeconfig() -> &'static K3sKubeconfig {
    use base64::Engine;
    use sha2::Digest;
    static ONE: std::sync::OnceLock<K3sKubeconfig> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let (_, _, server_ca) = self_signed_ca("k3s-server-ca@1700000000");
        let (client_params, client_key, client_ca) = self_signed_ca("k3s-client-ca@1700000000");
        let issuer = rcgen::Issuer::new(client_params, client_key);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:admin");
        let leaf = p.signed_by(&key, &issuer).unwrap().pem();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&server_ca),
            b64(&format!("{leaf}{client_ca}")),
            b64(&key.serialize_pem()),
        );
        let ca_hash = hex::encode(sha2::Sha256::digest(server_ca.as_bytes()));
        K3sKubeconfig {
            text,
            server_ca,
            client_ca,
            ca_hash,
        }
    })
}
