//! SHOW CLIENTS and SERVERS (both flavours): one row per connection.

use super::*;

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

pub(super) fn servers(app: &App, flavor: Flavor, out: &mut BytesMut) {
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
