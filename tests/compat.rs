//! Issue 17: applications see what PostgreSQL would show them. Focused tests for what
//! psycopg's own suite found (tests/peer runs the whole suite in CI):
//!
//! 1. Session mode is the server's own session: BackendKeyData carries the real backend pid,
//!    so `pg_backend_pid()`, notifications and `pg_terminate_backend()` agree with it.
//! 2. Reported parameters are spelled as PostgreSQL reports them (`utf-8` → `UTF8`), in
//!    both modes; PostgreSQL itself is the oracle.

mod support;

use support::raw::{self, RawConn};
use support::{config, free_port, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

fn select_one(conn: &mut RawConn, sql: &str) -> String {
    let msgs = conn.simple_query(sql).expect(sql);
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .unwrap_or_else(|| panic!("{sql}: no row: {msgs:?}"));
    row.row()[0].clone().unwrap_or_default()
}

#[test]
fn session_mode_tells_the_client_its_servers_real_pid() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "session", 3, ""));
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let mut b = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let (pid_a, _) = a.key.expect("key");
    let (pid_b, _) = b.key.expect("key");
    assert_ne!(pid_a, pid_b);
    assert_eq!(
        select_one(&mut a, "SELECT pg_backend_pid()"),
        pid_a.to_string()
    );
    assert_eq!(
        select_one(&mut b, "SELECT pg_backend_pid()"),
        pid_b.to_string()
    );
    // A notification names the sender by the pid the sender was told.
    let msgs = a
        .simple_query("LISTEN compat; NOTIFY compat, 'hi'")
        .expect("notify");
    let note = msgs
        .iter()
        .find(|m| m.tag == b'A')
        .unwrap_or_else(|| panic!("no notification: {}", raw::tags(&msgs)));
    assert_eq!(
        i32::from_be_bytes(note.body[..4].try_into().unwrap()),
        pid_a
    );
    // The client's own cancel key still goes through the pooler: a cancel stops its query.
    // And pg_terminate_backend of that pid ends that client's session, as it would directly.
    let killed = select_one(&mut b, &format!("SELECT pg_terminate_backend({pid_a})"));
    assert_eq!(killed, "t");
    let msg = a.read_msg();
    match msg {
        Ok(m) => {
            assert_eq!(m.tag, b'E', "{m:?}");
            assert_eq!(m.sqlstate().as_deref(), Some("57P01"));
        }
        Err(e) => panic!("expected the server's FATAL, got {e}"),
    }
    assert!(a.read_msg().is_err(), "closed after the FATAL");
    // The other session is untouched.
    assert_eq!(select_one(&mut b, "SELECT 1"), "1");
}

#[test]
fn transaction_mode_keys_are_never_real_pids() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 3, ""));
    let c = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let (pid, _) = c.key.expect("key");
    assert!(pid >= 1 << 22, "a made-up pid above any process id: {pid}");
}

#[test]
fn reported_parameters_are_spelled_as_postgresql_reports_them() {
    let cluster = shared();
    let cases: [&[(&str, &str)]; 4] = [
        &[("client_encoding", "utf-8")],
        &[("client_encoding", "euc-jp")],
        &[("DateStyle", "iso")],
        &[("client_encoding", "utf_8"), ("IntervalStyle", "ISO_8601")],
    ];
    for mode in ["session", "transaction"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 3, ""));
        for extra in cases {
            let direct =
                RawConn::connect_with(cluster.primary.port, "postgres", "postgres", DB, extra)
                    .expect("direct");
            let mut pooled = RawConn::connect_with(pooler.port, SCRAM_USER, SCRAM_PASS, DB, extra)
                .expect("pooled");
            for (name, _) in extra {
                let name = match *name {
                    "DateStyle" | "IntervalStyle" => name.to_string(),
                    other => other.to_lowercase(),
                };
                assert_eq!(
                    pooled.param(&name),
                    direct.param(&name),
                    "{mode} {extra:?}: {name} as reported at login"
                );
            }
            // And the session really has it.
            let shown = select_one(&mut pooled, "SHOW client_encoding");
            assert_eq!(
                Some(shown.as_str()),
                direct.param("client_encoding"),
                "{mode} {extra:?}"
            );
        }
    }
}

/// Runs `sql` with `params` through the extended protocol (bound, as drivers do): the
/// first column of the first row.
fn bound(conn: &mut RawConn, sql: &str, params: &[Option<&str>]) -> Option<String> {
    let msg = [
        raw::parse("", sql),
        raw::bind("", "", params),
        raw::execute(""),
        raw::sync(),
    ]
    .concat();
    conn.send(&msg).expect("send");
    let msgs = conn.read_until_ready().expect("reply");
    assert!(
        !msgs.iter().any(|m| m.tag == b'E'),
        "{sql}: {:?}",
        msgs.iter()
            .find(|m| m.tag == b'E')
            .and_then(|m| m.field(b'M'))
    );
    msgs.iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| m.row()[0].clone())
}

/// `set_config(name, value, false)` with bound arguments (psycopg's way) inside a
/// transaction that commits is the client's, as a SET would be: kept on every server it
/// gets, never seen by another client. So is a reported setting (client_encoding) changed
/// that way, which the server announces with ParameterStatus.
#[test]
fn set_config_of_any_setting_is_kept_like_set() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let connect = || RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let mut a = connect();
    let mut b = connect();
    a.simple_query("BEGIN").expect("begin");
    bound(
        &mut a,
        "SELECT set_config($1, $2, false)",
        &[Some("statement_timeout"), Some("4321")],
    );
    bound(
        &mut a,
        "SELECT set_config($1, $2, false)",
        &[Some("client_encoding"), Some("LATIN1")],
    );
    a.simple_query("COMMIT").expect("commit");
    for round in 0..6 {
        // b holds a server now and then, so a's transactions move between the two.
        if round % 2 == 0 {
            b.simple_query("BEGIN; SELECT 1").expect("b begin");
        }
        assert_eq!(
            select_one(&mut a, "SHOW statement_timeout"),
            "4321ms",
            "round {round}"
        );
        assert_eq!(
            select_one(&mut a, "SHOW client_encoding"),
            "LATIN1",
            "round {round}"
        );
        if round % 2 == 0 {
            b.simple_query("COMMIT").expect("b commit");
        }
        assert_eq!(
            select_one(&mut b, "SHOW statement_timeout"),
            "0",
            "no leak, round {round}"
        );
        assert_eq!(
            select_one(&mut b, "SHOW client_encoding"),
            "UTF8",
            "no leak, round {round}"
        );
    }
    // A rollback undoes it, as in PostgreSQL.
    a.simple_query("BEGIN").expect("begin");
    bound(
        &mut a,
        "SELECT set_config($1, $2, false)",
        &[Some("statement_timeout"), Some("99")],
    );
    a.simple_query("ROLLBACK").expect("rollback");
    assert_eq!(select_one(&mut a, "SHOW statement_timeout"), "4321ms");
}

fn show_client_states(port: u16) -> Vec<String> {
    let mut admin = RawConn::connect(port, "admin", "admin", "pgcat").expect("admin");
    let msgs = admin.simple_query("SHOW CLIENTS").expect("SHOW CLIENTS");
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.row()[4].clone().unwrap_or_default())
        .collect()
}

/// A temp table and a WITH HOLD cursor live on their server: the client keeps that server
/// between transactions (pinned, as SHOW CLIENTS says) until the state is gone.
#[test]
fn session_objects_pin_their_server_in_transaction_mode() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let connect = || RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let mut a = connect();
    let mut b = connect();
    a.simple_query("CREATE TEMP TABLE pinned_t (x int)")
        .expect("create");
    for i in 0..5 {
        // Another client's transactions run meanwhile on the other server.
        b.simple_query("BEGIN; SELECT 1").expect("b");
        let r = a
            .simple_query(&format!("INSERT INTO pinned_t VALUES ({i})"))
            .expect("insert");
        assert!(!r.iter().any(|m| m.tag == b'E'), "round {i}: {r:?}");
        b.simple_query("COMMIT").expect("b");
    }
    assert_eq!(select_one(&mut a, "SELECT count(*) FROM pinned_t"), "5");
    assert!(
        show_client_states(pooler.port).contains(&"pinned".to_string()),
        "SHOW CLIENTS: {:?}",
        show_client_states(pooler.port)
    );
    // DISCARD ALL ends it: the client is an ordinary one again.
    a.simple_query("DISCARD ALL").expect("discard");
    assert!(
        support::wait_until(std::time::Duration::from_secs(5), || {
            !show_client_states(pooler.port).contains(&"pinned".to_string())
        }),
        "still pinned after DISCARD ALL: {:?}",
        show_client_states(pooler.port)
    );

    // So does a statement of SQL PREPARE, until DEALLOCATE ALL.
    let mut d = connect();
    d.simple_query("PREPARE pinned_q AS SELECT 41 + 1")
        .expect("prepare");
    b.simple_query("BEGIN; SELECT 1").expect("b");
    assert_eq!(select_one(&mut d, "EXECUTE pinned_q"), "42");
    b.simple_query("COMMIT").expect("b");
    assert_eq!(select_one(&mut d, "EXECUTE pinned_q"), "42");
    d.simple_query("DEALLOCATE ALL").expect("deallocate");
    drop(d);

    // A WITH HOLD cursor outlives its transaction.
    let mut c = connect();
    c.simple_query("BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 3)")
        .expect("declare");
    c.simple_query("COMMIT").expect("commit");
    b.simple_query("BEGIN; SELECT 1").expect("b");
    assert_eq!(select_one(&mut c, "FETCH 1 FROM held"), "1");
    assert_eq!(select_one(&mut c, "FETCH 1 FROM held"), "2");
    b.simple_query("COMMIT").expect("b");
}

/// With `pin_session_state = false` such state is reset away when the transaction ends, as
/// PgCat and PgBouncer do.
#[test]
fn without_pinning_session_objects_are_reset() {
    let cluster = shared();
    let mut toml = config(cluster, free_port(), "transaction", 2, "");
    toml = toml.replace(
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\npin_session_state = false",
    );
    let pooler = Pooler::start(&toml);
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    a.simple_query("CREATE TEMP TABLE unpinned_t (x int)")
        .expect("create");
    let r = a
        .simple_query("SELECT count(*) FROM unpinned_t")
        .expect("select");
    let e = r
        .iter()
        .find(|m| m.tag == b'E')
        .expect("the temp table is gone");
    assert_eq!(e.sqlstate().as_deref(), Some("42P01"));
}

/// SQL `DEALLOCATE name` of a statement the client prepared through the protocol (libpq
/// before 17 closes statements that way) is answered as PostgreSQL answers it, in and out
/// of a transaction; after it the name is gone, as on PostgreSQL.
#[test]
fn sql_deallocate_of_a_protocol_statement_is_answered() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    for port in [cluster.primary.port, pooler.port] {
        let (user, password) = if port == pooler.port {
            (SCRAM_USER, SCRAM_PASS)
        } else {
            ("postgres", "postgres")
        };
        let mut c = RawConn::connect(port, user, password, DB).expect("connect");
        let prepare = |c: &mut RawConn, name: &str| {
            c.send(&[raw::parse(name, "SELECT 1"), raw::sync()].concat())
                .expect("parse");
            let r = c.read_until_ready().expect("parse reply");
            assert_eq!(raw::tags(&r), "1Z", "{port}: {r:?}");
        };
        prepare(&mut c, "s1");
        let r = c.simple_query("DEALLOCATE s1").expect("deallocate");
        assert_eq!(raw::tags(&r), "CZ", "{port}: {r:?}");
        assert_eq!(r[0].command_tag(), "DEALLOCATE");
        c.send(&[raw::bind("", "s1", &[]), raw::execute(""), raw::sync()].concat())
            .expect("bind");
        let r = c.read_until_ready().expect("bind reply");
        assert_eq!(
            r[0].sqlstate().as_deref(),
            Some("26000"),
            "{port}: gone: {r:?}"
        );
        // Inside a transaction, and with PREPARE spelled out.
        c.simple_query("BEGIN").expect("begin");
        prepare(&mut c, "S2");
        let r = c
            .simple_query("DEALLOCATE PREPARE \"S2\"")
            .expect("deallocate");
        assert_eq!(raw::tags(&r), "CZ", "{port}: {r:?}");
        assert_eq!(r[1].body, b"T");
        c.simple_query("COMMIT").expect("commit");
        // An unknown name is PostgreSQL's error.
        let r = c.simple_query("DEALLOCATE nosuch").expect("deallocate");
        assert_eq!(r[0].sqlstate().as_deref(), Some("26000"), "{port}: {r:?}");
    }
}

/// Reads the next NotificationResponse within `limit`: (pid, channel, payload).
fn notification(conn: &mut RawConn, limit: std::time::Duration) -> Option<(i32, String, String)> {
    conn.set_read_timeout(limit);
    let msg = conn.read_msg().ok()?;
    conn.set_read_timeout(std::time::Duration::from_secs(10));
    assert_eq!(msg.tag, b'A', "{msg:?}");
    let pid = i32::from_be_bytes(msg.body[..4].try_into().unwrap());
    let mut parts = msg.body[4..].split(|b| *b == 0);
    let channel = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    let payload = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
    Some((pid, channel, payload))
}

/// LISTEN in transaction mode lasts beyond the transaction: the pooler listens for the
/// client and delivers each notification (with the sender's pid) while it is idle;
/// UNLISTEN and the client's exit end it.
#[test]
fn listen_notify_in_transaction_mode() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let connect = || RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let mut a = connect();
    let mut b = connect();
    let r = a.simple_query("LISTEN compat_chan").expect("listen");
    assert_eq!(raw::tags(&r), "CZ", "{r:?}");
    assert_eq!(r[0].command_tag(), "LISTEN");
    // The extended protocol too (psycopg's execute), on a quoted channel.
    a.send(
        &[
            raw::parse("", "LISTEN \"Other Chan\""),
            raw::bind("", "", &[]),
            raw::execute(""),
            raw::sync(),
        ]
        .concat(),
    )
    .expect("listen extended");
    let r = a.read_until_ready().expect("listen extended");
    assert_eq!(raw::tags(&r), "12CZ", "{r:?}");
    // a's transactions come and go; the LISTEN stays.
    assert_eq!(select_one(&mut a, "SELECT 1"), "1");
    let sender = select_one(
        &mut b,
        "SELECT pg_backend_pid()::text || ' ' || pg_notify('compat_chan', 'hello')::text",
    );
    let sender_pid: i32 = sender.split(' ').next().unwrap().parse().unwrap();
    let (pid, channel, payload) =
        notification(&mut a, std::time::Duration::from_secs(5)).expect("the notification");
    assert_eq!(
        (channel.as_str(), payload.as_str()),
        ("compat_chan", "hello")
    );
    assert_eq!(pid, sender_pid, "the sender's pid");
    b.simple_query("NOTIFY \"Other Chan\", 'x'")
        .expect("notify");
    let (_, channel, _) = notification(&mut a, std::time::Duration::from_secs(5)).expect("other");
    assert_eq!(channel, "Other Chan");
    // UNLISTEN *: nothing more arrives.
    let r = a.simple_query("UNLISTEN *").expect("unlisten");
    assert_eq!(r[0].command_tag(), "UNLISTEN");
    b.simple_query("NOTIFY compat_chan, 'late'")
        .expect("notify");
    assert!(notification(&mut a, std::time::Duration::from_millis(500)).is_none());
    // DISCARD ALL ends a client's LISTENs too.
    a.simple_query("LISTEN compat_chan").expect("listen");
    a.simple_query("DISCARD ALL").expect("discard");
    b.simple_query("NOTIFY compat_chan, 'discarded'")
        .expect("notify");
    assert!(notification(&mut a, std::time::Duration::from_millis(500)).is_none());
    // A client that listens and leaves: the pooler's listening connection closes.
    let mut c = connect();
    c.simple_query("LISTEN compat_gone").expect("listen");
    drop(c);
    let listeners = || {
        cluster
            .psql(
                &cluster.primary,
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgcat_listener'",
            )
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || listeners() == "0"),
        "listening connections left: {}",
        listeners()
    );
}

/// A client that listens but does not read never slows the others: its queue is bounded,
/// what does not fit is dropped (and logged), another listener gets every notification,
/// and the slow client's stream stays whole.
#[test]
fn a_client_that_does_not_read_its_notifications_blocks_no_one() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let connect = || RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let (mut slow, mut reader, mut sender) = (connect(), connect(), connect());
    for c in [&mut slow, &mut reader] {
        c.simple_query("LISTEN compat_flood").expect("listen");
    }
    // About 32 MB in all: more than the slow client's socket buffers and its queue
    // together. Sent in bursts smaller than a client's queue (1,024), each read by the
    // reading client before the next: a burst larger than the queue is dropped from a
    // client that reads too, by design.
    const N: usize = 4000;
    const BURST: usize = 500;
    for first in (1..=N).step_by(BURST) {
        sender
            .simple_query(&format!(
                "SELECT pg_notify('compat_flood', i::text || repeat('x', 7900)) \
                 FROM generate_series({first}, {}) i",
                first + BURST - 1
            ))
            .expect("notify");
        for i in first..first + BURST {
            let (_, channel, payload) =
                notification(&mut reader, std::time::Duration::from_secs(30))
                    .unwrap_or_else(|| panic!("the reading client got {} of {N}", i - 1));
            assert_eq!(channel, "compat_flood");
            assert!(payload.starts_with(&format!("{i}x")), "in order: {i}");
        }
    }
    // The slow client gets what fitted, whole, then its session goes on.
    let mut got = 0;
    while let Some((_, channel, _)) = notification(&mut slow, std::time::Duration::from_secs(2)) {
        assert_eq!(channel, "compat_flood");
        got += 1;
    }
    assert!(0 < got && got < N, "the slow client got {got} of {N}");
    assert_eq!(select_one(&mut slow, "SELECT 1"), "1");
    assert!(
        pooler.logs().contains("notification dropped"),
        "the overflow is logged"
    );
}

/// A reported setting changed other ways than a plain SET — `SET LOCAL` in a transaction
/// that commits, a function calling `set_config`, `RESET` — ends up for the client as it
/// does directly, on every server its transactions get, while another client holds the
/// other server every second round. PostgreSQL is the oracle.
#[test]
fn reported_settings_changed_any_way_follow_the_client_as_directly() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    cluster
        .psql(
            &cluster.primary,
            DB,
            "CREATE OR REPLACE FUNCTION compat_set_datestyle() RETURNS text LANGUAGE sql AS \
             $$ SELECT set_config('DateStyle', 'Postgres, DMY', false) $$",
        )
        .expect("function");
    let mut seen = Vec::new();
    for port in [cluster.primary.port, pooler.port] {
        let connect = || RawConn::connect(port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
        let (mut a, mut b) = (connect(), connect());
        let mut shown = Vec::new();
        let steps = [
            "SET DateStyle = 'SQL, DMY'",
            "BEGIN; SET LOCAL DateStyle = 'German'; COMMIT",
            "SELECT compat_set_datestyle()",
            "RESET DateStyle",
        ];
        for step in steps {
            a.simple_query(step).expect(step);
            for round in 0..4 {
                if round % 2 == 1 {
                    b.simple_query("BEGIN; SELECT 1").expect("b begin");
                }
                shown.push(select_one(&mut a, "SHOW DateStyle"));
                if round % 2 == 1 {
                    b.simple_query("COMMIT").expect("b commit");
                }
                assert_eq!(select_one(&mut b, "SHOW DateStyle"), "ISO, MDY", "{step}");
            }
        }
        seen.push(shown);
    }
    assert_eq!(seen[1], seen[0], "through the pooler as directly");
    assert!(
        seen[0].contains(&"Postgres, DMY".to_string()),
        "{:?}",
        seen[0]
    );
}
