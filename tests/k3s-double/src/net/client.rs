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
                // Go reads the first bytes of a TLS handshake answered in plain HTTP as that.
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                    "http: server gave HTTP response to HTTPS client".into()
                }
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

/// How a request reaches its server, as Go's `http.Transport` does it: TLS with `tls`'s trust
/// (HTTPS) or plain HTTP, directly or through an HTTP proxy (`CONNECT` for HTTPS, the
/// absolute-form request for HTTP).
#[derive(Clone, Debug, Default)]
pub struct Route {
    pub tls: Option<Trust>,
    pub proxy: Option<Target>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The proxy's answer to `CONNECT`: Go's transport fails with the status text after the
/// code (`Forbidden`) when it is not 200.
async fn proxy_connect(s: &mut TcpStream, t: &Target) -> Result<(), NetError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = t.authority();
    s.write_all(format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| NetError(io_cause(&e)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) => return Err(NetError("unexpected EOF".into())),
            Ok(_) => head.push(b[0]),
            Err(e) => return Err(NetError(io_cause(&e))),
        }
        if head.len() > 16 * 1024 {
            return Err(NetError("net/http: proxy response too large".into()));
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .map(|(_, s)| s.trim().to_string())
        .unwrap_or_default();
    if status.starts_with("200") {
        return Ok(());
    }
    match status.split_once(' ') {
        Some((_, text)) => Err(NetError(text.to_string())),
        None => Err(NetError("unknown status code".into())),
    }
}

/// Sends one request along `route`, `req`'s URI being the path (and query); the response head
/// with a streaming body.
pub async fn send_route(
    t: &Target,
    route: &Route,
    mut req: hyper::Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<hyper::Response<Incoming>, NetError> {
    // Go's DefaultTransport (which k3s's S3 client clones): 30 s to dial, 10 s for the TLS
    // handshake, within the request's own deadline.
    let dial = timeout.min(Duration::from_secs(30));
    let handshake = timeout.min(Duration::from_secs(10));
    let mut tcp = match &route.proxy {
        None => connect(t, dial).await?,
        Some(p) => connect(p, dial)
            .await
            .map_err(|e| NetError(format!("proxyconnect tcp: {}", e.0)))?,
    };
    let io: Box<dyn Io> = match &route.tls {
        Some(trust) => {
            if route.proxy.is_some() {
                tokio::time::timeout(timeout, proxy_connect(&mut tcp, t))
                    .await
                    .map_err(|_| NetError("context deadline exceeded".into()))??;
            }
            let cfg = tls::client_config(trust, None).map_err(NetError)?;
            let tls = tokio::time::timeout(
                handshake,
                tokio_rustls::TlsConnector::from(cfg).connect(server_name(t)?, tcp),
            )
            .await
            .map_err(|_| NetError("net/http: TLS handshake timeout".into()))?
            .map_err(|e| NetError(io_cause(&e)))?;
            Box::new(tls)
        }
        None => {
            if route.proxy.is_some() {
                let host = req
                    .headers()
                    .get("Host")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| t.authority());
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                *req.uri_mut() = format!("http://{host}{pq}")
                    .parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| NetError(e.to_string()))?;
            }
            Box::new(tcp)
        }
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| NetError(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    match tokio::time::timeout(timeout, sender.send_request(req)).await {
        Err(_) => Err(NetError("context deadline exceeded".into())),
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

    /// A proxy that answers one connection with `reply`; the request's first line comes back.
    fn proxy(reply: &'static str) -> (Target, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap() == 1 {
                head.push(b[0]);
            }
            c.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        });
        (
            Target {
                host: "127.0.0.1".into(),
                port,
            },
            h,
        )
    }

    fn get(path: &str, host: &str) -> hyper::Request<Full<Bytes>> {
        hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("Host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[test]
    fn requests_through_an_http_proxy_as_go_sends_them() {
        let t = Target {
            host: "s3.example.test".into(),
            port: 9000,
        };
        // Plain HTTP: the absolute-form request to the proxy.
        let (p, h) = proxy("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let route = Route {
            tls: None,
            proxy: Some(p),
        };
        let r = crate::net::rt().block_on(send_route(
            &t,
            &route,
            get("/b/k?x=1", "s3.example.test:9000"),
            Duration::from_secs(5),
        ));
        assert_eq!(r.unwrap().status(), 200);
        assert_eq!(
            h.join().unwrap(),
            "GET http://s3.example.test:9000/b/k?x=1 HTTP/1.1"
        );
        // HTTPS: CONNECT first; a refusal is its status text.
        let (p, h) = proxy("HTTP/1.1 403 Forbidden\r\n\r\n");
        let route = Route {
            tls: Some(Trust::Insecure),
            proxy: Some(p),
        };
        let e = crate::net::rt()
            .block_on(send_route(
                &t,
                &route,
                get("/b/", "s3.example.test:9000"),
                Duration::from_secs(5),
            ))
            .unwrap_err();
        assert_eq!(e.0, "Forbidden");
        assert_eq!(h.join().unwrap(), "CONNECT s3.example.test:9000 HTTP/1.1");
        // An unreachable proxy.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let route = Route {
            tls: None,
            proxy: Some(Target {
                host: "127.0.0.1".into(),
                port,
            }),
        };
        let e = crate::net::rt()
            .block_on(send_route(
                &t,
                &route,
                get("/", "x"),
                Duration::from_secs(5),
            ))
            .unwrap_err();
        assert_eq!(
            e.0,
            format!("proxyconnect tcp: dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }
}
