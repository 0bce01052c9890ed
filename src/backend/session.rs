//! What the pooler knows of the session on a server connection: its address and cancel
//! key, the parameters it reported and those applied for clients, the state to undo
//! before another client gets it, the statements prepared on it, and where its traffic is
//! counted. The relay updates it as messages pass, through these methods.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::statements::ServerStatements;
use super::Dirty;
use crate::net::CancelKey;
use crate::stats::{health::Health, Counters, ServerInfo, ServerState};

/// The statistics records of a pooled server connection.
pub struct ServerStats {
    counters: Arc<Counters>,
    info: Arc<ServerInfo>,
    health: Arc<Health>,
}

impl ServerStats {
    pub fn new(counters: Arc<Counters>, info: Arc<ServerInfo>, health: Arc<Health>) -> Self {
        ServerStats {
            counters,
            info,
            health,
        }
    }
}

/// The pooler's record of one server session.
pub struct ServerSession {
    addr: Arc<str>,
    /// Shared with the cancel slot of the client holding the server (lent per transaction
    /// without a copy).
    cancel: Arc<CancelKey>,
    /// The ParameterStatus values the server reported last (at login, and after what the
    /// pooler itself ran: the canonical spelling of what a client set).
    params: Vec<(String, String)>,
    /// Client parameters set on this connection, by lower-case name, sorted.
    applied: Vec<(String, String)>,
    dirty: Dirty,
    /// Client statements prepared here under the pooler's names (transaction mode).
    statements: Option<ServerStatements>,
    stats: Option<ServerStats>,
}

impl ServerSession {
    pub(super) fn new(addr: Arc<str>) -> ServerSession {
        ServerSession {
            cancel: Arc::new(CancelKey {
                addr: addr.clone(),
                pid: 0,
                secret: Vec::new(),
            }),
            addr,
            params: Vec::new(),
            applied: Vec::new(),
            dirty: Dirty::default(),
            statements: None,
            stats: None,
        }
    }

    /// Where this connection's traffic is counted, and the statement cache it keeps (set
    /// by the pool that made it).
    pub fn pooled(&mut self, stats: ServerStats, statements: Option<ServerStatements>) {
        self.stats = Some(stats);
        self.statements = statements;
    }

    /// `host:port` of the server.
    #[inline]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The key that cancels what runs on this server.
    #[inline]
    pub fn cancel_key(&self) -> &Arc<CancelKey> {
        &self.cancel
    }

    pub(super) fn cancel_key_mut(&mut self) -> &mut CancelKey {
        // Not shared yet at login: make_mut changes it in place.
        Arc::make_mut(&mut self.cancel)
    }

    /// The parameters the server reported last.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// Records a ParameterStatus body (`name\0value\0`) the server sent.
    pub fn note_parameter(&mut self, body: &[u8]) {
        let mut parts = body.split(|b| *b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        let name = String::from_utf8_lossy(name);
        let value = String::from_utf8_lossy(value).into_owned();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(param) => param.1 = value,
            None => self.params.push((name.into_owned(), value)),
        }
    }

    /// The client parameters this server carries now.
    pub(super) fn applied(&self) -> &[(String, String)] {
        &self.applied
    }

    /// The server now carries exactly `params` for its client (a plain SET succeeded).
    pub fn applied_now(&mut self, params: &[(String, String)]) {
        params.clone_into(&mut self.applied);
    }

    /// What the server carries is no longer known (a RESET returned to the server's
    /// default, an attempt failed): re-applied for the next client, reset at check-in.
    pub fn forget_applied(&mut self) {
        self.applied.clear();
        self.dirty.settings = true;
    }

    /// The client's `DISCARD ALL` (`everything`) or `DEALLOCATE ALL` ran on the server:
    /// every prepared statement is gone, with DISCARD ALL every setting and all other
    /// session state too.
    pub fn client_discarded(&mut self, everything: bool) {
        if let Some(s) = &mut self.statements {
            s.clear();
        }
        if everything {
            self.applied.clear();
            self.dirty = Dirty::default();
        } else {
            self.dirty.prepared = false;
        }
    }

    /// Session state to undo before another client gets this server.
    #[inline]
    pub fn dirty(&self) -> Dirty {
        self.dirty
    }

    #[inline]
    pub fn dirty_mut(&mut self) -> &mut Dirty {
        &mut self.dirty
    }

    /// Client statements prepared here under the pooler's names (transaction mode).
    #[inline]
    pub fn statements_mut(&mut self) -> Option<&mut ServerStatements> {
        self.statements.as_mut()
    }

    /// The id of the server's address in the health registry (0 when not pooled).
    pub fn health_id(&self) -> u64 {
        self.stats.as_ref().map_or(0, |s| s.health.id)
    }

    /// Why the server's address is banned, if it is.
    pub fn ban_reason(&self) -> String {
        let ban = self.stats.as_ref().and_then(|s| s.health.ban_info());
        ban.map(|b| b.0).unwrap_or_default()
    }

    /// The server was handed to a client after `waited_us` in the queue.
    pub fn count_checkout(&self, waited_us: u64) {
        if let Some(s) = &self.stats {
            s.counters.wait(waited_us);
            s.info.set_state(ServerState::Active);
        }
    }

    /// The server went back to its pool.
    pub fn count_checkin(&self) {
        if let Some(s) = &self.stats {
            s.info.set_state(ServerState::Idle);
        }
    }

    /// `n` bytes went to the server.
    #[inline]
    pub fn count_sent(&self, n: usize) {
        if let Some(s) = &self.stats {
            s.counters.bytes(n as u64, 0);
            s.info.bytes_sent.fetch_add(n as u64, Relaxed);
        }
    }

    /// `n` bytes came from the server.
    #[inline]
    pub fn count_received(&self, n: usize) {
        if let Some(s) = &self.stats {
            s.counters.bytes(0, n as u64);
            s.info.bytes_received.fetch_add(n as u64, Relaxed);
        }
    }

    /// The server reported an error.
    pub fn count_error(&self) {
        if let Some(s) = &self.stats {
            s.counters.error();
        }
    }

    /// A query ended after `query_us`; with `xact_us`, its transaction too.
    #[inline]
    pub fn count_query(&self, query_us: u64, xact_us: Option<u64>) {
        if let Some(s) = &self.stats {
            s.counters.query(query_us);
            s.info.query_count.fetch_add(1, Relaxed);
            if let Some(us) = xact_us {
                s.counters.xact(us);
                s.info.xact_count.fetch_add(1, Relaxed);
            }
        }
    }

    /// Resets what the pooler's reset undid.
    pub(super) fn reset_done(&mut self) {
        let d = self.dirty;
        if d.everything || d.settings {
            self.applied.clear();
        }
        if d.everything || d.prepared {
            if let Some(s) = &mut self.statements {
                s.clear();
            }
        }
        self.dirty = Dirty::default();
    }

    pub(super) fn set_applied(&mut self, applied: Option<&[(String, String)]>) {
        match applied {
            Some(params) => {
                self.applied_now(params);
                self.dirty.settings = false;
            }
            None => self.forget_applied(),
        }
    }
}
