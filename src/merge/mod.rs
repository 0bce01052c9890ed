//! The shards' answers to one statement run on every shard, made into the one answer a
//! single database holding all their rows would give: one RowDescription (the shards must
//! agree on it), every shard's rows (or, for aggregates, their one row each combined column
//! by column), one CommandComplete with the rows counted, and one error for the statement
//! if any shard failed (PostgreSQL's, naming the shard). Pure: it is fed each shard's
//! messages and writes what the client gets, so unit tests drive it byte for byte.

use bytes::BytesMut;
use pgcat_parser::cross_shard::SortKey;

mod collation;
mod copy_out;
mod datetime;
mod groups;
mod numeric;
mod order;
mod values;

use crate::wire::messages::{self, PgError};
pub use collation::{Collations, Column};
use copy_out::CopyOut;
pub use groups::GroupPlan;
use groups::Groups;
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
    /// The command the shards' CommandCompletes named (`SELECT`), and whether it carries a
    /// count (`SAVEPOINT`, `CREATE TABLE` do not: every shard's tag must then be the same).
    command: Option<(String, bool)>,
    /// The statement ran on one shard of a transaction on several: its error is the
    /// server's as it is, naming no shard.
    one_shard: bool,
    /// The first error; nothing more is forwarded after it.
    error: Option<PgError>,
    /// Aggregates: each shard's row is folded into one.
    combine: Option<Groups>,
    /// ORDER BY: the keys, and once the columns are known, the resolved order.
    sort_keys: Vec<SortKey>,
    order: Option<Order>,
    /// LIMIT: rows past it are dropped.
    limit: Option<u64>,
    /// OFFSET: this many rows are dropped first (the shards do not skip them).
    offset: u64,
    /// DISTINCT ON: how many leading sort keys it names; a row equal on them to the last
    /// one sent is dropped (the merged rows come in order, so equal ones are together).
    distinct_on: usize,
    /// The last row sent, under DISTINCT ON.
    last_row: Option<Vec<u8>>,
    /// An extended-protocol batch: what the client asked for of the replies each shard
    /// sends to the batch it gets (see `batch`).
    extended: Option<Extended>,
    /// COPY … TO STDOUT: how the shards' data is joined, and which shards' first
    /// CopyData came.
    copy: Option<CopyOut>,
    /// The collations of the database (shard 0's) whose RowDescription is kept: which
    /// text columns order byte by byte (`None`: not known, so text is not ordered).
    collations: Option<Collations>,
}

/// The client's extended batch: whether it sent a Parse and a Describe of the portal.
#[derive(Clone, Copy)]
struct Extended {
    parse: bool,
    describe: bool,
}

/// How the shards' rows become the answer.
pub enum Plan {
    /// Every row (`order`: merged in that order; `offset`: that many skipped first;
    /// `limit`: at most that many after them).
    Rows {
        order: Vec<SortKey>,
        limit: Option<u64>,
        offset: u64,
        /// DISTINCT ON: how many leading `order` keys it names (0: none).
        distinct_on: usize,
    },
    /// COPY … TO STDOUT: every shard's data, with one header (`binary`: the binary
    /// header and trailer; `header`: a text or CSV header line) and one CopyDone.
    CopyOut { binary: bool, header: bool },
    /// Rows grouped (across shards) by their grouping columns, each aggregate combined;
    /// then filtered, ordered, skipped and capped (see [`GroupPlan`]). Aggregates without
    /// GROUP BY are one group.
    Groups(GroupPlan),
}

impl Merge {
    pub fn new(plan: Plan) -> Merge {
        match plan {
            Plan::Rows {
                order,
                limit,
                offset,
                distinct_on,
            } => Merge {
                sort_keys: order,
                limit,
                offset,
                distinct_on,
                ..Merge::default()
            },
            Plan::CopyOut { binary, header } => Merge {
                copy: Some(CopyOut::new(binary, header)),
                ..Merge::default()
            },
            Plan::Groups(plan) => Merge {
                combine: Some(Groups::new(plan)),
                ..Merge::default()
            },
        }
    }

    /// The collations of shard 0's database, which say which text columns order byte by
    /// byte (without them text is not ordered or compared).
    pub fn collations(&mut self, collations: Collations) {
        self.collations = Some(collations);
    }

    /// Whether `row`, a shard's DataRow for an ordered merge, can be ordered; if not the
    /// statement fails (a value in another DateStyle, say).
    pub fn admit(&mut self, shard: usize, row: &[u8]) -> bool {
        let checked = self.order.as_ref().map_or(Ok(()), |o| o.check(row));
        match checked {
            Ok(()) => true,
            Err(e) => {
                self.fail(shard, e);
                false
            }
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
        if self.distinct_on > 0 {
            let repeat = match (&self.last_row, &self.order) {
                (Some(last), Some(order)) => order.same_prefix(last, body, self.distinct_on),
                _ => false,
            };
            if repeat {
                return;
            }
            self.last_row = Some(body.to_vec());
        }
        if self.offset > 0 && self.error.is_none() {
            self.offset -= 1;
        } else if self.wants_rows() {
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
                    let collations = self.collations.as_ref();
                    if let Some(combine) = &mut self.combine {
                        match combine.describe(body, collations) {
                            Ok(()) => {}
                            Err(e) => return self.fail(shard, e),
                        }
                    }
                    if self.is_ordered() {
                        let described = described(body)
                            .ok_or_else(|| PgError::error("08P01", "malformed RowDescription"));
                        match described.and_then(|f| {
                            Order::resolve(&self.sort_keys, &f, self.collations.as_ref())
                        }) {
                            Ok(order) => self.order = Some(order),
                            Err(e) => return self.fail(shard, e),
                        }
                    }
                    if self.extended.is_none_or(|e| e.describe) {
                        // The client's columns (avg's sum and count are one column).
                        let description = self.combine.as_ref().and_then(Groups::description);
                        let body = description.unwrap_or(body);
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
                let text = text.unwrap_or_default();
                let (command, count) = match text.rsplit_once(' ') {
                    Some((command, n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                        (command, n.parse::<u64>().ok())
                    }
                    _ => (text, None),
                };
                let counted = count.is_some() || command == "SELECT";
                match &self.command {
                    Some((first, was_counted)) if first != command || *was_counted != counted => {
                        self.fail(
                            shard,
                            PgError::error("0A000", "the shards ran different commands"),
                        )
                    }
                    _ if counted && count.is_none() => self.fail(
                        shard,
                        PgError::error("0A000", format!("cannot merge \"{command}\" results")),
                    ),
                    _ => {
                        self.tagged += count.unwrap_or(0);
                        self.command = Some((command.to_string(), counted));
                    }
                }
            }
            b'E' => self.fail(shard, PgError::from_fields(body)),
            b'H' | b'd' => match &mut self.copy {
                Some(copy) => copy.on_message(shard, tag, body, out),
                None => self.fail(shard, PgError::error("0A000", "unexpected COPY data")),
            },
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
            self.error = Some(if self.one_shard {
                error
            } else {
                on_shard(shard, error)
            });
        }
    }

    /// The statement runs on one shard only (of a transaction holding several): its
    /// answer is passed on as the server gave it.
    pub fn one_shard(&mut self) {
        self.one_shard = true;
    }

    /// Writes the end of the answer: the error, or CommandComplete with every shard's rows.
    pub fn finish(self, out: &mut BytesMut) {
        match (self.error, self.combine) {
            (Some(error), _) => error.encode(out),
            (None, Some(groups)) => match groups.finish(out) {
                Ok(rows) => messages::command_complete(out, &format!("SELECT {rows}")),
                Err(error) => error.encode(out),
            },
            (None, None) if self.copy.is_some() => {
                if self.copy.as_ref().is_some_and(CopyOut::binary) {
                    messages::message(out, b'd', |m| m.extend_from_slice(&[0xff, 0xff]));
                }
                messages::empty(out, b'c');
                messages::command_complete(out, &format!("COPY {}", self.tagged));
            }
            (None, None) => {
                // A SELECT counts the rows sent (after LIMIT); a write what each shard did;
                // a command without a count (SAVEPOINT, CREATE TABLE) is every shard's tag.
                let (command, counted) = self.command.unwrap_or(("SELECT".into(), true));
                match (command.as_str(), counted) {
                    ("SELECT", _) => {
                        messages::command_complete(out, &format!("SELECT {}", self.rows))
                    }
                    (_, true) => {
                        messages::command_complete(out, &format!("{command} {}", self.tagged))
                    }
                    (_, false) => messages::command_complete(out, &command),
                }
            }
        }
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

/// An output column, as a RowDescription describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub(super) name: String,
    /// The table and column it comes from (0 and 0 for an expression).
    pub(super) table: u32,
    pub(super) attnum: i16,
    pub(super) type_oid: u32,
    /// 0 text, 1 binary.
    pub(super) format: u16,
}

impl Field {
    /// `Ok` when the column's text orders byte by byte under `collations` (not known:
    /// no), else the collation that does not.
    pub(super) fn collation(&self, collations: Option<&Collations>) -> Result<(), String> {
        collations.map_or(Err("unknown".into()), |c| c.of(self.table, self.attnum))
    }
}

/// Each field of a RowDescription body.
fn described(body: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    walk_fields(body, |name, f| {
        out.push(Field {
            name: String::from_utf8_lossy(&name[..name.len() - 1]).into_owned(),
            table: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
            attnum: i16::from_be_bytes([f[4], f[5]]),
            type_oid: u32::from_be_bytes([f[6], f[7], f[8], f[9]]),
            format: u16::from_be_bytes([f[16], f[17]]),
        })
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

/// The values of a DataRow body (NULL as `None`); `None` when malformed.
fn row_values(body: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
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
        out.push(Some(rest.get(..len as usize)?.to_vec()));
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
mod tests;
