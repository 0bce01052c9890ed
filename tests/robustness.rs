//! Issue 8, "Must show" item 3: many and idle clients.
//!
//! `client_login_timeout = 1000`: 1,000 silent TCP clients are closed on time while
//! `pgbench -S -c 10 -j 2 -T 5` runs through the pooler with 0 failed transactions;
//! `max_client_conn = 50`: the 51st client gets 53300, the first 50 keep working.
//!
//! Item 2 (malformed bytes) is in tests/malformed_input.rs.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::raw::{self, brief as describe, frames, LoginError, Msg, RawConn};
use support::{
    create_database, free_port, pgbench, pgbench_init, pgbench_report, primary_pool_toml, runtime,
    shared, tail, wait_until, Pooler, DB, SCRAM_PASS, SCRAM_USER,
};

/// The tests here measure timing: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// A silent client's end: how long after it started to connect, and after its connect
/// completed, its socket closed, and the bytes it received.
type Closed = (Duration, Duration, Vec<u8>);
const SILENT: usize = 1000;

#[test]
fn silent_clients_closed_by_client_login_timeout_while_pgbench_runs_clean() {
    let _serial = serial();
    raise_fd_limit(SILENT as u64 + 500);
    let cluster = shared();
    create_database(cluster, BENCH_DB);
    pgbench_init(cluster, BENCH_DB);

    let port = free_port();
    let toml = primary_pool_toml(
        cluster,
        port,
        "client_login_timeout = 1000\n",
        BENCH_DB,
        "",
        &[(SCRAM_USER, SCRAM_PASS, 10)],
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
                // The pooler's timer starts after its accept, so between this moment (before
                // the connect) and the one after it; on a busy runtime the connect's
                // completion may be seen tens of ms after the pooler accepted.
                let before_connect = Instant::now();
                let mut s = tokio::time::timeout(
                    Duration::from_secs(10),
                    tokio::net::TcpStream::connect(("127.0.0.1", port)),
                )
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
                let connected_at = Instant::now();
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
                    Ok(()) => Ok((before_connect.elapsed(), connected_at.elapsed(), got)),
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
        std::thread::spawn(move || {
            let args = ["-n", "-c", "10", "-j", "2", "-T", "5", "-S"];
            pgbench(shared(), port, BENCH_DB, &args, Duration::from_secs(120))
        })
    };

    let results: Vec<Result<Closed, String>> = rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
        out
    });
    let out = bench.join().expect("pgbench thread");

    // Closed on time: not before the timeout counted from before the connect (tokio's timers
    // never fire early), and within 1 s + 2 s of margin counted from after it.
    let upper = Duration::from_millis(3000);
    let lower = Duration::from_millis(1000);
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok((since_before, after, bytes)) => {
                times.push(*after);
                let (msgs, rest) = frames(bytes);
                if !(rest.is_empty() && msgs.iter().all(|m| m.tag == b'E')) {
                    failures.push(format!(
                        "client {i}: received [{}] + raw {rest:?}",
                        describe(&msgs)
                    ));
                }
                if *after > upper || *since_before < lower {
                    failures.push(format!(
                        "client {i}: closed {since_before:?} after starting to connect, {after:?} after connecting"
                    ));
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
        "{} of {SILENT} silent clients not closed on time (not before {lower:?} from starting to connect, within {upper:?} of connecting) (client_login_timeout = 1000 ms); first: {:?}\n\
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
    let processed: Option<u64> =
        pgbench_report(&stdout, "number of transactions actually processed")
            .and_then(|v| v.trim().parse().ok());
    let failed = pgbench_report(&stdout, "number of failed transactions").map(str::to_owned);
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
    let toml = primary_pool_toml(
        cluster,
        port,
        "max_client_conn = 50\n",
        DB,
        "",
        &[(SCRAM_USER, SCRAM_PASS, 5)],
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
