//! Issue 8, "Must show" items 2 and 3: hostile and broken clients.
//!
//! 2. Malformed bytes (truncated startup, startup length -1 and 2^31-1, unknown protocol
//!    versions, unknown message tags after login, Bind with more parameters than declared,
//!    invalid UTF-8 in a SET extension, Query lengths -1 / 2^31-1 / below 4, a Query claiming
//!    more bytes than it sends): each gets an ErrorResponse or a closed socket within a bounded
//!    time, the pooler's memory stays flat (VmRSS / VmSize / open fds of the pooler process,
//!    found by scanning /proc/*/cmdline for the config path the harness wrote), and a
//!    tokio-postgres client keeps working after every case (checked in the same test).
//! 3. `client_login_timeout = 1000`: 1,000 silent TCP clients are closed on time while
//!    `pgbench -S -c 10 -j 2 -T 5` runs through the pooler with 0 failed transactions;
//!    `max_client_conn = 50`: the 51st client gets 53300, the first 50 keep working.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::raw::{self, LoginError, Msg, RawConn};
use support::{
    free_port, general_toml, run_client, runtime, shared, wait_until, Cluster, Pooler, DB,
    MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};
use tokio_postgres::SimpleQueryMessage;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The tests here measure timing and the pooler's memory: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The pid of the pooler process: `Pooler` does not expose its child, so scan
/// /proc/*/cmdline for the (unique, per-pooler) config path the harness wrote.
fn pooler_pid(pooler: &Pooler) -> i32 {
    let wanted = pooler.config_path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == wanted.as_bytes())
        {
            found.push(pid);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "processes whose command line holds {wanted}: {found:?}"
    );
    found[0]
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

/// Splits bytes into v3 messages as far as they frame; the rest is returned raw.
fn frames(mut bytes: &[u8]) -> (Vec<Msg>, Vec<u8>) {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len < 4 || bytes.len() < 1 + len {
            break;
        }
        out.push(Msg {
            tag: bytes[0],
            body: bytes[5..1 + len].to_vec(),
        });
        bytes = &bytes[1 + len..];
    }
    (out, bytes.to_vec())
}

fn describe(msgs: &[Msg]) -> String {
    msgs.iter()
        .map(|m| match m.tag {
            b'E' | b'N' => format!(
                "{}({} {})",
                m.kind(),
                m.field(b'C').unwrap_or_default(),
                m.field(b'M').unwrap_or_default()
            ),
            _ => m.kind().to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The case must end with the socket closed within `limit`, having received nothing but
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
// 2. Malformed bytes
// ---------------------------------------------------------------------------------------------

const LOGIN_TIMEOUT_MS: u64 = 5000;
/// Bound for a case the pooler can judge from the bytes it has: well below the login
/// timeout, so an answer within it was not the login timeout firing.
const PROMPT: Duration = Duration::from_secs(3);

/// Pool `app` on the primary, transaction mode: scram_user with ONE server (so a server
/// left mid-message by a hostile client would be the very one the other client gets next),
/// md5_user with 10 (for the concurrent holders).
fn malformed_toml(cluster: &Cluster, port: u16) -> String {
    format!(
        "{}client_login_timeout = {LOGIN_TIMEOUT_MS}\n\
         \n[pools.{DB}]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n\
         \n[pools.{DB}.users.0]\nusername = \"{SCRAM_USER}\"\npassword = \"{SCRAM_PASS}\"\npool_size = 1\n\
         \n[pools.{DB}.users.1]\nusername = \"{MD5_USER}\"\npassword = \"{MD5_PASS}\"\npool_size = 10\n\
         \n[pools.{DB}.shards.0]\ndatabase = \"{DB}\"\nservers = [[\"{}\", {}, \"primary\"]]\n",
        general_toml(port),
        cluster.primary.host,
        cluster.primary.port
    )
}

/// One round of every sequential malformed-input case; the other client is checked after each.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs one case; a failed assertion inside is recorded (with the case name) instead of
/// ending the test, so one run reports every case that fails.
fn case(fails: &mut Vec<String>, what: &str, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        fails.push(format!("[{what}] {}", panic_text(&p)));
    }
}

/// One round of every sequential malformed-input case; the other client is checked after each.
fn malformed_round(
    round: usize,
    rt: &tokio::runtime::Runtime,
    observer: &tokio_postgres::Client,
    pooler: &Pooler,
    with_slow_cases: bool,
    fails: &mut Vec<String>,
) {
    let check =
        |what: &str| check_other_client(rt, observer, pooler, &format!("round {round}: {what}"));
    let name = |what: &str| format!("round {round}: {what}");

    // --- Startup phase -----------------------------------------------------------------------
    let what = "truncated startup: 2 bytes of the length, then the client shuts down its side";
    case(fails, &name(what), || {
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
    case(fails, &name(what), || {
        let mut s = tcp(pooler);
        send(&mut s, &partial);
        let _ = s.shutdown(Shutdown::Write);
        expect_error_or_close(what, &mut s, PROMPT, pooler);
        check(what);
    });
    if with_slow_cases {
        let what = "truncated startup: length 100, 20 bytes sent, then the client waits";
        case(fails, &name(what), || {
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
        case(fails, &name(what), || {
            let mut s = tcp(pooler);
            send(&mut s, &bytes);
            expect_error_or_close(what, &mut s, PROMPT, pooler);
            check(what);
        });
    }

    // --- After login ---------------------------------------------------------------------------
    let what = "Query with length 2^31-1 after login";
    case(fails, &name(what), || {
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
        case(fails, &name(what), || {
            let mut c = login(pooler, SCRAM_USER, SCRAM_PASS);
            send(&mut c.stream, &bytes);
            expect_error_or_close(what, &mut c.stream, PROMPT, pooler);
            check(what);
        });
    }
    for tag in [b'y', 0x00, 0xFF, b'!'] {
        let what = format!("unknown message tag 0x{tag:02x} after login");
        let mut extra: Vec<String> = Vec::new();
        case(fails, &name(&what), || {
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
        fails.append(&mut extra);
        // If the case failed, check the other client once more after the hostile one left.
        if fails.last().is_some_and(|f| f.contains(&what)) {
            case(
                fails,
                &name(&format!("{what}, after that client closed")),
                || check(&what),
            );
        }
    }
    let what = "Bind with 3 parameters for an unnamed Parse declaring 1";
    case(fails, &name(what), || {
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
    case(fails, &name(what), || {
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
        case(fails, &name(what), || {
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
        case(fails, &name(&what), || {
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
    case(fails, &name(what), || {
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
    let _serial = serial();
    let cluster = shared();
    let pooler = Pooler::start(&malformed_toml(cluster, free_port()));
    let pid = pooler_pid(&pooler);
    eprintln!(
        "pooler pid {pid} (found by scanning /proc/*/cmdline for {})",
        pooler.config_path.display()
    );
    let rt = runtime();
    let mut fails: Vec<String> = Vec::new();

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
    malformed_round(1, &rt, &observer, &pooler, true, &mut fails);
    std::thread::sleep(Duration::from_millis(300));
    let rss_round1 = status_kb(pid, "VmRSS");
    eprintln!("after round 1: VmRSS {rss_round1} kB");

    // Concurrent holders: clients that claim big messages and then sit there. A pooler that
    // allocated what the length claims would hold it now (VmSize; VmRSS would not show an
    // untouched allocation) and leave these sockets waiting.
    case(
        &mut fails,
        "concurrent holders of 100 MB Query claims",
        || {
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
            "while holding 5 x 100 MB Query claims: VmSize {size_before} -> {size_held} kB, VmRSS {rss_before} -> {rss_held} kB"
        );
            // 5 x 100 MB = 500 MB if the claims were allocated; allow 200 MB for thread stacks
            // and malloc arenas (64 MB each) of the pooler's own threads.
            assert!(
            size_held < size_before + 200 * 1024,
            "the pooler's VmSize grew from {size_before} kB to {size_held} kB while 5 clients each claimed a 100 MB Query (sent 10 bytes)"
        );
            assert!(
            rss_held < rss_before + 16 * 1024,
            "the pooler's VmRSS grew from {rss_before} kB to {rss_held} kB while 5 clients each claimed a 100 MB Query"
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
        },
    );

    // More rounds: leaks per bad connection would add up.
    for round in 2..=6 {
        malformed_round(round, &rt, &observer, &pooler, false, &mut fails);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_end = status_kb(pid, "VmRSS");
    let size_end = status_kb(pid, "VmSize");
    let fds_ok = wait_until(Duration::from_secs(10), || open_fds(pid) <= fds_start + 2);
    let fds_end = open_fds(pid);
    eprintln!(
        "after 6 rounds: VmRSS {rss_start} -> {rss_round1} -> {rss_end} kB, VmSize {size_start} -> {size_end} kB, fds {fds_start} -> {fds_end}"
    );
    case(&mut fails, "memory after 6 rounds", || {
        assert!(
            rss_end < rss_start + 16 * 1024,
            "the pooler's VmRSS grew from {rss_start} kB to {rss_end} kB over 6 rounds of malformed input"
        );
        assert!(
            rss_end < rss_round1 + 8 * 1024,
            "the pooler's VmRSS grew from {rss_round1} kB (after round 1) to {rss_end} kB over rounds 2-6"
        );
        assert!(
            fds_ok,
            "the pooler holds {fds_end} open files after the malformed clients left, {fds_start} before (stuck client tasks?)"
        );
    });
    case(&mut fails, "other client at the end", || {
        check_other_client(&rt, &observer, &pooler, "all rounds")
    });
    assert!(
        fails.is_empty(),
        "{} failed checks:\n{}",
        fails.len(),
        fails.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Silent clients, client_login_timeout, max_client_conn
// ---------------------------------------------------------------------------------------------

/// Raises this process's open-file soft limit to its hard limit.
fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    assert!(
        limit.rlim_cur >= needed,
        "open-file limit {} is below the {needed} this test needs",
        limit.rlim_cur
    );
}

/// TCP counters of this network namespace (/proc/net/netstat), for diagnostics.
fn netstat() -> Vec<(String, i64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        if let [names, values] = pair {
            let prefix = names.split(':').next().unwrap_or_default();
            for (n, v) in names
                .split_whitespace()
                .skip(1)
                .zip(values.split_whitespace().skip(1))
            {
                out.push((format!("{prefix}{n}"), v.parse().unwrap_or(0)));
            }
        }
    }
    out
}

fn netstat_delta(before: &[(String, i64)], after: &[(String, i64)]) -> String {
    let wanted = [
        "TcpExtListenOverflows",
        "TcpExtListenDrops",
        "TcpExtSyncookiesSent",
        "TcpExtSyncookiesRecv",
        "TcpExtTCPReqQFullDrop",
        "TcpExtTCPReqQFullDoCookies",
    ];
    wanted
        .iter()
        .map(|w| {
            let get = |v: &[(String, i64)]| v.iter().find(|(n, _)| n == w).map_or(0, |(_, x)| *x);
            format!("{w} +{}", get(after) - get(before))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ss -ltn` line of the pooler's listening socket (Send-Q is its accept backlog).
fn listen_socket(port: u16) -> String {
    std::process::Command::new("ss")
        .args(["-ltn", &format!("sport = :{port}")])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .replace('\n', " | ")
        })
        .unwrap_or_else(|e| format!("(ss: {e})"))
}

const BENCH_DB: &str = "robust_bench";
const SILENT: usize = 1000;

#[test]
fn silent_clients_closed_by_client_login_timeout_while_pgbench_runs_clean() {
    let _serial = serial();
    raise_fd_limit(SILENT as u64 + 500);
    let cluster = shared();
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {BENCH_DB};\nCREATE DATABASE {BENCH_DB} OWNER {SCRAM_USER};"),
        )
        .unwrap_or_else(|e| panic!("create {BENCH_DB}: {e}"));
    let init = run_client(
        cluster,
        "pgbench",
        SCRAM_PASS,
        &[
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            &cluster.primary.host,
            "-p",
            &cluster.primary.port.to_string(),
            "-U",
            SCRAM_USER,
            BENCH_DB,
        ],
        Duration::from_secs(180),
    );
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    let port = free_port();
    let toml = format!(
        "{}client_login_timeout = 1000\n\
         \n[pools.{BENCH_DB}]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n\
         \n[pools.{BENCH_DB}.users.0]\nusername = \"{SCRAM_USER}\"\npassword = \"{SCRAM_PASS}\"\npool_size = 10\n\
         \n[pools.{BENCH_DB}.shards.0]\ndatabase = \"{BENCH_DB}\"\nservers = [[\"{}\", {}, \"primary\"]]\n",
        general_toml(port),
        cluster.primary.host,
        cluster.primary.port
    );
    let pooler = Pooler::start(&toml);
    let rt = runtime();

    let netstat_before = netstat();
    // 1,000 clients connect and send nothing; each records when its socket closed.
    let connected = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..SILENT)
        .map(|_| {
            let connected = connected.clone();
            rt.spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut s = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
                let t0 = Instant::now();
                connected.fetch_add(1, Ordering::SeqCst);
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                let end = tokio::time::timeout(Duration::from_secs(15), async {
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                })
                .await;
                match end {
                    Ok(()) => Ok((t0.elapsed(), got)),
                    Err(_) => Err(format!(
                        "still open after 15 s; received {} bytes",
                        got.len()
                    )),
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || connected.load(Ordering::SeqCst)
            == SILENT),
        "only {} of {SILENT} silent clients connected",
        connected.load(Ordering::SeqCst)
    );

    // pgbench alongside: it logs in while the 1,000 are pending and runs while they expire.
    let bench = {
        let port = port.to_string();
        std::thread::spawn(move || {
            let cluster = shared();
            run_client(
                cluster,
                "pgbench",
                SCRAM_PASS,
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    SCRAM_USER,
                    "-n",
                    "-c",
                    "10",
                    "-j",
                    "2",
                    "-T",
                    "5",
                    "-S",
                    BENCH_DB,
                ],
                Duration::from_secs(120),
            )
        })
    };

    let results: Vec<Result<(Duration, Vec<u8>), String>> = rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
        out
    });
    let out = bench.join().expect("pgbench thread");

    // Closed on time: not before the timeout, and within 1 s + 2 s of margin.
    let upper = Duration::from_millis(3000);
    let lower = Duration::from_millis(950);
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok((after, bytes)) => {
                times.push(*after);
                let (msgs, rest) = frames(bytes);
                if !(rest.is_empty() && msgs.iter().all(|m| m.tag == b'E')) {
                    failures.push(format!(
                        "client {i}: received [{}] + raw {rest:?}",
                        describe(&msgs)
                    ));
                }
                if *after > upper || *after < lower {
                    failures.push(format!("client {i}: closed after {after:?}"));
                }
            }
            Err(e) => failures.push(format!("client {i}: {e}")),
        }
    }
    times.sort();
    if !times.is_empty() {
        eprintln!(
            "{} silent clients closed after: min {:?}, median {:?}, p99 {:?}, max {:?}",
            times.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1]
        );
    }
    let silent_report = format!(
        "{} of {SILENT} silent clients not closed within [{lower:?}, {upper:?}] of connecting (client_login_timeout = 1000 ms); first: {:?}\n\
         kernel counters during the burst: {}; the pooler's listening socket: {}",
        failures.len(),
        &failures[..failures.len().min(10)],
        netstat_delta(&netstat_before, &netstat()),
        listen_socket(port),
    );

    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let context = format!(
        "--- pgbench stdout\n{stdout}\n--- stderr (tail)\n{}\n--- pooler log (tail)\n{}",
        tail(&stderr, 20),
        tail(&pooler.logs(), 30)
    );
    let processed: Option<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.trim().parse().ok());
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .map(str::to_owned);
    eprintln!(
        "pgbench -S -c 10 -j 2 -T 5 alongside {SILENT} silent clients: exit {}, processed {processed:?}, failed {failed:?}",
        out.status
    );
    assert!(failures.is_empty(), "{silent_report}");
    assert!(
        out.status.success(),
        "pgbench exited {}:\n{context}",
        out.status
    );
    let processed = processed.unwrap_or_else(|| panic!("no processed count:\n{context}"));
    assert!(
        processed > 0,
        "pgbench processed no transactions:\n{context}"
    );
    let failed = failed.unwrap_or_else(|| panic!("no failed-transaction count:\n{context}"));
    assert!(
        failed.starts_with("0 "),
        "failed transactions {failed}:\n{context}"
    );
}

#[test]
fn max_client_conn_50_refuses_the_51st_with_53300_and_keeps_the_50() {
    let _serial = serial();
    let cluster = shared();
    let port = free_port();
    let toml = format!(
        "{}max_client_conn = 50\n\
         \n[pools.{DB}]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n\
         \n[pools.{DB}.users.0]\nusername = \"{SCRAM_USER}\"\npassword = \"{SCRAM_PASS}\"\npool_size = 5\n\
         \n[pools.{DB}.shards.0]\ndatabase = \"{DB}\"\nservers = [[\"{}\", {}, \"primary\"]]\n",
        general_toml(port),
        cluster.primary.host,
        cluster.primary.port
    );
    let pooler = Pooler::start(&toml);
    // The harness's readiness probe was a connection too; let the pooler see it leave.
    std::thread::sleep(Duration::from_millis(300));

    let mut clients: Vec<RawConn> = (0..50)
        .map(|i| {
            RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).unwrap_or_else(|e| {
                panic!(
                    "client {} of 50 refused: {e}\n{}",
                    i + 1,
                    tail(&pooler.logs(), 20)
                )
            })
        })
        .collect();

    match RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB) {
        Err(LoginError::Server { sqlstate, message }) => {
            assert_eq!(sqlstate, "53300", "51st client: {message}");
            eprintln!("51st client: {sqlstate} {message}");
        }
        Err(e) => panic!("51st client: expected ErrorResponse 53300, got {e}"),
        Ok(_) => panic!("51st client logged in with max_client_conn = 50"),
    }

    for (i, c) in clients.iter_mut().enumerate() {
        let got = c.simple_query(&format!("SELECT {i}")).unwrap_or_else(|e| {
            panic!(
                "client {} of the first 50 after the 51st was refused: {e}",
                i + 1
            )
        });
        let row = got.iter().find(|m| m.tag == b'D').map(Msg::row);
        assert_eq!(
            row,
            Some(vec![Some(i.to_string())]),
            "client {} of the first 50: [{}]",
            i + 1,
            describe(&got)
        );
    }

    // One leaves: there is room for one again.
    let mut gone = clients.pop().expect("50 clients");
    gone.send(&raw::terminate()).expect("terminate");
    drop(gone);
    let mut again = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            again = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).ok();
            again.is_some()
        }),
        "after one of 50 left, a new client is still refused\n{}",
        tail(&pooler.logs(), 20)
    );
    let got = again
        .as_mut()
        .unwrap()
        .simple_query("SELECT 'in'")
        .expect("new client query");
    assert_eq!(
        got.iter().find(|m| m.tag == b'D').map(Msg::row),
        Some(vec![Some("in".to_owned())])
    );
}
