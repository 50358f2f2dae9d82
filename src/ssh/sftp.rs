//! SFTP transfers on russh-sftp's low-level session. The high-level `SftpSession` hides the
//! raw session, and with it `posix-rename@openssh.com` (an atomic rename over an existing file;
//! plain SFTP rename refuses to replace one) and control over how many requests are in flight,
//! which is what throughput depends on.

use std::collections::BTreeMap;
use std::sync::Arc;

use russh::client::Msg;
use russh::Channel;
use russh_sftp::client::{Config as SftpConfig, RawSftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::Source;

const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSYNC: &str = "fsync@openssh.com";
const LIMITS: &str = "limits@openssh.com";
/// The most a read reserves up front from the size the server reports (which it may lie
/// about); a larger file grows the buffer as its data arrives.
const MAX_PREALLOC: u64 = 64 * 1024 * 1024;

fn prealloc(reported: u64) -> usize {
    reported.min(MAX_PREALLOC) as usize
}

/// Bytes per write or read request. OpenSSH's sftp-server accepts up to 256 KiB packets; 64 KiB
/// requests with many in flight match what OpenSSH's own client (and scp, which uses SFTP now)
/// achieves, without huge per-request buffers.
const CHUNK: u32 = 64 * 1024;
/// Requests in flight per transfer (OpenSSH's sftp uses 64).
const IN_FLIGHT: usize = 64;

pub(crate) struct Sftp {
    raw: Arc<RawSftpSession>,
    posix_rename: bool,
    fsync: bool,
    write_len: u32,
    read_len: u32,
}

type SftpResult<T> = Result<T, String>;

/// A finished read request: offset, requested length, data (`None` at EOF).
type ReadDone = (u64, u32, SftpResult<Option<Vec<u8>>>);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn status_ok(p: Packet) -> SftpResult<()> {
    match p {
        Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        Packet::Status(s) => Err(format!("{}: {}", s.status_code, s.error_message)),
        _ => Err("unexpected SFTP reply".into()),
    }
}

/// SSH string encoding: u32 length, bytes.
fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

impl Sftp {
    /// Starts the SFTP subsystem on `channel`, a session channel the caller opened.
    pub(crate) async fn open(channel: Channel<Msg>, timeout_secs: u64) -> SftpResult<Sftp> {
        channel.request_subsystem(true, "sftp").await.map_err(err)?;
        let cfg = SftpConfig {
            max_packet_len: 512 * 1024,
            max_concurrent_reads: IN_FLIGHT,
            max_concurrent_writes: IN_FLIGHT,
            max_write_packet_len: CHUNK + 1024,
            request_timeout_secs: timeout_secs,
        };
        let mut raw = RawSftpSession::new_with_config(channel.into_stream(), cfg);
        let version = raw.init().await.map_err(err)?;
        let has = |name: &str| version.extensions.contains_key(name);
        let mut write_len = CHUNK;
        let mut read_len = CHUNK;
        if has(LIMITS) {
            if let Ok(l) = raw.limits().await {
                // Zero means "no limit" in the extension.
                if l.max_write_len > 0 {
                    write_len = write_len.min(l.max_write_len.min(u64::from(u32::MAX)) as u32);
                }
                if l.max_read_len > 0 {
                    read_len = read_len.min(l.max_read_len.min(u64::from(u32::MAX)) as u32);
                }
                raw.set_limits(russh_sftp::client::rawsession::Limits::from(l));
            }
        }
        Ok(Sftp {
            posix_rename: has(POSIX_RENAME),
            fsync: has(FSYNC),
            raw: Arc::new(raw),
            write_len: write_len.max(1024),
            read_len: read_len.max(1024),
        })
    }

    pub(crate) fn close(&self) {
        let _ = self.raw.close_session();
    }

    pub(crate) fn can_fsync(&self) -> bool {
        self.fsync
    }

    /// The login user's home: the server's starting directory.
    pub(crate) async fn home(&self) -> SftpResult<String> {
        let name = self.raw.realpath(".").await.map_err(err)?;
        name.files
            .first()
            .map(|f| f.filename.clone())
            .ok_or_else(|| "no home directory".to_string())
    }

    pub(crate) async fn mkdir_private(&self, path: &str) -> SftpResult<()> {
        let attrs = FileAttributes {
            permissions: Some(0o700),
            ..FileAttributes::empty()
        };
        self.raw.mkdir(path, attrs).await.map(|_| ()).map_err(err)
    }

    pub(crate) async fn remove(&self, path: &str) -> SftpResult<()> {
        self.raw.remove(path).await.map(|_| ()).map_err(err)
    }

    pub(crate) async fn rmdir(&self, path: &str) -> SftpResult<()> {
        self.raw.rmdir(path).await.map(|_| ()).map_err(err)
    }

    /// Creates `path` (which must not exist), sets mode and owner before any data is written,
    /// streams the data with many writes in flight, and fsyncs it when the server can.
    pub(crate) async fn write_new(
        &self,
        path: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
        source: Source<'_>,
    ) -> SftpResult<()> {
        let create = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        let handle = self
            .raw
            .open(
                path,
                OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                create,
            )
            .await
            .map_err(err)?
            .handle;
        let res = self.fill(&handle, mode, owner, source).await;
        let closed = self
            .raw
            .close(handle.as_str())
            .await
            .map(|_| ())
            .map_err(err);
        res.and(closed)
    }

    async fn fill(
        &self,
        handle: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
        source: Source<'_>,
    ) -> SftpResult<()> {
        // The server applies its umask at open; set the exact mode (and owner) now, while the
        // file is still empty.
        let attrs = FileAttributes {
            permissions: Some(mode),
            uid: owner.map(|o| o.0),
            gid: owner.map(|o| o.1),
            ..FileAttributes::empty()
        };
        self.raw.fsetstat(handle, attrs).await.map_err(err)?;

        let chunk = self.write_len as usize;
        let mut tasks: JoinSet<SftpResult<()>> = JoinSet::new();
        let mut offset = 0u64;
        let send = |tasks: &mut JoinSet<SftpResult<()>>, offset: u64, data: Vec<u8>| {
            let raw = self.raw.clone();
            let handle = handle.to_string();
            tasks.spawn(async move {
                raw.write(handle, offset, data)
                    .await
                    .map(|_| ())
                    .map_err(err)
            });
        };
        match source {
            Source::Bytes(bytes) => {
                for piece in bytes.chunks(chunk) {
                    if tasks.len() >= IN_FLIGHT {
                        join_one(&mut tasks).await?;
                    }
                    send(&mut tasks, offset, piece.to_vec());
                    offset += piece.len() as u64;
                }
            }
            Source::Path(p) => {
                let mut f = tokio::fs::File::open(p)
                    .await
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                loop {
                    let mut buf = vec![0u8; chunk];
                    let mut filled = 0;
                    while filled < chunk {
                        let n = f
                            .read(&mut buf[filled..])
                            .await
                            .map_err(|e| format!("{}: {e}", p.display()))?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                    }
                    if filled == 0 {
                        break;
                    }
                    buf.truncate(filled);
                    if tasks.len() >= IN_FLIGHT {
                        join_one(&mut tasks).await?;
                    }
                    send(&mut tasks, offset, buf);
                    offset += filled as u64;
                    if filled < chunk {
                        break;
                    }
                }
            }
        }
        while !tasks.is_empty() {
            join_one(&mut tasks).await?;
        }
        if self.fsync {
            let mut data = Vec::new();
            put_string(&mut data, handle);
            status_ok(self.raw.extended(FSYNC, data).await.map_err(err)?)?;
        }
        Ok(())
    }

    /// Renames `from` over `to` atomically (posix-rename). Without the extension, the target is
    /// removed first: plain SFTP rename refuses to replace a file.
    pub(crate) async fn rename_over(&self, from: &str, to: &str) -> SftpResult<()> {
        if self.posix_rename {
            let mut data = Vec::new();
            put_string(&mut data, from);
            put_string(&mut data, to);
            return status_ok(self.raw.extended(POSIX_RENAME, data).await.map_err(err)?);
        }
        let _ = self.raw.remove(to).await;
        self.raw.rename(from, to).await.map(|_| ()).map_err(err)
    }

    /// Reads a whole file with many reads in flight: at most `limit` bytes, and no more than
    /// the size the server gave when it was opened (a file that grows while it is read, or a
    /// server that keeps sending, is an error, not a growing buffer).
    pub(crate) async fn read_all(&self, path: &str, limit: u64) -> SftpResult<Vec<u8>> {
        let handle = self
            .raw
            .open(path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(err)?
            .handle;
        let res = self.read_handle(&handle, limit).await;
        let _ = self.raw.close(handle.as_str()).await;
        res
    }

    async fn read_handle(&self, handle: &str, limit: u64) -> SftpResult<Vec<u8>> {
        let size = self
            .raw
            .fstat(handle)
            .await
            .map_err(err)?
            .attrs
            .size
            .unwrap_or(0);
        if size > limit {
            return Err(format!(
                "it is {size} bytes, more than the {limit} expected; not read"
            ));
        }
        let len = self.read_len;
        let mut pieces: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut eof_at: Option<u64> = None;
        let mut tasks: JoinSet<ReadDone> = JoinSet::new();
        let spawn = |tasks: &mut JoinSet<_>, offset: u64, want: u32| {
            let raw = self.raw.clone();
            let handle = handle.to_string();
            tasks.spawn(async move {
                let r = match raw.read(handle, offset, want).await {
                    Ok(d) if d.data.is_empty() => Ok(None),
                    Ok(d) => Ok(Some(d.data)),
                    Err(russh_sftp::client::error::Error::Status(s))
                        if s.status_code == StatusCode::Eof =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(err(e)),
                };
                (offset, want, r)
            });
        };
        let mut next = 0u64;
        // Read the size the file had, in parallel; then keep reading sequentially until EOF, in
        // case it grew.
        loop {
            while tasks.len() < IN_FLIGHT && next < size && eof_at.is_none_or(|e| next < e) {
                let want = len.min((size - next).min(u64::from(len)) as u32);
                spawn(&mut tasks, next, want);
                next += u64::from(want);
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (offset, want, r) = joined.map_err(err)?;
            match r? {
                None => eof_at = Some(eof_at.map_or(offset, |e| e.min(offset))),
                Some(data) => {
                    let got = data.len() as u32;
                    if got < want {
                        // A short read: ask for the rest of that range.
                        spawn(&mut tasks, offset + u64::from(got), want - got);
                    }
                    pieces.insert(offset, data);
                }
            }
        }
        let mut out = Vec::with_capacity(prealloc(size));
        for (offset, data) in pieces {
            if eof_at.is_some_and(|e| offset >= e) {
                break;
            }
            if offset != out.len() as u64 {
                return Err(format!("gap in the data read at offset {offset}"));
            }
            out.extend_from_slice(&data);
        }
        if eof_at.is_none() {
            // Past the size it had: only EOF is right.
            match self.raw.read(handle, out.len() as u64, len).await {
                Ok(d) if d.data.is_empty() => {}
                Ok(_) => {
                    return Err(format!(
                        "it grew past the {size} bytes it had when opened while it was read"
                    ))
                }
                Err(russh_sftp::client::error::Error::Status(s))
                    if s.status_code == StatusCode::Eof => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(out)
    }
}

async fn join_one(tasks: &mut JoinSet<SftpResult<()>>) -> SftpResult<()> {
    match tasks.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(err(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod prealloc_tests {
    use super::*;

    #[test]
    fn a_reported_size_does_not_decide_the_allocation() {
        assert_eq!(prealloc(10), 10);
        assert_eq!(prealloc(u64::MAX), MAX_PREALLOC as usize);
    }
}
