//! Issue 5, "Must show" 1 (values): the counters of the admin databases move with traffic.
//! After N queries total_query_count / total_xact_count grow by at least N on both admin
//! databases (and through psql); a client queued behind a busy pool shows in cl_waiting,
//! maxwait and total_wait_time.
//!
//! Also (PgCat's stats_spec): client counts after clean and abrupt disconnects, failed logins
//! leave SHOW POOLS unchanged, SHOW CLIENTS counts per client.

mod support;

use std::time::{Duration, Instant};

use support::admin::{
    admin, app_client, app_config, assert_columns, exec, pg_err, pgbouncer_stats, pgcat_stats,
    psql_admin, scalar, show, table_from, within, Counters, Table, ADMIN_DBS, PGB_POOLS, PGB_STATS,
    PGCAT_POOLS, PGCAT_STATS,
};
use support::raw::{LoginError, RawConn};
use support::{free_port, shared, Checks, Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn assert_grew(what: &str, before: Counters, after: Counters, n: i64, slept_us: i64) {
    let d = |a: i64, b: i64| a - b;
    let msg = format!("{what}: before {before:?}\nafter {after:?}");
    assert!(
        d(after.query, before.query) >= n,
        "total_query_count must grow by >= {n}\n{msg}"
    );
    assert!(
        d(after.xact, before.xact) >= n,
        "total_xact_count must grow by >= {n}\n{msg}"
    );
    assert!(
        d(after.received, before.received) > 0,
        "total_received must grow\n{msg}"
    );
    assert!(
        d(after.sent, before.sent) > 0,
        "total_sent must grow\n{msg}"
    );
    assert!(
        d(after.query_time, before.query_time) >= slept_us,
        "total_query_time (us) must grow by >= {slept_us} after pg_sleep\n{msg}"
    );
    assert!(
        d(after.xact_time, before.xact_time) >= slept_us,
        "total_xact_time (us) must grow by >= {slept_us} after pg_sleep\n{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counters_grow_by_the_queries_run_on_both_admin_databases() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "counter").await;
    exec(&c, "SELECT 1").await;
    let pgb = admin(pooler.port, "pgbouncer").await;
    let pgc = admin(pooler.port, "pgcat").await;
    // Let anything asynchronous about the warm-up query settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_pgb = pgbouncer_stats(&pgb).await;
    let b_pgc = pgcat_stats(&pgc, SCRAM_USER).await;
    let b_totals = {
        let t = show(&pgb, "SHOW STATS_TOTALS").await;
        let r = t.one("SHOW STATS_TOTALS", &[("database", DB)]);
        t.int(r, "query_count")
    };

    const N: i64 = 25;
    for i in 0..N - 1 {
        assert_eq!(scalar(&c, &format!("SELECT {i}")).await, i.to_string());
    }
    exec(&c, "SELECT pg_sleep(0.2)").await;

    // Counters may be aggregated a moment later; give them up to 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (a_pgb, a_pgc) = loop {
        let a_pgb = pgbouncer_stats(&pgb).await;
        let a_pgc = pgcat_stats(&pgc, SCRAM_USER).await;
        if (a_pgb.query - b_pgb.query >= N && a_pgc.query - b_pgc.query >= N)
            || Instant::now() > deadline
        {
            break (a_pgb, a_pgc);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_grew(
        "pgbouncer SHOW STATS (database app)",
        b_pgb,
        a_pgb,
        N,
        200_000,
    );
    assert_grew(
        "pgcat SHOW STATS (app / scram_user)",
        b_pgc,
        a_pgc,
        N,
        200_000,
    );
    let t = show(&pgb, "SHOW STATS_TOTALS").await;
    let r = t.one("SHOW STATS_TOTALS", &[("database", DB)]);
    assert!(
        t.int(r, "query_count") - b_totals >= N,
        "SHOW STATS_TOTALS query_count must grow by >= {N}: before {b_totals}\n{}",
        t.dump()
    );
    // The other user's pool saw none of it.
    let md5 = pgcat_stats(&pgc, MD5_USER).await;
    assert_eq!(md5.query, 0, "md5_user ran nothing: {md5:?}");
}

#[test]
fn psql_reads_the_admin_databases_and_sees_its_own_queries_counted() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let stats = |db: &str| {
        psql_admin(cluster, pooler.port, db, "SHOW STATS")
            .unwrap_or_else(|e| panic!("psql SHOW STATS on {db}: {e}\n{}", pooler.logs()))
    };
    let pgb_count = |t: &Table| t.sum("total_query_count", &[("database", DB)]);
    let pgc_count = |t: &Table| {
        t.sum(
            "total_query_count",
            &[("database", DB), ("user", SCRAM_USER)],
        )
    };
    let (b0, c0) = (stats("pgbouncer"), stats("pgcat"));
    assert_columns("psql pgbouncer SHOW STATS", &b0, &PGB_STATS);
    assert_columns("psql pgcat SHOW STATS", &c0, &PGCAT_STATS);
    for i in 0..5 {
        let out = support::psql(
            cluster,
            &pooler,
            SCRAM_USER,
            SCRAM_PASS,
            &format!("SELECT {i}"),
        )
        .unwrap_or_else(|e| panic!("psql through the pooler: {e}"));
        assert_eq!(out, i.to_string());
    }
    let ok = support::wait_until(Duration::from_secs(5), || {
        pgb_count(&stats("pgbouncer")) - pgb_count(&b0) >= 5
            && pgc_count(&stats("pgcat")) - pgc_count(&c0) >= 5
    });
    let (b1, c1) = (stats("pgbouncer"), stats("pgcat"));
    assert!(
        ok,
        "5 psql queries must be counted: pgbouncer {} -> {}, pgcat {} -> {}",
        pgb_count(&b0),
        pgb_count(&b1),
        pgc_count(&c0),
        pgc_count(&c1)
    );
    for db in ADMIN_DBS {
        let t = psql_admin(cluster, pooler.port, db, "SHOW POOLS")
            .unwrap_or_else(|e| panic!("psql SHOW POOLS on {db}: {e}"));
        let cols = if db == "pgcat" {
            &PGCAT_POOLS
        } else {
            &PGB_POOLS
        };
        assert_columns(&format!("psql {db} SHOW POOLS"), &t, cols);
        let r = t.one(db, &[("database", DB), ("user", SCRAM_USER)]);
        assert_eq!(t.int(r, "cl_waiting"), 0, "{}", t.dump());
        assert_eq!(t.int(r, "sv_active"), 0, "nothing running:\n{}", t.dump());
    }
}

/// (cl_waiting, maxwait in us) of app / scram_user in SHOW POOLS.
async fn waiting(a: &tokio_postgres::Client, db: &str) -> (i64, i64, Table) {
    let t = show(a, "SHOW POOLS").await;
    let r = t.one(
        &format!("{db} SHOW POOLS"),
        &[("database", DB), ("user", SCRAM_USER)],
    );
    let w = t.int(r, "cl_waiting");
    let mw = t.int(r, "maxwait") * 1_000_000 + t.int(r, "maxwait_us");
    (w, mw, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_queued_behind_a_busy_pool_shows_in_cl_waiting_maxwait_and_wait_time() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 1));
    let holder = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "holder").await;
    let queued = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "queued").await;
    let pgb = admin(pooler.port, "pgbouncer").await;
    let pgc = admin(pooler.port, "pgcat").await;
    let before_pgb = pgbouncer_stats(&pgb).await;
    let before_pgc = pgcat_stats(&pgc, SCRAM_USER).await;

    exec(&holder, "BEGIN").await;
    exec(&holder, "SELECT 1").await;
    let task = tokio::spawn(async move {
        let r = queued.simple_query("SELECT 42").await.map(table_from);
        (queued, r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "pool_size 1 is held: the second client must queue"
    );

    for (db, a) in [("pgbouncer", &pgb), ("pgcat", &pgc)] {
        let (w, mw, t) = waiting(a, db).await;
        assert!(
            w >= 1,
            "{db} SHOW POOLS cl_waiting must be >= 1:\n{}",
            t.dump()
        );
        assert!(
            mw >= 1_000_000,
            "{db} SHOW POOLS maxwait must cover the 1.5 s wait (got {mw} us):\n{}",
            t.dump()
        );
        let r = t.one(db, &[("database", DB), ("user", SCRAM_USER)]);
        assert_eq!(t.int(r, "sv_active"), 1, "{}", t.dump());
    }
    let t = show(&pgb, "SHOW CLIENTS").await;
    let r = t.one("pgbouncer SHOW CLIENTS", &[("application_name", "queued")]);
    assert_eq!(t.get(r, "state"), "waiting", "{}", t.dump());
    assert!(
        t.int(r, "wait") * 1_000_000 + t.int(r, "wait_us") >= 1_000_000,
        "pgbouncer SHOW CLIENTS wait/wait_us of the queued client:\n{}",
        t.dump()
    );
    let t = show(&pgc, "SHOW CLIENTS").await;
    let r = t.one("pgcat SHOW CLIENTS", &[("application_name", "queued")]);
    assert_eq!(t.get(r, "state"), "waiting", "{}", t.dump());

    exec(&holder, "COMMIT").await;
    let (_queued, r) = within(Duration::from_secs(10), "queued client", task)
        .await
        .expect("task");
    let r = r.unwrap_or_else(|e| panic!("queued query must succeed: {}", pg_err(&e)));
    assert_eq!(r.get(0, &r.columns[0].clone()), "42");

    for (db, a) in [("pgbouncer", &pgb), ("pgcat", &pgc)] {
        let (w, _, t) = waiting(a, db).await;
        assert_eq!(w, 0, "{db}: nobody waits any more:\n{}", t.dump());
    }
    let t = show(&pgc, "SHOW CLIENTS").await;
    let after_pgb = pgbouncer_stats(&pgb).await;
    let after_pgc = pgcat_stats(&pgc, SCRAM_USER).await;
    let mut checks = Checks::new();
    checks.run("pgcat SHOW CLIENTS maxwait", || {
        let r = t.one("pgcat SHOW CLIENTS", &[("application_name", "queued")]);
        assert!(
            t.int(r, "maxwait") * 1_000_000 + t.int(r, "maxwait_us") >= 1_000_000,
            "pgcat SHOW CLIENTS maxwait of the client that waited 1.5 s:\n{}",
            t.dump()
        );
    });
    checks.run("pgbouncer total_wait_time", || {
        assert!(
            after_pgb.wait_time - before_pgb.wait_time >= 1_000_000,
            "pgbouncer total_wait_time (us): {before_pgb:?} -> {after_pgb:?}"
        )
    });
    checks.run("pgcat total_wait_time", || {
        assert!(
            after_pgc.wait_time - before_pgc.wait_time >= 1_000_000,
            "pgcat total_wait_time (us): {before_pgc:?} -> {after_pgc:?}"
        )
    });
    checks.finish();
}

/// (cl_idle, cl_active, cl_waiting, sv_active, sv_idle) of app / scram_user in pgcat SHOW POOLS.
async fn pgcat_pool_counts(a: &tokio_postgres::Client) -> ([i64; 5], Table) {
    let t = show(a, "SHOW POOLS").await;
    let r = t.one(
        "pgcat SHOW POOLS",
        &[("database", DB), ("user", SCRAM_USER)],
    );
    (
        [
            t.int(r, "cl_idle"),
            t.int(r, "cl_active"),
            t.int(r, "cl_waiting"),
            t.int(r, "sv_active"),
            t.int(r, "sv_idle"),
        ],
        t,
    )
}

async fn wait_pool_counts(
    a: &tokio_postgres::Client,
    what: &str,
    check: impl Fn([i64; 5]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (c, t) = pgcat_pool_counts(a).await;
        if check(c) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: [cl_idle, cl_active, cl_waiting, sv_active, sv_idle] = {c:?}\n{}",
                t.dump()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_client_counts_follow_logins_queries_and_clean_or_abrupt_disconnects() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let pgc = admin(pooler.port, "pgcat").await;
    let pgb = admin(pooler.port, "pgbouncer").await;
    let (base, _) = pgcat_pool_counts(&pgc).await;
    assert_eq!(base[..4], [0, 0, 0, 0], "no clients yet: {base:?}");
    let pools_before = show(&pgb, "SHOW POOLS").await;

    // Failed logins (wrong password, unknown database) leave SHOW POOLS as it was.
    let e = RawConn::connect(pooler.port, SCRAM_USER, "wrong", DB).err();
    assert!(
        matches!(e, Some(LoginError::Server { .. })),
        "wrong password must fail: {e:?}"
    );
    let e = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, "random_db").err();
    assert!(
        matches!(e, Some(LoginError::Server { .. })),
        "unknown database must fail: {e:?}"
    );
    let (after_bad, t) = pgcat_pool_counts(&pgc).await;
    assert_eq!(
        after_bad,
        base,
        "failed logins changed pgcat SHOW POOLS:\n{}",
        t.dump()
    );
    let pools_after = show(&pgb, "SHOW POOLS").await;
    assert_eq!(
        pools_before.rows.len(),
        pools_after.rows.len(),
        "failed logins added pools:\n{}",
        pools_after.dump()
    );
    assert!(pools_after
        .rows_where(&[("database", "random_db")])
        .is_empty());

    // An idle client only counts in cl_idle; after one query its server is idle.
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "idle_one").await;
    wait_pool_counts(&pgc, "idle client", |c| {
        c[0] == base[0] + 1 && c[1] == 0 && c[2] == 0
    })
    .await;
    exec(&c, "SELECT 1").await;
    wait_pool_counts(&pgc, "after one query", |c| {
        c[0] == base[0] + 1 && c[1] == 0 && c[3] == 0 && c[4] >= 1
    })
    .await;
    // Clean disconnect.
    drop(c);
    wait_pool_counts(&pgc, "after a clean disconnect", |c| {
        c[0] == base[0] && c[1] == 0
    })
    .await;

    // Abrupt disconnect inside a transaction (socket closed, no Terminate).
    let mut raw = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    for sql in ["BEGIN", "SELECT 1"] {
        let r = raw.simple_query(sql).expect(sql);
        assert!(r.iter().all(|m| m.tag != b'E'), "{sql}: {r:?}");
    }
    wait_pool_counts(&pgc, "client inside a transaction", |c| {
        c[1] == 1 && c[3] == 1
    })
    .await;
    drop(raw);
    wait_pool_counts(
        &pgc,
        "after an abrupt disconnect inside a transaction",
        |c| c[0] == base[0] && c[1] == 0 && c[2] == 0 && c[3] == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_reports_application_name_and_per_client_counts() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "counted_client").await;
    let other = app_client(pooler.port, MD5_USER, MD5_PASS, "other_client").await;
    for i in 0..5 {
        exec(&c, &format!("SELECT {i}")).await;
    }
    exec(&other, "SELECT 1").await;
    let pgc = admin(pooler.port, "pgcat").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = show(&pgc, "SHOW CLIENTS").await;
        let r = t.one(
            "pgcat SHOW CLIENTS",
            &[("application_name", "counted_client")],
        );
        let ok = t.int(r, "query_count") >= 5 && t.int(r, "transaction_count") >= 5;
        if ok || Instant::now() > deadline {
            assert!(ok, "5 queries / 5 transactions expected:\n{}", t.dump());
            assert_eq!(t.get(r, "user"), SCRAM_USER);
            assert_eq!(t.get(r, "database"), DB);
            assert_eq!(t.get(r, "state"), "idle", "{}", t.dump());
            assert_eq!(t.int(r, "error_count"), 0, "{}", t.dump());
            assert!(t.int(r, "age_seconds") >= 0);
            let o = t.one(
                "pgcat SHOW CLIENTS",
                &[("application_name", "other_client")],
            );
            assert_eq!(t.get(o, "user"), MD5_USER);
            assert!(
                t.int(o, "query_count") <= 2,
                "other client's own count:\n{}",
                t.dump()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pgb = admin(pooler.port, "pgbouncer").await;
    let t = show(&pgb, "SHOW CLIENTS").await;
    let r = t.one(
        "pgbouncer SHOW CLIENTS",
        &[("application_name", "counted_client")],
    );
    assert_eq!(t.get(r, "user"), SCRAM_USER, "{}", t.dump());
    assert_eq!(t.get(r, "database"), DB, "{}", t.dump());
}
