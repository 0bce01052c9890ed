//! Cancel requests. Each client gets its own key (pid, secret) in BackendKeyData, kept in
//! its registry record; while it holds a server, the record names that server's key. A
//! CancelRequest arrives on a fresh connection and is forwarded to whatever server the
//! named client holds right now.

use crate::app::App;

/// Forwards a CancelRequest; an unknown key or a client holding no server cancels nothing.
pub async fn cancel(app: &App, pid: i32, secret: &[u8]) {
    match app.registry.server_cancel_key(pid, secret) {
        Some(key) => {
            if let Err(e) = crate::backend::cancel(&key).await {
                tracing::warn!(server = %key.addr, error = %e, "could not forward a cancel request");
            }
        }
        None => tracing::debug!(
            pid,
            "cancel request for an unknown key or an idle client ignored"
        ),
    }
}
