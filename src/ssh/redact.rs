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

    /// Adds a secret; it is masked in everything redacted from now on.
    pub fn register(&self, secret: impl Into<String>) {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut set = match self.secrets.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !set.contains(&secret) {
            set.push(secret);
            // Longest first, so a secret that contains another is masked whole.
            set.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
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
