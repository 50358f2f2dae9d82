//! `[registries]`: k3s's `registries.yaml` (mirrors with endpoints and rewrites, registry
//! configs with auth and TLS), and k3s's embedded registry mirror. Credentials never sit in
//! the inventory: a password or token comes from a file beside it or from the environment,
//! and reaches the nodes only inside their 0600 registries.yaml.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::error::{ErrorKind, Report};
use super::raw::{self, S};
use super::resolve_path;

/// Where k3s reads it (`--private-registry`'s default).
pub const REGISTRIES_PATH: &str = "/etc/rancher/k3s/registries.yaml";
/// The first line of the file bootstrap writes: a file without it is the operator's own.
pub const REGISTRIES_HEADER: &str =
    "# Written by bootstrap from [registries] in the inventory: edit it there.";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mirror {
    pub endpoint: Vec<String>,
    pub rewrite: BTreeMap<String, String>,
}

/// A secret read from a file or the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryConfig {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub identity_token: Option<Secret>,
    /// Paths on the nodes, as k3s reads them.
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registries {
    pub mirrors: BTreeMap<String, Mirror>,
    pub configs: BTreeMap<String, RegistryConfig>,
    /// k3s's `embedded-registry` (servers' config.yaml).
    pub embedded_registry: bool,
}

impl Registries {
    /// The passwords and tokens, to be masked in every message.
    pub fn secrets(&self) -> Vec<String> {
        self.configs
            .values()
            .flat_map(|c| [&c.password, &c.identity_token])
            .flatten()
            .map(|s| s.0.clone())
            .collect()
    }

    /// Whether there is anything for registries.yaml (the embedded registry alone needs no
    /// file: it mirrors only registries listed under `mirrors`).
    pub fn has_file(&self) -> bool {
        !self.mirrors.is_empty() || !self.configs.is_empty()
    }

    /// registries.yaml as k3s reads it (wharfie's `Registry`: `mirrors.<name>.endpoint`,
    /// `.rewrite`; `configs.<host>.auth.{username,password,identity_token}`,
    /// `.tls.{ca_file,cert_file,key_file,insecure_skip_verify}`), keys sorted, so the same
    /// inventory always renders the same bytes.
    pub fn render(&self) -> String {
        use serde_yaml::{Mapping, Value};
        let s = |v: &str| Value::String(v.to_string());
        let mut mirrors = Mapping::new();
        for (name, m) in &self.mirrors {
            let mut e = Mapping::new();
            e.insert(
                s("endpoint"),
                Value::Sequence(m.endpoint.iter().map(|u| s(u)).collect()),
            );
            if !m.rewrite.is_empty() {
                let rw: Mapping = m.rewrite.iter().map(|(k, v)| (s(k), s(v))).collect();
                e.insert(s("rewrite"), Value::Mapping(rw));
            }
            mirrors.insert(s(name), Value::Mapping(e));
        }
        let mut configs = Mapping::new();
        for (host, c) in &self.configs {
            let mut e = Mapping::new();
            let mut auth = Mapping::new();
            if let Some(u) = &c.username {
                auth.insert(s("username"), s(u));
            }
            if let Some(p) = &c.password {
                auth.insert(s("password"), s(&p.0));
            }
            if let Some(t) = &c.identity_token {
                auth.insert(s("identity_token"), s(&t.0));
            }
            if !auth.is_empty() {
                e.insert(s("auth"), Value::Mapping(auth));
            }
            let mut tls = Mapping::new();
            for (k, v) in [
                ("ca_file", &c.ca_file),
                ("cert_file", &c.cert_file),
                ("key_file", &c.key_file),
            ] {
                if let Some(v) = v {
                    tls.insert(s(k), s(v));
                }
            }
            if c.insecure_skip_verify {
                tls.insert(s("insecure_skip_verify"), Value::Bool(true));
            }
            if !tls.is_empty() {
                e.insert(s("tls"), Value::Mapping(tls));
            }
            configs.insert(s(host), Value::Mapping(e));
        }
        let mut top = Mapping::new();
        if !mirrors.is_empty() {
            top.insert(s("mirrors"), Value::Mapping(mirrors));
        }
        if !configs.is_empty() {
            top.insert(s("configs"), Value::Mapping(configs));
        }
        let body = serde_yaml::to_string(&Value::Mapping(top)).unwrap_or_default();
        format!("{REGISTRIES_HEADER}\n{body}")
    }
}

/// A registry name as containerd keys it: `host[:port]`, or `*` for every registry.
fn registry_name_ok(n: &str, star: bool) -> bool {
    (star && n == "*")
        || (!n.is_empty()
            && n.len() <= 255
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
            && !n.starts_with(['.', '-', ':']))
}

/// An endpoint as k3s takes it: `https://host[:port][/path]`, `http://...`, or without a
/// scheme (k3s adds `https://`). Credentials in it (`user:pass@`) are refused: they belong in
/// `[registries.configs]`, out of the inventory.
fn endpoint_ok(u: &str) -> Result<(), &'static str> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .unwrap_or(u);
    let host = rest.split('/').next().unwrap_or("");
    if host.contains('@') {
        return Err("credentials in the URL would sit in the inventory: give them in [registries.configs.\"HOST\"] (username, password_file or password_env)");
    }
    if host.is_empty()
        || rest.contains("://")
        || u.chars().any(|c| c.is_whitespace() || c.is_control())
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
    {
        return Err("expected https://host[:port][/path] (or http://, or host[:port] for https)");
    }
    Ok(())
}

/// A password or token: exactly one of `<what>_file` (beside the inventory) and
/// `<what>_env`, read now.
fn secret(
    r: &mut Report,
    host: &str,
    what: &str,
    file: &Option<S<String>>,
    env: &Option<S<String>>,
    base: &Path,
) -> Option<Secret> {
    match (file, env) {
        (Some(f), Some(_)) => {
            r.error(
                f.span(),
                ErrorKind::Conflict,
                format!("registries.configs.\"{host}\": set {what}_file or {what}_env, not both"),
            );
            None
        }
        (Some(f), None) => {
            let read = resolve_path(f.get_ref(), base).and_then(|p| {
                std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
            });
            match read.map(|t| t.trim_end_matches(['\n', '\r']).to_string()) {
                Ok(t) if !t.is_empty() && !t.contains('\n') => Some(Secret(t)),
                Ok(_) => {
                    r.error(
                        f.span(),
                        ErrorKind::InvalidValue,
                        format!("registries.configs.\"{host}\" {what}_file: expected one line holding the {what}"),
                    );
                    None
                }
                Err(e) => {
                    r.error(
                        f.span(),
                        ErrorKind::InvalidPath,
                        format!("registries.configs.\"{host}\" {what}_file {e}"),
                    );
                    None
                }
            }
        }
        (None, Some(e)) => match std::env::var(e.get_ref()) {
            Ok(v) if !v.is_empty() => Some(Secret(v)),
            _ => {
                r.error(
                    e.span(),
                    ErrorKind::MissingKey,
                    format!(
                        "registries.configs.\"{host}\" {what}_env: ${} is not set (or empty); export it, or use {what}_file",
                        e.get_ref()
                    ),
                );
                None
            }
        },
        (None, None) => None,
    }
}

fn node_path(r: &mut Report, host: &str, key: &str, v: &Option<S<String>>) -> Option<String> {
    let v = v.as_ref()?;
    if !v.get_ref().starts_with('/') || v.get_ref().contains(['\n', '\0']) {
        r.error(
            v.span(),
            ErrorKind::InvalidPath,
            format!(
                "registries.configs.\"{host}\" {key} is \"{}\"; expected an absolute path on the nodes (k3s reads it there)",
                v.get_ref()
            ),
        );
        return None;
    }
    Some(v.get_ref().clone())
}

pub(crate) fn registries(g: raw::RawRegistries, r: &mut Report, base: &Path) -> Registries {
    let mut out = Registries {
        embedded_registry: g.embedded_registry.unwrap_or(false),
        ..Registries::default()
    };
    if out.embedded_registry && g.mirrors.is_empty() {
        r.warn(
            r.key_span("embedded_registry"),
            "registries.embedded_registry = true mirrors only the registries listed under [registries.mirrors] (k3s pkg/spegel/spegel.go): with none, nothing is shared; add [registries.mirrors.\"docker.io\"] (an empty table is enough) or [registries.mirrors.\"*\"]",
        );
    }
    for (name, m) in g.mirrors {
        let n = name.get_ref();
        if !registry_name_ok(n, true) {
            r.error(
                name.span(),
                ErrorKind::InvalidValue,
                format!("registries.mirrors \"{n}\" is not a registry name; expected host[:port] (\"docker.io\") or \"*\""),
            );
            continue;
        }
        let m = m.into_inner();
        for e in &m.endpoint {
            if let Err(why) = endpoint_ok(e.get_ref()) {
                let shown = if e.get_ref().contains('@') {
                    "(with credentials, not shown)".to_string()
                } else {
                    format!("\"{}\"", e.get_ref())
                };
                r.error(
                    e.span(),
                    ErrorKind::InvalidUrl,
                    format!("registries.mirrors.\"{n}\" endpoint {shown}: {why}"),
                );
            }
        }
        let mut rewrite = BTreeMap::new();
        for (k, v) in &m.rewrite {
            if k.get_ref().is_empty() {
                r.error(
                    k.span(),
                    ErrorKind::InvalidValue,
                    format!("registries.mirrors.\"{n}\" rewrite: an empty pattern"),
                );
            }
            rewrite.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        out.mirrors.insert(
            n.clone(),
            Mirror {
                endpoint: m.endpoint.iter().map(|e| e.get_ref().clone()).collect(),
                rewrite,
            },
        );
    }
    for (host, c) in g.configs {
        let h = host.get_ref().clone();
        if !registry_name_ok(&h, true) {
            r.error(
                host.span(),
                ErrorKind::InvalidValue,
                format!("registries.configs \"{h}\" is not a registry host; expected host[:port], or \"*\" for every registry"),
            );
            continue;
        }
        let c = c.into_inner();
        if let Some(p) = &c.password {
            r.error(
                p.span(),
                ErrorKind::InvalidValue,
                format!("registries.configs.\"{h}\": a password never sits in the inventory; put it in a file (password_file) or the environment (password_env)"),
            );
        }
        let password = secret(r, &h, "password", &c.password_file, &c.password_env, base);
        let identity_token = secret(r, &h, "token", &c.token_file, &c.token_env, base);
        let username = c.username.as_ref().map(|u| u.get_ref().clone());
        match (&c.username, &password) {
            (Some(u), None) if c.password_file.is_none() && c.password_env.is_none() => r.error(
                u.span(),
                ErrorKind::MissingKey,
                format!("registries.configs.\"{h}\": username needs password_file or password_env"),
            ),
            (None, Some(_)) => r.error(
                host.span(),
                ErrorKind::MissingKey,
                format!("registries.configs.\"{h}\": a password needs a username"),
            ),
            _ => {}
        }
        out.configs.insert(
            h.clone(),
            RegistryConfig {
                username,
                password,
                identity_token,
                ca_file: node_path(r, &h, "ca_file", &c.ca_file),
                cert_file: node_path(r, &h, "cert_file", &c.cert_file),
                key_file: node_path(r, &h, "key_file", &c.key_file),
                insecure_skip_verify: c.insecure_skip_verify.unwrap_or(false),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_k3s_reads_sorted_with_the_header() {
        let mut g = Registries::default();
        g.mirrors.insert(
            "docker.io".into(),
            Mirror {
                endpoint: vec!["https://mirror.example.com".into()],
                rewrite: [("^rancher/(.*)".to_string(), "mirror/rancher/$1".to_string())].into(),
            },
        );
        g.configs.insert(
            "mirror.example.com".into(),
            RegistryConfig {
                username: Some("pull".into()),
                password: Some(Secret("pa:ss word".into())),
                ca_file: Some("/etc/ssl/mirror.pem".into()),
                ..Default::default()
            },
        );
        let text = g.render();
        assert!(text.starts_with(REGISTRIES_HEADER), "{text}");
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            v["mirrors"]["docker.io"]["endpoint"][0].as_str(),
            Some("https://mirror.example.com")
        );
        assert_eq!(
            v["mirrors"]["docker.io"]["rewrite"]["^rancher/(.*)"].as_str(),
            Some("mirror/rancher/$1")
        );
        assert_eq!(
            v["configs"]["mirror.example.com"]["auth"]["password"].as_str(),
            Some("pa:ss word")
        );
        assert_eq!(
            v["configs"]["mirror.example.com"]["tls"]["ca_file"].as_str(),
            Some("/etc/ssl/mirror.pem")
        );
        assert_eq!(g.render(), text);
        assert!(!format!("{g:?}").contains("pa:ss"));
        assert_eq!(g.secrets(), vec!["pa:ss word".to_string()]);
    }

    #[test]
    fn names_and_endpoints() {
        assert!(registry_name_ok("docker.io", false));
        assert!(registry_name_ok("registry.local:5000", false));
        assert!(registry_name_ok("*", true));
        assert!(!registry_name_ok("*", false));
        assert!(!registry_name_ok("a b", true));
        assert!(!registry_name_ok("", true));
        assert!(endpoint_ok("https://m.example.com:5000/v2").is_ok());
        assert!(endpoint_ok("http://10.0.0.1:5000").is_ok());
        assert!(endpoint_ok("http://[fd00::1]:5000").is_ok());
        // k3s adds https:// to an endpoint without a scheme.
        assert!(endpoint_ok("m.example.com:5000").is_ok());
        assert!(endpoint_ok("https://").is_err());
        assert!(endpoint_ok("ftp://x").is_err());
        assert!(endpoint_ok("https://pull:s3cret@m.example.com")
            .unwrap_err()
            .contains("credentials in the URL"));
    }
}
