//! Cancel keys. Each client gets its own (pid, secret) in BackendKeyData; while it holds a
//! server, its slot names that server's key. A CancelRequest arrives on a fresh connection
//! and is forwarded to whatever server the named client holds right now. The map is touched
//! at login, logout and cancel only; checkout writes the client's own slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::auth::constant_time_eq;
use crate::backend::CancelKey;

/// Where a client's running query can be cancelled, if it holds a server.
#[derive(Default)]
pub struct Slot(Mutex<Option<Arc<CancelKey>>>);

impl Slot {
    pub fn set(&self, key: Option<Arc<CancelKey>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = key;
    }

    fn get(&self) -> Option<Arc<CancelKey>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Entry {
    secret: i32,
    slot: Arc<Slot>,
}

#[derive(Default)]
pub struct Registry {
    clients: Mutex<HashMap<i32, Entry>>,
}

/// A client's registration; removes it from the registry when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<Slot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(self: &Arc<Self>) -> Registration {
        let mut rng = rand::rng();
        let secret = rng.random();
        let slot = Arc::new(Slot::default());
        let mut clients = self.lock();
        let pid = loop {
            let pid = rng.random_range(1..i32::MAX);
            if !clients.contains_key(&pid) {
                break pid;
            }
        };
        clients.insert(
            pid,
            Entry {
                secret,
                slot: slot.clone(),
            },
        );
        Registration {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Forwards a CancelRequest; an unknown key or a client holding no server cancels nothing.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) {
        let key = {
            let clients = self.lock();
            clients
                .get(&pid)
                .filter(|e| constant_time_eq(&e.secret.to_be_bytes(), secret))
                .and_then(|e| e.slot.get())
        };
        match key {
            Some(key) => {
                if let Err(e) = crate::backend::cancel(&key).await {
                    tracing::warn!(server = %key.addr, error = %e, "could not forward a cancel request");
                }
            }
            None => tracing::debug!(
                pid,
                "cancel request for an unknown key or an idle client ignored"
            ),
        }
    }
}
