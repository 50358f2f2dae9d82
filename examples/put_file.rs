//! Upload one file through bootstrap's SFTP path (`Session::put_file`), for
//! the benchmark's comparison with OpenSSH scp:
//!
//!     put_file USER@HOST KEY KNOWN_HOSTS LOCAL REMOTE
//!
//! Prints the seconds the upload took (connection excluded, as for scp's
//! transfer the connection is part of its run; the bench reports both).

use std::time::Instant;

use bootstrap::ssh::{self, Session, TargetSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, key, known_hosts, local, remote] = args.as_slice() else {
        anyhow::bail!("usage: put_file USER@HOST KEY KNOWN_HOSTS LOCAL REMOTE");
    };
    let (user, host) = target.split_once('@').unwrap_or(("root", target));
    let spec = TargetSpec {
        user: Some(user.into()),
        identity_file: Some(key.into()),
        known_hosts: Some(known_hosts.into()),
        ..TargetSpec::new(host)
    };
    let t = ssh::SshConfig::empty().resolve(&spec)?;
    let started = Instant::now();
    let session = Session::connect(&t).await?;
    let connected = started.elapsed();
    let path = std::path::PathBuf::from(local);
    session.put_file(remote, &path, 0o644, None).await?;
    let total = started.elapsed();
    println!(
        "{{\"connect_seconds\":{},\"upload_seconds\":{},\"total_seconds\":{}}}",
        connected.as_secs_f64(),
        (total - connected).as_secs_f64(),
        total.as_secs_f64()
    );
    Ok(())
}
