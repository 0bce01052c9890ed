//! Who is connected: every client and every server connection, with a state the owning
//! task updates with a relaxed store, so SHOW CLIENTS / SHOW SERVERS and the cl_* / sv_*
//! figures can be read without asking the tasks. Entries add and remove themselves at
//! login/logout and connect/close, never on the per-query path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicU16, AtomicU64, AtomicU8,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use rand::Rng;

use super::clock;
use crate::auth::constant_time_eq;
use crate::net::CancelKey;

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Between transactions, holding no server.
    Idle = 0,
    /// Holding a server.
    Active = 1,
    /// Waiting for a server.
    Waiting = 2,
    /// Transaction mode: between transactions, keeping its server for the session state
    /// there (`pin_session_state`).
    Pinned = 3,
}

/// What a server connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Idle = 0,
    Active = 1,
}

/// One connected client.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    /// The client's cancel key (BackendKeyData), unique among connected clients.
    pub pid: i32,
    pub secret: i32,
    pub database: Arc<str>,
    pub user: Arc<str>,
    pub application_name: Box<str>,
    /// `None`: a Unix-socket client.
    pub peer: Option<SocketAddr>,
    pub since: Instant,
    /// The keys of the servers the client holds (one; one per shard while a statement
    /// runs on every shard), which its cancel requests go to.
    server_cancel_keys: Mutex<Vec<Arc<CancelKey>>>,
    state: AtomicU8,
    /// Cancel requests being forwarded to its servers now.
    cancels: AtomicU16,
    /// When the current wait for a server began (µs of [`clock::now_us`]), 0 when not
    /// waiting.
    wait_started_us: AtomicU64,
    /// Longest wait for a server so far, µs.
    max_wait_us: AtomicU64,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub error_count: AtomicU64,
    /// What the pooler tells the client's task from outside (KILL, shutdown, a ban).
    pub interrupt: Interrupt,
    registry: Weak<Registry>,
}

/// Cancel requests of a client being forwarded (see [`ClientInfo::canceling`]).
pub struct Canceling<'a>(&'a AtomicU16, u16);

impl Drop for Canceling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Relaxed);
    }
}

/// Events raised on a client's task from outside: a flag word and the task's waker. The
/// task checks it at every wait for its sockets, which costs an atomic load and a lock
/// that is uncontended (raisers take it only to wake the task), rather than a
/// registration with a shared channel.
#[derive(Debug, Default)]
pub struct Interrupt {
    raised: AtomicU8,
    waker: Mutex<Option<Waker>>,
    /// The address (health record id) the client is relaying to, 0 when none.
    relaying_to: AtomicU64,
}

impl Interrupt {
    /// Admin KILL of the client's pool.
    pub const KILLED: u8 = 1;
    /// A graceful shutdown began.
    pub const SHUTDOWN: u8 = 2;
    /// The address the client is relaying to was banned.
    pub const BANNED: u8 = 4;
    /// An online upgrade: an idle client moves to the new process (or, over TLS, is
    /// closed).
    pub const HANDOVER: u8 = 8;

    fn waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn raise(&self, event: u8) {
        self.raised.fetch_or(event, SeqCst);
        if let Some(waker) = self.waker().take() {
            waker.wake();
        }
    }

    /// Ready with the raised events among `wanted`; otherwise the task is woken when one
    /// is raised.
    pub fn poll(&self, cx: &mut Context<'_>, wanted: u8) -> Poll<u8> {
        let raised = self.raised.load(SeqCst) & wanted;
        if raised != 0 {
            return Poll::Ready(raised);
        }
        {
            let mut waker = self.waker();
            match &mut *waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        match self.raised.load(SeqCst) & wanted {
            0 => Poll::Pending,
            raised => Poll::Ready(raised),
        }
    }

    /// Resolves with the raised events among `wanted`.
    pub async fn wait(&self, wanted: u8) -> u8 {
        std::future::poll_fn(|cx| self.poll(cx, wanted)).await
    }

    /// The client now relays to address `address` (a health record id; 0: none). A ban
    /// raised for an earlier address no longer applies.
    pub fn relay_to(&self, address: u64) {
        self.raised.fetch_and(!Self::BANNED, SeqCst);
        self.relaying_to.store(address, SeqCst);
    }

    pub fn relaying_to(&self) -> u64 {
        self.relaying_to.load(SeqCst)
    }
}

impl ClientInfo {
    /// When the client logged in (wall clock).
    pub fn connected_at(&self) -> SystemTime {
        let now = SystemTime::now();
        now.checked_sub(self.since.elapsed()).unwrap_or(now)
    }

    /// The client now holds the server with this cancel key (`None`: no server).
    pub fn hold_server(&self, cancel_key: Option<Arc<CancelKey>>) {
        let mut keys = self.cancel_keys();
        keys.clear();
        keys.extend(cancel_key);
    }

    /// The client now holds these servers (a statement running on every shard).
    pub fn hold_servers(&self, cancel_keys: impl Iterator<Item = Arc<CancelKey>>) {
        let mut keys = self.cancel_keys();
        keys.clear();
        keys.extend(cancel_keys);
    }

    /// The cancel keys of the servers the client holds.
    /// The keys of the servers the client holds now.
    pub fn held_server_keys(&self) -> Vec<Arc<CancelKey>> {
        self.cancel_keys().clone()
    }

    /// Counts `n` cancel requests being forwarded for the client while the guard lives
    /// (SHOW POOLS' `cl_active_cancel_req`, `sv_active_cancel`).
    pub fn canceling(&self, n: usize) -> Canceling<'_> {
        let n = n.min(u16::MAX as usize) as u16;
        self.cancels.fetch_add(n, Relaxed);
        Canceling(&self.cancels, n)
    }

    /// Cancel requests being forwarded for the client now.
    pub fn cancels_in_flight(&self) -> u16 {
        self.cancels.load(Relaxed)
    }

    fn cancel_keys(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CancelKey>>> {
        self.server_cancel_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The client's address as SHOW CLIENTS prints it.
    pub fn addr(&self) -> String {
        crate::net::peer_name(self.peer)
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            3 => ClientState::Pinned,
            _ => ClientState::Idle,
        }
    }

    /// The clock is read (`now`, µs of [`clock::now_us`]) only when a wait for a server
    /// starts or ends.
    pub fn set_state(&self, state: ClientState, now: impl FnOnce() -> u64) {
        let started = self.wait_started_us.load(Relaxed);
        if state == ClientState::Waiting {
            self.wait_started_us.store(now().max(1), Relaxed);
        } else if started != 0 {
            let waited = now().saturating_sub(started);
            self.max_wait_us.fetch_max(waited, Relaxed);
            self.wait_started_us.store(0, Relaxed);
        }
        self.state.store(state as u8, Relaxed);
    }

    /// The longest the client has waited for a server, in µs (including a wait in progress).
    pub fn max_wait_us(&self) -> u64 {
        self.max_wait_us.load(Relaxed).max(self.waiting_us())
    }

    /// How long the client has been waiting for a server, in µs (0 if not waiting).
    pub fn waiting_us(&self) -> u64 {
        match self.wait_started_us.load(Relaxed) {
            0 => 0,
            start => clock::now_us().saturating_sub(start),
        }
    }
}

impl Drop for ClientInfo {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            r.lock_clients().remove(&self.pid);
        }
    }
}

/// One server connection.
#[derive(Debug)]
pub struct ServerInfo {
    pub id: u64,
    pub database: String,
    pub user: String,
    pub addr: String,
    /// The pooler's end of the connection (SHOW SERVERS' local_addr, local_port).
    pub local: Option<SocketAddr>,
    /// The server's backend process (SHOW SERVERS' remote_pid).
    pub backend_pid: i32,
    pub connected_at: SystemTime,
    pub since: Instant,
    state: AtomicU8,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    registry: Weak<Registry>,
}

impl ServerInfo {
    pub fn state(&self) -> ServerState {
        if self.state.load(Relaxed) == 1 {
            ServerState::Active
        } else {
            ServerState::Idle
        }
    }

    pub fn set_state(&self, state: ServerState) {
        self.state.store(state as u8, Relaxed);
    }
}

impl Drop for ServerInfo {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            r.lock_servers().remove(&self.id);
        }
    }
}

/// All clients and servers of the process.
#[derive(Default, Debug)]
pub struct Registry {
    ids: AtomicU64,
    /// By cancel key pid.
    clients: Mutex<HashMap<i32, Weak<ClientInfo>>>,
    servers: Mutex<HashMap<u64, Weak<ServerInfo>>>,
    /// `peer_id`: carried in the high bits of every client's cancel key pid (0: none).
    peer_id: AtomicU16,
}

/// With a `peer_id`, a cancel key's pid is this bit, the peer id (11 bits) from
/// `PEER_SHIFT`, and random bits below: always above any real process id (2^22).
const PEER_MARK: i32 = 1 << 30;
const PEER_SHIFT: u32 = 19;

/// The peer id a cancel key's pid carries (0: none, or a server's real pid). Meaningful
/// where peering is configured (every key of such an instance carries its peer id).
pub fn peer_of(pid: i32) -> u16 {
    if pid & PEER_MARK == 0 {
        return 0;
    }
    ((pid >> PEER_SHIFT) & 0x7ff) as u16
}

impl Registry {
    /// From now on, clients' cancel keys carry `peer_id` (set once at start).
    pub fn set_peer_id(&self, peer_id: u16) {
        self.peer_id.store(peer_id, Relaxed);
    }
    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Weak<ClientInfo>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_servers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<ServerInfo>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers client `id` with a cancel key of its own; it is removed when the returned
    /// record is dropped. The key's pid is `pid` where given and no other client has it
    /// (a session-mode client is told its server's real pid) and no `peer_id` is set, else
    /// a random one above any process id Linux hands out (2^22), so the two kinds never
    /// meet; with a `peer_id`, the peer id is its bits from `PEER_SHIFT` up.
    pub fn client(
        self: &Arc<Self>,
        id: u64,
        database: Arc<str>,
        user: Arc<str>,
        application_name: Box<str>,
        peer: Option<SocketAddr>,
        pid: Option<i32>,
    ) -> Arc<ClientInfo> {
        let mut rng = rand::rng();
        let mut clients = self.lock_clients();
        let peer_id = i32::from(self.peer_id.load(Relaxed));
        let pid = match pid.filter(|p| peer_id == 0 && !clients.contains_key(p)) {
            Some(pid) => pid,
            None => loop {
                let pid = match peer_id {
                    0 => rng.random_range(1 << 22..i32::MAX),
                    peer => PEER_MARK | (peer << PEER_SHIFT) | rng.random_range(1..1 << PEER_SHIFT),
                };
                if !clients.contains_key(&pid) {
                    break pid;
                }
            },
        };
        let secret = rng.random();
        self.insert(
            &mut clients,
            (pid, secret),
            id,
            (database, user, application_name),
            peer,
        )
    }

    /// Registers a client handed over by another process with the cancel key it had there
    /// (`None` when a client here already has that pid).
    pub fn moved_client(
        self: &Arc<Self>,
        (pid, secret): (i32, i32),
        id: u64,
        names: (Arc<str>, Arc<str>, Box<str>),
        peer: Option<SocketAddr>,
    ) -> Option<Arc<ClientInfo>> {
        let mut clients = self.lock_clients();
        if clients.get(&pid).is_some_and(|c| c.strong_count() > 0) {
            return None;
        }
        Some(self.insert(&mut clients, (pid, secret), id, names, peer))
    }

    fn insert(
        self: &Arc<Self>,
        clients: &mut HashMap<i32, Weak<ClientInfo>>,
        (pid, secret): (i32, i32),
        id: u64,
        (database, user, application_name): (Arc<str>, Arc<str>, Box<str>),
        peer: Option<SocketAddr>,
    ) -> Arc<ClientInfo> {
        let info = Arc::new(ClientInfo {
            id,
            pid,
            secret,
            database,
            user,
            application_name,
            peer,
            since: Instant::now(),
            server_cancel_keys: Mutex::new(Vec::new()),
            state: AtomicU8::new(ClientState::Idle as u8),
            cancels: AtomicU16::new(0),
            wait_started_us: AtomicU64::new(0),
            max_wait_us: AtomicU64::new(0),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            interrupt: Interrupt::default(),
            registry: Arc::downgrade(self),
        });
        clients.insert(pid, Arc::downgrade(&info));
        info
    }

    /// The client whose cancel key is (`pid`, `secret`).
    pub fn by_cancel_key(&self, pid: i32, secret: &[u8]) -> Option<Arc<ClientInfo>> {
        let client = self.lock_clients().get(&pid).and_then(|c| c.upgrade())?;
        constant_time_eq(&client.secret.to_be_bytes(), secret).then_some(client)
    }

    /// A client with this cancel key pid is registered here.
    pub fn has_client(&self, pid: i32) -> bool {
        self.lock_clients()
            .get(&pid)
            .is_some_and(|c| c.strong_count() > 0)
    }

    /// Registers a server connection; removed when the record is dropped.
    /// `local`: the pooler's end of the connection; `backend_pid`: the server's process.
    pub fn server(
        self: &Arc<Self>,
        (database, user, addr): (&str, &str, &str),
        local: Option<SocketAddr>,
        backend_pid: i32,
    ) -> Arc<ServerInfo> {
        let id = self.ids.fetch_add(1, Relaxed) + 1;
        let info = Arc::new(ServerInfo {
            id,
            database: database.to_string(),
            user: user.to_string(),
            addr: addr.to_string(),
            local,
            backend_pid,
            connected_at: SystemTime::now(),
            since: Instant::now(),
            state: AtomicU8::new(ServerState::Idle as u8),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            registry: Arc::downgrade(self),
        });
        self.lock_servers().insert(id, Arc::downgrade(&info));
        info
    }

    /// Raises `event` on every client `which` selects.
    pub fn interrupt(&self, event: u8, which: impl Fn(&ClientInfo) -> bool) {
        // Collected first: a record dropped here removes itself under the same lock.
        for client in self.clients() {
            if which(&client) {
                client.interrupt.raise(event);
            }
        }
    }

    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        let mut v: Vec<_> = self
            .lock_clients()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    pub fn servers(&self) -> Vec<Arc<ServerInfo>> {
        let mut v: Vec<_> = self
            .lock_servers()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(registry: &Registry, pid: i32, secret: &[u8]) -> Vec<Arc<CancelKey>> {
        (registry.by_cancel_key(pid, secret))
            .map(|c| c.held_server_keys())
            .unwrap_or_default()
    }

    #[test]
    fn cancel_keys_carry_the_peer_id() {
        let registry = Arc::new(Registry::default());
        let plain = registry.client(1, "db".into(), "u".into(), "".into(), None, Some(4242));
        assert_eq!((plain.pid, peer_of(plain.pid)), (4242, 0));
        registry.set_peer_id(2047);
        let peered = registry.client(2, "db".into(), "u".into(), "".into(), None, Some(4243));
        assert_eq!(peer_of(peered.pid), 2047, "{:x}", peered.pid);
        assert!(peered.pid > 1 << 22);
        registry.set_peer_id(1);
        let first = registry.client(3, "db".into(), "u".into(), "".into(), None, None);
        assert_eq!(peer_of(first.pid), 1);
    }

    #[test]
    fn a_cancel_key_names_the_server_its_client_holds_and_needs_the_secret() {
        let registry = Arc::new(Registry::default());
        let a = registry.client(1, "db".into(), "u".into(), "".into(), None, None);
        let b = registry.client(2, "db".into(), "u".into(), "".into(), None, Some(4242));
        assert_ne!(a.pid, b.pid, "keys are unique among connected clients");
        assert!(
            a.pid >= 1 << 22,
            "a made-up pid is no process id: {}",
            a.pid
        );
        assert_eq!(b.pid, 4242, "a session-mode client has its server's pid");
        let c = registry.client(3, "db".into(), "u".into(), "".into(), None, Some(4242));
        assert_ne!(
            c.pid, 4242,
            "a pid another client has is not handed out twice"
        );
        drop(c);
        let secret = a.secret.to_be_bytes();
        assert!(keys(&registry, a.pid, &secret).is_empty(), "no server held");
        let key = Arc::new(CancelKey {
            addr: "127.0.0.1:5432".into(),
            pid: 4242,
            secret: vec![1, 2, 3, 4],
        });
        a.hold_server(Some(key.clone()));
        b.hold_server(Some(key));
        let found = keys(&registry, a.pid, &secret);
        assert_eq!(found.iter().map(|k| k.pid).collect::<Vec<_>>(), [4242]);
        let wrong = a.secret.wrapping_add(1).to_be_bytes();
        assert!(keys(&registry, a.pid, &wrong).is_empty());
        if a.secret != b.secret {
            assert!(
                keys(&registry, b.pid, &secret).is_empty(),
                "another's secret"
            );
        }
        a.hold_server(None);
        assert!(keys(&registry, a.pid, &secret).is_empty());
        let pid = a.pid;
        drop(a);
        assert!(
            keys(&registry, pid, &secret).is_empty(),
            "gone with its client"
        );
        assert_eq!(registry.clients().len(), 1);
    }
}
