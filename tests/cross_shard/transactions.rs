//! Transaction blocks spanning shards (issue 19): a block holds a server on each shard it
//! touches until COMMIT or ROLLBACK, which end it on every one; errors fail the block as
//! PostgreSQL's own; DDL with no shard runs on every shard, all or nothing. `accounts`
//! (hash-partitioned per shard, unsharded on the oracle) is the table changed; every change
//! is made on the oracle too and the two compared.

use super::*;

/// Two account ids on different shards.
fn two_shards() -> (i64, i64) {
    let a = 1;
    let b = (2..=ACCOUNTS)
        .find(|id| pg_bigint_hash(*id, SHARDS) != pg_bigint_hash(a, SHARDS))
        .expect("ids on two shards");
    (a, b)
}

/// Pool settings: statements with no shard run on every shard; comment hints pick one.
const HINTED: &str = "query_parser_enabled = true\ndefault_shard = \"all\"\n\
                      shard_id_regex = '/\\* shard_id: (\\d+) \\*/'\n\
                      sharding_key_regex = '/\\* sharding_key: (\\d+) \\*/'";

/// The UPDATE of one account, routed by its key (a comment hint).
fn move_money(id: i64, delta: i32) -> String {
    format!(
        "/* sharding_key: {id} */ UPDATE accounts SET balance = balance + {delta} WHERE id = {id}"
    )
}

const BALANCES: &str = "SELECT id, balance FROM accounts";

/// The balance of account `id` as its shard's database has it committed.
fn committed_balance(cluster: &Cluster, id: i64) -> String {
    let db = format!("xs_shard{}", pg_bigint_hash(id, SHARDS));
    let sql = format!("SELECT balance FROM accounts WHERE id = {id}");
    let out = cluster.psql(&cluster.primary, &db, &sql).expect("psql");
    out.trim().to_string()
}

#[test]
fn a_transaction_block_spans_shards_and_commits_or_rolls_back_on_every_one() {
    let cluster = cluster();
    let pooler = pooler(cluster, HINTED);
    let (a, b) = two_shards();
    runtime().block_on(async {
        let mut client = connect_xs(&pooler).await;
        let oracle = oracle(cluster).await;
        same_as_oracle(&client, &oracle, &[BALANCES]).await;

        // A transfer between shards, committed: the block sees its own writes across
        // shards, nobody else does before COMMIT.
        client.simple_query("BEGIN").await.expect("BEGIN");
        for (id, delta) in [(a, -10), (b, 10)] {
            let done = client.execute(move_money(id, delta).as_str(), &[]).await;
            assert_eq!(done.expect("UPDATE in the block"), 1);
        }
        let total = rows(&client, "SELECT sum(balance) FROM accounts").await;
        assert_eq!(total, [[(ACCOUNTS * 100).to_string()]]);
        let changed = rows(
            &client,
            "SELECT id, balance FROM accounts WHERE balance <> 100 ORDER BY id",
        )
        .await;
        assert_eq!(
            changed,
            [[a.to_string(), "90".into()], [b.to_string(), "110".into()]]
        );
        assert_eq!(committed_balance(cluster, a), "100", "not committed yet");
        client.simple_query("COMMIT").await.expect("COMMIT");
        for (id, delta) in [(a, -10), (b, 10)] {
            oracle
                .execute(move_money(id, delta).as_str(), &[])
                .await
                .expect("oracle");
        }
        assert_eq!(committed_balance(cluster, a), "90");
        same_as_oracle(&client, &oracle, &[BALANCES]).await;

        // Rolled back: nothing stays on any shard.
        client.simple_query("BEGIN").await.expect("BEGIN");
        client
            .execute(move_money(a, -50).as_str(), &[])
            .await
            .expect("a");
        let all = client.execute("UPDATE accounts SET balance = 0", &[]).await;
        assert_eq!(all.expect("on every shard"), ACCOUNTS as u64);
        client.simple_query("ROLLBACK").await.expect("ROLLBACK");
        same_as_oracle(&client, &oracle, &[BALANCES]).await;

        // An error fails the block as PostgreSQL's: 25P02 until its end, and COMMIT rolls
        // back what came before the error, on every shard.
        client.simple_query("BEGIN").await.expect("BEGIN");
        client
            .execute(move_money(a, -1).as_str(), &[])
            .await
            .expect("a");
        let failing = format!("UPDATE accounts SET balance = balance / (id - {b})");
        let (code, _) = expect_error("division by zero", client.simple_query(&failing).await);
        assert_eq!(code, "22012");
        let (code, _) = expect_error("aborted", try_rows(&client, "SELECT 1").await);
        assert_eq!(code, "25P02");
        let (code, _) = expect_error("aborted", try_rows(&client, BALANCES).await);
        assert_eq!(code, "25P02");
        client
            .simple_query("COMMIT")
            .await
            .expect("COMMIT of a failed block");
        same_as_oracle(&client, &oracle, &[BALANCES]).await;

        // Savepoints on every shard: ROLLBACK TO undoes a statement on every shard, also
        // one that failed.
        let block = [
            "BEGIN".to_string(),
            move_money(a, -5),
            "SAVEPOINT s".into(),
            "UPDATE accounts SET balance = 0".into(),
            "ROLLBACK TO SAVEPOINT s".into(),
            "SAVEPOINT t".into(),
        ];
        for sql in &block {
            client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        assert!(client.simple_query(&failing).await.is_err());
        for sql in ["ROLLBACK TO SAVEPOINT t", "RELEASE SAVEPOINT s", "COMMIT"] {
            client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        oracle
            .execute(move_money(a, -5).as_str(), &[])
            .await
            .expect("oracle");
        same_as_oracle(&client, &oracle, &[BALANCES]).await;

        // tokio-postgres's transaction: prepared statements (Parse, Describe, Sync, then
        // Bind, Execute), parameters, binary results.
        let tx = client.transaction().await.expect("transaction");
        let rich: Vec<(i64, i32)> = tx
            .query(
                "SELECT id, balance FROM accounts WHERE balance > $1",
                &[&100i32],
            )
            .await
            .expect("prepared SELECT on every shard")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(rich, [(b, 110)]);
        let updated = tx
            .execute(
                "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                &[&7i32, &b],
            )
            .await
            .expect("prepared UPDATE on every shard");
        assert_eq!(updated, 1);
        tx.commit().await.expect("commit");
        oracle
            .execute(
                "UPDATE accounts SET balance = balance + 7 WHERE id = $1",
                &[&b],
            )
            .await
            .expect("oracle");
        same_as_oracle(&client, &oracle, &[BALANCES]).await;
        // The client is idle and well after every block.
        assert_eq!(rows(&client, "SELECT 1").await, [["1"]]);
    });
}

#[test]
fn a_block_needing_a_lower_shard_than_it_holds_fails_with_40p01_instead_of_waiting_forever() {
    let cluster = cluster();
    // One server per shard, and a checkout waits at most 1 s.
    let pooler = pooler_sized(cluster, HINTED, 1, 1000);
    runtime().block_on(async {
        let first = connect_xs(&pooler).await;
        let second = connect_xs(&pooler).await;
        // `first` holds shard 2, `second` shard 0; `first` then needs every shard.
        first.simple_query("BEGIN").await.expect("BEGIN");
        first
            .simple_query("/* shard_id: 2 */ SELECT 1")
            .await
            .expect("on 2");
        second.simple_query("BEGIN").await.expect("BEGIN");
        second
            .simple_query("/* shard_id: 0 */ SELECT 1")
            .await
            .expect("on 0");
        let started = Instant::now();
        let result = try_rows(&first, "SELECT count(*) FROM accounts").await;
        let (code, message) = expect_error("shard 0 is held by the other block", result);
        assert_eq!(code, "40P01", "{message}");
        assert!(started.elapsed() < Duration::from_secs(10));
        first.simple_query("ROLLBACK").await.expect("ROLLBACK");
        // With shard 2 free again, the other block goes on.
        let n = rows(&second, "SELECT count(*) FROM accounts").await;
        assert_eq!(n, [[ACCOUNTS.to_string()]]);
        second.simple_query("COMMIT").await.expect("COMMIT");
    });
}

#[test]
fn ddl_with_no_shard_runs_on_every_shard_all_or_nothing() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    let on_shard = |shard: usize, sql: &str| {
        let db = format!("xs_shard{shard}");
        let out = cluster.psql(&cluster.primary, &db, sql).expect("psql");
        out.trim().to_string()
    };
    let exists = "SELECT count(*) FROM pg_class WHERE relname = 'ddl_made'";
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        client
            .simple_query("CREATE TABLE ddl_made (id bigint)")
            .await
            .expect("CREATE TABLE on every shard");
        for shard in 0..SHARDS {
            assert_eq!(on_shard(shard, exists), "1", "shard {shard}");
        }
        client
            .simple_query("DROP TABLE ddl_made")
            .await
            .expect("DROP TABLE on every shard");
        // The table exists on shard 1 only: creating it fails there, and no shard keeps it.
        on_shard(
            1,
            &format!("SET ROLE {SHARD_USER}; CREATE TABLE ddl_made (id bigint)"),
        );
        let (code, message) = expect_error(
            "exists on shard 1",
            client
                .simple_query("CREATE TABLE ddl_made (id bigint)")
                .await,
        );
        assert_eq!(code, "42P07", "{message}");
        for (shard, want) in [(0, "0"), (1, "1"), (2, "0")] {
            assert_eq!(on_shard(shard, exists), want, "shard {shard}");
        }
        on_shard(1, "DROP TABLE ddl_made");
        let (code, _) = expect_error(
            "concurrently",
            client
                .simple_query("CREATE INDEX CONCURRENTLY ON accounts (id)")
                .await,
        );
        assert_eq!(code, "0A000");
    });
}

#[test]
fn a_block_idle_past_idle_client_in_transaction_timeout_is_closed_and_rolled_back() {
    let cluster = cluster();
    let toml = pooler_toml(cluster, HINTED, 4, 10_000).replace(
        "[general]\n",
        "[general]\nidle_client_in_transaction_timeout = 300\n",
    );
    let pooler = Pooler::start(&toml);
    let (a, _) = two_shards();
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        client.simple_query("BEGIN").await.expect("BEGIN");
        client
            .execute(move_money(a, -1000).as_str(), &[])
            .await
            .expect("in the block");
        let n = rows(&client, "SELECT count(*) FROM accounts").await;
        assert_eq!(n, [[ACCOUNTS.to_string()]]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let error = client.simple_query("SELECT 1").await.expect_err("closed");
        assert!(
            error.is_closed()
                || error
                    .as_db_error()
                    .is_some_and(|e| e.code().code() == "25P03"),
            "{error:?}"
        );
        // Nothing of the block stays; no server is left idle in a transaction.
        let oracle = oracle(cluster).await;
        same_as_oracle(&connect_xs(&pooler).await, &oracle, &[BALANCES]).await;
        let idle = cluster
            .psql(
                &cluster.primary,
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' \
                 AND datname LIKE 'xs_shard%' AND query LIKE '%accounts%'",
            )
            .expect("pg_stat_activity");
        assert_eq!(idle, "0");
    });
}
