//! `bootstrap init`: a commented inventory for the given hosts on stdout, and with `--scan`
//! their SSH host keys, shown and confirmed, added to the known_hosts file it names.

use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::inventory::init::{template, InitSpec};
use crate::inventory::Inventory;
use crate::outcome::usage;
use crate::ssh::config::expand_tilde;
use crate::ssh::known_hosts::{self, HostKeyStatus};

/// Render the inventory for `spec` (refused with exit 2 when it would not be valid), scan
/// the hosts' keys when asked, and print it.
pub async fn run(spec: &InitSpec, scan: bool, yes: bool) -> Result<()> {
    let text = template(spec);
    if let Err(e) = Inventory::from_str_at(&text, std::path::Path::new("<init>")) {
        let lines: Vec<String> = e.diagnostics().iter().map(|d| d.message.clone()).collect();
        return Err(usage(format!(
            "these hosts do not make an inventory:\n  {}",
            lines.join("\n  ")
        )));
    }
    if scan {
        scan_keys(spec, yes).await?;
    }
    print!("{text}");
    Ok(())
}

/// Every host's key, as `ssh-keyscan` reads it: shown with its fingerprint, then recorded once
/// the person confirms. A host whose recorded key differs is refused, never overwritten.
async fn scan_keys(spec: &InitSpec, yes: bool) -> Result<()> {
    let path = expand_tilde(&spec.known_hosts);
    let hosts: Vec<&String> = spec.servers.iter().chain(&spec.agents).collect();
    let scans = futures::future::join_all(
        hosts
            .iter()
            .map(|h| crate::ssh::scan_host_key(h, 22, Duration::from_secs(10), &path)),
    )
    .await;
    let mut new = Vec::new();
    let mut problems = Vec::new();
    for (host, scan) in hosts.iter().zip(scans) {
        match scan {
            Err(e) => problems.push(format!("{host}: no host key read: {e}")),
            Ok(key) => match known_hosts::check(&path, host, 22, &key)? {
                HostKeyStatus::Known => {
                    eprintln!("{host}: {} already in {}", known_hosts::fingerprint(&key), path.display())
                }
                HostKeyStatus::Unknown
                    if !known_hosts::known_algorithms(&path, host, 22).is_empty() =>
                {
                    // Another type is recorded for this host: a host with a recorded key is
                    // trusted with that key only, as a connection would (security review 3 M5).
                    let recorded: Vec<String> = known_hosts::known_algorithms(&path, host, 22)
                        .iter()
                        .map(|a| a.as_str().to_string())
                        .collect();
                    problems.push(format!(
                        "{host}: offers only {} {}, but {} records a {} key for it; a host with a recorded key is only trusted with that key, so this is treated as a changed key: find out why before you trust it (if its keys really changed, remove the old entry with ssh-keygen -R '{host}' -f {})",
                        key.algorithm().as_str(),
                        known_hosts::fingerprint(&key),
                        path.display(),
                        recorded.join(", "),
                        path.display()
                    ));
                }
                HostKeyStatus::Unknown => {
                    eprintln!(
                        "{host}: {} {}",
                        key.algorithm().as_str(),
                        known_hosts::fingerprint(&key)
                    );
                    new.push((host.to_string(), key));
                }
                HostKeyStatus::Revoked { .. } => problems.push(format!(
                    "{host}: offers {}, a key {} marks @revoked",
                    known_hosts::fingerprint(&key),
                    path.display()
                )),
                HostKeyStatus::Changed { line, .. } => problems.push(format!(
                    "{host}: offers {}, but {}:{line} records another key for it; find out why before you trust it",
                    known_hosts::fingerprint(&key),
                    path.display()
                )),
            },
        }
    }
    if !problems.is_empty() {
        return Err(anyhow!(
            "nothing was added to {}:\n  {}",
            path.display(),
            problems.join("\n  ")
        ));
    }
    if new.is_empty() {
        return Ok(());
    }
    super::confirm(
        &format!(
            "add these {} host key(s) to {} (compare the fingerprints with the hosts' own, e.g. `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on each)",
            new.len(),
            path.display()
        ),
        yes,
    )?;
    for (host, key) in &new {
        known_hosts::learn(&path, host, 22, key)?;
    }
    eprintln!("recorded {} host key(s) in {}", new.len(), path.display());
    Ok(())
}
