//! Throwaway local PostgreSQL clusters: a primary and streaming hot-standby replicas on free
//! ports of 127.0.0.1, in a fresh temp dir, for `pgcat demo` and the integration tests.
//!
//! Owns creating, starting, stopping and removing those servers, nothing else: it never talks
//! the wire protocol itself (it shells out to `psql`). Sync code (std::process), so tests and
//! `spawn_blocking` can use it alike.
//!
//! - PostgreSQL refuses to run as root: as root, the temp dir is given to the `postgres`
//!   account and initdb / pg_ctl / pg_basebackup run as that account.
//! - Every wait is bounded; a failure names the step and carries the tail of the server log.
//! - No stray postgres outlives the process: `Drop` stops and removes everything, and a
//!   detached watchdog does the same when the process exits without dropping (statics, panics,
//!   kills), since `cargo test` has no global teardown.
//!
//! The superuser is `postgres` with password `postgres` (stored SCRAM); `host` connections use
//! `md5` in pg_hba.conf, which accepts SCRAM- and MD5-stored passwords alike.

mod process;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use process::{client_command, run, run_with_input, RunAs};

/// The superuser's name and password in every local cluster.
pub const SUPERUSER: &str = "postgres";
/// See [`SUPERUSER`].
pub const SUPERUSER_PASSWORD: &str = "postgres";

/// How long a start, stop, base backup or catch-up may take before it is an error.
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// How long one `psql` call may take.
const PSQL_LIMIT: Duration = Duration::from_secs(120);

/// What a cluster should look like.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Streaming hot-standby replicas of the primary.
    pub replicas: usize,
    /// `max_connections` of every node.
    pub max_connections: u32,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            replicas: 1,
            max_connections: 300,
        }
    }
}

/// One PostgreSQL server of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Always "127.0.0.1".
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Node {
    /// The server log, beside the data directory.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }
}

/// Why a local cluster could not be created or driven.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error(
        "no PostgreSQL found (looked at `pg_config --bindir`, initdb on PATH and \
         /usr/lib/postgresql/*/bin): install the postgresql package"
    )]
    NoPostgres,
    #[error("running as root, but there is no `postgres` account to run PostgreSQL as")]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}{}", tail_suffix(.log_tail))]
    Failed {
        what: String,
        detail: String,
        /// The last lines of the relevant server log, if any.
        log_tail: String,
    },
}

impl LocalPgError {
    fn io(what: String, source: std::io::Error) -> LocalPgError {
        LocalPgError::Io { what, source }
    }
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n--- server log (tail) ---\n{tail}")
    }
}

/// A running primary and its replicas, stopped and removed on drop.
pub struct Cluster {
    /// The temp dir holding every data dir, log and socket.
    pub dir: PathBuf,
    pub primary: Node,
    pub replicas: Vec<Node>,
    scratch: Scratch,
}

/// The temp dir and its watchdog; removing the dir is the last thing that happens, so a failed
/// `Cluster::start` cleans up too.
struct Scratch {
    dir: PathBuf,
    bin: PathBuf,
    run_as: RunAs,
    watchdog: Option<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Whatever got started under the dir, stop it (a half-built cluster has no Node list).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if entry.path().join("postmaster.pid").exists() {
                    stop_data_dir(&self.bin, self.run_as, &self.dir, &entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

fn stop_data_dir(bin: &Path, run_as: RunAs, cwd: &Path, data_dir: &Path) {
    let mut cmd = run_as.command(bin.join("pg_ctl"), cwd);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-m", "immediate", "-w", "-t", "60", "stop"]);
    let _ = run(cmd, "pg_ctl stop", STEP_LIMIT, None);
}

impl Cluster {
    /// Creates and starts a primary and `spec.replicas` streaming replicas, each on a free port.
    pub fn start(spec: &ClusterSpec) -> Result<Cluster, LocalPgError> {
        let bin = process::find_bin_dir()?;
        let run_as = RunAs::detect()?;
        let dir = make_temp_dir()?;
        // The watchdog first: from here on, however we exit, the dir goes away.
        let watchdog = process::spawn_watchdog(&dir);
        let mut scratch = Scratch {
            dir: dir.clone(),
            bin,
            run_as,
            watchdog: None,
        };
        scratch.watchdog = Some(watchdog?);
        run_as.own(&dir)?;

        let primary = init_primary(&scratch, spec)?;
        let mut replicas = Vec::with_capacity(spec.replicas);
        for i in 0..spec.replicas {
            replicas.push(init_replica(&scratch, &primary, i)?);
        }
        Ok(Cluster {
            dir,
            primary,
            replicas,
            scratch,
        })
    }

    /// PostgreSQL's bin dir in use.
    pub fn bin_dir(&self) -> &Path {
        &self.scratch.bin
    }

    /// Every node: the primary first, then the replicas.
    /// The cluster as a pgcat.toml `servers` array: the primary, then the replicas.
    pub fn servers_toml(&self) -> String {
        let replicas = self.replicas.iter().map(|r| (r, "replica"));
        let servers: Vec<String> = std::iter::once((&self.primary, "primary"))
            .chain(replicas)
            .map(|(n, role)| format!("[\"{}\", {}, \"{role}\"]", n.host, n.port))
            .collect();
        format!("[{}]", servers.join(", "))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// Runs `sql` (one or more statements) with psql as the superuser over TCP
    /// (`-X -A -t -q -v ON_ERROR_STOP=1`) and returns its output, trimmed. Rows are lines,
    /// columns are separated by `|`.
    pub fn psql(&self, node: &Node, database: &str, sql: &str) -> Result<String, LocalPgError> {
        let mut cmd = client_command(self.scratch.bin.join("psql"));
        as_superuser_on(&mut cmd, node)
            .args(["-d", database])
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
        let what = format!("psql on port {} ({database})", node.port);
        let out = run_with_input(cmd, sql, &what, PSQL_LIMIT)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops `node` at once (`pg_ctl stop -m immediate`); does nothing if it is not running.
    pub fn stop_node(&self, node: &Node) {
        stop_data_dir(
            &self.scratch.bin,
            self.scratch.run_as,
            &self.dir,
            &node.data_dir,
        );
    }

    /// Starts a stopped `node` again and waits until it accepts connections.
    ///
    /// # Panics
    /// If it does not start; the message carries the server log's tail. See
    /// [`Cluster::try_start_node`] for a `Result`.
    pub fn start_node(&self, node: &Node) {
        if let Err(e) = self.try_start_node(node) {
            panic!("{e}");
        }
    }

    /// [`Cluster::start_node`] returning the error.
    pub fn try_start_node(&self, node: &Node) -> Result<(), LocalPgError> {
        pg_ctl_start(&self.scratch, node)
    }

    /// Promotes a replica to primary (`pg_ctl promote -w`).
    pub fn promote(&self, node: &Node) -> Result<(), LocalPgError> {
        let mut cmd = self
            .scratch
            .run_as
            .command(self.scratch.bin.join("pg_ctl"), &self.dir);
        cmd.arg("-D")
            .arg(&node.data_dir)
            .args(["-w", "-t", "60", "promote"]);
        run(
            cmd,
            &format!("promote port {}", node.port),
            STEP_LIMIT,
            Some(&node.log_file()),
        )?;
        Ok(())
    }

    /// Freezes `node` (SIGSTOP to the postmaster and all its processes): connections stay open
    /// but nothing answers, like a hung server. Undo with [`Cluster::thaw_node`].
    pub fn freeze_node(&self, node: &Node) {
        signal_node(node, libc::SIGSTOP);
    }

    /// Resumes a node frozen by [`Cluster::freeze_node`].
    pub fn thaw_node(&self, node: &Node) {
        signal_node(node, libc::SIGCONT);
    }

    /// Waits until every replica has replayed everything inserted into the primary's WAL so far
    /// (the insert position: with synchronous_commit off, the write position can lag behind the
    /// last commit). 60 s at most.
    pub fn wait_replicas_caught_up(&self) -> Result<(), LocalPgError> {
        let lsn = self.psql(
            &self.primary,
            "postgres",
            "SELECT pg_current_wal_insert_lsn()",
        )?;
        let check = format!("SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false)");
        for replica in &self.replicas {
            let deadline = Instant::now() + STEP_LIMIT;
            loop {
                let last = self.psql(replica, "postgres", &check);
                if matches!(&last, Ok(t) if t == "t") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(LocalPgError::Failed {
                        what: format!("replica on port {} catching up to {lsn}", replica.port),
                        detail: format!(
                            "not caught up after {STEP_LIMIT:?} (last check: {last:?})"
                        ),
                        log_tail: process::log_tail(&replica.log_file()),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes() {
            self.stop_node(node);
        }
        // `scratch` then removes the dir and ends the watchdog.
    }
}

/// A new, empty, uniquely named directory under the system temp dir.
fn make_temp_dir() -> Result<PathBuf, LocalPgError> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "pgcat-localpg-{}-{seq}-{nanos:x}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LocalPgError::io(format!("create {}", dir.display()), e)),
        }
    }
}

fn init_primary(scratch: &Scratch, spec: &ClusterSpec) -> Result<Node, LocalPgError> {
    let dir = &scratch.dir;
    let data_dir = dir.join("primary");
    let pwfile = dir.join("pwfile");
    write_file(&pwfile, &format!("{SUPERUSER_PASSWORD}\n"))?;
    scratch.run_as.own(&pwfile)?;

    let mut cmd = scratch.run_as.command(scratch.bin.join("initdb"), dir);
    cmd.arg("-D")
        .arg(&data_dir)
        .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=md5"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["-E", "UTF8", "--locale=C", "--no-sync"]);
    run(cmd, "initdb", STEP_LIMIT, None)?;
    let _ = std::fs::remove_file(&pwfile);

    let mut conf = String::from("\n# pgcat localpg\n");
    let _ = write!(
        conf,
        "listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         max_connections = {}\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         wal_keep_size = '256MB'\n\
         hot_standby = on\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         max_prepared_transactions = 20\n\
         shared_buffers = 32MB\n",
        dir.display(),
        spec.max_connections,
    );
    append_file(&data_dir.join("postgresql.conf"), &conf)?;
    write_file(
        &data_dir.join("pg_hba.conf"),
        "local all all trust\n\
         local replication all trust\n\
         host all all 127.0.0.1/32 md5\n\
         host replication all 127.0.0.1/32 md5\n",
    )?;
    start_on_free_port(scratch, data_dir)
}

/// Points `cmd` (a PostgreSQL client program) at `node` as the superuser, over TCP.
fn as_superuser_on<'a>(cmd: &'a mut Command, node: &Node) -> &'a mut Command {
    cmd.env("PGPASSWORD", SUPERUSER_PASSWORD).args([
        "-h",
        &node.host,
        "-p",
        &node.port.to_string(),
        "-U",
        SUPERUSER,
    ])
}

fn init_replica(scratch: &Scratch, primary: &Node, i: usize) -> Result<Node, LocalPgError> {
    let data_dir = scratch.dir.join(format!("replica{i}"));
    let mut cmd = scratch
        .run_as
        .command(scratch.bin.join("pg_basebackup"), &scratch.dir);
    as_superuser_on(&mut cmd, primary)
        .arg("-D")
        .arg(&data_dir)
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
    run(
        cmd,
        &format!("pg_basebackup for replica{i}"),
        STEP_LIMIT,
        Some(&primary.log_file()),
    )?;
    start_on_free_port(scratch, data_dir)
}

/// Picks a free port, writes it into the node's configuration and starts it; retries with
/// another port when the chosen one was taken in the meantime.
fn start_on_free_port(scratch: &Scratch, data_dir: PathBuf) -> Result<Node, LocalPgError> {
    let mut attempt = 0;
    loop {
        let port = process::free_port()?;
        // A later `port` line overrides an earlier one (and the one a base backup copied).
        append_file(
            &data_dir.join("postgresql.conf"),
            &format!("port = {port}\n"),
        )?;
        let node = Node {
            host: "127.0.0.1".to_owned(),
            port,
            data_dir: data_dir.clone(),
        };
        match pg_ctl_start(scratch, &node) {
            Ok(()) => return Ok(node),
            Err(LocalPgError::Failed { log_tail, .. })
                if attempt < 5 && log_tail.contains("already in use") =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn pg_ctl_start(scratch: &Scratch, node: &Node) -> Result<(), LocalPgError> {
    let log = node.log_file();
    let mut cmd = scratch
        .run_as
        .command(scratch.bin.join("pg_ctl"), &scratch.dir);
    cmd.arg("-D")
        .arg(&node.data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "start"]);
    run(
        cmd,
        &format!("start PostgreSQL on port {}", node.port),
        STEP_LIMIT + Duration::from_secs(5),
        Some(&log),
    )?;
    Ok(())
}

/// Sends `signal` to the node's postmaster and every process it started.
fn signal_node(node: &Node, signal: libc::c_int) {
    let Some(postmaster) = std::fs::read_to_string(node.data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
    else {
        return;
    };
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    for pid in pids {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), LocalPgError> {
    std::fs::write(path, text).map_err(|e| LocalPgError::io(format!("write {}", path.display()), e))
}

fn append_file(path: &Path, text: &str) -> Result<(), LocalPgError> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| LocalPgError::io(format!("append to {}", path.display()), e))
}
