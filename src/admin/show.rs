//! SHOW commands of both consoles, from `stats::report` and the registry. Numbers go out as
//! int8 columns so exporters read them as numbers; everything is text-encoded.

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::Message;

use super::Flavor;
use crate::app::App;
use crate::stats::report::{self, mode_name};
use crate::stats::{ClientState, ServerState, Totals};
use crate::wire::messages::PgError;

/// A column: name, and whether it holds numbers.
type Col = (&'static str, bool);

const TEXT_OID: u32 = 25;
const INT8_OID: u32 = 20;

fn result(out: &mut BytesMut, cols: &[Col], rows: Vec<Vec<String>>) {
    let fields = cols
        .iter()
        .map(|(name, numeric)| {
            let (oid, size) = if *numeric {
                (INT8_OID, 8)
            } else {
                (TEXT_OID, -1)
            };
            FieldDescription::new(name.to_string(), 0, 0, oid, size, -1, 0)
        })
        .collect();
    let _ = RowDescription::new(fields).encode(out);
    for row in rows {
        let mut data = BytesMut::new();
        for value in &row {
            data.put_i32(value.len() as i32);
            data.extend_from_slice(value.as_bytes());
        }
        let _ = DataRow::new(data, row.len() as i16).encode(out);
    }
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    out.put_u8(b'C');
    out.put_u32((4 + tag.len() + 1) as u32);
    out.extend_from_slice(tag.as_bytes());
    out.put_u8(0);
}

pub fn notice(out: &mut BytesMut, text: &str) {
    let fields = vec![
        (b'S', "NOTICE".to_string()),
        (b'V', "NOTICE".to_string()),
        (b'C', "00000".to_string()),
        (b'M', text.to_string()),
    ];
    let _ = NoticeResponse::new(fields).encode(out);
}

fn n(v: impl ToString) -> String {
    v.to_string()
}

fn totals_cells(t: &Totals) -> Vec<String> {
    vec![
        n(t.xact_count),
        n(t.query_count),
        n(t.bytes_received),
        n(t.bytes_sent),
        n(t.xact_time_us),
        n(t.query_time_us),
        n(t.wait_time_us),
    ]
}

/// Runs `SHOW <what>`; returns the command tag.
pub fn run(app: &App, flavor: Flavor, what: &str, out: &mut BytesMut) -> Result<String, PgError> {
    let what = what.trim().to_ascii_lowercase();
    match what.as_str() {
        "help" => help(out),
        "stats" => stats(app, flavor, out),
        "stats_totals" | "stats_averages" => stats_split(app, what == "stats_averages", out),
        "totals" => totals(app, out),
        "pools" => pools(app, flavor, out),
        "clients" => clients(app, flavor, out),
        "servers" => servers(app, flavor, out),
        "databases" => databases(app, flavor, out),
        "users" => users(app, out),
        "config" => config(app, out),
        "lists" => lists(app, out),
        "version" => result(
            out,
            &[("version", false)],
            vec![vec![format!("PgCat {}", env!("CARGO_PKG_VERSION"))]],
        ),
        "bans" => bans(app, out),
        _ => {
            return Err(
                PgError::error("42601", format!("unsupported SHOW target: {what}"))
                    .with_hint("SHOW HELP lists the commands."),
            )
        }
    }
    Ok("SHOW".to_string())
}

fn help(out: &mut BytesMut) {
    for line in [
        "Console usage",
        "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION",
        "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|BANS",
        "SET key = arg (accepted, no effect)",
        "RELOAD",
        "PAUSE [db] | PAUSE db,user",
        "RESUME [db] | RESUME db,user",
        "RECONNECT [db] | KILL db",
        "BAN host:port seconds | UNBAN host:port",
        "SHUTDOWN",
    ] {
        notice(out, line);
    }
}

fn stats(app: &App, flavor: Flavor, out: &mut BytesMut) {
    let rows = report::addresses(app);
    match flavor {
        Flavor::PgCat => {
            let cols: &[Col] = &[
                ("instance", false),
                ("database", false),
                ("user", false),
                ("total_xact_count", true),
                ("total_query_count", true),
                ("total_received", true),
                ("total_sent", true),
                ("total_xact_time", true),
                ("total_query_time", true),
                ("total_wait_time", true),
                ("total_errors", true),
                ("avg_xact_count", true),
                ("avg_query_count", true),
                ("avg_recv", true),
                ("avg_sent", true),
                ("avg_errors", true),
                ("avg_xact_time", true),
                ("avg_query_time", true),
                ("avg_wait_time", true),
            ];
            let data = rows
                .iter()
                .map(|r| {
                    let (t, a) = (&r.totals, &r.averages);
                    let mut row = vec![r.name.clone(), r.pool.clone(), r.user.clone()];
                    row.extend(totals_cells(t));
                    row.push(n(t.errors));
                    row.extend([
                        n(a.xact_count),
                        n(a.query_count),
                        n(a.bytes_received),
                        n(a.bytes_sent),
                        n(a.errors),
                    ]);
                    row.extend([n(a.xact_time_us), n(a.query_time_us), n(a.wait_time_us)]);
                    row
                })
                .collect();
            result(out, cols, data);
        }
        Flavor::PgBouncer => {
            let cols: &[Col] = &[
                ("database", false),
                ("total_xact_count", true),
                ("total_query_count", true),
                ("total_received", true),
                ("total_sent", true),
                ("total_xact_time", true),
                ("total_query_time", true),
                ("total_wait_time", true),
                ("avg_xact_count", true),
                ("avg_query_count", true),
                ("avg_recv", true),
                ("avg_sent", true),
                ("avg_xact_time", true),
                ("avg_query_time", true),
                ("avg_wait_time", true),
            ];
            let data = report::per_database(&rows)
                .into_iter()
                .map(|(db, t, a)| {
                    let mut row = vec![db];
                    row.extend(totals_cells(&t));
                    row.extend(totals_cells(&a));
                    row
                })
                .collect();
            result(out, cols, data);
        }
    }
}

fn stats_split(app: &App, averages: bool, out: &mut BytesMut) {
    let cols: &[Col] = &[
        ("database", false),
        ("xact_count", true),
        ("query_count", true),
        ("bytes_received", true),
        ("bytes_sent", true),
        ("xact_time", true),
        ("query_time", true),
        ("wait_time", true),
    ];
    let data = report::per_database(&report::addresses(app))
        .into_iter()
        .map(|(db, t, a)| {
            let mut row = vec![db];
            row.extend(totals_cells(if averages { &a } else { &t }));
            row
        })
        .collect();
    result(out, cols, data);
}

fn totals(app: &App, out: &mut BytesMut) {
    let mut sum = Totals::default();
    for r in report::addresses(app) {
        sum += r.totals;
    }
    let data = [
        ("total_xact_count", sum.xact_count),
        ("total_query_count", sum.query_count),
        ("total_received", sum.bytes_received),
        ("total_sent", sum.bytes_sent),
        ("total_xact_time", sum.xact_time_us),
        ("total_query_time", sum.query_time_us),
        ("total_wait_time", sum.wait_time_us),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), n(v)])
    .collect();
    result(out, &[("name", false), ("value", true)], data);
}

fn pools(app: &App, flavor: Flavor, out: &mut BytesMut) {
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
            let cols: &[Col] = &[
                ("database", false),
                ("user", false),
                ("pool_mode", false),
                ("cl_idle", true),
                ("cl_active", true),
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
            result(out, cols, data);
        }
        Flavor::PgBouncer => {
            let cols: &[Col] = &[
                ("database", false),
                ("user", false),
                ("cl_active", true),
                ("cl_waiting", true),
                ("cl_cancel_req", true),
                ("sv_active", true),
                ("sv_idle", true),
                ("sv_used", true),
                ("sv_tested", true),
                ("sv_login", true),
                ("maxwait", true),
                ("maxwait_us", true),
                ("pool_mode", false),
            ];
            let data = rows
                .iter()
                .map(|p| {
                    let mut row = vec![p.pool.clone(), p.user.clone(), n(p.cl_active + p.cl_idle)];
                    row.extend(counts(p));
                    row.push(p.mode.to_string());
                    row
                })
                .collect();
            result(out, cols, data);
        }
    }
}

/// PgBouncer's SHOW CLIENTS / SHOW SERVERS columns.
const BOUNCER_CONNECTION_COLUMNS: &[Col] = &[
    ("type", false),
    ("user", false),
    ("database", false),
    ("state", false),
    ("addr", false),
    ("port", true),
    ("local_addr", false),
    ("local_port", true),
    ("connect_time", false),
    ("request_time", false),
    ("wait", true),
    ("wait_us", true),
    ("close_needed", true),
    ("ptr", false),
    ("link", false),
    ("remote_pid", true),
    ("tls", false),
    ("application_name", false),
];

fn timestamp(t: std::time::SystemTime) -> String {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string()
}

#[allow(clippy::too_many_arguments)]
fn bouncer_row(
    kind: &str,
    user: &str,
    database: &str,
    state: &str,
    addr: &str,
    connected_at: std::time::SystemTime,
    wait_us: u64,
    id: u64,
    application_name: &str,
) -> Vec<String> {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    vec![
        kind.to_string(),
        user.to_string(),
        database.to_string(),
        state.to_string(),
        host.to_string(),
        port.to_string(),
        String::new(),
        n(0),
        timestamp(connected_at),
        timestamp(std::time::SystemTime::now()),
        n(wait_us / 1_000_000),
        n(wait_us % 1_000_000),
        n(0),
        format!("{id:#x}"),
        String::new(),
        n(0),
        String::new(),
        application_name.to_string(),
    ]
}

/// A client's state as PgCat's console names it, and PgBouncer's (which has no pinned
/// clients: one holding a server is active).
fn client_state(s: ClientState, flavor: Flavor) -> &'static str {
    match (s, flavor) {
        (ClientState::Idle, _) => "idle",
        (ClientState::Active, _) | (ClientState::Pinned, Flavor::PgBouncer) => "active",
        (ClientState::Waiting, _) => "waiting",
        (ClientState::Pinned, Flavor::PgCat) => "pinned",
    }
}

fn clients(app: &App, flavor: Flavor, out: &mut BytesMut) {
    let list = app.registry.clients();
    match flavor {
        Flavor::PgCat => {
            let cols: &[Col] = &[
                ("client_id", false),
                ("database", false),
                ("user", false),
                ("application_name", false),
                ("state", false),
                ("transaction_count", true),
                ("query_count", true),
                ("error_count", true),
                ("age_seconds", true),
                ("maxwait", true),
                ("maxwait_us", true),
            ];
            let data = list
                .iter()
                .map(|c| {
                    let w = c.max_wait_us();
                    vec![
                        format!("{:#010X}", c.id),
                        c.database.to_string(),
                        c.user.to_string(),
                        c.application_name.to_string(),
                        client_state(c.state(), flavor).to_string(),
                        n(c.xact_count.load(std::sync::atomic::Ordering::Relaxed)),
                        n(c.query_count.load(std::sync::atomic::Ordering::Relaxed)),
                        n(c.error_count.load(std::sync::atomic::Ordering::Relaxed)),
                        n(c.since.elapsed().as_secs()),
                        n(w / 1_000_000),
                        n(w % 1_000_000),
                    ]
                })
                .collect();
            result(out, cols, data);
        }
        Flavor::PgBouncer => {
            let data = list
                .iter()
                .map(|c| {
                    let w = c.waiting_us();
                    bouncer_row(
                        "C",
                        &c.user,
                        &c.database,
                        client_state(c.state(), flavor),
                        &c.addr(),
                        c.connected_at(),
                        w,
                        c.id,
                        &c.application_name,
                    )
                })
                .collect();
            result(out, BOUNCER_CONNECTION_COLUMNS, data);
        }
    }
}

fn servers(app: &App, flavor: Flavor, out: &mut BytesMut) {
    use std::sync::atomic::Ordering::Relaxed;
    let list = app.registry.servers();
    let state = |s: ServerState| {
        if s == ServerState::Active {
            "active"
        } else {
            "idle"
        }
    };
    match flavor {
        Flavor::PgCat => {
            let cols: &[Col] = &[
                ("server_id", false),
                ("database_name", false),
                ("user", false),
                ("address_id", false),
                ("application_name", false),
                ("state", false),
                ("transaction_count", true),
                ("query_count", true),
                ("bytes_sent", true),
                ("bytes_received", true),
                ("age_seconds", true),
            ];
            let data = list
                .iter()
                .map(|s| {
                    vec![
                        format!("{:#010X}", s.id),
                        s.database.clone(),
                        s.user.clone(),
                        s.addr.clone(),
                        "pgcat".to_string(),
                        state(s.state()).to_string(),
                        n(s.xact_count.load(Relaxed)),
                        n(s.query_count.load(Relaxed)),
                        n(s.bytes_sent.load(Relaxed)),
                        n(s.bytes_received.load(Relaxed)),
                        n(s.since.elapsed().as_secs()),
                    ]
                })
                .collect();
            result(out, cols, data);
        }
        Flavor::PgBouncer => {
            let data = list
                .iter()
                .map(|s| {
                    bouncer_row(
                        "S",
                        &s.user,
                        &s.database,
                        state(s.state()),
                        &s.addr,
                        s.connected_at,
                        0,
                        s.id,
                        "pgcat",
                    )
                })
                .collect();
            result(out, BOUNCER_CONNECTION_COLUMNS, data);
        }
    }
}

fn databases(app: &App, flavor: Flavor, out: &mut BytesMut) {
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

fn users(app: &App, out: &mut BytesMut) {
    let data = app
        .pools()
        .all()
        .iter()
        .map(|p| vec![p.username.to_string(), mode_name(p.mode).to_string()])
        .collect();
    result(out, &[("name", false), ("pool_mode", false)], data);
}

fn config(app: &App, out: &mut BytesMut) {
    let c = app.config();
    let g = &c.general;
    let rows: Vec<(&str, String, bool)> = vec![
        ("host", g.host.clone(), false),
        ("port", n(g.port), false),
        ("connect_timeout", n(g.connect_timeout), true),
        ("idle_timeout", n(g.idle_timeout), true),
        ("server_lifetime", n(g.server_lifetime), true),
        (
            "idle_client_in_transaction_timeout",
            n(g.idle_client_in_transaction_timeout),
            true,
        ),
        ("shutdown_timeout", n(g.shutdown_timeout), true),
        ("healthcheck_timeout", n(g.healthcheck_timeout), true),
        ("healthcheck_delay", n(g.healthcheck_delay), true),
        ("ban_time", n(g.ban_time), true),
        ("server_round_robin", n(g.server_round_robin), true),
        ("worker_threads", n(g.worker_threads), false),
        (
            "autoreload",
            g.autoreload.map_or_else(|| "off".to_string(), n),
            true,
        ),
        ("tcp_keepalives_idle", n(g.tcp_keepalives_idle), true),
        ("tcp_keepalives_count", n(g.tcp_keepalives_count), true),
        (
            "tcp_keepalives_interval",
            n(g.tcp_keepalives_interval),
            true,
        ),
        ("tcp_user_timeout", n(g.tcp_user_timeout), true),
        ("log_client_connections", n(g.log_client_connections), true),
        (
            "log_client_disconnections",
            n(g.log_client_disconnections),
            true,
        ),
        (
            "enable_prometheus_exporter",
            n(g.enable_prometheus_exporter),
            false,
        ),
        (
            "prometheus_exporter_port",
            n(g.prometheus_exporter_port),
            false,
        ),
        ("admin_username", g.admin_username.clone(), true),
        (
            "admin_auth_type",
            format!("{:?}", g.admin_auth_type).to_lowercase(),
            true,
        ),
    ];
    let data = rows
        .into_iter()
        .map(|(k, v, changeable)| {
            vec![
                k.to_string(),
                v,
                "-".to_string(),
                if changeable { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    result(
        out,
        &[
            ("key", false),
            ("value", false),
            ("default", false),
            ("changeable", false),
        ],
        data,
    );
}

fn bans(app: &App, out: &mut BytesMut) {
    let data = report::addresses(app)
        .into_iter()
        .filter_map(|r| {
            let (reason, since, secs, left) = r.ban?;
            Some(vec![
                r.pool,
                r.user,
                r.role.to_string(),
                format!("{}:{}", r.host, r.port),
                reason,
                n(since),
                n(secs),
                n(left),
            ])
        })
        .collect();
    result(
        out,
        &[
            ("db", false),
            ("user", false),
            ("role", false),
            ("host", false),
            ("reason", false),
            ("ban_time", true),
            ("ban_duration_seconds", true),
            ("ban_remaining_seconds", true),
        ],
        data,
    );
}

fn lists(app: &App, out: &mut BytesMut) {
    let pools = app.pools();
    let clients = app.registry.clients();
    let servers = app.registry.servers();
    let active = servers
        .iter()
        .filter(|s| s.state() == ServerState::Active)
        .count();
    let data = [
        (
            "databases",
            pools
                .all()
                .iter()
                .map(|p| &p.pool_name)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        ),
        (
            "users",
            pools
                .all()
                .iter()
                .map(|p| &p.username)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        ),
        ("pools", pools.all().len()),
        ("free_clients", 0),
        ("used_clients", clients.len()),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", servers.len()),
        ("active_servers", active),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), n(v)])
    .collect();
    result(out, &[("list", false), ("items", true)], data);
}
