//! The deadpool manager for server connections: how to open one and whether an idle one
//! may be handed out again (within `server_lifetime`, still connected, nothing unread).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};

use super::health::Health;
use crate::backend::statements::ServerStatements;
use crate::backend::{self, BackendError, ServerConn, ServerStats, ServerTarget, TcpSettings};
use crate::stats::{Counters, Registry};

pub struct Manager {
    pub target: ServerTarget,
    pub tcp: TcpSettings,
    pub server_lifetime: Duration,
    /// `prepared_statements_cache_size`: statements kept per server (0 = off).
    pub statement_cache: usize,
    pub counters: Arc<Counters>,
    pub health: Arc<Health>,
    /// A connection idle longer than this is checked before it is handed out.
    pub healthcheck_delay: Duration,
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
#[derive(Debug)]
pub struct Cutoff {
    base: Instant,
    /// Nanoseconds after `base`; 0: none.
    after_base: AtomicU64,
}

impl Default for Cutoff {
    fn default() -> Cutoff {
        Cutoff {
            base: Instant::now(),
            after_base: AtomicU64::new(0),
        }
    }
}

impl Cutoff {
    /// Connections made until now are not reused.
    pub fn set_now(&self) {
        let nanos = self.base.elapsed().as_nanos().max(1);
        (self.after_base).store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The moment set last, if any.
    pub fn at(&self) -> Option<Instant> {
        match self.after_base.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.base + Duration::from_nanos(nanos)),
        }
    }

    pub(super) fn excludes(&self, created: Instant) -> bool {
        match self.after_base.load(Ordering::Relaxed) {
            0 => false,
            nanos => created <= self.base + Duration::from_nanos(nanos),
        }
    }
}

/// Boxed, so deadpool moves a pointer, not the connection, on every checkout and return.
impl managed::Manager for Manager {
    type Type = Box<ServerConn>;
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

    async fn recycle(
        &self,
        conn: &mut Box<ServerConn>,
        metrics: &Metrics,
    ) -> RecycleResult<BackendError> {
        // One clock read for both ages.
        let now = Instant::now();
        if now.saturating_duration_since(metrics.created) > self.server_lifetime {
            return Err(RecycleError::message("server_lifetime reached"));
        }
        if self.cutoff.excludes(metrics.created) {
            return Err(RecycleError::message("the server's address changed"));
        }
        if !conn.is_alive() {
            return Err(RecycleError::message("server closed the connection"));
        }
        let last_used = metrics.recycled.unwrap_or(metrics.created);
        if now.saturating_duration_since(last_used) > self.healthcheck_delay {
            let _counted = During::new(&self.testing);
            let check = Box::pin(tokio::time::timeout(
                self.healthcheck_timeout,
                conn.execute(";"),
            ))
            .await;
            match check {
                Ok(Ok(_)) => {}
                // This connection is gone, not necessarily the server: a new one is made.
                Ok(Err(e)) if e.lost_connection() => {
                    return Err(RecycleError::message("server closed the connection"))
                }
                Ok(Err(_)) => {
                    self.health.ban(
                        self.ban_secs,
                        "health check before reuse failed",
                        false,
                        false,
                    );
                    return Err(RecycleError::message("health check before reuse failed"));
                }
                Err(_) => {
                    self.health.ban(
                        self.ban_secs,
                        "health check before reuse did not answer in time",
                        false,
                        true,
                    );
                    return Err(RecycleError::message("health check before reuse timed out"));
                }
            }
        }
        Ok(())
    }
}

pub type ServerPool = managed::Pool<Manager>;
pub type Server = managed::Object<Manager>;
