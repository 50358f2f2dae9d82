//! Apply: the one writer. A [`Writer`] takes the run lock while it reads the facts (the lock
//! script runs first on every server, in the same round trip), then executes a plan phase by
//! phase and releases the lock, whatever happens; SIGINT and SIGTERM stop it between steps.
//! Nothing else writes to a host, the cluster or the operator's files: `plan` never gets
//! here, so a plan cannot write.
//!
//! [`runner`] runs the phases (bounded concurrency, timing, per-host errors); [`host`],
//! [`kubectl`] and [`local`] run the steps on a host's session, through a server's kubectl
//! and on this machine; [`lock`] is the run lock.

mod host;
mod kubectl;
mod learned;
mod local;
pub mod lock;
mod runner;

pub use local::download_snapshot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::connect::Sessions;
use crate::facts::{self, Facts, LocalFacts};
use crate::inventory::Inventory;
use crate::outcome::Interrupted;
use crate::plan::Plan;
use crate::report::Reporter;

#[derive(Debug, Clone)]
pub struct Options {
    pub parallel: usize,
    /// Deadline for each wait (a service to become ready, nodes to be Ready).
    pub timeout: Duration,
}

/// What a run did, for the summary and the benchmark.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub changes: usize,
    pub round_trips: BTreeMap<String, u64>,
    pub kubeconfig: Option<PathBuf>,
    /// Wall seconds per phase.
    pub phases: BTreeMap<String, f64>,
    /// Wall seconds spent blocked on k3s itself (services starting, nodes turning Ready);
    /// the rest of the run is the tool's own share.
    pub waiting_seconds: f64,
}

/// A run that may write: it holds the run lock and the sessions.
pub struct Writer {
    sessions: Sessions,
    lock: lock::Lock,
    signals: lock::Signals,
    facts_seconds: f64,
    kubeconfig: PathBuf,
}

impl Writer {
    /// Take the run lock on the servers of `req` and read the facts, one round trip per host.
    /// Refused, with nothing changed, when another run holds the lock or a required host
    /// cannot be read.
    pub async fn open(
        inv: &Inventory,
        mut req: facts::Request,
        local: LocalFacts,
        command: &str,
        opts: &Options,
        rep: &Reporter,
    ) -> Result<(Writer, Facts)> {
        let mut signals = lock::Signals::new();
        let prelude = lock::Prelude::new(command)?;
        crate::ssh::mark_run(prelude.id());
        req.prelude = Some(prelude.script().to_string());
        // Ctrl-C while the facts are read: let go of whatever lock was taken, then stop.
        let reads = tokio::select! {
            r = facts::read(&req, opts.parallel, rep) => r,
            s = signals.next() => {
                prelude.abandon(&req.hosts).await;
                return Err(anyhow!(Interrupted(s)));
            }
        };
        let facts_seconds = crate::report::seconds(reads.elapsed);
        // Where the script ran but its output was refused (a shell banner, a flood), the lock
        // it may have taken is let go of now, not left to expire.
        let unread = reads.servers_started_unread();
        if !unread.is_empty() {
            prelude.abandon(&unread).await;
        }
        let lock = prelude.take(&reads, rep).await?;
        match reads.into_facts(inv, &req, local).await {
            Ok((sessions, facts)) => Ok((
                Writer {
                    sessions,
                    lock,
                    signals,
                    facts_seconds,
                    kubeconfig: inv.kubeconfig_path(),
                },
                facts,
            )),
            Err(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    /// Execute `plan` (nothing, when planning failed), then release the lock.
    pub async fn execute(
        mut self,
        plan: Result<Plan>,
        opts: &Options,
        rep: &Reporter,
    ) -> Result<Report> {
        let result = match plan {
            Ok(plan) => {
                let ex = runner::Executor {
                    sessions: &self.sessions,
                    opts,
                    rep,
                    learned: Default::default(),
                    lock: self.lock.watch(),
                };
                tokio::select! {
                    r = ex.run(&plan) => r,
                    s = self.signals.next() => {
                        stop_marked(&self.sessions, rep).await;
                        Err(anyhow!(Interrupted(s)))
                    }
                }
            }
            Err(e) => Err(e),
        };
        self.lock.release().await;
        let mut report = result?;
        report
            .phases
            .insert("connect-facts".into(), self.facts_seconds);
        report.round_trips = self.sessions.round_trips();
        if report.kubeconfig.is_none() && self.kubeconfig.exists() {
            report.kubeconfig = Some(self.kubeconfig.clone());
        }
        Ok(report)
    }
}

/// After an interrupt, before the lock goes: what the stopped steps left running on the
/// hosts (their remote commands do not end with the channel) gets SIGTERM, and the run waits
/// for it, bounded, on every host at once. What is still running is named.
async fn stop_marked(sessions: &Sessions, rep: &Reporter) {
    let Some(id) = crate::ssh::run_marker() else {
        return;
    };
    let cmd = lock::stop_marked_cmd(id, 20);
    let stops = sessions.iter().map(|(host, s)| {
        let cmd = &cmd;
        async move { (host, s.exec(cmd).await) }
    });
    for (host, r) in futures::future::join_all(stops).await {
        match r {
            Ok(o) => {
                let out = o.stdout_str();
                if let Some(left) = out.trim().strip_prefix("still running:") {
                    rep.warn(&format!(
                        "{host}: commands of this run still running after 20 s (pids{left}); they end by themselves"
                    ));
                } else if let Some(pids) = out.trim().strip_prefix("stopped:") {
                    rep.info(&format!("{host}: stopped this run's commands (pids{pids})"));
                }
            }
            Err(e) => rep.warn(&format!("{host}: could not stop this run's commands: {e}")),
        }
    }
}

/// Execute a plan that writes only on this machine (`kubeconfig`): no lock is needed.
pub async fn execute_local(
    plan: &Plan,
    sessions: &Sessions,
    opts: &Options,
    rep: &Reporter,
) -> Result<Report> {
    let touches_hosts = plan.steps().any(|(_, _, s)| s.on != crate::plan::On::Local);
    if touches_hosts {
        return Err(anyhow!(
            "this plan changes hosts; it must run under the run lock"
        ));
    }
    runner::Executor {
        sessions,
        opts,
        rep,
        learned: Default::default(),
        lock: None,
    }
    .run(plan)
    .await
}
