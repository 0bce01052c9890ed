//! INSERT … VALUES with rows on several shards (issue 19): each row goes to its shard by the
//! key column, so PostgreSQL's hash partitions accept them all (a misrouted row would be
//! rejected); counts summed, RETURNING rows merged; all or nothing. `fresh` starts empty on
//! every shard and on the oracle, and every change is made on both.

use super::*;

/// Statements with no shard run on every shard; `fresh.id` is the key.
const FRESH: &str = "query_parser_enabled = true\ndefault_shard = \"all\"\n\
                     automatic_sharding_key = \"fresh.id\"";

const ALL_ROWS: &str = "SELECT id, label FROM fresh";

#[test]
fn inserts_of_several_rows_go_each_row_to_its_shard_all_or_nothing() {
    let cluster = cluster();
    let pooler = pooler(cluster, FRESH);
    runtime().block_on(async {
        let mut client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        let rows_sql = |ids: std::ops::RangeInclusive<i64>| {
            let values: Vec<String> = ids.map(|id| format!("({id}, 'l{id}')")).collect();
            format!("INSERT INTO fresh (id, label) VALUES {}", values.join(", "))
        };
        // Simple protocol: the tag counts every shard's rows; RETURNING rows merged.
        let plain = rows_sql(1..=12);
        let returning = format!("{} RETURNING id, label", rows_sql(13..=20));
        for sql in [&plain, &returning] {
            let want = answer(&oracle, sql).await.expect("oracle");
            let got = answer(&client, sql).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want, "{sql}");
        }
        same_as_oracle(&client, &oracle, &[ALL_ROWS]).await;

        // Extended protocol: parameters (the keys bound in binary by tokio-postgres) and
        // their types follow their rows.
        let sql = "INSERT INTO fresh (label, id) VALUES ($1, $2), ($3, $4), ($5, $6)";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&"p21", &21i64, &"p22", &22i64, &"p23", &23i64];
        assert_eq!(oracle.execute(sql, &params).await.expect("oracle"), 3);
        let inserted = client.execute(sql, &params).await;
        assert_eq!(inserted.expect("through the pooler"), 3);
        same_as_oracle(&client, &oracle, &[ALL_ROWS]).await;

        // All or nothing: a row failing its shard's CHECK leaves no shard changed; a row
        // without a key, and INSERT … SELECT, are refused.
        let bad =
            "INSERT INTO fresh (id, label) VALUES (31, 'ok'), (32, 'ok'), (33, 'bad'), (34, 'ok')";
        let (code, _) = expect_error("CHECK", client.simple_query(bad).await);
        assert_eq!(code, "23514");
        let no_key = "INSERT INTO fresh (id, label) VALUES (35, 'x'), ($1::bigint, 'y')";
        let null: Option<i64> = None;
        let (code, message) = expect_error("no key", client.execute(no_key, &[&null]).await);
        assert_eq!(code, "0A000", "{message}");
        for (sql, construct) in [
            (
                "INSERT INTO fresh SELECT id, value FROM items",
                "INSERT … SELECT",
            ),
            (
                "INSERT INTO fresh (label) VALUES ('x'), ('y')",
                "sharding key",
            ),
        ] {
            let (code, message) = expect_error(sql, client.simple_query(sql).await);
            assert_eq!(code, "0A000", "{sql}");
            assert!(message.contains(construct), "{message}");
        }
        same_as_oracle(&client, &oracle, &[ALL_ROWS]).await;

        // Inside a transaction block: the rows go with it, committed or rolled back.
        let tx = client.transaction().await.expect("BEGIN");
        tx.batch_execute(&rows_sql(40..=45))
            .await
            .expect("in the block");
        let n = tx
            .simple_query("SELECT count(*) FROM fresh WHERE id >= 40")
            .await;
        assert_eq!(
            support::texts(&n.expect("count")),
            [["6"]],
            "the block sees its rows"
        );
        tx.rollback().await.expect("ROLLBACK");
        let tx = client.transaction().await.expect("BEGIN");
        tx.batch_execute(&rows_sql(50..=55))
            .await
            .expect("in the block");
        tx.commit().await.expect("COMMIT");
        oracle
            .batch_execute(&rows_sql(50..=55))
            .await
            .expect("oracle");
        same_as_oracle(&client, &oracle, &[ALL_ROWS]).await;
    });
}
