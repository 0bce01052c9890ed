//! Server health, per `host:port` (shared by every pool user of that address): bans, the
//! role the pool's background check saw, and the WAL position used to
//! measure replica lag.
//!
//! A ban keeps new checkouts away for `ban_time` and wakes every client task holding a
//! connection to that address, so a query in flight on a frozen server fails (08006)
//! instead of hanging. A successful background check lifts a ban that a failure caused
//! (not one an operator set with BAN).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Interrupt, Registry};

/// What the background check learned about a server's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Unknown,
    Primary,
    Standby,
}

/// One server address.
#[derive(Debug)]
pub struct Health {
    pub addr: String,
    /// Epoch ms until which the address is banned (0 = not banned).
    banned_until: AtomicU64,
    banned_at: AtomicU64,
    manual: AtomicBool,
    reason: Mutex<String>,
    seen: AtomicU8,
    /// Last WAL position seen: current on a primary, replayed on a standby.
    lsn: AtomicU64,
    /// Identifies the address to the clients relaying to it (never 0).
    pub id: u64,
    /// Where those clients are found when the address is banned.
    registry: Weak<Registry>,
}

/// Health record ids (0 means no address).
static HEALTH_IDS: AtomicU64 = AtomicU64::new(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Health {
    pub fn new(addr: &str, registry: Weak<Registry>) -> Health {
        Health {
            addr: addr.to_string(),
            banned_until: AtomicU64::new(0),
            banned_at: AtomicU64::new(0),
            manual: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            seen: AtomicU8::new(0),
            lsn: AtomicU64::new(0),
            id: HEALTH_IDS.fetch_add(1, Relaxed),
            registry,
        }
    }

    pub fn is_banned(&self) -> bool {
        self.banned_until.load(Relaxed) > now_ms()
    }

    /// Bans the address for `secs` seconds; `manual` bans (admin BAN) are not lifted by a
    /// successful check. New checkouts go elsewhere; queries running there go on unless
    /// the server is `unreachable` (connecting refused or timed out, a check that got no
    /// answer): then they fail now rather than hang.
    pub fn ban(&self, secs: u64, reason: &str, manual: bool, unreachable: bool) {
        let now = now_ms();
        let was_banned = self.is_banned();
        self.banned_until.store(now + secs.max(1) * 1000, Relaxed);
        if !was_banned {
            self.banned_at.store(now, Relaxed);
        }
        self.manual.store(manual, Relaxed);
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
        if unreachable {
            if let Some(registry) = self.registry.upgrade() {
                registry.interrupt(Interrupt::BANNED, |c| c.interrupt.relaying_to() == self.id);
            }
        }
        if !was_banned {
            tracing::warn!(server = %self.addr, secs, %reason, "server banned");
        }
    }

    pub fn unban(&self) {
        if self.is_banned() {
            tracing::info!(server = %self.addr, "server unbanned");
        }
        self.banned_until.store(0, Relaxed);
        self.manual.store(false, Relaxed);
    }

    /// Reason, when the ban began (epoch s), its length and what is left (s).
    pub fn ban_info(&self) -> Option<(String, u64, u64, u64)> {
        let (until, at, now) = (
            self.banned_until.load(Relaxed),
            self.banned_at.load(Relaxed),
            now_ms(),
        );
        (until > now).then(|| {
            let reason = self
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            (
                reason,
                at / 1000,
                until.saturating_sub(at) / 1000,
                (until - now).div_ceil(1000),
            )
        })
    }

    pub fn seen(&self) -> Seen {
        match self.seen.load(Relaxed) {
            1 => Seen::Primary,
            2 => Seen::Standby,
            _ => Seen::Unknown,
        }
    }

    pub fn lsn(&self) -> u64 {
        self.lsn.load(Relaxed)
    }
}

impl Health {
    /// The background check reached the server: its role, and its WAL position if read.
    /// Lifts a ban a failure caused.
    pub fn checked(&self, standby: bool, lsn: Option<u64>) {
        self.seen.store(if standby { 2 } else { 1 }, Relaxed);
        if let Some(lsn) = lsn {
            self.lsn.store(lsn, Relaxed);
        }
        if self.is_banned() && !self.manual.load(Relaxed) {
            self.unban();
        }
    }

    /// The background check failed: the role is unknown, and the address is banned.
    pub fn check_failed(&self, secs: u64, reason: &str, unreachable: bool) {
        self.seen.store(0, Relaxed);
        self.ban(secs, reason, false, unreachable);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::stats::ClientInfo;

    #[test]
    fn bans_expire_and_interrupt_the_clients_relaying_there() {
        let registry = Arc::new(Registry::default());
        let h = Health::new("x:1", Arc::downgrade(&registry));
        let there = registry.client(1, "db".into(), "u".into(), "app".into(), None, None);
        let elsewhere = registry.client(2, "db".into(), "u".into(), "app".into(), None, None);
        there.interrupt.relay_to(h.id);
        elsewhere.interrupt.relay_to(h.id + 1);
        let raised = |c: &ClientInfo| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            c.interrupt.poll(&mut cx, Interrupt::BANNED).is_ready()
        };
        assert!(!h.is_banned());
        assert!(!raised(&there));
        h.ban(60, "test", true, true);
        assert!(h.is_banned());
        assert!(raised(&there));
        assert!(!raised(&elsewhere));
        // Relaying somewhere new clears the earlier ban.
        there.interrupt.relay_to(h.id + 1);
        assert!(!raised(&there));
        let (reason, _, secs, left) = h.ban_info().unwrap();
        assert_eq!((reason.as_str(), secs), ("test", 60));
        assert!((59..=60).contains(&left));
        h.unban();
        assert!(!h.is_banned());
    }
}
