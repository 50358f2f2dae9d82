//! `bootstrap`: turns bare VPS hosts into a k3s cluster over SSH.
//!
//! Data flows one way: inventory → connect → facts → plan → apply → report.

pub mod k3s;
pub mod templates;
