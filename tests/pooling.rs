//! Pooling through the real binary against real PostgreSQL: psql and pgbench in transaction
//! and session mode, tokio-postgres with prepared statements, and a pool that never opens more
//! than `pool_size` server connections however many clients it serves.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::{config, free_port, pgbench, psql, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

#[test]
fn psql_runs_queries_in_transaction_and_session_mode() {
    let cluster = shared();
    for mode in ["transaction", "session"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 5, ""));
        let one = psql(cluster, &pooler, SCRAM_USER, SCRAM_PASS, "SELECT 1");
        assert_eq!(one, Ok("1".to_owned()), "{mode} mode: SELECT 1");
        // One Query message with three statements: every result comes back, in order.
        let multi = psql(
            cluster,
            &pooler,
            SCRAM_USER,
            SCRAM_PASS,
            "SELECT 1 AS a; SELECT 'two' AS b; SELECT current_user, current_database()",
        );
        assert_eq!(
            multi,
            Ok(format!("1\ntwo\n{SCRAM_USER}|{DB}")),
            "{mode} mode: multi-statement query"
        );
        // An error inside a multi-statement query is reported and the rest is skipped.
        let failing = psql(
            cluster,
            &pooler,
            SCRAM_USER,
            SCRAM_PASS,
            "SELECT 1; SELECT 1/0; SELECT 3",
        );
        let err = failing.expect_err("division by zero must fail");
        assert!(err.contains("division by zero"), "{mode} mode: got {err}");
    }
}

/// Initialises the pgbench tables once per test binary, through the pooler in transaction mode.
fn pgbench_tables() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let cluster = shared();
        let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 5, ""));
        let init = ["-i", "-s", "1"];
        let out = pgbench(cluster, pooler.port, DB, &init, Duration::from_secs(300));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgbench -i through the pooler failed ({}):\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("done in"),
            "pgbench -i did not finish:\n{stderr}"
        );
        // PostgreSQL is the judge: the rows really are there.
        let accounts = cluster
            .psql(
                &cluster.primary,
                DB,
                "SELECT count(*) FROM pgbench_accounts",
            )
            .expect("count accounts");
        assert_eq!(
            accounts, "100000",
            "pgbench_accounts rows after pgbench -i -s 1"
        );
    });
}

/// Runs the TPC-B-like pgbench script through a pooler and asserts every transaction ran.
fn pgbench_run(pool_mode: &str, pool_size: u32, protocol: &str) {
    pgbench_tables();
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), pool_mode, pool_size, ""));
    let (clients, per_client) = (10, 200);
    let (c, t) = (clients.to_string(), per_client.to_string());
    let args = ["-n", "-M", protocol, "-c", &c, "-j", "2", "-t", &t];
    let out = pgbench(cluster, pooler.port, DB, &args, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "pgbench -M {protocol} in {pool_mode} mode ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(out.status.success(), "{context}");
    let expected = clients * per_client;
    assert!(
        stdout.contains(&format!(
            "number of transactions actually processed: {expected}/{expected}"
        )),
        "all {expected} transactions processed; {context}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "no failed transactions; {context}"
    );
}

#[test]
fn pgbench_in_every_protocol_and_pooling_mode_has_no_failures() {
    // Session mode holds a server per client: as many servers as pgbench clients.
    for (mode, pool_size, protocol) in [
        ("transaction", 5, "simple"),
        ("transaction", 5, "extended"),
        ("transaction", 5, "prepared"),
        ("session", 10, "simple"),
        ("session", 10, "extended"),
    ] {
        pgbench_run(mode, pool_size, protocol);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_work_in_session_mode() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "session", 5, ""));
    let client = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("connect through the pooler");

    let rows = client
        .simple_query("SELECT 41 + 1 AS answer")
        .await
        .expect("simple query");
    let answer = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(answer.as_deref(), Some("42"));

    let stmt = client
        .prepare("SELECT $1::int4 * 2, $2::text || '!'")
        .await
        .expect("prepare");
    for i in 0..20i32 {
        let row = client
            .query_one(&stmt, &[&i, &format!("n{i}")])
            .await
            .expect("execute prepared");
        assert_eq!(row.get::<_, i32>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), format!("n{i}!"));
    }
    // A second named statement alongside the first, both still usable.
    let stmt2 = client
        .prepare("SELECT count(*) FROM generate_series(1, $1::int4)")
        .await
        .expect("prepare 2");
    let n: i64 = client
        .query_one(&stmt2, &[&1000i32])
        .await
        .expect("execute 2")
        .get(0);
    assert_eq!(n, 1000);
    let again: i32 = client
        .query_one(&stmt, &[&21i32, &"x"])
        .await
        .expect("first statement again")
        .get(0);
    assert_eq!(again, 42);

    // An error inside BEGIN leaves the transaction aborted on the same server until ROLLBACK,
    // exactly as PostgreSQL does; then the session keeps working.
    client
        .batch_execute("CREATE TEMP TABLE pooling_tmp (v int)")
        .await
        .expect("temp table");
    let tx = client
        .simple_query("BEGIN; INSERT INTO pooling_tmp VALUES (1); SELECT 1/0; COMMIT")
        .await;
    let err = tx.expect_err("division by zero inside BEGIN must fail");
    assert_eq!(support::sqlstate(&err).as_deref(), Some("22012"));
    let aborted = client
        .simple_query("SELECT 1")
        .await
        .expect_err("transaction is aborted");
    assert_eq!(
        support::sqlstate(&aborted).as_deref(),
        Some("25P02"),
        "still in the failed transaction"
    );
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let count: i64 = client
        .query_one("SELECT count(*) FROM pooling_tmp", &[])
        .await
        .expect("after rollback")
        .get(0);
    assert_eq!(count, 0, "the failed transaction was rolled back");
}

/// Counts client backends of scram_user on database app, straight on the primary.
async fn server_connections(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = $1 AND datname = $2 AND backend_type = 'client backend' \
             AND application_name <> 'pgcat_healthcheck'",
            &[&SCRAM_USER, &DB],
        )
        .await
        .expect("count server connections")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_five_server_connections_in_transaction_mode() {
    // A cluster of its own: nothing else connects as scram_user while we count.
    let cluster = tokio::task::spawn_blocking(|| support::private(0))
        .await
        .expect("start cluster");
    let pooler = Pooler::start(&config(&cluster, free_port(), "transaction", 5, ""));
    let direct = support::connect_direct(&cluster.primary, "postgres").await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut max, mut samples) = (0i64, 0u32);
            while !stop.load(Ordering::Relaxed) {
                max = max.max(server_connections(&direct).await);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (max, samples, direct)
        })
    };

    let port = pooler.port;
    let mut clients = Vec::new();
    for i in 0..200 {
        clients.push(tokio::spawn(async move {
            let conninfo =
                format!("host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASS} dbname={DB} connect_timeout=30");
            let client = support::connect(&conninfo).await.map_err(|e| format!("client {i} connect: {e}"))?;
            let mut got = Vec::new();
            for q in 0..3 {
                let rows = client
                    .simple_query(&format!("SELECT pg_sleep(0.01), {i} * 10 + {q}"))
                    .await
                    .map_err(|e| format!("client {i} query {q}: {e}"))?;
                let v = rows.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(1).map(str::to_owned),
                    _ => None,
                });
                got.push(v);
            }
            let want: Vec<Option<String>> = (0..3).map(|q| Some((i * 10 + q).to_string())).collect();
            if got != want {
                return Err(format!("client {i}: got {got:?}, want {want:?}"));
            }
            Ok::<_, String>(())
        }));
    }
    let mut failures = Vec::new();
    for c in clients {
        match tokio::time::timeout(Duration::from_secs(120), c).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push(e),
            Ok(Err(e)) => failures.push(format!("client task panicked: {e}")),
            Err(_) => failures.push("client did not finish within 120 s".to_owned()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (max, samples, direct) = sampler.await.expect("sampler");
    assert!(
        failures.is_empty(),
        "{} of 200 clients failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(samples > 10, "the sampler ran ({samples} samples)");
    assert!(
        max >= 1,
        "the sampler saw the pool's server connections (max {max})"
    );
    assert!(
        max <= 5,
        "pool_size 5 but the primary saw {max} server connections for {SCRAM_USER}"
    );
    // And after the load, still no more than pool_size.
    let after = server_connections(&direct).await;
    assert!(after <= 5, "{after} server connections after the load");
}
