//! The command line: parse, load the inventory (exit 2 on any problem, before a host is
//! contacted), then every command the same way: the local facts, the facts of the hosts it
//! concerns, a plan, and that plan rendered (`plan`, `--plan`) or executed under the run
//! lock. [`run`] holds the commands that converge, [`show`] those that only read.

mod etcd;
mod init;
mod run;
mod secrets;
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
enum SecretsCommand {
    /// Write the secrets of `.bootstrap/` (tokens, Sealed Secrets key, snapshot records) to one
    /// age-encrypted file, to keep off this machine.
    #[command(
        long_about = "Write the secrets of `.bootstrap/` beside the inventory to one \
        age-encrypted file (age-encryption.org/v1), to keep off this machine.\n\n\
        In it: tokens.json (the server and agent tokens), sealed-secrets.key and .crt (the \
        sealing key), restore.json (an unfinished restore) and snapshots/*.json (each \
        snapshot's record, with the server token it needs). Not in it: the snapshot files \
        themselves, the release cache, the kubeconfig (`bootstrap kubeconfig` fetches it again).\n\n\
        Encrypted to the age public keys given with --recipient, or else to a passphrase: \
        from --passphrase-file, else $BOOTSTRAP_SECRETS_PASSPHRASE, else asked twice on the \
        terminal. `age -d` opens it too: inside is one JSON object, each file in base64."
    )]
    Export {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The encrypted file to write (mode 0600; replaced when it exists).
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: PathBuf,
        /// An age public key to encrypt to (`age1...`, as age-keygen prints it), repeatable:
        /// any one of their secret keys opens the file. Without it, a passphrase does.
        #[arg(long = "recipient", value_name = "AGE_PUBLIC_KEY")]
        recipients: Vec<String>,
        /// Encrypt with the passphrase in this file, one line (else
        /// $BOOTSTRAP_SECRETS_PASSPHRASE, else asked twice on the terminal).
        #[arg(long, value_name = "PATH", conflicts_with = "recipients")]
        passphrase_file: Option<PathBuf>,
    },
    /// Put the secrets of a file `secrets export` wrote back into `.bootstrap/` (files 0600).
    #[command(
        long_about = "Put the secrets of a file `secrets export` wrote back into \
        `.bootstrap/` beside the inventory, files 0600 in 0700 directories.\n\n\
        The file is decrypted and every entry checked before anything is written: a wrong \
        passphrase or identity, or a file changed since it was written, writes nothing. A \
        file already there and the same is left as it is (importing twice changes nothing); \
        one that differs (another token, another sealing key, another record) is refused, \
        named, unless --force; files the archive does not hold are never touched.\n\n\
        A file encrypted to a passphrase takes it from --passphrase-file, else \
        $BOOTSTRAP_SECRETS_PASSPHRASE, else the terminal; one encrypted to age recipients \
        needs --identity."
    )]
    Import {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The file `bootstrap secrets export` wrote.
        file: PathBuf,
        /// An age identity file (the `AGE-SECRET-KEY-1...` line age-keygen writes), for a file
        /// encrypted to recipients; repeatable.
        #[arg(short = 'i', long = "identity", value_name = "PATH")]
        identities: Vec<PathBuf>,
        /// The passphrase in this file, one line (else $BOOTSTRAP_SECRETS_PASSPHRASE, else
        /// asked on the terminal).
        #[arg(long, value_name = "PATH", conflicts_with = "identities")]
        passphrase_file: Option<PathBuf>,
        /// Replace the files in `.bootstrap/` that differ from the archive's (a token, the
        /// sealing key, a record), and take another cluster's archive.
        #[arg(long)]
        force: bool,
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
        /// Do not upload it to the bucket of `[etcd.s3]` (k3s takes no snapshot at all when
        /// it cannot reach S3).
        #[arg(long)]
        no_s3: bool,
    },
    /// The snapshots the cluster knows (on its servers and in S3) and the copies here.
    List {
        /// The inventory file (TOML).
        inventory: PathBuf,
    },
    /// Put the cluster back to a snapshot: a copy here (a path, or a name in
    /// `.bootstrap/snapshots/`), one the cluster knows, or one in the bucket, by name.
    Restore {
        /// The inventory file (TOML).
        inventory: PathBuf,
        /// The snapshot.
        #[arg(required_unless_present = "from_s3")]
        snapshot: Option<String>,
        /// Everything lost: take the newest snapshot (`latest`) or NAME from the bucket of
        /// `[etcd.s3]`, listed from this machine; hosts without a cluster get k3s first.
        #[arg(long, value_name = "latest|NAME", conflicts_with = "snapshot")]
        from_s3: Option<String>,
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
    /// The secrets of `.bootstrap/` (tokens, sealing key, snapshot records) as one encrypted
    /// file, and back: `export`, `import`.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
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
        /// The only server's host is lost: install the new host from this snapshot
        /// (`latest`, or a name; a copy in `.bootstrap/snapshots/` or in the bucket).
        #[arg(long, value_name = "latest|NAME")]
        from_snapshot: Option<String>,
        /// With --from-snapshot: do not ask for confirmation.
        #[arg(long, requires = "from_snapshot")]
        yes: bool,
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
            | Command::Secrets {
                command:
                    SecretsCommand::Export { inventory, .. } | SecretsCommand::Import { inventory, .. },
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
    let mut cx = Ctx {
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
                    from_snapshot: Some(pick),
                    yes,
                    plan,
                    ..
                } => etcd::replace_only_server(&mut cx, name, host, pick, *yes, *plan).await,
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
                EtcdCommand::Snapshot {
                    name,
                    no_fetch,
                    no_s3,
                    ..
                } => etcd::snapshot(&cx, name.as_deref(), !no_fetch, *no_s3).await,
                EtcdCommand::List { .. } => etcd::list(&cx).await,
                EtcdCommand::Restore {
                    snapshot,
                    from_s3,
                    yes,
                    plan,
                    delete_stale_nodes,
                    ..
                } => {
                    let what = match (snapshot, from_s3) {
                        (_, Some(s)) => etcd::What::Bucket(s.clone()),
                        (Some(s), None) => etcd::What::Given(s.clone()),
                        (None, None) => unreachable!("clap requires one"),
                    };
                    etcd::restore(&cx, &what, *yes, *plan, *delete_stale_nodes).await
                }
            },
            Command::Kubeconfig { merge, .. } => show::kubeconfig(&cx, *merge).await,
            Command::SealedSecrets {
                command: SealedSecretsCommand::Cert { .. },
            } => show::sealed_secrets_cert(&cx).await,
            Command::Secrets { command } => match command {
                SecretsCommand::Export {
                    out,
                    recipients,
                    passphrase_file,
                    ..
                } => secrets::export(&cx, out, recipients, passphrase_file.as_deref()),
                SecretsCommand::Import {
                    file,
                    identities,
                    passphrase_file,
                    force,
                    ..
                } => secrets::import(&cx, file, identities, passphrase_file.as_deref(), *force),
            },
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
