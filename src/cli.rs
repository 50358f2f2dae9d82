//! The command line: parse, load the inventory (exit 2 on any problem, before a host is
//! contacted), then every command the same way: the local facts, the facts of the hosts it
//! concerns, a plan, and that plan rendered (`plan`, `--plan`) or executed under the run
//! lock. [`run`] holds the commands that converge, [`show`] those that only read.

mod run;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::apply::Options;
use crate::inventory::Inventory;
use crate::outcome;
use crate::plan::Settings;
use crate::report::{OutputFormat, Reporter};
use crate::ssh;

#[derive(Parser, Debug)]
#[command(
    name = "bootstrap",
    version,
    about = "Turn bare hosts into a k3s cluster over SSH, and keep it converged",
    long_about = "Turn bare hosts into a k3s cluster over SSH, and keep it converged.\n\n\
        Exit codes: 0 converged, 1 failed, 2 bad invocation or inventory."
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// More detail (repeat for debug logs).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors and the final result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// `json`: one event per line on stdout, for CI.
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: OutputFormat,
    /// Hosts worked on at once (servers always go one at a time).
    #[arg(long, default_value_t = 30, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Deadline in seconds for each wait (a service ready, nodes Ready).
    #[arg(long, default_value_t = 300, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Agents upgraded at once during a rolling upgrade (cordon, drain, upgrade, uncordon).
    #[arg(long, default_value_t = 1, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    max_unavailable: u16,
}

#[derive(Subcommand, Debug)]
enum SealedSecretsCommand {
    /// Print the public certificate of the sealing key, from the backup in `.bootstrap/` or
    /// else from the cluster.
    Cert { inventory: PathBuf },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Converge the cluster: install, join, labels, taints, add-ons, kubeconfig.
    Up {
        /// The inventory file (TOML).
        inventory: PathBuf,
    },
    /// Show what `up` would do, phase by phase, without changing anything.
    Plan { inventory: PathBuf },
    /// Nodes, roles, versions, readiness, label/taint drift and add-on health.
    Status { inventory: PathBuf },
    /// Write the admin kubeconfig beside the inventory (API address rewritten).
    Kubeconfig {
        inventory: PathBuf,
        /// Also merge it into ~/.kube/config (or the first file in $KUBECONFIG).
        #[arg(long)]
        merge: bool,
    },
    /// Add, replace or remove one node (edits the inventory, keeping its comments).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Sealed Secrets: `cert` prints the sealing certificate PEM (for `kubeseal --cert`).
    SealedSecrets {
        #[command(subcommand)]
        command: SealedSecretsCommand,
    },
    /// Stop and uninstall k3s from every host (or one), as k3s-uninstall.sh does.
    Reset {
        inventory: PathBuf,
        /// Only this node (its Node is deleted from the cluster too: a server's first).
        #[arg(long)]
        node: Option<String>,
        /// With --node: reset a server even when etcd would lose quorum.
        #[arg(long, requires = "node")]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Show what it would do, and change nothing.
        #[arg(long)]
        plan: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Add a node to the inventory and converge it into the cluster.
    Add {
        inventory: PathBuf,
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, value_parser = ["server", "agent"])]
        role: String,
        /// `key=value`, repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// `key=value:Effect` or `key:Effect`, repeatable.
        #[arg(long = "taint")]
        taints: Vec<String>,
        /// Show what it would do, and change nothing (the inventory included).
        #[arg(long)]
        plan: bool,
    },
    /// Move a node (dead or alive) to a new host: same name, role, labels and taints.
    Replace {
        inventory: PathBuf,
        name: String,
        #[arg(long)]
        host: String,
        /// Delete the old node's pods that have no controller (kubectl drain --force);
        /// without it they stop the replace before anything changes.
        #[arg(long)]
        force: bool,
        /// Show what it would do, and change nothing (the inventory included).
        #[arg(long)]
        plan: bool,
    },
    /// Drain and delete a node, uninstall k3s from it, and drop it from the inventory.
    Remove {
        inventory: PathBuf,
        name: String,
        /// Remove a server even when etcd would lose quorum, and delete the node's pods that
        /// have no controller (kubectl drain --force).
        #[arg(long)]
        force: bool,
        /// Show what it would do, and change nothing (the inventory included).
        #[arg(long)]
        plan: bool,
    },
}

/// What every command gets.
struct Ctx {
    inv: Inventory,
    opts: Options,
    settings: Settings,
    rep: Reporter,
}

/// Parse the command line and run; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOOTSTRAP_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("bootstrap={level}"))
            }),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();

    let path = match &cli.command {
        Command::Up { inventory }
        | Command::Plan { inventory }
        | Command::Status { inventory }
        | Command::Kubeconfig { inventory, .. }
        | Command::Reset { inventory, .. }
        | Command::SealedSecrets {
            command: SealedSecretsCommand::Cert { inventory },
        }
        | Command::Node {
            command:
                NodeCommand::Add { inventory, .. }
                | NodeCommand::Replace { inventory, .. }
                | NodeCommand::Remove { inventory, .. },
        } => inventory.clone(),
    };
    let inv = match Inventory::load(&path) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rep = Reporter::new(cli.global.output, cli.global.quiet, cli.global.verbose > 0);
    for w in inv.warnings() {
        rep.warn(&w.to_string());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cx = Ctx {
        inv,
        opts: Options {
            parallel: cli.global.parallel as usize,
            timeout: Duration::from_secs(cli.global.timeout),
        },
        settings: Settings {
            max_unavailable: cli.global.max_unavailable as usize,
        },
        rep,
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Up { .. } => run::up(&cx).await,
            Command::Plan { .. } => run::plan(&cx).await,
            Command::Node { command } => match command {
                NodeCommand::Add {
                    name,
                    host,
                    role,
                    labels,
                    taints,
                    plan,
                    ..
                } => run::node_add(&cx, name, host, role, labels, taints, *plan).await,
                NodeCommand::Replace {
                    name,
                    host,
                    force,
                    plan,
                    ..
                } => run::node_replace(&cx, name, host, *force, *plan).await,
                NodeCommand::Remove {
                    name, force, plan, ..
                } => run::node_remove(&cx, name, *force, *plan).await,
            },
            Command::Reset {
                node,
                force,
                yes,
                plan,
                ..
            } => run::reset(&cx, node.as_deref(), *force, *yes, *plan).await,
            Command::Status { .. } => show::status(&cx).await,
            Command::Kubeconfig { merge, .. } => show::kubeconfig(&cx, *merge).await,
            Command::SealedSecrets {
                command: SealedSecretsCommand::Cert { .. },
            } => show::sealed_secrets_cert(&cx).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = ssh::redact(&format!("{e:#}"));
            match cx.rep.format() {
                OutputFormat::Json => {
                    println!("{}", serde_json::json!({"event": "error", "message": msg}))
                }
                OutputFormat::Text => eprintln!("error: {msg}"),
            }
            ExitCode::from(outcome::exit_code(&e))
        }
    }
}
