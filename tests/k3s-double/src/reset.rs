//! `k3s server --cluster-reset [--cluster-reset-restore-path P]`, in k3s's order:
//! the flag checks of `pkg/cli/server/server.go` (245-247, 483-508), `Cluster.start`
//! (`pkg/cluster/managed.go` 29-66), `ETCD.Reset`/`Restore` (`pkg/etcd/etcd.go` 321-432,
//! 1512-1560), then the token check of `rebootstrap` (`pkg/cluster/storage.go` 304-342) and
//! the shutdown request (`pkg/etcd/etcd.go` 359-363, `pkg/signals/signals.go` 30-33).
//!
//! The double's "etcd data" is `server/db/state.json`; a restore moves it into
//! `server/db/etcd-old-<unix>/` as k3s moves `server/db/etcd`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::server::{self, Ctx};
use crate::store::State;
use crate::{snapshot, token, util};

/// The message k3s's reset ends with (`pkg/etcd/etcd.go` 361).
pub const RESET_DONE: &str = "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes";

pub fn reset_flag(data_dir: &Path) -> PathBuf {
    data_dir.join("server/db/reset-flag")
}

/// `logrus.Fatalf("Error: %v", err)` of k3s's `main` for an error `run` returned.
fn fail(msg: impl AsRef<str>) -> ! {
    util::fatal(format!("Error: {}", msg.as_ref()))
}

/// An error from starting the managed database, wrapped as k3s wraps it
/// (`pkg/server/server.go` 77, `pkg/daemons/control/server.go` 71, `pkg/cluster/cluster.go` 62).
fn fail_db(msg: impl AsRef<str>) -> ! {
    fail(format!(
        "starting kubernetes: failed to start cluster: start managed database: {}",
        msg.as_ref()
    ))
}

/// The flag checks that run before anything else, also without `--cluster-reset`.
pub fn check_flags(ctx: &Ctx) {
    if ctx.cfg.get("cluster-reset-restore-path").is_some() && !ctx.cfg.bool("cluster-reset") {
        fail("invalid flag use; --cluster-reset required with --cluster-reset-restore-path");
    }
}

/// Go's `filepath.Join`: joined, then cleaned (so `/a` + `/b` is `/a/b`).
fn go_join(dir: &Path, p: &str) -> PathBuf {
    let joined = format!("{}/{p}", dir.display());
    let mut out: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    PathBuf::from(format!("/{}", out.join("/")))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Runs the reset (or restore) and exits: 0 once membership is reset, 1 on an error.
pub fn run(ctx: &Ctx) -> ! {
    let cfg = &ctx.cfg;
    let restore = cfg.get("cluster-reset-restore-path").map(str::to_string);
    if cfg.get("server").is_some() {
        fail("cannot perform cluster-reset while server URL is set - remove server from configuration before resetting");
    }
    let server_dir = ctx.data_dir.join("server");
    let token_file = server_dir.join("token");
    if restore.is_some() && cfg.get("token").is_none() && !token_file.exists() {
        fail(format!(
            "{} does not exist, please pass --token to complete the restoration",
            token_file.display()
        ));
    }
    // k3s chdirs to <data-dir>/server (`pkg/server/server.go` setupDataDirAndChdir): a relative
    // restore path is relative to it.
    let db = server_dir.join("db");
    let _ = std::fs::create_dir_all(&db);
    let _ = std::env::set_current_dir(&server_dir);
    let state_path = db.join("state.json");
    let flag = reset_flag(&ctx.data_dir);
    let current = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok());
    if current.is_some() {
        util::info("Managed etcd cluster bootstrap already complete and initialized");
    } else {
        util::info("Managed etcd cluster initializing");
    }
    let mut st = match &restore {
        None => {
            // Without a restore path the reset-flag guards against a second reset
            // (`managed.go` 48-55).
            if flag.exists() {
                fail_db(format!("Managed etcd cluster membership was previously reset, please remove the cluster-reset flag and start k3s normally. If you need to perform another cluster reset, you must first manually delete the file at {}", flag.display()));
            }
            match current {
                Some(st) => st,
                None => match server::new_cluster(ctx, true) {
                    Ok(st) => st,
                    Err(e) => fail(format!("starting kubernetes: preparing server: {e}")),
                },
            }
        }
        Some(p) => {
            let settings = snapshot::Settings::of_server(cfg);
            let mut p = p.clone();
            // With etcd-s3 the restore path names an S3 object, downloaded into the snapshot
            // dir first; the restore then reads the downloaded file (k3s
            // `pkg/etcd/etcd.go` 388-409, `pkg/etcd/s3/s3.go` 346-386).
            if let Some(s3cfg) = &settings.s3 {
                util::info(format!("Retrieving etcd snapshot {p} from S3"));
                let client = match crate::s3::get_client(None, s3cfg) {
                    Ok(c) => c,
                    Err(e) if e.no_config_secret => fail_db(
                        "cannot use S3 config secret when restoring snapshot; configuration must be set in CLI or config file",
                    ),
                    Err(e) => fail_db(format!("failed to initialize S3 client: {e}")),
                };
                let dir = match snapshot::snapshot_dir(&ctx.data_dir, settings.dir.as_deref(), true)
                {
                    Ok(d) => d,
                    Err(e) => fail_db(format!("failed to get the snapshot dir: {e}")),
                };
                match client.download(&p, &dir) {
                    Ok(path) => p = path.display().to_string(),
                    Err(e) => fail_db(format!("failed to download snapshot from S3: {e}")),
                }
                util::info(format!("S3 download complete for {p}"));
            }
            let p = &p;
            let path = PathBuf::from(p);
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fail_db(format!("etcd: snapshot path does not exist: {p}"))
                }
                Ok(m) if m.is_dir() => fail_db(format!(
                    "etcd: snapshot path must be a file, not a directory: {p}"
                )),
                _ => {}
            }
            let data = if p.ends_with(snapshot::COMPRESSED_EXT) {
                // This k3s version joins the restore path to the snapshot dir even when it is
                // absolute (k3s issue #14526, `snapshot.go` 157-172 from `etcd.go` 1536), so an
                // absolute `.zip` path fails to open and the restore stops before the data
                // is moved. A compressed snapshot downloaded from S3 always fails so: the
                // download's path is absolute (`s3.go` 352, 362).
                let dir = match snapshot::snapshot_dir(&ctx.data_dir, settings.dir.as_deref(), true)
                {
                    Ok(d) => d,
                    Err(e) => fail_db(format!("failed to get the snapshot dir: {e}")),
                };
                util::info(format!("Decompressing etcd snapshot file: {p}"));
                let zip_path = go_join(&dir, p);
                let bytes = match snapshot::read_zip(&zip_path) {
                    Ok(b) => b,
                    Err(e) => fail_db(e),
                };
                // The unzipped copy stays next to the zip, as in k3s.
                let unzipped = PathBuf::from(
                    zip_path
                        .to_string_lossy()
                        .trim_end_matches(snapshot::COMPRESSED_EXT),
                );
                let _ = util::write_file(&unzipped, &bytes, 0o600);
                bytes
            } else {
                match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => fail_db(snapshot::go_err("open", &path, &e)),
                }
            };
            // `Restore` moves the data aside first, then restores (`etcd.go` 1547-1559).
            let old = db.join(format!("etcd-old-{}", util::now_secs()));
            if let Err(e) = std::fs::create_dir_all(&old) {
                fail_db(snapshot::go_err("mkdir", &old, &e));
            }
            if state_path.exists() {
                if let Err(e) = std::fs::rename(&state_path, old.join("state.json")) {
                    fail_db(format!(
                        "rename {} {}: {e}",
                        state_path.display(),
                        old.display()
                    ));
                }
            }
            // The WAL directory k3s's "has data" test looks at goes with it.
            let etcd_dir = db.join("etcd");
            if etcd_dir.exists() {
                let _ = std::fs::rename(&etcd_dir, old.join("etcd"));
            }
            util::info(format!(
                "Pre-restore etcd database moved to {}",
                old.display()
            ));
            match serde_json::from_slice::<State>(&data) {
                Ok(st) => st,
                // etcdutl's integrity check of the snapshot fails on anything else.
                Err(e) => fail_db(format!("snapshot file integrity check failed: {p}: {e}")),
            }
        }
    };
    // setName(true): a new member name; a new single-member cluster (an etcd restore creates
    // a new cluster, hence a new cluster ID).
    let me = server::my_member(ctx);
    let old_members: Vec<String> = st.members.iter().map(|m| m.name.clone()).collect();
    st.members = vec![me.clone()];
    st.removed_members.clear();
    st.cluster_id = util::random_hex(8);
    st.epoch += 1;
    st.event(
        &ctx.node,
        "cluster-reset",
        json!({"member": me.name, "restore": restore, "previous": old_members}),
    );
    st.dirty = false;
    let persist = |st: &State| {
        let b = serde_json::to_vec(st).unwrap_or_default();
        if let Err(e) = util::write_file(&state_path, &b, 0o600) {
            fail_db(format!("failed to write {}: {e}", state_path.display()));
        }
        let members = serde_json::to_vec_pretty(&st.members).unwrap_or_default();
        let _ = util::write_file(&server_dir.join("double/members.json"), &members, 0o644);
        server::mark_data(&server_dir.join("db"), true);
    };
    persist(&st);
    if let Err(e) = util::write_file(&flag, b"", 0o600) {
        fail_db(snapshot::go_err("open", &flag, &e));
    }
    util::info("Starting etcd for new cluster, cluster-reset=true");
    // rebootstrap: the bootstrap data must be readable with this server's token.
    let tok = server::read_token(cfg, "token", "token-file").or_else(|| {
        std::fs::read_to_string(&token_file)
            .ok()
            .map(|s| s.trim().to_string())
    });
    if let Some(t) = tok {
        if token::parse(&t).password != st.bootstrap.server_password {
            util::fatal("bootstrap data already found and encrypted with different token");
        }
    }
    let tls = server_dir.join("tls");
    if tls.is_dir() {
        let backup = server_dir.join(format!("tls-{}", util::now_secs()));
        util::info(format!(
            "Cluster reset: backing up certificates directory to {}",
            backup.display()
        ));
        if let Err(e) = copy_dir(&tls, &backup) {
            util::warn(format!("failed to back up {}: {e}", tls.display()));
        }
    }
    util::info("Updating bootstrap data on disk from datastore");
    if let Err(e) = server::write_bootstrap(ctx, &st.bootstrap) {
        fail(format!("failed to write bootstrap data: {e}"));
    }
    if let Err(e) = server::write_files(ctx, &st) {
        fail(format!("failed to write server files: {e}"));
    }
    util::error(format!("Shutdown request received: {RESET_DONE:?}"));
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_join_doubles_absolute_paths() {
        assert_eq!(
            go_join(
                Path::new("/var/lib/rancher/k3s/server/db/snapshots"),
                "/var/lib/rancher/k3s/server/db/snapshots/x.zip"
            ),
            PathBuf::from("/var/lib/rancher/k3s/server/db/snapshots/var/lib/rancher/k3s/server/db/snapshots/x.zip")
        );
        assert_eq!(
            go_join(Path::new("/a"), "b/../c.zip"),
            PathBuf::from("/a/c.zip")
        );
    }
}
