//! Mirroring (issue 21, PgCat's shard `mirrors = [[host, port, server_index]]`): a second
//! PostgreSQL, the mirror, gets every statement sent to the mirrored server — its table
//! holds the same rows — and a mirror that is frozen (SIGSTOP) or down never holds a
//! client: its queries complete, the statements the mirror missed are counted as dropped
//! (SHOW MIRRORS, Prometheus), and a mirror back from a freeze gets statements again.

mod support;

use std::time::{Duration, Instant};

use support::{config, free_port, runtime, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

const TABLE: &str = "CREATE TABLE mirrored (id int, note text); \
                     GRANT ALL ON mirrored TO scram_user, md5_user;";

/// One row of SHOW MIRRORS: (sent, dropped, failures).
async fn show_mirrors(port: u16) -> Vec<(u64, u64, u64)> {
    let conninfo = format!("host=127.0.0.1 port={port} user=admin password=admin dbname=pgcat");
    let admin = support::connect(&conninfo).await.expect("admin console");
    let rows = admin
        .simple_query("SHOW MIRRORS")
        .await
        .expect("SHOW MIRRORS");
    support::texts(&rows)
        .into_iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<u64>().expect("a number");
            (n(7), n(9), n(11))
        })
        .collect()
}

/// The mean time of `count` small queries, and that they all completed.
async fn mean_latency(client: &tokio_postgres::Client, count: usize, payload: &str) -> Duration {
    let sql = format!("SELECT length('{payload}')");
    let start = Instant::now();
    for _ in 0..count {
        client.simple_query(&sql).await.expect("query");
    }
    start.elapsed() / count as u32
}

#[test]
fn a_mirror_gets_every_statement_and_never_holds_a_client() {
    let cluster = shared();
    let mirror = support::private(0);
    let reset = format!("DROP TABLE IF EXISTS mirrored; {TABLE}");
    cluster.psql(&cluster.primary, DB, &reset).expect("table");
    mirror
        .psql(&mirror.primary, DB, &reset)
        .expect("mirror table");
    let metrics_port = free_port();
    let mut toml = config(cluster, free_port(), "transaction", 2, "").replace(
        "[general]\n",
        &format!(
            "[general]\nenable_prometheus_exporter = true\nprometheus_exporter_port = {metrics_port}\n"
        ),
    );
    // Server 0 of the shard (the primary) is mirrored.
    toml.push_str(&format!(
        "mirrors = [[\"{}\", {}, 0]]\n",
        mirror.primary.host, mirror.primary.port
    ));
    let pooler = Pooler::start(&toml);
    let count = |c: &support::Cluster| {
        let node = &c.primary;
        c.psql(node, DB, "SELECT count(*) FROM mirrored")
            .unwrap_or_default()
    };
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .unwrap_or_else(|e| panic!("connect: {e:?}\n{}", pooler.logs()));
        // Simple and extended protocol, a transaction block, a prepared statement.
        for i in 0..20 {
            let sql = format!("INSERT INTO mirrored VALUES ({i}, 'simple')");
            client.simple_query(&sql).await.expect("insert");
        }
        let insert = client
            .prepare("INSERT INTO mirrored VALUES ($1, $2)")
            .await
            .expect("prepare");
        for i in 20..40 {
            client
                .execute(&insert, &[&i, &"prepared"])
                .await
                .expect("execute");
        }
        client
            .batch_execute("BEGIN; INSERT INTO mirrored VALUES (40, 'block'); COMMIT")
            .await
            .expect("block");
        client
            .batch_execute("BEGIN; INSERT INTO mirrored VALUES (41, 'rolled back'); ROLLBACK")
            .await
            .expect("rollback");
    });
    let mirrored = support::wait_until(Duration::from_secs(10), || count(&mirror) == "41");
    assert!(mirrored, "mirror has {} rows of 41", count(&mirror));
    assert_eq!(count(cluster), "41");
    let same = "SELECT string_agg(id || note, ',' ORDER BY id) FROM mirrored";
    assert_eq!(
        mirror.psql(&mirror.primary, DB, same).unwrap(),
        cluster.psql(&cluster.primary, DB, same).unwrap()
    );
    runtime().block_on(async {
        let shown = show_mirrors(pooler.port).await;
        assert_eq!(shown.len(), 2, "one row per user of the pool: {shown:?}");
        let (sent, dropped, _) = shown
            .iter()
            .fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, 0));
        assert!(sent >= 41 && dropped == 0, "{shown:?}");
    });
    let page = support::scrape(metrics_port);
    assert!(
        page.contains("pgcat_mirror_sent_total{pool=\"app\",user=\"scram_user\",shard=\"0\""),
        "{page}"
    );

    // Frozen mirror: the client's queries complete; the mirror's missed writes are dropped.
    let payload = "x".repeat(4000);
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        let healthy = mean_latency(&client, 300, &payload).await;
        mirror.freeze_node(&mirror.primary);
        // Enough bytes to fill the socket buffers and the mirror's queue.
        let frozen = mean_latency(&client, 3000, &payload).await;
        println!("mean latency: mirror healthy {healthy:?}, mirror frozen {frozen:?}");
        let shown = show_mirrors(pooler.port).await;
        assert!(shown.iter().any(|r| r.1 > 0), "dropped counted: {shown:?}");
    });
    mirror.thaw_node(&mirror.primary);
    // Back from the freeze: the mirror gets statements again (on a new connection).
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        let rows = "SELECT count(*) FROM mirrored WHERE note = 'after'";
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut back = false;
        while !back && Instant::now() < deadline {
            client
                .simple_query("INSERT INTO mirrored VALUES (0, 'after')")
                .await
                .expect("insert");
            tokio::time::sleep(Duration::from_millis(200)).await;
            back = mirror.psql(&mirror.primary, DB, rows).unwrap_or_default() != "0";
        }
        assert!(
            back,
            "the mirror gets statements after a thaw\n{}",
            pooler.logs()
        );
    });

    // Mirror down: queries complete, the failure is counted and logged.
    mirror.stop_node(&mirror.primary);
    runtime().block_on(async {
        let client = pooler
            .connect(SCRAM_USER, SCRAM_PASS, DB)
            .await
            .expect("connect");
        for i in 0..200 {
            let sql = format!("INSERT INTO mirrored VALUES ({i}, 'mirror down')");
            client.simple_query(&sql).await.expect("insert");
        }
        let shown = show_mirrors(pooler.port).await;
        assert!(shown.iter().any(|r| r.2 > 0), "failures counted: {shown:?}");
    });
    assert!(
        pooler.logs().contains("mirror unreachable"),
        "{}",
        pooler.logs()
    );
    assert!(
        !pooler.logs().contains("not implemented"),
        "{}",
        pooler.logs()
    );
}
