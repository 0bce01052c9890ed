//! What the failover test files (tests/failover*.rs) share: health-check settings, the pool
//! config, blocking cluster work off the async workers, queries bounded by a timeout (a hang
//! is a failure, never a stuck test), the port that answered, SHOW BANS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use super::{general_toml, texts, Cluster, Node, Pooler, DB, SCRAM_PASS, SCRAM_USER};

// ---------------------------------------------------------------------------------------------
// Settings and config
// ---------------------------------------------------------------------------------------------

/// `healthcheck_interval` (ms) in these tests.
pub const INTERVAL_MS: u64 = 500;
/// `healthcheck_timeout` (ms) in these tests.
pub const TIMEOUT_MS: u64 = 300;
/// Slack on top of every timing bound (2 shared cores, other work may be running); far below
/// ban_time, so a bound still fails if only the ban expiring brought a server back.
pub const MARGIN: Duration = Duration::from_millis(4000);
/// A query that has not answered in this long is hung.
pub const HUNG: Duration = Duration::from_secs(15);

/// `v` milliseconds.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// How long after a server comes back (or goes bad) the background check must have noticed.
pub fn one_check() -> Duration {
    ms(INTERVAL_MS + TIMEOUT_MS) + MARGIN
}

/// `[general]` lines for the health checks: interval, timeout, ban time (s).
pub fn health_keys(interval_ms: u64, timeout_ms: u64, ban_time_s: u64) -> String {
    format!(
        "healthcheck_interval = {interval_ms}\n\
         healthcheck_timeout = {timeout_ms}\n\
         ban_time = {ban_time_s}\n"
    )
}

/// A pgcat.toml: [general] from support (+ `general_extra`), pool `app` in transaction mode
/// with read/write splitting (+ `pool_extra`), user scram_user with `pool_size`, shard 0 on
/// `servers` (a TOML array).
pub fn app_toml(
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

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The tests of a file run one at a time: each drives timing-sensitive failures on its own
/// cluster, and five clusters under load at once on two cores would starve the health checks.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Runs blocking cluster work off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A cluster of its own ([`super::private`]), started off the async workers.
pub async fn private(replicas: usize) -> Arc<Cluster> {
    Arc::new(blocking(move || super::private(replicas)).await)
}

/// Stops `node` at once (`pg_ctl stop -m immediate`), off the async workers.
pub async fn stop(cluster: &Arc<Cluster>, node: &Node) {
    let (c, n) = (cluster.clone(), node.clone());
    blocking(move || c.stop_node(&n)).await
}

/// Starts a stopped `node` again.
pub async fn start(cluster: &Arc<Cluster>, node: &Node) {
    let (c, n) = (cluster.clone(), node.clone());
    blocking(move || c.start_node(&n)).await
}

/// psql straight on `node` as the superuser; panics on failure.
pub async fn direct_psql(cluster: &Arc<Cluster>, node: &Node, db: &str, sql: &str) -> String {
    let (c, n, db, sql) = (cluster.clone(), node.clone(), db.to_owned(), sql.to_owned());
    blocking(move || {
        c.psql(&n, &db, &sql)
            .unwrap_or_else(|e| panic!("psql on port {}: {sql}: {e}", n.port))
    })
    .await
}

/// Why a query through the pooler did not return rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An ErrorResponse: SQLSTATE and message.
    Db(String, String),
    /// Any other error (connection closed, I/O, protocol).
    Other(String),
    /// No answer within the limit.
    Hung,
}

impl Failure {
    pub fn code(&self) -> Option<&str> {
        match self {
            Failure::Db(code, _) => Some(code),
            _ => None,
        }
    }
}

/// Why a tokio-postgres call failed.
pub fn failure(e: tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        Some(db) => Failure::Db(db.code().code().to_owned(), db.message().to_owned()),
        None => Failure::Other(e.to_string()),
    }
}

/// Rows (every column as text) of a simple query, bounded by `limit`.
pub async fn query(
    client: &Client,
    sql: &str,
    limit: Duration,
) -> Result<Vec<Vec<String>>, Failure> {
    match tokio::time::timeout(limit, client.simple_query(sql)).await {
        Err(_) => Err(Failure::Hung),
        Ok(Err(e)) => Err(failure(e)),
        Ok(Ok(msgs)) => Ok(texts(&msgs)),
    }
}

/// The first column of the first row, as a port number.
pub fn port_of(rows: &[Vec<String>]) -> Result<u16, Failure> {
    rows.first()
        .and_then(|r| r.first())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Other(format!("no port in {rows:?}")))
}

/// Runs `sql` (first column: inet_server_port()) and returns the port that answered.
pub async fn port(client: &Client, sql: &str, limit: Duration) -> Result<u16, Failure> {
    port_of(&query(client, sql, limit).await?)
}

/// A read that says which server answered.
pub const READ: &str = "SELECT inet_server_port()";

/// A client of scram_user on `app` through the pooler; a login that hangs fails.
pub async fn connect_app(pooler: &Pooler) -> Client {
    match tokio::time::timeout(HUNG, pooler.connect(SCRAM_USER, SCRAM_PASS, DB)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => panic!("connect through the pooler: {e:?}"),
        Err(_) => panic!("connect through the pooler: no answer in {HUNG:?}"),
    }
}

/// `SHOW BANS` on the `pgcat` admin database: one map column -> value per row.
pub async fn show_bans(pooler: &Pooler) -> Vec<BTreeMap<String, String>> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user=admin password=admin dbname=pgcat connect_timeout=10",
        pooler.port
    );
    let admin = tokio::time::timeout(HUNG, super::connect(&conninfo))
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

/// `host:port` of a node, as SHOW BANS lists it.
pub fn host_port(node: &Node) -> String {
    format!("{}:{}", node.host, node.port)
}

/// Whether SHOW BANS (as from [`show_bans`]) lists `node`.
pub fn banned(bans: &[BTreeMap<String, String>], node: &Node) -> bool {
    let hp = host_port(node);
    bans.iter().any(|b| b.get("host") == Some(&hp))
}

/// Polls `check` every 50 ms until it is true or `limit` passes; true if it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
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

/// Waits (off the async workers) until every replica has replayed the primary's WAL.
pub async fn wait_caught_up(cluster: &Arc<Cluster>, what: &str) {
    let (c, what) = (cluster.clone(), what.to_owned());
    blocking(move || c.wait_replicas_caught_up().expect(&what)).await
}

/// Whether reads through `client` reach the server on `server_port` within `limit` (polled).
pub async fn reads_reach(client: &Client, server_port: u16, limit: Duration) -> bool {
    eventually(limit, || async {
        port(client, READ, HUNG).await == Ok(server_port)
    })
    .await
}
