//! SHOW commands of both consoles, from `admin::report` and the registry. Numbers go out as
//! int8 columns so exporters read them as numbers; everything is text-encoded.
//!
//! Here: the dispatcher, the result writer and the small SHOWs (HELP, USERS, CONFIG, BANS,
//! LISTS); `stats`, `pools` (POOLS, DATABASES) and `connections` (CLIENTS, SERVERS) beside.

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::Message;

use super::report::{self, mode_name};
use super::Flavor;
use crate::app::App;
use crate::stats::{ClientState, ServerState, Totals};
use crate::wire::messages::{self, PgError};

mod bouncer;
mod connections;
mod pools;
mod stats;
mod transactions;

use connections::{clients, servers};
use pools::{databases, pools};
use stats::{stats, stats_split, totals};
pub use transactions::transactions;

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

fn n(v: impl ToString) -> String {
    v.to_string()
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
        "mirrors" => mirrors(app, out),
        "peers" => peers(app, out),
        "mem" => bouncer::mem(app, out),
        "fds" => bouncer::fds(out),
        "sockets" | "active_sockets" => bouncer::sockets(app, what == "active_sockets", out),
        "dns_hosts" => bouncer::dns_hosts(app, out),
        "dns_zones" => bouncer::dns_zones(out),
        "state" => bouncer::state(app, out),
        "peer_pools" => bouncer::peer_pools(app, out),
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
        "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|BANS|TRANSACTIONS|MIRRORS|PEERS",
        "SHOW MEM|FDS|SOCKETS|ACTIVE_SOCKETS|DNS_HOSTS|DNS_ZONES|STATE|PEER_POOLS",
        "SUSPEND | WAIT_CLOSE [db] | ENABLE db | DISABLE db | KILL_CLIENT id",
        "SET key = arg (accepted, no effect)",
        "RELOAD",
        "PAUSE [db] | PAUSE db,user",
        "RESUME [db] | RESUME db,user",
        "RECONNECT [db] | KILL db",
        "BAN host:port seconds | UNBAN host:port",
        "SHUTDOWN",
    ] {
        messages::notice(out, line);
    }
}

/// `SHOW MIRRORS`: each mirror of each server address (PgCat's shard `mirrors`) and what
/// it received.
fn mirrors(app: &App, out: &mut BytesMut) {
    let rows = report::mirrors(app)
        .into_iter()
        .map(|m| {
            let r = m.report;
            vec![
                m.pool,
                m.user,
                n(m.shard),
                m.server,
                m.host,
                n(m.port),
                n(r.connections),
                n(r.sent),
                n(r.bytes),
                n(r.dropped),
                n(r.errors),
                n(r.failures),
            ]
        })
        .collect();
    result(
        out,
        &[
            ("database", false),
            ("user", false),
            ("shard", true),
            ("server", false),
            ("mirror_host", false),
            ("mirror_port", true),
            ("connections", true),
            ("sent", true),
            ("bytes", true),
            ("dropped", true),
            ("errors", true),
            ("failures", true),
        ],
        rows,
    );
}

/// `SHOW PEERS` (PgBouncer's columns): the other instances cancel requests are forwarded
/// to (`[peers]`, without this instance's own entry). A forwarded request opens a
/// connection of its own, so `pool_size` is 1.
fn peers(app: &App, out: &mut BytesMut) {
    let config = app.config();
    let me = config.general.peer_id;
    let rows = (config.general.peers.iter())
        .filter(|(id, _)| Some(**id) != me)
        .map(|(id, p)| vec![n(id), p.host.clone(), n(p.port), n(1)])
        .collect();
    let cols = [
        ("peer_id", true),
        ("host", false),
        ("port", true),
        ("pool_size", true),
    ];
    result(out, &cols, rows);
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
        // PgBouncer's names, which its exporters read.
        ("listen_addr", g.host.clone(), false),
        ("listen_port", n(g.port), false),
        ("max_client_conn", n(g.max_client_conn), true),
        ("max_user_connections", n(0), false),
        ("client_login_timeout", n(g.client_login_timeout), true),
        ("dns_max_ttl", n(g.dns_max_ttl), true),
        ("so_reuseport", n(g.so_reuseport), false),
        (
            "unix_socket_dir",
            g.unix_socket_dir
                .as_ref()
                .map_or(String::new(), |d| d.display().to_string()),
            false,
        ),
        ("peer_id", g.peer_id.map_or(0, u64::from).to_string(), false),
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
        ("dns_names", app.dns.names_cached()),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), n(v)])
    .collect();
    result(out, &[("list", false), ("items", true)], data);
}
