//! Fault points for the tests that crash or stall the pooler at a chosen moment: with the
//! `failpoints` feature, `point(name)` kills the process (SIGKILL, as a crash would) when
//! the environment variable `PGCAT_FAULT` names that point, or waits when it says
//! `<name>=pause:<ms>` (time for a test to stop a shard, or to widen a race).
//! `point_blocking` is the same for threads outside the runtime. Without the feature
//! (release builds) a point compiles to nothing: no test logic in the paths they mark.

/// After a shard's `PREPARE TRANSACTION` succeeded (two-phase commit).
pub const AFTER_PREPARE: &str = "after_prepare";
/// After the decision to commit is in the decision log, before any COMMIT PREPARED.
pub const AFTER_DECISION: &str = "after_decision";
/// After a shard's `COMMIT PREPARED` succeeded.
pub const AFTER_COMMIT_PREPARED: &str = "after_commit_prepared";
/// Before an idle client is written to the new process of an online upgrade.
pub const HANDOFF_SEND: &str = "handoff_send";

/// What `PGCAT_FAULT` asks of the point `name`: `None` if it names another one (or none),
/// `Some(None)` to kill the process, `Some(Some(ms))` to pause.
#[cfg(feature = "failpoints")]
fn armed(name: &str) -> Option<Option<u64>> {
    let armed = std::env::var("PGCAT_FAULT").ok()?;
    let (point, action) = armed.split_once('=').unwrap_or((armed.as_str(), "kill"));
    (point == name).then(|| action.strip_prefix("pause:").and_then(|ms| ms.parse().ok()))
}

#[cfg(feature = "failpoints")]
fn kill(name: &str) {
    tracing::error!(point = name, "fault point reached: killing the process");
    // SAFETY: kill(2) on our own pid with a valid signal number.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(feature = "failpoints")]
pub async fn point(name: &str) {
    match armed(name) {
        None => {}
        Some(Some(ms)) => {
            tracing::warn!(point = name, ms, "fault point reached: pausing");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        Some(None) => kill(name),
    }
}

#[cfg(feature = "failpoints")]
pub fn point_blocking(name: &str) {
    match armed(name) {
        None => {}
        Some(Some(ms)) => {
            tracing::warn!(point = name, ms, "fault point reached: pausing the thread");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Some(None) => kill(name),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn point(_name: &str) {}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point_blocking(_name: &str) {}
