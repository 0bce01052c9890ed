//! SHOW POOLS and DATABASES (both flavours): one row per pool (user) and per shard address.

use super::*;

/// PgCat's SHOW POOLS columns after `cl_active` (its pre-1.18 PgBouncer set).
const PGCAT_COUNTS: [Col; 9] = [
    ("cl_waiting", true),
    ("cl_cancel_req", true),
    ("sv_active", true),
    ("sv_idle", true),
    ("sv_used", true),
    ("sv_tested", true),
    ("sv_login", true),
    ("maxwait", true),
    ("maxwait_us", true),
];

/// PgBouncer 1.18+'s SHOW POOLS columns.
const PGBOUNCER_COLUMNS: [Col; 16] = [
    ("database", false),
    ("user", false),
    ("cl_active", true),
    ("cl_waiting", true),
    ("cl_active_cancel_req", true),
    ("cl_waiting_cancel_req", true),
    ("sv_active", true),
    ("sv_active_cancel", true),
    ("sv_being_canceled", true),
    ("sv_idle", true),
    ("sv_used", true),
    ("sv_tested", true),
    ("sv_login", true),
    ("maxwait", true),
    ("maxwait_us", true),
    ("pool_mode", false),
];

/// SHOW POOLS: one row per pool user. Cancel requests are forwarded as they arrive, never
/// queued, and a server is not held back while a cancel reaches it: `cl_waiting_cancel_req`
/// and `sv_being_canceled` are always 0; `sv_used` too (a returned server is reused as is).
pub(super) fn pools(app: &App, flavor: Flavor, out: &mut BytesMut) {
    let rows = report::pools(app);
    let wait = |p: &report::PoolRow| (p.maxwait_us / 1_000_000, p.maxwait_us % 1_000_000);
    let data = match flavor {
        Flavor::PgCat => rows
            .iter()
            .map(|p| {
                let (s, us) = wait(p);
                vec![
                    p.pool.clone(),
                    p.user.clone(),
                    p.mode.to_string(),
                    n(p.cl_idle),
                    n(p.cl_active),
                    n(p.cl_waiting),
                    n(p.cl_active_cancel_req),
                    n(p.sv_active),
                    n(p.sv_idle),
                    n(0),
                    n(p.sv_tested),
                    n(p.sv_login),
                    n(s),
                    n(us),
                ]
            })
            .collect(),
        Flavor::PgBouncer => rows
            .iter()
            .map(|p| {
                let (s, us) = wait(p);
                vec![
                    p.pool.clone(),
                    p.user.clone(),
                    n(p.cl_active + p.cl_idle),
                    n(p.cl_waiting),
                    n(p.cl_active_cancel_req),
                    n(0),
                    n(p.sv_active),
                    n(p.sv_active_cancel),
                    n(0),
                    n(p.sv_idle),
                    n(0),
                    n(p.sv_tested),
                    n(p.sv_login),
                    n(s),
                    n(us),
                    p.mode.to_string(),
                ]
            })
            .collect(),
    };
    match flavor {
        Flavor::PgCat => {
            let head: [Col; 5] = [
                ("database", false),
                ("user", false),
                ("pool_mode", false),
                ("cl_idle", true),
                ("cl_active", true),
            ];
            result(out, &[&head[..], &PGCAT_COUNTS].concat(), data);
        }
        Flavor::PgBouncer => result(out, &PGBOUNCER_COLUMNS, data),
    }
}

pub(super) fn databases(app: &App, flavor: Flavor, out: &mut BytesMut) {
    let cols: &[Col] = &[
        ("name", false),
        ("host", false),
        ("port", true),
        ("database", false),
        ("force_user", false),
        ("pool_size", true),
        ("min_pool_size", true),
        ("reserve_pool", true),
        ("pool_mode", false),
        ("max_connections", true),
        ("current_connections", true),
        ("paused", true),
        ("disabled", true),
    ];
    let mut rows = report::addresses(app);
    if flavor == Flavor::PgBouncer {
        // PgBouncer: one row per database (pool): its first server, connections summed.
        let mut merged: Vec<report::AddressRow> = Vec::new();
        for r in rows {
            match merged.iter_mut().find(|m| m.pool == r.pool) {
                Some(m) => {
                    m.connections += r.connections;
                    m.pool_size = m.pool_size.max(r.pool_size);
                    m.paused |= r.paused;
                }
                None => merged.push(report::AddressRow {
                    name: r.pool.clone(),
                    ..r
                }),
            }
        }
        rows = merged;
    }
    let mut data: Vec<Vec<String>> = Vec::new();
    if flavor == Flavor::PgBouncer {
        // PgBouncer lists its admin database too (exporters expect the row).
        let port = app.config().general.port;
        let console = [
            "pgbouncer",
            "",
            &n(port),
            "pgbouncer",
            "pgbouncer",
            "2",
            "0",
            "0",
        ];
        let mut row: Vec<String> = console.iter().map(|s| s.to_string()).collect();
        row.extend(["statement", "0", "0", "0", "0"].map(String::from));
        data.push(row);
    }
    data.extend(rows.into_iter().map(|r| {
        let banned = (r.ban.is_some() || app.is_disabled(&r.pool)) as u8;
        vec![
            r.name,
            r.host,
            n(r.port),
            r.database,
            r.user,
            n(r.pool_size),
            n(r.min_pool_size),
            n(0),
            mode_name(r.mode).to_string(),
            n(r.pool_size),
            n(r.connections),
            n(r.paused as u8),
            n(banned),
        ]
    }));
    result(out, cols, data);
}
