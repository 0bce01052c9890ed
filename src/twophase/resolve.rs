//! In-doubt transactions: those this instance prepared (their gid has its prefix) that
//! no session is finishing. A pass lists them on every shard of every pool with two-phase
//! commit (`pg_prepared_xacts`: the pool user's own, in the shard's database) and, when
//! asked to, ends them: `COMMIT PREPARED` where the decision log has the decision to
//! commit, `ROLLBACK PREPARED` otherwise (no decision was logged, so no shard was told to
//! commit). Once a pass reached every shard, a decision whose transaction no shard still
//! holds is done. The runtime runs a pass at startup and every few seconds; `SHOW
//! TRANSACTIONS` runs one that only lists.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pgcat_parser::{Role, Route};

use super::TwoPhase;
use crate::backend::quote_literal;
use crate::pool::{checkin, UserPool};

/// The decision log is compacted once longer than this (about 10,000 transactions).
const COMPACT_PAST: u64 = 1 << 20;

/// One prepared transaction of this instance on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    pub pool: String,
    pub user: String,
    pub shard: usize,
    pub gid: String,
    /// Seconds since it was prepared.
    pub age: i64,
    /// `in flight` (a session is committing it), `commit` (decided: to be committed) or
    /// `rollback` (no decision: to be rolled back).
    pub state: &'static str,
}

/// What a pass found and did.
#[derive(Debug, Default)]
pub struct Pass {
    /// The prepared transactions found (before they were ended, if they were).
    pub found: Vec<InDoubt>,
    /// Shards that could not be asked, and why.
    pub unreachable: Vec<String>,
    /// Shards whose `max_prepared_transactions` is 0 (two-phase commits fail there).
    pub disabled: Vec<String>,
}

/// Lists this instance's prepared transactions on every shard of `pools` (those with
/// two-phase commit) and, with `end`, ends those no session is finishing.
pub async fn resolve(coordinator: &Arc<TwoPhase>, pools: &[&Arc<UserPool>], end: bool) -> Pass {
    let mut pass = Pass::default();
    let mut still_prepared = BTreeSet::new();
    for pool in pools.iter().filter(|p| p.two_phase_commit) {
        for shard in 0..pool.shards.len() {
            let name = format!("{}/{} shard {shard}", pool.pool_name, pool.username);
            match resolve_shard(coordinator, pool, shard, end).await {
                Ok(listed) => {
                    if !listed.enabled {
                        pass.disabled.push(name);
                    }
                    still_prepared.extend(listed.left);
                    pass.found.extend(listed.found);
                }
                Err(why) => pass.unreachable.push(format!("{name}: {why}")),
            }
        }
    }
    if end {
        let coordinator = coordinator.clone();
        let compacted =
            tokio::task::spawn_blocking(move || coordinator.log.compact_if_larger(COMPACT_PAST));
        if let Ok(Err(e)) = compacted.await {
            tracing::warn!(error = %e, "could not compact the two-phase decision log");
        }
    }
    if end && pass.unreachable.is_empty() {
        for gid in coordinator.decided_idle() {
            if !still_prepared.contains(&gid) {
                coordinator.finished(&gid);
            }
        }
    }
    pass
}

/// What one shard had.
struct Listed {
    found: Vec<InDoubt>,
    /// The gids still prepared there after the pass.
    left: Vec<String>,
    /// Its `max_prepared_transactions` is not 0.
    enabled: bool,
}

/// One shard's prepared transactions of this instance, ended with `end`.
async fn resolve_shard(
    coordinator: &Arc<TwoPhase>,
    pool: &UserPool,
    shard: usize,
    end: bool,
) -> Result<Listed, String> {
    let route = Route {
        shard: Some(shard),
        role: Some(Role::Primary),
    };
    let mut server = pool.checkout(route).await.map_err(|e| e.message)?;
    // One round trip: the setting on every row, and one row even with nothing prepared.
    let sql = format!(
        "SELECT p.gid, extract(epoch FROM now() - p.prepared)::bigint, \
                current_setting('max_prepared_transactions') \
         FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_prepared_xacts p \
           ON p.database = current_database() AND p.owner = current_user \
          AND starts_with(p.gid, {}) \
         ORDER BY p.prepared",
        quote_literal(coordinator.prefix())
    );
    let rows = match server.query_rows(&sql).await {
        Ok(rows) => rows,
        Err(e) => {
            checkin(server, pool.mode).await;
            return Err(e.to_string());
        }
    };
    let enabled = (rows.first())
        .and_then(|row| row.get(2).cloned().flatten())
        .is_none_or(|v| v != "0");
    let mut found = Vec::new();
    let mut left = Vec::new();
    for row in rows {
        let Some(gid) = row.first().cloned().flatten() else {
            continue;
        };
        let age = row.get(1).cloned().flatten().and_then(|a| a.parse().ok());
        // `<transaction's gid>_<shard>` (see `commit`).
        let base = gid.rsplit_once('_').map_or(gid.as_str(), |(base, _)| base);
        let state = if coordinator.is_in_flight(base) {
            "in flight"
        } else if coordinator.is_decided(base) {
            "commit"
        } else {
            "rollback"
        };
        let mut ended = false;
        if end && state != "in flight" {
            let verb = if state == "commit" {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            let sql = format!("{verb} PREPARED {}", quote_literal(&gid));
            match server.execute(&sql).await {
                Ok(_) => {
                    ended = true;
                    coordinator.counters.recovered.fetch_add(1, Relaxed);
                    tracing::info!(pool = %pool.pool_name, shard, gid, action = verb, "ended an in-doubt two-phase transaction");
                }
                Err(e) => {
                    tracing::warn!(pool = %pool.pool_name, shard, gid, error = %e, "could not end an in-doubt two-phase transaction");
                }
            }
        }
        if !ended {
            left.push(base.to_string());
        }
        found.push(InDoubt {
            pool: pool.pool_name.to_string(),
            user: pool.username.to_string(),
            shard,
            gid,
            age: age.unwrap_or(0),
            state,
        });
    }
    checkin(server, pool.mode).await;
    Ok(Listed {
        found,
        left,
        enabled,
    })
}
