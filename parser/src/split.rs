//! A multi-row `INSERT … VALUES` whose rows belong to several shards, split: the same
//! statement with only one shard's rows, its `$n` parameters renumbered from `$1` in the
//! order they first appear, and which of the client's parameters each new one is.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, SetExpr, Statement, Value, VisitMut, VisitorMut};

use crate::parsed::Parsed;

/// The statement `sql` (one `INSERT … VALUES`) with only the rows `rows` (0-based, in
/// order), and for each parameter of the new text, the client's parameter it is (1-based);
/// `None` when `sql` is not such an INSERT or a row is out of range.
pub fn insert_rows(sql: &str, rows: &[usize]) -> Option<(String, Vec<usize>)> {
    let mut parsed = Parsed::parse(sql)?;
    if !parsed.printable() {
        return None;
    }
    let [Statement::Insert(insert)] = parsed.statements_mut() else {
        return None;
    };
    let SetExpr::Values(values) = insert.source.as_mut()?.body.as_mut() else {
        return None;
    };
    let mut kept = Vec::with_capacity(rows.len());
    for &row in rows {
        kept.push(values.rows.get(row)?.clone());
    }
    values.rows = kept;
    let mut renumber = Renumber::default();
    let statement = &mut parsed.statements_mut()[0];
    let _ = statement.visit(&mut renumber);
    if renumber.invalid {
        return None;
    }
    Some((statement.to_string(), renumber.old))
}

/// A statement the pooler wrote for the shards in place of the client's (parts of it
/// removed, rows split off): its text and, for each of its `$n`, the client's parameter it
/// takes (1-based), so the client's Bind can be cut to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSql {
    pub text: String,
    pub params: Vec<usize>,
}

impl ShardSql {
    /// `sql` (written by the pooler from the client's statement) with its parameters
    /// renumbered from `$1` in order of first appearance; `None` when it does not parse
    /// or nests too deeply to print.
    pub fn renumbered(sql: &str) -> Option<ShardSql> {
        let mut parsed = Parsed::parse(sql)?;
        if !parsed.printable() {
            return None;
        }
        let mut renumber = Renumber::default();
        for statement in parsed.statements_mut() {
            let _ = statement.visit(&mut renumber);
        }
        if renumber.invalid {
            return None;
        }
        let text = parsed
            .statements()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Some(ShardSql {
            text,
            params: renumber.old,
        })
    }
}

/// Renumbers `$n` placeholders in order of first appearance.
#[derive(Default)]
struct Renumber {
    /// The old number of each new parameter (new `$k` is `old[k - 1]`).
    old: Vec<usize>,
    invalid: bool,
}

impl VisitorMut for Renumber {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = expr {
            if let Value::Placeholder(p) = &mut v.value {
                let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                    self.invalid = true;
                    return ControlFlow::Break(());
                };
                let new = match self.old.iter().position(|o| *o == n) {
                    Some(at) => at + 1,
                    None => {
                        self.old.push(n);
                        self.old.len()
                    }
                };
                *p = format!("${new}");
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_rows_asked_for_and_renumbers_their_parameters() {
        let sql = "INSERT INTO items (id, value) VALUES ($1, $2), ($3, $4), ($5, $2) RETURNING id";
        let (text, old) = insert_rows(sql, &[1, 2]).expect("split");
        assert_eq!(
            text,
            "INSERT INTO items (id, value) VALUES ($1, $2), ($3, $4) RETURNING id"
        );
        assert_eq!(old, [3, 4, 5, 2]);
        let (text, old) =
            insert_rows("INSERT INTO t (id) VALUES (1), (2), (3)", &[0, 2]).expect("split");
        assert_eq!(text, "INSERT INTO t (id) VALUES (1), (3)");
        assert!(old.is_empty());
    }

    #[test]
    fn a_shard_statement_takes_only_the_parameters_it_still_has() {
        let shard = ShardSql::renumbered("SELECT grp, count(*) FROM t WHERE id > $3 GROUP BY grp")
            .expect("parses");
        assert_eq!(
            shard.text,
            "SELECT grp, count(*) FROM t WHERE id > $1 GROUP BY grp"
        );
        assert_eq!(shard.params, [3]);
    }

    #[test]
    fn a_statement_too_deep_to_print_is_not_split() {
        let deep = format!("INSERT INTO t (id) VALUES (1), ({}1)", "1+".repeat(5000));
        assert_eq!(insert_rows(&deep, &[0]), None);
    }

    #[test]
    fn anything_else_is_not_split() {
        assert_eq!(insert_rows("INSERT INTO t (id) VALUES (1)", &[1]), None);
        assert_eq!(insert_rows("INSERT INTO t SELECT 1", &[0]), None);
        assert_eq!(insert_rows("SELECT 1", &[0]), None);
        assert_eq!(
            insert_rows("INSERT INTO t (id) VALUES (1); SELECT 1", &[0]),
            None
        );
    }
}
