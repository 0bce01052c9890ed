//! `auth_query`: pool users without a password in pgcat.toml, whose stored hash the pooler
//! fetches from PostgreSQL as `auth_query_user` (PgCat's passthrough authentication).
//!
//! A private cluster gets `auth_user`, a SECURITY DEFINER `public.pgcat_auth(name text)` over
//! pg_shadow (owned by the superuser, EXECUTE for auth_user only), the fixture roles
//! `scram_user` (stored SCRAM) and `md5_user` (stored MD5), and `o'brien` (a quote in its name).
//! - PgCat's quoted `pgcat_auth('$1')` in [general] and a bare `pgcat_auth($1)` per pool: psql,
//!   tokio-postgres and the raw client log in as scram_user (SCRAM), md5_user (MD5) and
//!   o'brien, and queries run on the server as that user;
//! - concurrent clients get several server connections (distinct backend pids), all logged in
//!   by the pooler with what it learnt from the client;
//! - wrong password, unknown user, and a user PostgreSQL does not know: 28P01;
//! - user names crafted as SQL injection (configured in pgcat.toml, without password) cannot
//!   log in with scram_user's password, although the naively substituted query *would*
//!   return scram_user's hash (checked directly against PostgreSQL first);
//! - the config holds no password for any of these users.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::raw::{AuthKind, LoginError, RawConn};
use support::{
    free_port, general_toml, private, psql_with, runtime, sqlstate, stored_md5, Cluster, Pooler,
    DB, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER,
};

const AUTH_USER: &str = "auth_user";
const AUTH_PASS: &str = "auth_pass";
const QUOTE_USER: &str = "o'brien";
const QUOTE_PASS: &str = "obrien_pass";
/// Configured in pgcat.toml, unknown to PostgreSQL.
const GHOST_USER: &str = "ghost_user";
/// Pasted into `... WHERE usename = '$1'`, this selects scram_user's row.
const INJECT_WHERE: &str = "x' OR usename = 'scram_user";
/// Pasted into `... pgcat_auth('$1')`, this selects scram_user's row.
const INJECT_UNION: &str = "x') UNION SELECT usename, passwd FROM pgcat_auth('scram_user";

/// PgCat's documented style: the parameter inside quotes.
const QUOTED_QUERY: &str = "SELECT usename, passwd FROM pgcat_auth('$1')";
/// A bare parameter.
const BARE_QUERY: &str = "SELECT usename, passwd FROM pgcat_auth($1)";
/// Filtering in the query itself (over a function returning every row of pg_shadow).
const WHERE_QUERY: &str = "SELECT usename, passwd FROM pgcat_shadow() WHERE usename = '$1'";

// ---------------------------------------------------------------------------------------------
// Cluster and config
// ---------------------------------------------------------------------------------------------

/// The private cluster of this test binary, with the auth_query roles and functions; the tests
/// only read from it. Removed when the test process exits (the harness's watchdog).
fn auth_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = private(0);
        setup(&cluster);
        cluster
    })
}

fn setup(cluster: &Cluster) {
    let node = &cluster.primary;
    cluster
        .psql(
            node,
            "postgres",
            &format!(
                "CREATE ROLE {AUTH_USER} LOGIN PASSWORD '{AUTH_PASS}';\n\
                 SET password_encryption = 'scram-sha-256';\n\
                 CREATE ROLE \"o'brien\" LOGIN PASSWORD '{QUOTE_PASS}';\n"
            ),
        )
        .unwrap_or_else(|e| panic!("auth_query roles: {e}"));
    // Created by the superuser (the harness's psql), so SECURITY DEFINER can read pg_shadow.
    cluster
        .psql(
            node,
            DB,
            &format!(
                "CREATE FUNCTION public.pgcat_auth(name text)\n\
                 RETURNS TABLE(usename name, passwd text)\n\
                 LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog\n\
                 AS $f$ SELECT s.usename, s.passwd FROM pg_catalog.pg_shadow s \
                        WHERE s.usename = $1 $f$;\n\
                 REVOKE ALL ON FUNCTION public.pgcat_auth(text) FROM PUBLIC;\n\
                 GRANT EXECUTE ON FUNCTION public.pgcat_auth(text) TO {AUTH_USER};\n\
                 CREATE FUNCTION public.pgcat_shadow()\n\
                 RETURNS TABLE(usename name, passwd text)\n\
                 LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog\n\
                 AS $f$ SELECT s.usename, s.passwd FROM pg_catalog.pg_shadow s $f$;\n\
                 REVOKE ALL ON FUNCTION public.pgcat_shadow() FROM PUBLIC;\n\
                 GRANT EXECUTE ON FUNCTION public.pgcat_shadow() TO {AUTH_USER};\n"
            ),
        )
        .unwrap_or_else(|e| panic!("auth_query functions: {e}"));

    // The premises, checked straight against PostgreSQL.
    let as_auth_user = |sql: &str| direct(cluster, AUTH_USER, AUTH_PASS, sql);
    let hash = |user: &str| {
        as_auth_user(&format!(
            "SELECT passwd FROM pgcat_auth('{}')",
            user.replace('\'', "''")
        ))
        .unwrap_or_else(|e| panic!("auth_user runs pgcat_auth for {user}: {e}"))
    };
    assert!(
        hash(SCRAM_USER).starts_with("SCRAM-SHA-256$"),
        "{SCRAM_USER} is stored as SCRAM"
    );
    assert_eq!(
        hash(MD5_USER),
        stored_md5(MD5_USER, MD5_PASS),
        "{MD5_USER} is stored as MD5"
    );
    assert!(
        hash(QUOTE_USER).starts_with("SCRAM-SHA-256$"),
        "{QUOTE_USER} is stored as SCRAM"
    );
    assert_eq!(
        hash(GHOST_USER),
        "",
        "{GHOST_USER} does not exist in PostgreSQL"
    );
    let err = as_auth_user("SELECT count(*) FROM pg_shadow")
        .expect_err("auth_user must not read pg_shadow itself");
    assert!(err.contains("permission denied"), "{err}");
    let err = direct(
        cluster,
        MD5_USER,
        MD5_PASS,
        "SELECT passwd FROM pgcat_auth('scram_user')",
    )
    .expect_err("only auth_user may run pgcat_auth");
    assert!(err.contains("permission denied"), "{err}");
}

/// psql straight to the primary (not through the pooler) as `user`, database `app`.
fn direct(cluster: &Cluster, user: &str, password: &str, sql: &str) -> Result<String, String> {
    psql_with(
        cluster,
        &format!(
            "host={} port={} user={user} dbname={DB}",
            cluster.primary.host, cluster.primary.port
        ),
        password,
        &[sql],
    )
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn auth_query_lines(query: &str) -> String {
    format!(
        "auth_query = {}\nauth_query_user = {}\nauth_query_password = {}\n",
        toml_str(query),
        toml_str(AUTH_USER),
        toml_str(AUTH_PASS)
    )
}

/// The users of every pool: none with a password; md5_user's clients use MD5.
const POOL_USERS: [(&str, &str); 6] = [
    (SCRAM_USER, "scram-sha-256"),
    (MD5_USER, "md5"),
    (QUOTE_USER, "scram-sha-256"),
    (GHOST_USER, "scram-sha-256"),
    (INJECT_WHERE, "scram-sha-256"),
    (INJECT_UNION, "scram-sha-256"),
];

/// A pgcat.toml with `auth_query*` in [general] when `general_query` is set, and the pools
/// `(name, own auth_query)`, each on database `app` of the cluster, with [`POOL_USERS`]
/// (pool_size 4, no password).
fn auth_config(
    cluster: &Cluster,
    port: u16,
    general_query: Option<&str>,
    pools: &[(&str, Option<&str>)],
) -> String {
    let mut toml = general_toml(port);
    if let Some(q) = general_query {
        toml.push_str(&auth_query_lines(q));
    }
    for (pool, query) in pools {
        toml.push_str(&format!(
            "\n[pools.{pool}]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n"
        ));
        if let Some(q) = query {
            toml.push_str(&auth_query_lines(q));
        }
        for (i, (user, auth_type)) in POOL_USERS.iter().enumerate() {
            toml.push_str(&format!(
                "\n[pools.{pool}.users.{i}]\nusername = {}\nauth_type = \"{auth_type}\"\npool_size = 4\n",
                toml_str(user)
            ));
        }
        toml.push_str(&format!(
            "\n[pools.{pool}.shards.0]\ndatabase = \"{DB}\"\nservers = {}\n",
            cluster.servers_toml()
        ));
    }
    assert_no_user_passwords(&toml);
    toml
}

/// No pool user has a `password` key and no user password appears anywhere in the config.
fn assert_no_user_passwords(toml_text: &str) {
    let doc: toml::Table = toml::from_str(toml_text).expect("test config is valid TOML");
    let pools = doc
        .get("pools")
        .and_then(|p| p.as_table())
        .expect("config has pools");
    for (pool, table) in pools {
        let users = table
            .get("users")
            .and_then(|u| u.as_table())
            .expect("pool has users");
        for (key, user) in users {
            assert!(
                user.get("password").is_none(),
                "pools.{pool}.users.{key} must have no password"
            );
        }
    }
    for secret in [SCRAM_PASS, MD5_PASS, QUOTE_PASS] {
        assert!(
            !toml_text.contains(secret),
            "the config must not contain a user password:\n{toml_text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// tokio-postgres through the pooler, the user name passed as is (no conninfo quoting).
async fn connect_as(
    pooler: &Pooler,
    user: &str,
    password: &str,
    pool: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(user)
        .password(password)
        .dbname(pool)
        .connect_timeout(Duration::from_secs(10));
    let connect = config.connect(tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .unwrap_or_else(|_| panic!("{user} on {pool}: tokio-postgres login timed out"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn current_user(client: &tokio_postgres::Client, what: &str) -> String {
    let row = tokio::time::timeout(
        Duration::from_secs(30),
        client.query_one("SELECT current_user::text", &[]),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: query timed out"))
    .unwrap_or_else(|e| panic!("{what}: query: {e}"));
    row.get(0)
}

/// libpq conninfo value quoting: `'...'` with `\` and `'` escaped.
fn conninfo_value(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The raw client: the authentication the pooler asked for, and `current_user` on the server.
fn raw_login(pooler: &Pooler, user: &str, password: &str, pool: &str) -> AuthKind {
    let mut conn = RawConn::connect(pooler.port, user, password, pool)
        .unwrap_or_else(|e| panic!("{user} on {pool}: raw login failed: {e}\n{}", pooler.logs()));
    let msgs = conn
        .simple_query("SELECT current_user::text")
        .unwrap_or_else(|e| panic!("{user} on {pool}: query: {e}"));
    let row = msgs.iter().find(|m| m.tag == b'D').map(|m| m.row());
    assert_eq!(
        row,
        Some(vec![Some(user.to_owned())]),
        "{user} on {pool}: current_user on the server: {msgs:?}"
    );
    conn.auth
}

/// The SQLSTATE of a login that must fail.
fn raw_login_error(pooler: &Pooler, user: &str, password: &str, pool: &str) -> String {
    match RawConn::connect(pooler.port, user, password, pool) {
        Ok(mut conn) => {
            let after = conn.simple_query("SELECT current_user::text");
            panic!("{user:?} / {password:?} on {pool}: login must fail, it succeeded (then: {after:?})")
        }
        Err(LoginError::Server { sqlstate, message }) => {
            assert!(!sqlstate.is_empty(), "{user:?} on {pool}: {message}");
            sqlstate
        }
        Err(e) => panic!("{user:?} on {pool}: expected an ErrorResponse, got {e}"),
    }
}

/// scram_user (SCRAM), md5_user (MD5) and o'brien (SCRAM) log in on `pool` with the raw client,
/// tokio-postgres and psql, and their queries run on the server as themselves.
fn every_client_logs_in(cluster: &Cluster, pooler: &Pooler, pool: &str) {
    let users = [
        (SCRAM_USER, SCRAM_PASS, AuthKind::Scram),
        (MD5_USER, MD5_PASS, AuthKind::Md5),
        (QUOTE_USER, QUOTE_PASS, AuthKind::Scram),
    ];
    for (user, pass, kind) in users {
        assert_eq!(
            raw_login(pooler, user, pass, pool),
            kind,
            "{user} on {pool}: the authentication the pooler asks for"
        );
    }
    runtime().block_on(async {
        for (user, pass, _) in users {
            let what = format!("tokio-postgres {user} on {pool}");
            let client = connect_as(pooler, user, pass, pool)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", pooler.logs()));
            assert_eq!(current_user(&client, &what).await, user, "{what}");
            // The extended protocol with a parameter, too.
            let row = client
                .query_one("SELECT $1::int + 1", &[&41i32])
                .await
                .unwrap_or_else(|e| panic!("{what}: extended query: {e}"));
            assert_eq!(row.get::<_, i32>(0), 42, "{what}");
        }
    });
    for (user, pass, _) in users {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} dbname={pool}",
            pooler.port,
            conninfo_value(user)
        );
        let out = psql_with(cluster, &conninfo, pass, &["SELECT current_user"])
            .unwrap_or_else(|e| panic!("psql {user} on {pool}: {e}\n{}", pooler.logs()));
        assert_eq!(out, user, "psql {user} on {pool}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// A pooler with QUOTED_QUERY as auth_query in [general] and pool DB.
fn quoted_query_pooler(cluster: &Cluster) -> Pooler {
    Pooler::start(&auth_config(
        cluster,
        free_port(),
        Some(QUOTED_QUERY),
        &[(DB, None)],
    ))
}

#[test]
fn quoted_auth_query_in_general_logs_in_scram_md5_and_quote_users_without_configured_passwords() {
    let cluster = auth_cluster();
    let pooler = quoted_query_pooler(cluster);
    // What the pooler runs on: no password for these users in its config file.
    let on_disk = std::fs::read_to_string(&pooler.config_path).expect("read config");
    assert_no_user_passwords(&on_disk);
    assert!(
        on_disk.contains(&format!("auth_query = {}", toml_str(QUOTED_QUERY))),
        "auth_query in [general]:\n{on_disk}"
    );
    every_client_logs_in(cluster, &pooler, DB);
}

#[test]
fn bare_auth_query_in_the_pool_logs_in_scram_md5_and_quote_users() {
    let cluster = auth_cluster();
    let toml = auth_config(cluster, free_port(), None, &[(DB, Some(BARE_QUERY))]);
    assert!(
        !toml
            .split("[pools.")
            .next()
            .unwrap_or_default()
            .contains("auth_query"),
        "this test sets auth_query only in the pool:\n{toml}"
    );
    let pooler = Pooler::start(&toml);
    every_client_logs_in(cluster, &pooler, DB);
}

#[test]
fn concurrent_clients_get_several_server_connections_all_logged_in_by_the_pooler() {
    let cluster = auth_cluster();
    let pooler = quoted_query_pooler(cluster);
    runtime().block_on(async {
        for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
            // 8 logins at once (8 concurrent auth_query lookups).
            let mut logins = tokio::task::JoinSet::new();
            for i in 0..8 {
                let port = pooler.port;
                logins.spawn(async move {
                    let mut config = tokio_postgres::Config::new();
                    config
                        .host("127.0.0.1")
                        .port(port)
                        .user(user)
                        .password(pass)
                        .dbname(DB)
                        .connect_timeout(Duration::from_secs(10));
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    Ok::<_, tokio_postgres::Error>((i, client))
                });
            }
            let mut clients = Vec::new();
            let joined = tokio::time::timeout(Duration::from_secs(60), async {
                while let Some(r) = logins.join_next().await {
                    clients.push(r.expect("login task"));
                }
            })
            .await;
            assert!(joined.is_ok(), "{user}: 8 concurrent logins within 60 s");
            let clients: Vec<tokio_postgres::Client> = clients
                .into_iter()
                .map(|r| {
                    r.map(|(_, c)| c)
                        .unwrap_or_else(|e| panic!("{user}: concurrent login: {e}\n{}", pooler.logs()))
                })
                .collect();

            // 4 open transactions (pool_size 4) hold 4 different server connections.
            let mut pids = Vec::new();
            for (i, client) in clients.iter().take(4).enumerate() {
                let what = format!("{user} client {i}");
                client
                    .batch_execute("BEGIN")
                    .await
                    .unwrap_or_else(|e| panic!("{what}: BEGIN: {e}"));
                let row = tokio::time::timeout(
                    Duration::from_secs(30),
                    client.query_one("SELECT pg_backend_pid(), current_user::text", &[]),
                )
                .await
                .unwrap_or_else(|_| panic!("{what}: no server connection within 30 s"))
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", pooler.logs()));
                assert_eq!(row.get::<_, String>(1), user, "{what}");
                pids.push(row.get::<_, i32>(0));
            }
            let mut distinct = pids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                4,
                "{user}: 4 open transactions run on 4 server connections: {pids:?}"
            );
            for client in clients.iter().take(4) {
                client.batch_execute("COMMIT").await.expect("COMMIT");
            }

            // All 8 clients query at once, sharing the server connections.
            let mut work = tokio::task::JoinSet::new();
            for (i, client) in clients.into_iter().enumerate() {
                work.spawn(async move {
                    for n in 0..10i64 {
                        let row = client
                            .query_one(
                                "SELECT current_user::text, count(*) FROM generate_series(1, $1::int8)",
                                &[&(n + 1)],
                            )
                            .await
                            .map_err(|e| format!("client {i}, query {n}: {e}"))?;
                        if row.get::<_, String>(0) != user || row.get::<_, i64>(1) != n + 1 {
                            return Err(format!("client {i}, query {n}: wrong row"));
                        }
                    }
                    Ok::<_, String>(())
                });
            }
            let done = tokio::time::timeout(Duration::from_secs(60), async {
                let mut failures = Vec::new();
                while let Some(r) = work.join_next().await {
                    if let Err(e) = r.expect("query task") {
                        failures.push(e);
                    }
                }
                failures
            })
            .await
            .unwrap_or_else(|_| panic!("{user}: 8 clients x 10 queries within 60 s"));
            assert!(done.is_empty(), "{user}: {done:?}\n{}", pooler.logs());
        }
    });
}

#[test]
fn wrong_password_unknown_user_and_user_unknown_to_postgres_get_28p01() {
    let cluster = auth_cluster();
    let pooler = quoted_query_pooler(cluster);
    let cases = [
        (SCRAM_USER, "not-the-password"),
        (MD5_USER, "not-the-password"),
        (QUOTE_USER, "not-the-password"),
        // A password of another user is a wrong password.
        (SCRAM_USER, MD5_PASS),
        (MD5_USER, SCRAM_PASS),
        // Not in pgcat.toml.
        ("nobody_here", "whatever"),
        // In pgcat.toml, but auth_query finds no such role.
        (GHOST_USER, "whatever"),
        (GHOST_USER, ""),
    ];
    for (user, pass) in cases {
        assert_eq!(
            raw_login_error(&pooler, user, pass, DB),
            "28P01",
            "{user:?} with password {pass:?}"
        );
    }
    runtime().block_on(async {
        for (user, pass) in [
            (SCRAM_USER, "wrong"),
            (MD5_USER, "wrong"),
            (GHOST_USER, "x"),
        ] {
            let err = match connect_as(&pooler, user, pass, DB).await {
                Ok(_) => panic!("tokio-postgres {user}/{pass}: login must fail"),
                Err(e) => e,
            };
            assert_eq!(
                sqlstate(&err).as_deref(),
                Some("28P01"),
                "tokio-postgres {user}: {err}"
            );
        }
    });
    // The failures did not spoil anything: the right passwords still work.
    assert_eq!(
        raw_login(&pooler, SCRAM_USER, SCRAM_PASS, DB),
        AuthKind::Scram
    );
    assert_eq!(raw_login(&pooler, MD5_USER, MD5_PASS, DB), AuthKind::Md5);
    assert_eq!(
        raw_login(&pooler, QUOTE_USER, QUOTE_PASS, DB),
        AuthKind::Scram
    );
}

#[test]
fn user_names_crafted_as_sql_injection_do_not_change_the_auth_query() {
    let cluster = auth_cluster();

    // The premise: pasted into the query text, each name would select scram_user's hash.
    for (query, name) in [(QUOTED_QUERY, INJECT_UNION), (WHERE_QUERY, INJECT_WHERE)] {
        let naive = query.replace("$1", name);
        let out = direct(cluster, AUTH_USER, AUTH_PASS, &naive)
            .unwrap_or_else(|e| panic!("naive substitution {naive:?} runs: {e}"));
        assert!(
            out.starts_with(&format!("{SCRAM_USER}|SCRAM-SHA-256$")),
            "naive substitution {naive:?} returns scram_user's hash, got {out:?}"
        );
    }

    // Pool `app`: PgCat's quoted query in [general]; pool `app_where`: its own query filtering
    // with `WHERE usename = '$1'`.
    let pooler = Pooler::start(&auth_config(
        cluster,
        free_port(),
        Some(QUOTED_QUERY),
        &[(DB, None), ("app_where", Some(WHERE_QUERY))],
    ));
    for pool in [DB, "app_where"] {
        // Control: the query works on this pool for real users.
        assert_eq!(
            raw_login(&pooler, SCRAM_USER, SCRAM_PASS, pool),
            AuthKind::Scram
        );
        assert_eq!(
            raw_login(&pooler, QUOTE_USER, QUOTE_PASS, pool),
            AuthKind::Scram
        );
        for name in [INJECT_WHERE, INJECT_UNION] {
            assert_eq!(
                raw_login_error(&pooler, name, SCRAM_PASS, pool),
                "28P01",
                "user {name:?} on {pool} with scram_user's password"
            );
        }
    }
    runtime().block_on(async {
        for pool in [DB, "app_where"] {
            for name in [INJECT_WHERE, INJECT_UNION] {
                let err = match connect_as(&pooler, name, SCRAM_PASS, pool).await {
                    Ok(client) => {
                        let who = client.query_one("SELECT current_user::text", &[]).await;
                        panic!("tokio-postgres {name:?} on {pool} must not log in (then: {who:?})")
                    }
                    Err(e) => e,
                };
                assert_eq!(
                    sqlstate(&err).as_deref(),
                    Some("28P01"),
                    "tokio-postgres {name:?} on {pool}: {err}"
                );
            }
        }
    });
}

/// A password changed in PostgreSQL: the pooler's cached hash is stale, the next login fetches
/// it again (at most every 2 s after a failure), then the new password works, the old one is
/// refused, and new server connections log in with what the new login proved.
#[test]
fn a_password_changed_in_postgres_works_after_the_cache_refreshes() {
    const USER: &str = "rotating_user";
    let cluster = auth_cluster();
    let set_password = |password: &str| {
        cluster
            .psql(
                &cluster.primary,
                "postgres",
                &format!(
                    "SET password_encryption = 'scram-sha-256';\n\
                     DO $$ BEGIN\n\
                       IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') THEN\n\
                         CREATE ROLE {USER} LOGIN;\n\
                       END IF;\n\
                     END $$;\n\
                     ALTER ROLE {USER} PASSWORD '{password}';\n"
                ),
            )
            .unwrap_or_else(|e| panic!("set {USER}'s password: {e}"))
    };
    set_password("old_pass");
    let port = free_port();
    let mut toml = general_toml(port);
    toml.push_str(&auth_query_lines(BARE_QUERY));
    toml.push_str(&format!(
        "\n[pools.rot]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n\n\
         [pools.rot.users.0]\nusername = \"{USER}\"\npool_size = 2\n\n\
         [pools.rot.shards.0]\ndatabase = \"{DB}\"\nservers = {}\n",
        cluster.servers_toml()
    ));
    assert!(!toml.contains("old_pass") && !toml.contains("new_pass"));
    let pooler = Pooler::start(&toml);
    assert_eq!(raw_login(&pooler, USER, "old_pass", "rot"), AuthKind::Scram);

    set_password("new_pass");
    let logged_in = support::wait_until(Duration::from_secs(15), || {
        RawConn::connect(pooler.port, USER, "new_pass", "rot").is_ok()
    });
    assert!(
        logged_in,
        "the new password never worked\n{}",
        pooler.logs()
    );
    assert_eq!(raw_login(&pooler, USER, "new_pass", "rot"), AuthKind::Scram);
    assert_eq!(raw_login_error(&pooler, USER, "old_pass", "rot"), "28P01");

    // Two transactions at once need a second server connection, opened with the new proof.
    runtime().block_on(async {
        let a = connect_as(&pooler, USER, "new_pass", "rot")
            .await
            .expect("a");
        let b = connect_as(&pooler, USER, "new_pass", "rot")
            .await
            .expect("b");
        a.batch_execute("BEGIN").await.expect("a BEGIN");
        b.batch_execute("BEGIN").await.expect("b BEGIN");
        let pa: i32 = a
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("a pid")
            .get(0);
        let pb: i32 = b
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("b pid")
            .get(0);
        assert_ne!(pa, pb, "two transactions, two server connections");
        a.batch_execute("COMMIT").await.expect("a COMMIT");
        b.batch_execute("COMMIT").await.expect("b COMMIT");
    });
}
