//! `cargo bench -p pgcat-parser`: what routing a statement costs, cold (parse, classify,
//! find keys, route) and cached (hash + lookup + route), in ns per call, for pgbench's
//! statements and a 1 KB join. No harness dependency: a warm-up, then the best of several
//! timed rounds, printed as a table.

use std::hint::black_box;
use std::time::Instant;

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

fn ns_per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let pool = PoolRouting {
        shards: 3,
        query_parser_enabled: true,
        read_write_splitting: true,
        automatic_key: KeyColumn::parse("*.aid"),
        ..PoolRouting::default()
    };
    let session = SessionRouting::default();
    let cache = AnalysisCache::new(1024);
    println!(
        "{:<22} {:>14} {:>14}",
        "statement", "cold ns/call", "cached ns/call"
    );
    for (name, sql) in STATEMENTS {
        let analyse_and_route = |a: &Analysis| {
            let keys = resolve_keys(&a.keys, |_| Some(42)).unwrap_or_default();
            route(&a.classification, &keys, None, &session, &pool)
        };
        let iterations = if sql.len() > 500 { 2_000 } else { 20_000 };
        let cold = ns_per_call(iterations, || {
            let a = Analysis::of(black_box(sql), pool.automatic_key.as_ref(), None);
            black_box(analyse_and_route(&a));
        });
        let cached = ns_per_call(200_000, || {
            let a = cache.get_or_insert(black_box(sql), || {
                Analysis::of(sql, pool.automatic_key.as_ref(), None)
            });
            black_box(analyse_and_route(&a));
        });
        println!("{name:<22} {cold:>14.0} {cached:>14.0}");
    }
}
