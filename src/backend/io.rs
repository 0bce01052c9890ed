//! The byte side of a server connection: its socket and what was read from it and not yet
//! handled. The relay reads, forwards and consumes through these methods; nothing here
//! knows what the bytes mean.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::BackendError;
use crate::net::Stream;

/// A server connection's socket and read buffer.
pub struct ServerIo {
    stream: Stream,
    buf: BytesMut,
    addr: Arc<str>,
}

impl ServerIo {
    pub(super) fn new(stream: Stream, addr: Arc<str>) -> ServerIo {
        ServerIo {
            stream,
            buf: BytesMut::with_capacity(8192),
            addr,
        }
    }

    /// The connection broke with `source`.
    pub fn lost(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            addr: self.addr.to_string(),
            source,
        }
    }

    /// The server closed the connection.
    pub fn closed(&self) -> BackendError {
        BackendError::Closed {
            addr: self.addr.to_string(),
        }
    }

    /// The pooler's end of the connection (TCP).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.tcp().and_then(|s| s.local_addr().ok())
    }

    /// What was read from the server and not consumed yet.
    #[inline]
    pub fn received(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` received bytes (handled).
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n);
    }

    /// Reads what the server sent next (at least one byte) after what was received.
    /// Cancel-safe: a read that did not complete lost nothing.
    pub async fn read_more(&mut self) -> Result<(), BackendError> {
        crate::net::make_room(&mut self.buf);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(self.closed()),
            Ok(_) => Ok(()),
            Err(source) => Err(self.lost(source)),
        }
    }

    /// Writes what the socket takes now without waiting (0 when it takes nothing); an
    /// error is the connection's ([`ServerIo::lost`] names it).
    #[inline]
    pub fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self.stream.try_write(bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        }
    }

    /// Bytes written earlier are still held back (TLS records rustls has not sent).
    #[inline]
    pub fn wants_flush(&self) -> bool {
        self.stream.wants_flush()
    }

    /// Waits until the socket takes some of `rest` (or, with nothing left, flushes) or has
    /// something to read, whichever comes first; both are polled with one waker, so either
    /// wakes the task (through TLS too, where socket readiness says little about rustls'
    /// buffers). Returns how many bytes were written and whether something was read.
    pub async fn write_or_read(&mut self, rest: &[u8]) -> Result<(usize, bool), BackendError> {
        crate::net::make_room(&mut self.buf);
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let (wrote, read) = std::future::poll_fn(|cx| {
            let wrote = if rest.is_empty() {
                Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| 0)
            } else {
                Pin::new(&mut *stream).poll_write(cx, rest)
            };
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, buf);
            if wrote.is_pending() && read.is_pending() {
                return Poll::Pending;
            }
            Poll::Ready((wrote, read))
        })
        .await;
        let written = match wrote {
            Poll::Ready(Ok(0)) if !rest.is_empty() => {
                return Err(self.lost(std::io::ErrorKind::WriteZero.into()))
            }
            Poll::Ready(Ok(w)) => w,
            Poll::Ready(Err(e)) => return Err(self.lost(e)),
            Poll::Pending => 0,
        };
        match read {
            Poll::Ready(Ok(0)) => Err(self.closed()),
            Poll::Ready(Ok(_)) => Ok((written, true)),
            Poll::Ready(Err(e)) => Err(self.lost(e)),
            Poll::Pending => Ok((written, false)),
        }
    }

    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        let r = self.stream.send(bytes).await;
        r.map_err(|e| self.lost(e))
    }

    /// Reads more into the buffer for the pooler's own conversation.
    pub(super) async fn fill(&mut self) -> Result<(), BackendError> {
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| self.lost(e))?;
        if n == 0 {
            return Err(self.closed());
        }
        Ok(())
    }

    pub(super) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// An idle server sends nothing: readable data or EOF means it is gone.
    pub(super) fn is_silent(&mut self) -> bool {
        self.buf.is_empty() && self.stream.is_silent()
    }
}
