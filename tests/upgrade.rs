//! Issue 22: online upgrades (SIGUSR2) and several instances (peering, `so_reuseport`),
//! against real PostgreSQL.
//!
//! - Clients move to the new process at their idle point with their state: a kept SET and a
//!   prepared statement still work after the upgrade, with no reconnect, and the client's
//!   cancel key still cancels a `pg_sleep`.
//! - pgbench (16 clients, transaction mode, `-M extended` and `-M prepared` at once) runs
//!   30 s across two upgrades with no failed transaction and no aborted client.
//! - A session-mode client keeps its server session: it stays with the old process, which
//!   exits when it leaves.
//! - A new binary whose configuration is broken does not take over: the old process keeps
//!   serving.
//! - TLS clients and admin consoles cannot move: closed at their idle point with 57P01.
//! - Two instances as peers: a CancelRequest sent to B for a client of A cancels its
//!   `pg_sleep(30)` within a second; likewise two `so_reuseport` processes on one port.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::raw::{cancel_request, RawConn};
use support::{
    config, free_port, runtime, shared, Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};

/// The pid in `pidfile`, once it is there.
fn pid_in(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Sends SIGUSR2 to the process in `pidfile` and waits until another one wrote its pid
/// there (the new process took over); that pid.
fn upgrade(pidfile: &Path, log: &Path) -> i32 {
    let old = pid_in(pidfile).expect("pidfile written");
    signal(old, libc::SIGUSR2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(new) = pid_in(pidfile).filter(|p| *p != old) {
            return new;
        }
        assert!(
            Instant::now() < deadline,
            "no new process took over:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops whatever process the pid file names when dropped (the new process of an upgrade
/// is not the test's child).
struct Stop(PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0) {
            signal(pid, libc::SIGTERM);
        }
    }
}

/// The pooler config of `support::config` with a pid file and the statement cache on (so
/// named statements do not pin a server in transaction mode).
fn upgradable(pool_mode: &str, pidfile: &Path) -> String {
    config(shared(), free_port(), pool_mode, 4, "")
        .replace(
            "[general]\n",
            &format!("[general]\npidfile = \"{}\"\n", pidfile.display()),
        )
        .replace(
            &format!("pool_mode = \"{pool_mode}\"\n"),
            &format!("pool_mode = \"{pool_mode}\"\nprepared_statements_cache_size = 100\n"),
        )
}

/// A pooler in `pool_mode` with a pid file; the process the file names is stopped when
/// the `Stop` is dropped.
fn started(pool_mode: &str) -> (Pooler, PathBuf, Stop) {
    let pidfile = support::scratch_dir().join("pgcat.pid");
    let pooler = Pooler::start(&upgradable(pool_mode, &pidfile));
    let stop = Stop(pidfile.clone());
    (pooler, pidfile, stop)
}

/// Waits up to `limit` for the previous process to exit after an upgrade it completed;
/// its log.
fn exited_after_upgrade(pooler: &mut Pooler, limit: Duration) -> String {
    assert!(pooler.wait_exit(limit).is_some(), "{}", pooler.logs());
    let logs = pooler.logs();
    assert!(logs.contains("upgrade complete"), "{logs}");
    logs
}

/// [`upgrade`], off the async workers.
async fn upgraded(pidfile: &Path, log: &Path) -> i32 {
    let (pidfile, log) = (pidfile.to_path_buf(), log.to_path_buf());
    tokio::task::spawn_blocking(move || upgrade(&pidfile, &log))
        .await
        .unwrap()
}

#[test]
fn a_client_keeps_its_settings_statements_and_cancel_key_across_an_upgrade() {
    let (mut pooler, pidfile, _stop) = started("transaction");
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        client
            .batch_execute("SET work_mem = '7MB'")
            .await
            .expect("SET");
        let plus = client.prepare("SELECT $1::int + 1").await.expect("prepare");
        let first = client.query_one(&plus, &[&41]).await.expect("execute");
        assert_eq!(first.get::<_, i32>(0), 42);

        let new = upgraded(&pidfile, &pooler.log).await;
        assert_ne!(new as u32, pooler.pid());

        // The same connection, after the move: its SET and its statement are there.
        let shown = support::rows(&client, "SHOW work_mem").await;
        assert_eq!(shown, [["7MB"]]);
        let again = client
            .query_one(&plus, &[&1])
            .await
            .expect("execute after the upgrade");
        assert_eq!(again.get::<_, i32>(0), 2);
        // Its cancel key cancels a pg_sleep run on the new process.
        let token = client.cancel_token();
        let sleeping = client.simple_query("SELECT pg_sleep(30) /* after the upgrade */");
        let cancel = async {
            tokio::task::spawn_blocking(|| wait_running("after the upgrade"))
                .await
                .expect("wait for the statement");
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("cancel");
        };
        let start = Instant::now();
        let (slept, ()) = tokio::join!(sleeping, cancel);
        let err = slept.expect_err("cancelled");
        assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    });
    // The old process exits once its clients moved.
    exited_after_upgrade(&mut pooler, Duration::from_secs(10));
}

/// Idle clients on their way to the new process (each held 700 ms before it is written, by
/// a fault point) are waited for: the previous process exits only after the last one was
/// written, and each client runs its next query, with its own setting, on the new process.
/// (Before 0ae8557 the previous process could exit with a client in flight and lose it.)
#[test]
fn idle_clients_still_on_their_way_are_waited_for_before_the_old_process_exits() {
    let pidfile = support::scratch_dir().join("pgcat.pid");
    let mut pooler = Pooler::start_with_env(
        &upgradable("transaction", &pidfile),
        &[("PGCAT_FAULT", "handoff_send=pause:700")],
    );
    let _stop = Stop(pidfile.clone());
    runtime().block_on(async {
        let mut clients = Vec::new();
        for i in 0..3 {
            let client = pooler
                .connect(SCRAM_USER, SCRAM_PASS, DB)
                .await
                .expect("connect");
            client
                .batch_execute(&format!("SET application_name = 'moving{i}'"))
                .await
                .expect("SET");
            clients.push(client);
        }
        let new = upgraded(&pidfile, &pooler.log).await;
        assert_ne!(new as u32, pooler.pid());
        for (i, client) in clients.iter().enumerate() {
            let shown = support::rows(client, "SHOW application_name").await;
            assert_eq!(shown, [[format!("moving{i}")]], "client {i}");
        }
    });
    let logs = exited_after_upgrade(&mut pooler, Duration::from_secs(15));
    assert!(!logs.contains("could not move"), "{logs}");
    assert_eq!(
        logs.matches("fault point reached: pausing the thread")
            .count(),
        3,
        "each client held once on its way:\n{logs}"
    );
}

#[test]
fn pgbench_runs_through_two_upgrades_without_a_failed_transaction() {
    let cluster = shared();
    let db = "upgrade_bench";
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db} OWNER {MD5_USER}"),
        )
        .expect("database");
    let port = cluster.primary.port;
    let init = std::process::Command::new("pgbench")
        .args([
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            MD5_USER,
            db,
        ])
        .env("PGPASSWORD", MD5_PASS)
        .output()
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let dir = support::scratch_dir();
    let pidfile = dir.join("pgcat.pid");
    let toml = upgradable("transaction", &pidfile)
        .replace(&format!("[pools.{DB}]"), &format!("[pools.{db}]"))
        .replace(&format!("[pools.{DB}."), &format!("[pools.{db}."))
        .replace(
            &format!("database = \"{DB}\""),
            &format!("database = \"{db}\""),
        )
        .replace("pool_size = 4", "pool_size = 20");
    let pooler = Pooler::start(&toml);
    let _stop = Stop(pidfile.clone());
    let bench = |mode: &str| {
        std::process::Command::new("pgbench")
            .args(["-n", "-S", "-c", "16", "-j", "2", "-T", "30", "-M", mode])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pooler.port.to_string(),
                "-U",
                MD5_USER,
                db,
            ])
            .env("PGPASSWORD", MD5_PASS)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("pgbench")
    };
    let runs = [bench("extended"), bench("prepared")];
    std::thread::sleep(Duration::from_secs(8));
    upgrade(&pidfile, &pooler.log);
    std::thread::sleep(Duration::from_secs(8));
    upgrade(&pidfile, &pooler.log);
    for run in runs {
        let out = run.wait_with_output().expect("pgbench");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}\n{}", pooler.logs());
        assert!(text.contains("number of failed transactions: 0"), "{text}");
        assert!(!text.contains("aborted"), "{text}");
    }
}

#[test]
fn a_session_mode_client_keeps_its_server_session() {
    let (mut pooler, pidfile, _stop) = started("session");
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        client
            .batch_execute("CREATE TEMP TABLE kept AS SELECT 5 AS v")
            .await
            .expect("temp table");
        let backend = support::rows(&client, "SELECT pg_backend_pid()::text").await;
        let new = upgraded(&pidfile, &pooler.log).await;
        assert_ne!(new as u32, pooler.pid());
        // Still its own server session (it stayed with the old process).
        assert_eq!(
            support::rows(&client, "SELECT v::text FROM kept").await,
            [["5"]]
        );
        assert_eq!(
            support::rows(&client, "SELECT pg_backend_pid()::text").await,
            backend
        );
        // New clients reach the new process meanwhile.
        let other = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect to the new process");
        assert_eq!(support::rows(&other, "SELECT 1::text").await, [["1"]]);
        drop(client);
    });
    // The old process exits when its last client leaves.
    assert!(
        pooler.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        pooler.logs()
    );
}

#[test]
fn a_new_binary_with_a_broken_config_leaves_the_old_process_serving() {
    let (mut pooler, pidfile, _stop) = started("transaction");
    let good = std::fs::read_to_string(&pooler.config_path).unwrap();
    std::fs::write(
        &pooler.config_path,
        good.replace("pool_size = 4", "pool_size = \"four\""),
    )
    .unwrap();
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        let old = pid_in(&pidfile).unwrap();
        signal(old, libc::SIGUSR2);
        let logs = || pooler.logs();
        let failed = support::wait_until(Duration::from_secs(20), || {
            logs().contains("upgrade failed")
        });
        assert!(failed, "{}", logs());
        assert_eq!(pid_in(&pidfile), Some(old));
        // Clients are unaffected; new ones still get in.
        assert_eq!(support::rows(&client, "SELECT 1::text").await, [["1"]]);
        let other = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        assert_eq!(support::rows(&other, "SELECT 2::text").await, [["2"]]);
    });
    assert!(pooler.running());
    assert!(pooler.logs().contains("pool_size"), "{}", pooler.logs());
}

/// Waits until PostgreSQL runs the statement whose text holds the comment `/* tag */`.
fn wait_running(tag: &str) {
    let marker = format!("/* {tag} */");
    let started = support::wait_until(Duration::from_secs(20), || {
        support::backends_in_state("active", &marker) == "1"
    });
    assert!(started, "the statement {marker} did not start within 20 s");
}

/// A client on `a_port` runs `pg_sleep(30)`; once PostgreSQL runs it, its CancelRequest goes
/// to `b_port`. (A cancel that reaches the server before the statement does is ignored, by
/// PostgreSQL as by a pooler, so the test waits for the statement to be running.)
fn cancel_through(a_port: u16, b_port: u16) -> Duration {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut client = RawConn::connect(a_port, SCRAM_USER, SCRAM_PASS, DB).expect("connect");
    let (pid, secret) = client.key.expect("a cancel key");
    let tag = format!("cancel_through {a_port} {b_port} {call}");
    client
        .send(&support::raw::query(&format!(
            "SELECT pg_sleep(30) /* {tag} */"
        )))
        .unwrap();
    wait_running(&tag);
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", b_port)).unwrap();
    std::io::Write::write_all(&mut s, &cancel_request(pid, secret)).unwrap();
    let replies = client.read_until_ready().expect("the query ends");
    let error = replies.iter().find(|m| m.kind() == 'E').expect("an error");
    assert_eq!(error.sqlstate().as_deref(), Some("57014"));
    start.elapsed()
}

/// Two poolers, peers 1 and 2, on `ports`; each peer's address in `[peers]` is its
/// entry of `hosts` with its port (a directory: its Unix socket); `extra` goes into each
/// one's [general].
fn peers(ports: [u16; 2], hosts: [&str; 2], extra: [&str; 2]) -> (Pooler, Pooler) {
    let mut table = String::new();
    for id in 0..2 {
        table.push_str(&format!(
            "\n[peers.{}]\nhost = \"{}\"\nport = {}\n",
            id + 1,
            hosts[id],
            ports[id]
        ));
    }
    let make = |id: usize| {
        let general = format!("[general]\npeer_id = {}\n{}\n", id + 1, extra[id]);
        let mut toml =
            config(shared(), ports[id], "transaction", 2, "").replace("[general]\n", &general);
        toml.push_str(&table);
        toml
    };
    // Started one after the other, each serving before the next starts: with `so_reuseport`
    // the port answers as soon as the first one listens, so the log says when each does.
    let start = |id: usize| {
        let pooler = Pooler::start(&make(id));
        let serving = support::wait_until(Duration::from_secs(20), || {
            pooler.logs().contains("pgcat is accepting connections")
        });
        assert!(serving, "peer {} did not start:\n{}", id + 1, pooler.logs());
        pooler
    };
    (start(0), start(1))
}

#[test]
fn a_cancel_request_sent_to_a_peer_reaches_the_client() {
    let (a_port, b_port) = (free_port(), free_port());
    let (a, b) = peers([a_port, b_port], ["127.0.0.1"; 2], ["", ""]);
    let took = cancel_through(a_port, b_port);
    assert!(
        took < Duration::from_secs(1),
        "{took:?}\n{}\n{}",
        a.logs(),
        b.logs()
    );
    runtime().block_on(async {
        let conninfo =
            format!("host=127.0.0.1 port={b_port} user=admin password=admin dbname=pgbouncer");
        let admin = support::connect(&conninfo).await.expect("admin");
        let rows = support::texts(&admin.simple_query("SHOW PEERS").await.expect("SHOW PEERS"));
        assert_eq!(rows, [["1", "127.0.0.1", &a_port.to_string(), "1"]]);
    });
}

#[test]
fn two_so_reuseport_processes_share_a_port_and_cancel_each_others_clients() {
    let port = free_port();
    // Both listen on one TCP port; each also on a Unix socket of its own, which is its
    // address as a peer (PgBouncer's set-up), so a forwarded request reaches the right one.
    let dirs = [support::scratch_dir(), support::scratch_dir()];
    let names = dirs.each_ref().map(|d| d.display().to_string());
    let extra = names
        .each_ref()
        .map(|d| format!("so_reuseport = true\nunix_socket_dir = \"{d}\""));
    let (a, b) = peers([port, port], [&names[0], &names[1]], [&extra[0], &extra[1]]);
    // Clients spread over both processes; each one's cancel, wherever it lands, reaches it.
    for _ in 0..6 {
        let took = cancel_through(port, port);
        assert!(
            took < Duration::from_secs(1),
            "{took:?}\n{}\n{}",
            a.logs(),
            b.logs()
        );
    }
}

/// TLS clients (whose session keys cannot move) and admin consoles are closed at their idle
/// point with 57P01, saying why.
#[test]
fn tls_clients_and_admin_consoles_are_closed_with_57p01() {
    let pidfile = support::scratch_dir().join("pgcat.pid");
    let tls = format!(
        "tls_certificate = \"{}\"\ntls_private_key = \"{}\"",
        support::repo_path("fixtures/tls/server.pem").display(),
        support::repo_path("fixtures/tls/server.key").display()
    );
    let pooler = Pooler::start(&support::with_general(
        &upgradable("transaction", &pidfile),
        &tls,
    ));
    let _stop = Stop(pidfile.clone());
    let pid = pid_in(&pidfile).unwrap();
    let console = runtime().block_on(support::admin::admin(pooler.port, "pgbouncer"));
    // psql over TLS: a query, the upgrade (psql's \! runs a shell), then another query.
    let conninfo = format!(
        "host=127.0.0.1 port={} user={SCRAM_USER} dbname={DB} sslmode=require",
        pooler.port
    );
    let upgrade = format!("\\! kill -USR2 {pid}; sleep 4");
    let out = support::psql_with(
        shared(),
        &conninfo,
        SCRAM_PASS,
        &["SELECT 1", &upgrade, "SELECT 2"],
    );
    let err = out.expect_err("the TLS session is closed by the upgrade");
    assert!(err.contains("being upgraded"), "{err}");
    runtime().block_on(async {
        let after = console.simple_query("SHOW STATE").await;
        assert!(after.is_err(), "the admin console is closed");
    });
    assert_ne!(pid_in(&pidfile), Some(pid), "the upgrade took place");
}
