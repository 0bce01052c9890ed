//! Mirroring (PgCat's shard `mirrors`): a copy of everything the pooler sends on a server
//! connection goes to a mirror server over a connection of its own, which logs in like the
//! pool's (same database, user, secret, startup options); the mirror's replies are read
//! and discarded (its ErrorResponses counted).
//!
//! The client's path only hands a copy to a bounded queue (`try_send`, never waits): a
//! slow, frozen or dead mirror loses statements, counted as dropped, and never slows a
//! client. A gap breaks the mirror's session (a dropped COMMIT would leave its transaction
//! open, holding locks), so after a drop the mirror connection is closed and the next
//! statement starts on a new one. A mirror that cannot be reached is retried after a
//! back-off (1 s doubling to 30 s); what arrives meanwhile is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{connect, ServerConn, ServerTarget, TcpSettings};
use crate::wire::frame;

/// Chunks (each one write's whole messages) a mirror connection may have waiting.
const QUEUE_CHUNKS: usize = 1024;
/// Bytes a mirror connection may have waiting.
const QUEUE_BYTES: usize = 4 << 20;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One configured mirror of one server address of a pool user, and what it received.
#[derive(Debug)]
pub struct MirrorTarget {
    target: ServerTarget,
    connect_timeout: Duration,
    counters: MirrorCounters,
}

/// What a mirror received, over all the server connections it mirrors.
#[derive(Debug, Default)]
pub struct MirrorCounters {
    sent: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    failures: AtomicU64,
    connections: AtomicU64,
}

/// A snapshot of [`MirrorCounters`], for the admin console and Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorReport {
    /// Writes delivered to the mirror (each the whole messages of one write to the server).
    pub sent: u64,
    pub bytes: u64,
    /// Writes not delivered: the queue was full, or the mirror was down.
    pub dropped: u64,
    /// ErrorResponses the mirror answered with.
    pub errors: u64,
    /// Connections to the mirror that could not be opened or broke.
    pub failures: u64,
    /// Connections to the mirror open now.
    pub connections: u64,
}

impl MirrorTarget {
    /// A mirror at `host:port` of the server `of` logs in to.
    pub fn new(of: &ServerTarget, host: &str, port: u16, connect_timeout: Duration) -> Self {
        let mut target = of.clone();
        target.host = host.to_string();
        target.port = port;
        MirrorTarget {
            target,
            connect_timeout,
            counters: MirrorCounters::default(),
        }
    }

    pub fn host(&self) -> &str {
        &self.target.host
    }

    pub fn port(&self) -> u16 {
        self.target.port
    }

    pub fn report(&self) -> MirrorReport {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MirrorReport {
            sent: get(&c.sent),
            bytes: get(&c.bytes),
            dropped: get(&c.dropped),
            errors: get(&c.errors),
            failures: get(&c.failures),
            connections: get(&c.connections),
        }
    }

    fn count(&self, counter: impl Fn(&MirrorCounters) -> &AtomicU64, n: u64) {
        counter(&self.counters).fetch_add(n, Ordering::Relaxed);
    }
}

/// The sending end a server connection holds for one mirror; dropping it ends the
/// mirror's connection.
pub struct Mirror {
    queue: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

struct Shared {
    target: Arc<MirrorTarget>,
    queued_bytes: AtomicUsize,
    /// Something was dropped since the mirror connection last started afresh.
    gap: AtomicBool,
}

impl Mirror {
    /// Starts the task that feeds the mirror `target` (it connects at the first write).
    pub fn start(target: Arc<MirrorTarget>, tcp: TcpSettings) -> Mirror {
        let (queue, chunks) = mpsc::channel(QUEUE_CHUNKS);
        let shared = Arc::new(Shared {
            target,
            queued_bytes: AtomicUsize::new(0),
            gap: AtomicBool::new(false),
        });
        tokio::spawn(feed(shared.clone(), tcp, chunks));
        Mirror { queue, shared }
    }

    /// Queues a copy of `bytes` (whole messages) for the mirror, or drops it when the
    /// queue is full. Never waits.
    pub fn send(&self, bytes: &[u8]) {
        let s = &self.shared;
        let queued = s.queued_bytes.fetch_add(bytes.len(), Ordering::Relaxed);
        if queued + bytes.len() > QUEUE_BYTES
            || self.queue.try_send(Bytes::copy_from_slice(bytes)).is_err()
        {
            s.queued_bytes.fetch_sub(bytes.len(), Ordering::Relaxed);
            s.gap.store(true, Ordering::Relaxed);
            s.target.count(|c| &c.dropped, 1);
        }
    }
}

/// The mirror's connection while it lives: writes what is queued, discards the replies.
async fn feed(shared: Arc<Shared>, tcp: TcpSettings, mut chunks: mpsc::Receiver<Bytes>) {
    let target = &shared.target;
    let mut conn: Option<Connection> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut down_until: Option<Instant> = None;
    loop {
        let chunk = match conn.as_mut() {
            Some(c) => {
                tokio::select! {
                    chunk = chunks.recv() => chunk,
                    alive = c.discard_replies() => {
                        if !alive {
                            close(&mut conn, true);
                        }
                        continue;
                    }
                }
            }
            None => chunks.recv().await,
        };
        let Some(chunk) = chunk else {
            // The server connection is gone: so is its mirror (closing it rolls back).
            close(&mut conn, false);
            return;
        };
        shared
            .queued_bytes
            .fetch_sub(chunk.len(), Ordering::Relaxed);
        if shared.gap.swap(false, Ordering::Relaxed) {
            close(&mut conn, false);
        }
        if down_until.is_some_and(|until| Instant::now() < until) {
            shared.gap.store(true, Ordering::Relaxed);
            target.count(|c| &c.dropped, 1);
            continue;
        }
        if conn.is_none() {
            match Connection::open(target, &tcp).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = FIRST_BACKOFF;
                    down_until = None;
                }
                Err(reason) => {
                    tracing::warn!(mirror = %target.target.addr(), %reason, retry_in = ?backoff,
                        "mirror unreachable: statements for it are dropped meanwhile");
                    target.count(|c| &c.failures, 1);
                    target.count(|c| &c.dropped, 1);
                    down_until = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if c.write(&chunk).await {
            target.count(|c| &c.sent, 1);
            target.count(|c| &c.bytes, chunk.len() as u64);
        } else {
            target.count(|c| &c.dropped, 1);
            close(&mut conn, true);
        }
    }
}

/// Ends the mirror connection, if open (`broke`: counted as a failure), with a Terminate
/// when the socket takes it now.
fn close(conn: &mut Option<Connection>, broke: bool) {
    if let Some(mut c) = conn.take() {
        if !broke {
            let _ = c.server.io().try_write(&[b'X', 0, 0, 0, 4]);
        }
        c.target
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        if broke {
            c.target.count(|c| &c.failures, 1);
        }
    }
}

/// An open connection to the mirror, and where the reply being skipped ends.
struct Connection {
    target: Arc<MirrorTarget>,
    server: ServerConn,
    /// Bytes of the current reply message not read yet.
    skip: usize,
}

impl Connection {
    async fn open(target: &Arc<MirrorTarget>, tcp: &TcpSettings) -> Result<Connection, String> {
        let connecting = Box::pin(connect(&target.target, tcp));
        match tokio::time::timeout(target.connect_timeout, connecting).await {
            Ok(Ok(server)) => {
                target.count(|c| &c.connections, 1);
                Ok(Connection {
                    target: target.clone(),
                    server,
                    skip: 0,
                })
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no login within {:?}", target.connect_timeout)),
        }
    }

    /// Writes `bytes` whole while reading (and discarding) what the mirror answers, so a
    /// mirror blocked sending results cannot block the write. `false`: the connection broke.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() || self.server.io().wants_flush() {
            match self.server.io().write_or_read(rest).await {
                Ok((written, _)) => rest = &rest[written..],
                Err(_) => return false,
            }
            if !self.skip_received() {
                return false;
            }
        }
        true
    }

    /// Waits for the mirror's replies and discards them; `false` when the connection broke.
    async fn discard_replies(&mut self) -> bool {
        self.server.io().read_more().await.is_ok() && self.skip_received()
    }

    /// Drops what was read, counting the ErrorResponses; `false` on a malformed reply.
    fn skip_received(&mut self) -> bool {
        loop {
            let io = self.server.io();
            let received = io.received().len();
            if received == 0 {
                return true;
            }
            if self.skip > 0 {
                let n = self.skip.min(received);
                io.consume(n);
                self.skip -= n;
                continue;
            }
            match frame::header(io.received()) {
                Ok(Some((tag, len))) => {
                    if tag == b'E' {
                        self.target.count(|c| &c.errors, 1);
                    }
                    self.skip = len + 1;
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }
}
