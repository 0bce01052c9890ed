//! Clients: one task per client connection, from startup through authentication to the
//! pooling loop. `login` lets a client in, `relay` runs its queries over the servers it is
//! lent, `cancel` maps cancel keys to servers, `params` holds its session parameters.

pub mod cancel;
mod login;
mod params;
mod prepared;
mod relay;
mod replies;
mod route;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tracing::Instrument;

use crate::app::App;
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

/// Serves one client connection to its end. Its span (client id and address) is entered
/// around login, the admin console and error reports, and only where the pooling loop
/// logs: not on every poll of a busy client.
pub async fn handle(mut stream: Stream, app: Arc<App>, id: u64) {
    let peer = stream.peer();
    let span = tracing::info_span!("client", id, %peer);
    if let Some(tcp) = stream.tcp() {
        let _ = tcp.set_nodelay(true);
    }
    let _counted = app.connection();
    // Only what an idle client needs stays in this task's future: login, the admin
    // console and error reporting run in boxed futures (BENCHMARKS.md, idle memory).
    let entry = Box::pin(login_within_timeout(&mut stream, &app).instrument(span.clone())).await;
    let result = match entry {
        Ok(None) => Ok(()),
        Ok(Some(login::Entry::Admin { database, user })) => {
            let serve = async {
                tracing::info!(%user, %database, "admin logged in");
                crate::admin::serve(&mut stream, &app, &database).await
            };
            Box::pin(serve.instrument(span.clone()))
                .await
                .map_err(ClientError::from)
        }
        Ok(Some(login::Entry::Pool(session))) => pooled(&mut stream, session, &app, &span).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        Box::pin(report(&mut stream, e).instrument(span)).await;
    }
}

async fn login_within_timeout(
    stream: &mut Stream,
    app: &App,
) -> Result<Option<login::Entry>, ClientError> {
    let login_timeout = Duration::from_millis(app.config().general.client_login_timeout);
    match tokio::time::timeout(login_timeout, login::login(stream, app)).await {
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

async fn pooled(
    stream: &mut Stream,
    session: Box<login::Session>,
    app: &App,
    span: &tracing::Span,
) -> Result<(), ClientError> {
    let (log_connections, log_disconnections) = {
        let general = &app.config().general;
        (
            general.log_client_connections,
            general.log_client_disconnections,
        )
    };
    if log_connections {
        let _in_client = span.enter();
        tracing::info!(user = %session.user, database = %session.database, application_name = %session.application_name, "client logged in");
    }
    let (user, database) = (session.user.clone(), session.database.clone());
    let r = relay::run(stream, *session, app, span).await;
    if log_disconnections {
        let _in_client = span.enter();
        tracing::info!(%user, %database, "client disconnected");
    }
    r
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
