//! The extended protocol exactly as a pipelining driver sends it, written by hand: several
//! Parse/Bind/Execute/Sync groups in one write, an error in the middle of a pipeline, Flush
//! without Sync, and a named statement used in a later transaction.

mod support;

use std::time::Duration;

use support::raw::{self, tags, Msg, RawConn};
use support::{config, free_port, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

fn login(pooler: &Pooler) -> RawConn {
    let conn = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    conn.set_read_timeout(Duration::from_secs(10));
    conn
}

/// Reads until `n` ReadyForQuery messages have arrived.
fn read_syncs(conn: &mut RawConn, n: usize) -> Vec<Msg> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(
            conn.read_until_ready()
                .expect("replies up to ReadyForQuery"),
        );
    }
    out
}

fn first_values(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.row()[0].clone().unwrap_or_default())
        .collect()
}

/// One Parse/Bind/Execute/Sync group computing `value * 10`.
fn group(value: i32) -> Vec<u8> {
    [
        raw::parse("", "SELECT $1::int4 * 10"),
        raw::bind("", "", &[Some(&value.to_string())]),
        raw::execute(""),
        raw::sync(),
    ]
    .concat()
}

#[test]
fn pipelined_parse_bind_execute_sync_groups_return_all_results_in_order() {
    let cluster = shared();
    for mode in ["transaction", "session"] {
        // pool_size 1 and two clients pipelining at once: they must take turns on one server.
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 1, ""));
        let mut a = login(&pooler);
        let mut b = if mode == "transaction" {
            Some(login(&pooler))
        } else {
            None
        };
        let batch: Vec<u8> = (1..=8).flat_map(group).collect();
        a.send(&batch).expect("send pipeline A");
        if let Some(b) = b.as_mut() {
            let batch: Vec<u8> = (101..=108).flat_map(group).collect();
            b.send(&batch).expect("send pipeline B");
        }
        let replies = read_syncs(&mut a, 8);
        assert_eq!(
            tags(&replies),
            "12DCZ".repeat(8),
            "{mode}: message order for A"
        );
        let want: Vec<String> = (1..=8).map(|v| (v * 10).to_string()).collect();
        assert_eq!(
            first_values(&replies),
            want,
            "{mode}: results for A in order"
        );
        assert!(
            replies
                .iter()
                .filter(|m| m.tag == b'Z')
                .all(|z| z.body == b"I"),
            "{mode}: idle after each Sync"
        );
        if let Some(b) = b.as_mut() {
            let replies = read_syncs(b, 8);
            assert_eq!(
                tags(&replies),
                "12DCZ".repeat(8),
                "{mode}: message order for B"
            );
            let want: Vec<String> = (101..=108).map(|v| (v * 10).to_string()).collect();
            assert_eq!(
                first_values(&replies),
                want,
                "{mode}: results for B in order"
            );
        }
    }
}

/// Group 1 fine, group 2 fails at Execute (random() keeps the planner from folding the
/// division at Bind) with a Bind/Execute after it, group 3 fine.
fn pipeline_with_error() -> Vec<u8> {
    let failing = [
        raw::parse("", "SELECT 10 / ($1::int4 + (random() * 0)::int4)"),
        raw::bind("", "", &[Some("0")]),
        raw::execute(""),
        // Skipped by the server: it discards everything up to Sync after an error.
        raw::bind("", "", &[Some("5")]),
        raw::execute(""),
        raw::sync(),
    ]
    .concat();
    [group(1), failing, group(3)].concat()
}

#[test]
fn error_in_a_pipeline_skips_to_sync_and_later_groups_still_run() {
    let cluster = shared();
    // PostgreSQL is the judge: the same bytes sent straight to the primary.
    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    direct
        .send(&pipeline_with_error())
        .expect("send pipeline directly");
    let expected = tags(&read_syncs(&mut direct, 3));
    assert_eq!(expected, "12DCZ12EZ12DCZ", "PostgreSQL's own answer");
    for mode in ["transaction", "session"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 1, ""));
        let mut conn = login(&pooler);
        conn.send(&pipeline_with_error()).expect("send pipeline");
        let replies = read_syncs(&mut conn, 3);
        assert_eq!(tags(&replies), expected, "{mode}: {replies:?}");
        let error = replies.iter().find(|m| m.tag == b'E').expect("error");
        assert_eq!(
            error.sqlstate().as_deref(),
            Some("22012"),
            "{mode}: division by zero"
        );
        assert_eq!(first_values(&replies), ["10", "30"], "{mode}");
        let r = conn
            .simple_query("SELECT 1")
            .expect("query after the pipeline");
        assert_eq!(tags(&r), "TDCZ", "{mode}");
    }
}

#[test]
fn flush_without_sync_delivers_results_then_sync_gets_ready_for_query() {
    let cluster = shared();
    for mode in ["transaction", "session"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 1, ""));
        let mut conn = login(&pooler);
        conn.send(
            &[
                raw::parse("", "SELECT $1::text || '-flushed'"),
                raw::bind("", "", &[Some("one")]),
                raw::execute(""),
                raw::flush(),
            ]
            .concat(),
        )
        .expect("send Parse/Bind/Execute/Flush");
        // No Sync yet: the results must arrive anyway (bounded read).
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(conn.read_msg().unwrap_or_else(|e| {
                panic!(
                    "{mode}: results after Flush did not arrive ({e}); got so far {got:?}\n{}",
                    pooler.logs()
                )
            }));
        }
        assert_eq!(tags(&got), "12DC", "{mode}: {got:?}");
        assert_eq!(got[2].row(), vec![Some("one-flushed".to_owned())]);

        // Still before Sync: another Bind/Execute/Flush on the same unnamed statement.
        conn.send(
            &[
                raw::bind("", "", &[Some("two")]),
                raw::execute(""),
                raw::flush(),
            ]
            .concat(),
        )
        .expect("send");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                conn.read_msg()
                    .unwrap_or_else(|e| panic!("{mode}: second Flush: {e}; got {got:?}")),
            );
        }
        assert_eq!(tags(&got), "2DC", "{mode}: {got:?}");
        assert_eq!(got[1].row(), vec![Some("two-flushed".to_owned())]);

        conn.send(&raw::sync()).expect("send Sync");
        let z = conn.read_msg().expect("ReadyForQuery after Sync");
        assert_eq!((z.kind(), z.body.clone()), ('Z', b"I".to_vec()), "{mode}");
        // And the connection goes on normally.
        let r = conn
            .simple_query("SELECT 'after flush'")
            .expect("simple query");
        assert_eq!(tags(&r), "TDCZ", "{mode}");
    }
}

#[test]
fn named_statement_parsed_once_is_usable_in_later_transactions() {
    let cluster = shared();
    for mode in ["transaction", "session"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 2, ""));
        let mut conn = login(&pooler);
        // Another client busy at the same time, so a transaction-mode pool may hand out either server.
        let mut other = login(&pooler);
        conn.send(
            &[
                raw::parse("pipeline_s1", "SELECT $1::int4 + 1"),
                raw::sync(),
            ]
            .concat(),
        )
        .expect("Parse");
        assert_eq!(
            tags(&read_syncs(&mut conn, 1)),
            "1Z",
            "{mode}: ParseComplete"
        );
        for i in 0..10 {
            other.send(&group(i)).expect("other client");
            conn.send(
                &[
                    raw::bind("", "pipeline_s1", &[Some(&i.to_string())]),
                    raw::execute(""),
                    raw::sync(),
                ]
                .concat(),
            )
            .expect("Bind named statement");
            let replies = read_syncs(&mut conn, 1);
            assert_eq!(
                tags(&replies),
                "2DCZ",
                "{mode}, round {i}: {replies:?}\n{}",
                pooler.logs()
            );
            assert_eq!(
                first_values(&replies),
                [(i + 1).to_string()],
                "{mode}, round {i}"
            );
            assert_eq!(
                tags(&read_syncs(&mut other, 1)),
                "12DCZ",
                "{mode}: other client, round {i}"
            );
        }
        // Describe of the named statement works too.
        conn.send(&[raw::describe(b'S', "pipeline_s1"), raw::sync()].concat())
            .expect("Describe");
        assert_eq!(
            tags(&read_syncs(&mut conn, 1)),
            "tTZ",
            "{mode}: ParameterDescription, RowDescription"
        );
    }
}
