//! The runner: every phase of a plan in order, its groups as the phase's mode says (one at a
//! time, side by side bounded by `--parallel`, in batches, or in one script), with each
//! phase's time, the time spent waiting on k3s, and each host's failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tokio::sync::Semaphore;

use super::learned::Learned;
use super::{host, kubectl, local, Options, Report};
use crate::connect::Sessions;
use crate::plan::{report_host, Action, Group, Mode, On, Phase, Plan, Step};
use crate::report::Reporter;
use crate::ssh::Cmd;

/// Runs steps over the run's sessions: the only code that writes to a host, the cluster or
/// the operator's files.
pub(super) struct Executor<'a> {
    pub sessions: &'a Sessions,
    pub opts: &'a Options,
    pub rep: &'a Reporter,
    /// What the run learns on the way (the CA hash of a cluster it creates).
    pub learned: Learned,
    /// The run lock, looked at before every step: a lost lock stops the run there.
    pub lock: Option<super::lock::Watch>,
}

impl Executor<'_> {
    fn session(&self, key: &str) -> Result<&crate::ssh::Session> {
        self.sessions
            .get(key)
            .ok_or_else(|| anyhow!("{key}: not connected"))
    }

    /// Run one step; returns how long it waited on k3s.
    async fn step(&self, phase: &Phase, g: &Group, s: &Step) -> Result<Duration> {
        if let Some(w) = &self.lock {
            w.check()?;
        }
        let host = report_host(g, s);
        let text = s.action.to_string();
        self.rep.step(host, &text);
        let waited = match &s.on {
            On::Host(h) => {
                let session = self.session(h)?;
                let via = match &s.action {
                    Action::Start { via: Some(v), .. } | Action::Restart { via: Some(v), .. } => {
                        self.sessions.get(v).map(|t| (v.as_str(), t))
                    }
                    _ => None,
                };
                host::run(
                    session,
                    h,
                    &s.action,
                    self.opts,
                    self.rep,
                    &self.learned,
                    via,
                )
                .await?
            }
            On::Api(via) => {
                kubectl::run(
                    self.session(via)?,
                    via,
                    host,
                    &s.action,
                    self.opts,
                    self.rep,
                )
                .await?
            }
            On::Local => local::run(self.sessions, &s.action, self.rep, &self.learned).await?,
        };
        self.rep
            .action(phase.name, host, &text, s.action.is_change());
        Ok(waited)
    }

    async fn group(&self, phase: &Phase, g: &Group) -> Result<Duration> {
        let mut waited = Duration::ZERO;
        for s in &g.steps {
            waited += self.step(phase, g, s).await?;
        }
        Ok(waited)
    }

    /// Groups side by side, bounded; every one runs. The longest wait is what the run waited.
    async fn side_by_side(&self, phase: &Phase, groups: &[Group]) -> Result<Duration> {
        let sem = Arc::new(Semaphore::new(self.opts.parallel.max(1)));
        let results = futures::future::join_all(groups.iter().map(|g| {
            let sem = sem.clone();
            async move {
                let _permit = sem.acquire().await;
                self.group(phase, g).await
            }
        }))
        .await;
        let mut errors = Vec::new();
        let mut waited = Duration::ZERO;
        for (g, r) in groups.iter().zip(results) {
            match r {
                Ok(w) => waited = waited.max(w),
                Err(e) => {
                    self.rep.done(&g.host, Err(format!("{e:#}")));
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if errors.is_empty() {
            return Ok(waited);
        }
        match phase.on_error {
            Some(note) => bail!("{}\n{note}", errors.join("\n")),
            None => bail!("{}", errors.join("\n")),
        }
    }

    /// Every step's kubectl script in one round trip (label and taint changes).
    async fn one_script(&self, phase: &Phase) -> Result<Duration> {
        let mut script = String::from("set -e\n");
        let mut via = None;
        for g in &phase.groups {
            for s in &g.steps {
                match (&s.on, &s.action) {
                    (On::Api(v), Action::Labels { node, drift }) => {
                        via = Some(v.clone());
                        self.rep.step(report_host(g, s), &s.action.to_string());
                        script.push_str(&kubectl::drift_script(node, drift));
                    }
                    _ => bail!("`{}` cannot run in one script", s.action),
                }
            }
        }
        let Some(via) = via else {
            return Ok(Duration::ZERO);
        };
        self.session(&via)?
            .run_ok(&Cmd::new(script).label("kubectl label/taint"))
            .await?;
        for g in &phase.groups {
            for s in &g.steps {
                self.rep.action(
                    phase.name,
                    report_host(g, s),
                    &s.action.to_string(),
                    s.action.is_change(),
                );
            }
        }
        Ok(Duration::ZERO)
    }

    async fn phase(&self, phase: &Phase) -> Result<Duration> {
        match phase.mode {
            Mode::Serial => {
                let mut waited = Duration::ZERO;
                for g in &phase.groups {
                    match self.group(phase, g).await {
                        Ok(w) => waited += w,
                        Err(e) => {
                            self.rep.done(&g.host, Err(format!("{e:#}")));
                            return Err(e);
                        }
                    }
                }
                Ok(waited)
            }
            Mode::Parallel => self.side_by_side(phase, &phase.groups).await,
            Mode::Batches(n) => {
                let mut waited = Duration::ZERO;
                // Stop at a failed batch: it must not take more nodes down.
                for batch in phase.groups.chunks(n.max(1)) {
                    waited += self.side_by_side(phase, batch).await?;
                }
                Ok(waited)
            }
            Mode::OneScript => self.one_script(phase).await,
        }
    }

    /// Every phase in order; the first that fails stops the run.
    pub async fn run(&self, plan: &Plan) -> Result<Report> {
        for w in &plan.warnings {
            self.rep.warn(w);
        }
        let mut report = Report::default();
        let mut waiting = Duration::ZERO;
        let mut phases: BTreeMap<String, f64> = BTreeMap::new();
        for p in &plan.phases {
            let t = Instant::now();
            waiting += self.phase(p).await?;
            *phases.entry(p.name.to_string()).or_default() += crate::report::seconds(t.elapsed());
        }
        if !plan.unreachable.is_empty() {
            bail!(
                "these hosts could not be reached and were left as they are:\n  {}",
                plan.unreachable.join("\n  ")
            );
        }
        report.changes = plan.changes();
        report.phases = phases;
        report.waiting_seconds = crate::report::seconds(waiting);
        report.kubeconfig = plan.steps().find_map(|(_, _, s)| match &s.action {
            Action::WriteKubeconfig { path, .. } => Some(path.clone()),
            _ => None,
        });
        Ok(report)
    }
}
