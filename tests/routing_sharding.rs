//! Issue 4, "Must show" 1, 2, 4 and 5: sharding through the real binary against real
//! PostgreSQL. PostgreSQL judges: each shard database holds ONE hash partition of `data`
//! (tests/sql/setup.sql), so a misrouted row is rejected.
//!
//! 1. tests/sql/sharding_{insert,select}.sql through psql, output compared with
//!    tests/sql/expected/; PgCat's own suite (fixtures/pgcat-upstream/) run unchanged.
//! 2. `pg_bigint_hash` vs PostgreSQL's `satisfies_hash_partition()` (10,000 random keys,
//!    3/5/8 shards); sha1 vectors.
//! 4. Automatic sharding (`automatic_sharding_key`) with no SET at all; multi-shard keys are
//!    an error naming the shards.
//! 5. Comment hints (`shard_id_regex`, `sharding_key_regex`), simple and extended.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use pgcat_parser::hash::{pg_bigint_hash, sha1};
use support::raw::{self, RawConn};
use support::routing::{
    connect_sharded, exec, expect_error, read_repo_file, sharded_cluster, sharded_pooler,
    sharded_toml, value, POOL, SHARDS, SHARD_PASS, SHARD_USER,
};
use support::{
    connect_direct, free_port, rows, run_client, shared, tail, try_rows, Cluster, Pooler, Rng,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// The first column of the single row of a simple query.
async fn first_column(client: &Client, sql: &str) -> String {
    let all = rows(client, sql).await;
    assert_eq!(all.len(), 1, "{sql}: expected one row, got {all:?}");
    all[0][0].clone()
}

fn shard_db(key: i64) -> String {
    format!("shard{}", pg_bigint_hash(key, SHARDS))
}

/// The first column (text) of every row of an extended query; panics naming `what`.
async fn first_texts(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> Vec<String> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// psql through the pooler on a file: `-X -q -A -t -f file` (the files set ON_ERROR_STOP).
fn psql_file_through(
    cluster: &Cluster,
    pooler: &Pooler,
    user: &str,
    password: &str,
    database: &str,
    file: &Path,
    extra_args: &[&str],
) -> std::process::Output {
    let conninfo = format!(
        "host=127.0.0.1 port={} user={user} dbname={database}",
        pooler.port
    );
    let file = file.to_str().expect("utf-8 path");
    let mut args = vec![conninfo.as_str(), "-X"];
    args.extend_from_slice(extra_args);
    args.extend_from_slice(&["-f", file]);
    run_client(cluster, "psql", password, &args, Duration::from_secs(120))
}

/// Runs a suite file (`tests/sql/<name>.sql`) through the pooler and compares its stdout with
/// `tests/sql/expected/<name>.out`.
fn run_suite_file(cluster: &Cluster, pooler: &Pooler, name: &str) {
    let sql = support::repo_path(&format!("tests/sql/{name}.sql"));
    let expected = read_repo_file(&format!("tests/sql/expected/{name}.out"));
    let out = psql_file_through(
        cluster,
        pooler,
        SHARD_USER,
        SHARD_PASS,
        POOL,
        &sql,
        &["-q", "-A", "-t"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let got: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    let want: Vec<&str> = expected.lines().map(str::trim_end).collect();
    let first_diff = got
        .iter()
        .zip(&want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    assert!(
        out.status.success() && got == want,
        "tests/sql/{name}.sql through the pooler: psql {}, first difference at output line {} \
         (expected {:?}, got {:?})\n--- stderr\n{stderr}\n--- stdout\n{stdout}",
        out.status,
        first_diff + 1,
        want.get(first_diff),
        got.get(first_diff),
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The sharding SQL suites
// ---------------------------------------------------------------------------------------------

/// The premise of every sharding test: a shard database rejects rows of other shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_reject_rows_of_other_shards() {
    let cluster = sharded_cluster();
    for shard in 0..SHARDS {
        let db = format!("shard{shard}");
        let client = connect_direct(&cluster.primary, &db).await;
        for key in [1i64, 2, 3] {
            let result = client
                .execute(
                    "INSERT INTO data (id, value) VALUES ($1, 'premise')",
                    &[&key],
                )
                .await;
            if pg_bigint_hash(key, SHARDS) == shard {
                result.unwrap_or_else(|e| panic!("{db} must accept key {key}: {e:?}"));
            } else {
                let (code, _) = expect_error(&format!("{db} must reject key {key}"), result);
                assert_eq!(code, "23514", "{db}, key {key}: no partition for the row");
            }
        }
        client
            .execute("DELETE FROM data WHERE value = 'premise'", &[])
            .await
            .expect("clean up");
    }
}

/// Must show 1: tests/sql/sharding_insert.sql then sharding_select.sql through psql (SET
/// SHARDING KEY, SET SHARD, every SET SERVER ROLE and SET PRIMARY READS value, mixed case,
/// quotes or not, `;` or not, negative keys, 0, int32 and int64 extremes; SHOW output).
#[test]
fn sharding_sql_suite() {
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(cluster, "");
    run_suite_file(cluster, &pooler, "sharding_insert");
    cluster
        .wait_replicas_caught_up()
        .unwrap_or_else(|e| panic!("replica after the inserts: {e}"));
    run_suite_file(cluster, &pooler, "sharding_select");
}

/// The `(id, value)` rows PgCat's suite files insert, as "id|value" lines.
fn upstream_inserted_rows(files: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        for line in read_repo_file(&format!("fixtures/pgcat-upstream/{file}")).lines() {
            let Some(rest) = line
                .trim()
                .strip_prefix("INSERT INTO data (id, value) VALUES (")
            else {
                continue;
            };
            let rest = rest.trim_end_matches(';').trim_end_matches(')');
            let (id, value) = rest.split_once(',').expect("id, value");
            let value = value.trim().trim_matches('\'');
            out.push(format!("{}|{value}", id.trim()));
        }
    }
    out
}

/// Must show 1: PgCat's own sharding suite, files unchanged: setup directly on a cluster of its
/// own as the superuser, insert / select / primary_replica through the pooler with psql,
/// validate directly. Every inserted row must be on its pg_bigint_hash shard.
#[test]
fn pgcat_upstream_sharding_suite() {
    let cluster = support::private(1);
    let dir = "fixtures/pgcat-upstream";
    cluster
        .psql(
            &cluster.primary,
            "postgres",
            &read_repo_file(&format!("{dir}/query_routing_setup.sql")),
        )
        .unwrap_or_else(|e| panic!("{dir}/query_routing_setup.sql: {e}"));
    cluster
        .wait_replicas_caught_up()
        .unwrap_or_else(|e| panic!("replica after setup: {e}"));
    let pooler = Pooler::start(&sharded_toml(
        &cluster,
        free_port(),
        "transaction",
        "",
        &[(SHARD_USER, SHARD_PASS), ("other_user", "other_user")],
    ));
    for file in [
        "query_routing_test_insert.sql",
        "query_routing_test_select.sql",
        "query_routing_test_primary_replica.sql",
    ] {
        let out = psql_file_through(
            &cluster,
            &pooler,
            SHARD_USER,
            SHARD_PASS,
            POOL,
            &support::repo_path(&format!("{dir}/{file}")),
            &["-e"],
        );
        assert!(
            out.status.success(),
            "{dir}/{file} through the pooler: psql {}\n--- stderr\n{}\n--- stdout (tail)\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&out.stdout), 40)
        );
    }
    // PgCat's validate file, directly on the primary: every row, from the three shards.
    let validate = cluster
        .psql(
            &cluster.primary,
            "postgres",
            &read_repo_file(&format!("{dir}/query_routing_test_validate.sql")),
        )
        .unwrap_or_else(|e| panic!("{dir}/query_routing_test_validate.sql: {e}"));
    let mut expected = upstream_inserted_rows(&[
        "query_routing_test_insert.sql",
        "query_routing_test_primary_replica.sql",
    ]);
    assert!(
        expected.len() > 20,
        "parsed the suite's inserts: {expected:?}"
    );
    let mut got: Vec<String> = validate.lines().map(str::to_owned).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "rows on the shards after PgCat's suite");
    // And each row on the shard pg_bigint_hash names.
    for shard in 0..SHARDS {
        let ids = cluster
            .psql(
                &cluster.primary,
                &format!("shard{shard}"),
                "SELECT id FROM data ORDER BY id",
            )
            .expect("read shard");
        for id in ids.lines() {
            let id: i64 = id.parse().expect("id");
            assert_eq!(pg_bigint_hash(id, SHARDS), shard, "id {id} on shard{shard}");
        }
    }
}
// ---------------------------------------------------------------------------------------------
// 2. pg_bigint_hash against PostgreSQL, sha1 vectors
// ---------------------------------------------------------------------------------------------

/// Must show 2: for 10,000 random bigints (full range, int32 range, small) plus the extremes,
/// and 3, 5 and 8 shards, the shard pg_bigint_hash computes is the one REMAINDER PostgreSQL's
/// `satisfies_hash_partition()` accepts the key for (asked in one query per modulus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_bigint_hash_agrees_with_postgres() {
    let cluster = shared();
    let client = connect_direct(&cluster.primary, "postgres").await;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS routing_hash_parent (k bigint) PARTITION BY HASH (k)",
        )
        .await
        .expect("create hash-partitioned parent");
    let mut rng = Rng::new(4);
    let mut keys: Vec<i64> = (0..10_000)
        .map(|i| {
            let x = rng.next();
            match i % 3 {
                0 => x as i64,
                1 => x as i32 as i64,
                _ => (x % 2001) as i64 - 1000,
            }
        })
        .collect();
    keys.extend([
        0,
        1,
        -1,
        i32::MAX as i64,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64 - 1,
        u32::MAX as i64,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
    ]);
    for modulus in [3i32, 5, 8] {
        let rows = client
            .query(
                "SELECT u.i, r FROM unnest($1::int8[]) WITH ORDINALITY AS u(k, i), \
                 generate_series(0, $2 - 1) AS r \
                 WHERE satisfies_hash_partition('routing_hash_parent'::regclass, $2, r, u.k)",
                &[&keys, &modulus],
            )
            .await
            .expect("satisfies_hash_partition");
        let mut by_index: HashMap<i64, Vec<i32>> = HashMap::new();
        for row in &rows {
            by_index.entry(row.get(0)).or_default().push(row.get(1));
        }
        let mut mismatches = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let postgres = by_index.get(&(i as i64 + 1)).cloned().unwrap_or_default();
            let ours = pg_bigint_hash(*key, modulus as usize) as i32;
            if postgres != vec![ours] {
                mismatches.push(format!(
                    "key {key}: PostgreSQL {postgres:?}, pg_bigint_hash {ours}"
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "MODULUS {modulus}: {} of {} keys disagree, first: {:?}",
            mismatches.len(),
            keys.len(),
            &mismatches[..mismatches.len().min(10)]
        );
    }
}

/// Must show 2: PgCat's sha1 vectors (anchors row 29): N = 12, keys 0..19.
#[test]
fn sha1_matches_pgcat_vectors() {
    let expected = [
        4, 7, 8, 3, 6, 0, 0, 10, 3, 11, 1, 7, 4, 4, 11, 2, 5, 0, 8, 3,
    ];
    let got: Vec<usize> = (0..20).map(|key| sha1(key, 12)).collect();
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------------------------------------
// 4. Automatic sharding
// ---------------------------------------------------------------------------------------------

/// Keys for the automatic sharding test: negatives, 0, int32 and int64 extremes, a run.
fn auto_keys() -> Vec<i64> {
    let mut keys = vec![
        i64::MIN,
        i64::MIN + 1,
        -2_147_483_649,
        -2_147_483_648,
        -1_000_003,
        -42,
        -7,
        -5,
        -1,
        0,
        1,
        2,
        3,
        4,
        5,
        7,
        2_147_483_647,
        2_147_483_648,
        i64::MAX - 1,
        i64::MAX,
    ];
    keys.extend(1_000_001..=1_000_030);
    keys
}

/// Must show 4: with `automatic_sharding_key = "data.id"` and no SET at all, tokio-postgres
/// parameterised INSERTs / SELECTs (`id = $1`, binary int8/int4/int2), text-format Bind
/// parameters, literal INSERTs / SELECTs and UPDATE/DELETE by key all reach the key's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_sharding_routes_without_set() {
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(cluster, "automatic_sharding_key = \"data.id\"\n");
    let client = connect_sharded(&pooler).await;
    let keys = auto_keys();

    // Extended protocol: parameterised INSERT. The wrong shard would reject the row.
    let insert = client
        .prepare("INSERT INTO data (id, value) VALUES ($1, $2) RETURNING current_database(), pg_is_in_recovery()")
        .await
        .expect("prepare INSERT");
    for key in &keys {
        let row = client
            .query_one(&insert, &[key, &"auto-ext"])
            .await
            .unwrap_or_else(|e| panic!("parameterised INSERT of key {key}: {e:?}"));
        assert_eq!(row.get::<_, String>(0), shard_db(*key), "INSERT $1 = {key}");
        assert!(!row.get::<_, bool>(1), "INSERT of key {key} on the primary");
    }
    // Simple protocol: literal INSERT.
    for key in &keys {
        let got = rows(
            &client,
            &format!(
                "INSERT INTO data (id, value) VALUES ({key}, 'auto-lit') RETURNING current_database()"
            ),
        )
        .await;
        assert_eq!(
            got,
            vec![vec![shard_db(*key)]],
            "literal INSERT of key {key}"
        );
    }
    // Literal INSERT through the extended protocol (no parameters).
    for key in [-7i64, 3, 1_000_010] {
        let row = client
            .query_one(
                &format!("INSERT INTO data (id, value) VALUES ({key}, 'auto-lit-ext') RETURNING current_database()"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("literal extended INSERT of key {key}: {e:?}"));
        assert_eq!(
            row.get::<_, String>(0),
            shard_db(key),
            "literal extended INSERT {key}"
        );
    }

    cluster
        .wait_replicas_caught_up()
        .unwrap_or_else(|e| panic!("replica after the inserts: {e}"));

    // Extended protocol: parameterised SELECT finds both rows, on a replica of the right shard.
    let select = client
        .prepare(
            "SELECT current_database(), pg_is_in_recovery(), value FROM data \
             WHERE id = $1 AND value IN ('auto-ext', 'auto-lit') ORDER BY value",
        )
        .await
        .expect("prepare SELECT");
    for key in &keys {
        let got: Vec<(String, bool, String)> = client
            .query(&select, &[key])
            .await
            .unwrap_or_else(|e| panic!("SELECT key {key}: {e:?}"))
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let db = shard_db(*key);
        assert_eq!(
            got,
            vec![
                (db.clone(), true, "auto-ext".to_string()),
                (db, true, "auto-lit".to_string())
            ],
            "SELECT ... WHERE id = $1 with $1 = {key}"
        );
    }
    // Binary int4 and int2 parameters.
    for key in keys.iter().filter(|k| i32::try_from(**k).is_ok()) {
        let k4 = *key as i32;
        let got = first_texts(
            &client,
            "SELECT current_database() FROM data WHERE id = $1::int4 AND value = 'auto-ext'",
            &[&k4],
            &format!("int4 key {key}"),
        )
        .await;
        assert_eq!(got, vec![shard_db(*key)], "int4 parameter {key}");
        if let Ok(k2) = i16::try_from(*key) {
            let got = first_texts(
                &client,
                "SELECT current_database() FROM data WHERE id = $1::int2 AND value = 'auto-ext'",
                &[&k2],
                &format!("int2 key {key}"),
            )
            .await;
            assert_eq!(got, vec![shard_db(*key)], "int2 parameter {key}");
        }
    }
    // Simple protocol: literal SELECT.
    for key in &keys {
        let got = rows(
            &client,
            &format!(
                "SELECT current_database(), value FROM data WHERE id = {key} \
                 AND value IN ('auto-ext', 'auto-lit') ORDER BY value"
            ),
        )
        .await;
        let db = shard_db(*key);
        assert_eq!(
            got,
            vec![
                vec![db.clone(), "auto-ext".to_string()],
                vec![db, "auto-lit".to_string()]
            ],
            "literal SELECT of key {key}"
        );
    }
    // UPDATE and DELETE by key, extended and simple.
    for key in [i64::MIN, -5, 0, 4, 1_000_007, i64::MAX] {
        let got = first_texts(
            &client,
            "UPDATE data SET value = 'auto-upd' WHERE id = $1 AND value = 'auto-lit' RETURNING current_database()",
            &[&key],
            &format!("UPDATE key {key}"),
        )
        .await;
        assert_eq!(got, vec![shard_db(key)], "UPDATE ... WHERE id = $1 ({key})");
        let got = rows(
            &client,
            &format!("DELETE FROM data WHERE id = {key} AND value = 'auto-upd' RETURNING current_database()"),
        )
        .await;
        assert_eq!(
            got,
            vec![vec![shard_db(key)]],
            "DELETE ... WHERE id = {key}"
        );
    }

    // Text-format Bind parameters (libpq-style), on a raw connection.
    let port = pooler.port;
    let raw_keys: Vec<i64> = keys.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = RawConn::connect(port, SHARD_USER, SHARD_PASS, POOL)
            .unwrap_or_else(|e| panic!("raw connect: {e}"));
        for key in raw_keys {
            let text = key.to_string();
            let mut batch = raw::parse(
                "",
                "SELECT current_database() FROM data WHERE id = $1 AND value = 'auto-ext'",
            );
            batch.extend(raw::bind("", "", &[Some(&text)]));
            batch.extend(raw::execute(""));
            batch.extend(raw::sync());
            conn.send(&batch).expect("send");
            let msgs = conn.read_until_ready().expect("read");
            let data: Vec<Vec<Option<String>>> = msgs
                .iter()
                .filter(|m| m.tag == b'D')
                .map(|m| m.row())
                .collect();
            assert_eq!(
                data,
                vec![vec![Some(shard_db(key))]],
                "text-format parameter {key}: {}",
                raw::tags(&msgs)
            );
        }
    })
    .await
    .expect("raw client");

    // No key: the default shard (shard_0).
    assert_eq!(value(&client, "SELECT current_database()").await, "shard0");
    let row = client
        .query_one("SELECT current_database(), $1::int", &[&1i32])
        .await
        .expect("keyless extended");
    assert_eq!(row.get::<_, String>(0), "shard0", "keyless extended query");

    // IN lists whose keys share one shard are routed there.
    let mut by_shard: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for key in 1_000_001..=1_000_030i64 {
        by_shard
            .entry(pg_bigint_hash(key, SHARDS))
            .or_default()
            .push(key);
    }
    for (shard, same) in &by_shard {
        let list: Vec<String> = same.iter().map(i64::to_string).collect();
        let got = rows(
            &client,
            &format!(
                "SELECT current_database(), count(*) FROM data WHERE id IN ({}) AND value = 'auto-ext' GROUP BY 1",
                list.join(", ")
            ),
        )
        .await;
        assert_eq!(
            got,
            vec![vec![format!("shard{shard}"), same.len().to_string()]],
            "IN list on one shard"
        );
    }
}

/// Build list: a query whose keys hash to several shards is never answered from one shard:
/// an ErrorResponse naming the shards (simple and extended, reads and writes); the session
/// stays usable. Keys 4, 5, 7 are on shards 0, 2, 1 and contain none of those digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_shard_keys_are_an_error_naming_the_shards() {
    assert_eq!(
        [4i64, 5, 7].map(|k| pg_bigint_hash(k, SHARDS)),
        [0, 2, 1],
        "premise"
    );
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(cluster, "automatic_sharding_key = \"data.id\"\n");
    let client = connect_sharded(&pooler).await;

    let check =
        |what: &str, result: Result<Vec<Vec<String>>, tokio_postgres::Error>, shards: &[&str]| {
            let (code, message) = expect_error(what, result);
            assert!(
                message.to_lowercase().contains("shard"),
                "{what}: the error must talk about shards: {code} {message}"
            );
            for shard in shards {
                assert!(
                    message.contains(shard),
                    "{what}: the error must name shard {shard}: {code} {message}"
                );
            }
        };
    check(
        "SELECT ... IN (4, 5, 7)",
        try_rows(&client, "SELECT id FROM data WHERE id IN (4, 5, 7)").await,
        &["0", "1", "2"],
    );
    check(
        "SELECT ... IN (4, 7)",
        try_rows(&client, "SELECT id FROM data WHERE id IN (4, 7)").await,
        &["0", "1"],
    );
    check(
        "SELECT ... id = 4 OR id = 5",
        try_rows(&client, "SELECT id FROM data WHERE id = 4 OR id = 5").await,
        &["0", "2"],
    );
    check(
        "UPDATE ... IN (4, 7)",
        try_rows(&client, "UPDATE data SET value = value WHERE id IN (4, 7)").await,
        &["0", "1"],
    );
    check(
        "INSERT of two rows on two shards",
        try_rows(
            &client,
            "INSERT INTO data (id, value) VALUES (4, 'multi'), (7, 'multi')",
        )
        .await,
        &["0", "1"],
    );
    let extended = client
        .query("SELECT id FROM data WHERE id IN ($1, $2)", &[&4i64, &7i64])
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| vec![r.get::<_, i64>(0).to_string()])
                .collect::<Vec<_>>()
        });
    check(
        "extended SELECT ... IN ($1, $2) = (4, 7)",
        extended,
        &["0", "1"],
    );

    // The session is still usable, and a single-shard query is answered.
    assert_eq!(value(&client, "SELECT 1").await, "1");
    assert_eq!(
        value(&client, "SELECT current_database()").await,
        "shard0",
        "no key"
    );
    assert_eq!(
        rows(
            &client,
            "SELECT current_database(), count(*) FROM data WHERE id = 5 AND value = 'none'"
        )
        .await,
        vec![vec!["shard2".to_string(), "0".to_string()]],
        "id = 5 alone goes to shard 2"
    );
    let row = client
        .query_one(
            "INSERT INTO data (id, value) VALUES ($1, 'multi-after') RETURNING current_database()",
            &[&7i64],
        )
        .await
        .expect("single-key insert after the errors");
    assert_eq!(row.get::<_, String>(0), "shard1");
}

// ---------------------------------------------------------------------------------------------
// 5. Comment hints
// ---------------------------------------------------------------------------------------------

const HINT_REGEXES: &str = "shard_id_regex = \"/\\\\* shard_id: (\\\\d+) \\\\*/\"\n\
                            sharding_key_regex = \"/\\\\* sharding_key: (-?\\\\d+) \\\\*/\"\n";

/// Must show 5: `/* shard_id: n */` and `/* sharding_key: k */` route simple and extended
/// queries; a comment past `regex_search_limit` is not looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_hints_route_simple_and_extended() {
    assert!(HINT_REGEXES.contains(r#"shard_id_regex = "/\\* shard_id: (\\d+) \\*/""#));
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(
        cluster,
        &format!("{HINT_REGEXES}regex_search_limit = 1000\n"),
    );
    let client = connect_sharded(&pooler).await;

    assert_eq!(
        value(&client, "SELECT current_database()").await,
        "shard0",
        "no hint"
    );
    for shard in [2, 1, 0, 2] {
        assert_eq!(
            value(
                &client,
                &format!("/* shard_id: {shard} */ SELECT current_database()")
            )
            .await,
            format!("shard{shard}"),
            "simple, shard_id {shard}"
        );
        assert_eq!(
            value(
                &client,
                &format!("SELECT current_database() /* shard_id: {shard} */")
            )
            .await,
            format!("shard{shard}"),
            "simple, shard_id {shard} at the end"
        );
        let row = client
            .query_one(
                &format!("/* shard_id: {shard} */ SELECT current_database(), $1::int"),
                &[&shard],
            )
            .await
            .unwrap_or_else(|e| panic!("extended shard_id {shard}: {e:?}"));
        assert_eq!(
            row.get::<_, String>(0),
            format!("shard{shard}"),
            "extended, shard_id {shard}"
        );
    }
    // The hint is per query: the next query without one is back on the default shard.
    assert_eq!(
        value(&client, "SELECT current_database()").await,
        "shard0",
        "no hint again"
    );

    for key in [
        -9_223_372_036_854_775_808i64,
        -42,
        -5,
        -1,
        0,
        1,
        3,
        7,
        2_147_483_648,
        2_000_011,
        i64::MAX,
    ] {
        let got = rows(
            &client,
            &format!(
                "/* sharding_key: {key} */ INSERT INTO data (id, value) VALUES ({key}, 'hint-simple') RETURNING current_database()"
            ),
        )
        .await;
        assert_eq!(got, vec![vec![shard_db(key)]], "simple, sharding_key {key}");
        let row = client
            .query_one(
                &format!(
                    "/* sharding_key: {key} */ INSERT INTO data (id, value) VALUES ($1, $2) RETURNING current_database()"
                ),
                &[&key, &"hint-ext"],
            )
            .await
            .unwrap_or_else(|e| panic!("extended sharding_key {key}: {e:?}"));
        assert_eq!(
            row.get::<_, String>(0),
            shard_db(key),
            "extended, sharding_key {key}"
        );
        assert_eq!(
            value(
                &client,
                &format!("/* sharding_key: {key} */ SELECT current_database()")
            )
            .await,
            shard_db(key),
            "simple read, sharding_key {key}"
        );
    }

    // Only the first regex_search_limit (1000) bytes are searched.
    let padding = "x".repeat(1200);
    assert_eq!(
        value(
            &client,
            &format!("/* {padding} */ /* shard_id: 2 */ SELECT current_database()")
        )
        .await,
        "shard0",
        "a hint past regex_search_limit is ignored"
    );

    // SET SHARD wins over a comment hint.
    exec(&client, "SET SHARD TO '1'").await;
    assert_eq!(
        value(&client, "/* shard_id: 2 */ SELECT current_database()").await,
        "shard1",
        "SET SHARD > comment hint"
    );
}

/// Precedence: comment hint > automatic key; SET SHARDING KEY > automatic key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_precedence_hint_over_automatic_key() {
    let cluster = sharded_cluster();
    let pooler = sharded_pooler(
        cluster,
        &format!("{HINT_REGEXES}automatic_sharding_key = \"data.id\"\n"),
    );
    let client = connect_sharded(&pooler).await;
    // An aggregate always returns one row, so the answering database shows even when no row
    // matches. Key 1 is on shard 2.
    let query = "SELECT current_database(), count(*) FROM data WHERE id = 1 AND value = 'none'";
    assert_eq!(
        first_column(&client, query).await,
        "shard2",
        "automatic key alone"
    );
    assert_eq!(
        first_column(&client, &format!("/* shard_id: 0 */ {query}")).await,
        "shard0",
        "comment hint > automatic key"
    );
    assert_eq!(
        first_column(&client, &format!("/* sharding_key: 3 */ {query}")).await,
        "shard1",
        "comment sharding key > automatic key"
    );
    exec(&client, "SET SHARDING KEY TO '4'").await; // shard 0
    assert_eq!(
        first_column(&client, &format!("/* shard_id: 1 */ {query}")).await,
        "shard0",
        "SET SHARDING KEY > comment hint > automatic key"
    );
    exec(&client, "SET SHARD TO '1'").await;
    assert_eq!(
        first_column(&client, &format!("/* shard_id: 2 */ {query}")).await,
        "shard1",
        "SET SHARD > comment hint > automatic key"
    );
}
