//! `cargo xtask bench`: the performance figures of DESIGN.md "Performance
//! targets", measured on labs it boots itself. Each scenario runs several
//! times; the table gives median, min and max, and the same goes to JSON with
//! the machine and the commit. Timing lives here, never in the test suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::lab::{self, Lab, LabGuard, LabSpec};

pub struct BenchOptions {
    pub runs: usize,
    /// Nodes of the large cluster (3 servers + the rest agents).
    pub large: usize,
    /// Size of the upload comparison file, in MiB.
    pub upload_mib: usize,
    pub out: PathBuf,
}

/// One measured figure: every sample, in its unit.
#[derive(Default)]
struct Figure {
    unit: &'static str,
    samples: Vec<f64>,
    note: Option<String>,
}

impl Figure {
    fn new(unit: &'static str) -> Self {
        Figure {
            unit,
            ..Default::default()
        }
    }
    fn stats(&self) -> (f64, f64, f64) {
        let mut v = self.samples.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        if v.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        (median, v[0], v[v.len() - 1])
    }
}

/// A finished child: wall time, peak RSS (KiB, from wait4), stdout.
struct Run {
    wall: Duration,
    /// User + system CPU seconds of the child.
    cpu: f64,
    max_rss_kib: i64,
    stdout: String,
    stderr: String,
    ok: bool,
}

/// Spawn and wait with wait4, so the peak RSS is this child's alone.
fn measure(cmd: &mut Command) -> Result<Run> {
    use std::io::Read;
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if rc != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    })
}

fn summary(stdout: &str) -> Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["event"] == "summary")
        .unwrap_or(Value::Null)
}

fn cargo_build(root: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn up(bin: &Path, inv: &Path) -> Result<Run> {
    let run = measure(
        Command::new(bin)
            .arg("up")
            .arg(inv)
            .args(["--output", "json"]),
    )?;
    if !run.ok {
        bail!(
            "bootstrap up {} failed:\n{}\n{}",
            inv.display(),
            run.stdout,
            run.stderr
        );
    }
    Ok(run)
}

/// Round trips of the hosts whose name starts with `prefix` (lab servers are `master-*`,
/// agents `worker-*`): (max, mean).
fn round_trips(sum: &Value, prefix: &str) -> (f64, f64) {
    let per_host: Vec<f64> = sum["round_trips"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter_map(|(_, v)| v.as_f64())
                .collect()
        })
        .unwrap_or_default();
    let max = per_host.iter().cloned().fold(0.0, f64::max);
    let total: f64 = per_host.iter().sum();
    (max, total / per_host.len().max(1) as f64)
}

fn cluster(
    bin: &Path,
    nodes: usize,
    servers: usize,
    runs: usize,
    figs: &mut BTreeMap<String, Figure>,
) -> Result<()> {
    let tag = format!("{nodes} nodes");
    for i in 0..runs {
        eprintln!("bench: {tag}, run {}/{runs}", i + 1);
        let name = format!("bench{nodes}");
        let _ = Lab::down_by_name(&name);
        let mut spec = LabSpec::new(&name, nodes);
        spec.servers = servers;
        let lab = LabGuard::up(&spec)?;
        let inv = lab.inventory_path();

        let fresh = up(bin, &inv)?;
        let s = summary(&fresh.stdout);
        let wall = fresh.wall.as_secs_f64();
        let waiting = s["waiting_seconds"].as_f64().unwrap_or(0.0);
        figs.entry(format!("fresh up, {tag} (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(wall);
        figs.entry(format!("  of which waiting on k3s, {tag} (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(waiting);
        figs.entry(format!("  tool's share of fresh up, {tag} (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(wall - waiting);
        figs.entry(format!("  tool CPU time, fresh up, {tag} (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(fresh.cpu);
        if let Some(phases) = s["phases"].as_object() {
            for (phase, secs) in phases {
                figs.entry(format!("  phase {phase}, fresh up, {tag} (s)"))
                    .or_insert_with(|| Figure::new("s"))
                    .samples
                    .push(secs.as_f64().unwrap_or(f64::NAN));
            }
        }
        figs.entry(format!("peak RSS, fresh up, {tag} (MiB)"))
            .or_insert_with(|| Figure::new("MiB"))
            .samples
            .push(fresh.max_rss_kib as f64 / 1024.0);

        let noop = up(bin, &inv)?;
        let s = summary(&noop.stdout);
        if s["changes"].as_u64() != Some(0) {
            bail!("the re-run on {tag} was not a no-op: {s}");
        }
        figs.entry(format!("no-op re-run, {tag} (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(noop.wall.as_secs_f64());
        figs.entry(format!("  tool CPU time, no-op, {tag} (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(noop.cpu);
        if let Some(phases) = s["phases"].as_object() {
            for (phase, secs) in phases {
                figs.entry(format!("  phase {phase}, no-op, {tag} (s)"))
                    .or_insert_with(|| Figure::new("s"))
                    .samples
                    .push(secs.as_f64().unwrap_or(f64::NAN));
            }
        }
        for (kind, prefix) in [("agent", "worker-"), ("server", "master-")] {
            let (max, mean) = round_trips(&s, prefix);
            figs.entry(format!("round trips per {kind} host, no-op, {tag} (max)"))
                .or_insert_with(|| Figure::new("count"))
                .samples
                .push(max);
            figs.entry(format!("round trips per {kind} host, no-op, {tag} (mean)"))
                .or_insert_with(|| Figure::new("count"))
                .samples
                .push(mean);
        }
    }
    Ok(())
}

fn upload(put: &Path, mib: usize, runs: usize, figs: &mut BTreeMap<String, Figure>) -> Result<()> {
    let _ = Lab::down_by_name("benchup");
    let lab = LabGuard::up(&LabSpec::new("benchup", 1))?;
    let node = lab.nodes()[0].addr.to_string();
    let dir = tempfile_dir()?;
    let file = dir.join("payload.bin");
    {
        // Random bytes: nothing along the way can compress them.
        use std::io::Write;
        let mut f = std::fs::File::create(&file)?;
        let mut urandom = std::fs::File::open("/dev/urandom")?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            std::io::Read::read_exact(&mut urandom, &mut buf)?;
            f.write_all(&buf)?;
        }
    }
    let key = lab.operator_key_path();
    let kh = lab.known_hosts_path();
    for i in 0..runs {
        eprintln!("bench: upload {mib} MiB, run {}/{runs}", i + 1);
        let tool = measure(
            Command::new(put)
                .arg(format!("root@{node}"))
                .arg(&key)
                .arg(&kh)
                .arg(&file)
                .arg(format!("/root/tool-{i}.bin")),
        )?;
        if !tool.ok {
            bail!("put_file failed: {}", tool.stderr);
        }
        let scp = measure(
            Command::new("scp")
                .args([
                    "-q",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                ])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", kh.display()))
                .arg("-i")
                .arg(&key)
                .arg(&file)
                .arg(format!("root@{node}:/root/scp-{i}.bin")),
        )?;
        if !scp.ok {
            bail!("scp failed: {}", scp.stderr);
        }
        lab.exec(
            lab.nodes()[0].name.as_str(),
            &["sh", "-c", "rm -f /root/*.bin"],
        )?;
        let t = tool.wall.as_secs_f64();
        let s = scp.wall.as_secs_f64();
        figs.entry(format!("upload {mib} MiB, bootstrap SFTP (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(t);
        figs.entry(format!("upload {mib} MiB, OpenSSH scp (s)"))
            .or_insert_with(|| Figure::new("s"))
            .samples
            .push(s);
        figs.entry("upload throughput, bootstrap / scp (ratio)".into())
            .or_insert_with(|| Figure::new("x"))
            .samples
            .push(s / t);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bootstrap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| k / 1024 / 1024)
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": mem,
        "load_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn commit(root: &Path) -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = out(&["rev-parse", "--short", "HEAD"]);
    let dirty = !out(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty {
        format!("{head}+dirty")
    } else {
        head
    }
}

pub fn bench(opts: &BenchOptions) -> Result<()> {
    let root = lab::workspace_root();
    lab::prepare()?;
    cargo_build(
        &root,
        &[
            "build",
            "--release",
            "-p",
            "bootstrap",
            "--bin",
            "bootstrap",
            "--example",
            "put_file",
        ],
    )?;
    let bin = root.join("target/release/bootstrap");
    let put = root.join("target/release/examples/put_file");
    let started = machine();
    let mut figs: BTreeMap<String, Figure> = BTreeMap::new();
    cluster(&bin, 3, 1, opts.runs, &mut figs)?;
    cluster(&bin, opts.large, 3, opts.runs, &mut figs)?;
    upload(&put, opts.upload_mib, opts.runs, &mut figs)?;

    let large = format!("{} nodes", opts.large);
    let median_of = |figs: &BTreeMap<String, Figure>, k: &str| {
        figs.get(k).map(|f| f.stats().0).unwrap_or(f64::NAN)
    };
    let ratio = median_of(&figs, &format!("fresh up, {large} (s)"))
        / median_of(&figs, "fresh up, 3 nodes (s)");
    let mut fr = Figure::new("x");
    fr.samples.push(ratio);
    fr.note = Some("ratio of the medians".into());
    figs.insert(format!("fresh up, {large} / 3 nodes (ratio)"), fr);
    let med = |k: &str| median_of(&figs, k);

    let targets: BTreeMap<String, (String, bool)> = [
        (
            "no-op re-run, 3 nodes (s)".to_string(),
            "< 0.5 s",
            med("no-op re-run, 3 nodes (s)") < 0.5,
        ),
        (
            format!("no-op re-run, {large} (s)"),
            "< 1.2 s",
            med(&format!("no-op re-run, {large} (s)")) < 1.2,
        ),
        (
            format!("fresh up, {large} / 3 nodes (ratio)"),
            "< 2x",
            ratio < 2.0,
        ),
        (
            "upload throughput, bootstrap / scp (ratio)".to_string(),
            ">= 0.8x",
            med("upload throughput, bootstrap / scp (ratio)") >= 0.8,
        ),
        (
            format!("peak RSS, fresh up, {large} (MiB)"),
            "< 50 MiB",
            med(&format!("peak RSS, fresh up, {large} (MiB)")) < 50.0,
        ),
        (
            format!("round trips per agent host, no-op, {large} (max)"),
            "= 1",
            med(&format!("round trips per agent host, no-op, {large} (max)")) <= 1.0,
        ),
        (
            format!("round trips per server host, no-op, {large} (max)"),
            "<= 2 (the lock included)",
            med(&format!(
                "round trips per server host, no-op, {large} (max)"
            )) <= 2.0,
        ),
    ]
    .into_iter()
    .map(|(k, t, ok)| (k, (t.to_string(), ok)))
    .collect();

    println!("machine: {started}");
    println!("commit:  {}", commit(&root));
    println!("runs:    {} per scenario\n", opts.runs);
    println!(
        "{:<52} {:>9} {:>9} {:>9}  TARGET",
        "FIGURE", "MEDIAN", "MIN", "MAX"
    );
    let mut rows = Vec::new();
    for (name, f) in &figs {
        let (m, lo, hi) = f.stats();
        let target = targets
            .get(name)
            .map(|(t, ok)| format!("{t} {}", if *ok { "met" } else { "NOT MET" }))
            .unwrap_or_default();
        println!("{name:<52} {m:>9.3} {lo:>9.3} {hi:>9.3}  {target}");
        rows.push(json!({
            "figure": name, "unit": f.unit, "median": m, "min": lo, "max": hi,
            "samples": f.samples, "target": targets.get(name).map(|(t, ok)| json!({"target": t, "met": ok})),
            "note": f.note,
        }));
    }
    let doc = json!({
        "machine": started,
        "machine_at_end": machine(),
        "commit": commit(&root),
        "runs": opts.runs,
        "figures": rows,
    });
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&doc)?)?;
    println!("\nwritten to {}", opts.out.display());
    Ok(())
}
