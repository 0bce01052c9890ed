//! What a statement with no shard of its own needs when the pool runs such statements on
//! every shard (`default_shard = "all"`, `SET SHARD TO ALL`) or refuses them
//! (`default_shard = "error"`): whether any one shard answers it as every shard would, how
//! the shards' answers become the one answer a single database would give, or which
//! construct cannot be answered exactly yet (refused, never guessed).

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, ObjectName, Query,
    SelectItem, SetExpr, Statement, TableFactor, Visit, Visitor,
};

use crate::parsed::Parsed;

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
}

/// How a statement with no shard runs across shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CrossShard {
    /// It reads no table of the application's (no table, or only the system catalogs:
    /// `SELECT 1`, `SET`, `SHOW`, `BEGIN`, a driver's type lookup): any one shard gives
    /// the answer.
    AnyShard,
    /// A plain `SELECT` of one table: every shard's rows, in any order, and the row counts
    /// summed. `functions` are the names of the functions it calls (lower case, without
    /// schema): a user-defined aggregate among them would need a merge, so the caller
    /// checks them against the aggregates the database has.
    Concat { functions: Vec<String> },
    /// A `SELECT` of one table whose every output column is an aggregate without `GROUP BY`
    /// (`count(*)`, `sum(x) AS total` …): each shard answers one row, and the rows are
    /// combined column by column.
    Aggregate(Vec<Aggregate>),
    /// Not answered exactly across shards yet: refused, naming the construct.
    Refused(&'static str),
    /// The text did not parse (or was longer than `query_parser_max_length`).
    #[default]
    Unknown,
}

impl CrossShard {
    /// The plan for a query text's statements (`None`: it did not parse).
    pub fn of(parsed: Option<&Parsed>) -> CrossShard {
        let Some(parsed) = parsed else {
            return CrossShard::Unknown;
        };
        let plans: Vec<CrossShard> = parsed.statements().iter().map(plan).collect();
        match plans.as_slice() {
            [] => CrossShard::AnyShard,
            [one] => one.clone(),
            many if many.iter().all(|p| *p == CrossShard::AnyShard) => CrossShard::AnyShard,
            many => many
                .iter()
                .find_map(|p| match p {
                    CrossShard::Refused(what) => Some(CrossShard::Refused(what)),
                    _ => None,
                })
                .unwrap_or(CrossShard::Refused(
                    "several statements in one query string reading sharded tables",
                )),
        }
    }
}

fn plan(statement: &Statement) -> CrossShard {
    match statement {
        Statement::Query(query) => plan_query(query),
        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::ShowVariable { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::NOTIFY { .. } => CrossShard::AnyShard,
        Statement::Insert(_) => CrossShard::Refused("INSERT without a sharding key"),
        Statement::Update(_) => CrossShard::Refused("UPDATE without a sharding key"),
        Statement::Delete(_) => CrossShard::Refused("DELETE without a sharding key"),
        Statement::Copy { .. } => CrossShard::Refused("COPY"),
        Statement::Explain { .. } => CrossShard::Refused("EXPLAIN"),
        _ => CrossShard::Refused("this statement (only SELECT runs on every shard for now)"),
    }
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

fn plan_query(query: &Query) -> CrossShard {
    let mut seen = Seen::default();
    let _ = query.visit(&mut seen);
    if seen.tables == 0 {
        return CrossShard::AnyShard;
    }
    let refused = |what| CrossShard::Refused(what);
    if query.with.is_some() {
        return refused("WITH (common table expressions)");
    }
    let SetExpr::Select(select) = &*query.body else {
        return refused("UNION, INTERSECT or EXCEPT");
    };
    if query.order_by.is_some() {
        return refused("ORDER BY");
    }
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return refused("LIMIT, OFFSET or FETCH");
    }
    if select.distinct.is_some() {
        return refused("DISTINCT");
    }
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
    };
    if grouped {
        return refused("GROUP BY");
    }
    if select.having.is_some() {
        return refused("HAVING");
    }
    if select.into.is_some() {
        return refused("SELECT INTO");
    }
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return refused("joins (several tables in FROM)");
    }
    if seen.derived || seen.table_functions {
        return refused("a subquery or function in FROM");
    }
    if seen.subqueries {
        return refused("subqueries");
    }
    if seen.windows {
        return refused("window functions");
    }
    if let Some(aggregates) = select
        .projection
        .iter()
        .map(aggregate_item)
        .collect::<Option<Vec<_>>>()
    {
        return CrossShard::Aggregate(aggregates);
    }
    seen.functions.sort();
    seen.functions.dedup();
    CrossShard::Concat {
        functions: seen.functions,
    }
}

/// An output column that is one plain aggregate call (no DISTINCT, FILTER, ORDER BY within
/// or OVER), maybe with an alias.
fn aggregate_item(item: &SelectItem) -> Option<Aggregate> {
    let (SelectItem::UnnamedExpr(Expr::Function(f))
    | SelectItem::ExprWithAlias {
        expr: Expr::Function(f),
        ..
    }) = item
    else {
        return None;
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let plain = f.over.is_none()
        && f.filter.is_none()
        && f.within_group.is_empty()
        && f.name.0.len() == 1
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && list.args.len() == 1;
    if !plain {
        return None;
    }
    let star = matches!(
        list.args[0],
        FunctionArg::Unnamed(FunctionArgExpr::Wildcard)
    );
    let name = f.name.0[0].as_ident()?.value.to_lowercase();
    Some(match name.as_str() {
        "count" => Aggregate::Count,
        _ if star => return None,
        "sum" => Aggregate::Sum,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        "bool_and" | "every" => Aggregate::BoolAnd,
        "bool_or" => Aggregate::BoolOr,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(sql: &str) -> CrossShard {
        CrossShard::of(Parsed::parse(sql).as_ref())
    }

    #[test]
    fn statements_reading_no_table_need_one_shard() {
        for sql in [
            "SELECT 1",
            "SELECT now(), pg_backend_pid()",
            "SET statement_timeout = 5",
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
    fn plain_selects_concatenate() {
        assert_eq!(
            of("SELECT id, value FROM data WHERE value > 3"),
            CrossShard::Concat { functions: vec![] }
        );
        assert_eq!(
            of("SELECT lower(name), upper(name) FROM public.data FOR UPDATE"),
            CrossShard::Concat {
                functions: vec!["lower".into(), "upper".into()]
            }
        );
        // A user-defined aggregate looks like any function: the caller checks the names.
        assert_eq!(
            of("SELECT my_agg(value) FROM data"),
            CrossShard::Concat {
                functions: vec!["my_agg".into()]
            }
        );
        // So does an aggregate inside an expression, or beside a plain column.
        for sql in [
            "SELECT count(*) + 1 FROM data",
            "SELECT id, count(*) FROM data",
            "SELECT count(DISTINCT id) FROM data",
            "SELECT sum(id) FILTER (WHERE id > 1) FROM data",
            "SELECT sum(*) FROM data",
            "SELECT avg(id) FROM data",
        ] {
            assert!(matches!(of(sql), CrossShard::Concat { .. }), "{sql}");
        }
    }

    #[test]
    fn plain_aggregates_without_group_by_combine() {
        use Aggregate::*;
        assert_eq!(
            of("SELECT count(*), COUNT(value) AS n, sum(id), min(value), max(id), bool_and(id > 0), every(true), bool_or(false) FROM data WHERE id > 3"),
            CrossShard::Aggregate(vec![Count, Count, Sum, Min, Max, BoolAnd, BoolAnd, BoolOr])
        );
    }

    #[test]
    fn what_cannot_be_merged_exactly_yet_is_refused_by_name() {
        for (sql, what) in [
            ("SELECT id FROM data ORDER BY id", "ORDER BY"),
            ("SELECT id FROM data LIMIT 3", "LIMIT, OFFSET or FETCH"),
            ("SELECT id FROM data OFFSET 3", "LIMIT, OFFSET or FETCH"),
            ("SELECT DISTINCT value FROM data", "DISTINCT"),
            (
                "SELECT value, count(*) FROM data GROUP BY value",
                "GROUP BY",
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
                "INSERT without a sharding key",
            ),
            ("UPDATE data SET value = 1", "UPDATE without a sharding key"),
            ("DELETE FROM data", "DELETE without a sharding key"),
            ("COPY data FROM STDIN", "COPY"),
            (
                "SELECT id FROM data; SELECT 1",
                "several statements in one query string reading sharded tables",
            ),
        ] {
            assert_eq!(of(sql), CrossShard::Refused(what), "{sql}");
        }
        assert_eq!(of("SELEC nonsense"), CrossShard::Unknown);
    }
}
