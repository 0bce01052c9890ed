//! Tests of `shard_key.rs`, including PgCat's automatic-sharding unit tests (TPC-C queries
//! with `*.w_id`, `data.id`, INSERT/UPDATE/DELETE, bind parameters).

use super::*;
use crate::hash::pg_bigint_hash;
use KeyValue::{Literal, Param};

fn key(spec: &str) -> KeyColumn {
    KeyColumn::parse(spec).expect("valid key spec")
}

fn keys(sql: &str, spec: &str) -> Vec<KeyValue> {
    assert!(Parsed::parse(sql).is_some(), "{sql:?} should parse");
    find_keys(sql, &key(spec))
}

/// The single shard (of 3, pg_bigint_hash) all literal keys agree on, as PgCat computes it.
fn auto_shard(sql: &str, spec: &str) -> Option<usize> {
    let values = keys(sql, spec);
    let resolved = resolve_keys(&values, |_| None)?;
    let mut shards: Vec<usize> = resolved.iter().map(|k| pg_bigint_hash(*k, 3)).collect();
    shards.dedup();
    match shards.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn w(sql: &str) -> Option<usize> {
    auto_shard(sql, "*.w_id")
}

#[test]
fn key_column_parse() {
    assert_eq!(
        KeyColumn::parse("data.id"),
        Some(KeyColumn {
            table: Some("data".into()),
            column: "id".into()
        })
    );
    assert_eq!(
        KeyColumn::parse("*.W_ID"),
        Some(KeyColumn {
            table: None,
            column: "w_id".into()
        })
    );
    assert_eq!(
        KeyColumn::parse("\"Data\".\"Id\""),
        Some(KeyColumn {
            table: Some("data".into()),
            column: "id".into()
        })
    );
    assert_eq!(
        KeyColumn::parse("'t.c'").map(|k| k.column),
        Some("c".into())
    );
    for bad in ["id", "a.b.c", ".id", "t.", "", "*"] {
        assert_eq!(KeyColumn::parse(bad), None, "{bad:?}");
    }
}

/// PgCat's `test_automatic_sharding_key` (3 shards: 5 → 2, 6 → 0).
#[test]
fn pgcat_automatic_sharding_key() {
    assert_eq!(
        auto_shard("SELECT * FROM data WHERE id = 5", "data.id"),
        Some(2)
    );
    assert_eq!(
        auto_shard(
            "SELECT one, two, three FROM public.data WHERE id = 6",
            "data.id"
        ),
        Some(0)
    );
    assert_eq!(
        auto_shard(
            "SELECT * FROM data
            INNER JOIN t2 ON data.id = 5
            AND t2.data_id = data.id
        WHERE data.id = 5",
            "data.id"
        ),
        Some(2)
    );
    // Ambiguous bare column with two tables: no key.
    assert_eq!(
        auto_shard(
            "SELECT * FROM t2 INNER JOIN data ON id = 6 AND data.id = t2.data_id",
            "data.id"
        ),
        None
    );
    assert_eq!(
        auto_shard(r#"SELECT * FROM "public"."data" WHERE "id" = 6"#, "data.id"),
        Some(0)
    );
    assert_eq!(
        auto_shard(
            r#"SELECT * FROM "public"."data" WHERE "data"."id" = 5"#,
            "data.id"
        ),
        Some(2)
    );
    assert_eq!(
        auto_shard(
            "SELECT * FROM table_x WHERE unique_enough_column_name = 6",
            "*.unique_enough_column_name"
        ),
        Some(0)
    );
    assert_eq!(
        auto_shard(
            "SELECT * FROM table_y WHERE another_key = 5",
            "*.unique_enough_column_name"
        ),
        None
    );
}

/// PgCat's `test_automatic_sharding_key_tpcc` with `*.w_id`.
#[test]
fn pgcat_tpcc() {
    let routed = [
        "SELECT * FROM my_tbl WHERE w_id = 5",
        "SELECT NO_O_ID FROM NEW_ORDER WHERE NO_D_ID = 7 AND W_ID = 5 AND NO_O_ID > 3 LIMIT 3",
        "SELECT NO_O_ID FROM NEW_ORDER no WHERE no.NO_D_ID = 7 AND no.W_ID = 5 AND no.NO_O_ID > 3 LIMIT 3",
        "DELETE FROM NEW_ORDER WHERE NO_D_ID = 7 AND W_ID = 5 AND NO_O_ID = 3",
        "SELECT O_C_ID FROM ORDERS WHERE O_ID = 3 AND O_D_ID = 3 AND W_ID = 5",
        "UPDATE ORDERS SET O_CARRIER_ID = 3 WHERE O_ID = 3 AND O_D_ID = 3 AND W_ID = 5",
        "UPDATE ORDER_LINE SET OL_DELIVERY_D = 3 WHERE OL_O_ID = 3 AND OL_D_ID = 3 AND W_ID = 5",
        "SELECT SUM(OL_AMOUNT) FROM ORDER_LINE WHERE OL_O_ID = 3 AND OL_D_ID = 3 AND W_ID = 5",
        "UPDATE CUSTOMER SET C_BALANCE = C_BALANCE + 3 WHERE C_ID = 3 AND C_D_ID = 3 AND W_ID = 5",
        "SELECT W_TAX FROM WAREHOUSE WHERE W_ID = 5",
        "SELECT D_TAX, D_NEXT_O_ID FROM DISTRICT WHERE D_ID = 3 AND W_ID = 5",
        "UPDATE DISTRICT SET D_NEXT_O_ID = 3 WHERE D_ID = 3 AND W_ID = 5",
        "SELECT C_DISCOUNT, C_LAST, C_CREDIT FROM CUSTOMER WHERE W_ID = 5 AND C_D_ID = 3 AND C_ID = 3",
        "INSERT INTO ORDERS (O_ID, O_D_ID, W_ID, O_C_ID, O_ENTRY_D, O_CARRIER_ID, O_OL_CNT, O_ALL_LOCAL) VALUES (3, 3, 5, 3, 3, 3, 3, 3)",
        "INSERT INTO NEW_ORDER (NO_O_ID, NO_D_ID, W_ID) VALUES (3, 3, 5)",
        "SELECT S_QUANTITY, S_DATA, S_YTD, S_ORDER_CNT, S_REMOTE_CNT, S_DIST_03 FROM STOCK WHERE S_I_ID = 3 AND W_ID = 5",
        "UPDATE STOCK SET S_QUANTITY = 3, S_YTD = 3, S_ORDER_CNT = 3, S_REMOTE_CNT = 3 WHERE S_I_ID = 3 AND W_ID = 5",
        "INSERT INTO ORDER_LINE (OL_O_ID, OL_D_ID, W_ID, OL_NUMBER, OL_I_ID, OL_SUPPLY_W_ID, OL_DELIVERY_D, OL_QUANTITY, OL_AMOUNT, OL_DIST_INFO) VALUES (3, 3, 5, 3, 3, 3, 3, 3, 3, 3)",
        "SELECT C_ID, C_FIRST, C_MIDDLE, C_LAST, C_BALANCE FROM CUSTOMER WHERE W_ID = 5 AND C_D_ID = 3 AND C_ID = 3",
        "SELECT C_ID, C_FIRST, C_MIDDLE, C_LAST, C_BALANCE FROM CUSTOMER WHERE W_ID = 5 AND C_D_ID = 3 AND C_LAST = '3' ORDER BY C_FIRST",
        "SELECT O_ID, O_CARRIER_ID, O_ENTRY_D FROM ORDERS WHERE W_ID = 5 AND O_D_ID = 3 AND O_C_ID = 3 ORDER BY O_ID DESC LIMIT 3",
        "SELECT OL_SUPPLY_W_ID, OL_I_ID, OL_QUANTITY, OL_AMOUNT, OL_DELIVERY_D FROM ORDER_LINE WHERE W_ID = 5 AND OL_D_ID = 3 AND OL_O_ID = 3",
        "SELECT W_NAME, W_STREET_1, W_STREET_2, W_CITY, W_STATE, W_ZIP FROM WAREHOUSE WHERE W_ID = 5",
        "UPDATE WAREHOUSE SET W_YTD = W_YTD + 3 WHERE W_ID = 5",
        "SELECT D_NAME, D_STREET_1, D_STREET_2, D_CITY, D_STATE, D_ZIP FROM DISTRICT WHERE W_ID = 5 AND D_ID = 3",
        "UPDATE DISTRICT SET D_YTD = D_YTD + 3 WHERE W_ID  = 5 AND D_ID = 3",
        "SELECT C_ID, C_FIRST, C_MIDDLE, C_LAST, C_STREET_1, C_STREET_2, C_CITY, C_STATE, C_ZIP, C_PHONE, C_SINCE, C_CREDIT, C_CREDIT_LIM, C_DISCOUNT, C_BALANCE, C_YTD_PAYMENT, C_PAYMENT_CNT, C_DATA FROM CUSTOMER WHERE W_ID = 5 AND C_D_ID = 3 AND C_ID = 3",
        "UPDATE CUSTOMER SET C_BALANCE = 3, C_YTD_PAYMENT = 3, C_PAYMENT_CNT = 3, C_DATA = 3 WHERE W_ID = 5 AND C_D_ID = 3 AND C_ID = 3",
        "INSERT INTO HISTORY (H_C_ID, H_C_D_ID, H_C_W_ID, H_D_ID, W_ID, H_DATE, H_AMOUNT, H_DATA) VALUES (3, 3, 5, 3, 5, 3, 3, 3)",
        "SELECT D_NEXT_O_ID FROM DISTRICT WHERE W_ID = 5 AND D_ID = 3",
        "SELECT COUNT(DISTINCT(OL_I_ID)) FROM ORDER_LINE, STOCK
                 WHERE ORDER_LINE.W_ID = 5
                 AND OL_D_ID = 3
                 AND OL_O_ID < 3
                 AND OL_O_ID >= 3
                 AND STOCK.W_ID = 5
                 AND S_I_ID = OL_I_ID
                 AND S_QUANTITY < 3",
        "UPDATE ORDERS o SET o.O_CARRIER_ID = 3 WHERE o.O_ID = 3 AND o.O_D_ID = 3 AND o.W_ID = 5",
    ];
    for sql in routed {
        assert_eq!(w(sql), Some(2), "{sql}");
    }
    for sql in [
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "COMMIT",
        "ROLLBACK",
        "SELECT I_PRICE, I_NAME, I_DATA FROM ITEM WHERE I_ID = 3",
    ] {
        assert_eq!(w(sql), None, "{sql}");
    }
    // A distributed query: two shards, so no single shard.
    assert_eq!(
        w("SELECT COUNT(DISTINCT(OL_I_ID)) FROM ORDER_LINE, STOCK
                 WHERE ORDER_LINE.W_ID = 5
                 AND OL_D_ID = 3
                 AND STOCK.W_ID = 7
                 AND S_I_ID = OL_I_ID"),
        None
    );
}

/// PgCat's `test_automatic_sharding_insert_update_delete`: updating the key is flagged.
#[test]
fn key_updates_are_detected() {
    let k = key("*.w_id");
    for sql in [
        "UPDATE ORDERS SET w_id = 3 WHERE O_ID = 3 AND O_D_ID = 3 AND W_ID = 5",
        "UPDATE ORDERS o SET o.W_ID = 3 WHERE o.O_ID = 3 AND o.O_D_ID = 3 AND o.W_ID = 5",
        "UPDATE ORDERS SET (a, w_id) = (1, 2) WHERE W_ID = 5",
    ] {
        let parsed = Parsed::parse(sql).expect("parses");
        assert!(updates_key(&parsed, &k), "{sql}");
    }
    let parsed =
        Parsed::parse("UPDATE ORDERS o SET o.O_CARRIER_ID = 3 WHERE o.W_ID = 5").expect("parses");
    assert!(!updates_key(&parsed, &k));
    let parsed = Parsed::parse("UPDATE other SET id = 3 WHERE id = 5").expect("parses");
    assert!(!updates_key(&parsed, &key("data.id")));
    let parsed = Parsed::parse("UPDATE data SET id = 3 WHERE id = 5").expect("parses");
    assert!(updates_key(&parsed, &key("data.id")));
}

#[test]
fn where_shapes() {
    let k = "data.id";
    assert_eq!(keys("SELECT * FROM data WHERE id = $1", k), vec![Param(1)]);
    assert_eq!(keys("SELECT * FROM data WHERE 5 = id", k), vec![Literal(5)]);
    assert_eq!(
        keys("SELECT * FROM data WHERE id = -7", k),
        vec![Literal(-7)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE id = '8'", k),
        vec![Literal(8)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE id = $2::bigint", k),
        vec![Param(2)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE (id = (9))", k),
        vec![Literal(9)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE id = -9223372036854775808", k),
        vec![Literal(i64::MIN)]
    );
    assert_eq!(
        keys("DELETE FROM data WHERE id IN (1, 2, $3)", k),
        vec![Literal(1), Literal(2), Param(3)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE id = ANY(ARRAY[4, 5])", k),
        vec![Literal(4), Literal(5)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE id = 1 OR id = 2", k),
        vec![Literal(1), Literal(2)]
    );
    assert_eq!(
        keys("SELECT * FROM data WHERE (id = 1 OR id = 2) AND x = 3", k),
        vec![Literal(1), Literal(2)]
    );
    assert_eq!(
        keys("SELECT * FROM data d WHERE d.id = 3", k),
        vec![Literal(3)]
    );
    assert_eq!(
        keys("SELECT * FROM data AS d WHERE d.id = 3 AND d.x > 1", k),
        vec![Literal(3)]
    );
    assert_eq!(
        keys(
            "SELECT * FROM data WHERE id = 1 UNION SELECT * FROM data WHERE id = 2",
            k
        ),
        vec![Literal(1), Literal(2)]
    );
    assert_eq!(
        keys("SELECT * FROM (SELECT * FROM data WHERE id = 4) s", k),
        Vec::<KeyValue>::new()
    );
    assert_eq!(
        keys(
            "WITH s AS (SELECT * FROM data WHERE id = 4) SELECT * FROM s",
            k
        ),
        vec![Literal(4)]
    );
    assert_eq!(
        keys("EXPLAIN SELECT * FROM data WHERE id = 4", k),
        vec![Literal(4)]
    );
    assert_eq!(
        keys(
            "SELECT * FROM data WHERE id = 1; SELECT * FROM data WHERE id = 2",
            k
        ),
        vec![Literal(1), Literal(2)]
    );

    let none: Vec<KeyValue> = Vec::new();
    for sql in [
        "SELECT * FROM data WHERE id = 1 OR x = 2",
        "SELECT * FROM data WHERE id > 1",
        "SELECT * FROM data WHERE id <> 1",
        "SELECT * FROM data WHERE NOT (id = 1)",
        "SELECT * FROM data WHERE id NOT IN (1, 2)",
        "SELECT * FROM data WHERE id IN (1, x)",
        "SELECT * FROM data WHERE id IN (SELECT 1)",
        "SELECT * FROM data WHERE id = x",
        "SELECT * FROM data WHERE id = 1.5",
        "SELECT * FROM data WHERE id = 'abc'",
        "SELECT * FROM data WHERE id = ANY($1)",
        "SELECT * FROM other WHERE id = 1",
        "SELECT * FROM other o WHERE o.id = 1",
        // `data` is an alias of another table here.
        "SELECT * FROM other data WHERE data.id = 1",
        "SELECT * FROM data LEFT JOIN t2 ON data.id = 5",
        "SELECT * FROM data, t2 WHERE id = 1",
        "SELECT * FROM data WHERE id = 1 UNION SELECT * FROM data",
        "SELECT 1",
        "INSERT INTO data VALUES (1)",
        "INSERT INTO data (id) SELECT 1",
        "INSERT INTO data (id) VALUES (1), (DEFAULT)",
        "INSERT INTO other (id) VALUES (1)",
    ] {
        assert_eq!(keys(sql, k), none, "{sql}");
    }
}

#[test]
fn dml_shapes() {
    let k = "data.id";
    assert_eq!(
        keys(
            "INSERT INTO data (x, id) VALUES ('a', 1), ('b', $2), ('c', -3)",
            k
        ),
        vec![Literal(1), Param(2), Literal(-3)]
    );
    assert_eq!(
        keys("INSERT INTO public.data (id) VALUES (7) RETURNING *", k),
        vec![Literal(7)]
    );
    assert_eq!(
        keys("UPDATE data SET x = 1 WHERE id = $1", k),
        vec![Param(1)]
    );
    assert_eq!(
        keys(
            "UPDATE data d SET x = 1 FROM t2 WHERE d.id = 4 AND t2.x = d.x",
            k
        ),
        vec![Literal(4)]
    );
    assert_eq!(keys("DELETE FROM data WHERE id = 4", k), vec![Literal(4)]);
    assert_eq!(
        keys("DELETE FROM data d USING t2 WHERE d.id = 4", k),
        vec![Literal(4)]
    );
    assert_eq!(
        keys(
            "WITH x AS (DELETE FROM data WHERE id = 3 RETURNING *) SELECT * FROM x",
            k
        ),
        vec![Literal(3)]
    );
    assert_eq!(
        keys("SELECT * FROM data JOIN t2 ON data.id = 6", k),
        vec![Literal(6)]
    );
    assert_eq!(
        keys("SELECT * FROM (data JOIN t2 ON data.id = 6)", k),
        vec![Literal(6)]
    );
}

#[test]
fn bind_params() {
    assert_eq!(bind_param_as_i64(b"5", false), Some(5));
    assert_eq!(bind_param_as_i64(b" -42 ", false), Some(-42));
    assert_eq!(bind_param_as_i64(b"abc", false), None);
    assert_eq!(bind_param_as_i64(b"", false), None);
    assert_eq!(bind_param_as_i64(&[0xff, 0xff], false), None);
    assert_eq!(bind_param_as_i64(&7i16.to_be_bytes(), true), Some(7));
    assert_eq!(bind_param_as_i64(&(-7i32).to_be_bytes(), true), Some(-7));
    assert_eq!(
        bind_param_as_i64(&i64::MAX.to_be_bytes(), true),
        Some(i64::MAX)
    );
    assert_eq!(bind_param_as_i64(&[1, 2, 3], true), None);
    assert_eq!(bind_param_as_i64(&[], true), None);
}

/// PgCat's `test_prepared_statements`: `$1` bound to text "5" routes to shard 2 of 3.
#[test]
fn prepared_statement_routing() {
    let values = keys("SELECT * FROM data WHERE id = $1", "data.id");
    assert_eq!(values, vec![Param(1)]);
    let bound: [&[u8]; 1] = [b"5"];
    let resolved = resolve_keys(&values, |n| bind_param_as_i64(bound.get(n - 1)?, false));
    assert_eq!(resolved, Some(vec![5]));
    assert_eq!(pg_bigint_hash(5, 3), 2);
    // A parameter that is not an integer: no key at all, not a partial one.
    assert_eq!(resolve_keys(&[Literal(1), Param(1)], |_| None), None);
}

#[test]
fn unparsable_sql_has_no_keys() {
    assert_eq!(
        find_keys("SELEC * FROM data WHERE id = 1", &key("data.id")),
        Vec::new()
    );
}
