//! The extended protocol exactly as a pipelining driver sends it, written by hand: several
//! Parse/Bind/Execute/Sync groups in one write, an error in the middle of a pipeline, Flush
//! without Sync, and a named statement used in a later transaction.
//!
//! Issue 3, "Must show" 5: an error in the middle of a pipeline leaves the client and the
//! server connection usable (each exchange compared with the same bytes sent straight to
//! PostgreSQL); a Parse PostgreSQL skipped after an error is not taken as prepared; the rest
//! of a failed batch gets no replies.

mod support;

use std::time::Duration;

use support::raw::{self, first_values, summary, tags, RawConn};
use support::{config, free_port, pool_toml, shared, tail, Pooler, DB, SCRAM_PASS, SCRAM_USER};

fn login(pooler: &Pooler) -> RawConn {
    let conn = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    conn.set_read_timeout(Duration::from_secs(10));
    conn
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
        let replies = a.read_syncs(8);
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
            let replies = b.read_syncs(8);
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
    let expected = tags(&direct.read_syncs(3));
    assert_eq!(expected, "12DCZ12EZ12DCZ", "PostgreSQL's own answer");
    for mode in ["transaction", "session"] {
        let pooler = Pooler::start(&config(cluster, free_port(), mode, 1, ""));
        let mut conn = login(&pooler);
        conn.send(&pipeline_with_error()).expect("send pipeline");
        let replies = conn.read_syncs(3);
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
        assert_eq!(tags(&conn.read_syncs(1)), "1Z", "{mode}: ParseComplete");
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
            let replies = conn.read_syncs(1);
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
                tags(&other.read_syncs(1)),
                "12DCZ",
                "{mode}: other client, round {i}"
            );
        }
        // Describe of the named statement works too.
        conn.send(&[raw::describe(b'S', "pipeline_s1"), raw::sync()].concat())
            .expect("Describe");
        assert_eq!(
            tags(&conn.read_syncs(1)),
            "tTZ",
            "{mode}: ParameterDescription, RowDescription"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// An error in the middle of a pipeline (issue 3, "Must show" 5)
// ---------------------------------------------------------------------------------------------

/// Fails at Execute (random() keeps the planner from folding the division at Bind).
const DIV0: &str = "SELECT 10 / ($1::int4 + (random() * 0)::int4)";

/// The pipelined exchange, as (bytes to send in one write, number of Syncs in it).
fn pipeline_script() -> Vec<(Vec<u8>, usize)> {
    vec![
        // One Sync: a named statement used, an error, then a Parse/Bind/Execute of another
        // named statement and a Bind of the first, all skipped by the server.
        (
            [
                raw::parse("ok1", "SELECT $1::int4 + 1"),
                raw::bind("", "ok1", &[Some("1")]),
                raw::execute(""),
                raw::parse("", DIV0),
                raw::bind("", "", &[Some("0")]),
                raw::execute(""),
                raw::parse("late", "SELECT 'late'::text"),
                raw::bind("", "late", &[]),
                raw::execute(""),
                raw::bind("", "ok1", &[Some("5")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
            1,
        ),
        // Several Syncs in one write, the second group failing; the Parse of `late` now
        // really happens.
        (
            [
                raw::bind("", "ok1", &[Some("10")]),
                raw::execute(""),
                raw::sync(),
                raw::parse("div", DIV0),
                raw::bind("", "div", &[Some("0")]),
                raw::execute(""),
                raw::bind("", "ok1", &[Some("99")]),
                raw::execute(""),
                raw::sync(),
                raw::parse("late", "SELECT 'late'::text"),
                raw::bind("", "late", &[]),
                raw::execute(""),
                raw::sync(),
                raw::bind("", "ok1", &[Some("20")]),
                raw::execute(""),
                raw::bind("", "div", &[Some("2")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
            4,
        ),
        // An error inside an explicit transaction, mid-pipeline.
        (
            [
                raw::query("BEGIN"),
                raw::bind("", "ok1", &[Some("30")]),
                raw::execute(""),
                raw::bind("", "div", &[Some("0")]),
                raw::execute(""),
                raw::bind("", "ok1", &[Some("31")]),
                raw::execute(""),
                raw::sync(),
                raw::bind("", "ok1", &[Some("32")]),
                raw::execute(""),
                raw::sync(),
                raw::query("ROLLBACK"),
            ]
            .concat(),
            4,
        ),
        // The batch after: everything works.
        (
            [
                raw::bind("", "ok1", &[Some("100")]),
                raw::execute(""),
                raw::bind("", "late", &[]),
                raw::execute(""),
                raw::parse("after", "SELECT $1::text || '-after'"),
                raw::bind("", "after", &[Some("x")]),
                raw::execute(""),
                raw::bind("", "div", &[Some("5")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
            1,
        ),
    ]
}

fn run_script(conn: &mut RawConn, script: &[(Vec<u8>, usize)]) -> Vec<String> {
    script
        .iter()
        .map(|(bytes, syncs)| {
            conn.send(bytes).expect("send batch");
            summary(&conn.read_syncs(*syncs))
        })
        .collect()
}

#[test]
fn error_mid_pipeline_leaves_client_and_server_usable() {
    let cluster = shared();
    let script = pipeline_script();
    // PostgreSQL judges: the same bytes straight to the primary.
    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    let expected = run_script(&mut direct, &script);
    // Sanity of the script itself.
    assert_eq!(expected[0], "1 2 D[2] C[SELECT 1] 1 2 E[22012] Z[I]");
    assert_eq!(
        expected[3],
        "2 D[101] C[SELECT 1] 2 D[late] C[SELECT 1] 1 2 D[x-after] C[SELECT 1] 2 D[2] C[SELECT 1] Z[I]"
    );

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login A");
    a.set_read_timeout(Duration::from_secs(20));
    let got = run_script(&mut a, &script);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g,
            e,
            "batch {i}: pooler vs PostgreSQL\n{}",
            tail(&pooler.logs(), 40)
        );
    }
    let pid_a = first_values(&a.simple_query("SELECT pg_backend_pid()").expect("A pid"))[0].clone();

    // Another client on the same (only) server: the connection the error went through works,
    // including a statement whose Parse the server skipped after the error in batch 0 and a
    // statement A prepared.
    let mut b = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login B");
    b.set_read_timeout(Duration::from_secs(20));
    b.send(
        &[
            raw::parse("b1", "SELECT $1::int4 + 1"),
            raw::bind("", "b1", &[Some("41")]),
            raw::execute(""),
            raw::parse("b2", "SELECT 'late'::text"),
            raw::bind("", "b2", &[]),
            raw::execute(""),
            raw::parse("b3", DIV0),
            raw::bind("", "b3", &[Some("10")]),
            raw::execute(""),
            raw::sync(),
        ]
        .concat(),
    )
    .expect("send B");
    let r = summary(&b.read_syncs(1));
    assert_eq!(
        r,
        "1 2 D[42] C[SELECT 1] 1 2 D[late] C[SELECT 1] 1 2 D[1] C[SELECT 1] Z[I]",
        "B on the server after A's failed pipelines\n{}",
        tail(&pooler.logs(), 40)
    );
    let pid_b = first_values(&b.simple_query("SELECT pg_backend_pid()").expect("B pid"))[0].clone();
    assert_eq!(pid_a, pid_b, "B ran on A's server (pool_size 1)");
    // And A still works after B.
    a.send(
        &[
            raw::bind("", "ok1", &[Some("7")]),
            raw::execute(""),
            raw::sync(),
        ]
        .concat(),
    )
    .expect("send A");
    assert_eq!(summary(&a.read_syncs(1)), "2 D[8] C[SELECT 1] Z[I]");
}

/// A named Parse that comes after an error in the same pipeline is skipped by PostgreSQL: the
/// statement does not exist. The pooler must not believe the server prepared it (another
/// client with the same SQL would then Bind a statement that is not there), and the client
/// must see what PostgreSQL sends.
#[test]
fn parse_skipped_after_an_error_is_not_prepared() {
    let cluster = shared();
    let batch = |c: &mut RawConn, msgs: Vec<Vec<u8>>| {
        c.send(&msgs.concat()).expect("send");
        summary(&c.read_syncs(1))
    };
    let failing = || {
        vec![
            raw::parse("", DIV0),
            raw::bind("", "", &[Some("0")]),
            raw::execute(""),
            raw::parse("skipped", "SELECT 'skipped'::text, 1"),
            raw::bind("", "skipped", &[]),
            raw::execute(""),
            raw::sync(),
        ]
    };
    let bind_skipped = || vec![raw::bind("", "skipped", &[]), raw::execute(""), raw::sync()];

    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    let want_fail = batch(&mut direct, failing());
    let want_bind = batch(&mut direct, bind_skipped());
    assert_eq!(want_fail, "1 2 E[22012] Z[I]");
    assert_eq!(
        want_bind, "E[26000] Z[I]",
        "PostgreSQL: the statement does not exist"
    );

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let mut a = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login A");
    a.set_read_timeout(Duration::from_secs(20));
    assert_eq!(batch(&mut a, failing()), want_fail);
    // Another client on the same server prepares the same SQL.
    let mut b = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login B");
    b.set_read_timeout(Duration::from_secs(20));
    assert_eq!(
        batch(
            &mut b,
            vec![
                raw::parse("mine", "SELECT 'skipped'::text, 1"),
                raw::bind("", "mine", &[]),
                raw::execute(""),
                raw::sync(),
            ]
        ),
        "1 2 D[skipped,1] C[SELECT 1] Z[I]",
        "B prepares SQL whose Parse A's server skipped\n{}",
        tail(&pooler.logs(), 40)
    );
    assert_eq!(
        batch(&mut a, bind_skipped()),
        want_bind,
        "A binds a statement PostgreSQL never prepared\n{}",
        tail(&pooler.logs(), 40)
    );
    // A can now prepare it for real.
    assert_eq!(
        batch(
            &mut a,
            vec![
                raw::parse("skipped", "SELECT 'skipped'::text, 1"),
                raw::bind("", "skipped", &[]),
                raw::execute(""),
                raw::sync(),
            ]
        ),
        "1 2 D[skipped,1] C[SELECT 1] Z[I]"
    );
}

/// The server fails a batch before the client has sent the rest of it (Flush brings the
/// error back early). PostgreSQL skips everything up to the Sync, so the rest of the batch
/// gets no replies; the pooler must expect none (it once waited for them forever, and every
/// made-up ParseComplete after that queued behind them: psycopg's pipelines hung).
#[test]
fn rest_of_a_failed_batch_sent_after_the_error_gets_no_replies() {
    let cluster = shared();
    let script = |c: &mut RawConn| -> Vec<String> {
        let mut out = Vec::new();
        c.send(
            &[
                raw::parse("late_a", "SELECT $1::int4 + 1"),
                raw::bind("", "late_a", &[Some("1")]),
                raw::execute(""),
                raw::parse("", DIV0),
                raw::bind("", "", &[Some("0")]),
                raw::execute(""),
                raw::flush(),
            ]
            .concat(),
        )
        .expect("send");
        let mut early = Vec::new();
        loop {
            let m = c.read_msg().expect("the error comes back on Flush");
            let done = m.tag == b'E';
            early.push(m);
            if done {
                break;
            }
        }
        out.push(summary(&early));
        c.send(
            &[
                raw::parse("late_b", "SELECT $1::int4 + 2"),
                raw::bind("", "late_b", &[Some("1")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
        )
        .expect("send");
        out.push(summary(&c.read_syncs(1)));
        // A prepare of a statement this server has: PostgreSQL answers ParseComplete.
        c.send(&[raw::parse("late_c", "SELECT $1::int4 + 1"), raw::sync()].concat())
            .expect("send");
        out.push(summary(&c.read_syncs(1)));
        c.send(
            &[
                raw::bind("", "late_c", &[Some("41")]),
                raw::execute(""),
                raw::sync(),
            ]
            .concat(),
        )
        .expect("send");
        out.push(summary(&c.read_syncs(1)));
        c.send(&[raw::bind("", "late_b", &[]), raw::execute(""), raw::sync()].concat())
            .expect("send");
        out.push(summary(&c.read_syncs(1)));
        out
    };
    let mut direct =
        RawConn::connect(cluster.primary.port, SCRAM_USER, SCRAM_PASS, DB).expect("direct login");
    let want = script(&mut direct);
    assert_eq!(
        want[1], "Z[I]",
        "PostgreSQL skips the rest of the failed batch"
    );

    let pooler = Pooler::start(&pool_toml(cluster, free_port(), DB, 1, ""));
    let mut c = RawConn::connect(pooler.port, SCRAM_USER, SCRAM_PASS, DB).expect("login");
    c.set_read_timeout(Duration::from_secs(20));
    assert_eq!(script(&mut c), want, "\n{}", tail(&pooler.logs(), 40));
}
