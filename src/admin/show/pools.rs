//! SHOW POOLS and DATABASES (both flavours): one row per pool (user) and per shard address.

use super::*;

/// The columns of `counts` in [`pools`], the same in both flavours.
const COUNT_COLUMNS: [Col; 9] = [
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

pub(super) fn pools(app: &App, flavor: Flavor, out: &mut BytesMut) {
    let rows = report::pools(app);
    let counts = |p: &report::PoolRow| {
        vec![
            n(p.cl_waiting),
            n(0),
            n(p.sv_active),
            n(p.sv_idle),
            n(0),
            n(0),
            n(0),
            n(p.maxwait_us / 1_000_000),
            n(p.maxwait_us % 1_000_000),
        ]
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
            let cols = [&head[..], &COUNT_COLUMNS].concat();
            let data = rows
                .iter()
                .map(|p| {
                    let mut row = vec![
                        p.pool.clone(),
                        p.user.clone(),
                        p.mode.to_string(),
                        n(p.cl_idle),
                        n(p.cl_active),
                    ];
                    row.extend(counts(p));
                    row
                })
                .collect();
            result(out, &cols, data);
        }
        Flavor::PgBouncer => {
            let head: [Col; 3] = [("database", false), ("user", false), ("cl_active", true)];
            let cols = [&head[..], &COUNT_COLUMNS, &[("pool_mode", false)]].concat();
            let data = rows
                .iter()
                .map(|p| {
                    let mut row = vec![p.pool.clone(), p.user.clone(), n(p.cl_active + p.cl_idle)];
                    row.extend(counts(p));
                    row.push(p.mode.to_string());
                    row
                })
                .collect();
            result(out, &cols, data);
        }
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
    let data = rows
        .into_iter()
        .map(|r| {
            let banned = r.ban.is_some() as u8;
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
        })
        .collect();
    result(out, cols, data);
}
