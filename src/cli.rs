//! The command line: parse, load the inventory (exit 2 on any problem, before a host is
//! contacted), then every command the same way: the local facts, the facts of the hosts it
//! concerns, a plan, and that plan rendered (`plan`, `--plan`) or executed under the run
//! lock. [`run`] holds the commands that converge, [`show`] those that only read.

mod etcd;
mod init;
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
#[command(next_help_heading = "Global options")]
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
    /// Hosts connected to and worked on at once (servers always change one at a time).
    #[arg(long, default_value_t = 30, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
}

/// Options of the commands that wait on k3s.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Run options")]
struct Waits {
    /// Deadline in seconds for each wait (a service ready, nodes Ready, a drain).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

/// Options of the commands whose plan can hold a rolling upgrade.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Run options")]
struct Rollout {
    /// Agents upgraded at once during a rolling upgrade (cordon, drain, upgrade, uncordon).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    max_unavailable: u16,
}

#[derive(Subcommand, Debug)]
enum SealedSecretsCommand {
    /// Print the public certificate of the sealing key, from the backup in `.bootstrap/` or
    /// else from the cluster.
    Cert {
        /// The inventory file (TOML).
        inventory: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum EtcdCommand {
    /// Take an etcd snapshot on a server and copy it, with its record (the server token it
    /// needs), to `.bootstrap/snapshots/` beside the inventory.
    Snapshot {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The snapshot's base name (k3s adds the node name and the time).
        #[arg(long)]
        name: Option<String>,
        /// Keep the snapshot on the server only.
        #[arg(long)]
        no_fetch: bool,
    },
    /// The snapshots the cluster knows (on its servers and in S3) and the copies here.
    List {
        /// The inventory file (TOML).
        inventory: PathBuf,
    },
    /// Put the cluster back to a snapshot: a copy here (a path, or a name in
    /// `.bootstrap/snapshots/`), or one the cluster knows, by name.
    Restore {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The snapshot.
        snapshot: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Show what it would do, and change nothing.
        #[arg(long)]
        plan: bool,
        /// Delete the Nodes the restored cluster has that the inventory does not name (old
        /// hosts of a snapshot taken before they were replaced); without it they are named.
        #[arg(long)]
        delete_stale_nodes: bool,
        #[command(flatten)]
        waits: Waits,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a commented inventory for these hosts to stdout (`bootstrap init ... > cluster.toml`).
    Init {
        /// A server's address (IP or DNS name), repeatable; the first one starts the cluster.
        #[arg(long = "server", required = true, value_name = "HOST")]
        servers: Vec<String>,
        /// An agent's address (IP or DNS name), repeatable.
        #[arg(long = "agent", value_name = "HOST")]
        agents: Vec<String>,
        /// The cluster's name (a DNS label; it names the kubeconfig context).
        #[arg(long, default_value = "cluster")]
        name: String,
        /// The SSH user: root, or a user with passwordless sudo.
        #[arg(long, default_value = "root")]
        user: String,
        /// The known_hosts file the inventory names (and `--scan` adds to).
        #[arg(long, default_value = "~/.ssh/known_hosts")]
        known_hosts: String,
        /// Read each host's SSH host key, show its fingerprint and, once you confirm, add it
        /// to the known_hosts file.
        #[arg(long)]
        scan: bool,
        /// With --scan: add the keys without asking.
        #[arg(long, requires = "scan")]
        yes: bool,
    },
    /// Converge the cluster: install, join, labels, taints, add-ons, kubeconfig.
    Up {
        /// The inventory file (TOML).
        inventory: PathBuf,
        #[command(flatten)]
        waits: Waits,
        #[command(flatten)]
        rollout: Rollout,
    },
    /// Show what `up` would do, phase by phase, without changing anything.
    Plan {
        /// The inventory file (TOML).
        inventory: PathBuf,
        #[command(flatten)]
        rollout: Rollout,
    },
    /// Nodes, roles, versions, readiness, clocks, label/taint drift and add-on health.
    Status {
        /// The inventory file (TOML).
        inventory: PathBuf,
    },
    /// Write the admin kubeconfig beside the inventory (API address rewritten).
    Kubeconfig {
        /// The inventory file (TOML).
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
    /// etcd snapshots: take one, list them, restore one.
    Etcd {
        #[command(subcommand)]
        command: EtcdCommand,
    },
    /// Stop and uninstall k3s from every host (or one), as k3s-uninstall.sh does.
    Reset {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// Only this node (its Node is deleted from the cluster too: a server's first).
        #[arg(long, value_name = "NAME")]
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
        #[command(flatten)]
        waits: Waits,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Add a node to the inventory and converge it into the cluster.
    Add {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The new node's name (its Kubernetes node name).
        name: String,
        /// The new node's address: an IP or a DNS name SSH and the other nodes reach it at.
        #[arg(long)]
        host: String,
        /// What it runs: a server (control plane, etcd) or an agent.
        #[arg(long, value_parser = ["server", "agent"])]
        role: String,
        /// A label `key=value`, repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A taint `key=value:Effect` or `key:Effect`, repeatable.
        #[arg(long = "taint", value_name = "TAINT")]
        taints: Vec<String>,
        /// Show what it would do, and change nothing (the inventory included).
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        waits: Waits,
        #[command(flatten)]
        rollout: Rollout,
    },
    /// Move a node (dead or alive) to a new host: same name, role, labels and taints.
    Replace {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The node to move, by its name in the inventory.
        name: String,
        /// The new host's address: an IP or a DNS name.
        #[arg(long)]
        host: String,
        /// Delete the old node's pods that have no controller (kubectl drain --force);
        /// without it they stop the replace before anything changes.
        #[arg(long)]
        force: bool,
        /// Show what it would do, and change nothing (the inventory included).
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        waits: Waits,
        #[command(flatten)]
        rollout: Rollout,
    },
    /// Drain and delete a node, uninstall k3s from it, and drop it from the inventory.
    Remove {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The node to remove, by its name in the inventory.
        name: String,
        /// Remove a server even when etcd would lose quorum, and delete the node's pods that
        /// have no controller (kubectl drain --force).
        #[arg(long)]
        force: bool,
        /// Show what it would do, and change nothing (the inventory included).
        #[arg(long)]
        plan: bool,
        #[command(flatten)]
        waits: Waits,
    },
}

impl Command {
    /// The inventory the command names (all but `init`).
    fn inventory(&self) -> Option<&PathBuf> {
        Some(match self {
            Command::Init { .. } => return None,
            Command::Up { inventory, .. }
            | Command::Plan { inventory, .. }
            | Command::Status { inventory }
            | Command::Kubeconfig { inventory, .. }
            | Command::Reset { inventory, .. }
            | Command::SealedSecrets {
                command: SealedSecretsCommand::Cert { inventory },
            }
            | Command::Etcd {
                command:
                    EtcdCommand::Snapshot { inventory, .. }
                    | EtcdCommand::List { inventory }
                    | EtcdCommand::Restore { inventory, .. },
            }
            | Command::Node {
                command:
                    NodeCommand::Add { inventory, .. }
                    | NodeCommand::Replace { inventory, .. }
                    | NodeCommand::Remove { inventory, .. },
            } => inventory,
        })
    }

    /// Its deadline for each wait (the default where it does not wait).
    fn timeout(&self) -> Duration {
        let w = match self {
            Command::Up { waits, .. }
            | Command::Reset { waits, .. }
            | Command::Etcd {
                command: EtcdCommand::Restore { waits, .. },
            }
            | Command::Node {
                command:
                    NodeCommand::Add { waits, .. }
                    | NodeCommand::Replace { waits, .. }
                    | NodeCommand::Remove { waits, .. },
            } => Some(waits.timeout),
            _ => None,
        };
        Duration::from_secs(w.unwrap_or(300))
    }

    /// Its agents upgraded at once (1 where it plans no upgrade).
    fn max_unavailable(&self) -> usize {
        match self {
            Command::Up { rollout, .. }
            | Command::Plan { rollout, .. }
            | Command::Node {
                command: NodeCommand::Add { rollout, .. } | NodeCommand::Replace { rollout, .. },
            } => rollout.max_unavailable as usize,
            _ => 1,
        }
    }
}

/// Ask on the terminal, unless `yes`. Refuses when stdin is not a terminal.
pub(crate) fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(outcome::usage(format!(
            "{question}: stdin is not a terminal, so nobody can confirm; pass --yes"
        )));
    }
    eprint!("{question}? Type yes to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        return Err(outcome::usage("not confirmed; nothing was changed"));
    }
    Ok(())
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

    let Some(path) = cli.command.inventory().cloned() else {
        return init(&cli.command);
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
            timeout: cli.command.timeout(),
        },
        settings: Settings {
            max_unavailable: cli.command.max_unavailable(),
        },
        rep,
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Up { .. } => run::up(&cx).await,
            Command::Plan { .. } => run::plan(&cx).await,
            Command::Init { .. } => unreachable!("init runs without an inventory"),
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
            Command::Etcd { command } => match command {
                EtcdCommand::Snapshot { name, no_fetch, .. } => {
                    etcd::snapshot(&cx, name.as_deref(), !no_fetch).await
                }
                EtcdCommand::List { .. } => etcd::list(&cx).await,
                EtcdCommand::Restore {
                    snapshot,
                    yes,
                    plan,
                    delete_stale_nodes,
                    ..
                } => etcd::restore(&cx, snapshot, *yes, *plan, *delete_stale_nodes).await,
            },
            Command::Kubeconfig { merge, .. } => show::kubeconfig(&cx, *merge).await,
            Command::SealedSecrets {
                command: SealedSecretsCommand::Cert { .. },
            } => show::sealed_secrets_cert(&cx).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = crate::report::clean(&format!("{e:#}"));
            match cx.rep.format() {
                OutputFormat::Json => cx
                    .rep
                    .emit(serde_json::json!({"event": "error", "message": msg})),
                OutputFormat::Text => eprintln!("error: {msg}"),
            }
            ExitCode::from(outcome::exit_code(&e))
        }
    }
}

/// `bootstrap init`: no inventory yet, so no reporter and no lock; errors as for every command.
fn init(command: &Command) -> ExitCode {
    let Command::Init {
        servers,
        agents,
        name,
        user,
        known_hosts,
        scan,
        yes,
    } = command
    else {
        return ExitCode::from(2);
    };
    let spec = crate::inventory::init::InitSpec {
        name: name.clone(),
        servers: servers.clone(),
        agents: agents.clone(),
        user: user.clone(),
        known_hosts: known_hosts.clone(),
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(init::run(&spec, *scan, *yes)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::report::clean(&format!("{e:#}")));
            ExitCode::from(outcome::exit_code(&e))
        }
    }
}
