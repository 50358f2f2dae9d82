//! The ssh config reader against OpenSSH itself: for each config, what `bootstrap` reads for a
//! host is what `ssh -G` (the real client, no connection made) prints for it. The configs are the
//! shapes the security review found read differently (review 3, L2): `Include` inside `Host` and
//! inside a `Match`, options after an `Include`, several known_hosts files, `HostKeyAlias`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bootstrap::ssh::{SshConfig, TargetSpec};

/// What `ssh -G -F config host` says, keyword → value.
fn openssh(config: &Path, host: &str) -> BTreeMap<String, String> {
    let out = Command::new("ssh")
        .args(["-G", "-F"])
        .arg(config)
        .arg(host)
        .output()
        .expect("ssh (openssh-client, installed by `cargo xtask test`) runs");
    assert!(
        out.status.success(),
        "ssh -G failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn joined(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compares every keyword bootstrap acts on, for every host, with OpenSSH's answer.
fn same_as_openssh(main: &Path, hosts: &[&str]) {
    let ours = SshConfig::load(main).unwrap();
    for host in hosts {
        let theirs = openssh(main, host);
        let hc = ours.lookup(host);
        let t = ours.resolve(&TargetSpec::new(*host)).unwrap();
        let get = |k: &str| theirs.get(k).cloned().unwrap_or_default();
        assert_eq!(t.user, get("user"), "{host}: user");
        assert_eq!(t.host, get("hostname"), "{host}: hostname");
        assert_eq!(t.port.to_string(), get("port"), "{host}: port");
        assert_eq!(
            hc.proxy_jump.unwrap_or_default(),
            get("proxyjump"),
            "{host}: proxyjump"
        );
        assert_eq!(
            hc.host_key_alias.unwrap_or_default(),
            get("hostkeyalias"),
            "{host}: hostkeyalias"
        );
        // Every file OpenSSH reads, user files then global ones, is one we read, in order.
        let mut files = vec![t.known_hosts.clone()];
        files.extend(t.also_known_hosts.iter().cloned());
        let expected = format!(
            "{} {}",
            get("userknownhostsfile"),
            get("globalknownhostsfile")
        );
        let mut want: Vec<&str> = Vec::new();
        for f in expected.split_whitespace() {
            if !want.contains(&f) {
                want.push(f);
            }
        }
        assert_eq!(joined(&files), want.join(" "), "{host}: known_hosts files");
    }
}

#[test]
fn include_inside_host_and_match_and_the_lines_after_it_read_as_openssh_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("lab.conf"),
        "Host lab-*\n    User vagrant\n    UserKnownHostsFile /dev/null\nHost *\n    Port 2200\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("evil.conf"),
        "Host *\n    UserKnownHostsFile /dev/null\n    ProxyJump untrusted-jump.example.net\n",
    )
    .unwrap();
    let main = dir.path().join("config");
    std::fs::write(
        &main,
        format!(
            "Host prod-db-1.example.com lab-2\n    Include {d}/lab.conf\n    User deploy\n    UserKnownHostsFile {d}/kh_company\n\
             Match host never-this-host\n    Include {d}/evil.conf\n    User matched\n\
             Host *\n    User fallback\n"
        ),
    )
    .unwrap();
    same_as_openssh(
        &main,
        &[
            "prod-db-1.example.com",
            "lab-1",
            "lab-2",
            "other.example.com",
        ],
    );
}

#[test]
fn several_known_hosts_files_global_files_and_host_key_alias_read_as_openssh_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let main = dir.path().join("config");
    std::fs::write(
        &main,
        format!(
            "Host web\n    HostName 10.1.2.3\n    Port 2222\n    HostKeyAlias web-key\n\
             Host web db\n    UserKnownHostsFile {d}/kh1 {d}/kh2\n    UserKnownHostsFile {d}/kh3\n\
             Host db\n    GlobalKnownHostsFile {d}/global1 {d}/global2\n\
             Host top\n    Include {d}/none.conf\n    HostKeyAlias top-alias\n"
        ),
    )
    .unwrap();
    same_as_openssh(&main, &["web", "db", "top", "plain"]);
}
