//! etcd snapshots as k3s makes them, and the operator's copies of them: a snapshot file in
//! `.bootstrap/snapshots/` and, beside it, its record (`<name>.json`, 0600): where and when it
//! was taken, its sha256, and the server token its bootstrap data is encrypted with. A
//! snapshot is useless without that token (k3s pkg/cluster/storage.go:304-342: the bootstrap
//! key is `/bootstrap/<hash of the token>`; docs.k3s.io/cli/etcd-snapshot "Restoring To New
//! Hosts").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The newest of `files` (one name a line) that k3s named `<prefix><unix>` or
/// `<prefix><unix>.zip` (pkg/etcd/snapshot.go:269-271, 303-316).
pub fn newest_saved<'a>(files: &'a str, prefix: &str) -> Option<&'a str> {
    files
        .lines()
        .map(str::trim)
        .filter_map(|f| {
            let ts = f.strip_prefix(prefix)?;
            let ts = ts.strip_suffix(".zip").unwrap_or(ts);
            ts.parse::<u64>().ok().map(|t| (t, f))
        })
        .max()
        .map(|(_, f)| f)
}

/// Whether `name` can be a snapshot file k3s made (`<name>-<node>-<unix>`, `.zip` when
/// compressed: letters, digits, `.`, `_`, `-`, starting with a letter or digit) and so name a
/// file of this machine's snapshot directory. Names come from k3s's output, the cluster's
/// ETCDSnapshotFiles and copies' records, none of which this machine controls: a `/` or a
/// leading `.` would write elsewhere, and a `.json` one would replace another copy's record.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.ends_with(".json");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a snapshot name k3s makes (letters, digits, `.`, `_` and `-`, starting with a letter or digit, not ending in .json)"
        ))
    }
}

/// The last component of a snapshot's path on a server, checked with [`check_name`]: the
/// name its copy gets on this machine.
pub fn local_name(path: &str) -> Result<&str, String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    check_name(name).map(|_| name)
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

/// What a restore of a snapshot the cluster knows by name checked before it stopped
/// anything, kept in `.bootstrap/restore.json` until it is done. k3s records a snapshot's
/// token hash only when it takes the snapshot (pkg/etcd/snapshot.go:323-347); once the first
/// server runs on the restored data, it finds the file again and records it without one
/// (:440-451), so the same command run again after an interrupt needs the hash it checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub snapshot: String,
    /// The server that holds it: with every server stopped by the interrupted run, the
    /// cluster cannot say.
    #[serde(default)]
    pub node: String,
    /// The snapshot's location as the cluster recorded it (`file://...`).
    pub location: String,
    pub token_hash: String,
}

impl RestoreRecord {
    /// `.bootstrap/restore.json` under `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("restore.json")
    }

    pub fn load(state_dir: &Path) -> std::io::Result<Option<RestoreRecord>> {
        match crate::local::read_optional(&RestoreRecord::path(state_dir))? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            None => Ok(None),
        }
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::local::write_private(
            &RestoreRecord::path(state_dir),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    pub fn remove(state_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(RestoreRecord::path(state_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
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
/// The largest etcd database a snapshot can hold: etcd refuses a backend quota above 8 GiB
/// (`--quota-backend-bytes`, etcd docs "Maintenance: space quota").
pub const UNZIPPED_LIMIT: u64 = 8 << 30;

/// Unpacks a compressed snapshot (one file, as k3s writes it) into `out`, at most `limit`
/// bytes: a `.zip` that unpacks to more is refused, not unpacked into memory.
pub fn unzip_into(bytes: &[u8], out: &mut impl std::io::Write, limit: u64) -> Result<u64, String> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    if z.len() != 1 {
        return Err(format!(
            "unexpected compressed etcd snapshot contents: {} files, k3s writes one",
            z.len()
        ));
    }
    let f = z.by_index(0).map_err(|e| e.to_string())?;
    let too_big = || {
        format!(
            "uncompressed, the snapshot would be larger than {} MiB, more than etcd takes; not a snapshot k3s wrote",
            limit >> 20
        )
    };
    // What the archive says first, then what it gives (the header can lie).
    if f.size() > limit {
        return Err(too_big());
    }
    let n = std::io::copy(&mut f.take(limit + 1), out).map_err(|e| e.to_string())?;
    if n > limit {
        return Err(too_big());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names k3s gives snapshots, as `etcd-snapshot save` and `ls` printed them on real
    /// clusters: the newest `<name>-<node>-<unix>[.zip]` is found; another node's or another
    /// name's never.
    #[test]
    fn the_saved_file_is_found_by_k3s_names_as_recorded() {
        let save = crate::testdata::text("etcd-snapshot-save.txt");
        let names: String = save
            .lines()
            .filter_map(|l| l.split("Snapshot ").nth(1))
            .filter_map(|r| r.split(" saved.").next())
            .map(|n| format!("{n}\n"))
            .collect();
        assert_eq!(
            newest_saved(&names, "on-demand-server-0-"),
            Some("on-demand-server-0-1753178523")
        );
        let ls = crate::testdata::text("etcd-snapshot-ls-k3s-v1.28.15.txt");
        let files: String = ls
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| format!("{n}\n"))
            .collect();
        let prefix = files
            .lines()
            .find_map(|n| n.rsplit_once('-').map(|(p, _)| format!("{p}-")))
            .filter(|p| !p.starts_with("Name"))
            .unwrap_or_default();
        let newest = newest_saved(&files, &prefix).unwrap_or_else(|| panic!("{files}"));
        assert!(newest.starts_with(&prefix), "{newest}");
        assert_eq!(newest_saved(&files, "no-such-node-"), None);
        assert_eq!(
            newest_saved("a-m-1\na-m-3.zip\na-m-2\nb-m-9\n", "a-m-"),
            Some("a-m-3.zip")
        );
    }

    /// Every name k3s printed on the recorded clusters passes; what would write elsewhere or
    /// over a record does not (security review 3 M1).
    #[test]
    fn snapshot_names_as_k3s_makes_them_and_nothing_else() {
        let ls = crate::testdata::text("etcd-snapshot-ls-k3s-v1.28.15.txt");
        let mut seen = 0;
        for n in ls.lines().filter_map(|l| l.split_whitespace().next()) {
            if n != "Name" {
                assert_eq!(check_name(n), Ok(()), "{n}");
                seen += 1;
            }
        }
        assert!(seen >= 3, "{ls}");
        assert_eq!(check_name("on-demand-server-0-1753178523.zip"), Ok(()));
        for bad in [
            "../../../../root/.ssh/authorized_keys",
            "a/b",
            ".hidden",
            "-x",
            "on-demand-m-1.json",
            "",
            "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            local_name("/var/lib/rancher/k3s/server/db/snapshots/on-demand-m-1"),
            Ok("on-demand-m-1")
        );
        assert!(local_name("/x/on-demand-m-1.json").is_err());
    }

    /// Security review 3 (E7c): a small `.zip` that unpacks to more than the limit is
    /// refused after at most the limit, by its header or by what it gives.
    #[test]
    fn a_zip_bomb_is_refused_at_the_limit() {
        use std::io::Write;
        let mut zipped = Vec::new();
        {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zipped));
            w.start_file("snap", zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(&vec![0u8; 4 << 20]).unwrap();
            w.finish().unwrap();
        }
        assert!(zipped.len() < 64 << 10, "{}", zipped.len());
        let mut out = Vec::new();
        assert_eq!(unzip_into(&zipped, &mut out, 8 << 20), Ok(4 << 20));
        let mut out = Vec::new();
        let e = unzip_into(&zipped, &mut out, 1 << 20).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert!(out.len() <= 1 << 20);
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
