//! `bootstrap`: turns bare VPS hosts into a k3s cluster over SSH.
//!
//! Data flows one way: inventory → connect → facts → plan → apply → report.
//! - [`inventory`]: the one model of what the operator wants, validated with located errors.
//! - [`connect`]: how each node is reached; [`ssh`] is the engine under it, and [`s3`] the
//!   client of the bucket `[etcd.s3]` names (this machine's own way to the snapshots).
//! - [`facts`]: every host's state, the cluster's (through one server) and this machine's,
//!   gathered once into one value.
//! - [`plan`]: a pure function from (inventory, facts) to a list of phases of typed steps.
//! - [`apply`]: the one writer: the run lock, then the plan's steps, phase by phase.
//! - [`report`]: progress, JSON events and the summary.
//!
//! Below them: [`k3s`] (paths, config, unit, tokens, release files), [`addons`] (the four
//! charts and extra manifests, rendered, and what healthy means), [`os`] (the hosts' own
//! settings: sysctl, time sync, security updates, swap), [`kubeconfig`],
//! [`templates`], [`local`] (files on this machine), [`secrets`] (`.bootstrap/`'s secrets as one
//! encrypted archive, and back) and [`outcome`] (exit codes).

pub mod addons;
pub mod apply;
pub mod cli;
pub mod connect;
pub mod facts;
pub mod inventory;
pub mod k3s;
pub mod kubeconfig;
pub mod local;
pub mod os;
pub mod outcome;
pub mod plan;
pub mod report;
pub mod s3;
pub mod secrets;
pub mod ssh;
pub mod templates;

#[cfg(test)]
mod testdata;
