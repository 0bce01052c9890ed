//! The `/metrics` page (served by `http`) in the Prometheus text format, with PgCat's metric names and labels
//! (`pgcat_stats_*` per server address, `pgcat_pools_*` per pool user,
//! `pgcat_databases_*` per address), rendered from `report` at each scrape.

use std::fmt::Write as _;

use super::report::{self, AddressRow};
use crate::app::App;
use crate::stats::Totals;

fn labels(r: &AddressRow) -> String {
    format!(
        "host=\"{}\",shard=\"{}\",role=\"{}\",pool=\"{}\",index=\"{}\",database=\"{}\",username=\"{}\"",
        escape(&r.host),
        r.shard,
        r.role,
        escape(&r.pool),
        r.index,
        escape(&r.database),
        escape(&r.user)
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its HELP/TYPE lines and a sample per (labels, value).
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A counter PgCat exports per address: name, help text, and how to read it.
type Stat = (&'static str, &'static str, fn(&Totals) -> u64);

/// The counters PgCat exports per address.
const STATS: [Stat; 8] = [
    ("total_xact_count", "Transactions completed", |t| {
        t.xact_count
    }),
    ("total_query_count", "Queries completed", |t| t.query_count),
    ("total_received", "Bytes received from clients", |t| {
        t.bytes_received
    }),
    ("total_sent", "Bytes sent to clients", |t| t.bytes_sent),
    (
        "total_xact_time",
        "Microseconds spent in transactions",
        |t| t.xact_time_us,
    ),
    ("total_query_time", "Microseconds spent in queries", |t| {
        t.query_time_us
    }),
    (
        "total_wait_time",
        "Microseconds clients waited for a server",
        |t| t.wait_time_us,
    ),
    ("total_errors", "Errors reported by servers", |t| t.errors),
];

pub fn render(app: &App) -> String {
    let mut out = String::new();
    let rows = report::addresses(app);
    for (stat, help, get) in STATS {
        let name = format!("pgcat_stats_{stat}");
        family(
            &mut out,
            &name,
            "counter",
            help,
            rows.iter().map(|r| (labels(r), get(&r.totals))),
        );
        // PgCat's averages: `avg_recv` for `total_received`, else `total_` → `avg_`.
        let avg = match stat {
            "total_received" => "pgcat_stats_avg_recv".to_string(),
            _ => format!("pgcat_stats_{}", stat.replacen("total_", "avg_", 1)),
        };
        family(
            &mut out,
            &avg,
            "gauge",
            &format!("{help}, average of the last period"),
            rows.iter().map(|r| (labels(r), get(&r.averages))),
        );
    }
    family(
        &mut out,
        "pgcat_databases_pool_size",
        "gauge",
        "Configured pool_size",
        rows.iter().map(|r| (labels(r), r.pool_size as u64)),
    );
    family(
        &mut out,
        "pgcat_databases_current_connections",
        "gauge",
        "Open server connections",
        rows.iter().map(|r| (labels(r), r.connections as u64)),
    );
    // PgCat's per-server figures, per address (the counters are the address's, so they
    // never go down when a connection closes, unlike PgCat's sums over live connections).
    for (name, kind, help, get) in [
        (
            "bytes_received",
            "counter",
            "Bytes sent to the server (received by it)",
            (|r| r.totals.bytes_received) as fn(&AddressRow) -> u64,
        ),
        ("bytes_sent", "counter", "Bytes the server sent", |r| {
            r.totals.bytes_sent
        }),
        (
            "transaction_count",
            "counter",
            "Transactions the server ran",
            |r| r.totals.xact_count,
        ),
        ("query_count", "counter", "Queries the server ran", |r| {
            r.totals.query_count
        }),
        (
            "error_count",
            "counter",
            "Errors the server reported",
            |r| r.totals.errors,
        ),
        ("active_count", "gauge", "Server connections in use", |r| {
            r.active as u64
        }),
        ("idle_count", "gauge", "Server connections idle", |r| {
            r.connections.saturating_sub(r.active) as u64
        }),
        (
            "login_count",
            "gauge",
            "Server connections being opened",
            |r| r.logging_in as u64,
        ),
        (
            "tested_count",
            "gauge",
            "Server connections being checked before reuse",
            |r| r.testing as u64,
        ),
    ] {
        family(
            &mut out,
            &format!("pgcat_servers_{name}"),
            kind,
            help,
            rows.iter().map(|r| (labels(r), get(r))),
        );
    }
    family(
        &mut out,
        "pgcat_servers_is_paused",
        "gauge",
        "1 when the pool is paused",
        rows.iter().map(|r| (labels(r), r.paused as u64)),
    );
    family(
        &mut out,
        "pgcat_servers_is_banned",
        "gauge",
        "1 when the server is banned",
        rows.iter().map(|r| (labels(r), r.ban.is_some() as u64)),
    );
    let pools = report::pools(app);
    let pool_labels = |p: &report::PoolRow| {
        format!(
            "pool=\"{}\",user=\"{}\",pool_mode=\"{}\"",
            escape(&p.pool),
            escape(&p.user),
            p.mode
        )
    };
    for (stat, help, get) in [
        (
            "cl_idle",
            "Clients idle",
            (|p| p.cl_idle as u64) as fn(&report::PoolRow) -> u64,
        ),
        ("cl_active", "Clients holding a server", |p| {
            p.cl_active as u64
        }),
        ("cl_waiting", "Clients waiting for a server", |p| {
            p.cl_waiting as u64
        }),
        ("sv_active", "Server connections in use", |p| {
            p.sv_active as u64
        }),
        ("sv_idle", "Server connections idle", |p| p.sv_idle as u64),
        ("sv_login", "Server connections being opened", |p| {
            p.sv_login as u64
        }),
        (
            "sv_tested",
            "Server connections being checked before reuse",
            |p| p.sv_tested as u64,
        ),
        (
            "maxwait",
            "Longest current wait for a server, seconds",
            |p| p.maxwait_us / 1_000_000,
        ),
        (
            "maxwait_us",
            "Longest current wait for a server, microseconds part",
            |p| p.maxwait_us % 1_000_000,
        ),
    ] {
        family(
            &mut out,
            &format!("pgcat_pools_{stat}"),
            "gauge",
            help,
            pools.iter().map(|p| (pool_labels(p), get(p))),
        );
    }
    let mirrors = report::mirrors(app);
    let mirror_labels = |m: &report::MirrorRow| {
        format!(
            "pool=\"{}\",user=\"{}\",shard=\"{}\",server=\"{}\",mirror=\"{}:{}\"",
            escape(&m.pool),
            escape(&m.user),
            m.shard,
            escape(&m.server),
            escape(&m.host),
            m.port
        )
    };
    for (name, kind, help, get) in [
        (
            "pgcat_mirror_sent_total",
            "counter",
            "Writes copied to the mirror",
            (|r| r.sent) as fn(&crate::backend::MirrorReport) -> u64,
        ),
        (
            "pgcat_mirror_bytes_total",
            "counter",
            "Bytes copied to the mirror",
            |r| r.bytes,
        ),
        (
            "pgcat_mirror_dropped_total",
            "counter",
            "Writes not copied: the mirror's queue was full or the mirror was down",
            |r| r.dropped,
        ),
        (
            "pgcat_mirror_errors_total",
            "counter",
            "ErrorResponses from the mirror",
            |r| r.errors,
        ),
        (
            "pgcat_mirror_failures_total",
            "counter",
            "Mirror connections that could not be opened or broke",
            |r| r.failures,
        ),
        (
            "pgcat_mirror_connections",
            "gauge",
            "Mirror connections open",
            |r| r.connections,
        ),
    ] {
        if !mirrors.is_empty() {
            family(
                &mut out,
                name,
                kind,
                help,
                mirrors.iter().map(|m| (mirror_labels(m), get(&m.report))),
            );
        }
    }
    family(
        &mut out,
        "pgcat_admin_logins_total",
        "counter",
        "Logins to the admin console (logged at DEBUG only)",
        [(
            String::new(),
            app.admin_logins.load(std::sync::atomic::Ordering::Relaxed),
        )],
    );
    family(
        &mut out,
        "pgcat_upgrade_clients_received_total",
        "counter",
        "Clients this process took over from the previous one in an online upgrade",
        [(
            String::new(),
            app.clients_taken_over
                .load(std::sync::atomic::Ordering::Relaxed),
        )],
    );
    if let Some(coordinator) = app.two_phase() {
        let t = coordinator.totals();
        for (name, help, value) in [
            (
                "prepared",
                "Shards' parts of two-phase transactions prepared",
                t.prepared,
            ),
            (
                "committed",
                "Prepared parts committed by their session (COMMIT PREPARED)",
                t.committed,
            ),
            (
                "rolled_back",
                "Prepared parts rolled back by their session (a PREPARE failed elsewhere)",
                t.rolled_back,
            ),
            (
                "recovered",
                "In-doubt prepared parts the resolver ended (committed or rolled back)",
                t.recovered,
            ),
        ] {
            family(
                &mut out,
                &format!("pgcat_two_phase_{name}_total"),
                "counter",
                help,
                [(String::new(), value)],
            );
        }
    }
    out
}
