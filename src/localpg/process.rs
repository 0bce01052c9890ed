//! Running PostgreSQL's programs for a throwaway cluster: finding its bin dir, dropping root
//! for the programs that refuse it, bounded waits on every child, log tails for errors, and
//! the watchdog that removes the cluster once the owning process is gone.
//!
//! Sync, std::process only. Nothing here knows what a cluster looks like beyond its directory.

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::LocalPgError;

/// Environment variables that would silently change what a libpq program connects to.
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGTARGETSESSIONATTRS",
    "PGDATA",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
];

/// PostgreSQL's bin dir: `pg_config --bindir`, else the real directory of `initdb` on PATH,
/// else the highest version under /usr/lib/postgresql/*/bin.
pub fn find_bin_dir() -> Result<PathBuf, LocalPgError> {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "pg_basebackup"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_tools(&dir) {
                return Ok(dir);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // /usr/local/bin/initdb is often a lone symlink: use the directory it points into.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(parent) = real.parent().filter(|d| has_tools(d)) {
                    return Ok(parent.to_path_buf());
                }
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(LocalPgError::NoPostgres)
}

/// Who runs PostgreSQL's server-side programs: ourselves, or (when we are root, which
/// PostgreSQL refuses) the `postgres` account.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    /// `Some((uid, gid))` of `postgres` when we are root.
    pub(super) drop_to: Option<(u32, u32)>,
}

impl RunAs {
    pub fn detect() -> Result<RunAs, LocalPgError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(RunAs { drop_to: None });
        }
        let ids = user_ids("postgres").ok_or(LocalPgError::NoPostgresUser)?;
        Ok(RunAs { drop_to: Some(ids) })
    }

    /// Makes `path` belong to the account that runs PostgreSQL.
    pub fn own(&self, path: &Path) -> Result<(), LocalPgError> {
        if let Some((uid, gid)) = self.drop_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                LocalPgError::io(format!("chown {} to postgres", path.display()), e)
            })?;
        }
        Ok(())
    }

    /// A command for a server-side program (initdb, pg_ctl, pg_basebackup) run as that account,
    /// in `cwd` (a directory it can enter), with a clean libpq environment.
    pub fn command(&self, program: impl AsRef<OsStr>, cwd: &Path) -> Command {
        let mut cmd = client_command(program);
        cmd.current_dir(cwd).env("HOME", cwd);
        if let Some((uid, gid)) = self.drop_to {
            // std drops supplementary groups before setuid when it runs as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

/// A command for a client program (psql) with a clean libpq environment.
pub fn client_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in LIBPQ_ENV {
        cmd.env_remove(var);
    }
    cmd.env("PGCONNECT_TIMEOUT", "10").stdin(Stdio::null());
    cmd
}

/// uid and gid of a local account.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf's length is passed along.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// Runs `cmd` to completion within `limit`, capturing stdout and stderr; kills it at the limit.
/// `what` names the step in errors; `log` is a file whose tail explains a failure.
pub fn run(
    cmd: Command,
    what: &str,
    limit: Duration,
    log: Option<&Path>,
) -> Result<Output, LocalPgError> {
    finish(spawn(cmd, Stdio::null(), what)?, what, limit, log)
}

/// Starts `cmd` with `stdin` and its output captured.
fn spawn(mut cmd: Command, stdin: Stdio, what: &str) -> Result<std::process::Child, LocalPgError> {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LocalPgError::io(format!("{what}: cannot start {:?}", cmd.get_program()), e))
}

/// Like [`run`], writing `input` to the child's stdin first.
pub fn run_with_input(
    cmd: Command,
    input: &str,
    what: &str,
    limit: Duration,
) -> Result<Output, LocalPgError> {
    let mut child = spawn(cmd, Stdio::piped(), what)?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_owned();
        // A thread, so a child that does not read its input cannot block us past the limit.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    finish(child, what, limit, None)
}

fn finish(
    mut child: Child,
    what: &str,
    limit: Duration,
    log: Option<&Path>,
) -> Result<Output, LocalPgError> {
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = match wait_timeout(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LocalPgError::Failed {
                what: what.to_owned(),
                detail: format!("did not finish within {limit:?}"),
                log_tail: log.map(log_tail).unwrap_or_default(),
            });
        }
    };
    let output = Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    if !output.status.success() {
        let mut detail = format!("{}", output.status);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            detail.push_str(": ");
            detail.push_str(stderr.trim());
        }
        return Err(LocalPgError::Failed {
            what: what.to_owned(),
            detail,
            log_tail: log.map(log_tail).unwrap_or_default(),
        });
    }
    Ok(output)
}

/// Waits for `child` at most `limit`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            _ => return None,
        }
    }
}

/// The last 40 lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Starts a detached shell that waits for this process to exit, then stops every PostgreSQL
/// under `dir` (SIGQUIT, PostgreSQL's immediate shutdown; SIGKILL after 10 s) and removes `dir`.
/// It runs in its own session, so a Ctrl-C or a killed process group does not take it along.
pub fn spawn_watchdog(dir: &Path) -> Result<Child, LocalPgError> {
    let script = r#"
owner="$1"; dir="$2"
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
pids=""
for f in "$dir"/*/postmaster.pid; do
  [ -f "$f" ] || continue
  pid=$(head -n 1 "$f")
  case "$pid" in ''|*[!0-9]*) continue ;; esac
  kill -QUIT "$pid" 2>/dev/null && pids="$pids $pid"
done
i=0
for pid in $pids; do
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
done
rm -rf "$dir"
"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("pgcat-localpg-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| LocalPgError::io("start the cleanup watchdog".to_owned(), e))
}

/// A free TCP port on 127.0.0.1 (bound once and released; PostgreSQL takes it a moment later).
pub fn free_port() -> Result<u16, LocalPgError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LocalPgError::io("pick a free port".to_owned(), e))
}
