//! `bootstrap`: turns bare VPS hosts into a k3s cluster over SSH.
//!
//! Data flows one way: inventory → connect → facts → plan → apply → report.
//! One module per stage: [`inventory`], [`ssh`], [`facts`] (and [`cluster`]
//! for what the API reports), [`plan`], [`apply`], [`k3s`], [`report`].

pub mod addons;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod facts;
pub mod inventory;
pub mod k3s;
pub mod kubeconfig;
pub mod lifecycle;
pub mod lock;
pub mod plan;
pub mod report;
pub mod reset;
pub mod ssh;
pub mod templates;
