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
//!
//! This file holds the client's state and its task's lifecycle (idle wait, serving a
//! request, holding a server across requests); the steps live beside it:
//! - `dispatch`: an idle client's next request, answered or routed, and the server taken;
//! - `answered`: requests the pooler answers without a server;
//! - `conversation`: the relay loop while a server is held, and giving it back;
//! - `client_messages` / `server_messages`: each direction's bytes, tracked and rewritten;
//! - `kept`: what the client keeps when a transaction ends (settings, read-your-writes);
//! - `errors`: what the client is told when a request fails or its server is lost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use pgcat_parser::{Role, Route, SessionEffects, SessionRouting};
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use super::cross_shard;
use super::extension;
use super::lazy_map::LazyMap;
use super::listen::{self, Listen, Listening};
use super::login::Session;
use super::prepared::{ClientStatements, Mode, Outcome};
use super::replies::{Action, Event, Expect, Replies};
use super::request::{self, Request, Routed};
use super::state;
use super::{ClientError, ClientTag, Conn};
use crate::app::{App, Connection};
use crate::backend::{BackendError, Dirty, ServerConn};
use crate::config::PoolMode;
use crate::net::Stream;
use crate::pool::{abandon, checkin, Server, TakeError, UserPool};
use crate::stats::clock::now_us;
use crate::stats::{ClientState, Interrupt};
use crate::wire::frame::{FrameError, INSPECT_CAP};
use crate::wire::messages::{self, field, PgError, ServerError};
use crate::wire::Scanner;

mod answered;
mod batch;
mod client_messages;
mod conversation;
mod copy_in;
mod describe;
mod dispatch;
mod errors;
mod fanout;
mod handover;
mod insert;
mod kept;
mod plugins;
mod server_messages;
mod spread;
mod statement;
mod write;

use dispatch::{HeldBegin, Idle};
use errors::{aborted_transaction, killed_error, killed_error_pg, shutdown_error};
use fanout::Lost;
use spread::Spread;

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
    /// When the query being answered was sent, and when the transaction began (µs of
    /// [`now_us`]).
    query_started: Option<u64>,
    xact_started: u64,
    /// The parser's analysis of the Query (or Parse) the server was taken for, which has
    /// that text's session effects.
    routed: Option<Routed>,
    /// The shard of the server, when the route named one.
    shard: Option<usize>,
}

impl Flow {
    /// A conversation whose first request is sent `now` (the server was just taken).
    fn new(now: u64) -> Flow {
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
            shard: None,
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
    /// A transaction block holding servers of several shards (see `spread`).
    spread: Option<Box<Spread>>,
    /// Checkouts that failed for this client (`checkout_failure_limit`).
    checkout_failures: u64,
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
            let mut flow = Flow::new(now_us());
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
            Err(ClientError::HandOver) => {
                self.hand_over();
                return None;
            }
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
            self.session
                .info
                .hold_server(Some(h.server.session().cancel_key().clone()));
        }
        loop {
            if held.is_none() {
                self.deliver_notifications().await?;
            }
            if held.is_none() && self.buf.is_empty() && self.spread().is_some() {
                // A block across shards holds servers: waiting for its next statement is
                // bounded like a held transaction's (idle_client_in_transaction_timeout).
                self.wait_in_block().await?;
                continue;
            }
            if held.is_none() && self.buf.is_empty() {
                if self.app.shutting_down() && self.held_begin.is_none() && self.spread().is_none()
                {
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
                self.session.info.set_state(ClientState::Idle, now_us);
            }
        }
    }

    /// The idle client's wait, holding no read buffer: ready with what was read (0: the
    /// client left) or the interrupt that ended it (KILL, shutdown).
    pub(super) fn poll_request(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<usize, ClientError>> {
        // Shutdown waits for a held BEGIN's transaction to end; an upgrade moves only a
        // client that can move (a TLS one is closed instead).
        let mut wanted = if self.held_begin.is_none() && self.spread().is_none() {
            Interrupt::KILLED | Interrupt::SHUTDOWN
        } else {
            Interrupt::KILLED
        };
        let tls = matches!(self.stream, Stream::TlsFromClient(_));
        if self.movable() || (tls && wanted & Interrupt::SHUTDOWN != 0) {
            wanted |= Interrupt::HANDOVER;
        }
        if wanted & Interrupt::HANDOVER != 0 && self.app.handing_over() {
            // Logged in after the upgrade began (its record was not interrupted).
            self.session.info.interrupt.raise(Interrupt::HANDOVER);
        }
        if let Poll::Ready(raised) = self.session.info.interrupt.poll(cx, wanted) {
            return Poll::Ready(Err(if raised & Interrupt::KILLED != 0 {
                killed_error()
            } else if raised & Interrupt::SHUTDOWN != 0 {
                shutdown_error()
            } else if tls {
                PgError::upgrading().into()
            } else {
                ClientError::HandOver
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
        if self.spread().is_some() {
            return self.spread_request().await;
        }
        if held.is_none() {
            *held = match self.idle().await? {
                Idle::Exit => return Ok(false),
                Idle::Answered => return Ok(true),
                Idle::Route(route, begin, routed) => self.take_server(route, begin, routed).await?,
                Idle::AllShards(role, routed) => {
                    self.fan_out(role, &routed).await?;
                    return Ok(true);
                }
                Idle::Spread(spread) => {
                    self.rare.get_or_insert_with(Default::default).spread = Some(spread);
                    return self.spread_request().await;
                }
            };
            let Some(h) = held else {
                return Ok(true);
            };
            self.session
                .info
                .hold_server(Some(h.server.session().cancel_key().clone()));
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
                    abandon(h.server, h.flow.status, true, pool_mode).await;
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
                    abandon(h.server, h.flow.status, clean, pool_mode).await;
                }
                return Ok(false);
            }
            End::ServerGone(e) => {
                self.session.info.hold_server(None);
                self.tag()
                    .in_scope(|| tracing::warn!(error = %e, "server connection lost"));
                if let Some(h) = held.take() {
                    h.server.discard();
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
                    h.server.discard();
                }
                return Err(e.into());
            }
        }
        Ok(true)
    }
}

/// A server a client holds, and where their conversation stands.
struct Held {
    server: Server,
    flow: Flow,
    scan: Scanner,
    /// The transaction was routed to the primary (a write, for read-your-writes).
    wrote: bool,
}

/// Reads more client or server bytes into `buf`, growing it in steps.
async fn read(stream: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    crate::net::make_room(buf);
    stream.read_buf(buf).await
}
