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
