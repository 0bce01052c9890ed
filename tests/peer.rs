//! Issue 17: psycopg 3's own test suite, run directly against PostgreSQL and through the
//! pooler in session and in transaction mode (a real driver's whole suite is the widest
//! net for "applications run unchanged"). Session mode must pass every test that passes
//! directly; transaction mode every one but those listed, with their reasons, in
//! tests/peer/transaction-xfail.txt (the README's Compatibility table says the same).
//!
//! Ignored by default (it takes minutes and installs psycopg from the suite's source into
//! a venv under target/): `.ci/run` runs it with `cargo test --test peer -- --ignored`.
//! The suite and its runner are read from ../shared/peer (see its README).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{free_port, general_toml, private, repo_path, Pooler};

/// The database the suite creates and drops its objects in.
const SUITE_DB: &str = "psycopg_test";

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The suite's source (copied out of ../shared/peer, which is read-only in CI) and a
/// venv with psycopg installed from it: under target/peer, made once.
fn suite() -> (PathBuf, PathBuf) {
    let shared = repo_path("../shared/peer");
    assert!(
        shared.join("psycopg-suite.sh").exists(),
        "the peer suite is not at {}: this test needs ../shared/peer beside the repository",
        shared.display()
    );
    let dir = repo_path("target/peer");
    let src = dir.join("psycopg");
    let python = dir.join("venv/bin/python");
    let ready = python.exists()
        && Command::new(&python)
            .args([
                "-c",
                "import psycopg, pytest, xdist, pytest_timeout, anyio, pproxy",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("target/peer");
        run(
            Command::new("cp")
                .arg("-r")
                .arg(shared.join("psycopg"))
                .arg(&src),
            "copy the psycopg suite",
        );
        // shared/ is read-only; the editable install writes beside the sources.
        run(
            Command::new("chmod").args(["-R", "u+w"]).arg(&src),
            "make the copy writable",
        );
        run(
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(dir.join("venv")),
            "python3 -m venv",
        );
        run(
            Command::new(dir.join("venv/bin/pip"))
                .args(["install", "-q", "-e"])
                .arg(format!("{}/psycopg[test]", src.display()))
                .args([
                    "--config-settings",
                    "editable_mode=compat",
                    "pytest-timeout",
                    "pytest-xdist",
                ]),
            "pip install psycopg[test]",
        );
    }
    (src, python)
}

/// Runs the suite (or, with `only`, the tests whose names match one of them) against `dsn`;
/// the path of its JUnit report.
fn run_suite(src: &Path, python: &Path, label: &str, dsn: &str, only: &[String]) -> PathBuf {
    let report = repo_path(&format!("target/peer/{label}.xml"));
    let log = repo_path(&format!("target/peer/{label}.log"));
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new("bash");
    cmd.arg(repo_path("../shared/peer/psycopg-suite.sh"))
        .arg(src)
        .arg(dsn);
    if !only.is_empty() {
        cmd.arg("-k").arg(only.join(" or "));
    }
    let out = cmd
        .env("PYTHON", python)
        .env("JUNIT", &report)
        .env("LOG", &log)
        .env("SUITE_TIMEOUT", "1200")
        .output()
        .expect("psycopg-suite.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "--- psycopg suite, {label}:\n{}",
        stdout.lines().last().unwrap_or_default()
    );
    assert!(
        report.exists(),
        "{label}: no JUnit report (exit {}):\n{stdout}",
        out.status
    );
    report
}

/// A pooler in front of `port` with pool `psycopg_test` in `mode`.
fn pooler(port: u16, mode: &str) -> Pooler {
    let mut toml = general_toml(free_port());
    toml.push_str(&format!(
        "\n[pools.{SUITE_DB}]\npool_mode = \"{mode}\"\ndefault_role = \"primary\"\n\
         [pools.{SUITE_DB}.users.0]\nusername = \"postgres\"\npassword = \"postgres\"\npool_size = 20\n\
         [pools.{SUITE_DB}.shards.0]\ndatabase = \"{SUITE_DB}\"\nservers = [[\"127.0.0.1\", {port}, \"primary\"]]\n"
    ));
    Pooler::start(&toml)
}

#[test]
#[ignore = "minutes long; run by .ci/run with --ignored"]
fn psycopg_suite_passes_through_the_pooler_as_it_does_directly() {
    let (src, python) = suite();
    let cluster = private(0);
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &format!("CREATE DATABASE {SUITE_DB}"),
        )
        .expect("create the suite's database");
    let dsn = |port: u16| {
        format!("host=127.0.0.1 port={port} dbname={SUITE_DB} user=postgres password=postgres")
    };
    let port = cluster.primary.port;
    let direct = run_suite(&src, &python, "direct", &dsn(port), &[]);
    let mut reports = Vec::new();
    for mode in ["session", "transaction"] {
        let pooler = pooler(port, mode);
        reports.push(run_suite(&src, &python, mode, &dsn(pooler.port), &[]));
    }
    let compare = |reruns: &[(&str, PathBuf)]| {
        let mut cmd = Command::new("python3");
        cmd.arg(repo_path("tests/peer/compare.py"))
            .arg(&direct)
            .args(&reports)
            .arg(repo_path("tests/peer/transaction-xfail.txt"));
        for (mode, report) in reruns {
            cmd.arg("--rerun")
                .arg(format!("{mode}={}", report.display()));
        }
        let out = cmd.output().expect("compare.py");
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{report}");
        (out.status.success(), report, out.stderr)
    };
    let (mut ok, mut report, mut stderr) = compare(&[]);
    if !ok {
        // A test that races the clock may fail once by chance: run each mode's unexpected
        // failures once more, through a fresh pooler; compare.py fails on those failing twice.
        let mut reruns = Vec::new();
        for mode in ["session", "transaction"] {
            let names = unexpected(&report, mode);
            if !names.is_empty() {
                let pooler = pooler(port, mode);
                let label = format!("{mode}-rerun");
                let dsn = dsn(pooler.port);
                reruns.push((mode, run_suite(&src, &python, &label, &dsn, &names)));
            }
        }
        (ok, report, stderr) = compare(&reruns);
    }
    assert!(
        ok,
        "the pooler fails tests that pass directly:\n{report}\n{}",
        String::from_utf8_lossy(&stderr)
    );
}

/// The test functions compare.py reported as failing unexpectedly in `mode` (names for
/// pytest's `-k`: the id's function, without file or parameters).
fn unexpected(report: &str, mode: &str) -> Vec<String> {
    let prefix = format!("UNEXPECTED {mode} failure: ");
    let mut names: Vec<String> = report
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .filter_map(|id| id.split(' ').next()?.split("::").nth(1))
        .map(|test| test.split('[').next().unwrap_or(test).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}
