//! Issue 21, "Must show": PgCat's own example configuration (fixtures/pgcat-upstream/
//! pgcat.toml, unchanged but for its listen address, ports and server ports pointed at the
//! test cluster) runs: no "not implemented" warning, every pool and user logs in, the
//! `intercept` plugin answers PgCat's sample queries as configured (the pool's own
//! intercepts in `sharded_db`, the global ones in `simple_db`), its `prewarmer` runs
//! `pg_prewarm` on each new server connection, and anything else reaches PostgreSQL.

mod support;

use std::sync::OnceLock;

use support::routing::{read_repo_file, sharded_cluster};
use support::{free_port, runtime, Cluster, Pooler};

/// What the sample needs beyond tests/sql/setup.sql: its other users, `some_db`, and
/// `pg_prewarm` with a `pgbench_accounts` table in each shard (its prewarm query).
fn prepared_cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let cluster = sharded_cluster();
    READY.get_or_init(|| {
        let node = &cluster.primary;
        let run = |db: &str, sql: &str| {
            (cluster.psql(node, db, sql)).unwrap_or_else(|e| panic!("{db}: {sql}: {e}"))
        };
        run(
            "postgres",
            "DROP DATABASE IF EXISTS some_db;\n\
             DROP ROLE IF EXISTS other_user; DROP ROLE IF EXISTS simple_user;\n\
             CREATE ROLE other_user LOGIN PASSWORD 'other_user';\n\
             CREATE ROLE simple_user LOGIN PASSWORD 'simple_user';\n\
             CREATE DATABASE some_db OWNER simple_user;",
        );
        for shard in ["shard0", "shard1", "shard2"] {
            run(
                shard,
                "CREATE EXTENSION IF NOT EXISTS pg_prewarm;\n\
                 CREATE TABLE IF NOT EXISTS pgbench_accounts (aid int PRIMARY KEY);\n\
                 GRANT CONNECT ON DATABASE shard0, shard1, shard2 TO other_user;\n\
                 GRANT SELECT ON pgbench_accounts TO PUBLIC;",
            );
        }
        cluster.wait_replicas_caught_up().expect("replica");
    });
    cluster
}

/// The sample with its hosts and ports pointed at `cluster` (and free local ports).
fn sample_for(cluster: &Cluster, port: u16, metrics_port: u16) -> String {
    let primary = cluster.primary.port;
    let replica = cluster.replicas[0].port;
    let text = read_repo_file("fixtures/pgcat-upstream/pgcat.toml")
        .replace("host = \"0.0.0.0\"", "host = \"127.0.0.1\"")
        .replace("\nport = 6432", &format!("\nport = {port}"))
        .replace(
            "prometheus_exporter_port = 9930",
            &format!("prometheus_exporter_port = {metrics_port}"),
        );
    let servers = regex::Regex::new(r#""(127\.0\.0\.1|localhost)", 5432"#).unwrap();
    servers
        .replace_all(&text, |c: &regex::Captures| match &c[1] {
            "localhost" => format!("\"localhost\", {replica}"),
            host => format!("\"{host}\", {primary}"),
        })
        .into_owned()
}

#[test]
fn pgcat_upstream_example_config_runs_and_answers_its_intercepts() {
    let cluster = prepared_cluster();
    let sample = sample_for(cluster, free_port(), free_port());
    let pooler = Pooler::start(&sample);
    runtime().block_on(async {
        for (user, database, server_db) in [
            ("sharding_user", "sharded_db", "shard0"),
            ("other_user", "sharded_db", "shard0"),
            ("simple_user", "simple_db", "some_db"),
        ] {
            let client = pooler
                .connect(user, user, database)
                .await
                .unwrap_or_else(|e| panic!("{user}@{database}: {e:?}\n{}", pooler.logs()));
            let answer = |sql: &'static str| {
                let client = &client;
                async move { support::texts(&client.simple_query(sql).await.expect(sql)) }
            };
            assert_eq!(
                answer("select current_database() as a, current_schemas(false) as b").await,
                [[database, "{public}"]],
                "{user}@{database}"
            );
            assert_eq!(
                answer("select current_database(), current_schema(), current_user").await,
                [[database, "public", user]],
                "{user}@{database}"
            );
            // Not an intercept: PostgreSQL answers, from the shard's database.
            let real = answer("SELECT current_database() /* shard_id: 0 */").await;
            assert_eq!(real, [[server_db]], "{user}@{database}");
        }
    });
    let logs = pooler.logs();
    assert!(!logs.contains("not implemented"), "{logs}");
    assert!(!logs.contains("prewarmer query failed"), "{logs}");
}
