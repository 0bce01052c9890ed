//! The pooling loop of one client. Idle, the client holds no server. Its first message
//! takes one from its pool; from then on this task drives both sockets, forwarding bytes
//! as they arrive (header scan only, rows never decoded) and watching the few tags that
//! say where the conversation is: how many ReadyForQuery are owed (one per Query,
//! FunctionCall and Sync), whether an extended batch is open, COPY, the transaction status.
//!
//! Transaction mode gives the server back when it is idle (ReadyForQuery 'I'), nothing is
//! owed, no batch is open and no client bytes are half sent. Session mode keeps it until
//! the client leaves. A server that saw session state changes is reset before the next
//! client; one whose state is unknown is closed instead.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use deadpool::managed::Object;
use pgcat_parser::SessionEffects;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::login::Session;
use super::prepared::{ClientStatements, Mode, Outcome};
use super::replies::{Action, Event, Expect, Replies};
use super::state::{self, Effects};
use super::ClientError;
use crate::backend::{BackendError, Dirty, ServerConn};
use crate::config::PoolMode;
use crate::pool::Server;
use crate::wire::messages::{self, PgError, Severity};
use crate::wire::Scanner;

/// Where a client's conversation with its server stands.
#[derive(Debug)]
struct Flow {
    /// Replies owed, in order, and the ones the pooler makes up or swallows.
    replies: Replies,
    /// An extended-protocol batch is open (messages since the last Sync).
    batch: bool,
    /// Transaction status from the last ReadyForQuery.
    status: u8,
    copy: bool,
    /// SET/RESET sent outside a transaction: the client keeps them if they succeed.
    remember: Option<Arc<SessionEffects>>,
    /// An ErrorResponse came since the last ReadyForQuery.
    failed: bool,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            replies: Replies::default(),
            batch: false,
            status: b'I',
            copy: false,
            remember: None,
            failed: false,
        }
    }

    /// Nothing in flight.
    fn settled(&self) -> bool {
        self.replies.is_empty() && !self.batch && !self.copy
    }
}

/// Client messages the pooler may have to rewrite (prepared statements) are read whole
/// up to this size; a larger one with a statement name to rewrite is refused.
const REWRITE_CAP: usize = 16 << 20;

/// How holding a server ended.
enum End {
    /// Transaction mode: the server is idle and goes back to the pool.
    Released,
    /// The client left (Terminate, EOF or error).
    ClientGone,
    /// The server connection failed.
    ServerGone(BackendError),
    /// The client broke the protocol.
    Fatal(PgError),
}

struct Client<'a> {
    stream: &'a mut TcpStream,
    session: Session,
    effects: &'a Effects,
    buf: BytesMut,
    scanner: Scanner,
    statements: ClientStatements,
    mode: Mode,
}

/// Runs the client's queries until it leaves.
pub async fn run(
    stream: &mut TcpStream,
    session: Session,
    effects: &Effects,
) -> Result<(), ClientError> {
    let mode = match (session.pool.mode, session.pool.statement_cache) {
        (PoolMode::Session, _) => Mode::PassThrough,
        (PoolMode::Transaction, 0) => Mode::Pin,
        (PoolMode::Transaction, _) => Mode::Rewrite,
    };
    let mut client = Client {
        stream,
        session,
        effects,
        buf: BytesMut::new(),
        scanner: Scanner::with_cap(REWRITE_CAP),
        statements: ClientStatements::default(),
        mode,
    };
    loop {
        if client.buf.is_empty() && read(client.stream, &mut client.buf).await? == 0 {
            return Ok(());
        }
        if client.buf[0] == b'X' {
            return Ok(());
        }
        if client.mode == Mode::Rewrite && client.prepare_locally().await? {
            continue;
        }
        let pool = client.session.pool.clone();
        let mut server = match pool.checkout().await {
            Ok(server) => server,
            Err(e) => {
                client.reject(e, false).await?;
                continue;
            }
        };
        if let Err(e) = server.sync_params(&client.session.params).await {
            let to_client = e.to_client();
            match e {
                BackendError::Query { .. } => checkin(server, pool.mode).await,
                _ => drop(Object::take(server)),
            }
            client.reject(to_client, false).await?;
            continue;
        }
        let slot = client.session.registration.slot.clone();
        slot.set(Some(server.cancel.clone()));
        let mut flow = Flow::new();
        let mut server_scan = Scanner::default();
        let end = client.relay(&mut server, &mut flow, &mut server_scan).await;
        slot.set(None);
        match end {
            End::Released => checkin(server, pool.mode).await,
            End::ClientGone => {
                let clean =
                    flow.settled() && client.scanner.at_boundary() && server_scan.at_boundary();
                abandon(server, &flow, clean, pool.mode).await;
                return Ok(());
            }
            End::ServerGone(e) => {
                tracing::warn!(error = %e, "server connection lost");
                drop(Object::take(server));
                client.server_lost(&e, &flow, pool.mode).await?;
            }
            End::Fatal(e) => {
                drop(Object::take(server));
                return Err(e.into());
            }
        }
    }
}

/// Reads more client or server bytes into `buf`, growing it in steps.
async fn read(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    stream.read_buf(buf).await
}

/// Returns a server to its pool: reset first if its session state changed (always in
/// session mode); closed if the reset fails.
async fn checkin(mut server: Server, mode: PoolMode) {
    if mode == PoolMode::Session {
        server.dirty = Dirty::all();
    }
    if server.dirty.any() {
        if let Err(e) = server.reset().await {
            tracing::warn!(error = %e, "server reset failed; closing the connection");
            drop(Object::take(server));
        }
    }
}

/// The client left while holding `server`. An open transaction is rolled back; a server
/// with a query or batch in flight is cancelled and closed (its state is unknown).
async fn abandon(mut server: Server, flow: &Flow, clean: bool, mode: PoolMode) {
    if !clean {
        let key = server.cancel.clone();
        drop(Object::take(server));
        tokio::spawn(async move {
            let _ = crate::backend::cancel(&key).await;
        });
        return;
    }
    if flow.status != b'I' {
        if let Err(e) = server.execute("ROLLBACK").await {
            tracing::warn!(error = %e, "rollback of an abandoned transaction failed; closing the connection");
            drop(Object::take(server));
            return;
        }
    }
    checkin(server, mode).await;
}

impl Client<'_> {
    /// Relays between the client and `server` until one of the ends in [`End`].
    async fn relay(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> End {
        let mode = self.session.pool.mode;
        if let Some(end) = self.forward_client(server, flow).await {
            return end;
        }
        loop {
            if mode == PoolMode::Transaction
                && flow.settled()
                && !(self.mode == Mode::Pin && self.statements.pins())
                && flow.status == b'I'
                && self.buf.is_empty()
                && self.scanner.at_boundary()
                && server.buf.is_empty()
                && server_scan.at_boundary()
            {
                return End::Released;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if server.buf.capacity() - server.buf.len() < 4096 {
                server.buf.reserve(16 * 1024);
            }
            tokio::select! {
                r = self.stream.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return End::ClientGone,
                    Ok(_) => {
                        if let Some(end) = self.forward_client(server, flow).await {
                            return end;
                        }
                    }
                },
                r = server.stream.read_buf(&mut server.buf) => match r {
                    Ok(0) => return End::ServerGone(BackendError::Closed { addr: server.addr.to_string() }),
                    Err(source) => return End::ServerGone(BackendError::Io { addr: server.addr.to_string(), source }),
                    Ok(_) => {
                        if let Some(end) = self.forward_server(server, flow, server_scan).await {
                            return end;
                        }
                    }
                },
            }
        }
    }

    /// Forwards complete (or streamed) client messages to the server, rewriting the ones
    /// that name prepared statements, then sends the client any replies made up for them.
    async fn forward_client(&mut self, server: &mut ServerConn, flow: &mut Flow) -> Option<End> {
        let mut terminate_at = None;
        let mut failure = None;
        let mut out = BytesMut::new();
        let mut replacement = BytesMut::new();
        let mut copied = 0;
        let mode = self.mode;
        let statements = &mut self.statements;
        let buf = &self.buf;
        let server_statements = &mut server.statements;
        let dirty = &mut server.dirty;
        let effects = self.effects;
        let tracks_state = mode != Mode::PassThrough;
        let scanned = self.scanner.scan(
            buf,
            |tag| matches!(tag, b'P' | b'B' | b'D' | b'C') || (tracks_state && tag == b'Q'),
            |tag, body, start| match tag {
                b'Q' => {
                    if tracks_state {
                        let idle = flow.replies.is_empty() && flow.status == b'I';
                        match body.map(query_text).map(|sql| effects.of(&sql)) {
                            None => *dirty = Dirty::all(),
                            Some(None) => {}
                            Some(Some(e))
                                if idle && state::only_settings(&e) && flow.remember.is_none() =>
                            {
                                flow.remember = Some(e);
                            }
                            Some(Some(e)) => state::merge(dirty, state::dirty(&e)),
                        }
                    }
                    flow.replies.push(Expect::Query);
                }
                b'F' => flow.replies.push(Expect::FunctionCall),
                b'S' => {
                    flow.replies.push(Expect::Sync);
                    flow.batch = false;
                }
                b'E' => {
                    flow.replies.push(Expect::Execute);
                    flow.batch = true;
                }
                b'H' => flow.batch = true,
                b'P' | b'B' | b'D' | b'C' => {
                    flow.batch = true;
                    let Some(body) = body else {
                        failure.get_or_insert(PgError::fatal(
                            "54000",
                            format!(
                                "{} message larger than {REWRITE_CAP} bytes",
                                char::from(tag)
                            ),
                        ));
                        return;
                    };
                    if tag == b'P' && tracks_state {
                        if let Ok((name, rest)) = crate::wire::startup::cstr(body) {
                            // Cache off: the client's own statement names stay on the server.
                            if mode == Mode::Pin && !name.is_empty() {
                                dirty.prepared = true;
                            }
                            if let Some(e) = effects.of(&query_text(rest)) {
                                state::merge(dirty, state::dirty(&e));
                            }
                        }
                    }
                    match statements.on_message(
                        mode,
                        tag,
                        body,
                        server_statements.as_mut(),
                        &mut flow.replies,
                        &mut replacement,
                    ) {
                        Ok(Outcome::Keep) => {}
                        Ok(Outcome::Replaced) => {
                            out.extend_from_slice(&buf[copied..start]);
                            out.extend_from_slice(&replacement);
                            replacement.clear();
                            copied = start + 5 + body.len();
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
                b'X' => {
                    terminate_at.get_or_insert(start);
                }
                _ => {}
            },
        );
        let n = match scanned {
            Ok(n) => n,
            Err(e) => return Some(End::Fatal(PgError::fatal("08P01", e.to_string()))),
        };
        if let Some(e) = failure {
            return Some(End::Fatal(e));
        }
        let send = terminate_at.unwrap_or(n);
        let result = if copied == 0 {
            server.write_all(&self.buf[..send]).await
        } else {
            out.extend_from_slice(&self.buf[copied.min(send)..send]);
            server.write_all(&out).await
        };
        self.buf.advance(n);
        if let Err(e) = result {
            return Some(End::ServerGone(e));
        }
        if terminate_at.is_some() {
            return Some(End::ClientGone);
        }
        let mut synth = BytesMut::new();
        flow.replies.take_synth(|tag| synth_reply(&mut synth, tag));
        if !synth.is_empty() && self.stream.write_all(&synth).await.is_err() {
            return Some(End::ClientGone);
        }
        None
    }

    /// Forwards server messages to the client, noting the ones that change the flow,
    /// swallowing replies to messages the pooler added and inserting the ones it made up.
    async fn forward_server(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        scan: &mut Scanner,
    ) -> Option<End> {
        let mut out = BytesMut::new();
        let mut copied = 0;
        let mut dropped_all = false;
        let mut kept = None;
        let mut discarded = false;
        let known = &self.session.pool.known_statements;
        let client_statements = &mut self.statements;
        let ServerConn {
            buf,
            dirty,
            statements,
            applied,
            ..
        } = server;
        let scanned = scan.scan(
            buf,
            |tag| {
                matches!(
                    tag,
                    b'Z' | b'C' | b'1' | b'2' | b'3' | b'T' | b'n' | b'I' | b's'
                )
            },
            |tag, body, start| {
                match tag {
                    b'Z' => {
                        flow.status = body.and_then(|b| b.first().copied()).unwrap_or(b'I');
                        flow.copy = false;
                        if let Some(e) = flow.remember.take() {
                            if flow.status != b'I' {
                                // The same query opened a transaction: not the client's to keep.
                                dirty.settings = true;
                            } else if !flow.failed {
                                kept = Some(e);
                            }
                        }
                        flow.failed = false;
                    }
                    b'E' => flow.failed = true,
                    b'G' | b'H' | b'W' => flow.copy = true,
                    // DISCARD ALL / DEALLOCATE ALL drop every statement, the client's and the
                    // ones the pooler prepared on this server; DISCARD ALL resets settings too.
                    b'C' if body.is_some_and(|b| {
                        b.starts_with(b"DISCARD ALL") || b.starts_with(b"DEALLOCATE ALL")
                    }) =>
                    {
                        dropped_all = true;
                        if let Some(s) = statements.as_mut() {
                            s.clear();
                        }
                        if body.is_some_and(|b| b.starts_with(b"DISCARD ALL")) {
                            applied.clear();
                            *dirty = Dirty::default();
                            discarded = true;
                        } else {
                            dirty.prepared = false;
                        }
                    }
                    _ => {}
                }
                let end = body.map(|b| start + 5 + b.len());
                let action = flow.replies.on_server(tag, |event| match event {
                    Event::Prepared(name) => known.insert(name),
                    Event::Failed(name) => {
                        if let Some(s) = statements.as_mut() {
                            s.forget(name);
                        }
                    }
                    Event::Undefined(name) => client_statements.undefine(name),
                });
                if action == Action::Swallow {
                    out.extend_from_slice(&buf[copied..start]);
                    copied = end.unwrap_or(start + 5);
                }
                let mut synth = BytesMut::new();
                flow.replies.take_synth(|t| synth_reply(&mut synth, t));
                if !synth.is_empty() {
                    if let Some(end) = end {
                        out.extend_from_slice(&buf[copied..end]);
                        copied = end;
                    }
                    out.extend_from_slice(&synth);
                }
            },
        );
        let n = match scanned {
            Ok(n) => n,
            Err(e) => {
                return Some(End::ServerGone(BackendError::Protocol {
                    addr: server.addr.to_string(),
                    reason: e.to_string(),
                }))
            }
        };
        if dropped_all {
            self.statements.clear();
        }
        if discarded {
            // The client's DISCARD ALL resets its own remembered settings, nobody else's.
            self.session.params = self.session.startup_params.clone();
        }
        if let Some(e) = kept {
            // The client's own SET/RESET: remembered, and this server now carries it.
            let params = &mut self.session.params;
            state::remember(params, &self.session.startup_params, &e);
            if e.reset.is_empty() && !e.reset_all && e.set.iter().all(|(_, v)| v.is_some()) {
                server.applied = params.clone();
            } else {
                // RESET returns to the server's default, not the client's: re-apply next time.
                server.applied.clear();
                server.dirty.settings = true;
            }
        }
        let result = if out.is_empty() && copied == 0 {
            self.stream.write_all(&server.buf[..n]).await
        } else {
            out.extend_from_slice(&server.buf[copied.min(n)..n]);
            self.stream.write_all(&out).await
        };
        server.buf.advance(n);
        if result.is_err() {
            return Some(End::ClientGone);
        }
        None
    }

    /// Answers a request made only of Parse of statements the pool knows, Close of
    /// statements, and a final Sync, without a server. Returns false (consuming nothing)
    /// for anything else.
    async fn prepare_locally(&mut self) -> Result<bool, ClientError> {
        let known = &self.session.pool.known_statements;
        let mut pos = 0;
        let mut replies = BytesMut::new();
        loop {
            let Some((tag, body, total)) = crate::wire::frame::whole(&self.buf[pos..], 64 * 1024)?
            else {
                return Ok(false);
            };
            let answerable = match tag {
                b'P' => self
                    .statements
                    .is_known_parse(body, |name| known.contains(name)),
                b'C' => body.first() == Some(&b'S'),
                b'S' => true,
                _ => false,
            };
            if !answerable {
                return Ok(false);
            }
            pos += total;
            if tag == b'S' {
                break;
            }
        }
        // All answerable: apply them for real.
        let mut scratch = BytesMut::new();
        let mut queue = Replies::default();
        while let Some((tag, body, total)) = crate::wire::frame::whole(&self.buf, 64 * 1024)? {
            if tag == b'S' {
                self.buf.advance(total);
                break;
            }
            self.statements
                .on_message(Mode::Rewrite, tag, body, None, &mut queue, &mut scratch)?;
            synth_reply(&mut replies, if tag == b'P' { b'1' } else { b'3' });
            self.buf.advance(total);
        }
        messages::ready_for_query(&mut replies, b'I');
        self.stream.write_all(&replies).await?;
        Ok(true)
    }

    /// Answers the client's current request with `error` instead of a server: a Query or
    /// FunctionCall gets the error and ReadyForQuery; an extended batch gets the error once
    /// (unless `reported`) and ReadyForQuery at its Sync, as PostgreSQL does after an error.
    async fn reject(&mut self, error: PgError, mut reported: bool) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        loop {
            let mut terminate = false;
            let n = self.scanner.scan(
                &self.buf,
                |_| false,
                |tag, _, _| match tag {
                    b'Q' | b'F' => {
                        error.encode(&mut out);
                        messages::ready_for_query(&mut out, b'I');
                    }
                    b'S' => {
                        if !reported {
                            error.encode(&mut out);
                        }
                        reported = false;
                        messages::ready_for_query(&mut out, b'I');
                    }
                    b'X' => terminate = true,
                    b'P' | b'B' | b'D' | b'E' | b'C' | b'H' if !reported => {
                        error.encode(&mut out);
                        reported = true;
                    }
                    _ => {}
                },
            )?;
            self.buf.advance(n);
            if !out.is_empty() {
                self.stream.write_all(&out).await?;
                out.clear();
            }
            if terminate {
                return Err(ClientError::Gone);
            }
            if self.buf.is_empty() && self.scanner.at_boundary() && !reported {
                return Ok(());
            }
            if read(self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        }
    }

    /// The server died under the client. Inside a transaction, or in session mode, the
    /// client's state is gone with it, so the client is closed, as PostgreSQL would.
    /// Otherwise the statement in flight fails with the 08 error and the client stays.
    async fn server_lost(
        &mut self,
        e: &BackendError,
        flow: &Flow,
        mode: PoolMode,
    ) -> Result<(), ClientError> {
        let mut error = PgError::error("08006", format!("{e}; the statement did not complete"));
        if flow.status != b'I' || mode == PoolMode::Session {
            error.severity = Severity::Fatal;
            error.message = format!("{e}; the session's transaction or state is lost");
            return Err(error.into());
        }
        let mut out = BytesMut::new();
        if flow.replies.owed() > 0 {
            error.encode(&mut out);
            for _ in 0..flow.replies.owed() {
                messages::ready_for_query(&mut out, b'I');
            }
            self.stream.write_all(&out).await?;
            if flow.batch || !self.scanner.at_boundary() {
                return self.reject(error, true).await;
            }
            return Ok(());
        }
        // Mid-batch with nothing owed yet: the error goes with the rest of the batch.
        self.reject(error, false).await
    }
}

/// Appends a reply the pooler makes up (ParseComplete '1', CloseComplete '3').
fn synth_reply(out: &mut BytesMut, tag: u8) {
    out.extend_from_slice(&[tag, 0, 0, 0, 4]);
}

/// The text of a Query or Parse query string (without its NUL terminator).
fn query_text(body: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end])
}
