//! Query cancellation through the pooler: a CancelRequest with the key the pooler handed out
//! cancels that client's running query (SQLSTATE 57014) and the client keeps working; a key
//! the pooler never handed out cancels nothing.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::raw::{self, RawConn};
use support::{
    backends_in_state, config, free_port, shared, wait_until, Pooler, DB, SCRAM_PASS, SCRAM_USER,
};

/// Number of backends on the primary running `pg_sleep` with `marker` in the query.
fn running(marker: &str) -> String {
    backends_in_state("active", marker)
}

async fn cancel_stops_a_running_query(pool_mode: &str) {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), pool_mode, 2, ""));
    let client = pooler
        .connect(SCRAM_USER, SCRAM_PASS, DB)
        .await
        .expect("connect");
    let token = client.cancel_token();
    let marker = format!("cancel_me_{pool_mode}");

    let sql = format!("SELECT pg_sleep(30), '{marker}'");
    let query = tokio::spawn(async move {
        let r = client.simple_query(&sql).await;
        (r, client, Instant::now())
    });
    let started = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(10), || running(&marker) == "1")
    })
    .await
    .expect("poll");
    assert!(
        started,
        "{pool_mode}: the query should be running on the primary"
    );

    let sent = Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send CancelRequest to the pooler");
    let (result, client, finished) = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{pool_mode}: query not cancelled within 10 s\n{}",
                pooler.logs()
            )
        })
        .expect("query task");
    let err = result.expect_err("the cancelled query must fail");
    assert_eq!(
        support::sqlstate(&err).as_deref(),
        Some("57014"),
        "{pool_mode}: {err}"
    );
    let took = finished.duration_since(sent);
    assert!(
        took < Duration::from_secs(2),
        "{pool_mode}: cancel took {took:?}"
    );

    // The client keeps working.
    let rows = client
        .simple_query("SELECT 'after cancel'")
        .await
        .expect("query after cancel");
    let v = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(v.as_deref(), Some("after cancel"));
    // And the cancel did not leak to a later query. PostgreSQL's postmaster signals the
    // cancelled backend twice (its pid and its process group); on a loaded machine the second
    // SIGINT can land a moment after the first was handled, so give it time to arrive (it is
    // ignored while the backend is idle) before checking that nothing else cancels.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = client
        .simple_query("SELECT pg_sleep(0.3), 'not cancelled'")
        .await
        .expect("later query runs to completion");
    assert!(rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(1) == Some("not cancelled"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_running_query_in_transaction_mode() {
    cancel_stops_a_running_query("transaction").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_running_query_in_session_mode() {
    cancel_stops_a_running_query("session").await;
}

fn send_cancel(port: u16, pid: i32, secret: i32) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect for cancel");
    s.write_all(&raw::cancel_request(pid, secret))
        .expect("send CancelRequest");
    // The pooler closes the connection when done; wait for that, bounded.
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let _ = std::io::Read::read(&mut s, &mut buf);
}

#[test]
fn cancel_request_with_unknown_key_cancels_nothing() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let mut conn = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    let (pid, secret) = conn.key.expect("the pooler sends BackendKeyData");
    let marker = "cancel_unknown_key";
    conn.send(&raw::query(&format!("SELECT pg_sleep(2), '{marker}'")))
        .expect("send query");
    assert!(
        wait_until(Duration::from_secs(10), || running(marker) == "1"),
        "query running"
    );

    // Wrong secret for a real pid, a made-up pid, and the pid/secret swapped.
    send_cancel(pooler.port, pid, secret.wrapping_add(1));
    send_cancel(pooler.port, pid.wrapping_add(7919), secret);
    send_cancel(pooler.port, secret, pid);

    let replies = conn.read_until_ready().expect("query result");
    assert_eq!(
        raw::tags(&replies),
        "TDCZ",
        "the query ran to completion: {replies:?}"
    );
    assert_eq!(replies[1].row()[1].as_deref(), Some(marker));

    // The right key still works afterwards.
    let marker = "cancel_right_key";
    conn.send(&raw::query(&format!("SELECT pg_sleep(30), '{marker}'")))
        .expect("send query");
    assert!(
        wait_until(Duration::from_secs(10), || running(marker) == "1"),
        "query running"
    );
    send_cancel(pooler.port, pid, secret);
    let replies = conn.read_until_ready().expect("cancelled query result");
    let error = replies
        .iter()
        .find(|m| m.tag == b'E')
        .unwrap_or_else(|| panic!("no error in {replies:?}"));
    assert_eq!(error.sqlstate().as_deref(), Some("57014"));
}
