//! The validated configuration the rest of the pooler reads: `Config`, `General`, `Pool`,
//! `User`, `Shard`, `ServerAddress`, the small enums, and the user > pool > general
//! inheritance of timeouts and pool mode.
//!
//! These types are built only by `config::parse`/`config::load` after validation, so code that
//! holds a `Config` may rely on its invariants (shards contiguous from 0, at most one primary per
//! shard, `min_pool_size <= pool_size`, ...). Every type is `Clone + PartialEq` so a reload can
//! diff old against new. Passwords never appear in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The whole `pgcat.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (used in messages and for reload).
    pub path: PathBuf,
    /// `[general]`.
    pub general: General,
    /// `[pools.<name>]`, keyed by the database name clients connect to.
    pub pools: BTreeMap<String, Pool>,
}

/// `[general]`: process-wide settings. Times are milliseconds unless a field says otherwise.
#[derive(Clone, PartialEq)]
pub struct General {
    pub host: String,
    pub port: u16,
    pub enable_prometheus_exporter: bool,
    pub prometheus_exporter_port: u16,
    pub connect_timeout: u64,
    pub idle_timeout: u64,
    pub server_lifetime: u64,
    pub idle_client_in_transaction_timeout: u64,
    pub healthcheck_timeout: u64,
    pub healthcheck_delay: u64,
    /// Background check of every server address, ms (new key; PgCat checks only at checkout).
    pub healthcheck_interval: u64,
    /// Most client connections at once (new key; PgCat has no limit).
    pub max_client_conn: usize,
    /// A client that has not finished startup and authentication by then is closed, ms.
    pub client_login_timeout: u64,
    /// How often replica lag is measured, ms.
    pub replica_lag_check_interval: u64,
    pub shutdown_timeout: u64,
    /// Seconds.
    pub ban_time: i64,
    pub server_round_robin: bool,
    pub worker_threads: usize,
    pub autoreload: Option<u64>,
    /// Seconds.
    pub tcp_keepalives_idle: u64,
    pub tcp_keepalives_count: u32,
    /// Seconds.
    pub tcp_keepalives_interval: u64,
    pub tcp_user_timeout: u64,
    pub log_client_connections: bool,
    pub log_client_disconnections: bool,
    pub dns_cache_enabled: bool,
    /// Seconds.
    pub dns_max_ttl: u64,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub server_tls: bool,
    pub verify_server_certificate: bool,
    /// Refuse clients that do not negotiate TLS (new key; PgCat cannot require TLS).
    pub tls_client_required: bool,
    /// CA certificates for `verify_server_certificate` instead of the system's roots.
    pub server_tls_ca_file: Option<PathBuf>,
    /// Also listen on `<dir>/.s.PGSQL.<port>` (new key; PgCat issue #365).
    pub unix_socket_dir: Option<PathBuf>,
    pub admin_username: String,
    pub admin_password: String,
    pub admin_auth_type: AuthType,
    pub validate_config: bool,
    pub auth_query: Option<String>,
    pub auth_query_user: Option<String>,
    pub auth_query_password: Option<String>,
    /// Names this pooler in two-phase commits' transaction ids (new key; default: the
    /// listen host and port, as letters, digits and `_`).
    pub instance_name: String,
    /// The decision log of two-phase commits (new key; default `pgcat-2pc.log` beside
    /// the config file).
    pub two_phase_commit_log: PathBuf,
    /// Where the process writes its pid (new key): kept current across online upgrades.
    pub pidfile: Option<PathBuf>,
    /// `so_reuseport` (PgBouncer's): several processes may listen on the same port.
    pub so_reuseport: bool,
    /// `peer_id` (PgBouncer's): this instance's number among `peers`, carried in its
    /// clients' cancel keys.
    pub peer_id: Option<u16>,
    /// `[peers]`: the other instances a cancel request may be for.
    pub peers: BTreeMap<u16, Peer>,
}

/// `[peers.<id>]`: another pooler instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
}

/// How a client proves its identity to the pooler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthType {
    ScramSha256,
    Md5,
    Trust,
}

/// When a server connection goes back to the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// At the end of each transaction.
    Transaction,
    /// When the client disconnects.
    Session,
}

/// The role a server was configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    /// Discovered at run time (`pg_is_in_recovery()`); written `"auto"` or left out.
    Auto,
}

/// Which role queries go to when nothing else decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultRole {
    Any,
    Primary,
    Replica,
}

/// The shard used when a query names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultShard {
    Shard(usize),
    Random,
    RandomHealthy,
    /// `"all"`: a statement reading the application's tables runs on every shard.
    All,
    /// `"error"`: such a statement is refused, saying how to pick a shard.
    Error,
}

/// How a server is picked among the healthy candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalancingMode {
    Random,
    LeastOutstandingConnections,
}

/// How a sharding key maps to a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardingFunction {
    PgBigintHash,
    Sha1,
}

/// `[pools.<name>]`: one logical database clients connect to.
#[derive(Clone, PartialEq)]
pub struct Pool {
    pub pool_mode: PoolMode,
    pub load_balancing_mode: LoadBalancingMode,
    pub default_role: DefaultRole,
    pub query_parser_enabled: bool,
    pub query_parser_max_length: Option<usize>,
    /// A replica further behind the primary than this many bytes of WAL takes no reads.
    pub max_replica_lag_bytes: Option<u64>,
    /// After a client's write transaction, its reads go only to replicas that replayed it.
    pub read_your_writes: bool,
    /// Transaction mode: a client whose server holds state it must keep (a temp table, a
    /// WITH HOLD cursor, a session advisory lock, SQL PREPARE) keeps that server until the
    /// state is gone.
    pub pin_session_state: bool,
    pub query_parser_read_write_splitting: bool,
    pub primary_reads_enabled: bool,
    pub connect_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub server_lifetime: Option<u64>,
    pub checkout_failure_limit: Option<u64>,
    pub sharding_function: ShardingFunction,
    pub automatic_sharding_key: Option<String>,
    pub sharding_key_regex: Option<String>,
    pub shard_id_regex: Option<String>,
    pub regex_search_limit: usize,
    pub default_shard: DefaultShard,
    /// Inherited from `[general]` when the pool does not set it.
    pub auth_query: Option<String>,
    /// Inherited from `[general]` when the pool does not set it.
    pub auth_query_user: Option<String>,
    /// Inherited from `[general]` when the pool does not set it.
    pub auth_query_password: Option<String>,
    pub cleanup_server_connections: bool,
    pub log_client_parameter_status_changes: bool,
    pub prepared_statements_cache_size: usize,
    pub db_activity_based_routing: bool,
    pub db_activity_init_delay: u64,
    /// Seconds.
    pub db_activity_ttl: u64,
    pub table_mutation_cache_ms_ttl: u64,
    /// Transactions that wrote on several shards commit in two phases (PgDog's key).
    pub two_phase_commit: bool,
    /// `[pools.<name>.plugins]`, else `[plugins]`.
    pub plugins: super::Plugins,
    /// Shard `i` is `shards[i]`.
    pub shards: Vec<Shard>,
    /// In numeric order of their table keys; usernames are unique.
    pub users: Vec<User>,
}

impl Pool {
    /// The user with this client login name.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }
}

/// `[pools.<name>.users.<i>]`: one login and its server connections.
#[derive(Clone, PartialEq)]
pub struct User {
    pub username: String,
    pub password: Option<String>,
    pub auth_type: AuthType,
    pub server_username: Option<String>,
    pub server_password: Option<String>,
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub pool_mode: Option<PoolMode>,
    pub server_lifetime: Option<u64>,
    pub connect_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub statement_timeout: u64,
}

/// A user's effective settings after inheritance (user > pool > general).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserSettings {
    pub pool_mode: PoolMode,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub server_lifetime: Duration,
}

impl User {
    /// Resolves pool mode and timeouts: the user's value, else the pool's, else `[general]`'s.
    pub fn settings(&self, general: &General, pool: &Pool) -> UserSettings {
        let ms = |user: Option<u64>, pool: Option<u64>, general: u64| {
            Duration::from_millis(user.or(pool).unwrap_or(general))
        };
        UserSettings {
            pool_mode: self.pool_mode.unwrap_or(pool.pool_mode),
            connect_timeout: ms(
                self.connect_timeout,
                pool.connect_timeout,
                general.connect_timeout,
            ),
            idle_timeout: ms(self.idle_timeout, pool.idle_timeout, general.idle_timeout),
            server_lifetime: ms(
                self.server_lifetime,
                pool.server_lifetime,
                general.server_lifetime,
            ),
        }
    }
}

/// `[pools.<name>.shards.<n>]`: one database copied over a primary and its replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub database: String,
    pub servers: Vec<ServerAddress>,
    /// `mirrors`: servers that get a copy of what is sent to one of `servers`.
    pub mirrors: Vec<MirrorAddress>,
}

/// One `[host, port, server_index]` entry of `mirrors`: every byte the pooler sends to
/// `servers[server_index]` is sent to `host:port` too, its replies discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorAddress {
    pub host: String,
    pub port: u16,
    pub server_index: usize,
}

/// One `[host, port, role]` entry of `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
    pub role: Role,
}

// ---------------------------------------------------------------------------------------------
// Spelling of the enums in pgcat.toml. Each parser returns the list of valid spellings on
// failure so the error can name them.

/// `"scram-sha-256"` (or `"scram"`), `"md5"`, `"trust"`.
pub(crate) fn parse_auth_type(s: &str) -> Result<AuthType, &'static str> {
    match s.to_ascii_lowercase().as_str() {
        "scram-sha-256" | "scram" => Ok(AuthType::ScramSha256),
        "md5" => Ok(AuthType::Md5),
        "trust" => Ok(AuthType::Trust),
        _ => Err("\"scram-sha-256\", \"md5\" or \"trust\""),
    }
}

/// `"transaction"` or `"session"` (PgCat also accepts the capitalised spellings).
pub(crate) fn parse_pool_mode(s: &str) -> Result<PoolMode, &'static str> {
    match s.to_ascii_lowercase().as_str() {
        "transaction" => Ok(PoolMode::Transaction),
        "session" => Ok(PoolMode::Session),
        _ => Err("\"transaction\" or \"session\""),
    }
}

/// `"primary"`, `"replica"` or `"auto"`.
pub(crate) fn parse_role(s: &str) -> Result<Role, &'static str> {
    match s.to_ascii_lowercase().as_str() {
        "primary" => Ok(Role::Primary),
        "replica" => Ok(Role::Replica),
        "auto" => Ok(Role::Auto),
        _ => Err("\"primary\", \"replica\" or \"auto\""),
    }
}

/// `"any"`, `"primary"` or `"replica"`.
pub(crate) fn parse_default_role(s: &str) -> Result<DefaultRole, &'static str> {
    match s.to_ascii_lowercase().as_str() {
        "any" => Ok(DefaultRole::Any),
        "primary" => Ok(DefaultRole::Primary),
        "replica" => Ok(DefaultRole::Replica),
        _ => Err("\"any\", \"primary\" or \"replica\""),
    }
}

/// `"shard_<n>"`, `"random"`, `"random_healthy"`, `"all"` or `"error"`.
pub(crate) fn parse_default_shard(s: &str) -> Result<DefaultShard, &'static str> {
    const EXPECTED: &str = "\"shard_<n>\", \"random\", \"random_healthy\", \"all\" or \"error\"";
    match s {
        "random" => Ok(DefaultShard::Random),
        "random_healthy" => Ok(DefaultShard::RandomHealthy),
        "all" => Ok(DefaultShard::All),
        "error" => Ok(DefaultShard::Error),
        _ => s
            .strip_prefix("shard_")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .map(DefaultShard::Shard)
            .ok_or(EXPECTED),
    }
}

/// `"random"`, `"loc"` or `"least_outstanding_connections"`.
pub(crate) fn parse_load_balancing_mode(s: &str) -> Result<LoadBalancingMode, &'static str> {
    match s.to_ascii_lowercase().as_str() {
        "random" => Ok(LoadBalancingMode::Random),
        "loc" | "least_outstanding_connections" => {
            Ok(LoadBalancingMode::LeastOutstandingConnections)
        }
        _ => Err("\"random\", \"loc\" or \"least_outstanding_connections\""),
    }
}

/// `"pg_bigint_hash"` or `"sha1"`.
pub(crate) fn parse_sharding_function(s: &str) -> Result<ShardingFunction, &'static str> {
    match s {
        "pg_bigint_hash" => Ok(ShardingFunction::PgBigintHash),
        "sha1" => Ok(ShardingFunction::Sha1),
        _ => Err("\"pg_bigint_hash\" or \"sha1\""),
    }
}

// ---------------------------------------------------------------------------------------------
// Debug impls that redact secrets.

/// Shows whether a secret is set, never its value.
struct Redacted<'a>(Option<&'a str>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(\"<redacted>\")"),
            None => f.write_str("None"),
        }
    }
}

impl fmt::Debug for General {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("General")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "enable_prometheus_exporter",
                &self.enable_prometheus_exporter,
            )
            .field("prometheus_exporter_port", &self.prometheus_exporter_port)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("server_lifetime", &self.server_lifetime)
            .field(
                "idle_client_in_transaction_timeout",
                &self.idle_client_in_transaction_timeout,
            )
            .field("healthcheck_timeout", &self.healthcheck_timeout)
            .field("healthcheck_delay", &self.healthcheck_delay)
            .field("healthcheck_interval", &self.healthcheck_interval)
            .field("max_client_conn", &self.max_client_conn)
            .field("client_login_timeout", &self.client_login_timeout)
            .field(
                "replica_lag_check_interval",
                &self.replica_lag_check_interval,
            )
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("ban_time", &self.ban_time)
            .field("server_round_robin", &self.server_round_robin)
            .field("worker_threads", &self.worker_threads)
            .field("autoreload", &self.autoreload)
            .field("tcp_keepalives_idle", &self.tcp_keepalives_idle)
            .field("tcp_keepalives_count", &self.tcp_keepalives_count)
            .field("tcp_keepalives_interval", &self.tcp_keepalives_interval)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("log_client_connections", &self.log_client_connections)
            .field("log_client_disconnections", &self.log_client_disconnections)
            .field("dns_cache_enabled", &self.dns_cache_enabled)
            .field("dns_max_ttl", &self.dns_max_ttl)
            .field("tls_certificate", &self.tls_certificate)
            .field("tls_private_key", &self.tls_private_key)
            .field("server_tls", &self.server_tls)
            .field("verify_server_certificate", &self.verify_server_certificate)
            .field("tls_client_required", &self.tls_client_required)
            .field("server_tls_ca_file", &self.server_tls_ca_file)
            .field("unix_socket_dir", &self.unix_socket_dir)
            .field("admin_username", &self.admin_username)
            .field("admin_password", &Redacted(Some(&self.admin_password)))
            .field("admin_auth_type", &self.admin_auth_type)
            .field("validate_config", &self.validate_config)
            .field("auth_query", &self.auth_query)
            .field("auth_query_user", &self.auth_query_user)
            .field(
                "auth_query_password",
                &Redacted(self.auth_query_password.as_deref()),
            )
            .finish()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("pool_mode", &self.pool_mode)
            .field("load_balancing_mode", &self.load_balancing_mode)
            .field("default_role", &self.default_role)
            .field("query_parser_enabled", &self.query_parser_enabled)
            .field("query_parser_max_length", &self.query_parser_max_length)
            .field("max_replica_lag_bytes", &self.max_replica_lag_bytes)
            .field("read_your_writes", &self.read_your_writes)
            .field("pin_session_state", &self.pin_session_state)
            .field(
                "query_parser_read_write_splitting",
                &self.query_parser_read_write_splitting,
            )
            .field("primary_reads_enabled", &self.primary_reads_enabled)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("server_lifetime", &self.server_lifetime)
            .field("checkout_failure_limit", &self.checkout_failure_limit)
            .field("sharding_function", &self.sharding_function)
            .field("automatic_sharding_key", &self.automatic_sharding_key)
            .field("sharding_key_regex", &self.sharding_key_regex)
            .field("shard_id_regex", &self.shard_id_regex)
            .field("regex_search_limit", &self.regex_search_limit)
            .field("default_shard", &self.default_shard)
            .field("auth_query", &self.auth_query)
            .field("auth_query_user", &self.auth_query_user)
            .field(
                "auth_query_password",
                &Redacted(self.auth_query_password.as_deref()),
            )
            .field(
                "cleanup_server_connections",
                &self.cleanup_server_connections,
            )
            .field(
                "log_client_parameter_status_changes",
                &self.log_client_parameter_status_changes,
            )
            .field(
                "prepared_statements_cache_size",
                &self.prepared_statements_cache_size,
            )
            .field("db_activity_based_routing", &self.db_activity_based_routing)
            .field("db_activity_init_delay", &self.db_activity_init_delay)
            .field("db_activity_ttl", &self.db_activity_ttl)
            .field(
                "table_mutation_cache_ms_ttl",
                &self.table_mutation_cache_ms_ttl,
            )
            .field("two_phase_commit", &self.two_phase_commit)
            .field("plugins", &self.plugins)
            .field("shards", &self.shards)
            .field("users", &self.users)
            .finish()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password", &Redacted(self.password.as_deref()))
            .field("auth_type", &self.auth_type)
            .field("server_username", &self.server_username)
            .field(
                "server_password",
                &Redacted(self.server_password.as_deref()),
            )
            .field("pool_size", &self.pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("pool_mode", &self.pool_mode)
            .field("server_lifetime", &self.server_lifetime)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}
