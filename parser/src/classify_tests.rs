//! Tests of `classify.rs`: reads vs writes (PgCat's router tests included), transaction
//! control, session effects seen through functions, and the unparsed fallback.

use super::*;

fn c(sql: &str) -> Classification {
    classify(sql, None)
}

fn is_read(sql: &str) -> bool {
    let c = c(sql);
    assert!(c.parsed, "{sql:?} should parse");
    !c.write
}

#[test]
fn reads() {
    for sql in [
        "SELECT * FROM items WHERE id = 5",
        "SELECT id, name, value FROM items INNER JOIN prices ON item.id = prices.item_id",
        "WITH t AS (SELECT * FROM items) SELECT * FROM t",
        "WITH t AS (SELECT * FROM items WHERE name = $1) SELECT * FROM t WHERE id = $2",
        "SELECT 1; SELECT 2;",
        "SELECT currval('s')",
        "SELECT now(), pg_sleep(0)",
        "VALUES (1), (2)",
        "SELECT 1 UNION SELECT 2",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT * FROM t",
        "SHOW work_mem",
        "SHOW ALL",
        "SELECT * FROM (SELECT 1) s",
        "SELECT req_tab_0.*  FROM validation req_tab_0  WHERE  array['http://www.w3.org/ns/shacl#ValidationResult'] && req_tab_0.type::text[] AND ( (  (req_tab_0.focusnode = 'DataSource_Credilogic_DataSourceAddress_144959227') )  )",
        "WITH EmployeeSalaries AS (SELECT Department, Salary FROM Employees) SELECT Department, AVG(Salary) AS AverageSalary FROM EmployeeSalaries GROUP BY Department;",
        "",
        ";",
    ] {
        assert!(is_read(sql), "{sql:?} should be a read");
    }
}

#[test]
fn writes() {
    for sql in [
        "UPDATE items SET name = 'pumpkin' WHERE id = 5",
        "INSERT INTO items (id, name) VALUES (5, 'pumpkin')",
        "DELETE FROM items WHERE id = 5",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "CREATE TABLE t (a int)",
        "DROP TABLE t",
        "ALTER TABLE t ADD COLUMN b int",
        "TRUNCATE t",
        "COPY t FROM STDIN",
        "COPY t TO STDOUT",
        "CALL p()",
        "EXPLAIN ANALYZE DELETE FROM t",
        "EXPLAIN DELETE FROM t",
        "SELECT * FROM items WHERE id = 5 FOR UPDATE",
        "SELECT * FROM items FOR SHARE SKIP LOCKED",
        "SELECT * FROM items FOR NO KEY UPDATE",
        "SELECT * FROM items FOR KEY SHARE",
        "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
        "SELECT * INTO t2 FROM t",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i",
        "SELECT nextval('s')",
        "SELECT setval('s', 1)",
        "SELECT pg_catalog.nextval('s')",
        "SELECT * FROM nextval('s')",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_try_advisory_lock(1)",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        "SELECT lo_create(0)",
        "SELECT set_config('a', 'b', false)",
        "SELECT pg_notify('c', 'x')",
        "SELECT pg_terminate_backend(1)",
        "SELECT pg_cancel_backend(1)",
        "SELECT pg_reload_conf()",
        "SELECT x FROM t WHERE y IN (SELECT nextval('s'))",
        "SELECT 123; INSERT INTO t VALUES (5); SELECT 1;",
        "LISTEN x",
        "NOTIFY c, 'x'",
        "PREPARE p AS SELECT 1",
        "EXECUTE p(1)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "VACUUM t",
        "LOCK TABLE t",
    ] {
        let x = c(sql);
        assert!(x.write, "{sql:?} should be a write: {x:?}");
    }
}

/// PgCat's `test_split_cte_queries`.
#[test]
fn cte_with_update_is_a_write() {
    let sql = "WITH t AS (
                SELECT id FROM users WHERE name ILIKE '%ja%'
            )
            UPDATE user_languages
               SET settings = '{}'
              FROM t WHERE t.id = user_id;";
    let x = c(sql);
    assert!(x.parsed && x.write);
}

#[test]
fn control_statements_are_not_writes() {
    for sql in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "END",
        "ABORT",
        "SAVEPOINT a",
        "RELEASE SAVEPOINT a",
        "ROLLBACK TO SAVEPOINT a",
        "SET x = 1",
        "SET LOCAL x = 1",
        "RESET ALL",
        "DISCARD ALL",
        "DEALLOCATE ALL",
        "BEGIN; SELECT 1; COMMIT;",
    ] {
        assert!(is_read(sql), "{sql:?}");
    }
}

#[test]
fn transactions() {
    assert_eq!(c("BEGIN").begin, Some(false));
    assert_eq!(c("BEGIN READ ONLY").begin, Some(true));
    assert_eq!(c("begin transaction read only").begin, Some(true));
    assert_eq!(
        c("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY").begin,
        Some(true)
    );
    assert_eq!(c("BEGIN READ ONLY, READ WRITE").begin, Some(false));
    assert_eq!(c("START TRANSACTION READ WRITE").begin, Some(false));
    assert_eq!(
        c("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ").begin,
        Some(false)
    );
    assert_eq!(c("SELECT 1").begin, None);
    // A BEGIN anywhere counts: the transaction it opens must not start on a replica by
    // accident of an earlier read in the same string.
    assert_eq!(c("SELECT 1; BEGIN").begin, Some(false));

    let whole = c("BEGIN; SELECT 1; COMMIT;");
    assert_eq!(whole.begin, Some(false));
    assert!(whole.ends_transaction);
    assert_eq!(whole.statement_count, 3);

    for sql in ["COMMIT", "ROLLBACK", "END", "ABORT", "COMMIT TRANSACTION"] {
        assert!(c(sql).ends_transaction, "{sql}");
    }
    for sql in [
        "ROLLBACK TO SAVEPOINT a",
        "COMMIT AND CHAIN",
        "SAVEPOINT a",
        "SELECT 1",
    ] {
        assert!(!c(sql).ends_transaction, "{sql}");
    }
}

#[test]
fn session_effects_through_functions() {
    assert!(c("SELECT set_config('a', 'b', false)").session.set_config);
    assert!(c("SELECT set_config('a', 'b', $1)").session.set_config);
    assert!(!c("SELECT set_config('a', 'b', true)").session.set_config);
    assert!(!c("SELECT set_config('a', 'b', 'true')").session.set_config);
    assert!(
        c("UPDATE t SET a = set_config('a', 'b', false)")
            .session
            .set_config
    );
    assert!(c("SELECT pg_advisory_lock(1)").session.advisory_lock);
    assert!(c("SELECT pg_advisory_lock_shared(1)").session.advisory_lock);
    assert!(c("SELECT pg_try_advisory_lock(1, 2)").session.advisory_lock);
    assert!(c("SELECT * FROM pg_advisory_lock(1)").session.advisory_lock);
    assert!(!c("SELECT pg_advisory_xact_lock(1)").session.advisory_lock);
    assert!(!c("SELECT pg_advisory_unlock(1)").session.advisory_lock);
    assert!(c("SELECT * INTO TEMP t2 FROM t").session.temp_table);
    assert!(c("CREATE TEMP TABLE t (a int)").session.temp_table);
    assert!(c("SELECT setseed(0.5)").session.other);
    assert!(c("SELECT 1").session.is_empty());
    assert!(c("INSERT INTO t VALUES (1)").session.is_empty());
}

#[test]
fn multi_statement_session_effects() {
    let x = c("SET a = 1; SELECT 1; SET LOCAL b = 2; RESET c; LISTEN x");
    assert_eq!(
        x.session.set,
        vec![("a".to_string(), Some("1".to_string()))]
    );
    assert_eq!(x.session.reset, vec!["c".to_string()]);
    assert!(x.session.listen);
    assert!(x.write, "LISTEN cannot run on a standby");
    assert_eq!(x.statement_count, 5);
}

#[test]
fn unparsable_is_a_write_with_scanned_effects() {
    let x = c("SELEC 1");
    assert!(!x.parsed && x.write);

    let x = c("DO $$ BEGIN PERFORM 1; END $$");
    assert!(!x.parsed && x.write && x.session.other);

    let x = c("BEGIN; SELEC 1");
    assert!(!x.parsed && x.write);
    assert_eq!(x.begin, Some(false));

    let x = c("SELEC 1; COMMIT");
    assert!(x.ends_transaction);
    assert_eq!(x.statement_count, 2);

    assert!(!c("ROLLBACK TO sp; SELEC").ends_transaction);
    assert!(c("SELEC pg_advisory_lock(1)").session.advisory_lock);
}

#[test]
fn too_long_is_unparsed() {
    let sql = "SELECT 1";
    assert!(classify(sql, Some(8)).parsed);
    let x = classify(sql, Some(7));
    assert!(!x.parsed && x.write);
    let x = classify("LISTEN channel_name", Some(5));
    assert!(!x.parsed && x.session.listen);
}

#[test]
fn classify_parsed_matches_classify() {
    for sql in [
        "SELECT 1",
        "INSERT INTO t VALUES (1)",
        "BEGIN READ ONLY",
        "SET a = 1",
    ] {
        let parsed = Parsed::parse(sql);
        assert_eq!(
            classify_parsed(sql, parsed.as_ref()),
            classify(sql, None),
            "{sql}"
        );
    }
}

#[test]
fn long_and_chains_do_not_overflow_a_small_stack() {
    // A client may send a huge WHERE clause; the walker must cope on a 2 MiB thread stack
    // (tokio's default).
    let mut sql = String::from("SELECT * FROM t WHERE a = 0");
    for i in 1..3000 {
        sql.push_str(&format!(" AND a = {i}"));
    }
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || classify(&sql, None))
        .expect("spawn");
    let x = handle.join().expect("no stack overflow");
    assert!(x.parsed && !x.write);
}
