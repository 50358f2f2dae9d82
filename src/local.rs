//! The operator's machine: the files beside the inventory (the token and sealing-key backups
//! in `.bootstrap/`, the kubeconfig). Facts read them with [`read_optional`]; only the
//! executor (src/apply) writes them, with [`write_private`].

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The directory beside the inventory that holds the run's state: the token and sealing-key
/// backups, the snapshot records, the release cache.
pub const STATE_DIR_NAME: &str = ".bootstrap";

/// Write `bytes` to `path` atomically with mode 0600: a temp file beside it, fsynced, renamed
/// over it. The directory is made private with [`private_dir`].
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir)?;
    }
    write_atomic(path, bytes, 0o600)
}

/// Creates `dir` and its missing parents 0700, and makes `dir` and every directory up to the
/// nearest `.bootstrap/` above it 0700 when they are wider (a `.bootstrap/` made by an older
/// version, or by hand with the umask's mode). Directories outside a `.bootstrap/` that exist
/// already (a `~/.kube`, the inventory's own directory) are left as they are.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let Some(top) = dir
        .ancestors()
        .position(|a| a.file_name().is_some_and(|n| n == STATE_DIR_NAME))
    else {
        return Ok(());
    };
    for d in dir.ancestors().take(top + 1) {
        let mode = std::fs::symlink_metadata(d)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically with `mode`: a temp file beside it under a random name,
/// created exclusively (so nothing planted there, a symlink included, is opened or followed),
/// fsynced, then renamed over `path`. The temp file is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (tmp, mut f) = create_temp(path, mode)?;
    let mut write = || -> io::Result<()> {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// A new file beside `path` under a random name, created exclusively with `mode` (so nothing
/// planted there, a symlink included, is opened or followed), and its path: the caller
/// renames or removes it.
pub fn create_temp(path: &Path, mode: u32) -> io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut rand = [0u8; 8];
    getrandom::fill(&mut rand).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = path.with_file_name(format!(".{name}.{}.bootstrap-tmp", hex::encode(rand)));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have taken bits the caller asked for.
    if let Err(e) = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((tmp, f))
}

/// The file `path` names, through any symlinks (at most 40, as the kernel): what a write
/// must replace so that a linked file (a `~/.kube/config` kept in a dotfiles repository) stays
/// linked.
pub fn through_links(path: &Path) -> std::path::PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(t) if t.is_absolute() => p = t,
            Ok(t) => p = p.parent().unwrap_or(Path::new("")).join(t),
            Err(_) => break,
        }
    }
    p
}

/// The text of `path`, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_in_a_0700_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/secret.txt");
        assert_eq!(read_optional(&path).unwrap(), None);
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(read_optional(&path).unwrap().as_deref(), Some("two"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["secret.txt"]);
    }

    #[test]
    fn a_linked_file_is_written_where_the_link_points() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles/kubeconfig");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "old").unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink("dotfiles/kubeconfig", &link).unwrap();
        write_private(&through_links(&link), b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn a_planted_symlink_at_the_old_temp_path_is_never_written_through() {
        // Another user of a shared directory plants the temp names the tool once used.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "mine").unwrap();
        let path = dir.path().join("lab.kubeconfig");
        std::os::unix::fs::symlink(&victim, path.with_extension("bootstrap-tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".lab.kubeconfig.bootstrap-tmp"))
            .unwrap();
        write_private(&path, b"client key").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "client key");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
