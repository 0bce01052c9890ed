//! A client's named prepared statements in transaction mode.
//!
//! With the cache on, the pooler keeps each client's Parse, prepares it on whatever server
//! the client gets under the statement's server name (once per server), rewrites Bind,
//! Describe and Parse to that name, and answers Close itself; the client sees exactly
//! the replies PostgreSQL would send (see `replies`); SQL `PREPARE`/`EXECUTE` are renamed
//! the same way (see `sql`). With the cache off
//! (`prepared_statements_cache_size = 0`) nothing is rewritten and a client holding named
//! statements keeps its server until it closes them. Session mode passes everything through.

use std::sync::Arc;

use bytes::BytesMut;

use super::lazy_map::LazyMap;
use super::replies::{Expect, Replies};
use crate::backend::statements::{Have, ServerStatements, Statement};
use crate::pool::router::AnalysisMemo;
use crate::wire::messages::{self, PgError};
use crate::wire::startup::cstr;

mod sql;

/// How named statements are handled for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Transaction mode with the cache on: statements follow the client across servers.
    Rewrite,
    /// Transaction mode with the cache off: a client with named statements keeps its server.
    Pin,
    /// Session mode: the client has its server to itself.
    PassThrough,
}

/// What became of a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forward it unchanged.
    Keep,
    /// Its replacement (possibly nothing) is in the output buffer.
    Replaced,
    /// A Bind, rewritten into the output buffer, of a statement whose text may change
    /// session state: running it is what changes the state, which may be in a later batch
    /// than its Parse.
    Runs(Arc<Statement>),
}

#[derive(Default)]
pub struct ClientStatements {
    map: LazyMap<String, Named>,
}

/// A client's named statement, whether its text may change session state (found once,
/// at its Parse, with the session-effect pre-check), and the pool's schema epoch at its
/// Parse: a server's copy older than that is prepared again before the client uses it.
struct Named {
    stmt: Arc<Statement>,
    may_change_session: bool,
    epoch: u64,
    /// The router's analysis of its text, once made.
    analysis: AnalysisMemo,
}

impl Named {
    fn new(stmt: Arc<Statement>, epoch: u64) -> Named {
        Named {
            may_change_session: super::state::may_change_session(&stmt.body),
            stmt,
            epoch,
            analysis: AnalysisMemo::default(),
        }
    }
}

fn malformed(what: &str) -> PgError {
    PgError::fatal("08P01", format!("invalid {what} message"))
}

impl ClientStatements {
    /// In `Pin` mode: the client has named statements, so it must keep its server.
    pub fn pins(&self) -> bool {
        !self.map.is_empty()
    }

    /// Handles a Parse, Bind, Describe or Close (`tag`) with its `body`: records the
    /// expected replies and, in `Rewrite` mode, writes the rewritten message(s) to `out`.
    /// `epoch`: the pool's schema epoch (statements prepared before it are prepared again).
    #[allow(clippy::too_many_arguments)]
    pub fn on_message(
        &mut self,
        mode: Mode,
        tag: u8,
        body: &[u8],
        server: Option<&mut ServerStatements>,
        epoch: u64,
        replies: &mut Replies,
        out: &mut BytesMut,
    ) -> Result<Outcome, PgError> {
        let server = match (mode, server) {
            (Mode::Rewrite, Some(server)) => server,
            (Mode::Rewrite, None) => {
                // Answered without a server: only remember or forget the client's names.
                self.track_names(tag, body, epoch)?;
                return Ok(Outcome::Replaced);
            }
            (Mode::Pin, _) => {
                self.track_names(tag, body, epoch)?;
                replies.push(expect_for(tag, body));
                return Ok(Outcome::Keep);
            }
            _ => {
                replies.push(expect_for(tag, body));
                return Ok(Outcome::Keep);
            }
        };
        match tag {
            b'P' => {
                let (name, rest) = cstr(body).map_err(|_| malformed("Parse"))?;
                let end = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| malformed("Parse"))?;
                let (query, types) = (&rest[..end], &rest[end + 1..]);
                let rewritten = self
                    .rewrite_sql(query, server, epoch, replies, out)
                    .map(|r| {
                        // Runs at the Execute of the portal bound to it.
                        if let Some((server_name, client_name)) = r.defines {
                            replies.defines_at_execute(server_name, client_name);
                        }
                        [r.text.as_bytes(), &[0], types].concat()
                    });
                let rest = rewritten.as_deref().unwrap_or(rest);
                if name.is_empty() {
                    replies.push(Expect::Parse(None));
                    if rewritten.is_none() {
                        return Ok(Outcome::Keep);
                    }
                    messages::parse(out, "", rest);
                    return Ok(Outcome::Replaced);
                }
                let stmt = Arc::new(Statement::new(rest));
                self.map
                    .insert(name.to_string(), Named::new(stmt.clone(), epoch));
                // The server parses every Parse the client sends, also of a statement it
                // has (closed first): the client hears what PostgreSQL says of its text
                // now, whatever changed since the server's copy was prepared.
                let client_name: Arc<str> = name.into();
                Self::make_room(&stmt, server, (epoch, epoch), replies, out, true);
                messages::parse(out, &stmt.server_name, &stmt.body);
                replies.push(Expect::Parse(Some((stmt.server_name.clone(), client_name))));
                Ok(Outcome::Replaced)
            }
            b'B' => {
                let (portal, rest) = cstr(body).map_err(|_| malformed("Bind"))?;
                let (name, rest) = cstr(rest).map_err(|_| malformed("Bind"))?;
                let Some(named) = self.named(name) else {
                    replies.push(Expect::Bind);
                    return Ok(Outcome::Keep);
                };
                let (stmt, effects) = (named.stmt.clone(), named.may_change_session);
                Self::ensure(&stmt, server, (epoch, named.epoch), replies, out);
                replies.push(Expect::Bind);
                messages::bind(out, portal, &stmt.server_name, rest);
                Ok(if effects {
                    Outcome::Runs(stmt)
                } else {
                    Outcome::Replaced
                })
            }
            b'D' | b'C' => {
                let (&kind, rest) = body
                    .split_first()
                    .ok_or_else(|| malformed("Describe/Close"))?;
                let (name, _) = cstr(rest).map_err(|_| malformed("Describe/Close"))?;
                if kind != b'S' || name.is_empty() {
                    replies.push(expect_for(tag, body));
                    return Ok(Outcome::Keep);
                }
                if tag == b'C' {
                    // The server keeps the statement for other clients; PostgreSQL answers a
                    // Close of an unknown statement with CloseComplete too.
                    self.map.remove(name);
                    replies.push(Expect::Synth(b'3'));
                    return Ok(Outcome::Replaced);
                }
                let Some((stmt, since)) = self.named(name).map(|n| (n.stmt.clone(), n.epoch))
                else {
                    replies.push(Expect::DescribeStatement);
                    return Ok(Outcome::Keep);
                };
                Self::ensure(&stmt, server, (epoch, since), replies, out);
                replies.push(Expect::DescribeStatement);
                messages::describe_statement(out, &stmt.server_name);
                Ok(Outcome::Replaced)
            }
            _ => Ok(Outcome::Keep),
        }
    }

    /// The SQL of the client's named statement `name`.
    pub fn sql_of(&self, name: &str) -> Option<&str> {
        self.prepared(name).map(|(sql, _)| sql)
    }

    /// The SQL of the client's named statement `name`, and where its analysis is kept.
    pub fn prepared(&self, name: &str) -> Option<(&str, &AnalysisMemo)> {
        let named = self.map.get(name)?;
        let body = &named.stmt.body;
        let end = body.iter().position(|b| *b == 0)?;
        let sql = std::str::from_utf8(&body[..end]).ok()?;
        Some((sql, &named.analysis))
    }

    /// True when `body` is a named Parse whose statement `known` says a server prepared.
    pub fn is_known_parse(&self, body: &[u8], known: impl Fn(&str) -> bool) -> bool {
        match cstr(body) {
            Ok((name, rest)) if !name.is_empty() => known(&Statement::new(rest).server_name),
            _ => false,
        }
    }

    fn named(&self, name: &str) -> Option<&Named> {
        if name.is_empty() {
            return None;
        }
        self.map.get(name)
    }

    /// Prepares `stmt` on the server first unless the server has a copy from schema epoch
    /// `since` (the client's Parse) or later; `epoch`: the pool's epoch now.
    fn ensure(
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        (epoch, since): (u64, u64),
        replies: &mut Replies,
        out: &mut BytesMut,
    ) {
        if !Self::make_room(stmt, server, (epoch, since), replies, out, false) {
            return;
        }
        let name = stmt.server_name.clone();
        if stmt.sql {
            sql::prepare_message(out, stmt);
            replies.push(Expect::SwallowPrepare(name));
        } else {
            messages::parse(out, &name, &stmt.body);
            replies.push(Expect::SwallowParse(name));
        }
    }

    /// Records `stmt` as prepared on the server by what the caller writes next, after a
    /// Close of the server's copy or of the statement evicted to make room. Without
    /// `always`, a copy from schema epoch `since` or later is used as it is: returns
    /// whether the statement is to be prepared.
    fn make_room(
        stmt: &Arc<Statement>,
        server: &mut ServerStatements,
        (epoch, since): (u64, u64),
        replies: &mut Replies,
        out: &mut BytesMut,
        always: bool,
    ) -> bool {
        match server.has(stmt, since) {
            Have::Fresh if !always => return false,
            Have::Fresh | Have::Stale => {
                server.insert(stmt.clone(), epoch);
                messages::close_statement(out, &stmt.server_name);
                replies.push(Expect::SwallowClose);
            }
            Have::Absent => {
                if let Some(evicted) = server.insert(stmt.clone(), epoch) {
                    messages::close_statement(out, &evicted);
                    replies.push(Expect::SwallowClose);
                }
            }
        }
        true
    }

    /// Cache off: only remember which names exist, so the server is kept while they do.
    fn track_names(&mut self, tag: u8, body: &[u8], epoch: u64) -> Result<(), PgError> {
        match tag {
            b'P' => {
                let (name, rest) = cstr(body).map_err(|_| malformed("Parse"))?;
                if !name.is_empty() {
                    self.map.insert(
                        name.to_string(),
                        Named::new(Arc::new(Statement::new(rest)), epoch),
                    );
                }
            }
            b'C' if body.first() == Some(&b'S') => {
                let (name, _) = cstr(&body[1..]).map_err(|_| malformed("Close"))?;
                self.map.remove(name);
            }
            _ => {}
        }
        Ok(())
    }

    /// The Parse body (after the name: query, parameter types) of the client's protocol
    /// statement `name`.
    pub fn parse_of(&self, name: &str) -> Option<&[u8]> {
        let stmt = &self.map.get(name)?.stmt;
        (!stmt.sql).then_some(&stmt.body[..])
    }

    /// The client's Parse (`body` with its name) succeeded where no server of its own
    /// keeps it (on every shard): remembered, to be prepared where it is used next.
    pub fn define(&mut self, body: &[u8], epoch: u64) -> Result<(), PgError> {
        self.track_names(b'P', body, epoch)
    }

    /// The client's Parse of `name` failed or was skipped after an error: as on
    /// PostgreSQL, the name does not exist.
    pub fn undefine(&mut self, name: &str) {
        self.map.remove(name);
    }

    /// The client's named statements as (name, body, made by SQL `PREPARE`), to hand the
    /// client to another process.
    pub fn exported(&self) -> Vec<(String, Vec<u8>, bool)> {
        (self.map.iter())
            .map(|(name, n)| (name.clone(), n.stmt.body.to_vec(), n.stmt.sql))
            .collect()
    }

    /// Statements [`ClientStatements::exported`] by another process, as of schema `epoch`.
    pub fn import(&mut self, statements: Vec<(String, Vec<u8>, bool)>, epoch: u64) {
        for (name, body, sql) in statements {
            let stmt = if sql {
                Statement::sql(&String::from_utf8_lossy(&body))
            } else {
                Statement::new(&body)
            };
            self.map.insert(name, Named::new(Arc::new(stmt), epoch));
        }
    }

    /// The client ran DISCARD ALL or DEALLOCATE ALL: its statements are gone.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// The reply a Parse/Bind/Describe/Close gets when forwarded unchanged.
fn expect_for(tag: u8, body: &[u8]) -> Expect {
    match (tag, body.first()) {
        (b'P', _) => Expect::Parse(None),
        (b'B', _) => Expect::Bind,
        (b'D', Some(b'S')) => Expect::DescribeStatement,
        (b'D', _) => Expect::DescribePortal,
        _ => Expect::Close,
    }
}
