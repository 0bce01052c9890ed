//! Client authentication to the pooler: SCRAM and MD5 clients in front of servers that store
//! SCRAM and MD5 passwords (all four combinations), trust, the SQLSTATEs of failed logins, and
//! no password in the log even at debug level.

mod support;

use support::raw::{self, AuthKind, LoginError, RawConn};
use support::{
    free_port, general_toml, shared, stored_md5, Cluster, Pooler, DB, MD5_PASS, MD5_USER,
    SCRAM_PASS, SCRAM_USER,
};

/// Pools `app` (clients use SCRAM), `app_md5` (clients use MD5) and `app_trust` (no client
/// password), each with both fixture users, all on database `app`.
fn auth_config(cluster: &Cluster, port: u16) -> String {
    let mut toml = general_toml(port);
    for (pool, auth_type) in [
        ("app", "scram-sha-256"),
        ("app_md5", "md5"),
        ("app_trust", "trust"),
    ] {
        toml.push_str(&format!(
            "\n[pools.{pool}]\npool_mode = \"transaction\"\ndefault_role = \"primary\"\n"
        ));
        for (i, (user, pass)) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)]
            .iter()
            .enumerate()
        {
            toml.push_str(&format!(
                "\n[pools.{pool}.users.{i}]\nusername = \"{user}\"\npassword = \"{pass}\"\nauth_type = \"{auth_type}\"\npool_size = 2\n"
            ));
        }
        toml.push_str(&format!(
            "\n[pools.{pool}.shards.0]\ndatabase = \"{DB}\"\nservers = {}\n",
            cluster.servers_toml()
        ));
    }
    toml
}

/// Logs in with the raw client, checks the method the pooler asked for, and that queries run
/// on the server as that user.
fn login_works(pooler: &Pooler, user: &str, password: &str, pool: &str, expected: AuthKind) {
    let mut conn = RawConn::connect(pooler.port, user, password, pool)
        .unwrap_or_else(|e| panic!("{user} on {pool}: login failed: {e}\n{}", pooler.logs()));
    assert_eq!(
        conn.auth, expected,
        "{user} on {pool}: authentication method the pooler asked for"
    );
    let r = conn
        .simple_query("SELECT current_user || '@' || current_database()")
        .expect("query");
    let row = r.iter().find(|m| m.tag == b'D').map(|m| m.row());
    assert_eq!(
        row,
        Some(vec![Some(format!("{user}@{DB}"))]),
        "{user} on {pool}: {r:?}"
    );
}

#[test]
fn scram_client_login_works_for_scram_and_md5_stored_server_passwords() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    login_works(&pooler, SCRAM_USER, SCRAM_PASS, "app", AuthKind::Scram);
    login_works(&pooler, MD5_USER, MD5_PASS, "app", AuthKind::Scram);
}

#[test]
fn md5_client_login_works_for_scram_and_md5_stored_server_passwords() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    login_works(&pooler, SCRAM_USER, SCRAM_PASS, "app_md5", AuthKind::Md5);
    login_works(&pooler, MD5_USER, MD5_PASS, "app_md5", AuthKind::Md5);
}

#[test]
fn trust_client_login_needs_no_password_and_server_login_uses_the_configured_one() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    login_works(&pooler, SCRAM_USER, "", "app_trust", AuthKind::Trust);
    login_works(&pooler, MD5_USER, "", "app_trust", AuthKind::Trust);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_logs_in_with_every_client_and_server_password_combination() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    for pool in ["app", "app_md5"] {
        for (user, pass) in [(SCRAM_USER, SCRAM_PASS), (MD5_USER, MD5_PASS)] {
            let client = pooler
                .connect(user, pass, pool)
                .await
                .unwrap_or_else(|e| panic!("{user} on {pool}: {e}\n{}", pooler.logs()));
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .expect("query");
            assert_eq!(row.get::<_, String>(0), user, "{user} on {pool}");
        }
    }
}

fn login_error(pooler: &Pooler, user: &str, password: &str, pool: &str) -> (String, String) {
    match RawConn::connect(pooler.port, user, password, pool) {
        Ok(_) => panic!("{user}/{password} on {pool}: login must fail"),
        Err(LoginError::Server { sqlstate, message }) => (sqlstate, message),
        Err(e) => panic!("{user} on {pool}: expected an ErrorResponse, got {e}"),
    }
}

#[test]
fn wrong_password_is_rejected_with_28p01() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    for pool in ["app", "app_md5"] {
        for user in [SCRAM_USER, MD5_USER] {
            let (code, message) = login_error(&pooler, user, "not-the-password", pool);
            assert_eq!(code, "28P01", "{user} on {pool}: {message}");
        }
    }
}

#[test]
fn unknown_user_is_rejected_with_28p01() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    for pool in ["app", "app_md5"] {
        let (code, message) = login_error(&pooler, "nobody_here", "whatever", pool);
        assert_eq!(code, "28P01", "unknown user on {pool}: {message}");
    }
}

#[test]
fn unknown_database_is_rejected_with_3d000() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    let (code, message) = login_error(&pooler, SCRAM_USER, SCRAM_PASS, "no_such_pool");
    assert_eq!(code, "3D000", "unknown database: {message}");
}

/// A raw connection that has sent `bytes` in one write and not logged in.
fn sent_at_once(pooler: &Pooler, bytes: &[u8]) -> RawConn {
    let stream = std::net::TcpStream::connect(("127.0.0.1", pooler.port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut conn = RawConn {
        stream,
        key: None,
        auth: AuthKind::Trust,
        params: Vec::new(),
    };
    conn.send(bytes).expect("send");
    conn
}

/// The startup packet is read together with whatever follows it: a trust client's first
/// query sent in the same write is served after the login, not dropped.
#[test]
fn a_query_sent_with_the_startup_packet_is_served() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    let mut bytes = raw::startup(MD5_USER, "app_trust");
    bytes.extend(raw::query("SELECT 41 + 1"));
    let mut conn = sent_at_once(&pooler, &bytes);
    let login = conn.read_until_ready().expect("login");
    assert_eq!(login.first().map(|m| m.tag), Some(b'R'), "{login:?}");
    let reply = conn.read_until_ready().expect("the query's reply");
    let row = reply.iter().find(|m| m.tag == b'D').map(|m| m.row());
    assert_eq!(row, Some(vec![Some("42".to_string())]), "{reply:?}");
}

/// Bytes sent after an SSLRequest, before its answer, were not encrypted: they are refused
/// (08P01), never taken as part of the session.
#[test]
fn data_sent_after_an_ssl_request_before_its_answer_is_refused() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    let mut bytes = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    bytes.extend(raw::startup(MD5_USER, "app_trust"));
    let mut conn = sent_at_once(&pooler, &bytes);
    let reply = conn.read_msg().expect("an error");
    assert_eq!(reply.tag, b'E', "{reply:?}");
    assert_eq!(reply.sqlstate().as_deref(), Some("08P01"), "{reply:?}");
    assert!(
        reply
            .field(b'M')
            .is_some_and(|m| m.contains("unencrypted data after SSL request")),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_sees_the_login_failure_sqlstates() {
    let cluster = shared();
    let pooler = Pooler::start(&auth_config(cluster, free_port()));
    let cases = [
        (SCRAM_USER, "wrong", "app", "28P01"),
        (MD5_USER, "wrong", "app_md5", "28P01"),
        ("nobody_here", "x", "app", "28P01"),
        (SCRAM_USER, SCRAM_PASS, "no_such_pool", "3D000"),
    ];
    for (user, pass, pool, want) in cases {
        let err = match pooler.connect(user, pass, pool).await {
            Ok(_) => panic!("{user} on {pool} must fail"),
            Err(e) => e,
        };
        assert_eq!(
            support::sqlstate(&err).as_deref(),
            Some(want),
            "{user} on {pool}: {err}"
        );
    }
}

#[test]
fn passwords_never_appear_in_the_debug_log() {
    let cluster = shared();
    let wrong = "Wr0ng-Secret-4711";
    let pooler = Pooler::start_with_args(&auth_config(cluster, free_port()), &["-l", "debug"]);
    for pool in ["app", "app_md5"] {
        login_works(
            &pooler,
            SCRAM_USER,
            SCRAM_PASS,
            pool,
            if pool == "app" {
                AuthKind::Scram
            } else {
                AuthKind::Md5
            },
        );
        login_works(
            &pooler,
            MD5_USER,
            MD5_PASS,
            pool,
            if pool == "app" {
                AuthKind::Scram
            } else {
                AuthKind::Md5
            },
        );
        let _ = login_error(&pooler, SCRAM_USER, wrong, pool);
        let _ = login_error(&pooler, MD5_USER, wrong, pool);
    }
    login_works(&pooler, SCRAM_USER, "", "app_trust", AuthKind::Trust);
    // The premise: debug logging is on. A CancelRequest with a made-up key is logged at debug.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", pooler.port)).expect("connect");
    std::io::Write::write_all(&mut s, &support::raw::cancel_request(12345, 67890))
        .expect("send cancel");
    drop(s);
    let debug_on = support::wait_until(std::time::Duration::from_secs(5), || {
        pooler.logs().contains("DEBUG")
    });
    let log = pooler.logs();
    assert!(
        debug_on,
        "the pooler logs at debug level with -l debug:\n{log}"
    );
    let secrets = [
        SCRAM_PASS.to_owned(),
        MD5_PASS.to_owned(),
        wrong.to_owned(),
        // What an MD5 server stores is as good as the password for MD5 logins.
        stored_md5(MD5_USER, MD5_PASS)[3..].to_owned(),
        stored_md5(SCRAM_USER, SCRAM_PASS)[3..].to_owned(),
    ];
    for secret in &secrets {
        let line = log.lines().find(|l| l.contains(secret.as_str()));
        assert!(line.is_none(), "a secret appears in the log: {line:?}");
    }
}
