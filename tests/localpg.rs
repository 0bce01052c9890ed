//! The test harness's own clusters (`pgcat::localpg`): a real streaming replica, stop/start and
//! freeze/thaw of a node, and nothing left behind after drop.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::{private, wait_until};

#[test]
fn cluster_has_a_streaming_hot_standby_and_is_removed_on_drop() {
    let cluster = private(1);
    let replica = cluster.replicas[0].clone();
    assert_eq!(
        cluster
            .psql(&cluster.primary, "postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    assert_eq!(
        cluster
            .psql(&replica, "postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert_eq!(
        cluster
            .psql(&cluster.primary, "postgres", "SHOW max_connections")
            .unwrap(),
        "300"
    );

    cluster
        .psql(
            &cluster.primary,
            "postgres",
            "CREATE TABLE localpg_t AS SELECT generate_series(1, 1000) AS v",
        )
        .expect("write on the primary");
    cluster.wait_replicas_caught_up().expect("catch up");
    assert_eq!(
        cluster
            .psql(&replica, "postgres", "SELECT sum(v) FROM localpg_t")
            .unwrap(),
        "500500"
    );
    let err = cluster
        .psql(&replica, "postgres", "INSERT INTO localpg_t VALUES (1)")
        .expect_err("a hot standby refuses writes");
    assert!(err.to_string().contains("read-only transaction"), "{err}");

    let dir = cluster.dir.clone();
    let ports: Vec<u16> = cluster.nodes().map(|n| n.port).collect();
    drop(cluster);
    assert!(!dir.exists(), "{} removed on drop", dir.display());
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens on {port} after drop"
        );
    }
}

#[test]
fn node_can_be_stopped_started_frozen_and_thawed() {
    let cluster = private(0);
    let primary = cluster.primary.clone();
    cluster.stop_node(&primary);
    assert!(
        TcpStream::connect(("127.0.0.1", primary.port)).is_err(),
        "stopped"
    );
    cluster.start_node(&primary);
    assert_eq!(cluster.psql(&primary, "postgres", "SELECT 1").unwrap(), "1");

    // Frozen: TCP connects (the kernel accepts) but PostgreSQL never answers.
    cluster.freeze_node(&primary);
    let mut s = TcpStream::connect(("127.0.0.1", primary.port)).expect("kernel still accepts");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    std::io::Write::write_all(&mut s, &support::raw::startup("postgres", "postgres")).unwrap();
    let mut buf = [0u8; 1];
    let read = std::io::Read::read(&mut s, &mut buf);
    assert!(read.is_err(), "a frozen server does not answer: {read:?}");
    cluster.thaw_node(&primary);
    assert!(
        wait_until(Duration::from_secs(10), || cluster
            .psql(&primary, "postgres", "SELECT 1")
            .is_ok()),
        "answers again after thaw"
    );
}
