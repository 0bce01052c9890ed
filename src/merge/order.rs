//! ORDER BY across shards: the statement's sort keys found among the output columns of
//! the RowDescription, and rows (DataRow bodies, text format) compared as PostgreSQL
//! orders them, so the shards' sorted streams merge into one sorted stream.

use std::cmp::Ordering;

use pgcat_parser::cross_shard::{SortColumn, SortKey};

use super::values;
use crate::wire::messages::PgError;

/// One key, resolved: which column, of which type, in which direction.
#[derive(Debug, Clone, Copy)]
struct Key {
    column: usize,
    type_oid: u32,
    descending: bool,
    nulls_first: bool,
}

/// The sort keys of a statement, resolved against its columns.
#[derive(Debug)]
pub(super) struct Order {
    keys: Vec<Key>,
}

impl Order {
    /// Finds `keys` among `fields` (each column's name, type OID and format code); refuses
    /// what cannot be compared here.
    pub(super) fn resolve(
        keys: &[SortKey],
        fields: &[(String, u32, u16)],
    ) -> Result<Order, PgError> {
        let refuse = |what: String| {
            PgError::error(
                "0A000",
                format!("cannot merge the shards' rows {what}: not supported yet"),
            )
        };
        let keys = keys
            .iter()
            .map(|key| {
                let column = match &key.column {
                    SortColumn::Position(i) if *i < fields.len() => *i,
                    SortColumn::Position(i) => {
                        return Err(refuse(format!("by position {}", i + 1)))
                    }
                    SortColumn::Name(name) => {
                        let mut found = fields.iter().enumerate().filter(|(_, f)| f.0 == *name);
                        match (found.next(), found.next()) {
                            (Some((i, _)), None) => i,
                            _ => {
                                return Err(refuse(format!(
                                    "by {name} (ORDER BY must name exactly one output column)"
                                )))
                            }
                        }
                    }
                };
                let (name, type_oid, format) = &fields[column];
                if *format != 0 || !values::comparable(*type_oid) {
                    return Err(refuse(format!(
                        "by {name}, of type {type_oid} (integers, numeric, floats and bool are \
                         ordered across shards; text needs its collation)"
                    )));
                }
                Ok(Key {
                    column,
                    type_oid: *type_oid,
                    descending: key.descending,
                    nulls_first: key.nulls_first,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Order { keys })
    }

    /// `a` against `b` (DataRow bodies) in the statement's order.
    pub(super) fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        for key in &self.keys {
            let (x, y) = (value(a, key.column), value(b, key.column));
            let ordering = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if key.nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if key.nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let natural = std::str::from_utf8(x)
                        .ok()
                        .zip(std::str::from_utf8(y).ok())
                        .and_then(|(x, y)| values::compare(key.type_oid, x, y))
                        .unwrap_or(Ordering::Equal);
                    if key.descending {
                        natural.reverse()
                    } else {
                        natural
                    }
                }
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }
}

/// Column `i` of a DataRow body: `None` for NULL (or a malformed row).
fn value(body: &[u8], i: usize) -> Option<&[u8]> {
    let mut rest = body.get(2..)?;
    for n in 0.. {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        let len = usize::try_from(len).ok();
        if n == i {
            return len.and_then(|len| rest.get(..len));
        }
        rest = rest.get(len.unwrap_or(0)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::values_row as row;
    use super::*;

    fn fields() -> Vec<(String, u32, u16)> {
        vec![
            ("id".into(), values::INT8, 0),
            ("amount".into(), values::NUMERIC, 0),
            ("value".into(), 25, 0),
        ]
    }

    fn key(column: SortColumn, descending: bool, nulls_first: bool) -> SortKey {
        SortKey {
            column,
            descending,
            nulls_first,
        }
    }

    #[test]
    fn rows_compare_by_each_key_in_turn_with_nulls_where_asked() {
        let order = Order::resolve(
            &[
                key(SortColumn::Name("amount".into()), true, true),
                key(SortColumn::Position(0), false, false),
            ],
            &fields(),
        )
        .expect("resolves");
        let a = row(&[Some("2"), Some("10.5"), None]);
        let b = row(&[Some("1"), Some("9.75"), Some("x")]);
        let c = row(&[Some("3"), None, None]);
        let d = row(&[Some("1"), Some("10.50"), None]);
        assert_eq!(
            order.compare(&a, &b),
            Ordering::Less,
            "10.5 before 9.75 descending"
        );
        assert_eq!(order.compare(&c, &a), Ordering::Less, "NULLS FIRST");
        assert_eq!(
            order.compare(&d, &a),
            Ordering::Less,
            "equal amounts: by id"
        );
        assert_eq!(value(&b, 2), Some(&b"x"[..]));
        assert_eq!(value(&a, 2), None);
        assert_eq!(value(&a, 7), None);
    }

    #[test]
    fn keys_that_cannot_be_compared_here_are_refused() {
        for k in [
            key(SortColumn::Name("value".into()), false, false),
            key(SortColumn::Name("nope".into()), false, false),
            key(SortColumn::Position(3), false, false),
        ] {
            let e = Order::resolve(&[k], &fields()).expect_err("refused");
            assert_eq!(e.code, "0A000");
        }
    }
}
