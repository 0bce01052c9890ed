//! Issue 19, first part: statements with no shard selected, in pools with
//! `default_shard = "all"` / `"error"` and after `SET SHARD TO ALL`. PostgreSQL judges: each
//! shard database (xs_shard0..2) holds ONE hash partition of `items`, so a row inserted on
//! the wrong shard is rejected; xs_oracle holds every row, unsharded, and every answer that
//! runs on all shards is compared with its answer to the same statement. What cannot be
//! answered exactly yet is refused with 0A000 naming the construct.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgcat_parser::hash::pg_bigint_hash;
use support::routing::{expect_error, SHARD_PASS, SHARD_USER};
use support::{connect, free_port, general_toml, rows, runtime, shared, try_rows, Cluster, Pooler};
use tokio_postgres::{Client, SimpleQueryMessage};

const SHARDS: usize = 3;
const POOL: &str = "xs";
const ROWS: i64 = 300;
/// Rows of `ledger`, the table the write test changes (and no other test reads).
const LEDGER: i64 = 60;
/// Rows of `accounts` (balance 100 each), the table the transaction tests change.
const ACCOUNTS: i64 = 30;

/// xs_shard0..2 (one partition each) and xs_oracle (every row), owned by sharding_user,
/// made once per test binary directly on the primary.
fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let cluster = support::routing::sharded_cluster(); // creates sharding_user
    READY.get_or_init(|| {
        let mut sql = String::new();
        for db in ["xs_shard0", "xs_shard1", "xs_shard2", "xs_oracle"] {
            sql.push_str(&format!(
                "DROP DATABASE IF EXISTS {db};\nCREATE DATABASE {db} OWNER {SHARD_USER};\n"
            ));
        }
        let table = "CREATE TABLE items (id bigint, grp int, value text, amount numeric)";
        let ledger_row = |id: i64| format!("INSERT INTO ledger VALUES ({id}, {});\n", id * 10);
        let all_ledger: String = (1..=LEDGER).map(ledger_row).collect();
        for shard in 0..SHARDS {
            let mut inserts = String::new();
            for id in (1..=ROWS).filter(|id| pg_bigint_hash(*id, SHARDS) == shard) {
                inserts.push_str(&row_insert(id));
            }
            let ledger: String = (1..=LEDGER)
                .filter(|id| pg_bigint_hash(*id, SHARDS) == shard)
                .map(ledger_row)
                .collect();
            sql.push_str(&format!(
                "\\c xs_shard{shard}\nSET ROLE {SHARD_USER};\n{table} PARTITION BY HASH (id);\n\
                 CREATE TABLE items_p{shard} PARTITION OF items FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 CREATE TABLE slow (n int); INSERT INTO slow VALUES (1);\n{MY_SUM}\n{inserts}\n\
                 CREATE TABLE ledger (id bigint, n int) PARTITION BY HASH (id);\n\
                 CREATE TABLE ledger_p{shard} PARTITION OF ledger FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n{ledger}\n\
                 CREATE TABLE accounts (id bigint, balance int) PARTITION BY HASH (id);\n\
                 CREATE TABLE accounts_p{shard} PARTITION OF accounts FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 INSERT INTO accounts SELECT i, 100 FROM generate_series(1, {ACCOUNTS}) i WHERE pg_catalog.satisfies_hash_partition('accounts'::regclass, {SHARDS}, {shard}, i::bigint);\n\
                 CREATE TABLE fresh (id bigint, label text CHECK (label <> 'bad')) PARTITION BY HASH (id);\n\
                 CREATE TABLE fresh_p{shard} PARTITION OF fresh FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 {KINDS_TABLE} PARTITION BY HASH (id);\n\
                 CREATE TABLE kinds_p{shard} PARTITION OF kinds FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 INSERT INTO kinds {KINDS_ROWS} WHERE pg_catalog.satisfies_hash_partition('kinds'::regclass, {SHARDS}, {shard}, i::bigint);\n\
                 CREATE TABLE intl (id bigint, label text COLLATE \"en-x-icu\");\n\
                 INSERT INTO intl VALUES ({shard}, 'b'), ({shard} + 10, 'B');\n\
                 {LOADED_TABLE} PARTITION BY HASH (id);\n\
                 CREATE TABLE loaded_p{shard} PARTITION OF loaded FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 {TALLY_TABLE} PARTITION BY HASH (id);\n\
                 CREATE TABLE tally_p{shard} PARTITION OF tally FOR VALUES WITH (MODULUS {SHARDS}, REMAINDER {shard});\n\
                 INSERT INTO tally {TALLY_ROWS} WHERE pg_catalog.satisfies_hash_partition('tally'::regclass, {SHARDS}, {shard}, i::bigint);"
            ));
        }
        let all: String = (1..=ROWS).map(row_insert).collect();
        sql.push_str(&format!(
            "\\c xs_oracle\nSET ROLE {SHARD_USER};\n{table};\nCREATE TABLE slow (n int); INSERT INTO slow VALUES (1);\n{MY_SUM}\n{all}\n\
             CREATE TABLE ledger (id bigint, n int);\n{all_ledger}\n\
             CREATE TABLE accounts (id bigint, balance int);\n\
             INSERT INTO accounts SELECT i, 100 FROM generate_series(1, {ACCOUNTS}) i;\n\
             CREATE TABLE fresh (id bigint, label text CHECK (label <> 'bad'));\n\
             {KINDS_TABLE};\nINSERT INTO kinds {KINDS_ROWS};\n\
             CREATE TABLE intl (id bigint, label text COLLATE \"en-x-icu\");\n\
             {LOADED_TABLE};\n\
             {TALLY_TABLE};\nINSERT INTO tally {TALLY_ROWS};\n\
             CREATE TABLE loaded_src AS SELECT i::bigint AS id, \
               (ARRAY['plain', E'tab\\there', E'new\\nline', 'comma, \"quoted\"', E'back\\\\slash', 'ünï', NULL])[1 + i % 7] AS label, \
               CASE WHEN i % 5 = 0 THEN NULL ELSE i * 3 END AS n \
               FROM generate_series(1, 500) i;"
        ));
        cluster
            .psql(&cluster.primary, "postgres", &sql)
            .unwrap_or_else(|e| panic!("cross-shard fixture: {e}"));
        cluster.wait_replicas_caught_up().expect("replicas caught up");
    });
    cluster
}

/// `tally`: the table the multi-statement tests change (no other test reads it).
const TALLY_TABLE: &str = "CREATE TABLE tally (id bigint, n int)";
const TALLY_ROWS: &str = "SELECT i, 0 FROM generate_series(1, 20) i";

/// `kinds`: a column of each type the merge orders, NULLs and edge values included.
const KINDS_TABLE: &str = "CREATE TABLE kinds (id bigint, t text, vc varchar(12), d date, \
    ts timestamp, tz timestamptz, tm time, iv interval, u uuid, b bool, f float8, n numeric)";
const KINDS_ROWS: &str = "SELECT i, \
    (ARRAY['apple','Banana','cherry','Äpfel','zebra','Zulu','éclair','123','',' space'])[1 + i % 10] || (i % 7), \
    left(md5(i::text), 8), \
    CASE WHEN i % 11 = 0 THEN NULL WHEN i % 13 = 0 THEN date '0044-03-15 BC' - i \
         ELSE date '2000-01-01' + (i * 37 % 4000 - 2000) END, \
    timestamp '2020-01-01' + (i * 7919 % 100000) * interval '1 minute' + i * interval '1 microsecond', \
    timestamptz '2020-01-01 00:00+00' + (i * 104729 % 100000) * interval '1 minute', \
    time '00:00' + (i * 7919 % 86400) * interval '1 second', \
    make_interval(months => i % 5, days => i % 40, secs => i * 13 % 100000), \
    md5(i::text)::uuid, i % 3 = 0, \
    CASE i % 17 WHEN 0 THEN 'NaN' WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity' ELSE i * 1.5 - 50 END, \
    (i * 12.345 - 300)::numeric(12, 3) \
    FROM generate_series(1, 90) i";

/// `loaded`: what the COPY test loads (empty on every shard; `loaded_src` on the oracle
/// holds the rows it loads).
const LOADED_TABLE: &str =
    "CREATE TABLE loaded (id bigint, label text, n int CHECK (n IS NULL OR n <> -1))";

/// A user-defined aggregate, on every database.
const MY_SUM: &str = "CREATE AGGREGATE my_sum (int) (SFUNC = int4pl, STYPE = int);";

fn row_insert(id: i64) -> String {
    let value = if id % 7 == 0 {
        "NULL".to_string()
    } else {
        format!("'v{}'", id % 11)
    };
    format!(
        "INSERT INTO items VALUES ({id}, {}, {value}, {}.{:02});\n",
        id % 5,
        id * 3,
        id % 100
    )
}

/// Pool settings: statements with no shard run on every shard, or are refused.
const ALL: &str = "query_parser_enabled = true\ndefault_shard = \"all\"";
const ERROR: &str = "query_parser_enabled = true\ndefault_shard = \"error\"";

async fn connect_xs(pooler: &Pooler) -> Client {
    let client = pooler.connect(SHARD_USER, SHARD_PASS, POOL).await;
    client.unwrap_or_else(|e| panic!("connect to {POOL}: {e:?}\n{}", pooler.logs()))
}

/// A pooler with pool `xs` over xs_shard0..2 (primary only), `extra` in the pool section.
fn pooler(cluster: &Cluster, extra: &str) -> Pooler {
    pooler_sized(cluster, extra, 4, 10_000)
}

/// [`pooler`] with `pool_size` servers per shard, waiting at most `checkout_ms` for one.
fn pooler_sized(cluster: &Cluster, extra: &str, pool_size: u32, checkout_ms: u64) -> Pooler {
    Pooler::start(&pooler_toml(cluster, extra, pool_size, checkout_ms))
}

/// The configuration of [`pooler_sized`].
fn pooler_toml(cluster: &Cluster, extra: &str, pool_size: u32, checkout_ms: u64) -> String {
    let mut toml = general_toml(free_port()).replace(
        "connect_timeout = 10000",
        &format!("connect_timeout = {checkout_ms}"),
    );
    let key = if extra.contains("automatic_sharding_key") {
        ""
    } else {
        "automatic_sharding_key = \"items.id\"\n"
    };
    let extra = format!("{key}{extra}");
    toml.push_str(&support::routing::primary_shards_pool(
        cluster, POOL, "xs_shard", &extra, pool_size,
    ));
    toml
}

async fn oracle(cluster: &Cluster) -> Client {
    connect(&format!(
        "host={} port={} user={SHARD_USER} password={SHARD_PASS} dbname=xs_oracle",
        cluster.primary.host, cluster.primary.port
    ))
    .await
    .expect("connect to the oracle")
}

/// Rows (sorted: these statements fix no order) and the CommandComplete row count.
async fn answer(client: &Client, sql: &str) -> Result<(Vec<Vec<String>>, u64), String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}: {e:?}"))?;
    let count = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .unwrap_or_default();
    let mut all = try_rows(client, sql).await.map_err(|e| format!("{e:?}"))?;
    all.sort();
    Ok((all, count))
}

/// Every statement, through the pooler and on the oracle: the same rows and row count.
async fn same_as_oracle(through: &Client, oracle: &Client, statements: &[&str]) {
    for sql in statements {
        let want = answer(oracle, sql).await.expect("the oracle answers");
        let got = answer(through, sql).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, want, "{sql}: through the pooler vs one database");
    }
}

const PLAIN_SELECTS: &[&str] = &[
    "SELECT * FROM items",
    "SELECT id, value FROM items WHERE grp = 3",
    "SELECT id, lower(value) AS v, amount * 2 FROM items WHERE value IS NULL OR amount > 500",
    "SELECT id FROM items WHERE id IN (1, 2, 3, 4, 5, 6)",
    "SELECT id FROM items WHERE id = 100000",
];

/// ORDER BY output columns (and LIMIT): the shards' sorted rows merged; the sort keys are
/// unique, so one database's order is the only right one.
const ORDERED: &[&str] = &[
    "SELECT id, amount FROM items ORDER BY id",
    "SELECT * FROM items ORDER BY amount DESC, id LIMIT 10",
    "SELECT id, grp FROM items ORDER BY grp, id DESC LIMIT 25",
    "SELECT id, value FROM items WHERE grp = 1 ORDER BY 1 DESC",
    "SELECT id AS k FROM items ORDER BY k LIMIT 5",
    "SELECT id, CASE WHEN id % 4 = 0 THEN NULL ELSE id % 9 END AS m FROM items ORDER BY m NULLS FIRST, id",
    "SELECT id, CASE WHEN id % 4 = 0 THEN NULL ELSE id % 9 END AS m FROM items ORDER BY m DESC NULLS LAST, id LIMIT 40",
    "SELECT id, amount::float8 AS f FROM items ORDER BY f DESC LIMIT 3",
    "SELECT id FROM items WHERE id < 0 ORDER BY id",
    "SELECT id FROM items ORDER BY id LIMIT 0",
    "SELECT id, amount FROM items ORDER BY id LIMIT 10 OFFSET 25",
    "SELECT id, amount FROM items ORDER BY amount DESC, id OFFSET 290",
    "SELECT id FROM items ORDER BY id OFFSET 1000",
    "SELECT id FROM items ORDER BY id LIMIT NULL OFFSET 295",
];

/// Aggregates without GROUP BY: each shard's row combined into the whole table's.
const AGGREGATES: &[&str] = &[
    "SELECT count(*) FROM items",
    "SELECT count(*) AS n FROM items WHERE grp = 3",
    "SELECT count(value), sum(id), sum(grp), sum(amount), min(amount), max(amount), min(id), max(grp) FROM items",
    "SELECT sum(amount - 500), min(amount - 500), max(-id) FROM items WHERE value IS NOT NULL",
    "SELECT bool_and(id > 0), bool_or(value IS NULL), every(grp < 3) FROM items",
    "SELECT count(*), sum(id), min(amount) FROM items WHERE id < 0",
    "SELECT min(id::int4), max(id::int2), min(amount::float8), max(id::float4) FROM items",
];

/// GROUP BY, DISTINCT and HAVING: the shards' groups grouped again; ORDER BY, OFFSET and
/// LIMIT after. Rows are compared sorted (`ORDERED_GROUPS`: in order).
const GROUPED: &[&str] = &[
    "SELECT grp, count(*) FROM items GROUP BY grp",
    "SELECT grp AS g, count(*), sum(amount), min(value), max(id) FROM items GROUP BY g",
    "SELECT grp AS g, count(*) FROM items WHERE value IS NOT NULL GROUP BY g HAVING count(*) >= 10 AND NOT grp = 2",
    "SELECT value, grp, bool_or(id > 290), count(*) FROM items GROUP BY value, grp HAVING value IS NULL OR 5 < count(*)",
    "SELECT DISTINCT grp FROM items",
    "SELECT DISTINCT value, grp FROM items",
    "SELECT count(*) FROM items HAVING count(*) > 1000",
    "SELECT count(*), sum(amount) FROM items HAVING count(*) > 100",
    "SELECT avg(amount), avg(id), avg(grp::int2) AS g, count(*) FROM items",
    "SELECT avg(amount) FROM items WHERE id < 0",
    "SELECT grp, avg(amount) AS a, avg(id) FROM items GROUP BY grp HAVING avg(amount) > 100",
];

const ORDERED_GROUPS: &[&str] = &[
    "SELECT grp, count(*), sum(amount), min(value), max(id) FROM items GROUP BY grp ORDER BY grp",
    "SELECT value, count(*) AS n FROM items GROUP BY value ORDER BY n DESC, value LIMIT 5",
    "SELECT grp, sum(id) FROM items GROUP BY 1 HAVING sum(id) > 9000 ORDER BY 1 DESC",
    "SELECT DISTINCT grp, value FROM items ORDER BY grp, value OFFSET 3 LIMIT 10",
    // Aggregates HAVING or ORDER BY needs that are not output columns.
    "SELECT grp FROM items GROUP BY grp HAVING count(*) >= 60 AND sum(id) > 9000 ORDER BY grp",
    "SELECT value, max(id) FROM items GROUP BY value HAVING min(amount) < 30 ORDER BY count(*) DESC, value NULLS FIRST LIMIT 6",
    "SELECT value AS v FROM items GROUP BY v ORDER BY avg(amount) DESC, v OFFSET 2 LIMIT 5",
    "SELECT grp, count(*) FROM items GROUP BY grp HAVING sum(id) > 1 ORDER BY sum(id)",
    "SELECT DISTINCT ON (grp) grp, id, amount FROM items ORDER BY grp, amount DESC, id",
    "SELECT DISTINCT ON (value) value, id FROM items ORDER BY value NULLS FIRST, id DESC LIMIT 4 OFFSET 1",
];

/// Constructs not merged yet: refused with 0A000 naming them, never a partial answer.
const REFUSED: &[(&str, &str)] = &[
    (
        "SELECT id FROM items ORDER BY value",
        "exactly one output column",
    ),
    (
        "SELECT id FROM items ORDER BY lower(value)",
        "not an output column",
    ),
    (
        "SELECT avg(amount::float8) FROM items",
        "avg() of a value of type 701",
    ),
    ("SELECT count(*) + 1 FROM items", "count()"),
    (
        "SELECT sum(amount::float8) FROM items",
        "sum() of a value of type 701",
    ),
    // A user-defined aggregate is one too (found in pg_proc, not by its name).
    ("SELECT my_sum(grp) FROM items", "my_sum()"),
    ("SELECT DISTINCT ON (grp) grp, id FROM items", "DISTINCT ON"),
    ("SELECT grp, id FROM items GROUP BY grp", "neither grouped"),
    (
        "SELECT grp, stddev(amount) FROM items GROUP BY grp",
        "neither grouped",
    ),
    (
        "SELECT grp FROM items GROUP BY grp, id",
        "not an output column",
    ),
    (
        "SELECT grp, count(*) FROM items GROUP BY grp HAVING sum(id) > count(*)",
        "HAVING other than",
    ),
    (
        "SELECT grp FROM items GROUP BY grp HAVING stddev(amount) > 1",
        "HAVING other than",
    ),
    (
        "SELECT grp FROM items GROUP BY grp ORDER BY 2",
        "ORDER BY a position that is not in the select list",
    ),
    (
        "SELECT a.id FROM items a JOIN items b ON a.id = b.id",
        "joins",
    ),
    (
        "SELECT id FROM items WHERE id IN (SELECT id FROM items)",
        "subqueries",
    ),
    ("SELECT row_number() OVER () FROM items", "window functions"),
    (
        "SELECT id, random() AS r FROM items ORDER BY r",
        "volatile function",
    ),
    (
        "SELECT now()::date AS d, count(*) FROM items GROUP BY 1",
        "volatile function",
    ),
    ("INSERT INTO items (grp) VALUES (1)", "INSERT"),
    ("UPDATE items SET id = id + 1", "sharding key"),
    (
        "DELETE FROM items USING slow WHERE slow.n = items.grp",
        "reading other tables",
    ),
];

#[test]
fn default_shard_all_answers_plain_selects_as_one_database_and_refuses_the_rest() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        same_as_oracle(&client, &oracle, PLAIN_SELECTS).await;
        same_as_oracle(&client, &oracle, AGGREGATES).await;
        same_as_oracle(&client, &oracle, GROUPED).await;
        for sql in ORDERED.iter().chain(ORDERED_GROUPS) {
            let want = try_rows(&oracle, sql).await.expect("the oracle answers");
            let got = try_rows(&client, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            assert_eq!(got, want, "{sql}: in the same order as one database");
        }
        // LIMIT without ORDER BY: that many of the table's rows.
        let (some, count) = answer(&client, "SELECT id, grp FROM items LIMIT 7")
            .await
            .expect("LIMIT 7");
        let (all, _) = answer(&oracle, "SELECT id, grp FROM items")
            .await
            .expect("oracle");
        assert_eq!((some.len(), count), (7, 7));
        assert!(some.iter().all(|row| all.contains(row)), "{some:?}");
        // Statements reading no table of the application's run on one shard: one answer.
        same_as_oracle(
            &client,
            &oracle,
            &["SELECT 1 AS one", "SELECT n FROM slow"][..1],
        )
        .await;
        let types = rows(
            &client,
            "SELECT typname FROM pg_catalog.pg_type WHERE oid = 20",
        )
        .await;
        assert_eq!(types, [["int8"]]);
        // A key picks its shard as before.
        let one = rows(&client, "SELECT id, grp FROM items WHERE id = 42").await;
        assert_eq!(one, [["42", "2"]]);
        for (sql, construct) in REFUSED {
            let (code, message) = expect_error(sql, try_rows(&client, sql).await);
            assert_eq!(code, "0A000", "{sql}: {message}");
            assert!(
                message.contains(construct),
                "{sql}: {message:?} names {construct}"
            );
        }
        // The extended protocol: unnamed and named statements, parameters, binary results.
        for (sql, grp) in [
            ("SELECT id, value FROM items WHERE grp = $1", 1i32),
            ("SELECT id, value FROM items WHERE grp <> $1", 4),
        ] {
            let mut want: Vec<(i64, Option<String>)> = oracle
                .query(sql, &[&grp])
                .await
                .expect("oracle")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let statement = client
                .prepare(sql)
                .await
                .expect("prepare through the pooler");
            for _ in 0..2 {
                let mut got: Vec<(i64, Option<String>)> = client
                    .query(&statement, &[&grp])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "{sql} over the extended protocol");
            }
        }
        // LIMIT and OFFSET as parameters; negative ones refused as PostgreSQL does.
        let sql = "SELECT id, value FROM items ORDER BY id DESC LIMIT $1 OFFSET $2";
        for (limit, offset) in [(5i64, 7i64), (0, 0), (400, 290)] {
            let want: Vec<(i64, Option<String>)> = oracle
                .query(sql, &[&limit, &offset])
                .await
                .expect("oracle")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let got: Vec<(i64, Option<String>)> = client
                .query(sql, &[&limit, &offset])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert_eq!(got, want, "LIMIT {limit} OFFSET {offset}");
        }
        for (limit, offset, code) in [(-1i64, 0i64, "2201W"), (1, -1, "2201X")] {
            let (got, _) = expect_error("negative", client.query(sql, &[&limit, &offset]).await);
            assert_eq!(got, code);
        }
        // The client and its pool are fine after each refusal.
        same_as_oracle(&client, &oracle, PLAIN_SELECTS).await;
        // A shard's error is the statement's, naming the shard, like the oracle's code.
        let sql = "SELECT 1 / (id - 42) FROM items";
        let (oracle_code, _) = expect_error("oracle", oracle.simple_query(sql).await);
        let err = client
            .simple_query(sql)
            .await
            .expect_err("division by zero on one shard");
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), oracle_code);
        let shard = pg_bigint_hash(42, SHARDS);
        assert!(
            db.detail()
                .unwrap_or_default()
                .contains(&format!("on shard {shard}")),
            "{db:?}"
        );
        same_as_oracle(&client, &oracle, PLAIN_SELECTS).await;
    });
}

#[path = "cross_shard/copy.rs"]
mod copy;
#[path = "cross_shard/drivers.rs"]
mod drivers;
#[path = "cross_shard/execution.rs"]
mod execution;
#[path = "cross_shard/inserts.rs"]
mod inserts;
#[path = "cross_shard/several.rs"]
mod several;
#[path = "cross_shard/transactions.rs"]
mod transactions;
#[path = "cross_shard/types.rs"]
mod types;

#[test]
fn default_shard_error_refuses_statements_without_a_shard_and_says_how_to_pick_one() {
    let cluster = cluster();
    let pooler = pooler(cluster, ERROR);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        for sql in [
            "SELECT * FROM items",
            "SELECT count(*) FROM items",
            "DELETE FROM items",
        ] {
            let err = client.simple_query(sql).await.expect_err(sql);
            let db = err.as_db_error().expect("an ErrorResponse");
            assert_eq!(db.code().code(), "0A000", "{sql}");
            assert!(db.message().contains("names no shard"), "{sql}: {db:?}");
            assert!(
                db.hint().unwrap_or_default().contains("SET SHARD TO"),
                "{db:?}"
            );
        }
        assert_eq!(rows(&client, "SELECT 1").await, [["1"]]);
        assert_eq!(
            rows(&client, "SELECT id FROM items WHERE id = 9").await,
            [["9"]]
        );
        client
            .simple_query("SET SHARD TO 1")
            .await
            .expect("SET SHARD");
        let got = rows(&client, "SELECT count(*) FROM items").await;
        let want = (1..=ROWS)
            .filter(|id| pg_bigint_hash(*id, SHARDS) == 1)
            .count();
        assert_eq!(got, [[want.to_string()]]);
    });
}

#[test]
fn set_shard_to_all_runs_on_every_shard_until_the_next_set_shard() {
    let cluster = cluster();
    // PgCat's default: shard_0, parser off.
    let pooler = pooler(cluster, "");
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        let before = rows(&client, "SELECT id FROM items").await.len();
        let on_0 = (1..=ROWS)
            .filter(|id| pg_bigint_hash(*id, SHARDS) == 0)
            .count();
        assert_eq!(before, on_0, "default_shard = shard_0 as PgCat");
        for set in ["SET SHARD TO 'ALL'", "set shard to all"] {
            client.simple_query(set).await.expect(set);
            assert_eq!(rows(&client, "SHOW SHARD").await, [["all"]]);
            same_as_oracle(&client, &oracle, PLAIN_SELECTS).await;
            client
                .simple_query("SET SHARD TO 2")
                .await
                .expect("SET SHARD TO 2");
            assert_eq!(rows(&client, "SHOW SHARD").await, [["2"]]);
            let on_2 = (1..=ROWS)
                .filter(|id| pg_bigint_hash(*id, SHARDS) == 2)
                .count();
            assert_eq!(rows(&client, "SELECT id FROM items").await.len(), on_2);
        }
        // Also over the extended protocol, like the other extensions.
        client
            .execute("SET SHARD TO 'all'", &[])
            .await
            .expect("extended SET SHARD");
        assert_eq!(rows(&client, "SHOW SHARD").await, [["all"]]);
        same_as_oracle(&client, &oracle, PLAIN_SELECTS).await;
    });
}

#[test]
fn updates_and_deletes_run_on_every_shard_all_or_nothing() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        let both = |sql: &'static str| {
            let (client, oracle) = (&client, &oracle);
            async move {
                let want = answer(oracle, sql).await;
                let got = answer(client, sql).await;
                (got, want)
            }
        };
        for sql in [
            "UPDATE ledger SET n = n + 1 WHERE n % 20 = 0",
            "DELETE FROM ledger WHERE id % 7 = 0 RETURNING id, n",
            "UPDATE ledger SET n = -n WHERE id > 1000",
        ] {
            let (got, want) = both(sql).await;
            assert_eq!(got, want, "{sql}: rows and count as one database");
        }
        let check = "SELECT id, n FROM ledger";
        same_as_oracle(&client, &oracle, &[check]).await;
        // One shard fails (division by zero where id = 5): nothing changed anywhere.
        let sql = "UPDATE ledger SET n = n / (id - 5)";
        let (got, want) = both(sql).await;
        assert!(got.is_err() && want.is_err(), "{got:?} {want:?}");
        same_as_oracle(&client, &oracle, &[check]).await;
        // The extended protocol, with parameters.
        let update = "UPDATE ledger SET n = n + $1 WHERE id < $2";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&3i32, &30i64];
        let want = oracle.execute(update, &params).await.expect("oracle");
        let got = client
            .execute(update, &params)
            .await
            .expect("through the pooler");
        assert_eq!(got, want, "{update}: the count");
        same_as_oracle(&client, &oracle, &[check]).await;
    });
}
