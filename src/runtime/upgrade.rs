//! Online upgrade, the old process's side (SIGUSR2): starts the binary at the path this
//! process was started from (so installing a new binary and sending SIGUSR2 upgrades), with
//! the same arguments and one end of a socket pair (`PGCAT_UPGRADE_FD`). The new process
//! loads and checks its configuration and builds its pools, then says it is ready; only
//! then does this one hand it the listening sockets and stop accepting. If it fails first
//! (a bad configuration, a crash, no answer within a minute) this process keeps serving and
//! logs why.
//!
//! Then every idle client moves with its socket and state (`frontend::handover`), clients
//! in a transaction when it ends. Clients that cannot move stay until they leave (session
//! mode, pinned state, LISTEN; TLS clients and admin consoles are closed with 57P01 at their
//! idle point), and this process exits once no client of a pool is left. Cancel requests
//! for those the new process does not know are sent back here over the same channel.
//! Server connections are not handed over: the new process opens its own.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, Handoff};
use crate::net::fdpass;

/// How long the new process may take to load its configuration and build its pools.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The listening sockets, in the order they are handed over.
pub struct Sockets<'a> {
    pub tcp: &'a std::net::TcpListener,
    pub unix: Option<&'a tokio::net::UnixListener>,
    pub prometheus: Option<&'a std::net::TcpListener>,
}

/// An upgrade under way: clients are moving to the new process.
pub struct Handing {
    channel: UnixStream,
    moved: Arc<AtomicU64>,
    child: std::process::Child,
}

impl Handing {
    /// Clients handed over so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Tells the new process this one is done (it stops forwarding cancel requests here).
    pub fn finish(mut self) {
        let _ = fdpass::send(&self.channel, b'D', &[], &[]);
        // Not waited for: it is the pooler from now on (and outlives this process).
        let _ = self.child.try_wait();
    }
}

/// Starts the new process and, once it is ready, hands it `sockets` and begins moving
/// clients. The reason when the new process did not take over.
pub async fn start(app: &Arc<App>, exe: &Path, sockets: Sockets<'_>) -> Result<Handing, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let fd = theirs.as_raw_fd();
    clear_cloexec(fd).map_err(|e| format!("socket pair: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("PGCAT_UPGRADE_FD", fd.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", exe.display()))?;
    drop(theirs);
    tracing::info!(pid = child.id(), exe = %exe.display(), "upgrade: new process started, waiting until it is ready");
    let reader = ours.try_clone().map_err(|e| e.to_string())?;
    let ready = tokio::task::spawn_blocking(move || fdpass::recv(&reader));
    let failed = |child: &mut std::process::Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        why
    };
    match tokio::time::timeout(READY_WITHIN, ready).await {
        Ok(Ok(Ok(Some(m)))) if m.kind == b'R' => {}
        Ok(Ok(Ok(_))) | Ok(Ok(Err(_))) | Ok(Err(_)) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!(
                "the new process exited before taking over ({status}); its log says why"
            ));
        }
        Err(_) => {
            return Err(failed(
                &mut child,
                format!("the new process was not ready within {READY_WITHIN:?}"),
            ))
        }
    }
    let mut fds = vec![sockets.tcp.as_raw_fd()];
    let mut names = vec!["tcp"];
    if let Some(u) = sockets.unix {
        fds.push(u.as_raw_fd());
        names.push("unix");
    }
    if let Some(p) = sockets.prometheus {
        fds.push(p.as_raw_fd());
        names.push("prometheus");
    }
    if let Err(e) = fdpass::send(&ours, b'L', names.join(" ").as_bytes(), &fds) {
        return Err(failed(
            &mut child,
            format!("could not hand the listening sockets over: {e}"),
        ));
    }
    let moved = Arc::new(AtomicU64::new(0));
    let (to_new, clients) = std::sync::mpsc::channel::<Handoff>();
    let handle = tokio::runtime::Handle::current();
    let sender = ours.try_clone().map_err(|e| e.to_string())?;
    {
        let (app, moved, handle) = (app.clone(), moved.clone(), handle.clone());
        std::thread::spawn(move || send_clients(&sender, clients, &app, &moved, &handle));
    }
    let receiver = ours.try_clone().map_err(|e| e.to_string())?;
    {
        let app = app.clone();
        std::thread::spawn(move || answer_cancels(&receiver, &app, &handle));
    }
    app.begin_handover(to_new);
    tracing::info!("upgrade: listening sockets handed over; idle clients move to the new process");
    Ok(Handing {
        channel: ours,
        moved,
        child,
    })
}

/// Sends each client given to the upgrade to the new process; one that cannot go (the
/// channel broke) stays here.
fn send_clients(
    sock: &UnixStream,
    clients: std::sync::mpsc::Receiver<Handoff>,
    app: &Arc<App>,
    moved: &AtomicU64,
    handle: &tokio::runtime::Handle,
) {
    for (fd, state) in clients {
        crate::fault::point_blocking(crate::fault::HANDOFF_SEND);
        match fdpass::send(sock, b'C', &state, &[fd.as_raw_fd()]) {
            Ok(()) => {
                moved.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "upgrade: a client could not move; it stays here");
                let _guard = handle.enter();
                crate::frontend::handover::serve_moved(app.clone(), (fd, state));
            }
        }
        app.handoff_done();
    }
}

/// Cancel requests the new process received for clients still here.
fn answer_cancels(sock: &UnixStream, app: &Arc<App>, handle: &tokio::runtime::Handle) {
    while let Ok(Some(m)) = fdpass::recv(sock) {
        if m.kind == b'K' && m.payload.len() == 8 {
            let pid = i32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
            let secret = m.payload[4..].to_vec();
            let app = app.clone();
            handle.spawn(
                async move { crate::frontend::cancel::cancel_here(&app, pid, &secret).await },
            );
        }
    }
}

fn clear_cloexec(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns; F_SETFD takes an int.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
