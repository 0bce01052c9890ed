//! Issue 3, "Must show": real clients in transaction mode with fewer servers than clients.
//!
//! 1. pgbench `-M prepared` (select-only and tpcb-like), `-M extended`, `-M simple`: 50 clients
//!    over 5 servers, 0 failed transactions, never more than 5 backends.
//! 2. tokio-postgres: 20 tasks x 1,000 prepared queries over a pool of 3, every result checked;
//!    per-task statements (re-prepared per server); a cache of 2 with 5 statements per task.
//! 3. psycopg 3 (`prepare_threshold=0`, pipeline mode) and asyncpg, from a venv
//!    (tests/python/clients.py).
//!
//! The same pool shared by two clients is in tests/state.rs (session state does not leak) and
//! tests/pipeline.rs (an error in the middle of a pipeline).

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::raw::{self, first_values, summary, Msg, RawConn};
use support::{
    create_database, free_port, one_row, pgbench, pgbench_init, pgbench_report, pool_toml, shared,
    tail, Pooler, Rng, DB, SCRAM_PASS, SCRAM_USER,
};

// ---------------------------------------------------------------------------------------------
// 1. pgbench
// ---------------------------------------------------------------------------------------------

/// Runs pgbench through a transaction-mode pooler with pool_size 5 and 50 clients on a
/// database of its own; asserts every transaction processed, none failed, and that
/// pg_stat_activity never shows more than 5 backends for scram_user on that database.
fn pgbench_through_pool(database: &str, mode: &str, select_only: bool, per_client: u32) {
    const CLIENTS: u32 = 50;
    const POOL: i64 = 5;
    // pgbench runs are CPU-heavy on 2 cores: one at a time.
    static BENCH: Mutex<()> = Mutex::new(());
    let _guard = BENCH.lock().unwrap_or_else(|e| e.into_inner());

    let cluster = shared();
    create_database(cluster, database);
    // Initialise directly on the primary as the owner.
    pgbench_init(cluster, database);

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), database, POOL as u32, ""));

    // Sample the primary's backends for this user and database while pgbench runs.
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicI64::new(-1));
    let samples = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (stop, max_seen, samples) = (stop.clone(), max_seen.clone(), samples.clone());
        let database = database.to_owned();
        std::thread::spawn(move || {
            let cluster = shared();
            let sql = format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE usename = '{SCRAM_USER}' AND datname = '{database}' \
                 AND application_name <> 'pgcat_healthcheck'"
            );
            loop {
                let done = stop.load(Ordering::SeqCst);
                if let Ok(out) = cluster.psql(&cluster.primary, "postgres", &sql) {
                    if let Ok(n) = out.trim().parse::<i64>() {
                        max_seen.fetch_max(n, Ordering::SeqCst);
                        samples.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let clients = CLIENTS.to_string();
    let transactions = per_client.to_string();
    let mut args = vec![
        "-n",
        "-M",
        mode,
        "-c",
        &clients,
        "-j",
        "2",
        "-t",
        &transactions,
    ];
    if select_only {
        args.push("-S");
    }
    let out = pgbench(
        cluster,
        pooler.port,
        database,
        &args,
        Duration::from_secs(300),
    );
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler thread");

    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let context = format!(
        "pgbench {args:?}\n--- stdout\n{stdout}\n--- stderr (tail)\n{}\n--- pooler log (tail)\n{}",
        tail(&stderr, 30),
        tail(&pooler.logs(), 40)
    );
    assert!(
        out.status.success(),
        "pgbench exited {}:\n{context}",
        out.status
    );
    let expected = CLIENTS * per_client;
    let processed = pgbench_report(&stdout, "number of transactions actually processed")
        .unwrap_or_else(|| panic!("no processed count:\n{context}"));
    assert_eq!(
        processed.trim(),
        format!("{expected}/{expected}"),
        "processed transactions:\n{context}"
    );
    let failed = pgbench_report(&stdout, "number of failed transactions")
        .unwrap_or_else(|| panic!("no failed-transaction count:\n{context}"));
    assert!(
        failed.starts_with("0 "),
        "failed transactions {failed}:\n{context}"
    );
    let max_seen = max_seen.load(Ordering::SeqCst);
    assert!(
        samples.load(Ordering::SeqCst) > 0 && max_seen >= 1,
        "pg_stat_activity was never sampled with a backend present (max {max_seen})"
    );
    assert!(
        max_seen <= POOL,
        "{max_seen} backends for {SCRAM_USER}/{database} on the primary; pool_size is {POOL}"
    );
    eprintln!(
        "pgbench -M {mode}{}: {expected} transactions, 0 failed, at most {max_seen} backends ({} samples)",
        if select_only { " -S" } else { "" },
        samples.load(Ordering::SeqCst)
    );
}

/// One test per row (each its own database, so they run in parallel): name, database,
/// protocol, select-only, transactions per client.
macro_rules! pgbench_cases {
    ($($name:ident: $database:literal, $mode:literal, $select_only:literal, $per_client:literal;)*) => {
        $(
            #[test]
            fn $name() {
                pgbench_through_pool($database, $mode, $select_only, $per_client);
            }
        )*
    };
}

pgbench_cases! {
    pgbench_prepared_select_only_50_clients_over_5_servers: "bench_prepared_s", "prepared", true, 100;
    pgbench_prepared_tpcb_50_clients_over_5_servers: "bench_prepared_tpcb", "prepared", false, 60;
    pgbench_extended_tpcb_50_clients_over_5_servers: "bench_extended", "extended", false, 60;
    pgbench_simple_tpcb_50_clients_over_5_servers: "bench_simple", "simple", false, 60;
}

// ---------------------------------------------------------------------------------------------
// 2. tokio-postgres
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_20_tasks_x_1000_prepared_queries_over_pool_of_3() {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 3, ""));
    let mut tasks = Vec::new();
    for task in 0..20u64 {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .unwrap_or_else(|e| panic!("task {task} connects: {e}"));
        tasks.push(tokio::spawn(async move {
            let ctx = |what: &str, e: tokio_postgres::Error| {
                format!(
                    "task {task}: {what}: {e:?} (sqlstate {:?})",
                    support::sqlstate(&e)
                )
            };
            // The same SQL in every task ...
            let shared_stmt = client
                .prepare("SELECT $1::int8 * 2, $2::text || 'x'")
                .await
                .map_err(|e| ctx("prepare shared", e))?;
            // ... and SQL only this task prepares: each server it lands on must prepare it.
            let own_sql = format!("SELECT $1::int8 + {task}, 'task{task}:' || $2::text");
            let own = client
                .prepare(&own_sql)
                .await
                .map_err(|e| ctx("prepare own", e))?;
            let own_text = client
                .prepare(&format!("SELECT length($1::text) + {}", task * 1000))
                .await
                .map_err(|e| ctx("prepare own_text", e))?;
            let mut rng = Rng::new(task + 1);
            for i in 0..1000u32 {
                let n = rng.small_i64();
                let s = format!("t{task}-{i}-{}", rng.next() % 100_000);
                let row = client
                    .query_one(&shared_stmt, &[&n, &s])
                    .await
                    .map_err(|e| ctx(&format!("query {i}"), e))?;
                let (got_n, got_s): (i64, String) = (row.get(0), row.get(1));
                if got_n != n * 2 || got_s != format!("{s}x") {
                    return Err(format!(
                        "task {task} query {i}: ({n}, {s:?}) gave ({got_n}, {got_s:?})"
                    ));
                }
                if i % 10 == 0 {
                    let row = client
                        .query_one(&own, &[&n, &s])
                        .await
                        .map_err(|e| ctx(&format!("own {i}"), e))?;
                    let (got_n, got_s): (i64, String) = (row.get(0), row.get(1));
                    if got_n != n + task as i64 || got_s != format!("task{task}:{s}") {
                        return Err(format!(
                            "task {task} own {i}: ({n}, {s:?}) gave ({got_n}, {got_s:?})"
                        ));
                    }
                    let row = client
                        .query_one(&own_text, &[&s])
                        .await
                        .map_err(|e| ctx(&format!("own_text {i}"), e))?;
                    let got: i32 = row.get(0);
                    if got != s.len() as i32 + (task * 1000) as i32 {
                        return Err(format!("task {task} own_text {i}: {s:?} gave {got}"));
                    }
                }
            }
            Ok::<u32, String>(1000)
        }));
    }
    assert_eq!(checked_total(tasks, &pooler).await, 20_000);
}

/// The sum of what `tasks` checked; the first task's error fails the test, with the
/// pooler's log.
async fn checked_total(
    tasks: Vec<tokio::task::JoinHandle<Result<u32, String>>>,
    pooler: &Pooler,
) -> u32 {
    let mut total = 0;
    for t in tasks {
        match t.await.expect("task panicked") {
            Ok(n) => total += n,
            Err(e) => panic!("{e}\n--- pooler log (tail)\n{}", tail(&pooler.logs(), 40)),
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_cache_of_2_with_5_statements_per_task_evicts_and_stays_correct() {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(
        cluster,
        free_port(),
        DB,
        3,
        "prepared_statements_cache_size = 2",
    ));
    let mut tasks = Vec::new();
    for task in 0..20u64 {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .unwrap_or_else(|e| panic!("task {task} connects: {e}"));
        tasks.push(tokio::spawn(async move {
            let mut stmts = Vec::new();
            for k in 0..5i64 {
                // Statements 0..2 are the same SQL in every task, 3..4 are this task's own.
                let sql = if k < 3 {
                    format!("SELECT $1::int8 * {} + {k}", k + 2)
                } else {
                    format!("SELECT $1::int8 * {} + {k} + {task}", k + 2)
                };
                let stmt = client
                    .prepare(&sql)
                    .await
                    .map_err(|e| format!("task {task} prepare {k}: {e:?}"))?;
                let extra = if k < 3 { k } else { k + task as i64 };
                stmts.push((stmt, k + 2, extra));
            }
            let mut rng = Rng::new(1000 + task);
            for i in 0..300u32 {
                let which = (rng.next() % 5) as usize;
                let (stmt, mul, add) = &stmts[which];
                let n = (rng.next() % 1_000_000) as i64;
                let row = client.query_one(stmt, &[&n]).await.map_err(|e| {
                    format!(
                        "task {task} query {i} (statement {which}): {e:?} (sqlstate {:?})",
                        support::sqlstate(&e)
                    )
                })?;
                let got: i64 = row.get(0);
                if got != n * mul + add {
                    return Err(format!(
                        "task {task} query {i} (statement {which}): {n} gave {got}, want {}",
                        n * mul + add
                    ));
                }
            }
            Ok::<u32, String>(300)
        }));
    }
    assert_eq!(checked_total(tasks, &pooler).await, 6000);
    // The cache really is bounded: no server holds more than 2 of the pooler's statements.
    // pg_prepared_statements is per session: look through the pooler, at each server in turn.
    let client = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("connect for the cache check");
    for _ in 0..6 {
        let row = one_row(
            &client,
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgcat%'",
        )
        .await;
        let n: i64 = row[0].parse().expect("count");
        assert!(
            n <= 2,
            "a server holds {n} pooler statements with prepared_statements_cache_size = 2"
        );
    }
}

/// Two clients on one server use the same statement name for different SQL (as every driver
/// does: psycopg's `_pg3_0`, asyncpg's `__asyncpg_stmt_1__`, pgbench's `P_0`); each must get
/// its own statement's result.
#[test]
fn same_statement_name_different_sql_on_a_shared_server() {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let login = || {
        let c = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
        c.set_read_timeout(Duration::from_secs(20));
        c
    };
    let (mut a, mut b) = (login(), login());
    let run = |c: &mut RawConn, msgs: Vec<Vec<u8>>| -> Vec<Msg> {
        c.send(&msgs.concat()).expect("send");
        c.read_until_ready().expect("replies")
    };
    let prep = |sql: &str| {
        vec![
            raw::parse("s", sql),
            raw::bind("", "s", &[]),
            raw::execute(""),
            raw::sync(),
        ]
    };
    let reuse = || vec![raw::bind("", "s", &[]), raw::execute(""), raw::sync()];
    let pid = |c: &mut RawConn| {
        let r = c.simple_query("SELECT pg_backend_pid()").expect("pid");
        first_values(&r)[0].clone()
    };
    let r = run(&mut a, prep("SELECT 'from A'::text"));
    assert_eq!(summary(&r), "1 2 D[from A] C[SELECT 1] Z[I]");
    let r = run(&mut b, prep("SELECT 'from B'::text"));
    assert_eq!(summary(&r), "1 2 D[from B] C[SELECT 1] Z[I]");
    for round in 0..3 {
        let r = run(&mut a, reuse());
        assert_eq!(summary(&r), "2 D[from A] C[SELECT 1] Z[I]", "round {round}");
        let r = run(&mut b, reuse());
        assert_eq!(summary(&r), "2 D[from B] C[SELECT 1] Z[I]", "round {round}");
    }
    assert_eq!(
        pid(&mut a),
        pid(&mut b),
        "both clients ran on the one server"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Python drivers
// ---------------------------------------------------------------------------------------------

/// Runs tests/python/clients.py `driver` against a transaction-mode pooler with pool_size 3;
/// the script prints `CHECK <name> ok` per verified check and exits 0 only if all passed.
fn python_workload(driver: &str, table: &str, expected_checks: &[&str]) {
    let python = match support::python_venv() {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIP {driver}: {reason}");
            return;
        }
    };
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 3, ""));
    let script = support::repo_path("tests/python/clients.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(driver)
        .env("PGCAT_HOST", "127.0.0.1")
        .env("PGCAT_PORT", pooler.port.to_string())
        .env("PGCAT_USER", SCRAM_USER)
        .env("PGCAT_PASSWORD", SCRAM_PASS)
        .env("PGCAT_DB", DB)
        .env("PGCAT_TABLE", table)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait python") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{driver} workload did not finish in 300 s\n--- pooler log (tail)\n{}",
                tail(&pooler.logs(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let context = format!(
        "--- stdout\n{}\n--- stderr\n{}\n--- pooler log (tail)\n{}",
        tail(&stdout, 60),
        tail(&stderr, 60),
        tail(&pooler.logs(), 40)
    );
    assert!(
        status.success(),
        "{driver} workload exited {status}\n{context}"
    );
    for check in expected_checks {
        let line = format!("CHECK {check} ok");
        assert!(
            stdout.lines().any(|l| l.trim() == line),
            "{driver}: missing `{line}`\n{context}"
        );
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("FAIL")),
        "{driver}: failures reported\n{context}"
    );
    eprintln!("{driver}: {} checks ok", expected_checks.len());
}

#[test]
fn psycopg3_prepared_and_pipeline_workload() {
    python_workload(
        "psycopg",
        "py_psycopg",
        &[
            "psycopg.prepared_reads",
            "psycopg.writes",
            "psycopg.transactions",
            "psycopg.rollback",
            "psycopg.pipeline_reads",
            "psycopg.pipeline_writes",
            "psycopg.pipeline_transaction",
            "psycopg.pipeline_error_recovers",
            "psycopg.prepared_on_server",
            "psycopg.final_sums",
        ],
    );
}

#[test]
fn asyncpg_workload() {
    python_workload(
        "asyncpg",
        "py_asyncpg",
        &[
            "asyncpg.prepared_reads",
            "asyncpg.writes",
            "asyncpg.transactions",
            "asyncpg.rollback",
            "asyncpg.executemany",
            "asyncpg.explicit_prepare",
            "asyncpg.cursor",
            "asyncpg.error_recovers",
            "asyncpg.final_sums",
        ],
    );
}
