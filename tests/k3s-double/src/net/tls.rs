//! rustls configurations: the server's (certificate chosen per connection, client certificates
//! requested but optional, as k3s's `tls.RequestClientCert`), and the clients' (trust nothing,
//! or a pinned CA bundle with the host name checked), with Go's x509 error texts so the logs
//! read like k3s's.

use std::sync::{Arc, OnceLock, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

use crate::pki;

pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

fn roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut r = RootCertStore::empty();
    for c in pki::certs(pem)? {
        r.add(c).map_err(|e| e.to_string())?;
    }
    Ok(r)
}

/// Go's `x509.HostnameError` text: the IP SANs when the host is an address, else the DNS SANs.
pub fn hostname_error(leaf: &[u8], host: &str) -> String {
    let (dns, ips) = pki::sans(leaf);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        if ips.is_empty() {
            return format!("x509: cannot validate certificate for {host} because it doesn't contain any IP SANs");
        }
        return format!(
            "x509: certificate is valid for {}, not {host}",
            ips.join(", ")
        );
    }
    if dns.is_empty() {
        return format!("x509: certificate is not valid for any names, but wanted to match {host}");
    }
    format!(
        "x509: certificate is valid for {}, not {host}",
        dns.join(", ")
    )
}

/// Verifies the chain against a pinned bundle and the name the client dialed, failing with
/// the message Go's crypto/x509 gives.
#[derive(Debug)]
struct GoVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for GoVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| {
                let host = match server_name {
                    ServerName::DnsName(d) => d.as_ref().to_string(),
                    ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                    _ => String::new(),
                };
                let msg = match &e {
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    ) => hostname_error(end_entity.as_ref(), &host),
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                        "x509: certificate signed by unknown authority".to_string()
                    }
                    rustls::Error::InvalidCertificate(
                        CertificateError::Expired
                        | CertificateError::ExpiredContext { .. }
                        | CertificateError::NotValidYet
                        | CertificateError::NotValidYetContext { .. },
                    ) => "x509: certificate has expired or is not yet valid".to_string(),
                    other => format!("x509: {other}"),
                };
                rustls::Error::General(format!("tls: failed to verify certificate: {msg}"))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `InsecureSkipVerify`: any certificate, as k3s's first `/cacerts` request uses.
#[derive(Debug)]
struct Insecure;

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whom a client trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Nothing is checked (k3s's `insecureClient`).
    Insecure,
    /// This PEM bundle, and the name dialed must be in the certificate.
    Ca(Vec<u8>),
    /// A Go `x509.CertPool` filled by `AppendCertsFromPEM`: the certificates of these PEM
    /// bundles that parse (others are skipped, as Go skips them), the name dialed checked.
    /// Empty, nothing verifies (`x509: certificate signed by unknown authority`).
    Pool(Vec<u8>),
}

/// `AppendCertsFromPEM`: the certificates that parse, how many were added.
pub fn pool(pem: &[u8]) -> (RootCertStore, usize) {
    let mut r = RootCertStore::empty();
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    let (added, _) = r.add_parsable_certificates(ders);
    (r, added)
}

/// A pool without certificates: every chain is from an unknown authority.
#[derive(Debug)]
struct NoRoots;

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Insecure.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Insecure.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        Insecure.supported_verify_schemes()
    }
}

/// A client certificate: (chain PEM, key PEM).
pub type ClientCert = (String, String);

pub fn client_config(
    trust: &Trust,
    cert: Option<&ClientCert>,
) -> Result<Arc<ClientConfig>, String> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Insecure => Arc::new(Insecure),
        Trust::Ca(pem) => Arc::new(GoVerifier {
            inner: WebPkiServerVerifier::builder_with_provider(Arc::new(roots(pem)?), provider())
                .build()
                .map_err(|e| e.to_string())?,
        }),
        Trust::Pool(pem) => match pool(pem) {
            (_, 0) => Arc::new(NoRoots),
            (r, _) => Arc::new(GoVerifier {
                inner: WebPkiServerVerifier::builder_with_provider(Arc::new(r), provider())
                    .build()
                    .map_err(|e| e.to_string())?,
            }),
        },
    };
    let b = b.dangerous().with_custom_certificate_verifier(verifier);
    let mut cfg = match cert {
        Some((chain, key)) => b
            .with_client_auth_cert(pki::certs(chain.as_bytes())?, pki::key(key.as_bytes())?)
            .map_err(|e| e.to_string())?,
        None => b.with_no_client_auth(),
    };
    // Go's http.Transport with a TLSClientConfig speaks HTTP/1.1, as k3s's clientaccess does.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The serving certificate, swapped when the SANs change; `learn` sees every name a client
/// sends in SNI (dynamiclistener's `getCertificate`) and may return a new certificate.
pub struct DynamicCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    #[allow(clippy::type_complexity)]
    learn: Box<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>,
}

impl std::fmt::Debug for DynamicCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynamicCert")
    }
}

impl DynamicCert {
    pub fn new(learn: impl Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync + 'static) -> Self {
        DynamicCert {
            current: RwLock::new(None),
            learn: Box::new(learn),
        }
    }

    pub fn set(&self, k: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(k);
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for DynamicCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            if let Some(k) = (self.learn)(name) {
                self.set(k.clone());
                return Some(k);
            }
        }
        self.get()
    }
}

/// A certified key from a chain PEM and its key PEM.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let certs = pki::certs(chain_pem.as_bytes())?;
    let key = provider()
        .key_provider
        .load_private_key(pki::key(key_pem.as_bytes())?)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// The API's TLS: h2 and HTTP/1.1, client certificates from `client_ca` verified when sent.
pub fn server_config(
    resolver: Arc<DynamicCert>,
    client_ca_pem: &[u8],
) -> Result<Arc<ServerConfig>, String> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca_pem)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
