//! Cluster tokens (reference §4): a server token and a separate agent token,
//! both random passwords generated here, and the `K10<cahash>::<user>:<password>`
//! files k3s writes from them.

/// A fresh 32-byte random password, hex encoded, from the OS CSPRNG.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The password part of a token as k3s writes or accepts it: the secure form
/// `K10<hash>::<user>:<password>` or a bare ("short") password.
pub fn password(token: &str) -> Option<&str> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    match token.strip_prefix("K10") {
        Some(rest) => {
            let (_hash, creds) = rest.split_once("::")?;
            let (_user, pw) = creds.split_once(':')?;
            (!pw.is_empty()).then_some(pw)
        }
        None => Some(token),
    }
}

/// The CA hash of a secure token (`K10<hash>::...`); `None` for a short one.
pub fn ca_hash(token: &str) -> Option<&str> {
    let (hash, _) = token.trim().strip_prefix("K10")?.split_once("::")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// Stands for the cluster CA's hash in a file planned before the cluster exists; the writer
/// puts the hash the first server wrote in its place before the file reaches a host.
pub const PENDING_CA_HASH: &str = "@cluster-ca-hash@";

/// The token a joiner is given: the secure form when the CA hash is known (`user` is
/// `server` for servers, `node` for agents), which pins the cluster CA (k3s
/// pkg/clientaccess/token.go:107-115 writes it, :262-276 checks a joiner's server against
/// it); a bare password makes k3s trust the CA on first use (token.go:219-226).
pub fn join_token(password: &str, user: &str, ca_hash: Option<&str>) -> String {
    match ca_hash {
        Some(h) => format!("K10{h}::{user}:{password}"),
        None => password.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_tokens_carry_the_ca_hash() {
        let h = "ab".repeat(32);
        assert_eq!(ca_hash(&format!("K10{h}::server:pw\n")), Some(h.as_str()));
        assert_eq!(ca_hash("K10::server:pw"), None);
        assert_eq!(ca_hash("pw"), None);
        assert_eq!(
            join_token("pw", "node", Some(&h)),
            format!("K10{h}::node:pw")
        );
        assert_eq!(join_token("pw", "node", None), "pw");
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn password_of_secure_and_short_tokens() {
        let hash = "a".repeat(64);
        assert_eq!(
            password(&format!("K10{hash}::server:s3cret\n")),
            Some("s3cret")
        );
        assert_eq!(
            password(&format!("K10{hash}::node:agentpw")),
            Some("agentpw")
        );
        assert_eq!(password("plainpassword"), Some("plainpassword"));
        assert_eq!(password("K10broken"), None);
        assert_eq!(password("  "), None);
    }
}

/// The tokens of a cluster and where they came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenBackup {
    pub server: String,
    pub agent: String,
}

/// The tokens a server's config.yaml holds (bootstrap writes both there).
pub fn from_server_config(config_yaml: &str) -> Option<TokenBackup> {
    let doc: serde_yaml::Value = serde_yaml::from_str(config_yaml).ok()?;
    let get = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .and_then(password)
            .map(str::to_string)
    };
    let server = get("token")?;
    let agent = get("agent-token").unwrap_or_else(|| server.clone());
    Some(TokenBackup { server, agent })
}

/// The tokens of k3s's own files on a server (`server/token`, `server/agent-token`), which
/// hold them whoever wrote the config (install.sh, by hand).
pub fn from_token_files(server: &str, agent: Option<&str>) -> Option<TokenBackup> {
    let server = password(server)?.to_string();
    let agent = agent
        .and_then(password)
        .map(str::to_string)
        .unwrap_or_else(|| server.clone());
    Some(TokenBackup { server, agent })
}

/// Read the 0600 backup in `.bootstrap/`, if there is one.
pub fn load_backup(path: &std::path::Path) -> std::io::Result<Option<TokenBackup>> {
    match crate::local::read_optional(path)? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        None => Ok(None),
    }
}

/// Write the backup atomically with mode 0600 (the directory 0700).
pub fn save_backup(path: &std::path::Path, tokens: &TokenBackup) -> std::io::Result<()> {
    crate::local::write_private(path, serde_json::to_string_pretty(tokens)?.as_bytes())
}

#[cfg(test)]
mod backup_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn recovers_from_config_and_round_trips_backup() {
        let cfg = "node-name: \"m\"\ntoken: \"K10abc::server:pw1\"\nagent-token: \"pw2\"\n";
        let t = from_server_config(cfg).unwrap();
        assert_eq!(
            t,
            TokenBackup {
                server: "pw1".into(),
                agent: "pw2".into()
            }
        );
        assert!(from_server_config("node-name: m\n").is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".bootstrap/tokens.json");
        assert_eq!(load_backup(&path).unwrap(), None);
        save_backup(&path, &t).unwrap();
        assert_eq!(load_backup(&path).unwrap(), Some(t));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
