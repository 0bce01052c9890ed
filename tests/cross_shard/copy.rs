//! COPY with no shard (issue 19): `COPY loaded FROM STDIN` in text, CSV (HEADER, QUOTE,
//! DELIMITER, NULL) and binary sends each row to its shard, whose hash partition would
//! reject a misrouted one; a row the pooler cannot place, or one a shard rejects, leaves
//! nothing loaded anywhere. `COPY … TO STDOUT` answers every shard's rows. psql's `\copy`
//! drives it (the simple protocol), and the oracle's `loaded_src` is the data.

use super::*;

const LOADED: &str = "query_parser_enabled = true\ndefault_shard = \"all\"\n\
                      automatic_sharding_key = \"loaded.id\"";

/// psql on the pooler's pool `xs` or on the oracle database.
fn psql(cluster: &Cluster, port: u16, db: &str, commands: &[&str]) -> Result<String, String> {
    let conninfo = format!("host=127.0.0.1 port={port} user={SHARD_USER} dbname={db}");
    support::psql_with(cluster, &conninfo, SHARD_PASS, commands)
}

/// The lines of a text or CSV file, sorted (the shards' rows come in no fixed order),
/// with its first line kept first when it is a header.
fn sorted_lines(path: &std::path::Path, header: bool) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read the file");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let first = if header && !lines.is_empty() {
        Some(lines.remove(0))
    } else {
        None
    };
    lines.sort();
    first.into_iter().chain(lines).collect()
}

/// The tuples of a binary COPY file, sorted, and its header and trailer.
fn binary_tuples(path: &std::path::Path) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let data = std::fs::read(path).expect("read the file");
    let (header, mut rest) = data.split_at(19);
    let mut tuples = Vec::new();
    loop {
        let count = i16::from_be_bytes([rest[0], rest[1]]);
        if count == -1 {
            break;
        }
        let mut at = 2;
        for _ in 0..count {
            let len = i32::from_be_bytes(rest[at..at + 4].try_into().expect("length"));
            at += 4 + usize::try_from(len).unwrap_or(0);
        }
        tuples.push(rest[..at].to_vec());
        rest = &rest[at..];
    }
    tuples.sort();
    (header.to_vec(), tuples, rest.to_vec())
}

#[test]
fn copy_splits_rows_by_key_in_every_format_and_loads_nothing_on_a_bad_row() {
    let cluster = cluster();
    let pooler = pooler(cluster, LOADED);
    let dir = support::scratch_dir();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (port, oracle_port) = (pooler.port, cluster.primary.port);
    let through = |commands: &[&str]| psql(cluster, port, POOL, commands);
    let on_oracle = |commands: &[&str]| psql(cluster, oracle_port, "xs_oracle", commands);
    let everything = "SELECT id, label, n FROM loaded ORDER BY id";
    let want = on_oracle(&["SELECT id, label, n FROM loaded_src ORDER BY id"]).expect("oracle");
    for (name, options) in [
        ("text", "(FORMAT text)"),
        (
            "csv",
            "(FORMAT csv, HEADER, DELIMITER ';', QUOTE '''', NULL 'NIL')",
        ),
        ("binary", "(FORMAT binary)"),
    ] {
        let path = file(name);
        on_oracle(&[&format!("\\copy loaded_src TO '{path}' {options}")]).expect("export");
        let copied = through(&[&format!("\\copy loaded FROM '{path}' {options}")])
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", pooler.logs()));
        assert_eq!(copied, "COPY 500", "{name}");
        assert_eq!(
            through(&[everything]).expect("read back"),
            want,
            "{name}: every row"
        );
        // Out again, in the same format: the oracle's file, up to row order.
        let out = file(&format!("{name}.out"));
        through(&[&format!("\\copy loaded TO '{out}' {options}")]).expect("COPY TO");
        let oracle_out = file(&format!("{name}.oracle"));
        on_oracle(&[&format!("\\copy loaded_src TO '{oracle_out}' {options}")]).expect("oracle");
        let (out, oracle_out) = (
            std::path::Path::new(&out),
            std::path::Path::new(&oracle_out),
        );
        if name == "binary" {
            assert_eq!(
                binary_tuples(out),
                binary_tuples(oracle_out),
                "{name} TO STDOUT"
            );
        } else {
            let header = name == "csv";
            assert_eq!(
                sorted_lines(out, header),
                sorted_lines(oracle_out, header),
                "{name}"
            );
        }
        through(&["DELETE FROM loaded"]).expect("empty it again");
    }

    // A column list (the key second); a query's rows out.
    let path = file("list");
    on_oracle(&[&format!(
        "\\copy (SELECT label, id FROM loaded_src) TO '{path}'"
    )])
    .expect("export");
    let copied = through(&[&format!("\\copy loaded (label, id) FROM '{path}'")]).expect("copy");
    assert_eq!(copied, "COPY 500");
    let query = "COPY (SELECT id, label FROM loaded WHERE id % 50 = 0) TO STDOUT (FORMAT csv)";
    let mut got: Vec<String> = through(&[query])
        .expect("query out")
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let oracle_query = query.replace("FROM loaded", "FROM loaded_src");
    let mut want_lines: Vec<String> = on_oracle(&[&oracle_query])
        .expect("oracle")
        .lines()
        .map(String::from)
        .collect();
    want_lines.sort();
    assert_eq!(got, want_lines);
    through(&["DELETE FROM loaded"]).expect("empty it again");

    // Row 300's key is not an integer: refused, nothing loaded on any shard.
    let bad = file("bad");
    let mut rows: Vec<String> = (1..=500).map(|i| format!("{i}\tr{i}\t{i}")).collect();
    rows[299] = "abc\tr300\t300".into();
    std::fs::write(&bad, rows.join("\n") + "\n").expect("write");
    let error = through(&[&format!("\\copy loaded FROM '{bad}'")]).expect_err("bad key");
    assert!(
        error.contains("row 300") && error.contains("not an integer"),
        "{error}"
    );
    // A row a shard rejects (its CHECK): the other shards load nothing either.
    rows[299] = "300\tr300\t-1".into();
    std::fs::write(&bad, rows.join("\n") + "\n").expect("write");
    let error = through(&[&format!("\\copy loaded FROM '{bad}'")]).expect_err("CHECK");
    assert!(error.contains("loaded_n_check"), "{error}");
    assert_eq!(
        through(&["SELECT count(*) FROM loaded"]).expect("count"),
        "0"
    );
    // Inside a transaction block: the rows are the block's, on every shard, until its
    // end; ROLLBACK undoes them everywhere, COMMIT keeps them. A multi-statement string
    // may carry a COPY too.
    let text = file("text");
    let in_block = through(&[
        "BEGIN",
        &format!("\\copy loaded FROM '{text}'"),
        "SELECT count(*) FROM loaded",
        "ROLLBACK",
        "SELECT count(*) FROM loaded",
    ])
    .unwrap_or_else(|e| panic!("COPY in a block: {e}\n{}", pooler.logs()));
    assert_eq!(in_block, "BEGIN\nCOPY 500\n500\nROLLBACK\n0");
    let committed = through(&[
        "BEGIN",
        "SELECT count(*) FROM items",
        &format!("\\copy loaded FROM '{text}'"),
        "COMMIT",
    ])
    .expect("COPY committed with its block");
    assert_eq!(committed, format!("BEGIN\n{ROWS}\nCOPY 500\nCOMMIT"));
    assert_eq!(through(&[everything]).expect("read back"), want);
    through(&["DELETE FROM loaded"]).expect("empty it again");
    // In a string of several statements: refused (sqlparser would read the statements
    // after it as its data), nothing run.
    let error = through(&["DELETE FROM loaded; COPY loaded FROM STDIN; SELECT 1"])
        .expect_err("COPY among several statements");
    assert!(
        error.contains("COPY FROM STDIN among several statements"),
        "{error}"
    );
    // A COPY that fails fails the block: nothing of it, or of the block, stays.
    let error = through(&[
        "BEGIN",
        "DELETE FROM loaded",
        &format!("\\copy loaded FROM '{bad}'"),
    ])
    .expect_err("CHECK in a block");
    assert!(error.contains("loaded_n_check"), "{error}");

    // The pooler still serves the client's pool.
    assert_eq!(
        through(&["SELECT count(*) FROM items"]).expect("count"),
        ROWS.to_string()
    );
}
