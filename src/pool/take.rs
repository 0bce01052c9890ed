//! A server for a client: checked out, with the client's parameters applied. A server
//! found dead while they are applied (killed while idle in the pool) is replaced, since
//! nothing of the client's has reached it yet.

use pgcat_parser::Route;

use super::{Server, UserPool};
use crate::backend::BackendError;
use crate::wire::messages::PgError;

/// Servers tried for one client when the ones taken turn out dead.
const ATTEMPTS: u32 = 3;

/// Why no server could be had.
pub enum TakeError {
    /// The pool had none (the error for the client).
    Checkout(PgError),
    /// The server refused the client's parameters; it is handed back so the caller decides
    /// whether it can go back to the pool.
    Params(Server, BackendError),
}

impl TakeError {
    /// The error for the client; a server that refused the parameters is closed.
    pub fn into_client(self) -> PgError {
        match self {
            TakeError::Checkout(e) => e,
            TakeError::Params(server, e) => {
                server.discard();
                e.to_client()
            }
        }
    }
}

impl UserPool {
    /// A server on `route` (replicas that replayed `min_lsn`), carrying `params`. `taken`
    /// sees each server as it is checked out (for the wait statistics).
    pub async fn take_with_params(
        &self,
        route: Route,
        min_lsn: u64,
        params: &[(String, String)],
        mut taken: impl FnMut(&Server),
    ) -> Result<Server, TakeError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut server = self
                .checkout_after(route, min_lsn)
                .await
                .map_err(TakeError::Checkout)?;
            taken(&server);
            match server.sync_params(params).await {
                Ok(()) => return Ok(server),
                Err(e) if e.lost_connection() && attempts < ATTEMPTS => {
                    server.discard();
                }
                Err(e) => return Err(TakeError::Params(server, e)),
            }
        }
    }
}
