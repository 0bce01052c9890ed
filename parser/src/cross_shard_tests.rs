//! Unit tests of `cross_shard`: what each statement needs when it has no shard.
use super::*;

fn of(sql: &str) -> CrossShard {
    let key = KeyColumn::parse("data.id");
    CrossShard::of(sql, Parsed::parse(sql).as_ref(), key.as_ref())
}

#[test]
fn statements_reading_no_table_need_one_shard() {
    for sql in [
        "SELECT 1",
        "SELECT now(), pg_backend_pid()",
        "SHOW server_version",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "DISCARD ALL",
        "SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typname = 'int4'",
        "SELECT typname FROM pg_type",
        "SELECT * FROM information_schema.tables",
        "SELECT 1; SET x = 1",
    ] {
        assert_eq!(of(sql), CrossShard::AnyShard, "{sql}");
    }
}

#[test]
fn transaction_control_and_set_run_on_every_shard_of_a_transaction() {
    for sql in [
        "SET statement_timeout = 5",
        "SET LOCAL lock_timeout = 10",
        "SAVEPOINT s",
        "RELEASE SAVEPOINT s",
        "ROLLBACK TO SAVEPOINT s",
        "COMMIT AND CHAIN",
    ] {
        assert_eq!(of(sql), CrossShard::Control, "{sql}");
    }
}

#[test]
fn inserts_whose_rows_all_give_the_key_are_split() {
    for sql in [
        "INSERT INTO data (id, value) VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO data (value, id) VALUES ($1, $2), ($3, $4) RETURNING id",
    ] {
        assert_eq!(of(sql), CrossShard::Insert, "{sql}");
    }
}

#[test]
fn copy_from_stdin_splits_by_key_and_copy_to_stdout_concatenates() {
    let CrossShard::CopyIn { table, key, format } =
        of("COPY data (value, id) FROM STDIN (FORMAT csv, HEADER, DELIMITER ';', QUOTE '''')")
    else {
        panic!("not split");
    };
    assert_eq!((table.as_str(), key), ("data", Some(1)));
    assert_eq!(format.kind, CopyKind::Csv);
    assert!(format.header);
    assert_eq!(
        (format.delimiter, format.quote, format.escape),
        (b';', b'\'', b'\'')
    );
    assert_eq!(format.null, "");
    let CrossShard::CopyIn { key, format, .. } = of("COPY data FROM STDIN BINARY") else {
        panic!("not split");
    };
    assert_eq!((key, format.kind), (None, CopyKind::Binary));
    let CrossShard::CopyOut { shard_sql, .. } =
        of("COPY data (id, value) TO STDOUT (FORMAT csv, QUOTE '''')")
    else {
        panic!("not merged");
    };
    assert_eq!(
        shard_sql.as_ref().map(|s| s.text.as_str()),
        Some("COPY (SELECT id, value FROM data) TO STDOUT (FORMAT csv, QUOTE '''')")
    );
    assert!(matches!(
        of("COPY (SELECT id FROM data WHERE id > 3) TO STDOUT"),
        CrossShard::CopyOut {
            shard_sql: None,
            ..
        }
    ));
}

#[test]
fn ddl_runs_on_every_shard_except_what_cannot_run_in_a_transaction() {
    for sql in [
        "CREATE TABLE t (id bigint)",
        "ALTER TABLE data ADD COLUMN x int",
        "DROP TABLE data",
        "CREATE INDEX ON data (id)",
        "TRUNCATE data",
        "COMMENT ON TABLE data IS 'x'",
    ] {
        assert_eq!(of(sql), CrossShard::Schema, "{sql}");
    }
    assert!(matches!(
        of("CREATE INDEX CONCURRENTLY ON data (id)"),
        CrossShard::Refused(what) if what.contains("CONCURRENTLY")
    ));
}

#[test]
fn plain_selects_concatenate() {
    assert_eq!(
        of("SELECT id, value FROM data WHERE value > 3"),
        CrossShard::Concat {
            functions: vec![],
            order: vec![],
            distinct_on: 0,
            limit: None,
            offset: None,
            shard_sql: None,
        }
    );
    assert_eq!(
        of("SELECT lower(name), upper(name) FROM public.data FOR UPDATE"),
        CrossShard::Concat {
            functions: vec!["lower".into(), "upper".into()],
            order: vec![],
            distinct_on: 0,
            limit: None,
            offset: None,
            shard_sql: None,
        }
    );
    // A user-defined aggregate looks like any function: the caller checks the names.
    assert_eq!(
        of("SELECT my_agg(value) FROM data"),
        CrossShard::Concat {
            functions: vec!["my_agg".into()],
            order: vec![],
            distinct_on: 0,
            limit: None,
            offset: None,
            shard_sql: None,
        }
    );
    // So does an aggregate inside an expression, or beside a plain column.
    for sql in [
        "SELECT count(*) + 1 FROM data",
        "SELECT id, count(*) FROM data",
        "SELECT count(DISTINCT id) FROM data",
        "SELECT sum(id) FILTER (WHERE id > 1) FROM data",
        "SELECT sum(*) FROM data",
    ] {
        assert!(matches!(of(sql), CrossShard::Concat { .. }), "{sql}");
    }
}

#[test]
fn updates_and_deletes_of_one_table_run_on_every_shard() {
    for sql in [
        "UPDATE data SET value = 'x' WHERE value IS NULL",
        "UPDATE data SET value = upper(value) RETURNING id, value",
        "DELETE FROM data WHERE value = 'gone'",
        "DELETE FROM data RETURNING *",
    ] {
        assert_eq!(of(sql), CrossShard::Write, "{sql}");
    }
}

#[test]
fn order_by_output_columns_and_limit_merge() {
    let key = |column, descending, nulls_first| SortKey {
        column,
        descending,
        nulls_first,
    };
    let CrossShard::Concat { order, limit, .. } = of(
        "SELECT id, value AS v, lower(value) FROM data ORDER BY v DESC, 1, lower(value) NULLS FIRST, \"Id\" DESC NULLS LAST LIMIT 10",
    ) else {
        panic!("not merged");
    };
    assert_eq!(
        order,
        [
            key(SortColumn::Name("v".into()), true, true),
            key(SortColumn::Position(0), false, false),
            key(SortColumn::Position(2), false, true),
            key(SortColumn::Name("Id".into()), true, false),
        ]
    );
    assert_eq!(limit, Some(Count::Number(10)));
    // With `*`, names are found in the RowDescription; t.id names column id.
    let CrossShard::Concat { order, .. } = of("SELECT * FROM data t ORDER BY t.id, ID") else {
        panic!("not merged");
    };
    assert_eq!(
        order,
        [
            key(SortColumn::Name("id".into()), false, false),
            key(SortColumn::Name("id".into()), false, false),
        ]
    );
    // An aggregate with ORDER BY or LIMIT is not combined (the caller refuses it).
    assert!(matches!(
        of("SELECT count(*) FROM data LIMIT 1"),
        CrossShard::Concat { .. }
    ));
}

#[test]
fn offset_runs_as_a_larger_limit_on_each_shard() {
    let CrossShard::Concat {
        limit,
        offset,
        shard_sql,
        ..
    } = of("SELECT id FROM data ORDER BY id LIMIT 10 OFFSET 5 FOR UPDATE")
    else {
        panic!("not merged");
    };
    assert_eq!(
        (limit, offset),
        (Some(Count::Number(10)), Some(Count::Number(5)))
    );
    assert_eq!(
        shard_sql.as_ref().map(|s| s.text.as_str()),
        Some("SELECT id FROM data ORDER BY id LIMIT (10)::INT8 + (5)::INT8 FOR UPDATE")
    );
    let CrossShard::Concat {
        limit,
        offset,
        shard_sql,
        ..
    } = of("SELECT id FROM data ORDER BY id OFFSET $2")
    else {
        panic!("not merged");
    };
    assert_eq!((limit, offset), (None, Some(Count::Param(2))));
    assert_eq!(
        shard_sql.as_ref().map(|s| s.text.as_str()),
        Some("SELECT id FROM data ORDER BY id")
    );
    let CrossShard::Concat {
        limit, shard_sql, ..
    } = of("SELECT id FROM data LIMIT $1")
    else {
        panic!("not merged");
    };
    assert_eq!((limit, shard_sql), (Some(Count::Param(1)), None));
    // A parameter only OFFSET had is not the shards' any more: the Bind is cut to match.
    let CrossShard::Concat { shard_sql, .. } =
        of("SELECT id FROM data WHERE id > $1 ORDER BY id OFFSET $2")
    else {
        panic!("not merged");
    };
    assert_eq!(shard_sql.map(|s| s.params), Some(vec![1]));
}

#[test]
fn plain_aggregates_without_group_by_combine() {
    use Aggregate::*;
    assert_eq!(
        of("SELECT count(*), COUNT(value) AS n, sum(id), min(data.\"Value\"), max(id), bool_and(id > 0), every(true), bool_or(false) FROM public.Data WHERE id > 3"),
        CrossShard::Aggregate {
            functions: vec![Count, Count, Sum, Min, Max, BoolAnd, BoolAnd, BoolOr],
            columns: vec![
                None,
                Some(("data".into(), "value".into())),
                Some(("data".into(), "id".into())),
                Some(("data".into(), "Value".into())),
                Some(("data".into(), "id".into())),
                None,
                None,
                None,
            ],
        }
    );
}

#[test]
fn what_cannot_be_merged_exactly_yet_is_refused_by_name() {
    for (sql, what) in [
        (
            "SELECT id FROM data ORDER BY lower(value)",
            "ORDER BY an expression that is not an output column",
        ),
        (
            "SELECT id FROM data ORDER BY id USING <",
            "ORDER BY … USING",
        ),
        (
            "SELECT id FROM data LIMIT 2 + 1",
            "LIMIT or OFFSET other than a number or a parameter",
        ),
        ("SELECT id FROM data FETCH FIRST 3 ROWS ONLY", "FETCH"),
        (
            "SELECT id, random() AS r FROM data ORDER BY r",
            "ORDER BY a volatile function (random(), now(), nextval() …: each shard's value differs)",
        ),
        (
            "SELECT now() - interval '1 day' AS t, id FROM data ORDER BY 1",
            "ORDER BY a volatile function (random(), now(), nextval() …: each shard's value differs)",
        ),
        (
            "SELECT (random() * 3)::int AS b, count(*) FROM data GROUP BY b",
            "GROUP BY a volatile function (random(), now(), nextval() …: each shard's value differs)",
        ),
        (
            "SELECT DISTINCT ON (value) value FROM data",
            "DISTINCT ON other than the leading ORDER BY output columns of a plain SELECT",
        ),
        (
            "SELECT DISTINCT ON (value) value, id FROM data ORDER BY id, value",
            "DISTINCT ON other than the leading ORDER BY output columns of a plain SELECT",
        ),
        (
            "SELECT value, count(*) FROM data GROUP BY ROLLUP (value)",
            "GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS",
        ),
        (
            "SELECT value, stddev(id) FROM data GROUP BY value",
            "an output column that is neither grouped nor an aggregate",
        ),
        (
            "SELECT d.id FROM data d JOIN other o ON o.id = d.id",
            "joins (several tables in FROM)",
        ),
        (
            "SELECT d.id FROM data d, other o",
            "joins (several tables in FROM)",
        ),
        (
            "SELECT id FROM data WHERE id IN (SELECT id FROM other)",
            "subqueries",
        ),
        ("SELECT (SELECT 1) FROM data", "subqueries"),
        (
            "SELECT * FROM (SELECT id FROM data) s",
            "a subquery or function in FROM",
        ),
        ("SELECT row_number() OVER () FROM data", "window functions"),
        (
            "WITH x AS (SELECT 1) SELECT * FROM data",
            "WITH (common table expressions)",
        ),
        (
            "SELECT id FROM data UNION SELECT id FROM other",
            "UNION, INTERSECT or EXCEPT",
        ),
        (
            "INSERT INTO data VALUES (1)",
            "an INSERT whose rows do not all give the sharding key column \
             (automatic_sharding_key, named in the column list) as a literal or parameter",
        ),
        (
            "INSERT INTO data (id) SELECT 1",
            "INSERT … SELECT (or DEFAULT VALUES)",
        ),
        (
            "UPDATE data SET id = id + 1",
            "an UPDATE of the sharding key column",
        ),
        (
            "UPDATE data SET (value, id) = ('a', 2)",
            "an UPDATE of the sharding key column",
        ),
        (
            "UPDATE data SET value = o.v FROM other o WHERE o.id = data.id",
            "an UPDATE or DELETE reading other tables",
        ),
        (
            "DELETE FROM data USING other WHERE other.id = data.id",
            "an UPDATE or DELETE reading other tables",
        ),
        (
            "DELETE FROM data WHERE id IN (SELECT id FROM other)",
            "an UPDATE or DELETE reading other tables",
        ),
        (
            "COPY other FROM STDIN",
            "COPY FROM into a table other than the sharding key's (automatic_sharding_key)",
        ),
        (
            "COPY data (value) FROM STDIN",
            "COPY FROM whose column list leaves out the sharding key",
        ),
        (
            "COPY data FROM '/tmp/x'",
            "COPY to or from a file or program",
        ),
        (
            "SELECT value COLLATE \"en-x-icu\" AS v FROM data ORDER BY v",
            "COLLATE in a statement ordered or aggregated across shards",
        ),
        (
            "SELECT 1; COPY data FROM STDIN; SELECT count(*) FROM data",
            "COPY FROM STDIN among several statements in one query string (send it as a query of its own)",
        ),
        (
            "SELECT id FROM data; SELECT a.id FROM data a, data b",
            "joins (several tables in FROM)",
        ),
    ] {
        assert_eq!(of(sql), CrossShard::Refused(what), "{sql}");
    }
    assert_eq!(of("SELEC nonsense"), CrossShard::Unknown);
}

#[test]
fn several_statements_run_one_by_one_as_written() {
    assert_eq!(
        of("SELECT count(*) FROM data; /* c; */ UPDATE data SET value = 'a;b' WHERE id = 3;"),
        CrossShard::Several {
            texts: vec![
                "SELECT count(*) FROM data".into(),
                "/* c; */ UPDATE data SET value = 'a;b' WHERE id = 3".into()
            ],
            keyed: false,
        }
    );
    // Every statement names its key: on one shard the whole string runs there.
    let CrossShard::Several { keyed, .. } =
        of("UPDATE data SET value = 'x' WHERE id = 3; SELECT 1; SELECT * FROM data WHERE id = 9")
    else {
        panic!("several");
    };
    assert!(keyed);
    // A keyed statement that alone would be refused runs on its key's shard.
    let CrossShard::Several { keyed, .. } =
        of("SELECT a.id FROM data a JOIN data b ON a.id = b.id WHERE a.id = 1; SELECT * FROM data WHERE id = 2")
    else {
        panic!("several");
    };
    assert!(keyed);
}

#[test]
fn having_and_order_by_aggregates_outside_the_select_list_are_hidden_columns() {
    let CrossShard::Grouped {
        functions,
        visible,
        order,
        having,
        shard_sql,
        ..
    } = of("SELECT grp FROM data GROUP BY grp HAVING count(*) > 5 ORDER BY sum(id) DESC, avg(id)")
    else {
        panic!("not grouped");
    };
    assert_eq!(
        functions,
        [
            None,
            Some(Aggregate::Sum),
            Some(Aggregate::Avg),
            Some(Aggregate::Count)
        ]
    );
    assert_eq!(visible, 1);
    let columns: Vec<_> = order.iter().map(|k| k.column.clone()).collect();
    assert_eq!(columns, [SortColumn::Position(1), SortColumn::Position(2)]);
    assert!(matches!(having, Some(Having::Compare { column: 3, .. })));
    assert_eq!(
        shard_sql.text,
        "SELECT grp, sum(id), sum(id) AS avg, count(id), count(*) FROM data GROUP BY grp"
    );
}

#[test]
fn group_by_and_distinct_regroup_without_having_order_or_limit_on_the_shards() {
    let CrossShard::Grouped {
        functions,
        having,
        limit,
        shard_sql,
        ..
    } = of("SELECT grp AS g, count(*), max(id) FROM data WHERE id > 3 GROUP BY g HAVING count(*) > 5 AND NOT g = 2 ORDER BY 2 DESC LIMIT 3")
    else {
        panic!("not grouped");
    };
    assert_eq!(
        functions,
        [None, Some(Aggregate::Count), Some(Aggregate::Max)]
    );
    assert_eq!(limit, Some(Count::Number(3)));
    assert_eq!(
        shard_sql.text,
        "SELECT grp AS g, count(*), max(id) FROM data WHERE id > 3 GROUP BY g"
    );
    let compare = |column, op, constant: &str| Having::Compare {
        column,
        op,
        constant: Constant::Value(Some(constant.into())),
    };
    assert_eq!(
        having,
        Some(Having::And(
            Box::new(compare(1, Comparison::Gt, "5")),
            Box::new(Having::Not(Box::new(compare(0, Comparison::Eq, "2")))),
        ))
    );
    let CrossShard::Grouped { functions, .. } = of("SELECT DISTINCT grp, value FROM data") else {
        panic!("not grouped");
    };
    assert_eq!(functions, [None, None]);
}

#[test]
fn avg_runs_as_sum_and_count_on_each_shard() {
    let CrossShard::Grouped {
        functions,
        shard_sql,
        ..
    } = of("SELECT avg(id), count(*), avg(value) AS v FROM data")
    else {
        panic!("not grouped");
    };
    assert_eq!(
        functions,
        [
            Some(Aggregate::Avg),
            Some(Aggregate::Count),
            Some(Aggregate::Avg)
        ]
    );
    assert_eq!(
        shard_sql.text,
        "SELECT sum(id) AS avg, count(id), count(*), sum(value) AS v, count(value) FROM data"
    );
}

#[test]
fn distinct_on_keeps_the_first_of_each_run_of_the_merged_order() {
    let CrossShard::Concat {
        distinct_on, order, ..
    } = of("SELECT DISTINCT ON (value, 2) id, value FROM data ORDER BY 2, value DESC, id")
    else {
        panic!("not merged");
    };
    assert_eq!((distinct_on, order.len()), (2, 3));
}
