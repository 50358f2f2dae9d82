//! etcd snapshots as k3s makes them, and the operator's copies of them: a snapshot file in
//! `.bootstrap/snapshots/` and, beside it, its record (`<name>.json`, 0600): where and when it
//! was taken, its sha256, and the server token its bootstrap data is encrypted with. A
//! snapshot is useless without that token (k3s pkg/cluster/storage.go:304-342: the bootstrap
//! key is `/bootstrap/<hash of the token>`; docs.k3s.io/cli/etcd-snapshot "Restoring To New
//! Hosts").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `k3s etcd-snapshot save` prints this once per snapshot it made, on stderr
/// (k3s pkg/cli/etcdsnapshot/etcd_snapshot.go:141-143: `Snapshot %s saved.`).
pub fn saved_name(stderr: &str) -> Option<&str> {
    stderr.lines().find_map(|l| {
        let i = l.find("Snapshot ")?;
        let rest = &l[i + "Snapshot ".len()..];
        let name = rest.split(" saved.").next()?;
        (rest.contains(" saved.") && !name.is_empty() && !name.contains(char::is_whitespace))
            .then_some(name)
    })
}

/// k3s's short hash of a server token's password: the first 12 hex digits of its sha256
/// (k3s pkg/util/token.go:51-70 `ShortHash`), the suffix of the bootstrap key and the
/// `etcd.k3s.cattle.io/snapshot-token-hash` annotation of every snapshot.
pub fn token_hash(password: &str) -> String {
    super::sha256_hex(password.as_bytes())[..12].to_string()
}

/// What `bootstrap etcd snapshot` keeps beside a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub cluster: String,
    /// The file name k3s gave it (`on-demand-<node>-<unix>`, `.zip` when compressed).
    pub name: String,
    /// The server it was taken on, and where it is there.
    pub node: String,
    pub path: String,
    pub created: String,
    pub size: u64,
    pub sha256: String,
    pub token_hash: String,
    /// The server token (its password) the snapshot's bootstrap data is encrypted with.
    pub server_token: String,
}

/// `<dir>/<name>.json`.
pub fn record_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

/// The record of the copy at `file`, if it has one.
pub fn load_record(file: &Path) -> std::io::Result<Option<Record>> {
    match crate::local::read_optional(&record_path(file))? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        None => Ok(None),
    }
}

/// The copy and then its record, each atomically with mode 0600 (the directory 0700).
pub fn save_copy(file: &Path, bytes: &[u8], record: &Record) -> std::io::Result<()> {
    crate::local::write_private(file, bytes)?;
    crate::local::write_private(
        &record_path(file),
        serde_json::to_string_pretty(record)?.as_bytes(),
    )
}

/// The snapshot inside a `.zip` k3s wrote (one Deflate entry named like the snapshot,
/// k3s pkg/etcd/snapshot.go:134-152).
pub fn unzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    if z.len() != 1 {
        return Err(format!(
            "unexpected compressed etcd snapshot contents: {} files, k3s writes one",
            z.len()
        ));
    }
    let mut f = z.by_index(0).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_saved_name_from_logrus_lines() {
        let err = "time=\"2026-12-03T12:00:00Z\" level=info msg=\"Snapshot on-demand-master-1-1764763200 saved.\"\n";
        assert_eq!(saved_name(err), Some("on-demand-master-1-1764763200"));
        assert_eq!(
            saved_name("INFO[0155] Snapshot x-m-1.zip saved.\n"),
            Some("x-m-1.zip")
        );
        assert_eq!(saved_name("level=fatal msg=\"see server log\"\n"), None);
    }

    #[test]
    fn token_hash_is_twelve_hex_digits_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(token_hash("abc"), "ba7816bf8f01");
    }

    #[test]
    fn records_round_trip_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".bootstrap/snapshots/on-demand-m-1");
        let r = Record {
            cluster: "c".into(),
            name: "on-demand-m-1".into(),
            node: "m".into(),
            path: "/var/lib/rancher/k3s/server/db/snapshots/on-demand-m-1".into(),
            created: "2026-12-03T12:00:00Z".into(),
            size: 3,
            sha256: crate::k3s::sha256_hex(b"abc"),
            token_hash: token_hash("pw"),
            server_token: "pw".into(),
        };
        save_copy(&file, b"abc", &r).unwrap();
        assert_eq!(load_record(&file).unwrap(), Some(r));
        for p in [file.clone(), record_path(&file)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}
