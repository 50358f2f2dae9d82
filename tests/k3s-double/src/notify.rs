//! sd_notify over $NOTIFY_SOCKET (path or abstract `@name`).

use std::os::unix::net::UnixDatagram;

pub fn notify(msg: &str) -> bool {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            Ok(addr) => sock.send_to_addr(msg.as_bytes(), &addr).is_ok(),
            Err(_) => false,
        }
    } else {
        sock.send_to(msg.as_bytes(), &path).is_ok()
    }
}

pub fn ready() {
    notify("READY=1");
}
