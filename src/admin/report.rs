//! The figures operators read, gathered from the pools and the registry when asked: one
//! place that both the admin console and the Prometheus endpoint format.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::app::App;
use crate::config::{PoolMode, Role};
use crate::stats::health::Seen;
use crate::stats::{ClientState, Totals};

/// One server address of a pool user.
#[derive(Debug, Clone)]
pub struct AddressRow {
    pub pool: String,
    pub user: String,
    pub shard: usize,
    pub role: &'static str,
    /// Position among the shard's servers (PgCat's `index`).
    pub index: usize,
    /// PgCat's name: `<pool>_shard_<n>_primary` / `_replica_<k>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub mode: PoolMode,
    /// Open connections, and how many are handed out.
    pub connections: usize,
    pub active: usize,
    /// Connections being opened, and being checked before reuse.
    pub logging_in: usize,
    pub testing: usize,
    pub paused: bool,
    /// (reason, since epoch s, length s, remaining s) when banned.
    pub ban: Option<(String, u64, u64, u64)>,
    pub totals: Totals,
    pub averages: Totals,
}

/// One pool user: client and server counts.
#[derive(Debug, Clone, Default)]
pub struct PoolRow {
    pub pool: String,
    pub user: String,
    pub mode: &'static str,
    pub cl_idle: usize,
    pub cl_active: usize,
    pub cl_waiting: usize,
    pub sv_active: usize,
    pub sv_idle: usize,
    /// Server connections being opened, and being checked before reuse.
    pub sv_login: usize,
    pub sv_tested: usize,
    /// Clients whose cancel requests are being forwarded, and those requests.
    pub cl_active_cancel_req: usize,
    pub sv_active_cancel: usize,
    pub maxwait_us: u64,
    pub paused: bool,
}

pub fn mode_name(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

pub fn addresses(app: &App) -> Vec<AddressRow> {
    let mut rows = Vec::new();
    for pool in app.pools().all() {
        for (shard, servers) in pool.shards.iter().enumerate() {
            let mut replica = 0;
            for (index, a) in servers.iter().enumerate() {
                let role = match (a.role, a.health.seen()) {
                    (Role::Primary, _) | (Role::Auto, Seen::Primary) => "primary",
                    (Role::Replica, _) | (Role::Auto, Seen::Standby) => "replica",
                    (Role::Auto, Seen::Unknown) => "auto",
                };
                let name = if a.role == Role::Primary {
                    format!("{}_shard_{shard}_primary", pool.pool_name)
                } else {
                    replica += 1;
                    format!("{}_shard_{shard}_replica_{}", pool.pool_name, replica - 1)
                };
                let status = a.pool.status();
                rows.push(AddressRow {
                    pool: pool.pool_name.to_string(),
                    user: pool.username.to_string(),
                    shard,
                    role,
                    index,
                    name,
                    host: a.host.clone(),
                    port: a.port,
                    database: a.database.clone(),
                    pool_size: pool.pool_size,
                    min_pool_size: pool.min_pool_size,
                    mode: pool.mode,
                    connections: status.size,
                    active: status.size.saturating_sub(status.available),
                    logging_in: a.pool.manager().logging_in.load(Relaxed),
                    testing: a.pool.manager().testing.load(Relaxed),
                    paused: pool.is_paused(),
                    ban: a.health.ban_info(),
                    totals: a.counters.totals(),
                    averages: a.counters.averages(),
                });
            }
        }
    }
    rows
}

/// One mirror of one server address of a pool user.
#[derive(Debug, Clone)]
pub struct MirrorRow {
    pub pool: String,
    pub user: String,
    pub shard: usize,
    /// The mirrored server, `host:port`.
    pub server: String,
    pub host: String,
    pub port: u16,
    pub report: crate::backend::MirrorReport,
}

pub fn mirrors(app: &App) -> Vec<MirrorRow> {
    let mut rows = Vec::new();
    for pool in app.pools().all() {
        for (shard, servers) in pool.shards.iter().enumerate() {
            for a in servers {
                for m in &a.mirrors {
                    rows.push(MirrorRow {
                        pool: pool.pool_name.to_string(),
                        user: pool.username.to_string(),
                        shard,
                        server: format!("{}:{}", a.host, a.port),
                        host: m.host().to_string(),
                        port: m.port(),
                        report: m.report(),
                    });
                }
            }
        }
    }
    rows
}

pub fn pools(app: &App) -> Vec<PoolRow> {
    let mut rows: BTreeMap<(Arc<str>, Arc<str>), PoolRow> = BTreeMap::new();
    for pool in app.pools().all() {
        let (mut active, mut idle, mut login, mut tested) = (0, 0, 0, 0);
        for a in pool.shards.iter().flatten() {
            let s = a.pool.status();
            active += s.size.saturating_sub(s.available);
            idle += s.available;
            let m = a.pool.manager();
            login += m.logging_in.load(Relaxed);
            tested += m.testing.load(Relaxed);
        }
        rows.insert(
            (pool.pool_name.clone(), pool.username.clone()),
            PoolRow {
                pool: pool.pool_name.to_string(),
                user: pool.username.to_string(),
                mode: mode_name(pool.mode),
                sv_active: active,
                sv_idle: idle,
                sv_login: login,
                sv_tested: tested,
                paused: pool.is_paused(),
                ..PoolRow::default()
            },
        );
    }
    for c in app.registry.clients() {
        if let Some(row) = rows.get_mut(&(c.database.clone(), c.user.clone())) {
            let cancels = c.cancels_in_flight() as usize;
            row.cl_active_cancel_req += usize::from(cancels > 0);
            row.sv_active_cancel += cancels;
            match c.state() {
                ClientState::Idle => row.cl_idle += 1,
                ClientState::Active | ClientState::Pinned => row.cl_active += 1,
                ClientState::Waiting => {
                    row.cl_waiting += 1;
                    row.maxwait_us = row.maxwait_us.max(c.waiting_us());
                }
            }
        }
    }
    rows.into_values().collect()
}

/// Sums address rows per pool (database), as PgBouncer's SHOW STATS reports.
pub fn per_database(rows: &[AddressRow]) -> Vec<(String, Totals, Totals)> {
    let mut sums: BTreeMap<String, (Totals, Totals)> = BTreeMap::new();
    for r in rows {
        let e = sums.entry(r.pool.clone()).or_default();
        e.0 += r.totals;
        e.1 += r.averages;
    }
    sums.into_iter().map(|(k, (t, a))| (k, t, a)).collect()
}
