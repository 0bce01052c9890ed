//! The running pooler: builds the pools from a configuration, listens, hands each client
//! connection to its own task, and stops on SIGINT/SIGTERM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::RngCore;
use tokio::net::TcpListener;

use crate::config::{Config, General};
use crate::frontend::{self, cancel};
use crate::pool::Pools;

/// What every client task shares.
pub struct App {
    pub general: General,
    pub pools: Pools,
    pub cancels: Arc<cancel::Registry>,
    /// Session effects of query texts, cached (transaction mode state tracking).
    pub effects: frontend::state::Effects,
    /// Per-process secret behind the fake SCRAM salts of unknown users.
    pub mock_secret: [u8; 32],
}

impl App {
    pub fn new(config: &Config) -> std::io::Result<App> {
        let pools = Pools::build(config).map_err(std::io::Error::other)?;
        let mut mock_secret = [0u8; 32];
        rand::rng().fill_bytes(&mut mock_secret);
        Ok(App {
            general: config.general.clone(),
            pools,
            cancels: Arc::default(),
            effects: frontend::state::Effects::default(),
            mock_secret,
        })
    }
}

/// Runs the pooler on `general.host:general.port` until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> std::io::Result<()> {
    let (host, port) = (config.general.host.clone(), config.general.port);
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("could not listen on {host}:{port}: {e}"))
        })?;
    let app = Arc::new(App::new(&config)?);
    tracing::info!(%host, port, pools = config.pools.len(), "pgcat is accepting connections");
    tokio::select! {
        r = accept(listener, app) => r,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn accept(listener: TcpListener, app: Arc<App>) -> std::io::Result<()> {
    let ids = AtomicU64::new(1);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(frontend::handle(stream, app.clone(), id));
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
