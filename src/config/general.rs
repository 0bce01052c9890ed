//! `[general]`: the process-wide settings, defaults applied and checked (part of `build`).

use std::collections::BTreeMap;

use super::build::{check_auth_query, Ctx};
use super::raw::{defaults, RawAutoreload, RawGeneral, RawPeer};
use super::types::*;
use super::ConfigError;

pub(crate) fn build_general(
    ctx: &Ctx,
    g: RawGeneral,
    raw_peers: BTreeMap<String, RawPeer>,
) -> Result<General, ConfigError> {
    let port = g.port.unwrap_or(defaults::PORT);
    if port == 0 {
        return Err(ctx.err("general.port", "must be between 1 and 65535"));
    }
    let prometheus_exporter_port = g
        .prometheus_exporter_port
        .unwrap_or(defaults::PROMETHEUS_EXPORTER_PORT);
    if prometheus_exporter_port == 0 {
        return Err(ctx.err(
            "general.prometheus_exporter_port",
            "must be between 1 and 65535",
        ));
    }
    let worker_threads = g.worker_threads.unwrap_or_else(defaults::worker_threads);
    if worker_threads == 0 {
        return Err(ctx.err("general.worker_threads", "must be at least 1"));
    }
    match (&g.tls_certificate, &g.tls_private_key) {
        (Some(cert), Some(key)) => {
            crate::net::tls::acceptor(cert, key).map_err(|(k, reason)| ctx.err(k, reason))?;
        }
        (Some(_), None) => {
            return Err(ctx.err(
                "general.tls_private_key",
                "is required when tls_certificate is set",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.err(
                "general.tls_certificate",
                "is required when tls_private_key is set",
            ))
        }
        _ => {}
    }
    if g.tls_client_required == Some(true) && g.tls_certificate.is_none() {
        return Err(ctx.err(
            "general.tls_client_required",
            "needs tls_certificate and tls_private_key",
        ));
    }
    if let Some(ca) = &g.server_tls_ca_file {
        crate::net::tls::load_roots(ca)
            .map_err(|reason| ctx.err("general.server_tls_ca_file", reason))?;
    }
    check_auth_query(
        ctx,
        "general",
        &g.auth_query,
        &g.auth_query_user,
        &g.auth_query_password,
    )?;
    let instance_name = match g.instance_name {
        Some(name) => {
            let fits = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !fits {
                return Err(ctx.err(
                    "general.instance_name",
                    format!("'{name}' must be 1 to 64 letters, digits or '_' (it goes into two-phase commit transaction ids)"),
                ));
            }
            name
        }
        None => default_instance(g.host.as_deref().unwrap_or(defaults::HOST), port),
    };
    let two_phase_commit_log = {
        let dir = ctx.file.parent().unwrap_or(std::path::Path::new("."));
        let log = g
            .two_phase_commit_log
            .unwrap_or_else(|| defaults::TWO_PHASE_COMMIT_LOG.into());
        if log.is_absolute() {
            log
        } else {
            dir.join(log)
        }
    };
    let autoreload = match g.autoreload {
        None | Some(RawAutoreload::Flag(false)) => None,
        Some(RawAutoreload::Flag(true)) => Some(defaults::AUTORELOAD_WHEN_TRUE),
        Some(RawAutoreload::Interval(ms)) => Some(ms),
    };

    Ok(General {
        host: g.host.unwrap_or_else(|| defaults::HOST.to_string()),
        port,
        enable_prometheus_exporter: g.enable_prometheus_exporter.unwrap_or(false),
        prometheus_exporter_port,
        connect_timeout: g.connect_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
        idle_timeout: g.idle_timeout.unwrap_or(defaults::IDLE_TIMEOUT),
        server_lifetime: g.server_lifetime.unwrap_or(defaults::SERVER_LIFETIME),
        idle_client_in_transaction_timeout: g
            .idle_client_in_transaction_timeout
            .unwrap_or(defaults::IDLE_CLIENT_IN_TRANSACTION_TIMEOUT),
        healthcheck_timeout: g
            .healthcheck_timeout
            .unwrap_or(defaults::HEALTHCHECK_TIMEOUT),
        healthcheck_delay: g.healthcheck_delay.unwrap_or(defaults::HEALTHCHECK_DELAY),
        max_client_conn: g.max_client_conn.unwrap_or(defaults::MAX_CLIENT_CONN),
        client_login_timeout: positive(g.client_login_timeout, defaults::CLIENT_LOGIN_TIMEOUT),
        healthcheck_interval: positive(g.healthcheck_interval, defaults::HEALTHCHECK_INTERVAL),
        replica_lag_check_interval: positive(
            g.replica_lag_check_interval,
            defaults::REPLICA_LAG_CHECK_INTERVAL,
        ),
        shutdown_timeout: g.shutdown_timeout.unwrap_or(defaults::SHUTDOWN_TIMEOUT),
        ban_time: g.ban_time.unwrap_or(defaults::BAN_TIME),
        server_round_robin: g.server_round_robin.unwrap_or(defaults::SERVER_ROUND_ROBIN),
        worker_threads,
        autoreload,
        tcp_keepalives_idle: g
            .tcp_keepalives_idle
            .unwrap_or(defaults::TCP_KEEPALIVES_IDLE),
        tcp_keepalives_count: g
            .tcp_keepalives_count
            .unwrap_or(defaults::TCP_KEEPALIVES_COUNT),
        tcp_keepalives_interval: g
            .tcp_keepalives_interval
            .unwrap_or(defaults::TCP_KEEPALIVES_INTERVAL),
        tcp_user_timeout: g.tcp_user_timeout.unwrap_or(defaults::TCP_USER_TIMEOUT),
        log_client_connections: g.log_client_connections.unwrap_or(false),
        log_client_disconnections: g.log_client_disconnections.unwrap_or(false),
        dns_cache_enabled: g.dns_cache_enabled.unwrap_or(false),
        dns_max_ttl: g.dns_max_ttl.unwrap_or(defaults::DNS_MAX_TTL),
        tls_certificate: g.tls_certificate,
        tls_private_key: g.tls_private_key,
        server_tls: g.server_tls.unwrap_or(false),
        verify_server_certificate: g.verify_server_certificate.unwrap_or(false),
        tls_client_required: g.tls_client_required.unwrap_or(false),
        server_tls_ca_file: g.server_tls_ca_file,
        unix_socket_dir: g.unix_socket_dir,
        admin_username: ctx.required("general.admin_username", g.admin_username)?,
        admin_password: ctx.required("general.admin_password", g.admin_password)?,
        admin_auth_type: ctx.enum_value(
            "general.admin_auth_type",
            "auth type",
            g.admin_auth_type.as_deref(),
            AuthType::Md5,
            parse_auth_type,
        )?,
        validate_config: g.validate_config.unwrap_or(defaults::VALIDATE_CONFIG),
        auth_query: g.auth_query,
        auth_query_user: g.auth_query_user,
        auth_query_password: g.auth_query_password,
        instance_name,
        two_phase_commit_log,
        pidfile: g.pidfile,
        so_reuseport: g.so_reuseport.unwrap_or(false),
        peer_id: match g.peer_id {
            None => None,
            Some(id) => Some(peer_number(ctx, "general.peer_id", id)?),
        },
        peers: build_peers(ctx, raw_peers)?,
    })
}

/// `instance_name`'s default: the listen host and port, as letters, digits and `_`.
fn default_instance(host: &str, port: u16) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{host}_{port}")
}

/// A setting of at least 1 (0 would spin a timer or expire at once): `value`, else `default`.
fn positive(value: Option<u64>, default: u64) -> u64 {
    value.unwrap_or(default).max(1)
}

/// A peer's port when its table has none (PgBouncer's default port).
const PEER_PORT: u16 = 6432;

/// The largest `peer_id`: it goes into the high bits of the clients' cancel keys.
pub const MAX_PEER_ID: u16 = 2047;

fn peer_number(ctx: &Ctx, key: &str, id: i64) -> Result<u16, ConfigError> {
    u16::try_from(id)
        .ok()
        .filter(|id| (1..=MAX_PEER_ID).contains(id))
        .ok_or_else(|| {
            ctx.err(
                key,
                format!("{id} is not a peer id: it must be between 1 and {MAX_PEER_ID}"),
            )
        })
}

/// `[peers.<id>]` tables: `host` required, `port` 6432 by default. A peer's own entry may
/// be listed too (every instance can share one `[peers]` list).
fn build_peers(
    ctx: &Ctx,
    raw: BTreeMap<String, RawPeer>,
) -> Result<BTreeMap<u16, Peer>, ConfigError> {
    let mut peers = BTreeMap::new();
    for (name, peer) in raw {
        let key = format!("peers.{name}");
        let id = name
            .parse::<i64>()
            .map_err(|_| ctx.err(&key, "peer keys are peer ids (1, 2, ...)"))?;
        let id = peer_number(ctx, &key, id)?;
        let host = ctx.required(&format!("{key}.host"), peer.host)?;
        if host.is_empty() {
            return Err(ctx.err(format!("{key}.host"), "must not be empty"));
        }
        let port = peer.port.unwrap_or(PEER_PORT);
        peers.insert(id, Peer { host, port });
    }
    Ok(peers)
}
