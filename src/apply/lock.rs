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

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
/// `held <now>` and the lock, or `busy <now>`, the lock and the pids of its run still running;
/// returns non-zero unless this run holds the lock now. It runs as the prelude of the facts
/// script, which stops when it fails.
///
/// A lock past its expiry is a run that crashed, was killed or lost its link; what it started
/// on this host may still run (a `k3s server --cluster-reset`, an apt step, under their own
/// timeouts). Those carry the old run's mark (`BOOTSTRAP_RUN=<id>`): the lock is taken over
/// only once none is left, after waiting up to `wait` seconds for them.
fn acquire_script(id: &str, body: &str, ttl: u64, wait: u64) -> String {
    format!(
        r#"bootstrap_lock() {{
d={LOCK_DIR}; f={LOCK_PATH}
mkdir -p "$d" && chmod 700 "$d" || {{ echo "error cannot create $d"; return 1; }}
{MARKED_PIDS}
old=$(sed -n 's/^id=//p' "$f" 2>/dev/null | head -n1)
exp=$(sed -n 's/^expires=//p' "$f" 2>/dev/null | head -n1)
case "$exp" in ''|*[!0-9]*) exp=0;; esac
case "$old" in *[!0-9a-f]*) old=;; esac
if [ -n "$old" ] && [ "$old" != '{id}' ] && [ "$exp" -lt "$(date +%s)" ]; then
  i=0; while [ $i -lt {wait} ] && [ -n "$(marked_pids "$old")" ]; do sleep 2; i=$((i + 2)); done
fi
{EXCLUSIVE}
now=$(date +%s)
tmp="$d/.lock.$$"
{{ printf '%s' '{body}'; echo "since=$now"; echo "expires=$((now + {ttl}))"; }} > "$tmp" || {{ echo "error cannot write $tmp"; return 1; }}
if ln "$tmp" "$f" 2>/dev/null; then rm -f "$tmp"; echo acquired; return 0; fi
if grep -qx 'id={id}' "$f" 2>/dev/null; then mv -f "$tmp" "$f"; echo acquired; return 0; fi
old=$(sed -n 's/^id=//p' "$f" 2>/dev/null | head -n1)
case "$old" in *[!0-9a-f]*) old=;; esac
exp=$(sed -n 's/^expires=//p' "$f" 2>/dev/null | head -n1)
case "$exp" in ''|*[!0-9]*) exp=0;; esac
if [ "$exp" -lt "$now" ]; then
  left=; [ -z "$old" ] || left=$(marked_pids "$old")
  if [ -n "$left" ]; then rm -f "$tmp"; echo "busy $now"; cat "$f"; echo "pids=$left"; return 1; fi
  echo "expired $now"; cat "$f" 2>/dev/null; mv -f "$tmp" "$f"; return 0
fi
rm -f "$tmp"; echo "held $now"; cat "$f"; return 1
}}
bootstrap_lock; r=$?; exec 9>&-; [ $r -eq 0 ] || exit 0
"#
    )
}

/// `marked_pids ID`: the processes on the host carrying run ID's mark (see
/// [`stop_marked_cmd`]), space separated.
const MARKED_PIDS: &str = r#"marked_pids() { for m in /proc/[0-9]*; do { tr '\0' '\n' < "$m/environ"; } 2>/dev/null | grep -qx "BOOTSTRAP_RUN=$1" && printf ' %s' "${m#/proc/}"; done; }"#;

/// How long a new run waits for what an expired lock's run still runs on a host before it is
/// refused (`BOOTSTRAP_LOCK_WAIT` seconds overrides).
fn busy_wait() -> u64 {
    std::env::var("BOOTSTRAP_LOCK_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        // Within the facts read's deadline (facts::FACTS_DEADLINE), which it runs under.
        .min(120)
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

/// Renews this run's lock: prints `renewed`; `lost` and what the lock file says now (another
/// run's lock, or none) when it is no longer this run's; `expired <seconds>` when it is, but
/// had expired before this renewal came (another run could have taken it and let it go
/// meanwhile).
fn renew_script(id: &str, ttl: u64) -> String {
    exclusive(&format!(
        "f={LOCK_PATH}; if ! grep -qx 'id={id}' $f 2>/dev/null; then echo lost; cat $f 2>/dev/null; return 0; fi; now=$(date +%s); \
         exp=$(sed -n 's/^expires=//p' $f | head -n1); case \"$exp\" in ''|*[!0-9]*) exp=0;; esac; \
         if [ \"$exp\" -lt \"$now\" ]; then echo \"expired $((now - exp))\"; return 0; fi; \
         sed \"s/^expires=.*/expires=$((now + {ttl}))/\" $f > $f.renew.$$ && mv -f $f.renew.$$ $f && echo renewed"
    ))
}

/// How long one renewal may take on a server: well under a third of the TTL, so a slow or
/// stuck server never holds up the renewal of the others.
fn renew_timeout(ttl: u64) -> Duration {
    Duration::from_secs((ttl / 6).clamp(2, 20))
}

/// The run lock before it is taken: its id and the script every server runs first.
pub struct Prelude {
    id: String,
    ttl: u64,
    script: String,
    /// When the run began to read the facts (and so to take the lock).
    began: Moment,
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
        let script = acquire_script(&id, &body, ttl, busy_wait());
        Ok(Prelude {
            id,
            ttl,
            script,
            began: moment(),
        })
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

    /// Judge what the servers said: the lock is this run's on every server that answered, and
    /// those are a majority of the request's servers (so two runs that each reach a part of
    /// the cluster never both hold it), or it is refused, naming who holds it, after letting
    /// go of what was taken. Then renew it while the run lives.
    pub async fn take(self, reads: &Reads, rep: &Reporter) -> Result<Lock> {
        let mut lock = Lock {
            id: self.id.clone(),
            sessions: Vec::new(),
            renew: None,
            watch: None,
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
                "busy" => {
                    let old = Holder::parse(rest);
                    let pids = rest
                        .lines()
                        .find_map(|l| l.strip_prefix("pids="))
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    refusal.get_or_insert(format!(
                        "{name}: the lock of `bootstrap {}` by {} (pid {}) expired, but commands that run started still run there after waiting {}s (pids {pids}): it lost its link or was killed mid-step. Let them finish, or stop them (kill {pids} on {name}), then run again",
                        old.command, old.who, old.pid, busy_wait()
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
        let servers = reads.server_count().max(lock.sessions.len());
        let majority = servers / 2 + 1;
        if lock.sessions.len() < majority {
            let held = lock.sessions.len();
            lock.release().await;
            bail!(
                "the run lock was taken on {held} of {servers} servers; a run needs a majority ({majority}), so that two runs that each reach part of the cluster never both go on. Nothing was changed. Unreachable:\n  {}",
                reads.unreachable_servers().join("\n  ")
            );
        }
        for u in reads.unreachable_servers() {
            rep.warn(&format!("run lock not taken on an unreachable server: {u}"));
        }
        // Good from when the facts script took it (no later than this run began to read).
        let watch = Watch::new(lock.sessions.len(), self.began, self.ttl, majority);
        lock.watch = Some(watch.clone());
        lock.renew = Some(tokio::spawn(renew_loop(
            lock.sessions.clone(),
            renew_script(&self.id, self.ttl),
            watch,
        )));
        Ok(lock)
    }
}

/// A moment by both clocks: the monotonic one, and the wall clock, which goes on while the
/// machine sleeps.
type Moment = (Instant, SystemTime);

fn moment() -> Moment {
    (Instant::now(), SystemTime::now())
}

/// Seconds since `t` by the wall clock and by the monotonic one, whichever is more: a process
/// stopped (Ctrl-Z) or a machine asleep is seen either way.
fn since(t: Moment) -> u64 {
    let mono = t.0.elapsed().as_secs();
    let wall = SystemTime::now()
        .duration_since(t.1)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    mono.max(wall)
}

/// Whether the run still holds its lock, for the executor to look at before every step: lost
/// when a server says another run holds it, or when the lock may have expired on a majority
/// of the servers (no renewal sent to them within the TTL and answered), whatever this
/// process was doing meanwhile.
#[derive(Debug, Clone)]
pub struct Watch {
    lost: Arc<StdMutex<Option<String>>>,
    /// Per server: when the renewal last known to have succeeded was sent (the lock is good
    /// until then plus the TTL).
    renewed: Arc<StdMutex<Vec<Moment>>>,
    ttl: u64,
    majority: usize,
}

impl Watch {
    fn new(servers: usize, since: Moment, ttl: u64, majority: usize) -> Watch {
        Watch {
            lost: Arc::default(),
            renewed: Arc::new(StdMutex::new(vec![since; servers])),
            ttl,
            majority,
        }
    }

    fn lose(&self, why: String) {
        let mut l = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        l.get_or_insert(why);
    }

    fn renewed(&self, server: usize, sent: Moment) {
        let mut r = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = r.get_mut(server) {
            *t = sent;
        }
    }

    /// An error once the lock is lost: the run stops before its next step.
    pub fn check(&self) -> Result<()> {
        let fresh = self
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|t| since(**t) < self.ttl)
            .count();
        if fresh < self.majority {
            self.lose(format!(
                "the run lock was not renewed on a majority of the servers within its {}s (this process was stopped, or the servers did not answer), so another run could have taken it over",
                self.ttl
            ));
        }
        match self.lost.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(why) => bail!(
                "stopped between steps: {why}. Another run may be changing the cluster now; nothing more was done by this one. Run again once it is done"
            ),
            None => Ok(()),
        }
    }
}

/// Renews the lock on every server at once every third of the TTL, each under a short
/// timeout, and tells `watch` what each answered.
async fn renew_loop(sessions: Vec<(String, Session)>, script: String, watch: Watch) {
    let ttl = watch.ttl;
    let limit = renew_timeout(ttl);
    let cmd = Cmd::new(script).label("renew the run lock").timeout(limit);
    loop {
        tokio::time::sleep(Duration::from_secs((ttl / 3).max(1))).await;
        let sent = moment();
        let answers = futures::future::join_all(sessions.iter().map(|(_, s)| async {
            tokio::time::timeout(limit + Duration::from_secs(2), s.exec(&cmd)).await
        }))
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            let Ok(Ok(out)) = a else { continue };
            let text = out.stdout_str();
            let (word, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
            let mut words = word.split_whitespace();
            match words.next().unwrap_or("") {
                "renewed" => watch.renewed(i, sent),
                "expired" => watch.lose(format!(
                    "{}: this run's lock had expired {}s before it was renewed (this process was stopped, or could not reach the servers, for longer than the lock's {ttl}s); another run could have taken over meanwhile",
                    sessions[i].0,
                    words.next().unwrap_or("?")
                )),
                "lost" => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let holder = Holder::parse(rest);
                    let who = if holder.id.is_empty() {
                        "the lock file is gone".to_string()
                    } else {
                        format!("it is now held by {}", holder.describe(now))
                    };
                    watch.lose(format!("{}: this run's lock was taken: {who}", sessions[i].0));
                }
                _ => {}
            }
        }
    }
}

/// A lock held on the cluster's servers; release it with [`Lock::release`].
pub struct Lock {
    id: String,
    sessions: Vec<(String, Session)>,
    renew: Option<tokio::task::JoinHandle<()>>,
    watch: Option<Watch>,
}

impl Lock {
    /// What the executor looks at between steps.
    pub fn watch(&self) -> Option<Watch> {
        self.watch.clone()
    }

    /// Remove the lock files this run holds (others' are left alone), on every server at once.
    pub async fn release(mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        let cmd = release_cmd(&self.id, Duration::from_secs(20));
        futures::future::join_all(self.sessions.iter().map(|(_, s)| s.exec(&cmd))).await;
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
  if {{ tr '\0' '\n' < "$d/environ"; }} 2>/dev/null | grep -qx 'BOOTSTRAP_RUN={id}'; then pids="$pids $p"; fi
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

    /// A lock script run by `sh` as on a host, with its directory moved to `dir` and `path`
    /// first on PATH (for stand-ins); returns stdout.
    fn run_in(dir: &std::path::Path, script: &str, path: &std::path::Path) -> std::process::Child {
        let script = script.replace(LOCK_DIR, &dir.display().to_string());
        std::process::Command::new("sh")
            .args(["-c", &script])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    path.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn out(c: std::process::Child) -> String {
        String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn expires(dir: &std::path::Path) -> u64 {
        Holder::parse(&std::fs::read_to_string(dir.join("lock")).unwrap()).expires
    }

    /// The acquire, renew and release scripts, run by sh against a lock directory: taken,
    /// held against another run, renewed (its expiry moves forward), lost to nobody else,
    /// released; an expired lock taken over.
    #[test]
    fn lock_scripts_take_hold_renew_and_release_under_sh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lock-dir");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let a = "aaaa";
        let b = "bbbb";
        let take = |id: &str, ttl: u64| {
            out(run_in(
                &dir,
                &acquire_script(id, &format!("id={id}\n"), ttl, 0),
                &bin,
            ))
        };
        assert_eq!(take(a, 2), "acquired\n");
        assert!(take(b, 100).starts_with("held "), "another run is refused");
        let before = expires(&dir);
        assert!(before <= now() + 2);
        assert_eq!(out(run_in(&dir, &renew_script(a, 100), &bin)), "renewed\n");
        assert!(expires(&dir) >= before + 97, "the expiry moved forward");
        assert!(out(run_in(&dir, &renew_script(b, 100), &bin)).starts_with("lost\n"));
        let release = |id: &str| {
            out(run_in(
                &dir,
                release_cmd(id, Duration::from_secs(5)).text(),
                &bin,
            ))
        };
        release(b);
        assert!(
            dir.join("lock").exists(),
            "another run's release leaves the lock"
        );
        release(a);
        assert!(!dir.join("lock").exists());
        // Expired: taken over, and the old run's renewal then finds it lost.
        assert_eq!(take(a, 100), "acquired\n");
        let text = std::fs::read_to_string(dir.join("lock")).unwrap();
        let stale = text.replace(
            &format!("expires={}", expires(&dir)),
            &format!("expires={}", now() - 5),
        );
        std::fs::write(dir.join("lock"), stale).unwrap();
        assert!(take(b, 100).starts_with("expired "));
        assert!(out(run_in(&dir, &renew_script(a, 100), &bin)).starts_with("lost\n"));
    }

    /// Two runs inside the read-then-write of an expired lock at once (a slow `sed` stand-in
    /// holds each there for a second): the flock lets exactly one take it over; the other
    /// finds it held. Without the flock both would take it.
    #[test]
    fn an_expired_lock_is_taken_over_by_exactly_one_of_two_racing_runs() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lock-dir");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let real_sed = ["/usr/bin/sed", "/bin/sed"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap();
        let sed = bin.join("sed");
        std::fs::write(
            &sed,
            format!(
                "#!/bin/sh\ncase \"$*\" in *expires=*) sleep 1;; esac\nexec {real_sed} \"$@\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&sed, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("lock"),
            format!(
                "id=dead\nwho=ci@elsewhere\npid=1\ncommand=up\nsince=1\nexpires={}\n",
                now() - 10
            ),
        )
        .unwrap();
        let runs = ["aaaa", "bbbb"].map(|id| {
            run_in(
                &dir,
                &acquire_script(id, &format!("id={id}\n"), 100, 0),
                &bin,
            )
        });
        let said: Vec<String> = runs.into_iter().map(out).collect();
        let took = said.iter().filter(|o| o.starts_with("expired ")).count();
        assert_eq!(took, 1, "{said:?}");
        assert_eq!(
            said.iter().filter(|o| o.starts_with("held ")).count(),
            1,
            "{said:?}"
        );
    }

    /// Every lock script is valid sh (dash parses it as the hosts' /bin/sh would).
    #[test]
    fn lock_scripts_parse() {
        for script in [
            acquire_script("ab", "id=ab\n", 5, 60),
            renew_script("ab", 5),
            release_cmd("ab", Duration::from_secs(1)).text().to_string(),
        ] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
