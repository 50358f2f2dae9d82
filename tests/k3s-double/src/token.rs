//! k3s join tokens: `K10<cahash>::<user>:<password>` or a bare password.

use base64::Engine;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub ca_hash: Option<String>,
    pub user: Option<String>,
    pub password: String,
}

pub fn parse(s: &str) -> Token {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("K10") {
        if let Some((hash, creds)) = rest.split_once("::") {
            let (user, pw) = match creds.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), p.to_string()),
                None => (None, creds.to_string()),
            };
            return Token {
                ca_hash: (!hash.is_empty()).then(|| hash.to_string()),
                user,
                password: pw,
            };
        }
    }
    Token {
        ca_hash: None,
        user: None,
        password: s.to_string(),
    }
}

pub fn format(ca_hash: &str, user: &str, password: &str) -> String {
    format!("K10{ca_hash}::{user}:{password}")
}

fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN CERTIFICATE") {
            cur = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            if let Some(b) = cur.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b) {
                    out.push(der);
                }
            }
        } else if let Some(b) = cur.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// hashCA: sha256 of the PEM file bytes for one cert; of the root's DER for a chain.
pub fn ca_hash(pem: &[u8]) -> String {
    let text = String::from_utf8_lossy(pem);
    let blocks = pem_blocks(&text);
    if blocks.len() > 1 {
        // The bundle is ordered leaf CA → intermediates → root.
        crate::util::sha256_hex(blocks.last().map(Vec::as_slice).unwrap_or_default())
    } else {
        crate::util::sha256_hex(pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let h = "a".repeat(64);
        let t = parse(&format!("K10{h}::server:secret\n"));
        assert_eq!(t.ca_hash.as_deref(), Some(h.as_str()));
        assert_eq!(t.user.as_deref(), Some("server"));
        assert_eq!(t.password, "secret");
        let t = parse("shorttoken");
        assert_eq!(
            t,
            Token {
                ca_hash: None,
                user: None,
                password: "shorttoken".into()
            }
        );
        assert_eq!(format(&h, "node", "x"), format!("K10{h}::node:x"));
    }

    #[test]
    fn hash_single_cert_is_file_bytes() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(ca_hash(pem), crate::util::sha256_hex(pem));
        let chain = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        assert_eq!(
            ca_hash(chain.as_bytes()),
            crate::util::sha256_hex(&[1, 2, 3])
        );
    }
}
