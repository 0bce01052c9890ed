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

use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use deadpool::managed::Object;
use pgcat_parser::{Role, Route, SessionEffects, SessionRouting};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tracing::Instrument;

use super::lazy_map::LazyMap;
use super::listen::{self, Listen, Listening};
use super::login::Session;
use super::prepared::{ClientStatements, Mode, Outcome};
use super::replies::{Action, Event, Expect, Replies};
use super::route::{self, Request, Routed};
use super::state;
use super::{ClientError, ClientTag, Conn};
use crate::app::{App, Connection};
use crate::backend::{BackendError, Dirty, ServerConn};
use crate::config::PoolMode;
use crate::net::Stream;
use crate::pool::{Server, TakeError, UserPool};
use crate::stats::{ClientState, Interrupt, ServerState};
use crate::wire::frame::INSPECT_CAP;
use crate::wire::messages::{self, field, PgError, ServerError};
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
    remember: Option<SessionEffects>,
    /// Settings SET or RESET inside a transaction (or through the extended protocol): what
    /// they are when the server is released is what the client keeps, since a commit keeps
    /// them and a rollback undoes them.
    changed_settings: state::Changed,
    /// An ErrorResponse came since the last ReadyForQuery.
    failed: bool,
    /// The transaction in progress changed the schema (its rollback changes it again).
    ddl: bool,
    /// When the query being answered was sent, and when the transaction began.
    query_started: Option<Instant>,
    xact_started: Instant,
    /// The parser's analysis of the Query (or Parse) the server was taken for, which has
    /// that text's session effects.
    routed: Option<Routed>,
}

impl Flow {
    /// A conversation whose first request is sent `now` (the server was just taken).
    fn new(now: Instant) -> Flow {
        Flow {
            replies: Replies::for_batch(),
            batch: false,
            status: b'I',
            copy: false,
            remember: None,
            changed_settings: state::Changed::default(),
            failed: false,
            ddl: false,
            query_started: Some(now),
            xact_started: now,
            routed: None,
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
    /// The client sent an SQL extension (`SET SHARD TO` …) while holding the server.
    Intercept,
    /// The client stayed idle inside a transaction past idle_client_in_transaction_timeout.
    IdleInTransaction,
}

/// A pooled client: its connection, its session and the pooling loop's state, in one box
/// that is all an idle client's task holds (see [`super::ClientTask`]).
pub(super) struct Client {
    stream: Stream,
    session: Session,
    app: Arc<App>,
    _counted: Connection,
    buf: BytesMut,
    scanner: Scanner,
    statements: ClientStatements,
    mode: Mode,
    /// What the client's SQL extensions set.
    routing: SessionRouting,
    /// The last message forwarded to the server ended a request (Query or Sync): what
    /// comes next starts a new one, which may be an SQL extension.
    request_boundary: bool,
    /// The client's named statements that are SQL extensions (name → SQL): answered by
    /// the pooler whenever they are bound.
    command_statements: LazyMap<String, String>,
    /// Boxed: rare, and the client's state is kept small while it is idle.
    held_begin: Option<Box<HeldBegin>>,
    /// What few clients have (boxed: an idle client's state is kept small).
    rare: Option<Box<Rare>>,
}

/// Client state few clients have.
#[derive(Default)]
struct Rare {
    /// Read-your-writes: the primary's WAL position after the client's last write.
    min_lsn: u64,
    /// Transaction mode: the channels the client listens on.
    listening: Option<Listening>,
}

/// What an idle client's wait returns when it woke to deliver notifications (not a read).
const NOTIFIED: usize = usize::MAX;

/// How a pool's named statements are handled.
fn statement_mode(pool: &UserPool) -> Mode {
    match (pool.mode, pool.statement_cache) {
        (PoolMode::Session, _) => Mode::PassThrough,
        (PoolMode::Transaction, 0) => Mode::Pin,
        (PoolMode::Transaction, _) => Mode::Rewrite,
    }
}

impl Client {
    /// The client of a pool that just logged in, with what it sent after its login.
    #[expect(
        clippy::boxed_local,
        reason = "the login's box is freed here, not when the client leaves"
    )]
    pub(super) fn new(conn: Conn, session: Box<Session>, pending: BytesMut) -> Box<Client> {
        let mode = statement_mode(&session.pool);
        Box::new(Client {
            stream: conn.stream,
            session: *session,
            app: conn.app,
            _counted: conn.counted,
            buf: pending,
            scanner: Scanner::with_cap(REWRITE_CAP),
            statements: ClientStatements::default(),
            mode,
            routing: SessionRouting::default(),
            request_boundary: true,
            command_statements: LazyMap::default(),
            held_begin: None,
            rare: None,
        })
    }

    /// Serves the client until it is idle with nothing to read (`Some`: its task then
    /// waits with [`Client::poll_request`]) or done (`None`: it left or was closed, and
    /// was told why). `woke` is what that wait ended with.
    pub(super) async fn until_idle(
        self: Box<Self>,
        woke: Option<Result<usize, ClientError>>,
    ) -> Option<Box<Self>> {
        self.serve_until_idle(woke, None).await
    }

    /// Serves a client that just logged in, holding `bound` (session mode: its server from
    /// the login on) if given, until it is idle or done as [`Client::until_idle`].
    pub(super) async fn start(self: Box<Self>, bound: Option<Server>) -> Option<Box<Self>> {
        let bound = bound.map(|server| {
            let mut flow = Flow::new(Instant::now());
            flow.query_started = None;
            Box::new(Held {
                server,
                flow,
                scan: Scanner::default(),
                wrote: false,
            })
        });
        self.serve_until_idle(None, bound).await
    }

    async fn serve_until_idle(
        mut self: Box<Self>,
        woke: Option<Result<usize, ClientError>>,
        bound: Option<Box<Held>>,
    ) -> Option<Box<Self>> {
        let error = match self.busy(woke, bound).await {
            Ok(true) => return Some(self),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        let tag = self.tag();
        if self.app.config().general.log_client_disconnections {
            let info = &self.session.info;
            tag.in_scope(
                || tracing::info!(user = %info.user, database = %info.database, "client disconnected"),
            );
        }
        if let Some(e) = error {
            super::report(&mut self.stream, e)
                .instrument(tag.span())
                .await;
        }
        None
    }

    /// Who the client is in the log.
    fn tag(&self) -> ClientTag {
        ClientTag::of(&self.session.info)
    }

    /// The pooling loop, from a wake-up to the next idle wait: `true` when the client is
    /// idle and its read buffer given back, `false` when it left.
    async fn busy(
        &mut self,
        woke: Option<Result<usize, ClientError>>,
        bound: Option<Box<Held>>,
    ) -> Result<bool, ClientError> {
        if let Some(read) = woke {
            if read? == 0 {
                return Ok(false);
            }
        }
        let mut held = bound;
        if let Some(h) = &held {
            self.session.info.hold_server(Some(h.server.cancel.clone()));
        }
        loop {
            if held.is_none() {
                self.deliver_notifications().await?;
            }
            if held.is_none() && self.buf.is_empty() {
                if self.app.shutting_down() && self.held_begin.is_none() {
                    return Err(shutdown_error());
                }
                crate::net::give_back_read_buffer(std::mem::take(&mut self.buf));
                return Ok(true);
            }
            if !self.request(&mut held).await? {
                return Ok(false);
            }
            if held.is_none() {
                self.follow_reload();
                self.session.info.set_state(ClientState::Idle, Instant::now);
            }
        }
    }

    /// The idle client's wait, holding no read buffer: ready with what was read (0: the
    /// client left) or the interrupt that ended it (KILL, shutdown).
    pub(super) fn poll_request(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<usize, ClientError>> {
        // Shutdown waits for a held BEGIN's transaction to end.
        let wanted = match self.held_begin {
            None => Interrupt::KILLED | Interrupt::SHUTDOWN,
            Some(_) => Interrupt::KILLED,
        };
        if let Poll::Ready(raised) = self.session.info.interrupt.poll(cx, wanted) {
            return Poll::Ready(Err(if raised & Interrupt::KILLED != 0 {
                killed_error()
            } else {
                shutdown_error()
            }));
        }
        if let Some(listening) = self.rare.as_mut().and_then(|r| r.listening.as_mut()) {
            if listening.poll_arrived(cx).is_ready() {
                return Poll::Ready(Ok(NOTIFIED));
            }
        }
        self.stream
            .poll_wait_and_read(cx, &mut self.buf)
            .map_err(ClientError::from)
    }

    /// Sends the client the notifications that arrived for it (between its transactions,
    /// where PostgreSQL delivers them too).
    async fn deliver_notifications(&mut self) -> Result<(), ClientError> {
        let Some(listening) = self.rare.as_mut().and_then(|r| r.listening.as_mut()) else {
            return Ok(());
        };
        let arrived = listening.take();
        if !arrived.is_empty() {
            self.stream.send(&arrived).await?;
        }
        Ok(())
    }

    /// Serves what the client sent: takes a server for it if none is held (unless the
    /// pooler answers it), then relays; `false` when the client is done.
    async fn request(&mut self, held: &mut Option<Box<Held>>) -> Result<bool, ClientError> {
        if held.is_none() {
            *held = match self.idle().await? {
                Idle::Exit => return Ok(false),
                Idle::Answered => return Ok(true),
                Idle::Route(route, begin, routed) => self.take_server(route, begin, routed).await?,
            };
            let Some(h) = held else {
                return Ok(true);
            };
            self.session.info.hold_server(Some(h.server.cancel.clone()));
        }
        self.serve(held).await
    }

    /// Relays until the held server is released or lost; `false` when the client is done.
    async fn serve(&mut self, held: &mut Option<Box<Held>>) -> Result<bool, ClientError> {
        let pool_mode = self.session.pool.mode;
        let Some(h) = held.as_mut() else {
            return Ok(true);
        };
        let end = self.relay(&mut h.server, &mut h.flow, &mut h.scan).await;
        match end {
            End::Released => {
                self.session.info.hold_server(None);
                if let Some(mut h) = held.take() {
                    self.note_write(&mut h).await;
                    self.keep_changed_settings(&mut h).await;
                    checkin(h.server, pool_mode).await;
                }
            }
            End::Intercept => {
                let status = h.flow.status;
                if self.close_command_statement(status).await?
                    || self.answer_statement_sql(status).await?
                    || self.answer_listen(status).await?
                {
                    return Ok(true);
                }
                let changed = self.answer_command(status).await?;
                if changed && pool_mode == PoolMode::Session {
                    // A new target: give the server back, the next query takes one there.
                    self.session.info.hold_server(None);
                    if let Some(h) = held.take() {
                        checkin(h.server, pool_mode).await;
                    }
                }
            }
            End::IdleInTransaction => {
                self.session.info.hold_server(None);
                if let Some(h) = held.take() {
                    abandon(h.server, &h.flow, true, pool_mode).await;
                }
                return Err(PgError::fatal(
                    "25P03",
                    "terminating connection due to idle-in-transaction timeout (idle_client_in_transaction_timeout)",
                )
                .into());
            }
            End::ClientGone => {
                self.session.info.hold_server(None);
                if let Some(h) = held.take() {
                    let clean =
                        h.flow.settled() && self.scanner.at_boundary() && h.scan.at_boundary();
                    abandon(h.server, &h.flow, clean, pool_mode).await;
                }
                return Ok(false);
            }
            End::ServerGone(e) => {
                self.session.info.hold_server(None);
                self.tag()
                    .in_scope(|| tracing::warn!(error = %e, "server connection lost"));
                if let Some(h) = held.take() {
                    drop(Object::take(h.server));
                    // Part of a message reached the client: nothing more can be said.
                    if !h.scan.at_boundary() {
                        return Err(ClientError::Gone);
                    }
                    self.server_lost(e, &h.flow, pool_mode).await?;
                }
            }
            End::Fatal(e) => {
                self.session.info.hold_server(None);
                if let Some(h) = held.take() {
                    drop(Object::take(h.server));
                }
                return Err(e.into());
            }
        }
        Ok(true)
    }
}

/// Why forwarding a server's bytes stopped short of what was read.
enum Stop {
    /// The server sent this error and is done: a FATAL, or an error to a BEGIN the pooler
    /// had answered.
    Ended(ServerError),
    /// A reply to be swallowed was streamed (too large to read whole).
    Unswallowable(u8),
}

/// A server a client holds, and where their conversation stands.
struct Held {
    server: Server,
    flow: Flow,
    scan: Scanner,
    /// The transaction was routed to the primary (a write, for read-your-writes).
    wrote: bool,
}

/// What an idle client asked for.
enum Idle {
    /// It left.
    Exit,
    /// The pooler answered (an SQL extension, a held BEGIN, a known prepare), or more
    /// bytes are needed.
    Answered,
    /// A server is needed for this route; with the BEGIN held back, if any, and the
    /// parser's analysis of the Query, if it made one.
    Route(Route, Option<BytesMut>, Option<Routed>),
}

/// What the pooler answers for a BEGIN it holds back.
enum HeldReply {
    /// Hold this BEGIN (read only or not).
    Begin(bool),
    /// The held transaction ends before it started: COMMIT or ROLLBACK.
    End(&'static str),
}

/// A BEGIN the pooler answered itself: the statement after it decides the server.
struct HeldBegin {
    message: BytesMut,
    read_only: bool,
}

/// Reads more client or server bytes into `buf`, growing it in steps.
async fn read(stream: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    crate::net::make_room(buf);
    stream.read_buf(buf).await
}

/// Returns a server to its pool: reset first if its session state changed (always in
/// session mode); closed if the reset fails.
async fn checkin(mut server: Server, mode: PoolMode) {
    if let Some(stats) = &server.stats {
        stats.info.set_state(ServerState::Idle);
    }
    if mode == PoolMode::Session {
        server.dirty = Dirty::all();
    }
    if server.dirty.any() {
        if let Err(e) = server.reset().await {
            tracing::warn!(server = %server.addr, error = %e, "server reset failed; closing the connection");
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
            tracing::warn!(server = %server.addr, error = %e, "rollback of an abandoned transaction failed; closing the connection");
            drop(Object::take(server));
            return;
        }
    }
    checkin(server, mode).await;
}

impl Client {
    /// Relays between the client and `server` until one of the ends in [`End`]. A ban of
    /// the server's address during the relay ends it too.
    async fn relay(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> End {
        // A ban of the address raises BANNED on the clients relaying there.
        let address = server.stats.as_ref().map_or(0, |s| s.health.id);
        self.session.info.interrupt.relay_to(address);
        let end = self.relay_until(server, flow, server_scan).await;
        self.session.info.interrupt.relay_to(0);
        end
    }

    async fn relay_until(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> End {
        let mode = self.session.pool.mode;
        let idle_in_transaction = self.app.config().general.idle_client_in_transaction_timeout;
        if let Some(end) = self.forward_client(server, flow, server_scan).await {
            return end;
        }
        loop {
            let settled = flow.settled() && self.scanner.at_boundary();
            if mode == PoolMode::Transaction
                && settled
                && !(self.mode == Mode::Pin && self.statements.pins())
                && flow.status == b'I'
                && server.buf.is_empty()
                && server_scan.at_boundary()
            {
                if !self.pinned_by(server) {
                    // Anything the client already sent is a new request: routed afresh.
                    return End::Released;
                }
                self.session
                    .info
                    .set_state(ClientState::Pinned, Instant::now);
            }
            if settled && self.has_complete_message() {
                // Requests held back behind an SQL extension (see `extension_cut`).
                if let Some(end) = self.forward_client(server, flow, server_scan).await {
                    return end;
                }
                continue;
            }
            crate::net::make_room(&mut self.buf);
            crate::net::make_room(&mut server.buf);
            // A client idle inside a transaction holds a server: bounded by
            // idle_client_in_transaction_timeout.
            let idle_limit = (settled && flow.status != b'I' && idle_in_transaction > 0)
                .then(|| std::time::Duration::from_millis(idle_in_transaction));
            tokio::select! {
                _ = async { match idle_limit {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                } } => return End::IdleInTransaction,
                r = self.stream.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return End::ClientGone,
                    Ok(_) => {
                        if let Some(end) = self.forward_client(server, flow, server_scan).await {
                            return end;
                        }
                    }
                },
                raised = self.session.info.interrupt.wait(Interrupt::KILLED | Interrupt::BANNED) => {
                    if raised & Interrupt::KILLED != 0 {
                        return End::Fatal(killed_error_pg());
                    }
                    // The address was banned (health check failed, or an operator's BAN):
                    // whatever is in flight there fails now rather than hang.
                    let reason = server.stats.as_ref().and_then(|s| s.health.ban_info()).map(|b| b.0).unwrap_or_default();
                    return End::ServerGone(BackendError::Banned { addr: server.addr.to_string(), reason });
                }
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

    /// Session state the server keeps for this client (a temporary table, a WITH HOLD
    /// cursor, a session advisory lock, a statement of SQL `PREPARE`) holds the server
    /// between transactions, with `pin_session_state`, until a reset command clears it or
    /// the client leaves. (With the statement cache off, protocol-level statements pin
    /// their server on their own: `Mode::Pin`.)
    fn pinned_by(&self, server: &ServerConn) -> bool {
        let d = server.dirty;
        let prepared = d.prepared && self.mode == Mode::Rewrite;
        self.session.pool.pin_session_state && (d.temp || d.cursors || d.advisory || prepared)
    }

    /// Forwards complete (or streamed) client messages to the server, rewriting the ones
    /// that name prepared statements, then sends the client any replies made up for them.
    async fn forward_client(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> Option<End> {
        if flow.settled() && self.scanner.at_boundary() {
            match crate::wire::frame::header(&self.buf) {
                // A small Query or Parse still arriving: it may be an SQL extension, which
                // must not reach the server. Wait for the rest.
                Ok(Some((b'Q' | b'P', len))) if len < 64 * 1024 && self.buf.len() < len + 1 => {
                    return None
                }
                Ok(Some((b'Q' | b'P' | b'B' | b'D', _))) if self.command_request().is_some() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                Ok(Some((b'C', _))) if self.closes_command_statement() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                Ok(Some((b'Q' | b'P', _))) if self.answers_statement_sql() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                Ok(Some((b'Q' | b'P', _))) if self.listen_request().is_some() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                _ => {}
            }
        }
        // The router's analysis is of one message of this first batch, found by its offset.
        let routed = flow.routed.take();
        let routed_at = |start: usize| {
            routed
                .as_ref()
                .filter(|r| r.at == start)
                .map(|r| &*r.analysis)
        };
        let cut = self.extension_cut();
        let mut last = None;
        let last_tag = &mut last;
        let mut terminate_at = None;
        let mut failure = None;
        let mut out = BytesMut::new();
        let mut replacement = BytesMut::new();
        let mut copied = 0;
        let mode = self.mode;
        let statements = &mut self.statements;
        let buf = &self.buf;
        let server_statements = &mut server.statements;
        let epoch = self.session.pool.schema_epoch.get();
        let dirty = &mut server.dirty;
        let app: &App = &self.app;
        let effects = &app.effects;
        let tracks_state = mode != Mode::PassThrough;
        let scanned = self.scanner.scan(
            &buf[..cut],
            |tag| matches!(tag, b'P' | b'B' | b'D' | b'C') || (tracks_state && tag == b'Q'),
            |tag, body, start| {
                tracing::trace!(tag = %char::from(tag), len = body.map(<[u8]>::len), "client message");
                *last_tag = Some(tag);
                match tag {
                b'Q' => {
                    // SQL PREPARE/EXECUTE of the client's statements, renamed.
                    let rewritten = match (mode, body, server_statements.as_mut()) {
                        (Mode::Rewrite, Some(b), Some(server)) => statements.rewrite_sql(
                            query_bytes(b),
                            server,
                            epoch,
                            &mut flow.replies,
                            &mut replacement,
                        ),
                        _ => None,
                    };
                    if let Some(r) = rewritten {
                        if let Some(e) = r.runs.and_then(|stmt| effects.of(&stmt.body, None)) {
                            state::note(&mut flow.changed_settings, dirty, &e);
                        }
                        flow.replies.push(Expect::Query);
                        if let Some((server_name, client_name)) = r.defines {
                            flow.replies.push(Expect::Defines(server_name, client_name));
                        }
                        flow.query_started.get_or_insert_with(Instant::now);
                        messages::query(&mut replacement, &[r.text.as_bytes()]);
                        if out.capacity() == 0 {
                            out.reserve(buf.len() + 256);
                        }
                        out.extend_from_slice(&buf[copied..start]);
                        out.extend_from_slice(&replacement);
                        replacement.clear();
                        copied = start + 5 + body.map_or(0, <[u8]>::len);
                        return;
                    }
                    if tracks_state {
                        let idle = flow.replies.is_empty() && flow.status == b'I';
                        let routed = routed_at(start);
                        match body.map(|b| (effects.of(b, routed), b)) {
                            None => *dirty = Dirty::all(),
                            Some((None, _)) => {}
                            // A plain SET outside a transaction: kept once it succeeds.
                            Some((Some(e), t))
                                if idle
                                    && state::only_settings(&e)
                                    && flow.remember.is_none()
                                    && !effects.controls_transaction(t, routed) =>
                            {
                                flow.remember = Some(e);
                            }
                            Some((Some(e), _)) => {
                                state::note(&mut flow.changed_settings, dirty, &e);
                            }
                        }
                    }
                    flow.replies.push(Expect::Query);
                    flow.query_started.get_or_insert_with(Instant::now);
                }
                b'F' => {
                    flow.replies.push(Expect::FunctionCall);
                    flow.query_started.get_or_insert_with(Instant::now);
                }
                b'S' => {
                    flow.replies.push_sync(|server_name, client_name| {
                        if let Some(server) = server_statements.as_mut() {
                            server.forget(server_name);
                        }
                        statements.undefine(client_name);
                    });
                    flow.batch = false;
                    flow.query_started.get_or_insert_with(Instant::now);
                }
                b'E' => {
                    flow.replies.push_execute();
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
                            // A renamed SQL PREPARE leaves no state of the client's.
                            let renamed = mode == Mode::Rewrite
                                && statements.renames(query_bytes(rest));
                            if let Some(e) =
                                effects.of(rest, routed_at(start)).filter(|_| !renamed)
                            {
                                state::note(&mut flow.changed_settings, dirty, &e);
                            }
                        }
                    }
                    if mode == Mode::Rewrite && replacement.capacity() == 0 {
                        // Room for a rewritten message in one allocation, not a chain of
                        // reallocations as its fields are appended.
                        replacement.reserve(body.len() + 128);
                    }
                    match statements.on_message(
                        mode,
                        tag,
                        body,
                        server_statements.as_mut(),
                        epoch,
                        &mut flow.replies,
                        &mut replacement,
                    ) {
                        Ok(Outcome::Keep) => {}
                        Ok(outcome) => {
                            if let Outcome::Runs(stmt) = outcome {
                                if let Some(e) = effects.of(&stmt.body, None) {
                                    state::note(&mut flow.changed_settings, dirty, &e);
                                }
                            }
                            if out.capacity() == 0 {
                                out.reserve(buf.len() + 256);
                            }
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
                other if !crate::wire::frame::is_frontend_tag(other) => {
                    failure.get_or_insert(PgError::fatal("08P01", crate::wire::frame::invalid_frontend_tag(other)));
                }
                _ => {}
            }},
        );
        let n = match scanned {
            Ok(n) => n,
            Err(e) => return Some(End::Fatal(PgError::fatal("08P01", e.to_string()))),
        };
        if let Some(e) = failure {
            return Some(End::Fatal(e));
        }
        if let Some(tag) = last {
            self.request_boundary = matches!(tag, b'Q' | b'S');
        }
        if let Some(stats) = &server.stats {
            stats.counters.bytes(n as u64, 0);
            stats.info.bytes_sent.fetch_add(n as u64, Relaxed);
        }
        let send = terminate_at.unwrap_or(n);
        let bytes: &[u8] = if copied == 0 {
            &self.buf[..send]
        } else {
            out.extend_from_slice(&self.buf[copied.min(send)..send]);
            &out
        };
        // Usually the socket takes it all at once; what it does not take is written while
        // the server's replies keep flowing (see `drain_to_server`).
        let written = match server.stream.try_write(bytes) {
            Ok(w) => w,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(source) => {
                let addr = server.addr.to_string();
                return Some(End::ServerGone(BackendError::Io { addr, source }));
            }
        };
        let rest = (written < bytes.len()).then(|| BytesMut::from(&bytes[written..]));
        self.buf.advance(n);
        if rest.is_some() || server.stream.wants_flush() {
            let rest = rest.unwrap_or_default();
            if let Some(end) = self.drain_to_server(server, flow, server_scan, rest).await {
                return Some(end);
            }
        }
        if terminate_at.is_some() {
            return Some(End::ClientGone);
        }
        let mut synth = BytesMut::new();
        flow.replies.take_synth(|tag| synth_reply(&mut synth, tag));
        if !synth.is_empty() && self.stream.send(&synth).await.is_err() {
            return Some(End::ClientGone);
        }
        None
    }

    /// Writes `rest` (and TLS records rustls holds back) to the server while relaying what
    /// the server sends meanwhile. A server blocked sending results stops reading, so
    /// writing a large pipeline without reading would deadlock both.
    async fn drain_to_server(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        scan: &mut Scanner,
        mut rest: BytesMut,
    ) -> Option<End> {
        let gone = |server: &ServerConn, source| {
            End::ServerGone(BackendError::Io {
                addr: server.addr.to_string(),
                source,
            })
        };
        while !rest.is_empty() || server.stream.wants_flush() {
            crate::net::make_room(&mut server.buf);
            // Both directions polled with this task's waker: whichever moves first wakes it
            // (through TLS too, where socket readiness says little about rustls' buffers).
            let (stream, buf) = (&mut server.stream, &mut server.buf);
            let (wrote, read) = std::future::poll_fn(|cx| {
                let wrote = if rest.is_empty() {
                    Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| 0)
                } else {
                    Pin::new(&mut *stream).poll_write(cx, &rest)
                };
                let read = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf);
                if wrote.is_pending() && read.is_pending() {
                    return Poll::Pending;
                }
                Poll::Ready((wrote, read))
            })
            .await;
            match wrote {
                Poll::Ready(Ok(0)) if !rest.is_empty() => {
                    return Some(gone(server, std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(w)) => rest.advance(w),
                Poll::Ready(Err(e)) => return Some(gone(server, e)),
                Poll::Pending => {}
            }
            match read {
                Poll::Ready(Ok(0)) => {
                    let addr = server.addr.to_string();
                    return Some(End::ServerGone(BackendError::Closed { addr }));
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(end) = self.forward_server(server, flow, scan).await {
                        return Some(end);
                    }
                }
                Poll::Ready(Err(e)) => return Some(gone(server, e)),
                Poll::Pending => {}
            }
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
        // Where the server's stream stops making sense for this client, and why: nothing
        // from there on is forwarded (see `Stop`).
        let mut stop: Option<(usize, Stop)> = None;
        // A reply the pooler swallows must be seen whole, so it can be dropped whole.
        let swallowing = flow.replies.swallows();
        let tracks_state = self.mode != Mode::PassThrough;
        let known = &self.session.pool.known_statements;
        let epoch = &self.session.pool.schema_epoch;
        let client_statements = &mut self.statements;
        let info = &self.session.info;
        let ServerConn {
            buf,
            dirty,
            statements,
            applied,
            stats,
            ..
        } = server;
        let scanned = scan.scan(
            buf,
            |tag| {
                swallowing
                    || matches!(
                        tag,
                        b'Z' | b'C' | b'1' | b'2' | b'3' | b'T' | b'n' | b'I' | b's' | b'E'
                    )
            },
            |tag, body, start| {
                if stop.is_some() {
                    return;
                }
                if tag == b'E' {
                    if let Some(b) = body {
                        // A FATAL ends the server: the client hears of it once, from
                        // `server_lost`. An error to a BEGIN the pooler answered already
                        // leaves the client's transaction without a server transaction.
                        if ServerError::ends_session(b) || flow.replies.awaits_held_begin() {
                            stop = Some((start, Stop::Ended(ServerError::new(b))));
                            info.error_count.fetch_add(1, Relaxed);
                            if let Some(st) = stats.as_ref() {
                                st.counters.error();
                            }
                            return;
                        }
                    }
                }
                match tag {
                    b'Z' => {
                        flow.status = body.and_then(|b| b.first().copied()).unwrap_or(b'I');
                        flow.copy = false;
                        let now = Instant::now();
                        let started = flow.query_started.take().unwrap_or(now);
                        if let Some(st) = stats.as_ref() {
                            st.counters
                                .query(now.duration_since(started).as_micros() as u64);
                            st.info.query_count.fetch_add(1, Relaxed);
                            if flow.status == b'I' {
                                st.counters
                                    .xact(now.duration_since(flow.xact_started).as_micros() as u64);
                                st.info.xact_count.fetch_add(1, Relaxed);
                            }
                        }
                        info.query_count.fetch_add(1, Relaxed);
                        if flow.status == b'I' {
                            info.xact_count.fetch_add(1, Relaxed);
                            flow.xact_started = now;
                            flow.ddl = false;
                        }
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
                    b'E' => {
                        flow.failed = true;
                        if let (true, Some(b)) = (tracks_state, body) {
                            if let (Some(code), Some(message)) = (field(b, b'C'), field(b, b'M')) {
                                if epoch.on_error(code, message) {
                                    if let Some(s) = statements.as_mut() {
                                        s.age();
                                    }
                                }
                            }
                        }
                        info.error_count.fetch_add(1, Relaxed);
                        if let Some(st) = stats.as_ref() {
                            st.counters.error();
                        }
                    }
                    b'G' | b'H' | b'W' => flow.copy = true,
                    // A reported setting changed, however (set_config(), a function, a
                    // RESET): the client's settings are read back at release.
                    b'S' if tracks_state => {
                        flow.changed_settings.reported();
                        dirty.settings = true;
                    }
                    b'C' if tracks_state && body.is_some_and(|b| epoch.on_command(b, flow.ddl)) => {
                        flow.ddl = true;
                    }
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
                tracing::trace!(tag = %char::from(tag), ?action, "server message");
                if action == Action::Swallow {
                    let Some(end) = end else {
                        // Larger than a message the pooler reads whole: it cannot be
                        // dropped without cutting the client's stream, so nothing of it
                        // is forwarded and the server is given up.
                        stop = Some((start, Stop::Unswallowable(tag)));
                        return;
                    };
                    out.extend_from_slice(&buf[copied..start]);
                    copied = end;
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
        let n = match (scanned, &stop) {
            (_, Some((at, _))) => *at,
            (Ok(n), None) => n,
            (Err(e), None) => {
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
            // The client's DISCARD ALL resets its own remembered settings, nobody else's,
            // and ends its LISTENs (UNLISTEN *), as on PostgreSQL.
            self.session.params = self.session.startup_params.clone();
            if let Some(rare) = &mut self.rare {
                rare.listening = None;
            }
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
            self.stream.send(&server.buf[..n]).await
        } else {
            out.extend_from_slice(&server.buf[copied.min(n)..n]);
            self.stream.send(&out).await
        };
        server.buf.advance(n);
        if let Some(stats) = &server.stats {
            stats.counters.bytes(0, n as u64);
            stats.info.bytes_received.fetch_add(n as u64, Relaxed);
        }
        if result.is_err() {
            return Some(End::ClientGone);
        }
        let addr = server.addr.to_string();
        match stop? {
            (_, Stop::Ended(error)) => {
                Some(End::ServerGone(BackendError::Terminated { addr, error }))
            }
            (_, Stop::Unswallowable(tag)) => {
                // The client got nothing of that message: its stream is whole.
                *scan = Scanner::default();
                let reason = format!(
                    "reply '{}' to a statement the pooler added is too large to drop",
                    char::from(tag)
                );
                Some(End::ServerGone(BackendError::Protocol { addr, reason }))
            }
        }
    }

    /// Serves an idle client's next request without a server where the pooler can (SQL
    /// extensions, a BEGIN held back until the statement after it, a known prepare), else
    /// says where it goes.
    async fn idle(&mut self) -> Result<Idle, ClientError> {
        if self.buf[0] == b'X' {
            return Ok(Idle::Exit);
        }
        if !crate::wire::frame::is_frontend_tag(self.buf[0]) {
            return Err(PgError::fatal(
                "08P01",
                crate::wire::frame::invalid_frontend_tag(self.buf[0]),
            )
            .into());
        }
        let in_transaction = self.held_begin.is_some();
        if !in_transaction && self.mode == Mode::Rewrite && self.prepare_locally().await? {
            return Ok(Idle::Answered);
        }
        let status = if in_transaction { b'T' } else { b'I' };
        if self.close_command_statement(status).await?
            || self.answer_statement_sql(status).await?
            || self.answer_listen(status).await?
        {
            return Ok(Idle::Answered);
        }
        if self.command_request().is_some() {
            self.answer_command(status).await?;
            return Ok(Idle::Answered);
        }
        let pool = self.session.pool.clone();
        let statements = &self.statements;
        let request = route::first_request(&self.buf, REWRITE_CAP, |name| statements.sql_of(name))?;
        let Some(request) = request else {
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Ok(Idle::Exit);
            }
            return Ok(Idle::Answered);
        };
        if let Request::Query(sql) = request {
            if let Some(reply) = self.held_begin_reply(sql, &pool) {
                let (_, _, total) =
                    crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
                let message = self.buf.split_to(total);
                let mut out = BytesMut::new();
                match reply {
                    HeldReply::Begin(read_only) => {
                        self.held_begin = Some(Box::new(HeldBegin { message, read_only }));
                        route::command_complete(&mut out, "BEGIN");
                        messages::ready_for_query(&mut out, b'T');
                    }
                    HeldReply::End(tag) => {
                        self.held_begin = None;
                        route::command_complete(&mut out, tag);
                        messages::ready_for_query(&mut out, b'I');
                    }
                }
                self.stream.send(&out).await?;
                return Ok(Idle::Answered);
            }
        }
        let mut decided = route::decide(&request, &self.routing, &pool);
        if let (Ok((r, _)), Some(begin)) = (&mut decided, &self.held_begin) {
            let routing = &pool.router.routing;
            if !begin.read_only
                && self.routing.parser_enabled(routing)
                && routing.read_write_splitting
            {
                r.role = Some(Role::Primary);
            }
        }
        match decided {
            Ok((r, routed)) => Ok(Idle::Route(
                r,
                self.held_begin.take().map(|b| b.message),
                routed,
            )),
            Err(e) => {
                self.held_begin = None;
                self.reject(e, false).await?;
                Ok(Idle::Answered)
            }
        }
    }

    /// With several shards, a lone BEGIN waits for the statement after it (whose keys or
    /// hints pick the shard): the pooler answers it, and answers COMMIT/ROLLBACK of a
    /// transaction that never got further.
    fn held_begin_reply(&self, sql: &str, pool: &UserPool) -> Option<HeldReply> {
        if pool.mode != PoolMode::Transaction || pool.shards.len() < 2 {
            return None;
        }
        let first = sql.trim_start().get(..5)?.to_ascii_lowercase();
        if !matches!(
            first.as_str(),
            "begin" | "start" | "commi" | "rollb" | "end" | "end;" | "abort"
        ) {
            return None;
        }
        let analysis = pool.router.analyze(sql);
        let c = &analysis.classification;
        if c.statement_count != 1 {
            return None;
        }
        match (c.begin, self.held_begin.is_some()) {
            (Some(read_only), false) => Some(HeldReply::Begin(read_only)),
            (None, true) if c.ends_transaction => Some(HeldReply::End(
                if first.starts_with("rollb") || first == "abort" {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                },
            )),
            _ => None,
        }
    }

    /// Settings the client changed while it held the server: their values now, read from
    /// the server before it is reset, become the client's own (applied on every server it
    /// gets), as PostgreSQL keeps a committed SET for the session. Where the change is not
    /// named in the text (`set_config()` with bound arguments, a function, a setting the
    /// server reported changing), every setting the session set is read.
    async fn keep_changed_settings(&mut self, held: &mut Held) {
        let changed = std::mem::take(&mut held.flow.changed_settings);
        if changed.is_empty() {
            return;
        }
        let Some(names) = changed.names() else {
            let read = held
                .server
                .query_rows("SELECT name, current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session'")
                .await;
            match read {
                Ok(rows) => {
                    let session = rows.into_iter().filter_map(|row| {
                        let mut row = row.into_iter();
                        Some((row.next()??, row.next()??))
                    });
                    self.session.params =
                        state::from_session_settings(&self.session.startup_params, session);
                }
                Err(e) => self.tag().in_scope(|| tracing::warn!(error = %e, "could not read the settings the client changed in its transaction")),
            }
            return;
        };
        let reads: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "current_setting({}, true)",
                    crate::backend::quote_literal(n)
                )
            })
            .collect();
        match held
            .server
            .query_row(&format!("SELECT {}", reads.join(", ")))
            .await
        {
            Ok(values) => {
                let effects = SessionEffects {
                    set: names
                        .iter()
                        .cloned()
                        .zip(values)
                        .filter_map(|(n, v)| Some((n, Some(v?))))
                        .collect(),
                    ..SessionEffects::default()
                };
                state::remember(
                    &mut self.session.params,
                    &self.session.startup_params,
                    &effects,
                );
            }
            Err(e) => {
                self.tag().in_scope(|| tracing::warn!(error = %e, "could not read the settings the client changed in its transaction"))
            }
        }
    }

    /// Read-your-writes: after a write transaction on a primary, remembers the primary's WAL
    /// position so the client's next reads skip replicas that have not replayed it. One
    /// extra round trip per write transaction, only with `read_your_writes = true`.
    async fn note_write(&mut self, held: &mut Held) {
        let pool = &self.session.pool;
        if !pool.read_your_writes || !held.wrote || !pool.is_primary_addr(&held.server.addr) {
            return;
        }
        match held
            .server
            .query_row("SELECT pg_current_wal_insert_lsn()::text")
            .await
        {
            Ok(row) => {
                if let Some(lsn) = row
                    .first()
                    .and_then(|v| v.as_deref())
                    .and_then(crate::pool::health::parse_lsn)
                {
                    let rare = self.rare.get_or_insert_default();
                    rare.min_lsn = rare.min_lsn.max(lsn);
                }
            }
            Err(e) => {
                self.tag().in_scope(|| tracing::warn!(error = %e, "could not read the primary's WAL position for read-your-writes"))
            }
        }
    }

    /// Moves the client to its pool's replacement after a reload changed the pool.
    fn follow_reload(&mut self) {
        if !self.session.pool.retired.load(Relaxed) {
            return;
        }
        let pools = self.app.pools();
        if let Some(new) = pools.get(&self.session.info.database, &self.session.info.user) {
            self.session.pool = new.clone();
            self.mode = statement_mode(new);
        }
    }

    /// Checks out a server for `route` and brings it in line with the client (parameters,
    /// a held BEGIN). On failure the client gets the error for its request.
    async fn take_server(
        &mut self,
        route: Route,
        begin: Option<BytesMut>,
        routed: Option<Routed>,
    ) -> Result<Option<Box<Held>>, ClientError> {
        let pool = self.session.pool.clone();
        let info = self.session.info.clone();
        let waited = Instant::now();
        info.set_state(ClientState::Waiting, || waited);
        let min_lsn = self.rare.as_ref().map_or(0, |r| r.min_lsn);
        let mut got = waited;
        let taken = pool
            .take_with_params(route, min_lsn, &self.session.params, |server| {
                got = Instant::now();
                if let Some(stats) = &server.stats {
                    stats
                        .counters
                        .wait(got.duration_since(waited).as_micros() as u64);
                    stats.info.set_state(ServerState::Active);
                }
            })
            .await;
        let mut server = match taken {
            Ok(server) => server,
            Err(TakeError::Checkout(e)) => {
                info.set_state(ClientState::Idle, Instant::now);
                info.error_count.fetch_add(1, Relaxed);
                self.reject(e, false).await?;
                return Ok(None);
            }
            Err(TakeError::Params(server, e)) => {
                let to_client = e.to_client();
                match e {
                    BackendError::Query { .. } if !e.lost_connection() => {
                        checkin(server, pool.mode).await
                    }
                    _ => drop(Object::take(server)),
                }
                info.set_state(ClientState::Idle, Instant::now);
                self.reject(to_client, false).await?;
                return Ok(None);
            }
        };
        info.set_state(ClientState::Active, || got);
        let mut flow = Flow::new(got);
        flow.routed = routed;
        if let Some(begin) = begin {
            if let Err(e) = server.write_all(&begin).await {
                drop(Object::take(server));
                self.reject(e.to_client(), false).await?;
                return Ok(None);
            }
            // The client already has its BEGIN reply, and is in a transaction.
            flow.replies.push(Expect::SwallowQuery);
            flow.status = b'T';
        }
        Ok(Some(Box::new(Held {
            server,
            flow,
            scan: Scanner::default(),
            wrote: route.role == Some(Role::Primary),
        })))
    }

    /// Where to stop forwarding: before a request (after a Query or Sync) that is, or may
    /// still turn out to be, an SQL extension; the pooler answers it once the server has
    /// answered everything before it. The whole buffer otherwise.
    fn extension_cut(&self) -> usize {
        let buf = &self.buf[..];
        if !self.scanner.at_boundary() {
            return buf.len();
        }
        let candidate = |rest: &[u8]| {
            let small = matches!(crate::wire::frame::header(rest), Ok(Some((b'Q' | b'P' | b'B' | b'D', l))) if l < 64 * 1024);
            let complete =
                matches!(crate::wire::frame::header(rest), Ok(Some((_, l))) if rest.len() > l);
            small && (!complete || self.command_request_at(rest).is_some())
        };
        if self.request_boundary && candidate(buf) {
            return 0;
        }
        let mut pos = 0;
        while let Ok(Some((tag, len))) = crate::wire::frame::header(&buf[pos..]) {
            let next = pos + 1 + len;
            if next >= buf.len() {
                break;
            }
            if matches!(tag, b'Q' | b'S') {
                let rest = &buf[next..];
                let small = matches!(crate::wire::frame::header(rest), Ok(Some((b'Q' | b'P' | b'B' | b'D', l))) if l < 64 * 1024);
                let complete =
                    matches!(crate::wire::frame::header(rest), Ok(Some((_, l))) if rest.len() > l);
                if small && (!complete || self.command_request_at(rest).is_some()) {
                    return next;
                }
            }
            pos = next;
        }
        buf.len()
    }

    /// Whether the buffer starts with a whole message (or one long enough to be streamed),
    /// so forwarding it makes progress.
    fn has_complete_message(&self) -> bool {
        match crate::wire::frame::header(&self.buf) {
            Ok(Some((_, len))) => len > REWRITE_CAP || self.buf.len() > len,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Whether the buffer starts with a Close of a statement that is an SQL extension.
    fn closes_command_statement(&self) -> bool {
        match crate::wire::frame::whole(&self.buf, 64 * 1024) {
            Ok(Some((b'C', body, _))) if body.first() == Some(&b'S') => {
                crate::wire::startup::cstr(&body[1..])
                    .is_ok_and(|(name, _)| self.command_statements.contains_key(name))
            }
            _ => false,
        }
    }

    /// Answers Close messages (through their Sync) of statements that are SQL extensions:
    /// they never reached a server. Returns false, consuming nothing, when the request is
    /// anything else.
    async fn close_command_statement(&mut self, status: u8) -> Result<bool, ClientError> {
        if !self.closes_command_statement() {
            return Ok(false);
        }
        let (pos, names) = loop {
            let mut pos = 0;
            let mut names = Vec::new();
            let complete = loop {
                let Ok(next) = crate::wire::frame::whole(&self.buf[pos..], 64 * 1024) else {
                    // Too large to be a Close or Sync: not ours to answer.
                    return Ok(false);
                };
                let Some((tag, body, total)) = next else {
                    break false;
                };
                pos += total;
                match tag {
                    b'C' if body.first() == Some(&b'S') => {
                        let name =
                            crate::wire::startup::cstr(&body[1..]).map(|(n, _)| n.to_string());
                        match name {
                            Ok(n) if self.command_statements.contains_key(&n) => names.push(n),
                            _ => return Ok(false),
                        }
                    }
                    b'S' => break true,
                    _ => return Ok(false),
                }
            };
            if complete {
                break (pos, names);
            }
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        };
        let mut out = BytesMut::new();
        for name in &names {
            self.command_statements.remove(name);
            synth_reply(&mut out, b'3');
        }
        messages::ready_for_query(&mut out, status);
        self.buf.advance(pos);
        self.stream.send(&out).await?;
        Ok(true)
    }

    /// The SQL extension at the start of the buffer, if that is what it holds.
    fn command_request(
        &self,
    ) -> Option<(
        Result<pgcat_parser::Command, pgcat_parser::CommandError>,
        bool,
    )> {
        self.command_request_at(&self.buf)
    }

    fn command_request_at(
        &self,
        buf: &[u8],
    ) -> Option<(
        Result<pgcat_parser::Command, pgcat_parser::CommandError>,
        bool,
    )> {
        let named = &self.command_statements;
        route::command_request(buf, |name| named.get(name).map(String::as_str))
    }

    /// Answers the SQL extension at the start of the buffer (a Query, or an extended
    /// batch through its Sync). `status` is the client's transaction status. Returns true
    /// when the session's target changed.
    async fn answer_command(&mut self, status: u8) -> Result<bool, ClientError> {
        loop {
            let Some((command, extended)) = self.command_request() else {
                return Ok(false);
            };
            let pool = self.session.pool.clone();
            let before = self.routing;
            let mut trial = self.routing;
            let result = route::apply(&command, &mut trial, &pool, status != b'I');
            let mut out = BytesMut::new();
            let reply_status = if result.is_err() && status == b'T' {
                b'T'
            } else {
                status
            };
            match route::answer(
                &self.buf,
                extended,
                (route::column_of(&command), "SET"),
                &result,
                reply_status,
                &mut out,
            )? {
                Some(used) => {
                    if extended {
                        for (name, sql) in route::parsed_names(&self.buf[..used]) {
                            self.command_statements.insert(name, sql);
                        }
                    }
                    self.buf.advance(used);
                    self.routing = trial;
                    self.stream.send(&out).await?;
                    return Ok(self.routing != before);
                }
                None => {
                    if read(&mut self.stream, &mut self.buf).await? == 0 {
                        return Err(ClientError::Gone);
                    }
                }
            }
        }
    }

    /// The text of the request at the start of the buffer when it is a whole Query or an
    /// extended batch's whole unnamed Parse, and whether it is extended.
    fn request_text(&self) -> Option<(&str, bool)> {
        let (tag, body, _) = crate::wire::frame::whole(&self.buf, INSPECT_CAP).ok()??;
        match tag {
            b'Q' => Some((route::text(body), false)),
            b'P' => {
                let (name, sql) = crate::wire::startup::cstr(body).ok()?;
                name.is_empty().then(|| (route::text(sql), true))
            }
            _ => None,
        }
    }

    /// Reads until the request at the start of the buffer is whole (an extended one
    /// through its Sync), so that the pooler answers and applies it once.
    async fn read_request(&mut self, extended: bool) -> Result<(), ClientError> {
        let probe = |buf: &BytesMut| {
            route::answer(
                buf,
                extended,
                ("", ""),
                &Ok(None),
                b'I',
                &mut BytesMut::new(),
            )
        };
        while probe(&self.buf)?.is_none() {
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        }
        Ok(())
    }

    /// In `Rewrite` mode, the request at the start of the buffer is SQL the pooler answers
    /// about the client's statements (see [`ClientStatements::answer_sql`]).
    fn answers_statement_sql(&self) -> bool {
        self.mode == Mode::Rewrite
            && self
                .request_text()
                .is_some_and(|(sql, _)| self.statements.answers_sql(sql))
    }

    /// Answers SQL `DEALLOCATE name` of a statement the pooler manages for the client (the
    /// server knows it under the pooler's name) and `PREPARE` of a name in use as
    /// PostgreSQL would, without a server. `status` is the client's transaction status.
    /// False (consuming nothing) for anything else.
    async fn answer_statement_sql(&mut self, status: u8) -> Result<bool, ClientError> {
        let Some((_, extended)) = self.request_text().filter(|_| self.answers_statement_sql())
        else {
            return Ok(false);
        };
        self.read_request(extended).await?;
        let sql = self
            .request_text()
            .map(|(sql, _)| sql.to_owned())
            .unwrap_or_default();
        let (tag, result) = if status == b'E' {
            ("", Err(aborted_transaction()))
        } else {
            match self.statements.answer_sql(&sql) {
                Some(Ok(tag)) => (tag, Ok(None)),
                Some(Err(e)) => ("", Err(e)),
                None => return Ok(false),
            }
        };
        self.reply_here(extended, tag, &result, status).await
    }

    /// Answers the whole request at the start of the buffer (see [`route::answer`]) with
    /// `result` (`Ok(None)`: CommandComplete `done`) and consumes it.
    async fn reply_here(
        &mut self,
        extended: bool,
        done: &str,
        result: &Result<Option<String>, PgError>,
        status: u8,
    ) -> Result<bool, ClientError> {
        let mut out = BytesMut::new();
        let used = route::answer(&self.buf, extended, ("", done), result, status, &mut out)?
            .unwrap_or_default();
        self.buf.advance(used);
        self.stream.send(&out).await?;
        Ok(true)
    }

    /// Transaction mode: the LISTEN or UNLISTEN at the start of the buffer (a whole Query,
    /// or an extended batch's unnamed Parse), and whether it is extended.
    fn listen_request(&self) -> Option<(Listen, bool)> {
        if self.session.pool.mode != PoolMode::Transaction {
            return None;
        }
        let (sql, extended) = self.request_text()?;
        listen::parse(sql).map(|l| (l, extended))
    }

    /// Answers LISTEN and UNLISTEN in transaction mode (see [`listen`]): the pooler's hub
    /// listens for the client. False (consuming nothing) for anything else.
    async fn answer_listen(&mut self, status: u8) -> Result<bool, ClientError> {
        let Some((_, extended)) = self.listen_request() else {
            return Ok(false);
        };
        self.read_request(extended).await?;
        let Some((request, extended)) = self.listen_request() else {
            return Ok(false);
        };
        let result = if status == b'E' {
            Err(aborted_transaction())
        } else {
            let pool = self.session.pool.clone();
            let client = self.session.info.id;
            self.rare
                .get_or_insert_default()
                .listening
                .get_or_insert_with(|| Listening::new(pool.notifications().clone(), client))
                .apply(&request, pool.connect_timeout)
                .await
                .map(|()| None)
        };
        self.reply_here(extended, request.tag(), &result, status)
            .await
    }

    /// Answers a request made only of Parse of statements the pool knows, Close of
    /// statements, and a final Sync, without a server. Returns false (consuming nothing)
    /// for anything else.
    async fn prepare_locally(&mut self) -> Result<bool, ClientError> {
        let known = &self.session.pool.known_statements;
        let mut pos = 0;
        let mut replies = BytesMut::new();
        loop {
            // Incomplete, or too large to be a prepare answered here.
            let Ok(Some((tag, body, total))) =
                crate::wire::frame::whole(&self.buf[pos..], 64 * 1024)
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
        let epoch = self.session.pool.schema_epoch.get();
        while let Ok(Some((tag, body, total))) = crate::wire::frame::whole(&self.buf, 64 * 1024) {
            if tag == b'S' {
                self.buf.advance(total);
                break;
            }
            self.statements.on_message(
                Mode::Rewrite,
                tag,
                body,
                None,
                epoch,
                &mut queue,
                &mut scratch,
            )?;
            synth_reply(&mut replies, if tag == b'P' { b'1' } else { b'3' });
            self.buf.advance(total);
        }
        messages::ready_for_query(&mut replies, b'I');
        self.stream.send(&replies).await?;
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
                self.stream.send(&out).await?;
                out.clear();
            }
            if terminate {
                return Err(ClientError::Gone);
            }
            if self.buf.is_empty() && self.scanner.at_boundary() && !reported {
                return Ok(());
            }
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        }
    }

    /// The server died under the client; the client hears of it once. Inside a
    /// transaction, or in session mode, the client's state is gone with it, so the client
    /// gets the server's FATAL as PostgreSQL sent it (or the pooler's 08006 where the
    /// server said nothing) and is closed, as PostgreSQL would close it. Between
    /// transactions in transaction mode each request in flight fails with that error at
    /// severity ERROR (one error and one ReadyForQuery each; none more for a request that
    /// already got its error) and the client's next transaction takes another server.
    async fn server_lost(
        &mut self,
        e: BackendError,
        flow: &Flow,
        mode: PoolMode,
    ) -> Result<(), ClientError> {
        let ended = match &e {
            BackendError::Terminated { error, .. } => Some(error),
            _ => None,
        };
        if flow.status != b'I' || mode == PoolMode::Session {
            let Some(fatal) = ended else {
                let lost = format!("{e}; the session's transaction or state is lost");
                return Err(PgError::fatal("08006", lost).into());
            };
            let mut out = BytesMut::new();
            fatal.encode(&mut out);
            // The client may be gone already; either way it is closed now.
            let _ = self.stream.send(&out).await;
            return Err(ClientError::Gone);
        }
        let error = match ended {
            Some(_) => e.to_client(),
            None => PgError::error("08006", format!("{e}; the statement did not complete")),
        };
        let mut out = BytesMut::new();
        if flow.replies.owed() > 0 {
            for i in 0..flow.replies.owed() {
                // The request being answered may have had its error already.
                if i > 0 || !flow.failed {
                    match ended {
                        Some(fatal) => fatal.encode_as_error(&mut out),
                        None => error.encode(&mut out),
                    }
                }
                messages::ready_for_query(&mut out, b'I');
            }
            self.stream.send(&out).await?;
            if flow.batch || !self.scanner.at_boundary() {
                return self.reject(error, true).await;
            }
            return Ok(());
        }
        // Mid-batch with nothing owed yet: the error goes with the rest of the batch.
        self.reject(error, false).await
    }
}

/// What PostgreSQL answers any statement but the end of a failed transaction with.
fn aborted_transaction() -> PgError {
    PgError::error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

fn killed_error_pg() -> PgError {
    PgError::fatal(
        "57P01",
        "terminating connection due to administrator command: KILL of its database",
    )
}

fn killed_error() -> ClientError {
    killed_error_pg().into()
}

/// What an idle client is told when the pooler shuts down.
fn shutdown_error() -> ClientError {
    PgError::fatal(
        "57P01",
        "terminating connection due to administrator command: the pooler is shutting down",
    )
    .into()
}

/// A query text as on the wire, without its NUL.
fn query_bytes(body: &[u8]) -> &[u8] {
    body.split(|b| *b == 0).next().unwrap_or_default()
}

/// Appends a reply the pooler makes up (CloseComplete '3').
fn synth_reply(out: &mut BytesMut, tag: u8) {
    out.extend_from_slice(&[tag, 0, 0, 0, 4]);
}
