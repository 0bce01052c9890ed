//! No session state leaks between clients sharing a server, and a client that vanishes inside
//! a transaction does not leave its server `idle in transaction`.
//!
//! Issue 3, "Must show" 4: one server shared by two clients in transaction mode: nothing A does
//! (SET, SET in a committed transaction, search_path, set_config, SQL PREPARE, LISTEN, temp
//! table, advisory lock) is visible to B. One table-driven check, [`assert_no_leak`], a case
//! per test.

mod support;

use std::time::Duration;

use support::raw::{self, RawConn};
use support::{
    backends_in_state, config, connect_direct, free_port, one_row, pool_toml, rows, shared,
    sqlstate, tail, wait_until, Pooler, DB, SCRAM_PASS, SCRAM_USER,
};
use tokio_postgres::{AsyncMessage, Client, Notification, SimpleQueryMessage};

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
        wait_until(Duration::from_secs(10), || backends_in_state(
            "idle in transaction",
            &marker
        ) == "1"),
        "the victim's server should be idle in transaction; pg_stat_activity count: {}",
        backends_in_state("idle in transaction", &marker)
    );

    // The client vanishes: no Terminate, the socket just closes.
    let _ = victim.stream.shutdown(std::net::Shutdown::Both);
    drop(victim);

    assert!(
        wait_until(Duration::from_secs(15), || backends_in_state(
            "idle in transaction",
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

// ---------------------------------------------------------------------------------------------
// One server shared by two clients in transaction mode: each way A changes its session
// ---------------------------------------------------------------------------------------------

/// What B must see where A's change would show.
enum Sees {
    /// The value of this setting in a fresh session straight on the primary.
    Default(&'static str),
    /// This value.
    Value(&'static str),
}

/// One way client A changes its session, and how B, next on A's (only) server, would see it.
struct Leak {
    /// What A sends, one message each (as an application sends them); the reply to the last
    /// one ends with a row (A's backend pid, ...).
    a: &'static [&'static str],
    /// The rows of that reply before the last one.
    a_first_rows: &'static [&'static [&'static str]],
    /// (column of A's last row, value, what it shows): the change took effect.
    took_effect: Option<(usize, &'static str, &'static str)>,
    /// What A sends after that (e.g. COMMIT).
    a_then: &'static [&'static str],
    /// B's probe: one row (B's backend pid, what B sees ...).
    b: &'static str,
    /// What B must see in column 1 of its probe, and what it means if B does not.
    b_sees: Option<(Sees, &'static str)>,
    /// A statement B must fail, its SQLSTATE, and what the failure shows.
    b_fails: Option<(&'static str, &'static str, &'static str)>,
}

impl Leak {
    /// No extra checks: `..Leak::PLAIN` after the fields a case sets.
    const PLAIN: Leak = Leak {
        a: &[],
        a_first_rows: &[],
        took_effect: None,
        a_then: &[],
        b: "SELECT pg_backend_pid()",
        b_sees: None,
        b_fails: None,
    };
}

/// A pooler with one server (transaction mode), clients A and B on it, and the server's
/// backend pid as A saw it.
struct OneServer {
    pooler: Pooler,
    a: Client,
    b: Client,
    pid: String,
}

/// A pooler with pool_size 1 in transaction mode and two connected clients A and B; with
/// pinning off, so that state which would pin A's server is reset instead (tests/compat.rs
/// covers pinning).
async fn two_clients_one_server() -> (Pooler, Client, Client) {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(
        cluster,
        free_port(),
        DB,
        1,
        "pin_session_state = false",
    ));
    let a = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client A connects");
    let b = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("client B connects");
    (pooler, a, b)
}

/// `leak` on a fresh [`two_clients_one_server`].
async fn isolated(leak: &Leak) -> OneServer {
    let (pooler, a, b) = two_clients_one_server().await;
    let pid = assert_no_leak(&pooler, &a, &b, leak).await;
    OneServer { pooler, a, b, pid }
}

/// A setting's value in a fresh session straight on the primary.
async fn default_setting(name: &str) -> String {
    let direct = connect_direct(&shared().primary, DB).await;
    one_row(&direct, &format!("SELECT current_setting('{name}')")).await[0].clone()
}

/// A makes its change and it takes effect; B runs on A's server and does not see it. Returns
/// the server's backend pid.
async fn assert_no_leak(pooler: &Pooler, a: &Client, b: &Client, leak: &Leak) -> String {
    let (last, first) = leak.a.split_last().expect("A sends something");
    for sql in first {
        a.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("A: {sql}: {e:?}"));
    }
    let mut seen = rows(a, last).await;
    let n = leak.a_first_rows.len();
    assert_eq!(seen.len(), n + 1, "A: {last}: {seen:?}");
    for (i, want) in leak.a_first_rows.iter().enumerate() {
        assert_eq!(seen[i], *want, "A: {last}: row {i}");
    }
    let seen = seen.pop().expect("A's last row");
    if let Some((column, value, what)) = leak.took_effect {
        assert_eq!(seen[column], value, "{what}");
    }
    for sql in leak.a_then {
        a.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("A: {sql}: {e:?}"));
    }
    let got = one_row(b, leak.b).await;
    assert_eq!(got[0], seen[0], "B runs on A's server (pool_size 1)");
    if let Some((sees, leaked)) = &leak.b_sees {
        let want = match sees {
            Sees::Default(name) => default_setting(name).await,
            Sees::Value(v) => v.to_string(),
        };
        assert_eq!(got[1], want, "{leaked}\n{}", tail(&pooler.logs(), 30));
    }
    if let Some((sql, code, what)) = leak.b_fails {
        let err = b.simple_query(sql).await.expect_err(what);
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some(code),
            "B's {sql}: {err:?}\n{}",
            tail(&pooler.logs(), 30)
        );
    }
    seen[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_statement_timeout() {
    isolated(&Leak {
        a: &["SET statement_timeout = '4321'; \
              SELECT pg_backend_pid(), current_setting('statement_timeout')"],
        took_effect: Some((1, "4321ms", "A's SET took effect")),
        b: "SELECT pg_backend_pid(), current_setting('statement_timeout')",
        b_sees: Some((
            Sees::Default("statement_timeout"),
            "B sees A's statement_timeout",
        )),
        ..Leak::PLAIN
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_inside_a_committed_transaction() {
    let s = isolated(&Leak {
        // Separate messages, as an application sends them.
        a: &[
            "BEGIN",
            "SET work_mem = '77MB'",
            "SELECT pg_backend_pid(), current_setting('work_mem')",
        ],
        took_effect: Some((1, "77MB", "A's SET took effect")),
        a_then: &["COMMIT"],
        b: "SELECT pg_backend_pid(), current_setting('work_mem')",
        b_sees: Some((
            Sees::Default("work_mem"),
            "B sees the work_mem A SET inside a committed transaction",
        )),
        ..Leak::PLAIN
    })
    .await;
    let (a, b) = (&s.a, &s.b);
    // A keeps it, as PostgreSQL keeps a committed SET for the session.
    let kept = one_row(a, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(kept[1], "77MB", "A's committed SET is kept for A");
    // A SET in a transaction that rolls back is undone, also for A.
    a.batch_execute("BEGIN; SET work_mem = '55MB'; ROLLBACK")
        .await
        .expect("rolled back SET");
    let after = one_row(a, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(after[1], "77MB", "A's rolled-back SET is undone");
    let other = one_row(b, "SELECT pg_backend_pid(), current_setting('work_mem')").await;
    assert_eq!(
        other[1],
        default_setting("work_mem").await,
        "B still has the default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_search_path() {
    isolated(&Leak {
        a: &["SET search_path = leak_schema, public; \
              SELECT pg_backend_pid(), current_setting('search_path')"],
        took_effect: Some((1, "leak_schema, public", "A's SET took effect")),
        b: "SELECT pg_backend_pid(), current_setting('search_path')",
        b_sees: Some((Sees::Default("search_path"), "B sees A's search_path")),
        ..Leak::PLAIN
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_set_config_function() {
    isolated(&Leak {
        a: &["SELECT pg_backend_pid(), set_config('work_mem', '55MB', false)"],
        took_effect: Some((1, "55MB", "A's set_config took effect")),
        b: "SELECT pg_backend_pid(), current_setting('work_mem')",
        b_sees: Some((
            Sees::Default("work_mem"),
            "B sees the work_mem A set with set_config()",
        )),
        ..Leak::PLAIN
    })
    .await;
}

/// The Build: a client's own SET outside a transaction is remembered and applied to
/// each server it gets (here: the same server after B used it and it was reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_set_survives_another_client_using_the_server() {
    let s = isolated(&Leak {
        a: &["SET statement_timeout = '4321'; \
              SELECT pg_backend_pid(), current_setting('statement_timeout')"],
        b: "SELECT pg_backend_pid(), current_setting('statement_timeout')",
        ..Leak::PLAIN
    })
    .await;
    let again = one_row(
        &s.a,
        "SELECT pg_backend_pid(), current_setting('statement_timeout')",
    )
    .await;
    assert_eq!(again[0], s.pid, "A is back on the one server");
    assert_eq!(
        again[1],
        "4321ms",
        "A lost its own statement_timeout\n{}",
        tail(&s.pooler.logs(), 30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_sql_prepare() {
    let s = isolated(&Leak {
        a: &["PREPARE p AS SELECT 1; EXECUTE p; SELECT pg_backend_pid(), 'prepared'"],
        // A's EXECUTE p.
        a_first_rows: &[&["1"]],
        b_fails: Some((
            "EXECUTE p",
            "26000",
            "B must not be able to EXECUTE A's prepared statement",
        )),
        ..Leak::PLAIN
    })
    .await;
    let mine = rows(&s.b, "PREPARE p AS SELECT 2; EXECUTE p").await;
    assert_eq!(mine, vec![vec!["2".to_owned()]], "B's own PREPARE p works");
    let again = one_row(&s.b, "SELECT pg_backend_pid()").await;
    assert_eq!(again[0], s.pid, "still the one server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_listen() {
    let cluster = shared();
    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let (a, _a_notes) = connect_listening(&pooler).await;
    let (b, mut b_notes) = connect_listening(&pooler).await;
    let pid = assert_no_leak(
        &pooler,
        &a,
        &b,
        &Leak {
            // LISTEN takes effect at commit: commit the Query's implicit transaction first.
            a: &["LISTEN leak_chan; COMMIT; \
                  SELECT pg_backend_pid(), (SELECT count(*) FROM pg_listening_channels())"],
            took_effect: Some((1, "1", "A's LISTEN took effect")),
            b: "SELECT pg_backend_pid(), (SELECT count(*) FROM pg_listening_channels())",
            b_sees: Some((Sees::Value("0"), "B's session listens on A's channel")),
            ..Leak::PLAIN
        },
    )
    .await;
    // A NOTIFY from elsewhere while B holds the server: PostgreSQL delivers it at the end of
    // B's transaction, before ReadyForQuery, if the session still listens.
    b.batch_execute("BEGIN").await.expect("B BEGIN");
    let direct = connect_direct(&cluster.primary, DB).await;
    direct
        .batch_execute("NOTIFY leak_chan, 'for A only'")
        .await
        .expect("NOTIFY");
    let got = one_row(&b, "SELECT pg_backend_pid()").await;
    assert_eq!(got[0], pid);
    b.batch_execute("COMMIT").await.expect("B COMMIT");
    one_row(&b, "SELECT 1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Ok(n) = b_notes.try_recv() {
        panic!(
            "B received a notification for A's channel: {} {:?}",
            n.channel(),
            n.payload()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_temp_table() {
    isolated(&Leak {
        a: &[
            "CREATE TEMP TABLE leak_tmp (v int); INSERT INTO leak_tmp VALUES (1); \
              SELECT pg_backend_pid(), (SELECT count(*) FROM leak_tmp)",
        ],
        took_effect: Some((1, "1", "A's temp table exists")),
        b: "SELECT pg_backend_pid(), to_regclass('pg_temp.leak_tmp') IS NULL",
        b_sees: Some((Sees::Value("t"), "B can see A's temp table")),
        b_fails: Some((
            "SELECT * FROM leak_tmp",
            "42P01",
            "B must not read A's temp table",
        )),
        ..Leak::PLAIN
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_advisory_lock() {
    // A lock is re-entrant within a session, so pg_try_advisory_lock alone cannot tell a
    // leaked lock from a released one when B shares the backend: look at pg_locks, and
    // ask from another session too.
    let s = isolated(&Leak {
        a: &["SELECT pg_backend_pid(), pg_advisory_lock(42) IS NOT NULL, \
              (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())"],
        took_effect: Some((2, "1", "A holds the advisory lock")),
        b: "SELECT pg_backend_pid(), \
            (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())",
        b_sees: Some((Sees::Value("0"), "B's session holds A's advisory lock")),
        ..Leak::PLAIN
    })
    .await;
    let direct = connect_direct(&shared().primary, DB).await;
    let other = one_row(
        &direct,
        "SELECT pg_try_advisory_lock(42), pg_advisory_unlock_all() IS NULL",
    )
    .await;
    assert_eq!(
        other[0], "t",
        "advisory lock 42 still held after B took A's server"
    );
    let got = one_row(&s.b, "SELECT pg_backend_pid(), pg_try_advisory_lock(42)").await;
    assert_eq!(got[0], s.pid);
    assert_eq!(got[1], "t", "B's pg_try_advisory_lock(42)");
}

/// A tokio-postgres client whose notifications are forwarded to a channel.
async fn connect_listening(
    pooler: &Pooler,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = tokio_postgres::connect(
        &pooler.conninfo(SCRAM_USER, SCRAM_PASS, DB),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect through the pooler");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send(n);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
    (client, rx)
}
