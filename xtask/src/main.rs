use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use xtask::lab::{self, Fault, Lab, LabSpec, NodeKind};

#[derive(Parser)]
#[command(name = "xtask", about = "Developer tasks for bootstrap")]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    /// The test lab: Debian containers on a private network, reachable over SSH.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Install what the tests need, then fmt, clippy and every test (CI runs this).
    Test {
        /// Passed to `cargo test --workspace` (e.g. a test name filter, `-- --nocapture`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Boot a 3-node lab, run `bootstrap up` and `bootstrap status` on it; the lab stays up.
    Demo,
    /// Measure the performance figures (DESIGN.md "Performance targets") on labs it boots.
    Bench {
        /// Runs of each scenario.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Nodes of the large cluster (3 servers, the rest agents).
        #[arg(long, default_value_t = 30)]
        large: usize,
        /// Size of the upload comparison file, in MiB.
        #[arg(long, default_value_t = 100)]
        upload_mib: usize,
        /// Where the JSON goes.
        #[arg(long, default_value = "target/bench/bench.json")]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Boot a lab and print its inventory, known_hosts and key paths.
    Up {
        #[arg(long)]
        nodes: usize,
        #[arg(long, default_value_t = 1)]
        servers: usize,
        #[arg(long, default_value_t = 0)]
        spares: usize,
        #[arg(long, default_value = "default")]
        name: String,
        /// k3s versions to publish on the mirror (the first goes in the inventory).
        #[arg(long = "k3s-version")]
        k3s_versions: Vec<String>,
        /// Give nodes DNS names (<node>.<lab>.lab.test, resolvable here and in the nodes) and
        /// use them in the inventory.
        #[arg(long)]
        dns: bool,
        /// Put this node behind a NAT'd address, like a cloud floating IP (repeatable).
        #[arg(long = "nat", value_name = "NODE")]
        nat: Vec<String>,
    },
    /// Tear a lab down (also a half-built one).
    Down {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Inject a fault into one node.
    Fault {
        node: String,
        /// stop|start|cut|heal|kill-sshd|restart-sshd|throttle|unthrottle|block-join|unblock-join
        fault: Fault,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Run a command inside a node as root (without SSH); its exit code is passed through.
    Exec {
        #[arg(long, default_value = "default")]
        name: String,
        node: String,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Nodes, addresses, whether they run, and the mirror.
    Status {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Labs on this machine.
    List,
    /// The lab's S3 servers (moto): HTTPS with the lab's CA, and plain HTTP.
    S3 {
        #[command(subcommand)]
        cmd: S3Cmd,
    },
    /// Run the lab's HTTP mirror (started by `lab up`).
    #[command(hide = true)]
    ServeMirror {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        addr: SocketAddr,
    },
}

#[derive(Subcommand)]
enum S3Cmd {
    /// Start them (or keep the running ones) and print their endpoints, CA and keys.
    Up {
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Stop them (their buckets are lost; the CA and keys stay for the next `up`).
    Down {
        #[arg(long, default_value = "default")]
        name: String,
    },
}

fn kind(k: NodeKind) -> &'static str {
    match k {
        NodeKind::Server => "server",
        NodeKind::Agent => "agent",
        NodeKind::Spare => "spare",
    }
}

fn print_lab(lab: &Lab, with_state: bool) -> Result<()> {
    println!("lab:         {}", lab.name());
    println!("inventory:   {}", lab.inventory_path().display());
    println!("known_hosts: {}", lab.known_hosts_path().display());
    println!("ssh key:     {}", lab.operator_key_path().display());
    let mirror_state = if !with_state {
        ""
    } else if lab.mirror_running() {
        " (running)"
    } else {
        " (NOT running)"
    };
    println!(
        "mirror:      {}{mirror_state} <- {}",
        lab.mirror_url(),
        lab.mirror_dir().display()
    );
    if let Some(repo) = lab.package_repo() {
        println!(
            "packages:    {}/debian (apt, trusted=yes) <- {}",
            lab.mirror_url(),
            repo.display()
        );
    }
    if with_state {
        if let Some(s3) = lab.s3() {
            let (https, http) = lab.s3_running();
            let state = |up: bool| if up { "running" } else { "NOT running" };
            println!(
                "s3 https:    {} ({}) CA {}",
                s3.https_endpoint,
                state(https),
                s3.ca_pem.display()
            );
            println!("s3 http:     {} ({})", s3.http_endpoint, state(http));
        }
    }
    println!(
        "host:        {} ({})",
        lab.host_addr(),
        lab.host_interface()
    );
    println!();
    if with_state {
        println!(
            "{:<12} {:<15} {:<7} {:<8} {:<5} SSH",
            "NODE", "ADDRESS", "ROLE", "STATE", "LINK"
        );
    } else {
        println!("{:<12} {:<15} ROLE", "NODE", "ADDRESS");
    }
    let ssh: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = lab
            .nodes()
            .iter()
            .map(|n| s.spawn(move || with_state && ssh_up(n.addr)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(false)).collect()
    });
    for (n, ssh) in lab.nodes().iter().zip(ssh) {
        if with_state {
            let running = if lab.is_running(&n.name)? {
                "running"
            } else {
                "stopped"
            };
            let link = if lab.is_linked(&n.name)? { "up" } else { "cut" };
            let ssh = if ssh { "yes" } else { "no" };
            println!(
                "{:<12} {:<15} {:<7} {running:<8} {link:<5} {ssh}",
                n.name,
                n.addr,
                kind(n.kind)
            );
        } else {
            println!("{:<12} {:<15} {}", n.name, n.addr, kind(n.kind));
        }
        if n.host() != n.addr.to_string() {
            println!("{:<12} reached as {}", "", n.host());
        }
    }
    Ok(())
}

fn ssh_up(addr: std::net::Ipv4Addr) -> bool {
    use std::io::Read;
    let sa = SocketAddr::from((addr, 22));
    let Ok(mut s) =
        std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let mut b = [0u8; 4];
    s.read_exact(&mut b).is_ok() && &b == b"SSH-"
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let cmd = match cli.cmd {
        Top::Lab { cmd } => cmd,
        Top::Test { args } => return xtask::ci::test(&args),
        Top::Demo => return xtask::ci::demo(),
        Top::Bench {
            runs,
            large,
            upload_mib,
            out,
        } => {
            return xtask::bench::bench(&xtask::bench::BenchOptions {
                runs,
                large,
                upload_mib,
                out,
            })
        }
    };
    match cmd {
        LabCmd::Up {
            nodes,
            servers,
            spares,
            name,
            k3s_versions,
            dns,
            nat,
        } => {
            let mut spec = LabSpec::new(&name, nodes);
            spec.servers = servers;
            spec.spares = spares;
            spec.dns = dns;
            spec.nat = nat;
            if !k3s_versions.is_empty() {
                spec.k3s_versions = k3s_versions;
            }
            let start = std::time::Instant::now();
            let lab = Lab::up(&spec)?;
            print_lab(&lab, false)?;
            println!(
                "\nup in {:.1}s; tear down with `cargo xtask lab down --name {name}`",
                start.elapsed().as_secs_f64()
            );
        }
        LabCmd::Down { name } => {
            Lab::down_by_name(&name)?;
            println!("lab {name} is down");
        }
        LabCmd::Fault { node, fault, name } => {
            Lab::open(&name)?.fault(&node, fault)?;
        }
        LabCmd::Exec { name, node, argv } => {
            let lab = Lab::open(&name)?;
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = lab.exec(&node, &args)?;
            use std::io::Write;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stderr().write_all(&out.stderr)?;
            std::process::exit(out.status.code().unwrap_or(128 + 9));
        }
        LabCmd::Status { name } => print_lab(&Lab::open(&name)?, true)?,
        LabCmd::List => {
            for name in lab::list_labs() {
                match Lab::open(&name) {
                    Ok(l) => {
                        let running = l
                            .nodes()
                            .iter()
                            .filter(|n| l.is_running(&n.name).unwrap_or(false))
                            .count();
                        println!(
                            "{name:<20} {}/24  {running}/{} nodes running",
                            l.host_addr(),
                            l.nodes().len()
                        );
                    }
                    Err(e) => println!("{name:<20} broken state: {e:#}"),
                }
            }
        }
        LabCmd::S3 {
            cmd: S3Cmd::Up { name },
        } => {
            let lab = Lab::open(&name)?;
            let s3 = lab.s3_up()?;
            println!(
                "s3 https:   {} (CA {})",
                s3.https_endpoint,
                s3.ca_pem.display()
            );
            println!("s3 http:    {}", s3.http_endpoint);
            println!("access key: {}", s3.access_key);
            println!("secret key: {}", s3.secret_key);
            println!("region:     {}", s3.region);
            println!("described in {}", lab.dir().join("s3.json").display());
        }
        LabCmd::S3 {
            cmd: S3Cmd::Down { name },
        } => {
            Lab::open(&name)?.s3_down()?;
            println!("the S3 servers of lab {name} are stopped");
        }
        LabCmd::ServeMirror { dir, addr } => {
            lab::serve_mirror(&dir, addr).context("mirror failed")?;
        }
    }
    Ok(())
}
