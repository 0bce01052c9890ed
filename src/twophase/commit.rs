//! Committing a transaction that wrote on several shards: `PREPARE TRANSACTION` on each
//! written shard (a PREPARE that fails rolls every shard back: `ROLLBACK PREPARED` where
//! it succeeded, `ROLLBACK` elsewhere), the shards that only read committed plainly, the
//! decision logged and fsync'd, then `COMMIT PREPARED` on each. Once the decision is
//! logged the transaction is committed: a shard that cannot be told now (down, or the
//! connection lost) is told by the resolver when it is back.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::TwoPhase;
use crate::backend::quote_literal;
use crate::fault;
use crate::pool::Server;
use crate::wire::messages::PgError;

/// Commits the transaction open on `servers` (those not `broken`), `wrote[i]` saying
/// which wrote. `Ok`: committed (the shards that still have to apply it, if any, are
/// the resolver's); `Err`: rolled back, the client's error. Servers whose state is no
/// longer known are marked `broken`.
pub async fn commit(
    coordinator: &Arc<TwoPhase>,
    servers: &mut [(usize, Server)],
    wrote: &[bool],
    broken: &mut [bool],
) -> Result<Vec<usize>, PgError> {
    let flight = coordinator.begin();
    let base = flight.gid().to_string();
    let gid = |shard: usize| part(&base, shard);
    let counters = &coordinator.counters;
    let mut prepared = Vec::new();
    let mut failure = None;
    for (i, (shard, server)) in servers.iter_mut().enumerate() {
        if broken[i] || !wrote[i] {
            continue;
        }
        match server
            .execute(&format!("PREPARE TRANSACTION {}", gid(*shard)))
            .await
        {
            Ok(b'I') => {
                prepared.push(i);
                counters.prepared.fetch_add(1, Relaxed);
                fault::point(fault::AFTER_PREPARE).await;
            }
            Ok(_) => {
                broken[i] = true;
                failure = Some(PgError::error(
                    "XX000",
                    format!("PREPARE TRANSACTION left shard {shard} inside a transaction"),
                ));
                break;
            }
            Err(e) => {
                // PostgreSQL rolled the shard's transaction back.
                broken[i] = e.lost_connection();
                let mut error = e.to_client();
                error.detail = Some(format!(
                    "PREPARE TRANSACTION failed on shard {shard}: the transaction was rolled \
                     back on every shard (two-phase commit)."
                ));
                failure = Some(error);
                break;
            }
        }
    }
    if let Some(error) = failure {
        roll_back(coordinator, servers, &prepared, broken, &base).await;
        return Err(error);
    }
    // The shards that only read end their transaction as they would without two phases.
    for (i, (_, server)) in servers.iter_mut().enumerate() {
        if !broken[i] && !wrote[i] && !matches!(server.execute("COMMIT").await, Ok(b'I')) {
            broken[i] = true;
        }
    }
    let decided = {
        let coordinator = coordinator.clone();
        let gid = flight.gid().to_string();
        tokio::task::spawn_blocking(move || coordinator.decide(&gid)).await
    };
    let decided = decided.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    if let Err(e) = decided {
        roll_back(coordinator, servers, &prepared, broken, &base).await;
        let path = coordinator.log_path().display();
        return Err(PgError::error(
            "58030",
            format!("could not write the commit decision to the decision log {path}: {e}"),
        )
        .with_detail("The transaction was rolled back on every shard (two-phase commit)."));
    }
    fault::point(fault::AFTER_DECISION).await;
    let mut pending = Vec::new();
    for &i in &prepared {
        let (shard, server) = &mut servers[i];
        match server
            .execute(&format!("COMMIT PREPARED {}", gid(*shard)))
            .await
        {
            Ok(_) => {
                counters.committed.fetch_add(1, Relaxed);
                fault::point(fault::AFTER_COMMIT_PREPARED).await;
            }
            Err(e) => {
                broken[i] = true;
                tracing::warn!(shard = *shard, gid = flight.gid(), error = %e,
                    "COMMIT PREPARED failed: the transaction is committed, the resolver will apply it on this shard");
                pending.push(*shard);
            }
        }
    }
    if pending.is_empty() {
        coordinator.finished(flight.gid());
    }
    Ok(pending)
}

/// The quoted gid of `shard`'s part of transaction `base`: shards may be databases of
/// one server, whose gids are one namespace.
fn part(base: &str, shard: usize) -> String {
    quote_literal(&format!("{base}_{shard}"))
}

/// Rolls the transaction back everywhere: `ROLLBACK PREPARED` where it was prepared,
/// `ROLLBACK` on the other shards (on the one whose PREPARE failed it only warns that no
/// transaction is open). What cannot be rolled back now (a lost connection) is the
/// resolver's: the gid has no decision, so it rolls back.
async fn roll_back(
    coordinator: &TwoPhase,
    servers: &mut [(usize, Server)],
    prepared: &[usize],
    broken: &mut [bool],
    base: &str,
) {
    for (i, (shard, server)) in servers.iter_mut().enumerate() {
        if broken[i] {
            continue;
        }
        let was_prepared = prepared.contains(&i);
        let sql = if was_prepared {
            format!("ROLLBACK PREPARED {}", part(base, *shard))
        } else {
            "ROLLBACK".to_string()
        };
        match server.execute(&sql).await {
            Ok(_) if was_prepared => {
                coordinator.counters.rolled_back.fetch_add(1, Relaxed);
            }
            Ok(_) => {}
            Err(_) => broken[i] = true,
        }
    }
}
