//! What the admin test files (tests/admin_*.rs) share: admin replies as tables, the
//! clients they are read through (tokio-postgres, the raw client, psql), the column lists of
//! PgBouncer's and PgCat's SHOW commands, SHOW STATS counters and the pool config.

use std::sync::LazyLock;
use std::time::Duration;

use super::raw::RawConn;
use super::{config, connect, run_client, Cluster, DB};
use tokio_postgres::SimpleQueryMessage;

/// The admin credentials of [`super::general_toml`], and the two admin databases.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASS: &str = "admin";
pub const ADMIN_DBS: [&str; 2] = ["pgbouncer", "pgcat"];

// ---------------------------------------------------------------------------------------------
// Tables (admin replies)
// ---------------------------------------------------------------------------------------------

/// A result set: column names and text values (None = NULL).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.columns))
    }

    pub fn get(&self, row: usize, name: &str) -> String {
        self.rows[row][self.col(name)]
            .clone()
            .unwrap_or_else(|| "NULL".to_owned())
    }

    /// An integer column (averages may be written as decimals; those are truncated).
    pub fn int(&self, row: usize, name: &str) -> i64 {
        let v = self.get(row, name);
        v.parse::<i64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or_else(|| panic!("column {name} = {v:?} is not a number; table {self:?}"))
    }

    /// Indexes of the rows where every `(column, value)` matches.
    pub fn rows_where(&self, conds: &[(&str, &str)]) -> Vec<usize> {
        (0..self.rows.len())
            .filter(|&r| conds.iter().all(|(c, v)| self.get(r, c) == *v))
            .collect()
    }

    /// The one row where every condition matches.
    pub fn one(&self, what: &str, conds: &[(&str, &str)]) -> usize {
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
    pub fn sum(&self, name: &str, conds: &[(&str, &str)]) -> i64 {
        self.rows_where(conds)
            .into_iter()
            .map(|r| self.int(r, name))
            .sum()
    }

    pub fn all_cells(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .flat_map(|r| r.iter().filter_map(|v| v.as_deref()))
    }

    pub fn dump(&self) -> String {
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
pub fn assert_columns(what: &str, t: &Table, expected: &[&str]) {
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

/// The result set of a tokio-postgres simple query.
pub fn table_from(msgs: Vec<SimpleQueryMessage>) -> Table {
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
pub fn pg_err(e: &tokio_postgres::Error) -> String {
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

/// libpq connection string for `user` on `database` through the pooler on `port`.
pub fn conninfo(port: u16, user: &str, password: &str, database: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} password={password} dbname={database} connect_timeout=10")
}

/// A tokio-postgres admin session (admin/admin) on admin database `db`.
pub async fn admin(port: u16, db: &str) -> tokio_postgres::Client {
    connect(&conninfo(port, ADMIN_USER, ADMIN_PASS, db))
        .await
        .unwrap_or_else(|e| panic!("admin login to {db} on port {port}: {}", pg_err(&e)))
}

/// Runs an admin SHOW through tokio-postgres' simple protocol; panics on error.
pub async fn show(client: &tokio_postgres::Client, sql: &str) -> Table {
    let msgs = within(Duration::from_secs(20), sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
    table_from(msgs)
}

/// A pool client (scram_user on `app`) with an application_name.
pub async fn app_client(
    port: u16,
    user: &str,
    password: &str,
    app: &str,
) -> tokio_postgres::Client {
    connect(&format!(
        "{} application_name={app}",
        conninfo(port, user, password, DB)
    ))
    .await
    .unwrap_or_else(|e| panic!("{user} login to {DB} on port {port}: {}", pg_err(&e)))
}

/// The first value of the first row of a simple query through a pool client.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = within(Duration::from_secs(20), sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
    let t = table_from(msgs);
    assert!(!t.rows.is_empty(), "{sql}: no rows");
    t.get(0, &t.columns[0].clone())
}

/// Runs a simple query that must succeed within 20 s.
pub async fn exec(client: &tokio_postgres::Client, sql: &str) {
    within(Duration::from_secs(20), sql, client.simple_query(sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
}

/// Awaits `fut` for at most `limit`; panics naming `what` when it takes longer.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

/// One admin reply through the raw client: the result set, command tags, notices, error.
#[derive(Debug, Default)]
pub struct Reply {
    pub table: Table,
    pub tags: Vec<String>,
    /// Message, detail and hint of each NoticeResponse.
    pub notices: Vec<String>,
    /// (SQLSTATE, message + detail + hint) of an ErrorResponse.
    pub error: Option<(String, String)>,
}

impl Reply {
    /// Everything human-readable in the reply (notices, error, cells), for "mentions X" checks.
    pub fn text(&self) -> String {
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

/// Message, detail and hint of an ErrorResponse / NoticeResponse.
pub fn message_text(m: &super::raw::Msg) -> String {
    [b'M', b'D', b'H']
        .iter()
        .filter_map(|&f| m.field(f))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The column names of a RowDescription.
pub fn row_description(body: &[u8]) -> Vec<String> {
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

/// A raw-client admin session (admin/admin) on admin database `db`, 30 s read timeout.
pub fn raw_admin(port: u16, db: &str) -> RawConn {
    let conn = RawConn::connect(port, ADMIN_USER, ADMIN_PASS, db)
        .unwrap_or_else(|e| panic!("admin login to {db} on port {port}: {e}"));
    conn.set_read_timeout(Duration::from_secs(30));
    conn
}

/// Runs an admin command through the raw client.
pub fn run(conn: &mut RawConn, sql: &str) -> Reply {
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
pub fn run_ok(conn: &mut RawConn, sql: &str) -> Reply {
    let r = run(conn, sql);
    assert!(r.error.is_none(), "{sql}: error {:?}", r.error);
    r
}

/// [`psql_table`] as the admin user.
pub fn psql_admin(cluster: &Cluster, port: u16, db: &str, sql: &str) -> Result<Table, String> {
    psql_table(cluster, port, ADMIN_USER, ADMIN_PASS, db, sql)
}

/// psql on an admin database: `-A -F '|'` with the header line, no footer.
pub fn psql_table(
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
pub fn app_config(cluster: &Cluster, port: u16, pool_size: u32) -> String {
    config(cluster, port, "transaction", pool_size, "")
}

// ---------------------------------------------------------------------------------------------
// Column lists of the SHOW commands
// ---------------------------------------------------------------------------------------------

/// The totals of SHOW STATS, in the order both admin databases list them.
const STATS_TOTALS: [&str; 7] = [
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
];
/// The client and server counts of PgCat's SHOW POOLS.
const POOL_COUNTS: [&str; 10] = [
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

/// PgBouncer's SHOW STATS.
pub static PGB_STATS: LazyLock<Vec<&str>> = LazyLock::new(|| {
    let averages = [
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
    ];
    [&["database"][..], &STATS_TOTALS, &averages].concat()
});
/// PgBouncer's SHOW STATS_TOTALS and SHOW STATS_AVERAGES.
pub const PGB_STATS_TOTALS: &[&str] = &[
    "database",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
];
/// PgBouncer's SHOW POOLS (1.18 and later: the cancel request columns).
pub static PGB_POOLS: LazyLock<Vec<&str>> = LazyLock::new(|| {
    vec![
        "database",
        "user",
        "cl_active",
        "cl_waiting",
        "cl_active_cancel_req",
        "cl_waiting_cancel_req",
        "sv_active",
        "sv_active_cancel",
        "sv_being_canceled",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
        "maxwait",
        "maxwait_us",
        "pool_mode",
    ]
});
/// PgBouncer's SHOW CLIENTS / SHOW SERVERS core columns (its docs).
pub const PGB_SOCKETS: &[&str] = &[
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
/// SHOW DATABASES (both admin databases).
pub const DATABASES: &[&str] = &[
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
/// SHOW CONFIG and SHOW LISTS (both admin databases).
pub const CONFIG: &[&str] = &["key", "value", "default", "changeable"];
pub const LISTS: &[&str] = &["list", "items"];
/// PgCat's SHOW STATS.
pub static PGCAT_STATS: LazyLock<Vec<&str>> = LazyLock::new(|| {
    let errors_and_averages = [
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
    [
        &["instance", "database", "user"][..],
        &STATS_TOTALS,
        &errors_and_averages,
    ]
    .concat()
});
/// PgCat's SHOW POOLS.
pub static PGCAT_POOLS: LazyLock<Vec<&str>> = LazyLock::new(|| {
    [
        &["database", "user", "pool_mode", "cl_idle"][..],
        &POOL_COUNTS,
    ]
    .concat()
});
/// PgCat's SHOW CLIENTS.
pub const PGCAT_CLIENTS: &[&str] = &[
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
/// PgCat's SHOW SERVERS.
pub const PGCAT_SERVERS: &[&str] = &[
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
/// PgCat's SHOW BANS.
pub const PGCAT_BANS: &[&str] = &[
    "db",
    "user",
    "role",
    "host",
    "reason",
    "ban_time",
    "ban_duration_seconds",
    "ban_remaining_seconds",
];

/// Counters of one SHOW STATS row (or sum of rows).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub xact: i64,
    pub query: i64,
    pub received: i64,
    pub sent: i64,
    pub xact_time: i64,
    pub query_time: i64,
    pub wait_time: i64,
}

/// pgbouncer SHOW STATS of database app.
pub async fn pgbouncer_stats(a: &tokio_postgres::Client) -> Counters {
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
pub async fn pgcat_stats(a: &tokio_postgres::Client, user: &str) -> Counters {
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

/// Whether every shown value (pgbouncer rows, pgcat rows) is `value`.
pub fn all_are(v: &(Vec<i64>, Vec<i64>), value: i64) -> bool {
    v.0.iter().chain(&v.1).all(|&x| x == value)
}
