//! HTTPS client: one connection per request (k3s's clientaccess sets `DisableKeepAlives`),
//! HTTP/1.1 over rustls, errors worded like Go's net/http so the double's logs read like k3s's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::tls::{self, ClientCert, Trust};

/// Where to connect and which name the certificate must carry.
#[derive(Clone, Debug)]
pub struct Target {
    /// host as written in the URL (a DNS name or an IP address).
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `https://host[:port][/...]`; the port defaults to 443 as in Go's URLs.
    pub fn from_url(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("only https:// URLs are supported, invalid scheme: {url}"))?;
        let hp = rest.split('/').next().unwrap_or(rest);
        Target::from_host_port(hp, 443)
    }

    /// `host:port`, `[v6]:port`, or a bare host (then `default_port`).
    pub fn from_host_port(hp: &str, default_port: u16) -> Result<Target, String> {
        if let Some(v6) = hp.strip_prefix('[') {
            let (h, rest) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad address {hp}"))?;
            let port = match rest.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port in {hp}"))?,
                None => default_port,
            };
            return Ok(Target {
                host: h.to_string(),
                port,
            });
        }
        match hp.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Ok(Target {
                host: h.to_string(),
                port: p.parse().map_err(|_| format!("bad port in {hp}"))?,
            }),
            _ => Ok(Target {
                host: hp.to_string(),
                port: default_port,
            }),
        }
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The cause part of a Go client error (`dial tcp ...: connect: connection refused`,
/// `tls: failed to verify certificate: x509: ...`); `go(...)` adds `Get "url": `.
#[derive(Debug, Clone)]
pub struct NetError(pub String);

impl NetError {
    pub fn go(&self, method: &str, url: &str) -> String {
        let m = method[..1].to_uppercase() + &method[1..].to_lowercase();
        format!("{m} \"{url}\": {}", self.0)
    }
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn io_cause(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        if let Some(r) = inner.downcast_ref::<rustls::Error>() {
            return match r {
                rustls::Error::General(m) => m.clone(),
                rustls::Error::AlertReceived(a) => {
                    format!("remote error: tls: {}", format!("{a:?}").to_lowercase())
                }
                other => format!("tls: {other}"),
            };
        }
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "EOF".into(),
        std::io::ErrorKind::ConnectionReset => "read: connection reset by peer".into(),
        _ => e.to_string(),
    }
}

fn os_text(e: &std::io::Error) -> String {
    // Go prints the errno text in lower case: "connect: connection refused".
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    s.to_lowercase()
}

async fn connect(t: &Target, timeout: Duration) -> Result<TcpStream, NetError> {
    let addr = t.authority();
    let resolved: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(&addr).await {
        Ok(a) => a.collect(),
        Err(_) => {
            return Err(NetError(format!(
                "dial tcp: lookup {}: no such host",
                t.host
            )))
        }
    };
    let Some(sa) = resolved.first().copied() else {
        return Err(NetError(format!(
            "dial tcp: lookup {}: no such host",
            t.host
        )));
    };
    match tokio::time::timeout(timeout, TcpStream::connect(sa)).await {
        Err(_) => Err(NetError(format!("dial tcp {sa}: i/o timeout"))),
        Ok(Err(e)) => Err(NetError(format!("dial tcp {sa}: connect: {}", os_text(&e)))),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

fn server_name(t: &Target) -> Result<rustls::pki_types::ServerName<'static>, NetError> {
    rustls::pki_types::ServerName::try_from(t.host.clone())
        .map_err(|e| NetError(format!("invalid server name {}: {e}", t.host)))
}

/// A request as the double sends it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            headers: vec![],
            body: vec![],
        }
    }
    pub fn post(path: &str, body: Vec<u8>) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Request {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// Sends one request and returns the response head with a streaming body (forwarding).
pub async fn send_streaming(
    t: &Target,
    trust: &Trust,
    cert: Option<&ClientCert>,
    req: hyper::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<hyper::Response<Incoming>, NetError> {
    let cfg = tls::client_config(trust, cert).map_err(NetError)?;
    let tcp = connect(t, timeout).await?;
    let tls = tokio::time::timeout(
        timeout,
        tokio_rustls::TlsConnector::from(cfg).connect(server_name(t)?, tcp),
    )
    .await
    .map_err(|_| NetError("net/http: TLS handshake timeout".into()))?
    .map_err(|e| NetError(io_cause(&e)))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| NetError(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    match tokio::time::timeout(timeout, sender.send_request(req)).await {
        Err(_) => Err(NetError(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
        )),
        Ok(Err(e)) => Err(NetError(if e.is_incomplete_message() {
            "EOF".into()
        } else {
            e.to_string()
        })),
        Ok(Ok(r)) => Ok(r),
    }
}

pub async fn send(
    t: &Target,
    trust: &Trust,
    cert: Option<&ClientCert>,
    r: Request,
    timeout: Duration,
) -> Result<Response, NetError> {
    let mut b = hyper::Request::builder()
        .method(r.method.as_str())
        .uri(r.path.as_str())
        .header("Host", t.authority())
        .header(
            "User-Agent",
            concat!("k3s-double/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b
        .body(Full::new(Bytes::from(r.body)))
        .map_err(|e| NetError(e.to_string()))?;
    let fut = async {
        let resp = send_streaming(t, trust, cert, req, timeout).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| NetError(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Response { status, body })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(NetError(
            "context deadline exceeded (Client.Timeout exceeded while reading body)".into(),
        )),
    }
}

/// `send` from a plain thread.
pub fn call(
    t: &Target,
    trust: &Trust,
    cert: Option<&ClientCert>,
    r: Request,
    timeout: Duration,
) -> Result<Response, NetError> {
    super::rt().block_on(send(t, trust, cert, r, timeout))
}

pub fn basic_auth(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_urls() {
        let t = Target::from_url("https://10.0.0.1:6443/cacerts").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.1", 6443));
        let t = Target::from_url("https://k8s.example.com").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("k8s.example.com", 443));
        let t = Target::from_url("https://[fd00::1]:6443").unwrap();
        assert_eq!(t.authority(), "[fd00::1]:6443");
        assert!(Target::from_url("http://x:6443").is_err());
        assert_eq!(
            NetError("EOF".into()).go("GET", "https://x:6443/cacerts"),
            "Get \"https://x:6443/cacerts\": EOF"
        );
    }
}
