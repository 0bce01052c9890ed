//! Tests of `route.rs`: PgCat's query-router tests replayed through the whole pipeline
//! (command → session, classify, comment hints, keys → route), precedence, and the hash
//! vectors of PgCat's sharding tests.

use super::*;
use crate::classify::{classify, classify_parsed};
use crate::command::parse_command;
use crate::comment::CommentHints;
use crate::hash::pg_bigint_hash;
use crate::parsed::Parsed;
use crate::shard_key::{find_keys_parsed, resolve_keys};

fn splitting_pool() -> PoolRouting {
    PoolRouting {
        query_parser_enabled: true,
        read_write_splitting: true,
        ..PoolRouting::default()
    }
}

fn run(session: &mut SessionRouting, pool: &PoolRouting, sql: &str) {
    let command = parse_command(sql).expect("an extension").expect("valid");
    session.apply(&command, pool, 0);
}

fn role(sql: &str, session: &SessionRouting, pool: &PoolRouting) -> Option<Role> {
    route(&classify(sql, pool.max_length), &[], None, session, pool).role
}

/// The full pipeline for one query, as the pooler runs it.
fn full(sql: &str, session: &SessionRouting, pool: &PoolRouting, hints: &CommentHints) -> Route {
    let parsed = Parsed::parse_within(sql, pool.max_length);
    let c = classify_parsed(sql, parsed.as_ref());
    let keys = match (&parsed, &pool.automatic_key) {
        (Some(p), Some(key)) => {
            resolve_keys(&find_keys_parsed(p, key), |_| None).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    route(&c, &keys, hints.find(sql), session, pool)
}

#[test]
fn defaults() {
    let pool = PoolRouting::default();
    let r = route(
        &classify("SELECT 1", None),
        &[],
        None,
        &SessionRouting::default(),
        &pool,
    );
    assert_eq!(
        r,
        Route {
            shard: None,
            role: None
        }
    );
}

/// PgCat's `test_infer_replica`.
#[test]
fn infer_replica() {
    let pool = PoolRouting {
        read_write_splitting: true,
        ..PoolRouting::default()
    };
    let mut s = SessionRouting::default();
    run(&mut s, &pool, "SET SERVER ROLE TO 'auto'");
    assert!(s.parser_enabled(&pool));
    run(&mut s, &pool, "SET PRIMARY READS TO off");
    for sql in [
        "SELECT * FROM items WHERE id = 5",
        "SELECT id, name, value FROM items INNER JOIN prices ON item.id = prices.item_id",
        "WITH t AS (SELECT * FROM items) SELECT * FROM t",
        "WITH t AS (SELECT * FROM items WHERE name = $1) SELECT * FROM t WHERE id = $2",
    ] {
        assert_eq!(role(sql, &s, &pool), Some(Role::Replica), "{sql}");
    }
}

/// PgCat's `test_infer_primary` and `test_select_for_update`.
#[test]
fn infer_primary() {
    let pool = splitting_pool();
    let s = SessionRouting::default();
    for sql in [
        "UPDATE items SET name = 'pumpkin' WHERE id = 5",
        "INSERT INTO items (id, name) VALUES (5, 'pumpkin')",
        "DELETE FROM items WHERE id = 5",
        "BEGIN",
        "SELECT * FROM items WHERE id = 5 FOR UPDATE",
        "WITH t AS (SELECT id FROM users) UPDATE user_languages SET settings = '{}' FROM t WHERE t.id = user_id;",
    ] {
        assert_eq!(role(sql, &s, &pool), Some(Role::Primary), "{sql}");
    }
    assert_eq!(
        role("SELECT * FROM items WHERE id = 5", &s, &pool),
        Some(Role::Replica)
    );
}

/// PgCat's `test_infer_primary_reads_enabled`.
#[test]
fn primary_reads() {
    let pool = splitting_pool();
    let mut s = SessionRouting::default();
    run(&mut s, &pool, "SET PRIMARY READS TO on");
    assert_eq!(role("SELECT * FROM items WHERE id = 5", &s, &pool), None);
    assert_eq!(role("DELETE FROM items", &s, &pool), Some(Role::Primary));
    run(&mut s, &pool, "SET PRIMARY READS TO default");
    assert_eq!(role("SELECT 1", &s, &pool), Some(Role::Replica));
    let pool = PoolRouting {
        primary_reads_enabled: true,
        ..splitting_pool()
    };
    assert_eq!(role("SELECT 1", &s, &pool), None);
    run(&mut s, &pool, "SET PRIMARY READS TO 'OFF'");
    assert_eq!(role("SELECT 1", &s, &pool), Some(Role::Replica));
}

/// PgCat's `test_parse_multiple_queries`.
#[test]
fn multiple_queries() {
    let pool = splitting_pool();
    let s = SessionRouting::default();
    assert_eq!(
        role("BEGIN; SELECT 1; COMMIT;", &s, &pool),
        Some(Role::Primary)
    );
    assert_eq!(role("SELECT 1; SELECT 2;", &s, &pool), Some(Role::Replica));
    assert_eq!(
        role("SELECT 123; INSERT INTO t VALUES (5); SELECT 1;", &s, &pool),
        Some(Role::Primary)
    );
}

#[test]
fn transactions_and_unparsed() {
    let pool = splitting_pool();
    let s = SessionRouting::default();
    assert_eq!(role("BEGIN READ ONLY", &s, &pool), Some(Role::Replica));
    assert_eq!(
        role("START TRANSACTION READ ONLY", &s, &pool),
        Some(Role::Replica)
    );
    assert_eq!(role("BEGIN", &s, &pool), Some(Role::Primary));
    assert_eq!(role("SELEC 1", &s, &pool), Some(Role::Primary));
    assert_eq!(role("DO $$ BEGIN END $$", &s, &pool), Some(Role::Primary));
    let short = PoolRouting {
        max_length: Some(10),
        ..splitting_pool()
    };
    assert_eq!(role("SELECT 1 FROM t", &s, &short), Some(Role::Primary));
    assert_eq!(role("SELECT 1", &s, &short), Some(Role::Replica));
}

/// PgCat's `test_enable_query_parser` and `test_try_execute_command` (roles part).
#[test]
fn server_role_settings() {
    let pool = PoolRouting {
        read_write_splitting: true,
        ..PoolRouting::default()
    };
    let mut s = SessionRouting::default();
    run(&mut s, &pool, "SET PRIMARY READS TO off");
    run(&mut s, &pool, "SET SERVER ROLE TO 'auto'");
    assert!(s.parser_enabled(&pool));
    assert_eq!(
        role("INSERT INTO test_table VALUES (1)", &s, &pool),
        Some(Role::Primary)
    );
    assert_eq!(
        role("SELECT * FROM test_table", &s, &pool),
        Some(Role::Replica)
    );
    run(&mut s, &pool, "SET SERVER ROLE TO 'default'");
    assert!(!s.parser_enabled(&pool));

    let show = |s: &SessionRouting| s.show(&Command::ShowServerRole, &pool);
    let cases = [
        ("primary", Some(Role::Primary), false),
        ("replica", Some(Role::Replica), false),
        ("any", None, false),
        ("auto", None, true),
        ("primary", Some(Role::Primary), false),
    ];
    for (value, expected_role, parser) in cases {
        run(&mut s, &pool, &format!("SET SERVER ROLE TO '{value}'"));
        assert_eq!(s.parser_enabled(&pool), parser, "{value}");
        assert_eq!(show(&s).as_deref(), Some(value));
        if !parser {
            // Pinned roles hold for writes and reads alike.
            assert_eq!(
                role("INSERT INTO t VALUES (1)", &s, &pool),
                expected_role,
                "{value}"
            );
            assert_eq!(role("SELECT 1", &s, &pool), expected_role, "{value}");
        }
    }
}

/// PgCat's `test_update_from_pool_settings`: `default` restores the pool's default_role.
#[test]
fn default_role_from_pool() {
    let pool = PoolRouting {
        shards: 2,
        default_role: Some(Role::Replica),
        query_parser_enabled: false,
        ..PoolRouting::default()
    };
    let mut s = SessionRouting::default();
    assert_eq!(
        role("INSERT INTO t VALUES (1)", &s, &pool),
        Some(Role::Replica)
    );
    run(&mut s, &pool, "SET SERVER ROLE TO 'primary'");
    assert_eq!(role("SELECT 1", &s, &pool), Some(Role::Primary));
    run(&mut s, &pool, "SET SERVER ROLE TO 'default'");
    assert_eq!(role("SELECT 1", &s, &pool), Some(Role::Replica));
    // Parser on but no read/write splitting: the default role stays.
    let pool = PoolRouting {
        query_parser_enabled: true,
        ..pool
    };
    assert_eq!(
        role("INSERT INTO t VALUES (1)", &s, &pool),
        Some(Role::Replica)
    );
}

/// PgCat's `test_try_execute_command` (shard and primary-reads parts).
#[test]
fn shard_commands_and_show() {
    let pool = PoolRouting {
        shards: 2,
        ..PoolRouting::default()
    };
    let mut s = SessionRouting::default();
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("unset"));
    run(&mut s, &pool, "SET SHARDING KEY TO 13");
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("0"));
    run(&mut s, &pool, "SET SHARD TO '1'");
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("1"));
    // The last of SET SHARD / SET SHARDING KEY wins.
    run(&mut s, &pool, "SET SHARDING KEY TO 13");
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("0"));
    s.apply(&Command::SetShard(ShardSelector::Any), &pool, 7);
    assert_eq!(s.shard, Some(1));
    // SET SHARD TO ALL until the next SET SHARD / SET SHARDING KEY.
    run(&mut s, &pool, "SET SHARD TO 'all'");
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("all"));
    assert_eq!(
        (s.shard, s.sharding_key_shard, s.all_shards),
        (None, None, true)
    );
    run(&mut s, &pool, "SET SHARD TO 1");
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("1"));
    run(&mut s, &pool, "SET SHARD TO ALL");
    run(&mut s, &pool, "SET SHARDING KEY TO 13");
    assert_eq!(s.show(&Command::ShowShard, &pool).as_deref(), Some("0"));

    for (value, shown) in [("on", "on"), ("off", "off"), ("default", "off")] {
        run(&mut s, &pool, &format!("SET PRIMARY READS TO {value}"));
        assert_eq!(
            s.show(&Command::ShowPrimaryReads, &pool).as_deref(),
            Some(shown)
        );
    }
    assert_eq!(s.show(&Command::SetShardingKey(1), &pool), None);
}

#[test]
fn shard_precedence() {
    let pool = PoolRouting {
        shards: 5,
        automatic_key: KeyColumn::parse("data.id"),
        ..splitting_pool()
    };
    let c = classify("SELECT * FROM data WHERE id = 1", None);
    let keys = [1]; // shard 0
    let hint_key = Some(Hint::Key(2)); // shard 1
    let mut s = SessionRouting::default();
    assert_eq!(route(&c, &keys, None, &s, &pool).shard, Some(0));
    assert_eq!(route(&c, &keys, hint_key, &s, &pool).shard, Some(1));
    assert_eq!(
        route(&c, &keys, Some(Hint::Shard(4)), &s, &pool).shard,
        Some(4)
    );
    s.sharding_key_shard = Some(3);
    assert_eq!(route(&c, &keys, hint_key, &s, &pool).shard, Some(3));
    s.shard = Some(2);
    assert_eq!(route(&c, &keys, hint_key, &s, &pool).shard, Some(2));

    let s = SessionRouting::default();
    // Keys on two shards (1 → 0, 2 → 1): no automatic shard.
    assert_eq!(route(&c, &[1, 2], None, &s, &pool).shard, None);
    assert_eq!(route(&c, &[1, 4, 5], None, &s, &pool).shard, Some(0));
    assert_eq!(route(&c, &[], None, &s, &pool).shard, None);
    // Without automatic_sharding_key, or with the parser off, keys are ignored.
    let no_key = PoolRouting {
        automatic_key: None,
        ..pool.clone()
    };
    assert_eq!(route(&c, &keys, None, &s, &no_key).shard, None);
    let off = PoolRouting {
        query_parser_enabled: false,
        ..pool.clone()
    };
    assert_eq!(route(&c, &keys, None, &s, &off).shard, None);
    // A pinned role does not stop automatic sharding.
    let mut pinned = SessionRouting::default();
    run(&mut pinned, &pool, "SET SERVER ROLE TO 'primary'");
    let r = route(&c, &keys, None, &pinned, &pool);
    assert_eq!(
        r,
        Route {
            shard: Some(0),
            role: Some(Role::Primary)
        }
    );
}

/// PgCat's `test_regex_shard_parsing` through the whole pipeline (5 shards).
#[test]
fn comment_routing() {
    let pool = PoolRouting {
        shards: 5,
        ..splitting_pool()
    };
    let hints = CommentHints::new(
        Some(r"/\* shard_id: (\d+) \*/"),
        Some(r"/\* sharding_key: (\d+) \*/"),
        1000,
    )
    .expect("valid");
    let s = SessionRouting::default();
    assert_eq!(full(";", &s, &pool, &hints).shard, None);
    assert_eq!(
        full("/* shard_id: 1 */ select 1 from foo;", &s, &pool, &hints).shard,
        Some(1)
    );
    assert_eq!(
        full("/* shard_id: 0 */ select 1 from foo;", &s, &pool, &hints).shard,
        Some(0)
    );
    assert_eq!(
        full(
            "/* sharding_key: 6 */ select 1 from foo;",
            &s,
            &pool,
            &hints
        )
        .shard,
        Some(2)
    );
}

/// PgCat's partition vectors (MODULUS 5): every way of naming key k routes to shard k's
/// partition — SET SHARDING KEY, a comment key, and the automatic key.
#[test]
fn keys_1_to_54_match_hash_vectors() {
    let expected = crate::hash::PARTITION_VECTORS;
    let pool = PoolRouting {
        shards: 5,
        automatic_key: KeyColumn::parse("data.id"),
        ..splitting_pool()
    };
    let hints =
        CommentHints::new(None, Some(r"/\* sharding_key: (-?\d+) \*/"), 1000).expect("valid");
    let listed: Vec<i64> = expected
        .iter()
        .flat_map(|keys| keys.iter().copied())
        .collect();
    for key in 1..=54i64 {
        let shard = pg_bigint_hash(key, 5);
        if listed.contains(&key) {
            assert!(expected[shard].contains(&key), "key {key}");
        }
        assert_eq!(shard_for_key(key, &pool), shard);

        let mut s = SessionRouting::default();
        run(&mut s, &pool, &format!("SET SHARDING KEY TO '{key}'"));
        assert_eq!(
            full("SELECT 1", &s, &pool, &hints).shard,
            Some(shard),
            "key {key}"
        );

        let s = SessionRouting::default();
        let comment = format!("/* sharding_key: {key} */ SELECT 1");
        assert_eq!(
            full(&comment, &s, &pool, &hints).shard,
            Some(shard),
            "key {key}"
        );
        let insert = format!("INSERT INTO data (id, value) VALUES ({key}, 'x')");
        assert_eq!(
            full(&insert, &s, &pool, &hints),
            Route {
                shard: Some(shard),
                role: Some(Role::Primary)
            },
            "key {key}"
        );
        let select = format!("SELECT * FROM data WHERE id = {key}");
        assert_eq!(
            full(&select, &s, &pool, &hints),
            Route {
                shard: Some(shard),
                role: Some(Role::Replica)
            },
            "key {key}"
        );
    }
}

#[test]
fn sha1_pool() {
    let pool = PoolRouting {
        shards: 12,
        sharding_function: ShardingFunction::Sha1,
        ..PoolRouting::default()
    };
    let expected = [
        4, 7, 8, 3, 6, 0, 0, 10, 3, 11, 1, 7, 4, 4, 11, 2, 5, 0, 8, 3,
    ];
    for (key, shard) in expected.iter().enumerate() {
        let mut s = SessionRouting::default();
        run(&mut s, &pool, &format!("SET SHARDING KEY TO {key}"));
        let r = route(&classify("SELECT 1", None), &[], None, &s, &pool);
        assert_eq!(r.shard, Some(*shard), "key {key}");
    }
}
