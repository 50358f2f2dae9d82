//! known_hosts verification, written here rather than taken from russh: russh's helper splits
//! fields on single spaces, fails the whole check on one line with an unknown key type, and has
//! no wildcard patterns, `!` negation or `@revoked` marker. This reader follows OpenSSH's rules
//! for the parts `bootstrap` needs: plain, `[host]:port`, hashed (`|1|salt|hash`) and wildcard
//! host patterns, `@revoked` keys, and "a different key of the same type" meaning *changed*.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

use super::config::pattern_list_match;

/// The name a host is recorded and looked up under: `host` on port 22, `[host]:port`
/// otherwise, lower-cased as OpenSSH does before it hashes or matches (a hashed entry of
/// `web1.example.com` is the host `Web1.Example.com` too).
pub fn host_id(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:<base64>` as `ssh-keygen -l` and OpenSSH's warnings show it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What known_hosts says about a key a server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// The key is recorded for this host.
    Known,
    /// Nothing recorded for this host with this key type.
    Unknown,
    /// A different key of the same type is recorded: possibly a man in the middle.
    Changed {
        line: usize,
        /// The known_hosts line as it is in the file.
        entry: String,
        /// Fingerprint of the recorded key.
        recorded_fingerprint: String,
    },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

struct Entry<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key: PublicKey,
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut marker = None;
    if first.starts_with('@') {
        marker = Some(first);
        first = fields.next()?;
    }
    let key_type = fields.next()?;
    let b64 = fields.next()?;
    // Lines with key types this build cannot parse are skipped, as OpenSSH skips them.
    let key = PublicKey::from_openssh(&format!("{key_type} {b64}")).ok()?;
    Some(Entry {
        marker,
        hosts: first,
        key,
    })
}

fn hashed_match(entry: &str, id: &str) -> bool {
    let mut parts = entry.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(id.as_bytes()).verify_slice(&hash).is_ok()
}

/// Whether a known_hosts host field (`a,b,!c`, `|1|…`, `[h]:p`, wildcards) names `id`.
pub fn hosts_field_matches(field: &str, id: &str) -> bool {
    if field.starts_with("|1|") {
        return hashed_match(field, id);
    }
    pattern_list_match(id, field.split(','))
}

/// Checks `key` for `host:port` against the known_hosts text.
pub fn check_text(text: &str, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
    let id = host_id(host, port);
    let mut changed = None;
    let mut known = false;
    for (idx, raw) in text.lines().enumerate() {
        let Some(e) = parse_line(raw) else { continue };
        if !hosts_field_matches(e.hosts, &id) {
            continue;
        }
        match e.marker {
            Some("@revoked") if e.key.key_data() == key.key_data() => {
                return HostKeyStatus::Revoked { line: idx + 1 };
            }
            Some(_) => continue,
            None => {}
        }
        if e.key.key_data() == key.key_data() {
            known = true;
        } else if e.key.algorithm() == key.algorithm() && changed.is_none() {
            changed = Some(HostKeyStatus::Changed {
                line: idx + 1,
                entry: raw.trim().to_string(),
                recorded_fingerprint: fingerprint(&e.key),
            });
        }
    }
    if known {
        HostKeyStatus::Known
    } else {
        changed.unwrap_or(HostKeyStatus::Unknown)
    }
}

/// Checks `key` against the file; a missing file knows no host.
pub fn check(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> std::io::Result<HostKeyStatus> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(check_text(&text, host, port, key)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostKeyStatus::Unknown),
        Err(e) => Err(e),
    }
}

/// Checks `key` against several files as OpenSSH does (the user files, then the global ones):
/// a `@revoked` mark in any file refuses, a match in any file is known, otherwise a different
/// key of the same type in any file is a change. Returns the status and, for a change or a
/// revocation, the file that says so.
pub fn check_files(
    paths: &[&Path],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> std::io::Result<(HostKeyStatus, Option<std::path::PathBuf>)> {
    let mut known = false;
    let mut changed = None;
    for path in paths {
        match check(path, host, port, key)? {
            HostKeyStatus::Known => known = true,
            HostKeyStatus::Unknown => {}
            r @ HostKeyStatus::Revoked { .. } => return Ok((r, Some(path.to_path_buf()))),
            c @ HostKeyStatus::Changed { .. } => {
                if changed.is_none() {
                    changed = Some((c, Some(path.to_path_buf())));
                }
            }
        }
    }
    if known {
        return Ok((HostKeyStatus::Known, None));
    }
    Ok(changed.unwrap_or((HostKeyStatus::Unknown, None)))
}

/// [`known_algorithms`] over several files, each type once.
pub fn known_algorithms_in(paths: &[&Path], host: &str, port: u16) -> Vec<Algorithm> {
    let mut out: Vec<Algorithm> = Vec::new();
    for alg in paths.iter().flat_map(|p| known_algorithms(p, host, port)) {
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    out
}

/// Key algorithms recorded for the host, so the client can prefer them in the handshake. Without
/// this a server offering ed25519 and ecdsa could present a type we never recorded, and a
/// strict check would refuse a host the user did verify.
pub fn known_algorithms(path: &Path, host: &str, port: u16) -> Vec<Algorithm> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let id = host_id(host, port);
    let mut out: Vec<Algorithm> = Vec::new();
    for raw in text.lines() {
        let Some(e) = parse_line(raw) else { continue };
        if e.marker.is_none() && hosts_field_matches(e.hosts, &id) {
            let alg = e.key.algorithm();
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
    }
    out
}

/// Appends `host_id key` to the file (creating it and its directory). One process-wide lock and
/// one `write` per line keep parallel connects from interleaving lines.
pub fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // As ssh does for ~/.ssh: a directory made here is the user's alone.
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)?;
    }
    let key_text = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(format!("cannot encode host key: {e}")))?;
    // The key's comment is the server's business; record type and data only.
    let key_text = key_text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let entry = format!("{} {key_text}", host_id(host, port));
    let needs_newline = match std::fs::read(path) {
        Ok(bytes) => !bytes.is_empty() && bytes.last() != Some(&b'\n'),
        Err(_) => false,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o644);
    }
    let mut f = opts.open(path)?;
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    line.push_str(&entry);
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBL9Q57ZgYa++ccbgjGUbIKiLf+FMKwjDnlMj47OpBiIqmgt524UmD3m1yQDm8U7SXUBVQgSmriM+4/cFKFMxoXs=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn hashed(id: &str) -> String {
        let salt = b"0123456789abcdefghij";
        let mac = Hmac::<Sha1>::new_from_slice(salt)
            .unwrap()
            .chain_update(id.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(&hash))
    }

    #[test]
    fn several_files_a_match_anywhere_is_known_a_revocation_anywhere_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let other = f("other", &format!("h {K2}\n"));
        let right = f("right", &format!("h {K1}\n"));
        let revoked = f("revoked", &format!("@revoked h {K1}\n"));
        let missing = dir.path().join("missing");
        let k1 = key(K1);
        fn files<'a>(v: &[&'a std::path::PathBuf]) -> Vec<&'a Path> {
            v.iter().map(|p| p.as_path()).collect()
        }
        let (st, by) = check_files(&files(&[&missing, &other, &right]), "h", 22, &k1).unwrap();
        assert_eq!((st, by), (HostKeyStatus::Known, None));
        let (st, by) = check_files(&files(&[&missing, &other]), "h", 22, &k1).unwrap();
        assert!(
            matches!(st, HostKeyStatus::Changed { line: 1, .. }),
            "{st:?}"
        );
        assert_eq!(by.as_deref(), Some(other.as_path()));
        let (st, by) = check_files(&files(&[&right, &revoked]), "h", 22, &k1).unwrap();
        assert_eq!(st, HostKeyStatus::Revoked { line: 1 });
        assert_eq!(by.as_deref(), Some(revoked.as_path()));
        let (st, _) = check_files(&files(&[&missing]), "h", 22, &k1).unwrap();
        assert_eq!(st, HostKeyStatus::Unknown);
        let e = f("ecdsa", &format!("h {ECDSA}\n"));
        assert_eq!(
            known_algorithms_in(&files(&[&other, &e, &right]), "h", 22).len(),
            2
        );
    }

    #[test]
    fn plain_port_and_lists() {
        let text = format!(
            "# comment\n10.0.0.5 {K1}\n[10.0.0.6]:2222\t{K2} comment here\nfoo,10.0.0.7 {K1}\n"
        );
        assert_eq!(
            check_text(&text, "10.0.0.5", 22, &key(K1)),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, "10.0.0.6", 2222, &key(K2)),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, "10.0.0.6", 22, &key(K2)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check_text(&text, "10.0.0.7", 22, &key(K1)),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, "10.0.0.8", 22, &key(K1)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn changed_names_line_and_fingerprint() {
        let text = format!("10.0.0.5 {ECDSA}\n10.0.0.5 {K2}\n");
        match check_text(&text, "10.0.0.5", 22, &key(K1)) {
            HostKeyStatus::Changed {
                line,
                entry,
                recorded_fingerprint,
            } => {
                assert_eq!(line, 2);
                assert_eq!(entry, format!("10.0.0.5 {K2}"));
                assert_eq!(recorded_fingerprint, fingerprint(&key(K2)));
                assert!(recorded_fingerprint.starts_with("SHA256:"));
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        // Only another key *type* recorded: unknown, as OpenSSH treats it.
        let text = format!("10.0.0.5 {ECDSA}\n");
        assert_eq!(
            check_text(&text, "10.0.0.5", 22, &key(K1)),
            HostKeyStatus::Unknown
        );
        // A matching key anywhere wins over a stale one of the same type.
        let text = format!("10.0.0.5 {K2}\n10.0.0.5 {K1}\n");
        assert_eq!(
            check_text(&text, "10.0.0.5", 22, &key(K1)),
            HostKeyStatus::Known
        );
    }

    /// Security review 3 (L1): OpenSSH lower-cases the host before it hashes; a hashed entry
    /// of `web1.example.com` is found for `Web1.Example.com`, its key Known, another key of
    /// its type Changed, never Unknown (which accept-new would record).
    #[test]
    fn hashed_entries_match_whatever_the_case() {
        let text = format!(
            "{} {K1}\n{} {K2}\n",
            hashed("web1.example.com"),
            hashed("[web1.example.com]:2222")
        );
        assert_eq!(
            check_text(&text, "Web1.Example.com", 22, &key(K1)),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, "WEB1.example.com", 2222, &key(K2)),
            HostKeyStatus::Known
        );
        assert!(matches!(
            check_text(&text, "Web1.Example.com", 22, &key(K2)),
            HostKeyStatus::Changed { .. }
        ));
        assert_eq!(host_id("Web1.Example.com", 2222), "[web1.example.com]:2222");
    }

    #[test]
    fn hashed_and_wildcards_and_markers() {
        let text = format!(
            "{} {K1}\n{} {K2}\n*.lab,!bad.lab {ECDSA}\n@cert-authority * {K2}\n@revoked 10.9.9.9 {K1}\n10.9.9.9 {K1}\n",
            hashed("10.0.0.5"),
            hashed("[10.0.0.5]:2222"),
        );
        assert_eq!(
            check_text(&text, "10.0.0.5", 22, &key(K1)),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, "10.0.0.5", 2222, &key(K2)),
            HostKeyStatus::Known
        );
        assert!(matches!(
            check_text(&text, "10.0.0.5", 2222, &key(K1)),
            HostKeyStatus::Changed { line: 2, .. }
        ));
        assert_eq!(
            check_text(&text, "a.lab", 22, &key(ECDSA)),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, "bad.lab", 22, &key(ECDSA)),
            HostKeyStatus::Unknown
        );
        // A @cert-authority line is not a host key.
        assert_eq!(
            check_text(&text, "zzz", 22, &key(K2)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check_text(&text, "10.9.9.9", 22, &key(K1)),
            HostKeyStatus::Revoked { line: 5 }
        );
    }

    #[test]
    fn junk_lines_are_skipped() {
        let text = format!(
            "garbage\n10.0.0.5 ssh-unknown AAAA\n10.0.0.5 ssh-ed25519 !!notbase64\n10.0.0.5 {K1}\n"
        );
        assert_eq!(
            check_text(&text, "10.0.0.5", 22, &key(K1)),
            HostKeyStatus::Known
        );
    }

    #[test]
    fn learn_appends_and_then_knows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("known_hosts");
        assert_eq!(
            check(&path, "10.0.0.5", 22, &key(K1)).unwrap(),
            HostKeyStatus::Unknown
        );
        let entry = learn(&path, "10.0.0.5", 22, &key(K1)).unwrap();
        assert_eq!(entry, format!("10.0.0.5 {K1}"));
        // The directory it made (as ~/.ssh would be) is the user's alone.
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("sub"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        assert_eq!(
            check(&path, "10.0.0.5", 22, &key(K1)).unwrap(),
            HostKeyStatus::Known
        );
        // No trailing newline in a hand-edited file: the new entry still gets its own line.
        std::fs::write(&path, format!("10.0.0.1 {K2}")).unwrap();
        learn(&path, "10.0.0.6", 2200, &key(K1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("10.0.0.1 {K2}\n[10.0.0.6]:2200 {K1}\n"));
        assert_eq!(
            known_algorithms(&path, "10.0.0.6", 2200),
            vec![key(K1).algorithm()]
        );
        assert!(known_algorithms(&path, "10.0.0.6", 22).is_empty());
    }

    #[test]
    fn host_ids() {
        assert_eq!(host_id("h", 22), "h");
        assert_eq!(host_id("h", 2222), "[h]:2222");
    }
}
