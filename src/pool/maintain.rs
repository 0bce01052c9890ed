//! Pool maintenance: keeps `min_pool_size` connections open per
//! address and closes idle connections past `idle_timeout` and any past `server_lifetime`.
//! One task per pool user; it stops when the pools are dropped.

use std::time::Duration;

use super::{ServerPool, UserPool};
use crate::stats::clock::now_us;

pub fn spawn(up: &UserPool, min: usize, idle_timeout: Duration, lifetime: Duration) {
    let weak: Vec<_> = up.shards.iter().flatten().map(|a| a.pool.weak()).collect();
    let period =
        (idle_timeout.min(lifetime) / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let mut alive = 0;
            for pool in weak.iter().filter_map(|w| w.upgrade()) {
                alive += 1;
                reap(&pool, min, idle_timeout, lifetime);
                warm(&pool, min).await;
            }
            if alive == 0 {
                return;
            }
        }
    });
}

fn reap(pool: &ServerPool, min: usize, idle_timeout: Duration, lifetime: Duration) {
    let mut removable = pool.status().size.saturating_sub(min);
    let (now, idle_timeout, lifetime) = (
        now_us(),
        idle_timeout.as_micros() as u64,
        lifetime.as_micros() as u64,
    );
    pool.retain(|_, metrics| {
        if metrics.age_us(now) > lifetime {
            return false;
        }
        if metrics.idle_us(now) > idle_timeout && removable > 0 {
            removable -= 1;
            return false;
        }
        true
    });
}

async fn warm(pool: &ServerPool, min: usize) {
    // Hold what we take until the pool has grown: idle connections come back first, then
    // each get() opens a new one. Bounded: every round holds one more, up to pool_size.
    let mut held = Vec::new();
    while pool.status().size < min {
        match pool.get().await {
            Ok(conn) => held.push(conn),
            Err(e) => {
                tracing::warn!(error = %e, "could not open a connection for min_pool_size");
                break;
            }
        }
    }
}
