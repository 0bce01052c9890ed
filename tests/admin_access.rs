//! Issue 5, "Must show" 6: nobody but the admin user gets into the admin databases (any
//! admin_auth_type), and no SHOW output contains a password.

mod support;

use support::admin::{
    app_client, app_config, assert_columns, conninfo, exec, pg_err, psql_admin, psql_table, run_ok,
    show, ADMIN_DBS, ADMIN_PASS, ADMIN_USER, CONFIG,
};
use support::raw::{AuthKind, LoginError, RawConn};
use support::{
    connect, free_port, shared, stored_md5, with_general, Pooler, DB, MD5_PASS, MD5_USER,
    SCRAM_PASS, SCRAM_USER,
};

fn admin_login_error(port: u16, user: &str, password: &str, db: &str) -> String {
    match RawConn::connect(port, user, password, db) {
        Ok(_) => panic!("{user}/{password} must not get into {db}"),
        Err(LoginError::Server { sqlstate, message }) => {
            assert_eq!(sqlstate, "28P01", "{user}/{password} on {db}: {message}");
            message
        }
        Err(e) => panic!("{user}/{password} on {db}: expected an ErrorResponse 28P01, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admin_users_and_wrong_passwords_cannot_reach_the_admin_databases() {
    let cluster = shared();
    let pooler = Pooler::start(&app_config(cluster, free_port(), 2));
    let port = pooler.port;
    for db in ADMIN_DBS {
        // Pool users with their own (correct) passwords, the admin password, wrong passwords.
        for (user, pass) in [
            (SCRAM_USER, SCRAM_PASS),
            (MD5_USER, MD5_PASS),
            (SCRAM_USER, ADMIN_PASS),
            (ADMIN_USER, "not-the-admin-password"),
            ("postgres", "postgres"),
        ] {
            let db2 = db.to_owned();
            tokio::task::spawn_blocking(move || admin_login_error(port, user, pass, &db2))
                .await
                .expect("task");
            let e = connect(&conninfo(port, user, pass, db))
                .await
                .err()
                .unwrap_or_else(|| panic!("tokio-postgres {user}/{pass} got into {db}"));
            assert_eq!(
                support::sqlstate(&e).as_deref(),
                Some("28P01"),
                "tokio-postgres {user} on {db}: {}",
                pg_err(&e)
            );
        }
        let t = psql_table(cluster, port, SCRAM_USER, SCRAM_PASS, db, "SHOW POOLS");
        assert!(t.is_err(), "psql as scram_user got into {db}: {t:?}");
        // And the admin does get in.
        let t = psql_admin(cluster, port, db, "SHOW VERSION")
            .unwrap_or_else(|e| panic!("psql admin on {db}: {e}"));
        assert_eq!(t.rows.len(), 1);
    }
    // The admin credentials are not a pool login.
    let e = connect(&conninfo(port, ADMIN_USER, ADMIN_PASS, DB))
        .await
        .err();
    assert!(e.is_some(), "admin/admin must not be a user of pool {DB}");
}

#[test]
fn admin_auth_type_md5_scram_and_trust() {
    let cluster = shared();
    for (auth_type, expected) in [
        (None, AuthKind::Md5),
        (Some("md5"), AuthKind::Md5),
        (Some("scram-sha-256"), AuthKind::Scram),
        (Some("trust"), AuthKind::Trust),
    ] {
        let base = app_config(cluster, free_port(), 2);
        let toml = match auth_type {
            Some(t) => with_general(&base, &format!("admin_auth_type = \"{t}\"")),
            None => base,
        };
        let pooler = Pooler::start(&toml);
        for db in ADMIN_DBS {
            let what = format!("admin_auth_type {auth_type:?} on {db}");
            let mut a = RawConn::connect(pooler.port, ADMIN_USER, ADMIN_PASS, db)
                .unwrap_or_else(|e| panic!("{what}: admin login: {e}"));
            assert_eq!(a.auth, expected, "{what}: method asked");
            let r = run_ok(&mut a, "SHOW VERSION");
            assert_eq!(r.table.rows.len(), 1, "{what}");
            if expected == AuthKind::Trust {
                RawConn::connect(pooler.port, ADMIN_USER, "anything", db)
                    .unwrap_or_else(|e| panic!("{what}: trust needs no password: {e}"));
            } else {
                admin_login_error(pooler.port, ADMIN_USER, "wrong", db);
            }
            // Nobody else gets in, whatever the method.
            admin_login_error(pooler.port, SCRAM_USER, SCRAM_PASS, db);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_output_contains_a_password() {
    let cluster = shared();
    let admin_secret = "Adm1n-S3cret-xyzzy";
    let toml = app_config(cluster, free_port(), 2);
    assert!(toml.contains("admin_password = \"admin\"\n"));
    let toml = toml.replace(
        "admin_password = \"admin\"\n",
        &format!("admin_password = \"{admin_secret}\"\n"),
    );
    let pooler = Pooler::start(&toml);
    let c = app_client(pooler.port, SCRAM_USER, SCRAM_PASS, "secrets").await;
    exec(&c, "BEGIN").await;
    exec(&c, "SELECT 1").await;
    let secrets = [
        admin_secret.to_owned(),
        SCRAM_PASS.to_owned(),
        MD5_PASS.to_owned(),
        stored_md5(SCRAM_USER, SCRAM_PASS),
        stored_md5(MD5_USER, MD5_PASS),
        stored_md5(ADMIN_USER, admin_secret),
    ];
    for db in ADMIN_DBS {
        let a = connect(&conninfo(pooler.port, ADMIN_USER, admin_secret, db))
            .await
            .unwrap_or_else(|e| panic!("admin login to {db}: {}", pg_err(&e)));
        let t = show(&a, "SHOW CONFIG").await;
        assert_columns(&format!("{db} SHOW CONFIG"), &t, CONFIG);
        assert!(
            t.rows.len() >= 5,
            "{db} SHOW CONFIG shows the settings:\n{}",
            t.dump()
        );
        for cmd in [
            "SHOW CONFIG",
            "SHOW DATABASES",
            "SHOW USERS",
            "SHOW POOLS",
            "SHOW CLIENTS",
            "SHOW SERVERS",
            "SHOW STATS",
            "SHOW LISTS",
        ] {
            let t = show(&a, cmd).await;
            for cell in t.all_cells() {
                for s in &secrets {
                    assert!(
                        !cell.contains(s.as_str()),
                        "{db} {cmd} shows a password ({s}):\n{}",
                        t.dump()
                    );
                }
            }
        }
    }
    exec(&c, "COMMIT").await;
}
