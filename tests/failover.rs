//! Issue 6, "Must show": failover on private clusters whose PostgreSQL servers really stop,
//! freeze (SIGSTOP), fall behind and get promoted, through the real binary.
//!
//! 1. `pg_ctl stop -m immediate` on a replica under 50 read-only clients: only queries in flight
//!    during the stop fail (at most one per client, clients stay connected), every later one
//!    succeeds on the other replica; SHOW BANS lists `host:port`; restarted, the replica takes
//!    reads again within one check interval although `ban_time` is 60 s (the ban ends early).
//! 2. A replica frozen with SIGSTOP under a slow read: the slow read alone bans nothing; once
//!    frozen, the read fails with 08006 within healthcheck_interval + healthcheck_timeout (+ a
//!    margin), the same client's next reads go to the primary, nothing hangs; SIGCONT brings it
//!    back.
//! 3. Replay paused on a replica + writes on the primary: reads leave it once it is more than
//!    `max_replica_lag_bytes` behind and return after `pg_wal_replay_resume()`.
//! 4. Primary stopped and started under 20 writing clients: errors only for transactions that
//!    overlap the down time, every transaction started after it is back succeeds, no pooler
//!    restart, clients stay connected.
//! 5. Roles `"auto"`: stop the primary, `pg_ctl promote` the replica: writes succeed on the new
//!    primary within two check intervals.
//!
//! Must show 6 (read-your-writes) is not being built yet: no test.
//!
//! Which server answered is `inet_server_port()`. Every query through the pooler is bounded by a
//! timeout, so a hang is a failure, never a stuck test.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{
    free_port, general_toml, servers_toml, Cluster, Node, Pooler, DB, SCRAM_PASS, SCRAM_USER,
};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};

// ---------------------------------------------------------------------------------------------
// Settings and config
// ---------------------------------------------------------------------------------------------

/// `healthcheck_interval` (ms) in these tests.
const INTERVAL_MS: u64 = 500;
/// `healthcheck_timeout` (ms) in these tests.
const TIMEOUT_MS: u64 = 300;
/// Slack on top of every timing bound (2 shared cores, other work may be running); far below
/// ban_time, so a bound still fails if only the ban expiring brought a server back.
const MARGIN: Duration = Duration::from_millis(4000);
/// A query that has not answered in this long is hung.
const HUNG: Duration = Duration::from_secs(15);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// How long after a server comes back (or goes bad) the background check must have noticed.
fn one_check() -> Duration {
    ms(INTERVAL_MS + TIMEOUT_MS) + MARGIN
}

/// `[general]` lines for the health checks: interval, timeout, ban time (s).
fn health_keys(interval_ms: u64, timeout_ms: u64, ban_time_s: u64) -> String {
    format!(
        "healthcheck_interval = {interval_ms}\n\
         healthcheck_timeout = {timeout_ms}\n\
         ban_time = {ban_time_s}\n"
    )
}

/// A pgcat.toml: [general] from support (+ `general_extra`), pool `app` in transaction mode
/// with read/write splitting (+ `pool_extra`), user scram_user with `pool_size`, shard 0 on
/// `servers` (a TOML array).
fn app_toml(
    port: u16,
    general_extra: &str,
    pool_extra: &str,
    pool_size: u32,
    servers: &str,
) -> String {
    format!(
        "{general}{general_extra}\n\
         [pools.{DB}]\n\
         pool_mode = \"transaction\"\n\
         query_parser_enabled = true\n\
         query_parser_read_write_splitting = true\n\
         {pool_extra}\n\
         [pools.{DB}.users.0]\n\
         username = \"{SCRAM_USER}\"\n\
         password = \"{SCRAM_PASS}\"\n\
         pool_size = {pool_size}\n\
         \n\
         [pools.{DB}.shards.0]\n\
         database = \"{DB}\"\n\
         servers = {servers}\n",
        general = general_toml(port),
    )
}

/// `servers` with every node listed as role "auto".
fn auto_servers(cluster: &Cluster) -> String {
    let all: Vec<String> = cluster
        .nodes()
        .map(|n| format!("[\"{}\", {}, \"auto\"]", n.host, n.port))
        .collect();
    format!("[{}]", all.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The tests of this file run one at a time: each drives timing-sensitive failures on its own
/// cluster, and five clusters under load at once on two cores would starve the health checks.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Runs blocking cluster work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn private(replicas: usize) -> Arc<Cluster> {
    Arc::new(blocking(move || support::private(replicas)).await)
}

async fn stop(cluster: &Arc<Cluster>, node: &Node) {
    let (c, n) = (cluster.clone(), node.clone());
    blocking(move || c.stop_node(&n)).await
}

async fn start(cluster: &Arc<Cluster>, node: &Node) {
    let (c, n) = (cluster.clone(), node.clone());
    blocking(move || c.start_node(&n)).await
}

async fn direct_psql(cluster: &Arc<Cluster>, node: &Node, db: &str, sql: &str) -> String {
    let (c, n, db, sql) = (cluster.clone(), node.clone(), db.to_owned(), sql.to_owned());
    blocking(move || {
        c.psql(&n, &db, &sql)
            .unwrap_or_else(|e| panic!("psql on port {}: {sql}: {e}", n.port))
    })
    .await
}

/// Why a query through the pooler did not return rows.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// An ErrorResponse: SQLSTATE and message.
    Db(String, String),
    /// Any other error (connection closed, I/O, protocol).
    Other(String),
    /// No answer within the limit.
    Hung,
}

impl Failure {
    fn code(&self) -> Option<&str> {
        match self {
            Failure::Db(code, _) => Some(code),
            _ => None,
        }
    }
}

fn failure(e: tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        Some(db) => Failure::Db(db.code().code().to_owned(), db.message().to_owned()),
        None => Failure::Other(e.to_string()),
    }
}

/// Rows (every column as text) of a simple query, bounded by `limit`.
async fn query(client: &Client, sql: &str, limit: Duration) -> Result<Vec<Vec<String>>, Failure> {
    match tokio::time::timeout(limit, client.simple_query(sql)).await {
        Err(_) => Err(Failure::Hung),
        Ok(Err(e)) => Err(failure(e)),
        Ok(Ok(msgs)) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect()),
    }
}

/// The first column of the first row, as a port number.
fn port_of(rows: &[Vec<String>]) -> Result<u16, Failure> {
    rows.first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Other(format!("no port in {rows:?}")))
}

/// Runs `sql` (first column: inet_server_port()) and returns the port that answered.
async fn port(client: &Client, sql: &str, limit: Duration) -> Result<u16, Failure> {
    port_of(&query(client, sql, limit).await?)
}

const READ: &str = "SELECT inet_server_port()";

async fn connect_app(pooler: &Pooler) -> Client {
    match tokio::time::timeout(HUNG, pooler.connect(SCRAM_USER, SCRAM_PASS, DB)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("connect through the pooler: {e:?}"),
        Err(_) => panic!("connect through the pooler: no answer in {HUNG:?}"),
    }
}

/// `SHOW BANS` on the `pgcat` admin database: one map column -> value per row.
async fn show_bans(pooler: &Pooler) -> Vec<BTreeMap<String, String>> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=admin password=admin dbname=pgcat connect_timeout=10",
        pooler.port
    );
    let admin = tokio::time::timeout(HUNG, support::connect(&conninfo))
        .await
        .expect("admin login: no answer")
        .unwrap_or_else(|e| panic!("admin login: {e:?}"));
    let msgs = tokio::time::timeout(HUNG, admin.simple_query("SHOW BANS"))
        .await
        .expect("SHOW BANS: no answer")
        .unwrap_or_else(|e| panic!("SHOW BANS: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).unwrap_or("NULL").to_owned()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn host_port(node: &Node) -> String {
    format!("{}:{}", node.host, node.port)
}

fn banned(bans: &[BTreeMap<String, String>], node: &Node) -> bool {
    let hp = host_port(node);
    bans.iter().any(|b| b.get("host") == Some(&hp))
}

/// Polls `check` every 50 ms until it is true or `limit` passes; true if it became true.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(ms(50)).await;
    }
}

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
        &servers_toml(&cluster),
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
        &servers_toml(&cluster),
    ));

    let fast = connect_app(&pooler).await;
    // The first background check may still be settling (under load it can time out and end
    // at the next one): wait until the replica serves reads.
    let settled = eventually(ms(5000), || async {
        port(&fast, READ, HUNG).await == Ok(replica.port)
    })
    .await;
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
// 3. Replica lag
// ---------------------------------------------------------------------------------------------

const MAX_LAG: u64 = 65_536;
const LAG_INTERVAL_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_takes_no_reads_until_it_catches_up() {
    let _serial = serial().await;
    let cluster = private(1).await;
    let primary = cluster.primary.clone();
    let replica = cluster.replicas[0].clone();
    direct_psql(
        &cluster,
        &primary,
        DB,
        "CREATE TABLE lag_t (id int, pad text)",
    )
    .await;
    {
        let c = cluster.clone();
        blocking(move || c.wait_replicas_caught_up().expect("caught up")).await;
    }
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &format!(
            "{}replica_lag_check_interval = {LAG_INTERVAL_MS}\n",
            health_keys(INTERVAL_MS, TIMEOUT_MS, 60)
        ),
        &format!("max_replica_lag_bytes = {MAX_LAG}\n"),
        5,
        &servers_toml(&cluster),
    ));
    let client = connect_app(&pooler).await;

    // Caught up: the lag limit keeps nothing off the replica.
    let on_replica = eventually(ms(5000), || async {
        port(&client, READ, HUNG).await == Ok(replica.port)
    })
    .await;
    assert!(on_replica, "premise: reads go to the caught-up replica");
    for i in 0..10 {
        assert_eq!(
            port(&client, READ, HUNG).await.ok(),
            Some(replica.port),
            "read {i} with the replica caught up"
        );
    }

    direct_psql(
        &cluster,
        &replica,
        "postgres",
        "SELECT pg_wal_replay_pause()",
    )
    .await;
    let paused = {
        let (c, r) = (cluster.clone(), replica.clone());
        blocking(move || {
            support::wait_until(Duration::from_secs(10), || {
                c.psql(&r, "postgres", "SELECT pg_get_wal_replay_pause_state()")
                    .map(|s| s == "paused")
                    .unwrap_or(false)
            })
        })
        .await
    };
    assert!(paused, "premise: replay is paused on the replica");
    direct_psql(
        &cluster,
        &primary,
        DB,
        "INSERT INTO lag_t SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g",
    )
    .await;
    let wrote_at = Instant::now();
    let current = direct_psql(
        &cluster,
        &primary,
        "postgres",
        "SELECT pg_current_wal_lsn()",
    )
    .await;
    let replayed = direct_psql(
        &cluster,
        &replica,
        "postgres",
        "SELECT pg_last_wal_replay_lsn()",
    )
    .await;
    let lag: u64 = direct_psql(
        &cluster,
        &primary,
        "postgres",
        &format!("SELECT pg_wal_lsn_diff('{current}', '{replayed}')::bigint"),
    )
    .await
    .parse()
    .expect("lag");
    assert!(
        lag > MAX_LAG,
        "premise: the replica is more than {MAX_LAG} bytes behind (lag {lag})"
    );

    let bound = ms(LAG_INTERVAL_MS) + MARGIN;
    let left = eventually(bound, || async {
        port(&client, READ, HUNG).await == Ok(primary.port)
    })
    .await;
    assert!(
        left,
        "reads still go to the replica {:?} after it fell {lag} bytes behind (limit \
         {MAX_LAG}, bound {bound:?})",
        wrote_at.elapsed()
    );
    for i in 0..20 {
        assert_eq!(
            port(&client, READ, HUNG).await.ok(),
            Some(primary.port),
            "read {i} while the replica is {lag} bytes behind"
        );
    }

    direct_psql(
        &cluster,
        &replica,
        "postgres",
        "SELECT pg_wal_replay_resume()",
    )
    .await;
    {
        let c = cluster.clone();
        blocking(move || c.wait_replicas_caught_up().expect("caught up after resume")).await;
    }
    let caught_up_at = Instant::now();
    let back = eventually(bound, || async {
        port(&client, READ, HUNG).await == Ok(replica.port)
    })
    .await;
    assert!(
        back,
        "reads do not return to the caught-up replica within {bound:?} ({:?})",
        caught_up_at.elapsed()
    );
    for i in 0..10 {
        assert_eq!(
            port(&client, READ, HUNG).await.ok(),
            Some(replica.port),
            "read {i} after the replica caught up"
        );
    }
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
        &servers_toml(&cluster),
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

// ---------------------------------------------------------------------------------------------
// 5. Promotion with role "auto"
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_roles_follow_a_promotion_within_two_check_intervals() {
    let _serial = serial().await;
    const AUTO_INTERVAL_MS: u64 = 300;
    const AUTO_TIMEOUT_MS: u64 = 300;
    let cluster = private(1).await;
    let old = cluster.primary.clone();
    let new = cluster.replicas[0].clone();
    direct_psql(
        &cluster,
        &old,
        DB,
        &format!("SET ROLE {SCRAM_USER}; CREATE TABLE promo_t (id serial PRIMARY KEY, v text)"),
    )
    .await;
    {
        let c = cluster.clone();
        blocking(move || c.wait_replicas_caught_up().expect("caught up")).await;
    }
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &health_keys(AUTO_INTERVAL_MS, AUTO_TIMEOUT_MS, 2),
        "",
        5,
        &auto_servers(&cluster),
    ));
    let client = connect_app(&pooler).await;
    const WRITE: &str = "INSERT INTO promo_t (v) VALUES ('w') RETURNING inet_server_port()";

    // Discovery: the server not in recovery takes the writes, the one in recovery the reads.
    let deadline = Instant::now() + ms(5000);
    let (found, last) = loop {
        let r = port(&client, WRITE, HUNG).await;
        if r == Ok(old.port) || Instant::now() > deadline {
            break (r == Ok(old.port), r);
        }
        tokio::time::sleep(ms(50)).await;
    };
    assert!(
        found,
        "writes reach the primary among \"auto\" servers: last {last:?}"
    );
    let reads_on_replica = eventually(ms(5000), || async {
        port(&client, READ, HUNG).await == Ok(new.port)
    })
    .await;
    assert!(
        reads_on_replica,
        "reads reach the server in recovery among \"auto\" servers"
    );

    stop(&cluster, &old).await;
    {
        let (c, n) = (cluster.clone(), new.clone());
        blocking(move || c.promote(&n).expect("pg_ctl promote")).await;
    }
    let promoted = Instant::now();

    let bound = ms(2 * AUTO_INTERVAL_MS + AUTO_TIMEOUT_MS) + MARGIN;
    let deadline = promoted + bound;
    let mut seen = Vec::new();
    let moved = loop {
        let r = port(&client, WRITE, ms(3000)).await;
        let ok = r == Ok(new.port);
        if seen.len() < 10 {
            seen.push(r);
        }
        if ok || Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(ms(50)).await;
    };
    assert!(
        moved,
        "no write succeeded on the promoted server {} within {bound:?} ({:?} since the \
         promotion); first results: {seen:?}",
        new.port,
        promoted.elapsed()
    );
    for i in 0..5 {
        assert_eq!(
            port(&client, WRITE, HUNG).await,
            Ok(new.port),
            "write {i} after the promotion"
        );
    }
    let fresh = connect_app(&pooler).await;
    assert_eq!(
        port(&fresh, WRITE, HUNG).await,
        Ok(new.port),
        "a new client writes to the promoted server"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Read-your-writes
// ---------------------------------------------------------------------------------------------

/// With `read_your_writes = true` and WAL replay paused on the only replica, a client's read
/// right after its own committed write sees the row (it is sent to the primary, since the
/// replica has not replayed the write); another client's reads still go to the replica; with
/// the setting off, the same read misses the row on the lagging replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_sees_its_own_write_despite_a_paused_replica() {
    let _serial = serial().await;
    let cluster = private(1).await;
    let primary = cluster.primary.clone();
    let replica = cluster.replicas[0].clone();
    direct_psql(
        &cluster,
        &primary,
        DB,
        &format!("SET ROLE {SCRAM_USER}; CREATE TABLE ryw_t (id int PRIMARY KEY)"),
    )
    .await;
    {
        let c = cluster.clone();
        blocking(move || c.wait_replicas_caught_up().expect("caught up")).await;
    }
    let start = |ryw: bool| {
        Pooler::start(&app_toml(
            free_port(),
            &format!(
                "{}replica_lag_check_interval = 200\n",
                health_keys(INTERVAL_MS, TIMEOUT_MS, 60)
            ),
            &format!("read_your_writes = {ryw}\n"),
            5,
            &servers_toml(&cluster),
        ))
    };
    let on = start(true);
    let off = start(false);
    let (writer, other, plain) = (
        connect_app(&on).await,
        connect_app(&on).await,
        connect_app(&off).await,
    );
    for c in [&writer, &other, &plain] {
        let reaches_replica = eventually(ms(5000), || async {
            port(c, READ, HUNG).await == Ok(replica.port)
        })
        .await;
        assert!(
            reaches_replica,
            "premise: reads go to the caught-up replica"
        );
    }

    direct_psql(
        &cluster,
        &replica,
        "postgres",
        "SELECT pg_wal_replay_pause()",
    )
    .await;
    let paused = {
        let (c, r) = (cluster.clone(), replica.clone());
        blocking(move || {
            support::wait_until(Duration::from_secs(10), || {
                c.psql(&r, "postgres", "SELECT pg_get_wal_replay_pause_state()")
                    .map(|s| s == "paused")
                    .unwrap_or(false)
            })
        })
        .await
    };
    assert!(paused, "premise: replay is paused on the replica");

    let read = "SELECT count(*)::int, inet_server_port() FROM ryw_t WHERE id = $1";
    for id in 1..=5 {
        writer
            .execute("INSERT INTO ryw_t (id) VALUES ($1)", &[&id])
            .await
            .expect("write");
        let row = writer
            .query_one(read, &[&id])
            .await
            .expect("read after write");
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, i32>(1) as u16),
            (1, primary.port),
            "read-your-writes: the read after write {id} must see it (on the primary)"
        );
        // A client that wrote nothing keeps reading from the replica.
        assert_eq!(
            port(&other, READ, HUNG).await.ok(),
            Some(replica.port),
            "other client, write {id}"
        );
    }
    // The same sequence without read_your_writes: the read lands on the paused replica
    // and misses the row (what the feature is for).
    plain
        .execute("INSERT INTO ryw_t (id) VALUES (100)", &[])
        .await
        .expect("write");
    let row = plain.query_one(read, &[&100]).await.expect("read");
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i32>(1) as u16),
        (0, replica.port),
        "premise: without read_your_writes the read goes to the lagging replica"
    );
    direct_psql(
        &cluster,
        &replica,
        "postgres",
        "SELECT pg_wal_replay_resume()",
    )
    .await;
}
