//! The named statements the pooler has prepared on one server connection, under its own
//! names (`pgcat_<hash of the statement>`), so clients in transaction mode can use their
//! prepared statements on whichever server they get. Bounded: past the pool's
//! `prepared_statements_cache_size` the least recently used one is closed.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

/// A client's named statement as the pooler prepares it on servers.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// The name it has on every server.
    pub server_name: Arc<str>,
    /// The Parse body after the statement name: query, parameter count, parameter types.
    pub body: Box<[u8]>,
}

impl Statement {
    pub fn new(body: &[u8]) -> Statement {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        Statement {
            server_name: format!("pgcat_{:016x}", h.finish()).into(),
            body: body.into(),
        }
    }
}

/// Statements prepared on one server.
pub struct ServerStatements {
    cache: LruCache<Arc<str>, Arc<Statement>>,
}

impl ServerStatements {
    pub fn new(capacity: NonZeroUsize) -> ServerStatements {
        ServerStatements {
            cache: LruCache::new(capacity),
        }
    }

    /// True when this server has `stmt` (same name and the very same statement).
    pub fn has(&mut self, stmt: &Statement) -> bool {
        self.cache
            .get(&stmt.server_name)
            .is_some_and(|s| s.body == stmt.body)
    }

    /// Records `stmt` as prepared; returns the statement evicted to make room, which the
    /// caller must close on the server.
    pub fn insert(&mut self, stmt: Arc<Statement>) -> Option<Arc<str>> {
        let name = stmt.server_name.clone();
        // `push` hands back the old entry when the name was present: nothing was evicted then.
        let (old, _) = self.cache.push(name.clone(), stmt)?;
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
        assert_eq!(s.insert(a.clone()), None);
        assert_eq!(s.insert(b.clone()), None);
        assert!(s.has(&a));
        assert_eq!(s.insert(c.clone()), Some(b.server_name.clone()));
        assert!(!s.has(&b));
        // Re-inserting the same statement evicts nothing.
        assert_eq!(s.insert(c.clone()), None);
        assert_eq!(s.len(), 2);
    }
}
