//! Cancel requests. Each client gets its own key (pid, secret) in BackendKeyData, kept in
//! its registry record; while it holds servers (one, or one per shard for a statement run
//! on every shard), the record names their keys. A CancelRequest arrives on a fresh
//! connection and is forwarded to whatever servers the named client holds right now.

use crate::app::App;

/// Forwards a CancelRequest; an unknown key or a client holding no server cancels nothing.
pub async fn cancel(app: &App, pid: i32, secret: &[u8]) {
    let keys = app.registry.server_cancel_keys(pid, secret);
    if keys.is_empty() {
        tracing::debug!(
            pid,
            "cancel request for an unknown key or an idle client ignored"
        );
    }
    for key in keys {
        if let Err(e) = crate::backend::cancel(&key).await {
            tracing::warn!(server = %key.addr, error = %e, "could not forward a cancel request");
        }
    }
}
