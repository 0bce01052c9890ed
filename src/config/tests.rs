//! Unit tests of the config module: PgCat's own sample files load unchanged, defaults, and
//! broken files rejected with file, key and reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const FILE: &str = "test.toml";

fn ok(text: &str) -> Loaded {
    match parse(text, Path::new(FILE)) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the config to load, got: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text, Path::new(FILE)) {
        Ok(loaded) => panic!("expected an error, got {:?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

/// Asserts the error names the file, the key and (a fragment of) the reason.
fn assert_err(text: &str, key: &str, reason: &str) {
    let msg = err(text);
    assert!(
        msg.starts_with(&format!("{FILE}: {key}: ")),
        "expected key '{key}' in: {msg}"
    );
    assert!(msg.contains(reason), "expected '{reason}' in: {msg}");
}

const GENERAL: &str = r#"
[general]
admin_username = "admin"
admin_password = "admin-secret"
"#;

/// A minimal valid file: [general] plus one pool built from `pool`, `user`, `shard` bodies.
fn config(pool: &str, user: &str, shard: &str) -> String {
    format!(
        "{GENERAL}\n[pools.db]\n{pool}\n[pools.db.users.0]\nusername = \"u\"\npassword = \"user-secret\"\n{user}\n[pools.db.shards.0]\ndatabase = \"d\"\n{shard}\n"
    )
}

const SERVERS: &str = r#"servers = [["127.0.0.1", 5432, "primary"]]"#;

#[test]
fn upstream_sample_loads_with_warnings() {
    let loaded = load(&repo_file("fixtures/pgcat-upstream/pgcat.toml")).unwrap();
    let w = &loaded.warnings;
    let has = |s: &str| w.iter().any(|x| x == s);
    assert!(
        has("unknown key 'pool.sharded_db.plugins' (ignored)"),
        "{w:#?}"
    );
    // Every plugin is implemented; the pool's own replace the global ones.
    assert!(
        !w.iter()
            .any(|x| x.contains("not implemented") && x.contains("plugins")),
        "{w:#?}"
    );
    let sharded = &loaded.config.pools["sharded_db"].plugins;
    assert_eq!(sharded.intercept.len(), 2);
    assert_eq!(sharded.intercept[0].rows, [["${DATABASE}", "{public}"]]);
    assert_eq!(sharded.prewarm, ["SELECT pg_prewarm('pgbench_accounts')"]);
    assert!(
        sharded.blocked_tables.is_empty(),
        "table_access is disabled there"
    );
    assert!(!w.iter().any(|x| x.contains("autoreload")), "{w:#?}");
    // statement_timeout is implemented (PostgreSQL's own, set at each server login).
    assert!(!w.iter().any(|x| x.contains("statement_timeout")), "{w:#?}");
    assert!(
        !w.iter()
            .any(|x| x.contains("prepared_statements_cache_size")),
        "{w:#?}"
    );
    // Only the typo is unknown; nothing is "not implemented" any more.
    assert_eq!(w.iter().filter(|x| x.starts_with("unknown key")).count(), 1);
    assert!(!w.iter().any(|x| x.contains("not implemented")), "{w:#?}");
    assert!(NOT_IMPLEMENTED.is_empty());

    let c = &loaded.config;
    assert_eq!(c.general.port, 6432);
    assert_eq!(c.general.admin_username, "admin_user");
    assert_eq!(c.general.worker_threads, 5);
    assert_eq!(c.general.autoreload, Some(15000));
    assert_eq!(c.pools.len(), 2);
    let sharded = &c.pools["sharded_db"];
    assert_eq!(sharded.shards.len(), 3);
    assert_eq!(sharded.shards[2].database, "shard2");
    assert_eq!(sharded.shards[0].servers[1].role, Role::Replica);
    assert_eq!(sharded.users.len(), 2);
    assert_eq!(sharded.users[1].username, "other_user");
    assert_eq!(sharded.users[1].statement_timeout, 15000);
    assert_eq!(sharded.prepared_statements_cache_size, 500);
    assert!(sharded.query_parser_read_write_splitting);
    assert_eq!(sharded.default_shard, DefaultShard::Shard(0));

    let other = sharded.user("other_user").unwrap();
    let s = other.settings(&c.general, sharded);
    assert_eq!(s.connect_timeout, Duration::from_millis(1000)); // user
    assert_eq!(s.idle_timeout, Duration::from_millis(1000)); // user
    assert_eq!(s.server_lifetime, Duration::from_millis(86_400_000)); // general
    let first = sharded.user("sharding_user").unwrap();
    let s = first.settings(&c.general, sharded);
    assert_eq!(s.connect_timeout, Duration::from_millis(3000)); // pool
    assert_eq!(s.idle_timeout, Duration::from_millis(40000)); // pool
    assert_eq!(s.pool_mode, PoolMode::Transaction);

    let simple = &c.pools["simple_db"];
    assert_eq!(simple.pool_mode, PoolMode::Session);
    assert_eq!(simple.default_role, DefaultRole::Primary);
    assert_eq!(simple.users[0].min_pool_size, 3);
}

#[test]
fn upstream_minimal_loads() {
    let loaded = load(&repo_file("fixtures/pgcat-upstream/pgcat.minimal.toml")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let pool = &loaded.config.pools["pgml"];
    assert_eq!(loaded.config.general.port, 6433);
    assert_eq!(pool.shards[0].servers[0].port, 28815);
    assert_eq!(pool.users[0].pool_size, 10);
}

#[test]
fn documented_example_loads_without_warnings() {
    let loaded = load(&repo_file("pgcat.toml")).unwrap();
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let c = &loaded.config;
    assert_eq!(c.general.host, "127.0.0.1");
    assert_eq!(c.general.port, 6432);
    let pool = &c.pools["postgres"];
    let user = pool.user("postgres").unwrap();
    assert_eq!(user.pool_size, 5);
    assert_eq!(
        pool.shards[0].servers,
        vec![ServerAddress {
            host: "127.0.0.1".into(),
            port: 5432,
            role: Role::Primary
        }]
    );
}

#[test]
fn defaults() {
    let c = ok(&config("", "pool_size = 1", SERVERS)).config;
    let g = &c.general;
    assert_eq!(g.host, "0.0.0.0");
    assert_eq!(g.port, 5432);
    assert_eq!(
        g.worker_threads,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(g.connect_timeout, 1000);
    assert_eq!(g.idle_timeout, 600_000);
    assert_eq!(g.server_lifetime, 3_600_000);
    assert_eq!(g.ban_time, 60);
    assert!(g.server_round_robin);
    assert!(!g.enable_prometheus_exporter);
    assert_eq!(g.prometheus_exporter_port, 9930);
    assert_eq!(g.admin_auth_type, AuthType::Md5);
    assert_eq!(g.autoreload, None);
    assert!(g.validate_config);
    let pool = &c.pools["db"];
    assert_eq!(pool.pool_mode, PoolMode::Transaction);
    assert_eq!(pool.default_role, DefaultRole::Any);
    assert_eq!(pool.load_balancing_mode, LoadBalancingMode::Random);
    assert_eq!(pool.sharding_function, ShardingFunction::PgBigintHash);
    assert_eq!(pool.default_shard, DefaultShard::Shard(0));
    assert_eq!(pool.prepared_statements_cache_size, 500);
    assert_eq!(pool.regex_search_limit, 1000);
    assert!(pool.cleanup_server_connections);
    assert!(!pool.query_parser_enabled);
    let user = &pool.users[0];
    assert_eq!(user.auth_type, AuthType::ScramSha256);
    assert_eq!(user.min_pool_size, 0);
    let s = user.settings(&c.general, pool);
    assert_eq!(s.connect_timeout, Duration::from_millis(1000));
    assert_eq!(s.pool_mode, PoolMode::Transaction);
}

#[test]
fn max_prepared_statements_alias() {
    let loaded = ok(&config(
        "max_prepared_statements = 42",
        "pool_size = 1",
        SERVERS,
    ));
    assert_eq!(loaded.config.pools["db"].prepared_statements_cache_size, 42);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn enum_spellings() {
    let c = ok(&config(
        "pool_mode = \"Session\"\nload_balancing_mode = \"LOC\"\ndefault_shard = \"random_healthy\"",
        "pool_size = 1\nauth_type = \"scram\"\npool_mode = \"Transaction\"",
        r#"servers = [["a", 1, "Primary"], ["b", 2, "Replica"], ["c", 3, "auto"], ["d", 4]]"#,
    ))
    .config;
    let pool = &c.pools["db"];
    assert_eq!(pool.pool_mode, PoolMode::Session);
    assert_eq!(
        pool.load_balancing_mode,
        LoadBalancingMode::LeastOutstandingConnections
    );
    assert_eq!(pool.default_shard, DefaultShard::RandomHealthy);
    assert_eq!(pool.users[0].auth_type, AuthType::ScramSha256);
    assert_eq!(pool.users[0].pool_mode, Some(PoolMode::Transaction));
    let roles: Vec<Role> = pool.shards[0].servers.iter().map(|s| s.role).collect();
    assert_eq!(
        roles,
        [Role::Primary, Role::Replica, Role::Auto, Role::Auto]
    );
}

#[test]
fn unknown_keys_everywhere_warn() {
    let text = config(
        "pool_mod = \"session\"",
        "pool_size = 1\npasword = \"x\"",
        &format!("{SERVERS}\nhost = \"x\""),
    )
    .replace("[general]", "bogus = 1\n[general]\nprot = 1");
    let w = ok(&text).warnings;
    for key in [
        "bogus",
        "general.prot",
        "pools.db.pool_mod",
        "pools.db.users.0.pasword",
        "pools.db.shards.0.host",
    ] {
        let expected = format!("unknown key '{key}' (ignored)");
        assert!(w.contains(&expected), "missing {expected} in {w:#?}");
    }
}

#[test]
fn misplaced_keys_get_a_hint() {
    let text = config("worker_threads = 2", "pool_size = 1", SERVERS).replace(
        "[general]",
        "[general]\nprepared_statements_cache_size = 10",
    );
    let w = ok(&text).warnings;
    assert!(
        w.contains(&"unknown key 'general.prepared_statements_cache_size' (ignored: it is a pool setting, set it in [pools.<name>])".to_string()),
        "{w:#?}"
    );
    assert!(
        w.contains(
            &"unknown key 'pools.db.worker_threads' (ignored: it is a [general] setting)"
                .to_string()
        ),
        "{w:#?}"
    );
}

#[test]
fn zero_pools_is_valid_with_a_warning() {
    let loaded = ok(GENERAL);
    assert!(loaded.config.pools.is_empty());
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn secrets_stay_out_of_debug() {
    let c = ok(&config(
        "",
        "pool_size = 1\nserver_password = \"srv-secret\"",
        SERVERS,
    ))
    .config;
    let debug = format!("{c:?}");
    for secret in ["admin-secret", "user-secret", "srv-secret"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(debug.contains("<redacted>"));
    let msg = err(&config("", "pool_size = 1", SERVERS).replace("\"user-secret\"", "12345"));
    assert!(!msg.contains("12345"), "{msg}");
    assert!(msg.contains("pools.db.users.0.password"), "{msg}");
}

#[test]
fn rejects_missing_pool_size() {
    assert_err(
        &config("", "", SERVERS),
        "pools.db.users.0.pool_size",
        "required",
    );
}

#[test]
fn rejects_zero_pool_size() {
    assert_err(
        &config("", "pool_size = 0", SERVERS),
        "pools.db.users.0.pool_size",
        "at least 1",
    );
}

#[test]
fn rejects_bad_pool_mode() {
    assert_err(
        &config("pool_mode = \"foo\"", "pool_size = 1", SERVERS),
        "pools.db.pool_mode",
        "'foo' is not a valid pool mode (expected \"transaction\" or \"session\")",
    );
}

#[test]
fn rejects_bad_default_role() {
    assert_err(
        &config("default_role = \"master\"", "pool_size = 1", SERVERS),
        "pools.db.default_role",
        "'master' is not a valid default role",
    );
}

#[test]
fn rejects_two_primaries() {
    assert_err(
        &config(
            "",
            "pool_size = 1",
            r#"servers = [["a", 5432, "primary"], ["b", 5432, "primary"]]"#,
        ),
        "pools.db.shards.0.servers[1]",
        "at most one primary",
    );
}

#[test]
fn rejects_duplicate_server() {
    assert_err(
        &config(
            "",
            "pool_size = 1",
            r#"servers = [["a", 5432, "primary"], ["a", 5432, "replica"]]"#,
        ),
        "pools.db.shards.0.servers[1]",
        "a:5432 is listed twice",
    );
}

#[test]
fn rejects_empty_servers_and_bad_entries() {
    assert_err(
        &config("", "pool_size = 1", "servers = []"),
        "pools.db.shards.0.servers",
        "at least one server",
    );
    assert_err(
        &config(
            "",
            "pool_size = 1",
            r#"servers = [["a", 70000, "primary"]]"#,
        ),
        "pools.db.shards.0.servers[0]",
        "between 1 and 65535",
    );
    assert_err(
        &config("", "pool_size = 1", r#"servers = [["a", 1, "leader"]]"#),
        "pools.db.shards.0.servers[0]",
        "'leader' is not a valid server role",
    );
}

#[test]
fn mirrors_are_checked_like_servers() {
    let two = r#"servers = [["a", 5432, "primary"], ["b", 5432, "replica"]]"#;
    let loaded = ok(&config(
        "",
        "pool_size = 1",
        &format!("{two}\nmirrors = [[\"m\", 6432, 1], [\"n\", 7432, 0]]"),
    ));
    let shard = &loaded.config.pools["db"].shards[0];
    assert_eq!(shard.mirrors.len(), 2);
    assert_eq!(
        (shard.mirrors[0].host.as_str(), shard.mirrors[0].port),
        ("m", 6432)
    );
    assert_eq!(shard.mirrors[0].server_index, 1);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    for (mirrors, key, reason) in [
        (
            "[[\"m\", 6432, 2]]",
            "[0]",
            "server_index must be the index of one of the shard's 2 servers (0 to 1)",
        ),
        ("[[\"m\", 6432, -1]]", "[0]", "server_index must be"),
        (
            "[[\"m\", 6432]]",
            "[0]",
            "expected [\"host\", port, server_index]",
        ),
        (
            "[[\"m\", 6432, 0], [\"\", 1, 0]]",
            "[1]",
            "the host must be a non-empty string",
        ),
        ("[[\"m\", 0, 0]]", "[0]", "between 1 and 65535"),
        (
            "[[\"b\", 5432, 0]]",
            "[0]",
            "b:5432 is one of the shard's servers",
        ),
    ] {
        assert_err(
            &config("", "pool_size = 1", &format!("{two}\nmirrors = {mirrors}")),
            &format!("pools.db.shards.0.mirrors{key}"),
            reason,
        );
    }
}

#[test]
fn peers_pidfile_and_so_reuseport() {
    let with = |general: &str, tail: &str| {
        config("", "pool_size = 1", SERVERS).replacen(
            "admin_password = \"admin-secret\"\n",
            &format!("admin_password = \"admin-secret\"\n{general}\n"),
            1,
        ) + tail
    };
    let loaded = ok(&with(
        "peer_id = 2\nso_reuseport = true\npidfile = \"/run/p.pid\"",
        "\n[peers.1]\nhost = \"a\"\n[peers.2]\nhost = \"/tmp/b\"\nport = 7000\n",
    ));
    let g = &loaded.config.general;
    assert_eq!((g.peer_id, g.so_reuseport), (Some(2), true));
    assert_eq!(g.pidfile.as_deref(), Some(Path::new("/run/p.pid")));
    assert_eq!(
        g.peers[&1],
        Peer {
            host: "a".into(),
            port: 6432
        }
    );
    assert_eq!(g.peers[&2].port, 7000);
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let d = &ok(&config("", "pool_size = 1", SERVERS)).config.general;
    assert_eq!((d.peer_id, d.so_reuseport, d.peers.len()), (None, false, 0));
    assert_err(
        &with("peer_id = 0", ""),
        "general.peer_id",
        "between 1 and 2047",
    );
    assert_err(
        &with("peer_id = 2048", ""),
        "general.peer_id",
        "between 1 and 2047",
    );
    assert_err(
        &with("", "\n[peers.x]\nhost = \"a\"\n"),
        "peers.x",
        "peer ids",
    );
    assert_err(
        &with("", "\n[peers.3]\nport = 1\n"),
        "peers.3.host",
        "required",
    );
}

#[test]
fn rejects_shard_key_gap() {
    let text = format!(
        "{}\n[pools.db.shards.2]\ndatabase = \"d2\"\n{SERVERS}\n",
        config("", "pool_size = 1", SERVERS)
    );
    assert_err(&text, "pools.db.shards.2", "shard 1 is missing");
}

#[test]
fn rejects_non_integer_shard_key() {
    let text = config("", "pool_size = 1", SERVERS).replace("shards.0", "shards.first");
    assert_err(&text, "pools.db.shards.first", "must be integers");
}

#[test]
fn rejects_default_shard_out_of_range() {
    assert_err(
        &config("default_shard = \"shard_1\"", "pool_size = 1", SERVERS),
        "pools.db.default_shard",
        "out of range",
    );
    assert_err(
        &config("default_shard = \"shard_x\"", "pool_size = 1", SERVERS),
        "pools.db.default_shard",
        "not a valid default shard",
    );
}

#[test]
fn default_shard_all_and_error_decide_per_statement() {
    for (value, want) in [("all", DefaultShard::All), ("error", DefaultShard::Error)] {
        let text = config(
            &format!("default_shard = \"{value}\"\nquery_parser_enabled = true"),
            "pool_size = 1",
            SERVERS,
        );
        assert_eq!(ok(&text).config.pools["db"].default_shard, want);
    }
    // "all" reads each statement: the parser is needed.
    assert_err(
        &config("default_shard = \"all\"", "pool_size = 1", SERVERS),
        "pools.db.default_shard",
        "requires pools.db.query_parser_enabled = true",
    );
    // A session-mode client keeps one server, so nothing can be decided per statement.
    for (pool, user) in [
        ("pool_mode = \"session\"", "pool_size = 1"),
        ("", "pool_size = 1\npool_mode = \"session\""),
    ] {
        let text = config(
            &format!("default_shard = \"error\"\nquery_parser_enabled = true\n{pool}"),
            user,
            SERVERS,
        );
        assert_err(
            &text,
            "pools.db.default_shard",
            "needs pool_mode = \"transaction\"",
        );
    }
}

#[test]
fn rejects_bad_regex() {
    assert_err(
        &config(
            "sharding_key_regex = '/\\* key: (\\d+ \\*/'",
            "pool_size = 1",
            SERVERS,
        ),
        "pools.db.sharding_key_regex",
        "is not a valid regular expression: unclosed group",
    );
}

#[test]
fn rejects_min_pool_size_above_pool_size() {
    assert_err(
        &config("", "pool_size = 2\nmin_pool_size = 3", SERVERS),
        "pools.db.users.0.min_pool_size",
        "larger than pool_size (2)",
    );
}

#[test]
fn rejects_wrong_type_for_port() {
    let text = format!("{GENERAL}port = \"6432\"\n");
    let msg = err(&text);
    assert!(msg.starts_with("test.toml: general.port: "), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn rejects_port_zero_and_out_of_range() {
    assert_err(
        &format!("{GENERAL}port = 0\n"),
        "general.port",
        "between 1 and 65535",
    );
    assert_err(&format!("{GENERAL}port = 70000\n"), "general.port", "u16");
}

#[test]
fn rejects_rules_between_keys() {
    assert_err(
        &config(
            "query_parser_read_write_splitting = true",
            "pool_size = 1",
            SERVERS,
        ),
        "pools.db.query_parser_read_write_splitting",
        "requires query_parser_enabled",
    );
    assert_err(
        &config("automatic_sharding_key = \"id\"", "pool_size = 1", SERVERS),
        "pools.db.automatic_sharding_key",
        "exactly one dot",
    );
    assert_err(
        &config("db_activity_ttl = 0", "pool_size = 1", SERVERS),
        "pools.db.db_activity_ttl",
        "greater than 0",
    );
    assert_err(
        &format!("{GENERAL}tls_certificate = \"c.pem\"\n"),
        "general.tls_private_key",
        "required",
    );
    assert_err(
        &format!("{GENERAL}worker_threads = 0\n"),
        "general.worker_threads",
        "at least 1",
    );
    assert_err(
        &format!("{GENERAL}auth_query = \"SELECT passwd FROM f($1)\"\n"),
        "general.auth_query_user",
        "required",
    );
    assert_err(
        &format!("{GENERAL}auth_query = \"SELECT 1\"\nauth_query_user = \"q\"\nauth_query_password = \"qp\"\n"),
        "general.auth_query",
        "$1",
    );
    assert_err(
        &format!("{GENERAL}tls_client_required = true\n"),
        "general.tls_client_required",
        "tls_certificate",
    );
    assert_err(
        &format!("{GENERAL}tls_certificate = \"/nonexistent/c.pem\"\ntls_private_key = \"/nonexistent/k.pem\"\n"),
        "general.tls_certificate",
        "/nonexistent/c.pem",
    );
}

#[test]
fn password_rules() {
    let no_password =
        config("", "pool_size = 1", SERVERS).replace("password = \"user-secret\"\n", "");
    assert_err(&no_password, "pools.db.users.0.password", "is required");
    ok(&no_password.replace("pool_size = 1", "pool_size = 1\nauth_type = \"trust\""));
    let with_query = no_password.replace(
        "[pools.db]\n",
        "[pools.db]\nauth_query = \"SELECT usename, passwd FROM pg_shadow WHERE usename='$1'\"\nauth_query_user = \"q\"\nauth_query_password = \"qp\"\n",
    );
    let c = ok(&with_query).config;
    assert_eq!(c.pools["db"].auth_query_user.as_deref(), Some("q"));
}

#[test]
fn auth_query_is_inherited_from_general() {
    let text = config("", "pool_size = 1", SERVERS).replace(
        "admin_password = \"admin-secret\"\n",
        "admin_password = \"admin-secret\"\nauth_query = \"SELECT passwd FROM f($1)\"\nauth_query_user = \"q\"\nauth_query_password = \"qp\"\n",
    );
    let pool = &ok(&text).config.pools["db"];
    assert_eq!(pool.auth_query.as_deref(), Some("SELECT passwd FROM f($1)"));
    assert_eq!(pool.auth_query_password.as_deref(), Some("qp"));
}

#[test]
fn rejects_duplicate_usernames() {
    let text = format!(
        "{}\n[pools.db.users.1]\nusername = \"u\"\npassword = \"p\"\npool_size = 1\n",
        config("", "pool_size = 1", SERVERS)
    );
    assert_err(&text, "pools.db.users.1.username", "defined twice");
}

#[test]
fn users_in_numeric_key_order() {
    let mut text = config("", "pool_size = 1", SERVERS);
    for i in [10, 2] {
        text.push_str(&format!(
            "\n[pools.db.users.{i}]\nusername = \"u{i}\"\npassword = \"p\"\npool_size = 1\n"
        ));
    }
    let names: Vec<String> = ok(&text).config.pools["db"]
        .users
        .iter()
        .map(|u| u.username.clone())
        .collect();
    assert_eq!(names, ["u", "u2", "u10"]);
}

#[test]
fn syntax_errors_keep_line_and_column() {
    let msg = err("[general]\nport = = 1\n");
    assert!(msg.starts_with("test.toml: "), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn missing_file_is_named() {
    let e = load(Path::new("/nonexistent/pgcat.toml")).unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent/pgcat.toml: "),
        "{e}"
    );
}

#[test]
fn two_phase_commit_keys_default_and_validate() {
    let loaded = parse(
        &config("two_phase_commit = true", "pool_size = 1", SERVERS),
        Path::new("/etc/pgcat/pgcat.toml"),
    )
    .unwrap();
    let c = &loaded.config;
    assert!(c.pools["db"].two_phase_commit);
    // Beside the config file, named after the listen address.
    assert_eq!(
        c.general.two_phase_commit_log,
        Path::new("/etc/pgcat/pgcat-2pc.log")
    );
    assert_eq!(c.general.instance_name, "0_0_0_0_5432");
    let bad = config("", "pool_size = 1", SERVERS)
        .replace("[general]\n", "[general]\ninstance_name = \"a-b\"\n");
    assert_err(&bad, "general.instance_name", "letters, digits or '_'");
}
