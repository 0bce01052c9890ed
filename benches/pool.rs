//! `cargo bench --bench pool`: a checkout and return of an idle connection, the pool's work
//! in every transaction, with the pooler's pool (`pgcat::pool::slots`) and, beside it,
//! deadpool 0.13 (which it replaced) configured as the pooler had it: the same connection
//! factory shape (boxed connections, a recycle check reading the clock), a non-waiting
//! checkout first.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pgcat::pool::slots::{Factory, Metrics, Pool};

/// Connections are numbers; every idle one may be reused.
struct Numbers;

impl Factory for Numbers {
    type Conn = u64;
    type Error = ();

    async fn create(&self) -> Result<Box<u64>, ()> {
        Ok(Box::new(7))
    }

    async fn recycle(
        &self,
        conn: &mut u64,
        metrics: &Metrics,
        now: u64,
    ) -> Result<(), &'static str> {
        black_box((conn, metrics.age_us(now)));
        Ok(())
    }
}

struct DeadNumbers;

impl deadpool::managed::Manager for DeadNumbers {
    type Type = Box<u64>;
    type Error = ();

    async fn create(&self) -> Result<Box<u64>, ()> {
        Ok(Box::new(7))
    }

    async fn recycle(
        &self,
        conn: &mut Box<u64>,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<()> {
        black_box((
            conn,
            std::time::Instant::now().duration_since(metrics.created),
        ));
        Ok(())
    }
}

/// Runs a future that completes without waiting (a free connection), polling it once:
/// what is measured is the pool, not a runtime's scheduling.
fn at_once<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a checkout of an idle connection waited"),
    }
}

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _in_runtime = rt.enter();
    let mut group = c.benchmark_group("pool");
    let timeout = Duration::from_secs(1);
    let ours = Pool::new(Numbers, 20, timeout, timeout, true);
    group.bench_function("slots: checkout and return", |b| {
        b.iter(|| drop(black_box(at_once(ours.try_get()))))
    });
    let theirs: deadpool::managed::Pool<DeadNumbers> =
        deadpool::managed::Pool::builder(DeadNumbers)
            .max_size(20)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("pool");
    let no_wait = deadpool::managed::Timeouts {
        wait: Some(Duration::ZERO),
        ..theirs.timeouts()
    };
    group.bench_function("deadpool: checkout and return", |b| {
        b.iter(|| drop(black_box(at_once(theirs.timeout_get(&no_wait)))))
    });
    group.finish();
}

criterion_group!(benches, checkout);
criterion_main!(benches);
