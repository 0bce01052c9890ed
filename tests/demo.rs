//! `pgcat demo`: starts a local PostgreSQL, serves pool `app` as app/app, and on SIGTERM stops
//! and removes everything it started.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

#[test]
fn demo_serves_the_app_pool_and_removes_its_postgres_on_sigterm() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("pgcat-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("demo.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgcat"))
        .args(["demo", "--port", &port.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn pgcat demo");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("pgcat demo exited ({status}):\n{}", logs());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pgcat demo did not listen within 120 s:\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let banner = logs();
    assert!(
        banner.contains(&format!("psql \"postgres://app:app@127.0.0.1:{port}/app\"")),
        "the demo prints how to connect:\n{banner}"
    );
    let data_dir = banner
        .split("(data in ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("the banner names the data dir:\n{banner}"));
    assert!(
        data_dir.exists(),
        "{} exists while the demo runs",
        data_dir.display()
    );

    let psql = Command::new("psql")
        .arg(format!("postgres://app:app@127.0.0.1:{port}/app"))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_user || ' ' || current_database()",
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    let answer = String::from_utf8_lossy(&psql.stdout).trim().to_owned();
    assert!(
        ["app shard0", "app shard1", "app shard2"].contains(&answer.as_str()),
        "psql through the demo answered {answer:?}: {}\n{}",
        String::from_utf8_lossy(&psql.stderr),
        logs()
    );

    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "pgcat demo did not stop within 60 s of SIGTERM:\n{}",
                logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "pgcat demo exit status {status}:\n{}",
        logs()
    );
    assert!(
        !data_dir.exists(),
        "{} removed when the demo stops:\n{}",
        data_dir.display(),
        logs()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
