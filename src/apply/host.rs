//! The steps that run over a host's own session: prerequisites, release files, links, files,
//! the service, the uninstall, and the manifests directory of a server.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::learned::Learned;
use super::Options;
use crate::addons::{self, longhorn, AddonKind, EXTRA_RECORD, MANIFESTS_DIR};
use crate::inventory::{InstallSource, K3sVersion};
use crate::k3s::artifacts::{self, Cache};
use crate::k3s::{self, token, Role};
use crate::os;
use crate::plan::{Action, Release};
use crate::report::Reporter;
use crate::ssh::{self, sh_quote, Cmd, Session};

/// `content` with the cluster CA's hash in place of [`token::PENDING_CA_HASH`], once the run
/// has learned it; a file that needs it before then is an error, never written.
fn with_ca_hash<'c>(content: &'c [u8], learned: &Learned) -> Result<std::borrow::Cow<'c, [u8]>> {
    let marker = token::PENDING_CA_HASH.as_bytes();
    if !content.windows(marker.len()).any(|w| w == marker) {
        return Ok(std::borrow::Cow::Borrowed(content));
    }
    let hash = learned
        .ca_hash
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the cluster CA hash is not known yet: the first server has not started"
            )
        })?;
    let text = String::from_utf8_lossy(content).replace(token::PENDING_CA_HASH, &hash);
    Ok(std::borrow::Cow::Owned(text.into_bytes()))
}

/// How long a host's new time sync client gets to step its clock.
const CLOCK_WAIT: Duration = Duration::from_secs(120);

/// Waits until `s`'s clock is within `bound_secs` of this machine's (read as the facts read
/// it: `date +%s.%N`, against this machine's clock when the answer arrives), at most
/// [`CLOCK_WAIT`]; else fails naming the offset.
async fn wait_clock(s: &Session, name: &str, bound_secs: u32) -> Result<()> {
    let started = Instant::now();
    loop {
        let out = s
            .run_ok(
                &Cmd::new(os::step_script(&os::OsStep::WaitClock { bound_secs }))
                    .label("read its clock"),
            )
            .await?;
        let here = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let offset = out
            .stdout_str()
            .trim()
            .parse::<f64>()
            .map(|t| t - here)
            .with_context(|| format!("{name}: `date +%s.%N` printed {:?}", out.stdout_str()))?;
        if offset.abs() <= f64::from(bound_secs) {
            return Ok(());
        }
        if started.elapsed() >= CLOCK_WAIT {
            bail!(
                "{name}: its clock is still {} this machine's after {} s of time sync, so it is not joined: check that its time sync client reaches an NTP server (chronyc sources, timedatectl timesync-status), then re-run",
                crate::plan::os::offset_text(offset),
                CLOCK_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// Where a new k3s binary waits, verified, until its host's turn to restart.
const STAGED_BIN: &str = "/usr/local/bin/.k3s.bootstrap-staged";

/// Run one host step on `s` (host `name`); returns how long it waited on k3s.
pub(super) async fn run(
    s: &Session,
    name: &str,
    action: &Action,
    opts: &Options,
    rep: &Reporter,
    learned: &Learned,
    via: Option<(&str, &Session)>,
) -> Result<Duration> {
    match action {
        Action::Prerequisite(fix) => {
            let out = s
                .exec(&Cmd::new(longhorn::fix_script(fix)).label(fix.to_string()))
                .await?;
            if !out.success() {
                bail!("{}", longhorn::fix_error(name, fix, &out.stderr_tail(15)));
            }
        }
        Action::Os(os::OsStep::WaitClock { bound_secs }) => {
            wait_clock(s, name, *bound_secs).await?;
        }
        Action::Os(step) => {
            let out = s
                .exec(&Cmd::new(os::step_script(step)).label(step.to_string()))
                .await?;
            if !out.success() {
                bail!(
                    "{name}: {step} failed; nothing else was changed on this node:\n{}",
                    out.stderr_tail(15)
                );
            }
        }
        Action::InstallBinary {
            to,
            arch,
            file,
            staged,
            release,
            ..
        } => {
            let dest = if *staged { STAGED_BIN } else { k3s::BIN_PATH };
            install_artifact(s, name, release, *to, arch, file, dest, 0o755).await?;
        }
        Action::InstallImages {
            version,
            release,
            arch,
            file,
            ..
        } => {
            let dest = format!("{}/{file}", k3s::IMAGES_DIR);
            install_artifact(s, name, release, *version, arch, file, &dest, 0o644).await?;
        }
        Action::PlaceStagedBinary { .. } => {
            s.run_ok(
                &Cmd::new(format!(
                    "mv -f {} {}",
                    sh_quote(STAGED_BIN),
                    sh_quote(k3s::BIN_PATH)
                ))
                .label("put the staged k3s in place"),
            )
            .await?;
        }
        Action::Links(links) => {
            s.run_ok(&Cmd::new(artifacts::links_script(links)).label("link kubectl, crictl, ctr"))
                .await?;
        }
        Action::WriteFile { file, .. } => {
            let content = with_ca_hash(&file.content, learned)?;
            // put_file creates a missing parent directory in its check.
            s.put_file(
                &file.path,
                ssh::Source::Bytes(&content),
                file.mode,
                Some((0, 0)),
            )
            .await?;
        }
        Action::LearnCaHash => {
            let out = s
                .run_ok(
                    &Cmd::new(format!("cat {}", k3s::SERVER_TOKEN_PATH)).label("read server/token"),
                )
                .await?;
            let token = out.stdout_str();
            let Some(hash) = token::ca_hash(&token) else {
                bail!(
                    "{name}: {} does not hold a secure token (K10<ca-hash>::...); joins cannot be pinned to the cluster CA",
                    k3s::SERVER_TOKEN_PATH
                );
            };
            *learned.ca_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash.to_string());
        }
        Action::Start {
            role,
            daemon_reload,
            ..
        } => return service(s, name, *role, "start", *daemon_reload, opts, rep, via).await,
        Action::Restart {
            role,
            daemon_reload,
            ..
        } => return service(s, name, *role, "restart", *daemon_reload, opts, rep, via).await,
        Action::Uninstall => {
            let out = s
                .exec(
                    &Cmd::new(k3s::unit::render_reset()?)
                        .label("uninstall k3s")
                        .timeout(Duration::from_secs(180)),
                )
                .await?;
            if !out.success() {
                bail!("{name}: uninstalling k3s failed:\n{}", out.stderr_tail(10));
            }
        }
        Action::RemoveLeftovers { paths } => {
            let list: Vec<String> = paths
                .iter()
                .filter(|p| crate::facts::host::is_leftover(p))
                .map(|p| sh_quote(p))
                .collect();
            if !list.is_empty() {
                s.run_ok(
                    &Cmd::new(format!("rm -f -- {}", list.join(" ")))
                        .label("remove an interrupted run's temp files"),
                )
                .await
                .with_context(|| format!("{name}: removing {}", paths.join(", ")))?;
            }
        }
        Action::WriteManifest(f) => {
            s.put_file(
                &f.path(),
                ssh::Source::Bytes(f.content.as_bytes()),
                f.mode,
                Some((0, 0)),
            )
            .await
            .with_context(|| format!("{name}: writing {}", f.path()))?;
        }
        Action::RemoveManifest {
            file,
            delete_objects,
            release,
        } => {
            let q = sh_quote(&format!("{MANIFESTS_DIR}/{file}"));
            // kubectl waits (up to the run's timeout) until the objects are gone: a HelmChart
            // stays until its uninstall Job is done (helm-controller's finalizer), and the
            // file stays until then, so a failed or interrupted removal is tried again.
            let mut script = String::new();
            if *delete_objects {
                if let Some(k) = release {
                    // The release's namespace, from our own file (the HelmChart may be gone).
                    let addon = AddonKind::of_chart_name(k);
                    script.push_str(&format!(
                        "ns=$(sed -n 's/^  targetNamespace: \"\\(.*\\)\"$/\\1/p' {q} 2>/dev/null | head -n 1); ns=${{ns:-{default_ns}}}\n",
                        default_ns = addon.and_then(|a| a.fixed_namespace()).unwrap_or("kube-system"),
                    ));
                    if addon == Some(AddonKind::Longhorn) {
                        // `uninstall = true`: the confirmation Longhorn's uninstall asks for
                        // (Longhorn docs "Uninstall Longhorn", `deleting-confirmation-flag`).
                        script.push_str(
                            "k3s kubectl -n \"$ns\" patch settings.longhorn.io deleting-confirmation-flag --type merge -p '{\"value\":\"true\"}' >/dev/null 2>&1 || true\n",
                        );
                    }
                }
                script.push_str(&format!(
                    "if [ -f {q} ]; then k3s kubectl delete -f {q} --ignore-not-found --timeout={secs}s >/dev/null || exit 1; fi\n",
                    secs = opts.timeout.as_secs().max(1),
                ));
                if let Some(k) = release {
                    // The HelmChart is gone, so its delete Job completed; the release must be
                    // gone too, or the chart's workloads run on with nothing managing them.
                    script.push_str(&format!(
                        "left=$(k3s kubectl get secrets -n \"$ns\" -l owner=helm,name={rel} --field-selector type=helm.sh/release.v1 -o jsonpath='{{range .items[*]}}{{.metadata.labels.version}}:{{.metadata.labels.status}} {{end}}') || exit 1\n\
                         if [ -n \"$left\" ]; then echo \"release-left $ns $left\"; exit 3; fi\n",
                        rel = sh_quote(k),
                    ));
                }
                script.push_str(&format!(
                    "k3s kubectl delete addons.k3s.cattle.io {addon} -n kube-system --ignore-not-found --wait=false >/dev/null || exit 1\n",
                    addon = sh_quote(addons::addon_name(file)),
                ));
            }
            script.push_str(&format!("rm -f -- {q}"));
            let out = s
                .exec(&Cmd::new(script).label("remove a dropped add-on manifest"))
                .await
                .with_context(|| format!("{name}: removing {file}"))?;
            if out.exit_code == Some(3) {
                let k = match release.as_deref() {
                    Some(n) => match AddonKind::of_chart_name(n) {
                        Some(a) => format!("add-on {a}"),
                        None => format!("chart {n}"),
                    },
                    None => file.clone(),
                };
                let rel = release.as_deref().unwrap_or("");
                let line = out.stdout_str();
                let mut f = line.split_whitespace().skip(1);
                let ns = f.next().unwrap_or("").to_string();
                let left: Vec<&str> = f.collect();
                bail!(
                    "{k}: helm-controller ran the uninstall and dropped the HelmChart, but helm's release {rel} is still in namespace {ns} (revision:status {}), so the chart's workloads keep running with nothing managing them. `helm uninstall` failed, most often because a pre-delete hook of the chart refused; see `k3s kubectl -n {ns} get jobs,pods` and `k3s kubectl get events -n {ns}` on {name}. Once the cause is fixed, put it back in the inventory, run `bootstrap up`, and remove it again. {file} stays in place until then.",
                    left.join(" ")
                );
            }
            if !out.success() {
                bail!("{name}: removing {file} failed:\n{}", out.stderr_tail(10));
            }
        }
        Action::WriteExtraRecord { names } => {
            let path = sh_quote(&format!("{MANIFESTS_DIR}/{EXTRA_RECORD}"));
            let line = if names.is_empty() {
                format!("rm -f -- {path}")
            } else {
                format!(
                    "mkdir -p {dir} && printf '%s' {text} > {path}.tmp && mv -f {path}.tmp {path}",
                    dir = sh_quote(MANIFESTS_DIR),
                    text = sh_quote(&format!("{}\n", names.join("\n"))),
                )
            };
            s.run_ok(&Cmd::new(line).label("record the extra manifests"))
                .await?;
        }
        Action::EtcdSnapshot {
            name: base,
            dir,
            timeout_secs,
            s3,
            no_s3,
        } => {
            // Success is k3s's exit status and the file it wrote, `<name>-<node>-<unix>`
            // (k3s pkg/etcd/snapshot.go:269-271; `.zip` when compressed), not a line of its
            // output: with `log:` in config.yaml everything it prints goes to that file
            // (pkg/cli/cmds/log_linux.go).
            let base_name = base.as_deref().unwrap_or("on-demand");
            let prefix = format!("{base_name}-{name}-");
            let mut cmd = format!(
                "rc=1; mkdir -p -m 0700 {d} && t=$(date +%s) && {{ k3s etcd-snapshot save",
                d = sh_quote(dir)
            );
            if let Some(b) = base {
                cmd.push_str(&format!(" --name {}", sh_quote(b)));
            }
            if *no_s3 {
                cmd.push_str(" --etcd-s3=false");
            }
            cmd.push_str(&format!(
                " 2>&1; rc=$?; }}\nprintf '\\n{MARK}files\\n'\nfor f in {d}/{p}*; do [ -f \"$f\" ] && [ \"$(stat -c %Y \"$f\")\" -ge \"$t\" ] && printf '%s\\n' \"${{f##*/}}\"; done\nprintf '{MARK}hashes\\n'\nk3s kubectl get etcdsnapshotfiles.k3s.cattle.io -o jsonpath='{{range .items[*]}}{{.spec.snapshotName}}{{\" \"}}{{.spec.location}}{{\" \"}}{{.metadata.annotations.etcd\\.k3s\\.cattle\\.io/snapshot-token-hash}}{{\"\\n\"}}{{end}}' 2>/dev/null\nexit $rc",
                MARK = SNAPSHOT_MARK,
                d = sh_quote(dir.trim_end_matches('/')),
                p = sh_quote(&prefix),
            ));
            let out = s
                .exec(
                    &Cmd::new(cmd)
                        .label("k3s etcd-snapshot save")
                        .timeout(Duration::from_secs(timeout_secs + 60)),
                )
                .await?;
            let text = out.stdout_str();
            let (said, rest) = text
                .split_once(&format!("\n{SNAPSHOT_MARK}files\n"))
                .unwrap_or((&text, ""));
            let (files, hashes) = rest
                .split_once(&format!("{SNAPSHOT_MARK}hashes\n"))
                .unwrap_or((rest, ""));
            let file = k3s::snapshot::newest_saved(files, &prefix);
            match (out.success(), file) {
                (true, Some(file)) => {
                    let path = format!("{}/{file}", dir.trim_end_matches('/'));
                    rep.info(&format!("{name}: etcd snapshot {path}"));
                    let location = format!("file://{path}");
                    let hash = hashes.lines().find_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() == 3 && f[0] == file && f[1] == location).then(|| f[2].to_string())
                    });
                    *learned
                        .snapshot_token_hash
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = hash;
                    *learned.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
                }
                (ok, _) => {
                    let why = if ok {
                        format!(
                            "k3s etcd-snapshot save exited 0 but no new {prefix}* file is in {dir}"
                        )
                    } else {
                        format!("k3s etcd-snapshot save failed ({})", out.status_text())
                    };
                    let said = format!("{said}\n{}", out.stderr_str());
                    let said = if said.trim().is_empty() {
                        "    (no output: with `log` in config.yaml k3s writes to that file)"
                            .to_string()
                    } else {
                        ssh::tail(&said, 10)
                    };
                    // k3s refuses the whole save when its S3 client cannot start
                    // (pkg/etcd/snapshot_handler.go:87-94): no local snapshot either.
                    let hint = match s3 {
                        Some(place) if !ok => format!(
                            "\nk3s takes no snapshot at all when it cannot reach S3 ({place}): if S3 is what failed, `bootstrap etcd snapshot --no-s3` takes one on the server only"
                        ),
                        _ => String::new(),
                    };
                    bail!("{name}: {why}:\n{said}{hint}")
                }
            }
        }
        Action::CheckSnapshot { path } => {
            let out = s
                .exec(&Cmd::new(format!("test -f {}", sh_quote(path))).label("find the snapshot"))
                .await?;
            if !out.success() {
                bail!("{name}: the snapshot {path} is not there (anymore); nothing was stopped");
            }
        }
        Action::UploadSnapshot { local, remote } => {
            let bytes =
                std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
            let record = k3s::snapshot::load_record(local)
                .with_context(|| format!("reading the record of {}", local.display()))?
                .with_context(|| format!("{} has no record beside it", local.display()))?;
            if k3s::sha256_hex(&bytes) != record.sha256 {
                bail!(
                    "{} does not match the sha256 its record gives ({}): the copy is damaged; nothing was stopped",
                    local.display(),
                    record.sha256
                );
            }
            if local.extension().is_some_and(|e| e == "zip") {
                // Uncompressed on the way (k3s issue #14526), into a 0600 file beside the copy
                // and never whole in memory, at most what etcd can hold.
                let (tmp, mut out) = crate::local::create_temp(local, 0o600)
                    .with_context(|| format!("unpacking {}", local.display()))?;
                let unpacked =
                    k3s::snapshot::unzip_into(&bytes, &mut out, k3s::snapshot::UNZIPPED_LIMIT)
                        .map_err(|e| {
                            anyhow::anyhow!("{}: {e}; nothing was stopped", local.display())
                        });
                drop(out);
                let sent = match unpacked {
                    Ok(_) => s
                        .put_file(remote, ssh::Source::Path(&tmp), 0o600, Some((0, 0)))
                        .await
                        .with_context(|| format!("{name}: uploading the snapshot to {remote}")),
                    Err(e) => Err(e),
                };
                let _ = std::fs::remove_file(&tmp);
                sent?;
            } else {
                s.put_file(remote, ssh::Source::Bytes(&bytes), 0o600, Some((0, 0)))
                    .await
                    .with_context(|| format!("{name}: uploading the snapshot to {remote}"))?;
            }
        }
        Action::Stop { role } => {
            let svc = role.service();
            let out = s
                .exec(
                    &Cmd::new(format!(
                        "systemctl stop {svc}; systemctl is-active {svc} || true"
                    ))
                    .label(format!("stop {svc}"))
                    .timeout(Duration::from_secs(180)),
                )
                .await?;
            let state = out.stdout_str().trim().to_string();
            if matches!(state.as_str(), "active" | "activating" | "deactivating") {
                bail!("{name}: {svc} did not stop (it is {state})");
            }
        }
        Action::ClusterReset { path, no_s3 } => {
            // A `server:` makes k3s refuse ("cannot perform cluster-reset while server URL is
            // set", pkg/cli/server/server.go:483-487); this server's join drop-in is read only
            // by a server without data anyway, so it goes. With S3 configured the restore
            // path would be read as an S3 object name (pkg/etcd/etcd.go:390-409). Success is
            // the exit status and the `reset-flag` k3s writes once the restored data is in
            // place (pkg/etcd/etcd.go:427), not a line of output: with `log:` in config.yaml
            // the output is in that file.
            let dropin = format!("{}/{}", k3s::CONFIG_DROPIN_DIR, crate::plan::JOIN_DROPIN);
            let flag = format!("{}/reset-flag", k3s::ETCD_DB_DIR);
            let cmd = format!(
                "if grep -qs '^server:' {d}; then rm -f {d}; fi\n\
                 log=$(mktemp); t=$(date +%s)\n\
                 k3s server --cluster-reset --cluster-reset-restore-path={p}{s3} >\"$log\" 2>&1; rc=$?\n\
                 if [ -f {f} ] && [ \"$(stat -c %Y {f})\" -ge \"$t\" ]; then printf '{SNAPSHOT_MARK}reset-flag\\n'; fi\n\
                 tail -n 200 \"$log\"; rm -f \"$log\"; exit $rc",
                d = sh_quote(&dropin),
                p = sh_quote(path),
                f = sh_quote(&flag),
                s3 = if *no_s3 { " --etcd-s3=false" } else { "" },
            );
            let out = s
                .exec(
                    &Cmd::new(cmd)
                        .label("k3s server --cluster-reset")
                        .timeout(opts.timeout),
                )
                .await?;
            let text = out.stdout_str();
            let flagged = text.starts_with(&format!("{SNAPSHOT_MARK}reset-flag\n"));
            let said = text
                .strip_prefix(&format!("{SNAPSHOT_MARK}reset-flag\n"))
                .unwrap_or(&text);
            if !(out.success() && flagged) {
                let why = if said.contains("encrypted with different token") {
                    "the snapshot is encrypted with another server token; "
                } else {
                    ""
                };
                let said = if said.trim().is_empty() {
                    "    (no output: with `log` in config.yaml k3s writes to that file)".to_string()
                } else {
                    ssh::tail(said, 12)
                };
                bail!(
                    "{name}: restoring etcd from {path} failed ({why}{}; k3s moved the data it had to {}/etcd-old-<time>; run the same restore again once the cause is fixed):\n{said}",
                    if out.success() {
                        format!("k3s exited 0 but wrote no {flag}")
                    } else {
                        format!("k3s {}", out.status_text())
                    },
                    k3s::ETCD_DB_DIR,
                );
            }
        }
        Action::MakeDir { path, mode } => {
            s.run_ok(
                &Cmd::new(format!(
                    "mkdir -p -m {mode:04o} {p} && chmod {mode:04o} {p}",
                    p = sh_quote(path)
                ))
                .label(format!("create {path}")),
            )
            .await?;
        }
        Action::MoveDataAside { stamp } => {
            let script: Vec<String> = [k3s::ETCD_DB_DIR, k3s::SERVER_TLS_DIR, k3s::SERVER_CRED_DIR]
                .iter()
                .map(|d| {
                    let to = sh_quote(&format!("{d}-before-restore-{stamp}"));
                    let d = sh_quote(d);
                    format!("if [ -e {d} ] && [ ! -e {to} ]; then mv {d} {to}; fi")
                })
                .collect();
            s.run_ok(
                &Cmd::new(format!("set -e\n{}", script.join("\n")))
                    .label("move the etcd data and certificates aside"),
            )
            .await?;
        }
        other => bail!("{name}: `{other}` does not run on a host"),
    }
    Ok(Duration::ZERO)
}

/// Marks the parts of a snapshot or reset command's output that are not k3s's.
const SNAPSHOT_MARK: &str = "#bootstrap-";

/// Start or restart the service, then wait until it is ready.
#[allow(clippy::too_many_arguments)]
async fn service(
    s: &Session,
    name: &str,
    role: Role,
    verb: &str,
    daemon_reload: bool,
    opts: &Options,
    rep: &Reporter,
    via: Option<(&str, &Session)>,
) -> Result<Duration> {
    let svc = role.service();
    let reload = if daemon_reload {
        "systemctl daemon-reload && "
    } else {
        ""
    };
    // --no-block: with Type=notify and TimeoutStartSec=0 a failed join would block
    // `systemctl start` forever.
    s.run_ok(
        &Cmd::new(format!(
            "{reload}systemctl enable {svc} >/dev/null 2>&1 && systemctl {verb} --no-block {svc}"
        ))
        .label(format!("{verb} {svc}")),
    )
    .await?;
    let t = Instant::now();
    match via {
        // A host that joins waits on its target as much as on itself: when the target stops
        // answering, the wait ends at once with its name instead of at the deadline.
        Some((target, ts)) => tokio::select! {
            r = wait_active(s, name, role, opts, rep) => r?,
            e = watch_target(name, role, target, ts) => return Err(e),
        },
        None => wait_active(s, name, role, opts, rep).await?,
    }
    Ok(t.elapsed())
}

/// How often the join target is checked while a host joins through it, and how many checks
/// in a row may fail before the run gives up on it.
const TARGET_CHECK_EVERY: Duration = Duration::from_secs(5);
const TARGET_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const TARGET_CHECKS_FAILED: u32 = 2;

/// Resolves only when `target`, the server `name` joins through, stops answering over SSH or
/// its k3s stops running: the error says so. k3s's agent retries its join forever (k3s
/// pkg/agent/config/config.go:56-75, `Get`: "Waiting to retrieve agent configuration; server
/// is not ready" every 5 s until it succeeds), so without this the wait would only end at the
/// deadline.
async fn watch_target(name: &str, role: Role, target: &str, ts: &Session) -> anyhow::Error {
    let svc = role.service();
    let mut failed = 0;
    loop {
        tokio::time::sleep(TARGET_CHECK_EVERY).await;
        let probe = Cmd::new("systemctl is-active k3s")
            .label("check k3s on the join target")
            .timeout(TARGET_CHECK_TIMEOUT);
        let why = match ts.exec(&probe).await {
            Ok(o) if o.stdout_str().trim() == "active" => None,
            Ok(o) => Some(format!("k3s there is {}", o.stdout_str().trim())),
            Err(ssh::SshError::Disconnected { .. }) => Some("the connection to it was lost".into()),
            Err(ssh::SshError::Timeout { after, .. }) => {
                Some(format!("no answer within {}s", after.as_secs()))
            }
            Err(e) => Some(e.to_string()),
        };
        match why {
            None => failed = 0,
            Some(why) => {
                failed += 1;
                if failed >= TARGET_CHECKS_FAILED {
                    return anyhow::anyhow!(
                        "{name}: {svc} cannot join: {target}, the server it joins through, stopped answering ({why}); bring {target} back and run again"
                    );
                }
            }
        }
    }
}

/// Put release file `file` at `dest` on the host: downloaded there, or uploaded from the
/// operator's cache. Either way its sha256 is checked against the release sums on the host,
/// and only a match replaces `dest`.
#[allow(clippy::too_many_arguments)]
async fn install_artifact(
    s: &Session,
    name: &str,
    release: &Release,
    version: K3sVersion,
    arch: &str,
    file: &str,
    dest: &str,
    mode: u32,
) -> Result<()> {
    let version = version.to_string();
    let pin = release.sha256.get(file).cloned();
    let script = match release.source {
        InstallSource::Download => artifacts::download_script(
            &release.mirror,
            &version,
            arch,
            file,
            dest,
            mode,
            pin.as_deref(),
        ),
        InstallSource::Upload => {
            let cache = Cache {
                dir: release.cache_dir.clone(),
            };
            let mirror = release.mirror.clone();
            let (v, a, f) = (version.clone(), arch.to_string(), file.to_string());
            let (path, want) = tokio::task::spawn_blocking(move || {
                cache.verified(&mirror, &v, &a, &f, pin.as_deref())
            })
            .await?
            .with_context(|| format!("{name}: preparing {file} of k3s {version} for upload"))?;
            let (dir, base) = dest.rsplit_once('/').unwrap_or(("", dest));
            let tmp = format!("{dir}/.{base}.bootstrap-upload");
            s.put_file(&tmp, ssh::Source::Path(&path), mode, Some((0, 0)))
                .await?;
            artifacts::verify_and_move_script(&tmp, dest, &want)
        }
    };
    let out = s
        .exec(&Cmd::new(script).label(format!("install {file} of k3s {version}")))
        .await?;
    if !out.success() {
        bail!(
            "{name}: installing {file} of k3s {version} from {} failed; {dest} was left as it was:\n{}",
            release.mirror,
            out.stderr_tail(10)
        );
    }
    Ok(())
}

/// Poll until the service is active (k3s sends READY only when it is), or fail at the
/// deadline with the journal's tail.
async fn wait_active(
    s: &Session,
    name: &str,
    role: Role,
    opts: &Options,
    rep: &Reporter,
) -> Result<()> {
    let svc = role.service();
    rep.step(name, &format!("waiting for {svc} to be ready"));
    let deadline = Instant::now() + opts.timeout;
    let probe = match role {
        Role::Server => format!(
            "systemctl is-active {svc} && k3s kubectl get --raw /readyz >/dev/null 2>&1 && echo api-ok"
        ),
        Role::Agent => format!("systemctl is-active {svc}"),
    };
    loop {
        let out = s
            .exec(&Cmd::new(probe.clone()).label(format!("check {svc}")))
            .await?;
        let text = out.stdout_str();
        let ready = match role {
            Role::Server => text.contains("api-ok"),
            Role::Agent => text.trim() == "active",
        };
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let journal = s
                .exec(
                    &Cmd::new(format!(
                        "journalctl -u {svc} -n 15 --no-pager 2>&1 | tail -n 15"
                    ))
                    .label("journal"),
                )
                .await
                .map(|o| o.stdout_str())
                .unwrap_or_default();
            bail!(
                "{name}: {svc} did not become ready within {:?} (state: {}); last log lines:\n{}",
                opts.timeout,
                text.lines().next().unwrap_or("unknown"),
                ssh::redact(&journal)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
