//! The serving certificate on 6443, as rancher/dynamiclistener keeps it for k3s: one
//! certificate for all servers, in the Secret `kube-system/k3s-serving`, whose names are the
//! configured SANs (k3s `pkg/cli/server/server.go` 299-305, 349; `pkg/cluster/https.go` 52)
//! plus names learned from connections (TLS SNI, the local address, an IP in the Host header)
//! that pass the filter: with `tls-san-security` (the default) only addresses of server
//! Nodes and configured SANs (`pkg/cluster/address_controller.go`), without it any name.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};

use crate::config::Config;
use crate::net::tls::{self, DynamicCert};
use crate::pki::{self, Usage};
use crate::store::{obj_key, State};
use crate::util;

pub const SECRET: &str = "k3s-serving";
const CN_PREFIX: &str = "listener.cattle.io/cn-";

/// The first address of the service range (`10.43.0.1` by default).
fn service_ip(cfg: &Config) -> Option<String> {
    let cidr = cfg
        .list("service-cidr")
        .first()
        .cloned()
        .unwrap_or_else(|| "10.43.0.0/16".into());
    let net = cidr.split('/').next()?;
    match net.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let n = u32::from(v4) + 1;
            Some(std::net::Ipv4Addr::from(n).to_string())
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6) + 1;
            Some(std::net::Ipv6Addr::from(n).to_string())
        }
    }
}

/// The names k3s puts in `ControlConfig.SANs` for this server, in k3s's order.
pub fn config_sans(cfg: &Config, node_name: &str, node_ips: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = cfg.list("tls-san");
    sans.extend(
        ["127.0.0.1", "::1", "localhost"]
            .iter()
            .map(|s| s.to_string()),
    );
    sans.push(node_name.to_string());
    sans.extend(cfg.list("node-external-ip"));
    if let Some((short, _)) = node_name.split_once('.') {
        sans.push(short.to_string());
    }
    sans.extend(node_ips.iter().cloned());
    if let Some(ip) = service_ip(cfg) {
        sans.push(ip);
    }
    if let Some(a) = cfg.get("advertise-address") {
        sans.push(a.to_string());
    }
    let domain = cfg.get("cluster-domain").unwrap_or("cluster.local");
    for n in [
        "kubernetes".to_string(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{domain}"),
    ] {
        sans.push(n);
    }
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| !s.is_empty() && seen.insert(s.clone()));
    sans
}

fn annotation_key(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = if clean.len() > 60 {
        format!(
            "{}-{}",
            &clean[..40],
            &util::sha256_hex(name.as_bytes())[..12]
        )
    } else {
        clean
    };
    format!("{CN_PREFIX}{clean}")
}

/// The names the shared certificate carries now (sorted, as dynamiclistener lists them).
pub fn secret_sans(st: &State) -> Vec<String> {
    let mut v: Vec<String> = st
        .get("", "Secret", "kube-system", SECRET)
        .and_then(|s| s.pointer("/metadata/annotations"))
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter(|(k, _)| k.starts_with(CN_PREFIX))
                .filter_map(|(_, v)| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

fn decode(v: Option<&Value>) -> Option<String> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(v?.as_str()?)
        .ok()?;
    String::from_utf8(b).ok()
}

/// (chain PEM, key PEM) of the shared certificate in the state.
pub fn secret_cert(st: &State) -> Option<(String, String)> {
    let s = st.get("", "Secret", "kube-system", SECRET)?;
    Some((
        decode(s.pointer("/data/tls.crt"))?,
        decode(s.pointer("/data/tls.key"))?,
    ))
}

fn sign(st: &State, sans: &[String]) -> Result<(String, String), String> {
    st.bootstrap
        .server_ca()
        .sign("k3s", &["k3s"], sans, Usage::Server, 365)
}

/// The leader's half of learning names: union them into the Secret and re-sign when the set
/// grew. Returns whether the Secret changed.
pub fn add_names(st: &mut State, names: &[String]) -> Result<bool, String> {
    let mut sans = secret_sans(st);
    let before = sans.clone();
    for n in names {
        if !n.is_empty() && !sans.contains(n) {
            sans.push(n.clone());
        }
    }
    sans.sort();
    sans.dedup();
    if sans == before && secret_cert(st).is_some() {
        return Ok(false);
    }
    let (crt, key) = sign(st, &sans)?;
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut ann = serde_json::Map::new();
    for n in &sans {
        ann.insert(annotation_key(n), json!(n));
    }
    let fp = pki::certs(crt.as_bytes())
        .ok()
        .and_then(|c| {
            c.first()
                .map(|c| util::sha256_hex(c.as_ref()).to_uppercase())
        })
        .unwrap_or_default();
    ann.insert(
        "listener.cattle.io/fingerprint".into(),
        json!(format!("SHA1={}", &fp[..40.min(fp.len())])),
    );
    let k = obj_key("", "Secret", "kube-system", SECRET);
    let obj = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": SECRET, "namespace": "kube-system", "annotations": ann},
        "data": {"tls.crt": enc(&crt), "tls.key": enc(&key)}});
    if st.objects.contains_key(&k) {
        st.replace(&k, obj);
    } else {
        st.put(obj);
    }
    Ok(true)
}

/// This server's side: the certificate it serves, and names waiting to reach the Secret.
pub struct Serving {
    pub resolver: Arc<DynamicCert>,
    pub config_sans: Vec<String>,
    pub security: bool,
    /// SANs of the certificate served now.
    current: Mutex<Vec<String>>,
    /// Names learned here that the Secret does not hold yet.
    pub pending: Mutex<Vec<String>>,
}

impl Serving {
    pub fn new(resolver: Arc<DynamicCert>, config_sans: Vec<String>, security: bool) -> Serving {
        Serving {
            resolver,
            config_sans,
            security,
            current: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
        }
    }

    pub fn current_sans(&self) -> Vec<String> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn install(&self, sans: Vec<String>, crt: &str, key: &str) -> Result<(), String> {
        let ck = tls::certified_key(crt, key)?;
        self.resolver.set(ck);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = sans;
        Ok(())
    }

    /// Serve the Secret's certificate when it covers everything this server needs, else a
    /// certificate signed here for the union (until the leader has merged the names).
    pub fn refresh(&self, st: &State) -> Result<(), String> {
        let secret = secret_sans(st);
        let mut want: Vec<String> = secret.clone();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for n in self.config_sans.iter().chain(pending.iter()) {
            if !want.contains(n) {
                want.push(n.clone());
            }
        }
        want.sort();
        want.dedup();
        if want == secret {
            if let Some((crt, key)) = secret_cert(st) {
                // The shared certificate, once it names everything (even when a local one
                // with the same names is served now: all servers serve the one).
                let same = self
                    .resolver
                    .get()
                    .and_then(|k| k.cert.first().map(|c| c.as_ref().to_vec()))
                    == pki::certs(crt.as_bytes())
                        .ok()
                        .and_then(|c| c.first().map(|c| c.as_ref().to_vec()));
                if same {
                    return Ok(());
                }
                return self.install(want, &crt, &key);
            }
        }
        if want == self.current_sans() {
            return Ok(());
        }
        let (crt, key) = sign(st, &want)?;
        self.install(want, &crt, &key)
    }

    /// Names the Secret lacks (this server's own SANs and what it learned).
    pub fn missing(&self, st: &State) -> Vec<String> {
        let secret = secret_sans(st);
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.config_sans
            .iter()
            .chain(pending.iter())
            .filter(|n| !secret.contains(n))
            .cloned()
            .collect()
    }

    /// dynamiclistener's `Filter`: configured SANs pass; other names pass only without
    /// `tls-san-security`, or when they are an address of a server Node.
    pub fn allowed(&self, st: &State, name: &str) -> bool {
        if self.config_sans.iter().any(|s| s == name) || !self.security {
            return true;
        }
        st.list("", "Node", None).iter().any(|n| {
            let labels = n.pointer("/metadata/labels");
            let server = labels
                .and_then(|l| l.get("node-role.kubernetes.io/control-plane"))
                .is_some()
                || labels
                    .and_then(|l| l.get("node-role.kubernetes.io/etcd"))
                    .is_some();
            server
                && n.pointer("/metadata/deletionTimestamp").is_none()
                && n.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter()
                            .any(|x| x.get("address").and_then(Value::as_str) == Some(name))
                    })
        })
    }

    /// A name seen on a connection. Returns a new certificate to serve right away when the
    /// name was added.
    pub fn learn(&self, st: &State, name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = name.trim_end_matches('.').to_lowercase();
        if name.is_empty() || name.contains('*') || self.current_sans().contains(&name) {
            return None;
        }
        if let Some(k) = self.resolver.get() {
            if k.cert
                .first()
                .is_some_and(|c| pki::covers(c.as_ref(), &name))
            {
                return None;
            }
        }
        if !self.allowed(st, &name) {
            return None;
        }
        util::info(format!(
            "dynamiclistener: adding {name} to the serving certificate"
        ));
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name);
        match self.refresh(st) {
            Ok(()) => self.resolver.get(),
            Err(e) => {
                util::error(format!("dynamiclistener: failed to update cert: {e}"));
                None
            }
        }
    }

    pub fn clear_pending(&self, done: &[String]) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|n| !done.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3s_sans_and_the_shared_secret() {
        let cfg = crate::config::Config {
            values: [
                ("tls-san".to_string(), vec!["k8s.example.com".to_string()]),
                (
                    "node-external-ip".to_string(),
                    vec!["203.0.113.10".to_string()],
                ),
            ]
            .into_iter()
            .collect(),
            warnings: vec![],
        };
        let sans = config_sans(&cfg, "master-1", &["10.0.0.11".into()]);
        assert_eq!(
            sans,
            vec![
                "k8s.example.com",
                "127.0.0.1",
                "::1",
                "localhost",
                "master-1",
                "203.0.113.10",
                "10.0.0.11",
                "10.43.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local"
            ]
        );
        let mut st = State::default();
        let ca = pki::new_ca("server").unwrap();
        st.bootstrap.server_ca_crt = ca.cert_pem;
        st.bootstrap.server_ca_key = ca.key_pem;
        assert!(add_names(&mut st, &sans).unwrap());
        assert!(
            !add_names(&mut st, &["10.0.0.11".into()]).unwrap(),
            "nothing new"
        );
        let (crt, _) = secret_cert(&st).unwrap();
        let leaf = &pki::certs(crt.as_bytes()).unwrap()[0];
        assert!(pki::covers(leaf.as_ref(), "k8s.example.com"));
        assert!(!pki::covers(leaf.as_ref(), "198.51.100.7"));
        assert!(add_names(&mut st, &["198.51.100.7".into()]).unwrap());
        assert!(secret_sans(&st).contains(&"198.51.100.7".to_string()));
    }
}
