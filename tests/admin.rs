//! Issue 5, "Must show": the admin databases, statistics, Prometheus, live reload,
//! PAUSE/RESUME and graceful shutdown, against real PostgreSQL.
//!
//! 1. Every SHOW command on both admin databases (`pgbouncer`: PgBouncer's columns, `pgcat`:
//!    PgCat's) returns its columns, with values that move with traffic: after N queries
//!    total_query_count / total_xact_count grow by at least N; a client queued behind a busy
//!    pool shows in cl_waiting and maxwait.
//! 2. RELOAD (on either admin database) and SIGHUP after changing pool_size show the new size in
//!    SHOW DATABASES, the new size is in force, and connected clients keep working; a broken
//!    file keeps the old config and the reply (and the log) says why.
//! 3. PAUSE / PAUSE db / PAUSE db,user waits for an open transaction, then new queries queue
//!    (no error) until RESUME.
//! 4. `/metrics` parses as Prometheus text, uses PgCat's names and labels, and its counters
//!    match SHOW STATS.
//! 5. SIGINT / admin SHUTDOWN with an open transaction lets it commit, refuses new logins and
//!    exits 0; shutdown_timeout forces the exit; SIGTERM is quick.
//! 6. Nobody but the admin user gets into the admin databases (any admin_auth_type); no SHOW
//!    output contains a password.
//!
//! Also (PgCat's admin_spec / stats_spec, cheap ones): SHOW HELP, SHOW BANS, unknown commands
//! point to SHOW HELP, SET accepted, PAUSE of an unknown pool errors, RECONNECT, KILL, client
//! counts after clean and abrupt disconnects, failed logins leave SHOW POOLS unchanged.
//!
//! Signals need the pooler's pid: [`support::Pooler`] keeps its child private, so the signal
//! tests run the binary through [`Proc`] below (same config/log layout, pid and exit status
//! available).

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::raw::{AuthKind, LoginError, RawConn};
use support::{
    config, connect, connect_direct, free_port, run_client, shared, stored_md5, Cluster, Pooler,
    DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};
use tokio_postgres::SimpleQueryMessage;

const ADMIN_USER: &str = "admin";
const ADMIN_PASS: &str = "admin";
const ADMIN_DBS: [&str; 2] = ["pgbouncer", "pgcat"];

// ---------------------------------------------------------------------------------------------
// Tables (admin replies)
// ---------------------------------------------------------------------------------------------

/// A result set: column names and text values (None = NULL).
#[derive(Debug, Clone, Default)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.columns))
    }

    fn get(&self, row: usize, name: &str) -> String {
        self.rows[row][self.col(name)]
            .clone()
            .unwrap_or_else(|| "NULL".to_owned())
    }

    /// An integer column (averages may be written as decimals; those are truncated).
    fn int(&self, row: usize, name: &str) -> i64 {
        let v = self.get(row, name);
        v.parse::<i64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or_else(|| panic!("column {name} = {v:?} is not a number; table {self:?}"))
    }

    /// Indexes of the rows where every `(column, value)` matches.
    fn rows_where(&self, conds: &[(&str, &str)]) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&r| conds.iter().all(|(c, v)| self.get(r, c) == *v))
            .collect()
    }

    /// The one row where every condition matches.
    fn one(&self, what: &str, conds: &[(&str, &str)]) -> usize {
        let found = self.rows_where(conds);
        assert_eq!(
            found.len(),
            1,
            "{what}: expected exactly one row with {conds:?}, got {}:\n{}",
            found.len(),
            self.dump()
        );
        found[0]
    }

    /// Sum of an integer column over the rows where every condition matches.
    fn sum(&self, name: &str, conds: &[(&str, &str)]) -> i64 {
        self.rows_where(conds)
            .into_iter()
            .map(|r| self.int(r, name))
            .sum()
    }

    fn all_cells(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .flat_map(|r| r.iter().filter_map(|v| v.as_deref()))
    }

    fn dump(&self) -> String {
        let mut out = self.columns.join(" | ");
        for r in &self.rows {
            out.push('\n');
            out.push_str(
                &r.iter()
                    .map(|v| v.as_deref().unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
        out
    }
}

/// `expected` must appear among the columns in this order (extra columns allowed between).
fn assert_columns(what: &str, t: &Table, expected: &[&str]) {
    let mut it = t.columns.iter();
    for e in expected {
        if !it.any(|c| c == e) {
            panic!(
                "{what}: columns must include, in this order, {expected:?}\n(missing or out of order: {e:?})\ngot {:?}",
                t.columns
            );
        }
    }
}

fn table_from(msgs: Vec<SimpleQueryMessage>) -> Table {
    let mut t = Table::default();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                t.columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if t.columns.is_empty() {
                    t.columns = r.columns().iter().map(|c| c.name().to_owned()).collect();
                }
                t.rows
                    .push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
            }
            _ => {}
        }
    }
    t
}

/// SQLSTATE, message, detail and hint of a tokio-postgres error.
fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {} (detail: {:?}, hint: {:?})",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail(),
            db.hint()
        ),
        None => format!("{e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

fn conninfo(port: u16, user: &str, password: &str, database: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password={password} dbname={database} connect_timeout=10")
}

/// A tokio-postgres admin session (admin/admin) on admin database `db`.
async fn admin(port: u16, db: &str) -> tokio_postgres::Client {
    connect(&conninfo(port, ADMIN_USER, ADMIN_PASS, db))
        .await
        .unwrap_or_else(|e| panic!("admin login to {db} on port {port}: {}", pg_err(&e)))
}

/// Runs an admin SHOW through tokio-postgres' simple protocol; panics on error.
async fn show(client: &tokio_postgres::Client, sql: &str) -> Table {
    let msgs = within(Duration::from_secs(20), sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
    table_from(msgs)
}

/// A pool client (scram_user on `app`) with an application_name.
async fn app_client(port: u16, user: &str, password: &str, app: &str) -> tokio_postgres::Client {
    connect(&format!(
        "{} application_name={app}",
        conninfo(port, user, password, DB)
    ))
    .await
    .unwrap_or_else(|e| panic!("{user} login to {DB} on port {port}: {}", pg_err(&e)))
}

/// The first value of the first row of a simple query through a pool client.
async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = within(Duration::from_secs(20), sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
    let t = table_from(msgs);
    assert!(!t.rows.is_empty(), "{sql}: no rows");
    t.get(0, &t.columns[0].clone())
}

async fn exec(client: &tokio_postgres::Client, sql: &str) {
    within(Duration::from_secs(20), sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
}

/// Awaits `fut` for at most `limit`; panics naming `what` when it takes longer.
async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

/// One admin reply through the raw client: the result set, command tags, notices, error.
#[derive(Debug, Default)]
struct Reply {
    table: Table,
    tags: Vec<String>,
    /// Message, detail and hint of each NoticeResponse.
    notices: Vec<String>,
    /// (SQLSTATE, message + detail + hint) of an ErrorResponse.
    error: Option<(String, String)>,
}

impl Reply {
    /// Everything human-readable in the reply (notices, error, cells), for "mentions X" checks.
    fn text(&self) -> String {
        let mut out = self.notices.join("\n");
        if let Some((code, text)) = &self.error {
            out.push_str(&format!("\n{code} {text}"));
        }
        for c in self.table.all_cells() {
            out.push('\n');
            out.push_str(c);
        }
        out
    }
}

fn message_text(m: &support::raw::Msg) -> String {
    [b'M', b'D', b'H']
        .iter()
        .filter_map(|&f| m.field(f))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn row_description(body: &[u8]) -> Vec<String> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let end = at
            + body[at..]
                .iter()
                .position(|&b| b == 0)
                .expect("column name");
        names.push(String::from_utf8_lossy(&body[at..end]).into_owned());
        at = end + 1 + 18;
    }
    names
}

fn raw_admin(port: u16, db: &str) -> RawConn {
    let conn = RawConn::connect(port, ADMIN_USER, ADMIN_PASS, db)
        .unwrap_or_else(|e| panic!("admin login to {db} on port {port}: {e}"));
    conn.set_read_timeout(Duration::from_secs(30));
    conn
}

fn run(conn: &mut RawConn, sql: &str) -> Reply {
    let msgs = conn
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: no complete reply: {e}"));
    let mut r = Reply::default();
    for m in msgs {
        match m.tag {
            b'T' => r.table.columns = row_description(&m.body),
            b'D' => r.table.rows.push(m.row()),
            b'C' => r.tags.push(m.command_tag()),
            b'N' => r.notices.push(message_text(&m)),
            b'E' => r.error = Some((m.sqlstate().unwrap_or_default(), message_text(&m))),
            _ => {}
        }
    }
    r
}

/// Runs an admin command that must succeed.
fn run_ok(conn: &mut RawConn, sql: &str) -> Reply {
    let r = run(conn, sql);
    assert!(r.error.is_none(), "{sql}: error {:?}", r.error);
    r
}

/// psql on an admin database: `-A -F '|'` with the header line, no footer.
fn psql_table(
    cluster: &Cluster,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
) -> Result<Table, String> {
    let conn = format!("host=127.0.0.1 port={port} user={user} dbname={db}");
    let out = run_client(
        cluster,
        "psql",
        password,
        &[
            &conn,
            "-X",
            "-A",
            "-F",
            "|",
            "-P",
            "footer=off",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        Duration::from_secs(30),
    );
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let columns = lines
        .next()
        .map(|h| h.split('|').map(str::to_owned).collect())
        .unwrap_or_default();
    let rows = lines
        .map(|l| l.split('|').map(|v| Some(v.to_owned())).collect())
        .collect();
    Ok(Table { columns, rows })
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

/// Pool `app` (transaction mode, queries to the primary) for scram_user and md5_user.
fn app_config(cluster: &Cluster, port: u16, pool_size: u32) -> String {
    config(cluster, port, "transaction", pool_size, "")
}

/// `toml` with `lines` added at the top of [general].
fn with_general(toml: &str, lines: &str) -> String {
    assert!(toml.starts_with("[general]\n"), "{toml}");
    toml.replacen("[general]\n", &format!("[general]\n{lines}\n"), 1)
}

/// `toml` with a longer shutdown_timeout (general_toml sets 1000 ms).
fn with_shutdown_timeout(toml: &str, ms: u64) -> String {
    assert!(toml.contains("shutdown_timeout = 1000\n"), "{toml}");
    toml.replace(
        "shutdown_timeout = 1000\n",
        &format!("shutdown_timeout = {ms}\n"),
    )
}

/// The same config with every user's pool_size changed.
fn resized(toml: &str, from: u32, to: u32) -> String {
    let from_line = format!("pool_size = {from}\n");
    assert!(toml.contains(&from_line), "{toml}");
    toml.replace(&from_line, &format!("pool_size = {to}\n"))
}

/// A config that is valid TOML but invalid: `default_role = "leader"` (and a pool_size that must
/// not be applied).
fn broken_default_role(toml: &str, from: u32, to: u32) -> String {
    let t = resized(toml, from, to);
    assert!(t.contains("default_role = \"primary\""), "{t}");
    t.replace("default_role = \"primary\"", "default_role = \"leader\"")
}

/// A config that is not TOML at all (and a pool_size that must not be applied).
fn broken_syntax(toml: &str, from: u32, to: u32) -> String {
    let mut t = resized(toml, from, to);
    t.push_str("\n[pools.app.users.0\nusername = = \n");
    t
}

// ---------------------------------------------------------------------------------------------
// A pooler process we own (pid for signals, exit status)
// ---------------------------------------------------------------------------------------------

struct Proc {
    port: u16,
    config_path: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Proc {
    fn start(toml: &str) -> Proc {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let doc: toml::Table = toml::from_str(toml).expect("test config is valid TOML");
        let port = doc["general"]["port"].as_integer().expect("general.port") as u16;
        let dir = std::env::temp_dir().join(format!(
            "pgcat-admin-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let config_path = dir.join("pgcat.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let log = dir.join("pgcat.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_pgcat"))
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn pgcat");
        let mut p = Proc {
            port,
            config_path,
            log,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("pgcat exited ({status}) before listening:\n{}", p.logs());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pgcat did not listen on {port}:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        p
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: as in `signal`.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = self.wait_exit(Duration::from_secs(5));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!(
                "--- pgcat log ({}), last lines ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// 1. SHOW commands: columns and values
// ---------------------------------------------------------------------------------------------

const PGB_STATS: &[&str] = &[
    "database",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];
const PGB_STATS_TOTALS: &[&str] = &[
    "database",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
];
const PGB_POOLS: &[&str] = &[
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_cancel_req",
    "sv_active",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
];
/// PgBouncer's SHOW CLIENTS / SHOW SERVERS core columns (its docs).
const PGB_SOCKETS: &[&str] = &[
    "type",
    "user",
    "database",
    "state",
    "addr",
    "port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "application_name",
];
const DATABASES: &[&str] = &[
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "pool_mode",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
];
const CONFIG: &[&str] = &["key", "value", "default", "changeable"];
const LISTS: &[&str] = &["list", "items"];
const PGCAT_STATS: &[&str] = &[
    "instance",
    "database",
    "user",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_errors",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_errors",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
];
const PGCAT_POOLS: &[&str] = &[
    "database",
    "user",
    "pool_mode",
    "cl_idle",
    "cl_active",
    "cl_waiting",
    "cl_cancel_req",
    "sv_active",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
];
const PGCAT_CLIENTS: &[&str] = &[
    "client_id",
    "database",
    "user",
    "application_name",
    "state",
    "transaction_count",
    "query_count",
    "error_count",
    "age_seconds",
    "maxwait",
    "maxwait_us",
];
const PGCAT_SERVERS: &[&str] = &[
    "server_id",
    "database_name",
    "user",
    "address_id",
    "application_name",
    "state",
    "transaction_count",
    "query_count",
    "bytes_sent",
    "bytes_received",
    "age_seconds",
];
const PGCAT_BANS: &[&str] = &[
    "db",
    "user",
    "role",
    "host",
    "reason",
    "ban_time",
    "ban_duration_seconds",
    "ban_remaining_seconds",
];

/// Every value of the listed columns parses as a number.
fn assert_numeric(what: &str, t: &Table, cols: &[&str]) {
    for r in 0..t.rows.len() {
        for c in cols {
            let _ = t.int(r, c);
        }
        let _ = what;
    }
}

/// Checks SHOW LISTS: the PgBouncer list names with integer items; returns name → items.
fn check_lists(what: &str, t: &Table) -> HashMap<String, i64> {
    assert_columns(what, t, LISTS);
    let items: HashMap<String, i64> = (0..t.rows.len())
        .map(|r| (t.get(r, "list"), t.int(r, "items")))
        .collect();
    for name in [
        "databases",
        "users",
        "pools",
        "free_clients",
        "used_clients",
        "login_clients",
        "free_servers",
        "used_servers",
    ] {
        assert!(
            items.contains_key(name),
            "{what}: no list {name:?}:\n{}",
            t.dump()
        );
    }
    items
}

/// Runs each named check, collecting failures instead of stopping at the first, so one
/// deviation does not hide the others; panics with all of them at the end.
struct Checks(Vec<String>);

impl Checks {
    fn run(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            self.0.push(format!("[{name}] {msg}"));
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

const SHOWS: &[&str] = &[
    "SHOW STATS",
    "SHOW POOLS",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW DATABASES",
    "SHOW USERS",
    "SHOW CONFIG",
    "SHOW LISTS",
    "SHOW VERSION",
];

/// Every SHOW of `db` (plus `extra`), read while a client of scram_user (application_name
/// admin_probe) is inside a transaction.
async fn show_all_with_a_client_in_a_transaction(
    db: &str,
    extra: &[&str],
) -> (Pooler, HashMap<String, Table>) {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "admin_probe").await;
    exec(&c, "BEGIN").await;
    assert_eq!(scalar(&c, "SELECT 41 + 1").await, "42");
    let a = admin(pooler.port, db).await;
    let mut tables = HashMap::new();
    for cmd in SHOWS.iter().chain(extra) {
        tables.insert(cmd.to_string(), show(&a, cmd).await);
    }
    exec(&c, "COMMIT").await;
    (pooler, tables)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_db_every_show_command_answers_pgbouncer_columns_with_live_values() {
    let cluster = shared();
    let (pooler, tables) = show_all_with_a_client_in_a_transaction(
        "pgbouncer",
        &["SHOW STATS_TOTALS", "SHOW STATS_AVERAGES"],
    )
    .await;
    let tb = |cmd: &str| tables[cmd].clone();
    let mut checks = Checks(Vec::new());

    checks.run("SHOW STATS", || {
        let t = tb("SHOW STATS");
        assert_columns("pgbouncer SHOW STATS", &t, PGB_STATS);
        let r = t.one("pgbouncer SHOW STATS", &[("database", DB)]);
        assert_numeric("pgbouncer SHOW STATS", &t, &PGB_STATS[1..]);
        assert!(t.int(r, "total_received") > 0, "{}", t.dump());
    });
    for (cmd, cols) in [
        ("SHOW STATS_TOTALS", PGB_STATS_TOTALS),
        ("SHOW STATS_AVERAGES", PGB_STATS_TOTALS),
    ] {
        checks.run(cmd, || {
            let t = tb(cmd);
            assert_columns(cmd, &t, cols);
            t.one(cmd, &[("database", DB)]);
            assert_numeric(cmd, &t, &cols[1..]);
        });
    }
    checks.run("SHOW POOLS", || {
        let t = tb("SHOW POOLS");
        assert_columns("pgbouncer SHOW POOLS", &t, PGB_POOLS);
        let r = t.one(
            "pgbouncer SHOW POOLS",
            &[("database", DB), ("user", SCRAM_USER)],
        );
        assert_eq!(t.get(r, "pool_mode"), "transaction", "{}", t.dump());
        assert!(
            t.int(r, "cl_active") >= 1,
            "client in a transaction:\n{}",
            t.dump()
        );
        assert_eq!(t.int(r, "cl_waiting"), 0, "{}", t.dump());
        assert_eq!(
            t.int(r, "sv_active"),
            1,
            "server held by the transaction:\n{}",
            t.dump()
        );
    });
    checks.run("SHOW CLIENTS", || {
        let t = tb("SHOW CLIENTS");
        let r = t.one(
            "pgbouncer SHOW CLIENTS",
            &[("application_name", "admin_probe")],
        );
        assert_eq!(t.get(r, "type"), "C", "{}", t.dump());
        assert_eq!(t.get(r, "user"), SCRAM_USER, "{}", t.dump());
        assert_eq!(t.get(r, "database"), DB, "{}", t.dump());
        assert_eq!(t.get(r, "state"), "active", "{}", t.dump());
        assert_eq!(t.get(r, "addr"), "127.0.0.1", "{}", t.dump());
        assert_columns("pgbouncer SHOW CLIENTS", &t, PGB_SOCKETS);
    });
    checks.run("SHOW SERVERS", || {
        let t = tb("SHOW SERVERS");
        let r = t.one(
            "pgbouncer SHOW SERVERS (the one in a transaction)",
            &[("user", SCRAM_USER), ("database", DB), ("state", "active")],
        );
        assert_eq!(t.get(r, "type"), "S", "{}", t.dump());
        assert_eq!(
            t.get(r, "port"),
            cluster.primary.port.to_string(),
            "{}",
            t.dump()
        );
        assert_columns("pgbouncer SHOW SERVERS", &t, PGB_SOCKETS);
    });
    checks.run("SHOW DATABASES", || {
        // PgBouncer: one row per database entry, named as clients name it.
        let t = tb("SHOW DATABASES");
        assert_columns("pgbouncer SHOW DATABASES", &t, DATABASES);
        let r = t.one("pgbouncer SHOW DATABASES", &[("name", DB)]);
        assert_eq!(t.get(r, "host"), cluster.primary.host, "{}", t.dump());
        assert_eq!(
            t.get(r, "port"),
            cluster.primary.port.to_string(),
            "{}",
            t.dump()
        );
        assert_eq!(t.get(r, "database"), DB, "{}", t.dump());
        assert_eq!(t.int(r, "pool_size"), 2, "{}", t.dump());
        assert_eq!(t.get(r, "pool_mode"), "transaction", "{}", t.dump());
        assert!(t.int(r, "current_connections") >= 1, "{}", t.dump());
        assert_eq!(t.int(r, "paused"), 0, "{}", t.dump());
        assert_eq!(t.int(r, "disabled"), 0, "{}", t.dump());
    });
    checks.run("SHOW USERS", || {
        let t = tb("SHOW USERS");
        assert_columns("pgbouncer SHOW USERS", &t, &["name", "pool_mode"]);
        t.one("pgbouncer SHOW USERS", &[("name", SCRAM_USER)]);
        t.one("pgbouncer SHOW USERS", &[("name", MD5_USER)]);
    });
    checks.run("SHOW CONFIG", || {
        let t = tb("SHOW CONFIG");
        assert_columns("pgbouncer SHOW CONFIG", &t, CONFIG);
        let port = pooler.port.to_string();
        assert!(
            (0..t.rows.len()).any(
                |r| ["listen_port", "port"].contains(&t.get(r, "key").as_str())
                    && t.get(r, "value") == port
            ),
            "pgbouncer SHOW CONFIG: no listen_port/port = {port}:\n{}",
            t.dump()
        );
    });
    checks.run("SHOW LISTS", || {
        let t = tb("SHOW LISTS");
        let items = check_lists("pgbouncer SHOW LISTS", &t);
        assert!(items["users"] >= 2, "{}", t.dump());
        assert!(items["pools"] >= 1, "{}", t.dump());
        assert!(items["databases"] >= 1, "{}", t.dump());
        assert!(items["used_servers"] >= 1, "{}", t.dump());
    });
    checks.run("SHOW VERSION", || {
        let t = tb("SHOW VERSION");
        assert_columns("pgbouncer SHOW VERSION", &t, &["version"]);
        assert_eq!(t.rows.len(), 1, "{}", t.dump());
        assert!(
            t.get(0, "version").chars().any(|c| c.is_ascii_digit()),
            "{}",
            t.dump()
        );
    });
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgcat_db_every_show_command_answers_pgcat_columns_with_live_values() {
    let cluster = shared();
    let (pooler, tables) = show_all_with_a_client_in_a_transaction("pgcat", &[]).await;
    let tb = |cmd: &str| tables[cmd].clone();
    let primary = format!("{DB}_shard_0_primary");
    let replica = format!("{DB}_shard_0_replica_0");
    let mut checks = Checks(Vec::new());

    checks.run("SHOW STATS", || {
        let t = tb("SHOW STATS");
        assert_columns("pgcat SHOW STATS", &t, PGCAT_STATS);
        assert_numeric("pgcat SHOW STATS", &t, &PGCAT_STATS[3..]);
        let w = [("database", DB), ("user", SCRAM_USER)];
        assert!(t.sum("total_received", &w) > 0, "{}", t.dump());
        // PgCat's `instance` is the address name, as in SHOW DATABASES.
        let r = t.one(
            "pgcat SHOW STATS",
            &[
                ("instance", &primary),
                ("database", DB),
                ("user", SCRAM_USER),
            ],
        );
        t.one(
            "pgcat SHOW STATS",
            &[
                ("instance", &replica),
                ("database", DB),
                ("user", SCRAM_USER),
            ],
        );
        assert!(t.int(r, "total_received") > 0, "{}", t.dump());
    });
    checks.run("SHOW POOLS", || {
        let t = tb("SHOW POOLS");
        assert_columns("pgcat SHOW POOLS", &t, PGCAT_POOLS);
        let r = t.one(
            "pgcat SHOW POOLS",
            &[("database", DB), ("user", SCRAM_USER)],
        );
        t.one("pgcat SHOW POOLS", &[("database", DB), ("user", MD5_USER)]);
        assert_eq!(t.get(r, "pool_mode"), "transaction", "{}", t.dump());
        assert_eq!(
            t.int(r, "cl_active"),
            1,
            "client in a transaction:\n{}",
            t.dump()
        );
        assert_eq!(t.int(r, "cl_waiting"), 0, "{}", t.dump());
        assert_eq!(t.int(r, "sv_active"), 1, "{}", t.dump());
    });
    checks.run("SHOW CLIENTS", || {
        let t = tb("SHOW CLIENTS");
        assert_columns("pgcat SHOW CLIENTS", &t, PGCAT_CLIENTS);
        let r = t.one("pgcat SHOW CLIENTS", &[("application_name", "admin_probe")]);
        assert_eq!(t.get(r, "database"), DB, "{}", t.dump());
        assert_eq!(t.get(r, "user"), SCRAM_USER, "{}", t.dump());
        assert_eq!(t.get(r, "state"), "active", "{}", t.dump());
        assert!(
            t.int(r, "query_count") >= 2,
            "BEGIN + SELECT:\n{}",
            t.dump()
        );
    });
    checks.run("SHOW SERVERS", || {
        let t = tb("SHOW SERVERS");
        assert_columns("pgcat SHOW SERVERS", &t, PGCAT_SERVERS);
        let r = t.one(
            "pgcat SHOW SERVERS (the one in a transaction)",
            &[
                ("database_name", DB),
                ("user", SCRAM_USER),
                ("state", "active"),
            ],
        );
        assert!(t.int(r, "bytes_sent") > 0, "{}", t.dump());
        assert!(t.int(r, "bytes_received") > 0, "{}", t.dump());
    });
    checks.run("SHOW DATABASES", || {
        let t = tb("SHOW DATABASES");
        assert_columns("pgcat SHOW DATABASES", &t, DATABASES);
        for (name, node) in [
            (&primary, &cluster.primary),
            (&replica, &cluster.replicas[0]),
        ] {
            for user in [SCRAM_USER, MD5_USER] {
                let r = t.one(
                    "pgcat SHOW DATABASES",
                    &[("name", name), ("force_user", user)],
                );
                assert_eq!(t.get(r, "host"), node.host, "{}", t.dump());
                assert_eq!(t.get(r, "port"), node.port.to_string(), "{}", t.dump());
                assert_eq!(t.get(r, "database"), DB, "{}", t.dump());
                assert_eq!(t.int(r, "pool_size"), 2, "{}", t.dump());
                assert_eq!(t.get(r, "pool_mode"), "transaction", "{}", t.dump());
                assert_eq!(t.int(r, "paused"), 0, "{}", t.dump());
                assert_eq!(t.int(r, "disabled"), 0, "{}", t.dump());
            }
        }
        let r = t.one(
            "pgcat SHOW DATABASES",
            &[("name", &primary), ("force_user", SCRAM_USER)],
        );
        assert!(t.int(r, "current_connections") >= 1, "{}", t.dump());
    });
    checks.run("SHOW USERS", || {
        let t = tb("SHOW USERS");
        assert_columns("pgcat SHOW USERS", &t, &["name", "pool_mode"]);
        for user in [SCRAM_USER, MD5_USER] {
            let r = t.one("pgcat SHOW USERS", &[("name", user)]);
            assert_eq!(t.get(r, "pool_mode"), "transaction", "{}", t.dump());
        }
    });
    checks.run("SHOW CONFIG", || {
        let t = tb("SHOW CONFIG");
        assert_columns("pgcat SHOW CONFIG", &t, CONFIG);
        let r = t.one("pgcat SHOW CONFIG", &[("key", "port")]);
        assert_eq!(t.get(r, "value"), pooler.port.to_string(), "{}", t.dump());
        assert_eq!(
            t.get(r, "changeable"),
            "no",
            "port needs a restart:\n{}",
            t.dump()
        );
    });
    checks.run("SHOW LISTS", || {
        let t = tb("SHOW LISTS");
        let items = check_lists("pgcat SHOW LISTS", &t);
        assert!(items["users"] >= 2, "{}", t.dump());
        assert!(items["pools"] >= 2, "{}", t.dump());
        assert!(items["used_servers"] >= 1, "{}", t.dump());
    });
    checks.run("SHOW VERSION", || {
        let t = tb("SHOW VERSION");
        assert_columns("pgcat SHOW VERSION", &t, &["version"]);
        assert_eq!(t.rows.len(), 1, "{}", t.dump());
        let v = t.get(0, "version");
        assert!(
            v.to_ascii_lowercase().contains("pgcat") && v.chars().any(|c| c.is_ascii_digit()),
            "PgCat-style version string expected: {v:?}"
        );
    });
    checks.finish();
}

/// Counters of one SHOW STATS row (or sum of rows).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    xact: i64,
    query: i64,
    received: i64,
    sent: i64,
    xact_time: i64,
    query_time: i64,
    wait_time: i64,
}

async fn pgbouncer_stats(a: &tokio_postgres::Client) -> Counters {
    let t = show(a, "SHOW STATS").await;
    let r = t.one("pgbouncer SHOW STATS", &[("database", DB)]);
    Counters {
        xact: t.int(r, "total_xact_count"),
        query: t.int(r, "total_query_count"),
        received: t.int(r, "total_received"),
        sent: t.int(r, "total_sent"),
        xact_time: t.int(r, "total_xact_time"),
        query_time: t.int(r, "total_query_time"),
        wait_time: t.int(r, "total_wait_time"),
    }
}

/// pgcat SHOW STATS summed over the addresses of pool app / `user`.
async fn pgcat_stats(a: &tokio_postgres::Client, user: &str) -> Counters {
    let t = show(a, "SHOW STATS").await;
    let w = [("database", DB), ("user", user)];
    assert!(
        !t.rows_where(&w).is_empty(),
        "pgcat SHOW STATS: no rows for {w:?}:\n{}",
        t.dump()
    );
    Counters {
        xact: t.sum("total_xact_count", &w),
        query: t.sum("total_query_count", &w),
        received: t.sum("total_received", &w),
        sent: t.sum("total_sent", &w),
        xact_time: t.sum("total_xact_time", &w),
        query_time: t.sum("total_query_time", &w),
        wait_time: t.sum("total_wait_time", &w),
    }
}

fn assert_grew(what: &str, before: Counters, after: Counters, n: i64, slept_us: i64) {
    let d = |a: i64, b: i64| a - b;
    let msg = format!("{what}: before {before:?}\nafter {after:?}");
    assert!(
        d(after.query, before.query) >= n,
        "total_query_count must grow by >= {n}\n{msg}"
    );
    assert!(
        d(after.xact, before.xact) >= n,
        "total_xact_count must grow by >= {n}\n{msg}"
    );
    assert!(
        d(after.received, before.received) > 0,
        "total_received must grow\n{msg}"
    );
    assert!(
        d(after.sent, before.sent) > 0,
        "total_sent must grow\n{msg}"
    );
    assert!(
        d(after.query_time, before.query_time) >= slept_us,
        "total_query_time (us) must grow by >= {slept_us} after pg_sleep\n{msg}"
    );
    assert!(
        d(after.xact_time, before.xact_time) >= slept_us,
        "total_xact_time (us) must grow by >= {slept_us} after pg_sleep\n{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counters_grow_by_the_queries_run_on_both_admin_databases() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "counter").await;
    exec(&c, "SELECT 1").await;
    let pgb = admin(pooler.port, "pgbouncer").await;
    let pgc = admin(pooler.port, "pgcat").await;
    // Let anything asynchronous about the warm-up query settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_pgb = pgbouncer_stats(&pgb).await;
    let b_pgc = pgcat_stats(&pgc, SCRAM_USER).await;
    let b_totals = {
        let t = show(&pgb, "SHOW STATS_TOTALS").await;
        let r = t.one("SHOW STATS_TOTALS", &[("database", DB)]);
        t.int(r, "query_count")
    };

    const N: i64 = 25;
    for i in 0..N - 1 {
        assert_eq!(scalar(&c, &format!("SELECT {i}")).await, i.to_string());
    }
    exec(&c, "SELECT pg_sleep(0.2)").await;

    // Counters may be aggregated a moment later; give them up to 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (a_pgb, a_pgc) = loop {
        let a_pgb = pgbouncer_stats(&pgb).await;
        let a_pgc = pgcat_stats(&pgc, SCRAM_USER).await;
        if (a_pgb.query - b_pgb.query >= N && a_pgc.query - b_pgc.query >= N)
            || Instant::now() > deadline
        {
            break (a_pgb, a_pgc);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_grew(
        "pgbouncer SHOW STATS (database app)",
        b_pgb,
        a_pgb,
        N,
        200_000,
    );
    assert_grew(
        "pgcat SHOW STATS (app / scram_user)",
        b_pgc,
        a_pgc,
        N,
        200_000,
    );
    let t = show(&pgb, "SHOW STATS_TOTALS").await;
    let r = t.one("SHOW STATS_TOTALS", &[("database", DB)]);
    assert!(
        t.int(r, "query_count") - b_totals >= N,
        "SHOW STATS_TOTALS query_count must grow by >= {N}: before {b_totals}\n{}",
        t.dump()
    );
    // The other user's pool saw none of it.
    let md5 = pgcat_stats(&pgc, MD5_USER).await;
    assert_eq!(md5.query, 0, "md5_user ran nothing: {md5:?}");
}

#[test]
fn psql_reads_the_admin_databases_and_sees_its_own_queries_counted() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let stats = |db: &str| {
        psql_table(
            cluster,
            pooler.port,
            ADMIN_USER,
            ADMIN_PASS,
            db,
            "SHOW STATS",
        )
        .unwrap_or_else(|e| panic!("psql SHOW STATS on {db}: {e}\n{}", pooler.logs()))
    };
    let pgb_count = |t: &Table| t.sum("total_query_count", &[("database", DB)]);
    let pgc_count = |t: &Table| {
        t.sum(
            "total_query_count",
            &[("database", DB), ("user", SCRAM_USER)],
        )
    };
    let (b0, c0) = (stats("pgbouncer"), stats("pgcat"));
    assert_columns("psql pgbouncer SHOW STATS", &b0, PGB_STATS);
    assert_columns("psql pgcat SHOW STATS", &c0, PGCAT_STATS);
    for i in 0..5 {
        let out = support::psql(
            cluster,
            &pooler,
            SCRAM_USER,
            SCRAM_PASS,
            &format!("SELECT {i}"),
        )
        .unwrap_or_else(|e| panic!("psql through the pooler: {e}"));
        assert_eq!(out, i.to_string());
    }
    let ok = support::wait_until(Duration::from_secs(5), || {
        pgb_count(&stats("pgbouncer")) - pgb_count(&b0) >= 5
            && pgc_count(&stats("pgcat")) - pgc_count(&c0) >= 5
    });
    let (b1, c1) = (stats("pgbouncer"), stats("pgcat"));
    assert!(
        ok,
        "5 psql queries must be counted: pgbouncer {} -> {}, pgcat {} -> {}",
        pgb_count(&b0),
        pgb_count(&b1),
        pgc_count(&c0),
        pgc_count(&c1)
    );
    for db in ADMIN_DBS {
        let t = psql_table(
            cluster,
            pooler.port,
            ADMIN_USER,
            ADMIN_PASS,
            db,
            "SHOW POOLS",
        )
        .unwrap_or_else(|e| panic!("psql SHOW POOLS on {db}: {e}"));
        let cols = if db == "pgcat" {
            PGCAT_POOLS
        } else {
            PGB_POOLS
        };
        assert_columns(&format!("psql {db} SHOW POOLS"), &t, cols);
        let r = t.one(db, &[("database", DB), ("user", SCRAM_USER)]);
        assert_eq!(t.int(r, "cl_waiting"), 0, "{}", t.dump());
        assert_eq!(t.int(r, "sv_active"), 0, "nothing running:\n{}", t.dump());
    }
}

/// (cl_waiting, maxwait in us) of app / scram_user in SHOW POOLS.
async fn waiting(a: &tokio_postgres::Client, db: &str) -> (i64, i64, Table) {
    let t = show(a, "SHOW POOLS").await;
    let r = t.one(
        &format!("{db} SHOW POOLS"),
        &[("database", DB), ("user", SCRAM_USER)],
    );
    let w = t.int(r, "cl_waiting");
    let mw = t.int(r, "maxwait") * 1_000_000 + t.int(r, "maxwait_us");
    (w, mw, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_queued_behind_a_busy_pool_shows_in_cl_waiting_maxwait_and_wait_time() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 1));
    let holder = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "holder").await;
    let queued = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "queued").await;
    let pgb = admin(pooler.port, "pgbouncer").await;
    let pgc = admin(pooler.port, "pgcat").await;
    let before_pgb = pgbouncer_stats(&pgb).await;
    let before_pgc = pgcat_stats(&pgc, SCRAM_USER).await;

    exec(&holder, "BEGIN").await;
    exec(&holder, "SELECT 1").await;
    let task = tokio::spawn(async move {
        let r = queued.simple_query("SELECT 42").await.map(table_from);
        (queued, r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "pool_size 1 is held: the second client must queue"
    );

    for (db, a) in [("pgbouncer", &pgb), ("pgcat", &pgc)] {
        let (w, mw, t) = waiting(a, db).await;
        assert!(
            w >= 1,
            "{db} SHOW POOLS cl_waiting must be >= 1:\n{}",
            t.dump()
        );
        assert!(
            mw >= 1_000_000,
            "{db} SHOW POOLS maxwait must cover the 1.5 s wait (got {mw} us):\n{}",
            t.dump()
        );
        let r = t.one(db, &[("database", DB), ("user", SCRAM_USER)]);
        assert_eq!(t.int(r, "sv_active"), 1, "{}", t.dump());
    }
    let t = show(&pgb, "SHOW CLIENTS").await;
    let r = t.one("pgbouncer SHOW CLIENTS", &[("application_name", "queued")]);
    assert_eq!(t.get(r, "state"), "waiting", "{}", t.dump());
    assert!(
        t.int(r, "wait") * 1_000_000 + t.int(r, "wait_us") >= 1_000_000,
        "pgbouncer SHOW CLIENTS wait/wait_us of the queued client:\n{}",
        t.dump()
    );
    let t = show(&pgc, "SHOW CLIENTS").await;
    let r = t.one("pgcat SHOW CLIENTS", &[("application_name", "queued")]);
    assert_eq!(t.get(r, "state"), "waiting", "{}", t.dump());

    exec(&holder, "COMMIT").await;
    let (_queued, r) = within(Duration::from_secs(10), "queued client", task)
        .await
        .expect("task");
    let r = r.unwrap_or_else(|e| panic!("queued query must succeed: {}", pg_err(&e)));
    assert_eq!(r.get(0, &r.columns[0].clone()), "42");

    for (db, a) in [("pgbouncer", &pgb), ("pgcat", &pgc)] {
        let (w, _, t) = waiting(a, db).await;
        assert_eq!(w, 0, "{db}: nobody waits any more:\n{}", t.dump());
    }
    let t = show(&pgc, "SHOW CLIENTS").await;
    let after_pgb = pgbouncer_stats(&pgb).await;
    let after_pgc = pgcat_stats(&pgc, SCRAM_USER).await;
    let mut checks = Checks(Vec::new());
    checks.run("pgcat SHOW CLIENTS maxwait", || {
        let r = t.one("pgcat SHOW CLIENTS", &[("application_name", "queued")]);
        assert!(
            t.int(r, "maxwait") * 1_000_000 + t.int(r, "maxwait_us") >= 1_000_000,
            "pgcat SHOW CLIENTS maxwait of the client that waited 1.5 s:\n{}",
            t.dump()
        );
    });
    checks.run("pgbouncer total_wait_time", || {
        assert!(
            after_pgb.wait_time - before_pgb.wait_time >= 1_000_000,
            "pgbouncer total_wait_time (us): {before_pgb:?} -> {after_pgb:?}"
        )
    });
    checks.run("pgcat total_wait_time", || {
        assert!(
            after_pgc.wait_time - before_pgc.wait_time >= 1_000_000,
            "pgcat total_wait_time (us): {before_pgc:?} -> {after_pgc:?}"
        )
    });
    checks.finish();
}

/// (cl_idle, cl_active, cl_waiting, sv_active, sv_idle) of app / scram_user in pgcat SHOW POOLS.
async fn pgcat_pool_counts(a: &tokio_postgres::Client) -> ([i64; 5], Table) {
    let t = show(a, "SHOW POOLS").await;
    let r = t.one(
        "pgcat SHOW POOLS",
        &[("database", DB), ("user", SCRAM_USER)],
    );
    (
        [
            t.int(r, "cl_idle"),
            t.int(r, "cl_active"),
            t.int(r, "cl_waiting"),
            t.int(r, "sv_active"),
            t.int(r, "sv_idle"),
        ],
        t,
    )
}

async fn wait_pool_counts(
    a: &tokio_postgres::Client,
    what: &str,
    check: impl Fn([i64; 5]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (c, t) = pgcat_pool_counts(a).await;
        if check(c) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: [cl_idle, cl_active, cl_waiting, sv_active, sv_idle] = {c:?}\n{}",
                t.dump()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_client_counts_follow_logins_queries_and_clean_or_abrupt_disconnects() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let pgc = admin(pooler.port, "pgcat").await;
    let pgb = admin(pooler.port, "pgbouncer").await;
    let (base, _) = pgcat_pool_counts(&pgc).await;
    assert_eq!(base[..4], [0, 0, 0, 0], "no clients yet: {base:?}");
    let pools_before = show(&pgb, "SHOW POOLS").await;

    // Failed logins (wrong password, unknown database) leave SHOW POOLS as it was.
    let e = RawConn::connect(pooler.port, SCRAM_USER, "wrong", DB).err();
    assert!(
        matches!(e, Some(LoginError::Server { .. })),
        "wrong password must fail: {e:?}"
    );
    let e = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, "random_db").err();
    assert!(
        matches!(e, Some(LoginError::Server { .. })),
        "unknown database must fail: {e:?}"
    );
    let (after_bad, t) = pgcat_pool_counts(&pgc).await;
    assert_eq!(
        after_bad,
        base,
        "failed logins changed pgcat SHOW POOLS:\n{}",
        t.dump()
    );
    let pools_after = show(&pgb, "SHOW POOLS").await;
    assert_eq!(
        pools_before.rows.len(),
        pools_after.rows.len(),
        "failed logins added pools:\n{}",
        pools_after.dump()
    );
    assert!(pools_after
        .rows_where(&[("database", "random_db")])
        .is_empty());

    // An idle client only counts in cl_idle; after one query its server is idle.
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "idle_one").await;
    wait_pool_counts(&pgc, "idle client", |c| {
        c[0] == base[0] + 1 && c[1] == 0 && c[2] == 0
    })
    .await;
    exec(&c, "SELECT 1").await;
    wait_pool_counts(&pgc, "after one query", |c| {
        c[0] == base[0] + 1 && c[1] == 0 && c[3] == 0 && c[4] >= 1
    })
    .await;
    // Clean disconnect.
    drop(c);
    wait_pool_counts(&pgc, "after a clean disconnect", |c| {
        c[0] == base[0] && c[1] == 0
    })
    .await;

    // Abrupt disconnect inside a transaction (socket closed, no Terminate).
    let mut raw = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    for sql in ["BEGIN", "SELECT 1"] {
        let r = raw.simple_query(sql).expect(sql);
        assert!(r.iter().all(|m| m.tag != b'E'), "{sql}: {r:?}");
    }
    wait_pool_counts(&pgc, "client inside a transaction", |c| {
        c[1] == 1 && c[3] == 1
    })
    .await;
    drop(raw);
    wait_pool_counts(
        &pgc,
        "after an abrupt disconnect inside a transaction",
        |c| c[0] == base[0] && c[1] == 0 && c[2] == 0 && c[3] == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_reports_application_name_and_per_client_counts() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "counted_client").await;
    let other = app_client(pooler.port, MD5_USER, MD5_PASS, "other_client").await;
    for i in 0..5 {
        exec(&c, &format!("SELECT {i}")).await;
    }
    exec(&other, "SELECT 1").await;
    let pgc = admin(pooler.port, "pgcat").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = show(&pgc, "SHOW CLIENTS").await;
        let r = t.one(
            "pgcat SHOW CLIENTS",
            &[("application_name", "counted_client")],
        );
        let ok = t.int(r, "query_count") >= 5 && t.int(r, "transaction_count") >= 5;
        if ok || Instant::now() > deadline {
            assert!(ok, "5 queries / 5 transactions expected:\n{}", t.dump());
            assert_eq!(t.get(r, "user"), SCRAM_USER);
            assert_eq!(t.get(r, "database"), DB);
            assert_eq!(t.get(r, "state"), "idle", "{}", t.dump());
            assert_eq!(t.int(r, "error_count"), 0, "{}", t.dump());
            assert!(t.int(r, "age_seconds") >= 0);
            let o = t.one(
                "pgcat SHOW CLIENTS",
                &[("application_name", "other_client")],
            );
            assert_eq!(t.get(o, "user"), MD5_USER);
            assert!(
                t.int(o, "query_count") <= 2,
                "other client's own count:\n{}",
                t.dump()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pgb = admin(pooler.port, "pgbouncer").await;
    let t = show(&pgb, "SHOW CLIENTS").await;
    let r = t.one(
        "pgbouncer SHOW CLIENTS",
        &[("application_name", "counted_client")],
    );
    assert_eq!(t.get(r, "user"), SCRAM_USER, "{}", t.dump());
    assert_eq!(t.get(r, "database"), DB, "{}", t.dump());
}

// ---------------------------------------------------------------------------------------------
// Both admin databases: HELP, BANS, unknown commands, SET
// ---------------------------------------------------------------------------------------------

#[test]
fn show_help_lists_the_commands_and_show_bans_is_empty_on_both_admin_databases() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    for db in ADMIN_DBS {
        let mut a = raw_admin(pooler.port, db);
        let r = run_ok(&mut a, "SHOW HELP");
        let text = r.text().to_ascii_uppercase();
        for word in [
            "SHOW", "STATS", "POOLS", "RELOAD", "PAUSE", "RESUME", "SHUTDOWN",
        ] {
            assert!(
                text.contains(word),
                "{db} SHOW HELP must mention {word}: {r:?}"
            );
        }
        // Lower case and a trailing semicolon are fine too.
        let r = run_ok(&mut a, "show version;");
        assert_eq!(r.table.rows.len(), 1, "{db}: {r:?}");
        let r = run_ok(&mut a, "SHOW BANS");
        assert!(
            r.table.rows.is_empty(),
            "{db}: nothing is banned: {:?}",
            r.table
        );
        if db == "pgcat" {
            // PgCat's SHOW BANS columns (its admin.rs: "db", not "database").
            assert_columns("pgcat SHOW BANS", &r.table, PGCAT_BANS);
        } else {
            assert!(
                !r.table.columns.is_empty(),
                "{db} SHOW BANS has columns: {r:?}"
            );
        }
    }
}

#[test]
fn unknown_admin_commands_get_an_error_pointing_to_show_help_and_the_session_survives() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    for db in ADMIN_DBS {
        let mut a = raw_admin(pooler.port, db);
        for sql in ["SHOW NONSENSE", "FROBNICATE everything", "BAN"] {
            let r = run(&mut a, sql);
            let (code, text) = r
                .error
                .clone()
                .unwrap_or_else(|| panic!("{db}: {sql:?} must be an ErrorResponse: {r:?}"));
            assert!(!code.is_empty(), "{db} {sql}: SQLSTATE");
            if sql != "BAN" {
                assert!(
                    text.to_ascii_uppercase().contains("SHOW HELP"),
                    "{db}: {sql:?}: message or hint must mention SHOW HELP: {text:?}"
                );
            }
        }
        let r = run_ok(&mut a, "SHOW VERSION");
        assert_eq!(
            r.table.rows.len(),
            1,
            "{db}: session usable after errors: {r:?}"
        );
    }
}

#[test]
fn set_statements_from_admin_clients_are_accepted() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    for db in ADMIN_DBS {
        let mut a = raw_admin(pooler.port, db);
        for sql in [
            "SET client_encoding TO 'UTF8'",
            "SET application_name = 'psql'",
            "set DateStyle to ISO",
        ] {
            let r = run_ok(&mut a, sql);
            assert_eq!(r.tags, vec!["SET".to_owned()], "{db}: {sql}: {r:?}");
        }
        // psql sends its own SET-free startup; through psql as well:
        let t = psql_table(
            cluster,
            pooler.port,
            ADMIN_USER,
            ADMIN_PASS,
            db,
            "SET client_encoding TO 'UTF8'",
        );
        assert!(t.is_ok(), "{db}: psql SET: {t:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. RELOAD / SIGHUP
// ---------------------------------------------------------------------------------------------

/// pool_size shown for pool app in SHOW DATABASES: every row of database `app` on the
/// pgbouncer admin database, then on the pgcat one. (The row layout of the pgbouncer database
/// is checked in the SHOW test; here only the values matter.)
async fn shown_pool_sizes(port: u16) -> (Vec<i64>, Vec<i64>) {
    let mut out = Vec::new();
    for db in ADMIN_DBS {
        let a = admin(port, db).await;
        let t = show(&a, "SHOW DATABASES").await;
        let rows = t.rows_where(&[("database", DB)]);
        assert!(
            !rows.is_empty(),
            "{db} SHOW DATABASES has no row for {DB}:\n{}",
            t.dump()
        );
        out.push(rows.into_iter().map(|r| t.int(r, "pool_size")).collect());
    }
    let pgc = out.pop().unwrap();
    (out.pop().unwrap(), pgc)
}

fn all(v: &(Vec<i64>, Vec<i64>), size: i64) -> bool {
    v.0.iter().chain(&v.1).all(|&x| x == size)
}

async fn wait_pool_size(port: u16, size: i64, limit: Duration) -> (Vec<i64>, Vec<i64>) {
    let deadline = Instant::now() + limit;
    loop {
        let s = shown_pool_sizes(port).await;
        if all(&s, size) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` clients of scram_user each open a transaction at the same time; their backend pids.
async fn concurrent_transactions(port: u16, n: usize) -> Vec<String> {
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(app_client(port, SCRAM_USER, SCRAM_PASS, &format!("conc{i}")).await);
    }
    let mut pids = Vec::new();
    for c in &clients {
        exec(c, "BEGIN").await;
        pids.push(scalar(c, "SELECT pg_backend_pid()").await);
    }
    for c in &clients {
        exec(c, "COMMIT").await;
    }
    pids
}

async fn reload_scenario(admin_db: &str) {
    let cluster = shared();
    let port = free_port();
    let toml = app_config(cluster, port, 1);
    let pooler = Pooler::start(&toml);
    let in_txn = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "in_txn").await;
    let idle = app_client(pooler.port, MD5_USER, MD5_PASS, "idle").await;
    exec(&idle, "SELECT 1").await;
    exec(&in_txn, "BEGIN").await;
    assert_eq!(scalar(&in_txn, "SELECT 1").await, "1");
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all(&s, 1), "pool_size 1 before RELOAD: {s:?}");

    std::fs::write(&pooler.config_path, resized(&toml, 1, 3)).expect("rewrite config");
    let port = pooler.port;
    let db = admin_db.to_owned();
    let r = tokio::task::spawn_blocking(move || {
        let mut a = raw_admin(port, &db);
        run(&mut a, "RELOAD")
    })
    .await
    .expect("RELOAD task");
    assert!(
        r.error.is_none(),
        "RELOAD on {admin_db}: {r:?}\n{}",
        tail(&pooler.logs(), 30)
    );
    assert_eq!(r.tags, vec!["RELOAD".to_owned()], "RELOAD reply: {r:?}");

    let s = wait_pool_size(pooler.port, 3, Duration::from_secs(5)).await;
    assert!(
        all(&s, 3),
        "SHOW DATABASES pool_size after RELOAD (pgbouncer rows, pgcat rows): {s:?}"
    );
    // Connected clients keep working: the open transaction finishes, the idle one queries.
    assert_eq!(scalar(&in_txn, "SELECT 2").await, "2");
    exec(&in_txn, "COMMIT").await;
    assert_eq!(scalar(&in_txn, "SELECT 3").await, "3");
    assert_eq!(scalar(&idle, "SELECT 4").await, "4");
    // The new size is in force: three transactions at once on three servers.
    let pids = within(
        Duration::from_secs(15),
        "3 concurrent transactions with pool_size 3",
        concurrent_transactions(pooler.port, 3),
    )
    .await;
    let distinct: HashSet<_> = pids.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "three servers at once after RELOAD: {pids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_pgbouncer_db_applies_new_pool_size_and_clients_keep_working() {
    reload_scenario("pgbouncer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_pgcat_db_applies_new_pool_size_and_clients_keep_working() {
    reload_scenario("pgcat").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_a_broken_file_keeps_the_old_config_and_says_why() {
    let cluster = shared();
    let toml = app_config(cluster, free_port(), 2);
    let pooler = Pooler::start(&toml);
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "survivor").await;
    exec(&c, "SELECT 1").await;
    let port = pooler.port;
    let reload = move || {
        let mut a = raw_admin(port, "pgbouncer");
        run(&mut a, "RELOAD")
    };

    // Valid TOML, invalid value: the reply names the key.
    std::fs::write(&pooler.config_path, broken_default_role(&toml, 2, 5)).expect("write");
    let r = tokio::task::spawn_blocking(reload).await.expect("task");
    let said = r.error.is_some() || !r.notices.is_empty();
    assert!(
        said,
        "RELOAD of an invalid file must answer an error or notice: {r:?}"
    );
    assert!(
        r.text().contains("default_role"),
        "RELOAD reply must name the key (default_role): {r:?}"
    );
    let mut checks = Checks(Vec::new());
    let logged = support::wait_until(Duration::from_secs(5), || {
        pooler.logs().contains("default_role")
    });
    let log_tail = tail(&pooler.logs(), 30);
    checks.run("log after a refused admin RELOAD", || {
        assert!(
            logged,
            "the log must name the key (default_role):\n{log_tail}"
        )
    });
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all(&s, 2), "old config kept: {s:?}");
    assert_eq!(scalar(&c, "SELECT 2").await, "2");

    // Not TOML at all.
    std::fs::write(&pooler.config_path, broken_syntax(&toml, 2, 6)).expect("write");
    let r = tokio::task::spawn_blocking(reload).await.expect("task");
    assert!(
        r.error.is_some() || !r.notices.is_empty(),
        "RELOAD of a file that is not TOML must answer an error or notice: {r:?}"
    );
    assert!(!r.text().trim().is_empty(), "and say why: {r:?}");
    let s = shown_pool_sizes(pooler.port).await;
    assert!(all(&s, 2), "old config kept: {s:?}");
    assert_eq!(scalar(&c, "SELECT 3").await, "3");
    let fresh = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "fresh").await;
    assert_eq!(scalar(&fresh, "SELECT 4").await, "4");

    // A good file again reloads fine.
    std::fs::write(&pooler.config_path, resized(&toml, 2, 4)).expect("write");
    let r = tokio::task::spawn_blocking(reload).await.expect("task");
    assert!(r.error.is_none(), "RELOAD of a fixed file: {r:?}");
    let s = wait_pool_size(pooler.port, 4, Duration::from_secs(5)).await;
    assert!(all(&s, 4), "{s:?}");
    assert_eq!(scalar(&c, "SELECT 5").await, "5");
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_like_reload_and_a_broken_file_keeps_the_old_config() {
    let cluster = shared();
    let toml = app_config(cluster, free_port(), 1);
    let proc = Proc::start(&toml);
    let in_txn = app_client(proc.port, SCRAM_USER, SCRAM_PASS, "in_txn").await;
    exec(&in_txn, "BEGIN").await;
    exec(&in_txn, "SELECT 1").await;

    std::fs::write(&proc.config_path, resized(&toml, 1, 3)).expect("write");
    proc.signal(libc::SIGHUP);
    let s = wait_pool_size(proc.port, 3, Duration::from_secs(5)).await;
    assert!(all(&s, 3), "SHOW DATABASES pool_size after SIGHUP: {s:?}");
    assert_eq!(scalar(&in_txn, "SELECT 2").await, "2");
    exec(&in_txn, "COMMIT").await;
    let pids = within(
        Duration::from_secs(15),
        "3 concurrent transactions after SIGHUP",
        concurrent_transactions(proc.port, 3),
    )
    .await;
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");

    let before = proc.logs().len();
    std::fs::write(&proc.config_path, broken_default_role(&toml, 1, 7)).expect("write");
    proc.signal(libc::SIGHUP);
    assert!(
        support::wait_until(Duration::from_secs(5), || proc.logs()[before..]
            .contains("default_role")),
        "SIGHUP with an invalid file must log the key:\n{}",
        tail(&proc.logs(), 30)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = shown_pool_sizes(proc.port).await;
    assert!(all(&s, 3), "old config kept: {s:?}");
    assert_eq!(scalar(&in_txn, "SELECT 3").await, "3");
    let mut proc = proc;
    assert!(proc.running(), "a broken reload must not stop the pooler");
}

// ---------------------------------------------------------------------------------------------
// 3. PAUSE / RESUME
// ---------------------------------------------------------------------------------------------

/// `paused` of scram_user's pool app as SHOW DATABASES reports it: pgbouncer (rows of
/// database app, for any user) and pgcat (rows of database app and force_user scram_user).
async fn shown_paused(port: u16) -> (Vec<i64>, Vec<i64>) {
    let pgb = admin(port, "pgbouncer").await;
    let t = show(&pgb, "SHOW DATABASES").await;
    let b = t
        .rows_where(&[("database", DB)])
        .into_iter()
        .map(|r| t.int(r, "paused"))
        .collect();
    let pgc = admin(port, "pgcat").await;
    let t = show(&pgc, "SHOW DATABASES").await;
    let rows = t.rows_where(&[("database", DB), ("force_user", SCRAM_USER)]);
    assert!(!rows.is_empty(), "{}", t.dump());
    (b, rows.into_iter().map(|r| t.int(r, "paused")).collect())
}

async fn pause_scenario(db: &str, pause: &str, resume: &str, per_user: bool) {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let holder = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "holder").await;
    let later = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "later").await;
    let other = app_client(pooler.port, MD5_USER, MD5_PASS, "other_user").await;
    exec(&later, "SELECT 1").await;
    exec(&other, "SELECT 1").await;
    exec(&holder, "BEGIN").await;
    assert_eq!(scalar(&holder, "SELECT 1").await, "1");

    let pauser = admin(pooler.port, db).await;
    let pause_sql = pause.to_owned();
    let pause_task = tokio::spawn(async move {
        let r = pauser.simple_query(&pause_sql).await.map(|_| ());
        (Instant::now(), r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !pause_task.is_finished(),
        "{pause} on {db} must wait for the open transaction (it returned while it was open)"
    );
    // The transaction keeps running and can finish.
    assert_eq!(scalar(&holder, "SELECT 2").await, "2");
    let committed_at = Instant::now();
    exec(&holder, "COMMIT").await;
    let (returned_at, r) = within(Duration::from_secs(10), pause, pause_task)
        .await
        .expect("pause task");
    r.unwrap_or_else(|e| panic!("{pause} on {db}: {}", pg_err(&e)));
    assert!(
        returned_at >= committed_at,
        "{pause} returned before the COMMIT"
    );
    let (b, c) = shown_paused(pooler.port).await;
    if !per_user {
        assert!(
            !b.is_empty() && b.iter().all(|&p| p == 1),
            "pgbouncer SHOW DATABASES paused after {pause}: {b:?}"
        );
    }
    assert!(
        c.iter().all(|&p| p == 1),
        "pgcat SHOW DATABASES paused after {pause}: {c:?}"
    );

    // New queries queue, without an error.
    let queued = tokio::spawn(async move {
        let r = later.simple_query("SELECT 42").await.map(table_from);
        (later, r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !queued.is_finished(),
        "a query during {pause} must queue until RESUME"
    );
    if per_user {
        // Only app/scram_user is paused: md5_user keeps going.
        assert_eq!(
            within(
                Duration::from_secs(5),
                "other user's query",
                scalar(&other, "SELECT 7")
            )
            .await,
            "7"
        );
    }

    let resumer = admin(pooler.port, db).await;
    within(
        Duration::from_secs(10),
        resume,
        resumer.simple_query(resume),
    )
    .await
    .unwrap_or_else(|e| panic!("{resume} on {db}: {}", pg_err(&e)));
    let (_later, r) = within(Duration::from_secs(10), "query queued during PAUSE", queued)
        .await
        .expect("task");
    let t = r.unwrap_or_else(|e| panic!("the queued query must not fail: {}", pg_err(&e)));
    assert_eq!(t.get(0, &t.columns[0].clone()), "42");
    assert_eq!(scalar(&holder, "SELECT 3").await, "3");
    assert_eq!(scalar(&other, "SELECT 8").await, "8");
    let p = shown_paused(pooler.port).await;
    assert!(all(&p, 0), "not paused after {resume}: {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_all_on_pgbouncer_db_waits_for_the_transaction_then_queues_until_resume() {
    pause_scenario("pgbouncer", "PAUSE", "RESUME", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_db_on_pgbouncer_db_waits_for_the_transaction_then_queues_until_resume() {
    pause_scenario("pgbouncer", "PAUSE app", "RESUME app", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_db_user_on_pgcat_db_waits_then_queues_only_that_pool_until_resume() {
    pause_scenario(
        "pgcat",
        "PAUSE app,scram_user",
        "RESUME app,scram_user",
        true,
    )
    .await;
}

#[test]
fn pause_resume_reconnect_kill_of_an_unknown_pool_are_errors() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    for (db, cmds) in [
        (
            "pgbouncer",
            &[
                "PAUSE nosuchdb",
                "RESUME nosuchdb",
                "RECONNECT nosuchdb",
                "KILL nosuchdb",
            ][..],
        ),
        (
            "pgcat",
            &["PAUSE nosuchdb,nobody", "RESUME nosuchdb,nobody"][..],
        ),
    ] {
        let mut a = raw_admin(pooler.port, db);
        for sql in cmds {
            let r = run(&mut a, sql);
            assert!(r.error.is_some(), "{db}: {sql} must be an error: {r:?}");
        }
    }
    // Nothing got paused by the failed commands.
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    a.set_read_timeout(Duration::from_secs(5));
    let r = a.simple_query("SELECT 1").expect("query must not queue");
    assert!(r.iter().any(|m| m.tag == b'D'), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// RECONNECT, KILL
// ---------------------------------------------------------------------------------------------

async fn backend_pid(c: &tokio_postgres::Client) -> String {
    scalar(c, "SELECT pg_backend_pid()").await
}

/// Polls until the (pool_size 1) client lands on a server other than `old`.
async fn new_backend(c: &tokio_postgres::Client, old: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = backend_pid(c).await;
        if p != old {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still on server pid {old}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_the_server_connections_of_a_pool() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 1));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "reconnected").await;
    let p1 = backend_pid(&c).await;
    assert_eq!(backend_pid(&c).await, p1, "pool_size 1 reuses its server");

    let port = pooler.port;
    let r = tokio::task::spawn_blocking(move || {
        run(&mut raw_admin(port, "pgbouncer"), "RECONNECT app")
    })
    .await
    .expect("task");
    assert!(r.error.is_none(), "pgbouncer RECONNECT app: {r:?}");
    let p2 = new_backend(&c, &p1, "after RECONNECT app").await;

    let r = tokio::task::spawn_blocking(move || run(&mut raw_admin(port, "pgcat"), "RECONNECT"))
        .await
        .expect("task");
    assert!(r.error.is_none(), "pgcat RECONNECT: {r:?}");
    new_backend(&c, &p2, "after RECONNECT").await;

    // The old backend is gone from PostgreSQL.
    let direct = connect_direct(&cluster.primary, "postgres").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::text::int",
                &[&p1],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend {p1} still connected after RECONNECT"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_db_drops_its_clients_and_servers() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 1));
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "to_be_killed").await;
    let p1 = backend_pid(&c).await;
    let port = pooler.port;
    let r = tokio::task::spawn_blocking(move || run(&mut raw_admin(port, "pgbouncer"), "KILL app"))
        .await
        .expect("task");
    assert!(r.error.is_none(), "KILL app: {r:?}");
    let after = within(
        Duration::from_secs(10),
        "query after KILL",
        c.simple_query("SELECT 1"),
    )
    .await;
    assert!(
        after.is_err(),
        "the client of a killed database must be disconnected"
    );

    let direct = connect_direct(&cluster.primary, "postgres").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::text::int",
                &[&p1],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend {p1} still connected after KILL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // PgBouncer: a killed database waits for RESUME; then it serves again.
    let _ =
        tokio::task::spawn_blocking(move || run(&mut raw_admin(port, "pgbouncer"), "RESUME app"))
            .await;
    let fresh = within(
        Duration::from_secs(15),
        "login after KILL + RESUME",
        app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "after_kill"),
    )
    .await;
    assert_eq!(
        within(
            Duration::from_secs(10),
            "query after KILL + RESUME",
            scalar(&fresh, "SELECT 5")
        )
        .await,
        "5"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Prometheus
// ---------------------------------------------------------------------------------------------

/// GET over HTTP/1.0: (status, lower-cased headers, body).
fn http_get(port: u16, path: &str) -> Result<(u16, HashMap<String, String>, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n").ok_or("bad chunk")?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            if size == 0 {
                break;
            }
            out.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    Ok((status, headers, body))
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses Prometheus text exposition format strictly enough to catch what Prometheus rejects:
/// metric/label names, quoted label values, numeric values, HELP/TYPE before the samples of a
/// family, no duplicate HELP/TYPE. Returns the samples and the TYPE of each family.
fn parse_prometheus(text: &str) -> Result<(Vec<Sample>, HashMap<String, String>), String> {
    let mut samples = Vec::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    for (no, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", no + 1);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().ok_or_else(at)?;
            if !valid_metric_name(name) || !helps.insert(name.to_owned()) {
                return Err(format!("bad or duplicate HELP, {}", at()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, ty) = (parts.next().ok_or_else(at)?, parts.next().ok_or_else(at)?);
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                return Err(format!("unknown type, {}", at()));
            }
            if types.insert(name.to_owned(), ty.to_owned()).is_some() {
                return Err(format!("duplicate TYPE, {}", at()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value, {}", at()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("bad metric name, {}", at()));
        }
        let mut labels = HashMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                r = r.trim_start_matches([' ', ',']);
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = r.find('=').ok_or_else(|| format!("bad label, {}", at()))?;
                let lname = r[..eq].trim();
                if !valid_metric_name(lname) || lname.contains(':') {
                    return Err(format!("bad label name {lname:?}, {}", at()));
                }
                let v = r[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| format!("unquoted label value, {}", at()))?;
                let mut value = String::new();
                let mut chars = v.char_indices();
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => break,
                        },
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                let end = end.ok_or_else(|| format!("unterminated label value, {}", at()))?;
                labels.insert(lname.to_owned(), value);
                r = &v[end + 1..];
            }
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| format!("no value, {}", at()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| format!("bad value, {}", at()))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp, {}", at()))?;
        }
        let family_typed = types.contains_key(name)
            || ["_bucket", "_sum", "_count", "_total", "_created"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| types.contains_key(f)));
        if !family_typed {
            return Err(format!("sample before its # TYPE line, {}", at()));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok((samples, types))
}

fn metric_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> (f64, usize) {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    (matching.iter().map(|s| s.value).sum(), matching.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_is_prometheus_text_with_pgcat_names_matching_show_stats() {
    let cluster = shared();
    let metrics_port = free_port();
    let toml = with_general(
        &app_config(cluster, free_port(), 2),
        &format!("enable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}"),
    );
    let pooler = Pooler::start(&toml);
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "metrics").await;
    const N: i64 = 20;
    for i in 0..N {
        exec(&c, &format!("SELECT {i}")).await;
    }
    // Traffic stopped; give any aggregation a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pgc = admin(pooler.port, "pgcat").await;

    let fetch = move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http_get(metrics_port, "/metrics") {
                Ok(r) => return r,
                Err(e) if Instant::now() > deadline => {
                    panic!("GET /metrics on {metrics_port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    let before = pgcat_stats(&pgc, SCRAM_USER).await;
    let (status, headers, body) = tokio::task::spawn_blocking(fetch).await.expect("fetch");
    let after = pgcat_stats(&pgc, SCRAM_USER).await;
    assert_eq!(status, 200, "GET /metrics: {headers:?}\n{body}");
    let ctype = headers.get("content-type").cloned().unwrap_or_default();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");
    let (samples, types) =
        parse_prometheus(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"));
    assert!(body.contains("# HELP "), "no # HELP lines:\n{body}");

    let user_labels = [("pool", DB), ("username", SCRAM_USER)];
    for name in [
        "pgcat_stats_total_query_count",
        "pgcat_stats_total_xact_count",
        "pgcat_stats_total_received",
        "pgcat_stats_total_sent",
        "pgcat_stats_total_wait_time",
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some("counter"),
            "{name} must be a counter:\n{body}"
        );
        let (_, n) = metric_sum(&samples, name, &user_labels);
        assert!(
            n >= 1,
            "no {name} sample for pool=app, username=scram_user:\n{body}"
        );
    }
    let s = samples
        .iter()
        .find(|s| s.name == "pgcat_stats_total_query_count")
        .expect("sample");
    for label in [
        "host", "shard", "role", "pool", "username", "database", "index",
    ] {
        assert!(
            s.labels.contains_key(label),
            "label {label} missing on {s:?}"
        );
    }
    let (primary_q, _) = metric_sum(
        &samples,
        "pgcat_stats_total_query_count",
        &[
            ("pool", DB),
            ("username", SCRAM_USER),
            ("role", "primary"),
            ("host", cluster.primary.host.as_str()),
        ],
    );
    assert!(
        primary_q >= N as f64,
        "primary's total_query_count {primary_q} < {N}\n{body}"
    );

    let (q, _) = metric_sum(&samples, "pgcat_stats_total_query_count", &user_labels);
    let (x, _) = metric_sum(&samples, "pgcat_stats_total_xact_count", &user_labels);
    assert!(
        before.query as f64 <= q && q <= after.query as f64,
        "metrics total_query_count {q} must match SHOW STATS ({} .. {})",
        before.query,
        after.query
    );
    assert!(
        before.xact as f64 <= x && x <= after.xact as f64,
        "metrics total_xact_count {x} must match SHOW STATS ({} .. {})",
        before.xact,
        after.xact
    );
    assert!(q >= N as f64, "{q} < {N}");

    // Pool, server and database families, PgCat's names and labels (one failure does not
    // hide the others; the body is printed once).
    let mut checks = Checks(Vec::new());
    checks.run("pgcat_databases_pool_size", || {
        let (size, n) = metric_sum(&samples, "pgcat_databases_pool_size", &user_labels);
        assert!(n >= 1, "no pgcat_databases_pool_size for app/scram_user");
        assert_eq!(size / n as f64, 2.0, "pool_size 2 per address");
    });
    for name in [
        "pgcat_pools_cl_idle",
        "pgcat_pools_cl_active",
        "pgcat_pools_cl_waiting",
        "pgcat_pools_sv_active",
        "pgcat_pools_sv_idle",
        "pgcat_pools_maxwait",
        "pgcat_pools_maxwait_us",
    ] {
        checks.run(name, || {
            let (_, n) = metric_sum(&samples, name, &[("pool", DB), ("user", SCRAM_USER)]);
            assert_eq!(n, 1, "one {name} sample with pool=app, user=scram_user");
        });
    }
    for name in ["pgcat_servers_is_banned", "pgcat_servers_is_paused"] {
        checks.run(name, || {
            let (v, n) = metric_sum(&samples, name, &user_labels);
            assert!(n >= 1, "no {name} sample for pool=app, username=scram_user");
            assert_eq!(v, 0.0, "{name}");
        });
    }
    if !checks.0.is_empty() {
        eprintln!("--- /metrics body ---\n{body}");
    }

    let (status, _, _) =
        tokio::task::spawn_blocking(move || http_get(metrics_port, "/nothing-here"))
            .await
            .expect("task")
            .expect("GET /nothing-here");
    assert_eq!(status, 404);
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// 5. Shutdown
// ---------------------------------------------------------------------------------------------

/// A login attempt during shutdown must be refused with an error (57xxx / 08xxx) or a refused
/// TCP connection.
fn assert_login_refused(port: u16, what: &str) {
    match RawConn::connect(port, SCRAM_USER, SCRAM_PASS, DB) {
        Ok(_) => panic!("{what}: a new login must be refused during shutdown"),
        Err(LoginError::Server { sqlstate, message }) => assert!(
            sqlstate.starts_with("57") || sqlstate.starts_with("08"),
            "{what}: refusal SQLSTATE should be 57P01/57P03-like, got {sqlstate}: {message}"
        ),
        Err(LoginError::Io(e)) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{what}: connection dropped without an error message: {e}"
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

enum Stop {
    Sigint,
    AdminShutdown,
}

async fn graceful_shutdown_scenario(stop: Stop) {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 20000);
    let mut proc = Proc::start(&toml);
    let table = format!("admin_shutdown_{}", proc.port);
    let txn = app_client(proc.port, SCRAM_USER, SCRAM_PASS, "in_txn").await;
    exec(
        &txn,
        &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int)"),
    )
    .await;
    exec(&txn, "BEGIN").await;
    exec(&txn, &format!("INSERT INTO {table} VALUES (1)")).await;

    match stop {
        Stop::Sigint => proc.signal(libc::SIGINT),
        Stop::AdminShutdown => {
            let port = proc.port;
            let r = tokio::task::spawn_blocking(move || {
                let mut a = raw_admin(port, "pgcat");
                a.simple_query("SHUTDOWN")
            })
            .await
            .expect("task");
            // The reply may be cut short by the shutdown, but it must not be an error.
            if let Ok(msgs) = r {
                assert!(
                    msgs.iter().all(|m| m.tag != b'E'),
                    "SHUTDOWN answered an error: {msgs:?}"
                );
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        proc.running(),
        "the pooler must wait for the open transaction"
    );
    let port = proc.port;
    tokio::task::spawn_blocking(move || assert_login_refused(port, "during shutdown"))
        .await
        .expect("login check");
    if matches!(stop, Stop::AdminShutdown) {
        // Admin sessions still work during shutdown.
        let a = admin(proc.port, "pgcat").await;
        let t = show(&a, "SHOW POOLS").await;
        t.one(
            "pgcat SHOW POOLS during shutdown",
            &[("database", DB), ("user", SCRAM_USER)],
        );
    }
    // The running transaction finishes.
    exec(&txn, &format!("INSERT INTO {table} VALUES (2)")).await;
    assert!(proc.running(), "exited before the transaction finished");
    within(
        Duration::from_secs(10),
        "COMMIT during shutdown",
        txn.simple_query("COMMIT"),
    )
    .await
    .unwrap_or_else(|e| panic!("COMMIT during shutdown: {}", pg_err(&e)));
    let status = proc.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "the pooler must exit once the transaction is done (shutdown_timeout is 20 s):\n{}",
        tail(&proc.logs(), 30)
    );
    assert!(status.unwrap().success(), "exit status {status:?}");

    let direct = connect_direct(&cluster.primary, DB).await;
    let n: i64 = direct
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2, "both inserts of the transaction committed");
    let _ = direct.simple_query(&format!("DROP TABLE {table}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_an_open_transaction_commit_refuses_new_logins_and_exits_0() {
    graceful_shutdown_scenario(Stop::Sigint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shutdown_lets_an_open_transaction_commit_keeps_admin_working_and_exits_0() {
    graceful_shutdown_scenario(Stop::AdminShutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_without_transactions_disconnects_idle_clients_and_exits_0_promptly() {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 20000);
    let mut proc = Proc::start(&toml);
    let idle = app_client(proc.port, SCRAM_USER, SCRAM_PASS, "idle").await;
    exec(&idle, "SELECT 1").await;
    let started = Instant::now();
    proc.signal(libc::SIGINT);
    let status = proc.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "nothing to wait for: exit promptly, not after shutdown_timeout"
    );
    assert!(status.unwrap().success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = within(
        Duration::from_secs(5),
        "query after shutdown",
        idle.simple_query("SELECT 1"),
    )
    .await;
    assert!(
        r.is_err(),
        "an idle client's next query after shutdown must fail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_forces_the_exit_when_a_transaction_stays_open() {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 1500);
    let mut proc = Proc::start(&toml);
    let txn = app_client(proc.port, SCRAM_USER, SCRAM_PASS, "stuck").await;
    exec(&txn, "BEGIN").await;
    exec(&txn, "SELECT 1").await;
    let started = Instant::now();
    proc.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        proc.running(),
        "must wait up to shutdown_timeout (1.5 s) for the transaction"
    );
    let status = proc.wait_exit(Duration::from_secs(6));
    assert!(
        status.is_some(),
        "shutdown_timeout 1.5 s must force the exit (waited {:?})",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "forced too early: {:?}",
        started.elapsed()
    );
    let r = within(
        Duration::from_secs(5),
        "query after forced exit",
        txn.simple_query("SELECT 1"),
    )
    .await;
    assert!(r.is_err(), "the connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_a_quick_shutdown_even_with_an_open_transaction() {
    let cluster = shared();
    let toml = with_shutdown_timeout(&app_config(cluster, free_port(), 2), 20000);
    let mut proc = Proc::start(&toml);
    let txn = app_client(proc.port, SCRAM_USER, SCRAM_PASS, "stuck").await;
    exec(&txn, "BEGIN").await;
    exec(&txn, "SELECT 1").await;
    proc.signal(libc::SIGTERM);
    let status = proc.wait_exit(Duration::from_secs(3));
    assert!(
        status.is_some(),
        "SIGTERM must not wait for the open transaction (shutdown_timeout 20 s)"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Admin access and secrets
// ---------------------------------------------------------------------------------------------

fn admin_login_error(port: u16, user: &str, password: &str, db: &str) -> String {
    match RawConn::connect(port, user, password, db) {
        Ok(_) => panic!("{user}/{password} must not get into {db}"),
        Err(LoginError::Server { sqlstate, message }) => {
            assert_eq!(sqlstate, "28P01", "{user}/{password} on {db}: {message}");
            message
        }
        Err(e) => panic!("{user}/{password} on {db}: expected an ErrorResponse 28P01, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admin_users_and_wrong_passwords_cannot_reach_the_admin_databases() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let port = pooler.port;
    for db in ADMIN_DBS {
        // Pool users with their own (correct) passwords, the admin password, wrong passwords.
        for (user, pass) in [
            (SCRAM_USER, SCRAM_PASS),
            (MD5_USER, MD5_PASS),
            (SCRAM_USER, ADMIN_PASS),
            (ADMIN_USER, "not-the-admin-password"),
            ("postgres", "postgres"),
        ] {
            let db2 = db.to_owned();
            tokio::task::spawn_blocking(move || admin_login_error(port, user, pass, &db2))
                .await
                .expect("task");
            let e = connect(&conninfo(port, user, pass, db))
                .await
                .err()
                .unwrap_or_else(|| panic!("tokio-postgres {user}/{pass} got into {db}"));
            assert_eq!(
                support::sqlstate(&e).as_deref(),
                Some("28P01"),
                "tokio-postgres {user} on {db}: {}",
                pg_err(&e)
            );
        }
        let t = psql_table(cluster, port, SCRAM_USER, SCRAM_PASS, db, "SHOW POOLS");
        assert!(t.is_err(), "psql as scram_user got into {db}: {t:?}");
        // And the admin does get in.
        let t = psql_table(cluster, port, ADMIN_USER, ADMIN_PASS, db, "SHOW VERSION")
            .unwrap_or_else(|e| panic!("psql admin on {db}: {e}"));
        assert_eq!(t.rows.len(), 1);
    }
    // The admin credentials are not a pool login.
    let e = connect(&conninfo(port, ADMIN_USER, ADMIN_PASS, DB))
        .await
        .err();
    assert!(e.is_some(), "admin/admin must not be a user of pool {DB}");
}

#[test]
fn admin_auth_type_md5_scram_and_trust() {
    let cluster = shared();
    for (auth_type, expected) in [
        (None, AuthKind::Md5),
        (Some("md5"), AuthKind::Md5),
        (Some("scram-sha-256"), AuthKind::Scram),
        (Some("trust"), AuthKind::Trust),
    ] {
        let base = app_config(cluster, free_port(), 2);
        let toml = match auth_type {
            Some(t) => with_general(&base, &format!("admin_auth_type = \"{t}\"")),
            None => base,
        };
        let pooler = Pooler::start(&toml);
        for db in ADMIN_DBS {
            let what = format!("admin_auth_type {auth_type:?} on {db}");
            let mut a = RawConn::connect(pooler.port, ADMIN_USER, ADMIN_PASS, db)
                .unwrap_or_else(|e| panic!("{what}: admin login: {e}"));
            assert_eq!(a.auth, expected, "{what}: method asked");
            let r = run_ok(&mut a, "SHOW VERSION");
            assert_eq!(r.table.rows.len(), 1, "{what}");
            if expected == AuthKind::Trust {
                RawConn::connect(pooler.port, ADMIN_USER, "anything", db)
                    .unwrap_or_else(|e| panic!("{what}: trust needs no password: {e}"));
            } else {
                admin_login_error(pooler.port, ADMIN_USER, "wrong", db);
            }
            // Nobody else gets in, whatever the method.
            admin_login_error(pooler.port, SCRAM_USER, SCRAM_PASS, db);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_output_contains_a_password() {
    let cluster = shared();
    let admin_secret = "Adm1n-S3cret-xyzzy";
    let toml = app_config(cluster, free_port(), 2);
    assert!(toml.contains("admin_password = \"admin\"\n"));
    let toml = toml.replace(
        "admin_password = \"admin\"\n",
        &format!("admin_password = \"{admin_secret}\"\n"),
    );
    let pooler = Pooler::start(&toml);
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "secrets").await;
    exec(&c, "BEGIN").await;
    exec(&c, "SELECT 1").await;
    let secrets = [
        admin_secret.to_owned(),
        SCRAM_PASS.to_owned(),
        MD5_PASS.to_owned(),
        stored_md5(SCRAM_USER, SCRAM_PASS),
        stored_md5(MD5_USER, MD5_PASS),
        stored_md5(ADMIN_USER, admin_secret),
    ];
    for db in ADMIN_DBS {
        let a = connect(&conninfo(pooler.port, ADMIN_USER, admin_secret, db))
            .await
            .unwrap_or_else(|e| panic!("admin login to {db}: {}", pg_err(&e)));
        let t = show(&a, "SHOW CONFIG").await;
        assert_columns(&format!("{db} SHOW CONFIG"), &t, CONFIG);
        assert!(
            t.rows.len() >= 5,
            "{db} SHOW CONFIG shows the settings:\n{}",
            t.dump()
        );
        for cmd in [
            "SHOW CONFIG",
            "SHOW DATABASES",
            "SHOW USERS",
            "SHOW POOLS",
            "SHOW CLIENTS",
            "SHOW SERVERS",
            "SHOW STATS",
            "SHOW LISTS",
        ] {
            let t = show(&a, cmd).await;
            for cell in t.all_cells() {
                for s in &secrets {
                    assert!(
                        !cell.contains(s.as_str()),
                        "{db} {cmd} shows a password ({s}):\n{}",
                        t.dump()
                    );
                }
            }
        }
    }
    exec(&c, "COMMIT").await;
}
