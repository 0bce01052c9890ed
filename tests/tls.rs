//! TLS on both sides of the pooler, with the certificates in `fixtures/tls` (see its README).
//!
//! Client side (`tls_certificate` / `tls_private_key` / `tls_client_required` in [general]):
//! - psql `sslmode=require` connects through the pooler and `\conninfo` reports SSL;
//!   `sslmode=verify-full` against the test CA with host name `localhost` connects; the
//!   unrelated CA is refused (so the pooler presents the configured certificate);
//! - `tls_client_required = true`: plain clients get FATAL 28000 naming TLS as required, on a
//!   pool and on the admin database; TLS clients still get in;
//! - without TLS config: `sslmode=require` fails, `sslmode=prefer` connects in plain text.
//!
//! Server side (`server_tls`, `verify_server_certificate`, `server_tls_ca_file`): a private
//! PostgreSQL with `ssl = on` and only `hostssl` lines in pg_hba.conf (plain connections to
//! it are refused, checked directly):
//! - `server_tls = true` serves queries over TLS (`pg_stat_ssl` of the server backend), with
//!   and without verify-full against the test CA;
//! - verification against the wrong CA, or against the system roots, and `server_tls = false`
//!   make queries fail with an error while the pooler keeps running (admin still answers);
//!   a failed verification is named in the pooler log.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    config, free_port, psql_with, repo_path, runtime, shared, sqlstate, wait_until, with_general,
    Cluster, Pooler, DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};

const ADMIN_DB: &str = "pgcat";

/// Absolute path of a file in `fixtures/tls`.
fn fixture(name: &str) -> String {
    let path = repo_path(&format!("fixtures/tls/{name}"));
    assert!(path.is_file(), "missing TLS fixture {}", path.display());
    path.display().to_string()
}

/// A pooler config on `cluster` that serves TLS to clients with the fixture certificate, plus
/// `extra` [general] lines.
fn client_tls_config(cluster: &Cluster, port: u16, extra: &str) -> String {
    with_general(
        &config(cluster, port, "transaction", 2, ""),
        &format!(
            "tls_certificate = \"{}\"\ntls_private_key = \"{}\"\n{extra}",
            fixture("server.pem"),
            fixture("server.key")
        ),
    )
}

/// libpq connection string to the pooler at 127.0.0.1 with `extra` options appended.
fn via_pooler(pooler: &Pooler, user: &str, database: &str, extra: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} dbname={database} {extra}",
        pooler.port
    )
}

/// Whether psql's `\conninfo` output says the connection uses SSL (psql <= 17 prints
/// "SSL connection (protocol: ...)"; psql 18 prints a table row "SSL Connection|true").
fn ssl_in_use(conninfo_output: &str) -> bool {
    conninfo_output.lines().any(|l| {
        let l = l.to_ascii_lowercase().replace(' ', "");
        l.starts_with("sslconnection(") || l.starts_with("sslconnection|true")
    })
}

/// psql `\conninfo` + `SELECT 1` must work and report SSL (or plain, per `want_ssl`).
fn check_psql(cluster: &Cluster, pooler: &Pooler, conninfo: &str, password: &str, want_ssl: bool) {
    let out =
        psql_with(cluster, conninfo, password, &["\\conninfo", "SELECT 1"]).unwrap_or_else(|e| {
            panic!(
                "psql '{conninfo}' through the pooler: {e}\n{}",
                pooler.logs()
            )
        });
    assert_eq!(
        out.lines().last(),
        Some("1"),
        "'{conninfo}': SELECT 1 output in:\n{out}"
    );
    assert_eq!(
        ssl_in_use(&out),
        want_ssl,
        "'{conninfo}': SSL in use according to \\conninfo:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// TLS clients get in through `pooler`: both users with sslmode=require, SCRAM with prefer
/// and verify-full (the chain to the test CA, the host name `localhost` in the SAN), and
/// the admin database over TLS.
fn tls_clients_get_in(cluster: &Cluster, pooler: &Pooler) {
    for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
        let conninfo = via_pooler(pooler, user, DB, "sslmode=require");
        check_psql(cluster, pooler, &conninfo, pass, true);
    }
    let prefer = via_pooler(pooler, SCRAM_USER, DB, "sslmode=prefer");
    check_psql(cluster, pooler, &prefer, SCRAM_PASS, true);
    check_psql(
        cluster,
        pooler,
        &verify_full(pooler, "ca.pem"),
        SCRAM_PASS,
        true,
    );
    let out = psql_with(
        cluster,
        &via_pooler(pooler, "admin", ADMIN_DB, "sslmode=require"),
        "admin",
        &["\\conninfo", "SHOW POOLS"],
    )
    .unwrap_or_else(|e| panic!("admin over TLS: {e}\n{}", pooler.logs()));
    assert!(ssl_in_use(&out), "admin over TLS, \\conninfo:\n{out}");
    assert!(out.contains(DB), "SHOW POOLS lists pool {DB}:\n{out}");
}

/// A conninfo for SCRAM_USER through `pooler` with sslmode=verify-full against `ca`.
fn verify_full(pooler: &Pooler, ca: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={SCRAM_USER} dbname={DB} \
         sslmode=verify-full sslrootcert={}",
        pooler.port,
        fixture(ca)
    )
}

#[test]
fn client_tls_sslmode_require_and_verify_full_connect_through_the_pooler() {
    let cluster = shared();
    let pooler = Pooler::start(&client_tls_config(cluster, free_port(), ""));

    // sslmode=require: TLS or nothing, so a connection at all proves the pooler said 'S';
    // verify-full checks the chain to the test CA and the host name `localhost` (in the
    // SAN); prefer (libpq's default) uses TLS when the pooler offers it; the admin database.
    tls_clients_get_in(cluster, &pooler);

    // The same against an unrelated CA fails: the pooler presents the configured certificate.
    let wrong_ca = verify_full(&pooler, "wrong-ca.pem");
    let err = psql_with(cluster, &wrong_ca, SCRAM_PASS, &["SELECT 1"])
        .expect_err("verify-full against the wrong CA must fail");
    assert!(
        err.to_ascii_lowercase().contains("certificate"),
        "the failure names the certificate: {err}"
    );

    // Still a working pooler for a plain client (tls_client_required is off).
    check_psql(
        cluster,
        &pooler,
        &via_pooler(&pooler, MD5_USER, DB, "sslmode=disable"),
        MD5_PASS,
        false,
    );
}

#[test]
fn tls_client_required_refuses_plain_clients_with_28000_and_accepts_tls_ones() {
    let cluster = shared();
    let pooler = Pooler::start(&client_tls_config(
        cluster,
        free_port(),
        "tls_client_required = true\n",
    ));

    let refused = |what: &str, err: &str| {
        assert!(
            err.contains("FATAL"),
            "{what}: psql prints the FATAL: {err}"
        );
        assert!(err.contains("TLS"), "{what}: the message names TLS: {err}");
        assert!(
            err.to_ascii_lowercase().contains("required"),
            "{what}: the message says it is required: {err}"
        );
    };

    // psql without TLS, on a pool and on the admin database.
    for (user, pass, db) in [
        (SCRAM_USER, SCRAM_PASS, DB),
        (MD5_USER, MD5_PASS, DB),
        ("admin", "admin", ADMIN_DB),
        ("admin", "admin", "pgbouncer"),
    ] {
        let err = psql_with(
            cluster,
            &via_pooler(&pooler, user, db, "sslmode=disable"),
            pass,
            &["SELECT 1"],
        )
        .expect_err("a plain client must be refused when tls_client_required = true");
        refused(&format!("psql {user}@{db} sslmode=disable"), &err);
    }

    // tokio-postgres with NoTls sends no SSLRequest: the SQLSTATE is 28000.
    runtime().block_on(async {
        for (user, pass, db) in [(SCRAM_USER, SCRAM_PASS, DB), ("admin", "admin", ADMIN_DB)] {
            let result =
                tokio::time::timeout(Duration::from_secs(30), pooler.connect(user, pass, db))
                    .await
                    .unwrap_or_else(|_| panic!("{user}@{db}: no answer within 30 s"));
            let err = match result {
                Ok(_) => panic!("{user}@{db}: a plain tokio-postgres client must be refused"),
                Err(e) => e,
            };
            assert_eq!(
                sqlstate(&err).as_deref(),
                Some("28000"),
                "{user}@{db}: {err:?}"
            );
            let message = err
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_default();
            assert!(
                message.contains("TLS") && message.to_ascii_lowercase().contains("required"),
                "{user}@{db}: message names TLS as required: {message:?}"
            );
            assert_eq!(
                err.as_db_error()
                    .map(|d| d.severity().to_owned())
                    .as_deref(),
                Some("FATAL"),
                "{user}@{db}: severity"
            );
        }
    });

    // TLS clients get in: require, prefer, verify-full; pool and admin.
    tls_clients_get_in(cluster, &pooler);
}

#[test]
fn without_tls_config_sslmode_require_fails_and_prefer_connects_in_plain_text() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));

    let err = psql_with(
        cluster,
        &via_pooler(&pooler, SCRAM_USER, DB, "sslmode=require"),
        SCRAM_PASS,
        &["SELECT 1"],
    )
    .expect_err("sslmode=require must fail when the pooler has no certificate");
    assert!(
        err.contains("SSL"),
        "libpq says the server does not support SSL: {err}"
    );

    for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
        check_psql(
            cluster,
            &pooler,
            &via_pooler(&pooler, user, DB, "sslmode=prefer"),
            pass,
            false,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// A private PostgreSQL (no replica) with `ssl = on` (the fixture certificate; the key copied
/// to a 0600 file owned by the account PostgreSQL runs as) and only `hostssl` lines for TCP in
/// pg_hba.conf (the `local` lines stay; the harness's own psql uses TCP with libpq's default
/// `sslmode=prefer`, so it goes over TLS). Restarted; plain TCP connections are checked to be
/// refused.
fn hostssl_cluster() -> Cluster {
    let cluster = support::private(0);
    let node = cluster.primary.clone();
    // Whoever owns the data directory runs PostgreSQL (`postgres` when the tests run as root).
    let meta = std::fs::metadata(&node.data_dir).expect("stat data dir");
    let (uid, gid) = (meta.uid(), meta.gid());

    let dir = cluster.dir.join("tls");
    std::fs::create_dir_all(&dir).expect("create tls dir");
    let copy = |name: &str, mode: u32| -> PathBuf {
        let to = dir.join(name);
        std::fs::copy(fixture(name), &to).unwrap_or_else(|e| panic!("copy {name}: {e}"));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {name}: {e}"));
        std::os::unix::fs::chown(&to, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {name}: {e}"));
        to
    };
    let cert = copy("server.pem", 0o644);
    let key = copy("server.key", 0o600);
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown tls dir");

    append(
        &node.data_dir.join("postgresql.conf"),
        &format!(
            "\n# tests/tls.rs\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        ),
    );
    // Rewriting the existing file keeps its owner.
    std::fs::write(
        node.data_dir.join("pg_hba.conf"),
        "local all all trust\n\
         local replication all trust\n\
         hostssl all all 127.0.0.1/32 md5\n\
         hostssl replication all 127.0.0.1/32 md5\n",
    )
    .expect("write pg_hba.conf");
    cluster.stop_node(&node);
    cluster.start_node(&node);

    // The harness's psql (sslmode=prefer over TCP) now runs over TLS.
    let ssl = cluster
        .psql(
            &node,
            "postgres",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .unwrap_or_else(|e| panic!("psql to the hostssl node: {e}"));
    assert_eq!(ssl, "t", "the node serves TLS");

    // Plain connections straight to the node are refused by pg_hba.conf; TLS ones work.
    let direct = |sslmode: &str| {
        psql_with(
            &cluster,
            &format!(
                "host={} port={} user=postgres dbname=postgres sslmode={sslmode}",
                node.host, node.port
            ),
            "postgres",
            &["SELECT 1"],
        )
    };
    let err = direct("disable").expect_err("a plain connection to the hostssl node must fail");
    assert!(
        err.contains("pg_hba.conf"),
        "refused by pg_hba.conf (no hostssl match for plain): {err}"
    );
    assert_eq!(
        direct("require").as_deref(),
        Ok("1"),
        "TLS straight to the node"
    );
    cluster
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// A pooler config on `cluster` (plain to clients) with `extra` [general] lines.
fn server_tls_config(cluster: &Cluster, port: u16, extra: &str) -> String {
    with_general(&config(cluster, port, "transaction", 2, ""), extra)
}

/// Whether the server connection the pooler gave this query uses TLS, per `pg_stat_ssl`.
const BACKEND_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A plain client through the pooler; the query runs on a TLS server connection.
fn serves_over_tls(cluster: &Cluster, pooler: &Pooler, case: &str) {
    for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
        let out = psql_with(
            cluster,
            &via_pooler(pooler, user, DB, "sslmode=disable"),
            pass,
            &[BACKEND_SSL],
        )
        .unwrap_or_else(|e| panic!("{case}: {user} through the pooler: {e}\n{}", pooler.logs()));
        assert_eq!(out, "t", "{case}: {user}'s server connection uses TLS");
    }
    runtime().block_on(async {
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            pooler.connect(SCRAM_USER, SCRAM_PASS, DB),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}: tokio-postgres login timed out"))
        .unwrap_or_else(|e| panic!("{case}: tokio-postgres login: {e}\n{}", pooler.logs()));
        let row = tokio::time::timeout(
            Duration::from_secs(30),
            client.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{case}: tokio-postgres query timed out"))
        .unwrap_or_else(|e| panic!("{case}: tokio-postgres query: {e}\n{}", pooler.logs()));
        assert!(
            row.get::<_, bool>(0),
            "{case}: extended protocol over TLS too"
        );
    });
}

/// Queries through the pooler fail with an error (psql exits non-zero, no hang) and the pooler
/// keeps running: it still accepts connections and the admin database answers.
fn queries_fail_pooler_survives(cluster: &Cluster, pooler: &Pooler, case: &str) {
    for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
        let result = psql_with(
            cluster,
            &via_pooler(pooler, user, DB, "sslmode=disable"),
            pass,
            &["SELECT 1"],
        );
        let err = match result {
            Ok(out) => panic!("{case}: {user}'s query must fail, got {out:?}"),
            Err(e) => e,
        };
        assert!(
            err.contains("ERROR") || err.contains("FATAL") || err.contains("error"),
            "{case}: {user} gets an error message: {err}"
        );
    }
    let admin = psql_with(
        cluster,
        &via_pooler(pooler, "admin", ADMIN_DB, "sslmode=disable"),
        "admin",
        &["SHOW POOLS"],
    )
    .unwrap_or_else(|e| {
        panic!(
            "{case}: the pooler must keep running: {e}\n{}",
            pooler.logs()
        )
    });
    assert!(admin.contains(DB), "{case}: SHOW POOLS: {admin}");
}

#[test]
fn server_tls_serves_queries_from_a_hostssl_only_postgres_with_and_without_verify_full() {
    let cluster = hostssl_cluster();

    let pooler = Pooler::start(&server_tls_config(
        &cluster,
        free_port(),
        "server_tls = true\n",
    ));
    serves_over_tls(&cluster, &pooler, "server_tls = true");
    drop(pooler);

    // verify-full: chain to the test CA, host 127.0.0.1 (an IP SAN of the certificate).
    let pooler = Pooler::start(&server_tls_config(
        &cluster,
        free_port(),
        &format!(
            "server_tls = true\nverify_server_certificate = true\nserver_tls_ca_file = \"{}\"\n",
            fixture("ca.pem")
        ),
    ));
    serves_over_tls(
        &cluster,
        &pooler,
        "verify_server_certificate with the test CA",
    );
}

#[test]
fn server_tls_verification_failures_and_plain_connections_fail_and_the_pooler_keeps_running() {
    let cluster = hostssl_cluster();

    let cases = [
        (
            "verify against the wrong CA",
            format!(
                "server_tls = true\nverify_server_certificate = true\nserver_tls_ca_file = \"{}\"\n",
                fixture("wrong-ca.pem")
            ),
            true,
        ),
        (
            "verify against the system roots",
            "server_tls = true\nverify_server_certificate = true\n".to_owned(),
            true,
        ),
        (
            "server_tls = false to a hostssl-only server",
            "server_tls = false\n".to_owned(),
            false,
        ),
    ];
    for (case, extra, verification) in cases {
        let pooler = Pooler::start(&server_tls_config(&cluster, free_port(), &extra));
        queries_fail_pooler_survives(&cluster, &pooler, case);
        if verification {
            let named = wait_until(Duration::from_secs(10), || {
                pooler.logs().to_ascii_lowercase().contains("certificate")
            });
            assert!(
                named,
                "{case}: the pooler log names the certificate problem:\n{}",
                pooler.logs()
            );
        }
    }
}

/// TLS on both sides under volume: a 10 MB COPY to a TLS client, a 3 MB query text from it,
/// and 400 pipelined statements each carrying 20 KB to a TLS server and 20 KB back (the
/// pooler writes to the server while it relays the replies; through rustls, records it holds
/// back must be flushed, or both sides wait for ever).
#[test]
fn tls_on_both_sides_carries_large_results_texts_and_pipelines() {
    let cluster = hostssl_cluster();
    let pooler = Pooler::start(&client_tls_config(
        &cluster,
        free_port(),
        "server_tls = true\n",
    ));
    let conninfo = via_pooler(&pooler, SCRAM_USER, DB, "sslmode=require");

    let out = psql_with(
        &cluster,
        &conninfo,
        SCRAM_PASS,
        &["COPY (SELECT g, repeat('y', 500) FROM generate_series(1, 20000) g) TO STDOUT"],
    )
    .unwrap_or_else(|e| panic!("COPY out over TLS: {e}\n{}", pooler.logs()));
    assert_eq!(out.lines().count(), 20_000, "every COPY row arrived");
    assert!(out.lines().last().is_some_and(|l| l.starts_with("20000\t")));

    let file = std::env::temp_dir().join(format!("pgcat-tls-big-query-{}.sql", std::process::id()));
    std::fs::write(
        &file,
        format!("SELECT length('{}');\n", "q".repeat(3_000_000)),
    )
    .expect("write the query file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = psql_with(
        &cluster,
        &conninfo,
        SCRAM_PASS,
        &[&format!("\\i {}", file.display())],
    );
    let _ = std::fs::remove_file(&file);
    let out = out.unwrap_or_else(|e| panic!("3 MB query over TLS: {e}\n{}", pooler.logs()));
    assert_eq!(out.trim(), "3000000");

    runtime().block_on(async {
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            pooler.connect(SCRAM_USER, SCRAM_PASS, DB),
        )
        .await
        .expect("login timed out")
        .unwrap_or_else(|e| panic!("login: {e}\n{}", pooler.logs()));
        let client = std::sync::Arc::new(client);
        let statement = client.prepare("SELECT $1::text").await.expect("prepare");
        let mut queries = tokio::task::JoinSet::new();
        for i in 0..400 {
            let (client, statement) = (client.clone(), statement.clone());
            let text = format!("{i:05}{}", "p".repeat(20_000));
            queries.spawn(async move {
                let row = client.query_one(&statement, &[&text]).await?;
                Ok::<_, tokio_postgres::Error>(row.get::<_, String>(0) == text)
            });
        }
        let all = tokio::time::timeout(Duration::from_secs(60), queries.join_all())
            .await
            .unwrap_or_else(|_| panic!("pipelined queries over TLS hung\n{}", pooler.logs()));
        let echoed = all.into_iter().filter(|r| matches!(r, Ok(true))).count();
        assert_eq!(echoed, 400, "every 20 KB value came back intact");
        let row = client.query_one(BACKEND_SSL, &[]).await.expect("ssl");
        assert!(row.get::<_, bool>(0), "the server connection is TLS");
    });
}
