//! A SELECT with no shard: whether one shard answers it, how the shards' rows merge
//! (ORDER BY output columns, LIMIT and OFFSET, aggregates combined) or which construct
//! is refused.

use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause,
    OrderBy, OrderByKind, OrderBySort, Query, SelectItem, SetExpr, TableFactor, Value, Visit,
};

use super::{name_of, Aggregate, CrossShard, Seen, ShardSql, SortColumn, SortKey};

/// A LIMIT or OFFSET count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Number(u64),
    /// `$n` (1-based), given by the Bind.
    Param(usize),
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Number(n) => write!(f, "{n}"),
            Count::Param(n) => write!(f, "${n}"),
        }
    }
}

pub(super) fn plan_query(query: &Query, printable: bool) -> CrossShard {
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
    // A grouped statement may order by aggregates it does not output: each shard
    // computes them as hidden columns after the client's, which the merge drops.
    let mut items = select.projection.clone();
    if let (true, Some(order_by)) = (grouped_select(select), &query.order_by) {
        if let OrderByKind::Expressions(exprs) = &order_by.kind {
            for e in exprs {
                hide_aggregates(&e.expr, &mut items);
            }
        }
    }
    let visible = select.projection.len();
    let order = match &query.order_by {
        None => Vec::new(),
        Some(order_by) => match sort_keys(order_by, &items, visible) {
            Ok(keys) => keys,
            Err(what) => return refused(what),
        },
    };
    if order.iter().any(|k| per_shard_column(&k.column, &items)) {
        return refused(
            "ORDER BY a volatile function (random(), now(), nextval() …: each shard's value differs)",
        );
    }
    if query.fetch.is_some() {
        return refused("FETCH");
    }
    let (limit, offset) = match &query.limit_clause {
        None => (None, None),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let limit = limit.as_ref().map(count);
            let offset = offset.as_ref().map(|o| count(&o.value));
            match (limit, offset) {
                (Some(None), _) | (_, Some(None)) => {
                    return refused("LIMIT or OFFSET other than a number or a parameter")
                }
                (limit, offset) => (limit.flatten().flatten(), offset.flatten().flatten()),
            }
        }
        Some(_) => return refused("this LIMIT form"),
    };
    let shard_sql = match (offset, &query.limit_clause) {
        (Some(offset), Some(clause)) => {
            if !printable {
                return refused("OFFSET in a statement nested too deeply to rewrite");
            }
            let (text, clause) = (query.to_string(), clause.to_string());
            let Some(at) = text.rfind(clause.trim_start()) else {
                return refused("this OFFSET form");
            };
            let each = match limit {
                Some(limit) => format!("LIMIT ({limit})::int8 + ({offset})::int8"),
                None => String::new(),
            };
            let end = at + clause.trim_start().len();
            let rewritten = format!("{}{each}{}", &text[..at], &text[end..]);
            match ShardSql::renumbered(&rewritten) {
                Some(shard) => Some(shard),
                None => return refused("this OFFSET form"),
            }
        }
        _ => None,
    };
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
    let table = match &select.from[0].relation {
        TableFactor::Table { name, .. } => name.0.last().and_then(|p| p.as_ident()),
        _ => None,
    };
    // avg is divided after the merge: each shard's sum and count are grouped (one group).
    let averaged = select
        .projection
        .iter()
        .any(|item| matches!(aggregate_item(item), Some((Aggregate::Avg, _))));
    let distinct_keys =
        match &select.distinct {
            Some(Distinct::On(exprs)) => {
                let plain = select.having.is_none()
                    && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
                    && !averaged;
                match distinct_on(exprs, &order, &select.projection) {
                    Some(k) if plain => k,
                    _ => return refused(
                        "DISTINCT ON other than the leading ORDER BY output columns of a plain \
                         SELECT",
                    ),
                }
            }
            _ => 0,
        };
    if averaged || grouped_select(select) {
        if seen.collate {
            return refused("COLLATE in a statement ordered or aggregated across shards");
        }
        let table = table.map(name_of);
        let bounds = (order, limit, offset);
        return super::group::plan_grouped(query, (select, items), bounds, printable, table);
    }
    let aggregates = select
        .projection
        .iter()
        .map(aggregate_item)
        .collect::<Option<Vec<_>>>();
    if seen.collate && (!order.is_empty() || aggregates.is_some()) {
        return refused("COLLATE in a statement ordered or aggregated across shards");
    }
    if let Some(aggregates) = aggregates {
        if order.is_empty() && limit.is_none() && offset.is_none() {
            let (functions, columns) = aggregates
                .into_iter()
                .map(|(function, column)| {
                    let column = table.zip(column).map(|(t, c)| (name_of(t), name_of(c)));
                    (function, column)
                })
                .unzip();
            return CrossShard::Aggregate { functions, columns };
        }
    }
    seen.functions.sort();
    seen.functions.dedup();
    CrossShard::Concat {
        functions: seen.functions,
        order,
        distinct_on: distinct_keys,
        limit,
        offset,
        shard_sql,
    }
}

/// Whether the SELECT groups its rows: GROUP BY, DISTINCT or HAVING.
fn grouped_select(select: &sqlparser::ast::Select) -> bool {
    matches!(select.distinct, Some(Distinct::Distinct))
        || select.having.is_some()
        || match &select.group_by {
            GroupByExpr::All(_) => true,
            GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
        }
}

/// Appends to `items` each aggregate `expr` calls that is not one of them yet (compared
/// as printed, case aside): a hidden output column the merge computes and then drops.
pub(super) fn hide_aggregates(expr: &Expr, items: &mut Vec<SelectItem>) {
    let mut found = Vec::new();
    let _ = sqlparser::ast::visit_expressions(expr, |e| {
        let item = SelectItem::UnnamedExpr(e.clone());
        if aggregate_item(&item).is_some() {
            found.push(item);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    for item in found {
        let SelectItem::UnnamedExpr(e) = &item else {
            continue;
        };
        let text = e.to_string();
        let known = items.iter().any(|i| match i {
            SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => {
                x.to_string().eq_ignore_ascii_case(&text)
            }
            _ => false,
        });
        if !known {
            items.push(item);
        }
    }
}

/// A non-negative integer literal.
fn number(expr: &Expr) -> Option<u64> {
    match count(expr) {
        Some(Some(Count::Number(n))) => Some(n),
        _ => None,
    }
}

/// A LIMIT or OFFSET count: `Some(None)` for `NULL` (no limit, no offset), `None` for
/// what is neither a non-negative integer literal nor a parameter.
fn count(expr: &Expr) -> Option<Option<Count>> {
    let Expr::Value(v) = expr else {
        return None;
    };
    match &v.value {
        Value::Number(n, _) => n.parse().ok().map(|n| Some(Count::Number(n))),
        Value::Null => Some(None),
        Value::Placeholder(p) => {
            let n = p.strip_prefix('$')?.parse().ok().filter(|n| *n >= 1)?;
            Some(Some(Count::Param(n)))
        }
        _ => None,
    }
}

/// The ORDER BY keys, each an output column: by position (among the `visible` ones), by
/// name (an output column's name or alias), or by an expression that is one of the output
/// columns (hidden ones too).
fn sort_keys(
    order_by: &OrderBy,
    projection: &[SelectItem],
    visible: usize,
) -> Result<Vec<SortKey>, &'static str> {
    let OrderByKind::Expressions(exprs) = &order_by.kind else {
        return Err("ORDER BY ALL");
    };
    let wildcard = projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    exprs
        .iter()
        .map(|e| {
            let descending = match &e.options.sort {
                None | Some(OrderBySort::Asc) => false,
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => return Err("ORDER BY … USING"),
            };
            let column = sort_column(&e.expr, projection, wildcard)?;
            if number(&e.expr).is_some_and(|n| n as usize > visible) {
                return Err("ORDER BY a position that is not in the select list");
            }
            Ok(SortKey {
                column,
                descending,
                nulls_first: e.options.nulls_first.unwrap_or(descending),
            })
        })
        .collect()
}

/// The output column an ORDER BY (or DISTINCT ON) expression names: by position, by the
/// same expression, or by an output column's name or alias.
fn sort_column(
    expr: &Expr,
    projection: &[SelectItem],
    wildcard: bool,
) -> Result<SortColumn, &'static str> {
    Ok(if let Some(n) = number(expr) {
        SortColumn::Position((n as usize).checked_sub(1).ok_or("ORDER BY 0")?)
    } else if let Some(i) = projection.iter().position(|item| match item {
        SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => x == expr,
        _ => false,
    }) {
        SortColumn::Position(i)
    } else {
        match expr {
            Expr::Identifier(ident) => SortColumn::Name(name_of(ident)),
            Expr::CompoundIdentifier(parts) if wildcard => {
                SortColumn::Name(name_of(parts.last().ok_or("ORDER BY")?))
            }
            _ => return Err("ORDER BY an expression that is not an output column"),
        }
    })
}

/// Functions whose value differs from shard to shard (volatile ones, and those of the
/// server or the moment): ordering or grouping by them cannot give one database's answer.
const PER_SHARD: [&str; 19] = [
    "random",
    "nextval",
    "setval",
    "currval",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "now",
    "current_timestamp",
    "current_time",
    "localtimestamp",
    "localtime",
    "pg_backend_pid",
    "gen_random_uuid",
    "uuid_generate_v4",
    "txid_current",
    "pg_current_xact_id",
    "inet_server_addr",
];

/// Whether `expr` calls a function whose value differs from shard to shard.
pub(super) fn per_shard(expr: &Expr) -> bool {
    let mut seen = Seen::default();
    let _ = expr.visit(&mut seen);
    seen.functions
        .iter()
        .any(|f| PER_SHARD.contains(&f.as_str()))
}

/// Whether the output column an ORDER BY key names is computed with such a function.
fn per_shard_column(column: &SortColumn, projection: &[SelectItem]) -> bool {
    projection.iter().enumerate().any(|(i, item)| {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(name_of(alias))),
            _ => return false,
        };
        let named = match column {
            SortColumn::Position(at) => *at == i,
            SortColumn::Name(name) => alias.as_ref() == Some(name),
        };
        named && per_shard(expr)
    })
}

/// `DISTINCT ON (…)`: how many leading ORDER BY keys are its expressions (which
/// PostgreSQL requires), so the merged rows keep the first of each run of equal ones.
fn distinct_on(exprs: &[Expr], order: &[SortKey], projection: &[SelectItem]) -> Option<usize> {
    let wildcard = projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let columns: Vec<SortColumn> = exprs
        .iter()
        .map(|e| sort_column(e, projection, wildcard).ok())
        .collect::<Option<_>>()?;
    let leading = order.get(..columns.len())?;
    let same = columns
        .iter()
        .all(|c| leading.iter().any(|k| k.column == *c))
        && leading.iter().all(|k| columns.contains(&k.column));
    same.then_some(columns.len())
}

/// The aggregate an output column is (one plain aggregate call: no DISTINCT, FILTER,
/// ORDER BY within or OVER, maybe with an alias), and the column it reads if it names one.
pub(super) fn aggregate_item(
    item: &SelectItem,
) -> Option<(Aggregate, Option<&sqlparser::ast::Ident>)> {
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
    let column = match &list.args[0] {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(column))) => Some(column),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::CompoundIdentifier(parts))) => {
            parts.last()
        }
        _ => None,
    };
    let function = match name.as_str() {
        "count" => Aggregate::Count,
        _ if star => return None,
        "sum" => Aggregate::Sum,
        "min" => Aggregate::Min,
        "max" => Aggregate::Max,
        "bool_and" | "every" => Aggregate::BoolAnd,
        "bool_or" => Aggregate::BoolOr,
        "avg" => Aggregate::Avg,
        _ => return None,
    };
    Some((function, column))
}
