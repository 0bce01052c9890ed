//! Issue 5, "Must show" 2: RELOAD (on either admin database) and SIGHUP after changing
//! pool_size show the new size in SHOW DATABASES, the new size is in force, and connected
//! clients keep working; a broken file keeps the old config and the reply (and the log) says
//! why.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::admin::{
    admin, all_are, app_client, app_config, exec, raw_admin, run, scalar, show, within, ADMIN_DBS,
};
use support::{
    free_port, shared, tail, Checks, Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};

/// The same config with every user's pool_size changed.
fn resized(toml: &str, from: u32, to: u32) -> String {
    let from_line = format!("pool_size = {from}\n");
    assert!(toml.contains(&from_line), "{toml}");
    toml.replace(&from_line, &format!("pool_size = {to}\n"))
}

/// A config that is valid TOML but invalid: `default_role = "leader"` (and a pool_size that must
/// not be applied).
fn broken_default_role(toml: &str, from: u32, to: u32) -> String {
    let t = resized(toml, from, to);
    assert!(t.contains("default_role = \"primary\""), "{t}");
    t.replace("default_role = \"primary\"", "default_role = \"leader\"")
}

/// A config that is not TOML at all (and a pool_size that must not be applied).
fn broken_syntax(toml: &str, from: u32, to: u32) -> String {
    let mut t = resized(toml, from, to);
    t.push_str("\n[pools.app.users.0\nusername = = \n");
    t
}

/// pool_size shown for pool app in SHOW DATABASES: every row of database `app` on the
/// pgbouncer admin database, then on the pgcat one. (The row layout of the pgbouncer database
/// is checked in the SHOW test; here only the values matter.)
async fn shown_pool_sizes(port: u16) -> (Vec<i64>, Vec<i64>) {
    let mut out = Vec::new();
    for db in ADMIN_DBS {
        let a = admin(port, db).await;
        let t = show(&a, "SHOW DATABASES").await;
        let rows = t.rows_where(&[("database", DB)]);
        assert!(
            !rows.is_empty(),
            "{db} SHOW DATABASES has no row for {DB}:\n{}",
            t.dump()
        );
        out.push(rows.into_iter().map(|r| t.int(r, "pool_size")).collect());
    }
    let pgc = out.pop().unwrap();
    (out.pop().unwrap(), pgc)
}

async fn wait_pool_size(port: u16, size: i64, limit: Duration) -> (Vec<i64>, Vec<i64>) {
    let deadline = Instant::now() + limit;
    loop {
        let s = shown_pool_sizes(port).await;
        if all_are(&s, size) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` clients of scram_user each open a transaction at the same time; their backend pids.
async fn concurrent_transactions(port: u16, n: usize) -> Vec<String> {
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(app_client(port, SCRAM_USER, SCRAM_PASS, &format!("conc{i}")).await);
    }
    let mut pids = Vec::new();
    for c in &clients {
        exec(c, "BEGIN").await;
        pids.push(scalar(c, "SELECT pg_backend_pid()").await);
    }
    for c in &clients {
        exec(c, "COMMIT").await;
    }
    pids
}

async fn reload_scenario(admin_db: &str) {
    let cluster = shared();
    let port = free_port();
    let toml = app_config(cluster, port, 1);
    let pooler = Pooler::start(&toml);
    let in_txn = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "in_txn").await;
    let idle = app_client(pooler.port, MD5_USER, MD5_PASS, "idle").await;
    exec(&idle, "SELECT 1").await;
    exec(&in_txn, "BEGIN").await;
    assert_eq!(scalar(&in_txn, "SELECT 1").await, "1");
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all_are(&s, 1), "pool_size 1 before RELOAD: {s:?}");

    std::fs::write(&pooler.config_path, resized(&toml, 1, 3)).expect("rewrite config");
    let port = pooler.port;
    let db = admin_db.to_owned();
    let r = tokio::task::spawn_blocking(move || {
        let mut a = raw_admin(port, &db);
        run(&mut a, "RELOAD")
    })
    .await
    .expect("RELOAD task");
    assert!(
        r.error.is_none(),
        "RELOAD on {admin_db}: {r:?}\n{}",
        tail(&pooler.logs(), 30)
    );
    assert_eq!(r.tags, vec!["RELOAD".to_owned()], "RELOAD reply: {r:?}");

    let s = wait_pool_size(pooler.port, 3, Duration::from_secs(5)).await;
    assert!(
        all_are(&s, 3),
        "SHOW DATABASES pool_size after RELOAD (pgbouncer rows, pgcat rows): {s:?}"
    );
    // Connected clients keep working: the open transaction finishes, the idle one queries.
    assert_eq!(scalar(&in_txn, "SELECT 2").await, "2");
    exec(&in_txn, "COMMIT").await;
    assert_eq!(scalar(&in_txn, "SELECT 3").await, "3");
    assert_eq!(scalar(&idle, "SELECT 4").await, "4");
    // The new size is in force: three transactions at once on three servers.
    let pids = within(
        Duration::from_secs(15),
        "3 concurrent transactions with pool_size 3",
        concurrent_transactions(pooler.port, 3),
    )
    .await;
    let distinct: HashSet<_> = pids.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "three servers at once after RELOAD: {pids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_pgbouncer_db_applies_new_pool_size_and_clients_keep_working() {
    reload_scenario("pgbouncer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_pgcat_db_applies_new_pool_size_and_clients_keep_working() {
    reload_scenario("pgcat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_broken_file_keeps_the_old_config_and_says_why() {
    let cluster = shared();
    let toml = app_config(cluster, free_port(), 2);
    let pooler = Pooler::start(&toml);
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "survivor").await;
    exec(&c, "SELECT 1").await;
    let port = pooler.port;
    let reload = move || {
        let mut a = raw_admin(port, "pgbouncer");
        run(&mut a, "RELOAD")
    };

    // Valid TOML, invalid value: the reply names the key.
    std::fs::write(&pooler.config_path, broken_default_role(&toml, 2, 5)).expect("write");
    let r = tokio::task::spawn_blocking(reload).await.expect("task");
    let said = r.error.is_some() || !r.notices.is_empty();
    assert!(
        said,
        "RELOAD of an invalid file must answer an error or notice: {r:?}"
    );
    assert!(
        r.text().contains("default_role"),
        "RELOAD reply must name the key (default_role): {r:?}"
    );
    let mut checks = Checks::new();
    let logged = support::wait_until(Duration::from_secs(5), || {
        pooler.logs().contains("default_role")
    });
    let log_tail = tail(&pooler.logs(), 30);
    checks.run("log after a refused admin RELOAD", || {
        assert!(
            logged,
            "the log must name the key (default_role):\n{log_tail}"
        )
    });
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all_are(&s, 2), "old config kept: {s:?}");
    assert_eq!(scalar(&c, "SELECT 2").await, "2");

    // Not TOML at all.
    std::fs::write(&pooler.config_path, broken_syntax(&toml, 2, 6)).expect("write");
    let r = tokio::task::spawn_blocking(reload).await.expect("task");
    assert!(
        r.error.is_some() || !r.notices.is_empty(),
        "RELOAD of a file that is not TOML must answer an error or notice: {r:?}"
    );
    assert!(!r.text().trim().is_empty(), "and say why: {r:?}");
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all_are(&s, 2), "old config kept: {s:?}");
    assert_eq!(scalar(&c, "SELECT 3").await, "3");
    let fresh = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "fresh").await;
    assert_eq!(scalar(&fresh, "SELECT 4").await, "4");

    // A good file again reloads fine.
    std::fs::write(&pooler.config_path, resized(&toml, 2, 4)).expect("write");
    let r = tokio::task::spawn_blocking(reload).await.expect("task");
    assert!(r.error.is_none(), "RELOAD of a fixed file: {r:?}");
    let s = wait_pool_size(pooler.port, 4, Duration::from_secs(5)).await;
    assert!(all_are(&s, 4), "{s:?}");
    assert_eq!(scalar(&c, "SELECT 5").await, "5");
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_like_reload_and_a_broken_file_keeps_the_old_config() {
    let cluster = shared();
    let toml = app_config(cluster, free_port(), 1);
    let mut pooler = Pooler::start(&toml);
    let in_txn = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "in_txn").await;
    exec(&in_txn, "BEGIN").await;
    exec(&in_txn, "SELECT 1").await;

    std::fs::write(&pooler.config_path, resized(&toml, 1, 3)).expect("write");
    pooler.signal(libc::SIGHUP);
    let s = wait_pool_size(pooler.port, 3, Duration::from_secs(5)).await;
    assert!(
        all_are(&s, 3),
        "SHOW DATABASES pool_size after SIGHUP: {s:?}"
    );
    assert_eq!(scalar(&in_txn, "SELECT 2").await, "2");
    exec(&in_txn, "COMMIT").await;
    let pids = within(
        Duration::from_secs(15),
        "3 concurrent transactions after SIGHUP",
        concurrent_transactions(pooler.port, 3),
    )
    .await;
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");

    let before = pooler.logs().len();
    std::fs::write(&pooler.config_path, broken_default_role(&toml, 1, 7)).expect("write");
    pooler.signal(libc::SIGHUP);
    assert!(
        support::wait_until(Duration::from_secs(5), || pooler.logs()[before..]
            .contains("default_role")),
        "SIGHUP with an invalid file must log the key:\n{}",
        tail(&pooler.logs(), 30)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all_are(&s, 3), "old config kept: {s:?}");
    assert_eq!(scalar(&in_txn, "SELECT 3").await, "3");
    assert!(pooler.running(), "a broken reload must not stop the pooler");
}
