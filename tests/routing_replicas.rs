//! Issue 4, "Must show" 3 and 6: read/write splitting with a real streaming replica (simple
//! and extended protocol), and load balancing (`random`, `loc`) over two replicas; `SET
//! SERVER ROLE` and `SET PRIMARY READS` over three servers. `pg_is_in_recovery()` /
//! `inet_server_port()` say which server answered.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use support::routing::{exec, shared_with_fixture, value};
use support::{
    free_port, general_toml, rows, run_client, try_rows, Cluster, Pooler, DB, SCRAM_PASS,
    SCRAM_USER,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage};

/// PostgreSQL-valid SQL that sqlparser cannot parse (checked by `unparsable_premise`): a
/// read, which the router must still send to the primary.
const UNPARSABLE_READ: &str =
    "SELECT inet_server_port() FROM ROWS FROM (generate_series(1, 1)) AS t(a)";
const UNPARSABLE_READ_2: &str = "SELECT inet_server_port(), COLLATION FOR ('a')";
const UNPARSABLE_READ_EXT: &str =
    "SELECT inet_server_port() FROM ROWS FROM (generate_series(1, $1::int)) AS t(a)";

/// The shared cluster with the read/write splitting fixtures in database `app` (table rw_t
/// with row id 1, sequence rw_seq, owned by scram_user), replayed on the replica.
fn rw_cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    shared_with_fixture(&READY, DB, "rw fixtures", || {
        format!(
            "SET ROLE {SCRAM_USER};\n\
             CREATE TABLE rw_t (id serial PRIMARY KEY, v text);\n\
             INSERT INTO rw_t (id, v) VALUES (1, 'one');\n\
             SELECT setval('rw_t_id_seq', 1000);\n\
             CREATE SEQUENCE rw_seq;\n"
        )
    })
}

/// A pgcat.toml with pool `app` (database app) on the primary and replicas for scram_user,
/// query parser with read/write splitting; `extra_pool` goes into the pool section.
fn app_toml(cluster: &Cluster, port: u16, extra_pool: &str, pool_size: u32) -> String {
    let mut toml = general_toml(port);
    toml.push_str(&format!(
        "\n[pools.{DB}]\n\
         pool_mode = \"transaction\"\n\
         query_parser_enabled = true\n\
         query_parser_read_write_splitting = true\n\
         {extra_pool}\n\
         \n[pools.{DB}.users.0]\n\
         username = \"{SCRAM_USER}\"\n\
         password = \"{SCRAM_PASS}\"\n\
         pool_size = {pool_size}\n\
         \n[pools.{DB}.shards.0]\n\
         database = \"{DB}\"\n\
         servers = {}\n",
        cluster.servers_toml()
    ));
    toml
}

// ---------------------------------------------------------------------------------------------
// 3. Read/write splitting with a real streaming replica
// ---------------------------------------------------------------------------------------------

/// The premise of the unparsable-SQL checks: sqlparser rejects these (PostgreSQL runs them).
#[test]
fn unparsable_premise() {
    for sql in [UNPARSABLE_READ, UNPARSABLE_READ_2, UNPARSABLE_READ_EXT] {
        let c = pgcat_parser::classify(sql, None);
        assert!(!c.parsed, "{sql:?} must be unparsable for sqlparser: {c:?}");
    }
}

/// Must show 3, simple protocol: plain reads on the replica; writes, DDL, SELECT ... FOR
/// UPDATE, nextval(), data-modifying CTEs, SELECT INTO, unparsable SQL, multi-statement
/// queries with a write and read-write transactions on the primary; READ ONLY transactions on
/// the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_splitting_simple_protocol() {
    let cluster = rw_cluster();
    let primary = cluster.primary.port.to_string();
    let replica = cluster.replicas[0].port.to_string();
    let pooler = Pooler::start(&app_toml(cluster, free_port(), "", 5));
    let client = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("connect");

    for _ in 0..5 {
        assert_eq!(
            value(&client, "SELECT pg_is_in_recovery()").await,
            "t",
            "plain read"
        );
        assert_eq!(
            value(&client, "SELECT inet_server_port()").await,
            replica,
            "plain read"
        );
    }
    assert_eq!(
        value(&client, "select inet_server_port() from rw_t where id = 1").await,
        replica,
        "read of a table"
    );

    let on_primary = [
        (
            "INSERT",
            "INSERT INTO rw_t (v) VALUES ('simple') RETURNING inet_server_port()",
        ),
        (
            "UPDATE",
            "UPDATE rw_t SET v = 'one' WHERE id = 1 RETURNING inet_server_port()",
        ),
        (
            "DELETE",
            "DELETE FROM rw_t WHERE v = 'nothing' RETURNING inet_server_port()",
        ),
        (
            "SELECT FOR UPDATE",
            "SELECT inet_server_port() FROM rw_t WHERE id = 1 FOR UPDATE",
        ),
        (
            "SELECT FOR SHARE",
            "SELECT inet_server_port() FROM rw_t WHERE id = 1 FOR SHARE",
        ),
        (
            "nextval",
            "SELECT inet_server_port() + 0 * nextval('rw_seq')",
        ),
        (
            "data-modifying CTE",
            "WITH w AS (INSERT INTO rw_t (v) VALUES ('cte') RETURNING id) \
             SELECT inet_server_port() FROM w",
        ),
        ("unparsable read (ROWS FROM)", UNPARSABLE_READ),
        ("unparsable read (COLLATION FOR)", UNPARSABLE_READ_2),
    ];
    for (what, sql) in on_primary {
        match try_rows(&client, sql).await {
            Ok(rows) => {
                // DELETE of nothing returns no row; it still must not fail on the replica.
                for row in &rows {
                    assert_eq!(row[0], primary, "{what}: {sql}");
                }
                if what != "DELETE" {
                    assert_eq!(rows.len(), 1, "{what}: {sql}: {rows:?}");
                }
            }
            Err(e) => panic!("{what} must run on the primary: {sql}: {e:?}"),
        }
    }

    // DDL and SELECT INTO: would fail with 25006 on the replica.
    for sql in [
        "CREATE TABLE rw_ddl_simple (a int)",
        "ALTER TABLE rw_ddl_simple ADD COLUMN b int",
        "SELECT inet_server_port() AS port INTO rw_into_simple",
        "DROP TABLE rw_ddl_simple",
    ] {
        exec(&client, sql).await;
    }
    // The SELECT INTO ran on the primary: its row says so.
    assert_eq!(
        value(&client, "SELECT port FROM rw_into_simple FOR UPDATE").await,
        primary,
        "SELECT INTO ran on the primary"
    );
    exec(&client, "DROP TABLE rw_into_simple").await;

    // A multi-statement query with a write goes to the primary as a whole.
    let multi = rows(
        &client,
        "SELECT inet_server_port(); INSERT INTO rw_t (v) VALUES ('multi') RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(
        multi,
        vec![vec![primary.clone()], vec![primary.clone()]],
        "multi-statement query with a write"
    );

    // A read-write transaction: every statement on the primary, reads included.
    exec(&client, "BEGIN").await;
    assert_eq!(
        value(&client, "SELECT inet_server_port()").await,
        primary,
        "read in BEGIN"
    );
    assert_eq!(
        value(
            &client,
            "INSERT INTO rw_t (v) VALUES ('txn') RETURNING inet_server_port()"
        )
        .await,
        primary,
        "write in BEGIN"
    );
    assert_eq!(value(&client, "SELECT pg_is_in_recovery()").await, "f");
    exec(&client, "COMMIT").await;
    exec(&client, "START TRANSACTION").await;
    assert_eq!(
        value(&client, "SELECT inet_server_port()").await,
        primary,
        "read in START TRANSACTION"
    );
    exec(&client, "COMMIT").await;

    // A read-only transaction may use the replica.
    exec(&client, "BEGIN READ ONLY").await;
    assert_eq!(
        value(&client, "SELECT inet_server_port()").await,
        replica,
        "BEGIN READ ONLY"
    );
    exec(&client, "COMMIT").await;

    // And afterwards plain reads are back on the replica.
    assert_eq!(
        value(&client, "SELECT inet_server_port()").await,
        replica,
        "read after"
    );

    // psql too (simple protocol, one statement per -c).
    let conninfo = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} dbname={DB}",
        pooler.port
    );
    let out = run_client(
        cluster,
        "psql",
        SCRAM_PASS,
        &[
            &conninfo,
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT inet_server_port()",
            "-c",
            "INSERT INTO rw_t (v) VALUES ('psql') RETURNING inet_server_port()",
            "-c",
            "SELECT inet_server_port() + 0 * nextval('rw_seq')",
            "-c",
            "SELECT pg_is_in_recovery()",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{replica}\n{primary}\n{primary}\nt"),
        "psql: read, insert, nextval, read"
    );
}

/// Must show 3, extended protocol (tokio-postgres, parameters): the same split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_splitting_extended_protocol() {
    let cluster = rw_cluster();
    let primary = cluster.primary.port as i32;
    let replica = cluster.replicas[0].port as i32;
    let pooler = Pooler::start(&app_toml(cluster, free_port(), "", 5));
    let client = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("connect");

    for i in 0..5i32 {
        assert_eq!(
            port_of(&client, "SELECT inet_server_port() + 0 * $1::int", &[&i]).await,
            replica,
            "plain read with a parameter"
        );
    }
    let read: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("read")
        .get(0);
    assert!(read, "plain read: pg_is_in_recovery()");

    let cases: [(&str, &str, &[&(dyn ToSql + Sync)]); 6] = [
        (
            "INSERT",
            "INSERT INTO rw_t (v) VALUES ($1) RETURNING inet_server_port()",
            &[&"extended"],
        ),
        (
            "UPDATE",
            "UPDATE rw_t SET v = $1 WHERE id = 1 RETURNING inet_server_port()",
            &[&"one"],
        ),
        (
            "SELECT FOR UPDATE",
            "SELECT inet_server_port() FROM rw_t WHERE id = $1 FOR UPDATE",
            &[&1i32],
        ),
        (
            "nextval",
            "SELECT inet_server_port() + 0 * nextval('rw_seq')::int + 0 * $1::int",
            &[&1i32],
        ),
        (
            "data-modifying CTE",
            "WITH w AS (INSERT INTO rw_t (v) VALUES ($1) RETURNING id) SELECT inet_server_port() FROM w",
            &[&"cte"],
        ),
        ("unparsable read", UNPARSABLE_READ_EXT, &[&1i32]),
    ];
    for (what, sql, params) in cases {
        assert_eq!(
            port_of(&client, sql, params).await,
            primary,
            "{what}: {sql}"
        );
    }

    // DDL through the extended protocol.
    client
        .execute("CREATE TABLE rw_ddl_ext (a int)", &[])
        .await
        .expect("CREATE TABLE must run on the primary");
    client
        .execute("DROP TABLE rw_ddl_ext", &[])
        .await
        .expect("DROP TABLE must run on the primary");

    // A read-write transaction: reads in it on the primary.
    let mut client = client;
    {
        let tx = client.transaction().await.expect("BEGIN");
        let got: i32 = tx
            .query_one("SELECT inet_server_port() + 0 * $1::int", &[&1i32])
            .await
            .expect("read in transaction")
            .get(0);
        assert_eq!(got, primary, "read in a read-write transaction");
        let got: i32 = tx
            .query_one(
                "INSERT INTO rw_t (v) VALUES ($1) RETURNING inet_server_port()",
                &[&"txn-ext"],
            )
            .await
            .expect("write in transaction")
            .get(0);
        assert_eq!(got, primary, "write in a read-write transaction");
        tx.commit().await.expect("COMMIT");
    }
    {
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .expect("START TRANSACTION READ ONLY");
        let got: i32 = tx
            .query_one("SELECT inet_server_port() + 0 * $1::int", &[&1i32])
            .await
            .expect("read in read-only transaction")
            .get(0);
        assert_eq!(got, replica, "read in a READ ONLY transaction");
        tx.commit().await.expect("COMMIT");
    }
    let got: i32 = client
        .query_one("SELECT inet_server_port() + 0 * $1::int", &[&2i32])
        .await
        .expect("read after")
        .get(0);
    assert_eq!(got, replica, "plain read after the transactions");
}

/// The one int4 value (a server port) an extended query returns.
async fn port_of(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i32 {
    let rows = client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    assert_eq!(rows.len(), 1, "{sql}: one row");
    rows[0].get::<_, i32>(0)
}

// ---------------------------------------------------------------------------------------------
// 6. Load balancing over two replicas; SET SERVER ROLE over three servers
// ---------------------------------------------------------------------------------------------

/// A cluster with two replicas, for the load-balancing tests (never dropped: removed when
/// the test process exits).
fn two_replicas() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| support::private(2))
}

/// Runs `per_client` reads on each of `clients` concurrent connections (after `setup` on
/// each) and counts the answers by server port.
async fn count_ports(
    pooler: &Pooler,
    clients: usize,
    per_client: usize,
    setup: &'static [&'static str],
) -> BTreeMap<i32, usize> {
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        let counts = counts.clone();
        tasks.push(tokio::spawn(async move {
            for sql in setup {
                client
                    .simple_query(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            }
            for i in 0..per_client {
                // Alternate simple and extended protocol.
                let port: i32 = if (i + c) % 2 == 0 {
                    let rows = client
                        .simple_query("SELECT inet_server_port()")
                        .await
                        .expect("simple read");
                    rows.iter()
                        .find_map(|m| match m {
                            SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
                            _ => None,
                        })
                        .expect("a row")
                } else {
                    client
                        .query_one("SELECT inet_server_port() + 0 * $1::int", &[&(i as i32)])
                        .await
                        .expect("extended read")
                        .get(0)
                };
                *counts.lock().unwrap().entry(port).or_insert(0) += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("reader task");
    }
    let counts = counts.lock().unwrap().clone();
    counts
}

/// Must show 6: `load_balancing_mode = "random"` and `"loc"` both spread 200 reads from 8
/// concurrent clients over both replicas (each gets at least 20), none on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_random_and_loc_use_both_replicas() {
    let cluster = tokio::task::spawn_blocking(two_replicas)
        .await
        .expect("cluster");
    let primary = cluster.primary.port as i32;
    let replicas: Vec<i32> = cluster.replicas.iter().map(|r| r.port as i32).collect();
    assert_eq!(replicas.len(), 2);
    for mode in ["random", "loc"] {
        let pooler = Pooler::start(&app_toml(
            cluster,
            free_port(),
            &format!("load_balancing_mode = \"{mode}\"\n"),
            10,
        ));
        let counts = count_ports(&pooler, 8, 25, &[]).await;
        let total: usize = counts.values().sum();
        assert_eq!(total, 200, "{mode}: {counts:?}");
        assert_eq!(
            counts.get(&primary),
            None,
            "{mode}: no read on the primary: {counts:?}"
        );
        for replica in &replicas {
            let n = counts.get(replica).copied().unwrap_or(0);
            assert!(
                n >= 20,
                "{mode}: replica {replica} starved ({n} of 200 reads): {counts:?}"
            );
        }
    }
}

/// PgCat's routing_spec over a primary and two replicas: `SET SERVER ROLE TO 'primary'` hits
/// only the primary, `'replica'` only replicas (both), `'any'` every server; `SET PRIMARY
/// READS TO 'on'` lets parsed reads use the primary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_role_and_primary_reads_over_three_servers() {
    let cluster = tokio::task::spawn_blocking(two_replicas)
        .await
        .expect("cluster");
    let primary = cluster.primary.port as i32;
    let replicas: Vec<i32> = cluster.replicas.iter().map(|r| r.port as i32).collect();
    let pooler = Pooler::start(&app_toml(cluster, free_port(), "", 10));

    let counts = count_ports(&pooler, 4, 25, &["SET SERVER ROLE TO 'primary'"]).await;
    assert_eq!(counts, BTreeMap::from([(primary, 100)]), "role primary");

    let counts = count_ports(&pooler, 4, 50, &["SET SERVER ROLE TO 'replica'"]).await;
    assert_eq!(counts.get(&primary), None, "role replica: {counts:?}");
    for replica in &replicas {
        assert!(
            counts.get(replica).copied().unwrap_or(0) >= 20,
            "role replica: replica {replica} unused: {counts:?}"
        );
    }

    for setup in [
        &["SET SERVER ROLE TO 'any'"][..],
        &["SET PRIMARY READS TO 'on'"][..],
    ] {
        let setup: &'static [&'static str] = setup;
        let counts = count_ports(&pooler, 6, 50, setup).await;
        for port in std::iter::once(&primary).chain(&replicas) {
            assert!(
                counts.get(port).copied().unwrap_or(0) >= 20,
                "{setup:?}: server {port} unused (300 reads): {counts:?}"
            );
        }
    }
}
