//! The byte streams the pooler talks over: TCP or a Unix socket from clients, TCP to
//! PostgreSQL, either side possibly wrapped in TLS. One enum rather than a generic so the
//! relay stays one monomorphic loop; the plain-TCP arms keep the non-blocking fast path
//! (`try_write`) and TLS takes the same path through rustls. `dns` resolves server host
//! names once and keeps them (`dns_cache_enabled`).

pub mod dns;
pub mod fdpass;
pub mod tls;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Where a CancelRequest for the query running on a server connection goes: the server's
/// address and the key it gave at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelKey {
    pub addr: std::sync::Arc<str>,
    pub pid: i32,
    pub secret: Vec<u8>,
}

/// The size of a busy client's read buffer.
const READ_BUFFER: usize = 16 * 1024;

/// Read buffers clients gave back when they went idle, kept for the next busy client
/// (per thread, at most `SPARE_BUFFERS`): a transaction does not allocate and free one.
const SPARE_BUFFERS: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Grows `buf` in `READ_BUFFER` steps when less than 4 KB is free for the next read.
pub fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_BUFFER);
    }
}

/// A read buffer of at least `READ_BUFFER` bytes, a spare one if there is one.
fn spare_read_buffer() -> BytesMut {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
}

/// Takes an idle client's empty read buffer back for the next busy client (one that grew
/// for a large message is freed instead).
pub fn give_back_read_buffer(mut buf: BytesMut) {
    // try_reclaim: the space of consumed bytes becomes usable again (no copy, it is empty).
    if buf.is_empty() && buf.try_reclaim(READ_BUFFER) && buf.capacity() <= 2 * READ_BUFFER {
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_BUFFERS {
                spare.push(buf);
            }
        });
    }
}

/// `host:port` of a client, or "unix socket" (`None`).
pub fn peer_name(peer: Option<std::net::SocketAddr>) -> String {
    match peer {
        Some(peer) => peer.to_string(),
        None => "unix socket".to_string(),
    }
}

/// A connection, plain or TLS.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client that negotiated TLS with the pooler.
    TlsFromClient(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The pooler's TLS connection to PostgreSQL.
    TlsToServer(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Between the SSLRequest answer and the end of the TLS handshake; a handshake that
    /// fails leaves the stream here, and every operation fails.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "TLS handshake did not complete",
    )
}

impl Stream {
    /// A plain TCP or Unix stream on a socket handed over by another process.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Stream> {
        let socket = socket2::Socket::from(fd);
        socket.set_nonblocking(true)?;
        if socket.domain()? == socket2::Domain::UNIX {
            let std: std::os::unix::net::UnixStream = std::os::fd::OwnedFd::from(socket).into();
            Ok(Stream::Unix(UnixStream::from_std(std)?))
        } else {
            let std: std::net::TcpStream = socket.into();
            let _ = std.set_nodelay(true);
            Ok(Stream::Tcp(TcpStream::from_std(std)?))
        }
    }

    /// The socket of a plain TCP or Unix stream, in blocking mode, to hand to another
    /// process; a TLS stream (whose session cannot move) is given back.
    pub fn into_fd(self) -> Result<std::os::fd::OwnedFd, Stream> {
        let fd: std::os::fd::OwnedFd = match self {
            Stream::Tcp(s) => match s.into_std() {
                Ok(s) => s.into(),
                Err(_) => return Err(Stream::Upgrading),
            },
            Stream::Unix(s) => match s.into_std() {
                Ok(s) => s.into(),
                Err(_) => return Err(Stream::Upgrading),
            },
            other => return Err(other),
        };
        Ok(fd)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsFromClient(_) | Stream::TlsToServer(_))
    }

    /// The TCP socket underneath (none for a Unix socket).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::TlsFromClient(s) => Some(s.get_ref().0),
            Stream::TlsToServer(s) => Some(s.get_ref().0),
            Stream::Unix(_) | Stream::Upgrading => None,
        }
    }

    /// Writes all of `bytes` and flushes (TLS keeps records back until flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if self.is_tls() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Polls until the peer sends something, then reads it into `buf`, which is only
    /// given memory once data is there (a spare read buffer, see [`spare_read_buffer`]):
    /// an idle plain client holds no read buffer. (A TLS client is read directly; rustls
    /// may hold decrypted bytes the socket no longer shows.) The read goes through
    /// `AsyncRead`, which clears the socket's readiness after a short read: the next wait
    /// does not begin with a read that finds nothing.
    pub fn poll_wait_and_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        // poll_read_ready keeps the waker in the socket's reader slot (no waiter list).
        let ready = match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            _ => Poll::Ready(Ok(())),
        };
        if let Err(e) = std::task::ready!(ready) {
            return Poll::Ready(Err(e));
        }
        if buf.capacity() == 0 {
            *buf = spare_read_buffer();
        }
        make_room(buf);
        let read = tokio_util::io::poll_read_buf(Pin::new(self), cx, buf);
        if read.is_pending() && buf.is_empty() {
            give_back_read_buffer(std::mem::take(buf));
        }
        read
    }

    /// Writes what the socket takes now without waiting; `WouldBlock` when it takes
    /// nothing. Through TLS, what rustls accepted counts as written (see `wants_flush`).
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(bytes),
            Stream::Unix(s) => s.try_write(bytes),
            _ => poll_now(|cx| Pin::new(&mut *self).poll_write(cx, bytes)),
        }
    }

    /// Reads what is there now without waiting; `WouldBlock` when nothing is.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Unix(s) => s.try_read_buf(buf),
            _ => {
                if buf.capacity() == buf.len() {
                    buf.reserve(4096);
                }
                poll_now(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *self), cx, buf))
            }
        }
    }

    /// TLS records are waiting to be written to the socket.
    pub fn wants_flush(&self) -> bool {
        match self {
            Stream::TlsFromClient(s) => s.get_ref().1.wants_write(),
            Stream::TlsToServer(s) => s.get_ref().1.wants_write(),
            _ => false,
        }
    }

    /// Whether an idle connection is still open and silent: data or EOF means the peer
    /// closed it or is talking out of turn.
    pub fn is_silent(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let read = match self {
            Stream::Tcp(s) => s.try_read(&mut probe).map(drop),
            Stream::Unix(s) => s.try_read(&mut probe).map(drop),
            _ => poll_now(|cx| Pin::new(&mut *self).poll_read(cx, &mut ReadBuf::new(&mut probe))),
        };
        matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Polls once with a waker that does nothing: `Pending` becomes `WouldBlock`. Callers
/// wait for readiness on the socket (`Stream::ready`) before trying again.
fn poll_now<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match f(&mut cx) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsFromClient(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::TlsToServer(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsFromClient(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::TlsToServer(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsFromClient(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::TlsToServer(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsFromClient(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::TlsToServer(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}
