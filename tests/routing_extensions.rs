//! Issue 4, "Must show" 7 and the build list: PgCat's SQL extensions (SET/SHOW SHARD,
//! SHARDING KEY, SERVER ROLE, PRIMARY READS). Bad input gets 22023 / 25001 with the session
//! unchanged and usable; the extensions as extended-protocol statements, and in session mode.

mod support;

use std::time::Duration;

use support::routing::{
    connect_sharded, exec, expect_error, sharded_cluster, sharded_pooler, sharded_toml, value,
    SHARD_PASS, SHARD_USER,
};
use support::{connect_direct, free_port, rows, try_rows, Cluster, Pooler};
use tokio_postgres::Client;

/// The three SHOW extensions, as the session reports them.
async fn show_all(client: &Client) -> [String; 3] {
    [
        value(client, "SHOW SHARD").await,
        value(client, "SHOW SERVER ROLE").await,
        value(client, "SHOW PRIMARY READS").await,
    ]
}

// ---------------------------------------------------------------------------------------------
// 7. Bad extension input; the extensions over the extended protocol and in session mode
// ---------------------------------------------------------------------------------------------

/// After a refused extension: the SHOW values are `before` and queries still go to shard 2's
/// primary.
async fn assert_session_unchanged(client: &Client, before: &[String; 3], what: &str) {
    assert_eq!(
        &show_all(client).await,
        before,
        "after {what}: session unchanged"
    );
    assert_eq!(
        rows(client, "SELECT current_database(), pg_is_in_recovery()").await,
        vec![vec!["shard2".to_string(), "f".to_string()]],
        "after {what}: queries still go to shard 2, primary"
    );
}

/// Sends `sql` as a simple query, or (extended) as a prepared statement with tokio-postgres.
async fn send(
    client: &Client,
    sql: &str,
    extended: bool,
) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    if extended {
        client.query(sql, &[]).await.map(|rows| {
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
                .collect()
        })
    } else {
        try_rows(client, sql).await
    }
}

/// Must show 7, in the simple (`extended = false`) or extended protocol: bad values → 22023
/// naming the valid values; `SET SHARD` / `SET SHARDING KEY` / `SET SERVER ROLE` inside a
/// transaction → 25001; the session unchanged and usable after each.
async fn bad_extension_input(extended: bool) {
    let protocol = if extended { "extended" } else { "simple" };
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(cluster, "");
    let client = connect_sharded(&pooler).await;

    exec(&client, "SET SHARD TO '2'").await;
    exec(&client, "SET SERVER ROLE TO 'primary'").await;
    exec(&client, "SET PRIMARY READS TO 'on'").await;
    let before = show_all(&client).await;
    assert_eq!(
        before,
        ["2", "primary", "on"].map(String::from),
        "session before"
    );

    let bad: [(&str, &[&str]); 6] = [
        ("SET SHARD TO '9'", &["0", "2"]),
        ("SET SHARD TO '3'", &["0", "2"]),
        (
            "SET SERVER ROLE TO 'boss'",
            &["primary", "replica", "any", "auto", "default"],
        ),
        ("SET SHARDING KEY TO 'abc'", &["integer"]),
        ("SET SHARDING KEY TO '9223372036854775808'", &["integer"]),
        ("SET PRIMARY READS TO 'maybe'", &["on", "off", "default"]),
    ];
    for (sql, named) in bad {
        let (code, message) = expect_error(sql, send(&client, sql, extended).await);
        assert_eq!(code, "22023", "{protocol} {sql}: {message}");
        for word in named {
            assert!(
                message.to_lowercase().contains(word),
                "{protocol} {sql}: the message must name {word:?}: {message}"
            );
        }
        assert_session_unchanged(&client, &before, &format!("{protocol} {sql}")).await;
    }

    // Inside a transaction: refused with 25001, whether the transaction has run anything yet
    // (BEGIN held back) or not.
    for change in [
        "SET SHARD TO '1'",
        "SET SHARDING KEY TO '3'",
        "SET SERVER ROLE TO 'replica'",
    ] {
        for first in [None, Some("SELECT current_database()")] {
            exec(&client, "BEGIN").await;
            if let Some(first) = first {
                assert_eq!(value(&client, first).await, "shard2", "in the transaction");
            }
            let (code, message) = expect_error(change, send(&client, change, extended).await);
            assert_eq!(
                code, "25001",
                "{protocol} {change} inside BEGIN (after {first:?}): {message}"
            );
            exec(&client, "ROLLBACK").await;
            assert_session_unchanged(
                &client,
                &before,
                &format!("{protocol} {change} inside BEGIN (after {first:?})"),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_extension_input_leaves_the_session_unchanged() {
    bad_extension_input(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_extension_input_over_the_extended_protocol() {
    bad_extension_input(true).await;
}

/// Build list: the extensions as extended-protocol statements (tokio-postgres prepares them):
/// SET answered with no rows, SHOW with one row of one text column named as in PgCat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_over_the_extended_protocol() {
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(cluster, "");
    let client = connect_sharded(&pooler).await;

    let show = |sql: &'static str, column: &'static str| {
        let client = &client;
        async move {
            let rows = client
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("extended {sql}: {e:?}"));
            assert_eq!(rows.len(), 1, "{sql}: one row");
            assert_eq!(rows[0].columns().len(), 1, "{sql}: one column");
            assert_eq!(rows[0].columns()[0].name(), column, "{sql}: column name");
            rows[0].get::<_, String>(0)
        }
    };

    assert_eq!(show("SHOW SHARD", "shard").await, "unset");
    assert_eq!(show("SHOW SERVER ROLE", "server role").await, "auto");
    assert_eq!(show("SHOW PRIMARY READS", "primary reads").await, "off");

    let none = client
        .query("SET SHARD TO '1'", &[])
        .await
        .expect("extended SET SHARD");
    assert!(none.is_empty(), "SET returns no rows");
    assert_eq!(show("SHOW SHARD", "shard").await, "1");
    let row = client
        .query_one("SELECT current_database(), pg_is_in_recovery()", &[])
        .await
        .expect("read");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("shard1".to_string(), true)
    );

    // prepare() + execute, separately, and set sharding key with a negative key.
    let set_key = client
        .prepare("set sharding key to '-42';")
        .await
        .expect("prepare SET SHARDING KEY");
    assert!(set_key.params().is_empty() && set_key.columns().is_empty());
    assert_eq!(client.execute(&set_key, &[]).await.expect("execute"), 0);
    assert_eq!(show("SHOW SHARD", "shard").await, "2");
    let row = client
        .query_one(
            "INSERT INTO data (id, value) VALUES ($1, 'ext-cmd') RETURNING current_database(), pg_is_in_recovery()",
            &[&-42i64],
        )
        .await
        .expect("insert after extended SET SHARDING KEY");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("shard2".to_string(), false)
    );

    client
        .execute("SET SERVER ROLE TO 'replica'", &[])
        .await
        .expect("extended SET SERVER ROLE");
    assert_eq!(show("SHOW SERVER ROLE", "server role").await, "replica");
    let recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("read")
        .get(0);
    assert!(recovery, "role replica");
    client
        .execute("SET SERVER ROLE TO 'primary'", &[])
        .await
        .expect("extended SET SERVER ROLE");
    let recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("read")
        .get(0);
    assert!(!recovery, "role primary");
    client
        .execute("SET PRIMARY READS TO on", &[])
        .await
        .expect("extended SET PRIMARY READS");
    assert_eq!(show("SHOW PRIMARY READS", "primary reads").await, "on");

    // SET SHARD TO 'ANY' picks some shard.
    client
        .execute("SET SHARD TO 'ANY'", &[])
        .await
        .expect("SET SHARD TO ANY");
    let shard = show("SHOW SHARD", "shard").await;
    assert!(
        ["0", "1", "2"].contains(&shard.as_str()),
        "SET SHARD TO ANY: {shard}"
    );
    let db = value(&client, "SELECT current_database()").await;
    assert_eq!(db, format!("shard{shard}"), "SET SHARD TO ANY then a query");

    // A real PostgreSQL SET / SHOW still reaches PostgreSQL.
    exec(&client, "SET application_name TO 'routing-test'").await;
    assert_eq!(
        value(&client, "SHOW application_name").await,
        "routing-test"
    );
}

/// (current_database(), pg_is_in_recovery()) of the server answering a simple query.
async fn whereami(client: &Client) -> (String, String) {
    let r = rows(client, "SELECT current_database(), pg_is_in_recovery()").await;
    assert_eq!(r.len(), 1, "{r:?}");
    (r[0][0].clone(), r[0][1].clone())
}

/// The sharded pooler in session mode, user sharding_user.
fn session_pooler(cluster: &Cluster) -> Pooler {
    Pooler::start(&sharded_toml(
        cluster,
        free_port(),
        "session",
        "",
        &[(SHARD_USER, SHARD_PASS)],
    ))
}

/// Build list: in session mode the extensions keep working after the first query (PgCat
/// stops intercepting them then); a change of shard or role moves the client to a server of
/// the new target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_in_session_mode() {
    let cluster = sharded_cluster();
    let pooler = session_pooler(cluster);
    let client = connect_sharded(&pooler).await;

    // First query: default shard, a replica (parser on, a read).
    assert_eq!(
        whereami(&client).await,
        ("shard0".into(), "t".into()),
        "first query"
    );

    exec(&client, "SET SHARD TO '1'").await;
    assert_eq!(value(&client, "SHOW SHARD").await, "1");
    assert_eq!(whereami(&client).await.0, "shard1", "after SET SHARD TO 1");

    exec(&client, "SET SERVER ROLE TO 'primary'").await;
    assert_eq!(value(&client, "SHOW SERVER ROLE").await, "primary");
    assert_eq!(
        whereami(&client).await,
        ("shard1".into(), "f".into()),
        "role primary"
    );

    exec(&client, "SET SERVER ROLE TO 'replica'").await;
    assert_eq!(
        whereami(&client).await,
        ("shard1".into(), "t".into()),
        "role replica"
    );

    // Then a sharding key and back to the default role, and a write.
    exec(&client, "SET SHARDING KEY TO '-5'").await;
    assert_eq!(value(&client, "SHOW SHARD").await, "1");
    exec(&client, "SET SHARD TO 2").await;
    exec(&client, "SET SERVER ROLE TO 'default'").await;
    assert_eq!(
        rows(
            &client,
            "INSERT INTO data (id, value) VALUES (-1, 'session') RETURNING current_database(), pg_is_in_recovery()"
        )
        .await,
        vec![vec!["shard2".to_string(), "f".to_string()]],
        "insert on shard 2 in session mode"
    );

    // Bad input in session mode.
    let (code, _) = expect_error(
        "SET SHARD TO '9'",
        client.simple_query("SET SHARD TO '9'").await,
    );
    assert_eq!(code, "22023");
    assert_eq!(value(&client, "SHOW SHARD").await, "2");
    exec(&client, "BEGIN").await;
    assert_eq!(value(&client, "SELECT current_database()").await, "shard2");
    let (code, _) = expect_error(
        "SET SHARD in BEGIN",
        client.simple_query("SET SHARD TO '0'").await,
    );
    assert_eq!(code, "25001");
    exec(&client, "ROLLBACK").await;
    assert_eq!(value(&client, "SHOW SHARD").await, "2");
    assert_eq!(value(&client, "SELECT current_database()").await, "shard2");

    // A client never holds two servers at once: after the move to shard 0 its old server
    // (shard 2's primary, tagged with its application_name) is released and reset.
    exec(&client, "SET application_name TO 'routing-session-test'").await;
    assert_eq!(
        value(&client, "SELECT current_setting('application_name')").await,
        "routing-session-test"
    );
    exec(&client, "SET SHARD TO '0'").await;
    assert_eq!(whereami(&client).await.0, "shard0");
    let mut elsewhere = Vec::new();
    for _ in 0..100 {
        elsewhere.clear();
        for node in cluster.nodes() {
            let direct = connect_direct(node, "postgres").await;
            let n: i64 = direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'routing-session-test' AND datname <> 'shard0'",
                    &[],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if n > 0 {
                elsewhere.push((node.port, n));
            }
        }
        if elsewhere.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        elsewhere.is_empty(),
        "after SET SHARD TO '0' the client's session still holds (or left unreset) a server on \
         another shard (port, backends): {elsewhere:?}"
    );
}

/// Build list: the extensions as extended-protocol statements in session mode, after the
/// client already holds a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_in_session_mode_over_the_extended_protocol() {
    let cluster = sharded_cluster();
    let pooler = session_pooler(cluster);
    let client = connect_sharded(&pooler).await;
    let row = client
        .query_one("SELECT current_database(), pg_is_in_recovery()", &[])
        .await
        .expect("first query");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("shard0".to_string(), true),
        "first query: default shard, a replica"
    );

    client
        .execute("SET SHARDING KEY TO '-5'", &[])
        .await
        .expect("extended SET SHARDING KEY in session mode");
    let shard: String = client
        .query_one("SHOW SHARD", &[])
        .await
        .expect("extended SHOW SHARD")
        .get(0);
    assert_eq!(shard, "1");
    let db: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(db, "shard1", "after extended SET SHARDING KEY");

    client
        .execute("SET SHARD TO 2", &[])
        .await
        .expect("extended SET SHARD in session mode");
    client
        .execute("SET SERVER ROLE TO 'primary'", &[])
        .await
        .expect("extended SET SERVER ROLE in session mode");
    let role: String = client
        .query_one("SHOW SERVER ROLE", &[])
        .await
        .expect("extended SHOW SERVER ROLE")
        .get(0);
    assert_eq!(role, "primary");
    let row = client
        .query_one(
            "INSERT INTO data (id, value) VALUES ($1, 'session-ext') RETURNING current_database(), pg_is_in_recovery()",
            &[&-1i64],
        )
        .await
        .expect("insert on shard 2 in session mode");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("shard2".to_string(), false)
    );

    let (code, message) = expect_error(
        "extended SET SHARD TO '9' in session mode",
        client.query("SET SHARD TO '9'", &[]).await,
    );
    assert_eq!(code, "22023", "{message}");
    let shard: String = client
        .query_one("SHOW SHARD", &[])
        .await
        .expect("extended SHOW SHARD")
        .get(0);
    assert_eq!(shard, "2", "unchanged after the bad value");
}
