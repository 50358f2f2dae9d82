//! The lab's S3 servers: moto's server mode (PyPI `moto[server]`, a real S3 implementation we
//! do not write), two processes per lab on the lab's host address, one HTTPS with a CA of the
//! lab's own and one plain HTTP. k3s's etcd snapshots can go to them (`etcd-s3-endpoint`
//! takes the `IP:PORT` of either), and tests look at what landed there through the S3 API
//! itself, with boto3 (`S3Server::list`, `get`, ...), never through the tool under test.
//!
//! moto runs from a Python venv in the lab's cache (`/var/cache/bootstrap-lab/moto-venv-KEY`),
//! built once by `lab::prepare()` or the first `s3_up`. Its processes are recorded in the lab
//! state by PID and start time, like the mirror, so `Lab::down_by_name` stops them. Each
//! process keeps its buckets in memory: the two servers share nothing, and a restart empties
//! them. See xtask/src/lab/README.md, "S3".

use super::node::tail;
use super::rootfs::{apt_install, CACHE_ROOT};
use super::state::State;
use super::util::{self, cmd, hex, run, write_mode, FileLock, ProcRef};
use super::Lab;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the venv installs, pinned: the marker in the venv records it, and a new pin builds a
/// new venv.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.6";
const BOTO3_REQUIREMENT: &str = "boto3==1.44.18";
/// Bump when the way the venv is built changes.
const VENV_RECIPE: &str = "1";
/// Debian's interpreter, not whatever `python3` comes first on PATH (pyenv, ...).
const HOST_PYTHON: &str = "/usr/bin/python3";

/// Ports on the lab's host address (the mirror has `MIRROR_PORT`, 8080).
pub const S3_HTTPS_PORT: u16 = 9443;
pub const S3_HTTP_PORT: u16 = 9000;
const REGION: &str = "us-east-1";
/// How long a moto process gets to listen and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A lab's S3 servers, as `s3_up` returns them and writes them to `<lab dir>/s3.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Server {
    /// `IP:PORT`, no scheme, as k3s's `etcd-s3-endpoint` takes it; TLS, certificate signed by
    /// the CA at `ca_pem` for the IP.
    pub https_endpoint: String,
    /// `IP:PORT` of the plain HTTP server (k3s: `etcd-s3-insecure`).
    pub http_endpoint: String,
    /// The lab's S3 CA certificate (PEM), on the host.
    pub ca_pem: PathBuf,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// One object, as ListObjectsV2 and HeadObject report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Object {
    pub key: String,
    pub size: u64,
    /// RFC 3339, UTC (`2026-01-02T03:04:05Z`).
    pub last_modified: String,
    /// The object's user metadata (`x-amz-meta-*`, names without the prefix, lower case).
    pub metadata: BTreeMap<String, String>,
}

/// The venv's key: the pins, the recipe and the interpreter it is made from.
fn venv_key() -> Result<String> {
    use sha2::{Digest, Sha256};
    let python = std::fs::canonicalize(HOST_PYTHON)
        .with_context(|| format!("no {HOST_PYTHON} (Debian package python3)"))?;
    let mut h = Sha256::new();
    h.update(format!(
        "{VENV_RECIPE}|{MOTO_REQUIREMENT}|{BOTO3_REQUIREMENT}|{}",
        python.display()
    ));
    Ok(hex(&h.finalize())[..12].to_string())
}

fn venv_dir() -> Result<PathBuf> {
    Ok(Path::new(CACHE_ROOT).join(format!("moto-venv-{}", venv_key()?)))
}

fn venv_python() -> Result<PathBuf> {
    Ok(venv_dir()?.join("bin/python"))
}

/// Removes the variables that could send the helpers elsewhere than the lab (proxies) or
/// change what boto3 reads (AWS_*: profiles, CA bundles, endpoints).
fn isolate(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AWS_") || k.to_ascii_lowercase().ends_with("_proxy") {
            c.env_remove(&*k);
        }
    }
    c.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("PYTHONUNBUFFERED", "1")
        .env("PATH", util::SANE_PATH);
}

/// Debian's python3 with its venv module (`python3-venv` brings ensurepip), installed if not.
fn ensure_host_python() -> Result<()> {
    let ok = || {
        Command::new(HOST_PYTHON)
            .args(["-c", "import venv, ensurepip"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok() {
        return Ok(());
    }
    apt_install(&["python3", "python3-venv"])?;
    if !ok() {
        bail!("{HOST_PYTHON} has no working venv module even after installing python3-venv");
    }
    Ok(())
}

/// The venv with moto's server and boto3, built once under a lock; its `.complete` marker
/// names the pins. Built in place (a venv's scripts name its path), so a half-built one
/// (no marker) is removed and built again.
pub fn ensure_venv() -> Result<PathBuf> {
    ensure_host_python()?;
    let dir = venv_dir()?;
    let marker = dir.join(".complete");
    let wanted = format!("{MOTO_REQUIREMENT}\n{BOTO3_REQUIREMENT}\n");
    let done = || std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted);
    if done() {
        return Ok(dir);
    }
    let name = dir.file_name().context("venv dir")?.to_string_lossy();
    let _lock = FileLock::acquire(&Path::new(CACHE_ROOT).join(format!(".lock-{name}")))?;
    if done() {
        return Ok(dir); // built by someone else while we waited
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove half-built {}", dir.display()))?;
    }
    eprintln!("lab: building the S3 server's venv ({MOTO_REQUIREMENT}, {BOTO3_REQUIREMENT}; once, ~30 s)...");
    let start = Instant::now();
    let dir_s = dir.to_string_lossy().into_owned();
    run(cmd(HOST_PYTHON, &["-m", "venv", &dir_s])).context("python3 -m venv failed")?;
    let python = dir.join("bin/python");
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        MOTO_REQUIREMENT,
        BOTO3_REQUIREMENT,
    ]);
    run(pip).context("pip install of moto's server and boto3 failed (PyPI)")?;
    run(Command::new(&python).args(["-c", "import moto.server, boto3"]))
        .context("the S3 venv cannot import moto.server and boto3")?;
    std::fs::write(&marker, &wanted)?;
    eprintln!(
        "lab: S3 venv ready in {:.0}s: {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    prune_old_venvs(&dir);
    Ok(dir)
}

/// Removes venvs of older pins that no running process uses.
fn prune_old_venvs(keep: &Path) {
    let Ok(rd) = std::fs::read_dir(CACHE_ROOT) else {
        return;
    };
    let cmdlines: Vec<String> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .collect()
        })
        .unwrap_or_default();
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let p = path.to_string_lossy().into_owned();
        let in_use = cmdlines.iter().any(|c| c.contains(&p));
        if name.starts_with("moto-venv-") && path != keep && !in_use {
            eprintln!("lab: removing old S3 venv {}", path.display());
            if let Err(e) = std::fs::remove_dir_all(&path) {
                eprintln!("lab: cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Talks S3 to the servers with boto3 in the venv: one request (or a listing) per run, told
/// what to do as JSON on stdin, answering JSON on stdout. HTTPS is verified against the lab's
/// CA (`verify=<ca_pem>`), never switched off.
const CLIENT_PY: &str = r#"
import datetime, json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

req = json.load(sys.stdin)
client = boto3.client(
    "s3",
    endpoint_url=req["endpoint_url"],
    region_name=req["region"],
    aws_access_key_id=req["access_key"],
    aws_secret_access_key=req["secret_key"],
    verify=req["ca_pem"],
    config=Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    ),
)
op, bucket, key = req["op"], req.get("bucket"), req.get("key")

def rfc3339(t):
    return t.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")

try:
    out = None
    if op == "create_bucket":
        client.create_bucket(Bucket=bucket)
    elif op == "list_buckets":
        out = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    elif op == "list":
        out = []
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=req["prefix"])
        for page in pages:
            for o in page.get("Contents", []):
                head = client.head_object(Bucket=bucket, Key=o["Key"])
                out.append({
                    "key": o["Key"],
                    "size": o["Size"],
                    "last_modified": rfc3339(o["LastModified"]),
                    "metadata": head.get("Metadata", {}),
                })
    elif op == "get":
        out = client.get_object(Bucket=bucket, Key=key)["Body"].read().hex()
    elif op == "put":
        client.put_object(
            Bucket=bucket, Key=key, Body=bytes.fromhex(req["body_hex"]), Metadata=req["metadata"]
        )
    elif op == "delete":
        client.delete_object(Bucket=bucket, Key=key)
    else:
        sys.exit(f"unknown operation {op!r}")
except (BotoCoreError, ClientError) as e:
    sys.stderr.write(f"{type(e).__name__}: {e}\n")
    sys.exit(1)
json.dump({"result": out}, sys.stdout)
"#;

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex from the S3 client");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("bad hex from the S3 client")
        })
        .collect()
}

impl S3Server {
    /// `IP:PORT` of the HTTPS server, or of the plain HTTP one.
    pub fn endpoint(&self, https: bool) -> &str {
        if https {
            &self.https_endpoint
        } else {
            &self.http_endpoint
        }
    }

    /// The endpoint with its scheme: `https://IP:PORT` or `http://IP:PORT`.
    pub fn url(&self, https: bool) -> String {
        let scheme = if https { "https" } else { "http" };
        format!("{scheme}://{}", self.endpoint(https))
    }

    fn call(&self, https: bool, op: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        let mut req = serde_json::json!({
            "op": op,
            "endpoint_url": self.url(https),
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "ca_pem": self.ca_pem,
        });
        if let (Some(req), serde_json::Value::Object(args)) = (req.as_object_mut(), args) {
            req.extend(args);
        }
        let mut c = Command::new(venv_python()?);
        c.args(["-c", CLIENT_PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        isolate(&mut c);
        let mut child = c.spawn().context("cannot run the S3 client (boto3)")?;
        let input = serde_json::to_vec(&req)?;
        let mut stdin = child.stdin.take().context("no stdin for the S3 client")?;
        // Written from a thread: a large body must not deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output()?;
        let written = writer.join();
        let what = format!("S3 {op} on {}", self.url(https));
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{what}: cannot write the request: {e}"),
            Err(_) => bail!("{what}: request writer panicked"),
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{what}: unreadable answer"))?;
        Ok(v.get("result").cloned().unwrap_or(serde_json::Value::Null))
    }

    /// CreateBucket.
    pub fn create_bucket(&self, https: bool, bucket: &str) -> Result<()> {
        self.call(
            https,
            "create_bucket",
            serde_json::json!({ "bucket": bucket }),
        )?;
        Ok(())
    }

    /// ListBuckets: the names.
    pub fn list_buckets(&self, https: bool) -> Result<Vec<String>> {
        Ok(serde_json::from_value(self.call(
            https,
            "list_buckets",
            serde_json::json!({}),
        )?)?)
    }

    /// ListObjectsV2 under `prefix` (every page), each object with its HeadObject metadata.
    pub fn list(&self, https: bool, bucket: &str, prefix: &str) -> Result<Vec<S3Object>> {
        Ok(serde_json::from_value(self.call(
            https,
            "list",
            serde_json::json!({ "bucket": bucket, "prefix": prefix }),
        )?)?)
    }

    /// GetObject: the body.
    pub fn get(&self, https: bool, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let v = self.call(
            https,
            "get",
            serde_json::json!({ "bucket": bucket, "key": key }),
        )?;
        unhex(v.as_str().context("GetObject: no body")?)
    }

    /// PutObject without user metadata.
    pub fn put(&self, https: bool, bucket: &str, key: &str, body: &[u8]) -> Result<()> {
        self.put_with_metadata(https, bucket, key, body, &BTreeMap::new())
    }

    /// PutObject with user metadata (`x-amz-meta-NAME: value`).
    pub fn put_with_metadata(
        &self,
        https: bool,
        bucket: &str,
        key: &str,
        body: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.call(
            https,
            "put",
            serde_json::json!({
                "bucket": bucket,
                "key": key,
                "body_hex": hex(body),
                "metadata": metadata,
            }),
        )?;
        Ok(())
    }

    /// DeleteObject (S3 answers success for a key that does not exist).
    pub fn delete(&self, https: bool, bucket: &str, key: &str) -> Result<()> {
        self.call(
            https,
            "delete",
            serde_json::json!({ "bucket": bucket, "key": key }),
        )?;
        Ok(())
    }
}

/// Makes the lab's S3 CA and a server certificate for `ip` signed by it (EC P-256), with the
/// `openssl` CLI, unless `dir` already has them: a lab keeps its CA across `s3_down`/`s3_up`.
fn ensure_certs(dir: &Path, ip: &str, lab: &str) -> Result<()> {
    let (ca, ca_key, cert, key) = (
        dir.join("ca.pem"),
        dir.join("ca.key"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    // server.pem is written last: with it, the set is complete.
    if [&ca, &ca_key, &cert, &key].iter().all(|p| p.is_file()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&cert);
    run(cmd(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &s(&ca_key),
            "-out",
            &s(&ca),
            "-days",
            "3650",
            "-subj",
            &format!("/CN=bootstrap lab {lab} S3 CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ))
    .context("cannot make the S3 CA")?;
    let csr = dir.join("server.csr");
    run(cmd(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &s(&key),
            "-out",
            &s(&csr),
            "-subj",
            &format!("/CN={ip}"),
        ],
    ))
    .context("cannot make the S3 server key")?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:{ip}\n\
             subjectKeyIdentifier=hash\n\
             authorityKeyIdentifier=keyid,issuer\n"
        ),
    )?;
    run(cmd(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&ca),
            "-CAkey",
            &s(&ca_key),
            "-CAcreateserial",
            "-days",
            "825",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&cert),
        ],
    ))
    .context("cannot sign the S3 server certificate")?;
    for p in [&ca_key, &key] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    Ok(())
}

impl Lab {
    fn s3_dir(&self) -> PathBuf {
        self.dir.join("s3")
    }

    fn s3_json(&self) -> PathBuf {
        self.dir.join("s3.json")
    }

    fn s3_log(&self, https: bool) -> PathBuf {
        let kind = if https { "https" } else { "http" };
        self.s3_dir().join(format!("moto-{kind}.log"))
    }

    /// The lab's S3 servers as `s3_up` described them in `<lab dir>/s3.json`, whether they run
    /// or not (`s3_running`); `None` before the first `s3_up`.
    pub fn s3(&self) -> Option<S3Server> {
        let text = std::fs::read_to_string(self.s3_json()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether the recorded HTTPS and HTTP S3 processes run: `(https, http)`.
    pub fn s3_running(&self) -> (bool, bool) {
        let st = self.state();
        (
            st.s3_https.is_some_and(|p| p.alive()),
            st.s3_http.is_some_and(|p| p.alive()),
        )
    }

    /// PIDs of the recorded S3 processes (HTTPS first), for tests checking teardown.
    pub fn s3_pids(&self) -> Vec<i32> {
        let st = self.state();
        st.s3_https
            .iter()
            .chain(&st.s3_http)
            .map(|p| p.pid)
            .collect()
    }

    /// Takes the state file's view (another process may have started or stopped the servers)
    /// under the lab's S3 lock.
    fn reload_state(&self) -> Result<()> {
        let fresh = State::load(&self.name)?;
        *self.state() = fresh;
        Ok(())
    }

    /// Starts the lab's two moto S3 servers on its host address (HTTPS on `S3_HTTPS_PORT` with
    /// the lab's CA, HTTP on `S3_HTTP_PORT`), records them in the lab state and waits until
    /// both answer a verified ListBuckets. Idempotent: a server already running is kept (with
    /// its buckets); only what is not running is started.
    pub fn s3_up(&self) -> Result<S3Server> {
        let venv = ensure_venv()?;
        let _lock = FileLock::acquire(&self.dir.join(".lock-s3"))?;
        self.reload_state()?;
        let ip = self.host_addr().to_string();
        let dir = self.s3_dir();
        ensure_certs(&dir, &ip, &self.name)?;
        let server = match self.s3() {
            Some(s) if s.https_endpoint == format!("{ip}:{S3_HTTPS_PORT}") => s,
            _ => S3Server {
                https_endpoint: format!("{ip}:{S3_HTTPS_PORT}"),
                http_endpoint: format!("{ip}:{S3_HTTP_PORT}"),
                ca_pem: dir.join("ca.pem"),
                // moto takes any keys; these look like AWS's and stay the lab's.
                access_key: format!("LAB{}", util::random_hex(9)?[..17].to_uppercase()),
                secret_key: util::random_hex(20)?,
                region: REGION.to_string(),
            },
        };
        write_mode(
            &self.s3_json(),
            serde_json::to_string_pretty(&server)?.as_bytes(),
            0o600,
        )?;
        let python = venv.join("bin/python");
        for https in [true, false] {
            let running = {
                let st = self.state();
                if https { st.s3_https } else { st.s3_http }.filter(|p| p.alive())
            };
            if running.is_some() {
                continue;
            }
            self.start_moto(&python, &server, https)?;
        }
        // Through the S3 API, TLS verified against the lab's CA: up means usable.
        for https in [true, false] {
            if let Err(e) = server.list_buckets(https) {
                let log = self.s3_log(https);
                bail!(
                    "the S3 server at {} listens but does not answer ListBuckets: {e:#}\n\
                     its log ({}):\n{}",
                    server.url(https),
                    log.display(),
                    tail(&log, 20)
                );
            }
        }
        Ok(server)
    }

    fn start_moto(&self, python: &Path, server: &S3Server, https: bool) -> Result<()> {
        let endpoint = server.endpoint(https);
        let addr: SocketAddr = endpoint.parse().context("S3 endpoint")?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            bail!(
                "something not recorded by lab {:?} already listens on {addr}; \
                 `cargo xtask lab s3 down --name {}` does not stop it",
                self.name,
                self.name
            );
        }
        let kind = if https { "https" } else { "http" };
        let log_path = self.s3_log(https);
        let log = std::fs::File::create(&log_path)?;
        let mut c = Command::new(python);
        c.args(["-m", "moto.server", "--host"])
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string());
        if https {
            c.arg("--ssl-cert")
                .arg(self.s3_dir().join("server.pem"))
                .arg("--ssl-key")
                .arg(self.s3_dir().join("server.key"));
        }
        c.current_dir(self.s3_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        isolate(&mut c);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = c
            .spawn()
            .with_context(|| format!("cannot start moto ({kind})"))?;
        let proc_ref = ProcRef::of(child.id())?;
        {
            let mut st = self.state();
            if https {
                st.s3_https = Some(proc_ref);
            } else {
                st.s3_http = Some(proc_ref);
            }
            st.save()?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !proc_ref.alive() {
                bail!(
                    "the {kind} S3 server (moto, PID {}) exited before listening on {addr}:\n{}",
                    proc_ref.pid,
                    tail(&log_path, 20)
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                util::terminate_all(&[proc_ref], STOP_GRACE);
                bail!(
                    "the {kind} S3 server (moto, PID {}) did not listen on {addr} within {}s; \
                     stopped. Its log ({}):\n{}",
                    proc_ref.pid,
                    READY_TIMEOUT.as_secs(),
                    log_path.display(),
                    tail(&log_path, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the lab's S3 servers (their buckets go with them: moto keeps them in memory).
    /// The CA, the keys and `s3.json` stay for the next `s3_up`.
    pub fn s3_down(&self) -> Result<()> {
        let _lock = FileLock::acquire(&self.dir.join(".lock-s3"))?;
        self.reload_state()?;
        let procs: Vec<ProcRef> = {
            let st = self.state();
            st.s3_https.into_iter().chain(st.s3_http).collect()
        };
        util::terminate_all(&procs, STOP_GRACE);
        if let Some(p) = procs.iter().find(|p| p.alive()) {
            bail!("the S3 server PID {} did not stop", p.pid);
        }
        let mut st = self.state();
        st.s3_https = None;
        st.s3_http = None;
        st.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn server_json_is_what_k3s_takes() {
        let s = S3Server {
            https_endpoint: "10.213.1.1:9443".into(),
            http_endpoint: "10.213.1.1:9000".into(),
            ca_pem: "/var/lib/bootstrap-lab/x/s3/ca.pem".into(),
            access_key: "LABABC".into(),
            secret_key: "s".into(),
            region: "us-east-1".into(),
        };
        assert_eq!(s.url(true), "https://10.213.1.1:9443");
        assert_eq!(s.url(false), "http://10.213.1.1:9000");
        let back: S3Server = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
