//! The operator's secrets off-site (`bootstrap secrets export` and `import`, issue 28): the
//! files of `.bootstrap/` that a cluster cannot be restored or joined without, as one archive
//! encrypted in the age format (age-encryption.org/v1), to a passphrase (scrypt) or to age
//! recipients (`age1...` X25519 keys, or `age1pq1...` post-quantum ones).
//!
//! What goes in ([`Kind`]): `tokens.json` (the server and agent tokens), `sealed-secrets.key`
//! and `sealed-secrets.crt` (the sealing key: without it no SealedSecret opens),
//! `restore.json` (a restore interrupted half-way) and the snapshot records
//! `snapshots/<name>.json` (each holds the server token its snapshot needs). What stays out:
//! the snapshot files themselves (large, and useless without their record: kept on the
//! servers, in S3 or wherever the operator copies them), the release cache, temp files, and
//! anything else; the kubeconfig beside the inventory is not in `.bootstrap/` and
//! `bootstrap kubeconfig` fetches it again from a server.
//!
//! Inside the encryption the archive is one JSON object:
//! `{"format": "bootstrap-secrets", "version": 1, "cluster": NAME, "created": RFC3339,
//! "files": {PATH: BASE64, ...}}`, each PATH relative to `.bootstrap/` (`/`-separated), each
//! value the file's bytes in standard base64. `age -d FILE | jq` reads it without this tool.
//!
//! Importing decrypts and checks the whole archive ([`Archive::parse`]) and decides every
//! file ([`plan_import`]) before it writes anything; it never replaces a file that differs
//! from the archive's unless forced, and never deletes one.
//!
//! Pure but for [`collect`], [`current`] and [`write`] (the files of `.bootstrap/`), and the
//! randomness of [`encrypt`].

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use age::secrecy::SecretString;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::k3s::snapshot::{self, Record, RestoreRecord};
use crate::k3s::token::TokenBackup;

/// The archive's `format` field.
pub const FORMAT: &str = "bootstrap-secrets";
/// The archive's `version`: bumped when a field changes meaning or goes.
pub const VERSION: u32 = 1;
/// The largest archive read, encrypted or not: the files it holds are a few KiB each.
pub const MAX_ARCHIVE: u64 = 16 << 20;

pub const TOKENS: &str = "tokens.json";
pub const SEALING_KEY: &str = "sealed-secrets.key";
pub const SEALING_CERT: &str = "sealed-secrets.crt";
pub const RESTORE: &str = "restore.json";
pub const SNAPSHOTS: &str = "snapshots";

/// What a file an archive may hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tokens.json`.
    Tokens,
    /// `sealed-secrets.key`.
    SealingKey,
    /// `sealed-secrets.crt`.
    SealingCert,
    /// `restore.json`.
    RestoreRecord,
    /// `snapshots/<name>.json`.
    SnapshotRecord,
}

impl Kind {
    /// The kind of the file at `path` (relative to `.bootstrap/`), `None` for a file that
    /// bootstrap does not keep there or an archive does not hold (a snapshot itself).
    pub fn of(path: &str) -> Option<Kind> {
        match path {
            TOKENS => Some(Kind::Tokens),
            SEALING_KEY => Some(Kind::SealingKey),
            SEALING_CERT => Some(Kind::SealingCert),
            RESTORE => Some(Kind::RestoreRecord),
            _ => {
                let name = path
                    .strip_prefix(SNAPSHOTS)?
                    .strip_prefix('/')?
                    .strip_suffix(".json")?;
                snapshot::check_name(name)
                    .ok()
                    .map(|_| Kind::SnapshotRecord)
            }
        }
    }

    /// What it holds, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Tokens => "the cluster's server and agent tokens",
            Kind::SealingKey => "the Sealed Secrets private key",
            Kind::SealingCert => "the Sealed Secrets certificate",
            Kind::RestoreRecord => "the record of an unfinished etcd restore",
            Kind::SnapshotRecord => "a snapshot's record, with its server token",
        }
    }
}

/// Checks an archive entry's path: relative to `.bootstrap/`, plain names joined by `/` (no
/// `..`, `.`, empty component, absolute path, backslash or control character), and one of the
/// files an archive holds.
pub fn check_path(path: &str) -> Result<Kind, String> {
    if path.is_empty() {
        return Err("an entry has an empty path".into());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} is an absolute path"));
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Err(format!("{path:?} holds a backslash or a control character"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{path:?} is not a plain path inside .bootstrap/ (an empty, `.` or `..` component)"
        ));
    }
    Kind::of(path).ok_or_else(|| {
        format!(
            "{path:?} is not a file an archive holds ({TOKENS}, {SEALING_KEY}, {SEALING_CERT}, {RESTORE}, {SNAPSHOTS}/<snapshot>.json)"
        )
    })
}

/// Files of `.bootstrap/`: path relative to it → the file's bytes.
pub type Files = BTreeMap<String, Vec<u8>>;

/// The files of one `.bootstrap/`, and whose they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The cluster's name in the inventory it was exported with.
    pub cluster: String,
    /// When it was exported (RFC 3339).
    pub created: String,
    pub files: Files,
}

/// The archive as it is written: the files in base64.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    version: u32,
    cluster: String,
    created: String,
    #[serde(deserialize_with = "unique_keys")]
    files: BTreeMap<String, String>,
}

/// The fields read before the rest, so that another format or a newer version is named as
/// such rather than as a field this version does not know.
#[derive(Deserialize)]
struct Head {
    format: Option<String>,
    version: Option<u32>,
}

/// A JSON object's keys, refused when one comes twice (which of the two would be the file?).
fn unique_keys<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of paths to base64 strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "the path {k:?} comes twice"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// A JSON error without the text it was reading (which may be a secret): where, and what
/// kind of problem.
fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not of the expected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

impl Archive {
    /// The archive's bytes, before encryption.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            format: FORMAT.into(),
            version: VERSION,
            cluster: self.cluster.clone(),
            created: self.created.clone(),
            files: self
                .files
                .iter()
                .map(|(p, b)| {
                    (
                        p.clone(),
                        base64::engine::general_purpose::STANDARD.encode(b),
                    )
                })
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The archive in `bytes` (decrypted), checked whole with [`Archive::check`].
    pub fn parse(bytes: &[u8]) -> Result<Archive, String> {
        let not_ours = || format!("it is not a {FORMAT} archive");
        let head: Head = serde_json::from_slice(bytes).map_err(|_| not_ours())?;
        if head.format.as_deref() != Some(FORMAT) {
            return Err(not_ours());
        }
        match head.version {
            Some(VERSION) => {}
            Some(v) if v > VERSION => {
                return Err(format!(
                    "it is a version {v} archive, made by a newer bootstrap; this one reads version {VERSION}"
                ))
            }
            v => return Err(format!("its version {v:?} is not one bootstrap wrote")),
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| {
            // The one message that names the data: a duplicate path.
            if e.to_string().contains("comes twice") {
                format!("the archive is not valid: {e}")
            } else {
                format!("the archive is {}", json_error(&e))
            }
        })?;
        let mut files = BTreeMap::new();
        for (path, b64) in wire.files {
            check_path(&path)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| format!("{path:?}: its content is not base64"))?;
            files.insert(path, bytes);
        }
        let archive = Archive {
            cluster: wire.cluster,
            created: wire.created,
            files,
        };
        archive.check()?;
        Ok(archive)
    }

    /// Every file checked as what its path says it is, so that an archive that would leave
    /// `.bootstrap/` broken is refused whole, before anything is written (and before anything
    /// is exported).
    pub fn check(&self) -> Result<(), String> {
        for (path, bytes) in &self.files {
            let kind = check_path(path)?;
            check_content(kind, path, bytes)?;
        }
        let key = self.files.contains_key(SEALING_KEY);
        let cert = self.files.contains_key(SEALING_CERT);
        if key != cert {
            return Err(format!(
                "it holds only one of {SEALING_KEY} and {SEALING_CERT}; the sealing key needs both"
            ));
        }
        Ok(())
    }
}

/// Whether `bytes` are what a file of `kind` at `path` holds; the message never quotes them.
fn check_content(kind: Kind, path: &str, bytes: &[u8]) -> Result<(), String> {
    let bad = |why: String| format!("{path}: {why}");
    match kind {
        Kind::Tokens => {
            let t: TokenBackup = serde_json::from_slice(bytes)
                .map_err(|e| bad(format!("not a token backup: {}", json_error(&e))))?;
            if t.server.trim().is_empty() || t.agent.trim().is_empty() {
                return Err(bad("a token is empty".into()));
            }
        }
        Kind::SnapshotRecord => {
            let r: Record = serde_json::from_slice(bytes)
                .map_err(|e| bad(format!("not a snapshot record: {}", json_error(&e))))?;
            let name = path
                .strip_prefix(SNAPSHOTS)
                .and_then(|p| p.strip_prefix('/'))
                .and_then(|p| p.strip_suffix(".json"))
                .unwrap_or_default();
            if r.name != name {
                return Err(bad(format!(
                    "the record is of the snapshot {:?}, not {name:?}",
                    r.name
                )));
            }
            if r.server_token.trim().is_empty() {
                return Err(bad("the record has no server token".into()));
            }
        }
        Kind::RestoreRecord => {
            serde_json::from_slice::<RestoreRecord>(bytes)
                .map_err(|e| bad(format!("not a restore record: {}", json_error(&e))))?;
        }
        Kind::SealingKey => {
            let t = std::str::from_utf8(bytes).map_err(|_| bad("not text".into()))?;
            if !(t.contains("-----BEGIN PRIVATE KEY-----")
                || t.contains("-----BEGIN RSA PRIVATE KEY-----"))
            {
                return Err(bad("not a PEM private key".into()));
            }
        }
        Kind::SealingCert => {
            let t = std::str::from_utf8(bytes).map_err(|_| bad("not text".into()))?;
            if !t.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad("not a PEM certificate".into()));
            }
        }
    }
    Ok(())
}

/// What import does with one file of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Not in `.bootstrap/` yet: written.
    New,
    /// The same there already (byte for byte, or the same tokens): left as it is.
    Same,
    /// Different there, and forced: replaced.
    Replace,
}

/// One file of the archive and what import does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub change: Change,
    /// How the file here differs from the archive's (for [`Change::Replace`]).
    pub why: Option<String>,
}

/// Why an import is refused without force: each file here that differs from the archive's,
/// with how (never the values), and a cluster name that is not the inventory's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refused {
    /// (path relative to `.bootstrap/`, how it differs).
    pub files: Vec<(String, String)>,
    /// (the archive's cluster, the inventory's).
    pub cluster: Option<(String, String)>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let mut lines = Vec::new();
        if let Some((theirs, ours)) = &self.cluster {
            lines.push(format!(
                "the archive holds the secrets of cluster {theirs:?}, and this inventory is cluster {ours:?}"
            ));
        }
        for (path, why) in &self.files {
            lines.push(format!("{path} differs from the archive's: {why}"));
        }
        f.write_str(&lines.join("\n"))
    }
}

/// How the file `old` here differs from `new` of the archive, when it matters: `None` when
/// they are the same to the tool (the same bytes, or a token backup with the same tokens).
fn differs(kind: Kind, old: &[u8], new: &[u8]) -> Option<String> {
    if old == new {
        return None;
    }
    Some(match kind {
        Kind::Tokens => {
            let parse = |b: &[u8]| serde_json::from_slice::<TokenBackup>(b).ok();
            match (parse(old), parse(new)) {
                (Some(o), Some(n)) => match (o.server != n.server, o.agent != n.agent) {
                    (false, false) => return None,
                    (true, false) => "its server token is another one".into(),
                    (false, true) => "its agent token is another one".into(),
                    (true, true) => "its server and agent tokens are other ones".into(),
                },
                _ => "the file here is not a token backup".into(),
            }
        }
        Kind::SnapshotRecord => {
            let parse = |b: &[u8]| serde_json::from_slice::<Record>(b).ok();
            match (parse(old), parse(new)) {
                (Some(o), Some(n)) if o.server_token != n.server_token => {
                    "the server token it records is another one".into()
                }
                _ => "it records another snapshot (its size, sha256 or times differ)".into(),
            }
        }
        Kind::SealingKey => {
            "it is another Sealed Secrets key (what was sealed with one does not open with the other)".into()
        }
        Kind::SealingCert => "it is another Sealed Secrets certificate".into(),
        Kind::RestoreRecord => "it records another unfinished restore".into(),
    })
}

/// What importing `archive` does to a `.bootstrap/` whose files at the archive's paths hold
/// `current` (a path that is not there is absent from it), for the inventory of cluster
/// `cluster`: every file new or the same, or differing and `force`d; else refused, naming
/// every file that differs and how. Files here that the archive does not hold are left as
/// they are.
pub fn plan_import(
    archive: &Archive,
    current: &Files,
    cluster: &str,
    force: bool,
) -> Result<Vec<Entry>, Refused> {
    let mut refused = Refused::default();
    if archive.cluster != cluster && !force {
        refused.cluster = Some((archive.cluster.clone(), cluster.to_string()));
    }
    let mut entries = Vec::new();
    for (path, new) in &archive.files {
        let Some(kind) = Kind::of(path) else {
            // Archive::parse let no such path through.
            continue;
        };
        let (change, why) = match current.get(path) {
            None => (Change::New, None),
            Some(old) => match differs(kind, old, new) {
                None => (Change::Same, None),
                Some(why) if force => (Change::Replace, Some(why)),
                Some(why) => {
                    refused.files.push((path.clone(), why));
                    continue;
                }
            },
        };
        entries.push(Entry {
            path: path.clone(),
            kind,
            change,
            why,
        });
    }
    if refused == Refused::default() {
        Ok(entries)
    } else {
        Err(refused)
    }
}

/// The files of `state_dir` an archive holds, by path relative to it, and the entries left
/// out (relative paths, directories ending in `/`). A missing `state_dir` holds nothing.
pub fn collect(state_dir: &Path) -> io::Result<(Files, Vec<String>)> {
    let mut files = BTreeMap::new();
    let mut left_out = Vec::new();
    let mut visit = |dir: &Path, prefix: &str, files: &mut Files| -> io::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut names: Vec<_> = entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else {
                left_out.push(format!("{prefix}{}", name.to_string_lossy()));
                continue;
            };
            let rel = format!("{prefix}{name}");
            let path = dir.join(name);
            // Through a symlink: the operator's own link to the file.
            let meta = std::fs::metadata(&path);
            let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
            if prefix.is_empty() && name == SNAPSHOTS && is_dir {
                continue;
            }
            match (Kind::of(&rel), meta) {
                (Some(_), Ok(m)) if m.is_file() => {
                    files.insert(rel, std::fs::read(&path)?);
                }
                _ => left_out.push(if is_dir { format!("{rel}/") } else { rel }),
            }
        }
        Ok(())
    };
    visit(state_dir, "", &mut files)?;
    visit(
        &state_dir.join(SNAPSHOTS),
        &format!("{SNAPSHOTS}/"),
        &mut files,
    )?;
    Ok((files, left_out))
}

/// The archive of `state_dir` (what `secrets export` encrypts) for cluster `cluster`, made at
/// `created`, checked as import would check it, and the entries of `state_dir` it leaves out
/// ([`collect`]); its `files` are empty when `state_dir` holds none an archive does.
pub fn archive_of(
    state_dir: &Path,
    cluster: &str,
    created: &str,
) -> Result<(Archive, Vec<String>), String> {
    let (files, left_out) =
        collect(state_dir).map_err(|e| format!("reading {}: {e}", state_dir.display()))?;
    let archive = Archive {
        cluster: cluster.to_string(),
        created: created.to_string(),
        files,
    };
    archive
        .check()
        .map_err(|e| format!("{}: {e} (import would refuse it)", state_dir.display()))?;
    Ok((archive, left_out))
}

/// What `state_dir` holds at the archive's paths (the paths with nothing there left out).
/// Import writes regular files only: a symlink or a directory at a path, or a file where a
/// directory must be, is an error, found before anything is written.
pub fn current(state_dir: &Path, archive: &Archive) -> Result<Files, String> {
    let mut out = BTreeMap::new();
    for rel in archive.files.keys() {
        let path = state_dir.join(rel);
        let mut parent = path.parent();
        while let Some(d) = parent {
            if !d.starts_with(state_dir) {
                break;
            }
            if let Ok(m) = std::fs::metadata(d) {
                if !m.is_dir() {
                    return Err(format!("{} is not a directory", d.display()));
                }
            }
            parent = d.parent();
        }
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
            Ok(m) if m.file_type().is_file() => {
                let bytes =
                    std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                out.insert(rel.clone(), bytes);
            }
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symlink"
                } else if m.is_dir() {
                    "a directory"
                } else {
                    "not a regular file"
                };
                return Err(format!(
                    "{} is {what}; import writes regular files only: move it away first",
                    path.display()
                ));
            }
        }
    }
    Ok(out)
}

/// Writes the new and replaced files of `plan` from `archive` into `state_dir`, each
/// atomically with mode 0600, the directories 0700 ([`crate::local::write_private`]); the
/// token backup last, so that an import cut short leaves the tokens as they were.
pub fn write(state_dir: &Path, archive: &Archive, plan: &[Entry]) -> io::Result<()> {
    let mut todo: Vec<&Entry> = plan.iter().filter(|e| e.change != Change::Same).collect();
    todo.sort_by_key(|e| {
        (
            e.kind == Kind::Tokens,
            e.kind == Kind::SealingKey,
            e.path.clone(),
        )
    });
    for e in todo {
        let bytes = archive
            .files
            .get(&e.path)
            .ok_or_else(|| io::Error::other(format!("{} is not in the archive", e.path)))?;
        crate::local::write_private(&state_dir.join(&e.path), bytes)?;
    }
    Ok(())
}

/// What an archive is encrypted to.
pub enum Key {
    /// A passphrase (age's scrypt recipient): anyone who knows it opens the archive.
    Passphrase(SecretString),
    /// Public keys: the holder of any one of their identities opens it.
    Recipients(Vec<Box<dyn age::Recipient + Send>>),
}

/// An age public key: `age1...` (X25519, what `age-keygen` makes) or `age1pq1...`
/// (post-quantum, `age-keygen -pq`).
pub fn parse_recipient(s: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let s = s.trim();
    if let Ok(r) = s.parse::<age::pq::Recipient>() {
        return Ok(Box::new(r));
    }
    // The classic X25519 keys are what most operators have; age 0.13 marks them deprecated
    // for new keys only, in favour of the post-quantum ones also accepted above.
    #[allow(deprecated)]
    if let Ok(r) = s.parse::<age::x25519::Recipient>() {
        return Ok(Box::new(r));
    }
    Err(format!(
        "{s:?} is not an age public key (age1..., as age-keygen prints it)"
    ))
}

/// `plain` encrypted in the age format to `key`.
pub fn encrypt(plain: &[u8], key: &Key) -> Result<Vec<u8>, String> {
    let encryptor = match key {
        Key::Passphrase(p) => age::Encryptor::with_user_passphrase(p.clone()),
        Key::Recipients(rs) => {
            age::Encryptor::with_recipients(rs.iter().map(|r| r.as_ref() as &dyn age::Recipient))
                .map_err(|e| format!("cannot encrypt to these recipients: {e}"))?
        }
    };
    let mut out = Vec::new();
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| format!("encrypting: {e}"))?;
    w.write_all(plain).map_err(|e| format!("encrypting: {e}"))?;
    w.finish().map_err(|e| format!("encrypting: {e}"))?;
    Ok(out)
}

/// What opens an archive.
pub enum Unlock {
    Passphrase(SecretString),
    Identities(Vec<Box<dyn age::Identity + Send + Sync>>),
}

/// Why an archive does not decrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Not an age file at all.
    NotAge(String),
    /// Larger than [`MAX_ARCHIVE`].
    TooLarge,
    /// Encrypted to a passphrase, and that was not it.
    WrongPassphrase,
    /// Encrypted to recipients, none of them the identities'.
    WrongIdentity,
    /// Encrypted to a passphrase with more scrypt work than this machine accepts.
    TooMuchWork(String),
    /// Its bytes were changed after it was written (or it was cut short).
    Damaged(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            OpenError::NotAge(e) => write!(f, "it is not an age-encrypted file ({e})"),
            OpenError::TooLarge => write!(f, "it is larger than {} MiB: not an archive bootstrap wrote", MAX_ARCHIVE >> 20),
            OpenError::WrongPassphrase => write!(
                f,
                "the passphrase does not open it (a wrong passphrase, or the file was changed)"
            ),
            OpenError::WrongIdentity => write!(
                f,
                "no identity given opens it: it is encrypted to other recipients (or the file was changed)"
            ),
            OpenError::TooMuchWork(e) => write!(f, "{e}"),
            OpenError::Damaged(e) => write!(
                f,
                "it is damaged or was changed after it was written: it does not decrypt ({e})"
            ),
        }
    }
}

/// Whether the age file `cipher` is encrypted to a passphrase (else to recipients).
pub fn is_passphrase(cipher: &[u8]) -> Result<bool, OpenError> {
    if cipher.len() as u64 > MAX_ARCHIVE {
        return Err(OpenError::TooLarge);
    }
    age::Decryptor::new_buffered(cipher)
        .map(|d| d.is_scrypt())
        .map_err(|e| header_error(&e))
}

fn header_error(e: &age::DecryptError) -> OpenError {
    match e {
        age::DecryptError::InvalidMac => OpenError::Damaged(e.to_string()),
        _ => OpenError::NotAge(e.to_string()),
    }
}

/// The plaintext of the age file `cipher`, read whole: every chunk's tag is checked, so a
/// changed byte anywhere is an error, and nothing of it is returned.
pub fn decrypt(cipher: &[u8], unlock: &Unlock) -> Result<Vec<u8>, OpenError> {
    if cipher.len() as u64 > MAX_ARCHIVE {
        return Err(OpenError::TooLarge);
    }
    let d = age::Decryptor::new_buffered(cipher).map_err(|e| header_error(&e))?;
    let scrypt;
    let ids: Vec<&dyn age::Identity> = match unlock {
        Unlock::Passphrase(p) => {
            scrypt = age::scrypt::Identity::new(p.clone());
            vec![&scrypt]
        }
        Unlock::Identities(ids) => ids
            .iter()
            .map(|i| i.as_ref() as &dyn age::Identity)
            .collect(),
    };
    let reader = d.decrypt(ids.into_iter()).map_err(|e| match e {
        age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => match unlock {
            Unlock::Passphrase(_) => OpenError::WrongPassphrase,
            Unlock::Identities(_) => OpenError::WrongIdentity,
        },
        age::DecryptError::ExcessiveWork { .. } => OpenError::TooMuchWork(e.to_string()),
        age::DecryptError::InvalidMac | age::DecryptError::KeyDecryptionFailed => {
            OpenError::Damaged(e.to_string())
        }
        e => OpenError::NotAge(e.to_string()),
    })?;
    let mut plain = Vec::new();
    reader
        .take(MAX_ARCHIVE + 1)
        .read_to_end(&mut plain)
        .map_err(|e| OpenError::Damaged(e.to_string()))?;
    if plain.len() as u64 > MAX_ARCHIVE {
        return Err(OpenError::TooLarge);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests;

/// Where `up` records what it last put in the bucket (`[etcd.s3] secrets_recipients`): the
/// digest of [`offsite_digest`], one line. Not part of an archive.
pub const UPLOADED_RECORD: &str = "secrets-uploaded";

/// What the off-site archive of `state_dir` would hold, for `recipients` at `place`: the
/// sha256 of its plain bytes without the time, the recipients and the place (another
/// recipient or bucket is a change too). `None` when `.bootstrap/` has nothing to archive yet,
/// or something import would refuse.
pub fn offsite_digest(
    state_dir: &Path,
    cluster: &str,
    recipients: &[String],
    place: &str,
) -> Option<String> {
    let (archive, _) = archive_of(state_dir, cluster, "").ok()?;
    if archive.files.is_empty() {
        return None;
    }
    let mut text = archive.to_bytes();
    for r in recipients {
        text.extend_from_slice(r.as_bytes());
        text.push(b'\n');
    }
    text.extend_from_slice(place.as_bytes());
    Some(crate::k3s::sha256_hex(&text))
}

/// The digest `up` recorded after its last upload.
pub fn uploaded(state_dir: &Path) -> Option<String> {
    crate::local::read_optional(&state_dir.join(UPLOADED_RECORD))
        .ok()
        .flatten()
        .map(|t| t.trim().to_string())
}
