//! SQL-level prepared statements of a transaction-mode client (`Rewrite` mode).
//!
//! `PREPARE name … AS …` (a statement of its own, simple or extended protocol) is sent to
//! the server as `PREPARE pgcat_sql_<hash of the text after the name> …`: one statement per
//! distinct text per server, shared by the pool's clients like a protocol Parse. The
//! client's `EXECUTE name …` becomes `EXECUTE pgcat_sql_<hash> …`, after the statement is
//! prepared on that server (a Query of the pooler's whose replies are swallowed) if the
//! server lacks it or has an older copy. `DEALLOCATE name` and a `PREPARE` of a name in use
//! are answered by the pooler, as PostgreSQL answers them. A text naming statements any
//! other way (several statements in one query string, `EXPLAIN EXECUTE`) goes to the server
//! as written, where the client's names do not exist.

use std::sync::Arc;

use bytes::BytesMut;
use pgcat_parser::{named_statement, NamedStatement};

use super::{ClientStatements, Named};
use crate::backend::statements::{ServerStatements, Statement};
use crate::frontend::replies::Replies;
use crate::wire::messages::{self, PgError};

/// A client's SQL text as the server gets it.
pub struct Rewritten {
    pub text: String,
    /// `PREPARE`: the statement it makes (server name, client name), which exists once
    /// the text has run without error.
    pub defines: Option<(Arc<str>, Arc<str>)>,
    /// `EXECUTE` of a statement whose text may change session state.
    pub runs: Option<Arc<Statement>>,
}

/// Cheap pre-check on a query text: only `PREPARE` and `EXECUTE` are rewritten.
fn may_rewrite(sql: &[u8]) -> bool {
    matches!(
        sql.trim_ascii_start().first(),
        Some(b'p' | b'P' | b'e' | b'E')
    )
}

impl ClientStatements {
    /// `sql` (a query text, without its NUL) as a statement this client's SQL names are
    /// renamed in: `PREPARE` of a name not in use, or `EXECUTE` of one of its SQL statements.
    fn renamed<'a>(&self, sql: &'a [u8]) -> Option<NamedStatement<'a>> {
        if !may_rewrite(sql) {
            return None;
        }
        let statement = named_statement(std::str::from_utf8(sql).ok()?)?;
        let renamed = match &statement {
            NamedStatement::Prepare { name, .. } => !self.map.contains_key(name),
            NamedStatement::Execute { name, .. } => self.map.get(name).is_some_and(|n| n.stmt.sql),
            _ => false,
        };
        renamed.then_some(statement)
    }

    /// Whether [`ClientStatements::rewrite_sql`] rewrites `sql`: then its `PREPARE` makes
    /// only the pooler's shared statement, no state of the client's on the server.
    pub fn renames(&self, sql: &[u8]) -> bool {
        self.renamed(sql).is_some()
    }

    /// Rewrites `sql` (a query text, without its NUL) if it is `PREPARE` of a new name or
    /// `EXECUTE` of one of the client's SQL statements, writing to `out` (with their
    /// replies) what the server needs first.
    pub fn rewrite_sql(
        &mut self,
        sql: &[u8],
        server: &mut ServerStatements,
        epoch: u64,
        replies: &mut Replies,
        out: &mut BytesMut,
    ) -> Option<Rewritten> {
        match self.renamed(sql)? {
            NamedStatement::Prepare { name, rest } => {
                let stmt = Arc::new(Statement::sql(rest));
                Self::make_room(&stmt, server, (epoch, epoch), replies, out, true);
                let client: Arc<str> = name.as_str().into();
                self.map.insert(name, Named::new(stmt.clone(), epoch));
                Some(Rewritten {
                    text: format!("PREPARE {}{rest}", stmt.server_name),
                    defines: Some((stmt.server_name.clone(), client)),
                    runs: None,
                })
            }
            NamedStatement::Execute { name, rest } => {
                let named = self.map.get(&name)?;
                let stmt = named.stmt.clone();
                Self::ensure(&stmt, server, (epoch, named.epoch), replies, out);
                Some(Rewritten {
                    text: format!("EXECUTE {}{rest}", stmt.server_name),
                    defines: None,
                    runs: named.may_change_session.then_some(stmt),
                })
            }
            _ => None,
        }
    }

    /// What the pooler answers `sql` with itself, if it does: `DEALLOCATE name` of a
    /// statement it manages for the client (Ok: the name to forget) or `PREPARE` of a name
    /// in use (the error PostgreSQL gives).
    fn own_answer(&self, sql: &str) -> Option<Result<String, PgError>> {
        match named_statement(sql)? {
            NamedStatement::Deallocate(Some(name)) if self.map.contains_key(&name) => {
                Some(Ok(name))
            }
            NamedStatement::Prepare { name, .. } if self.map.contains_key(&name) => {
                Some(Err(PgError::error(
                    "42P05",
                    format!("prepared statement \"{name}\" already exists"),
                )))
            }
            _ => None,
        }
    }

    /// Whether `sql` is one the pooler answers itself (see [`ClientStatements::answer_sql`]).
    pub fn answers_sql(&self, sql: &str) -> bool {
        self.own_answer(sql).is_some()
    }

    /// Answers `DEALLOCATE name` of a statement the pooler manages for the client (the
    /// server knows it under the pooler's name; it keeps it for other clients) and
    /// `PREPARE` of a name in use, as PostgreSQL would: the command tag, or the error.
    pub fn answer_sql(&mut self, sql: &str) -> Option<Result<&'static str, PgError>> {
        let answer = self.own_answer(sql)?;
        Some(answer.map(|name| {
            self.map.remove(&name);
            "DEALLOCATE"
        }))
    }
}

/// A Query preparing `stmt` (an SQL `PREPARE`) on a server under its server name.
pub(super) fn prepare_message(out: &mut BytesMut, stmt: &Statement) {
    messages::query(out, &[b"PREPARE ", stmt.server_name.as_bytes(), &stmt.body]);
}
