//! What a statement with no shard of its own needs when the pool runs such statements on
//! every shard (`default_shard = "all"`, `SET SHARD TO ALL`) or refuses them
//! (`default_shard = "error"`): whether any one shard answers it as every shard would, how
//! the shards' answers become the one answer a single database would give, or which
//! construct cannot be answered exactly yet (refused, never guessed).

use std::ops::ControlFlow;

use sqlparser::ast::{
    AssignmentTarget, Expr, FunctionArguments, ObjectName, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};

use crate::parsed::Parsed;
use crate::shard_key::KeyColumn;
pub use crate::split::ShardSql;

/// One ORDER BY key: an output column, and its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: SortColumn,
    pub descending: bool,
    /// NULLs before other values (PostgreSQL's default: with DESC).
    pub nulls_first: bool,
}

/// Which output column an ORDER BY key names (found in the RowDescription when the rows
/// come, since `*` and aliases decide what the columns are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortColumn {
    /// `ORDER BY 2`: 0-based.
    Position(usize),
    /// `ORDER BY name`: an output column's name as PostgreSQL prints it.
    Name(String),
}

/// An aggregate whose per-shard results combine exactly into the whole table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `count(*)`, `count(x)`: the counts summed.
    Count,
    /// `sum(x)`: the sums summed (NULL when every shard's is).
    Sum,
    /// `min(x)`, `max(x)`: the least or greatest of the shards'.
    Min,
    Max,
    /// `bool_and(x)` / `every(x)`, `bool_or(x)`.
    BoolAnd,
    BoolOr,
    /// `avg(x)`: each shard's `sum(x)` and `count(x)`, divided after the merge as
    /// PostgreSQL's `numeric` division does (integers and numeric; not floats).
    Avg,
}

/// How a statement with no shard runs across shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CrossShard {
    /// It reads no table of the application's (no table, or only the system catalogs:
    /// `SELECT 1`, `SET`, `SHOW`, `BEGIN`, a driver's type lookup): any one shard gives
    /// the answer.
    AnyShard,
    /// A plain `SELECT` of one table: every shard's rows, and the row counts summed.
    /// `functions` are the names of the functions it calls (lower case, without schema):
    /// a user-defined aggregate among them would need a merge, so the caller checks them
    /// against the aggregates the database has. `order`: ORDER BY output columns, each
    /// shard's sorted rows merged (empty: any order); `limit` and `offset`: LIMIT and
    /// OFFSET, applied to the merge. Each shard runs `shard_sql` instead of the text
    /// when there is an OFFSET (LIMIT limit+offset, no OFFSET: the merge skips the rows),
    /// else the text as it is (its LIMIT, if any, caps each shard's rows).
    Concat {
        functions: Vec<String>,
        order: Vec<SortKey>,
        /// `DISTINCT ON`: how many leading `order` keys it names (0: none); of each run of
        /// merged rows equal on them, the first is kept.
        distinct_on: usize,
        limit: Option<Count>,
        offset: Option<Count>,
        shard_sql: Option<ShardSql>,
    },
    /// A `SELECT` of one table whose every output column is an aggregate without `GROUP BY`
    /// (`count(*)`, `sum(x) AS total` …): each shard answers one row, and the rows are
    /// combined column by column.
    Aggregate {
        functions: Vec<Aggregate>,
        /// The table column each aggregate reads, when it reads one by name (`min(name)`):
        /// table and column as PostgreSQL names them (its text compares under that
        /// column's collation).
        columns: Vec<Option<(String, String)>>,
    },
    /// `GROUP BY` output columns (or `DISTINCT`, or `HAVING`), with aggregates: each
    /// shard runs `shard_sql` (the statement without HAVING, ORDER BY, LIMIT and OFFSET)
    /// and the merge groups their groups again (`functions`: each output column's
    /// aggregate, `None` for a grouping column; `columns`: the table column each aggregate
    /// reads, for its collation), then applies `having`, `order`, `offset` and `limit`.
    Grouped {
        functions: Vec<Option<Aggregate>>,
        columns: Vec<Option<(String, String)>>,
        /// How many of the columns the client gets: the rest are aggregates HAVING or
        /// ORDER BY need that the statement does not output (hidden, dropped after them).
        visible: usize,
        order: Vec<SortKey>,
        limit: Option<Count>,
        offset: Option<Count>,
        having: Option<Having>,
        shard_sql: ShardSql,
    },
    /// `UPDATE` or `DELETE` of one table with no shard: runs on every shard, all or
    /// nothing (each shard in a transaction, committed when every one succeeded); the
    /// counts summed, RETURNING rows concatenated.
    Write,
    /// `INSERT … VALUES` whose rows each give the sharding key (a literal or a
    /// parameter): each shard gets its rows (see `split`), all or nothing like
    /// [`CrossShard::Write`]; the counts summed.
    Insert,
    /// `COPY t [(columns)] FROM STDIN`: each row goes to its shard by the key column, all
    /// or nothing. `key`: the key's position among the columns named (`None`: no column
    /// list, so the table's own column order decides, from the catalog).
    CopyIn {
        table: String,
        key: Option<usize>,
        format: CopyFormat,
    },
    /// `COPY t TO STDOUT` or `COPY (SELECT …) TO STDOUT`: every shard's rows, one
    /// CopyOutResponse, the counts summed. A table's COPY runs on the shards as the COPY
    /// of its SELECT (`shard_sql`: the same rows, also where the shard's table is
    /// partitioned, which PostgreSQL's table COPY refuses).
    CopyOut {
        format: CopyFormat,
        shard_sql: Option<ShardSql>,
    },
    /// DDL (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `COMMENT` …): runs on every shard,
    /// all or nothing like [`CrossShard::Write`]; every shard's tag must be the same.
    Schema,
    /// Transaction control that keeps the transaction open (`SAVEPOINT`, `RELEASE`,
    /// `ROLLBACK TO`, `COMMIT AND CHAIN`) and `SET`: outside a transaction any shard
    /// answers it; in a transaction spanning shards, every shard runs it.
    Control,
    /// Several statements in one query string (`texts`, as the client wrote them), some
    /// of them on every shard or on different shards: they run one after the other, each
    /// where it belongs, in one transaction across shards (PostgreSQL's implicit
    /// transaction of a multi-statement query). `keyed`: every statement that reads the
    /// application's tables names its sharding key (so when all keys are on one shard,
    /// the string runs there as it is).
    Several { texts: Vec<String>, keyed: bool },
    /// Not answered exactly across shards yet: refused, naming the construct.
    Refused(&'static str),
    /// The text did not parse (or was longer than `query_parser_max_length`).
    #[default]
    Unknown,
}

impl CrossShard {
    /// The plan for a query text's statements (`None`: it did not parse); `key`: the
    /// pool's sharding key column (an UPDATE that sets it would move rows between shards).
    pub fn of(sql: &str, parsed: Option<&Parsed>, key: Option<&KeyColumn>) -> CrossShard {
        let Some(parsed) = parsed else {
            return CrossShard::Unknown;
        };
        let printable = parsed.printable();
        let statements = parsed.statements();
        let plans: Vec<CrossShard> = statements.iter().map(|s| plan(s, key, printable)).collect();
        let anywhere = |p: &CrossShard| matches!(p, CrossShard::AnyShard | CrossShard::Control);
        match plans.as_slice() {
            [] => CrossShard::AnyShard,
            [one] => one.clone(),
            many if many.iter().all(anywhere) => CrossShard::AnyShard,
            many => {
                // Each statement that reads the application's tables names its key: they
                // run each on its key's shard (one shard for all: the router sends the
                // whole string there).
                let keyed = statements.iter().zip(many).all(|(s, p)| {
                    anywhere(p) || key.is_some_and(|k| crate::shard_key::restricted_to_keys(s, k))
                });
                let copy_in = |s: &Statement| {
                    matches!(
                        s,
                        Statement::Copy {
                            to: false,
                            target: sqlparser::ast::CopyTarget::Stdin,
                            ..
                        }
                    )
                };
                if statements.iter().any(copy_in) {
                    // sqlparser reads what follows it as the COPY's inline data.
                    return CrossShard::Refused(
                        "COPY FROM STDIN among several statements in one query string \
                         (send it as a query of its own)",
                    );
                }
                if !keyed {
                    if let Some(refused) = many.iter().find(|p| matches!(p, CrossShard::Refused(_)))
                    {
                        return refused.clone();
                    }
                }
                match crate::statements::texts(sql).filter(|t| t.len() == statements.len()) {
                    Some(texts) => CrossShard::Several {
                        texts: texts.into_iter().map(str::to_string).collect(),
                        keyed,
                    },
                    None => CrossShard::Refused(
                        "several statements in one query string reading sharded tables",
                    ),
                }
            }
        }
    }
}

/// `printable`: the statement can be printed back to SQL (see `Parsed::printable`).
fn plan(statement: &Statement, key: Option<&KeyColumn>, printable: bool) -> CrossShard {
    match statement {
        Statement::Query(query) => select::plan_query(query, printable),
        Statement::Set(_)
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Commit { chain: true, .. } => CrossShard::Control,
        Statement::Rollback { chain, savepoint } if *chain || savepoint.is_some() => {
            CrossShard::Control
        }
        Statement::CreateIndex(index) if index.concurrently => {
            CrossShard::Refused("CREATE INDEX CONCURRENTLY (it cannot run in a transaction)")
        }
        Statement::CreateTable(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView { .. }
        | Statement::CreateSequence { .. }
        | Statement::AlterTable { .. }
        | Statement::AlterIndex { .. }
        | Statement::AlterView { .. }
        | Statement::Drop { .. }
        | Statement::Truncate { .. }
        | Statement::Comment { .. } => CrossShard::Schema,
        Statement::Reset(_)
        | Statement::ShowVariable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::NOTIFY { .. } => CrossShard::AnyShard,
        Statement::Insert(insert) => {
            let values = insert.source.as_ref().map(|s| s.body.as_ref());
            if !matches!(values, Some(SetExpr::Values(_))) {
                return CrossShard::Refused("INSERT … SELECT (or DEFAULT VALUES)");
            }
            match key.and_then(|key| crate::shard_key::insert_keys(insert, key)) {
                Some(_) => CrossShard::Insert,
                None => CrossShard::Refused(
                    "an INSERT whose rows do not all give the sharding key column \
                     (automatic_sharding_key, named in the column list) as a literal or \
                     parameter",
                ),
            }
        }
        Statement::Update(update) => {
            let sets_key = key.is_some_and(|key| {
                update.assignments.iter().any(|a| {
                    let names = match &a.target {
                        AssignmentTarget::ColumnName(name) => std::slice::from_ref(name),
                        AssignmentTarget::Tuple(names) => names.as_slice(),
                    };
                    names.iter().any(|n| {
                        let last = n.0.last().and_then(|p| p.as_ident());
                        last.is_some_and(|i| name_of(i) == key.column)
                    })
                })
            });
            if sets_key {
                return CrossShard::Refused("an UPDATE of the sharding key column");
            }
            let joined = update.from.is_some() || !update.table.joins.is_empty();
            plan_write(
                statement,
                joined || !update.order_by.is_empty() || update.limit.is_some(),
            )
        }
        Statement::Delete(delete) => {
            let joined = delete.using.is_some() || delete.tables.len() > 1;
            plan_write(
                statement,
                joined || !delete.order_by.is_empty() || delete.limit.is_some(),
            )
        }
        Statement::Copy { .. } => copy::plan_copy(statement, key),
        Statement::Explain { .. } => CrossShard::Refused("EXPLAIN"),
        _ => CrossShard::Refused("this statement (only SELECT runs on every shard for now)"),
    }
}

/// An UPDATE or DELETE: on every shard, unless it reads other tables (`joined`, or a
/// subquery) or calls functions whose effects would run once per shard.
fn plan_write(statement: &Statement, joined: bool) -> CrossShard {
    let mut seen = Seen::default();
    let _ = statement.visit(&mut seen);
    if joined || seen.tables > 1 || seen.derived || seen.table_functions {
        return CrossShard::Refused("an UPDATE or DELETE reading other tables");
    }
    if seen.subqueries {
        return CrossShard::Refused("subqueries");
    }
    CrossShard::Write
}

/// What a statement touches, found by walking all of it (subqueries included).
#[derive(Default)]
struct Seen {
    /// Relations outside the system catalogs.
    tables: usize,
    table_functions: bool,
    derived: bool,
    subqueries: bool,
    windows: bool,
    /// An explicit `COLLATE` (the merge orders text byte by byte, as C does).
    collate: bool,
    functions: Vec<String>,
}

impl Visitor for Seen {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if !is_catalog(relation) {
            self.tables += 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table { args: None, .. } => {}
            TableFactor::Table { .. } | TableFactor::Function { .. } => self.table_functions = true,
            TableFactor::UNNEST { .. } | TableFactor::TableFunction { .. } => {
                self.table_functions = true
            }
            _ => self.derived = true,
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                self.subqueries = true
            }
            Expr::Collate { .. } => self.collate = true,
            Expr::Function(f) => {
                if f.over.is_some() {
                    self.windows = true;
                }
                if let Some(name) = f.name.0.last().and_then(|p| p.as_ident()) {
                    self.functions.push(name.value.to_lowercase());
                }
                if matches!(f.args, FunctionArguments::Subquery(_)) {
                    self.subqueries = true;
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// `pg_catalog.*`, `information_schema.*`, or an unqualified `pg_*` (the catalogs are
/// the same on every shard: one shard answers).
fn is_catalog(name: &ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .collect();
    match parts.as_slice() {
        [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
        [table] => table.starts_with("pg_"),
        [] => false,
    }
}

/// An identifier as PostgreSQL names the column: folded to lower case unless quoted.
fn name_of(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

mod copy;
mod group;
mod select;

pub use copy::{CopyFormat, CopyKind};
pub use group::{Comparison, Constant, Having};
pub use select::Count;

#[cfg(test)]
#[path = "cross_shard_tests.rs"]
mod tests;
