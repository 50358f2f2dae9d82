//! Developer tasks for the bootstrap workspace, run with `cargo xtask ...`.

pub mod bench;
pub mod ci;
pub mod fixtures;
pub mod lab;
