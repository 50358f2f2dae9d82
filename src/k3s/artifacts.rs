//! The k3s binary (and air-gap images): release URLs, the sha256 check against
//! the release's `sha256sum-<arch>.txt`, the host-side download script and the
//! operator-side cache for uploads. Nothing replaces `/usr/local/bin/k3s`
//! before its hash matched.

use std::path::{Path, PathBuf};

use crate::ssh::quote::sh_quote;

pub const DEFAULT_MIRROR: &str = "https://github.com/k3s-io/k3s/releases/download";

/// `v1.36.3+k3s1` → `v1.36.3%2Bk3s1`, as release URLs need it.
pub fn version_urlsafe(version: &str) -> String {
    version.replace('+', "%2B")
}

pub fn release_url(mirror: &str, version: &str, file: &str) -> String {
    format!(
        "{}/{}/{}",
        mirror.trim_end_matches('/'),
        version_urlsafe(version),
        file
    )
}

/// The hash the sums file gives for `file`, if any.
pub fn expected_sha256(sums: &str, file: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let hash = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        (name == file && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}

/// Exit code of [`download_script`] when the hash does not match.
pub const EXIT_MISMATCH: u32 = 42;

/// Shell script that downloads release file `file` of `version` from `mirror`
/// on the host, checks it against the release sums and only then moves it to
/// `dest` (mode `mode`, root-owned). A mismatch exits [`EXIT_MISMATCH`] and
/// leaves whatever was at `dest` alone.
pub fn download_script(
    mirror: &str,
    version: &str,
    arch: &str,
    file: &str,
    dest: &str,
    mode: u32,
    pin: Option<&str>,
) -> String {
    let sums_url = release_url(mirror, version, &format!("sha256sum-{arch}.txt"));
    let file_url = release_url(mirror, version, file);
    // A hash pinned in the inventory wins over the mirror's sums file.
    let (want, source) = match pin {
        Some(p) => (
            format!("want={}", sh_quote(p)),
            "the inventory pins",
        ),
        None => (
            format!(
                "curl -fsSL --retry 3 --connect-timeout 10 -o \"$tmp/sums\" {sums}\n\
                 want=$(awk -v f={f} '$2 == f || $2 == \"*\" f {{print $1}}' \"$tmp/sums\" | head -n1)\n\
                 [ -n \"$want\" ] || {{ echo \"{file} is not listed in sha256sum-{arch}.txt of {version}\" >&2; exit {code}; }}",
                sums = sh_quote(&sums_url),
                f = sh_quote(file),
                code = EXIT_MISMATCH,
            ),
            "the release lists",
        ),
    };
    let dir = dest
        .rsplit_once('/')
        .map(|(d, _)| d)
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    format!(
        r#"set -eu
mkdir -p {dir}
tmp=$(mktemp -d {dir}/.bootstrap-download.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
{want}
curl -fsSL --retry 3 --connect-timeout 10 -o "$tmp/file" {url}
got=$(sha256sum "$tmp/file" | cut -d' ' -f1)
if [ "$want" != "$got" ]; then
  echo "sha256 of the downloaded {file} is $got but {source} $want; refusing to install it" >&2
  exit {code}
fi
chmod {mode:o} "$tmp/file"
chown root:root "$tmp/file"
mv -f "$tmp/file" {dest}
"#,
        dir = sh_quote(dir),
        want = want,
        source = source,
        url = sh_quote(&file_url),
        file = sh_quote(file),
        dest = sh_quote(dest),
        code = EXIT_MISMATCH,
    )
}

/// The air-gap images tarball of a release for `arch`.
pub fn airgap_images_file(arch: &str) -> String {
    format!("k3s-airgap-images-{arch}.tar.gz")
}

/// Script that creates the kubectl/crictl/ctr links install.sh creates.
pub fn links_script(links: &[&str]) -> String {
    let mut s = String::from("set -eu\n");
    for l in links {
        // Never over something that appeared since the facts were read (install.sh:785).
        let p = sh_quote(&format!("/usr/local/bin/{l}"));
        s.push_str(&format!("[ -e {p} ] || [ -L {p} ] || ln -s k3s {p}\n"));
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("could not download {url} into the cache: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{file} is not listed in {sums}")]
    NotListed { file: String, sums: PathBuf },
    #[error("sha256 of {path} is {got} but {want} is expected (the release sums, or the inventory's [install.sha256] pin); delete it and run again to fetch it anew")]
    Mismatch {
        path: PathBuf,
        got: String,
        want: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The operator-side cache for `source = "upload"`: `<dir>/<version>/<file>`.
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn path(&self, version: &str, file: &str) -> PathBuf {
        self.dir.join(version).join(file)
    }

    /// The release's sha256 of `file`, from the cached sums file (fetched
    /// from `mirror` the first time).
    pub fn expected(
        &self,
        mirror: &str,
        version: &str,
        arch: &str,
        file: &str,
        pin: Option<&str>,
    ) -> Result<String, CacheError> {
        if let Some(p) = pin {
            return Ok(p.to_string());
        }
        let sums_name = format!("sha256sum-{arch}.txt");
        let sums_path = self.path(version, &sums_name);
        fetch_if_missing(&sums_path, &release_url(mirror, version, &sums_name))?;
        let sums = read(&sums_path)?;
        expected_sha256(&String::from_utf8_lossy(&sums), file).ok_or_else(|| {
            CacheError::NotListed {
                file: file.to_string(),
                sums: sums_path,
            }
        })
    }

    /// Make sure `file` of `version` is in the cache (fetching it with curl
    /// from `mirror` when missing) and matches the release sums. Returns its
    /// bytes. An operator in an air-gapped site can put both files there by hand.
    pub fn verified(
        &self,
        mirror: &str,
        version: &str,
        arch: &str,
        file: &str,
        pin: Option<&str>,
    ) -> Result<(PathBuf, String), CacheError> {
        // Hosts are prepared side by side: one fetches and hashes a file,
        // the others wait for it and reuse the result (keyed by size and
        // mtime, so a file changed since is checked again).
        static VERIFIED: std::sync::Mutex<Vec<(PathBuf, u64, std::time::SystemTime, String)>> =
            std::sync::Mutex::new(Vec::new());
        let mut verified = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
        let want = self.expected(mirror, version, arch, file, pin)?;
        let path = self.path(version, file);
        fetch_if_missing(&path, &release_url(mirror, version, file))?;
        let meta = std::fs::metadata(&path).map_err(|source| CacheError::Io {
            path: path.clone(),
            source,
        })?;
        let (len, mtime) = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        let known = verified
            .iter()
            .find(|(p, l, m, _)| *p == path && *l == len && *m == mtime)
            .map(|(_, _, _, h)| h.clone());
        let got = match known {
            Some(h) => h,
            None => {
                let h = sha256_file(&path)?;
                verified.retain(|(p, _, _, _)| *p != path);
                verified.push((path.clone(), len, mtime, h.clone()));
                h
            }
        };
        if got != want {
            return Err(CacheError::Mismatch { path, got, want });
        }
        Ok((path, want))
    }
}

/// The sha256 of a file, read in chunks (release files are large).
fn sha256_file(path: &Path) -> Result<String, CacheError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Script that checks the uploaded `tmp` against the release hash `want` on
/// the host and only then moves it to `dest`; a mismatch removes `tmp`,
/// exits [`EXIT_MISMATCH`] and leaves `dest` alone.
pub fn verify_and_move_script(tmp: &str, dest: &str, want: &str) -> String {
    format!(
        r#"set -eu
got=$(sha256sum {tmp} | cut -d' ' -f1)
if [ "$got" != {want} ]; then
  rm -f {tmp}
  echo "sha256 of the uploaded file is $got but the release lists {want}; refusing to install it" >&2
  exit {code}
fi
mv -f {tmp} {dest}
"#,
        tmp = sh_quote(tmp),
        dest = sh_quote(dest),
        want = sh_quote(want),
        code = EXIT_MISMATCH,
    )
}

fn read(path: &Path) -> Result<Vec<u8>, CacheError> {
    std::fs::read(path).map_err(|source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Downloads `url` into the cache as `path`, through a new file under a random name (created
/// exclusively, so nothing planted in a shared cache directory is followed), renamed into
/// place once complete.
fn fetch_if_missing(path: &Path, url: &str) -> Result<(), CacheError> {
    if path.is_file() {
        return Ok(());
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CacheError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::local::private_dir(dir).map_err(io(dir))?;
    let (tmp, mut file) = crate::local::create_temp(path, 0o644).map_err(io(dir))?;
    let failed = |reason: String| {
        let _ = std::fs::remove_file(&tmp);
        CacheError::Fetch {
            url: url.to_string(),
            reason,
        }
    };
    // Three attempts, each into the emptied file (curl's own --retry cannot rewind stdout).
    let mut last: Option<String> = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        use std::io::Seek;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .map_err(|e| failed(format!("cannot empty {}: {e}", tmp.display())))?;
        let out = file
            .try_clone()
            .and_then(|f| {
                std::process::Command::new("curl")
                    .args(["-fsSL", "--connect-timeout", "10"])
                    .arg(url)
                    .stdout(f)
                    .stderr(std::process::Stdio::piped())
                    .output()
            })
            .map_err(|e| failed(format!("cannot run curl: {e}")))?;
        if out.status.success() {
            last = None;
            break;
        }
        last = Some(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        // 22: the server answered with an error status; trying again will not change it.
        if out.status.code() == Some(22) {
            break;
        }
    }
    if let Some(reason) = last {
        return Err(failed(reason));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_the_plus() {
        assert_eq!(
            release_url("https://m.example/dl/", "v1.36.3+k3s1", "k3s"),
            "https://m.example/dl/v1.36.3%2Bk3s1/k3s"
        );
    }

    #[test]
    fn sums_lookup() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let sums = format!("{a}  k3s\n{b}  k3s-airgap-images-amd64.tar.gz\nbroken\n");
        assert_eq!(expected_sha256(&sums, "k3s"), Some(a));
        assert_eq!(
            expected_sha256(&sums, "k3s-airgap-images-amd64.tar.gz"),
            Some("b".repeat(64))
        );
        assert_eq!(expected_sha256(&sums, "k3s-arm64"), None);
    }

    #[test]
    fn download_script_checks_before_moving() {
        let s = download_script(
            "http://10.0.0.1:8080",
            "v1.36.3+k3s1",
            "amd64",
            "k3s",
            "/usr/local/bin/k3s",
            0o755,
            None,
        );
        assert!(s.contains("chmod 755"));
        assert!(s.contains("mktemp -d /usr/local/bin/.bootstrap-download"));
        let check = s.find("if [ \"$want\" != \"$got\" ]").unwrap();
        let mv = s.find("mv -f").unwrap();
        assert!(check < mv);
        assert!(s.contains("http://10.0.0.1:8080/v1.36.3%2Bk3s1/sha256sum-amd64.txt"));
        // A pinned hash: no sums file, the pin is what the file must match.
        let pin = "c".repeat(64);
        let s = download_script(
            "http://10.0.0.1:8080",
            "v1.36.3+k3s1",
            "amd64",
            "k3s",
            "/usr/local/bin/k3s",
            0o755,
            Some(&pin),
        );
        assert!(s.contains(&format!("want={pin}")), "{s}");
        assert!(!s.contains("sha256sum-amd64.txt"), "{s}");
        assert!(s.contains("the inventory pins"), "{s}");
    }

    /// Review 3, L4: the cache makes `.bootstrap/` private (0700, also when it exists wider),
    /// and downloads through a new randomly named file, so a link planted in the cache (at the
    /// fixed `.k3s.part` name used before) redirects nothing; a failed download leaves nothing.
    #[test]
    fn the_cache_is_private_and_its_downloads_follow_no_planted_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(crate::local::STATE_DIR_NAME);
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache_dir = state.join("cache").join("v1.36.3+k3s1");
        std::fs::create_dir_all(&cache_dir).unwrap();
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, cache_dir.join(".k3s.part")).unwrap();
        let source = dir.path().join("k3s-release");
        std::fs::write(&source, "the binary").unwrap();
        let dest = cache_dir.join("k3s");
        fetch_if_missing(&dest, &format!("file://{}", source.display())).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "the binary");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        for d in [&state, &state.join("cache"), &cache_dir] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let err = fetch_if_missing(
            &cache_dir.join("missing"),
            &format!("file://{}", dir.path().join("nothing").display()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("curl"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("bootstrap-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn cache_refuses_a_tampered_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache {
            dir: dir.path().to_path_buf(),
        };
        let v = "v1.36.3+k3s1";
        std::fs::create_dir_all(dir.path().join(v)).unwrap();
        std::fs::write(cache.path(v, "k3s"), b"good").unwrap();
        let good = crate::k3s::sha256_hex(b"good");
        std::fs::write(
            cache.path(v, "sha256sum-amd64.txt"),
            format!("{good}  k3s\n"),
        )
        .unwrap();
        let (path, want) = cache
            .verified("http://unused", v, "amd64", "k3s", None)
            .unwrap();
        assert_eq!(path, cache.path(v, "k3s"));
        assert_eq!(want, good);
        // A different size: the check must not trust what it verified before.
        std::fs::write(cache.path(v, "k3s"), b"evil!").unwrap();
        let err = cache
            .verified("http://unused", v, "amd64", "k3s", None)
            .unwrap_err();
        assert!(err.to_string().contains("is expected"), "{err}");
        // A pin wins over the sums file, which here would accept the file.
        std::fs::write(cache.path(v, "k3s"), b"good").unwrap();
        let pin = crate::k3s::sha256_hex(b"pinned");
        assert!(cache
            .verified("http://unused", v, "amd64", "k3s", Some(&pin))
            .is_err());
    }
}
