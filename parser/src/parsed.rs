//! One sqlparser run per query text, shared by classification (`classify.rs`) and sharding
//! key extraction (`shard_key.rs`).
//!
//! Parsing costs ~7–10 µs for a pgbench statement and far more for big joins, so the pooler
//! parses once and hands the same `Parsed` to both consumers (and caches their results).
//!
//! It also owns a safety detail: sqlparser protects its parser and visitors against deep
//! recursion, but not dropping the AST. `SELECT 1+1+…` with 40 000 terms builds a chain
//! 40 000 boxes deep whose recursive drop overflows a 2 MiB (tokio) thread stack, so a big
//! `Parsed` takes its expression chains apart iteratively before dropping them.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, SetExpr, Statement, Value, Values, VisitMut, VisitorMut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Texts at most this long cannot nest deeply enough to threaten the stack when dropped
/// (each level needs at least two characters, `+1`; a drop frame is ~50–100 bytes).
const DEEP_DROP_THRESHOLD: usize = 8 * 1024;

/// The statements of one query string, as parsed by sqlparser's PostgreSQL dialect.
///
/// Deliberately not `Clone`/`PartialEq`: those derive-generated walks recurse without
/// protection. Cache the classification and keys, not the tree.
#[derive(Debug)]
pub struct Parsed {
    statements: Vec<Statement>,
    source_len: usize,
}

impl Parsed {
    /// Parses `sql`; `None` when sqlparser rejects it. sqlparser bounds its own recursion
    /// depth, so hostile nesting is an error here, not a stack overflow.
    pub fn parse(sql: &str) -> Option<Parsed> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .ok()
            .map(|statements| Parsed {
                statements,
                source_len: sql.len(),
            })
    }

    /// Like [`Parsed::parse`], but gives up without parsing when `sql` is longer than
    /// `max_length` bytes (the pool's `query_parser_max_length`).
    pub fn parse_within(sql: &str, max_length: Option<usize>) -> Option<Parsed> {
        match max_length {
            Some(max) if sql.len() > max => None,
            _ => Self::parse(sql),
        }
    }

    /// The parsed statements, in order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The parsed statements, to rewrite.
    pub fn statements_mut(&mut self) -> &mut [Statement] {
        &mut self.statements
    }

    /// Whether the statements can be printed back to SQL (`Display`), which recurses once
    /// per level of nested expressions without the parser's stack protection: true when
    /// no expression nests deeper than [`MAX_PRINT_DEPTH`].
    pub fn printable(&self) -> bool {
        if self.source_len <= 2 * MAX_PRINT_DEPTH {
            return true;
        }
        let mut depth = Depth::default();
        let _ = sqlparser::ast::Visit::visit(&self.statements, &mut depth);
        depth.max <= MAX_PRINT_DEPTH
    }
}

/// The deepest nesting of expressions that is printed back to SQL (see
/// [`Parsed::printable`]).
pub const MAX_PRINT_DEPTH: usize = 256;

/// Measures how deep expressions nest (sqlparser's visitor is stack-protected).
#[derive(Default)]
struct Depth {
    now: usize,
    max: usize,
}

impl sqlparser::ast::Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now += 1;
        self.max = self.max.max(self.now);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

impl Drop for Parsed {
    fn drop(&mut self) {
        if self.source_len > DEEP_DROP_THRESHOLD {
            let _ = self.statements.visit(&mut Dismantler);
        }
    }
}

/// Replaces each outermost expression (and each UNION chain) with a placeholder and drops
/// the original with an explicit stack. sqlparser's visitor is itself stack-protected, and
/// never descends into the placeholder.
struct Dismantler;

impl VisitorMut for Dismantler {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if !matches!(*query.body, SetExpr::SetOperation { .. }) {
            return ControlFlow::Continue(());
        }
        let mut stack = vec![std::mem::replace(&mut *query.body, empty_set_expr())];
        while let Some(mut part) = stack.pop() {
            if let SetExpr::SetOperation { left, right, .. } = &mut part {
                stack.push(std::mem::replace(&mut **left, empty_set_expr()));
                stack.push(std::mem::replace(&mut **right, empty_set_expr()));
            } else {
                // A leaf (a SELECT …) may hold deep expressions of its own.
                let _ = part.visit(self);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let mut stack = vec![std::mem::replace(expr, placeholder())];
        while let Some(mut e) = stack.pop() {
            take_children(&mut e, &mut stack);
        }
        ControlFlow::Continue(())
    }
}

fn empty_set_expr() -> SetExpr {
    SetExpr::Values(Values {
        explicit_row: false,
        value_keyword: false,
        rows: Vec::new(),
    })
}

fn placeholder() -> Expr {
    Expr::Value(Value::Null.into())
}

/// Moves the boxed sub-expressions of the shapes the parser chains without recursion
/// (infix and postfix operators) into `out`, so dropping `e` is shallow.
fn take_children(e: &mut Expr, out: &mut Vec<Expr>) {
    let mut take = |b: &mut Box<Expr>| out.push(std::mem::replace(&mut **b, placeholder()));
    match e {
        Expr::BinaryOp { left, right, .. }
        | Expr::AnyOp { left, right, .. }
        | Expr::AllOp { left, right, .. }
        | Expr::IsDistinctFrom(left, right)
        | Expr::IsNotDistinctFrom(left, right)
        | Expr::AtTimeZone {
            timestamp: left,
            time_zone: right,
        }
        | Expr::Like {
            expr: left,
            pattern: right,
            ..
        }
        | Expr::ILike {
            expr: left,
            pattern: right,
            ..
        }
        | Expr::SimilarTo {
            expr: left,
            pattern: right,
            ..
        }
        | Expr::RLike {
            expr: left,
            pattern: right,
            ..
        } => {
            take(left);
            take(right);
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            take(expr);
            take(low);
            take(high);
        }
        Expr::Cast { expr, .. }
        | Expr::Nested(expr)
        | Expr::UnaryOp { expr, .. }
        | Expr::IsNull(expr)
        | Expr::IsNotNull(expr)
        | Expr::IsTrue(expr)
        | Expr::IsNotTrue(expr)
        | Expr::IsFalse(expr)
        | Expr::IsNotFalse(expr)
        | Expr::IsUnknown(expr)
        | Expr::IsNotUnknown(expr)
        | Expr::Collate { expr, .. }
        | Expr::InList { expr, .. }
        | Expr::InSubquery { expr, .. }
        | Expr::CompoundFieldAccess { root: expr, .. }
        | Expr::JsonAccess { value: expr, .. } => take(expr),
        _ => {}
    }
}

/// A query text in a form that ignores case, spacing and a final semicolon: its statements
/// as sqlparser prints them, lower-cased (the text itself, trimmed and lower-cased, when it
/// does not parse). Two texts that normalise the same ask the same thing (PgCat's intercept
/// plugin matches queries this way).
pub fn normalized(sql: &str) -> String {
    match Parsed::parse(sql) {
        Some(parsed) if parsed.printable() => parsed
            .statements()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
            .to_lowercase(),
        _ => sql.trim().trim_end_matches(';').trim().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_limits() {
        assert_eq!(
            Parsed::parse("SELECT 1; SELECT 2").map(|p| p.statements().len()),
            Some(2)
        );
        assert!(Parsed::parse("SELEC 1").is_none());
        assert!(Parsed::parse_within("SELECT 1", Some(8)).is_some());
        assert!(Parsed::parse_within("SELECT 1", Some(7)).is_none());
        assert!(Parsed::parse_within("SELECT 1", None).is_some());
        assert_eq!(Parsed::parse("").map(|p| p.statements().len()), Some(0));
    }

    /// On a tokio-sized stack: parsing, classifying, extracting keys and dropping chains
    /// tens of thousands of operators long all survive.
    #[test]
    fn long_operator_chains_do_not_overflow_the_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for sql in [
                    format!("SELECT 1{}", "+1".repeat(50_000)),
                    format!(
                        "SELECT * FROM data WHERE id = 0{}",
                        " AND a = 1".repeat(30_000)
                    ),
                    format!("SELECT x{}", "::int".repeat(30_000)),
                    format!(
                        "SELECT * FROM t WHERE a LIKE 'x'{}",
                        " OR b IS NULL".repeat(30_000)
                    ),
                    format!("SELECT * FROM data WHERE id = 1{}", "::int".repeat(30_000)),
                    format!("SELECT 1{}", " UNION SELECT 1 WHERE 1 = 1".repeat(30_000)),
                    format!(
                        "SELECT * FROM data WHERE id = 1{}",
                        " UNION SELECT * FROM data WHERE id = 1".repeat(30_000)
                    ),
                    format!("SELECT {}true", "NOT ".repeat(30_000)),
                ] {
                    let parsed = Parsed::parse(&sql);
                    let c = crate::classify::classify_parsed(&sql, parsed.as_ref());
                    if let (Some(p), Some(key)) =
                        (&parsed, crate::shard_key::KeyColumn::parse("data.id"))
                    {
                        let _ = crate::shard_key::find_keys_parsed(p, &key);
                    }
                    drop(parsed);
                    let _ = c;
                }
            })
            .expect("spawn");
        assert!(handle.join().is_ok());
    }

    /// sqlparser counts `EXPLAIN EXPLAIN …` against its recursion limit, but in a debug
    /// build its `parse_statement` frame is so large that ~30 levels overflow 2 MiB before
    /// the limit of 50 is reached. Release builds (what the pooler ships) are fine.
    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "sqlparser's debug-build frames are too large"
    )]
    fn nested_explain_does_not_overflow_in_release() {
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| Parsed::parse(&format!("{}SELECT 1", "EXPLAIN ".repeat(50_000))).is_none())
            .expect("spawn");
        assert!(handle.join().expect("no overflow"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(Parsed::parse(&sql).is_none());
    }
}
