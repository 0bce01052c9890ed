//! Issue 21: PgCat settings that used to load with a "not implemented" warning and do
//! nothing, each checked against real PostgreSQL.
//!
//! - `statement_timeout` (per user, ms): PostgreSQL cancels a statement that runs longer
//!   (57014) — the pooler sets it at each server login — and the server stays in the pool,
//!   clean (PgCat bans the server instead, postgresml/pgcat#622).
//! - `checkout_failure_limit`: a client whose checkouts failed that many times gets a FATAL
//!   and is disconnected; others are not.
//! - `dns_cache_enabled`: a host name that starts resolving elsewhere gets its connections
//!   replaced, transactions in progress finishing first (with the `failpoints` feature, whose
//!   build reads a test hosts file).
//! - `db_activity_based_routing`: reads of a table written lately, and every read while the
//!   pool warms up, go to the primary (the replica is in recovery: `pg_is_in_recovery()`).

mod support;

use std::time::Duration;

use support::routing::expect_error;
use support::{config, free_port, runtime, shared, Pooler, SCRAM_PASS, SCRAM_USER};

/// scram_user on the pool `app`.
async fn app_client(pooler: &Pooler) -> tokio_postgres::Client {
    let client = pooler.connect(SCRAM_USER, SCRAM_PASS, support::DB).await;
    client.unwrap_or_else(|e| panic!("connect: {e:?}\n{}", pooler.logs()))
}

#[test]
fn statement_timeout_cancels_the_statement_and_keeps_the_server() {
    let cluster = shared();
    let port = free_port();
    // One server: every statement below runs on the same backend.
    let pooler = Pooler::start(&config(
        cluster,
        port,
        "transaction",
        1,
        "statement_timeout = 300",
    ));
    runtime().block_on(async {
        let client = app_client(&pooler).await;
        let pid = |rows: Vec<Vec<String>>| rows[0][0].clone();
        let before = pid(support::rows(&client, "SELECT pg_backend_pid()::text").await);
        let shown = support::rows(&client, "SHOW statement_timeout").await;
        assert_eq!(shown, [["300ms"]]);
        let (code, message) = expect_error(
            "pg_sleep past the timeout",
            client.simple_query("SELECT pg_sleep(2)").await,
        );
        assert_eq!(code, "57014", "{message}");
        assert!(message.contains("statement timeout"), "{message}");
        // The same server answers next: not banned, not replaced.
        let after = pid(support::rows(&client, "SELECT pg_backend_pid()::text").await);
        assert_eq!(before, after);
        // A client may lift it for itself; the next client has the pool's again.
        client
            .simple_query("SET statement_timeout = 0")
            .await
            .expect("SET");
        client
            .simple_query("SELECT pg_sleep(0.5)")
            .await
            .expect("no timeout for this client");
        drop(client);
        let next = app_client(&pooler).await;
        let shown = support::rows(&next, "SHOW statement_timeout").await;
        assert_eq!(shown, [["300ms"]]);
    });
    assert!(
        !pooler.logs().contains("not implemented"),
        "{}",
        pooler.logs()
    );
}

#[test]
fn checkout_failure_limit_disconnects_a_client_that_keeps_failing() {
    let cluster = shared();
    let port = free_port();
    let toml = config(cluster, port, "transaction", 1, "")
        .replace("connect_timeout = 10000", "connect_timeout = 300")
        .replace(
            "pool_mode = \"transaction\"\n",
            "pool_mode = \"transaction\"\ncheckout_failure_limit = 2\n",
        );
    let pooler = Pooler::start(&toml);
    runtime().block_on(async {
        let connect = || pooler.connect(SCRAM_USER, SCRAM_PASS, support::DB);
        let holder = connect().await.expect("connect");
        // The only server is held by a transaction.
        holder.simple_query("BEGIN").await.expect("BEGIN");
        holder.simple_query("SELECT 1").await.expect("SELECT");
        let waiting = connect().await.expect("connect");
        let (_, first) = expect_error("first", waiting.simple_query("SELECT 1").await);
        assert!(
            !first.contains("checkout failure limit") && !waiting.is_closed(),
            "{first}: the first failure is an error, the client stays"
        );
        let (code, message) = expect_error("second", waiting.simple_query("SELECT 1").await);
        assert_eq!(code, "53300", "{message}");
        assert!(
            message.contains("checkout failure limit reached (2 / 2)"),
            "{message}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(waiting.is_closed(), "disconnected");
        // The server comes back; the holder and new clients are served.
        holder.simple_query("COMMIT").await.expect("COMMIT");
        let fresh = connect().await.expect("connect");
        fresh.simple_query("SELECT 1").await.expect("served");
    });
}

#[test]
fn log_client_parameter_status_changes_logs_what_the_client_is_told() {
    let cluster = shared();
    let toml = config(cluster, free_port(), "transaction", 2, "").replace(
        "pool_mode = \"transaction\"\n",
        "pool_mode = \"transaction\"\nlog_client_parameter_status_changes = true\n",
    );
    let pooler = Pooler::start(&toml);
    runtime().block_on(async {
        let client = app_client(&pooler).await;
        client
            .simple_query("SET application_name = 'pgcat_logged_app'")
            .await
            .expect("SET");
    });
    let logged = support::wait_until(Duration::from_secs(5), || {
        pooler.logs().contains("client parameter status changed")
    });
    let logs = pooler.logs();
    assert!(logged, "{logs}");
    assert!(
        logs.lines()
            .any(|l| l.contains("parameter=application_name") && l.contains("pgcat_logged_app")),
        "{logs}"
    );
}

#[test]
fn show_clients_lists_the_admin_consoles_too() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 1, ""));
    runtime().block_on(async {
        for database in ["pgcat", "pgbouncer"] {
            let conninfo = format!(
                "host=127.0.0.1 port={} user=admin password=admin dbname={database} \
                 application_name=console_{database}",
                pooler.port
            );
            let admin = support::connect(&conninfo).await.expect("admin console");
            let shown = admin
                .simple_query("SHOW CLIENTS")
                .await
                .expect("SHOW CLIENTS");
            let rows = support::texts(&shown);
            let me = format!("console_{database}");
            assert!(
                rows.iter()
                    .any(|r| r.contains(&database.to_string()) && r.contains(&me)),
                "{database}: the console lists itself: {rows:?}"
            );
        }
    });
}

#[test]
fn intercept_table_access_and_query_logger_plugins_work() {
    let cluster = shared();
    let mut toml = config(cluster, free_port(), "transaction", 1, "").replace(
        "pool_mode = \"transaction\"\n",
        "pool_mode = \"transaction\"\nquery_parser_enabled = true\n",
    );
    // PgCat's own sample intercepts, for every pool.
    toml.push_str(
        "\n[plugins.query_logger]\nenabled = true\n\
         [plugins.intercept]\nenabled = true\n\
         [plugins.intercept.queries.0]\n\
         query = \"select current_database() as a, current_schemas(false) as b\"\n\
         schema = [[\"a\", \"text\"], [\"b\", \"text\"]]\n\
         result = [[\"${DATABASE}\", \"{public}\"]]\n\
         [plugins.intercept.queries.1]\n\
         query = \"select current_database(), current_schema(), current_user\"\n\
         schema = [[\"current_database\", \"text\"], [\"current_schema\", \"text\"], [\"current_user\", \"text\"]]\n\
         result = [[\"${DATABASE}\", \"public\", \"${USER}\"]]\n\
         [plugins.table_access]\nenabled = true\ntables = [\"pg_user\", \"pg_roles\"]\n",
    );
    let pooler = Pooler::start(&toml);
    runtime().block_on(async {
        let client = app_client(&pooler).await;
        let answer = |sql: &'static str| {
            let client = &client;
            async move {
                let messages = client.simple_query(sql).await.expect(sql);
                support::texts(&messages)
            }
        };
        // Case, spacing and a semicolon do not matter.
        assert_eq!(
            answer("SELECT current_database() AS a,   current_schemas(false) AS b;").await,
            [["app", "{public}"]]
        );
        assert_eq!(
            answer("select current_database(), current_schema(), current_user").await,
            [["app", "public", SCRAM_USER]]
        );
        // Anything else goes to PostgreSQL.
        assert_eq!(answer("SELECT 40 + 2").await, [["42"]]);
        // table_access: a listed table anywhere in the query, either protocol, is refused.
        for sql in [
            "SELECT usename FROM pg_catalog.pg_user",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM \"pg_roles\")",
            "WITH u AS (SELECT * FROM PG_USER) SELECT count(*) FROM u",
        ] {
            let (code, message) = expect_error(sql, client.simple_query(sql).await);
            assert_eq!(code, "42501", "{sql}: {message}");
            assert!(
                message.contains("permission denied for table pg_"),
                "{message}"
            );
            let extended = client.query(sql, &[]).await;
            let (code, _) = expect_error(sql, extended);
            assert_eq!(code, "42501", "{sql} (extended)");
        }
        assert_eq!(answer("SELECT 40 + 2").await, [["42"]]);
    });
    let logs = pooler.logs();
    assert!(
        logs.contains("SELECT 40 + 2") && logs.contains("current_schemas(false)"),
        "query_logger:\n{logs}"
    );
    assert!(!logs.contains("'plugins' is not implemented"), "{logs}");
}

#[test]
fn prewarmer_runs_its_queries_on_each_new_server_connection() {
    let cluster = shared();
    let prewarmed = |queries: &str| {
        let mut toml = config(cluster, free_port(), "transaction", 1, "");
        toml.push_str(&format!(
            "\n[plugins.prewarmer]\nenabled = true\nqueries = [{queries}]\n"
        ));
        Pooler::start(&toml)
    };
    let pooler = prewarmed("\"CREATE TEMP TABLE warmed AS SELECT 7 AS v\"");
    runtime().block_on(async {
        let client = app_client(&pooler).await;
        let rows = support::rows(&client, "SELECT v::text FROM warmed").await;
        assert_eq!(
            rows,
            [["7"]],
            "the server was prewarmed before its first use"
        );
    });
    // A failing prewarm query: logged, the connection not used — the client gets the
    // error (at login, where the pooler first needs a server of the pool, or at its query).
    let pooler = prewarmed("\"SELECT * FROM no_such_table_for_prewarm\"");
    runtime().block_on(async {
        let failed = match pooler.connect(SCRAM_USER, SCRAM_PASS, support::DB).await {
            Err(e) => format!("{e:?}"),
            Ok(client) => client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_or_else(|e| format!("{e:?}"), |()| "no error".to_string()),
        };
        assert!(failed.contains("no_such_table_for_prewarm"), "{failed}");
    });
    assert!(
        pooler.logs().contains("prewarmer query failed"),
        "{}",
        pooler.logs()
    );
}

#[test]
fn activity_based_routing_sends_reads_of_fresh_writes_to_the_primary() {
    let cluster = shared();
    cluster
        .psql(
            &cluster.primary,
            support::DB,
            &format!(
                "DROP TABLE IF EXISTS activity_written, activity_other;\n\
                 CREATE TABLE activity_written (v int); CREATE TABLE activity_other (v int);\n\
                 GRANT ALL ON activity_written, activity_other TO {SCRAM_USER}, {};",
                support::MD5_USER
            ),
        )
        .expect("tables");
    cluster.wait_replicas_caught_up().expect("replica");
    let toml = config(cluster, free_port(), "transaction", 2, "").replace(
        "default_role = \"primary\"\n",
        "query_parser_enabled = true\nquery_parser_read_write_splitting = true\n\
         db_activity_based_routing = true\ndb_activity_based_ms_init_delay = 400\n\
         table_mutation_cache_ms_ttl = 1500\n",
    );
    let pooler = Pooler::start(&toml);
    runtime().block_on(async {
        let client = app_client(&pooler).await;
        let other = pooler
            .connect(support::MD5_USER, support::MD5_PASS, support::DB)
            .await
            .expect("md5 client");
        // Right after start the pool warms up: reads go to the primary.
        assert!(!on_replica(&client, "activity_other").await, "warming up");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(on_replica(&client, "activity_other").await);
        assert!(on_replica(&client, "activity_written").await);
        // A write: reads of that table go to the primary for table_mutation_cache_ms_ttl,
        // for every user of the pool; other tables still read from the replica.
        client
            .simple_query("INSERT INTO public.activity_written VALUES (1)")
            .await
            .expect("insert");
        assert!(!on_replica(&client, "activity_written").await);
        assert!(!on_replica(&other, "activity_written").await, "other user");
        assert!(on_replica(&client, "activity_other").await);
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert!(on_replica(&client, "activity_written").await, "expired");
    });
    let logs = pooler.logs();
    assert!(!logs.contains("not implemented"), "{logs}");
}

/// Whether the replica (in recovery) answered a read naming `table`.
async fn on_replica(client: &tokio_postgres::Client, table: &str) -> bool {
    let sql =
        format!("SELECT pg_is_in_recovery()::text FROM (SELECT 1) one LEFT JOIN {table} ON false");
    support::rows(client, &sql).await[0][0] == "true"
}

/// `dns_cache_enabled`: the server's host name resolves (through the test hosts file the
/// `failpoints` build reads) to 127.0.0.1, then to 127.0.0.2 — the same PostgreSQL, listening
/// on both, tells which one a connection reached (`inet_server_addr()`). After the change a
/// transaction in progress finishes on its connection; every later one runs on a new
/// connection to the new address.
#[cfg(feature = "failpoints")]
#[test]
fn dns_cache_replaces_connections_when_a_host_moves() {
    let cluster = support::private(0);
    let node = &cluster.primary;
    cluster
        .psql(
            node,
            "postgres",
            "ALTER SYSTEM SET listen_addresses = '127.0.0.1,127.0.0.2'",
        )
        .expect("listen on both");
    cluster.stop_node(node);
    cluster.start_node(node);
    let dir = support::scratch_dir();
    let hosts = dir.join("hosts");
    let name = "pgcat-dns-test.invalid";
    std::fs::write(&hosts, format!("{name} 127.0.0.1\n")).unwrap();
    let toml = config(&cluster, free_port(), "transaction", 2, "")
        .replace(
            "[general]\n",
            "[general]\ndns_cache_enabled = true\ndns_max_ttl = 1\n",
        )
        .replace(
            &format!("[\"127.0.0.1\", {}, \"primary\"]", node.port),
            &format!("[\"{name}\", {}, \"primary\"]", node.port),
        );
    let pooler = Pooler::start_with_env(&toml, &[("PGCAT_TEST_HOSTS", hosts.to_str().unwrap())]);
    let addr = "SELECT host(inet_server_addr())";
    runtime().block_on(async {
        let a = app_client(&pooler).await;
        let b = app_client(&pooler).await;
        a.simple_query("BEGIN").await.expect("BEGIN");
        assert_eq!(support::rows(&a, addr).await, [["127.0.0.1"]]);
        assert_eq!(support::rows(&b, addr).await, [["127.0.0.1"]]);
        std::fs::write(&hosts, format!("{name} 127.0.0.2\n")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while support::rows(&b, addr).await != [["127.0.0.2"]] {
            assert!(std::time::Instant::now() < deadline, "{}", pooler.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The transaction in progress finished where it began.
        assert_eq!(support::rows(&a, addr).await, [["127.0.0.1"]]);
        a.simple_query("COMMIT").await.expect("COMMIT");
        for client in [&a, &b, &a, &b] {
            assert_eq!(support::rows(client, addr).await, [["127.0.0.2"]]);
        }
    });
    let logs = pooler.logs();
    assert!(logs.contains("server address changed"), "{logs}");
    assert!(!logs.contains("not implemented"), "{logs}");
}
