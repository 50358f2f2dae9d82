//! The lab's HTTP mirror: a tiny static file server standing in for the k3s release downloads
//! and serving the lab's Debian package repository (repo.rs, under `/debian/`), and the code
//! that lays out a release on it.

use super::util::{cmd, run, sha256_file, write_mode};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Decodes `%XX` escapes in a URL path; `None` for malformed escapes or non-UTF-8 results.
/// `+` stays `+`: only query strings use it for spaces.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Maps a request target to a file under `root`, refusing anything that climbs out of it.
pub fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?;
    let decoded = percent_decode(path)?;
    let mut out = root.to_path_buf();
    for c in Path::new(&decoded).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn respond_status(stream: &mut TcpStream, code: &str, head_only: bool) -> std::io::Result<()> {
    let body = format!("{code}\n");
    write!(
        stream,
        "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    Ok(())
}

fn handle(root: &Path, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let result = respond(root, &mut stream, &mut reader);
    // Closed gracefully: apt pipelines its requests, and closing a socket with requests still
    // unread resets the connection, which can cut the response before apt has read it. Told
    // `Connection: close`, apt sends the rest again on a new connection.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut sink = [0u8; 4096];
    while std::time::Instant::now() < deadline && matches!(reader.read(&mut sink), Ok(n) if n > 0) {
    }
    result
}

fn respond(
    root: &Path,
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<()> {
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers are read and ignored: every response closes the connection.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond_status(stream, "405 Method Not Allowed", false);
    }
    let file = resolve(root, target).and_then(|p| {
        let f = std::fs::File::open(&p).ok()?;
        let meta = f.metadata().ok()?;
        meta.is_file().then_some((f, meta.len()))
    });
    let Some((mut f, len)) = file else {
        return respond_status(stream, "404 Not Found", head_only);
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )?;
    if !head_only {
        // Streams in chunks: the double is tens of MB and airgap tarballs can be large.
        std::io::copy(&mut (&mut f).take(len), stream)?;
    }
    stream.flush()
}

/// Serves `root` on `addr` forever, one thread per connection.
pub fn serve(root: &Path, addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("mirror: serving {} on http://{addr}", root.display());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = handle(&root, stream) {
                eprintln!("mirror: {e}");
            }
        });
    }
    Ok(())
}

/// Fake image names listed in the release's images file and packed into the airgap tarballs.
const FAKE_IMAGES: &[&str] = &[
    "docker.io/rancher/mirrored-pause:3.6",
    "docker.io/rancher/mirrored-coredns-coredns:1.12.1",
    "docker.io/rancher/local-path-provisioner:v0.0.31",
    "docker.io/rancher/mirrored-metrics-server:v0.7.2",
    "docker.io/rancher/klipper-helm:v0.9.5-build20250306",
    "docker.io/rancher/mirrored-library-traefik:3.3.6",
];

/// Lays out one k3s release under `mirror_dir/<version>/` the way GitHub releases name files.
pub fn publish(mirror_dir: &Path, version: &str, k3s_binary: &Path) -> Result<()> {
    let dir = mirror_dir.join(version);
    std::fs::create_dir_all(&dir)?;
    let k3s = dir.join("k3s");
    let tmp = dir.join(".k3s.tmp");
    std::fs::copy(k3s_binary, &tmp)
        .with_context(|| format!("cannot copy {}", k3s_binary.display()))?;
    write_mode(&tmp, &std::fs::read(&tmp)?, 0o755)?;
    std::fs::rename(&tmp, &k3s)?;

    let images: String = FAKE_IMAGES.iter().map(|i| format!("{i}\n")).collect();
    std::fs::write(dir.join("k3s-images.txt"), &images)?;
    // The tarball holds an index of the images; the double only needs a real tar to import.
    let staging = dir.join(".airgap");
    std::fs::create_dir_all(&staging)?;
    std::fs::write(staging.join("images.txt"), &images)?;
    std::fs::write(
        staging.join("manifest.json"),
        serde_json::to_string(
            &FAKE_IMAGES
                .iter()
                .map(|i| serde_json::json!({"RepoTags": [i]}))
                .collect::<Vec<_>>(),
        )?,
    )?;
    let st = staging.to_string_lossy().into_owned();
    for (name, flag) in [
        ("k3s-airgap-images-amd64.tar", "-cf"),
        ("k3s-airgap-images-amd64.tar.gz", "-czf"),
    ] {
        let out = dir.join(name).to_string_lossy().into_owned();
        run(cmd(
            "tar",
            &[
                "--owner=0",
                "--group=0",
                flag,
                &out,
                "-C",
                &st,
                "images.txt",
                "manifest.json",
            ],
        ))?;
    }
    std::fs::remove_dir_all(&staging)?;

    let mut sums = String::new();
    for name in [
        "k3s",
        "k3s-airgap-images-amd64.tar",
        "k3s-airgap-images-amd64.tar.gz",
    ] {
        sums.push_str(&format!("{}  {name}\n", sha256_file(&dir.join(name))?));
    }
    std::fs::write(dir.join("sha256sum-amd64.txt"), sums)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("/v1.36.3%2Bk3s1/k3s").unwrap(),
            "/v1.36.3+k3s1/k3s"
        );
        assert_eq!(percent_decode("/a+b%20c").unwrap(), "/a+b c");
        assert_eq!(percent_decode("%2b%2F").unwrap(), "+/");
        assert!(percent_decode("/bad%2").is_none());
        assert!(percent_decode("/bad%zz").is_none());
        assert!(percent_decode("%ff").is_none());
    }

    #[test]
    fn resolve_stays_under_root() {
        let root = Path::new("/m");
        assert_eq!(
            resolve(root, "/v1.36.3%2Bk3s1/k3s?x=1").unwrap(),
            Path::new("/m/v1.36.3+k3s1/k3s")
        );
        assert!(resolve(root, "/../etc/passwd").is_none());
        assert!(resolve(root, "/a/%2e%2e/%2e%2e/x").is_none());
        assert_eq!(resolve(root, "/").unwrap(), Path::new("/m"));
    }

    #[test]
    fn serves_files_with_get_and_head() {
        let dir = std::env::temp_dir().join(format!("lab-mirror-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("v1+k")).unwrap();
        std::fs::write(dir.join("v1+k/f"), b"hello").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let root = dir.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let _ = handle(&root, s);
            }
        });
        let get = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let r = get("GET /v1%2Bk/f HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 5\r\n"));
        assert!(r.ends_with("\r\n\r\nhello"));
        let r = get("HEAD /v1+k/f HTTP/1.1\r\n\r\n");
        assert!(
            r.contains("Content-Length: 5\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        assert!(get("GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("GET /v1+k HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /v1+k/f HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
