//! Issue 5, "Must show" 1 (columns): every SHOW command on both admin databases
//! (`pgbouncer`: PgBouncer's columns, `pgcat`: PgCat's) returns its columns, with values
//! that describe a client inside a transaction.
//!
//! Also (PgCat's admin_spec, cheap ones): SHOW HELP, SHOW BANS, unknown commands point to
//! SHOW HELP, SET is accepted.

mod support;

use std::collections::HashMap;

use support::admin::{
    admin, app_client, app_config, assert_columns, exec, psql_admin, raw_admin, run, run_ok,
    scalar, show, Table, ADMIN_DBS, CONFIG, DATABASES, LISTS, PGB_POOLS, PGB_SOCKETS, PGB_STATS,
    PGB_STATS_TOTALS, PGCAT_BANS, PGCAT_CLIENTS, PGCAT_POOLS, PGCAT_SERVERS, PGCAT_STATS,
};
use support::{free_port, shared, Checks, Pooler, DB, MD5_USER, SCRAM_PASS, SCRAM_USER};

// ---------------------------------------------------------------------------------------------
// 1. Every SHOW command: columns and values
// ---------------------------------------------------------------------------------------------

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
    let mut checks = Checks::new();

    checks.run("SHOW STATS", || {
        let t = tb("SHOW STATS");
        assert_columns("pgbouncer SHOW STATS", &t, &PGB_STATS);
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
        assert_columns("pgbouncer SHOW POOLS", &t, &PGB_POOLS);
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
    let mut checks = Checks::new();

    checks.run("SHOW STATS", || {
        let t = tb("SHOW STATS");
        assert_columns("pgcat SHOW STATS", &t, &PGCAT_STATS);
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
        assert_columns("pgcat SHOW POOLS", &t, &PGCAT_POOLS);
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
        let t = psql_admin(cluster, pooler.port, db, "SET client_encoding TO 'UTF8'");
        assert!(t.is_ok(), "{db}: psql SET: {t:?}");
    }
}
