//! One connection from the pooler to a PostgreSQL server: connect, startup, login,
//! the parameters the server reported, small queries the pooler runs itself (parameter
//! sync, reset, rollback), and the liveness check used before reuse. Relaying client
//! traffic over it is the frontend's job; this module never sees client bytes.

mod connect;
pub mod statements;

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::net::CancelKey;
use crate::net::Stream;
use crate::wire::frame;
use crate::wire::messages::{self, PgError};

pub use connect::{
    cancel, connect, connect_as, ServerTarget, TcpSettings, HEALTHCHECK_APPLICATION_NAME,
};

/// Largest message the pooler reads whole from a server while it converses itself.
const OWN_MESSAGE_CAP: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with server {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to server {addr} lost: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("server {addr} closed the connection")]
    Closed { addr: String },
    #[error("server {addr} sent a malformed message: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("server {addr} refused the login: {error}")]
    Login { addr: String, error: PgError },
    #[error("authentication with server {addr} failed: {source}")]
    Auth {
        addr: String,
        source: crate::auth::AuthError,
    },
    #[error("server {addr} was banned ({reason})")]
    Banned { addr: String, reason: String },
    #[error("server {addr} reported: {error}")]
    Query { addr: String, error: PgError },
    /// The server ended the connection with this FATAL (an administrator's
    /// pg_terminate_backend, a shutdown), kept as it was sent.
    #[error("server {addr} ended the connection: {error}")]
    Terminated {
        addr: String,
        error: crate::wire::messages::ServerError,
    },
}

impl BackendError {
    /// The error a client sees for this failure.
    pub fn to_client(&self) -> PgError {
        match self {
            BackendError::Login { error, .. } | BackendError::Query { error, .. } => {
                let mut e = error.clone();
                e.severity = crate::wire::messages::Severity::Error;
                e
            }
            BackendError::Auth { .. } => PgError::error("28000", self.to_string()),
            BackendError::Terminated { error, .. } => {
                let mut e = error.fields();
                e.severity = crate::wire::messages::Severity::Error;
                e
            }
            _ => PgError::error("08006", self.to_string()),
        }
    }

    /// The connection itself is gone (closed, broken, or ended by a FATAL), as opposed to
    /// a statement that failed on a connection that lives on.
    pub fn lost_connection(&self) -> bool {
        match self {
            BackendError::Io { .. } | BackendError::Closed { .. } => true,
            BackendError::Terminated { .. } | BackendError::Protocol { .. } => true,
            BackendError::Query { error, .. } => {
                error.severity == crate::wire::messages::Severity::Fatal
            }
            _ => false,
        }
    }
}

/// Session state a server picked up that must be undone before another client uses it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    /// Parameters changed (SET, set_config, RESET): `RESET ALL`.
    pub settings: bool,
    /// SQL-level or client-named prepared statements: `DEALLOCATE ALL`.
    pub prepared: bool,
    /// `LISTEN`: `UNLISTEN *`.
    pub listen: bool,
    /// Session advisory locks: `pg_advisory_unlock_all()`.
    pub advisory: bool,
    /// Temporary tables: `DISCARD TEMP`.
    pub temp: bool,
    /// Held cursors: `CLOSE ALL`.
    pub cursors: bool,
    /// Anything else, or unknown: `DISCARD ALL`.
    pub everything: bool,
}

impl Dirty {
    pub fn any(&self) -> bool {
        *self != Dirty::default()
    }

    /// Everything must go: session mode check-in, or state the pooler cannot name.
    pub fn all() -> Dirty {
        Dirty {
            everything: true,
            ..Dirty::default()
        }
    }
}

/// A logged-in server connection.
pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server and not yet handled.
    pub buf: BytesMut,
    pub addr: Arc<str>,
    /// Shared with the cancel slot of the client holding the server (lent per transaction
    /// without a copy).
    pub cancel: Arc<CancelKey>,
    /// The ParameterStatus values the server reported last (at login, and after what the
    /// pooler itself ran: the canonical spelling of what a client set).
    pub params: Vec<(String, String)>,
    /// Client parameters set on this connection, by lower-case name, sorted.
    pub applied: Vec<(String, String)>,
    /// Session state to undo before another client gets this server.
    pub dirty: Dirty,
    /// Client statements prepared here under the pooler's names (transaction mode).
    pub statements: Option<statements::ServerStatements>,
    /// Where this connection's traffic is counted (set by the pool that made it).
    pub stats: Option<ServerStats>,
}

/// The statistics records of a pooled server connection.
pub struct ServerStats {
    pub counters: Arc<crate::stats::Counters>,
    pub info: Arc<crate::stats::ServerInfo>,
    pub health: Arc<crate::stats::health::Health>,
}

impl ServerConn {
    fn io_err(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            addr: self.addr.to_string(),
            source,
        }
    }

    /// Reads one whole message (tag, body) the pooler itself waits for.
    pub async fn read_message(&mut self) -> Result<(u8, BytesMut), BackendError> {
        loop {
            match frame::whole(&self.buf, OWN_MESSAGE_CAP) {
                Ok(Some((tag, _, total))) => {
                    let mut msg = self.buf.split_to(total);
                    msg.advance(5);
                    return Ok((tag, msg));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(BackendError::Protocol {
                        addr: self.addr.to_string(),
                        reason: e.to_string(),
                    })
                }
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.io_err(e))?;
            if n == 0 {
                return Err(BackendError::Closed {
                    addr: self.addr.to_string(),
                });
            }
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        let r = self.stream.send(bytes).await;
        r.map_err(|e| self.io_err(e))
    }

    /// Runs SQL the pooler needs (simple protocol), discarding rows, until ReadyForQuery.
    /// Returns the transaction status, or the first error the server reported; the
    /// connection stays usable then.
    pub async fn execute(&mut self, sql: &str) -> Result<u8, BackendError> {
        self.run(sql).await.map(|(status, _)| status)
    }

    /// Runs a query the pooler needs and returns its first row (text values).
    pub async fn query_row(&mut self, sql: &str) -> Result<Vec<Option<String>>, BackendError> {
        let rows = self.run(sql).await?.1;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    /// Runs a query the pooler needs and returns its rows (text values).
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        self.run(sql).await.map(|(_, rows)| rows)
    }

    /// Runs `sql` with one text parameter `$1` (extended protocol: the value is bound, never
    /// spliced into the text) and returns its first row.
    pub async fn query_row_with(
        &mut self,
        sql: &str,
        param: &str,
    ) -> Result<Vec<Option<String>>, BackendError> {
        let mut msg = BytesMut::with_capacity(sql.len() + param.len() + 64);
        messages::message(&mut msg, b'P', |m| {
            m.extend_from_slice(&[0]); // unnamed statement
            m.extend_from_slice(sql.as_bytes());
            m.extend_from_slice(&[0, 0, 0]); // no parameter types given
        });
        messages::message(&mut msg, b'B', |m| {
            m.extend_from_slice(&[0, 0]); // unnamed portal, unnamed statement
            m.extend_from_slice(&[0, 0, 0, 1]); // no format codes (text); one parameter
            m.extend_from_slice(&(param.len() as i32).to_be_bytes());
            m.extend_from_slice(param.as_bytes());
            m.extend_from_slice(&[0, 0]); // results as text
        });
        messages::message(&mut msg, b'E', |m| m.extend_from_slice(&[0, 0, 0, 0, 0]));
        messages::message(&mut msg, b'S', |_| {});
        self.write_all(&msg).await?;
        let rows = self.read_reply().await?.1;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    /// Sends one simple Query and reads to its ReadyForQuery: the status and the rows.
    async fn run(&mut self, sql: &str) -> Result<(u8, Vec<Vec<Option<String>>>), BackendError> {
        let mut msg = BytesMut::new();
        crate::wire::messages::query(&mut msg, &[sql.as_bytes()]);
        self.write_all(&msg).await?;
        self.read_reply().await
    }

    /// Reads to ReadyForQuery: the status and the rows, or the first error.
    async fn read_reply(&mut self) -> Result<(u8, Vec<Vec<Option<String>>>), BackendError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'D' => rows.push(data_row(&body)),
                b'E' if error.is_none() => error = Some(PgError::from_fields(&body)),
                b'S' => self.note_parameter(&body),
                b'Z' => {
                    let status = body.first().copied().unwrap_or(b'I');
                    return match error {
                        Some(error) => Err(BackendError::Query {
                            addr: self.addr.to_string(),
                            error,
                        }),
                        None => Ok((status, rows)),
                    };
                }
                _ => {}
            }
        }
    }

    /// Makes this connection carry exactly the client's parameters (`wanted`: lower-case
    /// names, sorted): sets what differs, resets what the client does not have.
    pub async fn sync_params(&mut self, wanted: &[(String, String)]) -> Result<(), BackendError> {
        if self.applied == wanted {
            return Ok(());
        }
        let mut sql = String::new();
        for (name, _) in &self.applied {
            if !wanted.iter().any(|(n, _)| n == name) {
                sql.push_str(&format!("RESET {};", quote_ident(name)));
            }
        }
        let sets: Vec<String> = wanted
            .iter()
            .filter(|p| !self.applied.contains(p))
            .map(|(n, v)| {
                format!(
                    "pg_catalog.set_config({}, {}, false)",
                    quote_literal(n),
                    quote_literal(v)
                )
            })
            .collect();
        if !sets.is_empty() {
            sql.push_str(&format!("SELECT {};", sets.join(", ")));
        }
        // Whatever happens, the server's state is no longer what `applied` says.
        self.applied.clear();
        self.dirty.settings = true;
        self.execute(&sql).await?;
        self.applied = wanted.to_vec();
        self.dirty.settings = false;
        Ok(())
    }

    /// Undoes what `dirty` records, with the narrowest commands that do it (so the
    /// statements the pooler prepared survive a client's SET), or everything with
    /// `DISCARD ALL`.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        let d = self.dirty;
        if d.everything {
            self.execute("DISCARD ALL").await?;
        } else {
            let mut sql = Vec::new();
            for (on, cmd) in [
                (d.settings, "RESET ALL"),
                (d.prepared, "DEALLOCATE ALL"),
                (d.listen, "UNLISTEN *"),
                (d.advisory, "SELECT pg_advisory_unlock_all()"),
                (d.temp, "DISCARD TEMP"),
                (d.cursors, "CLOSE ALL"),
            ] {
                if on {
                    sql.push(cmd);
                }
            }
            if !sql.is_empty() {
                self.execute(&sql.join("; ")).await?;
            }
        }
        if d.everything || d.settings {
            self.applied.clear();
        }
        if d.everything || d.prepared {
            if let Some(s) = &mut self.statements {
                s.clear();
            }
        }
        self.dirty = Dirty::default();
        Ok(())
    }

    /// Records a ParameterStatus body (`name\0value\0`) the server sent.
    pub fn note_parameter(&mut self, body: &[u8]) {
        let mut parts = body.split(|b| *b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        let name = String::from_utf8_lossy(name);
        let value = String::from_utf8_lossy(value).into_owned();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(param) => param.1 = value,
            None => self.params.push((name.into_owned(), value)),
        }
    }

    /// Cheap liveness check before reuse: an idle server sends nothing, so readable data
    /// or EOF means it is gone (e.g. terminated by an administrator).
    pub fn is_alive(&mut self) -> bool {
        self.buf.is_empty() && self.stream.is_silent()
    }
}

/// The text values of a DataRow body (NULL as None); malformed input yields what parsed.
fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    let Some(count) = body.get(..2) else {
        return values;
    };
    let count = i16::from_be_bytes([count[0], count[1]]).max(0) as usize;
    let mut rest = &body[2..];
    for _ in 0..count {
        let Some(len) = rest.get(..4) else { break };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
            continue;
        }
        let Some(value) = rest.get(..len as usize) else {
            break;
        };
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len as usize..];
    }
    values
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings on, as the pooler's own
/// queries run with server defaults; an E'' literal would also be safe either way).
pub fn quote_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_everything() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's \\ x"), "E'it''s \\\\ x'");
    }
}
