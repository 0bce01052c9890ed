//! Issue 23: PgBouncer's console as PgBouncer 1.18+ answers it, on the `pgbouncer` admin
//! database — every command's columns compared with PgBouncer's list (table-driven), the
//! commands that act (SUSPEND/RESUME, WAIT_CLOSE, DISABLE/ENABLE, KILL_CLIENT), several
//! commands in one query string, the `pgbouncer` row of SHOW DATABASES, SHOW CONFIG's
//! `max_client_conn`, and SHOW SERVERS' real endpoints (local address, backend pid,
//! timestamps as text).

mod support;

use support::admin::{admin, assert_columns, show, PGB_POOLS, PGB_SOCKETS};
use support::{config, free_port, runtime, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

/// PgBouncer 1.18's columns of the commands this pooler added for issue 23.
const COLUMNS: &[(&str, &[&str])] = &[
    ("SHOW MEM", &["name", "size", "used", "free", "memtotal"]),
    (
        "SHOW FDS",
        &[
            "fd",
            "task",
            "user",
            "database",
            "addr",
            "port",
            "cancel",
            "link",
            "client_encoding",
            "std_strings",
            "datestyle",
            "timezone",
            "password",
            "scram_client_key",
            "scram_server_key",
        ],
    ),
    ("SHOW DNS_HOSTS", &["hostname", "ttl", "addrs"]),
    ("SHOW DNS_ZONES", &["zonename", "serial", "count"]),
    ("SHOW STATE", &["key", "value"]),
    ("SHOW PEERS", &["peer_id", "host", "port", "pool_size"]),
    (
        "SHOW PEER_POOLS",
        &[
            "peer_id",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active_cancel",
            "sv_login",
        ],
    ),
];

/// PgBouncer's buffer columns after SHOW SOCKETS' connection columns.
const SOCKET_BUFFERS: [&str; 7] = [
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];

#[test]
fn pgbouncer_console_commands_answer_with_pgbouncer_columns() {
    let pooler = Pooler::start(&config(shared(), free_port(), "transaction", 2, ""));
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        client.simple_query("SELECT 1").await.expect("query");
        let console = admin(pooler.port, "pgbouncer").await;
        for (command, columns) in COLUMNS {
            let t = show(&console, command).await;
            assert_columns(command, &t, columns);
        }
        let sockets = [PGB_SOCKETS, &SOCKET_BUFFERS[..]].concat();
        for command in ["SHOW SOCKETS", "SHOW ACTIVE_SOCKETS"] {
            assert_columns(command, &show(&console, command).await, &sockets);
        }
        assert_columns(
            "SHOW POOLS",
            &show(&console, "SHOW POOLS").await,
            &PGB_POOLS,
        );
        // SHOW SERVERS: the pooler's end of each connection and the server's pid.
        let servers = show(&console, "SHOW SERVERS").await;
        assert!(!servers.rows.is_empty(), "{}", servers.dump());
        for r in 0..servers.rows.len() {
            assert!(servers.int(r, "local_port") > 0, "{}", servers.dump());
            assert_eq!(servers.get(r, "local_addr"), "127.0.0.1");
            assert!(servers.int(r, "remote_pid") > 0, "{}", servers.dump());
            let when = servers.get(r, "connect_time");
            assert!(when.ends_with(" UTC") && when.len() == 23, "{when}");
        }
        // The admin database's own row, and the exporter's max_client_conn.
        let dbs = show(&console, "SHOW DATABASES").await;
        assert!(
            !dbs.rows_where(&[("name", "pgbouncer")]).is_empty(),
            "{}",
            dbs.dump()
        );
        let cfg = show(&console, "SHOW CONFIG").await;
        assert_eq!(cfg.rows_where(&[("key", "max_client_conn")]).len(), 1);
        // Several commands in one query string.
        let both = console
            .simple_query("SHOW STATE; SHOW LISTS")
            .await
            .expect("two commands");
        let completions = both
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_)))
            .count();
        assert_eq!(completions, 2);
        let state = show(&console, "SHOW STATE").await;
        assert_eq!(state.get(0, "key"), "active");
        assert_eq!(state.get(0, "value"), "yes");
    });
}

#[test]
fn pgbouncer_console_commands_act() {
    let pooler = Pooler::start(&config(shared(), free_port(), "transaction", 2, ""));
    runtime().block_on(async {
        let console = admin(pooler.port, "pgbouncer").await;
        let run = |sql: &'static str| {
            let console = &console;
            async move { console.simple_query(sql).await.map(|_| ()) }
        };
        // DISABLE refuses new clients of the database; ENABLE lets them in again.
        run("DISABLE app").await.expect("DISABLE");
        let Err(refused) = pooler.connect(SCRAM_USER, SCRAM_PASS, DB).await else {
            panic!("a client of a disabled database got in");
        };
        assert!(format!("{refused:?}").contains("disabled"), "{refused:?}");
        run("ENABLE app").await.expect("ENABLE");
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        client.simple_query("SELECT 1").await.expect("query");
        assert!(run("DISABLE nosuchdb").await.is_err());
        // SUSPEND pauses everything (SHOW STATE says so) until RESUME.
        run("SUSPEND").await.expect("SUSPEND");
        let state = show(&console, "SHOW STATE").await;
        assert_eq!(
            state
                .rows_where(&[("key", "suspended"), ("value", "yes")])
                .len(),
            1
        );
        run("RESUME").await.expect("RESUME");
        client.simple_query("SELECT 1").await.expect("after RESUME");
        // RECONNECT then WAIT_CLOSE: returns once the old connections are gone.
        run("RECONNECT app").await.expect("RECONNECT");
        tokio::time::timeout(std::time::Duration::from_secs(10), run("WAIT_CLOSE app"))
            .await
            .expect("WAIT_CLOSE returns")
            .expect("WAIT_CLOSE");
        // KILL_CLIENT by the ptr SHOW CLIENTS shows.
        let clients = show(&console, "SHOW CLIENTS").await;
        let mine = clients.rows_where(&[("database", DB)]);
        let ptr = clients.get(mine[0], "ptr");
        console
            .simple_query(&format!("KILL_CLIENT {ptr}"))
            .await
            .expect("KILL_CLIENT");
        let after = client.simple_query("SELECT 1").await;
        assert!(after.is_err(), "the killed client is closed");
        assert!(run("KILL_CLIENT 0xdeadbeef").await.is_err());
    });
}

/// The PyPI `prometheus-pgbouncer-exporter` 2.1.2 in a venv of its own (psycopg2-binary
/// in place of the psycopg2 2.8.5 it pins, which needs a compiler and libpq headers).
fn exporter() -> std::path::PathBuf {
    let dir = support::repo_path("target/exporter-venv");
    let bin = dir.join("bin/pgbouncer-exporter");
    if bin.exists() {
        return bin;
    }
    let run = |program: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        std::path::Path::new("python3"),
        &["-m", "venv", dir.to_str().unwrap()],
    );
    let pip = dir.join("bin/pip");
    run(
        &pip,
        &[
            "install",
            "-q",
            "psycopg2-binary",
            "prometheus_client==0.8.0",
            "python-json-logger==0.1.11",
            "PyYAML>=5.4.1",
        ],
    );
    run(
        &pip,
        &[
            "install",
            "-q",
            "--no-deps",
            "prometheus-pgbouncer-exporter==2.1.2",
        ],
    );
    bin
}

#[test]
fn the_pypi_pgbouncer_exporter_reads_every_series_without_an_error() {
    let pooler = Pooler::start(&config(shared(), free_port(), "transaction", 2, ""));
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        client.simple_query("SELECT 1").await.expect("query");
    });
    let dir = support::scratch_dir();
    let port = free_port();
    let config_file = dir.join("exporter.yml");
    std::fs::write(
        &config_file,
        format!(
            "exporter_host: 127.0.0.1\nexporter_port: {port}\npgbouncers:\n  - dsn: postgresql://admin:admin@127.0.0.1:{}/pgbouncer\n    connect_timeout: 5\n",
            pooler.port
        ),
    )
    .unwrap();
    let log = dir.join("exporter.log");
    let mut child = std::process::Command::new(exporter())
        .args(["--config", config_file.to_str().unwrap()])
        .args(["--log-file", log.to_str().unwrap(), "--log-level", "INFO"])
        .spawn()
        .expect("pgbouncer-exporter");
    let page = (0..100)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let page = std::panic::catch_unwind(|| support::scrape(port)).ok()?;
            page.contains("pgbouncer_up").then_some(page)
        })
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(page.contains("pgbouncer_up 1.0"), "{page}\n{logged}");
    for series in [
        "pgbouncer_stats_queries_total{database=\"app\"}",
        "pgbouncer_stats_transactions_total{database=\"app\"}",
        "pgbouncer_stats_received_bytes_total{database=\"app\"}",
        "pgbouncer_pools_client_active_connections{database=\"app\"",
        "pgbouncer_pools_server_login_connections{database=\"app\"",
        "pgbouncer_pools_client_maxwait_seconds{database=\"app\"",
        "pgbouncer_databases_database_pool_size{",
        "pgbouncer_databases_database_current_connections{",
        "pgbouncer_config_max_client_conn ",
        "pgbouncer_config_max_user_connections ",
    ] {
        assert!(page.contains(series), "no {series}:\n{page}\n{logged}");
    }
    assert!(!logged.contains("Unable"), "{logged}");
}
