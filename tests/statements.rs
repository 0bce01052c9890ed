//! Issue 17: the statements the pooler prepares for transaction-mode clients behave as the
//! client's own would on a server of its own, also when the schema under them changes.
//! PostgreSQL is the oracle: each scenario runs directly and through the pooler.
//!
//! 1. A client that prepares its statement again after a schema change gets a statement
//!    of the new schema, although the server it lands on has a copy from before
//!    (prepared there by another client), whether the change went through the pool or
//!    not.
//! 2. A client's statement prepared before a type was dropped and re-created behind the
//!    pool's back is refused as PostgreSQL refuses it ("cache lookup failed for type");
//!    the refused copy is prepared again at its next use.
//! 3. psycopg's savepoint case: statements of a rolled-back savepoint's types.

mod support;

use support::raw::{self, Msg, RawConn};
use support::{config, free_port, shared, Pooler, DB, SCRAM_PASS, SCRAM_USER};

/// Sends `msgs` and reads through ReadyForQuery.
fn run(c: &mut RawConn, msgs: &[Vec<u8>]) -> Vec<Msg> {
    c.send(&msgs.concat()).expect("send");
    c.read_until_ready().expect("reply")
}

/// The first column of the first row, or the error's SQLSTATE and message.
fn answer(msgs: &[Msg]) -> Result<Option<String>, String> {
    if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
        return Err(format!(
            "{} {}",
            e.sqlstate().unwrap_or_default(),
            e.field(b'M').unwrap_or_default()
        ));
    }
    Ok(msgs
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| m.row()[0].clone()))
}

/// Parse (named `name`), Bind with `value`, Execute, Sync.
fn prepare_and_run(c: &mut RawConn, name: &str, sql: &str, value: &str) -> Vec<Msg> {
    run(
        c,
        &[
            raw::parse(name, sql),
            raw::bind("", name, &[Some(value)]),
            raw::execute(""),
            raw::sync(),
        ],
    )
}

/// Bind the existing statement `name` with `value`, Execute, Sync.
fn run_prepared(c: &mut RawConn, name: &str, value: &str) -> Vec<Msg> {
    run(
        c,
        &[
            raw::bind("", name, &[Some(value)]),
            raw::execute(""),
            raw::sync(),
        ],
    )
}

fn simple(c: &mut RawConn, sql: &str) {
    let r = c.simple_query(sql).expect(sql);
    assert!(answer(&r).is_ok(), "{sql}: {:?}", answer(&r));
}

/// Connects as the fixture user directly (`pooler` None) or through the pooler.
fn connect(port: u16) -> RawConn {
    RawConn::connect(port, SCRAM_USER, SCRAM_PASS, DB).expect("connect")
}

/// A type used by a prepared statement is dropped and re-created, through the pool or
/// behind its back (a migration run directly): a client that prepares the statement again
/// gets one of the new type, as it would directly, although the only server has a copy
/// from before, prepared by another client.
#[test]
fn a_statement_prepared_again_after_a_schema_change_is_of_the_new_schema() {
    let cluster = shared();
    // One server: every client of the pool shares its statements.
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 1, ""));
    for (label, port) in [("direct", cluster.primary.port), ("pooled", pooler.port)] {
        let ty = format!("stmt_enum_{label}");
        let sql = format!("SELECT $1::{ty}::text");
        let mut admin = connect(cluster.primary.port);
        simple(
            &mut admin,
            &format!("DROP TYPE IF EXISTS {ty}; CREATE TYPE {ty} AS ENUM ('a', 'b')"),
        );
        let mut first = connect(port);
        let r = prepare_and_run(&mut first, "s1", &sql, "a");
        assert_eq!(answer(&r), Ok(Some("a".into())), "{label}");
        // Through the pool (direct: the same connection kind as the clients).
        let mut ddl = connect(port);
        simple(
            &mut ddl,
            &format!("DROP TYPE {ty}; CREATE TYPE {ty} AS ENUM ('a', 'b', 'c')"),
        );
        let mut second = connect(port);
        let r = prepare_and_run(&mut second, "s1", &sql, "c");
        assert_eq!(
            answer(&r),
            Ok(Some("c".into())),
            "{label}: through the pool"
        );
        // Behind the pool's back: the first client's own statement, prepared before both
        // changes, is refused as PostgreSQL refuses it.
        simple(
            &mut admin,
            &format!("DROP TYPE {ty}; CREATE TYPE {ty} AS ENUM ('a', 'b', 'c', 'd')"),
        );
        let r = run_prepared(&mut first, "s1", "d");
        let refused = answer(&r).expect_err(&format!("{label}: a statement of the old type"));
        assert!(
            refused.starts_with("XX000 cache lookup failed for type"),
            "{label}: {refused}"
        );
        let mut third = connect(port);
        let r = prepare_and_run(&mut third, "other_name", &sql, "d");
        assert_eq!(answer(&r), Ok(Some("d".into())), "{label}: behind its back");
        // Directly the refused statement stays refused until the client prepares it again;
        // the pooler prepares the refused copy again, so the retry works.
        let r = run_prepared(&mut first, "s1", "d");
        if label == "direct" {
            assert!(answer(&r).is_err(), "{label}: {:?}", answer(&r));
        } else {
            assert_eq!(answer(&r), Ok(Some("d".into())), "{label}: retried");
        }
        run(&mut first, &[raw::close(b'S', "s1"), raw::sync()]);
        let r = prepare_and_run(&mut first, "s1", &sql, "d");
        assert_eq!(answer(&r), Ok(Some("d".into())), "{label}: prepared again");
    }
}

/// psycopg's test_change_type_savepoint, as its messages go: inside a transaction, three
/// times a savepoint that creates a type and a table, inserts through a prepared statement
/// and is rolled back, the client closing its statement each time.
#[test]
fn statements_of_rolled_back_savepoints_are_prepared_again() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 1, ""));
    for (label, port) in [("direct", cluster.primary.port), ("pooled", pooler.port)] {
        let ty = format!("sp_enum_{label}");
        let table = format!("sp_table_{label}");
        let sql = format!("INSERT INTO {table} (bar) VALUES ($1::{ty}[])");
        let mut c = connect(port);
        simple(&mut c, "BEGIN");
        for round in 0..3 {
            simple(&mut c, "SAVEPOINT sp");
            simple(&mut c, &format!("CREATE TYPE {ty} AS ENUM ('foo', 'bar')"));
            simple(
                &mut c,
                &format!("CREATE TABLE {table} (id integer, bar {ty}[])"),
            );
            let r = prepare_and_run(&mut c, "_pg3_0", &sql, "{foo}");
            assert_eq!(answer(&r), Ok(None), "{label} round {round}");
            simple(&mut c, "ROLLBACK TO SAVEPOINT sp");
            run(&mut c, &[raw::close(b'S', "_pg3_0"), raw::sync()]);
        }
        simple(&mut c, "ROLLBACK");
    }
}

/// What a client sees of each step, to compare with PostgreSQL: the rows' first column,
/// or the error's SQLSTATE.
fn outcome(msgs: &[Msg]) -> String {
    match answer(msgs) {
        Ok(v) => format!("{v:?}"),
        Err(e) => e[..5].to_string(),
    }
}

/// SQL `PREPARE`/`EXECUTE`/`DEALLOCATE` in transaction mode, simple and extended protocol:
/// the same answers as PostgreSQL, and the statement runs on whichever server the client
/// gets (it is renamed and prepared there), without pinning the client to one.
#[test]
fn sql_prepare_and_execute_follow_the_client_across_servers() {
    let cluster = shared();
    let pooler = Pooler::start(&config(cluster, free_port(), "transaction", 2, ""));
    let mut seen = Vec::new();
    for (label, port) in [("direct", cluster.primary.port), ("pooled", pooler.port)] {
        let mut c = connect(port);
        let mut other = connect(port);
        let mut steps = Vec::new();
        let mut step = |c: &mut RawConn, msgs: &[Vec<u8>]| {
            let r = run(c, msgs);
            steps.push(outcome(&r));
            r
        };
        let q = |sql: &str| vec![raw::query(sql)];
        let extended = |sql: &str| {
            vec![
                raw::parse("", sql),
                raw::bind("", "", &[]),
                raw::execute(""),
                raw::sync(),
            ]
        };
        step(&mut c, &q("PREPARE twice(int) AS SELECT ($1 * 2)::text"));
        step(
            &mut c,
            &extended("PREPARE pid_of AS SELECT pg_backend_pid()::text"),
        );
        // Ten rounds, the other client holding a server in every second one: the pool's
        // two servers both run the client's statements.
        let mut pids = std::collections::HashSet::new();
        for round in 0..10 {
            if round % 2 == 1 {
                simple(&mut other, "BEGIN");
                simple(&mut other, "SELECT 1");
            }
            step(&mut c, &q(&format!("EXECUTE twice({round})")));
            let r = run(&mut c, &extended("EXECUTE pid_of"));
            pids.insert(answer(&r).expect("pid").expect("a row"));
            if round % 2 == 1 {
                simple(&mut other, "COMMIT");
            }
        }
        // Names as PostgreSQL keeps them: in use, gone, failed, inside a transaction.
        step(&mut c, &q("PREPARE twice AS SELECT 1"));
        step(&mut c, &extended("PREPARE Twice AS SELECT 1"));
        step(&mut c, &q("DEALLOCATE twice"));
        step(&mut c, &q("EXECUTE twice(1)"));
        step(&mut c, &q("PREPARE twice AS SELECT 'again'"));
        step(&mut c, &extended("EXECUTE twice"));
        step(&mut c, &extended("DEALLOCATE PREPARE twice"));
        step(&mut c, &q("PREPARE bad AS SELECT no_such_column"));
        step(&mut c, &q("EXECUTE bad"));
        step(&mut c, &extended("PREPARE bad AS SELECT no_such_column"));
        step(&mut c, &extended("EXECUTE bad"));
        step(&mut c, &q("BEGIN"));
        step(&mut c, &q("PREPARE in_tx AS SELECT 'kept'"));
        step(&mut c, &q("ROLLBACK"));
        step(&mut c, &q("EXECUTE in_tx"));
        step(&mut c, &q("DEALLOCATE ALL"));
        step(&mut c, &q("EXECUTE in_tx"));
        // Two-phase commit's PREPARE TRANSACTION is not a statement named "transaction".
        step(&mut c, &q("BEGIN"));
        let r = step(&mut c, &q(&format!("PREPARE TRANSACTION 'stmt_{label}'")));
        if answer(&r).is_ok() {
            simple(&mut c, &format!("ROLLBACK PREPARED 'stmt_{label}'"));
        } else {
            simple(&mut c, "ROLLBACK");
        }
        if label == "pooled" {
            assert_eq!(pids.len(), 2, "ran on both servers: {pids:?}");
        }
        seen.push(steps);
    }
    assert_eq!(seen[1], seen[0], "through the pooler as directly");
    assert!(
        seen[0].contains(&"Some(\"18\")".to_string()),
        "{:?}",
        seen[0]
    );
}
