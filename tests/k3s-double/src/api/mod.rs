//! The port-6443 listener's request handling, in k3s's order (k3s `pkg/server/router.go`):
//! the supervisor's unauthenticated `/cacerts` and `/ping`, the double's own server-to-server
//! paths, then the Kubernetes API behind client-certificate authentication.

pub mod discovery;
pub mod patch;
pub mod pods;
pub mod proto;
pub mod rest;
pub mod select;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use crate::net::client::{self, Target};
use crate::net::server::{full, passthrough, read_body, Conn, HttpResponse};
use crate::net::tls::Trust;
use crate::server::Server;
use crate::status::ApiError;
use crate::util;

/// Header a follower sets when it passes an API request to the leader.
const FORWARDED_USER: &str = "X-K3s-Double-Forwarded-User";
pub const ORIGIN: &str = "X-K3s-Double-Origin";

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b[i] == b'+' {
            b' '
        } else {
            b[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(p, true), String::new()),
        })
        .collect()
}

fn header(req: &hyper::Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Who is asking, as the apiserver's authenticators would say.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
}

fn authenticate(srv: &Server, conn: &Conn, req: &hyper::Request<Incoming>) -> Option<User> {
    if let Some(cert) = &conn.client_cert {
        // rustls verified it against the client CA during the handshake.
        // Every certificate the client CA signed is trusted; the double issues only the
        // admin's (system:admin in system:masters).
        let (cn, _orgs) = crate::pki::subject(cert.as_ref());
        return Some(User { name: cn });
    }
    let fwd = header(req, FORWARDED_USER);
    if !fwd.is_empty()
        && srv.check_basic(&header(req, "Authorization")) == crate::server::Auth::Server
    {
        return Some(User { name: fwd });
    }
    None
}

fn checks_body(ok: bool, name: &str, verbose: bool) -> (u16, String) {
    let checks = [
        ("ping", true),
        ("log", true),
        ("etcd", ok),
        ("etcd-readiness", ok),
        ("informer-sync", true),
        ("poststarthook/start-apiserver-admission-initializer", true),
        ("poststarthook/generic-apiserver-start-informers", true),
        ("poststarthook/k3s-double-controllers", true),
    ];
    if ok && !verbose {
        return (200, "ok".into());
    }
    let mut s = String::new();
    for (c, good) in checks {
        if good {
            s.push_str(&format!("[+]{c} ok\n"));
        } else {
            s.push_str(&format!("[-]{c} failed: reason withheld\n"));
        }
    }
    if ok {
        s.push_str(&format!("{name} check passed\n"));
        (200, s)
    } else {
        s.push_str(&format!("{name} check failed\n"));
        (500, s)
    }
}

pub async fn handle(srv: Arc<Server>, conn: Conn, req: hyper::Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().as_str().to_string();
    // dynamiclistener's cacheHandler: an IP in the Host header is a name to serve
    // (`listener.go` cacheHandler), unless a browser sent it.
    let host = header(&req, "Host");
    let host_only = host
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&host)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host_only.parse::<std::net::IpAddr>().is_ok()
        && !header(&req, "User-Agent")
            .to_lowercase()
            .contains("mozilla")
    {
        srv.learn_name(&host_only);
    }

    // The supervisor: no authentication.
    if path == "/cacerts" {
        return full(200, "text/plain", srv.server_ca());
    }
    if path == "/ping" {
        return full(200, "text/plain", "pong");
    }
    if path == "/db/snapshot" || path == "/db/snapshot/" {
        let auth = header(&req, "Authorization");
        let body = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(e) => return full(400, "text/plain", e),
        };
        let srv2 = srv.clone();
        return tokio::task::spawn_blocking(move || {
            crate::snapshot::handle(srv2, &method, &auth, &body)
        })
        .await
        .unwrap_or_else(|_| full(500, "text/plain", "internal error"));
    }
    if let Some(rest) = path.strip_prefix("/v1-k3s-double/") {
        let auth = header(&req, "Authorization");
        let fwd = header(&req, "X-K3s-Double-Forwarded");
        let origin = header(&req, ORIGIN);
        let peer_node = header(&req, crate::server::PEER_NODE);
        let peer_cluster = header(&req, crate::server::PEER_CLUSTER);
        let rest = rest.to_string();
        let body = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(e) => return full(400, "text/plain", e),
        };
        let srv2 = srv.clone();
        return tokio::task::spawn_blocking(move || {
            let peer = (peer_node.as_str(), peer_cluster.as_str());
            srv2.supervisor(&method, &rest, &auth, !fwd.is_empty(), &origin, peer, body)
        })
        .await
        .unwrap_or_else(|_| full(500, "text/plain", "internal error"));
    }

    let Some(user) = authenticate(&srv, &conn, &req) else {
        return rest::error(&ApiError::unauthorized());
    };
    let (synced, quorum) = srv.health();
    match path.as_str() {
        "/readyz" | "/livez" | "/healthz" => {
            let q = parse_query(&query);
            let name = path.trim_start_matches('/');
            let (code, body) = checks_body(synced && quorum, name, q.contains_key("verbose"));
            return full(code, "text/plain; charset=utf-8", body);
        }
        "/version" => {
            return full(
                200,
                "application/json",
                serde_json::to_vec_pretty(&discovery::version_info()).unwrap_or_default(),
            )
        }
        _ => {}
    }
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let kinds = srv.state.lock().expect("state lock").kinds();
    let json = |v: Option<Value>| match v {
        Some(v) => full(
            200,
            "application/json",
            serde_json::to_vec(&v).unwrap_or_default(),
        ),
        None => rest::error(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    };
    // Discovery is served from this server's copy of the state.
    match segs.as_slice() {
        ["api"] => return json(Some(discovery::api_versions(&srv.ctx.api))),
        ["apis"] => return json(Some(discovery::api_group_list(&kinds))),
        ["api", v] => return json(discovery::resource_list(&kinds, "", v)),
        ["apis", g] => return json(discovery::api_group(&kinds, g)),
        ["apis", g, v] => return json(discovery::resource_list(&kinds, g, v)),
        ["openapi", "v3"] => return json(Some(discovery::openapi_root(&kinds))),
        ["openapi", "v3", "api", v] => return json(discovery::openapi_gv(&kinds, "", v)),
        ["openapi", "v3", "apis", g, v] => return json(discovery::openapi_gv(&kinds, g, v)),
        _ => {}
    }
    // Discovery comes from the apiserver's memory; everything else needs etcd.
    if !quorum {
        return rest::error(&ApiError::etcd_timeout());
    }
    let (group, version, rest_segs): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => {
            return rest::error(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
        }
    };
    let route = match rest::route(&kinds, group, version, rest_segs) {
        Ok(r) => r,
        Err(e) => return rest::error(&e),
    };
    // One writer: a follower passes every resource request to the leader (etcd's leader
    // applies all writes, and reads after writes see them).
    if let Some(leader) = srv.leader_elsewhere() {
        return forward(&srv, leader, &user, req).await;
    }
    let origin = match header(&req, ORIGIN) {
        o if !o.is_empty() => o,
        _ => srv.ctx.node.clone(),
    };
    let call = rest::Call {
        method,
        query: parse_query(&query),
        accept: header(&req, "Accept"),
        content_type: header(&req, "Content-Type"),
        origin,
        body: match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(e) => return rest::error(&ApiError::bad_request(e)),
        },
    };
    let _ = user;
    rest::handle(srv, route, call).await
}

async fn forward(
    srv: &Arc<Server>,
    leader: String,
    user: &User,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return rest::error(&ApiError::bad_request(e)),
    };
    let (ca, pw) = {
        let st = srv.state.lock().expect("state lock");
        (
            st.bootstrap.server_ca_crt.clone(),
            st.bootstrap.server_password.clone(),
        )
    };
    let mut leader = leader;
    for _ in 0..3 {
        let target = match Target::from_host_port(&leader, 6443) {
            Ok(t) => t,
            Err(e) => return rest::error(&ApiError::internal(e)),
        };
        let mut b = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
            )
            .header("Host", target.authority())
            .header("Authorization", client::basic_auth("server", &pw))
            .header(FORWARDED_USER, user.name.as_str())
            .header(
                ORIGIN,
                parts
                    .headers
                    .get(ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(&srv.ctx.node),
            );
        for h in ["Accept", "Content-Type", "User-Agent"] {
            if let Some(v) = parts.headers.get(h) {
                b = b.header(h, v.clone());
            }
        }
        let Ok(r) = b.body(Full::new(Bytes::from(body.clone()))) else {
            return rest::error(&ApiError::internal("cannot build the forwarded request"));
        };
        match client::send_streaming(
            &target,
            &Trust::Ca(ca.clone().into_bytes()),
            None,
            r,
            Duration::from_secs(10),
        )
        .await
        {
            Ok(resp) => return passthrough(resp),
            Err(e) => {
                util::warn(format!("forwarding to the leader {leader} failed: {e}"));
                srv.mark_down(&leader);
                match srv.leader_elsewhere() {
                    Some(next) => leader = next,
                    None => return rest::error(&ApiError::etcd_timeout()),
                }
            }
        }
    }
    rest::error(&ApiError::etcd_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let q =
            parse_query("labelSelector=a%3Db%2Cc&fieldSelector=spec.nodeName%3Dw1&watch=true&x");
        assert_eq!(q["labelSelector"], "a=b,c");
        assert_eq!(q["fieldSelector"], "spec.nodeName=w1");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "");
    }
}
