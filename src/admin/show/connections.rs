//! SHOW CLIENTS and SERVERS (both flavours): one row per connection.

use super::*;

/// PgBouncer's SHOW CLIENTS / SHOW SERVERS columns.
pub(super) const BOUNCER_CONNECTION_COLUMNS: &[Col] = &[
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

/// PgBouncer's timestamp text (`2026-12-04 14:30:05 UTC`).
pub(super) fn timestamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// One row of PgBouncer's SHOW CLIENTS / SERVERS.
struct BouncerRow<'a> {
    kind: &'a str,
    user: &'a str,
    database: &'a str,
    state: &'a str,
    addr: &'a str,
    local: Option<std::net::SocketAddr>,
    connected_at: std::time::SystemTime,
    wait_us: u64,
    id: u64,
    remote_pid: i32,
    application_name: &'a str,
}

impl BouncerRow<'_> {
    fn cells(&self) -> Vec<String> {
        let (host, port) = self.addr.rsplit_once(':').unwrap_or((self.addr, "0"));
        let connected = timestamp(self.connected_at);
        vec![
            self.kind.to_string(),
            self.user.to_string(),
            self.database.to_string(),
            self.state.to_string(),
            host.to_string(),
            port.to_string(),
            self.local.map_or(String::new(), |a| a.ip().to_string()),
            n(self.local.map_or(0, |a| a.port())),
            connected.clone(),
            // The latest request is not tracked (a clock read per request): the login.
            connected,
            n(self.wait_us / 1_000_000),
            n(self.wait_us % 1_000_000),
            n(0),
            format!("{:#x}", self.id),
            String::new(),
            n(self.remote_pid),
            String::new(),
            self.application_name.to_string(),
        ]
    }
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

pub(super) fn clients(app: &App, flavor: Flavor, out: &mut BytesMut) {
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
        Flavor::PgBouncer => result(out, BOUNCER_CONNECTION_COLUMNS, bouncer_clients(app, false)),
    }
}

/// PgBouncer's rows of the clients (`active`: only those holding or waiting for a server).
fn bouncer_clients(app: &App, active: bool) -> Vec<Vec<String>> {
    // A client's local address: where the pooler listens (not kept per client, to keep
    // an idle client's record small).
    let config = app.config();
    let listen_addr = (config.general.host.parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, config.general.port));
    (app.registry.clients().iter())
        .filter(|c| !active || c.state() != ClientState::Idle)
        .map(|c| {
            BouncerRow {
                kind: "C",
                user: &c.user,
                database: &c.database,
                state: client_state(c.state(), Flavor::PgBouncer),
                addr: &c.addr(),
                local: listen_addr,
                connected_at: c.connected_at(),
                wait_us: c.waiting_us(),
                id: c.id,
                remote_pid: 0,
                application_name: &c.application_name,
            }
            .cells()
        })
        .collect()
}

/// PgBouncer's rows of the server connections (`active`: only those in use).
fn bouncer_servers(app: &App, active: bool) -> Vec<Vec<String>> {
    (app.registry.servers().iter())
        .filter(|s| !active || s.state() == ServerState::Active)
        .map(|s| {
            BouncerRow {
                kind: "S",
                user: &s.user,
                database: &s.database,
                state: server_state(s.state()),
                addr: &s.addr,
                local: s.local,
                connected_at: s.connected_at,
                wait_us: 0,
                id: s.id,
                remote_pid: s.backend_pid,
                application_name: "pgcat",
            }
            .cells()
        })
        .collect()
}

/// PgBouncer's rows of every connection, clients first (SHOW SOCKETS).
pub(super) fn bouncer_rows(app: &App, active: bool) -> Vec<Vec<String>> {
    let mut rows = bouncer_clients(app, active);
    rows.extend(bouncer_servers(app, active));
    rows
}

fn server_state(s: ServerState) -> &'static str {
    if s == ServerState::Active {
        "active"
    } else {
        "idle"
    }
}

pub(super) fn servers(app: &App, flavor: Flavor, out: &mut BytesMut) {
    use std::sync::atomic::Ordering::Relaxed;
    let list = app.registry.servers();
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
                        server_state(s.state()).to_string(),
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
        Flavor::PgBouncer => result(out, BOUNCER_CONNECTION_COLUMNS, bouncer_servers(app, false)),
    }
}
