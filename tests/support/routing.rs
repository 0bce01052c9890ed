//! What the routing test files (tests/routing_*.rs) share: the sharded pool `sharded_db` over
//! the shared cluster (tests/sql/setup.sql: shard0..2, each holding ONE hash partition of
//! `data`), and small simple-query helpers.

use std::sync::OnceLock;

use tokio_postgres::Client;

use super::{free_port, general_toml, rows, shared, sqlstate, Cluster, Pooler};

/// The pool name clients connect to, as in PgCat's sample config and suite.
pub const POOL: &str = "sharded_db";
/// Role and password created by tests/sql/setup.sql (and PgCat's own setup).
pub const SHARD_USER: &str = "sharding_user";
pub const SHARD_PASS: &str = "sharding_user";
/// Shards of `sharded_db` (`shard0..2`).
pub const SHARDS: usize = 3;

/// A file of the repository, as text.
pub fn read_repo_file(relative: &str) -> String {
    std::fs::read_to_string(super::repo_path(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// The shared cluster after `sql()` ran on the primary's database `db`, once per test binary
/// (`ready` marks it done), replayed on the replica; `what` names the fixture in failures.
pub fn shared_with_fixture(
    ready: &'static OnceLock<()>,
    db: &str,
    what: &str,
    sql: impl FnOnce() -> String,
) -> &'static Cluster {
    let cluster = shared();
    ready.get_or_init(|| {
        cluster
            .psql(&cluster.primary, db, &sql())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        cluster
            .wait_replicas_caught_up()
            .unwrap_or_else(|e| panic!("replica after {what}: {e}"));
    });
    cluster
}

/// The shared cluster with tests/sql/setup.sql applied once (shard0..2, role sharding_user),
/// replayed on the replica.
pub fn sharded_cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    shared_with_fixture(&READY, "postgres", "tests/sql/setup.sql", || {
        read_repo_file("tests/sql/setup.sql")
    })
}

/// A pgcat.toml (PgCat format) with pool `sharded_db`: 3 shards `shard0..2`, each on the
/// cluster's primary and replicas, pg_bigint_hash, query parser with read/write splitting;
/// `extra_pool` goes into the pool section; `users` are (name, password) with pool_size 5.
pub fn sharded_toml(
    cluster: &Cluster,
    port: u16,
    pool_mode: &str,
    extra_pool: &str,
    users: &[(&str, &str)],
) -> String {
    let mut toml = general_toml(port);
    toml.push_str(&format!(
        "\n[pools.{POOL}]\n\
         pool_mode = \"{pool_mode}\"\n\
         sharding_function = \"pg_bigint_hash\"\n\
         query_parser_enabled = true\n\
         query_parser_read_write_splitting = true\n\
         {extra_pool}\n"
    ));
    for (i, (user, pass)) in users.iter().enumerate() {
        toml.push_str(&format!(
            "\n[pools.{POOL}.users.{i}]\nusername = \"{user}\"\npassword = \"{pass}\"\npool_size = 5\n"
        ));
    }
    for shard in 0..SHARDS {
        toml.push_str(&format!(
            "\n[pools.{POOL}.shards.{shard}]\ndatabase = \"shard{shard}\"\nservers = {}\n",
            cluster.servers_toml()
        ));
    }
    toml
}

/// The default sharded pooler: transaction mode, user sharding_user.
pub fn sharded_pooler(cluster: &Cluster, extra_pool: &str) -> Pooler {
    Pooler::start(&sharded_toml(
        cluster,
        free_port(),
        "transaction",
        extra_pool,
        &[(SHARD_USER, SHARD_PASS)],
    ))
}

/// A tokio-postgres client of sharding_user on `sharded_db` through the pooler.
pub async fn connect_sharded(pooler: &Pooler) -> Client {
    pooler
        .connect(SHARD_USER, SHARD_PASS, POOL)
        .await
        .unwrap_or_else(|e| panic!("connect to {POOL} through the pooler: {e:?}"))
}

/// The single value of a simple query that returns one row of one column.
pub async fn value(client: &Client, sql: &str) -> String {
    let all = rows(client, sql).await;
    assert!(
        all.len() == 1 && all[0].len() == 1,
        "{sql}: expected one row of one column, got {all:?}"
    );
    all[0][0].clone()
}

/// Runs a simple statement that returns no rows (e.g. a SET extension); panics on error.
pub async fn exec(client: &Client, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// The (SQLSTATE, message) of an error the pooler or server sent; panics on success.
pub fn expect_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tokio_postgres::Error>,
) -> (String, String) {
    match result {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => {
            let code =
                sqlstate(&e).unwrap_or_else(|| panic!("{what}: error without SQLSTATE: {e:?}"));
            let message = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default();
            (code, message)
        }
    }
}

/// A transaction-mode pool `pool` (pg_bigint_hash) for sharding_user over databases
/// `<prefix>0..SHARDS-1` on the cluster's primary only, `extra` lines in its section.
pub fn primary_shards_pool(
    cluster: &Cluster,
    pool: &str,
    prefix: &str,
    extra: &str,
    pool_size: u32,
) -> String {
    let mut toml = format!(
        "\n[pools.{pool}]\npool_mode = \"transaction\"\nsharding_function = \"pg_bigint_hash\"\n\
         {extra}\n\
         [pools.{pool}.users.0]\nusername = \"{SHARD_USER}\"\npassword = \"{SHARD_PASS}\"\npool_size = {pool_size}\n"
    );
    for shard in 0..SHARDS {
        toml.push_str(&format!(
            "\n[pools.{pool}.shards.{shard}]\ndatabase = \"{prefix}{shard}\"\nservers = [[\"{}\", {}, \"primary\"]]\n",
            cluster.primary.host, cluster.primary.port
        ));
    }
    toml
}
