//! Server connection pools: one pool per (pool, user, shard, address) (`slots`: fair FIFO
//! waiting, no global lock), grouped per pool user, plus their maintenance (min_pool_size
//! kept warm, idle and lifetime reaping).
//!
//! Here: a pool user's addresses and settings (`UserPool`). Beside it: `build` (from the
//! config, and reload), `checkout` (which address, and the error when none), `take` (a
//! server with the client's parameters applied), `checkin` (giving it back), `auth_query`, `health` (checks and bans),
//! `activity` (activity-based routing),
//! `maintain` (warm and reap), `manager` (the connection factory), `notify`
//! (LISTEN/NOTIFY hub), `reported` (canonical ParameterStatus), `router` (the pool's
//! router settings and analysis cache).

pub mod activity;
mod auth_query;
mod build;
mod catalog;
mod checkin;
mod checkout;
pub mod health;
mod maintain;
mod manager;
pub mod notify;
mod reported;
pub mod router;
pub mod slots;
mod take;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgcat_parser::{Role as RouteRole, Route};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::auth::backend::{Credential, ServerSecret};
use crate::auth::scram::Verifier;
use crate::backend::statements::SchemaEpoch;
use crate::backend::{self, BackendError, MirrorTarget, ServerTarget, TcpSettings};
use crate::config::{self, AuthType, Config, DefaultShard, LoadBalancingMode, PoolMode, Role};
use crate::net::tls::ServerTls;
use crate::stats::{Counters, Registry};
use crate::wire::messages::PgError;

pub use auth_query::AuthQuery;
use build::Source;
pub use build::{BuildError, Pools};
pub use checkin::{abandon, checkin};
pub use take::TakeError;

pub use manager::{Manager, Server, ServerPool};
type PoolError = slots::PoolError<BackendError>;

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
    /// The shard's mirrors of this server, with what they received.
    pub mirrors: Vec<Arc<MirrorTarget>>,
}

impl Address {
    /// Replaces every connection to this address: idle ones are closed now, those in use
    /// when they come back (their transactions finish first).
    pub fn replace_connections(&self) {
        self.pool.manager().cutoff.set_now();
        self.close_replaced_idle();
    }

    /// When `replace_connections` last ran, if ever.
    pub fn replaced_at(&self) -> Option<std::time::Instant> {
        self.pool.manager().cutoff.at()
    }

    /// Closes the idle connections made before the last `replace_connections`.
    pub fn close_replaced_idle(&self) {
        let cutoff = &self.pool.manager().cutoff;
        self.pool
            .retain(|_, metrics| !cutoff.excludes(metrics.created));
    }

    /// Connections handed out now.
    pub fn active(&self) -> usize {
        let s = self.pool.status();
        s.size.saturating_sub(s.available)
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
    /// md5(password + user) in hex, derived once from `password` for md5 logins.
    pub md5_hex: Option<[u8; 32]>,
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
    /// `checkout_failure_limit`: a client whose checkouts failed this many times is
    /// disconnected.
    pub checkout_failure_limit: Option<u64>,
    pub default_shard: DefaultShard,
    /// `two_phase_commit`: transactions that wrote on several shards commit in two phases.
    pub two_phase_commit: bool,
    /// `log_client_parameter_status_changes`.
    pub log_client_parameter_status_changes: bool,
    /// The `intercept` plugin's queries, normalised (`pgcat_parser::normalized`), and the
    /// answer to each.
    pub intercepts: Vec<(String, crate::config::Intercept)>,
    /// The `query_logger` plugin is on.
    pub query_logger: bool,
    /// The `table_access` plugin's tables.
    pub blocked_tables: Vec<String>,
    pub load_balancing: LoadBalancingMode,
    /// Replicas further behind than this take no reads.
    pub max_replica_lag_bytes: Option<u64>,
    /// `read_your_writes`.
    pub read_your_writes: bool,
    /// `db_activity_based_routing`: the pool's memory of recent writes, shared by its users.
    pub activity: Option<Arc<activity::Activity>>,
    /// `pin_session_state`.
    pub pin_session_state: bool,
    /// `ban_time`, seconds.
    pub ban_secs: u64,
    pub shards: Vec<Vec<Address>>,
    /// Routing settings, comment hints and the analysis cache of this pool.
    pub router: router::PoolRouter,
    /// ParameterStatus values the servers report (see `reported`).
    reported: reported::Reported,
    /// The aggregate functions the databases define (see `catalog`), learned on first use.
    aggregates: tokio::sync::OnceCell<Vec<String>>,
    /// Shard 0's collations, learned at a schema epoch (see `catalog`).
    collations: std::sync::Mutex<Option<(u64, crate::merge::Collations)>>,
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

impl UserPool {
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

    /// Connections of this pool user handed out now, over all addresses.
    pub fn active(&self) -> usize {
        self.shards.iter().flatten().map(Address::active).sum()
    }
}
