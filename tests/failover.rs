//! Issue 6, "Must show" 1, 2 and 4: failover when a PostgreSQL server of a private cluster
//! really stops or freezes (SIGSTOP), through the real binary.
//!
//! 1. `pg_ctl stop -m immediate` on a replica under 50 read-only clients: only queries in flight
//!    during the stop fail (at most one per client, clients stay connected), every later one
//!    succeeds on the other replica; SHOW BANS lists `host:port`; restarted, the replica takes
//!    reads again within one check interval although `ban_time` is 60 s (the ban ends early).
//! 2. A replica frozen with SIGSTOP under a slow read: the slow read alone bans nothing; once
//!    frozen, the read fails with 08006 within healthcheck_interval + healthcheck_timeout (+ a
//!    margin), the same client's next reads go to the primary, nothing hangs; SIGCONT brings it
//!    back.
//! 4. Primary stopped and started under 20 writing clients: errors only for transactions that
//!    overlap the down time, every transaction started after it is back succeeds, no pooler
//!    restart, clients stay connected.
//!
//! Which server answered is `inet_server_port()`. Every query through the pooler is bounded by a
//! timeout, so a hang is a failure, never a stuck test.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::failover::{
    app_toml, banned, connect_app, direct_psql, eventually, failure, health_keys, host_port, ms,
    one_check, port, port_of, private, query, reads_reach, serial, show_bans, start, stop, Failure,
    HUNG, INTERVAL_MS, MARGIN, READ, TIMEOUT_MS,
};
use support::{free_port, Cluster, Node, Pooler, DB, SCRAM_PASS, SCRAM_USER};
use tokio::task::JoinHandle;

/// Thaws a frozen node when dropped, so a failing test never leaves a stopped postmaster
/// behind (the cluster's own teardown could not stop it).
struct ThawOnDrop {
    cluster: Arc<Cluster>,
    node: Node,
}

impl Drop for ThawOnDrop {
    fn drop(&mut self) {
        self.cluster.thaw_node(&self.node);
    }
}

// ---------------------------------------------------------------------------------------------
// Load: N clients running one statement in a loop, every attempt timed and recorded
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Attempt {
    client: usize,
    start: Instant,
    end: Instant,
    /// The port that answered, or why not.
    result: Result<u16, Failure>,
}

struct Load {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    /// (client, when, why): a client connection the pooler closed.
    closed: Arc<Mutex<Vec<(usize, Instant, String)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Connects `clients` clients (all must get in) and starts each running `sql` in a loop.
    async fn start(pooler: &Pooler, clients: usize, sql: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for id in 0..clients {
            let mut client = connect_app(pooler).await;
            let conninfo = pooler.conninfo(SCRAM_USER, SCRAM_PASS, DB);
            let (stop, attempts, closed) = (stop.clone(), attempts.clone(), closed.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let result = match query(&client, sql, HUNG).await {
                        Ok(rows) => port_of(&rows),
                        Err(f) => Err(f),
                    };
                    let failed = result.is_err();
                    attempts.lock().unwrap().push(Attempt {
                        client: id,
                        start,
                        end: Instant::now(),
                        result: result.clone(),
                    });
                    if failed && client.is_closed() {
                        closed
                            .lock()
                            .unwrap()
                            .push((id, Instant::now(), format!("{result:?}")));
                        // Keep the load going (the closure itself is asserted on).
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            let start = Instant::now();
                            match tokio::time::timeout(HUNG, support::connect(&conninfo)).await {
                                Ok(Ok(c)) => {
                                    client = c;
                                    break;
                                }
                                other => {
                                    let why = match other {
                                        Ok(Err(e)) => failure(e),
                                        _ => Failure::Hung,
                                    };
                                    attempts.lock().unwrap().push(Attempt {
                                        client: id,
                                        start,
                                        end: Instant::now(),
                                        result: Err(Failure::Other(format!("reconnect: {why:?}"))),
                                    });
                                    tokio::time::sleep(ms(20)).await;
                                }
                            }
                        }
                    }
                    tokio::time::sleep(ms(if failed { 20 } else { 5 })).await;
                }
            }));
        }
        Load {
            stop,
            attempts,
            closed,
            tasks,
        }
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    async fn finish(self) -> (Vec<Attempt>, Vec<(usize, Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let attempts = self.attempts.lock().unwrap().clone();
        let closed = self.closed.lock().unwrap().clone();
        (attempts, closed)
    }
}

/// Attempts as "client c: [start..end ms after t0] result", at most 15 of them.
fn describe(attempts: &[&Attempt], t0: Instant) -> String {
    let rel = |t: Instant| t.saturating_duration_since(t0).as_millis();
    let mut s: Vec<String> = attempts
        .iter()
        .take(15)
        .map(|a| {
            format!(
                "client {}: [{}..{} ms] {:?}",
                a.client,
                rel(a.start),
                rel(a.end),
                a.result
            )
        })
        .collect();
    if attempts.len() > 15 {
        s.push(format!("... and {} more", attempts.len() - 15));
    }
    s.join("\n  ")
}

fn count_by_port(attempts: &[Attempt], from: Instant, to: Instant) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for a in attempts.iter().filter(|a| a.start >= from && a.start < to) {
        if let Ok(p) = a.result {
            *m.entry(p).or_insert(0) += 1;
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// 1. A replica stopped under 50 read-only clients
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_stopped_under_load_fails_only_in_flight_reads_is_banned_and_returns() {
    let _serial = serial().await;
    let cluster = private(2).await;
    let primary = cluster.primary.port;
    let (victim, other) = (cluster.replicas[0].clone(), cluster.replicas[1].clone());
    // ban_time 60: the replica can only be back within a check interval if a successful
    // background check ends the ban early.
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &health_keys(INTERVAL_MS, TIMEOUT_MS, 60),
        "",
        // Room for all 50 clients on one replica: reads must not spill over to the primary
        // because a replica's pool is full (that is not what this test is about).
        60,
        &cluster.servers_toml(),
    ));

    let t0 = Instant::now();
    let load = Load::start(&pooler, 50, "SELECT inet_server_port(), pg_sleep(0.01)").await;
    tokio::time::sleep(ms(1500)).await;
    let before = count_by_port(&load.snapshot(), t0, Instant::now());
    assert!(
        before.get(&victim.port).copied().unwrap_or(0) > 0,
        "premise: the replica to stop takes reads before the stop: {before:?}"
    );

    let stop0 = Instant::now();
    stop(&cluster, &victim).await;
    let stop1 = Instant::now();

    let listed = eventually(one_check() + MARGIN, || async {
        banned(&show_bans(&pooler).await, &victim)
    })
    .await;
    let bans = show_bans(&pooler).await;
    assert!(
        listed,
        "SHOW BANS lists {} while it is down: {bans:?}",
        host_port(&victim)
    );
    let row = bans
        .iter()
        .find(|b| b.get("host") == Some(&host_port(&victim)))
        .expect("ban row");
    assert_eq!(
        row.get("role").map(String::as_str),
        Some("replica"),
        "{row:?}"
    );
    assert!(
        !banned(&bans, &other) && !banned(&bans, &cluster.primary),
        "only the stopped replica is banned: {bans:?}"
    );

    // Reads go on while it is down.
    tokio::time::sleep(ms(1500)).await;

    let start0 = Instant::now();
    start(&cluster, &victim).await;
    let start1 = Instant::now();

    let back = eventually(one_check(), || {
        let attempts = load.snapshot();
        async move {
            attempts
                .iter()
                .any(|a| a.start >= start1 && matches!(a.result, Ok(p) if p == victim.port))
        }
    })
    .await;
    let waited = start1.elapsed();
    let bans_after = show_bans(&pooler).await;
    tokio::time::sleep(ms(500)).await;
    let (attempts, closed) = load.finish().await;

    let down = count_by_port(&attempts, stop1, start0);
    let after = count_by_port(&attempts, start1, Instant::now());
    eprintln!(
        "reads by port: before {before:?}, while down {down:?}, after restart {after:?}; \
         stop {:?}, restart {:?}",
        stop1 - stop0,
        start1 - start0
    );

    // Only queries in flight during the stop may fail, at most one per client.
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.result.is_err()).collect();
    let not_in_flight: Vec<&Attempt> = failed
        .iter()
        .copied()
        .filter(|a| !(a.start < stop1 && a.end >= stop0))
        .collect();
    assert!(
        not_in_flight.is_empty(),
        "failures of queries not in flight during the stop ([{}..{}] ms; all later reads must \
         succeed):\n  {}",
        (stop0 - t0).as_millis(),
        (stop1 - t0).as_millis(),
        describe(&not_in_flight, t0)
    );
    let mut per_client = BTreeMap::new();
    for a in &failed {
        *per_client.entry(a.client).or_insert(0) += 1;
    }
    assert!(
        per_client.values().all(|&n| n <= 1),
        "at most one failure (its in-flight read) per client: {per_client:?}\n  {}",
        describe(&failed, t0)
    );
    assert!(
        failed
            .iter()
            .all(|a| a.result.as_ref().unwrap_err().code().is_some()),
        "failed reads end with an ErrorResponse, not a hang or a dropped connection:\n  {}",
        describe(&failed, t0)
    );
    assert!(closed.is_empty(), "clients were disconnected: {closed:?}");

    // While one replica is down, the other replica serves the reads (not the primary).
    assert!(
        down.get(&other.port).copied().unwrap_or(0) > 0
            && !down.contains_key(&primary)
            && !down.contains_key(&victim.port),
        "reads while {} is down go to the other replica {}: {down:?}",
        victim.port,
        other.port
    );

    // Restarted: reads again within one check interval (ban_time is 60 s), ban gone.
    assert!(
        back,
        "the restarted replica takes no reads {waited:?} after it is back (bound {:?}): \
         after restart {after:?}",
        one_check()
    );
    assert!(
        !banned(&bans_after, &victim),
        "SHOW BANS still lists the restarted replica: {bans_after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A frozen replica
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_replica_fails_the_read_in_flight_and_reads_move_to_the_primary() {
    let _serial = serial().await;
    let cluster = private(1).await;
    let primary = cluster.primary.port;
    let replica = cluster.replicas[0].clone();
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &health_keys(INTERVAL_MS, TIMEOUT_MS, 60),
        "",
        5,
        &cluster.servers_toml(),
    ));

    let fast = connect_app(&pooler).await;
    // The first background check may still be settling (under load it can time out and end
    // at the next one): wait until the replica serves reads.
    let settled = reads_reach(&fast, replica.port, ms(5000)).await;
    assert!(
        settled,
        "premise: reads go to the replica; bans: {:?}",
        show_bans(&pooler).await
    );
    for _ in 0..3 {
        assert_eq!(
            port(&fast, READ, HUNG).await,
            Ok(replica.port),
            "premise: reads go to the replica"
        );
    }
    let slow = connect_app(&pooler).await;
    let slow_task = tokio::spawn(async move {
        let r = query(&slow, "SELECT inet_server_port(), pg_sleep(30)", ms(60_000)).await;
        (slow, r, Instant::now())
    });

    // A slow query is not a dead server: three check intervals go by, nothing is banned.
    tokio::time::sleep(ms(3 * INTERVAL_MS)).await;
    assert!(!slow_task.is_finished(), "the slow read is still running");
    let bans = show_bans(&pooler).await;
    assert!(bans.is_empty(), "a slow read bans nothing: {bans:?}");

    let _thaw = ThawOnDrop {
        cluster: cluster.clone(),
        node: replica.clone(),
    };
    let frozen_at = Instant::now();
    cluster.freeze_node(&replica);

    let bound = one_check();
    let (slow, result, ended) = match tokio::time::timeout(bound + ms(10_000), slow_task).await {
        Ok(joined) => joined.expect("slow read task"),
        Err(_) => panic!(
            "the read in flight on the frozen replica still hangs {:?} after the freeze",
            frozen_at.elapsed()
        ),
    };
    let took = ended - frozen_at;
    match &result {
        Err(Failure::Db(code, _)) if code == "08006" => {}
        other => panic!("the read in flight on the frozen replica: expected 08006, got {other:?}"),
    }
    assert!(
        took <= bound,
        "the read in flight on the frozen replica failed {took:?} after the freeze (bound \
         healthcheck_interval + healthcheck_timeout + margin = {bound:?})"
    );

    // Later reads, same client, an old client and a new one: served by the primary, promptly.
    let fresh = connect_app(&pooler).await;
    for (name, client) in [("same", &slow), ("other", &fast), ("new", &fresh)] {
        for i in 0..3 {
            let t = Instant::now();
            let got = port(client, READ, ms(3000)).await;
            assert_eq!(
                got,
                Ok(primary),
                "read {i} on the {name} client while the replica is frozen ({:?})",
                t.elapsed()
            );
        }
    }
    let bans = show_bans(&pooler).await;
    assert!(
        banned(&bans, &replica),
        "SHOW BANS lists the frozen replica {}: {bans:?}",
        host_port(&replica)
    );

    // SIGCONT: it takes reads again (ban_time is 60 s, so only a successful check ends it).
    cluster.thaw_node(&replica);
    let thawed_at = Instant::now();
    let back = eventually(one_check(), || async {
        matches!(port(&fresh, READ, ms(3000)).await, Ok(p) if p == replica.port)
    })
    .await;
    assert!(
        back,
        "no read reached the thawed replica within {:?} ({:?} since SIGCONT); bans: {:?}",
        one_check(),
        thawed_at.elapsed(),
        show_bans(&pooler).await
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Primary restart under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_restart_under_load_errors_only_while_down() {
    let _serial = serial().await;
    let cluster = private(0).await;
    let primary = cluster.primary.clone();
    direct_psql(
        &cluster,
        &primary,
        DB,
        &format!("SET ROLE {SCRAM_USER}; CREATE TABLE restart_t (id serial PRIMARY KEY, v int)"),
    )
    .await;
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &health_keys(INTERVAL_MS, TIMEOUT_MS, 60),
        "",
        10,
        &cluster.servers_toml(),
    ));

    let t0 = Instant::now();
    let load = Load::start(
        &pooler,
        20,
        "INSERT INTO restart_t (v) VALUES (1) RETURNING inet_server_port()",
    )
    .await;
    tokio::time::sleep(ms(1000)).await;
    let before = count_by_port(&load.snapshot(), t0, Instant::now());
    assert!(
        before.get(&primary.port).copied().unwrap_or(0) > 0,
        "premise: writes succeed before the restart: {before:?}"
    );

    let stop0 = Instant::now();
    stop(&cluster, &primary).await;
    let stop1 = Instant::now();
    tokio::time::sleep(ms(2000)).await;
    let start0 = Instant::now();
    start(&cluster, &primary).await;
    let up = Instant::now();
    tokio::time::sleep(ms(2500)).await;
    let (attempts, closed) = load.finish().await;

    let rel = |t: Instant| (t - t0).as_millis();
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.result.is_err()).collect();
    eprintln!(
        "{} writes, {} failed; stop [{}..{}] ms, start [{}..{}] ms",
        attempts.len(),
        failed.len(),
        rel(stop0),
        rel(stop1),
        rel(start0),
        rel(up)
    );
    // Errors only for transactions that overlap the down time.
    let outside: Vec<&Attempt> = failed
        .iter()
        .copied()
        .filter(|a| !(a.end >= stop0 && a.start < up))
        .collect();
    assert!(
        outside.is_empty(),
        "errors outside the down time [{}..{}] ms (new transactions must succeed as soon as \
         the primary is back):\n  {}",
        rel(stop0),
        rel(up),
        describe(&outside, t0)
    );
    assert!(
        failed
            .iter()
            .all(|a| !matches!(a.result, Err(Failure::Hung))),
        "no write hangs:\n  {}",
        describe(&failed, t0)
    );
    assert!(
        closed.is_empty(),
        "clients stay connected through the restart: {closed:?}"
    );
    // Every client commits again after the restart, on the same pooler.
    for c in 0..20 {
        assert!(
            attempts
                .iter()
                .any(|a| a.client == c && a.start >= up && a.result == Ok(primary.port)),
            "client {c} has no successful write after the primary is back"
        );
    }
}
