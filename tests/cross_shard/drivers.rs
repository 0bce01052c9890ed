//! Real drivers through a pool with `default_shard = "all"` (issue 19): psql, psycopg and
//! asyncpg get the oracle's answers.

use super::*;

#[test]
fn psql_gets_the_oracles_answers() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    let conninfo =
        |port: u16, db: &str| format!("host=127.0.0.1 port={port} user={SHARD_USER} dbname={db}");
    for sql in [
        "SELECT count(*), sum(amount), max(id) FROM items",
        "SELECT id, value FROM items WHERE grp = 2 ORDER BY id DESC LIMIT 8",
        "SELECT id, value, amount FROM items ORDER BY id",
    ] {
        let want = support::psql_with(
            cluster,
            &conninfo(cluster.primary.port, "xs_oracle"),
            SHARD_PASS,
            &[sql],
        )
        .expect("the oracle answers");
        let got = support::psql_with(cluster, &conninfo(pooler.port, POOL), SHARD_PASS, &[sql])
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", pooler.logs()));
        assert_eq!(got, want, "{sql} through psql");
    }
}

#[test]
fn psycopg_and_asyncpg_get_the_oracles_answers() {
    let python = match support::python_venv() {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    let dsn = |port: u16, db: &str| {
        format!("host=127.0.0.1 port={port} user={SHARD_USER} password={SHARD_PASS} dbname={db}")
    };
    let out = std::process::Command::new(python)
        .arg(support::repo_path("tests/python/cross_shard.py"))
        .env("PGCAT_DSN", dsn(pooler.port, POOL))
        .env("ORACLE_DSN", dsn(cluster.primary.port, "xs_oracle"))
        .output()
        .expect("run tests/python/cross_shard.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n--- pooler log\n{}",
        String::from_utf8_lossy(&out.stderr),
        support::tail(&pooler.logs(), 30)
    );
    assert_eq!(stdout.matches("CHECK ").count(), 42, "{stdout}");
}
