//! The named statements the pooler has prepared on one server connection, under its own
//! names (`pgcat_<hash of the statement>` for a protocol Parse, `pgcat_sql_<hash>` for SQL
//! `PREPARE`), so clients in transaction mode can use their prepared statements on
//! whichever server they get. Bounded: past the pool's
//! `prepared_statements_cache_size` the least recently used one is closed.
//!
//! A statement is prepared against the schema of its time: PostgreSQL fixes its parameter
//! types at Parse ("cache lookup failed for type" once a type is dropped and re-created)
//! and refuses a new result shape ("cached plan must not change result type"). A copy on
//! a server may be older than the client's own Parse of the same text (another client
//! prepared it there first), which directly would never happen. So the pool counts the
//! schema changes it sees ([`SchemaEpoch`]: DDL through it, and those two errors), each
//! copy records the epoch of its Parse, each client statement the epoch of the client's,
//! and a copy older than the client's statement is closed and prepared again before the
//! client uses it. A copy refused for a dropped type is prepared again at its next use.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use lru::LruCache;

/// A client's named statement as the pooler prepares it on servers.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// The name it has on every server.
    pub server_name: Arc<str>,
    /// A protocol Parse: the body after the statement name (query, parameter count,
    /// parameter types). SQL `PREPARE`: the text after the statement's name.
    pub body: Box<[u8]>,
    /// Made by SQL `PREPARE` (prepared on a server with `PREPARE server_name body`).
    pub sql: bool,
}

impl Statement {
    /// The statement of a protocol Parse whose body after the name is `body`.
    pub fn new(body: &[u8]) -> Statement {
        Statement::named("pgcat", body, false)
    }

    /// The statement of SQL `PREPARE name rest`.
    pub fn sql(rest: &str) -> Statement {
        Statement::named("pgcat_sql", rest.as_bytes(), true)
    }

    fn named(prefix: &str, body: &[u8], sql: bool) -> Statement {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        Statement {
            server_name: format!("{prefix}_{:016x}", h.finish()).into(),
            body: body.into(),
            sql,
        }
    }
}

/// Counts schema changes seen through a pool: statements prepared before the latest one
/// are prepared again before their next use.
#[derive(Debug, Default)]
pub struct SchemaEpoch(AtomicU64);

impl SchemaEpoch {
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// The pooler changed the schema itself (DDL it ran on every shard).
    pub fn changed(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// A server of the pool completed a command (`tag`, the CommandComplete body);
    /// `ddl_in_transaction` says the transaction it ends (a ROLLBACK) changed the schema.
    /// Returns whether the command itself changed the schema.
    pub fn on_command(&self, tag: &[u8], ddl_in_transaction: bool) -> bool {
        let ddl = [&b"CREATE "[..], b"ALTER ", b"DROP "]
            .iter()
            .any(|w| tag.starts_with(w));
        if ddl || (ddl_in_transaction && tag.starts_with(b"ROLLBACK")) {
            self.0.fetch_add(1, Relaxed);
        }
        ddl
    }

    /// A server sent an ErrorResponse (its SQLSTATE and message). When it refused a
    /// prepared statement because the schema under it changed, a new epoch starts (the
    /// change was made outside the pool); returns true when the refusal was for a type
    /// that no longer exists: the server's copies are prepared again at their next use
    /// (see [`ServerStatements::age`]). A new result shape is not: the client must
    /// prepare its statement again, as it would directly.
    pub fn on_error(&self, code: &[u8], message: &[u8]) -> bool {
        let lost_type = code == b"XX000" && message.starts_with(b"cache lookup failed for type");
        if lost_type
            || (code == b"0A000" && message.starts_with(b"cached plan must not change result type"))
        {
            self.0.fetch_add(1, Relaxed);
        }
        lost_type
    }
}

/// Whether a server has a statement ready to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Have {
    /// Prepared no earlier than the client's statement.
    Fresh,
    /// Prepared before it, or refused since: close it and prepare it again.
    Stale,
    Absent,
}

/// Statements prepared on one server, with the schema epoch of their Parse (`None`: to be
/// prepared again).
pub struct ServerStatements {
    cache: LruCache<Arc<str>, (Arc<Statement>, Option<u64>)>,
}

impl ServerStatements {
    pub fn new(capacity: NonZeroUsize) -> ServerStatements {
        ServerStatements {
            cache: LruCache::new(capacity),
        }
    }

    /// Whether this server has `stmt` (same name and the very same statement), prepared
    /// at schema epoch `since` or later.
    pub fn has(&mut self, stmt: &Statement, since: u64) -> Have {
        match self.cache.get(&stmt.server_name) {
            Some((s, at)) if s.body == stmt.body => match at {
                Some(at) if *at >= since => Have::Fresh,
                _ => Have::Stale,
            },
            _ => Have::Absent,
        }
    }

    /// The server refused a statement for a type that no longer exists: every statement
    /// here is prepared again before its next use.
    pub fn age(&mut self) {
        for (_, (_, at)) in self.cache.iter_mut() {
            *at = None;
        }
    }

    /// Records `stmt` as prepared at schema `epoch`; returns the statement evicted to make
    /// room, which the caller must close on the server.
    pub fn insert(&mut self, stmt: Arc<Statement>, epoch: u64) -> Option<Arc<str>> {
        let name = stmt.server_name.clone();
        // `push` hands back the old entry when the name was present: nothing was evicted then.
        let (old, _) = self.cache.push(name.clone(), (stmt, Some(epoch)))?;
        (old != name).then_some(old)
    }

    /// A statement turned out not to exist on the server (its Parse failed).
    pub fn forget(&mut self, name: &str) {
        self.cache.pop(name);
    }

    /// The server dropped all statements (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut s = ServerStatements::new(NonZeroUsize::new(2).unwrap());
        let a = Arc::new(Statement::new(b"select 1\0\0\0"));
        let b = Arc::new(Statement::new(b"select 2\0\0\0"));
        let c = Arc::new(Statement::new(b"select 3\0\0\0"));
        assert_eq!(s.insert(a.clone(), 0), None);
        assert_eq!(s.insert(b.clone(), 0), None);
        assert_eq!(s.has(&a, 0), Have::Fresh);
        assert_eq!(s.insert(c.clone(), 0), Some(b.server_name.clone()));
        assert_eq!(s.has(&b, 0), Have::Absent);
        // Re-inserting the same statement evicts nothing.
        assert_eq!(s.insert(c.clone(), 0), None);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn copies_older_than_the_clients_statement_are_stale() {
        let epoch = SchemaEpoch::default();
        let mut s = ServerStatements::new(NonZeroUsize::new(4).unwrap());
        let a = Arc::new(Statement::new(b"select 1\0\0\0"));
        s.insert(a.clone(), epoch.get());
        for tag in [&b"SELECT 1"[..], b"INSERT 0 1", b"ROLLBACK", b"CREATED"] {
            assert!(!epoch.on_command(tag, false));
        }
        assert!(!epoch.on_error(b"XX000", b"cache lookup failed for relation 1"));
        assert_eq!(epoch.get(), 0);
        // A client that prepared its statement before the change uses the old copy (and
        // gets PostgreSQL's answer for it); one that prepared after gets a new copy.
        assert!(epoch.on_command(b"DROP TYPE", false));
        assert_eq!(s.has(&a, 0), Have::Fresh);
        assert_eq!(s.has(&a, epoch.get()), Have::Stale);
        s.insert(a.clone(), epoch.get());
        assert_eq!(s.has(&a, epoch.get()), Have::Fresh);
        // A rollback undoing DDL is a change too.
        assert!(!epoch.on_command(b"ROLLBACK", true));
        assert_eq!(s.has(&a, epoch.get()), Have::Stale);
        // Refusals: a lost type ages this server's copies; a new result shape starts an
        // epoch only.
        s.insert(a.clone(), epoch.get());
        let before = epoch.get();
        assert!(!epoch.on_error(b"0A000", b"cached plan must not change result type"));
        assert_eq!(epoch.get(), before + 1);
        assert_eq!(s.has(&a, before), Have::Fresh);
        assert!(epoch.on_error(b"XX000", b"cache lookup failed for type 16390"));
        s.age();
        assert_eq!(s.has(&a, 0), Have::Stale);
    }
}
