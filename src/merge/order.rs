//! ORDER BY across shards: the statement's sort keys found among the output columns of
//! the RowDescription, and rows (DataRow bodies, text or binary format) compared as
//! PostgreSQL orders them, so the shards' sorted streams merge into one sorted stream.

use std::cmp::Ordering;

use pgcat_parser::cross_shard::{SortColumn, SortKey};

use super::{values, Collations, Field};
use crate::wire::messages::PgError;

/// One key, resolved: which column, of which type, in which direction.
#[derive(Debug, Clone, Copy)]
struct Key {
    column: usize,
    type_oid: u32,
    binary: bool,
    descending: bool,
    nulls_first: bool,
}

/// The sort keys of a statement, resolved against its columns.
#[derive(Debug)]
pub(super) struct Order {
    keys: Vec<Key>,
}

impl Order {
    /// Finds `keys` among `fields`; refuses what cannot be compared here (text only where
    /// `collations` say it orders byte by byte).
    pub(super) fn resolve(
        keys: &[SortKey],
        fields: &[Field],
        collations: Option<&Collations>,
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
                        let mut found = fields.iter().enumerate().filter(|(_, f)| f.name == *name);
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
                let field = &fields[column];
                let (name, type_oid, format) = (&field.name, &field.type_oid, &field.format);
                match (values::kind(*type_oid), field.collation(collations)) {
                    (values::Kind::Ordered, _) | (values::Kind::Collated, Ok(())) => {}
                    (values::Kind::Collated, Err(collation)) => {
                        return Err(refuse(format!(
                            "by {name}, text under the collation \"{collation}\" (the pooler \
                             orders text byte by byte, as the C collation does)"
                        )))
                    }
                    (values::Kind::Unordered, _) => {
                        return Err(refuse(format!("by {name}, of type {type_oid}")))
                    }
                }
                Ok(Key {
                    column,
                    type_oid: *type_oid,
                    binary: *format == 1,
                    descending: key.descending,
                    nulls_first: key.nulls_first,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Order { keys })
    }

    /// `a` against `b` (DataRow bodies) in the statement's order.
    pub(super) fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        self.compare_keys(a, b, self.keys.len())
    }

    /// Whether `a` and `b` are equal on the first `n` sort keys (DISTINCT ON's).
    pub(super) fn same_prefix(&self, a: &[u8], b: &[u8], n: usize) -> bool {
        self.compare_keys(a, b, n) == Ordering::Equal
    }

    fn compare_keys(&self, a: &[u8], b: &[u8], n: usize) -> Ordering {
        for key in self.keys.iter().take(n) {
            let (x, y) = (value(a, key.column), value(b, key.column));
            let ordering = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if key.nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if key.nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let decode = |v| values::decode(key.type_oid, key.binary, v);
                    let natural = match (decode(x), decode(y)) {
                        (Some(x), Some(y)) => values::compare(&x, &y),
                        // Refused when the row came (`check`).
                        _ => Ordering::Equal,
                    };
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

impl Order {
    /// Whether every sort key of the row (a DataRow body) can be ordered: a value in
    /// another DateStyle, say, cannot, and the statement is refused rather than misordered.
    pub(super) fn check(&self, row: &[u8]) -> Result<(), PgError> {
        for key in &self.keys {
            if let Some(v) = value(row, key.column) {
                if values::decode(key.type_oid, key.binary, v).is_none() {
                    return Err(PgError::error(
                        "0A000",
                        format!(
                            "cannot order the value {:?} of type {} across shards (dates and \
                             times are read in DateStyle ISO, intervals in IntervalStyle postgres)",
                            String::from_utf8_lossy(v),
                            key.type_oid
                        ),
                    ));
                }
            }
        }
        Ok(())
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

    fn field(name: &str, type_oid: u32, format: u16) -> Field {
        Field {
            name: name.into(),
            table: 16384,
            attnum: 1,
            type_oid,
            format,
        }
    }

    fn fields() -> Vec<Field> {
        vec![
            field("id", values::INT8, 0),
            field("amount", values::NUMERIC, 0),
            field("value", 25, 0),
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
            Some(&Collations::new("C", [])),
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
        let (icu, c) = (Collations::new("en-x-icu", []), Collations::new("C", []));
        for (k, collations) in [
            (
                key(SortColumn::Name("value".into()), false, false),
                Some(&icu),
            ),
            (key(SortColumn::Name("value".into()), false, false), None),
            (key(SortColumn::Name("nope".into()), false, false), Some(&c)),
            (key(SortColumn::Position(3), false, false), Some(&c)),
        ] {
            let e = Order::resolve(&[k], &fields(), collations).expect_err("refused");
            assert_eq!(e.code, "0A000");
        }
        let by_value = [key(SortColumn::Name("value".into()), false, false)];
        let order = Order::resolve(&by_value, &fields(), Some(&c)).expect("C collation");
        let (a, b) = (row(&[None, None, Some("B")]), row(&[None, None, Some("a")]));
        assert_eq!(order.compare(&a, &b), Ordering::Less, "byte order");
    }

    #[test]
    fn binary_rows_and_dates_are_ordered_and_other_date_styles_refused() {
        let fields = vec![field("d", values::DATE, 0), field("n", values::INT4, 1)];
        let keys = [
            key(SortColumn::Name("d".into()), false, false),
            key(SortColumn::Name("n".into()), true, false),
        ];
        let order = Order::resolve(&keys, &fields, None).expect("no text: no collation needed");
        let binary_row = |d: &str, n: i32| {
            let mut b = 2u16.to_be_bytes().to_vec();
            for v in [d.as_bytes(), &n.to_be_bytes()[..]] {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            b
        };
        let (a, b) = (binary_row("2024-01-02", 1), binary_row("2024-01-02", 5));
        assert_eq!(order.compare(&a, &b), Ordering::Greater, "n descending");
        let c = binary_row("1999-12-31", 0);
        assert_eq!(order.compare(&c, &a), Ordering::Less);
        assert!(order.check(&a).is_ok());
        let e = order
            .check(&binary_row("01/02/2024", 1))
            .expect_err("DateStyle SQL");
        assert_eq!(e.code, "0A000");
    }
}
