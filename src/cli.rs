//! The command line: parse, load the inventory (exit 2 on any problem, before
//! a host is contacted), run, and map the outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::apply::{self, Options, UpSpec};
use crate::inventory::Inventory;
use crate::report::{OutputFormat, Reporter};
use crate::ssh::{self, Cmd, Session};
use crate::{cluster, k3s, kubeconfig, lifecycle, lock, plan};

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
    /// Show what `up` would change, per host, without changing anything.
    Plan { inventory: PathBuf },
    /// Nodes, roles, versions, readiness, and label/taint drift.
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
        /// Only this node (its Node is deleted from the cluster too).
        #[arg(long)]
        node: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
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
    },
    /// Move a node (dead or alive) to a new host: same name, role, labels and taints.
    Replace {
        inventory: PathBuf,
        name: String,
        #[arg(long)]
        host: String,
    },
    /// Drain and delete a node, uninstall k3s from it, and drop it from the inventory.
    Remove {
        inventory: PathBuf,
        name: String,
        /// Remove a server even when etcd would lose quorum.
        #[arg(long)]
        force: bool,
    },
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
    let opts = Options {
        parallel: cli.global.parallel as usize,
        timeout: Duration::from_secs(cli.global.timeout),
        max_unavailable: cli.global.max_unavailable as usize,
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Up { .. } => up(&inv, &opts, &rep).await,
            Command::Node { command } => node_cmd(&inv, command, &opts, &rep).await,
            Command::Reset { node, yes, .. } => {
                let r = lifecycle::reset(&inv, node.as_deref(), *yes, &opts, &rep).await;
                let name = &inv.cluster.name;
                match &r {
                    Ok(()) => rep.finish(
                        true,
                        &format!("{name}: k3s uninstalled"),
                        serde_json::json!({}),
                    ),
                    Err(e) if e.downcast_ref::<lifecycle::UsageError>().is_none() => rep.finish(
                        false,
                        &format!("{name}: reset failed"),
                        serde_json::json!({}),
                    ),
                    Err(_) => {}
                }
                r
            }
            Command::Plan { .. } => plan_cmd(&inv, &opts, &rep).await,
            Command::SealedSecrets {
                command: SealedSecretsCommand::Cert { .. },
            } => sealed_secrets_cert(&inv).await,
            Command::Status { .. } => status(&inv, &rep).await,
            Command::Kubeconfig { merge, .. } => kubeconfig_cmd(&inv, *merge, &rep).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = ssh::redact(&format!("{e:#}"));
            match rep.format() {
                OutputFormat::Json => {
                    println!("{}", serde_json::json!({"event": "error", "message": msg}))
                }
                OutputFormat::Text => eprintln!("error: {msg}"),
            }
            if e.downcast_ref::<lifecycle::UsageError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<lock::Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn up(inv: &Inventory, opts: &Options, rep: &Reporter) -> Result<()> {
    let spec = UpSpec::from_inventory(inv)?;
    let result = lock::locked(&spec, "up", rep, apply::up(&spec, opts, rep, false)).await;
    finish_up(&spec.desired.cluster_name, result, rep)
}

/// `node add|replace|remove`.
async fn node_cmd(
    inv: &Inventory,
    command: &NodeCommand,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    let path = inv.path();
    let cluster = &inv.cluster.name;
    let result = match command {
        NodeCommand::Add {
            name,
            host,
            role,
            labels,
            taints,
            ..
        } => {
            let mut map = std::collections::BTreeMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').ok_or_else(|| {
                    anyhow!(lifecycle::UsageError(format!(
                        "--label {l:?}: expected key=value"
                    )))
                })?;
                map.insert(k.to_string(), v.to_string());
            }
            lifecycle::add(
                path,
                crate::inventory::edit::NewNode {
                    name: name.clone(),
                    host: host.clone(),
                    role: role.clone(),
                    labels: map,
                    taints: taints.clone(),
                },
                opts,
                rep,
            )
            .await
        }
        NodeCommand::Replace { name, host, .. } => {
            lifecycle::replace(path, name, host, opts, rep).await
        }
        NodeCommand::Remove { name, force, .. } => {
            let r = lifecycle::remove(path, name, *force, opts, rep).await;
            match &r {
                Ok(()) => rep.finish(
                    true,
                    &format!("{cluster}: {name} removed"),
                    serde_json::json!({}),
                ),
                Err(e) if e.downcast_ref::<lifecycle::UsageError>().is_none() => rep.finish(
                    false,
                    &format!("{cluster}: removing {name} failed"),
                    serde_json::json!({}),
                ),
                Err(_) => {}
            }
            return r;
        }
    };
    if let Err(e) = &result {
        if e.downcast_ref::<lifecycle::UsageError>().is_some() {
            return result.map(|_| ());
        }
    }
    finish_up(cluster, result, rep)
}

fn finish_up(cluster: &str, result: Result<apply::UpReport>, rep: &Reporter) -> Result<()> {
    let spec_name = cluster;
    match result {
        Ok(report) => {
            let changes: usize = report.plans.iter().map(|p| p.actions.len()).sum();
            let headline = if changes == 0 {
                format!("{}: converged, no changes", spec_name)
            } else {
                format!("{}: converged", spec_name)
            };
            rep.finish(
                true,
                &headline,
                serde_json::json!({
                    "round_trips": report.round_trips,
                    "kubeconfig": report.kubeconfig,
                    "phases": report.phases,
                    "waiting_seconds": report.waiting_seconds,
                }),
            );
            Ok(())
        }
        Err(e) => {
            rep.finish(
                false,
                &format!("{}: failed", spec_name),
                serde_json::json!({}),
            );
            Err(e)
        }
    }
}

async fn plan_cmd(inv: &Inventory, opts: &Options, rep: &Reporter) -> Result<()> {
    let spec = UpSpec::from_inventory(inv)?;
    let report = apply::up(&spec, opts, rep, true).await?;
    let total: usize = report.plans.iter().map(|p| p.actions.len()).sum();
    match rep.format() {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"event": "plan", "hosts": report.plans, "changes": total})
        ),
        OutputFormat::Text => {
            for p in &report.plans {
                if p.actions.is_empty() {
                    println!("{} ({}): nothing to do", p.node, p.role);
                } else {
                    println!("{} ({}):", p.node, p.role);
                    for a in &p.actions {
                        println!("  - {a}");
                    }
                }
            }
            if total == 0 {
                println!("{}: nothing to do", spec.desired.cluster_name);
            } else {
                println!(
                    "{}: {total} change(s) planned; run `bootstrap up` to apply",
                    spec.desired.cluster_name
                );
            }
        }
    }
    Ok(())
}

/// Connect to the first server that answers and has k3s running.
async fn any_server(spec: &UpSpec) -> Result<(Session, String)> {
    let mut errors = Vec::new();
    for h in spec
        .hosts
        .iter()
        .filter(|h| h.node.role == k3s::Role::Server)
    {
        match Session::connect(&h.target).await {
            Ok(s) => match s
                .run_ok(&Cmd::new("k3s kubectl get --raw /readyz").label("check the API"))
                .await
            {
                Ok(_) => return Ok((s, h.node.host.clone())),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(anyhow!(
        "no server has a working API; run `bootstrap up` first:\n  {}",
        errors.join("\n  ")
    ))
}

async fn status(inv: &Inventory, rep: &Reporter) -> Result<()> {
    let spec = UpSpec::from_inventory(inv)?;
    let (session, _) = any_server(&spec).await?;
    let out = session
        .run_ok(&Cmd::new(cluster::GET_NODES).label("kubectl get nodes"))
        .await?;
    let nodes = cluster::parse_nodes(&out.stdout_str())?;
    let mut rows = Vec::new();
    let mut healthy = true;
    for d in &spec.desired.nodes {
        let row = match nodes.iter().find(|n| n.name == d.name) {
            Some(n) => {
                let drift = plan::node_drift(d, n);
                let mut notes = Vec::new();
                if !drift.is_empty() {
                    notes.push(format!("drift: {}", drift_text(&drift)));
                }
                if n.unschedulable {
                    notes.push("cordoned".into());
                }
                if n.version != spec.desired.version {
                    notes.push(format!("want {}", spec.desired.version));
                }
                healthy &= n.ready && drift.is_empty();
                serde_json::json!({
                    "node": d.name, "role": d.role.command(), "version": n.version,
                    "ready": n.ready, "notes": notes,
                })
            }
            None => {
                healthy = false;
                serde_json::json!({
                    "node": d.name, "role": d.role.command(), "version": null,
                    "ready": false, "notes": ["not in the cluster"],
                })
            }
        };
        rows.push(row);
    }
    for n in nodes
        .iter()
        .filter(|n| spec.desired.node(&n.name).is_none())
    {
        rows.push(serde_json::json!({
            "node": n.name, "role": "?", "version": n.version, "ready": n.ready,
            "notes": ["not in the inventory"],
        }));
    }
    let addons = crate::addons::converge::status(&session, &spec.addons).await?;
    healthy &= addons.iter().all(|a| a.healthy());
    let addon_rows: Vec<serde_json::Value> = addons
        .iter()
        .map(|a| {
            serde_json::json!({
                "addon": a.addon.chart_name(), "healthy": a.healthy(), "job": a.job,
                "problems": a.problems, "summary": a.summary(),
            })
        })
        .collect();
    match rep.format() {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"event": "status", "cluster": spec.desired.cluster_name, "nodes": rows, "addons": addon_rows, "healthy": healthy})
        ),
        OutputFormat::Text => {
            println!(
                "{:<16} {:<7} {:<16} {:<6} NOTES",
                "NODE", "ROLE", "VERSION", "READY"
            );
            for r in &rows {
                let notes: Vec<String> = r["notes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<16} {:<7} {:<16} {:<6} {}",
                    r["node"].as_str().unwrap_or(""),
                    r["role"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or("-"),
                    if r["ready"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    notes.join("; ")
                );
            }
            if !addons.is_empty() {
                println!("\n{:<16} HEALTH", "ADD-ON");
                for a in &addons {
                    println!("{:<16} {}", a.addon.chart_name(), a.summary());
                }
            }
        }
    }
    Ok(())
}

/// `bootstrap sealed-secrets cert`: the sealing certificate from the backup, else the cluster.
async fn sealed_secrets_cert(inv: &Inventory) -> Result<()> {
    use crate::addons::sealed_secrets::{SealingKey, GET_KEY};
    if inv.addons.sealed_secrets.is_none() {
        return Err(anyhow!(
            "the inventory has no [addons.sealed_secrets]; add it and run `bootstrap up`"
        ));
    }
    if let Some(k) = SealingKey::load_backup(&inv.state_dir())? {
        print!("{}", k.cert_pem);
        return Ok(());
    }
    let spec = UpSpec::from_inventory(inv)?;
    let (session, _) = any_server(&spec).await?;
    let out = session
        .run_ok(&Cmd::new(GET_KEY).label("read the sealing key Secret"))
        .await?;
    match SealingKey::from_secret_json(&out.stdout_str())? {
        Some(k) => {
            print!("{}", k.cert_pem);
            Ok(())
        }
        None => Err(anyhow!(
            "no sealing key in the backup ({}) or the cluster; run `bootstrap up` first",
            inv.state_dir().display()
        )),
    }
}

fn drift_text(d: &plan::NodeDrift) -> String {
    let mut parts = Vec::new();
    parts.extend(
        d.set_labels
            .iter()
            .map(|(k, v)| format!("label {k}={v} missing")),
    );
    parts.extend(
        d.remove_labels
            .iter()
            .map(|k| format!("label {k} no longer wanted")),
    );
    parts.extend(
        d.add_taints
            .iter()
            .map(|t| format!("taint {} missing", t.spec())),
    );
    parts.extend(
        d.remove_taints
            .iter()
            .map(|t| format!("taint {} no longer wanted", t.spec())),
    );
    if parts.is_empty() {
        parts.push("managed-set annotation out of date".into());
    }
    parts.join(", ")
}

async fn kubeconfig_cmd(inv: &Inventory, merge: bool, rep: &Reporter) -> Result<()> {
    let spec = UpSpec::from_inventory(inv)?;
    let (session, host) = any_server(&spec).await?;
    let bytes = session.get_file(k3s::KUBECONFIG_PATH).await?;
    let text = String::from_utf8(bytes).context("the server's kubeconfig is not UTF-8")?;
    let address = spec.desired.api_endpoint.clone().unwrap_or(host);
    let ours = kubeconfig::rewrite(
        &text,
        &spec.desired.cluster_name,
        &plan::server_url(&address),
    )?;
    apply::write_private(&spec.kubeconfig_path, ours.as_bytes())?;
    rep.info(&format!(
        "kubeconfig written to {}",
        spec.kubeconfig_path.display()
    ));
    if merge {
        let target = std::env::var_os("KUBECONFIG")
            .and_then(|v| std::env::split_paths(&v).next())
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| ssh::config::home_dir().map(|h| h.join(".kube/config")))
            .ok_or_else(|| {
                anyhow!(
                    "neither KUBECONFIG nor HOME is set; cannot find the kubeconfig to merge into"
                )
            })?;
        let existing = match std::fs::read_to_string(&target) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
        };
        let merged = kubeconfig::merge(&existing, &ours, &target.display().to_string())?;
        apply::write_private(&target, merged.as_bytes())?;
        rep.info(&format!(
            "merged into {} as context {}",
            target.display(),
            spec.desired.cluster_name
        ));
    }
    Ok(())
}
