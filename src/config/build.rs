//! Turns the raw file (`raw.rs`) into the validated `Config` (`types.rs`): applies defaults,
//! parses enum spellings, resolves inheritance of `auth_query*`, and checks every rule of
//! PgCat's validation plus ours. The first violation becomes a `ConfigError` naming the key;
//! softer problems become warnings. Never touches the network; of the file system it reads
//! only the TLS certificate, key and CA files the configuration names (loaded once here so
//! a bad file is a config error naming its key, not a failure at the first connection).

use std::collections::BTreeMap;
use std::path::Path;

use super::general::build_general;
use super::keys::join;
use super::raw::{defaults, RawConfig, RawPool, RawUser};
use super::shards::build_shards;
use super::types::*;
use super::ConfigError;

/// Where errors point: the file, and helpers to name a key in it.
pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Parses an enum spelling, or names the valid ones: `'foo' is not a valid pool mode
    /// (expected "transaction" or "session")`.
    pub(crate) fn enum_value<T>(
        &self,
        key: &str,
        what: &str,
        value: Option<&str>,
        default: T,
        parse: fn(&str) -> Result<T, &'static str>,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse(v).map_err(|expected| {
                self.err(
                    key,
                    format!("'{v}' is not a valid {what} (expected {expected})"),
                )
            }),
        }
    }

    pub(crate) fn required<T>(&self, key: &str, value: Option<T>) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.err(key, "is required but missing"))
    }

    pub(crate) fn positive(
        &self,
        key: &str,
        value: Option<u64>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match value {
            Some(0) => Err(self.err(key, "must be greater than 0")),
            v => Ok(v.unwrap_or(default)),
        }
    }
}

/// Validates the whole file. Warnings are appended to `warnings`.
pub(crate) fn build(
    raw: RawConfig,
    file: &Path,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let ctx = Ctx { file };
    let raw_general = raw.general.ok_or_else(|| {
        ctx.err(
            "general",
            "the [general] table is required (admin_username and admin_password must be set)",
        )
    })?;
    let general = build_general(&ctx, raw_general, raw.peers.unwrap_or_default())?;
    let global_plugins = match &raw.plugins {
        Some(p) => Some(super::plugins::build_plugins(&ctx, "plugins", p)?),
        None => None,
    };

    let raw_pools = raw.pools.unwrap_or_default();
    if raw_pools.is_empty() {
        warnings
            .push("no pools are configured: clients can only reach the admin database".to_string());
    }
    let mut pools = BTreeMap::new();
    for (name, raw_pool) in raw_pools {
        let key = join("pools", &name);
        if name.is_empty() {
            return Err(ctx.err(key, "a pool name must not be empty"));
        }
        let pool = build_pool(
            &ctx,
            &key,
            raw_pool,
            (&general, global_plugins.as_ref()),
            warnings,
        )?;
        pools.insert(name, pool);
    }

    Ok(Config {
        path: file.to_path_buf(),
        general,
        pools,
    })
}

/// `auth_query` takes the user name as `$1` and needs both `auth_query_user` and
/// `auth_query_password`.
pub(crate) fn check_auth_query(
    ctx: &Ctx,
    table: &str,
    query: &Option<String>,
    user: &Option<String>,
    password: &Option<String>,
) -> Result<(), ConfigError> {
    if let Some(query) = query {
        if !query.contains("$1") {
            return Err(ctx.err(
                join(table, "auth_query"),
                "must take the user name as $1 (e.g. SELECT usename, passwd FROM pg_shadow WHERE usename = $1)",
            ));
        }
        if user.is_none() {
            return Err(ctx.err(
                join(table, "auth_query_user"),
                "is required when auth_query is set",
            ));
        }
        if password.is_none() {
            return Err(ctx.err(
                join(table, "auth_query_password"),
                "is required when auth_query is set",
            ));
        }
    }
    Ok(())
}

fn build_pool(
    ctx: &Ctx,
    key: &str,
    p: RawPool,
    (general, global_plugins): (&General, Option<&super::Plugins>),
    warnings: &mut Vec<String>,
) -> Result<Pool, ConfigError> {
    let k = |name: &str| join(key, name);

    let query_parser_enabled = p.query_parser_enabled.unwrap_or(false);
    let query_parser_read_write_splitting = p.query_parser_read_write_splitting.unwrap_or(false);
    if query_parser_read_write_splitting && !query_parser_enabled {
        return Err(ctx.err(
            k("query_parser_read_write_splitting"),
            "requires query_parser_enabled = true",
        ));
    }
    // The pool's own plugins replace the global ones (PgCat's rule).
    let plugins = match &p.plugins {
        Some(own) => super::plugins::build_plugins(ctx, &k("plugins"), own)?,
        None => global_plugins.cloned().unwrap_or_default(),
    };
    if (p.plugins.is_some() || global_plugins.is_some()) && !query_parser_enabled {
        warnings.push(format!(
            "{key}: plugins require query_parser_enabled = true (PgCat refuses this config)"
        ));
    }

    // Inherit the auth_query settings the pool does not set from [general], then check.
    let auth_query = p.auth_query.or_else(|| general.auth_query.clone());
    let auth_query_user = p
        .auth_query_user
        .or_else(|| general.auth_query_user.clone());
    let auth_query_password = p
        .auth_query_password
        .or_else(|| general.auth_query_password.clone());
    check_auth_query(
        ctx,
        key,
        &auth_query,
        &auth_query_user,
        &auth_query_password,
    )?;
    let auth_query_complete = auth_query.is_some();

    if let Some(sk) = &p.automatic_sharding_key {
        if sk.matches('.').count() != 1 {
            return Err(ctx.err(
                k("automatic_sharding_key"),
                format!("'{sk}' must be written as \"table.column\" (exactly one dot)"),
            ));
        }
    }
    for (name, re) in [
        ("sharding_key_regex", &p.sharding_key_regex),
        ("shard_id_regex", &p.shard_id_regex),
    ] {
        if let Some(re) = re {
            if let Err(e) = regex::Regex::new(re) {
                // regex's syntax errors are multi-line (pattern, caret, "error: ..."); keep
                // the last line, the reason, and show the pattern once.
                let text = e.to_string();
                let last = text.lines().last().unwrap_or_default().trim();
                let why = last.strip_prefix("error: ").unwrap_or(last);
                return Err(ctx.err(
                    k(name),
                    format!("'{re}' is not a valid regular expression: {why}"),
                ));
            }
        }
    }

    let shards = build_shards(ctx, key, ctx.required(&k("shards"), p.shards)?)?;
    let default_shard = ctx.enum_value(
        &k("default_shard"),
        "default shard",
        p.default_shard.as_deref(),
        DefaultShard::Shard(0),
        parse_default_shard,
    )?;
    if let DefaultShard::Shard(n) = default_shard {
        if n >= shards.len() {
            return Err(ctx.err(
                k("default_shard"),
                format!(
                    "'shard_{n}' is out of range: the pool has {} shard(s), shard_0 to shard_{}",
                    shards.len(),
                    shards.len() - 1
                ),
            ));
        }
    }

    let users = build_users(
        ctx,
        key,
        ctx.required(&k("users"), p.users)?,
        auth_query_complete,
    )?;
    if users.is_empty() {
        warnings.push(format!(
            "{key}: the pool has no users, no client can use it"
        ));
    }

    let pool_mode = ctx.enum_value(
        &k("pool_mode"),
        "pool mode",
        p.pool_mode.as_deref(),
        PoolMode::Transaction,
        parse_pool_mode,
    )?;
    check_cross_shard(
        ctx,
        key,
        default_shard,
        query_parser_enabled,
        pool_mode,
        &users,
    )?;
    Ok(Pool {
        pool_mode,
        load_balancing_mode: ctx.enum_value(
            &k("load_balancing_mode"),
            "load balancing mode",
            p.load_balancing_mode.as_deref(),
            LoadBalancingMode::Random,
            parse_load_balancing_mode,
        )?,
        default_role: ctx.enum_value(
            &k("default_role"),
            "default role",
            p.default_role.as_deref(),
            DefaultRole::Any,
            parse_default_role,
        )?,
        query_parser_enabled,
        query_parser_max_length: p.query_parser_max_length,
        max_replica_lag_bytes: p.max_replica_lag_bytes,
        read_your_writes: p.read_your_writes.unwrap_or(false),
        pin_session_state: p.pin_session_state.unwrap_or(true),
        query_parser_read_write_splitting,
        primary_reads_enabled: p.primary_reads_enabled.unwrap_or(false),
        connect_timeout: p.connect_timeout,
        idle_timeout: p.idle_timeout,
        server_lifetime: p.server_lifetime,
        checkout_failure_limit: p.checkout_failure_limit,
        sharding_function: ctx.enum_value(
            &k("sharding_function"),
            "sharding function",
            p.sharding_function.as_deref(),
            ShardingFunction::PgBigintHash,
            parse_sharding_function,
        )?,
        automatic_sharding_key: p.automatic_sharding_key,
        sharding_key_regex: p.sharding_key_regex,
        shard_id_regex: p.shard_id_regex,
        regex_search_limit: p.regex_search_limit.unwrap_or(defaults::REGEX_SEARCH_LIMIT),
        default_shard,
        auth_query,
        auth_query_user,
        auth_query_password,
        cleanup_server_connections: p
            .cleanup_server_connections
            .unwrap_or(defaults::CLEANUP_SERVER_CONNECTIONS),
        log_client_parameter_status_changes: p.log_client_parameter_status_changes.unwrap_or(false),
        prepared_statements_cache_size: p
            .prepared_statements_cache_size
            .unwrap_or(defaults::PREPARED_STATEMENTS_CACHE_SIZE),
        db_activity_based_routing: p.db_activity_based_routing.unwrap_or(false),
        db_activity_init_delay: ctx.positive(
            &k("db_activity_init_delay"),
            p.db_activity_init_delay,
            defaults::DB_ACTIVITY_INIT_DELAY,
        )?,
        db_activity_ttl: ctx.positive(
            &k("db_activity_ttl"),
            p.db_activity_ttl,
            defaults::DB_ACTIVITY_TTL,
        )?,
        table_mutation_cache_ms_ttl: ctx.positive(
            &k("table_mutation_cache_ms_ttl"),
            p.table_mutation_cache_ms_ttl,
            defaults::TABLE_MUTATION_CACHE_MS_TTL,
        )?,
        two_phase_commit: p.two_phase_commit.unwrap_or(false),
        plugins,
        shards,
        users,
    })
}

/// `default_shard = "all"` reads the query to know what runs where, so it needs the query
/// parser; `"all"` and `"error"` decide per statement, which session mode (one server
/// for the whole session) cannot do.
fn check_cross_shard(
    ctx: &Ctx,
    pool_key: &str,
    default_shard: DefaultShard,
    query_parser_enabled: bool,
    pool_mode: PoolMode,
    users: &[User],
) -> Result<(), ConfigError> {
    let value = match default_shard {
        DefaultShard::All => "all",
        DefaultShard::Error => "error",
        _ => return Ok(()),
    };
    let key = join(pool_key, "default_shard");
    if default_shard == DefaultShard::All && !query_parser_enabled {
        return Err(ctx.err(
            key,
            format!("\"all\" requires {pool_key}.query_parser_enabled = true"),
        ));
    }
    let session = users
        .iter()
        .find(|u| u.pool_mode.unwrap_or(pool_mode) == PoolMode::Session);
    if let Some(user) = session {
        return Err(ctx.err(
            key,
            format!(
                "\"{value}\" needs pool_mode = \"transaction\", but user \"{}\" is in session mode \
                 (it decides per statement; a session-mode client keeps one server)",
                user.username
            ),
        ));
    }
    Ok(())
}

/// Users in numeric key order (non-numeric keys, which PgCat tolerates, after them by name).
fn build_users(
    ctx: &Ctx,
    pool_key: &str,
    raw: BTreeMap<String, RawUser>,
    auth_query_complete: bool,
) -> Result<Vec<User>, ConfigError> {
    let users_key = join(pool_key, "users");
    let mut ordered: Vec<(String, RawUser)> = raw.into_iter().collect();
    ordered.sort_by(|(a, _), (b, _)| {
        let rank = |s: &str| s.parse::<u64>().map_or((1, 0), |n| (0, n));
        rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
    });

    let mut users: Vec<User> = Vec::with_capacity(ordered.len());
    for (name, u) in ordered {
        let key = join(&users_key, &name);
        let user = build_user(ctx, &key, u, auth_query_complete)?;
        if users.iter().any(|other| other.username == user.username) {
            return Err(ctx.err(
                join(&key, "username"),
                format!("'{}' is defined twice in this pool", user.username),
            ));
        }
        users.push(user);
    }
    Ok(users)
}

fn build_user(
    ctx: &Ctx,
    key: &str,
    u: RawUser,
    auth_query_complete: bool,
) -> Result<User, ConfigError> {
    let k = |name: &str| join(key, name);
    let username = ctx.required(&k("username"), u.username)?;
    let auth_type = ctx.enum_value(
        &k("auth_type"),
        "auth type",
        u.auth_type.as_deref(),
        AuthType::ScramSha256,
        parse_auth_type,
    )?;
    if u.password.is_none() && !auth_query_complete && auth_type != AuthType::Trust {
        return Err(ctx.err(
            k("password"),
            "is required unless the pool has auth_query, auth_query_user and \
             auth_query_password, or auth_type = \"trust\"",
        ));
    }
    let pool_size = ctx.required(&k("pool_size"), u.pool_size)?;
    if pool_size == 0 {
        return Err(ctx.err(k("pool_size"), "must be at least 1"));
    }
    let min_pool_size = u.min_pool_size.unwrap_or(0);
    if min_pool_size > pool_size {
        return Err(ctx.err(
            k("min_pool_size"),
            format!("{min_pool_size} is larger than pool_size ({pool_size})"),
        ));
    }
    let pool_mode = match u.pool_mode.as_deref() {
        None => None,
        Some(v) => Some(ctx.enum_value(
            &k("pool_mode"),
            "pool mode",
            Some(v),
            PoolMode::Transaction,
            parse_pool_mode,
        )?),
    };
    Ok(User {
        username,
        password: u.password,
        auth_type,
        server_username: u.server_username,
        server_password: u.server_password,
        pool_size,
        min_pool_size,
        pool_mode,
        server_lifetime: u.server_lifetime,
        connect_timeout: u.connect_timeout,
        idle_timeout: u.idle_timeout,
        statement_timeout: u.statement_timeout.unwrap_or(0),
    })
}
