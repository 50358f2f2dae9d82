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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(password(&format!("K10{hash}::server:s3cret\n")), Some("s3cret"));
        assert_eq!(password(&format!("K10{hash}::node:agentpw")), Some("agentpw"));
        assert_eq!(password("plainpassword"), Some("plainpassword"));
        assert_eq!(password("K10broken"), None);
        assert_eq!(password("  "), None);
    }
}
