//! An `INSERT … VALUES` whose rows belong to several shards: each shard gets only its
//! rows (`pgcat_parser::split` renumbers their parameters), as a Query or as an unnamed
//! extended batch whose Parse keeps those parameters' types and whose Bind keeps their
//! values and formats. Pure, so unit tests check the bytes.

use std::collections::BTreeMap;

use bytes::BytesMut;
use pgcat_parser::{resolve_keys, shard_for_key, KeyValue, PoolRouting};

use super::batch;
use crate::wire::bind::BindParams;
use crate::wire::messages::{self, PgError};

/// Per shard (ascending), what it gets of the client's INSERT `sql`, whose rows' keys are
/// `keys`; `parts`: an extended batch's Parse text (after the name) and Bind (after the
/// names), `None` for a Query.
pub(super) fn split(
    sql: &str,
    keys: &[KeyValue],
    routing: &PoolRouting,
    parts: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<Vec<(usize, BytesMut)>, PgError> {
    let bind = match parts {
        Some((_, bind)) => Some(BindParams::read(bind).ok_or_else(malformed)?),
        None => None,
    };
    let param = |i: usize| {
        let bind = bind.as_ref()?;
        let value = bind.value(i.checked_sub(1)?)??;
        pgcat_parser::bind_param_as_i64(value, bind.binary(i - 1))
    };
    let keys = resolve_keys(keys, param).ok_or_else(|| {
        PgError::error(
            "0A000",
            "a row of the INSERT has no sharding key (NULL, or not an integer), so no shard \
             can be picked for it",
        )
    })?;
    let mut rows: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (row, key) in keys.iter().enumerate() {
        rows.entry(shard_for_key(*key, routing))
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|(shard, rows)| {
            let (text, old) = pgcat_parser::split::insert_rows(sql, &rows).ok_or_else(|| {
                PgError::error("0A000", "cannot split this INSERT's rows between shards")
            })?;
            let out = match parts {
                Some((parse, bind)) => {
                    batch::rewritten(parse, bind, &text, &old).ok_or_else(malformed)?
                }
                None => {
                    let mut out = BytesMut::new();
                    messages::query(&mut out, &[text.as_bytes()]);
                    out
                }
            };
            Ok((shard, out))
        })
        .collect()
}

fn malformed() -> PgError {
    PgError::error("08P01", "malformed Parse or Bind message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcat_parser::{KeyColumn, ShardingFunction};

    fn routing() -> PoolRouting {
        PoolRouting {
            shards: 3,
            sharding_function: ShardingFunction::PgBigintHash,
            automatic_key: KeyColumn::parse("t.id"),
            ..PoolRouting::default()
        }
    }

    #[test]
    fn a_query_is_split_into_one_insert_per_shard_with_its_rows() {
        let keys: Vec<KeyValue> = (1..=6).map(KeyValue::Literal).collect();
        let sql = "INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f')";
        let parts = split(sql, &keys, &routing(), None).expect("split");
        let mut seen = 0;
        for (shard, messages) in &parts {
            let text = std::str::from_utf8(&messages[5..messages.len() - 1]).expect("utf8");
            for id in 1..=6i64 {
                let here = text.contains(&format!("({id}, "));
                let belongs = pg_shard(id) == *shard;
                assert_eq!(here, belongs, "row {id} in {text}");
                seen += here as usize;
            }
        }
        assert_eq!(seen, 6);
    }

    fn pg_shard(id: i64) -> usize {
        pgcat_parser::hash::pg_bigint_hash(id, 3)
    }

    #[test]
    fn a_bind_keeps_the_parameters_of_the_shards_rows() {
        // Two rows on different shards: ($1, $2) and ($3, $4); types int8, text.
        let (a, b) = (
            1i64,
            (2..)
                .find(|i| pg_shard(*i) != pg_shard(1))
                .expect("another"),
        );
        let mut parse = b"INSERT INTO t (id, v) VALUES ($1, $2), ($3, $4)\0".to_vec();
        parse.extend_from_slice(&4u16.to_be_bytes());
        for oid in [20u32, 25, 20, 25] {
            parse.extend_from_slice(&oid.to_be_bytes());
        }
        let mut bind = 0u16.to_be_bytes().to_vec();
        bind.extend_from_slice(&4u16.to_be_bytes());
        for v in [a.to_string(), "x".into(), b.to_string(), "y".into()] {
            bind.extend_from_slice(&(v.len() as i32).to_be_bytes());
            bind.extend_from_slice(v.as_bytes());
        }
        bind.extend_from_slice(&0u16.to_be_bytes());
        let keys = [KeyValue::Param(1), KeyValue::Param(3)];
        let sql = "INSERT INTO t (id, v) VALUES ($1, $2), ($3, $4)";
        let parts = split(sql, &keys, &routing(), Some(&(parse, bind))).expect("split");
        assert_eq!(parts.len(), 2);
        let second = parts
            .iter()
            .find(|(s, _)| *s == pg_shard(b))
            .expect("b's shard");
        let mut want_parse = b"INSERT INTO t (id, v) VALUES ($1, $2)\0".to_vec();
        want_parse.extend_from_slice(&2u16.to_be_bytes());
        want_parse.extend_from_slice(&20u32.to_be_bytes());
        want_parse.extend_from_slice(&25u32.to_be_bytes());
        let mut want_bind = 0u16.to_be_bytes().to_vec();
        want_bind.extend_from_slice(&2u16.to_be_bytes());
        for v in [b.to_string(), "y".into()] {
            want_bind.extend_from_slice(&(v.len() as i32).to_be_bytes());
            want_bind.extend_from_slice(v.as_bytes());
        }
        want_bind.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(second.1, batch::unnamed(&want_parse, &want_bind));
    }

    #[test]
    fn a_row_without_a_key_is_refused() {
        let keys = [KeyValue::Literal(1), KeyValue::Param(1)];
        let mut bind = 0u16.to_be_bytes().to_vec();
        bind.extend_from_slice(&1u16.to_be_bytes());
        bind.extend_from_slice(&(-1i32).to_be_bytes());
        bind.extend_from_slice(&0u16.to_be_bytes());
        let parse = b"INSERT INTO t (id) VALUES (1), ($1)\0\0\0".to_vec();
        let sql = "INSERT INTO t (id) VALUES (1), ($1)";
        let error = split(sql, &keys, &routing(), Some(&(parse, bind))).expect_err("NULL key");
        assert_eq!(error.code, "0A000");
    }
}
