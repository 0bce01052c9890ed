//! PgCat's activity-based routing (`db_activity_based_routing`), for one pool (database),
//! shared by its users: reads of a table this pooler wrote less than
//! `table_mutation_cache_ms_ttl` ago go to the primary (a replica may not have replayed the
//! write yet), and so do all reads for `db_activity_init_delay` ms after the database was
//! first used or unused for `db_activity_ttl` seconds. Memory of this process only; tables
//! are remembered by their unqualified name, so a write to `a.t` sends reads of `b.t` to
//! the primary for that while too (never the other way round).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config;

/// Tables remembered before the expired ones are dropped.
const PRUNE_AT: usize = 1024;

#[derive(Debug)]
pub struct Activity {
    init_delay: Duration,
    ttl: Duration,
    table_ttl: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The last statement routed, and until when reads go to the primary after an idle spell.
    last_seen: Option<Instant>,
    warming_until: Option<Instant>,
    /// Unqualified table name → when a statement last wrote it.
    written: HashMap<String, Instant>,
}

impl Activity {
    /// The pool's activity memory, when it routes by activity.
    pub fn of(pool: &config::Pool) -> Option<Activity> {
        pool.db_activity_based_routing.then(|| {
            Activity::new(
                Duration::from_millis(pool.db_activity_init_delay),
                Duration::from_secs(pool.db_activity_ttl),
                Duration::from_millis(pool.table_mutation_cache_ms_ttl),
            )
        })
    }

    /// Whether `pool` asks for this memory's settings (a reload keeps it then).
    pub fn same_settings(&self, pool: &config::Pool) -> bool {
        Activity::of(pool).is_some_and(|other| {
            (other.init_delay, other.ttl, other.table_ttl)
                == (self.init_delay, self.ttl, self.table_ttl)
        })
    }

    fn new(init_delay: Duration, ttl: Duration, table_ttl: Duration) -> Activity {
        Activity {
            init_delay,
            ttl,
            table_ttl,
            state: Mutex::default(),
        }
    }

    /// Notes a statement routed by the parser that touches `tables` (`write`: it may write
    /// them) and says whether it must go to the primary although it only reads.
    pub fn read_needs_primary(&self, tables: &[String], write: bool) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let idle = state
            .last_seen
            .is_none_or(|seen| now.saturating_duration_since(seen) > self.ttl);
        if idle {
            state.warming_until = Some(now + self.init_delay);
        }
        state.last_seen = Some(now);
        if write {
            if state.written.len() >= PRUNE_AT {
                let ttl = self.table_ttl;
                state
                    .written
                    .retain(|_, at| now.saturating_duration_since(*at) <= ttl);
            }
            for table in tables {
                state.written.insert(unqualified(table).to_string(), now);
            }
            return false;
        }
        if state.warming_until.is_some_and(|until| now < until) {
            return true;
        }
        tables.iter().any(|table| {
            state
                .written
                .get(unqualified(table))
                .is_some_and(|at| now.saturating_duration_since(*at) <= self.table_ttl)
        })
    }
}

fn unqualified(table: &str) -> &str {
    table.rsplit_once('.').map_or(table, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_follows_written_tables() {
        let ms = Duration::from_millis;
        let a = Activity::new(ms(30), Duration::from_secs(900), ms(40));
        let t = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(
            a.read_needs_primary(&t(&["x"]), false),
            "first use warms up"
        );
        std::thread::sleep(Duration::from_millis(35));
        assert!(!a.read_needs_primary(&t(&["x"]), false));
        assert!(!a.read_needs_primary(&t(&["public.orders"]), true));
        assert!(a.read_needs_primary(&t(&["orders"]), false));
        assert!(a.read_needs_primary(&t(&["x", "other.orders"]), false));
        assert!(!a.read_needs_primary(&t(&["x"]), false));
        std::thread::sleep(Duration::from_millis(45));
        assert!(
            !a.read_needs_primary(&t(&["orders"]), false),
            "the write expired"
        );
    }
}
