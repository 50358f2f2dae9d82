//! Small helpers shared by the lab modules: running commands, locks, process identity.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A PATH that works on the host and inside the Debian nodes, whatever the caller had.
pub const SANE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; fails with its stderr when it exits non-zero.
pub fn run(mut c: impl std::borrow::BorrowMut<Command>) -> Result<String> {
    let c = c.borrow_mut();
    let what = describe(c);
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{what}`"))?;
    check(&what, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn check(what: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Runs `program args`; shorthand for the many `ip`/`mount` calls.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    run(&mut cmd(program, args))
}

pub fn write_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents)?;
    // `mode` at open is filtered by the umask and ignored for existing files.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Mounts an overlay of `lower` (read-only) and `upper` at `merged`.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<()> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    sh(
        "mount",
        &[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &opts,
            &merged.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// An exclusive `flock`, released when dropped (or when the process dies).
pub struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    fn open(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open lock {}", path.display()))
    }

    pub fn acquire(path: &Path) -> Result<FileLock> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = Self::open(path)?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(FileLock(f))
    }

    /// The lock if nobody holds it now, `None` if someone does.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let f = Self::open(path)?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        Ok(Some(FileLock(f)))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    use std::io::Read;
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex(&buf))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        use std::io::Read;
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), and
/// whether it is a zombie. Together with the PID it names one process even after PID reuse.
pub fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// A process we started, named by PID and start time so a reused PID is never signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcRef {
    pub fn of(pid: u32) -> Result<ProcRef> {
        let pid = pid as i32;
        let (start_time, _) =
            proc_stat(pid).with_context(|| format!("process {pid} vanished right after start"))?;
        Ok(ProcRef { pid, start_time })
    }

    pub fn alive(&self) -> bool {
        // Reap it if it is our own child, so it does not linger as a zombie.
        // SAFETY: waitpid with WNOHANG on a single PID; ECHILD when not our child.
        unsafe {
            libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG);
        }
        matches!(proc_stat(self.pid), Some((t, false)) if t == self.start_time)
    }

    pub fn signal(&self, sig: i32) {
        if self.alive() {
            // SAFETY: kill(2) on a PID whose identity we just checked.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }
}

/// Sends SIGTERM to every process, waits up to `grace` for all to exit, then SIGKILLs the rest.
pub fn terminate_all(procs: &[ProcRef], grace: Duration) {
    for p in procs {
        p.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while procs.iter().any(|p| p.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in procs {
        p.signal(libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while procs.iter().any(|p| p.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `program` can be found on the sane PATH.
pub fn have(program: &str) -> bool {
    SANE_PATH
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_identified() {
        let me = ProcRef::of(std::process::id()).unwrap();
        assert!(me.alive());
        let other = ProcRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
