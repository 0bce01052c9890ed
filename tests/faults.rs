//! Issue 16: server faults never corrupt a client's stream.
//!
//! 1. Chaos: clients on the simple and the extended protocol, in transaction mode (a sharded
//!    pool, so BEGIN is held back) and in session mode, while backends are terminated at
//!    random. Every reply is checked strictly by a raw protocol client: whole messages, one
//!    result or one error per request, a FATAL only as the last thing before the connection
//!    closes, each SELECT answering its own nonce; no hang; every commit a client saw is in
//!    the table afterwards.
//! 2. A killed health-check connection bans nothing and fails no running query.
//! 3. One error per FATAL, in both modes, with a raw client, psql (PostgreSQL itself as the
//!    oracle where the pooler must behave as it does) and psycopg.
//! 4. Bytes before the startup packet (a Terminate, garbage): closed quietly, as PostgreSQL.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::raw::{self, Msg, RawConn};
use support::{free_port, general_toml, private, tail, Cluster, Pooler, SCRAM_PASS, SCRAM_USER};

/// Databases of the sharded transaction-mode pool (`tx`); the session pool uses the first.
const SHARD_DBS: [&str; 2] = ["chaos0", "chaos1"];

/// A pooler with pool `tx` (transaction mode, two shards: BEGIN is held back until the
/// statement after it) and pool `sess` (session mode), both for scram_user.
fn fault_toml(cluster: &Cluster, port: u16, pool_size: u32, general_extra: &str) -> String {
    let mut toml = general_toml(port);
    toml.push_str(general_extra);
    let servers = cluster.servers_toml();
    toml.push_str(&format!(
        "\n[pools.tx]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n\
         [pools.tx.users.0]\nusername = \"{SCRAM_USER}\"\npassword = \"{SCRAM_PASS}\"\npool_size = {pool_size}\n"
    ));
    for (i, db) in SHARD_DBS.iter().enumerate() {
        toml.push_str(&format!(
            "[pools.tx.shards.{i}]\ndatabase = \"{db}\"\nservers = {servers}\n"
        ));
    }
    toml.push_str(&format!(
        "\n[pools.sess]\npool_mode = \"session\"\ndefault_role = \"primary\"\n\
         [pools.sess.users.0]\nusername = \"{SCRAM_USER}\"\npassword = \"{SCRAM_PASS}\"\npool_size = {pool_size}\n\
         [pools.sess.shards.0]\ndatabase = \"{}\"\nservers = {servers}\n",
        SHARD_DBS[0]
    ));
    toml
}

/// A cluster with the chaos databases and table `chaos(client, seq)`.
fn fault_cluster() -> Cluster {
    let cluster = private(0);
    for db in SHARD_DBS {
        cluster
            .psql(
                &cluster.primary,
                "postgres",
                &format!("CREATE DATABASE {db} OWNER {SCRAM_USER}"),
            )
            .expect("create database");
        cluster
            .psql(
                &cluster.primary,
                db,
                &format!(
                    "SET ROLE {SCRAM_USER}; CREATE TABLE chaos (client int, seq int, PRIMARY KEY (client, seq))"
                ),
            )
            .expect("create table");
    }
    cluster
}

/// Terminates backends of `db` (all of them but the caller's, or only those whose query
/// text contains `marker`) directly on the primary; the number terminated.
fn terminate(cluster: &Cluster, db: &str, filter: &str) -> usize {
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND {filter}"
    );
    cluster
        .psql(&cluster.primary, "postgres", &sql)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// 1. Chaos
// ---------------------------------------------------------------------------------------------

/// What one chaos client saw.
#[derive(Default)]
struct Seen {
    /// (client, seq) whose COMMIT the client saw succeed.
    committed: Vec<(i32, i32)>,
    /// Errors the client got, well-formed (SQLSTATE).
    errors: Vec<String>,
    /// Protocol violations: the test fails on any.
    violations: Vec<String>,
    reconnects: usize,
}

/// How a request ended.
enum Reply {
    /// Everything up to ReadyForQuery: its messages.
    Ready(Vec<Msg>),
    /// The connection closed; `fatal` is the ErrorResponse that came just before, if any.
    Closed,
}

/// A strict reader: every message whole and known, at most one ErrorResponse per request,
/// a FATAL followed by nothing but the end of the connection.
fn read_reply(conn: &mut RawConn, seen: &mut Seen, what: &str) -> Result<Reply, ()> {
    let mut msgs: Vec<Msg> = Vec::new();
    loop {
        let msg = match conn.read_msg() {
            Ok(m) => m,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                seen.violations
                    .push(format!("{what}: no reply within the read timeout (hang)"));
                return Err(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                seen.violations
                    .push(format!("{what}: desync: {e} after {}", raw::tags(&msgs)));
                return Err(());
            }
            Err(_) => {
                // Closed (EOF or reset): well-formed if nothing was cut in half.
                return Ok(Reply::Closed);
            }
        };
        if !b"123CDEINnSTZAst".contains(&msg.tag) {
            seen.violations.push(format!(
                "{what}: desync: unexpected message type {:?} after {}",
                msg.tag as char,
                raw::tags(&msgs)
            ));
            return Err(());
        }
        if msg.tag == b'E' {
            let severity = msg.field(b'V').or_else(|| msg.field(b'S'));
            let (Some(code), Some(_), Some(severity)) = (msg.sqlstate(), msg.field(b'M'), severity)
            else {
                seen.violations
                    .push(format!("{what}: malformed ErrorResponse {msg:?}"));
                return Err(());
            };
            if msgs.iter().any(|m| m.tag == b'E') {
                seen.violations.push(format!(
                    "{what}: two errors for one request: {} then {code} {:?}",
                    raw::tags(&msgs),
                    msg.field(b'M')
                ));
                return Err(());
            }
            seen.errors.push(format!("{severity} {code}"));
            if severity == "FATAL" || severity == "PANIC" {
                // Nothing may follow but the end of the connection.
                conn.set_read_timeout(Duration::from_secs(15));
                let mut byte = [0u8; 1];
                return match conn.stream.read(&mut byte) {
                    Ok(0) | Err(_) => Ok(Reply::Closed),
                    Ok(_) => {
                        seen.violations.push(format!(
                            "{what}: bytes after a FATAL ({code} {:?}): {:?}",
                            msg.field(b'M'),
                            byte[0] as char
                        ));
                        Err(())
                    }
                };
            }
        }
        let done = msg.tag == b'Z';
        msgs.push(msg);
        if done {
            return Ok(Reply::Ready(msgs));
        }
    }
}

fn status(msgs: &[Msg]) -> u8 {
    msgs.last()
        .map_or(b'?', |m| m.body.first().copied().unwrap_or(b'?'))
}

fn errored(msgs: &[Msg]) -> bool {
    msgs.iter().any(|m| m.tag == b'E')
}

/// One statement, simple or extended; `nonce`: the statement is `SELECT nonce`, whose one
/// row must be exactly that value.
fn statement(extended: bool, sql: &str, params: &[&str]) -> Vec<u8> {
    if !extended {
        let mut text = sql.to_string();
        for (i, p) in params.iter().enumerate().rev() {
            text = text.replace(&format!("${}", i + 1), p);
        }
        return raw::query(&text);
    }
    let params: Vec<Option<&str>> = params.iter().map(|p| Some(*p)).collect();
    [
        raw::parse("", sql),
        raw::bind("", "", &params),
        raw::execute(""),
        raw::sync(),
    ]
    .concat()
}

/// Checks a reply's shape: an error, or the result `expected_tag` (and for a SELECT its
/// nonce), never both — except the one case PostgreSQL itself answers so: on the extended
/// protocol a backend ended between Execute and Sync has sent the statement's
/// CommandComplete and then sends the error that ended it (outside a transaction the
/// statement commits at Sync, so it did not commit).
fn check_result(
    msgs: &[Msg],
    expected_tag: &str,
    nonce: Option<&str>,
    seen: &mut Seen,
    what: &str,
) -> bool {
    if errored(msgs) {
        let ended_at_sync = msgs.iter().any(|m| m.tag == b'1')
            && msgs.iter().filter(|m| m.tag == b'E').all(|m| {
                m.sqlstate()
                    .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
            })
            && msgs.iter().rposition(|m| m.tag == b'C') < msgs.iter().position(|m| m.tag == b'E');
        if msgs.iter().any(|m| m.tag == b'C') && !ended_at_sync {
            seen.violations.push(format!(
                "{what}: a result and an error: {}",
                raw::tags(msgs)
            ));
        }
        return false;
    }
    let tags: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'C')
        .map(Msg::command_tag)
        .collect();
    if tags != [expected_tag] {
        seen.violations.push(format!(
            "{what}: expected one {expected_tag:?}, got {tags:?} ({})",
            raw::tags(msgs)
        ));
        return false;
    }
    if let Some(nonce) = nonce {
        let rows: Vec<Vec<Option<String>>> = msgs
            .iter()
            .filter(|m| m.tag == b'D')
            .map(Msg::row)
            .collect();
        if rows != [vec![Some(nonce.to_string())]] {
            seen.violations.push(format!(
                "{what}: SELECT {nonce} answered {rows:?}: another request's reply"
            ));
            return false;
        }
    }
    true
}

/// One chaos client: transactions `BEGIN; INSERT (client, seq); SELECT nonce; COMMIT` until
/// `stop`, reconnecting whenever the pooler closes it.
fn chaos_client(port: u16, pool: &str, client: i32, extended: bool, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    let mut conn: Option<RawConn> = None;
    let mut seq = 0;
    let mut rng = client as u64 * 7919 + 17;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match RawConn::connect(port, SCRAM_USER, SCRAM_PASS, pool) {
                Ok(c) => {
                    c.set_read_timeout(Duration::from_secs(15));
                    seen.reconnects += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    seen.errors.push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        seq += 1;
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let nonce = ((rng >> 33) % 1_000_000_000).to_string();
        let what = format!(
            "{pool} client {client} ({}) seq {seq}",
            if extended { "extended" } else { "simple" }
        );
        let (client_s, seq_s) = (client.to_string(), seq.to_string());
        // Every third round without a transaction (between transactions, a failed
        // statement leaves the client connected in transaction mode).
        let autocommit = seq % 3 == 0;
        let mut steps: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
            ("BEGIN", raw::query("BEGIN"), "BEGIN", None),
            (
                "INSERT",
                statement(
                    extended,
                    "INSERT INTO chaos VALUES ($1::int, $2::int)",
                    &[&client_s, &seq_s],
                ),
                "INSERT 0 1",
                None,
            ),
            (
                "SELECT",
                statement(extended, "SELECT $1::int", &[&nonce]),
                "SELECT 1",
                Some(&nonce),
            ),
            ("COMMIT", raw::query("COMMIT"), "COMMIT", None),
        ];
        if autocommit {
            steps.remove(3);
            steps.remove(0);
        }
        let mut closed = false;
        for (name, bytes, tag, nonce) in &steps {
            let what = format!("{what} {name}");
            if c.send(bytes).is_err() {
                closed = true;
                break;
            }
            let msgs = match read_reply(c, &mut seen, &what) {
                Err(()) => return seen,
                Ok(Reply::Closed) => {
                    closed = true;
                    break;
                }
                Ok(Reply::Ready(msgs)) => msgs,
            };
            let ok = check_result(&msgs, tag, *nonce, &mut seen, &what);
            if !ok {
                if !seen.violations.is_empty() {
                    return seen;
                }
                // A failed statement: leave the transaction the way a driver does.
                if status(&msgs) != b'I' {
                    if c.send(&raw::query("ROLLBACK")).is_err() {
                        closed = true;
                        break;
                    }
                    match read_reply(c, &mut seen, &format!("{what} ROLLBACK")) {
                        Err(()) => return seen,
                        Ok(Reply::Closed) => closed = true,
                        Ok(Reply::Ready(m)) if status(&m) != b'I' => {
                            seen.violations.push(format!(
                                "{what}: ROLLBACK left status {}",
                                status(&m) as char
                            ));
                            return seen;
                        }
                        Ok(Reply::Ready(_)) => {}
                    }
                }
                break;
            }
            let expected_status = if *name == "COMMIT" || autocommit {
                b'I'
            } else {
                b'T'
            };
            if status(&msgs) != expected_status {
                seen.violations.push(format!(
                    "{what}: ReadyForQuery status {} (expected {})",
                    status(&msgs) as char,
                    expected_status as char
                ));
                return seen;
            }
            if *name == "COMMIT" || (autocommit && *name == "INSERT") {
                seen.committed.push((client, seq));
            }
        }
        if closed {
            conn = None;
        }
    }
    seen
}

#[test]
fn chaos_backends_terminated_under_load_never_corrupt_a_stream() {
    let cluster = fault_cluster();
    let pooler = Pooler::start(&fault_toml(
        &cluster,
        free_port(),
        3,
        "healthcheck_interval = 500\n",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let port = pooler.port;
    // Four clients per pool: two simple, two extended.
    let mut handles = Vec::new();
    for (i, (pool, extended)) in [
        ("tx", false),
        ("tx", true),
        ("tx", false),
        ("tx", true),
        ("sess", false),
        ("sess", true),
        ("sess", false),
        ("sess", true),
    ]
    .into_iter()
    .enumerate()
    {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            chaos_client(port, pool, i as i32, extended, &stop)
        }));
    }
    // The killer: every 100-400 ms, each backend of the pools' databases (the pooler's
    // health checks included) with probability 1/2.
    let killed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut r: u64 = 42;
    while Instant::now() < deadline {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (r >> 33) % 300));
        for db in SHARD_DBS {
            let n = terminate(&cluster, db, "random() < 0.5");
            killed.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    let joined_by = Instant::now() + Duration::from_secs(60);
    for h in handles {
        while !h.is_finished() {
            assert!(
                Instant::now() < joined_by,
                "a chaos client hangs\n--- pooler log\n{}",
                pooler.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = h.join().expect("chaos client panicked");
        all.committed.extend(s.committed);
        all.errors.extend(s.errors);
        all.violations.extend(s.violations);
        all.reconnects += s.reconnects;
    }
    let killed = killed.load(Ordering::Relaxed);
    eprintln!(
        "chaos: {} commits, {} errors, {} connections, {killed} backends terminated",
        all.committed.len(),
        all.errors.len(),
        all.reconnects
    );
    let mut kinds: Vec<&String> = all.errors.iter().collect();
    kinds.sort();
    kinds.dedup();
    eprintln!("error kinds: {kinds:?}");
    assert!(
        all.violations.is_empty(),
        "protocol violations:\n{}\n--- pooler log (tail)\n{}",
        all.violations.join("\n"),
        tail(&pooler.logs(), 60)
    );
    assert!(killed >= 10, "the killer terminated only {killed} backends");
    assert!(
        all.committed.len() >= 100,
        "only {} commits",
        all.committed.len()
    );
    assert!(
        !all.errors.is_empty(),
        "no client saw an error: the faults did not reach them"
    );
    // Every commit a client saw is in the table (the session pool and the transaction pool
    // both write to chaos0: no key, so the sharded pool uses its default shard).
    let rows = cluster
        .psql(
            &cluster.primary,
            SHARD_DBS[0],
            "SELECT client || ':' || seq FROM chaos",
        )
        .expect("read chaos");
    let present: std::collections::HashSet<&str> = rows.lines().map(str::trim).collect();
    let missing: Vec<String> = all
        .committed
        .iter()
        .map(|(c, s)| format!("{c}:{s}"))
        .filter(|k| !present.contains(k.as_str()))
        .collect();
    assert!(missing.is_empty(), "committed rows missing: {missing:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Health-check connections killed
// ---------------------------------------------------------------------------------------------

#[test]
fn a_killed_health_check_connection_bans_nothing_and_fails_no_query() {
    let cluster = fault_cluster();
    let pooler = Pooler::start(&fault_toml(
        &cluster,
        free_port(),
        3,
        "healthcheck_interval = 100\n",
    ));
    let port = pooler.port;
    // A query running on a healthy connection while the checks' connections are killed.
    let running = std::thread::spawn(move || {
        let mut c = RawConn::connect(port, SCRAM_USER, SCRAM_PASS, "sess").expect("connect");
        c.set_read_timeout(Duration::from_secs(30));
        c.simple_query("SELECT pg_sleep(3)")
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut killed = 0;
    // An operator's "kill idle backends" script, run far more often than any would be.
    while Instant::now() < deadline {
        killed += terminate(
            &cluster,
            SHARD_DBS[0],
            "application_name = 'pgcat_healthcheck'",
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    let reply = running
        .join()
        .expect("query thread")
        .expect("the query's reply");
    assert!(killed > 0, "no health-check connection was found to kill");
    assert!(
        !errored(&reply),
        "the running query failed: {:?}\n--- pooler log\n{}",
        reply.iter().find(|m| m.tag == b'E').map(|m| m.field(b'M')),
        pooler.logs()
    );
    // Nothing is banned, and a new query runs at once.
    let mut admin = RawConn::connect(port, "admin", "admin", "pgcat").expect("admin");
    let bans = admin.simple_query("SHOW BANS").expect("SHOW BANS");
    assert!(
        !bans.iter().any(|m| m.tag == b'D'),
        "banned after killing health-check connections: {:?}\n--- pooler log\n{}",
        bans.iter()
            .filter(|m| m.tag == b'D')
            .map(Msg::row)
            .collect::<Vec<_>>(),
        pooler.logs()
    );
    assert!(
        !pooler.logs().contains("server banned"),
        "a ban was logged:\n{}",
        pooler.logs()
    );
    let mut c = RawConn::connect(port, SCRAM_USER, SCRAM_PASS, "tx").expect("connect");
    let r = c.simple_query("SELECT 1").expect("SELECT 1");
    assert!(!errored(&r), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. One error per FATAL
// ---------------------------------------------------------------------------------------------

/// Runs `sql` (which must contain `marker`) on `conn` in a thread while the backend running
/// it is terminated; every message the client got until ReadyForQuery or the end.
fn killed_mid_query(
    cluster: &Cluster,
    db: &str,
    mut conn: RawConn,
    sql: &str,
    marker: &str,
) -> (Vec<Msg>, bool, RawConn) {
    conn.set_read_timeout(Duration::from_secs(20));
    conn.send(&raw::query(sql)).expect("send");
    let filter = format!("query LIKE '%{marker}%' AND state = 'active'");
    assert!(
        support::wait_until(Duration::from_secs(10), || terminate(cluster, db, &filter)
            > 0),
        "the query never ran"
    );
    let mut msgs = Vec::new();
    let closed = loop {
        match conn.read_msg() {
            Ok(m) => {
                let done = m.tag == b'Z';
                msgs.push(m);
                if done {
                    break false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => panic!("desync: {e}"),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("hang after the kill: {}", raw::tags(&msgs))
            }
            Err(_) => break true,
        }
    };
    (msgs, closed, conn)
}

#[test]
fn one_error_per_fatal_raw_client() {
    let cluster = fault_cluster();
    let pooler = Pooler::start(&fault_toml(&cluster, free_port(), 2, ""));
    let port = pooler.port;
    let connect =
        |pool: &str| RawConn::connect(port, SCRAM_USER, SCRAM_PASS, pool).expect("connect");

    // Transaction mode, between transactions: one ERROR with PostgreSQL's SQLSTATE and
    // text, ReadyForQuery, and the next query runs on another server.
    let (msgs, closed, mut conn) = killed_mid_query(
        &cluster,
        SHARD_DBS[0],
        connect("tx"),
        "SELECT pg_sleep(30) /* victim-autocommit */",
        "victim-autocommit",
    );
    assert!(!closed, "closed: {}", raw::tags(&msgs));
    // RowDescription may come first (pg_sleep's, sent before it runs).
    let tags = raw::tags(&msgs);
    assert!(tags == "EZ" || tags == "TEZ", "{msgs:?}");
    let e = msgs.iter().find(|m| m.tag == b'E').expect("the error");
    assert_eq!(e.sqlstate().as_deref(), Some("57P01"), "{e:?}");
    assert_eq!(e.field(b'S').as_deref(), Some("ERROR"));
    assert_eq!(e.field(b'V').as_deref(), Some("ERROR"));
    assert_eq!(
        e.field(b'M').as_deref(),
        Some("terminating connection due to administrator command")
    );
    assert_eq!(status(&msgs), b'I');
    let again = conn.simple_query("SELECT 42").expect("next query");
    assert_eq!(raw::tags(&again), "TDCZ", "{again:?}");
    assert_eq!(again[1].row(), vec![Some("42".to_string())]);

    // Transaction mode inside a transaction (held BEGIN and a real one), and session mode:
    // PostgreSQL's FATAL, then the connection closes; nothing else.
    for (pool, setup) in [
        ("tx", "BEGIN"),
        ("tx", "BEGIN; SELECT 1"),
        ("sess", "SELECT 1"),
        ("sess", "BEGIN"),
    ] {
        let mut conn = connect(pool);
        let r = conn.simple_query(setup).expect("setup");
        assert!(!errored(&r), "{setup}: {r:?}");
        let marker = format!("victim-{pool}-{}", setup.len());
        let (msgs, closed, _) = killed_mid_query(
            &cluster,
            SHARD_DBS[0],
            conn,
            &format!("SELECT pg_sleep(30) /* {marker} */"),
            &marker,
        );
        assert!(
            closed,
            "{pool} after {setup}: not closed: {}",
            raw::tags(&msgs)
        );
        let tags = raw::tags(&msgs);
        assert!(
            tags == "E" || tags == "TE",
            "{pool} after {setup}: {msgs:?}"
        );
        let e = msgs.last().expect("the error");
        assert_eq!(e.field(b'V').as_deref(), Some("FATAL"));
        assert_eq!(e.sqlstate().as_deref(), Some("57P01"));
    }
}

/// psql's stderr when the backend under `select pg_sleep(30)` is terminated, connecting with
/// `conninfo` (`db` names the database the backend runs in).
fn psql_killed(
    cluster: &Cluster,
    conninfo: &str,
    db: &str,
    marker: &str,
    password: &str,
) -> String {
    let conninfo = conninfo.to_string();
    let sql = format!("SELECT 1; SELECT pg_sleep(30) /* {marker} */; SELECT 2;");
    let bin = cluster.bin_dir().join("psql");
    let password = password.to_string();
    let run = std::thread::spawn(move || {
        Command::new(bin)
            .env("PGPASSWORD", password)
            .args([&conninfo, "-X", "-A", "-t", "-c", &sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql")
    });
    let filter = format!("query LIKE '%{marker}%' AND state = 'active'");
    assert!(
        support::wait_until(Duration::from_secs(10), || terminate(cluster, db, &filter)
            > 0),
        "the query never ran"
    );
    let out = run.join().expect("psql thread");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn one_error_per_fatal_psql_as_postgresql_says_it() {
    let cluster = fault_cluster();
    let pooler = Pooler::start(&fault_toml(&cluster, free_port(), 2, ""));
    let direct = psql_killed(
        &cluster,
        &format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            cluster.primary.port, SHARD_DBS[0]
        ),
        SHARD_DBS[0],
        "direct-psql",
        "postgres",
    );
    assert!(
        direct.contains("FATAL:  terminating connection due to administrator command"),
        "{direct}"
    );
    // Session mode: exactly what PostgreSQL's own connection says.
    let pooled = psql_killed(
        &cluster,
        &format!(
            "host=127.0.0.1 port={} user={SCRAM_USER} dbname=sess",
            pooler.port
        ),
        SHARD_DBS[0],
        "session-psql",
        SCRAM_PASS,
    );
    assert_eq!(pooled, direct, "session mode");
    // Transaction mode: the statement fails with PostgreSQL's error, once, as an ERROR.
    let pooled = psql_killed(
        &cluster,
        &format!(
            "host=127.0.0.1 port={} user={SCRAM_USER} dbname=tx",
            pooler.port
        ),
        SHARD_DBS[0],
        "transaction-psql",
        SCRAM_PASS,
    );
    assert_eq!(
        pooled.trim(),
        "ERROR:  terminating connection due to administrator command",
        "transaction mode"
    );
}

#[test]
fn one_error_per_fatal_psycopg() {
    let python = match support::python_venv() {
        Ok(p) => p,
        Err(reason) => panic!("psycopg is needed: {reason}"),
    };
    let cluster = fault_cluster();
    let pooler = Pooler::start(&fault_toml(&cluster, free_port(), 2, ""));
    let out = Command::new(python)
        .arg(support::repo_path("tests/python/faults.py"))
        .env("PGCAT_PORT", pooler.port.to_string())
        .env("DIRECT_PORT", cluster.primary.port.to_string())
        .env("PGCAT_USER", SCRAM_USER)
        .env("PGCAT_PASSWORD", SCRAM_PASS)
        .env("SHARD_DB", SHARD_DBS[0])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "faults.py failed\n--- stdout\n{stdout}\n--- stderr\n{}\n--- pooler log\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail(&pooler.logs(), 40)
    );
    for check in [
        "transaction-autocommit",
        "transaction-in-transaction",
        "session",
    ] {
        assert!(
            stdout.contains(&format!("CHECK {check} ok")),
            "{check} missing:\n{stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Bytes before the startup packet
// ---------------------------------------------------------------------------------------------

/// What a server sends back for `bytes` sent in place of a startup packet, until it closes.
fn answer_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn bytes_before_the_startup_packet_are_closed_as_postgresql_closes_them() {
    let cluster = fault_cluster();
    let pooler = Pooler::start(&fault_toml(&cluster, free_port(), 2, ""));
    let cases: [(&str, Vec<u8>); 3] = [
        ("Terminate", raw::terminate()),
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("zero length", vec![0, 0, 0, 0]),
    ];
    for (name, bytes) in cases {
        let direct = answer_to(cluster.primary.port, &bytes);
        let pooled = answer_to(pooler.port, &bytes);
        assert_eq!(
            pooled,
            direct,
            "{name}: the pooler answered {:?}",
            String::from_utf8_lossy(&pooled)
        );
    }
    // The pooler is fine afterwards.
    let mut c = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, "tx").expect("connect");
    assert!(!errored(&c.simple_query("SELECT 1").expect("query")));
}
