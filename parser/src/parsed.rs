//! One sqlparser run per query text, shared by classification (`classify.rs`) and sharding
//! key extraction (`shard_key.rs`).
//!
//! Parsing costs ~7–10 µs for a pgbench statement and far more for big joins, so the pooler
//! parses once and hands the same `Parsed` to both consumers (and caches their results).

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The statements of one query string, as parsed by sqlparser's PostgreSQL dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    statements: Vec<Statement>,
}

impl Parsed {
    /// Parses `sql`; `None` when sqlparser rejects it. sqlparser bounds its own recursion
    /// depth, so hostile nesting is an error here, not a stack overflow.
    pub fn parse(sql: &str) -> Option<Parsed> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .ok()
            .map(|statements| Parsed { statements })
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

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(Parsed::parse(&sql).is_none());
    }
}
