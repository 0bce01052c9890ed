//! A logged-in server connection: its byte side ([`ServerIo`]) and what the pooler knows
//! of its session ([`ServerSession`]), and the small conversations the pooler has with it
//! itself (parameter sync, reset, rollback, its own queries).

use bytes::{Buf, BytesMut};

use super::io::ServerIo;
use super::session::ServerSession;
use super::{quote_ident, quote_literal, BackendError};
use crate::wire::frame;
use crate::wire::messages::{self, PgError};

/// Largest message the pooler reads whole from a server while it converses itself.
const OWN_MESSAGE_CAP: usize = 1 << 20;

/// A logged-in server connection.
pub struct ServerConn {
    io: ServerIo,
    session: ServerSession,
    /// Where a copy of everything sent goes (the shard's `mirrors` of this server).
    mirrors: Vec<super::Mirror>,
}

impl ServerConn {
    pub(super) fn new(io: ServerIo, session: ServerSession) -> ServerConn {
        ServerConn {
            io,
            session,
            mirrors: Vec::new(),
        }
    }

    /// From now on, everything sent on this connection is copied to `mirrors` too.
    pub fn mirror_to(&mut self, mirrors: Vec<super::Mirror>) {
        self.mirrors = mirrors;
    }

    /// Copies `bytes` (whole messages about to be sent) to the mirrors; the relay calls it
    /// for what it writes through [`ServerConn::io`]. Never waits.
    #[inline]
    pub fn mirror(&self, bytes: &[u8]) {
        for mirror in &self.mirrors {
            mirror.send(bytes);
        }
    }

    /// Both halves at once, for the relay: bytes move through one while the other is
    /// updated as they pass.
    #[inline]
    pub fn split(&mut self) -> (&mut ServerIo, &mut ServerSession) {
        (&mut self.io, &mut self.session)
    }

    #[inline]
    pub fn io(&mut self) -> &mut ServerIo {
        &mut self.io
    }

    #[inline]
    pub fn session(&self) -> &ServerSession {
        &self.session
    }

    #[inline]
    pub fn session_mut(&mut self) -> &mut ServerSession {
        &mut self.session
    }

    /// Reads one whole message (tag, body) the pooler itself waits for.
    pub async fn read_message(&mut self) -> Result<(u8, BytesMut), BackendError> {
        loop {
            let buf = self.io.buf_mut();
            match frame::whole(buf, OWN_MESSAGE_CAP) {
                Ok(Some((tag, _, total))) => {
                    let mut msg = buf.split_to(total);
                    msg.advance(5);
                    return Ok((tag, msg));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(BackendError::Protocol {
                        addr: self.session.addr().to_string(),
                        reason: e.to_string(),
                    })
                }
            }
            self.io.fill().await?;
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.mirror(bytes);
        self.io.write_all(bytes).await
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
                b'S' => self.session.note_parameter(&body),
                b'Z' => {
                    let status = body.first().copied().unwrap_or(b'I');
                    return match error {
                        Some(error) => Err(BackendError::Query {
                            addr: self.session.addr().to_string(),
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
        let applied = self.session.applied();
        if applied == wanted {
            return Ok(());
        }
        let mut sql = String::new();
        for (name, _) in applied {
            if !wanted.iter().any(|(n, _)| n == name) {
                sql.push_str(&format!("RESET {};", quote_ident(name)));
            }
        }
        let sets: Vec<String> = wanted
            .iter()
            .filter(|p| !applied.contains(p))
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
        self.session.set_applied(None);
        self.execute(&sql).await?;
        self.session.set_applied(Some(wanted));
        Ok(())
    }

    /// Undoes what `dirty` records, with the narrowest commands that do it (so the
    /// statements the pooler prepared survive a client's SET), or everything with
    /// `DISCARD ALL`.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        let d = self.session.dirty();
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
        self.session.reset_done();
        Ok(())
    }

    /// Cheap liveness check before reuse: an idle server sends nothing, so readable data
    /// or EOF means it is gone (e.g. terminated by an administrator).
    pub fn is_alive(&mut self) -> bool {
        self.io.is_silent()
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
