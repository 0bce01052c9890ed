//! `cargo bench -p pgcat-parser`: what routing a statement costs, cold (parse, classify,
//! find keys, route) and cached (hash + lookup + route), for pgbench's statements and a
//! 1 KB join, and a statement whose literal changes every time (cached by shape).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgcat_parser::{
    resolve_keys, route, Analysis, AnalysisCache, KeyColumn, PoolRouting, SessionRouting,
};

const STATEMENTS: [(&str, &str); 5] = [
    ("select (pgbench -S)", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"),
    ("update (tpcb)", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;"),
    ("insert (tpcb)", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);"),
    ("begin", "BEGIN;"),
    ("1 KB join", "SELECT o.id, o.created_at, o.status, o.total, c.id, c.name, c.email, c.country, a.street, a.city, a.zip, p.id, p.name, p.price, i.quantity, i.price, s.name, s.carrier, s.tracking, r.amount, r.reason FROM orders o JOIN customers c ON c.id = o.customer_id JOIN addresses a ON a.id = o.address_id JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id LEFT JOIN shipments s ON s.order_id = o.id LEFT JOIN refunds r ON r.order_id = o.id WHERE o.customer_id = $1 AND o.status IN ('paid', 'shipped', 'delivered') AND o.created_at > now() - interval '30 days' AND p.price > 10 ORDER BY o.created_at DESC, i.quantity DESC LIMIT 50"),
];

fn routing(c: &mut Criterion) {
    let pool = PoolRouting {
        shards: 3,
        query_parser_enabled: true,
        read_write_splitting: true,
        automatic_key: KeyColumn::parse("*.aid"),
        ..PoolRouting::default()
    };
    let session = SessionRouting::default();
    let cache = AnalysisCache::new(1024, None);
    let decide = |a: &Analysis| {
        let keys = resolve_keys(&a.keys, |_| Some(42)).unwrap_or_default();
        route(&a.classification, &keys, None, &session, &pool)
    };
    let mut cold = c.benchmark_group("route cold");
    for (name, sql) in STATEMENTS {
        cold.bench_function(name, |b| {
            b.iter(|| {
                decide(&Analysis::of(
                    black_box(sql),
                    pool.automatic_key.as_ref(),
                    None,
                ))
            })
        });
    }
    cold.finish();
    let mut cached = c.benchmark_group("route cached");
    for (name, sql) in STATEMENTS {
        cached.bench_function(name, |b| {
            b.iter(|| {
                let a = cache.get_or_insert(black_box(sql), || {
                    Analysis::of(sql, pool.automatic_key.as_ref(), None)
                });
                decide(&a)
            })
        });
    }
    cached.finish();

    // pgbench -S over the simple protocol: a new literal every time, one shape.
    let splitting = PoolRouting {
        automatic_key: None,
        ..pool.clone()
    };
    let texts: Vec<String> = (0..4096)
        .map(|aid| {
            format!(
                "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
                aid * 7919 % 1_000_000
            )
        })
        .collect();
    let mut next = 0;
    c.bench_function("route by shape (new literal each time)", |b| {
        b.iter(|| {
            next = (next + 1) % texts.len();
            let sql = black_box(texts[next].as_str());
            let a = cache.get_or_insert(sql, || Analysis::of(sql, None, None));
            route(&a.classification, &[], None, &session, &splitting)
        })
    });
}

criterion_group!(benches, routing);
criterion_main!(benches);
