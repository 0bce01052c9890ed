//! Issue 6, "Must show" 3, 5 and 6: failover that follows replication on a private cluster,
//! through the real binary.
//!
//! 3. Replay paused on a replica + writes on the primary: reads leave it once it is more than
//!    `max_replica_lag_bytes` behind and return after `pg_wal_replay_resume()`.
//! 5. Roles `"auto"`: stop the primary, `pg_ctl promote` the replica: writes succeed on the new
//!    primary within two check intervals.
//! 6. `read_your_writes`: a client's read right after its own write goes to the primary while
//!    the replica lags.
//!
//! Which server answered is `inet_server_port()`. Every query through the pooler is bounded by a
//! timeout, so a hang is a failure, never a stuck test.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::failover::{
    app_toml, blocking, connect_app, direct_psql, health_keys, ms, port, private, reads_reach,
    serial, stop, wait_caught_up, HUNG, INTERVAL_MS, MARGIN, READ, TIMEOUT_MS,
};
use support::{free_port, Cluster, Node, Pooler, DB, SCRAM_USER};
use tokio_postgres::Client;

/// `servers` with every node listed as role "auto".
fn auto_servers(cluster: &Cluster) -> String {
    let all: Vec<String> = cluster
        .nodes()
        .map(|n| format!("[\"{}\", {}, \"auto\"]", n.host, n.port))
        .collect();
    format!("[{}]", all.join(", "))
}

// ---------------------------------------------------------------------------------------------
// 3. Replica lag
// ---------------------------------------------------------------------------------------------

/// `n` reads in a row through `client`, each answered by the server on `server_port`; `when`
/// names the moment in failures.
async fn reads_all_on(client: &Client, n: usize, server_port: u16, when: &str) {
    for i in 0..n {
        assert_eq!(
            port(client, READ, HUNG).await.ok(),
            Some(server_port),
            "read {i} {when}"
        );
    }
}

/// Resumes WAL replay on `replica`.
async fn resume_replay(cluster: &Arc<Cluster>, replica: &Node) {
    direct_psql(
        cluster,
        replica,
        "postgres",
        "SELECT pg_wal_replay_resume()",
    )
    .await;
}

/// Creates a table (`name (columns)`) on the primary as scram_user and waits until the replica
/// has it.
async fn create_table(cluster: &Arc<Cluster>, definition: &str) {
    direct_psql(
        cluster,
        &cluster.primary,
        DB,
        &format!("SET ROLE {SCRAM_USER}; CREATE TABLE {definition}"),
    )
    .await;
    wait_caught_up(cluster, "caught up").await;
}

/// Pauses WAL replay on `replica` and waits (10 s at most) until it is paused.
async fn pause_replay(cluster: &Arc<Cluster>, replica: &Node) {
    direct_psql(cluster, replica, "postgres", "SELECT pg_wal_replay_pause()").await;
    let paused = {
        let (c, r) = (cluster.clone(), replica.clone());
        blocking(move || {
            support::wait_until(Duration::from_secs(10), || {
                c.psql(&r, "postgres", "SELECT pg_get_wal_replay_pause_state()")
                    .map(|s| s == "paused")
                    .unwrap_or(false)
            })
        })
        .await
    };
    assert!(paused, "premise: replay is paused on the replica");
}

const MAX_LAG: u64 = 65_536;
const LAG_INTERVAL_MS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_takes_no_reads_until_it_catches_up() {
    let _serial = serial().await;
    let cluster = private(1).await;
    let primary = cluster.primary.clone();
    let replica = cluster.replicas[0].clone();
    direct_psql(
        &cluster,
        &primary,
        DB,
        "CREATE TABLE lag_t (id int, pad text)",
    )
    .await;
    wait_caught_up(&cluster, "caught up").await;
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &format!(
            "{}replica_lag_check_interval = {LAG_INTERVAL_MS}\n",
            health_keys(INTERVAL_MS, TIMEOUT_MS, 60)
        ),
        &format!("max_replica_lag_bytes = {MAX_LAG}\n"),
        5,
        &cluster.servers_toml(),
    ));
    let client = connect_app(&pooler).await;

    // Caught up: the lag limit keeps nothing off the replica.
    let on_replica = reads_reach(&client, replica.port, ms(5000)).await;
    assert!(on_replica, "premise: reads go to the caught-up replica");
    reads_all_on(&client, 10, replica.port, "with the replica caught up").await;

    pause_replay(&cluster, &replica).await;
    direct_psql(
        &cluster,
        &primary,
        DB,
        "INSERT INTO lag_t SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g",
    )
    .await;
    let wrote_at = Instant::now();
    let current = direct_psql(
        &cluster,
        &primary,
        "postgres",
        "SELECT pg_current_wal_lsn()",
    )
    .await;
    let replayed = direct_psql(
        &cluster,
        &replica,
        "postgres",
        "SELECT pg_last_wal_replay_lsn()",
    )
    .await;
    let lag: u64 = direct_psql(
        &cluster,
        &primary,
        "postgres",
        &format!("SELECT pg_wal_lsn_diff('{current}', '{replayed}')::bigint"),
    )
    .await
    .parse()
    .expect("lag");
    assert!(
        lag > MAX_LAG,
        "premise: the replica is more than {MAX_LAG} bytes behind (lag {lag})"
    );

    let bound = ms(LAG_INTERVAL_MS) + MARGIN;
    let left = reads_reach(&client, primary.port, bound).await;
    assert!(
        left,
        "reads still go to the replica {:?} after it fell {lag} bytes behind (limit \
         {MAX_LAG}, bound {bound:?})",
        wrote_at.elapsed()
    );
    reads_all_on(
        &client,
        20,
        primary.port,
        &format!("while the replica is {lag} bytes behind"),
    )
    .await;

    resume_replay(&cluster, &replica).await;
    wait_caught_up(&cluster, "caught up after resume").await;
    let caught_up_at = Instant::now();
    let back = reads_reach(&client, replica.port, bound).await;
    assert!(
        back,
        "reads do not return to the caught-up replica within {bound:?} ({:?})",
        caught_up_at.elapsed()
    );
    reads_all_on(&client, 10, replica.port, "after the replica caught up").await;
}

// ---------------------------------------------------------------------------------------------
// 5. Promotion with role "auto"
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_roles_follow_a_promotion_within_two_check_intervals() {
    let _serial = serial().await;
    const AUTO_INTERVAL_MS: u64 = 300;
    const AUTO_TIMEOUT_MS: u64 = 300;
    let cluster = private(1).await;
    let old = cluster.primary.clone();
    let new = cluster.replicas[0].clone();
    create_table(&cluster, "promo_t (id serial PRIMARY KEY, v text)").await;
    let pooler = Pooler::start(&app_toml(
        free_port(),
        &health_keys(AUTO_INTERVAL_MS, AUTO_TIMEOUT_MS, 2),
        "",
        5,
        &auto_servers(&cluster),
    ));
    let client = connect_app(&pooler).await;
    const WRITE: &str = "INSERT INTO promo_t (v) VALUES ('w') RETURNING inet_server_port()";

    // Discovery: the server not in recovery takes the writes, the one in recovery the reads.
    let deadline = Instant::now() + ms(5000);
    let (found, last) = loop {
        let r = port(&client, WRITE, HUNG).await;
        if r == Ok(old.port) || Instant::now() > deadline {
            break (r == Ok(old.port), r);
        }
        tokio::time::sleep(ms(50)).await;
    };
    assert!(
        found,
        "writes reach the primary among \"auto\" servers: last {last:?}"
    );
    let reads_on_replica = reads_reach(&client, new.port, ms(5000)).await;
    assert!(
        reads_on_replica,
        "reads reach the server in recovery among \"auto\" servers"
    );

    stop(&cluster, &old).await;
    {
        let (c, n) = (cluster.clone(), new.clone());
        blocking(move || c.promote(&n).expect("pg_ctl promote")).await;
    }
    let promoted = Instant::now();

    let bound = ms(2 * AUTO_INTERVAL_MS + AUTO_TIMEOUT_MS) + MARGIN;
    let deadline = promoted + bound;
    let mut seen = Vec::new();
    let moved = loop {
        let r = port(&client, WRITE, ms(3000)).await;
        let ok = r == Ok(new.port);
        if seen.len() < 10 {
            seen.push(r);
        }
        if ok || Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(ms(50)).await;
    };
    assert!(
        moved,
        "no write succeeded on the promoted server {} within {bound:?} ({:?} since the \
         promotion); first results: {seen:?}",
        new.port,
        promoted.elapsed()
    );
    for i in 0..5 {
        assert_eq!(
            port(&client, WRITE, HUNG).await,
            Ok(new.port),
            "write {i} after the promotion"
        );
    }
    let fresh = connect_app(&pooler).await;
    assert_eq!(
        port(&fresh, WRITE, HUNG).await,
        Ok(new.port),
        "a new client writes to the promoted server"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Read-your-writes
// ---------------------------------------------------------------------------------------------

/// With `read_your_writes = true` and WAL replay paused on the only replica, a client's read
/// right after its own committed write sees the row (it is sent to the primary, since the
/// replica has not replayed the write); another client's reads still go to the replica; with
/// the setting off, the same read misses the row on the lagging replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_sees_its_own_write_despite_a_paused_replica() {
    let _serial = serial().await;
    let cluster = private(1).await;
    let primary = cluster.primary.clone();
    let replica = cluster.replicas[0].clone();
    create_table(&cluster, "ryw_t (id int PRIMARY KEY)").await;
    let start = |ryw: bool| {
        Pooler::start(&app_toml(
            free_port(),
            &format!(
                "{}replica_lag_check_interval = 200\n",
                health_keys(INTERVAL_MS, TIMEOUT_MS, 60)
            ),
            &format!("read_your_writes = {ryw}\n"),
            5,
            &cluster.servers_toml(),
        ))
    };
    let on = start(true);
    let off = start(false);
    let (writer, other, plain) = (
        connect_app(&on).await,
        connect_app(&on).await,
        connect_app(&off).await,
    );
    for c in [&writer, &other, &plain] {
        let reaches_replica = reads_reach(c, replica.port, ms(5000)).await;
        assert!(
            reaches_replica,
            "premise: reads go to the caught-up replica"
        );
    }

    pause_replay(&cluster, &replica).await;

    let read = "SELECT count(*)::int, inet_server_port() FROM ryw_t WHERE id = $1";
    for id in 1..=5 {
        writer
            .execute("INSERT INTO ryw_t (id) VALUES ($1)", &[&id])
            .await
            .expect("write");
        let row = writer
            .query_one(read, &[&id])
            .await
            .expect("read after write");
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, i32>(1) as u16),
            (1, primary.port),
            "read-your-writes: the read after write {id} must see it (on the primary)"
        );
        // A client that wrote nothing keeps reading from the replica.
        assert_eq!(
            port(&other, READ, HUNG).await.ok(),
            Some(replica.port),
            "other client, write {id}"
        );
    }
    // The same sequence without read_your_writes: the read lands on the paused replica
    // and misses the row (what the feature is for).
    plain
        .execute("INSERT INTO ryw_t (id) VALUES (100)", &[])
        .await
        .expect("write");
    let row = plain.query_one(read, &[&100]).await.expect("read");
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i32>(1) as u16),
        (0, replica.port),
        "premise: without read_your_writes the read goes to the lagging replica"
    );
    resume_replay(&cluster, &replica).await;
}
