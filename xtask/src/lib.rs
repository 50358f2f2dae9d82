//! Developer tasks for the bootstrap workspace, run with `cargo xtask ...`.

pub mod ci;
pub mod lab;
