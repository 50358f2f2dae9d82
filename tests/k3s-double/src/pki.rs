//! The cluster's certificates, made the way k3s makes them (k3s `pkg/daemons/control/deps`,
//! rancher/dynamiclistener `factory`): self-signed ECDSA P-256 CAs named `k3s-<what>-ca@<unix
//! time>`, leaf certificates signed by them that carry their CA after them in the PEM file.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// A CA as k3s keeps it: the bundle file (`server-ca.crt`, the CA first) and its key.
#[derive(Clone, Debug)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A new self-signed CA, valid ten years like k3s's (`certutil.NewSelfSignedCACert`).
pub fn new_ca(what: &str) -> Result<Ca, String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("k3s-{what}-ca@{}", crate::util::now_secs()),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(1);
    p.not_after = now + Duration::days(3650);
    let cert = p.self_signed(&key).map_err(err)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a leaf certificate is for.
pub enum Usage {
    Server,
    Client,
}

impl Ca {
    /// The first certificate of the bundle: the one that signs.
    pub fn first_cert_pem(&self) -> Result<String, String> {
        let der = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()
            .ok_or("the CA bundle holds no certificate")?
            .map_err(err)?;
        Ok(pem_encode("CERTIFICATE", der.as_ref()))
    }

    /// Signs a leaf certificate. Returns (leaf then the CA bundle, key) as PEM, the way k3s
    /// writes `serving-*.crt` and `client-*.crt` files.
    pub fn sign(
        &self,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
        usage: Usage,
        days: i64,
    ) -> Result<(String, String), String> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(err)?;
        let issuer = Issuer::from_ca_cert_pem(&self.first_cert_pem()?, ca_key).map_err(err)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName).map_err(err),
            })
            .collect::<Result<_, _>>()?;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(1);
        p.not_after = now + Duration::days(days);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &issuer).map_err(err)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(err)?;
    if v.is_empty() {
        return Err("no certificate in PEM data".into());
    }
    Ok(v)
}

pub fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(err)
}

/// The subject alternative names of a DER certificate, in certificate order:
/// (DNS names, IP addresses).
pub fn sans(der: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (dns, ips);
    };
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// The certificate's subject: (common name, organizations).
pub fn subject(der: &[u8]) -> (String, Vec<String>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (String::new(), Vec::new());
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_string();
    let orgs = cert
        .subject()
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    (cn, orgs)
}

/// Whether a name is covered by a certificate's SANs (exact or one-label wildcard).
pub fn covers(der: &[u8], name: &str) -> bool {
    let (dns, ips) = sans(der);
    if let Ok(ip) = name.parse::<IpAddr>() {
        return ips.iter().any(|i| i.parse::<IpAddr>().ok() == Some(ip));
    }
    let name = name.to_lowercase();
    dns.iter().any(|d| {
        let d = d.to_lowercase();
        d == name
            || d.strip_prefix("*.").is_some_and(|rest| {
                name.split_once('.')
                    .is_some_and(|(first, tail)| !first.is_empty() && tail == rest)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_leaves_with_their_names_and_chain() {
        let ca = new_ca("server").unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let (chain, key_pem) = ca
            .sign(
                "k3s",
                &["k3s"],
                &["localhost".into(), "127.0.0.1".into(), "10.0.0.5".into()],
                Usage::Server,
                365,
            )
            .unwrap();
        let parsed = certs(chain.as_bytes()).unwrap();
        assert_eq!(parsed.len(), 2, "leaf then CA");
        assert_eq!(
            pem_encode("CERTIFICATE", parsed[1].as_ref()),
            ca.cert_pem,
            "the CA PEM is byte-identical to the bundle (the token hash depends on it)"
        );
        let (dns, ips) = sans(parsed[0].as_ref());
        assert_eq!(dns, vec!["localhost"]);
        assert_eq!(ips, vec!["127.0.0.1", "10.0.0.5"]);
        assert!(covers(parsed[0].as_ref(), "10.0.0.5"));
        assert!(!covers(parsed[0].as_ref(), "10.0.0.6"));
        assert!(key(key_pem.as_bytes()).is_ok());
        let (cn, orgs) = subject(parsed[0].as_ref());
        assert_eq!((cn.as_str(), orgs), ("k3s", vec!["k3s".to_string()]));
    }
}
