//! Issue 8, "Must show" item 2: malformed bytes from hostile and broken clients.
//!
//! Truncated startup, startup length -1 and 2^31-1, unknown protocol versions, unknown message
//! tags after login, Bind with more parameters than declared, invalid UTF-8 in a SET extension,
//! Query lengths -1 / 2^31-1 / below 4, a Query claiming more bytes than it sends: each gets an
//! ErrorResponse or a closed socket within a bounded time, the pooler's memory stays flat
//! (VmRSS / VmSize / open fds of the pooler process), and a tokio-postgres client keeps working
//! after every case (checked in the same test).
//!
//! Item 3 (silent clients, client_login_timeout, max_client_conn) is in tests/robustness.rs.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use support::raw::{self, brief as describe, frames, Msg, RawConn};
use support::{
    free_port, panic_text, primary_pool_toml, runtime, shared, tail, wait_until, Checks, Cluster,
    Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};
use tokio_postgres::SimpleQueryMessage;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The pooler's pid, checked against /proc/<pid>/cmdline: the process runs on the
/// (unique, per-pooler) config path the harness wrote.
fn pooler_pid(pooler: &Pooler) -> i32 {
    let pid = pooler.pid() as i32;
    let wanted = pooler.config_path.to_string_lossy().into_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("pooler process {pid}: {e}"));
    assert!(
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == wanted.as_bytes()),
        "process {pid} does not run on {wanted}"
    );
    pid
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmSize, ...).
fn status_kb(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("pooler process {pid} is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// A /proc/<pid>/status figure (`what`, kB) must have grown by less than `slack_kb` from
/// `(before, after)`; `during` says when.
fn assert_grew_less(what: &str, (before, after): (u64, u64), slack_kb: u64, during: &str) {
    assert!(
        after < before + slack_kb,
        "the pooler's {what} grew from {before} kB to {after} kB {during}"
    );
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("pooler process {pid}: {e}"))
}

/// A framed message: tag, length (counting itself), body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A bare message header with an arbitrary length field.
fn header(tag: u8, len: u32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// A startup packet with protocol `version` and `user`/`database` parameters, well framed.
fn startup_with_version(version: u32) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in [("user", SCRAM_USER), ("database", DB)] {
        cstr(&mut body, k.as_bytes());
        cstr(&mut body, v.as_bytes());
    }
    body.push(0);
    let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A protocol 2.0 StartupPacket: fixed 296 bytes (length, version, database[64], user[32],
/// options[64], unused[64], tty[64]).
fn startup_v2() -> Vec<u8> {
    let mut out = 296u32.to_be_bytes().to_vec();
    out.extend_from_slice(&0x0002_0000u32.to_be_bytes());
    let mut field = |s: &str, n: usize| {
        let mut f = s.as_bytes().to_vec();
        f.resize(n, 0);
        out.extend_from_slice(&f);
    };
    field(DB, 64);
    field(SCRAM_USER, 32);
    field("", 64);
    field("", 64);
    field("", 64);
    assert_eq!(out.len(), 296);
    out
}

/// Parse with explicit parameter type OIDs.
fn parse_typed(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name.as_bytes());
    cstr(&mut body, sql.as_bytes());
    body.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for t in types {
        body.extend_from_slice(&t.to_be_bytes());
    }
    msg(b'P', &body)
}

/// A Bind whose parameter-count field says `claimed` while the body carries `values`;
/// `value_len` overrides the length field of the first value.
fn bind_raw(statement: &str, claimed: i16, values: &[&[u8]], value_len: Option<i32>) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, b"");
    cstr(&mut body, statement.as_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&claimed.to_be_bytes());
    for (i, v) in values.iter().enumerate() {
        let len = if i == 0 {
            value_len.unwrap_or(v.len() as i32)
        } else {
            v.len() as i32
        };
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(v);
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &body)
}

/// What a socket saw until it closed.
struct Closed {
    bytes: Vec<u8>,
    after: Duration,
}

/// Reads until EOF (or reset) within `limit`; `Err` with what was read if it stayed open.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Result<Closed, Vec<u8>> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(bytes);
        }
        stream
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .expect("set_read_timeout");
        match stream.read(&mut buf) {
            Ok(0) => {
                return Ok(Closed {
                    bytes,
                    after: start.elapsed(),
                })
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                // Reset / aborted: closed.
                return Ok(Closed {
                    bytes,
                    after: start.elapsed(),
                });
            }
        }
    }
}

/// ErrorResponse/NoticeResponse messages (or nothing at all). Returns the SQLSTATEs.
fn expect_error_or_close(
    what: &str,
    stream: &mut TcpStream,
    limit: Duration,
    pooler: &Pooler,
) -> Vec<String> {
    let closed = read_to_close(stream, limit).unwrap_or_else(|bytes| {
        let (msgs, rest) = frames(&bytes);
        panic!(
            "{what}: the socket was still open after {limit:?} (a hang); received {} + {} raw bytes\n--- pooler log (tail)\n{}",
            describe(&msgs),
            rest.len(),
            tail(&pooler.logs(), 30)
        )
    });
    let (msgs, rest) = frames(&closed.bytes);
    assert!(
        rest.is_empty() && msgs.iter().all(|m| matches!(m.tag, b'E' | b'N')),
        "{what}: expected only an ErrorResponse (or nothing) before the close, got {} + raw {:?}",
        describe(&msgs),
        rest
    );
    eprintln!(
        "{what}: closed after {:?}, got [{}]",
        closed.after,
        describe(&msgs)
    );
    msgs.iter().filter_map(Msg::sqlstate).collect()
}

/// After login: the case must produce, within `limit`, either an ErrorResponse and a close
/// (nothing but E/N before it), or an ErrorResponse followed by ReadyForQuery after which
/// the same connection still answers a query.
fn expect_error_then_close_or_usable(
    what: &str,
    conn: &mut RawConn,
    limit: Duration,
    pooler: &Pooler,
) {
    let deadline = Instant::now() + limit;
    let mut got: Vec<Msg> = Vec::new();
    let outcome = loop {
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "{what}: neither closed nor ReadyForQuery within {limit:?} (a hang); got [{}]\n--- pooler log (tail)\n{}",
                describe(&got),
                tail(&pooler.logs(), 30)
            );
        }
        conn.set_read_timeout(deadline - now);
        match conn.read_msg() {
            Ok(m) => {
                let ready = m.tag == b'Z';
                got.push(m);
                if ready {
                    break "ready";
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break "closed",
        }
    };
    let errors = got.iter().filter(|m| m.tag == b'E').count();
    match outcome {
        "closed" => assert!(
            got.iter().all(|m| matches!(m.tag, b'E' | b'N')),
            "{what}: expected only ErrorResponse before the close, got [{}]",
            describe(&got)
        ),
        _ => {
            assert!(
                errors >= 1,
                "{what}: the connection carried on without an ErrorResponse: [{}]",
                describe(&got)
            );
            assert!(
                got.iter()
                    .all(|m| matches!(m.tag, b'E' | b'N' | b'1' | b'Z' | b'S')),
                "{what}: unexpected messages [{}]",
                describe(&got)
            );
            conn.set_read_timeout(Duration::from_secs(10));
            let after = conn
                .simple_query("SELECT 'still here'")
                .unwrap_or_else(|e| {
                    panic!("{what}: the connection answered ReadyForQuery but then failed: {e}")
                });
            let row = after.iter().find(|m| m.tag == b'D').map(Msg::row);
            assert_eq!(
                row,
                Some(vec![Some("still here".to_owned())]),
                "{what}: query on the same connection after the error: [{}]",
                describe(&after)
            );
        }
    }
    eprintln!("{what}: {outcome}, got [{}]", describe(&got));
}

/// Logs in with the raw client; panics with the reason.
fn login(pooler: &Pooler, user: &str, password: &str) -> RawConn {
    RawConn::connect(pooler.port, user, password, DB)
        .unwrap_or_else(|e| panic!("raw login as {user}: {e}\n{}", tail(&pooler.logs(), 30)))
}

/// Raw TCP connection to the pooler with a 10 s read timeout.
fn tcp(pooler: &Pooler) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", pooler.port)).expect("connect to the pooler");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Sends bytes; a write the pooler already refused (it closed first) is not an error here.
fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// The other client: the long-lived one answers, and a fresh one can log in and query.
fn check_other_client(
    rt: &tokio::runtime::Runtime,
    observer: &tokio_postgres::Client,
    pooler: &Pooler,
    after: &str,
) {
    rt.block_on(async {
        let limit = Duration::from_secs(20);
        let one = |msgs: Vec<SimpleQueryMessage>| {
            msgs.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
        };
        let r = tokio::time::timeout(limit, observer.simple_query("SELECT 40 + 2"))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "after {after}: the other client's query hung for {limit:?}\n{}",
                    tail(&pooler.logs(), 30)
                )
            })
            .unwrap_or_else(|e| {
                panic!(
                    "after {after}: the other client's query failed: {e:?}\n{}",
                    tail(&pooler.logs(), 30)
                )
            });
        assert_eq!(one(r).as_deref(), Some("42"), "after {after}: other client");
        let fresh = tokio::time::timeout(limit, pooler.connect(SCRAM_USER, SCRAM_PASS, DB))
            .await
            .unwrap_or_else(|_| panic!("after {after}: a new client's login hung"))
            .unwrap_or_else(|e| {
                panic!(
                    "after {after}: a new client cannot log in: {e:?}\n{}",
                    tail(&pooler.logs(), 30)
                )
            });
        let r = tokio::time::timeout(limit, fresh.simple_query("SELECT 'fresh'"))
            .await
            .unwrap_or_else(|_| panic!("after {after}: a new client's query hung"))
            .unwrap_or_else(|e| panic!("after {after}: a new client's query failed: {e:?}"));
        assert_eq!(
            one(r).as_deref(),
            Some("fresh"),
            "after {after}: new client"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------

const LOGIN_TIMEOUT_MS: u64 = 5000;
/// Bound for a case the pooler can judge from the bytes it has: well below the login
/// timeout, so an answer within it was not the login timeout firing.
const PROMPT: Duration = Duration::from_secs(3);

/// Pool `app` on the primary, transaction mode: scram_user with ONE server (so a server
/// left mid-message by a hostile client would be the very one the other client gets next),
/// md5_user with 10 (for the concurrent holders).
fn malformed_toml(cluster: &Cluster, port: u16) -> String {
    primary_pool_toml(
        cluster,
        port,
        &format!("client_login_timeout = {LOGIN_TIMEOUT_MS}\n"),
        DB,
        "",
        &[(SCRAM_USER, SCRAM_PASS, 1), (MD5_USER, MD5_PASS, 10)],
    )
}

/// One round of every sequential malformed-input case; the other client is checked after each.
fn malformed_round(
    round: usize,
    rt: &tokio::runtime::Runtime,
    observer: &tokio_postgres::Client,
    pooler: &Pooler,
    with_slow_cases: bool,
    checks: &mut Checks,
) {
    let check =
        |what: &str| check_other_client(rt, observer, pooler, &format!("round {round}: {what}"));
    let name = |what: &str| format!("round {round}: {what}");

    // --- Startup phase -----------------------------------------------------------------------
    let what = "truncated startup: 2 bytes of the length, then the client shuts down its side";
    checks.run(&name(what), || {
        let mut s = tcp(pooler);
        send(&mut s, &[0, 0]);
        let _ = s.shutdown(Shutdown::Write);
        expect_error_or_close(what, &mut s, PROMPT, pooler);
        check(what);
    });
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(&196_608u32.to_be_bytes());
    partial.extend_from_slice(b"user\0scram_u");
    let what = "truncated startup: length 100, 20 bytes sent, then the client shuts down its side";
    checks.run(&name(what), || {
        let mut s = tcp(pooler);
        send(&mut s, &partial);
        let _ = s.shutdown(Shutdown::Write);
        expect_error_or_close(what, &mut s, PROMPT, pooler);
        check(what);
    });
    if with_slow_cases {
        let what = "truncated startup: length 100, 20 bytes sent, then the client waits";
        checks.run(&name(what), || {
            let mut s = tcp(pooler);
            send(&mut s, &partial);
            let limit = Duration::from_millis(LOGIN_TIMEOUT_MS) + Duration::from_secs(3);
            expect_error_or_close(what, &mut s, limit, pooler);
            check(what);
        });
    }
    for (what, bytes) in [
        (
            "startup length -1 (0xFFFFFFFF)",
            0xFFFF_FFFFu32.to_be_bytes().to_vec(),
        ),
        ("startup length 2^31-1", {
            let mut b = 0x7FFF_FFFFu32.to_be_bytes().to_vec();
            b.extend_from_slice(&196_608u32.to_be_bytes());
            b.extend_from_slice(b"user\0");
            b
        }),
        (
            "startup length 3 (below the minimum)",
            3u32.to_be_bytes().to_vec(),
        ),
        ("protocol version 2.0 (v2 StartupPacket)", startup_v2()),
        ("protocol version 4.0", startup_with_version(0x0004_0000)),
        ("protocol version 0.0", startup_with_version(0)),
        (
            "protocol version 65535.65535",
            startup_with_version(0xFFFF_FFFF),
        ),
        ("startup 3.0 with an unterminated parameter", {
            let mut body = 196_608u32.to_be_bytes().to_vec();
            body.extend_from_slice(b"user\0scram_user\0database\0app");
            let mut b = (body.len() as u32 + 4).to_be_bytes().to_vec();
            b.extend_from_slice(&body);
            b
        }),
    ] {
        // The client sends these and waits: the answer must not need the login timeout.
        checks.run(&name(what), || {
            let mut s = tcp(pooler);
            send(&mut s, &bytes);
            expect_error_or_close(what, &mut s, PROMPT, pooler);
            check(what);
        });
    }

    // --- After login ---------------------------------------------------------------------------
    let what = "Query with length 2^31-1 after login";
    checks.run(&name(what), || {
        let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
        send(&mut c.stream, &header(b'Q', 0x7FFF_FFFF));
        let states = expect_error_or_close(what, &mut c.stream, PROMPT, pooler);
        assert_eq!(
            states,
            vec!["08P01".to_owned()],
            "{what}: expected exactly one ErrorResponse 08P01 before the close"
        );
        check(what);
    });
    for (what, bytes) in [
        (
            "Query with length -1 (0xFFFFFFFF) after login",
            header(b'Q', 0xFFFF_FFFF),
        ),
        ("Query with length 2 (below 4) after login", header(b'Q', 2)),
        (
            "Bind with length 2^31-1 after login",
            header(b'B', 0x7FFF_FFFF),
        ),
    ] {
        checks.run(&name(what), || {
            let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
            send(&mut c.stream, &bytes);
            expect_error_or_close(what, &mut c.stream, PROMPT, pooler);
            check(what);
        });
    }
    for tag in [b'y', 0x00, 0xFF, b'!'] {
        let what = format!("unknown message tag 0x{tag:02x} after login");
        let mut extra: Vec<String> = Vec::new();
        checks.run(&name(&what), || {
            let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
            send(&mut c.stream, &msg(tag, b"junk\0"));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                expect_error_then_close_or_usable(&what, &mut c, PROMPT, pooler)
            }));
            if r.is_err() && round == 1 && tag == b'y' {
                // Still connected: does the other client (same user, pool_size 1) get served
                // while this one is stuck?
                let other = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    check(&format!("{what} (hostile client still connected)"))
                }));
                if let Err(p) = other {
                    eprintln!(
                        "{what}: other client while the hostile one is connected: {}",
                        panic_text(&p)
                    );
                    extra.push(format!(
                        "[{}] while the unknown-tag client stays connected, the other client is not served: {}",
                        name(&what),
                        panic_text(&p).lines().next().unwrap_or_default()
                    ));
                }
            }
            // Whatever happened, this client leaves now; then the other client must work.
            drop(c);
            if let Err(p) = r {
                let pg = std::fs::read_to_string(shared().primary.log_file()).unwrap_or_default();
                let pg: Vec<&str> = pg
                    .lines()
                    .filter(|l| l.contains("invalid frontend message type"))
                    .collect();
                panic!(
                    "{}\n--- PostgreSQL log, lines about the message (last 2 of {}): {}",
                    panic_text(&p),
                    pg.len(),
                    pg[pg.len().saturating_sub(2)..].join(" | ")
                );
            }
            check(&what);
        });
        checks.0.append(&mut extra);
        // If the case failed, check the other client once more after the hostile one left.
        if checks.0.last().is_some_and(|f| f.contains(&what)) {
            checks.run(&name(&format!("{what}, after that client closed")), || {
                check(&what)
            });
        }
    }
    let what = "Bind with 3 parameters for an unnamed Parse declaring 1";
    checks.run(&name(what), || {
        let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
        let mut batch = parse_typed("", "SELECT $1::int4", &[23]);
        batch.extend(bind_raw("", 3, &[b"1", b"2", b"3"], None));
        batch.extend(raw::execute(""));
        batch.extend(raw::sync());
        send(&mut c.stream, &batch);
        expect_error_then_close_or_usable(what, &mut c, PROMPT, pooler);
        check(what);
    });
    let what = "Bind with 3 parameters for a named statement declaring 1";
    checks.run(&name(what), || {
        let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
        let mut prep = parse_typed("robust_s1", "SELECT $1::int4", &[23]);
        prep.extend(raw::sync());
        send(&mut c.stream, &prep);
        let got = c.read_until_ready().expect("prepare robust_s1");
        assert_eq!(
            raw::tags(&got),
            "1Z",
            "prepare robust_s1: [{}]",
            describe(&got)
        );
        let mut batch = bind_raw("robust_s1", 3, &[b"1", b"2", b"3"], None);
        batch.extend(raw::execute(""));
        batch.extend(raw::sync());
        send(&mut c.stream, &batch);
        expect_error_then_close_or_usable(what, &mut c, PROMPT, pooler);
        check(what);
    });
    for (what, claimed, value_len) in [
        (
            "Bind whose count field claims 1000 parameters but carries 1",
            1000i16,
            None,
        ),
        (
            "Bind whose parameter claims 2^31-1 bytes in a short message",
            1,
            Some(0x7FFF_FFFFi32),
        ),
        ("Bind with a negative parameter count", -5, None),
    ] {
        checks.run(&name(what), || {
            let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
            let mut batch = parse_typed("", "SELECT $1::int4", &[23]);
            batch.extend(bind_raw("", claimed, &[b"1"], value_len));
            batch.extend(raw::execute(""));
            batch.extend(raw::sync());
            send(&mut c.stream, &batch);
            expect_error_then_close_or_usable(what, &mut c, PROMPT, pooler);
            check(what);
        });
    }
    for sql in [
        &b"SET SHARD TO '\xff'"[..],
        &b"SET SHARDING KEY TO '\xff\xfe'"[..],
    ] {
        let what = format!(
            "Query {:?} (invalid UTF-8 in a SET extension)",
            String::from_utf8_lossy(sql)
        );
        checks.run(&name(&what), || {
            let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
            let mut body = Vec::new();
            cstr(&mut body, sql);
            send(&mut c.stream, &msg(b'Q', &body));
            expect_error_then_close_or_usable(&what, &mut c, PROMPT, pooler);
            check(&what);
        });
    }
    // scram_user has one server: if the pooler handed the server that got the first 10 bytes
    // of a 100 MB Query back to the pool, the other client's next query would be swallowed
    // as the rest of that message.
    let what = "Query claiming 100 MB, 10 bytes sent, then the client closes";
    checks.run(&name(what), || {
        let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
        let mut bytes = header(b'Q', 100 * 1024 * 1024);
        bytes.extend_from_slice(b"SELECT 1; ");
        send(&mut c.stream, &bytes);
        std::thread::sleep(Duration::from_millis(200));
        drop(c);
        check(what);
    });
}

#[test]
fn malformed_bytes_get_an_error_or_a_close_memory_stays_flat_other_client_keeps_working() {
    let cluster = shared();
    let pooler = Pooler::start(&malformed_toml(cluster, free_port()));
    let pid = pooler_pid(&pooler);
    eprintln!(
        "pooler pid {pid} (found by scanning /proc/*/cmdline for {})",
        pooler.config_path.display()
    );
    let rt = runtime();
    let mut checks = Checks::new();

    let observer = rt
        .block_on(pooler.connect(SCRAM_USER, SCRAM_PASS, DB))
        .unwrap_or_else(|e| panic!("observer login: {e:?}"));
    // Warm the md5_user pool to the 5 servers the holders below will use.
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let port = pooler.port;
            tasks.push(tokio::spawn(async move {
                let c = support::connect(&format!(
                    "host=127.0.0.1 port={port} user={MD5_USER} password={MD5_PASS} dbname={DB} connect_timeout=10"
                ))
                .await
                .expect("md5_user login");
                c.simple_query("SELECT pg_sleep(0.5)").await.expect("warm-up query");
            }));
        }
        for t in tasks {
            t.await.expect("warm-up task");
        }
    });
    check_other_client(&rt, &observer, &pooler, "start");
    std::thread::sleep(Duration::from_millis(300));

    let rss_start = status_kb(pid, "VmRSS");
    let size_start = status_kb(pid, "VmSize");
    let fds_start = open_fds(pid);
    eprintln!("before: VmRSS {rss_start} kB, VmSize {size_start} kB, {fds_start} fds");

    // Round 1 includes the slow case (truncated startup, client waits for the login timeout).
    malformed_round(1, &rt, &observer, &pooler, true, &mut checks);
    std::thread::sleep(Duration::from_millis(300));
    let rss_round1 = status_kb(pid, "VmRSS");
    eprintln!("after round 1: VmRSS {rss_round1} kB");

    // Concurrent holders: clients that claim big messages and then sit there. A pooler that
    // allocated what the length claims would hold it now (VmSize; VmRSS would not show an
    // untouched allocation) and leave these sockets waiting.
    checks.run("concurrent holders of 100 MB Query claims", || {
        let size_before = status_kb(pid, "VmSize");
        let rss_before = status_kb(pid, "VmRSS");
        let mut holders = Vec::new();
        for _ in 0..5 {
            let mut c = login(&pooler, MD5_USER, MD5_PASS);
            let mut bytes = header(b'Q', 100 * 1024 * 1024);
            bytes.extend_from_slice(b"SELECT 1; ");
            send(&mut c.stream, &bytes);
            holders.push(c);
        }
        let mut prompt = Vec::new();
        for (what, bytes, after_login) in [
            (
                "held: startup length 2^31-1 + 9 bytes",
                {
                    let mut b = 0x7FFF_FFFFu32.to_be_bytes().to_vec();
                    b.extend_from_slice(&196_608u32.to_be_bytes());
                    b.extend_from_slice(b"user\0");
                    b
                },
                false,
            ),
            (
                "held: startup length -1 + 9 bytes",
                {
                    let mut b = 0xFFFF_FFFFu32.to_be_bytes().to_vec();
                    b.extend_from_slice(&196_608u32.to_be_bytes());
                    b.extend_from_slice(b"user\0");
                    b
                },
                false,
            ),
            (
                "held: Query length 2^31-1 + 10 bytes after login",
                {
                    let mut b = header(b'Q', 0x7FFF_FFFF);
                    b.extend_from_slice(b"SELECT 1; ");
                    b
                },
                true,
            ),
        ] {
            let mut s = if after_login {
                login(&pooler, MD5_USER, MD5_PASS).stream
            } else {
                tcp(&pooler)
            };
            send(&mut s, &bytes);
            prompt.push((what, s));
        }
        std::thread::sleep(Duration::from_millis(700));
        let size_held = status_kb(pid, "VmSize");
        let rss_held = status_kb(pid, "VmRSS");
        eprintln!(
            "while holding 5 x 100 MB Query claims: VmSize {size_before} -> {size_held} kB, \
                 VmRSS {rss_before} -> {rss_held} kB"
        );
        // 5 x 100 MB = 500 MB if the claims were allocated; allow 200 MB for thread stacks
        // and malloc arenas (64 MB each) of the pooler's own threads.
        assert_grew_less(
            "VmSize",
            (size_before, size_held),
            200 * 1024,
            "while 5 clients each claimed a 100 MB Query (sent 10 bytes)",
        );
        assert_grew_less(
            "VmRSS",
            (rss_before, rss_held),
            16 * 1024,
            "while 5 clients each claimed a 100 MB Query",
        );
        for (what, mut s) in prompt {
            expect_error_or_close(what, &mut s, PROMPT, &pooler);
        }
        // The holders are waiting for the rest of their message, as PostgreSQL itself would:
        // nothing may be sent to them but an error (and no close without one is required).
        for (i, mut c) in holders.into_iter().enumerate() {
            c.set_read_timeout(Duration::from_millis(200));
            match c.read_msg() {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Ok(m) => assert_eq!(
                    m.tag,
                    b'E',
                    "holder {i}: the pooler sent [{}] for an incomplete 100 MB Query",
                    describe(std::slice::from_ref(&m))
                ),
                Err(_) => {}
            }
            drop(c);
        }
        check_other_client(&rt, &observer, &pooler, "the 100 MB holders closed");
    });

    // More rounds: leaks per bad connection would add up.
    for round in 2..=6 {
        malformed_round(round, &rt, &observer, &pooler, false, &mut checks);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_end = status_kb(pid, "VmRSS");
    let size_end = status_kb(pid, "VmSize");
    let fds_ok = wait_until(Duration::from_secs(10), || open_fds(pid) <= fds_start + 2);
    let fds_end = open_fds(pid);
    eprintln!(
        "after 6 rounds: VmRSS {rss_start} -> {rss_round1} -> {rss_end} kB, VmSize {size_start} -> {size_end} kB, fds {fds_start} -> {fds_end}"
    );
    checks.run("memory after 6 rounds", || {
        assert_grew_less(
            "VmRSS",
            (rss_start, rss_end),
            16 * 1024,
            "over 6 rounds of malformed input",
        );
        assert_grew_less(
            "VmRSS",
            (rss_round1, rss_end),
            8 * 1024,
            "over rounds 2-6 (from after round 1)",
        );
        assert!(
            fds_ok,
            "the pooler holds {fds_end} open files after the malformed clients left, {fds_start} before (stuck client tasks?)"
        );
    });
    checks.run("other client at the end", || {
        check_other_client(&rt, &observer, &pooler, "all rounds")
    });
    checks.finish();
}
