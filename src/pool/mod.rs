//! Server connection pools: one deadpool pool per (pool, user, shard, address), grouped
//! per pool user, plus the maintenance that deadpool lacks (min_pool_size kept warm, idle
//! and lifetime reaping). Checkout is deadpool's: fair FIFO waiting, no global lock.

pub mod health;
mod maintain;
mod manager;
pub mod notify;
mod reported;
pub mod routing;
mod take;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{PoolError, QueueMode, TimeoutType, Timeouts};
use pgcat_parser::{Role as RouteRole, Route};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::auth::backend::{Credential, ServerSecret};
use crate::auth::scram::Verifier;
use crate::backend::statements::SchemaEpoch;
use crate::backend::{self, BackendError, ServerTarget, TcpSettings};
use crate::config::{self, AuthType, Config, DefaultShard, LoadBalancingMode, PoolMode, Role};
use crate::net::tls::ServerTls;
use crate::stats::{Counters, Registry};
use crate::wire::messages::PgError;

pub use take::TakeError;

pub use manager::{Manager, Server, ServerPool};

/// One server address of a shard and its connections.
pub struct Address {
    pub host: String,
    pub port: u16,
    pub role: Role,
    /// The shard's database on this server.
    pub database: String,
    pub pool: ServerPool,
    /// Traffic through this address, for SHOW STATS and Prometheus.
    pub counters: Arc<Counters>,
    /// Bans, role seen by the background check, WAL position.
    pub health: Arc<health::Health>,
}

impl Address {
    /// Connections handed out now.
    pub fn active(&self) -> usize {
        let s = self.pool.status();
        s.size.saturating_sub(s.available)
    }
}

/// The settings a pool user was built from: a reload that leaves them equal keeps the pool
/// (and its connections).
#[derive(Debug, Clone, PartialEq)]
struct Source {
    pool: config::Pool,
    user: config::User,
    general: (u64, u64, u64, u64, u32, u64, u64, bool),
    /// server_tls, verify_server_certificate, server_tls_ca_file.
    tls: (bool, bool, Option<std::path::PathBuf>),
}

impl Source {
    fn new(general: &config::General, pool: &config::Pool, user: &config::User) -> Source {
        let g = general;
        Source {
            pool: pool.clone(),
            user: user.clone(),
            general: (
                g.connect_timeout,
                g.idle_timeout,
                g.server_lifetime,
                g.tcp_keepalives_idle,
                g.tcp_keepalives_count,
                g.tcp_keepalives_interval,
                g.tcp_user_timeout,
                g.server_round_robin,
            ),
            tls: (
                g.server_tls,
                g.verify_server_certificate,
                g.server_tls_ca_file.clone(),
            ),
        }
    }
}

/// Everything a client of (pool, user) needs: credentials to check, settings, and the
/// connection pools of every shard.
pub struct UserPool {
    /// Shared with the records of the pool's clients (no copy per client).
    pub pool_name: Arc<str>,
    pub username: Arc<str>,
    pub auth_type: AuthType,
    pub password: Option<String>,
    /// SCRAM verifier derived once from `password`.
    pub verifier: Option<Verifier>,
    /// For a user without `password`: how to fetch its stored hash.
    pub auth_query: Option<AuthQuery>,
    /// What auth_query returned (a hash, or no such role) and when, until a login fails
    /// with it (password rotation).
    stored_password: std::sync::Mutex<Option<(Option<String>, std::time::Instant)>>,
    /// What the pool's server connections log in with (shared with their factories).
    server_secret: Credential,
    tcp: TcpSettings,
    pub mode: PoolMode,
    /// `prepared_statements_cache_size` of the pool (0 = off).
    pub statement_cache: usize,
    pub connect_timeout: Duration,
    pub default_shard: DefaultShard,
    pub load_balancing: LoadBalancingMode,
    /// Replicas further behind than this take no reads.
    pub max_replica_lag_bytes: Option<u64>,
    /// `read_your_writes`.
    pub read_your_writes: bool,
    /// `pin_session_state`.
    pub pin_session_state: bool,
    /// `ban_time`, seconds.
    pub ban_secs: u64,
    pub shards: Vec<Vec<Address>>,
    /// Routing settings, comment hints and the analysis cache of this pool.
    pub router: routing::PoolRouter,
    /// ParameterStatus values the servers report (see `reported`).
    reported: reported::Reported,
    /// LISTEN/NOTIFY for transaction-mode clients (see `notify`), made on first use.
    notify_hub: std::sync::OnceLock<Arc<notify::Hub>>,
    /// Statements some server of this pool prepared successfully (see `KnownStatements`).
    pub known_statements: KnownStatements,
    /// Schema changes seen through this pool (see `SchemaEpoch`).
    pub schema_epoch: SchemaEpoch,
    pub pool_size: u32,
    pub min_pool_size: u32,
    source: Source,
    /// A reload replaced this pool: its clients move to the new one at their next transaction.
    pub retired: AtomicBool,
    /// PAUSE: checkouts wait while this is true.
    paused: tokio::sync::watch::Sender<bool>,
}

/// How old an auth_query result must be before a failed login fetches it again.
const AUTH_QUERY_REFRESH: Duration = Duration::from_secs(2);

/// `auth_query`, `auth_query_user`, `auth_query_password` of a pool.
#[derive(Clone, Debug)]
pub struct AuthQuery {
    /// The query, with `$1` for the user name.
    pub query: String,
    pub user: String,
    pub password: String,
}

impl AuthQuery {
    /// Where and how to log in as auth_query_user (the lookup, and health checks of users
    /// without a password).
    fn login_at(&self, host: &str, port: u16, database: &str) -> ServerTarget {
        ServerTarget {
            host: host.to_string(),
            port,
            database: database.to_string(),
            user: self.user.clone(),
            secret: Credential::fixed(Some(ServerSecret::Password(self.password.clone()))),
        }
    }
}

/// `pool`'s timeouts for a checkout that does not wait: tried first, so no timer is armed
/// when a connection is free (waiting clients still come first: a free permit means
/// nobody waits).
fn no_wait(pool: &ServerPool) -> Timeouts {
    Timeouts {
        wait: Some(std::time::Duration::ZERO),
        ..pool.timeouts()
    }
}

/// Server names of statements a server of the pool has prepared without error. A client
/// that only prepares a known statement (Parse + Sync, as libpq's PQprepare does) is
/// answered without taking a server: a client that holds one and blocks on a prepare
/// for another connection (pgbench -M prepared) cannot then starve the pool.
#[derive(Default)]
pub struct KnownStatements(std::sync::Mutex<std::collections::HashSet<Arc<str>>>);

impl KnownStatements {
    /// Bound on remembered statements; past it the set starts over.
    const MAX: usize = 10_000;

    pub fn insert(&self, name: &Arc<str>) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() >= Self::MAX {
            set.clear();
        }
        set.insert(name.clone());
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("server_tls: {0}")]
    ServerTls(String),
    #[error("pool \"{pool}\" user \"{user}\": {reason}")]
    Pool {
        pool: String,
        user: String,
        reason: String,
    },
}

impl UserPool {
    fn build(
        general: &config::General,
        name: &str,
        pool: &config::Pool,
        user: &config::User,
        registry: &Arc<Registry>,
        healths: &health::HealthMap,
        server_tls: &Option<Arc<ServerTls>>,
    ) -> Result<UserPool, BuildError> {
        let settings = user.settings(general, pool);
        let tcp = TcpSettings {
            keepalive_idle: Duration::from_secs(general.tcp_keepalives_idle),
            keepalive_interval: Duration::from_secs(general.tcp_keepalives_interval),
            keepalive_count: general.tcp_keepalives_count,
            user_timeout: Duration::from_millis(general.tcp_user_timeout),
            tls: server_tls.clone(),
        };
        let queue_mode = if general.server_round_robin {
            QueueMode::Fifo
        } else {
            QueueMode::Lifo
        };
        let auth_query = match (
            &pool.auth_query,
            &pool.auth_query_user,
            &pool.auth_query_password,
        ) {
            (Some(query), Some(user), Some(password)) => Some(AuthQuery {
                // PgCat's form quotes the placeholder ('$1'); the name is bound instead.
                query: query.replace("'$1'", "$1"),
                user: user.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let secret = Credential::fixed(
            user.server_password
                .clone()
                .or_else(|| user.password.clone())
                .map(ServerSecret::Password),
        );
        let mut shards = Vec::with_capacity(pool.shards.len());
        for shard in &pool.shards {
            let mut addresses = Vec::with_capacity(shard.servers.len());
            for server in &shard.servers {
                let target = ServerTarget {
                    host: server.host.clone(),
                    port: server.port,
                    database: shard.database.clone(),
                    user: user
                        .server_username
                        .clone()
                        .unwrap_or_else(|| user.username.clone()),
                    secret: secret.clone(),
                };
                let check = health::CheckSettings {
                    interval: Duration::from_millis(
                        general
                            .healthcheck_interval
                            .min(general.replica_lag_check_interval),
                    ),
                    timeout: Duration::from_millis(general.healthcheck_timeout.max(1)),
                    connect_timeout: settings
                        .connect_timeout
                        .max(Duration::from_millis(general.healthcheck_timeout)),
                    ban_secs: general.ban_time.max(1) as u64,
                    tcp: tcp.clone(),
                };
                // auth_query users have no secret until a client logs in: the health check
                // logs in as auth_query_user.
                let check_target = match (&auth_query, &user.password) {
                    (Some(aq), None) => aq.login_at(&target.host, target.port, &target.database),
                    _ => target.clone(),
                };
                let health = healths.get(&check_target, check, registry);
                let counters = Arc::new(Counters::default());
                let manager = Manager {
                    target,
                    tcp: tcp.clone(),
                    server_lifetime: settings.server_lifetime,
                    statement_cache: pool.prepared_statements_cache_size,
                    counters: counters.clone(),
                    health: health.clone(),
                    healthcheck_delay: Duration::from_millis(general.healthcheck_delay),
                    healthcheck_timeout: Duration::from_millis(general.healthcheck_timeout.max(1)),
                    ban_secs: general.ban_time.max(1) as u64,
                    registry: registry.clone(),
                    pool_name: name.to_string(),
                };
                let pool = ServerPool::builder(manager)
                    .max_size(user.pool_size as usize)
                    .wait_timeout(Some(settings.connect_timeout))
                    .create_timeout(Some(settings.connect_timeout))
                    // Recycling only waits in the pre-reuse health check, which has
                    // its own timeout (healthcheck_timeout); no timer per checkout.
                    .queue_mode(queue_mode)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .map_err(|e| BuildError::Pool {
                        pool: name.to_string(),
                        user: user.username.clone(),
                        reason: e.to_string(),
                    })?;
                addresses.push(Address {
                    host: server.host.clone(),
                    port: server.port,
                    role: server.role,
                    database: shard.database.clone(),
                    pool,
                    counters,
                    health,
                });
            }
            shards.push(addresses);
        }
        let verifier = match (user.auth_type, &user.password) {
            (AuthType::ScramSha256, Some(p)) => Some(Verifier::from_password(p)),
            _ => None,
        };
        let up = UserPool {
            pool_name: name.into(),
            username: user.username.as_str().into(),
            auth_type: user.auth_type,
            password: user.password.clone(),
            verifier,
            auth_query: auth_query.filter(|_| user.password.is_none()),
            stored_password: std::sync::Mutex::new(None),
            server_secret: secret,
            tcp,
            mode: settings.pool_mode,
            statement_cache: pool.prepared_statements_cache_size,
            connect_timeout: settings.connect_timeout,
            default_shard: pool.default_shard,
            load_balancing: pool.load_balancing_mode,
            max_replica_lag_bytes: pool.max_replica_lag_bytes,
            read_your_writes: pool.read_your_writes,
            pin_session_state: pool.pin_session_state,
            ban_secs: general.ban_time.max(1) as u64,
            shards,
            router: routing::PoolRouter::new(pool).map_err(|reason| BuildError::Pool {
                pool: name.to_string(),
                user: user.username.clone(),
                reason,
            })?,
            reported: reported::Reported::default(),
            notify_hub: std::sync::OnceLock::new(),
            known_statements: KnownStatements::default(),
            schema_epoch: SchemaEpoch::default(),
            pool_size: user.pool_size,
            min_pool_size: user.min_pool_size,
            source: Source::new(general, pool, user),
            retired: AtomicBool::new(false),
            paused: tokio::sync::watch::channel(false).0,
        };
        maintain::spawn(
            &up,
            user.min_pool_size as usize,
            settings.idle_timeout,
            settings.server_lifetime,
        );
        Ok(up)
    }

    /// The user's stored password (`md5…` or `SCRAM-SHA-256$…`) from `auth_query`, run
    /// as auth_query_user on the first shard (its primary if it has one). Cached until
    /// [`UserPool::auth_failed`]. `Ok(None)`: no auth_query, or no such role.
    pub async fn stored_password(&self) -> Result<Option<String>, BackendError> {
        let Some(aq) = &self.auth_query else {
            return Ok(None);
        };
        if let Some((hash, _)) = self.stored_lock().clone() {
            return Ok(hash);
        }
        let shard = self.shards.first().map(Vec::as_slice).unwrap_or_default();
        let Some(address) = shard
            .iter()
            .find(|a| a.role == Role::Primary)
            .or(shard.first())
        else {
            return Ok(None);
        };
        let target = aq.login_at(&address.host, address.port, &address.database);
        let fetch = async {
            let mut conn = backend::connect(&target, &self.tcp).await?;
            conn.query_row_with(&aq.query, &self.username).await
        };
        let row = tokio::time::timeout(self.connect_timeout, fetch)
            .await
            .map_err(|_| BackendError::Connect {
                addr: target.addr(),
                source: std::io::ErrorKind::TimedOut.into(),
            })??;
        // PgCat's query returns (usename, passwd); a one-column query, the hash.
        let hash = row.get(1).or(row.first()).cloned().flatten();
        *self.stored_lock() = Some((hash.clone(), std::time::Instant::now()));
        Ok(hash)
    }

    /// A client logged in with the stored password: server connections log in with
    /// what that proved (the MD5 hash, or the SCRAM ClientKey).
    pub fn auth_succeeded(&self, secret: ServerSecret) {
        if self.auth_query.is_some() && self.server_secret.get().as_ref() != Some(&secret) {
            self.server_secret.set(secret);
        }
    }

    /// A login failed: the next one fetches the stored password again, in case it was
    /// changed in PostgreSQL; at most once per `AUTH_QUERY_REFRESH`, so a stream of wrong
    /// passwords does not become a stream of connections to PostgreSQL.
    pub fn auth_failed(&self) {
        let mut stored = self.stored_lock();
        if stored
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= AUTH_QUERY_REFRESH)
        {
            *stored = None;
        }
    }

    fn stored_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(Option<String>, std::time::Instant)>> {
        self.stored_password
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The shard of a transaction the router did not place: `default_shard`.
    pub fn default_shard_index(&self) -> usize {
        match self.default_shard {
            DefaultShard::Shard(n) => n.min(self.shards.len() - 1),
            DefaultShard::Random | DefaultShard::RandomHealthy => {
                rand::rng().random_range(0..self.shards.len())
            }
        }
    }

    /// The servers of a shard that may serve `role`, in the order to try them: the
    /// primary for writes; replicas for reads (the primary last, should every replica
    /// fail); any server when no role is set. Balanced by `load_balancing_mode`.
    /// The shard's primary: the server configured as primary, or among `"auto"` servers the
    /// one the health check saw out of recovery (not banned, if there is a choice).
    fn primary(&self, shard: usize) -> &Address {
        let servers = &self.shards[shard];
        let rank = |a: &Address| match (a.role, a.health.seen(), a.health.is_banned()) {
            (Role::Primary, _, _) => 0,
            (Role::Auto, health::Seen::Primary, false) => 1,
            (Role::Auto, health::Seen::Unknown, false) => 2,
            (Role::Auto, health::Seen::Primary, true) => 3,
            (Role::Auto, _, _) => 4,
            (Role::Replica, _, _) => 5,
        };
        servers
            .iter()
            .min_by_key(|a| rank(a))
            .unwrap_or(&servers[0])
    }

    /// The servers of a shard that may serve `role`, in the order to try them, and the
    /// server to fall back on when none of them can: the primary, for reads. Writes go to
    /// the primary; reads to usable replicas (not banned, not lagging); with no role, to
    /// any usable server. Balanced by `load_balancing_mode`.
    fn candidates(
        &self,
        shard: usize,
        role: Option<RouteRole>,
        min_lsn: u64,
    ) -> (Vec<&Address>, Option<&Address>) {
        let servers = &self.shards[shard];
        let primary = self.primary(shard);
        if role == Some(RouteRole::Primary) {
            return (vec![primary], None);
        }
        let primary_lsn = primary.health.lsn();
        // Banned servers, and replicas too far behind, take no reads while others can.
        let usable = |a: &&Address| {
            let lagging = !std::ptr::eq(*a, primary)
                && self.max_replica_lag_bytes.is_some_and(|max| {
                    let lsn = a.health.lsn();
                    primary_lsn > 0 && lsn > 0 && primary_lsn.saturating_sub(lsn) > max
                });
            // Read-your-writes: a replica that has not replayed the client's last write.
            let behind = min_lsn > 0 && !std::ptr::eq(*a, primary) && a.health.lsn() < min_lsn;
            !a.health.is_banned() && !lagging && !behind
        };
        let mut chosen: Vec<&Address> = servers
            .iter()
            .filter(|a| role.is_none() || !std::ptr::eq(*a, primary))
            .filter(usable)
            .collect();
        chosen.shuffle(&mut rand::rng());
        if self.load_balancing == LoadBalancingMode::LeastOutstandingConnections {
            // Fewest connections in use first (stable sort keeps the random order of ties).
            chosen.sort_by_key(|a| a.active());
        }
        if chosen.is_empty() {
            // Every replica down, banned or behind: the primary serves the reads.
            tracing::debug!(pool = %self.pool_name, shard, "no usable replica: reading from the primary");
            return (vec![primary], None);
        }
        let fallback = (!chosen.iter().any(|a| std::ptr::eq(*a, primary))).then_some(primary);
        (chosen, fallback)
    }

    /// Takes a server connection for `route`. A server that is idle somewhere among the
    /// candidates is taken at once; otherwise the first candidate is waited for (up to
    /// `connect_timeout`). A candidate that cannot be reached is skipped.
    pub async fn checkout(&self, route: Route) -> Result<Server, PgError> {
        self.checkout_after(route, 0).await
    }

    /// Whether `addr` (host:port) is the primary of the pool's `default_shard`-or-given shard.
    pub fn is_primary_addr(&self, addr: &str) -> bool {
        (0..self.shards.len()).any(|shard| {
            let p = self.primary(shard);
            format!("{}:{}", p.host, p.port) == addr
        })
    }

    /// Like [`UserPool::checkout`], for a client whose reads must see WAL position
    /// `min_lsn` (0 = any): replicas that have not replayed it are skipped.
    pub async fn checkout_after(&self, route: Route, min_lsn: u64) -> Result<Server, PgError> {
        self.wait_resumed().await;
        let shard = match route.shard {
            Some(n) if n < self.shards.len() => n,
            Some(n) => {
                return Err(PgError::error(
                    "22023",
                    format!(
                        "shard {n} is not configured: pool \"{}\" has shards 0 to {}",
                        self.pool_name,
                        self.shards.len() - 1
                    ),
                ))
            }
            None => self.default_shard_index(),
        };
        let (candidates, fallback) = match self.shards[shard].as_slice() {
            // One server: nothing to choose (and no list to build).
            [only] => return self.take_from(only).await,
            _ => self.candidates(shard, route.role, min_lsn),
        };
        if let ([only], None) = (candidates.as_slice(), fallback) {
            return self.take_from(only).await;
        }
        let no_wait = no_wait(&candidates[0].pool);
        let mut last_error = None;
        for address in &candidates {
            match address.pool.timeout_get(&no_wait).await {
                Ok(server) => return Ok(server),
                Err(PoolError::Timeout(TimeoutType::Wait)) => {}
                Err(e) => last_error = Some(self.checkout_error(address, e)),
            }
        }
        let mut busy = false;
        for address in &candidates {
            match Box::pin(address.pool.get()).await {
                Ok(server) => return Ok(server),
                Err(PoolError::Timeout(TimeoutType::Wait)) => busy = true,
                Err(e) => last_error = Some(self.checkout_error(address, e)),
            }
        }
        // The replicas failed (not merely busy): the primary serves the read.
        if let (Some(primary), false) = (fallback, busy) {
            tracing::info!(pool = %self.pool_name, shard, "no replica could be reached: reading from the primary");
            return Box::pin(primary.pool.get())
                .await
                .map_err(|e| self.checkout_error(primary, e));
        }
        Err(last_error.unwrap_or_else(|| PgError::error("08006", "no server could be reached")))
    }

    /// A connection to `address`, waiting for one (up to `connect_timeout`) if none is free.
    async fn take_from(&self, address: &Address) -> Result<Server, PgError> {
        match address.pool.timeout_get(&no_wait(&address.pool)).await {
            // Waiting is the slow path: boxed, so the request future stays small.
            Err(PoolError::Timeout(TimeoutType::Wait)) => Box::pin(address.pool.get()).await,
            got => got,
        }
        .map_err(|e| self.checkout_error(address, e))
    }

    fn checkout_error(
        &self,
        address: &Address,
        e: PoolError<crate::backend::BackendError>,
    ) -> PgError {
        let ms = self.connect_timeout.as_millis();
        // A server that cannot be reached or logged in to is banned; a busy pool is not.
        let credentials = matches!(
            e,
            PoolError::Backend(
                crate::backend::BackendError::Login { .. }
                    | crate::backend::BackendError::Auth { .. }
            )
        );
        if !credentials && !matches!(e, PoolError::Timeout(TimeoutType::Wait)) {
            let unreachable = matches!(
                e,
                PoolError::Timeout(_)
                    | PoolError::Backend(crate::backend::BackendError::Connect { .. })
            );
            address.health.ban(
                self.ban_secs,
                &format!("checkout failed: {e}"),
                false,
                unreachable,
            );
        }
        match e {
            PoolError::Timeout(TimeoutType::Wait) => PgError::error(
                "53300",
                format!(
                    "no server connection available for database \"{}\" user \"{}\" within {ms} ms",
                    self.pool_name, self.username
                ),
            )
            .with_hint("All pool_size connections are busy; raise pool_size or connect_timeout, or shorten transactions."),
            PoolError::Timeout(_) => PgError::error(
                "08001",
                format!("could not connect to server {}:{} within {ms} ms (connect_timeout)", address.host, address.port),
            ),
            PoolError::Backend(e) => e.to_client(),
            other => PgError::error("08006", format!("could not get a server connection: {other}")),
        }
    }

    /// Whether `client` logged in to this pool (by name: it stays a client of the pool's
    /// successor after a reload).
    pub fn serves(&self, client: &crate::stats::ClientInfo) -> bool {
        client.database == self.pool_name && client.user == self.username
    }

    /// PAUSE (true) or RESUME (false) this pool's checkouts.
    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Waits while the pool is paused.
    async fn wait_resumed(&self) {
        if !self.is_paused() {
            return;
        }
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Connections of this pool user handed out now, over all addresses.
    pub fn active(&self) -> usize {
        self.shards.iter().flatten().map(Address::active).sum()
    }
}

/// All pools, by (database, user).
#[derive(Default)]
pub struct Pools {
    by_name: HashMap<(String, String), Arc<UserPool>>,
}

impl Pools {
    /// Builds the pools of a configuration. Connections are opened lazily (and by the
    /// min_pool_size warmer), so a server that is down does not stop the pooler. With
    /// `previous` (a reload), a pool user whose settings did not change is kept as it is;
    /// the others are marked retired so their clients move over.
    pub fn build(
        config: &Config,
        previous: Option<&Pools>,
        registry: &Arc<Registry>,
        healths: &health::HealthMap,
    ) -> Result<Pools, BuildError> {
        let server_tls = ServerTls::from_general(&config.general).map_err(BuildError::ServerTls)?;
        let mut by_name = HashMap::new();
        for (name, pool) in &config.pools {
            for user in &pool.users {
                let key = (name.clone(), user.username.clone());
                let source = Source::new(&config.general, pool, user);
                let kept = previous
                    .and_then(|p| p.by_name.get(&key))
                    .filter(|old| old.source == source);
                let up = match kept {
                    Some(old) => old.clone(),
                    None => Arc::new(UserPool::build(
                        &config.general,
                        name,
                        pool,
                        user,
                        registry,
                        healths,
                        &server_tls,
                    )?),
                };
                by_name.insert(key, up);
            }
        }
        if let Some(previous) = previous {
            for (key, old) in &previous.by_name {
                if !by_name.get(key).is_some_and(|new| Arc::ptr_eq(new, old)) {
                    old.retired.store(true, Ordering::Relaxed);
                    old.set_paused(false);
                }
            }
        }
        Ok(Pools { by_name })
    }

    /// Every pool user, ordered by (database, user).
    pub fn all(&self) -> Vec<&Arc<UserPool>> {
        let mut v: Vec<_> = self.by_name.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, p)| p).collect()
    }

    pub fn get(&self, database: &str, user: &str) -> Option<&Arc<UserPool>> {
        self.by_name.get(&(database.to_string(), user.to_string()))
    }

    /// Any pool of this user, for checking credentials when the database is unknown.
    pub fn any_of_user(&self, user: &str) -> Option<&Arc<UserPool>> {
        let mut of_user: Vec<_> = self
            .by_name
            .iter()
            .filter(|((_, u), _)| u == user)
            .collect();
        of_user.sort_by(|a, b| a.0.cmp(b.0));
        of_user.first().map(|(_, p)| *p)
    }
}
