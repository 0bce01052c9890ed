//! Building the pools of a configuration, and keeping the unchanged ones on reload (a pool
//! user's settings are compared as one `Source`).

use super::manager::Cutoff;
use super::*;
use crate::net::dns::DnsCache;

/// The settings a pool user was built from: a reload that leaves them equal keeps the pool
/// (and its connections).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Source {
    pool: config::Pool,
    user: config::User,
    general: (u64, u64, u64, u64, u32, u64, u64, bool),
    /// server_tls, verify_server_certificate, server_tls_ca_file.
    tls: (bool, bool, Option<std::path::PathBuf>),
    dns_cache_enabled: bool,
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
            dns_cache_enabled: g.dns_cache_enabled,
        }
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

/// What every pool user of a build shares: the process's registry and address health,
/// the TLS settings toward servers, the DNS cache when enabled.
struct Shared<'a> {
    registry: &'a Arc<Registry>,
    healths: &'a health::HealthMap,
    server_tls: &'a Option<Arc<ServerTls>>,
    dns: Option<Arc<DnsCache>>,
}

impl UserPool {
    fn build(
        shared: &Shared<'_>,
        general: &config::General,
        (name, pool): (&str, &config::Pool),
        user: &config::User,
        activity: Option<Arc<activity::Activity>>,
    ) -> Result<UserPool, BuildError> {
        let Shared {
            registry,
            healths,
            server_tls,
            ..
        } = *shared;
        let settings = user.settings(general, pool);
        let tcp = TcpSettings {
            keepalive_idle: Duration::from_secs(general.tcp_keepalives_idle),
            keepalive_interval: Duration::from_secs(general.tcp_keepalives_interval),
            keepalive_count: general.tcp_keepalives_count,
            user_timeout: Duration::from_millis(general.tcp_user_timeout),
            tls: server_tls.clone(),
            dns: shared.dns.clone(),
        };
        // server_round_robin: the longest idle connection first (else the most recent).
        let lifo = !general.server_round_robin;
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
            for (index, server) in shard.servers.iter().enumerate() {
                let target = ServerTarget {
                    host: server.host.clone(),
                    port: server.port,
                    database: shard.database.clone(),
                    user: user
                        .server_username
                        .clone()
                        .unwrap_or_else(|| user.username.clone()),
                    secret: secret.clone(),
                    // PostgreSQL cancels a statement past the user's statement_timeout
                    // itself (57014), and the connection stays usable: no ban, no reconnect.
                    options: (user.statement_timeout > 0)
                        .then(|| format!("-c statement_timeout={}", user.statement_timeout)),
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
                let mirrors: Vec<_> = (shard.mirrors.iter())
                    .filter(|m| m.server_index == index)
                    .map(|m| {
                        let timeout = settings.connect_timeout;
                        Arc::new(MirrorTarget::new(&target, &m.host, m.port, timeout))
                    })
                    .collect();
                let counters = Arc::new(Counters::default());
                let manager = Manager {
                    target,
                    tcp: tcp.clone(),
                    server_lifetime_us: u64::try_from(settings.server_lifetime.as_micros())
                        .unwrap_or(u64::MAX),
                    statement_cache: pool.prepared_statements_cache_size,
                    counters: counters.clone(),
                    health: health.clone(),
                    healthcheck_delay_us: general.healthcheck_delay.saturating_mul(1000),
                    healthcheck_timeout: Duration::from_millis(general.healthcheck_timeout.max(1)),
                    ban_secs: general.ban_time.max(1) as u64,
                    registry: registry.clone(),
                    pool_name: name.to_string(),
                    prewarm: pool.plugins.prewarm.clone().into(),
                    mirrors: mirrors.clone(),
                    cutoff: Cutoff::default(),
                    logging_in: Default::default(),
                    testing: Default::default(),
                };
                let pool = ServerPool::new(
                    manager,
                    user.pool_size as usize,
                    settings.connect_timeout,
                    settings.connect_timeout,
                    lifo,
                );
                addresses.push(Address {
                    host: server.host.clone(),
                    port: server.port,
                    role: server.role,
                    database: shard.database.clone(),
                    pool,
                    counters,
                    health,
                    mirrors,
                });
            }
            shards.push(addresses);
        }
        let verifier = match (user.auth_type, &user.password) {
            (AuthType::ScramSha256, Some(p)) => Some(Verifier::from_password(p)),
            _ => None,
        };
        let md5_hex = match (user.auth_type, &user.password) {
            (AuthType::Md5, Some(p)) => Some(crate::auth::md5::password_hex(&user.username, p)),
            _ => None,
        };
        let up = UserPool {
            pool_name: name.into(),
            username: user.username.as_str().into(),
            auth_type: user.auth_type,
            password: user.password.clone(),
            verifier,
            md5_hex,
            auth_query: auth_query.filter(|_| user.password.is_none()),
            stored_password: std::sync::Mutex::new(None),
            server_secret: secret,
            tcp,
            mode: settings.pool_mode,
            statement_cache: pool.prepared_statements_cache_size,
            connect_timeout: settings.connect_timeout,
            checkout_failure_limit: pool.checkout_failure_limit.filter(|n| *n > 0),
            default_shard: pool.default_shard,
            two_phase_commit: pool.two_phase_commit,
            log_client_parameter_status_changes: pool.log_client_parameter_status_changes,
            intercepts: pool
                .plugins
                .intercept
                .iter()
                .map(|i| (pgcat_parser::normalized(&i.query), i.clone()))
                .collect(),
            query_logger: pool.plugins.query_logger,
            blocked_tables: pool.plugins.blocked_tables.clone(),
            load_balancing: pool.load_balancing_mode,
            max_replica_lag_bytes: pool.max_replica_lag_bytes,
            read_your_writes: pool.read_your_writes,
            activity,
            pin_session_state: pool.pin_session_state,
            ban_secs: general.ban_time.max(1) as u64,
            shards,
            router: router::PoolRouter::new(pool).map_err(|reason| BuildError::Pool {
                pool: name.to_string(),
                user: user.username.clone(),
                reason,
            })?,
            reported: reported::Reported::default(),
            aggregates: tokio::sync::OnceCell::new(),
            collations: std::sync::Mutex::new(None),
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
        dns: &Arc<DnsCache>,
    ) -> Result<Pools, BuildError> {
        let g = &config.general;
        let server_tls = g
            .server_tls
            .then(|| ServerTls::new(g.verify_server_certificate, g.server_tls_ca_file.as_deref()))
            .transpose()
            .map_err(BuildError::ServerTls)?;
        let shared = Shared {
            registry,
            healths,
            server_tls: &server_tls,
            dns: g.dns_cache_enabled.then(|| dns.clone()),
        };
        let mut by_name = HashMap::new();
        for (name, pool) in &config.pools {
            // One activity memory per pool, kept across reloads that keep its settings.
            let activity = previous
                .and_then(|p| p.by_name.iter().find(|((n, _), _)| n == name))
                .and_then(|(_, up)| up.activity.clone())
                .filter(|a| a.same_settings(pool))
                .or_else(|| activity::Activity::of(pool).map(Arc::new));
            for user in &pool.users {
                let key = (name.clone(), user.username.clone());
                let source = Source::new(&config.general, pool, user);
                let kept = previous
                    .and_then(|p| p.by_name.get(&key))
                    .filter(|old| old.source == source);
                let up = match kept {
                    Some(old) => old.clone(),
                    None => Arc::new(UserPool::build(
                        &shared,
                        &config.general,
                        (name, pool),
                        user,
                        activity.clone(),
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
