//! No session state leaks between clients sharing a server, and a client that vanishes inside
//! a transaction does not leave its server `idle in transaction`.

mod support;

use std::time::Duration;

use support::raw::{self, RawConn};
use support::{config, free_port, shared, wait_until, Pooler, DB, SCRAM_PASS, SCRAM_USER};
use tokio_postgres::SimpleQueryMessage;

/// The first column of every row of a simple query, as text.
async fn values(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .collect()
}

/// Client A dirties its server (SET, PREPARE, temp table) and checks each took effect in
/// the same query; then client B, on the same single server, must see none of it.
/// Pinning is off: A's temp table would otherwise keep the one server (tests/compat.rs
/// covers pinning); this checks the reset that runs instead.
async fn state_does_not_leak(pool_mode: &str) {
    let cluster = shared();
    let toml = config(cluster, free_port(), pool_mode, 1, "").replace(
        "default_role = \"primary\"\n",
        "default_role = \"primary\"\npin_session_state = false\n",
    );
    let pooler = Pooler::start(&toml);
    leak_check(&pooler, pool_mode).await;
}

async fn leak_check(pooler: &Pooler, pool_mode: &str) {
    let a = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client A connects");
    // One Query message, so every statement runs on A's server in one go even in transaction mode.
    let seen = values(
        &a,
        "SET statement_timeout = '1234'; \
         SET search_path = state_leak, public; \
         SET application_name = 'leaky_a'; \
         PREPARE leak_stmt AS SELECT 1; \
         CREATE TEMP TABLE leak_tmp (v int); \
         SELECT current_setting('statement_timeout') || ',' || current_setting('search_path') \
                || ',' || current_setting('application_name') \
                || ',' || (SELECT count(*) FROM pg_prepared_statements WHERE name = 'leak_stmt') \
                || ',' || (to_regclass('pg_temp.leak_tmp') IS NOT NULL)::int",
    )
    .await;
    assert_eq!(
        seen,
        ["1234ms,state_leak, public,leaky_a,1,1"],
        "A's settings took effect on its server"
    );

    let mut a = Some(a);
    if pool_mode == "session" {
        // Session mode: the only server is A's until A leaves.
        a = None;
    }
    // Transaction mode: A stays connected and idle; B gets the same (only) server.
    let b = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client B connects");
    let seen = values(
        &b,
        "SELECT current_setting('statement_timeout') || ',' || current_setting('search_path') \
                || ',' || current_setting('application_name') \
                || ',' || (SELECT count(*) FROM pg_prepared_statements WHERE name = 'leak_stmt') \
                || ',' || (to_regclass('pg_temp.leak_tmp') IS NOT NULL)::int",
    )
    .await;
    let fields: Vec<&str> = seen[0].split(',').collect();
    assert_eq!(
        fields[0], "0",
        "{pool_mode}: B must not inherit A's statement_timeout"
    );
    assert_eq!(
        format!("{},{}", fields[1], fields[2]),
        "\"$user\", public",
        "{pool_mode}: B's search_path"
    );
    assert_ne!(
        fields[3], "leaky_a",
        "{pool_mode}: B must not inherit A's application_name"
    );
    assert_eq!(
        fields[4], "0",
        "{pool_mode}: B must not see A's prepared statement"
    );
    assert_eq!(fields[5], "0", "{pool_mode}: B must not see A's temp table");
    let err = b
        .simple_query("EXECUTE leak_stmt")
        .await
        .expect_err("A's PREPARE is gone");
    assert_eq!(
        support::sqlstate(&err).as_deref(),
        Some("26000"),
        "{pool_mode}: EXECUTE leak_stmt"
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_does_not_leak_to_next_client_in_transaction_mode() {
    state_does_not_leak("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_does_not_leak_to_next_client_in_session_mode() {
    state_does_not_leak("session").await;
}

/// With the query parser on, the router's analysis of a transaction's first Query also says
/// what session state it leaves (no second lookup): the same leak check, on the primary alone
/// so that both clients share its one server.
/// A pooler with the query parser on and the primary alone, so that clients share its one
/// server (pinning off, as above).
fn pooler_with_the_parser_on() -> Pooler {
    let cluster = shared();
    let mut toml = config(cluster, free_port(), "transaction", 1, "").replace(
        "default_role = \"primary\"\n",
        "default_role = \"primary\"\nquery_parser_enabled = true\nquery_parser_read_write_splitting = true\npin_session_state = false\n",
    );
    for r in &cluster.replicas {
        toml = toml.replace(&format!(", [\"{}\", {}, \"replica\"]", r.host, r.port), "");
    }
    assert!(toml.contains("query_parser_enabled = true") && !toml.contains("\"replica\""));
    Pooler::start(&toml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_does_not_leak_with_the_query_parser_on() {
    leak_check(&pooler_with_the_parser_on(), "transaction").await;
}

async fn statement_timeout(client: &tokio_postgres::Client) -> String {
    values(client, "SHOW statement_timeout").await.concat()
}

/// SETs through the extended protocol, on a pooler whose clients share one server. First
/// tokio-postgres's way: it prepares the SET (Parse, Describe, Sync) and runs it in a later
/// batch (Bind, Execute, Sync), so the setting changes when the statement runs, not when it
/// is parsed. The client keeps its setting; the next client on the server must not see it.
async fn extended_protocol_leak_check(pooler: &Pooler) {
    let a = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client A connects");
    a.execute("SET statement_timeout = '4321'", &[])
        .await
        .expect("SET through the extended protocol");
    assert_eq!(statement_timeout(&a).await, "4321ms", "A keeps its setting");
    let b = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client B connects");
    assert_eq!(
        statement_timeout(&b).await,
        "0",
        "B must not inherit A's statement_timeout"
    );
    assert_eq!(
        statement_timeout(&a).await,
        "4321ms",
        "A still has its setting after B used the server"
    );

    // Parse, Bind, Execute and Sync of an unnamed SET in one batch: the Parse is the
    // message the router analysed.
    let mut c = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("client C");
    let mut batch = raw::parse("", "SET statement_timeout = '2468'");
    batch.extend(raw::bind("", "", &[]));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    c.send(&batch).expect("send the batch");
    let replies = c.read_until_ready().expect("the batch's replies");
    assert_eq!(raw::tags(&replies), "12CZ", "C's SET ran");
    assert_eq!(
        statement_timeout(&b).await,
        "0",
        "B must not inherit C's statement_timeout"
    );
    let shown = c.simple_query("SHOW statement_timeout").expect("SHOW");
    assert_eq!(
        shown.iter().find(|m| m.kind() == 'D').map(|m| m.row()),
        Some(vec![Some("2468ms".to_owned())]),
        "C keeps its setting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_session_state_does_not_leak() {
    let pooler = Pooler::start(&config(shared(), free_port(), "transaction", 1, ""));
    extended_protocol_leak_check(&pooler).await;
}

/// With the parser on, the session effects of a batch's Parse come from the router's
/// analysis of it (no second lookup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_session_state_does_not_leak_with_the_query_parser_on() {
    extended_protocol_leak_check(&pooler_with_the_parser_on()).await;
}

/// Backends of the primary that are `idle in transaction` with `marker` as their last query.
fn idle_in_transaction_with(marker: &str) -> String {
    let cluster = shared();
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                 AND state = 'idle in transaction' AND query LIKE '%{marker}%'"
            ),
        )
        .expect("query pg_stat_activity")
}

fn killed_client_leaves_no_open_transaction(pool_mode: &str) {
    let cluster = shared();
    let table = format!("state_killed_{pool_mode}");
    cluster
        .psql(
            &cluster.primary,
            DB,
            &format!("CREATE TABLE {table} (v int); ALTER TABLE {table} OWNER TO {SCRAM_USER};"),
        )
        .expect("create table");
    let pooler = Pooler::start(&config(cluster, free_port(), pool_mode, 1, ""));
    let marker = format!("killed_marker_{pool_mode}_{}", std::process::id());

    let mut victim = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    let r = victim.simple_query("BEGIN").expect("BEGIN");
    assert_eq!(
        r.last().map(|m| m.body.clone()),
        Some(b"T".to_vec()),
        "in a transaction after BEGIN"
    );
    victim
        .simple_query(&format!("INSERT INTO {table} VALUES (1)"))
        .expect("insert");
    victim
        .simple_query(&format!("SELECT '{marker}'"))
        .expect("marker query");
    // The premise: the server really is idle in that transaction.
    assert!(
        wait_until(Duration::from_secs(10), || idle_in_transaction_with(
            &marker
        ) == "1"),
        "the victim's server should be idle in transaction; pg_stat_activity count: {}",
        idle_in_transaction_with(&marker)
    );

    // The client vanishes: no Terminate, the socket just closes.
    let _ = victim.stream.shutdown(std::net::Shutdown::Both);
    drop(victim);

    assert!(
        wait_until(Duration::from_secs(15), || idle_in_transaction_with(
            &marker
        ) == "0"),
        "{pool_mode}: a server is still idle in the dead client's transaction\n{}",
        pooler.logs()
    );
    // The next client (same single server) is not inside the dead client's transaction: the
    // uncommitted row is gone and it starts outside any transaction.
    let mut next =
        RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("next client logs in");
    let r = next
        .simple_query(&format!("SELECT count(*) FROM {table}"))
        .expect("count");
    let row = r.iter().find(|m| m.tag == b'D').map(|m| m.row());
    assert_eq!(
        row,
        Some(vec![Some("0".to_owned())]),
        "{pool_mode}: the dead client's insert was rolled back"
    );
    assert_eq!(
        r.last().map(|m| m.body.clone()),
        Some(b"I".to_vec()),
        "{pool_mode}: next client is not in a transaction"
    );
}

#[test]
fn client_killed_inside_transaction_leaves_no_idle_in_transaction_server_in_transaction_mode() {
    killed_client_leaves_no_open_transaction("transaction");
}

#[test]
fn client_killed_inside_transaction_leaves_no_idle_in_transaction_server_in_session_mode() {
    killed_client_leaves_no_open_transaction("session");
}
