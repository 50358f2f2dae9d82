//! The HTTPS listener: TLS from rustls, HTTP/2 or HTTP/1.1 by ALPN from hyper, one task per
//! connection. Handlers get the connection's addresses and the client certificate, if any.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, std::io::Error>;
pub type HttpResponse = hyper::Response<Body>;

/// What the handler knows about the connection.
#[derive(Clone, Debug)]
pub struct Conn {
    /// The verified client certificate (leaf), when the client sent one.
    pub client_cert: Option<CertificateDer<'static>>,
}

pub fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    hyper::Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private")
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap_or_else(|_| hyper::Response::new(empty()))
}

pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body fed from a channel (watch events); the stream ends when the sender drops.
pub fn streamed(
    status: u16,
    content_type: &str,
) -> (tokio::sync::mpsc::Sender<Bytes>, HttpResponse) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let resp = hyper::Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-cache, private")
        .body(StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| hyper::Response::new(empty()));
    (tx, resp)
}

/// Passes a response from another server through unchanged (status, headers, streamed body).
pub fn passthrough(r: hyper::Response<Incoming>) -> HttpResponse {
    let (parts, body) = r.into_parts();
    hyper::Response::from_parts(parts, body.map_err(std::io::Error::other).boxed())
}

/// Serves until the process exits. `on_accept` sees each connection's local address first
/// (dynamiclistener learns it, `listener.go` Accept).
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    on_accept: Arc<dyn Fn(SocketAddr) + Send + Sync>,
    handler: H,
) where
    H: Fn(Conn, hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            continue;
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        on_accept(local);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await
            else {
                return;
            };
            let client_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            let conn = Conn { client_cert };
            let svc = hyper::service::service_fn(move |req| {
                let h = handler.clone();
                let c = conn.clone();
                async move { Ok::<_, std::convert::Infallible>(h(c, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Reads a whole request body (limited, like the apiserver's 3 MiB request limit).
pub async fn read_body(b: Incoming) -> Result<Vec<u8>, String> {
    let bytes = http_body_util::Limited::new(b, 16 << 20)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(bytes.to_vec())
}
