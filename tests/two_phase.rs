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

const SHARDS: usize = 3;
const POOL: &str = "tp";
const ACCOUNTS: i64 = 30;

/// tp_shard0..2 (one partition of `accounts` each, balance 100), made once per binary.
fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let cluster = support::routing::sharded_cluster(); // creates sharding_user
    READY.get_or_init(|| {
        let mut sql = String::new();
        for shard in 0..SHARDS {
            sql.push_str(&format!(
                "DROP DATABASE IF EXISTS tp_shard{shard};\n\
                 CREATE DATABASE tp_shard{shard} OWNER {SHARD_USER};\n\
                 \\c tp_shard{shard}\nSET ROLE {SHARD_USER};\n\
                 CREATE TABLE accounts (id bigint, balance int) PARTITION BY HASH (id);\n\
                 CREATE TABLE accounts_p{shard} PARTITION OF accounts FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 INSERT INTO accounts SELECT i, 100 FROM generate_series(1, {ACCOUNTS}) i \
                   WHERE pg_catalog.satisfies_hash_partition('accounts'::regclass, {SHARDS}, {shard}, i::bigint);\n\
                 CREATE TABLE parents (id bigint PRIMARY KEY);\n\
                 CREATE TABLE notes (id bigint, parent bigint REFERENCES parents DEFERRABLE INITIALLY DEFERRED);\n\
                 \\c postgres\n"
            ));
        }
        cluster
            .psql(&cluster.primary, "postgres", &sql)
            .unwrap_or_else(|e| panic!("two-phase fixture: {e}"));
    });
    cluster
}

/// Pool `tp` over tp_shard0..2 (primary only) with two-phase commit as `instance`, its
/// decision log in `log_dir`; statements with no shard run on every shard, comment hints
/// pick one.
fn toml(cluster: &Cluster, instance: &str, log_dir: &std::path::Path) -> String {
    let mut toml = general_toml(free_port());
    toml = support::with_general(
        &toml,
        &format!(
            "instance_name = \"{instance}\"\ntwo_phase_commit_log = \"{}\"",
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
    let pooler = Pooler::start(&toml(cluster, "tp_commit", &dir));
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
        let toml = toml(cluster, "tp_crash", &dir);
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
