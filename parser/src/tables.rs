//! The tables a query text reads or writes, anywhere in it (joins, subqueries, CTEs, every
//! statement), named as PostgreSQL resolves names: an unquoted part folded to lower case, a
//! quoted one as written. The `table_access` plugin refuses queries touching listed tables.

use std::ops::ControlFlow;

use sqlparser::ast::{visit_relations, ObjectName};

use crate::parsed::Parsed;

/// Every relation name in a parsed text (`schema.table` or `table`), in order, repeats
/// included.
pub(crate) fn relations(parsed: &Parsed) -> Vec<String> {
    let mut found = Vec::new();
    for statement in parsed.statements() {
        let _ = visit_relations(statement, |name: &ObjectName| {
            let parts: Vec<String> = name
                .0
                .iter()
                .filter_map(|p| p.as_ident())
                .map(|i| match i.quote_style {
                    Some(_) => i.value.clone(),
                    None => i.value.to_lowercase(),
                })
                .collect();
            found.push(parts.join("."));
            ControlFlow::<()>::Continue(())
        });
    }
    found
}

/// The first of `listed` (names as `table` or `schema.table`, matched as PostgreSQL would
/// resolve an unqualified name to any schema) among `tables` (as [`relations`] names
/// them).
pub fn touched<'a>(tables: &[String], listed: &'a [String]) -> Option<&'a str> {
    listed.iter().map(String::as_str).find(|wanted| {
        tables.iter().any(|t| {
            t == wanted
                || t.rsplit_once('.').is_some_and(|(_, name)| name == *wanted)
                || wanted.rsplit_once('.').is_some_and(|(_, name)| name == t)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touches<'a>(sql: &str, listed: &'a [String]) -> Option<&'a str> {
        touched(&relations(&Parsed::parse(sql)?), listed)
    }

    #[test]
    fn finds_tables_in_joins_subqueries_ctes_with_schemas_and_quotes() {
        let listed = vec!["pg_user".to_string(), "secret".to_string()];
        for sql in [
            "SELECT * FROM pg_user",
            "SELECT * FROM PG_CATALOG.PG_USER",
            "SELECT a.x FROM t a JOIN pg_catalog.\"pg_user\" u ON true",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_user)",
            "WITH x AS (SELECT * FROM pg_user) SELECT * FROM x",
            "SELECT 1; DELETE FROM public.Secret",
        ] {
            assert!(touches(sql, &listed).is_some(), "{sql}");
        }
        for sql in [
            "SELECT * FROM pg_users",
            "SELECT * FROM \"PG_USER\"",
            "SELECT 'pg_user'",
        ] {
            assert_eq!(touches(sql, &listed), None, "{sql}");
        }
    }
}
