//! Issue 5, "Must show" 3 and 5: pausing, reconnecting, killing and stopping.
//!
//! - PAUSE / PAUSE db / PAUSE db,user waits for an open transaction, then new queries queue
//!   (no error) until RESUME; PAUSE of an unknown pool is an error.
//! - RECONNECT replaces a pool's server connections; KILL db drops its clients and servers.
//! - SIGINT / admin SHUTDOWN with an open transaction lets it commit, refuses new logins and
//!   exits 0; shutdown_timeout forces the exit; SIGTERM is quick.

mod support;

use std::time::{Duration, Instant};

use support::admin::{
    admin, all_are, app_client, app_config, exec, pg_err, raw_admin, run, scalar, show, table_from,
    within,
};
use support::raw::{LoginError, RawConn};
use support::{
    connect_direct, free_port, shared, tail, Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};

// ---------------------------------------------------------------------------------------------
// 3. PAUSE / RESUME
// ---------------------------------------------------------------------------------------------

/// `paused` of scram_user's pool app as SHOW DATABASES reports it: pgbouncer (rows of
/// database app, for any user) and pgcat (rows of database app and force_user scram_user).
async fn shown_paused(port: u16) -> (Vec<i64>, Vec<i64>) {
    let pgb = admin(port, "pgbouncer").await;
    let t = show(&pgb, "SHOW DATABASES").await;
    let b = t
        .rows_where(&[("database", DB)])
        .into_iter()
        .map(|r| t.int(r, "paused"))
        .collect();
    let pgc = admin(port, "pgcat").await;
    let t = show(&pgc, "SHOW DATABASES").await;
    let rows = t.rows_where(&[("database", DB), ("force_user", SCRAM_USER)]);
    assert!(!rows.is_empty(), "{}", t.dump());
    (b, rows.into_iter().map(|r| t.int(r, "paused")).collect())
}

async fn pause_scenario(db: &str, pause: &str, resume: &str, per_user: bool) {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let holder = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "holder").await;
    let later = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "later").await;
    let other = app_client(pooler.port, MD5_USER, MD5_PASS, "other_user").await;
    exec(&later, "SELECT 1").await;
    exec(&other, "SELECT 1").await;
    exec(&holder, "BEGIN").await;
    assert_eq!(scalar(&holder, "SELECT 1").await, "1");

    let pauser = admin(pooler.port, db).await;
    let pause_sql = pause.to_owned();
    let pause_task = tokio::spawn(async move {
        let r = pauser.simple_query(&pause_sql).await.map(|_| ());
        (Instant::now(), r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pause_task.is_finished(),
        "{pause} on {db} must wait for the open transaction (it returned while it was open)"
    );
    // The transaction keeps running and can finish.
    assert_eq!(scalar(&holder, "SELECT 2").await, "2");
    let committed_at = Instant::now();
    exec(&holder, "COMMIT").await;
    let (returned_at, r) = within(Duration::from_secs(10), pause, pause_task)
        .await
        .expect("pause task");
    r.unwrap_or_else(|e| panic!("{pause} on {db}: {}", pg_err(&e)));
    assert!(
        returned_at >= committed_at,
        "{pause} returned before the COMMIT"
    );
    let (b, c) = shown_paused(pooler.port).await;
    if !per_user {
        assert!(
            !b.is_empty() && b.iter().all(|&p| p == 1),
            "pgbouncer SHOW DATABASES paused after {pause}: {b:?}"
        );
    }
    assert!(
        c.iter().all(|&p| p == 1),
        "pgcat SHOW DATABASES paused after {pause}: {c:?}"
    );

    // New queries queue, without an error.
    let queued = tokio::spawn(async move {
        let r = later.simple_query("SELECT 42").await.map(table_from);
        (later, r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !queued.is_finished(),
        "a query during {pause} must queue until RESUME"
    );
    if per_user {
        // Only app/scram_user is paused: md5_user keeps going.
        assert_eq!(
            within(
                Duration::from_secs(5),
                "other user's query",
                scalar(&other, "SELECT 7")
            )
            .await,
            "7"
        );
    }

    let resumer = admin(pooler.port, db).await;
    within(
        Duration::from_secs(10),
        resume,
        resumer.simple_query(resume),
    )
    .await
    .unwrap_or_else(|e| panic!("{resume} on {db}: {}", pg_err(&e)));
    let (_later, r) = within(Duration::from_secs(10), "query queued during PAUSE", queued)
        .await
        .expect("task");
    let t = r.unwrap_or_else(|e| panic!("the queued query must not fail: {}", pg_err(&e)));
    assert_eq!(t.get(0, &t.columns[0].clone()), "42");
    assert_eq!(scalar(&holder, "SELECT 3").await, "3");
    assert_eq!(scalar(&other, "SELECT 8").await, "8");
    let p = shown_paused(pooler.port).await;
    assert!(all_are(&p, 0), "not paused after {resume}: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_all_on_pgbouncer_db_waits_for_the_transaction_then_queues_until_resume() {
    pause_scenario("pgbouncer", "PAUSE", "RESUME", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_db_on_pgbouncer_db_waits_for_the_transaction_then_queues_until_resume() {
    pause_scenario("pgbouncer", "PAUSE app", "RESUME app", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_db_user_on_pgcat_db_waits_then_queues_only_that_pool_until_resume() {
    pause_scenario(
        "pgcat",
        "PAUSE app,scram_user",
        "RESUME app,scram_user",
        true,
    )
    .await;
}

#[test]
fn pause_resume_reconnect_kill_of_an_unknown_pool_are_errors() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    for (db, cmds) in [
        (
            "pgbouncer",
            &[
                "PAUSE nosuchdb",
                "RESUME nosuchdb",
                "RECONNECT nosuchdb",
                "KILL nosuchdb",
            ][..],
        ),
        (
            "pgcat",
            &["PAUSE nosuchdb,nobody", "RESUME nosuchdb,nobody"][..],
        ),
    ] {
        let mut a = raw_admin(pooler.port, db);
        for sql in cmds {
            let r = run(&mut a, sql);
            assert!(r.error.is_some(), "{db}: {sql} must be an error: {r:?}");
        }
    }
    // Nothing got paused by the failed commands.
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    a.set_read_timeout(Duration::from_secs(5));
    let r = a.simple_query("SELECT 1").expect("query must not queue");
    assert!(r.iter().any(|m| m.tag == b'D'), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// RECONNECT, KILL
// ---------------------------------------------------------------------------------------------

async fn backend_pid(c: &tokio_postgres::Client) -> String {
    scalar(c, "SELECT pg_backend_pid()").await
}

/// Polls until the (pool_size 1) client lands on a server other than `old`.
async fn new_backend(c: &tokio_postgres::Client, old: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = backend_pid(c).await;
        if p != old {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still on server pid {old}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls (5 s at most) until PostgreSQL has no backend `pid` any more.
async fn wait_backend_gone(pid: &str, after: &str) {
    let direct = connect_direct(&shared().primary, "postgres").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::text::int",
                &[&pid],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} still connected after {after}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_the_server_connections_of_a_pool() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 1));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "reconnected").await;
    let p1 = backend_pid(&c).await;
    assert_eq!(backend_pid(&c).await, p1, "pool_size 1 reuses its server");

    let port = pooler.port;
    let r = tokio::task::spawn_blocking(move || {
        run(&mut raw_admin(port, "pgbouncer"), "RECONNECT app")
    })
    .await
    .expect("task");
    assert!(r.error.is_none(), "pgbouncer RECONNECT app: {r:?}");
    let p2 = new_backend(&c, &p1, "after RECONNECT app").await;

    let r = tokio::task::spawn_blocking(move || run(&mut raw_admin(port, "pgcat"), "RECONNECT"))
        .await
        .expect("task");
    assert!(r.error.is_none(), "pgcat RECONNECT: {r:?}");
    new_backend(&c, &p2, "after RECONNECT").await;

    // The old backend is gone from PostgreSQL.
    wait_backend_gone(&p1, "RECONNECT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_db_drops_its_clients_and_servers() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 1));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "to_be_killed").await;
    let p1 = backend_pid(&c).await;
    let port = pooler.port;
    let r = tokio::task::spawn_blocking(move || run(&mut raw_admin(port, "pgbouncer"), "KILL app"))
        .await
        .expect("task");
    assert!(r.error.is_none(), "KILL app: {r:?}");
    let after = within(
        Duration::from_secs(10),
        "query after KILL",
        c.simple_query("SELECT 1"),
    )
    .await;
    assert!(
        after.is_err(),
        "the client of a killed database must be disconnected"
    );

    wait_backend_gone(&p1, "KILL").await;
    // PgBouncer: a killed database waits for RESUME; then it serves again.
    let _ =
        tokio::task::spawn_blocking(move || run(&mut raw_admin(port, "pgbouncer"), "RESUME app"))
            .await;
    let fresh = within(
        Duration::from_secs(15),
        "login after KILL + RESUME",
        app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "after_kill"),
    )
    .await;
    assert_eq!(
        within(
            Duration::from_secs(10),
            "query after KILL + RESUME",
            scalar(&fresh, "SELECT 5")
        )
        .await,
        "5"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Shutdown
// ---------------------------------------------------------------------------------------------

/// A login attempt during shutdown must be refused with an error (57xxx / 08xxx) or a refused
/// `toml` with a longer shutdown_timeout (general_toml sets 1000 ms).
fn with_shutdown_timeout(toml: &str, ms: u64) -> String {
    assert!(toml.contains("shutdown_timeout = 1000\n"), "{toml}");
    toml.replace(
        "shutdown_timeout = 1000\n",
        &format!("shutdown_timeout = {ms}\n"),
    )
}

/// TCP connection.
fn assert_login_refused(port: u16, what: &str) {
    match RawConn::connect(port, SCRAM_USER, SCRAM_PASS, DB) {
        Ok(_) => panic!("{what}: a new login must be refused during shutdown"),
        Err(LoginError::Server { sqlstate, message }) => assert!(
            sqlstate.starts_with("57") || sqlstate.starts_with("08"),
            "{what}: refusal SQLSTATE should be 57P01/57P03-like, got {sqlstate}: {message}"
        ),
        Err(LoginError::Io(e)) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{what}: connection dropped without an error message: {e}"
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

enum Stop {
    Sigint,
    AdminShutdown,
}

async fn graceful_shutdown_scenario(stop: Stop) {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 20000);
    let mut pooler = Pooler::start(&toml);
    let table = format!("admin_shutdown_{}", pooler.port);
    let txn = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "in_txn").await;
    exec(
        &txn,
        &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int)"),
    )
    .await;
    exec(&txn, "BEGIN").await;
    exec(&txn, &format!("INSERT INTO {table} VALUES (1)")).await;

    match stop {
        Stop::Sigint => pooler.signal(libc::SIGINT),
        Stop::AdminShutdown => {
            let port = pooler.port;
            let r = tokio::task::spawn_blocking(move || {
                let mut a = raw_admin(port, "pgcat");
                a.simple_query("SHUTDOWN")
            })
            .await
            .expect("task");
            // The reply may be cut short by the shutdown, but it must not be an error.
            if let Ok(msgs) = r {
                assert!(
                    msgs.iter().all(|m| m.tag != b'E'),
                    "SHUTDOWN answered an error: {msgs:?}"
                );
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        pooler.running(),
        "the pooler must wait for the open transaction"
    );
    let port = pooler.port;
    tokio::task::spawn_blocking(move || assert_login_refused(port, "during shutdown"))
        .await
        .expect("login check");
    if matches!(stop, Stop::AdminShutdown) {
        // Admin sessions still work during shutdown.
        let a = admin(pooler.port, "pgcat").await;
        let t = show(&a, "SHOW POOLS").await;
        t.one(
            "pgcat SHOW POOLS during shutdown",
            &[("database", DB), ("user", SCRAM_USER)],
        );
    }
    // The running transaction finishes.
    exec(&txn, &format!("INSERT INTO {table} VALUES (2)")).await;
    assert!(pooler.running(), "exited before the transaction finished");
    within(
        Duration::from_secs(10),
        "COMMIT during shutdown",
        txn.simple_query("COMMIT"),
    )
    .await
    .unwrap_or_else(|e| panic!("COMMIT during shutdown: {}", pg_err(&e)));
    let status = pooler.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the pooler must exit once the transaction is done (shutdown_timeout is 20 s):\n{}",
        tail(&pooler.logs(), 30)
    );
    assert!(status.unwrap().success(), "exit status {status:?}");

    let direct = connect_direct(&cluster.primary, DB).await;
    let n: i64 = direct
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2, "both inserts of the transaction committed");
    let _ = direct.simple_query(&format!("DROP TABLE {table}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_an_open_transaction_commit_refuses_new_logins_and_exits_0() {
    graceful_shutdown_scenario(Stop::Sigint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shutdown_lets_an_open_transaction_commit_keeps_admin_working_and_exits_0() {
    graceful_shutdown_scenario(Stop::AdminShutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_without_transactions_disconnects_idle_clients_and_exits_0_promptly() {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 20000);
    let mut pooler = Pooler::start(&toml);
    let idle = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "idle").await;
    exec(&idle, "SELECT 1").await;
    let started = Instant::now();
    pooler.signal(libc::SIGINT);
    let status = pooler.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "nothing to wait for: exit promptly, not after shutdown_timeout"
    );
    assert!(status.unwrap().success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = within(
        Duration::from_secs(5),
        "query after shutdown",
        idle.simple_query("SELECT 1"),
    )
    .await;
    assert!(
        r.is_err(),
        "an idle client's next query after shutdown must fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_forces_the_exit_when_a_transaction_stays_open() {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 1500);
    let mut pooler = Pooler::start(&toml);
    let txn = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "stuck").await;
    exec(&txn, "BEGIN").await;
    exec(&txn, "SELECT 1").await;
    let started = Instant::now();
    pooler.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        pooler.running(),
        "must wait up to shutdown_timeout (1.5 s) for the transaction"
    );
    let status = pooler.wait_exit(Duration::from_secs(6));
    assert!(
        status.is_some(),
        "shutdown_timeout 1.5 s must force the exit (waited {:?})",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "forced too early: {:?}",
        started.elapsed()
    );
    let r = within(
        Duration::from_secs(5),
        "query after forced exit",
        txn.simple_query("SELECT 1"),
    )
    .await;
    assert!(r.is_err(), "the connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_quick_shutdown_even_with_an_open_transaction() {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 20000);
    let mut pooler = Pooler::start(&toml);
    let txn = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "stuck").await;
    exec(&txn, "BEGIN").await;
    exec(&txn, "SELECT 1").await;
    pooler.signal(libc::SIGTERM);
    let status = pooler.wait_exit(Duration::from_secs(3));
    assert!(
        status.is_some(),
        "SIGTERM must not wait for the open transaction (shutdown_timeout 20 s)"
    );
}
