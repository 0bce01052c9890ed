//! The connections of one server address: a bounded pool with fair waiting, in place of
//! deadpool (BENCHMARKS.md, "The pool": deadpool's checkout and return cost ≈ 1.4k
//! instructions a transaction, this one ≈ 0.2k).
//!
//! `max_size` permits of a fair (FIFO) semaphore bound the connections handed out or being
//! opened; idle connections hold none. A checkout takes a permit, then an idle connection
//! (checked by [`Factory::recycle`]) or, when none is left, opens one. A [`Pooled`] gives
//! its connection back to the idle list and its permit back to the semaphore when dropped;
//! [`Pooled::discard`] closes the connection instead.
//!
//! Generic over the [`Factory`] (the pooler's is `Manager`, which opens server
//! connections) so that the pool itself is unit-tested and benchmarked alone
//! (`cargo bench --bench pool`).

use std::collections::VecDeque;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::stats::clock::now_us;

/// Opens connections and says whether an idle one may be handed out again.
pub trait Factory: Send + Sync + 'static {
    type Conn: Send + 'static;
    type Error;

    /// A new connection.
    fn create(&self) -> impl Future<Output = Result<Box<Self::Conn>, Self::Error>> + Send;

    /// Whether the idle `conn` may be handed out at `now` (µs of [`now_us`]); why not, if
    /// not.
    fn recycle(
        &self,
        conn: &mut Self::Conn,
        metrics: &Metrics,
        now: u64,
    ) -> impl Future<Output = Result<(), &'static str>> + Send;
}

/// When a connection was opened and last handed out (µs of [`now_us`]).
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    pub created: u64,
    pub last_used: u64,
}

impl Metrics {
    /// Microseconds since the connection was opened, at `now`.
    pub fn age_us(&self, now: u64) -> u64 {
        now.saturating_sub(self.created)
    }

    /// Microseconds since the connection was last handed out (or opened), at `now`.
    pub fn idle_us(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_used)
    }
}

/// Connections of the address: all of them, and the idle ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub size: usize,
    pub available: usize,
}

/// Why no connection was had.
#[derive(Debug, PartialEq, Eq)]
pub enum PoolError<E> {
    /// Every permit is in use (immediately for [`Pool::try_get`], after the wait timeout
    /// for [`Pool::get`]).
    Busy,
    /// Opening a connection took longer than the create timeout.
    CreateTimeout,
    /// Opening a connection failed.
    Backend(E),
}

impl<E: std::fmt::Display> std::fmt::Display for PoolError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolError::Busy => f.write_str("no connection free within the wait timeout"),
            PoolError::CreateTimeout => f.write_str("opening a connection timed out"),
            PoolError::Backend(e) => e.fmt(f),
        }
    }
}

struct Idle<C> {
    conn: Box<C>,
    metrics: Metrics,
}

struct Slots<C> {
    idle: VecDeque<Idle<C>>,
    /// Connections that exist or are being opened.
    size: usize,
}

struct Inner<F: Factory> {
    factory: F,
    permits: Semaphore,
    slots: Mutex<Slots<F::Conn>>,
    wait_timeout: Duration,
    create_timeout: Duration,
    /// Hand out the most recently returned connection first (false: the longest idle).
    lifo: bool,
}

impl<F: Factory> Inner<F> {
    fn slots(&self) -> MutexGuard<'_, Slots<F::Conn>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One connection fewer (closed or never opened).
    fn shrink(&self) {
        self.slots().size -= 1;
    }
}

/// A pool of connections to one server address (cheap to clone: shared).
pub struct Pool<F: Factory>(Arc<Inner<F>>);

impl<F: Factory> Clone for Pool<F> {
    fn clone(&self) -> Self {
        Pool(self.0.clone())
    }
}

/// A pool no longer kept alive by this reference (for background maintenance).
pub struct WeakPool<F: Factory>(Weak<Inner<F>>);

impl<F: Factory> WeakPool<F> {
    pub fn upgrade(&self) -> Option<Pool<F>> {
        self.0.upgrade().map(Pool)
    }
}

/// Counts a connection being opened (or checked) in `size` until defused: a checkout
/// dropped half way leaves the count right.
struct Reserved<'a, F: Factory>(Option<&'a Inner<F>>);

impl<F: Factory> Reserved<'_, F> {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl<F: Factory> Drop for Reserved<'_, F> {
    fn drop(&mut self) {
        if let Some(inner) = self.0 {
            inner.shrink();
        }
    }
}

impl<F: Factory> Pool<F> {
    pub fn new(
        factory: F,
        max_size: usize,
        wait_timeout: Duration,
        create_timeout: Duration,
        lifo: bool,
    ) -> Pool<F> {
        Pool(Arc::new(Inner {
            factory,
            permits: Semaphore::new(max_size),
            slots: Mutex::new(Slots {
                idle: VecDeque::with_capacity(max_size),
                size: 0,
            }),
            wait_timeout,
            create_timeout,
            lifo,
        }))
    }

    pub fn manager(&self) -> &F {
        &self.0.factory
    }

    pub fn weak(&self) -> WeakPool<F> {
        WeakPool(Arc::downgrade(&self.0))
    }

    pub fn status(&self) -> Status {
        let slots = self.0.slots();
        Status {
            size: slots.size,
            available: slots.idle.len(),
        }
    }

    /// A connection, waiting up to the wait timeout for one to be free.
    pub async fn get(&self) -> Result<Pooled<F>, PoolError<F::Error>> {
        let acquire = self.0.permits.acquire();
        let permit = match tokio::time::timeout(self.0.wait_timeout, acquire).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a timeout is a busy pool.
            _ => return Err(PoolError::Busy),
        };
        self.with_permit(permit).await
    }

    /// A connection if one may be had without waiting for another client's
    /// ([`PoolError::Busy`] otherwise; opening a new one is not waiting).
    pub async fn try_get(&self) -> Result<Pooled<F>, PoolError<F::Error>> {
        let permit = self.0.permits.try_acquire().map_err(|_| PoolError::Busy)?;
        self.with_permit(permit).await
    }

    async fn with_permit(
        &self,
        permit: SemaphorePermit<'_>,
    ) -> Result<Pooled<F>, PoolError<F::Error>> {
        let inner = &*self.0;
        loop {
            let popped = {
                let mut slots = inner.slots();
                if inner.lifo {
                    slots.idle.pop_back()
                } else {
                    slots.idle.pop_front()
                }
            };
            let Some(Idle { mut conn, metrics }) = popped else {
                break;
            };
            let reserved = Reserved(Some(inner));
            let now = now_us();
            if inner
                .factory
                .recycle(&mut conn, &metrics, now)
                .await
                .is_ok()
            {
                reserved.defuse();
                let metrics = Metrics {
                    last_used: now,
                    ..metrics
                };
                permit.forget();
                return Ok(self.server(conn, metrics));
            }
            // Not reusable: `reserved` counts it out as it is closed.
        }
        inner.slots().size += 1;
        let reserved = Reserved(Some(inner));
        let conn = match tokio::time::timeout(inner.create_timeout, inner.factory.create()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(PoolError::Backend(e)),
            Err(_) => return Err(PoolError::CreateTimeout),
        };
        reserved.defuse();
        permit.forget();
        let now = now_us();
        Ok(self.server(
            conn,
            Metrics {
                created: now,
                last_used: now,
            },
        ))
    }

    /// Hands out `conn`, whose permit the caller has taken.
    fn server(&self, conn: Box<F::Conn>, metrics: Metrics) -> Pooled<F> {
        Pooled {
            conn: Some(conn),
            metrics,
            pool: self.0.clone(),
        }
    }

    /// Keeps the idle connections for which `keep` is true and closes the others.
    pub fn retain(&self, mut keep: impl FnMut(&F::Conn, &Metrics) -> bool) {
        let closed: VecDeque<Idle<F::Conn>> = {
            let mut slots = self.0.slots();
            let (kept, closed) = std::mem::take(&mut slots.idle)
                .into_iter()
                .partition(|i| keep(&i.conn, &i.metrics));
            slots.idle = kept;
            slots.size -= closed.len();
            closed
        };
        // Closed outside the lock.
        drop(closed);
    }
}

/// A connection handed out: back to its pool when dropped.
pub struct Pooled<F: Factory> {
    /// `None` only while being dropped or discarded.
    conn: Option<Box<F::Conn>>,
    metrics: Metrics,
    pool: Arc<Inner<F>>,
}

impl<F: Factory> Pooled<F> {
    /// Closes the connection instead of giving it back (its state is unknown or broken).
    pub fn discard(mut self) {
        self.conn = None;
    }
}

impl<F: Factory> Drop for Pooled<F> {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(conn) => {
                self.pool.slots().idle.push_back(Idle {
                    conn,
                    metrics: self.metrics,
                });
            }
            None => self.pool.shrink(),
        }
        self.pool.permits.add_permits(1);
    }
}

impl<F: Factory> Deref for Pooled<F> {
    type Target = F::Conn;

    fn deref(&self) -> &F::Conn {
        self.conn
            .as_deref()
            .expect("a handed-out server has its connection")
    }
}

impl<F: Factory> DerefMut for Pooled<F> {
    fn deref_mut(&mut self) -> &mut F::Conn {
        (self.conn.as_deref_mut()).expect("a handed-out server has its connection")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    use super::*;

    /// Connections are numbers; `fail` makes creation fail, `stale` names connections
    /// recycling rejects, `slow` makes creation wait.
    #[derive(Default)]
    struct Numbers {
        made: AtomicU32,
        fail: std::sync::atomic::AtomicBool,
        stale: Mutex<Vec<u32>>,
        slow: Option<Duration>,
    }

    impl Factory for Numbers {
        type Conn = u32;
        type Error = &'static str;

        async fn create(&self) -> Result<Box<u32>, &'static str> {
            if let Some(d) = self.slow {
                tokio::time::sleep(d).await;
            }
            if self.fail.load(Relaxed) {
                return Err("refused");
            }
            Ok(Box::new(self.made.fetch_add(1, Relaxed)))
        }

        async fn recycle(&self, conn: &mut u32, _: &Metrics, _: u64) -> Result<(), &'static str> {
            match self.stale.lock().unwrap().contains(conn) {
                true => Err("stale"),
                false => Ok(()),
            }
        }
    }

    fn pool(max: usize, lifo: bool, factory: Numbers) -> Pool<Numbers> {
        let t = Duration::from_millis(50);
        Pool::new(factory, max, t, t, lifo)
    }

    fn status(size: usize, available: usize) -> Status {
        Status { size, available }
    }

    #[tokio::test]
    async fn reuses_returned_connections() {
        let p = pool(2, true, Numbers::default());
        let a = p.try_get().await.unwrap();
        assert_eq!((*a, p.status()), (0, status(1, 0)));
        drop(a);
        assert_eq!(p.status(), status(1, 1));
        let again = p.try_get().await.unwrap();
        assert_eq!(*again, 0);
        let second = p.try_get().await.unwrap();
        assert_eq!((*second, p.status()), (1, status(2, 0)));
    }

    #[tokio::test]
    async fn bounded_with_fair_waiting() {
        let p = pool(2, true, Numbers::default());
        let (a, b) = (p.try_get().await.unwrap(), p.try_get().await.unwrap());
        assert_eq!(p.try_get().await.err(), Some(PoolError::Busy));
        assert_eq!(
            p.get().await.err(),
            Some(PoolError::Busy),
            "after the wait timeout"
        );
        // Two waiters, in order; each returned connection goes to the first in line.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for waiter in ["first", "second"] {
            let (p, tx) = (p.clone(), tx.clone());
            tokio::spawn(async move {
                tx.send((waiter, p.get().await)).unwrap();
            });
            tokio::task::yield_now().await;
        }
        drop(b);
        let first = rx.recv().await.map(|(w, got)| (w, got.unwrap())).unwrap();
        assert_eq!((first.0, *first.1), ("first", 1));
        // A checkout that does not wait cannot take the place of the one still waiting.
        assert_eq!(p.try_get().await.err(), Some(PoolError::Busy));
        drop(a);
        let second = rx.recv().await.map(|(w, got)| (w, got.unwrap())).unwrap();
        assert_eq!((second.0, *second.1), ("second", 0));
        drop((first, second));
        assert_eq!(p.status(), status(2, 2));
    }

    #[tokio::test]
    async fn discarded_and_failed_connections_are_not_counted() {
        let p = pool(1, true, Numbers::default());
        p.try_get().await.unwrap().discard();
        assert_eq!(p.status(), status(0, 0));
        p.manager().fail.store(true, Relaxed);
        assert_eq!(p.try_get().await.err(), Some(PoolError::Backend("refused")));
        assert_eq!(p.status(), status(0, 0));
        p.manager().fail.store(false, Relaxed);
        assert_eq!(
            *p.try_get().await.unwrap(),
            1,
            "the permit came back each time"
        );
    }

    #[tokio::test]
    async fn rejected_idle_connections_are_replaced() {
        let p = pool(2, true, Numbers::default());
        drop((p.try_get().await.unwrap(), p.try_get().await.unwrap()));
        p.manager().stale.lock().unwrap().extend([0, 1]);
        let fresh = p.try_get().await.unwrap();
        assert_eq!((*fresh, p.status()), (2, status(1, 0)));
    }

    #[tokio::test]
    async fn slow_or_abandoned_creation_leaves_the_count_right() {
        let slow = Numbers {
            slow: Some(Duration::from_millis(200)),
            ..Numbers::default()
        };
        let p = pool(1, true, slow);
        assert_eq!(p.try_get().await.err(), Some(PoolError::CreateTimeout));
        assert_eq!(p.status(), status(0, 0));
        let abandoned = tokio::time::timeout(Duration::from_millis(10), p.try_get()).await;
        assert!(abandoned.is_err());
        assert_eq!(p.status(), status(0, 0));
        assert!(
            p.try_get().await.is_err(),
            "the permit is free again (and times out)"
        );
    }

    #[tokio::test]
    async fn queue_order_and_retain() {
        for (lifo, first) in [(true, 1), (false, 0)] {
            let p = pool(2, lifo, Numbers::default());
            let (a, b) = (p.try_get().await.unwrap(), p.try_get().await.unwrap());
            drop(a);
            drop(b);
            assert_eq!(*p.try_get().await.unwrap(), first, "lifo = {lifo}");
        }
        let p = pool(3, true, Numbers::default());
        let all = [(); 3].map(|_| p.try_get());
        let held: Vec<_> = futures_held(all).await;
        drop(held);
        p.retain(|conn, _| *conn != 1);
        assert_eq!(p.status(), status(2, 2));
        let weak = p.weak();
        assert!(weak.upgrade().is_some());
        drop(p);
        assert!(weak.upgrade().is_none());
    }

    /// Awaits each checkout in turn, keeping what they handed out.
    async fn futures_held<F: Future<Output = Result<Pooled<Numbers>, PoolError<&'static str>>>>(
        all: [F; 3],
    ) -> Vec<Pooled<Numbers>> {
        let mut held = Vec::new();
        for f in all {
            held.push(f.await.unwrap());
        }
        held
    }
}
