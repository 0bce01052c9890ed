//! The merge's unit tests: shards' answers fed byte for byte, the client's answer checked.

use super::*;
use pgcat_parser::cross_shard::Aggregate;

/// A RowDescription body: (name, table OID, type OID) per column.
fn row_description(cols: &[(&str, u32, u32)]) -> Vec<u8> {
    let mut b = (cols.len() as u16).to_be_bytes().to_vec();
    for (name, table, ty) in cols {
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(&table.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(&4i16.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
    }
    b
}

fn data_row(value: &str) -> Vec<u8> {
    let mut b = 1u16.to_be_bytes().to_vec();
    b.extend_from_slice(&(value.len() as i32).to_be_bytes());
    b.extend_from_slice(value.as_bytes());
    b
}

fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    messages::message(&mut out, tag, |m| m.extend_from_slice(body));
    out.to_vec()
}

#[test]
fn rows_of_every_shard_under_one_description_and_one_count() {
    let mut merge = Merge::default();
    let mut out = BytesMut::new();
    for (shard, table_oid) in [(0, 16384), (1, 16999)] {
        let desc = row_description(&[("id", table_oid, 20)]);
        merge.on_message(shard, b'T', &desc, &mut out);
        merge.on_message(shard, b'D', &data_row(&shard.to_string()), &mut out);
        merge.on_message(shard, b'D', &data_row("x"), &mut out);
        merge.on_message(shard, b'C', b"SELECT 2\0", &mut out);
    }
    merge.finish(&mut out);
    let mut want = framed(b'T', &row_description(&[("id", 16384, 20)]));
    for v in ["0", "x", "1", "x"] {
        want.extend(framed(b'D', &data_row(v)));
    }
    want.extend(framed(b'C', b"SELECT 4\0"));
    assert_eq!(out.to_vec(), want);
}

#[test]
fn an_error_on_one_shard_is_the_answer_and_names_it() {
    let mut merge = Merge::default();
    let mut out = BytesMut::new();
    merge.on_message(0, b'T', &row_description(&[("id", 1, 20)]), &mut out);
    merge.on_message(0, b'C', b"SELECT 0\0", &mut out);
    let mut error = BytesMut::new();
    PgError::error("22012", "division by zero").encode(&mut error);
    merge.on_message(1, b'E', &error[5..], &mut out);
    merge.on_message(1, b'D', &data_row("late"), &mut out);
    let before = out.len();
    merge.finish(&mut out);
    let got = PgError::from_fields(&out[before + 5..]);
    assert_eq!(
        (got.code.as_str(), got.message.as_str()),
        ("22012", "division by zero")
    );
    assert!(got.detail.unwrap_or_default().contains("on shard 1"));
    assert!(!out[..before].windows(4).any(|w| w == b"late"));
}

#[test]
fn commands_without_a_count_are_answered_once_when_every_shard_agrees() {
    let mut merge = Merge::new(Plan::Rows {
        order: Vec::new(),
        limit: None,
        offset: 0,
        distinct_on: 0,
    });
    let mut out = BytesMut::new();
    for shard in 0..3 {
        merge.on_message(shard, b'C', b"SAVEPOINT\0", &mut out);
    }
    merge.finish(&mut out);
    assert_eq!(out.to_vec(), framed(b'C', b"SAVEPOINT\0"));

    let mut merge = Merge::default();
    let mut out = BytesMut::new();
    merge.on_message(0, b'C', b"CREATE TABLE\0", &mut out);
    merge.on_message(1, b'C', b"INSERT 0 1\0", &mut out);
    assert!(merge.failed(), "different commands on the shards");
}

#[test]
fn one_shard_of_a_transaction_passes_its_error_on_unchanged() {
    let mut merge = Merge::default();
    merge.one_shard();
    let mut out = BytesMut::new();
    let error = PgError::error("23505", "duplicate key");
    let mut body = BytesMut::new();
    error.encode(&mut body);
    merge.on_message(0, b'E', &body[5..], &mut out);
    merge.finish(&mut out);
    assert_eq!(out.to_vec(), body.to_vec());
}

#[test]
fn shards_that_disagree_on_columns_fail_the_statement() {
    let mut merge = Merge::default();
    let mut out = BytesMut::new();
    merge.on_message(0, b'T', &row_description(&[("id", 1, 20)]), &mut out);
    merge.on_message(1, b'T', &row_description(&[("id", 2, 23)]), &mut out);
    let before = out.len();
    merge.finish(&mut out);
    assert_eq!(PgError::from_fields(&out[before + 5..]).code, "42804");
    assert!(columns(&[0, 1, b'a']).is_none(), "truncated");
}

/// A DataRow body of several text values (NULL as `None`).
pub(super) fn values_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut b = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        match v {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v.as_bytes());
            }
        }
    }
    b
}

#[test]
fn aggregates_combine_into_the_whole_tables_row() {
    use Aggregate::*;
    let mut merge = Merge::new(Plan::Groups(GroupPlan {
        functions: [Count, Sum, Sum, Min, Max, BoolAnd, BoolOr]
            .map(Some)
            .to_vec(),
        columns: vec![None; 7],
        ..GroupPlan::default()
    }));
    let mut out = BytesMut::new();
    let desc = row_description(&[
        ("count", 0, 20),
        ("sum", 0, 20),
        ("sum", 0, 1700),
        ("min", 0, 1700),
        ("max", 0, 23),
        ("bool_and", 0, 16),
        ("bool_or", 0, 16),
    ]);
    let shards: [[Option<&str>; 7]; 3] = [
        [
            Some("2"),
            Some("5"),
            Some("1.50"),
            Some("-3"),
            Some("9"),
            Some("t"),
            Some("f"),
        ],
        [Some("0"), None, None, None, None, None, None],
        [
            Some("3"),
            Some("-1"),
            Some("2.125"),
            Some("-10.5"),
            Some("12"),
            Some("f"),
            Some("t"),
        ],
    ];
    for (shard, row) in shards.iter().enumerate() {
        merge.on_message(shard, b'T', &desc, &mut out);
        merge.on_message(shard, b'D', &values_row(row), &mut out);
        merge.on_message(shard, b'C', b"SELECT 1\0", &mut out);
    }
    merge.finish(&mut out);
    let mut want = framed(b'T', &desc);
    want.extend(framed(
        b'D',
        &values_row(&[
            Some("5"),
            Some("4"),
            Some("3.625"),
            Some("-10.5"),
            Some("12"),
            Some("f"),
            Some("t"),
        ]),
    ));
    want.extend(framed(b'C', b"SELECT 1\0"));
    assert_eq!(out.to_vec(), want);
}

#[test]
fn aggregates_of_types_not_combined_here_are_refused() {
    let mut merge = Merge::new(Plan::Groups(GroupPlan {
        functions: vec![Some(Aggregate::Sum)],
        columns: vec![None],
        ..GroupPlan::default()
    }));
    let mut out = BytesMut::new();
    merge.on_message(0, b'T', &row_description(&[("sum", 0, 701)]), &mut out);
    let before = out.len();
    merge.finish(&mut out);
    let error = PgError::from_fields(&out[before + 5..]);
    assert_eq!(error.code, "0A000");
    assert!(error.message.contains("sum()"), "{}", error.message);
}

#[test]
fn offset_skips_rows_before_the_limit_counts_them() {
    let mut merge = Merge::new(Plan::Rows {
        order: Vec::new(),
        limit: Some(2),
        offset: 3,
        distinct_on: 0,
    });
    let mut out = BytesMut::new();
    let mut pushed = 0;
    for i in 0..10 {
        if !merge.wants_rows() {
            break;
        }
        merge.push_row(&data_row(&i.to_string()), &mut out);
        pushed += 1;
    }
    assert_eq!(pushed, 5, "3 skipped, 2 sent");
    merge.finish(&mut out);
    let mut want = framed(b'D', &data_row("3"));
    want.extend(framed(b'D', &data_row("4")));
    want.extend(framed(b'C', b"SELECT 2\0"));
    assert_eq!(out.to_vec(), want);
}

#[test]
fn groups_of_every_shard_are_grouped_again_filtered_ordered_and_cut() {
    use pgcat_parser::cross_shard::{Comparison, Constant, Having, SortColumn};
    // SELECT grp, count(*) AS n … GROUP BY grp HAVING count(*) > 2 ORDER BY n DESC LIMIT 2
    let mut merge = Merge::new(Plan::Groups(GroupPlan {
        functions: vec![None, Some(Aggregate::Count)],
        columns: vec![None, None],
        visible: None,
        having: Some(Having::Compare {
            column: 1,
            op: Comparison::Gt,
            constant: Constant::Value(Some("2".into())),
        }),
        order: vec![SortKey {
            column: SortColumn::Name("n".into()),
            descending: true,
            nulls_first: true,
        }],
        offset: 0,
        limit: Some(2),
        params: Vec::new(),
    }));
    let mut out = BytesMut::new();
    let desc = row_description(&[("grp", 0, 1700), ("n", 0, 20)]);
    for shard in 0..2 {
        merge.on_message(shard, b'T', &desc, &mut out);
    }
    // Shard 0: 1.5 → 2, a → NULL group 4; shard 1: 1.50 → 3 (the same group), 7 → 1.
    for (shard, grp, n) in [
        (0, Some("1.5"), "2"),
        (0, None, "4"),
        (0, Some("9"), "3"),
        (1, Some("1.50"), "3"),
        (1, Some("7"), "1"),
    ] {
        merge.on_message(shard, b'D', &values_row(&[grp, Some(n)]), &mut out);
    }
    let before = out.len();
    merge.finish(&mut out);
    let mut want = framed(b'D', &values_row(&[Some("1.5"), Some("5")]));
    want.extend(framed(b'D', &values_row(&[None, Some("4")])));
    want.extend(framed(b'C', b"SELECT 2\0"));
    assert_eq!(out[before..].to_vec(), want, "9 → 3 is cut by LIMIT 2");
}

#[test]
fn having_constants_of_another_number_type_compare_as_postgresql_casts_them() {
    use super::values::{compare_numbers, decode, FLOAT8, INT2, INT8, NUMERIC};
    use std::cmp::Ordering;
    let (hundred, hundred_one) = (100i16.to_be_bytes(), 101i16.to_be_bytes());
    let sum = || decode(NUMERIC, false, b"100.50").expect("numeric");
    let int2 = |bytes| decode(INT2, true, bytes).expect("int2");
    assert_eq!(compare_numbers(sum(), int2(&hundred)), Ordering::Greater);
    assert_eq!(compare_numbers(sum(), int2(&hundred_one)), Ordering::Less);
    let bits = 100.5f64.to_be_bytes();
    let float = decode(FLOAT8, true, &bits).expect("float8");
    assert_eq!(compare_numbers(sum(), float), Ordering::Equal);
    let count = decode(INT8, false, b"7").expect("int8");
    let numeric = decode(NUMERIC, false, b"6.99").expect("numeric");
    assert_eq!(compare_numbers(count, numeric), Ordering::Greater);
}
