//! A stand-in for k3s for the lab: same CLI, files, certificates, join protocol and
//! Kubernetes API (served over TLS, for the upstream kubectl that `k3s kubectl` runs), with a
//! small replicated state and controllers instead of etcd, kube-controller-manager and kubelets.

mod agent;
mod api;
mod common;
mod config;
mod controllers;
mod deploy;
mod join;
mod kinds;
mod kubectl;
mod logging;
mod net;
mod nodes;
mod notify;
mod objects;
mod pki;
mod registries;
mod reset;
mod s3;
mod server;
mod serving;
mod snapshot;
mod status;
mod store;
mod token;
mod util;

use config::Role;

pub fn version() -> &'static str {
    option_env!("K3S_DOUBLE_VERSION").unwrap_or("v1.36.3+k3s1")
}

/// `v1.36.3+k3s1 (abcdef01)`: the commit is derived from the version so it is stable.
pub fn version_line() -> String {
    format!(
        "{} ({})",
        version(),
        &util::sha256_hex(version().as_bytes())[..8]
    )
}

fn run_role(role: Role, args: &[String]) -> ! {
    match config::load(role, args) {
        Ok(cfg) => match role {
            Role::Server => server::run(cfg),
            Role::Agent => agent::run(cfg),
            Role::EtcdSnapshot => snapshot::main(args),
        },
        Err(e) => {
            eprintln!("{e}");
            let msg = match &e {
                config::ConfigError::Usage(f) => format!("flag provided but not defined: -{f}"),
                config::ConfigError::Other(s) => s.clone(),
            };
            util::fatal(msg);
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    if prog == "kubectl" {
        kubectl::main(&argv[1..]);
    }
    if prog == "crictl" || prog == "ctr" {
        eprintln!("{prog} is not implemented by the k3s double");
        std::process::exit(1);
    }
    let rest = &argv[argv.len().min(2)..];
    match argv.get(1).map(String::as_str) {
        Some("--version") | Some("-v") | Some("version") => {
            println!("k3s version {}", version_line());
            println!("go version go1.24.6");
        }
        Some("server") => run_role(Role::Server, rest),
        Some("agent") => run_role(Role::Agent, rest),
        Some("kubectl") => kubectl::main(rest),
        Some("etcd-snapshot") => snapshot::main(rest),
        Some("crictl")
        | Some("ctr")
        | Some("token")
        | Some("certificate")
        | Some("secrets-encrypt")
        | Some("check-config")
        | Some("completion") => {
            eprintln!("k3s {} is not implemented by the k3s double", argv[1]);
            std::process::exit(1);
        }
        None | Some("help") | Some("--help") | Some("-h") => {
            println!("NAME:\n   k3s - Kubernetes, but small and simple\n\nUSAGE:\n   k3s [global options] command [command options]\n\nCOMMANDS:\n   server   Run management server\n   agent    Run node agent\n   kubectl  Run kubectl");
        }
        Some(other) => {
            eprintln!("No help topic for '{other}'");
            std::process::exit(3);
        }
    }
}
