//! The text of each statement of a query string, cut where PostgreSQL cuts it: at the
//! semicolons outside quotes, dollar quotes, identifiers and comments (sqlparser's
//! tokenizer finds them). A string of several statements that must run on different
//! shards runs statement by statement, each as the client wrote it.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// Each statement's text, trimmed, without its semicolon; empty statements (`;;`)
/// left out. `None` when the text does not tokenize.
pub fn texts(sql: &str) -> Option<Vec<&str>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let lines = line_starts(sql);
    let mut texts = Vec::new();
    let mut start = 0;
    for token in tokens.iter().filter(|t| t.token == Token::SemiColon) {
        let at = offset(sql, &lines, token.span.start)?;
        texts.push(sql.get(start..at)?);
        start = at + 1;
    }
    texts.push(sql.get(start..)?);
    Some(
        texts
            .into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// The byte offset of each line's start.
fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(at, _)| at + 1))
        .collect()
}

/// The byte offset of a tokenizer location (1-based line, 1-based column in characters).
fn offset(sql: &str, lines: &[usize], at: Location) -> Option<usize> {
    let line_start = *lines.get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let rest = sql.get(line_start..)?;
    match rest.char_indices().nth(column) {
        Some((within, _)) => Some(line_start + within),
        None => Some(sql.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::texts;

    #[test]
    fn cuts_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            texts("SELECT 1; SELECT 'a;b' AS \"x;y\";\n-- c;d\nSELECT $$e;f$$ /* g; */ ;;")
                .unwrap(),
            [
                "SELECT 1",
                "SELECT 'a;b' AS \"x;y\"",
                "-- c;d\nSELECT $$e;f$$ /* g; */"
            ]
        );
        assert_eq!(
            texts("SELECT 'é;è';\nSELECT 'ü' ; SELECT 3").unwrap(),
            ["SELECT 'é;è'", "SELECT 'ü'", "SELECT 3"]
        );
        assert_eq!(texts("SELECT 1").unwrap(), ["SELECT 1"]);
        assert!(texts("SELECT 'unterminated").is_none());
    }
}
