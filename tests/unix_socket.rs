//! `unix_socket_dir`: besides TCP, the pooler listens on `<dir>/.s.PGSQL.<port>` (the TCP
//! port), so `psql -h <dir> -p <port>` works; the socket file goes away at shutdown (SIGTERM,
//! and SIGINT's drain).

mod support;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use support::{
    config, free_port, psql, psql_with, run_client, shared, stop_pooler, wait_until, with_general,
    Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};

/// A fresh directory for the socket, removed on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> SocketDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // Short: a Unix socket path has at most 107 bytes.
        let dir = std::env::temp_dir().join(format!(
            "pgcat-sock-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create socket dir");
        SocketDir(dir)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn socket_config(port: u16, dir: &Path) -> String {
    with_general(
        &config(shared(), port, "transaction", 2, ""),
        &format!("unix_socket_dir = \"{}\"\n", dir.display()),
    )
}

/// Starts a pooler with a Unix socket in `dir` and waits (10 s at most) for the socket file.
fn start(dir: &SocketDir) -> (Pooler, PathBuf) {
    let port = free_port();
    let pooler = Pooler::start(&socket_config(port, &dir.0));
    let socket = dir.0.join(format!(".s.PGSQL.{port}"));
    assert!(
        wait_until(Duration::from_secs(10), || is_socket(&socket)),
        "{} is a Unix socket while the pooler runs:\n{}",
        socket.display(),
        pooler.logs()
    );
    (pooler, socket)
}

#[test]
fn psql_connects_through_the_unix_socket_and_the_socket_is_removed_at_sigterm() {
    let cluster = shared();
    let dir = SocketDir::new();
    let (pooler, socket) = start(&dir);
    let via_socket = |user: &str| {
        format!(
            "host={} port={} user={user} dbname={DB}",
            dir.0.display(),
            pooler.port
        )
    };

    // psql over the socket: \conninfo names the socket directory; queries run.
    for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
        let out = psql_with(
            cluster,
            &via_socket(user),
            pass,
            &["\\conninfo", "SELECT current_user"],
        )
        .unwrap_or_else(|e| panic!("psql {user} over the Unix socket: {e}\n{}", pooler.logs()));
        assert!(
            out.contains(&format!("via socket in \"{}\"", dir.0.display())),
            "{user}: psql went over the socket:\n{out}"
        );
        assert_eq!(
            out.lines().last(),
            Some(user),
            "{user}: current_user:\n{out}"
        );
    }

    // psql's own -h / -p form, as a user would type it.
    let port = pooler.port.to_string();
    let host = dir.0.display().to_string();
    let out = run_client(
        cluster,
        "psql",
        SCRAM_PASS,
        &[
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            SCRAM_USER,
            "-d",
            DB,
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 40 + 2",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "psql -h {host} -p {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");

    // The admin database over the socket.
    let admin = psql_with(
        cluster,
        &format!("host={host} port={port} user=admin dbname=pgcat"),
        "admin",
        &["SHOW POOLS"],
    )
    .unwrap_or_else(|e| panic!("admin over the Unix socket: {e}\n{}", pooler.logs()));
    assert!(admin.contains(DB), "SHOW POOLS over the socket:\n{admin}");

    // tokio-postgres over the socket (a host starting with '/' is a socket directory).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let conninfo = format!(
            "host={host} port={port} user={SCRAM_USER} password={SCRAM_PASS} dbname={DB} connect_timeout=10"
        );
        let client = tokio::time::timeout(Duration::from_secs(30), support::connect(&conninfo))
            .await
            .expect("tokio-postgres over the socket: login timed out")
            .unwrap_or_else(|e| panic!("tokio-postgres over the socket: {e}\n{}", pooler.logs()));
        let row = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one("SELECT $1::int * 2", &[&21i32]),
        )
        .await
        .expect("query timed out")
        .expect("query over the socket");
        assert_eq!(row.get::<_, i32>(0), 42);
    });

    // TCP keeps working beside it.
    assert_eq!(
        psql(cluster, &pooler, SCRAM_USER, SCRAM_PASS, "SELECT 7").as_deref(),
        Ok("7"),
        "TCP beside the socket"
    );

    stops_and_removes_the_socket(&pooler, &socket, libc::SIGTERM);
}

/// `signal` stops the pooler within 10 s, and its socket file is gone then.
fn stops_and_removes_the_socket(pooler: &Pooler, socket: &Path, signal: libc::c_int) {
    assert!(
        stop_pooler(pooler, signal, Duration::from_secs(10)),
        "the pooler exits on signal {signal}:\n{}",
        pooler.logs()
    );
    assert!(
        !socket.exists() && !is_socket(socket),
        "{} is removed at shutdown:\n{}",
        socket.display(),
        pooler.logs()
    );
}

#[test]
fn the_socket_is_removed_after_a_sigint_drain() {
    let cluster = shared();
    let dir = SocketDir::new();
    let (pooler, socket) = start(&dir);
    let out = psql_with(
        cluster,
        &format!(
            "host={} port={} user={SCRAM_USER} dbname={DB}",
            dir.0.display(),
            pooler.port
        ),
        SCRAM_PASS,
        &["SELECT 1"],
    )
    .unwrap_or_else(|e| panic!("psql over the Unix socket: {e}\n{}", pooler.logs()));
    assert_eq!(out, "1");
    // No client left: the drain (shutdown_timeout = 1000 in the test config) ends at once.
    stops_and_removes_the_socket(&pooler, &socket, libc::SIGINT);
}
