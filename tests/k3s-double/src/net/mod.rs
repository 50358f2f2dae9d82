//! Transport: TLS like k3s's listener and clients, HTTP from hyper.

pub mod client;
pub mod server;
pub mod tls;

use std::sync::OnceLock;

/// The runtime every listener and client runs on; plain threads block on it with `call`.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("k3s-net")
            .build()
            .unwrap_or_else(|e| crate::util::fatal(format!("cannot start the runtime: {e}")))
    })
}
