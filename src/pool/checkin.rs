//! Giving a server back to its pool: reset first if its session state changed (always in
//! session mode), rolled back if its client left inside a transaction, and closed instead
//! when that fails or when its state is unknown (a query or batch in flight).

use super::Server;
use crate::backend::Dirty;
use crate::config::PoolMode;

/// Returns a server to its pool: reset first if its session state changed (always in
/// session mode); closed if the reset fails.
pub async fn checkin(mut server: Server, mode: PoolMode) {
    server.session().count_checkin();
    if mode == PoolMode::Session {
        *server.session_mut().dirty_mut() = Dirty::all();
    }
    if server.session().dirty().any() {
        if let Err(e) = server.reset().await {
            tracing::warn!(server = %server.session().addr(), error = %e, "server reset failed; closing the connection");
            server.discard();
        }
    }
}

/// The client left while holding `server`, its last transaction status `status`. An open
/// transaction is rolled back; a server with a query or batch in flight (not `clean`) is
/// cancelled and closed (its state is unknown).
pub async fn abandon(mut server: Server, status: u8, clean: bool, mode: PoolMode) {
    if !clean {
        let key = server.session().cancel_key().clone();
        server.discard();
        tokio::spawn(async move {
            let _ = crate::backend::cancel(&key).await;
        });
        return;
    }
    if status != b'I' {
        if let Err(e) = server.execute("ROLLBACK").await {
            tracing::warn!(server = %server.session().addr(), error = %e, "rollback of an abandoned transaction failed; closing the connection");
            server.discard();
            return;
        }
    }
    checkin(server, mode).await;
}
