//! Statistics behind the admin console's SHOW commands and the Prometheus endpoint.
//!
//! The hot path only touches atomics it already holds a reference to: per-address
//! counters (through the server connection it has checked out) and its own client record.
//! Everything else (per-pool sums, client and server lists, averages) is computed when an
//! operator asks, from the registries here. Nothing in this module does I/O.

pub mod clock;
pub mod health;
mod registry;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

pub use registry::{
    peer_of, ClientInfo, ClientState, Interrupt, Registry, ServerInfo, ServerState,
};

/// Cumulative counters of one server address (one pool user's connections to it).
#[derive(Debug, Default)]
pub struct Counters {
    xact_count: AtomicU64,
    query_count: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    xact_time_us: AtomicU64,
    query_time_us: AtomicU64,
    wait_time_us: AtomicU64,
    errors: AtomicU64,
    /// The averages of the last completed `STATS_PERIOD`.
    averages: Mutex<(Totals, Totals)>,
}

/// How often averages are recomputed (PgBouncer's and PgCat's 15 s).
pub const STATS_PERIOD_SECS: u64 = 15;

/// A snapshot of [`Counters`] (or, for averages, per-second rates and per-item times).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub errors: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.xact_count += o.xact_count;
        self.query_count += o.query_count;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.xact_time_us += o.xact_time_us;
        self.query_time_us += o.query_time_us;
        self.wait_time_us += o.wait_time_us;
        self.errors += o.errors;
    }
}

impl Counters {
    /// A query (one ReadyForQuery from the server) finished after `us` microseconds.
    pub fn query(&self, us: u64) {
        self.query_count.fetch_add(1, Relaxed);
        self.query_time_us.fetch_add(us, Relaxed);
    }

    /// A transaction (server back to idle) finished after `us` microseconds.
    pub fn xact(&self, us: u64) {
        self.xact_count.fetch_add(1, Relaxed);
        self.xact_time_us.fetch_add(us, Relaxed);
    }

    pub fn bytes(&self, received: u64, sent: u64) {
        if received > 0 {
            self.bytes_received.fetch_add(received, Relaxed);
        }
        if sent > 0 {
            self.bytes_sent.fetch_add(sent, Relaxed);
        }
    }

    /// A client waited `us` microseconds for a server of this address.
    pub fn wait(&self, us: u64) {
        self.wait_time_us.fetch_add(us, Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            xact_count: self.xact_count.load(Relaxed),
            query_count: self.query_count.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            xact_time_us: self.xact_time_us.load(Relaxed),
            query_time_us: self.query_time_us.load(Relaxed),
            wait_time_us: self.wait_time_us.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    /// Averages over the last period: counts and bytes per second, times per transaction
    /// or query (µs), as PgBouncer reports them.
    pub fn averages(&self) -> Totals {
        self.averages.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Closes a period: called every `STATS_PERIOD_SECS` by the stats task.
    pub fn roll(&self) {
        let now = self.totals();
        let mut guard = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        let last = guard.0;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let per = |t: u64, n: u64| t.checked_div(n).unwrap_or(0);
        let xacts = d(now.xact_count, last.xact_count);
        let queries = d(now.query_count, last.query_count);
        guard.1 = Totals {
            xact_count: xacts / STATS_PERIOD_SECS,
            query_count: queries / STATS_PERIOD_SECS,
            bytes_received: d(now.bytes_received, last.bytes_received) / STATS_PERIOD_SECS,
            bytes_sent: d(now.bytes_sent, last.bytes_sent) / STATS_PERIOD_SECS,
            xact_time_us: per(d(now.xact_time_us, last.xact_time_us), xacts),
            query_time_us: per(d(now.query_time_us, last.query_time_us), queries),
            wait_time_us: per(d(now.wait_time_us, last.wait_time_us), xacts.max(1)),
            errors: d(now.errors, last.errors) / STATS_PERIOD_SECS,
        };
        guard.0 = now;
    }
}
