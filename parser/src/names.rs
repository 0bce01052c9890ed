//! Statements that name a session object the pooler keeps for a client in transaction
//! mode: `LISTEN`/`UNLISTEN` a channel, `PREPARE`/`EXECUTE`/`DEALLOCATE` a statement. Read
//! as PostgreSQL reads them (an unquoted name folded to lower case, a quoted one as
//! written), and only when the text is that one statement: anything else is the server's.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// One statement naming a session object.
#[derive(Debug, PartialEq, Eq)]
pub enum NamedStatement<'a> {
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`; `None`: `UNLISTEN *`.
    Unlisten(Option<String>),
    /// `PREPARE name rest`: `rest` is the text after the name, as written (parameter
    /// types, `AS`, the statement).
    Prepare { name: String, rest: &'a str },
    /// `EXECUTE name rest`: `rest` is the text after the name (the parameters, if any).
    Execute { name: String, rest: &'a str },
    /// `DEALLOCATE [PREPARE] name`; `None`: `DEALLOCATE [PREPARE] ALL`.
    Deallocate(Option<String>),
}

/// Cheap pre-check on a query's raw bytes: false means it cannot be one of
/// [`NamedStatement`] (it does not start with L, U, P, E or D).
pub fn may_name(sql: &[u8]) -> bool {
    matches!(
        sql.trim_ascii_start().first().map(u8::to_ascii_lowercase),
        Some(b'l' | b'u' | b'p' | b'e' | b'd')
    )
}

/// The statement `sql` is, if it is one of [`NamedStatement`] and nothing else.
pub fn named_statement(sql: &str) -> Option<NamedStatement<'_>> {
    if !may_name(sql.as_bytes()) {
        return None;
    }
    let (verb, rest) = word(sql.trim_start())?;
    let is = |w: &str| verb.eq_ignore_ascii_case(w);
    let verb = ["listen", "unlisten", "prepare", "execute", "deallocate"]
        .into_iter()
        .find(|w| is(w))?;
    match verb {
        "listen" => {
            let (name, tail) = identifier(rest.trim_start())?;
            blank(tail).then_some(NamedStatement::Listen(name))
        }
        "unlisten" => {
            let rest = rest.trim_start();
            if let Some(tail) = rest.strip_prefix('*') {
                return blank(tail).then_some(NamedStatement::Unlisten(None));
            }
            let (name, tail) = identifier(rest)?;
            blank(tail).then_some(NamedStatement::Unlisten(Some(name)))
        }
        "prepare" | "execute" => {
            let quoted = rest.trim_start().starts_with('"');
            let (name, rest) = identifier(rest.trim_start())?;
            if !one_statement(rest) {
                return None;
            }
            // `PREPARE TRANSACTION 'gid'` is two-phase commit, not a statement named
            // "transaction" (`PREPARE transaction AS …`, `PREPARE transaction (int) AS …`).
            let after = rest.trim_start();
            let statement_follows = after.starts_with('(')
                || word(after).is_some_and(|(w, _)| w.eq_ignore_ascii_case("as"));
            if verb == "prepare" && name == "transaction" && !quoted && !statement_follows {
                return None;
            }
            Some(if verb == "prepare" {
                NamedStatement::Prepare { name, rest }
            } else {
                NamedStatement::Execute { name, rest }
            })
        }
        "deallocate" => {
            let mut rest = rest.trim_start();
            let (mut name, mut tail) = identifier(rest)?;
            if name == "prepare" && !blank(tail) {
                rest = tail.trim_start();
                (name, tail) = identifier(rest)?;
            }
            if !blank(tail) {
                return None;
            }
            let all = name == "all" && !rest.starts_with('"');
            Some(NamedStatement::Deallocate((!all).then_some(name)))
        }
        _ => None,
    }
}

/// A keyword at the start of `s`, and what follows it.
fn word(s: &str) -> Option<(&str, &str)> {
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

/// An identifier at the start of `s` (folded as PostgreSQL folds it), and what follows.
fn identifier(s: &str) -> Option<(String, &str)> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut rest = quoted;
        loop {
            let end = rest.find('"')?;
            name.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            match rest.strip_prefix('"') {
                Some(after) => {
                    name.push('"');
                    rest = after;
                }
                None => break,
            }
        }
        return (!name.is_empty()).then_some((name, rest));
    }
    let first = s.chars().next()?;
    if !(first.is_alphabetic() || first == '_') {
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    Some((s[..end].to_ascii_lowercase(), &s[end..]))
}

/// Nothing but whitespace, comments and semicolons.
fn blank(s: &str) -> bool {
    tokens(s).is_some_and(|t| {
        t.iter()
            .all(|t| matches!(t, Token::Whitespace(_) | Token::SemiColon))
    })
}

/// `s` holds no statement after the first (a semicolon is followed only by blanks).
fn one_statement(s: &str) -> bool {
    let Some(tokens) = tokens(s) else {
        return false;
    };
    match tokens.iter().position(|t| *t == Token::SemiColon) {
        Some(at) => tokens[at..]
            .iter()
            .all(|t| matches!(t, Token::Whitespace(_) | Token::SemiColon)),
        None => true,
    }
}

fn tokens(s: &str) -> Option<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, s).tokenize().ok()
}

#[cfg(test)]
mod tests {
    use super::NamedStatement::*;
    use super::*;

    #[test]
    fn names_are_read_as_postgresql_reads_them() {
        let n = named_statement;
        assert_eq!(n("LISTEN Foo"), Some(Listen("foo".into())));
        assert_eq!(n(" listen \"Foo\" ;"), Some(Listen("Foo".into())));
        assert_eq!(n("UNLISTEN *"), Some(Unlisten(None)));
        assert_eq!(n("unlisten a_b$1;"), Some(Unlisten(Some("a_b$1".into()))));
        assert_eq!(n("LISTEN a; SELECT 1"), None);
        assert_eq!(n("LISTEN 1a"), None);
        assert_eq!(n("LISTEN \"\""), None);
        assert_eq!(
            n("DEALLOCATE _pg3_0"),
            Some(Deallocate(Some("_pg3_0".into())))
        );
        assert_eq!(
            n(" deallocate prepare S1 ;"),
            Some(Deallocate(Some("s1".into())))
        );
        assert_eq!(
            n("DEALLOCATE \"S 1\""),
            Some(Deallocate(Some("S 1".into())))
        );
        assert_eq!(
            n("DEALLOCATE \"a\"\"b\""),
            Some(Deallocate(Some("a\"b".into())))
        );
        assert_eq!(
            n("DEALLOCATE prepare"),
            Some(Deallocate(Some("prepare".into())))
        );
        assert_eq!(n("DEALLOCATE ALL"), Some(Deallocate(None)));
        assert_eq!(n("DEALLOCATE PREPARE all;"), Some(Deallocate(None)));
        assert_eq!(
            n("DEALLOCATE \"all\""),
            Some(Deallocate(Some("all".into())))
        );
        assert_eq!(n("DEALLOCATE a; SELECT 1"), None);
        assert_eq!(n("DEALLOCATE \"a\" \"b\""), None);
        assert_eq!(n("SELECT 1"), None);
        assert!(!may_name(b"  SELECT 1") && may_name(b" listen x") && may_name(b"Deallocate"));
    }

    #[test]
    fn prepare_and_execute_keep_the_rest_as_written() {
        assert_eq!(
            named_statement("PREPARE Q1 (int, text) AS SELECT $1, ';'::text;"),
            Some(Prepare {
                name: "q1".into(),
                rest: " (int, text) AS SELECT $1, ';'::text;"
            })
        );
        assert_eq!(
            named_statement("execute \"Q1\"(1, 'a;b')"),
            Some(Execute {
                name: "Q1".into(),
                rest: "(1, 'a;b')"
            })
        );
        assert_eq!(
            named_statement("EXECUTE q"),
            Some(Execute {
                name: "q".into(),
                rest: ""
            })
        );
        // $$-quoted bodies and comments are one statement; two statements are not.
        assert!(named_statement("PREPARE f AS SELECT $$a;b$$ -- ;\n").is_some());
        assert_eq!(named_statement("PREPARE p AS SELECT 1; EXECUTE p"), None);
        assert_eq!(named_statement("EXECUTE p; EXECUTE p"), None);
        assert_eq!(named_statement("PREPARE p AS SELECT 'unterminated"), None);
        // Two-phase commit is not a statement of that name.
        assert_eq!(named_statement("PREPARE TRANSACTION 'x'"), None);
        assert_eq!(named_statement("prepare transaction $$x$$;"), None);
        assert!(named_statement("PREPARE transaction AS SELECT 1").is_some());
        assert!(named_statement("PREPARE transaction(int) AS SELECT $1").is_some());
        assert!(named_statement("PREPARE \"transaction\" AS SELECT 1").is_some());
    }
}
