//! Several statements in one Query, some with no shard (issue 19): each runs where it
//! belongs, in one transaction across shards as PostgreSQL runs such a string in one
//! implicit transaction. `tally` (hash-partitioned per shard, unsharded on the oracle) is
//! changed by the same strings on both sides and compared.

use super::*;

/// Each message of a simple query's answer as a line: column names, rows, row counts.
async fn transcript(client: &Client, sql: &str) -> Result<Vec<String>, String> {
    let messages = client.simple_query(sql).await.map_err(|e| {
        e.as_db_error()
            .map_or_else(|| format!("{e:?}"), |db| db.code().code().to_string())
    })?;
    Ok(messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::Row(row) => (0..row.len())
                .map(|i| row.get(i).unwrap_or("NULL"))
                .collect::<Vec<_>>()
                .join("|"),
            SimpleQueryMessage::CommandComplete(n) => format!("({n})"),
            SimpleQueryMessage::RowDescription(columns) => columns
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(","),
            _ => "?".to_string(),
        })
        .collect())
}

/// The same string through the pooler and on the oracle: the same answer or error code.
async fn same(client: &Client, oracle: &Client, sql: &str) -> Result<Vec<String>, String> {
    let want = transcript(oracle, sql).await;
    let got = transcript(client, sql).await;
    assert_eq!(got, want, "{sql}: through the pooler vs one database");
    got
}

const TALLY: &str = "SELECT id, n FROM tally ORDER BY id";

/// Statements with no shard run on every shard; `tally.id` is the sharding key.
const TALLY_KEY: &str = "query_parser_enabled = true\ndefault_shard = \"all\"\n\
                         automatic_sharding_key = \"tally.id\"";

#[test]
fn several_statements_in_one_query_run_each_where_it_belongs_in_one_transaction() {
    let cluster = cluster();
    let pooler = pooler(cluster, TALLY_KEY);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        // Reads on every shard, on a key's shard and on shard 0, in one string.
        for sql in [
            "SELECT count(*), sum(amount) FROM items; SELECT id, value FROM items ORDER BY id DESC LIMIT 3; SELECT 1 AS one",
            "SELECT id, n FROM tally WHERE id = 12; SELECT grp, count(*) FROM items GROUP BY grp ORDER BY grp",
            "SELECT count(*) FROM tally WHERE id = 7; SELECT n FROM tally WHERE id = 8;;",
        ] {
            let answer = same(&client, &oracle, sql).await;
            assert!(answer.is_ok_and(|lines| lines.len() > 4), "{sql}");
        }
        // Writes on every shard and on one, committed together after the last statement.
        let write = "UPDATE tally SET n = n + 1; UPDATE tally SET n = n + 10 WHERE id = 3; \
                     INSERT INTO tally (id, n) VALUES (21, 5), (22, 6); SELECT sum(n), count(*) FROM tally";
        let answer = same(&client, &oracle, write).await.expect("the string runs");
        assert_eq!(answer.last().map(String::as_str), Some("(1)"));
        same(&client, &oracle, TALLY).await.expect("tally");

        // An error ends the string and nothing of it stays, on any shard.
        let failing = "UPDATE tally SET n = n + 100; SELECT 1 / (n - n) FROM tally WHERE id = 5; \
                       UPDATE tally SET n = 0";
        assert_eq!(
            same(&client, &oracle, failing).await,
            Err("22012".to_string())
        );
        same(&client, &oracle, TALLY).await.expect("unchanged");
        // A statement with a key beside one without: the key picks only its own shard.
        same(
            &client,
            &oracle,
            "UPDATE tally SET n = n + 2 WHERE id = 4; SELECT count(*), sum(n) FROM tally",
        )
        .await
        .expect("keyed and unkeyed");

        // BEGIN, COMMIT or ROLLBACK among them: refused before anything runs.
        let (code, message) = expect_error(
            "COMMIT in the string",
            client
                .simple_query("UPDATE tally SET n = n + 1; COMMIT; SELECT count(*) FROM tally")
                .await,
        );
        assert_eq!(code, "0A000", "{message}");
        assert!(message.contains("BEGIN, COMMIT or ROLLBACK"), "{message}");
        same(&client, &oracle, TALLY).await.expect("unchanged");

        // Inside a block the statements join it: its ROLLBACK undoes them on every shard,
        // and a string that fails fails the block.
        client.simple_query("BEGIN").await.expect("BEGIN");
        let answer = transcript(
            &client,
            "UPDATE tally SET n = n + 1000; SELECT count(*) FROM tally WHERE n >= 1000",
        )
        .await;
        assert_eq!(answer.expect("in the block")[2], "22");
        client.simple_query("ROLLBACK").await.expect("ROLLBACK");
        same(&client, &oracle, TALLY).await.expect("rolled back");
        client.simple_query("BEGIN").await.expect("BEGIN");
        let failed = transcript(&client, failing).await;
        assert_eq!(failed, Err("22012".to_string()));
        let (code, _) = expect_error("aborted", client.simple_query("SELECT 1").await);
        assert_eq!(code, "25P02");
        client.simple_query("ROLLBACK").await.expect("ROLLBACK");
        same(&client, &oracle, TALLY).await.expect("rolled back");
    });
}

#[test]
fn default_shard_error_runs_several_statements_that_each_name_their_key() {
    let cluster = cluster();
    let pooler = pooler(cluster, ERROR);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        let (a, b) = (7, (8..).find(|id| pg_bigint_hash(*id, SHARDS) != pg_bigint_hash(7, SHARDS)).expect("another shard"));
        let keyed = format!("SELECT id, value FROM items WHERE id = {a}; SELECT 1 AS one; SELECT id, grp FROM items WHERE id = {b}");
        same(&client, &oracle, &keyed).await.expect("keyed statements");
        let (code, _) = expect_error(
            "one statement without a key",
            client
                .simple_query(&format!("SELECT id FROM items WHERE id = {a}; SELECT count(*) FROM items"))
                .await,
        );
        assert_eq!(code, "0A000");
    });
}
