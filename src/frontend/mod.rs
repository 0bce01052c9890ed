//! Clients: one task per client connection, from startup through authentication to the
//! pooling loop. `login` lets a client in, `relay` runs its queries over the servers it is
//! lent, `cancel` maps cancel keys to servers, `params` holds its session parameters.

pub mod cancel;
mod lazy_map;
mod login;
mod params;
mod prepared;
mod relay;
mod replies;
mod route;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tracing::Instrument;

use crate::app::{App, Connection};
use crate::net::Stream;
use crate::wire::frame::FrameError;
use crate::wire::messages::PgError;
use crate::wire::startup::StartupError;

/// Why a client's task ends early.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Tell the client this, then close.
    #[error("{0}")]
    Fatal(PgError),
    #[error("client disconnected")]
    Gone,
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<PgError> for ClientError {
    fn from(e: PgError) -> Self {
        ClientError::Fatal(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Fatal(PgError::fatal("08P01", e.to_string()))
    }
}

/// Who a client is in the log: its id and address. The `client` span is made from it
/// only where something is logged; a span held for the client's whole life would cost
/// every connection a span in the subscriber's registry (a few hundred bytes and its
/// formatted fields), idle or not.
pub struct ClientTag {
    id: u64,
    /// `None`: a Unix-socket client.
    pub peer: Option<std::net::SocketAddr>,
}

impl ClientTag {
    fn span(&self) -> tracing::Span {
        let peer = crate::net::peer_name(self.peer);
        tracing::info_span!("client", id = self.id, %peer)
    }

    /// Runs `f` (which logs) inside the client's span.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span().in_scope(f)
    }
}

/// A client connection and what its task needs at every stage, in one box: the task's
/// own future holds only this pointer and the state of the stage it is in, which for an
/// idle client is a wait on its socket (BENCHMARKS.md, memory per idle client). Login,
/// the admin console and error reports run in boxed futures of their own.
struct Conn {
    stream: Stream,
    app: Arc<App>,
    tag: ClientTag,
    _counted: Connection,
}

/// Serves one client connection to its end. Its span (client id and address) is entered
/// around login, the admin console and error reports, and where the pooling loop logs.
pub fn handle(stream: Stream, app: Arc<App>, id: u64) -> impl Future<Output = ()> + Send {
    let tag = ClientTag {
        id,
        peer: stream.tcp().and_then(|s| s.peer_addr().ok()),
    };
    if let Some(tcp) = stream.tcp() {
        let _ = tcp.set_nodelay(true);
    }
    let _counted = app.connection();
    serve(Box::new(Conn {
        stream,
        app,
        tag,
        _counted,
    }))
}

/// The task's future. It is written so that little more than the pooling loop's own small
/// state is kept across an idle client's wait: the loop's future is awaited where it is
/// made (not stored and then awaited), and what it ends with is boxed if it is an error.
async fn serve(mut conn: Box<Conn>) {
    let Some((session, pending)) = Box::pin(conn.enter()).await else {
        return;
    };
    let leaving = conn.log_in(&session);
    let error = relay::run(&mut conn.stream, session, pending, &conn.app, &conn.tag)
        .await
        .err()
        .map(Box::new);
    if let Some(info) = leaving {
        conn.tag.in_scope(
            || tracing::info!(user = %info.user, database = %info.database, "client disconnected"),
        );
    }
    if let Some(e) = error {
        Box::pin(conn.report(*e)).await;
    }
}

impl Conn {
    /// Login, and the admin console for the operator: the session of a pool's client and
    /// what it sent after logging in, `None` when the connection is done (errors were
    /// reported).
    async fn enter(&mut self) -> Option<(Box<login::Session>, BytesMut)> {
        let result = match self.login_within_timeout().await {
            Ok(Some(login::Entry::Pool { session, pending })) => return Some((session, pending)),
            Ok(None) => return None,
            Ok(Some(login::Entry::Admin {
                database,
                user,
                pending,
            })) => {
                let serve = async {
                    tracing::info!(%user, %database, "admin logged in");
                    crate::admin::serve(&mut self.stream, &self.app, &database, pending).await
                };
                serve
                    .instrument(self.tag.span())
                    .await
                    .map_err(ClientError::from)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.report(e).await;
        }
        None
    }

    async fn login_within_timeout(&mut self) -> Result<Option<login::Entry>, ClientError> {
        let login_timeout = Duration::from_millis(self.app.config().general.client_login_timeout);
        let login = login::login(&mut self.stream, &self.app, &self.tag);
        match tokio::time::timeout(login_timeout, login).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Fatal(PgError::fatal(
                "08P01",
                format!(
                    "startup and authentication not finished within {} ms (client_login_timeout)",
                    login_timeout.as_millis()
                ),
            ))),
        }
    }

    /// Logs the client's entry into its pool (`log_client_connections`); the record to log
    /// its departure with, if `log_client_disconnections`.
    fn log_in(&self, session: &login::Session) -> Option<Arc<crate::stats::ClientInfo>> {
        let general = &self.app.config().general;
        let info = &session.info;
        if general.log_client_connections {
            self.tag.in_scope(|| tracing::info!(user = %info.user, database = %info.database, application_name = %info.application_name, "client logged in"));
        }
        general.log_client_disconnections.then(|| info.clone())
    }

    async fn report(&mut self, error: ClientError) {
        report(&mut self.stream, error)
            .instrument(self.tag.span())
            .await
    }
}

/// Tells the client why it is being closed, where the protocol allows.
async fn report(stream: &mut Stream, error: ClientError) {
    let mut out = BytesMut::new();
    match error {
        ClientError::Gone | ClientError::Startup(StartupError::Closed) => return,
        ClientError::Fatal(e) => {
            tracing::info!(code = %e.code, "closing client: {}", e.message);
            e.encode(&mut out);
        }
        e @ ClientError::Startup(_) => {
            tracing::info!(error = %e, "bad startup packet");
            PgError::fatal("08P01", e.to_string()).encode(&mut out);
        }
        ClientError::Io(e) => {
            tracing::debug!(error = %e, "client connection error");
            return;
        }
    }
    let _ = stream.send(&out).await;
}
