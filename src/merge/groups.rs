//! Aggregates and groups across shards: each shard's groups (a row per group: grouping
//! columns and partial aggregates) are grouped again by their grouping values, compared
//! as PostgreSQL compares them (1.5 and 1.50 are one group; NULLs are one group), and
//! each aggregate combined (counts and sums added, min/max compared, bool_and/bool_or);
//! then HAVING filters the groups, ORDER BY sorts them, OFFSET and LIMIT cut them.
//! Aggregates without GROUP BY are one group of every shard's single row. Every group is
//! held until the last shard answered: memory grows with the number of groups.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bytes::BytesMut;
use pgcat_parser::cross_shard::{Aggregate, Comparison, Constant, Having, SortKey};

use super::numeric::Decimal;
use super::order::Order;
use super::{described, row_values, values, walk_fields, Collations, Field};
use crate::wire::messages::{self, PgError};

/// What the merge of a grouped statement does.
#[derive(Debug, Clone, Default)]
pub struct GroupPlan {
    /// Each output column's aggregate; `None` for a grouping column.
    pub functions: Vec<Option<Aggregate>>,
    /// The table column each aggregate reads, if it names one (its text's collation).
    pub columns: Vec<Option<(String, String)>>,
    /// How many leading columns the client gets (`None`: all); the rest are aggregates
    /// HAVING or ORDER BY needs, dropped after them.
    pub visible: Option<usize>,
    pub having: Option<Having>,
    pub order: Vec<SortKey>,
    pub offset: u64,
    pub limit: Option<u64>,
    /// The Bind's parameters (value, binary, declared type or 0), for HAVING's `$n`.
    pub params: Vec<Option<(Vec<u8>, bool, u32)>>,
}

/// The groups so far.
pub(super) struct Groups {
    plan: GroupPlan,
    /// Each column of the shards' rows: its aggregate (an `avg` is two: its sum, marked
    /// `Avg`, and its count), `None` for a grouping column.
    shard_functions: Vec<Option<Aggregate>>,
    /// Each shard column's type OID and whether it is in binary format.
    shard_types: Vec<(u32, bool)>,
    /// The same of the client's columns (an avg is numeric, in its sum's format).
    types: Vec<(u32, bool)>,
    /// The client's RowDescription, when it is not the shards' (an avg among the columns,
    /// hidden columns).
    description: Option<Vec<u8>>,
    /// How many leading columns the client gets.
    visible: usize,
    order: Option<Order>,
    /// Grouping values → the group's row (grouping values as first seen, aggregates
    /// combined so far).
    groups: BTreeMap<Key, Vec<Option<Vec<u8>>>>,
}

/// A group's grouping values, ordered as PostgreSQL compares them (NULLs last, equal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(Vec<Option<Value>>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    type_oid: u32,
    binary: bool,
    bytes: Vec<u8>,
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            let ordering = match (a, b) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => {
                    match (a.decode(), b.decode()) {
                        (Some(x), Some(y)) => values::compare(&x, &y),
                        // Checked when the row came (`fold`).
                        _ => a.bytes.cmp(&b.bytes),
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

impl Value {
    fn decode(&self) -> Option<values::Sortable<'_>> {
        values::decode(self.type_oid, self.binary, &self.bytes)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Groups {
    pub(super) fn new(plan: GroupPlan) -> Groups {
        let shard_functions = plan
            .functions
            .iter()
            .flat_map(|f| match f {
                Some(Aggregate::Avg) => vec![Some(Aggregate::Avg), Some(Aggregate::Count)],
                other => vec![*other],
            })
            .collect();
        Groups {
            visible: plan.visible.unwrap_or(plan.functions.len()),
            plan,
            shard_functions,
            shard_types: Vec::new(),
            types: Vec::new(),
            description: None,
            order: None,
            groups: BTreeMap::new(),
        }
    }

    /// The client's RowDescription, when it is not the shards'.
    pub(super) fn description(&self) -> Option<&[u8]> {
        self.description.as_deref()
    }

    /// Learns the columns' types; refuses what is not grouped, combined or ordered here
    /// (text only under a collation that `collations` say compares byte by byte).
    pub(super) fn describe(
        &mut self,
        body: &[u8],
        collations: Option<&Collations>,
    ) -> Result<(), PgError> {
        let fields =
            described(body).ok_or_else(|| PgError::error("08P01", "malformed RowDescription"))?;
        if fields.len() != self.shard_functions.len() {
            return Err(PgError::error(
                "0A000",
                "the aggregates and the columns do not match",
            ));
        }
        self.shard_types = fields.iter().map(|f| (f.type_oid, f.format == 1)).collect();
        let mut raw = Vec::new();
        walk_fields(body, |name, field| {
            raw.push((name.to_vec(), field.to_vec()))
        });
        let (mut client_fields, mut description) = (Vec::new(), Vec::new());
        let mut shard = 0;
        for (i, function) in self.plan.functions.iter().enumerate() {
            let field = &fields[shard];
            // An aggregate's text has the collation of the column it reads.
            let column = self.plan.columns.get(i).and_then(Option::as_ref);
            let text = match (collations, column) {
                (Some(c), Some((table, column))) => c.of_column(table, column),
                _ => field.collation(collations),
            };
            let (name, mut raw_field) = raw.get(shard).cloned().unwrap_or_default();
            match function {
                Some(Aggregate::Avg) => {
                    check_aggregate(Aggregate::Avg, field, text)?;
                    // numeric, variable length, no modifier, in the sum's format.
                    raw_field[..6].fill(0);
                    raw_field[6..10].copy_from_slice(&values::NUMERIC.to_be_bytes());
                    raw_field[10..16].fill(0xff);
                    client_fields.push(Field {
                        type_oid: values::NUMERIC,
                        table: 0,
                        attnum: 0,
                        ..field.clone()
                    });
                    shard += 2;
                }
                Some(aggregate) => {
                    check_aggregate(*aggregate, field, text)?;
                    client_fields.push(field.clone());
                    shard += 1;
                }
                None => {
                    check_grouped(field, text)?;
                    client_fields.push(field.clone());
                    shard += 1;
                }
            }
            if i < self.visible {
                description.extend_from_slice(&name);
                description.extend_from_slice(&raw_field);
            }
        }
        self.types = client_fields
            .iter()
            .map(|f| (f.type_oid, f.format == 1))
            .collect();
        let hidden = self.visible < self.plan.functions.len();
        if hidden || self.shard_functions.len() != self.plan.functions.len() {
            let mut body = (self.visible as u16).to_be_bytes().to_vec();
            body.extend_from_slice(&description);
            self.description = Some(body);
        }
        if !self.plan.order.is_empty() {
            let order = Order::resolve(&self.plan.order, &client_fields, collations)?;
            self.order = Some(order);
        }
        Ok(())
    }

    /// Folds one shard's row (a DataRow body) into its group.
    pub(super) fn fold(&mut self, body: &[u8]) -> Result<(), PgError> {
        let row = row_values(body).ok_or_else(|| PgError::error("08P01", "malformed DataRow"))?;
        if row.len() != self.shard_functions.len() {
            return Err(PgError::error(
                "08P01",
                "a DataRow with the wrong number of columns",
            ));
        }
        let mut key = Vec::new();
        for (i, value) in row.iter().enumerate() {
            if self.shard_functions[i].is_some() {
                continue;
            }
            let (type_oid, binary) = self.shard_types[i];
            key.push(match value {
                None => None,
                Some(bytes) => {
                    decoded(type_oid, binary, bytes)?;
                    Some(Value {
                        type_oid,
                        binary,
                        bytes: bytes.clone(),
                    })
                }
            });
        }
        let Some(group) = self.groups.get_mut(&Key(key.clone())) else {
            self.groups.insert(Key(key), row);
            return Ok(());
        };
        for (i, value) in row.into_iter().enumerate() {
            let Some(aggregate) = self.shard_functions[i] else {
                continue;
            };
            let current = group[i].take();
            group[i] = match (current, value) {
                (None, v) | (v, None) => v,
                (Some(a), Some(b)) => Some(combine(aggregate, self.shard_types[i], &a, &b)?),
            };
        }
        Ok(())
    }

    /// Writes the groups HAVING keeps, in ORDER BY's order, after OFFSET and up to LIMIT;
    /// how many.
    pub(super) fn finish(self, out: &mut BytesMut) -> Result<u64, PgError> {
        let mut rows = Vec::with_capacity(self.groups.len());
        let shard_types = &self.shard_types;
        let functions = &self.plan.functions;
        for shard_row in self.groups.into_values() {
            let row = client_row(shard_row, functions, shard_types)?;
            let keep = match &self.plan.having {
                None => true,
                Some(h) => eval(h, &row, &self.types, &self.plan.params)? == Some(true),
            };
            if keep {
                rows.push(data_row(&row));
            }
        }
        if let Some(order) = &self.order {
            rows.sort_by(|a, b| order.compare(a, b));
        }
        let skip = usize::try_from(self.plan.offset).unwrap_or(usize::MAX);
        let take = self
            .plan
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut sent = 0;
        let hidden = self.visible < functions.len();
        for row in rows.iter().skip(skip).take(take) {
            if hidden {
                // Without the hidden columns HAVING and ORDER BY needed.
                let values = row_values(row).unwrap_or_default();
                let shown = data_row(&values[..self.visible.min(values.len())]);
                messages::message(out, b'D', |m| m.extend_from_slice(&shown));
            } else {
                messages::message(out, b'D', |m| m.extend_from_slice(row));
            }
            sent += 1;
        }
        Ok(sent)
    }
}

/// A group's row as the client gets it: each avg divided out of its sum and count.
fn client_row(
    row: Vec<Option<Vec<u8>>>,
    functions: &[Option<Aggregate>],
    shard_types: &[(u32, bool)],
) -> Result<Vec<Option<Vec<u8>>>, PgError> {
    if row.len() == functions.len() {
        return Ok(row);
    }
    let mut values = row.into_iter().zip(shard_types);
    let mut out = Vec::with_capacity(functions.len());
    for function in functions {
        let Some((value, &(type_oid, binary))) = values.next() else {
            break;
        };
        if *function != Some(Aggregate::Avg) {
            out.push(value);
            continue;
        }
        let count = values.next().and_then(|(c, &(_, count_binary))| {
            let c = c?;
            let n = decoded(values::INT8, count_binary, &c).ok()?;
            match n {
                values::Sortable::Int(n) => u64::try_from(n).ok().filter(|n| *n > 0),
                _ => None,
            }
        });
        out.push(match (value, count) {
            (Some(sum), Some(count)) => {
                let sum = match decoded(type_oid, binary, &sum)? {
                    values::Sortable::Numeric(d) => d,
                    values::Sortable::Int(n) => Decimal::parse(&n.to_string())
                        .ok_or_else(|| PgError::error("22P02", "an unreadable sum"))?,
                    _ => return Err(PgError::error("0A000", "avg() of this type across shards")),
                };
                let avg = sum.div_count(count);
                Some(if binary {
                    avg.to_binary()
                } else {
                    avg.to_string().into_bytes()
                })
            }
            _ => None,
        });
    }
    Ok(out)
}

/// A DataRow body of `values`.
fn data_row(values: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut body = (values.len() as u16).to_be_bytes().to_vec();
    for value in values {
        match value {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    body
}

/// A HAVING condition of a group's row: SQL's three-valued logic (`None`: unknown).
fn eval(
    h: &Having,
    row: &[Option<Vec<u8>>],
    types: &[(u32, bool)],
    params: &[Option<(Vec<u8>, bool, u32)>],
) -> Result<Option<bool>, PgError> {
    let sub = |h| eval(h, row, types, params);
    Ok(match h {
        Having::And(a, b) => match (sub(a)?, sub(b)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Having::Or(a, b) => match (sub(a)?, sub(b)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Having::Not(a) => sub(a)?.map(|v| !v),
        Having::IsNull { column, negated } => Some(row[*column].is_none() != *negated),
        Having::Compare {
            column,
            op,
            constant,
        } => {
            // The constant as text, or a parameter as the Bind gave it (read as its
            // declared type when binary).
            let (constant, constant_binary, declared) = match constant {
                Constant::Value(Some(text)) => (text.as_bytes(), false, 0),
                Constant::Param(n) => match params.get(n - 1) {
                    Some(Some((value, binary, declared))) => (value.as_slice(), *binary, *declared),
                    _ => return Ok(None),
                },
                Constant::Value(None) => return Ok(None),
            };
            let Some(value) = &row[*column] else {
                return Ok(None);
            };
            let (type_oid, binary) = types[*column];
            let value = decoded(type_oid, binary, value)?;
            let as_type = if constant_binary && declared != 0 {
                declared
            } else {
                type_oid
            };
            let constant = values::decode(as_type, constant_binary, constant).ok_or_else(|| {
                PgError::error(
                    "22P02",
                    format!(
                        "invalid input syntax for type {type_oid}: \"{}\"",
                        String::from_utf8_lossy(constant)
                    ),
                )
            })?;
            let ordering = values::compare_numbers(value, constant);
            Some(match op {
                Comparison::Eq => ordering == Ordering::Equal,
                Comparison::NotEq => ordering != Ordering::Equal,
                Comparison::Lt => ordering == Ordering::Less,
                Comparison::LtEq => ordering != Ordering::Greater,
                Comparison::Gt => ordering == Ordering::Greater,
                Comparison::GtEq => ordering != Ordering::Less,
            })
        }
    })
}

/// Refuses an aggregate whose results are not combined here.
fn check_aggregate(
    aggregate: Aggregate,
    field: &Field,
    text: Result<(), String>,
) -> Result<(), PgError> {
    let type_oid = field.type_oid;
    let ok = match aggregate {
        Aggregate::Count => type_oid == values::INT8,
        // sum(int2/int4) is int8, sum(int8/numeric) numeric; float sums round
        // differently in another order, so they are not combined.
        Aggregate::Sum => matches!(type_oid, values::INT8 | values::NUMERIC),
        Aggregate::Min | Aggregate::Max => match values::kind(type_oid) {
            values::Kind::Ordered => true,
            values::Kind::Collated => text.is_ok(),
            values::Kind::Unordered => false,
        },
        Aggregate::BoolAnd | Aggregate::BoolOr => type_oid == values::BOOL,
        // avg of integers and numeric: their sum is int8 or numeric (avg of floats is
        // float8 arithmetic, whose rounding depends on the order).
        Aggregate::Avg => matches!(type_oid, values::INT8 | values::NUMERIC),
    };
    if ok {
        return Ok(());
    }
    let under = match (values::kind(type_oid), text) {
        (values::Kind::Collated, Err(collation)) => format!(" under the collation \"{collation}\""),
        _ => String::new(),
    };
    Err(PgError::error(
        "0A000",
        format!(
            "cannot combine {} of a value of type {type_oid}{under} across shards: not supported yet",
            name(aggregate)
        ),
    ))
}

/// Refuses a grouping column whose values are not compared here.
fn check_grouped(field: &Field, text: Result<(), String>) -> Result<(), PgError> {
    let why = match (values::kind(field.type_oid), text) {
        (values::Kind::Ordered, _) | (values::Kind::Collated, Ok(())) => return Ok(()),
        (values::Kind::Collated, Err(collation)) => {
            format!("text under the collation \"{collation}\"")
        }
        (values::Kind::Unordered, _) => format!("of type {}", field.type_oid),
    };
    Err(PgError::error(
        "0A000",
        format!(
            "cannot group the shards' rows by {}, {why}: not supported yet",
            field.name
        ),
    ))
}

/// Two shards' results of `aggregate` (of type `ty`, binary or not) combined.
fn combine(
    aggregate: Aggregate,
    (ty, binary): (u32, bool),
    a: &[u8],
    b: &[u8],
) -> Result<Vec<u8>, PgError> {
    use std::cmp::Ordering::{Greater, Less};
    let out_of_range = || PgError::error("22003", format!("{} out of range", name(aggregate)));
    let pick = |keep_a: bool| if keep_a { a.to_vec() } else { b.to_vec() };
    let decode = |v| decoded(ty, binary, v);
    let order = || Ok::<_, PgError>(values::compare(&decode(a)?, &decode(b)?));
    Ok(match aggregate {
        Aggregate::Count | Aggregate::Sum | Aggregate::Avg => {
            values::add(ty, binary, a, b).ok_or_else(out_of_range)?
        }
        Aggregate::Min => pick(order()? != Greater),
        Aggregate::Max => pick(order()? != Less),
        Aggregate::BoolAnd => pick(decode(a)? == values::Sortable::Int(0)),
        Aggregate::BoolOr => pick(decode(a)? == values::Sortable::Int(1)),
    })
}

fn name(aggregate: Aggregate) -> &'static str {
    match aggregate {
        Aggregate::Count => "count()",
        Aggregate::Sum => "sum()",
        Aggregate::Min => "min()",
        Aggregate::Max => "max()",
        Aggregate::BoolAnd => "bool_and()",
        Aggregate::Avg => "avg()",
        Aggregate::BoolOr => "bool_or()",
    }
}

/// `v` of type `ty` decoded, or the error saying it cannot be compared here.
fn decoded(ty: u32, binary: bool, v: &[u8]) -> Result<values::Sortable<'_>, PgError> {
    values::decode(ty, binary, v).ok_or_else(|| {
        PgError::error(
            "0A000",
            format!(
                "cannot compare the value {:?} of type {ty} across shards",
                String::from_utf8_lossy(v)
            ),
        )
    })
}
