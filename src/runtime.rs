//! The running pooler: the listeners (TCP and Unix socket) handing each connection to
//! the frontend, the Prometheus endpoint, live reload triggers (SIGHUP, `autoreload`) and
//! shutdown (SIGINT and admin SHUTDOWN drain, SIGTERM stops at once).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

use crate::app::App;
use crate::config::Config;
use crate::frontend;
use crate::net::Stream;
use crate::stats;

/// Runs the pooler on `general.host:general.port` until it is shut down.
pub async fn serve(config: Config) -> std::io::Result<()> {
    let (host, port) = (config.general.host.clone(), config.general.port);
    // A deep accept queue: a burst of connections must not be dropped by the kernel before
    // the pooler accepts them (the default is 128).
    let backlog = config.general.max_client_conn.clamp(128, 4096) as u32;
    let listener = listen(&host, port, backlog).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("could not listen on {host}:{port}: {e}"))
    })?;
    let pools = config.pools.len();
    let prometheus = config.general.enable_prometheus_exporter.then(|| {
        (
            config.general.host.clone(),
            config.general.prometheus_exporter_port,
        )
    });
    let autoreload = config.general.autoreload;
    let unix = match &config.general.unix_socket_dir {
        Some(dir) => Some(UnixSocket::bind(&dir.join(format!(".s.PGSQL.{port}")))?),
        None => None,
    };
    let app = Arc::new(App::new(config)?);
    if let Some((host, port)) = prometheus {
        let listener = TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("could not listen for Prometheus on {host}:{port}: {e}"),
                )
            })?;
        tokio::spawn(crate::admin::prometheus::serve(listener, app.clone()));
    }
    tokio::spawn(stats_period(app.clone()));
    tokio::spawn(resolve_in_doubt(app.clone()));
    tokio::spawn(refresh_dns(app.clone()));
    if let Some(ms) = autoreload {
        tokio::spawn(autoreload_loop(
            app.clone(),
            Duration::from_millis(ms.max(100)),
        ));
    }
    tracing::info!(%host, port, pools, "pgcat is accepting connections");
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut shutdown = app.shutdown_started();
    let accepting = tokio::spawn(accept(Listener::Tcp(listener), app.clone()));
    let accepting_unix = unix.as_ref().map(|u| {
        tracing::info!(path = %u.path.display(), "also accepting connections on a Unix socket");
        tokio::spawn(accept(Listener::Unix(u.listener.clone()), app.clone()))
    });
    let stop_accepting = || {
        accepting.abort();
        if let Some(a) = &accepting_unix {
            a.abort();
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => app.reload_logged("SIGHUP"),
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: shutting down once transactions finish");
                app.begin_shutdown();
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: shutting down now");
                stop_accepting();
                return Ok(());
            }
            _ = shutdown.changed() => break,
        }
    }
    drain(&app).await;
    stop_accepting();
    tracing::info!("shut down");
    Ok(())
}

/// Binds `host:port` with an accept queue of `backlog`.
async fn listen(host: &str, port: u16, backlog: u32) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host name resolves to no address",
            )
        })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Waits (up to `shutdown_timeout`) until no client of a pool is connected (the admin
/// consoles, also listed in the registry, do not hold the shutdown up).
async fn drain(app: &App) {
    let limit = Duration::from_millis(app.config().general.shutdown_timeout);
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let clients = app.registry.clients();
        if clients
            .iter()
            .all(|c| crate::admin::is_admin_database(&c.database))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!("shutdown_timeout reached: closing the remaining clients");
}

async fn stats_period(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(stats::STATS_PERIOD_SECS));
    tick.tick().await;
    loop {
        tick.tick().await;
        for pool in app.pools().all() {
            for address in pool.shards.iter().flatten() {
                address.counters.roll();
            }
        }
    }
}

/// How often in-doubt two-phase transactions are looked for and ended.
const RESOLVE_EVERY: Duration = Duration::from_secs(2);

/// Ends this instance's in-doubt two-phase transactions at startup and every
/// [`RESOLVE_EVERY`] (see `twophase::resolve`), in every pool with two-phase commit;
/// warns once per shard whose `max_prepared_transactions` is 0.
async fn resolve_in_doubt(app: Arc<App>) {
    let mut warned = std::collections::BTreeSet::new();
    loop {
        if let Some(coordinator) = app.two_phase() {
            let pools = app.pools();
            let pass = crate::twophase::resolve(&coordinator, &pools.all(), true).await;
            for shard in pass.disabled {
                if warned.insert(shard.clone()) {
                    tracing::warn!(%shard, "max_prepared_transactions is 0 on this shard: two-phase commits that write there will fail; set it above 0 (and restart PostgreSQL)");
                }
            }
        }
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}

/// With `dns_cache_enabled`, re-resolves the server host names every `dns_max_ttl`
/// seconds; the pools of a name whose addresses changed replace their connections.
async fn refresh_dns(app: Arc<App>) {
    loop {
        let general = &app.config().general;
        let (enabled, ttl) = (general.dns_cache_enabled, general.dns_max_ttl.max(1));
        tokio::time::sleep(Duration::from_secs(ttl)).await;
        if !enabled {
            continue;
        }
        let changed = app.dns.refresh().await;
        if changed.is_empty() {
            continue;
        }
        for pool in app.pools().all() {
            for address in pool.shards.iter().flatten() {
                if changed.contains(&address.host) {
                    address.replace_connections();
                }
            }
        }
    }
}

async fn autoreload_loop(app: Arc<App>, every: Duration) {
    let path = app.config().path.clone();
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = modified(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = modified(&path);
        if now != last {
            last = now;
            app.reload_logged("autoreload (file changed)");
        }
    }
}

/// Where clients connect.
enum Listener {
    Tcp(TcpListener),
    Unix(Arc<UnixListener>),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => Stream::Tcp(l.accept().await?.0),
            Listener::Unix(l) => Stream::Unix(l.accept().await?.0),
        })
    }
}

/// The Unix socket listener (`unix_socket_dir`); the socket file goes when it does.
struct UnixSocket {
    listener: Arc<UnixListener>,
    path: PathBuf,
}

impl UnixSocket {
    fn bind(path: &Path) -> std::io::Result<UnixSocket> {
        let failed = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "general.unix_socket_dir: could not listen on {}: {e}",
                    path.display()
                ),
            )
        };
        // A socket file left by a pooler that did not exit cleanly; a live one answers.
        if std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(failed)?;
        Ok(UnixSocket {
            listener: Arc::new(listener),
            path: path.to_path_buf(),
        })
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept(listener: Listener, app: Arc<App>) -> std::io::Result<()> {
    // Client ids, unique across both listeners.
    static IDS: AtomicU64 = AtomicU64::new(1);
    loop {
        let stream = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(frontend::handle(stream, app.clone(), id));
    }
}
