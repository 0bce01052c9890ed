//! Online upgrade, the new process's side: started by the old one with the channel's fd
//! in `PGCAT_UPGRADE_FD` (see `upgrade`). Once its configuration loaded and its pools are
//! built it says so, receives the listening sockets and serves them; then it takes each
//! client the old process hands over, and sends the old process the cancel requests for
//! keys it does not know until the old process says it is done.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::app::App;
use crate::net::fdpass;

/// The channel to the old process, when this process was started by an upgrade.
pub fn inherited() -> Option<UnixStream> {
    let fd: i32 = std::env::var("PGCAT_UPGRADE_FD").ok()?.parse().ok()?;
    // SAFETY: the old process passed this descriptor, open, for this process alone; it is
    // used once (the variable is not read again: an upgrade of this process sets its own).
    let channel = unsafe { UnixStream::from_raw_fd(fd) };
    // Not inherited by this process's own children.
    // SAFETY: fcntl on the descriptor just taken.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(channel)
}

/// The listening sockets the old process handed over.
pub struct Taken {
    pub tcp: std::net::TcpListener,
    pub unix: Option<UnixListener>,
    pub prometheus: Option<std::net::TcpListener>,
}

/// Says this process is ready, takes the listening sockets, and starts taking clients.
pub async fn take_over(channel: UnixStream, app: &Arc<App>) -> std::io::Result<Taken> {
    let reader = channel.try_clone()?;
    let pid = std::process::id().to_be_bytes();
    let answer = tokio::task::spawn_blocking(move || {
        fdpass::send(&reader, b'R', &pid, &[])?;
        fdpass::recv(&reader)
    })
    .await
    .map_err(std::io::Error::other)??;
    let Some(m) = answer.filter(|m| m.kind == b'L') else {
        return Err(std::io::Error::other(
            "the previous process sent no listening sockets",
        ));
    };
    let names = String::from_utf8_lossy(&m.payload).into_owned();
    let mut taken = (None, None, None);
    for (name, fd) in names.split(' ').zip(m.fds) {
        match name {
            "tcp" => taken.0 = Some(tcp(fd)?),
            "unix" => taken.1 = Some(unix(fd)?),
            "prometheus" => taken.2 = Some(tcp(fd)?),
            _ => {}
        }
    }
    let tcp = taken
        .0
        .ok_or_else(|| std::io::Error::other("the previous process sent no TCP listener"))?;
    app.set_previous(Some(channel.try_clone()?));
    let (app, handle) = (app.clone(), tokio::runtime::Handle::current());
    std::thread::spawn(move || take_clients(&channel, &app, &handle));
    Ok(Taken {
        tcp,
        unix: taken.1,
        prometheus: taken.2,
    })
}

fn tcp(fd: OwnedFd) -> std::io::Result<std::net::TcpListener> {
    Ok(std::net::TcpListener::from(fd))
}

fn unix(fd: OwnedFd) -> std::io::Result<UnixListener> {
    let listener = std::os::unix::net::UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Serves each client the old process hands over, until it is done.
fn take_clients(channel: &UnixStream, app: &Arc<App>, handle: &tokio::runtime::Handle) {
    loop {
        match fdpass::recv(channel) {
            Ok(Some(m)) if m.kind == b'C' => {
                let Some(fd) = m.fds.into_iter().next() else {
                    continue;
                };
                app.clients_taken_over.fetch_add(1, Ordering::Relaxed);
                let _guard = handle.enter();
                crate::frontend::handover::serve_moved(app.clone(), (fd, m.payload));
            }
            Ok(Some(m)) if m.kind == b'D' => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    app.set_previous(None);
    let taken = app.clients_taken_over.load(Ordering::Relaxed);
    tracing::info!(
        clients = taken,
        "upgrade complete: the previous process has handed over its clients and exited"
    );
}
