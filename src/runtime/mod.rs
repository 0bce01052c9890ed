//! The running pooler: the listeners (TCP and Unix socket) handing each connection to
//! the frontend, the Prometheus endpoint, live reload triggers (SIGHUP, `autoreload`) and
//! shutdown (SIGINT and admin SHUTDOWN drain, SIGTERM stops at once), online upgrades
//! (SIGUSR2: `upgrade` on the old process's side, `takeover` on the new one's), the pid
//! file.

mod takeover;
mod upgrade;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};

use crate::app::App;
use crate::config::Config;
use crate::frontend;
use crate::net::Stream;
use crate::stats;

/// Runs the pooler on `general.host:general.port` until it is shut down (or, after an
/// online upgrade, until its clients have moved to the new process).
pub async fn serve(config: Config) -> std::io::Result<()> {
    // The path this binary was started from: after a new binary is installed there,
    // SIGUSR2 starts that one.
    let exe = std::env::current_exe().ok();
    let previous = takeover::inherited();
    let general = config.general.clone();
    let (host, port) = (general.host.clone(), general.port);
    let pools = config.pools.len();
    let app = Arc::new(App::new(config)?);
    let listeners = match previous {
        None => Listeners::bind(&general).await?,
        Some(channel) => {
            let taken = takeover::take_over(channel, &app).await?;
            tracing::info!("upgrade: took over the listening sockets from the previous process");
            Listeners {
                tcp: taken.tcp,
                unix: taken.unix.map(|l| UnixSocket::taken(l, &general, port)),
                prometheus: taken.prometheus,
            }
        }
    };
    let pidfile = general.pidfile.as_deref().map(Pidfile::write).transpose()?;
    if let Some(listener) = &listeners.prometheus {
        let listener = TcpListener::from_std(clone_listener(listener)?)?;
        tokio::spawn(crate::admin::http::serve(listener, app.clone()));
    }
    tokio::spawn(stats_period(app.clone()));
    tokio::spawn(resolve_in_doubt(app.clone()));
    tokio::spawn(refresh_dns(app.clone()));
    if let Some(ms) = general.autoreload {
        tokio::spawn(autoreload_loop(
            app.clone(),
            Duration::from_millis(ms.max(100)),
        ));
    }
    tracing::info!(%host, port, pools, "pgcat is accepting connections");
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut user2 = signal(SignalKind::user_defined2())?;
    let mut shutdown = app.shutdown_started();
    let tcp = TcpListener::from_std(clone_listener(&listeners.tcp)?)?;
    let accepting = tokio::spawn(accept(Listener::Tcp(tcp), app.clone()));
    let accepting_unix = listeners.unix.as_ref().map(|u| {
        tracing::info!(path = %u.path.display(), "also accepting connections on a Unix socket");
        tokio::spawn(accept(Listener::Unix(u.listener.clone()), app.clone()))
    });
    let stop_accepting = || {
        accepting.abort();
        if let Some(a) = &accepting_unix {
            a.abort();
        }
    };
    let mut handing: Option<upgrade::Handing> = None;
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
            _ = user2.recv() => {
                if handing.is_some() {
                    tracing::warn!("SIGUSR2: an upgrade is under way already");
                    continue;
                }
                let Some(exe) = &exe else {
                    tracing::error!("SIGUSR2: the path of this binary is unknown; no upgrade");
                    continue;
                };
                tracing::info!("SIGUSR2: upgrading to the binary at {}", exe.display());
                match upgrade::start(&app, exe, listeners.sockets()).await {
                    Ok(h) => {
                        stop_accepting();
                        handing = Some(h);
                    }
                    Err(why) => tracing::error!("upgrade failed, this process keeps serving: {why}"),
                }
            }
            _ = all_moved(&app), if handing.is_some() => break,
            _ = shutdown.changed() => {
                drain(&app).await;
                break;
            }
        }
    }
    stop_accepting();
    match handing {
        Some(h) => {
            tracing::info!(
                clients = h.moved(),
                "upgrade: every client has moved or left; the previous process exits"
            );
            h.finish();
            // The socket file and the pid file are the new process's now.
            if let Some(unix) = listeners.unix {
                unix.keep_file();
            }
            std::mem::forget(pidfile);
        }
        None => tracing::info!("shut down"),
    }
    Ok(())
}

/// The listening sockets: the clients' (TCP, and the Unix socket), Prometheus'.
struct Listeners {
    tcp: std::net::TcpListener,
    unix: Option<UnixSocket>,
    prometheus: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds them as the configuration says.
    async fn bind(general: &crate::config::General) -> std::io::Result<Listeners> {
        let (host, port) = (general.host.as_str(), general.port);
        // A deep accept queue: a burst of connections must not be dropped by the kernel
        // before the pooler accepts them (the default is 128).
        let backlog = general.max_client_conn.clamp(128, 4096) as u32;
        let tcp = listen(host, port, backlog, general.so_reuseport)
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("could not listen on {host}:{port}: {e}"))
            })?;
        let unix = match &general.unix_socket_dir {
            Some(dir) => Some(UnixSocket::bind(&dir.join(format!(".s.PGSQL.{port}")))?),
            None => None,
        };
        let prometheus = match general.enable_prometheus_exporter {
            false => None,
            true => {
                let port = general.prometheus_exporter_port;
                let l = TcpListener::bind((host, port)).await.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("could not listen for Prometheus on {host}:{port}: {e}"),
                    )
                })?;
                Some(l.into_std()?)
            }
        };
        Ok(Listeners {
            tcp: tcp.into_std()?,
            unix,
            prometheus,
        })
    }

    fn sockets(&self) -> upgrade::Sockets<'_> {
        upgrade::Sockets {
            tcp: &self.tcp,
            unix: self.unix.as_ref().map(|u| &*u.listener),
            prometheus: self.prometheus.as_ref(),
        }
    }
}

/// A listener the runtime serves while this process keeps its own copy to hand over.
fn clone_listener(l: &std::net::TcpListener) -> std::io::Result<std::net::TcpListener> {
    let l = l.try_clone()?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Ready once no client of a pool is left here (they moved, or left); admin consoles are
/// closed by the upgrade at their idle point and do not hold it up.
async fn all_moved(app: &App) {
    loop {
        let clients = app.registry.clients();
        // A client leaving is out of the registry before the new process has it.
        if app.handoffs_in_flight() == 0
            && clients
                .iter()
                .all(|c| crate::admin::is_admin_database(&c.database))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pid file (`pidfile`): written at start; removed at exit unless another process
/// (the new one of an upgrade) wrote its own since.
struct Pidfile(PathBuf);

impl Pidfile {
    fn write(path: &Path) -> std::io::Result<Pidfile> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("general.pidfile: could not write {}: {e}", path.display()),
            )
        })?;
        Ok(Pidfile(path.to_path_buf()))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Binds `host:port` with an accept queue of `backlog` (`reuseport`: other processes may
/// listen on it too, `so_reuseport`).
async fn listen(
    host: &str,
    port: u16,
    backlog: u32,
    reuseport: bool,
) -> std::io::Result<TcpListener> {
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
    if reuseport {
        socket.set_reuseport(true)?;
    }
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

impl UnixSocket {
    /// A Unix socket listener handed over by the previous process.
    fn taken(listener: UnixListener, general: &crate::config::General, port: u16) -> UnixSocket {
        let dir = general.unix_socket_dir.clone().unwrap_or_default();
        UnixSocket {
            listener: Arc::new(listener),
            path: dir.join(format!(".s.PGSQL.{port}")),
        }
    }

    /// Leaves the socket file in place (another process listens on it now).
    fn keep_file(self) {
        std::mem::forget(self);
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept(listener: Listener, app: Arc<App>) -> std::io::Result<()> {
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
        let id = app.next_client_id();
        tokio::spawn(frontend::handle(stream, app.clone(), id));
    }
}
