//! Two-phase commit across shards (`two_phase_commit = true` in a pool): a transaction
//! that wrote on more than one shard commits with `PREPARE TRANSACTION` on each written
//! shard, the decision to commit is made durable in the decision log (`log`), then
//! `COMMIT PREPARED` runs on each (`commit`). A pooler or a shard that fails in between
//! leaves prepared transactions behind, which `resolve` ends at startup and every few
//! seconds: committed where the log has the decision, rolled back otherwise.
//!
//! Global transaction ids name this pooler instance: `pgcat_<instance>_<start>_<n>`
//! (`instance_name`, by default the listen host and port; `start`: when the process
//! started, in milliseconds; `n` counts), so poolers in front of the same shards never
//! resolve each other's transactions and a restarted pooler never reuses an id.

mod commit;
mod log;
mod resolve;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use commit::commit;
pub use log::DecisionLog;
pub use resolve::{resolve, InDoubt, Pass};

/// The coordinator of this process's two-phase commits.
pub struct TwoPhase {
    /// `pgcat_<instance>_`: every gid of this instance starts with it.
    prefix: String,
    start: u64,
    next: AtomicU64,
    log: DecisionLog,
    state: Mutex<State>,
    counters: Counters,
}

#[derive(Default)]
struct State {
    /// Decided to commit, not yet committed on every shard.
    decided: BTreeSet<String>,
    /// Being committed or rolled back by a session right now: the resolver keeps off.
    in_flight: HashSet<String>,
}

/// What two-phase commits did, for Prometheus and the admin console.
#[derive(Default)]
struct Counters {
    prepared: AtomicU64,
    committed: AtomicU64,
    rolled_back: AtomicU64,
    recovered: AtomicU64,
}

/// The counters' values: transactions prepared (one per shard), committed (per shard),
/// rolled back (per shard) and in-doubt ones the resolver ended (per shard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub prepared: u64,
    pub committed: u64,
    pub rolled_back: u64,
    pub recovered: u64,
}

/// A transaction being committed by a session: its gid is in flight until this drops.
pub struct InFlight {
    coordinator: Arc<TwoPhase>,
    gid: String,
}

impl InFlight {
    pub fn gid(&self) -> &str {
        &self.gid
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut state) = self.coordinator.state.lock() {
            state.in_flight.remove(&self.gid);
        }
    }
}

impl TwoPhase {
    /// The coordinator of `instance` (letters, digits and `_`), its decisions logged at
    /// `log`; the decisions still pending there are resolved by the next pass.
    pub fn open(instance: &str, log: &Path) -> std::io::Result<TwoPhase> {
        let (log, decided) = DecisionLog::open(log)?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(TwoPhase {
            prefix: format!("pgcat_{instance}_"),
            start,
            next: AtomicU64::new(1),
            log,
            state: Mutex::new(State {
                decided,
                in_flight: HashSet::new(),
            }),
            counters: Counters::default(),
        })
    }

    /// What every gid of this instance starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// A new transaction's gid, in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let n = self.next.fetch_add(1, Relaxed);
        let gid = format!("{}{}_{n}", self.prefix, self.start);
        self.with_state(|s| s.in_flight.insert(gid.clone()));
        InFlight {
            coordinator: self.clone(),
            gid,
        }
    }

    /// Makes the decision to commit `gid` durable (blocking: an fsync).
    fn decide(&self, gid: &str) -> std::io::Result<()> {
        self.log.commit(gid)?;
        self.with_state(|s| s.decided.insert(gid.to_string()));
        Ok(())
    }

    /// Every shard committed `gid`: its decision is no longer needed.
    fn finished(&self, gid: &str) {
        if self.with_state(|s| s.decided.remove(gid)) {
            if let Err(e) = self.log.done(gid) {
                tracing::warn!(gid, error = %e, "could not note a finished two-phase commit in the decision log");
            }
        }
    }

    /// Whether the log has the decision to commit `gid`.
    pub fn is_decided(&self, gid: &str) -> bool {
        self.with_state(|s| s.decided.contains(gid))
    }

    /// Whether a session is committing or rolling back `gid` right now.
    pub fn is_in_flight(&self, gid: &str) -> bool {
        self.with_state(|s| s.in_flight.contains(gid))
    }

    /// The decided gids no session is finishing.
    fn decided_idle(&self) -> Vec<String> {
        self.with_state(|s| {
            s.decided
                .iter()
                .filter(|g| !s.in_flight.contains(*g))
                .cloned()
                .collect()
        })
    }

    pub fn totals(&self) -> Totals {
        let c = &self.counters;
        Totals {
            prepared: c.prepared.load(Relaxed),
            committed: c.committed.load(Relaxed),
            rolled_back: c.rolled_back.load(Relaxed),
            recovered: c.recovered.load(Relaxed),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }
}
