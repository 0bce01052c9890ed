//! Fault points for the crash tests of two-phase commit: with the `failpoints` feature,
//! `point(name)` kills the process (SIGKILL, as a crash would) when the environment
//! variable `PGCAT_FAULT` names that point, or waits when it says `<name>=pause:<ms>`
//! (time for a test to stop a shard). Without the feature (release builds) a point
//! compiles to nothing: no test logic in the commit path.

/// After a shard's `PREPARE TRANSACTION` succeeded.
pub const AFTER_PREPARE: &str = "after_prepare";
/// After the decision to commit is in the decision log, before any COMMIT PREPARED.
pub const AFTER_DECISION: &str = "after_decision";
/// After a shard's `COMMIT PREPARED` succeeded.
pub const AFTER_COMMIT_PREPARED: &str = "after_commit_prepared";

#[cfg(feature = "failpoints")]
pub async fn point(name: &str) {
    let Ok(armed) = std::env::var("PGCAT_FAULT") else {
        return;
    };
    let (point, action) = armed.split_once('=').unwrap_or((armed.as_str(), "kill"));
    if point != name {
        return;
    }
    if let Some(ms) = action.strip_prefix("pause:").and_then(|ms| ms.parse().ok()) {
        tracing::warn!(point = name, ms, "fault point reached: pausing");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        return;
    }
    tracing::error!(point = name, "fault point reached: killing the process");
    // SAFETY: kill(2) on our own pid with a valid signal number.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn point(_name: &str) {}
