//! Server health, per `host:port` (shared by every pool user of that address): bans, the
//! background check that notices dead, frozen, recovered or promoted servers without client
//! traffic, and the WAL position used to measure replica lag.
//!
//! A ban keeps new checkouts away for `ban_time` and wakes every client task holding a
//! connection to that address, so a query in flight on a frozen server fails (08006)
//! instead of hanging. A successful background check lifts a ban that a failure caused
//! (not one an operator set with BAN).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{self, ServerTarget, TcpSettings};
use crate::stats::{Interrupt, Registry};

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
    fn new(addr: &str, registry: Weak<Registry>) -> Health {
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

/// Settings of the background check.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub ban_secs: u64,
    pub tcp: TcpSettings,
}

/// Every address's health, by `host:port`.
#[derive(Default, Debug)]
pub struct HealthMap {
    map: Mutex<HashMap<String, Arc<Health>>>,
}

impl HealthMap {
    /// The health record of `target`'s address, starting its background check on first use.
    pub fn get(
        &self,
        target: &ServerTarget,
        settings: CheckSettings,
        registry: &Arc<Registry>,
    ) -> Arc<Health> {
        let addr = target.addr();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = map.get(&addr) {
            return h.clone();
        }
        let health = Arc::new(Health::new(&addr, Arc::downgrade(registry)));
        map.insert(addr, health.clone());
        tokio::spawn(check_loop(
            Arc::downgrade(&health),
            target.clone(),
            settings,
        ));
        health
    }

    pub fn find(&self, addr: &str) -> Option<Arc<Health>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .cloned()
    }
}

/// Parses a `pg_lsn` text ("16/B374D848") into a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Connections one check may open when the one it used is closed under it.
const CHECK_ATTEMPTS: usize = 3;

async fn check_loop(health: Weak<Health>, target: ServerTarget, settings: CheckSettings) {
    let mut conn = None;
    loop {
        let Some(h) = health.upgrade() else { return };
        let mut checked = check(&mut conn, &target, &settings).await;
        for _ in 1..CHECK_ATTEMPTS {
            if !matches!(&checked, Err(e) if e.lost_connection()) {
                break;
            }
            // The checker's own connection was closed (an administrator killing idle
            // backends, say): that says nothing of a server that takes a new one.
            conn = None;
            checked = check(&mut conn, &target, &settings).await;
        }
        let unreachable = matches!(
            &checked,
            Ok(None) | Err(backend::BackendError::Connect { .. })
        );
        let failure = match checked {
            Ok(Some((standby, lsn))) => {
                h.seen.store(if standby { 2 } else { 1 }, Relaxed);
                if let Some(lsn) = lsn {
                    h.lsn.store(lsn, Relaxed);
                }
                if h.is_banned() && !h.manual.load(Relaxed) {
                    h.unban();
                }
                None
            }
            Ok(None) => Some(format!(
                "health check did not answer within {} ms",
                settings.timeout.as_millis()
            )),
            Err(e) => Some(format!("health check failed: {e}")),
        };
        if let Some(reason) = failure {
            // Whatever role it had, it is not known to be primary any more.
            conn = None;
            h.seen.store(0, Relaxed);
            h.ban(settings.ban_secs, &reason, false, unreachable);
        }
        drop(h);
        tokio::time::sleep(settings.interval).await;
    }
}

/// One check on the checker's own connection: is the server a standby, and its WAL
/// position. Connecting is bounded by `connect_timeout` (a first login can be slow on a busy
/// server), the query by `healthcheck_timeout`: `Ok(None)` when it did not answer in time.
async fn check(
    conn: &mut Option<backend::ServerConn>,
    target: &ServerTarget,
    settings: &CheckSettings,
) -> Result<Option<(bool, Option<u64>)>, backend::BackendError> {
    let c = match conn {
        Some(c) => c,
        None => {
            let connect = tokio::time::timeout(
                settings.connect_timeout,
                backend::connect_as(
                    target,
                    &settings.tcp,
                    Some(backend::HEALTHCHECK_APPLICATION_NAME),
                ),
            );
            match connect.await {
                Ok(c) => conn.insert(c?),
                Err(_) => return Ok(None),
            }
        }
    };
    let query = c.query_row(
            "SELECT pg_is_in_recovery()::text, (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text",
        )
    ;
    let Ok(row) = tokio::time::timeout(settings.timeout, query).await else {
        return Ok(None);
    };
    let row = row?;
    let standby = row.first().and_then(|v| v.as_deref()) == Some("true");
    let lsn = row.get(1).and_then(|v| v.as_deref()).and_then(parse_lsn);
    Ok(Some((standby, lsn)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ClientInfo;

    #[test]
    fn lsn_text_becomes_a_byte_position() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("zz"), None);
    }

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
