//! How a run ends when it does not succeed: bad input (exit 2, nothing changed), a signal
//! (exit 130, the run lock released), or a failure (exit 1).

/// Bad input: nothing was changed (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A [`UsageError`] as an `anyhow::Error`.
pub fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(UsageError(e.to_string()))
}

/// The run was stopped by a signal (exit code 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {0}; the run lock was released and every host is safe to converge again: re-run the command to finish")]
pub struct Interrupted(pub &'static str);

/// The process exit code for a failed run.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else if e.downcast_ref::<Interrupted>().is_some() {
        130
    } else {
        1
    }
}

/// Whether `e` is bad input (the caller prints no failure summary for it).
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.downcast_ref::<UsageError>().is_some()
}
