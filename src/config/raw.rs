//! The file as serde reads it, before defaults and validation: every key optional, enums as
//! strings (so a bad value gets an error that lists the valid ones), plugin and mirror tables
//! accepted as any TOML. Unknown keys are skipped here; `keys.rs` reports them.
//!
//! Also holds the defaults (PgCat's *code* defaults, plus our documented departures), so the
//! default of a key is written in exactly one place.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Defaults applied when a key is absent. Times in milliseconds unless noted.
pub(crate) mod defaults {
    pub const HOST: &str = "0.0.0.0";
    /// PgCat's code default (its docs and sample say 6432).
    pub const PORT: u16 = 5432;
    pub const PROMETHEUS_EXPORTER_PORT: u16 = 9930;
    pub const CONNECT_TIMEOUT: u64 = 1000;
    pub const IDLE_TIMEOUT: u64 = 600_000;
    pub const SERVER_LIFETIME: u64 = 3_600_000;
    pub const IDLE_CLIENT_IN_TRANSACTION_TIMEOUT: u64 = 0;
    pub const HEALTHCHECK_TIMEOUT: u64 = 1000;
    pub const HEALTHCHECK_DELAY: u64 = 30_000;
    pub const HEALTHCHECK_INTERVAL: u64 = 5_000;
    pub const MAX_CLIENT_CONN: usize = 10_000;
    pub const CLIENT_LOGIN_TIMEOUT: u64 = 60_000;
    pub const REPLICA_LAG_CHECK_INTERVAL: u64 = 1_000;
    pub const SHUTDOWN_TIMEOUT: u64 = 60_000;
    /// Seconds.
    pub const BAN_TIME: i64 = 60;
    pub const SERVER_ROUND_ROBIN: bool = true;
    /// `autoreload = true` (an old PgCat spelling) means this interval.
    pub const AUTORELOAD_WHEN_TRUE: u64 = 15_000;
    pub const TCP_KEEPALIVES_IDLE: u64 = 5;
    pub const TCP_KEEPALIVES_COUNT: u32 = 5;
    pub const TCP_KEEPALIVES_INTERVAL: u64 = 5;
    pub const TCP_USER_TIMEOUT: u64 = 10_000;
    /// Seconds.
    pub const DNS_MAX_TTL: u64 = 30;
    pub const VALIDATE_CONFIG: bool = true;
    pub const REGEX_SEARCH_LIMIT: usize = 1000;
    pub const CLEANUP_SERVER_CONNECTIONS: bool = true;
    /// Departure from PgCat (0 = off there): on by default, like PgBouncer.
    pub const PREPARED_STATEMENTS_CACHE_SIZE: usize = 500;
    pub const DB_ACTIVITY_INIT_DELAY: u64 = 100;
    /// Seconds.
    pub const DB_ACTIVITY_TTL: u64 = 900;
    pub const TABLE_MUTATION_CACHE_MS_TTL: u64 = 50;
    /// The decision log of two-phase commits, relative to the config file's directory.
    pub const TWO_PHASE_COMMIT_LOG: &str = "pgcat-2pc.log";

    /// Departure from PgCat (fixed 4 there): one worker per CPU core.
    pub fn worker_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

#[derive(Deserialize)]
pub(crate) struct RawConfig {
    pub general: Option<RawGeneral>,
    pub pools: Option<BTreeMap<String, RawPool>>,
    pub plugins: Option<super::plugins::RawPlugins>,
    pub peers: Option<BTreeMap<String, RawPeer>>,
}

/// `autoreload` is an interval in ms; old PgCat versions took a boolean.
pub(crate) enum RawAutoreload {
    Interval(u64),
    Flag(bool),
}

impl<'de> Deserialize<'de> for RawAutoreload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawAutoreload;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an interval in milliseconds, or a boolean")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawAutoreload::Flag(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(RawAutoreload::Interval)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawAutoreload::Interval(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
pub(crate) struct RawGeneral {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub enable_prometheus_exporter: Option<bool>,
    pub prometheus_exporter_port: Option<u16>,
    pub connect_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub server_lifetime: Option<u64>,
    pub idle_client_in_transaction_timeout: Option<u64>,
    pub healthcheck_timeout: Option<u64>,
    pub healthcheck_delay: Option<u64>,
    pub healthcheck_interval: Option<u64>,
    pub max_client_conn: Option<usize>,
    pub client_login_timeout: Option<u64>,
    pub replica_lag_check_interval: Option<u64>,
    pub shutdown_timeout: Option<u64>,
    pub ban_time: Option<i64>,
    pub server_round_robin: Option<bool>,
    pub worker_threads: Option<usize>,
    pub autoreload: Option<RawAutoreload>,
    pub tcp_keepalives_idle: Option<u64>,
    pub tcp_keepalives_count: Option<u32>,
    pub tcp_keepalives_interval: Option<u64>,
    pub tcp_user_timeout: Option<u64>,
    pub log_client_connections: Option<bool>,
    pub log_client_disconnections: Option<bool>,
    pub dns_cache_enabled: Option<bool>,
    pub dns_max_ttl: Option<u64>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub server_tls: Option<bool>,
    pub verify_server_certificate: Option<bool>,
    pub tls_client_required: Option<bool>,
    pub server_tls_ca_file: Option<PathBuf>,
    pub unix_socket_dir: Option<PathBuf>,
    pub admin_username: Option<String>,
    pub admin_password: Option<String>,
    pub admin_auth_type: Option<String>,
    pub validate_config: Option<bool>,
    pub auth_query: Option<String>,
    pub auth_query_user: Option<String>,
    pub auth_query_password: Option<String>,
    pub instance_name: Option<String>,
    pub two_phase_commit_log: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub so_reuseport: Option<bool>,
    pub peer_id: Option<i64>,
}

/// `[peers.<id>]`: another pooler instance, for forwarding cancel requests.
#[derive(Deserialize)]
pub(crate) struct RawPeer {
    pub host: Option<String>,
    pub port: Option<u16>,
}

#[derive(Deserialize)]
pub(crate) struct RawPool {
    pub pool_mode: Option<String>,
    pub load_balancing_mode: Option<String>,
    pub default_role: Option<String>,
    pub query_parser_enabled: Option<bool>,
    pub query_parser_max_length: Option<usize>,
    pub max_replica_lag_bytes: Option<u64>,
    pub read_your_writes: Option<bool>,
    pub pin_session_state: Option<bool>,
    pub query_parser_read_write_splitting: Option<bool>,
    pub primary_reads_enabled: Option<bool>,
    pub connect_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub server_lifetime: Option<u64>,
    pub checkout_failure_limit: Option<u64>,
    pub sharding_function: Option<String>,
    pub automatic_sharding_key: Option<String>,
    pub sharding_key_regex: Option<String>,
    pub shard_id_regex: Option<String>,
    pub regex_search_limit: Option<usize>,
    pub default_shard: Option<String>,
    pub auth_query: Option<String>,
    pub auth_query_user: Option<String>,
    pub auth_query_password: Option<String>,
    pub cleanup_server_connections: Option<bool>,
    pub log_client_parameter_status_changes: Option<bool>,
    /// PgBouncer's name for the same setting is accepted too.
    #[serde(alias = "max_prepared_statements")]
    pub prepared_statements_cache_size: Option<usize>,
    pub db_activity_based_routing: Option<bool>,
    /// PgCat's documentation calls it `db_activity_based_ms_init_delay`; both are read.
    #[serde(alias = "db_activity_based_ms_init_delay")]
    pub db_activity_init_delay: Option<u64>,
    pub db_activity_ttl: Option<u64>,
    pub table_mutation_cache_ms_ttl: Option<u64>,
    pub two_phase_commit: Option<bool>,
    pub plugins: Option<super::plugins::RawPlugins>,
    pub shards: Option<BTreeMap<String, RawShard>>,
    pub users: Option<BTreeMap<String, RawUser>>,
}

#[derive(Deserialize)]
pub(crate) struct RawShard {
    pub database: Option<String>,
    /// `[host, port, role]` entries, checked one by one in `build.rs` for precise messages.
    pub servers: Option<Vec<toml::Value>>,
    /// `[host, port, server_index]` entries, checked like `servers`.
    pub mirrors: Option<Vec<toml::Value>>,
}

#[derive(Deserialize)]
pub(crate) struct RawUser {
    pub username: Option<String>,
    pub password: Option<String>,
    pub auth_type: Option<String>,
    pub server_username: Option<String>,
    pub server_password: Option<String>,
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub pool_mode: Option<String>,
    pub server_lifetime: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub statement_timeout: Option<u64>,
}
