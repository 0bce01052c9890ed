//! The background health check of every server address (`host:port`, shared by every pool
//! user of that address): it notices dead, frozen, recovered or promoted servers without
//! client traffic, and reads the WAL position used to measure replica lag, into the
//! address's record ([`crate::stats::health::Health`]: bans and what was seen).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::backend::{self, ServerTarget, TcpSettings};
pub use crate::stats::health::{Health, Seen};
use crate::stats::Registry;

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
                h.checked(standby, lsn);
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
            h.check_failed(settings.ban_secs, &reason, unreachable);
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

    #[test]
    fn lsn_text_becomes_a_byte_position() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("zz"), None);
    }
}
