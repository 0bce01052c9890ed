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
