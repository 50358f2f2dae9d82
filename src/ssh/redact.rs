//! Secret redaction for logs, progress lines and error messages.
//!
//! Secrets travel to hosts on stdin or in 0600 files, never in argv; but a command's stderr or a
//! file's content can still echo one back. Every string this module's callers print goes
//! through [`redact`] first, so a registered secret never reaches a terminal or a log.

use std::sync::{Arc, OnceLock, RwLock};

/// What a redacted secret is replaced with.
pub const MASK: &str = "[REDACTED]";

/// Secrets shorter than this are not registered: masking every "1" or "ok" in logs would hide
/// more than it protects, and such values are not secrets.
const MIN_SECRET_LEN: usize = 4;

/// A set of secret strings to mask. Cheap to clone; clones share the set.
#[derive(Clone, Default, Debug)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret; it is masked in everything redacted from now on, as itself and inside
    /// any base64 or base64url text (a file holding it, printed encoded).
    pub fn register(&self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut forms = encoded_forms(secret.as_bytes());
        forms.push(secret);
        let mut set = match self.secrets.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for f in forms {
            if !set.contains(&f) {
                set.push(f);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        set.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// Returns `text` with every registered secret replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let set = match self.secrets.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = text.to_string();
        for s in set.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
            // A secret with a trailing newline (read from a file) is often printed without it.
            let trimmed = s.trim();
            if trimmed.len() >= MIN_SECRET_LEN && trimmed != s && out.contains(trimmed) {
                out = out.replace(trimmed, MASK);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.read().map(|s| s.is_empty()).unwrap_or(true)
    }
}

/// What `secret` looks like inside base64 (and base64url) of any text that holds it: base64
/// turns each 3 bytes into 4 characters, so where the secret starts within a group changes
/// its first characters; for each of the three starts, the characters of the whole groups
/// the secret alone makes are the same in any text around it. Those are masked (a few
/// characters at each end stay, too few to tell anything).
fn encoded_forms(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    let mut out = Vec::new();
    for skip in 0..3.min(secret.len()) {
        let rest = &secret[skip..];
        let whole = rest.len() / 3 * 3;
        // Below 8 characters a form would match ordinary base64 text by chance.
        if whole < 6 {
            continue;
        }
        let std = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&rest[..whole]);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&rest[..whole]);
        if url != std {
            out.push(url);
        }
        out.push(std);
    }
    out
}

/// The process-wide redactor used by the ssh engine for its logs and errors.
pub fn global() -> &'static Redactor {
    static GLOBAL: OnceLock<Redactor> = OnceLock::new();
    GLOBAL.get_or_init(Redactor::new)
}

/// Registers a secret with the process-wide redactor.
pub fn register_secret(secret: impl Into<String>) {
    global().register(secret);
}

/// Masks every secret registered with the process-wide redactor.
pub fn redact(text: &str) -> String {
    global().redact(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_secrets() {
        let r = Redactor::new();
        r.register("K10abcdef::server:s3cr3t");
        r.register("s3cr3t");
        let text = "token=K10abcdef::server:s3cr3t and s3cr3t again";
        assert_eq!(r.redact(text), "token=[REDACTED] and [REDACTED] again");
    }

    #[test]
    fn ignores_short_and_handles_trailing_newline() {
        let r = Redactor::new();
        r.register("ab");
        r.register("hunter22\n");
        assert_eq!(r.redact("ab hunter22"), "ab [REDACTED]");
        assert!(!r.is_empty());
    }

    /// Security review 3 (M2): a registered secret inside base64 of a larger file (the
    /// config.yaml that holds the token, printed `base64 -w0`) is masked wherever it starts.
    #[test]
    fn masks_secrets_inside_base64_at_any_offset() {
        use base64::Engine;
        let r = Redactor::new();
        let token = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d";
        r.register(token);
        for prefix in [
            "",
            "a",
            "ab",
            "token: \"",
            "# Written by bootstrap\nagent-token: \"",
        ] {
            let file = format!("{prefix}{token}\"\netcd-s3: true\n");
            for encoded in [
                base64::engine::general_purpose::STANDARD.encode(&file),
                base64::engine::general_purpose::URL_SAFE.encode(&file),
            ] {
                let shown = r.redact(&format!("config.b64\t{encoded}"));
                assert!(shown.contains(MASK), "{prefix:?}: {shown}");
                assert!(!shown.contains(&encoded), "{shown}");
                // Of the token's own characters at most two groups' worth are left, one at
                // each end: too few to tell anything.
                let decoded_left = shown
                    .replace(MASK, " ")
                    .split(|c: char| !c.is_ascii_alphanumeric() && !"+/-_=".contains(c))
                    .map(str::len)
                    .max()
                    .unwrap_or(0);
                assert!(decoded_left < encoded.len() / 2, "{shown}");
            }
        }
    }

    #[test]
    fn clones_share_the_set() {
        let r = Redactor::new();
        let c = r.clone();
        c.register("topsecret");
        assert_eq!(r.redact("x topsecret y"), "x [REDACTED] y");
    }

    #[test]
    fn global_works() {
        register_secret("global-secret-value");
        assert_eq!(redact("a global-secret-value b"), "a [REDACTED] b");
    }
}
