//! Test harness: real PostgreSQL clusters (`pgcat::localpg`), the real `pgcat` binary, and the
//! clients the tests talk through (psql, pgbench, tokio-postgres, a raw protocol client).
//!
//! - [`shared`]: one primary + one replica per test binary, with the fixture roles and the
//!   `app` database; for tests that only read and write.
//! - [`private`]: a cluster of its own, for tests that stop or freeze servers or count
//!   connections.
//! - [`Pooler`]: the `pgcat` binary on a config (its pid for signals, its exit status);
//!   stopped on drop; on a failing test its log tail is printed.
//! - [`admin`], [`routing`], [`failover`]: what the test files of one area share.

#![allow(dead_code)]

pub mod admin;
pub mod failover;
pub mod raw;
pub mod routing;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

pub use pgcat::localpg::{Cluster, ClusterSpec, Node};

/// Fixture role whose password PostgreSQL stores as SCRAM-SHA-256; owns database `app`.
pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASS: &str = "scram_pass";
/// Fixture role whose password PostgreSQL stores as MD5.
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASS: &str = "md5_pass";
/// The fixture database, and the name of the pool in [`config`].
pub const DB: &str = "app";

/// The cluster shared by the tests of one binary: primary + 1 replica, fixtures in place,
/// the replica caught up. Removed when the test process exits.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| private(1))
}

/// A cluster of its own with `replicas` replicas and the same fixtures; removed on drop.
pub fn private(replicas: usize) -> Cluster {
    let cluster = Cluster::start(&ClusterSpec {
        replicas,
        max_connections: 300,
    })
    .unwrap_or_else(|e| panic!("cannot start a local PostgreSQL: {e}"));
    let setup = format!(
        "SET password_encryption = 'scram-sha-256';\n\
         CREATE ROLE {SCRAM_USER} LOGIN CREATEDB PASSWORD '{SCRAM_PASS}';\n\
         SET password_encryption = 'md5';\n\
         CREATE ROLE {MD5_USER} LOGIN CREATEDB PASSWORD '{MD5_PASS}';\n\
         CREATE DATABASE {DB} OWNER {SCRAM_USER};\n\
         GRANT ALL ON DATABASE {DB} TO {MD5_USER};\n"
    );
    cluster
        .psql(&cluster.primary, "postgres", &setup)
        .unwrap_or_else(|e| panic!("fixture setup failed: {e}"));
    cluster
        .psql(
            &cluster.primary,
            DB,
            &format!("GRANT ALL ON SCHEMA public TO {MD5_USER};"),
        )
        .unwrap_or_else(|e| panic!("fixture setup failed: {e}"));
    // The premise of the auth tests: each role's password is stored the way its name says.
    let stored = |role: &str| {
        cluster
            .psql(
                &cluster.primary,
                "postgres",
                &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
            )
            .unwrap_or_else(|e| panic!("fixture check failed: {e}"))
    };
    assert!(
        stored(SCRAM_USER).starts_with("SCRAM-SHA-256$"),
        "{SCRAM_USER} must be stored as SCRAM"
    );
    assert_eq!(
        stored(MD5_USER),
        stored_md5(MD5_USER, MD5_PASS),
        "{MD5_USER} must be stored as MD5"
    );
    cluster
        .wait_replicas_caught_up()
        .unwrap_or_else(|e| panic!("replica did not catch up after fixture setup: {e}"));
    cluster
}

/// What PostgreSQL stores for an MD5 password: `md5` + hex(md5(password || username)).
pub fn stored_md5(user: &str, password: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(format!("{password}{user}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("md5{hex}")
}

/// The pooler's Prometheus page (`GET /metrics`) on `port`.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("response");
    page
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The `[general]` section tests use: 127.0.0.1:`port`, admin/admin, a 10 s checkout timeout.
pub fn general_toml(port: u16) -> String {
    format!(
        "[general]\n\
         host = \"127.0.0.1\"\n\
         port = {port}\n\
         admin_username = \"admin\"\n\
         admin_password = \"admin\"\n\
         connect_timeout = 10000\n\
         shutdown_timeout = 1000\n"
    )
}

/// A pgcat.toml with pool `app` (database `app`, shard 0 = the cluster, queries to the
/// primary) for users scram_user and md5_user with `pool_size`; `extra_user_toml` is added
/// to both user tables (e.g. `auth_type = "md5"`).
pub fn config(
    cluster: &Cluster,
    port: u16,
    pool_mode: &str,
    pool_size: u32,
    extra_user_toml: &str,
) -> String {
    let mut toml = general_toml(port);
    toml.push_str(&format!(
        "\n[pools.{DB}]\npool_mode = \"{pool_mode}\"\ndefault_role = \"primary\"\n"
    ));
    for (i, (user, pass)) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)]
        .iter()
        .enumerate()
    {
        toml.push_str(&format!(
            "\n[pools.{DB}.users.{i}]\nusername = \"{user}\"\npassword = \"{pass}\"\npool_size = {pool_size}\n{extra_user_toml}\n"
        ));
    }
    toml.push_str(&format!(
        "\n[pools.{DB}.shards.0]\ndatabase = \"{DB}\"\nservers = {}\n",
        cluster.servers_toml()
    ));
    toml
}

/// A unique scratch directory (a pooler's config and log, a test's files).
pub fn scratch_dir() -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pgcat-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create pooler scratch dir");
    dir
}

/// The `pgcat` binary, running on a config.
pub struct Pooler {
    /// The client port (`general.port` of the config).
    pub port: u16,
    /// The config file it runs on.
    pub config_path: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    dir: PathBuf,
    child: Child,
}

impl Pooler {
    /// Starts `pgcat <config>` and waits (20 s at most) until its port accepts connections.
    pub fn start(config_toml: &str) -> Pooler {
        Pooler::start_with_args(config_toml, &[])
    }

    /// Like [`Pooler::start`] with extra command-line arguments after the config path.
    pub fn start_with_args(config_toml: &str, args: &[&str]) -> Pooler {
        Pooler::spawn(config_toml, args, &[])
    }

    /// Like [`Pooler::start`] with extra environment variables (a fault point armed).
    pub fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Pooler {
        Pooler::spawn(config_toml, &[], env)
    }

    fn spawn(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Pooler {
        let doc: toml::Table = toml::from_str(config_toml).expect("test config is valid TOML");
        let port = doc
            .get("general")
            .and_then(|g| g.get("port"))
            .and_then(|p| p.as_integer())
            .and_then(|p| u16::try_from(p).ok())
            .expect("test config has general.port");
        let dir = scratch_dir();
        let config_path = dir.join("pgcat.toml");
        std::fs::write(&config_path, config_toml).expect("write test config");
        let log = dir.join("pgcat.log");
        let out = File::create(&log).expect("create pooler log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_pgcat"))
            .arg(&config_path)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("CONFIG_FILE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn pgcat");
        let mut pooler = Pooler {
            port,
            config_path,
            log,
            dir,
            child,
        };
        pooler.wait_listening(Duration::from_secs(20));
        pooler
    }

    fn wait_listening(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "pgcat exited ({status}) before listening on {}:\n{}",
                    self.port,
                    self.logs()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pgcat did not listen on {} within {limit:?}:\n{}",
                    self.port,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything the pooler wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pooler's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the pooler (SIGHUP: reload, SIGINT: drain, SIGTERM: stop now).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Whether the pooler has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the pooler to exit: its exit status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
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

    /// libpq connection string for `user` to `database` through the pooler.
    pub fn conninfo(&self, user: &str, password: &str, database: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password={password} dbname={database} connect_timeout=10", self.port)
    }

    /// Connects tokio-postgres through the pooler; the connection runs on a spawned task.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect(&self.conninfo(user, password, database)).await
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        // A pooler that already exited (and was reaped by `wait_exit` / `running`) gets no
        // signal: its pid may belong to another process by now.
        if self.running() {
            // SAFETY: as in `signal`; the child is not reaped yet, so the pid is still ours.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = self.wait_exit(Duration::from_secs(5));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- pgcat log ({}), last lines ---\n{}",
                self.log.display(),
                tail(&self.logs(), 80)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Connects tokio-postgres with a libpq-style connection string; the connection is spawned.
pub async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects tokio-postgres straight to a node as the superuser (bypassing the pooler).
pub async fn connect_direct(node: &Node, database: &str) -> tokio_postgres::Client {
    let conninfo = format!(
        "host={} port={} user=postgres password=postgres dbname={database} connect_timeout=10",
        node.host, node.port
    );
    connect(&conninfo)
        .await
        .unwrap_or_else(|e| panic!("direct connection to {}: {e}", node.port))
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pooler) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_owned())
}

/// Runs pgbench as SCRAM_USER on `database` at 127.0.0.1:`port` (the pooler, or a server),
/// with `args` (what to run: `-i`, `-c`, `-t`, `-M` …) before the connection options.
#[allow(dead_code)]
pub fn pgbench(
    cluster: &Cluster,
    port: u16,
    database: &str,
    args: &[&str],
    limit: Duration,
) -> Output {
    let port = port.to_string();
    let mut all = args.to_vec();
    all.extend(["-h", "127.0.0.1", "-p", &port, "-U", SCRAM_USER, database]);
    run_client(cluster, "pgbench", SCRAM_PASS, &all, limit)
}

/// Runs a client program from PostgreSQL's bin dir (psql, pgbench) with a clean libpq
/// environment plus `PGPASSWORD`, bounded by `limit`.
pub fn run_client(
    cluster: &Cluster,
    program: &str,
    password: &str,
    args: &[&str],
    limit: Duration,
) -> Output {
    let mut cmd = Command::new(cluster.bin_dir().join(program));
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSERVICE",
        "PGPASSFILE",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{program} {args:?} did not finish within {limit:?}; stderr so far unknown (killed)"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// psql through the pooler (`-X -A -t -v ON_ERROR_STOP=1 -c sql`): stdout trimmed, or
/// the exit status and stderr.
pub fn psql(
    cluster: &Cluster,
    pooler: &Pooler,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} dbname={DB}",
        pooler.port
    );
    psql_with(cluster, &conninfo, password, &[sql])
}

/// Polls `check` every 50 ms until it returns true or `limit` passes; returns the last result.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The path of a file in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// `toml` with `extra` lines added at the top of its `[general]` table (a config from
/// [`config`] or [`general_toml`]).
pub fn with_general(toml: &str, extra: &str) -> String {
    assert!(
        toml.contains("[general]\n"),
        "with_general: no [general] table in:\n{toml}"
    );
    let extra = if extra.ends_with('\n') {
        extra.to_owned()
    } else {
        format!("{extra}\n")
    };
    toml.replacen("[general]\n", &format!("[general]\n{extra}"), 1)
}

/// psql on any libpq connection string (`-X -A -t -v ON_ERROR_STOP=1`, then one `-c` per
/// command, so `\conninfo` and SQL can be mixed): stdout trimmed, or the exit status and
/// stderr. 60 s at most.
pub fn psql_with(
    cluster: &Cluster,
    conninfo: &str,
    password: &str,
    commands: &[&str],
) -> Result<String, String> {
    let mut args: Vec<&str> = vec![conninfo, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let out = run_client(cluster, "psql", password, &args, Duration::from_secs(60));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sends `signal` (SIGTERM: stop now, SIGINT: drain first) to the pooler and waits up to
/// `limit` for it to exit. Returns whether it exited. The exited process is left unreaped
/// (`WNOWAIT`) so its pid cannot be reused before `Drop` reaps it; its log stays readable.
pub fn stop_pooler(pooler: &Pooler, signal: libc::c_int, limit: Duration) -> bool {
    pooler.signal(signal);
    let pid = pooler.pid() as libc::pid_t;
    wait_until(limit, || {
        // SAFETY: siginfo_t is plain data; waitid writes into the zeroed struct we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // With WNOHANG and no exited child, waitid returns 0 and leaves si_pid at 0.
        rc == 0 && unsafe { info.si_pid() } == pid
    })
}

/// A two-worker tokio runtime for tests that drive async clients from a plain #[test].
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The venv's python with psycopg 3 and asyncpg, or why it could not be set up.
pub fn python_venv() -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = repo_path("target/pyvenv");
        let python = dir.join("bin/python");
        let ready = |python: &Path| {
            Command::new(python)
                .args(["-c", "import psycopg, asyncpg"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if ready(&python) {
            return Ok(python);
        }
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("python3 -m venv: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let out = Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "psycopg[binary]", "asyncpg"])
            .output()
            .map_err(|e| format!("pip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pip install psycopg[binary] asyncpg failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if !ready(&python) {
            return Err("psycopg/asyncpg do not import after pip install".into());
        }
        Ok(python)
    })
    .clone()
}

/// The last `n` lines of `text` (a log, a client's output) for a failure message.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The text of a panic payload (`panic!` with a message or a format string).
pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs named checks, collecting the failures instead of stopping at the first, so one
/// deviation does not hide the others; [`Checks::finish`] panics with all of them.
#[derive(Debug, Default)]
pub struct Checks(pub Vec<String>);

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Runs `f`; a failed assertion inside is recorded as `[name] message`.
    pub fn run(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            self.0.push(format!("[{name}] {}", panic_text(&p)));
        }
    }

    /// Panics with every recorded failure, if there is one.
    pub fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

/// xorshift64*: deterministic per seed, no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A signed value small enough that doubling it cannot overflow.
    pub fn small_i64(&mut self) -> i64 {
        (self.next() as i64) >> 3
    }
}

/// The rows of a simple query's reply, every column as text ("NULL" for NULL).
pub fn texts(msgs: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Rows of a simple query, every column as text ("NULL" for NULL).
pub async fn try_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    Ok(texts(&client.simple_query(sql).await?))
}

/// Rows of a simple query that must succeed.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    try_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// The single row of a simple query.
pub async fn one_row(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut all = rows(client, sql).await;
    assert_eq!(all.len(), 1, "{sql}: expected one row, got {all:?}");
    all.remove(0)
}

/// How many backends of the shared cluster's primary (other than the asking one) are in
/// `state` (`active`, `idle in transaction`) with `marker` in their query, as psql prints it.
pub fn backends_in_state(state: &str, marker: &str) -> String {
    let cluster = shared();
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
                 AND state = '{state}' AND query LIKE '%{marker}%'"
            ),
        )
        .expect("query pg_stat_activity")
}

/// Creates database `name` owned by scram_user on the primary (dropped first if a previous run
/// left it).
pub fn create_database(cluster: &Cluster, name: &str) {
    // CREATE DATABASE copies template1; serialise so parallel tests do not trip over it.
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name};\nCREATE DATABASE {name} OWNER {SCRAM_USER};"),
        )
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
}

/// `pgbench -i -q -s 1` of `database`, directly on the primary as scram_user (its owner).
pub fn pgbench_init(cluster: &Cluster, database: &str) {
    let args = ["-i", "-q", "-s", "1"];
    let init = pgbench(
        cluster,
        cluster.primary.port,
        database,
        &args,
        Duration::from_secs(180),
    );
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
}

/// The value pgbench reports after `label: ` (e.g. "number of failed transactions").
pub fn pgbench_report<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(": "))
}

/// A pgcat.toml: [general] from [`general_toml`] plus `general_extra` lines, and one
/// transaction-mode pool `database` (database `database`, on the primary only) with
/// `pool_extra` in its section and `users` as (name, password, pool_size).
pub fn primary_pool_toml(
    cluster: &Cluster,
    port: u16,
    general_extra: &str,
    database: &str,
    pool_extra: &str,
    users: &[(&str, &str, u32)],
) -> String {
    let mut toml = format!(
        "{}{general_extra}\n\
         \n[pools.{database}]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n{pool_extra}\n",
        general_toml(port)
    );
    for (i, (user, pass, size)) in users.iter().enumerate() {
        toml.push_str(&format!(
            "\n[pools.{database}.users.{i}]\nusername = \"{user}\"\npassword = \"{pass}\"\npool_size = {size}\n"
        ));
    }
    toml.push_str(&format!(
        "\n[pools.{database}.shards.0]\ndatabase = \"{database}\"\nservers = [[\"{}\", {}, \"primary\"]]\n",
        cluster.primary.host, cluster.primary.port
    ));
    toml
}

/// A pgcat.toml with one transaction-mode pool named `database` (database `database` on the
/// primary only) for scram_user with `pool_size`; the wait for a server is 30 s so queueing
/// clients do not time out. `extra_pool` goes into the pool section.
pub fn pool_toml(
    cluster: &Cluster,
    port: u16,
    database: &str,
    pool_size: u32,
    extra_pool: &str,
) -> String {
    let toml = primary_pool_toml(
        cluster,
        port,
        "",
        database,
        &format!("connect_timeout = 30000\n{extra_pool}"),
        &[(SCRAM_USER, SCRAM_PASS, pool_size)],
    );
    assert!(toml.contains("connect_timeout = 10000\n"), "{toml}");
    toml.replacen("connect_timeout = 10000\n", "connect_timeout = 30000\n", 1)
}
