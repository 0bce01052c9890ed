//! The bank test (issue 20): clients move money between accounts on different shards
//! while the pooler is killed (SIGKILL) and started again and a shard's PostgreSQL is
//! restarted. Each transfer updates two accounts and writes a ledger row beside each, in
//! one transaction across two shards. At the end, once the pooler has resolved what was
//! in doubt: the total is what it was, every transfer's two ledger rows exist on both
//! shards or on neither, every balance is its opening balance plus its ledger, and no
//! prepared transaction is left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// How long the clients run, and how many there are.
const RUN: Duration = Duration::from_secs(12);
const CLIENTS: usize = 6;

/// What the clients saw.
#[derive(Default)]
struct Figures {
    committed: AtomicU64,
    /// The transaction failed with an error: rolled back.
    aborted: AtomicU64,
    /// The connection was lost (the pooler killed): committed or not, as the pooler decided.
    unknown: AtomicU64,
}

/// One transfer of `amount` from account `from` to `to` (on different shards), ledger
/// rows tagged `tid` beside each.
async fn transfer(
    client: &Client,
    tid: u64,
    from: i64,
    to: i64,
    amount: i64,
) -> Result<(), tokio_postgres::Error> {
    let shard = |id: i64| pg_bigint_hash(id, SHARDS);
    client.simple_query("BEGIN").await?;
    for (id, delta) in [(from, -amount), (to, amount)] {
        let hint = format!("/* shard_id: {} */", shard(id));
        client
            .simple_query(&format!(
                "{hint} UPDATE bank SET balance = balance + {delta} WHERE id = {id}"
            ))
            .await?;
        client
            .simple_query(&format!(
                "{hint} INSERT INTO bank_ledger VALUES ({tid}, {id}, {delta})"
            ))
            .await?;
    }
    client.simple_query("COMMIT").await?;
    Ok(())
}

/// A client's loop until `stop`: transfers between random accounts on different shards;
/// reconnects when the pooler is gone.
async fn client_loop(port: u16, n: u64, stop: Arc<AtomicBool>, figures: Arc<Figures>) {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={SHARD_USER} password={SHARD_PASS} dbname={POOL} connect_timeout=2"
    );
    let mut rng = support::Rng::new(n + 1);
    let mut tid = n << 40;
    let mut client = None;
    while !stop.load(Relaxed) {
        let Some(c) = &client else {
            client = support::connect(&conninfo).await.ok();
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let from = 1 + (rng.next() % BANK_ACCOUNTS as u64) as i64;
        let to = 1 + (rng.next() % BANK_ACCOUNTS as u64) as i64;
        if pg_bigint_hash(from, SHARDS) == pg_bigint_hash(to, SHARDS) {
            continue;
        }
        tid += 1;
        let amount = 1 + (rng.next() % 50) as i64;
        match transfer(c, tid, from, to, amount).await {
            Ok(()) => figures.committed.fetch_add(1, Relaxed),
            Err(e) if e.as_db_error().is_some() && !c.is_closed() => {
                let _ = c.simple_query("ROLLBACK").await;
                figures.aborted.fetch_add(1, Relaxed)
            }
            Err(_) => {
                client = None;
                figures.unknown.fetch_add(1, Relaxed)
            }
        };
    }
}

#[test]
fn the_bank_keeps_its_total_while_the_pooler_and_a_shard_crash() {
    let cluster = cluster();
    let dir = support::scratch_dir();
    let base = support::with_general(&toml(cluster, "tp_bank", &dir, free_port()), "ban_time = 1");
    let (other, toml) = shard2_elsewhere(cluster, &base);
    let mut pooler = Some(Pooler::start(&toml));
    let stop = Arc::new(AtomicBool::new(false));
    let figures = Arc::new(Figures::default());
    let mut logs = Vec::new();
    let runtime = runtime();
    let port = pooler.as_ref().expect("pooler").port;
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|n| runtime.spawn(client_loop(port, n, stop.clone(), figures.clone())))
        .collect();
    let started = Instant::now();
    let at = |s: u64| started + Duration::from_secs(s);
    // The pooler killed at 3 s and 8 s and started again; shard 2 restarted at 5 s.
    for (when, what) in [(3, "kill"), (5, "shard"), (8, "kill")] {
        std::thread::sleep(at(when).saturating_duration_since(Instant::now()));
        if what == "kill" {
            let mut killed = pooler.take().expect("pooler");
            killed.signal(libc::SIGKILL);
            killed.wait_exit(Duration::from_secs(10));
            logs.push(killed.logs());
            pooler = Some(Pooler::start(&toml));
        } else {
            other.stop_node(&other.primary);
            std::thread::sleep(Duration::from_millis(500));
            other.start_node(&other.primary);
        }
    }
    std::thread::sleep(at(RUN.as_secs()).saturating_duration_since(Instant::now()));
    stop.store(true, Relaxed);
    runtime.block_on(async {
        for client in clients {
            let _ = tokio::time::timeout(Duration::from_secs(20), client).await;
        }
    });
    let pooler = pooler.expect("pooler");
    // What was in doubt is resolved by the running pooler.
    let prepared_anywhere = || {
        let left = prepared(cluster, "tp_bank").len();
        let sql = "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'pgcat\\_tp\\_bank\\_%'";
        let elsewhere = other.psql(&other.primary, "postgres", sql).expect("psql");
        left + elsewhere.trim().parse::<usize>().unwrap_or(1)
    };
    let resolved = wait_until(Duration::from_secs(30), || prepared_anywhere() == 0);
    assert!(resolved, "prepared transactions left\n{}", pooler.logs());
    logs.push(pooler.logs());

    // Every shard's accounts and ledger.
    let query = |shard: usize, sql: &str| {
        let (pg, node) = if shard == 2 {
            (&other, &other.primary)
        } else {
            (cluster, &cluster.primary)
        };
        pg.psql(node, &format!("tp_shard{shard}"), sql)
            .expect("psql")
    };
    let mut total = 0i64;
    let mut ledger: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for shard in 0..SHARDS {
        for line in query(shard, "SELECT id, balance FROM bank").lines() {
            let (id, balance) = line.split_once('|').expect("id|balance");
            let (id, balance): (i64, i64) =
                (id.parse().expect("id"), balance.parse().expect("balance"));
            total += balance;
            let entries = query(
                shard,
                &format!("SELECT coalesce(sum(delta), 0) FROM bank_ledger WHERE id = {id}"),
            );
            let booked: i64 = entries.trim().parse().expect("sum");
            assert_eq!(
                balance,
                BANK_START + booked,
                "account {id}: its balance is its ledger"
            );
        }
        for line in query(shard, "SELECT tid, id, delta FROM bank_ledger").lines() {
            let parts: Vec<i64> = line
                .split('|')
                .map(|p| p.parse().expect("number"))
                .collect();
            ledger
                .entry(parts[0])
                .or_default()
                .push((parts[1], parts[2]));
        }
    }
    assert_eq!(total, BANK_START * BANK_ACCOUNTS, "the total is unchanged");
    for (tid, rows) in &ledger {
        let shards: std::collections::BTreeSet<usize> = rows
            .iter()
            .map(|(id, _)| pg_bigint_hash(*id, SHARDS))
            .collect();
        assert_eq!(
            (rows.len(), shards.len()),
            (2, 2),
            "transfer {tid}: both halves or none: {rows:?}"
        );
        assert_eq!(
            rows.iter().map(|(_, d)| d).sum::<i64>(),
            0,
            "transfer {tid}"
        );
    }
    let recovered: usize = logs
        .iter()
        .map(|l| l.matches("ended an in-doubt two-phase transaction").count())
        .sum();
    let f = &figures;
    println!(
        "bank: {} transfers committed, {} aborted, {} cut off by a crash ({} of them applied), {} in-doubt parts recovered; total {total}",
        f.committed.load(Relaxed),
        f.aborted.load(Relaxed),
        f.unknown.load(Relaxed),
        ledger.len() as u64 - f.committed.load(Relaxed).min(ledger.len() as u64),
        recovered
    );
    assert!(f.committed.load(Relaxed) > 0, "transfers went through");
}
