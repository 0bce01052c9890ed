//! PgBouncer's console commands that have no PgCat counterpart, with PgBouncer 1.18's
//! columns: SHOW MEM (the pooler's per-connection records), FDS (empty: an upgrade hands
//! sockets over itself, see README), SOCKETS / ACTIVE_SOCKETS (clients and servers; buffer
//! positions are not tracked, so they read 0), DNS_HOSTS (the DNS cache), DNS_ZONES (empty:
//! no zone checks), STATE, PEER_POOLS (peers get cancel requests on connections of their
//! own, not pooled: counts are 0).

use super::*;

/// SHOW MEM: the records the pooler keeps per client and per server connection.
pub(super) fn mem(app: &App, out: &mut BytesMut) {
    let clients = app.registry.clients().len();
    let servers = app.registry.servers().len();
    let row = |name: &str, size: usize, used: usize| {
        vec![name.to_string(), n(size), n(used), n(0), n(size * used)]
    };
    let data = vec![
        row(
            "client_info",
            std::mem::size_of::<crate::stats::ClientInfo>(),
            clients,
        ),
        row(
            "server_info",
            std::mem::size_of::<crate::stats::ServerInfo>(),
            servers,
        ),
    ];
    let cols = [
        ("name", false),
        ("size", true),
        ("used", true),
        ("free", true),
        ("memtotal", true),
    ];
    result(out, &cols, data);
}

/// SHOW FDS: PgBouncer's list for its `-R` online restart. Upgrades here hand sockets to
/// the new process over a socket pair (SIGUSR2), so nothing is listed.
pub(super) fn fds(out: &mut BytesMut) {
    let cols = [
        ("fd", true),
        ("task", false),
        ("user", false),
        ("database", false),
        ("addr", false),
        ("port", true),
        ("cancel", true),
        ("link", true),
        ("client_encoding", false),
        ("std_strings", false),
        ("datestyle", false),
        ("timezone", false),
        ("password", false),
        ("scram_client_key", false),
        ("scram_server_key", false),
    ];
    result(out, &cols, Vec::new());
}

/// SHOW SOCKETS / ACTIVE_SOCKETS: SHOW CLIENTS and SERVERS' rows with PgBouncer's buffer
/// columns (not tracked: 0); `active` keeps the connections in use.
pub(super) fn sockets(app: &App, active: bool, out: &mut BytesMut) {
    let mut cols: Vec<Col> = super::connections::BOUNCER_CONNECTION_COLUMNS.to_vec();
    for name in [
        "recv_pos",
        "pkt_pos",
        "pkt_remain",
        "send_pos",
        "send_remain",
        "pkt_avail",
        "send_avail",
    ] {
        cols.push((name, true));
    }
    let mut data = super::connections::bouncer_rows(app, active);
    for row in &mut data {
        row.extend(std::iter::repeat_n(n(0), 7));
    }
    result(out, &cols, data);
}

/// SHOW DNS_HOSTS: the names the DNS cache holds (`dns_cache_enabled`).
pub(super) fn dns_hosts(app: &App, out: &mut BytesMut) {
    let ttl = app.config().general.dns_max_ttl;
    let data = (app.dns.entries().into_iter())
        .map(|(name, ips)| {
            let addrs: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
            vec![name, n(ttl), addrs.join(",")]
        })
        .collect();
    let cols = [("hostname", false), ("ttl", true), ("addrs", false)];
    result(out, &cols, data);
}

/// SHOW DNS_ZONES: no zone serial checks here (`dns_zone_check_period` is PgBouncer's).
pub(super) fn dns_zones(out: &mut BytesMut) {
    let cols = [("zonename", false), ("serial", true), ("count", true)];
    result(out, &cols, Vec::new());
}

/// SHOW STATE: active, paused (PAUSE of every pool or SUSPEND), suspended.
pub(super) fn state(app: &App, out: &mut BytesMut) {
    let pools = app.pools();
    let all = pools.all();
    let paused = !all.is_empty() && all.iter().all(|p| p.is_paused());
    let suspended = app.suspended.load(std::sync::atomic::Ordering::Relaxed);
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let data = vec![
        vec!["active".to_string(), yes(!paused && !suspended)],
        vec!["paused".to_string(), yes(paused)],
        vec!["suspended".to_string(), yes(suspended)],
    ];
    result(out, &[("key", false), ("value", false)], data);
}

/// SHOW PEER_POOLS: one row per peer.
pub(super) fn peer_pools(app: &App, out: &mut BytesMut) {
    let config = app.config();
    let me = config.general.peer_id;
    let data = (config.general.peers.keys())
        .filter(|id| Some(**id) != me)
        .map(|id| vec![n(id), n(0), n(0), n(0), n(0)])
        .collect();
    let cols = [
        ("peer_id", true),
        ("cl_active_cancel_req", true),
        ("cl_waiting_cancel_req", true),
        ("sv_active_cancel", true),
        ("sv_login", true),
    ];
    result(out, &cols, data);
}
