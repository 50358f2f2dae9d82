//! What the operator sees: one progress line per host with its current step
//! (indicatif on a terminal, plain lines otherwise), JSON events for CI, and a
//! summary table. Every string goes through [`clean`] first: the secret redactor, then the
//! control characters a host, a pod or a chart could use to rewrite the operator's terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::ssh::redact::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// One host's line in the summary.
#[derive(Debug, Clone, Default)]
pub struct HostSummary {
    pub role: String,
    pub changes: Vec<String>,
    pub status: Option<Result<(), String>>,
    pub started: Option<Instant>,
    pub elapsed: Duration,
}

impl HostSummary {
    /// The summary's word for how the host ended: `unchanged`, `changed`, `failed`, and for
    /// a host the run did not finish, `changed, then stopped` (it was changed before the run
    /// stopped elsewhere), `stopped` (it was being worked on) or `not reached`.
    pub fn result(&self) -> &'static str {
        match (
            &self.status,
            self.changes.is_empty(),
            self.started.is_some(),
        ) {
            (Some(Ok(())), true, _) => "unchanged",
            (Some(Ok(())), false, _) => "changed",
            (Some(Err(_)), _, _) => "failed",
            (None, false, _) => "changed, then stopped",
            (None, true, true) => "stopped",
            (None, true, false) => "not reached",
        }
    }
}

/// The version of the JSON events' shape: bumped when a field changes meaning or goes.
pub const SCHEMA: u32 = 1;

/// `text` as it may reach a terminal or a log: secrets masked ([`redact`]), and every control
/// character but newline and tab (C0, DEL, C1: escape sequences, carriage returns that rewrite
/// a line, a window title) shown as `\xNN` instead of acting.
pub fn clean(text: &str) -> String {
    printable(&redact(text))
}

/// Control characters but `\n` and `\t` as visible `\xNN` text.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `t` as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// A duration as JSON shows it: seconds, rounded to the millisecond (so never `4.7e-6`).
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub struct Reporter {
    started_stream: std::sync::atomic::AtomicBool,
    format: OutputFormat,
    quiet: bool,
    verbose: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    hosts: Mutex<BTreeMap<String, HostSummary>>,
    started: Instant,
}

impl Reporter {
    pub fn new(format: OutputFormat, quiet: bool, verbose: bool) -> Reporter {
        let fancy = format == OutputFormat::Text && !quiet && std::io::stderr().is_terminal();
        Reporter {
            started_stream: std::sync::atomic::AtomicBool::new(false),
            format,
            quiet,
            verbose,
            multi: fancy.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(BTreeMap::new()),
            hosts: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
        }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// One JSON event on stdout, stamped with the time; the stream's first event is `start`,
    /// with the schema version of the events (README, "JSON events").
    pub fn emit(&self, mut value: serde_json::Value) {
        let ts = rfc3339(time::OffsetDateTime::now_utc());
        let mut out = std::io::stdout().lock();
        if !self
            .started_stream
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let start = json!({
                "event": "start", "ts": ts, "schema": SCHEMA,
                "version": env!("CARGO_PKG_VERSION"),
            });
            let _ = writeln!(out, "{start}");
        }
        if let Some(o) = value.as_object_mut() {
            o.insert("ts".into(), json!(ts));
        }
        let line = redact(&value.to_string());
        let _ = writeln!(out, "{line}");
    }

    fn event(&self, value: serde_json::Value) {
        self.emit(value)
    }

    fn plain(&self, text: &str) {
        if self.quiet {
            return;
        }
        let text = clean(text);
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// Register a host so it gets a line and a row in the summary.
    pub fn host(&self, name: &str, role: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(name.to_string())
            .or_insert_with(|| HostSummary {
                role: role.to_string(),
                ..Default::default()
            });
        if let Some(m) = &self.multi {
            let pb = m.add(ProgressBar::new_spinner());
            pb.set_style(
                // The time beside the step it belongs to, not at the far edge of the terminal.
                ProgressStyle::with_template("{spinner} {prefix:<16} {elapsed:>4}  {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(name.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            self.bars
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), pb);
        }
    }

    /// `host` is now doing `step`.
    pub fn step(&self, host: &str, step: &str) {
        {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = hosts.get_mut(host) {
                h.started.get_or_insert_with(Instant::now);
            }
        }
        match self.format {
            OutputFormat::Json => self.event(json!({"event": "step", "host": host, "step": step})),
            OutputFormat::Text => {
                let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                match bars.get(host) {
                    Some(pb) => pb.set_message(clean(step)),
                    // Plain output: changes are printed as they happen; steps
                    // only with -v, so a log reads as what was done.
                    None if self.verbose => {
                        drop(bars);
                        self.plain(&format!("{host}: {step}"))
                    }
                    None => {}
                }
            }
        }
    }

    /// A step of the plan is done: one `action` event each, so a run can be held against
    /// its plan. Changes (to the cluster) are counted in the summary and printed as they
    /// happen; waits and this machine's files are not counted.
    pub fn action(&self, phase: &str, host: &str, action: &str, change: bool) {
        if change {
            self.hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(host.to_string())
                .or_default()
                .changes
                .push(clean(action));
        }
        match self.format {
            OutputFormat::Json => self.event(json!({
                "event": "action", "phase": phase, "host": host, "action": action, "change": change,
            })),
            OutputFormat::Text if change => self.plain(&format!("{host}: {action}")),
            OutputFormat::Text => {}
        }
    }

    /// `host` is finished, well or not.
    pub fn done(&self, host: &str, result: Result<(), String>) {
        let elapsed;
        {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            let h = hosts.entry(host.to_string()).or_default();
            elapsed = h.started.map(|s| s.elapsed()).unwrap_or_default();
            h.elapsed = elapsed;
            h.status = Some(result.clone().map_err(|e| clean(&e)));
        }
        // The error itself is printed once, at the end, with what to do.
        let text = match &result {
            Ok(()) => "done".to_string(),
            Err(_) => "failed".to_string(),
        };
        match self.format {
            OutputFormat::Json => self.event(json!({
                "event": "host-done", "host": host, "ok": result.is_ok(),
                "error": result.as_ref().err().map(|e| clean(e)),
                "seconds": seconds(elapsed),
            })),
            OutputFormat::Text => {
                let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                match bars.get(host) {
                    Some(pb) => {
                        pb.finish_with_message(text.clone());
                        // A spinner line goes when the bars are cleared; a failure must not.
                        if let (Err(e), Some(m)) = (&result, &self.multi) {
                            let first = e.lines().next().unwrap_or("");
                            let _ = m.println(clean(&format!("{host}: failed: {first}")));
                        }
                    }
                    None => {
                        drop(bars);
                        self.plain(&format!("{host}: {text}"))
                    }
                }
            }
        }
    }

    pub fn info(&self, msg: &str) {
        match self.format {
            OutputFormat::Json => self.event(json!({"event": "info", "message": msg})),
            OutputFormat::Text => self.plain(msg),
        }
    }

    pub fn warn(&self, msg: &str) {
        match self.format {
            OutputFormat::Json => self.event(json!({"event": "warning", "message": msg})),
            OutputFormat::Text => {
                let text = clean(&format!("warning: {msg}"));
                match &self.multi {
                    Some(m) => {
                        let _ = m.println(text);
                    }
                    None => eprintln!("{text}"),
                }
            }
        }
    }

    /// The changes made so far, as the `action` events counted them: the summary's figure
    /// and the headline's come from here, so they cannot disagree.
    pub fn changes(&self) -> usize {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|h| h.changes.len())
            .sum()
    }

    /// Print the summary: a table (text) or one `summary` event (JSON) with
    /// `extra` fields merged in (counters, kubeconfig path...).
    pub fn finish(&self, ok: bool, headline: &str, extra: serde_json::Value) {
        if let Some(m) = &self.multi {
            // Remove the bars, or a finished one is drawn again below the summary.
            for pb in self.bars.lock().unwrap_or_else(|e| e.into_inner()).values() {
                pb.finish_and_clear();
                m.remove(pb);
            }
            let _ = m.clear();
        }
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // A host the run touched but did not finish (a later phase, or another host, stopped
        // it) is timed until now.
        for h in hosts.values_mut() {
            if let (None, Some(s)) = (&h.status, h.started) {
                h.elapsed = s.elapsed();
            }
        }
        let changes: usize = hosts.values().map(|h| h.changes.len()).sum();
        match self.format {
            OutputFormat::Json => {
                let mut summary = json!({
                    "event": "summary",
                    "ok": ok,
                    "message": headline,
                    "changes": changes,
                    "seconds": seconds(self.started.elapsed()),
                    "hosts": hosts.iter().map(|(name, h)| json!({
                        "host": name, "role": h.role, "changes": h.changes,
                        "ok": h.status.as_ref().map(|s| s.is_ok()),
                        "result": h.result(),
                        "error": h.status.as_ref().and_then(|s| s.as_ref().err()),
                        "seconds": seconds(h.elapsed),
                    })).collect::<Vec<_>>(),
                });
                if let (Some(s), Some(e)) = (summary.as_object_mut(), extra.as_object()) {
                    for (k, v) in e {
                        s.insert(k.clone(), v.clone());
                    }
                }
                self.event(summary);
            }
            OutputFormat::Text => {
                if self.quiet && ok {
                    return;
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{:<16} {:<7} {:>7} {:>8}  RESULT",
                    "HOST", "ROLE", "CHANGES", "TIME"
                );
                for (name, h) in &hosts {
                    let result = match h.result() {
                        "failed" => "FAILED",
                        r => r,
                    };
                    let _ = writeln!(
                        out,
                        "{:<16} {:<7} {:>7} {:>7.1}s  {}",
                        name,
                        h.role,
                        h.changes.len(),
                        h.elapsed.as_secs_f64(),
                        result
                    );
                }
                let _ = writeln!(
                    out,
                    "{} (in {:.1}s)",
                    clean(headline),
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary's word for each way a host can end, as the run reports it (README: "What a
    /// run does").
    #[test]
    fn each_host_ends_with_the_word_for_how_it_ended() {
        let rep = Reporter::new(OutputFormat::Text, true, false);
        let names = ["a", "b", "c", "d", "e", "f"];
        for h in names {
            rep.host(h, "agent");
        }
        rep.step("a", "read");
        rep.done("a", Ok(()));
        rep.step("b", "install");
        rep.action("p", "b", "install k3s", true);
        rep.done("b", Ok(()));
        rep.step("c", "install");
        rep.done("c", Err("boom".into()));
        rep.step("d", "install");
        rep.action("p", "d", "install k3s", true);
        rep.step("e", "install");
        // A wait is not a change: the host is still "stopped", not "changed, then stopped".
        rep.action("p", "e", "wait until ready", false);
        let hosts = rep.hosts.lock().unwrap();
        let results: Vec<&str> = names.iter().map(|h| hosts[*h].result()).collect();
        assert_eq!(
            results,
            [
                "unchanged",
                "changed",
                "failed",
                "changed, then stopped",
                "stopped",
                "not reached"
            ]
        );
        assert_eq!(hosts["c"].status, Some(Err("boom".into())));
    }

    #[test]
    fn controls_are_shown_not_acted_on_and_text_is_kept() {
        let s = printable("a\x1b[2Jb\rc\u{7f}\u{9b}d\n\tü");
        assert_eq!(s, "a\\x1b[2Jb\\x0dc\\x7f\\x9bd\n\tü");
        assert!(!s.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
    }
}
