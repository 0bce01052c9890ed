//! Clients: one task per client connection, from startup through authentication to the
//! pooling loop. `login` lets a client in, `relay` runs its queries over the servers it is
//! lent, `cancel` maps cancel keys to servers (and to peers), `params` holds its session
//! parameters, `handover` moves an idle client to another process (online upgrades).

pub mod cancel;
mod cross_shard;
mod extension;
pub mod handover;
mod lazy_map;
mod listen;
mod login;
mod params;
mod prepared;
mod relay;
mod replies;
mod request;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    /// An online upgrade: the idle client moves to the new process.
    #[error("client handed over to the upgraded process")]
    HandOver,
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
    /// The tag of a client that logged in to a pool (its registry record has the same id).
    fn of(info: &crate::stats::ClientInfo) -> ClientTag {
        ClientTag {
            id: info.id,
            peer: info.peer,
        }
    }

    fn span(&self) -> tracing::Span {
        let peer = crate::net::peer_name(self.peer);
        tracing::info_span!("client", id = self.id, %peer)
    }

    /// Runs `f` (which logs) inside the client's span.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        self.span().in_scope(f)
    }
}

/// A client connection during its login: what the pooled [`relay::Client`] is made of.
struct Conn {
    stream: Stream,
    app: Arc<App>,
    tag: ClientTag,
    counted: Connection,
}

/// Serves one client connection to its end. Its span (client id and address) is entered
/// around login, the admin console and error reports, and where the pooling loop logs.
pub fn handle(stream: Stream, app: Arc<App>, id: u64) -> ClientTask {
    let tag = ClientTag {
        id,
        peer: stream.tcp().and_then(|s| s.peer_addr().ok()),
    };
    if let Some(tcp) = stream.tcp() {
        let _ = tcp.set_nodelay(true);
    }
    let counted = app.connection();
    let conn = Conn {
        stream,
        app,
        tag,
        counted,
    };
    ClientTask(Stage::Busy(boxed(|| conn.serve())))
}

/// The login, or a stretch of requests up to the next idle wait: ends with the client
/// idle, or `None` when it is done.
type Busy = Pin<Box<dyn Future<Output = Option<Box<relay::Client>>> + Send>>;

/// Boxes the future `make` makes, allocating first so that the future can be built in
/// place rather than on the stack and then copied (its full size, kilobytes, on every
/// request).
fn boxed<F>(make: impl FnOnce() -> F) -> Busy
where
    F: Future<Output = Option<Box<relay::Client>>> + Send + 'static,
{
    let future: Box<F> = Box::write(Box::<F>::new_uninit(), make());
    Box::into_pin(future)
}

/// A client's task: its future is this small enum, not an `async fn`, so that an idle
/// client's task holds one pointer to its [`relay::Client`] and nothing else (a tokio task
/// of 128 bytes; see BENCHMARKS.md, memory per idle client). The login, and each stretch
/// from a request to the next idle wait, run in a boxed future of their own that exists
/// only while they run.
pub struct ClientTask(Stage);

impl ClientTask {
    /// The task of a client that is idle already (one handed over by another process).
    fn idle(client: Box<relay::Client>) -> ClientTask {
        ClientTask(Stage::Idle(client))
    }
}

enum Stage {
    /// Logging in, or serving requests.
    Busy(Busy),
    /// Waiting for the client's next request.
    Idle(Box<relay::Client>),
    Done,
}

impl Future for ClientTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = &mut self.0;
        loop {
            match std::mem::replace(task, Stage::Done) {
                Stage::Busy(mut busy) => match busy.as_mut().poll(cx) {
                    Poll::Pending => {
                        *task = Stage::Busy(busy);
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(client)) => *task = Stage::Idle(client),
                    Poll::Ready(None) => return Poll::Ready(()),
                },
                Stage::Idle(mut client) => match client.poll_request(cx) {
                    Poll::Pending => {
                        *task = Stage::Idle(client);
                        return Poll::Pending;
                    }
                    Poll::Ready(woke) => {
                        *task = Stage::Busy(boxed(|| client.until_idle(Some(woke))))
                    }
                },
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Conn {
    /// Login, then the admin console or the pooling loop up to the client's first idle
    /// wait.
    async fn serve(mut self) -> Option<Box<relay::Client>> {
        let (session, pending, bound) = self.enter().await?;
        self.log_in(&session);
        relay::Client::new(self, session, pending)
            .start(bound)
            .await
    }

    /// Login, and the admin console for the operator: the session of a pool's client and
    /// what it sent after logging in, `None` when the connection is done (errors were
    /// reported).
    async fn enter(
        &mut self,
    ) -> Option<(Box<login::Session>, BytesMut, Option<crate::pool::Server>)> {
        let result = match self.login_within_timeout().await {
            Ok(Some(login::Entry::Pool {
                session,
                pending,
                bound,
            })) => return Some((session, pending, bound)),
            Ok(None) => return None,
            Ok(Some(login::Entry::Admin {
                database,
                user,
                pending,
                info,
            })) => {
                let serve = async {
                    // DEBUG: exporters log in every few seconds (counted instead).
                    tracing::debug!(%user, %database, "admin logged in");
                    self.app
                        .admin_logins
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::admin::serve(&mut self.stream, &self.app, (&database, &info), pending)
                        .await
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

    /// Logs the client's entry into its pool (`log_client_connections`).
    fn log_in(&self, session: &login::Session) {
        if self.app.config().general.log_client_connections {
            let info = &session.info;
            self.tag.in_scope(|| tracing::info!(user = %info.user, database = %info.database, application_name = %info.application_name, "client logged in"));
        }
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
        ClientError::Gone | ClientError::HandOver | ClientError::Startup(StartupError::Closed) => {
            return
        }
        ClientError::Fatal(e) => {
            tracing::info!(code = %e.code, "closing client: {}", e.message);
            e.encode(&mut out);
        }
        // PostgreSQL closes without a word on a startup packet whose length is impossible
        // (a Terminate or other bytes sent before it) or that never arrives whole.
        e @ ClientError::Startup(StartupError::BadLength(_) | StartupError::Io(_)) => {
            tracing::info!(error = %e, "bad startup packet; closing quietly");
            return;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle client costs is mostly these (BENCHMARKS.md, memory per idle client):
    /// the task's future must fit tokio's 128-byte task cell (24 bytes of future), and the
    /// client's box jemalloc's 256-byte size class.
    #[test]
    fn an_idle_client_stays_small() {
        assert!(
            std::mem::size_of::<ClientTask>() <= 24,
            "task future: {} bytes",
            std::mem::size_of::<ClientTask>()
        );
        assert!(
            std::mem::size_of::<relay::Client>() <= 256,
            "client box: {} bytes",
            std::mem::size_of::<relay::Client>()
        );
        assert!(
            std::mem::size_of::<crate::stats::ClientInfo>() + 16 <= 256,
            "registry record: {} bytes",
            std::mem::size_of::<crate::stats::ClientInfo>()
        );
    }
}
