//! `log` and `alsologtostderr`, as k3s does them (`pkg/cli/cmds/log_linux.go`
//! forkIfLoggingOrReaping, called by InitLogging first thing in `server`, `agent` and every
//! `etcd-snapshot` action): with `log` set, k3s runs itself again as a child whose stdout and
//! stderr both go to that file (appended), and to stderr too with `alsologtostderr`; the parent
//! tells systemd READY at once (the child may not notify: `NOTIFY_SOCKET=`), waits for the
//! child, passes SIGTERM/SIGINT on as SIGINT, and exits with the child's code. So with `log`
//! a command's output is in the file, not on the terminal, while its exit status is kept.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::config::Config;

const REEXEC: &str = "_K3S_LOG_REEXEC_";

/// Run the rest of this process as a child logging to `cfg`'s `log` file, when it names one
/// and this is not already that child; returns only in the child (or without `log`).
pub fn init(cfg: &Config) {
    let Some(file) = cfg.get("log").filter(|f| !f.is_empty()) else {
        return;
    };
    if std::env::var_os(REEXEC).is_some() {
        return;
    }
    let also = cfg.bool("alsologtostderr");
    let out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("failed to open log file {file}: {e}");
            std::process::exit(1);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(&args)
        .env(REEXEC, "true")
        .env("NOTIFY_SOCKET", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setpgid and prctl are async-signal-safe; nothing else runs before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("failed to start the logging child: {e}");
            std::process::exit(1);
        }
    };
    let copy = |mut from: Box<dyn Read + Send>, out: Arc<Mutex<std::fs::File>>| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut f) = out.lock() {
                    let _ = f.write_all(&buf[..n]);
                }
                if also {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
            }
        })
    };
    let mut threads = Vec::new();
    if let Some(o) = child.stdout.take() {
        threads.push(copy(Box::new(o), out.clone()));
    }
    if let Some(e) = child.stderr.take() {
        threads.push(copy(Box::new(e), out.clone()));
    }
    crate::notify::ready();
    crate::common::install_signal_handlers();
    let pid = child.id() as libc::pid_t;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {
                if crate::common::sleep_or_stop(std::time::Duration::from_millis(100)) {
                    // SAFETY: signalling our own child.
                    unsafe {
                        libc::kill(pid, libc::SIGINT);
                    }
                    break child.wait().unwrap_or_else(|_| std::process::exit(1));
                }
            }
            Err(_) => std::process::exit(1),
        }
    };
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(status.code().unwrap_or(1));
}
