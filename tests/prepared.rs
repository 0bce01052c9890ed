//! Issue 3, "Must show": real clients in transaction mode with fewer servers than clients.
//!
//! 1. pgbench `-M prepared` (select-only and tpcb-like), `-M extended`, `-M simple`: 50 clients
//!    over 5 servers, 0 failed transactions, never more than 5 backends.
//! 2. tokio-postgres: 20 tasks x 1,000 prepared queries over a pool of 3, every result checked;
//!    per-task statements (re-prepared per server); a cache of 2 with 5 statements per task.
//! 3. psycopg 3 (`prepare_threshold=0`, pipeline mode) and asyncpg, from a venv
//!    (tests/python/clients.py).
//! 4. One server shared by two clients: nothing A does (SET, SET in a committed transaction,
//!    search_path, set_config, SQL PREPARE, LISTEN, temp table, advisory lock) is visible to B.
//! 5. An error in the middle of a pipeline leaves the client and the server connection usable.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::raw::{self, Msg, RawConn};
use support::{
    free_port, general_toml, run_client, shared, Cluster, Pooler, DB, SCRAM_PASS, SCRAM_USER,
};
use tokio_postgres::{AsyncMessage, Notification, SimpleQueryMessage};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A pgcat.toml with one transaction-mode pool named `database` (database `database` on the
/// primary only) for scram_user with `pool_size`; the wait for a server is 30 s so queueing
/// clients do not time out. `extra_pool` goes into the pool section.
fn pool_toml(
    cluster: &Cluster,
    port: u16,
    database: &str,
    pool_size: u32,
    extra_pool: &str,
) -> String {
    let general = general_toml(port);
    assert!(general.contains("connect_timeout = 10000"), "{general}");
    let mut toml = general.replace("connect_timeout = 10000", "connect_timeout = 30000");
    toml.push_str(&format!(
        "\n[pools.{database}]\n\
         pool_mode = \"transaction\"\n\
         default_role = \"primary\"\n\
         connect_timeout = 30000\n\
         {extra_pool}\n\
         \n[pools.{database}.users.0]\n\
         username = \"{SCRAM_USER}\"\n\
         password = \"{SCRAM_PASS}\"\n\
         pool_size = {pool_size}\n\
         \n[pools.{database}.shards.0]\n\
         database = \"{database}\"\n\
         servers = [[\"{}\", {}, \"primary\"]]\n",
        cluster.primary.host, cluster.primary.port
    ));
    toml
}

/// Creates database `name` owned by scram_user (dropped first if a previous run left it).
fn create_database(cluster: &Cluster, name: &str) {
    // CREATE DATABASE copies template1; serialise so parallel tests do not trip over it.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name};\nCREATE DATABASE {name} OWNER {SCRAM_USER};"),
        )
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
}

/// xorshift64*: deterministic per seed, no dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A signed value small enough that doubling it cannot overflow.
    fn small_i64(&mut self) -> i64 {
        (self.next() as i64) >> 3
    }
}

/// Rows of a simple query, every column as text ("NULL" for NULL).
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The single row of a simple query.
async fn one_row(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut all = rows(client, sql).await;
    assert_eq!(all.len(), 1, "{sql}: expected one row, got {all:?}");
    all.remove(0)
}

/// A tokio-postgres client whose notifications are forwarded to a channel.
async fn connect_listening(
    pooler: &Pooler,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<Notification>,
) {
    let (client, mut connection) = tokio_postgres::connect(
        &pooler.conninfo(SCRAM_USER, SCRAM_PASS, DB),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect through the pooler");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send(n);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    (client, rx)
}

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
    let init = run_client(
        cluster,
        "pgbench",
        SCRAM_PASS,
        &[
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            &cluster.primary.host,
            "-p",
            &cluster.primary.port.to_string(),
            "-U",
            SCRAM_USER,
            database,
        ],
        Duration::from_secs(180),
    );
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );

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

    let port = pooler.port.to_string();
    let clients = CLIENTS.to_string();
    let transactions = per_client.to_string();
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        SCRAM_USER,
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
    args.push(database);
    let out = run_client(
        cluster,
        "pgbench",
        SCRAM_PASS,
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
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .unwrap_or_else(|| panic!("no processed count:\n{context}"));
    assert_eq!(
        processed.trim(),
        format!("{expected}/{expected}"),
        "processed transactions:\n{context}"
    );
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn pgbench_prepared_select_only_50_clients_over_5_servers() {
    pgbench_through_pool("bench_prepared_s", "prepared", true, 100);
}

#[test]
fn pgbench_prepared_tpcb_50_clients_over_5_servers() {
    pgbench_through_pool("bench_prepared_tpcb", "prepared", false, 60);
}

#[test]
fn pgbench_extended_tpcb_50_clients_over_5_servers() {
    pgbench_through_pool("bench_extended", "extended", false, 60);
}

#[test]
fn pgbench_simple_tpcb_50_clients_over_5_servers() {
    pgbench_through_pool("bench_simple", "simple", false, 60);
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
    let mut total = 0;
    for t in tasks {
        match t.await.expect("task panicked") {
            Ok(n) => total += n,
            Err(e) => panic!("{e}\n--- pooler log (tail)\n{}", tail(&pooler.logs(), 40)),
        }
    }
    assert_eq!(total, 20_000);
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
    let mut total = 0;
    for t in tasks {
        match t.await.expect("task panicked") {
            Ok(n) => total += n,
            Err(e) => panic!("{e}\n--- pooler log (tail)\n{}", tail(&pooler.logs(), 40)),
        }
    }
    assert_eq!(total, 6000);
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

// ---------------------------------------------------------------------------------------------
// 4. Session state does not leak between clients sharing one server
// ---------------------------------------------------------------------------------------------

/// A pooler with pool_size 1 in transaction mode and two connected clients A and B; with
/// pinning off, so that state which would pin A's server is reset instead (tests/compat.rs
/// covers pinning).
async fn two_clients_one_server() -> (Pooler, tokio_postgres::Client, tokio_postgres::Client) {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(
        cluster,
        free_port(),
        DB,
        1,
        "pin_session_state = false",
    ));
    let a = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client A connects");
    let b = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client B connects");
    (pooler, a, b)
}

/// A setting's value in a fresh session straight on the primary.
async fn default_setting(name: &str) -> String {
    let direct = support::connect_direct(&shared().primary, DB).await;
    one_row(&direct, &format!("SELECT current_setting('{name}')")).await[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_statement_timeout() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = one_row(
        &a,
        "SET statement_timeout = '4321'; SELECT pg_backend_pid(), current_setting('statement_timeout')",
    )
    .await;
    assert_eq!(seen[1], "4321ms", "A's SET took effect");
    let got = one_row(
        &b,
        "SELECT pg_backend_pid(), current_setting('statement_timeout')",
    )
    .await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        default_setting("statement_timeout").await,
        "B sees A's statement_timeout\n{}",
        tail(&pooler.logs(), 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_inside_a_committed_transaction() {
    let (pooler, a, b) = two_clients_one_server().await;
    // Separate messages, as an application sends them.
    a.batch_execute("BEGIN").await.expect("BEGIN");
    a.batch_execute("SET work_mem = '77MB'")
        .await
        .expect("SET in txn");
    let seen = one_row(&a, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(seen[1], "77MB", "A's SET took effect");
    a.batch_execute("COMMIT").await.expect("COMMIT");
    let got = one_row(&b, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        default_setting("work_mem").await,
        "B sees the work_mem A SET inside a committed transaction\n{}",
        tail(&pooler.logs(), 30)
    );
    // A keeps it, as PostgreSQL keeps a committed SET for the session.
    let kept = one_row(&a, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(kept[1], "77MB", "A's committed SET is kept for A");
    // A SET in a transaction that rolls back is undone, also for A.
    a.batch_execute("BEGIN; SET work_mem = '55MB'; ROLLBACK")
        .await
        .expect("rolled back SET");
    let after = one_row(&a, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(after[1], "77MB", "A's rolled-back SET is undone");
    let other = one_row(&b, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(
        other[1],
        default_setting("work_mem").await,
        "B still has the default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_search_path() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = one_row(
        &a,
        "SET search_path = leak_schema, public; SELECT pg_backend_pid(), current_setting('search_path')",
    )
    .await;
    assert_eq!(seen[1], "leak_schema, public", "A's SET took effect");
    let got = one_row(
        &b,
        "SELECT pg_backend_pid(), current_setting('search_path')",
    )
    .await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        default_setting("search_path").await,
        "B sees A's search_path\n{}",
        tail(&pooler.logs(), 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_config_function() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = one_row(
        &a,
        "SELECT pg_backend_pid(), set_config('work_mem', '55MB', false)",
    )
    .await;
    assert_eq!(seen[1], "55MB", "A's set_config took effect");
    let got = one_row(&b, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        default_setting("work_mem").await,
        "B sees the work_mem A set with set_config()\n{}",
        tail(&pooler.logs(), 30)
    );
}

/// The Build: a client's own SET outside a transaction is remembered and applied to
/// each server it gets (here: the same server after B used it and it was reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_set_survives_another_client_using_the_server() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = one_row(
        &a,
        "SET statement_timeout = '4321'; SELECT pg_backend_pid(), current_setting('statement_timeout')",
    )
    .await;
    let got = one_row(
        &b,
        "SELECT pg_backend_pid(), current_setting('statement_timeout')",
    )
    .await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    let again = one_row(
        &a,
        "SELECT pg_backend_pid(), current_setting('statement_timeout')",
    )
    .await;
    assert_eq!(again[0], seen[0], "A is back on the one server");
    assert_eq!(
        again[1],
        "4321ms",
        "A lost its own statement_timeout\n{}",
        tail(&pooler.logs(), 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sql_prepare() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = rows(
        &a,
        "PREPARE p AS SELECT 1; EXECUTE p; SELECT pg_backend_pid(), 'prepared'",
    )
    .await;
    assert_eq!(seen.len(), 2, "A's PREPARE and EXECUTE: {seen:?}");
    assert_eq!(seen[0], ["1"], "A's EXECUTE p");
    let seen = seen[1].clone();
    let got = one_row(&b, "SELECT pg_backend_pid()").await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    let err = b
        .simple_query("EXECUTE p")
        .await
        .expect_err("B must not be able to EXECUTE A's prepared statement");
    assert_eq!(
        support::sqlstate(&err).as_deref(),
        Some("26000"),
        "B's EXECUTE p: {err:?}\n{}",
        tail(&pooler.logs(), 30)
    );
    let mine = rows(&b, "PREPARE p AS SELECT 2; EXECUTE p").await;
    assert_eq!(mine, vec![vec!["2".to_owned()]], "B's own PREPARE p works");
    let again = one_row(&b, "SELECT pg_backend_pid()").await;
    assert_eq!(again[0], seen[0], "still the one server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_listen() {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let (a, _a_notes) = connect_listening(&pooler).await;
    let (b, mut b_notes) = connect_listening(&pooler).await;
    let seen = one_row(
        &a,
        // LISTEN takes effect at commit: commit the Query's implicit transaction first.
        "LISTEN leak_chan; COMMIT; \
         SELECT pg_backend_pid(), (SELECT count(*) FROM pg_listening_channels())",
    )
    .await;
    assert_eq!(seen[1], "1", "A's LISTEN took effect");
    let got = one_row(
        &b,
        "SELECT pg_backend_pid(), (SELECT count(*) FROM pg_listening_channels())",
    )
    .await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        "0",
        "B's session listens on A's channel\n{}",
        tail(&pooler.logs(), 30)
    );
    // A NOTIFY from elsewhere while B holds the server: PostgreSQL delivers it at the end of
    // B's transaction, before ReadyForQuery, if the session still listens.
    b.batch_execute("BEGIN").await.expect("B BEGIN");
    let direct = support::connect_direct(&cluster.primary, DB).await;
    direct
        .batch_execute("NOTIFY leak_chan, 'for A only'")
        .await
        .expect("NOTIFY");
    let pid = one_row(&b, "SELECT pg_backend_pid()").await;
    assert_eq!(pid[0], seen[0]);
    b.batch_execute("COMMIT").await.expect("B COMMIT");
    one_row(&b, "SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(n) = b_notes.try_recv() {
        panic!(
            "B received a notification for A's channel: {} {:?}",
            n.channel(),
            n.payload()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_temp_table() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = one_row(
        &a,
        "CREATE TEMP TABLE leak_tmp (v int); INSERT INTO leak_tmp VALUES (1); \
         SELECT pg_backend_pid(), (SELECT count(*) FROM leak_tmp)",
    )
    .await;
    assert_eq!(seen[1], "1", "A's temp table exists");
    let got = one_row(
        &b,
        "SELECT pg_backend_pid(), to_regclass('pg_temp.leak_tmp') IS NULL",
    )
    .await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        "t",
        "B can see A's temp table\n{}",
        tail(&pooler.logs(), 30)
    );
    let err = b
        .simple_query("SELECT * FROM leak_tmp")
        .await
        .expect_err("B must not read A's temp table");
    assert_eq!(support::sqlstate(&err).as_deref(), Some("42P01"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_advisory_lock() {
    let (pooler, a, b) = two_clients_one_server().await;
    let seen = one_row(
        &a,
        "SELECT pg_backend_pid(), pg_advisory_lock(42) IS NOT NULL, \
         (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
    )
    .await;
    assert_eq!(seen[2], "1", "A holds the advisory lock");
    // A lock is re-entrant within a session, so pg_try_advisory_lock alone cannot tell a
    // leaked lock from a released one when B shares the backend: look at pg_locks, and
    // ask from another session too.
    let got = one_row(
        &b,
        "SELECT pg_backend_pid(), \
         (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
    )
    .await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    assert_eq!(
        got[1],
        "0",
        "B's session holds A's advisory lock\n{}",
        tail(&pooler.logs(), 30)
    );
    let direct = support::connect_direct(&shared().primary, DB).await;
    let other = one_row(
        &direct,
        "SELECT pg_try_advisory_lock(42), pg_advisory_unlock_all() IS NULL",
    )
    .await;
    assert_eq!(
        other[0], "t",
        "advisory lock 42 still held after B took A's server"
    );
    let got = one_row(&b, "SELECT pg_backend_pid(), pg_try_advisory_lock(42)").await;
    assert_eq!(got[0], seen[0]);
    assert_eq!(got[1], "t", "B's pg_try_advisory_lock(42)");
}

// ---------------------------------------------------------------------------------------------
// 5. An error in the middle of a pipeline
// ---------------------------------------------------------------------------------------------

fn first_values(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.row()[0].clone().unwrap_or_default())
        .collect()
}

/// Replies as comparable text: tag, plus the row / command tag / SQLSTATE / status.
/// ParameterStatus and notices are left out (asynchronous, not part of the exchange).
fn summary(msgs: &[Msg]) -> String {
    msgs.iter()
        .filter(|m| m.tag != b'S' && m.tag != b'N')
        .map(|m| match m.tag {
            b'D' => format!(
                "D[{}]",
                m.row()
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            b'C' => format!("C[{}]", m.command_tag()),
            b'E' => format!("E[{}]", m.sqlstate().unwrap_or_default()),
            b'Z' => format!("Z[{}]", m.body.first().map(|&b| b as char).unwrap_or('?')),
            t => (t as char).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_syncs(conn: &mut RawConn, n: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(
            conn.read_until_ready()
                .expect("replies up to ReadyForQuery"),
        );
    }
    out
}

/// Fails at Execute (random() keeps the planner from folding the division at Bind).
const DIV0: &str = "SELECT 10 / ($1::int4 + (random() * 0)::int4)";

/// The pipelined exchange, as (bytes to send in one write, number of Syncs in it).
fn pipeline_script() -> Vec<(Vec<u8>, usize)> {
    vec![
        // One Sync: a named statement used, an error, then a Parse/Bind/Execute of another
        // named statement and a Bind of the first, all skipped by the server.
        (
            [
                raw::parse("ok1", "SELECT $1::int4 + 1"),
                raw::bind("", "ok1", &[Some("1")]),
                raw::execute(""),
                raw::parse("", DIV0),
                raw::bind("", "", &[Some("0")]),
                raw::execute(""),
                raw::parse("late", "SELECT 'late'::text"),
                raw::bind("", "late", &[]),
                raw::execute(""),
                raw::bind("", "ok1", &[Some("5")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
            1,
        ),
        // Several Syncs in one write, the second group failing; the Parse of `late` now
        // really happens.
        (
            [
                raw::bind("", "ok1", &[Some("10")]),
                raw::execute(""),
                raw::sync(),
                raw::parse("div", DIV0),
                raw::bind("", "div", &[Some("0")]),
                raw::execute(""),
                raw::bind("", "ok1", &[Some("99")]),
                raw::execute(""),
                raw::sync(),
                raw::parse("late", "SELECT 'late'::text"),
                raw::bind("", "late", &[]),
                raw::execute(""),
                raw::sync(),
                raw::bind("", "ok1", &[Some("20")]),
                raw::execute(""),
                raw::bind("", "div", &[Some("2")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
            4,
        ),
        // An error inside an explicit transaction, mid-pipeline.
        (
            [
                raw::query("BEGIN"),
                raw::bind("", "ok1", &[Some("30")]),
                raw::execute(""),
                raw::bind("", "div", &[Some("0")]),
                raw::execute(""),
                raw::bind("", "ok1", &[Some("31")]),
                raw::execute(""),
                raw::sync(),
                raw::bind("", "ok1", &[Some("32")]),
                raw::execute(""),
                raw::sync(),
                raw::query("ROLLBACK"),
            ]
            .concat(),
            4,
        ),
        // The batch after: everything works.
        (
            [
                raw::bind("", "ok1", &[Some("100")]),
                raw::execute(""),
                raw::bind("", "late", &[]),
                raw::execute(""),
                raw::parse("after", "SELECT $1::text || '-after'"),
                raw::bind("", "after", &[Some("x")]),
                raw::execute(""),
                raw::bind("", "div", &[Some("5")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
            1,
        ),
    ]
}

fn run_script(conn: &mut RawConn, script: &[(Vec<u8>, usize)]) -> Vec<String> {
    script
        .iter()
        .map(|(bytes, syncs)| {
            conn.send(bytes).expect("send batch");
            summary(&read_syncs(conn, *syncs))
        })
        .collect()
}

#[test]
fn error_mid_pipeline_leaves_client_and_server_usable() {
    let cluster = shared();
    let script = pipeline_script();
    // PostgreSQL judges: the same bytes straight to the primary.
    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    let expected = run_script(&mut direct, &script);
    // Sanity of the script itself.
    assert_eq!(expected[0], "1 2 D[2] C[SELECT 1] 1 2 E[22012] Z[I]");
    assert_eq!(
        expected[3],
        "2 D[101] C[SELECT 1] 2 D[late] C[SELECT 1] 1 2 D[x-after] C[SELECT 1] 2 D[2] C[SELECT 1] Z[I]"
    );

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login A");
    a.set_read_timeout(Duration::from_secs(20));
    let got = run_script(&mut a, &script);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g,
            e,
            "batch {i}: pooler vs PostgreSQL\n{}",
            tail(&pooler.logs(), 40)
        );
    }
    let pid_a = first_values(&a.simple_query("SELECT pg_backend_pid()").expect("A pid"))[0].clone();

    // Another client on the same (only) server: the connection the error went through works,
    // including a statement whose Parse the server skipped after the error in batch 0 and a
    // statement A prepared.
    let mut b = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login B");
    b.set_read_timeout(Duration::from_secs(20));
    b.send(
        &[
            raw::parse("b1", "SELECT $1::int4 + 1"),
            raw::bind("", "b1", &[Some("41")]),
            raw::execute(""),
            raw::parse("b2", "SELECT 'late'::text"),
            raw::bind("", "b2", &[]),
            raw::execute(""),
            raw::parse("b3", DIV0),
            raw::bind("", "b3", &[Some("10")]),
            raw::execute(""),
            raw::sync(),
        ]
        .concat(),
    )
    .expect("send B");
    let r = summary(&read_syncs(&mut b, 1));
    assert_eq!(
        r,
        "1 2 D[42] C[SELECT 1] 1 2 D[late] C[SELECT 1] 1 2 D[1] C[SELECT 1] Z[I]",
        "B on the server after A's failed pipelines\n{}",
        tail(&pooler.logs(), 40)
    );
    let pid_b = first_values(&b.simple_query("SELECT pg_backend_pid()").expect("B pid"))[0].clone();
    assert_eq!(pid_a, pid_b, "B ran on A's server (pool_size 1)");
    // And A still works after B.
    a.send(
        &[
            raw::bind("", "ok1", &[Some("7")]),
            raw::execute(""),
            raw::sync(),
        ]
        .concat(),
    )
    .expect("send A");
    assert_eq!(summary(&read_syncs(&mut a, 1)), "2 D[8] C[SELECT 1] Z[I]");
}

/// A named Parse that comes after an error in the same pipeline is skipped by PostgreSQL: the
/// statement does not exist. The pooler must not believe the server prepared it (another
/// client with the same SQL would then Bind a statement that is not there), and the client
/// must see what PostgreSQL sends.
#[test]
fn parse_skipped_after_an_error_is_not_prepared() {
    let cluster = shared();
    let batch = |c: &mut RawConn, msgs: Vec<Vec<u8>>| {
        c.send(&msgs.concat()).expect("send");
        summary(&read_syncs(c, 1))
    };
    let failing = || {
        vec![
            raw::parse("", DIV0),
            raw::bind("", "", &[Some("0")]),
            raw::execute(""),
            raw::parse("skipped", "SELECT 'skipped'::text, 1"),
            raw::bind("", "skipped", &[]),
            raw::execute(""),
            raw::sync(),
        ]
    };
    let bind_skipped = || vec![raw::bind("", "skipped", &[]), raw::execute(""), raw::sync()];

    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    let want_fail = batch(&mut direct, failing());
    let want_bind = batch(&mut direct, bind_skipped());
    assert_eq!(want_fail, "1 2 E[22012] Z[I]");
    assert_eq!(
        want_bind, "E[26000] Z[I]",
        "PostgreSQL: the statement does not exist"
    );

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login A");
    a.set_read_timeout(Duration::from_secs(20));
    assert_eq!(batch(&mut a, failing()), want_fail);
    // Another client on the same server prepares the same SQL.
    let mut b = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login B");
    b.set_read_timeout(Duration::from_secs(20));
    assert_eq!(
        batch(
            &mut b,
            vec![
                raw::parse("mine", "SELECT 'skipped'::text, 1"),
                raw::bind("", "mine", &[]),
                raw::execute(""),
                raw::sync(),
            ]
        ),
        "1 2 D[skipped,1] C[SELECT 1] Z[I]",
        "B prepares SQL whose Parse A's server skipped\n{}",
        tail(&pooler.logs(), 40)
    );
    assert_eq!(
        batch(&mut a, bind_skipped()),
        want_bind,
        "A binds a statement PostgreSQL never prepared\n{}",
        tail(&pooler.logs(), 40)
    );
    // A can now prepare it for real.
    assert_eq!(
        batch(
            &mut a,
            vec![
                raw::parse("skipped", "SELECT 'skipped'::text, 1"),
                raw::bind("", "skipped", &[]),
                raw::execute(""),
                raw::sync(),
            ]
        ),
        "1 2 D[skipped,1] C[SELECT 1] Z[I]"
    );
}

/// The server fails a batch before the client has sent the rest of it (Flush brings the
/// error back early). PostgreSQL skips everything up to the Sync, so the rest of the batch
/// gets no replies; the pooler must expect none (it once waited for them forever, and every
/// made-up ParseComplete after that queued behind them: psycopg's pipelines hung).
#[test]
fn rest_of_a_failed_batch_sent_after_the_error_gets_no_replies() {
    let cluster = shared();
    let script = |c: &mut RawConn| -> Vec<String> {
        let mut out = Vec::new();
        c.send(
            &[
                raw::parse("late_a", "SELECT $1::int4 + 1"),
                raw::bind("", "late_a", &[Some("1")]),
                raw::execute(""),
                raw::parse("", DIV0),
                raw::bind("", "", &[Some("0")]),
                raw::execute(""),
                raw::flush(),
            ]
            .concat(),
        )
        .expect("send");
        let mut early = Vec::new();
        loop {
            let m = c.read_msg().expect("the error comes back on Flush");
            let done = m.tag == b'E';
            early.push(m);
            if done {
                break;
            }
        }
        out.push(summary(&early));
        c.send(
            &[
                raw::parse("late_b", "SELECT $1::int4 + 2"),
                raw::bind("", "late_b", &[Some("1")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
        )
        .expect("send");
        out.push(summary(&read_syncs(c, 1)));
        // A prepare of a statement this server has: PostgreSQL answers ParseComplete.
        c.send(&[raw::parse("late_c", "SELECT $1::int4 + 1"), raw::sync()].concat())
            .expect("send");
        out.push(summary(&read_syncs(c, 1)));
        c.send(
            &[
                raw::bind("", "late_c", &[Some("41")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
        )
        .expect("send");
        out.push(summary(&read_syncs(c, 1)));
        c.send(&[raw::bind("", "late_b", &[]), raw::execute(""), raw::sync()].concat())
            .expect("send");
        out.push(summary(&read_syncs(c, 1)));
        out
    };
    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    let want = script(&mut direct);
    assert_eq!(
        want[1], "Z[I]",
        "PostgreSQL skips the rest of the failed batch"
    );

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let mut c = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    c.set_read_timeout(Duration::from_secs(20));
    assert_eq!(script(&mut c), want, "\n{}", tail(&pooler.logs(), 40));
}
