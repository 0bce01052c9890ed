//! Cancel requests. Each client gets its own key (pid, secret) in BackendKeyData, kept in
//! its registry record; while it holds servers (one, or one per shard for a statement run
//! on every shard), the record names their keys. A CancelRequest arrives on a fresh
//! connection and is forwarded to whatever servers the named client holds right now.
//!
//! With `peer_id`, keys carry this instance's peer id (`stats::registry::peer_of`): a
//! request for a client of another peer (`[peers]`) is sent on to that peer, as
//! PgBouncer's peering does. After an online upgrade, a key unknown here is sent to the
//! previous process while it still serves clients.

use crate::app::App;
use crate::config::Peer;
use crate::net::CancelKey;
use crate::stats::peer_of;

/// Handles a CancelRequest that reached this instance.
pub async fn cancel(app: &App, pid: i32, secret: &[u8]) {
    let peer = peer_of(pid);
    let config = app.config();
    let general = &config.general;
    if peer != 0 && general.peer_id.is_some_and(|me| me != peer) {
        match general.peers.get(&peer) {
            Some(p) => {
                if let Err(e) = to_peer(p, pid, secret).await {
                    tracing::warn!(peer, host = %p.host, port = p.port, error = %e, "could not forward a cancel request to its peer");
                }
            }
            None => tracing::debug!(peer, "cancel request for an unknown peer ignored"),
        }
        return;
    }
    if !cancel_here(app, pid, secret).await && !app.cancel_in_previous(pid, secret) {
        tracing::debug!(pid, "cancel request for an unknown key ignored");
    }
}

/// Sends the CancelRequest on to `peer`: over TCP, or, when its host is a directory (as in
/// PgBouncer), to its Unix socket there.
async fn to_peer(peer: &Peer, pid: i32, secret: &[u8]) -> std::io::Result<()> {
    if peer.host.starts_with('/') {
        use tokio::io::AsyncWriteExt;
        let path = std::path::Path::new(&peer.host).join(format!(".s.PGSQL.{}", peer.port));
        let mut stream = tokio::net::UnixStream::connect(path).await?;
        let mut msg = Vec::with_capacity(16);
        msg.extend_from_slice(&(12 + secret.len() as u32).to_be_bytes());
        msg.extend_from_slice(&80_877_102i32.to_be_bytes());
        msg.extend_from_slice(&pid.to_be_bytes());
        msg.extend_from_slice(secret);
        return stream.write_all(&msg).await;
    }
    let key = CancelKey {
        addr: format!("{}:{}", peer.host, peer.port).into(),
        pid,
        secret: secret.to_vec(),
    };
    crate::backend::cancel(&key).await
}

/// Cancels what the client with this key runs here; `false` when no client here has it.
pub async fn cancel_here(app: &App, pid: i32, secret: &[u8]) -> bool {
    let Some(client) = app.registry.by_cancel_key(pid, secret) else {
        // A wrong secret for a client here cancels nothing (and goes nowhere else).
        return app.registry.has_client(pid);
    };
    let keys = client.held_server_keys();
    let _counted = client.canceling(keys.len());
    for key in keys {
        if let Err(e) = crate::backend::cancel(&key).await {
            tracing::warn!(server = %key.addr, error = %e, "could not forward a cancel request");
        }
    }
    true
}
