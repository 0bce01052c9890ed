//! The factory of an address's server connections (see `slots`): how to open one and
//! whether an idle one may be handed out again (within `server_lifetime`, still connected,
//! nothing unread).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::Health;
use super::slots::{Factory, Metrics, Pool, Pooled};
use crate::backend::statements::ServerStatements;
use crate::backend::{self, BackendError, ServerConn, ServerStats, ServerTarget, TcpSettings};
use crate::stats::clock::now_us;
use crate::stats::{Counters, Registry};

pub struct Manager {
    pub target: ServerTarget,
    pub tcp: TcpSettings,
    /// `server_lifetime` in µs of [`now_us`].
    pub server_lifetime_us: u64,
    /// `prepared_statements_cache_size`: statements kept per server (0 = off).
    pub statement_cache: usize,
    pub counters: Arc<Counters>,
    pub health: Arc<Health>,
    /// A connection idle longer than this (µs) is checked before it is handed out.
    pub healthcheck_delay_us: u64,
    pub healthcheck_timeout: Duration,
    pub ban_secs: u64,
    pub registry: Arc<Registry>,
    pub pool_name: String,
    /// The `prewarmer` plugin's queries, run on each new connection before its first use.
    pub prewarm: Arc<[String]>,
    /// The shard's mirrors of this server: each new connection gets a mirror connection
    /// to each.
    pub mirrors: Vec<Arc<backend::MirrorTarget>>,
    /// Connections made before this are closed instead of reused.
    pub cutoff: Cutoff,
    /// Connections being opened (SHOW POOLS' `sv_login`) and being checked before reuse
    /// (`sv_tested`) now.
    pub logging_in: AtomicUsize,
    pub testing: AtomicUsize,
}

/// Counts one in `gauge` while it lives.
struct During<'a>(&'a AtomicUsize);

impl<'a> During<'a> {
    fn new(gauge: &'a AtomicUsize) -> During<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        During(gauge)
    }
}

impl Drop for During<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A moment before which connections are not reused (the server's address changed); one
/// atomic load per reuse.
#[derive(Debug, Default)]
pub struct Cutoff {
    /// µs of [`now_us`]; 0: none.
    at_us: AtomicU64,
}

impl Cutoff {
    /// Connections made until now are not reused.
    pub fn set_now(&self) {
        self.at_us.store(now_us(), Ordering::Relaxed);
    }

    /// The moment set last, if any, on `Instant`'s clock (for the admin console, which
    /// compares it with the registry's connection times): as long before now as it was.
    pub fn at(&self) -> Option<Instant> {
        let at = self.at_us.load(Ordering::Relaxed);
        let ago = Duration::from_micros(now_us().saturating_sub(at));
        (at != 0).then(|| Instant::now().checked_sub(ago)).flatten()
    }

    /// Whether a connection opened at `created` (µs of [`now_us`]) is not to be reused.
    pub(super) fn excludes(&self, created: u64) -> bool {
        match self.at_us.load(Ordering::Relaxed) {
            0 => false,
            at => created <= at,
        }
    }
}

/// An address's pool of server connections.
pub type ServerPool = Pool<Manager>;
/// A server connection handed out by its pool.
pub type Server = Pooled<Manager>;

/// Connections are boxed, so the pool moves a pointer, not the connection, on every
/// checkout and return.
impl Factory for Manager {
    type Conn = ServerConn;
    type Error = BackendError;

    async fn create(&self) -> Result<Box<ServerConn>, BackendError> {
        let _counted = During::new(&self.logging_in);
        // Connecting is a large future (TLS, authentication): boxed, so the checkout
        // future that embeds this one stays small.
        let mut conn = Box::new(Box::pin(backend::connect(&self.target, &self.tcp)).await?);
        for query in self.prewarm.iter() {
            if let Err(e) = conn.execute(query).await {
                // Not used: the checkout gets the error, the connection is closed.
                tracing::warn!(pool = %self.pool_name, addr = %self.target.addr(), query, error = %e,
                    "prewarmer query failed: the new server connection is not used");
                return Err(e);
            }
        }
        if !self.mirrors.is_empty() {
            let tcp = &self.tcp;
            conn.mirror_to(
                (self.mirrors.iter())
                    .map(|m| backend::Mirror::start(m.clone(), tcp.clone()))
                    .collect(),
            );
        }
        let statements = NonZeroUsize::new(self.statement_cache).map(ServerStatements::new);
        let local = conn.io().local_addr();
        let backend_pid = conn.session().cancel_key().pid;
        let names = (
            self.pool_name.as_str(),
            self.target.user.as_str(),
            &*self.target.addr(),
        );
        let info = (self.registry).server(names, local, backend_pid);
        let stats = ServerStats::new(self.counters.clone(), info, self.health.clone());
        conn.session_mut().pooled(stats, statements);
        Ok(conn)
    }

    /// One that waited longer than `healthcheck_delay` is checked first.
    async fn recycle(
        &self,
        conn: &mut ServerConn,
        metrics: &Metrics,
        now: u64,
    ) -> Result<(), &'static str> {
        if metrics.age_us(now) > self.server_lifetime_us {
            return Err("server_lifetime reached");
        }
        if self.cutoff.excludes(metrics.created) {
            return Err("the server's address changed");
        }
        if !conn.is_alive() {
            return Err("server closed the connection");
        }
        if metrics.idle_us(now) > self.healthcheck_delay_us {
            let _counted = During::new(&self.testing);
            let check = Box::pin(tokio::time::timeout(
                self.healthcheck_timeout,
                conn.execute(";"),
            ))
            .await;
            match check {
                Ok(Ok(_)) => {}
                // This connection is gone, not necessarily the server: a new one is made.
                Ok(Err(e)) if e.lost_connection() => return Err("server closed the connection"),
                Ok(Err(_)) => {
                    self.health.ban(
                        self.ban_secs,
                        "health check before reuse failed",
                        false,
                        false,
                    );
                    return Err("health check before reuse failed");
                }
                Err(_) => {
                    self.health.ban(
                        self.ban_secs,
                        "health check before reuse did not answer in time",
                        false,
                        true,
                    );
                    return Err("health check before reuse timed out");
                }
            }
        }
        Ok(())
    }
}
