//! GROUP BY and DISTINCT across shards: each shard groups its rows (without HAVING,
//! ORDER BY's LIMIT or OFFSET, which only the whole can decide), and the merge groups the
//! shards' groups again, combining their aggregates, then applies HAVING, ORDER BY, OFFSET
//! and LIMIT. Grouping and ordering are by output columns; HAVING compares output
//! columns (grouping columns or aggregates in the select list) with constants.

use sqlparser::ast::{
    BinaryOperator, Expr, Ident, ObjectName, Query, Select, SelectItem, UnaryOperator, Value,
};

use super::select::{aggregate_item, Count};
use super::{name_of, Aggregate, CrossShard, ShardSql, SortKey};

/// A HAVING condition over output columns, evaluated after the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Having {
    And(Box<Having>, Box<Having>),
    Or(Box<Having>, Box<Having>),
    Not(Box<Having>),
    /// Output column `column` against a constant.
    Compare {
        column: usize,
        op: Comparison,
        constant: Constant,
    },
    /// `column IS [NOT] NULL`.
    IsNull {
        column: usize,
        negated: bool,
    },
}

/// A constant of HAVING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constant {
    /// Its text (`None`: NULL).
    Value(Option<String>),
    /// `$n` (1-based), given by the Bind.
    Param(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// The grouped statement's plan, or the construct refused. `items`: its output items,
/// then the aggregates ORDER BY needs that it does not output (hidden columns).
pub(super) fn plan_grouped(
    query: &Query,
    (select, mut items): (&Select, Vec<SelectItem>),
    (order, limit, offset): (Vec<SortKey>, Option<Count>, Option<Count>),
    printable: bool,
    table: Option<String>,
) -> CrossShard {
    let refused = CrossShard::Refused;
    let distinct = match &select.distinct {
        None | Some(sqlparser::ast::Distinct::All) => false,
        Some(sqlparser::ast::Distinct::Distinct) => true,
        Some(sqlparser::ast::Distinct::On(_)) => return refused("DISTINCT ON"),
    };
    let group_exprs: Vec<&Expr> = match &select.group_by {
        sqlparser::ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
            exprs.iter().collect()
        }
        _ => return refused("GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS"),
    };
    let sets = |g: &&Expr| matches!(g, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_));
    if group_exprs.iter().any(sets) {
        return refused("GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS");
    }
    let grouped_by = |g: &&Expr| {
        // A grouping column named by position or alias: its output expression.
        let visible = &select.projection;
        let item = match g {
            Expr::Value(_) | Expr::Identifier(_) => visible
                .iter()
                .find(|item| item_expr(item).is_some_and(|e| same_column(g, e, item, visible))),
            _ => None,
        };
        super::select::per_shard(item.and_then(item_expr).unwrap_or(g))
    };
    if group_exprs.iter().any(grouped_by) {
        return refused(
            "GROUP BY a volatile function (random(), now(), nextval() …: each shard's value differs)",
        );
    }
    // HAVING's aggregates that are not output columns are hidden ones too.
    if let Some(h) = &select.having {
        super::select::hide_aggregates(h, &mut items);
    }
    let visible = select.projection.len();
    let items = &items;
    // Each output column: an aggregate, or a grouping column.
    let mut functions = Vec::with_capacity(items.len());
    let mut columns = Vec::with_capacity(items.len());
    for item in items {
        match aggregate_item(item) {
            Some((function, column)) if !distinct => {
                functions.push(Some(function));
                columns.push(table.clone().zip(column.map(name_of)));
            }
            Some(_) => return refused("DISTINCT with aggregates"),
            None => {
                let Some(expr) = item_expr(item) else {
                    return refused("* in a grouped statement (name the columns)");
                };
                let grouped = distinct
                    || group_exprs
                        .iter()
                        .any(|g| same_column(g, expr, item, items));
                if !grouped {
                    return refused("an output column that is neither grouped nor an aggregate");
                }
                functions.push(None);
                columns.push(None);
            }
        }
    }
    for g in &group_exprs {
        let named = items.iter().enumerate().any(|(i, item)| {
            functions[i].is_none()
                && item_expr(item).is_some_and(|e| same_column(g, e, item, items))
        });
        if !named {
            return refused("GROUP BY an expression that is not an output column");
        }
    }
    let having = match &select.having {
        None => None,
        Some(h) => match having(h, items, &functions) {
            Some(h) => Some(h),
            None => {
                return refused(
                    "HAVING other than comparisons of output columns with constants \
                     (AND, OR, NOT, IS NULL)",
                )
            }
        },
    };
    if !printable {
        return refused("GROUP BY in a statement nested too deeply to rewrite");
    }
    // Each shard groups its rows; HAVING, LIMIT and OFFSET wait for the whole.
    let mut shard_query = query.clone();
    shard_query.limit_clause = None;
    shard_query.order_by = None;
    if let sqlparser::ast::SetExpr::Select(s) = shard_query.body.as_mut() {
        s.having = None;
        s.projection = shard_projection(items.clone(), &functions);
    }
    let Some(shard_sql) = ShardSql::renumbered(&shard_query.to_string()) else {
        return refused("GROUP BY in a statement the pooler cannot rewrite for the shards");
    };
    CrossShard::Grouped {
        functions,
        columns,
        visible,
        order,
        limit,
        offset,
        having,
        shard_sql,
    }
}

/// The output items as each shard computes them: `avg(x) [AS a]` as `sum(x) AS a` (named
/// `avg` without an alias) and `count(x)`, which the merge divides.
fn shard_projection(items: Vec<SelectItem>, functions: &[Option<Aggregate>]) -> Vec<SelectItem> {
    let mut out = Vec::with_capacity(items.len() + 1);
    for (item, function) in items.into_iter().zip(functions) {
        let (Some(Aggregate::Avg), Some(Expr::Function(f))) = (function, item_expr(&item)) else {
            out.push(item);
            continue;
        };
        let alias = match &item {
            SelectItem::ExprWithAlias { alias, .. } => alias.clone(),
            _ => Ident::new("avg"),
        };
        let (mut sum, mut count) = (f.clone(), f.clone());
        sum.name = ObjectName::from(vec![Ident::new("sum")]);
        count.name = ObjectName::from(vec![Ident::new("count")]);
        out.push(SelectItem::ExprWithAlias {
            expr: Expr::Function(sum),
            alias,
        });
        out.push(SelectItem::UnnamedExpr(Expr::Function(count)));
    }
    out
}

/// An output item's expression.
fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// Whether GROUP BY expression `g` names output item `item` (whose expression is `expr`):
/// by position, by its alias, or by the same expression.
fn same_column(g: &Expr, expr: &Expr, item: &SelectItem, items: &[SelectItem]) -> bool {
    if let Expr::Value(v) = g {
        if let Value::Number(n, _) = &v.value {
            let at: Option<usize> = n.parse().ok();
            return at.is_some_and(|at| at >= 1 && items.get(at - 1) == Some(item));
        }
    }
    if let (Expr::Identifier(name), SelectItem::ExprWithAlias { alias, .. }) = (g, item) {
        if name_of(name) == name_of(alias) {
            return true;
        }
    }
    g.to_string().eq_ignore_ascii_case(&expr.to_string())
}

/// The output column an expression of HAVING names: an aggregate of the select list, or a
/// grouping column by name, alias or expression.
fn column_of(e: &Expr, items: &[SelectItem], functions: &[Option<Aggregate>]) -> Option<usize> {
    items.iter().enumerate().position(|(i, item)| {
        let Some(expr) = item_expr(item) else {
            return false;
        };
        match functions[i] {
            Some(_) => e.to_string().eq_ignore_ascii_case(&expr.to_string()),
            None => same_column(e, expr, item, items),
        }
    })
}

/// A constant (`Value(None)`: NULL, or a parameter); `None` for what is not one.
fn constant(e: &Expr) -> Option<Constant> {
    Some(match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Constant::Value(Some(n.clone())),
            Value::SingleQuotedString(s) => Constant::Value(Some(s.clone())),
            Value::Boolean(b) => Constant::Value(Some(if *b { "t" } else { "f" }.into())),
            Value::Null => Constant::Value(None),
            Value::Placeholder(p) => {
                Constant::Param(p.strip_prefix('$')?.parse().ok().filter(|n| *n >= 1)?)
            }
            _ => return None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match constant(expr)? {
            Constant::Value(Some(n)) if n.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                Constant::Value(Some(format!("-{n}")))
            }
            _ => return None,
        },
        Expr::Nested(inner) => return constant(inner),
        _ => return None,
    })
}

fn having(e: &Expr, items: &[SelectItem], functions: &[Option<Aggregate>]) -> Option<Having> {
    let sub = |e: &Expr| having(e, items, functions).map(Box::new);
    Some(match e {
        Expr::Nested(inner) => return having(inner, items, functions),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Having::Not(sub(expr)?),
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => Having::IsNull {
            column: column_of(inner, items, functions)?,
            negated: matches!(e, Expr::IsNotNull(_)),
        },
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And => Having::And(sub(left)?, sub(right)?),
            BinaryOperator::Or => Having::Or(sub(left)?, sub(right)?),
            _ => {
                let op = match op {
                    BinaryOperator::Eq => Comparison::Eq,
                    BinaryOperator::NotEq => Comparison::NotEq,
                    BinaryOperator::Lt => Comparison::Lt,
                    BinaryOperator::LtEq => Comparison::LtEq,
                    BinaryOperator::Gt => Comparison::Gt,
                    BinaryOperator::GtEq => Comparison::GtEq,
                    _ => return None,
                };
                if let (Some(column), Some(constant)) =
                    (column_of(left, items, functions), constant(right))
                {
                    return Some(Having::Compare {
                        column,
                        op,
                        constant,
                    });
                }
                // `5 < count(*)`: the same comparison turned around.
                let column = column_of(right, items, functions)?;
                let flipped = match op {
                    Comparison::Lt => Comparison::Gt,
                    Comparison::LtEq => Comparison::GtEq,
                    Comparison::Gt => Comparison::Lt,
                    Comparison::GtEq => Comparison::LtEq,
                    same => same,
                };
                Having::Compare {
                    column,
                    op: flipped,
                    constant: constant(left)?,
                }
            }
        },
        _ => return None,
    })
}
