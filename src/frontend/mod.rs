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
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::app::App;
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

/// Serves one client connection to its end.
pub async fn handle(mut stream: TcpStream, app: Arc<App>, id: u64) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("client", id, %peer);
    async move {
        let _ = stream.set_nodelay(true);
        let _counted = app.connection();
        let login_timeout = Duration::from_millis(app.config().general.client_login_timeout);
        let login = match tokio::time::timeout(login_timeout, login::login(&mut stream, &app)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Fatal(PgError::fatal(
                "08P01",
                format!("startup and authentication not finished within {} ms (client_login_timeout)", login_timeout.as_millis()),
            ))),
        };
        let result = match login {
            Ok(None) => Ok(()),
            Ok(Some(login::Entry::Admin { database, user })) => {
                tracing::info!(%user, %database, "admin logged in");
                crate::admin::serve(&mut stream, &app, &database).await.map_err(ClientError::from)
            }
            Ok(Some(login::Entry::Pool(session))) => {
                let general = app.config().general.clone();
                if general.log_client_connections {
                    tracing::info!(user = %session.user, database = %session.database, application_name = %session.application_name, "client logged in");
                }
                let (user, database) = (session.user.clone(), session.database.clone());
                let r = relay::run(&mut stream, session, &app).await;
                if general.log_client_disconnections {
                    tracing::info!(%user, %database, "client disconnected");
                }
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) | Err(ClientError::Gone) => {}
            Err(ClientError::Fatal(e)) => {
                tracing::info!(code = %e.code, "closing client: {}", e.message);
                let mut out = BytesMut::new();
                e.encode(&mut out);
                let _ = stream.write_all(&out).await;
            }
            Err(ClientError::Startup(StartupError::Closed)) => {}
            Err(e @ ClientError::Startup(_)) => {
                tracing::info!(error = %e, "bad startup packet");
                let mut out = BytesMut::new();
                PgError::fatal("08P01", e.to_string()).encode(&mut out);
                let _ = stream.write_all(&out).await;
            }
            Err(ClientError::Io(e)) => tracing::debug!(error = %e, "client connection error"),
        }
    }
    .instrument(span)
    .await
}
