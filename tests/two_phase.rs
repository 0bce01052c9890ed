//! Issue 20: atomic cross-shard transactions. PostgreSQL judges: tp_shard0..2 each hold
//! one hash partition of `accounts`; a transaction that wrote on several shards is
//! committed on all of them or on none, and `pg_prepared_xacts` is empty once it is over —
//! also when a PREPARE fails (a deferred foreign key), and (with the `failpoints` feature)
//! when the pooler is killed at each step of the commit and started again.

mod support;

use std::sync::OnceLock;
#[cfg(feature = "failpoints")]
use std::time::Duration;

use pgcat_parser::hash::pg_bigint_hash;
use support::routing::{expect_error, SHARD_PASS, SHARD_USER};
#[cfg(feature = "failpoints")]
use support::wait_until;
use support::{free_port, general_toml, runtime, Cluster, Pooler};
use tokio_postgres::Client;

#[cfg(feature = "failpoints")]
use pgcat::localpg;

const SHARDS: usize = 3;
const POOL: &str = "tp";
const ACCOUNTS: i64 = 30;
/// Accounts of `bank` (the bank test's table) and their opening balance.
const BANK_ACCOUNTS: i64 = 60;
const BANK_START: i64 = 1000;

/// tp_shard0..2 (one partition of `accounts` each, balance 100), made once per binary.
fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let cluster = support::routing::sharded_cluster(); // creates sharding_user
    READY.get_or_init(|| {
        let sql: String = (0..SHARDS).map(shard_database).collect();
        cluster
            .psql(&cluster.primary, "postgres", &sql)
            .unwrap_or_else(|e| panic!("two-phase fixture: {e}"));
    });
    cluster
}

/// The SQL (psql, as the superuser in `postgres`) that makes database `tp_shard<shard>`.
fn shard_database(shard: usize) -> String {
    format!(
        "DROP DATABASE IF EXISTS tp_shard{shard};\n\
         CREATE DATABASE tp_shard{shard} OWNER {SHARD_USER};\n\
         \\c tp_shard{shard}\nSET ROLE {SHARD_USER};\n\
         CREATE TABLE accounts (id bigint, balance int) PARTITION BY HASH (id);\n\
         CREATE TABLE accounts_p{shard} PARTITION OF accounts FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
         INSERT INTO accounts SELECT i, 100 FROM generate_series(1, {ACCOUNTS}) i \
           WHERE pg_catalog.satisfies_hash_partition('accounts'::regclass, {SHARDS}, {shard}, i::bigint);\n\
         CREATE TABLE parents (id bigint PRIMARY KEY);\n\
         CREATE TABLE notes (id bigint, parent bigint REFERENCES parents DEFERRABLE INITIALLY DEFERRED);\n\
         CREATE TABLE bank (id bigint, balance int) PARTITION BY HASH (id);\n\
         CREATE TABLE bank_p{shard} PARTITION OF bank FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
         INSERT INTO bank SELECT i, {BANK_START} FROM generate_series(1, {BANK_ACCOUNTS}) i \
           WHERE pg_catalog.satisfies_hash_partition('bank'::regclass, {SHARDS}, {shard}, i::bigint);\n\
         CREATE TABLE bank_ledger (tid bigint, id bigint, delta int);\n\
         \\c postgres\n"
    )
}

/// Pool `tp` over tp_shard0..2 (primary only) with two-phase commit as `instance`, its
/// decision log in `log_dir`, metrics on `metrics_port`; statements with no shard run on
/// every shard, comment hints pick one.
fn toml(cluster: &Cluster, instance: &str, log_dir: &std::path::Path, metrics_port: u16) -> String {
    let mut toml = general_toml(free_port());
    toml = support::with_general(
        &toml,
        &format!(
            "instance_name = \"{instance}\"\ntwo_phase_commit_log = \"{}\"\n\
             enable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}",
            log_dir.join("decisions.log").display()
        ),
    );
    let extra = "query_parser_enabled = true\ndefault_shard = \"all\"\ntwo_phase_commit = true\n\
                 automatic_sharding_key = \"accounts.id\"\n\
                 shard_id_regex = '/\\* shard_id: (\\d+) \\*/'";
    toml.push_str(&support::routing::primary_shards_pool(
        cluster, POOL, "tp_shard", extra, 4,
    ));
    toml
}

async fn connect(pooler: &Pooler) -> Client {
    let client = pooler.connect(SHARD_USER, SHARD_PASS, POOL).await;
    client.unwrap_or_else(|e| panic!("connect to {POOL}: {e:?}\n{}", pooler.logs()))
}

/// `n` account ids, each on another shard than the ones before.
fn on_shards(n: usize, from: i64) -> Vec<i64> {
    let mut ids: Vec<i64> = Vec::new();
    for id in from..=ACCOUNTS {
        if !ids
            .iter()
            .any(|i| pg_bigint_hash(*i, SHARDS) == pg_bigint_hash(id, SHARDS))
        {
            ids.push(id);
        }
        if ids.len() == n {
            break;
        }
    }
    ids
}

/// Account `id`'s balance as its shard has it committed.
fn balance(cluster: &Cluster, id: i64) -> i64 {
    let db = format!("tp_shard{}", pg_bigint_hash(id, SHARDS));
    let sql = format!("SELECT balance FROM accounts WHERE id = {id}");
    let out = cluster.psql(&cluster.primary, &db, &sql).expect("psql");
    out.trim().parse().expect("a balance")
}

/// The prepared transactions of `instance` left on the shard databases.
fn prepared(cluster: &Cluster, instance: &str) -> Vec<String> {
    let sql = format!(
        "SELECT database || ' ' || gid FROM pg_prepared_xacts \
         WHERE database LIKE 'tp_shard%' AND gid LIKE 'pgcat\\_{instance}\\_%' ORDER BY 1"
    );
    let out = cluster
        .psql(&cluster.primary, "postgres", &sql)
        .expect("psql");
    out.lines().map(str::to_string).collect()
}

fn transfer(id: i64, delta: i64) -> String {
    format!("UPDATE accounts SET balance = balance + {delta} WHERE id = {id}")
}

#[test]
fn a_transaction_that_wrote_on_several_shards_commits_on_all_or_none() {
    let cluster = cluster();
    let dir = support::scratch_dir();
    let metrics_port = free_port();
    let pooler = Pooler::start(&toml(cluster, "tp_commit", &dir, metrics_port));
    let ids = on_shards(2, 1);
    let (a, b) = (ids[0], ids[1]);
    runtime().block_on(async {
        let client = connect(&pooler).await;
        let (a0, b0) = (balance(cluster, a), balance(cluster, b));
        // Committed on both shards.
        client.simple_query("BEGIN").await.expect("BEGIN");
        client.simple_query(&transfer(a, -10)).await.expect("a");
        client.simple_query(&transfer(b, 10)).await.expect("b");
        client.simple_query("COMMIT").await.expect("COMMIT");
        assert_eq!(
            (balance(cluster, a), balance(cluster, b)),
            (a0 - 10, b0 + 10)
        );
        assert_eq!(prepared(cluster, "tp_commit"), Vec::<String>::new());
        let log = std::fs::read_to_string(dir.join("decisions.log")).expect("the decision log");
        assert!(log.contains("commit pgcat_tp_commit_"), "{log}");
        // Rolled back on both.
        client.simple_query("BEGIN").await.expect("BEGIN");
        client.simple_query(&transfer(a, -7)).await.expect("a");
        client.simple_query(&transfer(b, 7)).await.expect("b");
        client.simple_query("ROLLBACK").await.expect("ROLLBACK");
        assert_eq!(
            (balance(cluster, a), balance(cluster, b)),
            (a0 - 10, b0 + 10)
        );

        // A PREPARE that fails (a deferred foreign key checked at PREPARE on b's shard)
        // rolls back every shard: a's change is gone too.
        let b_shard = pg_bigint_hash(b, SHARDS);
        client.simple_query("BEGIN").await.expect("BEGIN");
        client.simple_query(&transfer(a, -3)).await.expect("a");
        let orphan = format!("/* shard_id: {b_shard} */ INSERT INTO notes VALUES (1, 999)");
        client
            .simple_query(&orphan)
            .await
            .expect("deferred: no error yet");
        let (code, message) = expect_error("COMMIT", client.simple_query("COMMIT").await);
        assert_eq!(code, "23503", "{message}");
        assert_eq!(balance(cluster, a), a0 - 10, "a's update rolled back");
        assert_eq!(prepared(cluster, "tp_commit"), Vec::<String>::new());
        // The client's next transaction runs.
        let rows = client.simple_query("SELECT count(*) FROM notes").await;
        assert!(rows.is_ok(), "{rows:?}");

        // A statement with no shard that writes on every shard commits in two phases too.
        client
            .simple_query(&format!(
                "UPDATE accounts SET balance = balance + 1 WHERE id IN ({a}, {b})"
            ))
            .await
            .expect("on every shard");
        assert_eq!(
            (balance(cluster, a), balance(cluster, b)),
            (a0 - 9, b0 + 11)
        );
        assert_eq!(prepared(cluster, "tp_commit"), Vec::<String>::new());
        let log = std::fs::read_to_string(dir.join("decisions.log")).expect("the decision log");
        assert_eq!(log.matches("commit ").count(), 2, "{log}");
        assert_eq!(log.matches("done ").count(), 2, "{log}");

        // Nothing is left in doubt; Prometheus counts each shard's part: 2 prepared and
        // committed, then the failed PREPARE's (1 prepared and rolled back when a's shard
        // came first), then 3 prepared and committed.
        let admin = support::connect(&format!(
            "host=127.0.0.1 port={} user=admin password=admin dbname=pgcat",
            pooler.port
        ))
        .await
        .expect("admin console");
        let listed = admin.simple_query("SHOW TRANSACTIONS").await.expect("SHOW");
        let rows = listed
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(rows, 0, "no transaction in doubt");
        let first = u64::from(pg_bigint_hash(a, SHARDS) < b_shard);
        let metrics = support::scrape(metrics_port);
        for (name, want) in [
            ("prepared", 5 + first),
            ("committed", 5),
            ("rolled_back", first),
            ("recovered", 0),
        ] {
            let line = format!("pgcat_two_phase_{name}_total {want}\n");
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
    });
}

/// Kills the pooler (a fault point armed) during a two-shard commit, starts it again and
/// waits until the shards agree: committed on both when the decision was logged, rolled
/// back on both otherwise, no prepared transaction left.
#[cfg(feature = "failpoints")]
#[test]
fn a_pooler_killed_during_the_commit_finishes_it_when_it_starts_again() {
    let cluster = cluster();
    let ids = on_shards(2, 10);
    let (a, b) = (ids[0], ids[1]);
    for (fault, in_doubt, committed) in [
        ("after_prepare", 1, false),
        ("after_decision", 2, true),
        ("after_commit_prepared", 1, true),
    ] {
        let dir = support::scratch_dir();
        let toml = toml(cluster, "tp_crash", &dir, free_port());
        let (a0, b0) = (balance(cluster, a), balance(cluster, b));
        let mut pooler = Pooler::start_with_env(&toml, &[("PGCAT_FAULT", fault)]);
        runtime().block_on(async {
            let client = connect(&pooler).await;
            client.simple_query("BEGIN").await.expect("BEGIN");
            client.simple_query(&transfer(a, -5)).await.expect("a");
            client.simple_query(&transfer(b, 5)).await.expect("b");
            let commit = client.simple_query("COMMIT").await;
            assert!(commit.is_err(), "{fault}: the pooler died during COMMIT");
        });
        assert!(
            pooler.wait_exit(Duration::from_secs(10)).is_some(),
            "{fault}: the pooler was killed"
        );
        let left = prepared(cluster, "tp_crash");
        assert_eq!(left.len(), in_doubt, "{fault}: {left:?}");
        let pooler = Pooler::start(&toml);
        let resolved = wait_until(Duration::from_secs(15), || {
            prepared(cluster, "tp_crash").is_empty()
        });
        assert!(resolved, "{fault}: still prepared\n{}", pooler.logs());
        let want = if committed {
            (a0 - 5, b0 + 5)
        } else {
            (a0, b0)
        };
        assert_eq!((balance(cluster, a), balance(cluster, b)), want, "{fault}");
    }
}

/// Shard 2 on a PostgreSQL of its own (which a test may stop and start): the cluster, and
/// `toml` with shard 2 moved there.
#[cfg(feature = "failpoints")]
fn shard2_elsewhere(cluster: &Cluster, toml: &str) -> (localpg::Cluster, String) {
    let other = localpg::Cluster::start(&localpg::ClusterSpec {
        replicas: 0,
        max_connections: 50,
    })
    .expect("a second PostgreSQL");
    let role = format!("CREATE ROLE {SHARD_USER} LOGIN PASSWORD '{SHARD_PASS}';\n");
    other
        .psql(&other.primary, "postgres", &(role + &shard_database(2)))
        .expect("shard 2's database");
    let main = format!(
        "\"tp_shard2\"\nservers = [[\"{}\", {}, ",
        cluster.primary.host, cluster.primary.port
    );
    let moved = format!(
        "\"tp_shard2\"\nservers = [[\"{}\", {}, ",
        other.primary.host, other.primary.port
    );
    assert!(toml.contains(&main), "{toml}");
    (other, toml.replace(&main, &moved))
}

/// A shard that is down when its COMMIT PREPARED is due gets it when it is back, from
/// the running pooler (no restart); and a shard whose max_prepared_transactions is 0
/// makes the two-phase commit fail with an error naming the setting, never hang.
#[cfg(feature = "failpoints")]
#[test]
fn a_shard_down_during_commit_prepared_gets_it_when_it_is_back() {
    let cluster = cluster();
    let dir = support::scratch_dir();
    let (other, toml) = shard2_elsewhere(cluster, &toml(cluster, "tp_down", &dir, free_port()));
    let pooler = Pooler::start_with_env(&toml, &[("PGCAT_FAULT", "after_decision=pause:3000")]);
    let a = (20..=ACCOUNTS)
        .find(|id| pg_bigint_hash(*id, SHARDS) != 2)
        .expect("a");
    let b = (20..=ACCOUNTS)
        .find(|id| pg_bigint_hash(*id, SHARDS) == 2)
        .expect("b");
    let on_other = |sql: &str| {
        other
            .psql(&other.primary, "tp_shard2", sql)
            .expect("psql on shard 2")
    };
    let a0 = balance(cluster, a);
    let b0: i64 = on_other(&format!("SELECT balance FROM accounts WHERE id = {b}"))
        .parse()
        .expect("b");
    runtime().block_on(async {
        let client = connect(&pooler).await;
        client.simple_query("BEGIN").await.expect("BEGIN");
        client.simple_query(&transfer(a, -4)).await.expect("a");
        client.simple_query(&transfer(b, 4)).await.expect("b");
        let committing =
            tokio::spawn(async move { client.simple_query("COMMIT").await.map(|_| ()) });
        // Both prepared, the decision logged: shard 2 goes down before its COMMIT PREPARED.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        other.stop_node(&other.primary);
        let committed = committing.await.expect("task");
        assert!(
            committed.is_ok(),
            "the decision is logged: COMMIT succeeds: {committed:?}\n{}",
            pooler.logs()
        );
    });
    assert_eq!(
        balance(cluster, a),
        a0 - 4,
        "committed where the shard was up"
    );
    other.start_node(&other.primary);
    let applied = wait_until(Duration::from_secs(30), || {
        on_other("SELECT count(*) FROM pg_prepared_xacts") == "0"
    });
    assert!(
        applied,
        "shard 2 still has its part prepared\n{}",
        pooler.logs()
    );
    assert_eq!(
        on_other(&format!("SELECT balance FROM accounts WHERE id = {b}")),
        (b0 + 4).to_string(),
        "committed on shard 2 once it was back"
    );

    // max_prepared_transactions = 0 on shard 2: the first two-phase commit fails, naming
    // the setting; the pooler warned about it.
    on_other("ALTER SYSTEM SET max_prepared_transactions = 0");
    other.stop_node(&other.primary);
    other.start_node(&other.primary);
    runtime().block_on(async {
        let client = connect(&pooler).await;
        client.simple_query("BEGIN").await.expect("BEGIN");
        client.simple_query(&transfer(a, -1)).await.expect("a");
        client.simple_query(&transfer(b, 1)).await.expect("b");
        let error = client
            .simple_query("COMMIT")
            .await
            .expect_err("PREPARE refused");
        let db = error.as_db_error().expect("an ErrorResponse");
        assert_eq!(db.code().code(), "55000", "{db:?}");
        assert!(
            db.hint()
                .is_some_and(|h| h.contains("max_prepared_transactions")),
            "{db:?}"
        );
    });
    assert_eq!(balance(cluster, a), a0 - 4, "rolled back on every shard");
    let warned = wait_until(Duration::from_secs(10), || {
        pooler.logs().contains("max_prepared_transactions is 0")
    });
    assert!(warned, "{}", pooler.logs());
}

#[cfg(feature = "failpoints")]
#[path = "two_phase/bank.rs"]
mod bank;
