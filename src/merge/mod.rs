//! The shards' answers to one statement run on every shard, made into the one answer a
//! single database holding all their rows would give: one RowDescription (the shards must
//! agree on it), every shard's rows (or, for aggregates, their one row each combined column
//! by column), one CommandComplete with the rows counted, and one error for the statement
//! if any shard failed (PostgreSQL's, naming the shard). Pure: it is fed each shard's
//! messages and writes what the client gets, so unit tests drive it byte for byte.

use bytes::BytesMut;
use pgcat_parser::cross_shard::{Aggregate, SortKey};

mod order;
mod values;

use crate::wire::messages::{self, PgError};
use order::Order;

/// The merge of one statement's answers, fed shard by shard.
#[derive(Default)]
pub struct Merge {
    /// The first shard's RowDescription, without the table OIDs and column numbers (which
    /// differ between databases), to compare the others with.
    columns: Option<Vec<u8>>,
    /// Rows sent to the client.
    rows: u64,
    /// The shards' CommandComplete counts summed (what an UPDATE or DELETE reports).
    tagged: u64,
    /// The command the shards' CommandCompletes named (`SELECT`).
    command: Option<String>,
    /// The first error; nothing more is forwarded after it.
    error: Option<PgError>,
    /// Aggregates: each shard's row is folded into one.
    combine: Option<Combine>,
    /// ORDER BY: the keys, and once the columns are known, the resolved order.
    sort_keys: Vec<SortKey>,
    order: Option<Order>,
    /// LIMIT: rows past it are dropped.
    limit: Option<u64>,
    /// An extended-protocol batch: what the client asked for of the replies each shard
    /// sends to the batch it gets (see `batch`).
    extended: Option<Extended>,
}

/// The client's extended batch: whether it sent a Parse and a Describe of the portal.
#[derive(Clone, Copy)]
struct Extended {
    parse: bool,
    describe: bool,
}

/// How the shards' rows become the answer.
pub enum Plan {
    /// Every row (`order`: merged in that order; `limit`: at most that many).
    Rows {
        order: Vec<SortKey>,
        limit: Option<u64>,
    },
    /// One row per shard, combined column by column.
    Aggregates(Vec<Aggregate>),
}

/// The aggregates of a statement without GROUP BY, combined as the shards' rows come.
struct Combine {
    aggregates: Vec<Aggregate>,
    /// Each column's type OID, from the RowDescription.
    types: Vec<u32>,
    /// The combined values so far (NULL as `None`); empty before the first row.
    values: Vec<Option<String>>,
}

impl Merge {
    pub fn new(plan: Plan) -> Merge {
        match plan {
            Plan::Rows { order, limit } => Merge {
                sort_keys: order,
                limit,
                ..Merge::default()
            },
            Plan::Aggregates(aggregates) => Merge {
                combine: Some(Combine {
                    aggregates,
                    types: Vec::new(),
                    values: Vec::new(),
                }),
                ..Merge::default()
            },
        }
    }

    /// The rows come in an order each shard sorted them in: the caller keeps one row of
    /// each shard at hand and hands over the least first ([`Merge::compare`]).
    pub fn is_ordered(&self) -> bool {
        !self.sort_keys.is_empty()
    }

    /// The answers are to an extended batch (see `batch`): `parse`, the client sent a
    /// Parse (it gets ParseComplete); `describe`, a Describe of the portal (it gets the
    /// RowDescription or NoData).
    pub fn extended(&mut self, parse: bool, describe: bool) {
        self.extended = Some(Extended { parse, describe });
    }

    /// Whether the statement failed (the client gets the error).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Each shard's rows are folded into one (aggregates), not handed over one by one.
    pub fn is_combining(&self) -> bool {
        self.combine.is_some()
    }

    /// Whether more rows are wanted: no error, and the LIMIT not reached.
    pub fn wants_rows(&self) -> bool {
        self.error.is_none() && self.limit.is_none_or(|limit| self.rows < limit)
    }

    /// Two DataRow bodies in the statement's order (equal until the columns are known).
    pub fn compare(&self, a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        self.order
            .as_ref()
            .map_or(std::cmp::Ordering::Equal, |order| order.compare(a, b))
    }

    /// A row for the client, while rows are wanted.
    pub fn push_row(&mut self, body: &[u8], out: &mut BytesMut) {
        if self.wants_rows() {
            self.rows += 1;
            messages::message(out, b'D', |m| m.extend_from_slice(body));
        }
    }

    /// Takes message `tag` (`body` without its header) from `shard`, writing to `out` what
    /// the client gets of it now.
    pub fn on_message(&mut self, shard: usize, tag: u8, body: &[u8], out: &mut BytesMut) {
        if self.error.is_some() {
            // The statement failed: the rest is drained, not forwarded.
            return;
        }
        match tag {
            b'T' => match (&self.columns, columns(body)) {
                (_, None) => self.fail(shard, PgError::error("08P01", "malformed RowDescription")),
                (None, Some(found)) => {
                    self.columns = Some(found);
                    if let Some(combine) = &mut self.combine {
                        match combine.describe(body) {
                            Ok(()) => {}
                            Err(e) => return self.fail(shard, e),
                        }
                    }
                    if self.is_ordered() {
                        let described = described(body)
                            .ok_or_else(|| PgError::error("08P01", "malformed RowDescription"));
                        match described.and_then(|f| Order::resolve(&self.sort_keys, &f)) {
                            Ok(order) => self.order = Some(order),
                            Err(e) => return self.fail(shard, e),
                        }
                    }
                    if self.extended.is_none_or(|e| e.describe) {
                        messages::message(out, b'T', |m| m.extend_from_slice(body));
                    }
                }
                (Some(first), Some(found)) if *first == found => {}
                (Some(_), Some(_)) => self.fail(
                    shard,
                    PgError::error(
                        "42804",
                        "the shards answer with different columns (names or types differ)",
                    )
                    .with_hint("Make the table's definition the same on every shard."),
                ),
            },
            b'D' => match &mut self.combine {
                None => self.push_row(body, out),
                Some(combine) => {
                    if let Err(e) = combine.fold(body) {
                        self.fail(shard, e);
                    }
                }
            },
            b'C' => {
                let text = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body));
                let (command, count) = match text.ok().and_then(|t| t.rsplit_once(' ')) {
                    Some((command, n)) => (command, n.parse::<u64>().ok()),
                    None => (text.unwrap_or_default(), None),
                };
                match (&self.command, count) {
                    (_, None) => self.fail(
                        shard,
                        PgError::error("0A000", format!("cannot merge \"{command}\" results")),
                    ),
                    (Some(first), Some(_)) if first != command => self.fail(
                        shard,
                        PgError::error("0A000", "the shards ran different commands"),
                    ),
                    (_, Some(n)) => {
                        self.tagged += n;
                        self.command = Some(command.to_string());
                    }
                }
            }
            b'E' => self.fail(shard, PgError::from_fields(body)),
            // Notices and notifications as they come; ParameterStatus once.
            b'N' | b'A' => messages::message(out, tag, |m| m.extend_from_slice(body)),
            // The extended protocol's acknowledgements, once, as far as the client asked.
            b'1' | b'2' | b'n' if shard == 0 => {
                let wanted = self.extended.is_some_and(|e| match tag {
                    b'1' => e.parse,
                    b'2' => true,
                    _ => e.describe,
                });
                if wanted {
                    messages::empty(out, tag);
                }
            }
            b'S' if shard == 0 => messages::message(out, tag, |m| m.extend_from_slice(body)),
            _ => {}
        }
    }

    /// Records the statement's failure on `shard` (the first one is the client's).
    pub fn fail(&mut self, shard: usize, error: PgError) {
        if self.error.is_none() {
            self.error = Some(on_shard(shard, error));
        }
    }

    /// Writes the end of the answer: the error, or CommandComplete with every shard's rows.
    pub fn finish(self, out: &mut BytesMut) {
        match (self.error, self.combine) {
            (Some(error), _) => error.encode(out),
            (None, Some(combine)) => {
                messages::message(out, b'D', |m| {
                    m.extend_from_slice(&(combine.values.len() as u16).to_be_bytes());
                    for value in &combine.values {
                        match value {
                            None => m.extend_from_slice(&(-1i32).to_be_bytes()),
                            Some(v) => {
                                m.extend_from_slice(&(v.len() as i32).to_be_bytes());
                                m.extend_from_slice(v.as_bytes());
                            }
                        }
                    }
                });
                messages::command_complete(out, "SELECT 1");
            }
            (None, None) => {
                // A SELECT counts the rows sent (after LIMIT); a write what each shard did.
                let command = self.command.as_deref().unwrap_or("SELECT");
                let count = if command == "SELECT" {
                    self.rows
                } else {
                    self.tagged
                };
                messages::command_complete(out, &format!("{command} {count}"));
            }
        }
    }
}

impl Combine {
    /// Learns the columns' types; refuses types whose aggregate is not combined here.
    fn describe(&mut self, body: &[u8]) -> Result<(), PgError> {
        let fields =
            described(body).ok_or_else(|| PgError::error("08P01", "malformed RowDescription"))?;
        if fields.len() != self.aggregates.len() {
            return Err(PgError::error(
                "0A000",
                "the aggregates and the columns do not match",
            ));
        }
        self.types = fields.iter().map(|f| f.1).collect();
        for (aggregate, &(_, type_oid, format)) in self.aggregates.iter().zip(&fields) {
            let ok = format == 0
                && match aggregate {
                    Aggregate::Count => type_oid == values::INT8,
                    // sum(int2/int4) is int8, sum(int8/numeric) numeric; float sums round
                    // differently in another order, so they are not combined.
                    Aggregate::Sum => matches!(type_oid, values::INT8 | values::NUMERIC),
                    Aggregate::Min | Aggregate::Max => values::comparable(type_oid),
                    Aggregate::BoolAnd | Aggregate::BoolOr => type_oid == values::BOOL,
                };
            if !ok {
                return Err(PgError::error(
                    "0A000",
                    format!(
                        "cannot combine {} of a value of type {type_oid} across shards: not supported yet",
                        name(*aggregate)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Folds one shard's row (a DataRow body) into the combined one.
    fn fold(&mut self, body: &[u8]) -> Result<(), PgError> {
        let row = row_values(body).ok_or_else(|| PgError::error("08P01", "malformed DataRow"))?;
        if row.len() != self.aggregates.len() {
            return Err(PgError::error(
                "08P01",
                "a DataRow with the wrong number of columns",
            ));
        }
        if self.values.is_empty() {
            self.values = row;
            return Ok(());
        }
        for (i, value) in row.into_iter().enumerate() {
            let (aggregate, ty) = (self.aggregates[i], self.types[i]);
            let current = self.values[i].take();
            self.values[i] = match (current, value) {
                (None, v) | (v, None) => v,
                (Some(a), Some(b)) => Some(combine(aggregate, ty, &a, &b)?),
            };
        }
        Ok(())
    }
}

/// `error`, which happened on `shard` of a statement run on every shard, saying so in its
/// DETAIL.
pub fn on_shard(shard: usize, mut error: PgError) -> PgError {
    let on = format!("on shard {shard}");
    error.detail = Some(match error.detail.take() {
        Some(detail) => format!("{detail} ({on})"),
        None => format!("The statement ran on every shard and failed {on}."),
    });
    error
}

/// Two shards' results of `aggregate` (type `ty`) combined.
fn combine(aggregate: Aggregate, ty: u32, a: &str, b: &str) -> Result<String, PgError> {
    use std::cmp::Ordering::{Greater, Less};
    let out_of_range = || PgError::error("22003", format!("{} out of range", name(aggregate)));
    let pick = |keep_a: bool| if keep_a { a.to_string() } else { b.to_string() };
    let order = || {
        values::compare(ty, a, b)
            .ok_or_else(|| PgError::error("22P02", format!("cannot compare {a:?} and {b:?}")))
    };
    Ok(match aggregate {
        Aggregate::Count => values::add_int8(a, b).ok_or_else(out_of_range)?,
        Aggregate::Sum if ty == values::INT8 => values::add_int8(a, b).ok_or_else(out_of_range)?,
        Aggregate::Sum => values::add_numeric(a, b).ok_or_else(out_of_range)?,
        Aggregate::Min => pick(order()? != Greater),
        Aggregate::Max => pick(order()? != Less),
        Aggregate::BoolAnd => pick(a == "f"),
        Aggregate::BoolOr => pick(a == "t"),
    })
}

fn name(aggregate: Aggregate) -> &'static str {
    match aggregate {
        Aggregate::Count => "count()",
        Aggregate::Sum => "sum()",
        Aggregate::Min => "min()",
        Aggregate::Max => "max()",
        Aggregate::BoolAnd => "bool_and()",
        Aggregate::BoolOr => "bool_or()",
    }
}

/// Each field's name, type OID and format code, from a RowDescription body.
fn described(body: &[u8]) -> Option<Vec<(String, u32, u16)>> {
    let mut out = Vec::new();
    walk_fields(body, |name, field| {
        let name = String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
        let type_oid = u32::from_be_bytes([field[6], field[7], field[8], field[9]]);
        out.push((name, type_oid, u16::from_be_bytes([field[16], field[17]])));
    })?;
    Some(out)
}

/// Calls `each` with each field's name (with its NUL) and the 18 bytes after it (table
/// OID, column number, type OID, size, modifier, format); `None` when malformed.
fn walk_fields(body: &[u8], mut each: impl FnMut(&[u8], &[u8])) -> Option<()> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    for _ in 0..count {
        let name_end = memchr::memchr(0, rest)? + 1;
        each(&rest[..name_end], rest.get(name_end..name_end + 18)?);
        rest = &rest[name_end + 18..];
    }
    rest.is_empty().then_some(())
}

/// The text values of a DataRow body (NULL as `None`); `None` when malformed.
fn row_values(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let value = rest.get(..len as usize)?;
        out.push(Some(String::from_utf8(value.to_vec()).ok()?));
        rest = &rest[len as usize..];
    }
    rest.is_empty().then_some(out)
}

/// A RowDescription body without each field's table OID and column number: what must be
/// the same on every shard (names, types, modifiers, formats).
fn columns(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    walk_fields(body, |name, field| {
        out.extend_from_slice(name);
        // table OID (4) and column number (2) skipped; type OID, size, modifier, format.
        out.extend_from_slice(&field[6..]);
    })?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut merge = Merge::new(Plan::Aggregates(vec![
            Count, Sum, Sum, Min, Max, BoolAnd, BoolOr,
        ]));
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
        let mut merge = Merge::new(Plan::Aggregates(vec![Aggregate::Sum]));
        let mut out = BytesMut::new();
        merge.on_message(0, b'T', &row_description(&[("sum", 0, 701)]), &mut out);
        let before = out.len();
        merge.finish(&mut out);
        let error = PgError::from_fields(&out[before + 5..]);
        assert_eq!(error.code, "0A000");
        assert!(error.message.contains("sum()"), "{}", error.message);
    }
}
