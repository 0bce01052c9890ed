//! Moving a client to another pooler process (the online upgrade, `runtime::upgrade`): at an
//! idle point — between transactions, no server held, nothing unread — its state is written
//! out ([`Moved`]) and sent with its socket; the new process registers it with the same
//! cancel key and serves its next request as if nothing happened. What moves: the pool
//! (database and user), startup parameters and the settings it keeps, its named prepared
//! statements (prepared again on the new process's servers when used), its SQL extensions'
//! routing, its SQL-extension statements, its read-your-writes position.
//!
//! Clients that cannot move stay with the old process until they leave: those holding a
//! server between transactions (session mode, pinned session state), in a transaction
//! block, or listening for notifications. A TLS client cannot move (its session keys stay
//! in this process): it is closed at its idle point with 57P01.

use std::sync::Arc;

use pgcat_parser::SessionRouting;
use serde::{Deserialize, Serialize};

use super::login::Session;
use super::relay::Client;
use super::{ClientTag, ClientTask, Conn};
use crate::app::App;
use crate::net::Stream;
use crate::wire::messages::PgError;

/// A client's state as it moves.
#[derive(Serialize, Deserialize)]
pub(super) struct Moved {
    pub database: String,
    pub user: String,
    pub application_name: String,
    pub peer: Option<std::net::SocketAddr>,
    pub pid: i32,
    pub secret: i32,
    pub params: Vec<(String, String)>,
    pub startup_params: Vec<(String, String)>,
    pub routing: SessionRouting,
    /// (client's name, Parse body after the name or SQL PREPARE text, made by SQL PREPARE).
    pub statements: Vec<(String, Vec<u8>, bool)>,
    pub command_statements: Vec<(String, String)>,
    pub min_lsn: u64,
}

/// Takes over a client another process handed over (`bytes`: its [`Moved`] state): its
/// task, idle, waiting for its next request. Refused, with the error for the client, when
/// the state does not read, its pool is not configured here or its cancel key is taken.
fn adopt(
    stream: Stream,
    app: Arc<App>,
    id: u64,
    bytes: &[u8],
) -> Result<ClientTask, Box<(Stream, PgError)>> {
    let moved: Moved = match serde_json::from_slice(bytes) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("the client's state from the previous process: {e}");
            return Err(Box::new((stream, PgError::fatal("08P01", reason))));
        }
    };
    let Some(pool) = app.pools().get(&moved.database, &moved.user).cloned() else {
        let reason = format!(
            "pool \"{}\" of user \"{}\" is not configured in the upgraded pooler",
            moved.database, moved.user
        );
        return Err(Box::new((stream, PgError::fatal("3D000", reason))));
    };
    let names = (
        pool.pool_name.clone(),
        pool.username.clone(),
        moved.application_name.clone().into_boxed_str(),
    );
    let key = (moved.pid, moved.secret);
    let Some(info) = app.registry.moved_client(key, id, names, moved.peer) else {
        let e = PgError::fatal("53400", "the client's cancel key is in use here");
        return Err(Box::new((stream, e)));
    };
    let session = Box::new(Session {
        pool,
        params: moved.params.clone(),
        startup_params: moved.startup_params.clone(),
        info,
    });
    let conn = Conn {
        stream,
        tag: ClientTag {
            id,
            peer: moved.peer,
        },
        counted: app.connection(),
        app,
    };
    Ok(ClientTask::idle(Client::from_moved(conn, session, moved)))
}

/// Serves a client handed over (`client`: its socket and state): the new process's side of
/// a move, and the old one's when a move failed (the client stays). A client that cannot
/// be taken over is told why and closed.
pub fn serve_moved(app: Arc<App>, (fd, bytes): crate::app::Handoff) {
    let stream = match Stream::from_fd(fd) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "a client handed over could not be taken over");
            return;
        }
    };
    let id = app.next_client_id();
    match adopt(stream, app, id, &bytes) {
        Ok(task) => {
            tokio::spawn(task);
        }
        Err(refused) => {
            let (mut stream, error) = *refused;
            tokio::spawn(async move { super::report(&mut stream, error.into()).await });
        }
    }
}
