//! Checkout: the addresses a route may use (default shard, replicas by load balancing and
//! lag, primary fallback), taking a connection from one, and the error a client is told
//! when none can be had. PAUSE holds checkouts here.

use super::*;

impl UserPool {
    /// The shard of a transaction the router did not place: `default_shard`.
    pub fn default_shard_index(&self) -> usize {
        match self.default_shard {
            DefaultShard::Shard(n) => n.min(self.shards.len() - 1),
            // What reaches a server with no shard here reads none of the application's
            // tables (the rest ran on every shard or was refused): any shard answers it.
            DefaultShard::All | DefaultShard::Error => 0,
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
    pub(super) fn primary(&self, shard: usize) -> &Address {
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
    pub(super) fn candidates(
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
        // A checkout that does not wait is tried first everywhere, so no timer is armed when
        // a connection is free (waiting clients still come first: a free permit means
        // nobody waits).
        let mut last_error = None;
        for address in &candidates {
            match address.pool.try_get().await {
                Ok(server) => return Ok(server),
                Err(PoolError::Busy) => {}
                Err(e) => last_error = Some(self.checkout_error(address, e)),
            }
        }
        let mut busy = false;
        for address in &candidates {
            match Box::pin(address.pool.get()).await {
                Ok(server) => return Ok(server),
                Err(PoolError::Busy) => busy = true,
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
        match address.pool.try_get().await {
            // Waiting is the slow path: boxed, so the request future stays small.
            Err(PoolError::Busy) => Box::pin(address.pool.get()).await,
            got => got,
        }
        .map_err(|e| self.checkout_error(address, e))
    }

    fn checkout_error(&self, address: &Address, e: PoolError) -> PgError {
        let ms = self.connect_timeout.as_millis();
        // A server that cannot be reached or logged in to is banned; a busy pool is not.
        let credentials = matches!(
            e,
            PoolError::Backend(
                crate::backend::BackendError::Login { .. }
                    | crate::backend::BackendError::Auth { .. }
            )
        );
        if !credentials && !matches!(e, PoolError::Busy) {
            let unreachable = matches!(
                e,
                PoolError::CreateTimeout
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
            PoolError::Busy => PgError::error(
                "53300",
                format!(
                    "no server connection available for database \"{}\" user \"{}\" within {ms} ms",
                    self.pool_name, self.username
                ),
            )
            .with_hint("All pool_size connections are busy; raise pool_size or connect_timeout, or shorten transactions."),
            PoolError::CreateTimeout => PgError::error(
                "08001",
                format!("could not connect to server {}:{} within {ms} ms (connect_timeout)", address.host, address.port),
            ),
            PoolError::Backend(e) => e.to_client(),
        }
    }

    /// Waits while the pool is paused.
    async fn wait_resumed(&self) {
        if !self.is_paused() {
            return;
        }
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }
}
