//! How a statement on every shard runs (issue 19): on all shards at once, cancelled on all
//! of them by one CancelRequest, and failed as a whole when a shard is down, never answered
//! by the shards that are up.

use super::*;

#[test]
fn the_shards_run_in_parallel_and_a_cancel_reaches_every_one() {
    let cluster = cluster();
    let pooler = pooler(cluster, ALL);
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        // Each shard sleeps 1 s: about 1 s in all, not 3.
        let started = Instant::now();
        let slept = rows(&client, "SELECT pg_sleep(1)::text FROM slow").await;
        let took = started.elapsed();
        assert_eq!(slept.len(), SHARDS, "one row per shard's `slow`");
        assert!(
            took < Duration::from_millis(2500),
            "took {took:?}: the shards ran one by one"
        );

        const SLEEPING: &str = "SELECT pg_sleep(60)::text FROM slow";
        let cancel = client.cancel_token();
        let sleeping = tokio::spawn(async move {
            let started = Instant::now();
            let result = client.simple_query(SLEEPING).await;
            (result.map(|_| ()), started.elapsed())
        });
        // Once every shard runs it (a cancel that reaches a server before its statement
        // does is ignored by PostgreSQL).
        let all_running = tokio::task::spawn_blocking(|| {
            support::wait_until(Duration::from_secs(20), || {
                support::backends_in_state("active", SLEEPING) == SHARDS.to_string()
            })
        });
        assert!(
            all_running.await.expect("wait"),
            "every shard runs the statement"
        );
        cancel
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("send the cancel");
        let (result, took) = tokio::time::timeout(Duration::from_secs(30), sleeping)
            .await
            .expect("the cancel ends the statement")
            .expect("task");
        let (code, _) = expect_error("cancelled", result);
        assert_eq!(code, "57014", "canceling statement due to user request");
        assert!(took < Duration::from_secs(20), "took {took:?}");
        // No shard is still sleeping.
        let still = support::backends_in_state("active", SLEEPING);
        assert_eq!(still, "0", "every shard's statement was cancelled");
    });
    let _ = shared();
}

#[test]
fn a_shard_that_is_down_fails_the_statement_instead_of_dropping_out() {
    let cluster = cluster();
    let toml = pooler_toml(cluster, ALL, 2, 2_000);
    let live = format!(
        "[\"{}\", {}, \"primary\"]",
        cluster.primary.host, cluster.primary.port
    );
    let at = toml.rfind(&live).expect("shard 2's server");
    let dead = format!("[\"127.0.0.1\", {}, \"primary\"]", free_port());
    let pooler = Pooler::start(&format!(
        "{}{dead}{}",
        &toml[..at],
        &toml[at + live.len()..]
    ));
    runtime().block_on(async {
        let client = connect_xs(&pooler).await;
        for sql in [
            "SELECT count(*) FROM items",
            "SELECT id FROM items ORDER BY id LIMIT 3",
        ] {
            let error = try_rows(&client, sql).await.expect_err(sql);
            let db = error.as_db_error().expect("an ErrorResponse");
            assert_eq!(db.code().code(), "08006", "{sql}: {}", db.message());
            assert!(db.message().contains("could not connect"), "{sql}: {db:?}");
            assert_eq!(
                db.detail(),
                Some("The statement needs a server of shard 2.")
            );
        }
        // The shards that are up still answer what is theirs.
        let key = (1..)
            .find(|id| pg_bigint_hash(*id, SHARDS) == 0)
            .expect("a key on shard 0");
        let one = rows(&client, &format!("SELECT id FROM items WHERE id = {key}")).await;
        assert_eq!(one, [[key.to_string()]]);
    });
}
