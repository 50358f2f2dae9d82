//! Phase `lock`: one run at a time, a lock file on every reachable server of the cluster,
//! taken in the round trip that reads the server's facts (its script runs first and stops
//! the facts script when the lock is held).
//!
//! `/var/lib/bootstrap/lock` is created by hard-linking a fully written temp
//! file (atomic, and it fails when the lock exists), holding who took it
//! (user@operator-host, pid), since when, for which command and until when.
//! A background task renews the expiry while the run lives; a lock past its
//! expiry (a crashed run) is taken over with a warning. Times are the host's
//! own clock, so operator clock skew plays no part.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::connect::Host;
use crate::facts::Reads;
use crate::k3s::Role;
use crate::report::Reporter;
use crate::ssh::{Cmd, Session};

pub const LOCK_DIR: &str = "/var/lib/bootstrap";
pub const LOCK_PATH: &str = "/var/lib/bootstrap/lock";

/// How long a lock lives without renewal (`BOOTSTRAP_LOCK_TTL` seconds overrides).
fn ttl() -> u64 {
    std::env::var("BOOTSTRAP_LOCK_TTL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(120)
}

/// What a lock file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub who: String,
    pub pid: String,
    pub command: String,
    pub since: u64,
    pub expires: u64,
}

impl Holder {
    pub fn parse(text: &str) -> Holder {
        let mut h = Holder::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "id" => h.id = v.into(),
                "who" => h.who = v.into(),
                "pid" => h.pid = v.into(),
                "command" => h.command = v.into(),
                "since" => h.since = v.parse().unwrap_or(0),
                "expires" => h.expires = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        h
    }

    pub fn describe(&self, now: u64) -> String {
        let ago = now.saturating_sub(self.since);
        format!(
            "`bootstrap {}` by {} (pid {}), since {}s ago, expires in {}s",
            self.command,
            self.who,
            self.pid,
            ago,
            self.expires.saturating_sub(now)
        )
    }
}

/// Shell words are never put in the lock text unquoted: only [A-Za-z0-9@._ -].
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

/// The acquire step as a shell function: prints `acquired`, `expired <now>` and the old lock,
/// or `held <now>` and the lock; returns non-zero unless this run holds the lock now. It runs
/// as the prelude of the facts script, which stops when it fails.
fn acquire_script(id: &str, body: &str, ttl: u64) -> String {
    format!(
        r#"bootstrap_lock() {{
d={LOCK_DIR}; f={LOCK_PATH}
mkdir -p "$d" && chmod 700 "$d" || {{ echo "error cannot create $d"; return 1; }}
{EXCLUSIVE}
now=$(date +%s)
tmp="$d/.lock.$$"
{{ printf '%s' '{body}'; echo "since=$now"; echo "expires=$((now + {ttl}))"; }} > "$tmp" || {{ echo "error cannot write $tmp"; return 1; }}
if ln "$tmp" "$f" 2>/dev/null; then rm -f "$tmp"; echo acquired; return 0; fi
if grep -qx 'id={id}' "$f" 2>/dev/null; then mv -f "$tmp" "$f"; echo acquired; return 0; fi
exp=$(sed -n 's/^expires=//p' "$f" 2>/dev/null | head -n1)
case "$exp" in ''|*[!0-9]*) exp=0;; esac
if [ "$exp" -lt "$now" ]; then
  echo "expired $now"; cat "$f" 2>/dev/null; mv -f "$tmp" "$f"; return 0
fi
rm -f "$tmp"; echo "held $now"; cat "$f"; return 1
}}
bootstrap_lock; r=$?; exec 9>&-; [ $r -eq 0 ] || exit 0
"#
    )
}

/// Every read-then-write of the lock (acquire, renew, release) runs holding `flock` on a file
/// beside it, so two runs never both see an expired lock and both take it. Waits at most 10 s.
const EXCLUSIVE: &str = r#"exec 9>"/var/lib/bootstrap/.lock.flock" && flock -w 10 9 || { echo "error cannot take /var/lib/bootstrap/.lock.flock (is flock installed?)"; return 1; }"#;

/// `body` run as a function holding the lock's flock (nothing when the directory is gone).
fn exclusive(body: &str) -> String {
    format!(
        "[ -d {LOCK_DIR} ] || exit 0; locked() {{ {EXCLUSIVE}\n{body}\n}}; locked; r=$?; exec 9>&-; exit $r"
    )
}

fn release_cmd(id: &str, timeout: Duration) -> Cmd {
    Cmd::new(exclusive(&format!(
        "grep -qx 'id={id}' {LOCK_PATH} 2>/dev/null && rm -f {LOCK_PATH}; true"
    )))
    .label("release the run lock")
    .timeout(timeout)
}

fn renew_script(id: &str, ttl: u64) -> String {
    exclusive(&format!(
        "f={LOCK_PATH}; grep -qx 'id={id}' $f 2>/dev/null || return 0; now=$(date +%s); \
         sed \"s/^expires=.*/expires=$((now + {ttl}))/\" $f > $f.renew.$$ && mv -f $f.renew.$$ $f"
    ))
}

/// The run lock before it is taken: its id and the script every server runs first.
pub struct Prelude {
    id: String,
    ttl: u64,
    script: String,
}

impl Prelude {
    pub fn new(command: &str) -> Result<Prelude> {
        let ttl = ttl();
        let mut id_bytes = [0u8; 8];
        getrandom::fill(&mut id_bytes).map_err(|e| anyhow!("random lock id: {e}"))?;
        let id = hex::encode(id_bytes);
        let body = format!(
            "id={id}\nwho={}\npid={}\ncommand={}\n",
            clean(&operator()),
            std::process::id(),
            clean(command)
        );
        let script = acquire_script(&id, &body, ttl);
        Ok(Prelude { id, ttl, script })
    }

    /// The script to run first on every server.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// The run's id (the lock's, and the mark on every command it runs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The run stopped while the facts were read, so some servers may hold this run's lock
    /// and no session is at hand: connect to each server once, quickly, and remove the lock
    /// where it is this run's. Best effort: what cannot be reached expires.
    pub async fn abandon(&self, hosts: &[Host]) {
        let cmd = release_cmd(&self.id, Duration::from_secs(10));
        let tries = hosts.iter().filter(|h| h.role == Role::Server).map(|h| {
            let target = h.dial_quick();
            let cmd = &cmd;
            async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(15),
                    Session::connect_with(&target, cmd),
                )
                .await;
            }
        });
        futures::future::join_all(tries).await;
    }

    /// Judge what the servers said: the lock is this run's on every server that answered
    /// (at least one must), or it is refused, naming who holds it, after letting go of what
    /// was taken. Then renew it while the run lives.
    pub async fn take(self, reads: &Reads, rep: &Reporter) -> Result<Lock> {
        let mut lock = Lock {
            id: self.id.clone(),
            sessions: Vec::new(),
            renew: None,
        };
        let mut refusal = None;
        for (name, session, out) in reads.preludes() {
            let (status, rest) = out.split_once('\n').unwrap_or((out.as_str(), ""));
            let mut words = status.split_whitespace();
            let word = words.next().unwrap_or("");
            let now: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            match word {
                "acquired" => lock.sessions.push((name, session)),
                "expired" => {
                    let old = Holder::parse(rest);
                    rep.warn(&format!(
                        "{name}: took over a lock left by {} which expired {}s ago (a run that crashed or was killed); its hosts are safe to converge again",
                        if old.who.is_empty() { "an unknown run".to_string() } else { format!("`bootstrap {}` by {} (pid {})", old.command, old.who, old.pid) },
                        now.saturating_sub(old.expires)
                    ));
                    lock.sessions.push((name, session));
                }
                "held" => {
                    refusal.get_or_insert(format!(
                        "the cluster is locked by another run: {} (lock {LOCK_PATH} on {name}); wait for it to finish, or if that run is gone the lock is taken over once it expires",
                        Holder::parse(rest).describe(now)
                    ));
                }
                _ => {
                    refusal.get_or_insert(format!("{name}: taking the run lock: {}", out.trim()));
                }
            }
        }
        if let Some(why) = refusal {
            lock.release().await;
            bail!("{why}");
        }
        if lock.sessions.is_empty() {
            bail!(
                "no server could be reached to take the run lock, so nothing was changed:\n  {}",
                reads.unreachable_hosts().join("\n  ")
            );
        }
        for u in reads.unreachable_servers() {
            rep.warn(&format!("run lock not taken on an unreachable server: {u}"));
        }
        // Renew while the run lives.
        let sessions = lock.sessions.clone();
        let renew = renew_script(&self.id, self.ttl);
        let ttl = self.ttl;
        lock.renew = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs((ttl / 3).max(1))).await;
                for (_, s) in &sessions {
                    let _ = s
                        .exec(&Cmd::new(renew.clone()).label("renew the run lock"))
                        .await;
                }
            }
        }));
        Ok(lock)
    }
}

/// A lock held on the cluster's servers; release it with [`Lock::release`].
pub struct Lock {
    id: String,
    sessions: Vec<(String, Session)>,
    renew: Option<tokio::task::JoinHandle<()>>,
}

impl Lock {
    /// Remove the lock files this run holds (others' are left alone).
    pub async fn release(mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        let cmd = release_cmd(&self.id, Duration::from_secs(20));
        for (_, s) in &self.sessions {
            let _ = s.exec(&cmd).await;
        }
        self.sessions.clear();
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, listened to from the start of a run: one that comes while
/// nobody waits for it is kept for the next wait.
pub(super) struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => "SIGINT",
            _ = recv(&mut self.term) => "SIGTERM",
        }
    }
}

/// The command that stops what run `id` left running on a host (an interrupted step's remote
/// command, say `apt-get`): every process marked with the run gets SIGTERM, and it waits up to
/// `wait` seconds for them to end, printing those that did not. Unmarked itself, so it does
/// not find its own pipeline.
pub(super) fn stop_marked_cmd(id: &str, wait: u64) -> Cmd {
    Cmd::new(format!(
        r#"me=$$; pids=
for d in /proc/[0-9]*; do
  p=${{d#/proc/}}; [ "$p" = "$me" ] && continue
  if tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx 'BOOTSTRAP_RUN={id}'; then pids="$pids $p"; fi
done
[ -n "$pids" ] || exit 0
kill -TERM $pids 2>/dev/null
i=0
while [ $i -lt {wait} ]; do
  left=; for p in $pids; do [ -d "/proc/$p" ] && left="$left $p"; done
  [ -n "$left" ] || {{ echo "stopped:$pids"; exit 0; }}
  sleep 1; i=$((i + 1))
done
echo "still running:$left""#
    ))
    .unmarked()
    .label("stop this run's commands")
    .timeout(Duration::from_secs(wait + 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_parses_and_describes() {
        let h = Holder::parse("id=ab\nwho=me@laptop\npid=42\ncommand=up\nsince=100\nexpires=220\n");
        assert_eq!(h.who, "me@laptop");
        let d = h.describe(110);
        assert!(d.contains("`bootstrap up` by me@laptop (pid 42)"), "{d}");
        assert!(
            d.contains("10s ago") && d.contains("expires in 110s"),
            "{d}"
        );
        assert_eq!(clean("a'b;c"), "a_b_c");
    }

    #[test]
    fn acquire_script_runs_in_sh() {
        let s = acquire_script("ab", "id=ab\n", 5);
        assert!(s.contains("ln \"$tmp\" \"$f\""));
        assert!(s.ends_with("bootstrap_lock; r=$?; exec 9>&-; [ $r -eq 0 ] || exit 0\n"));
        // Every read-then-write holds the flock.
        assert!(s.contains("flock -w 10 9"));
        assert!(renew_script("ab", 5).contains("flock -w 10 9"));
        assert!(release_cmd("ab", Duration::from_secs(1))
            .text()
            .contains("flock -w 10 9"));
    }
}
