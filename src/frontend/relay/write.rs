//! A write run on every shard (`UPDATE`, `DELETE` or DDL with no shard), and a
//! transaction block spanning shards, are all or nothing on errors: each shard's server
//! opens a transaction first, and they commit only when every shard succeeded, else all
//! roll back. With `two_phase_commit` a transaction that wrote on several shards commits
//! in two phases (`crate::twophase`), all or nothing also when a shard or the pooler
//! fails during the commit. Without it a COMMIT can still fail on one shard after another
//! committed: the client is told which ones did.

use super::*;
use crate::twophase::TwoPhase;

/// Opens a transaction with `begin` on every server; the shard that could not, and why.
pub(super) async fn begin_all(
    servers: &mut [(usize, Server)],
    begin: &str,
) -> Result<(), (usize, BackendError)> {
    for (shard, server) in servers.iter_mut() {
        server.execute(begin).await.map_err(|e| (*shard, e))?;
    }
    Ok(())
}

/// Which servers of a transaction wrote, and the coordinator that commits it in two
/// phases when several did (`None`: the pool commits in one phase).
pub(super) struct Writes<'a> {
    pub(super) coordinator: Option<Arc<TwoPhase>>,
    pub(super) wrote: &'a [bool],
}

impl Client {
    /// The two-phase commit coordinator of the client's pool, if it commits in two phases.
    pub(super) fn coordinator(&self) -> Option<Arc<TwoPhase>> {
        if self.session.pool.two_phase_commit {
            self.app.two_phase()
        } else {
            None
        }
    }
}

/// Ends the transaction on every server not `broken`: COMMIT when the statement succeeded
/// (`ok`), else ROLLBACK; in two phases when `writes` says several wrote and the pool has
/// a coordinator. A one-phase COMMIT that fails rolls the rest back; the error names the
/// shards that had committed. A server whose end failed is marked `broken`.
pub(super) async fn end_all(
    servers: &mut [(usize, Server)],
    broken: &mut [bool],
    mut ok: bool,
    writes: Writes<'_>,
) -> Result<(), PgError> {
    if let (true, Some(coordinator)) = (ok, &writes.coordinator) {
        let written = (0..servers.len())
            .filter(|i| !broken[*i] && writes.wrote.get(*i) == Some(&true))
            .count();
        if written > 1 {
            return crate::twophase::commit(coordinator, servers, writes.wrote, broken)
                .await
                .map(|_| ());
        }
    }
    let mut committed = Vec::new();
    let mut failure = None;
    for (i, (shard, server)) in servers.iter_mut().enumerate() {
        let shard = *shard;
        if broken[i] {
            continue;
        }
        let end = if ok { "COMMIT" } else { "ROLLBACK" };
        match server.execute(end).await {
            Ok(b'I') if ok => committed.push(shard),
            Ok(b'I') => {}
            Ok(_) => broken[i] = true,
            Err(e) => {
                broken[i] = true;
                if ok {
                    failure = Some((shard, e));
                    ok = false;
                }
            }
        }
    }
    let Some((shard, e)) = failure else {
        return Ok(());
    };
    let mut error = e.to_client();
    let done = match committed.as_slice() {
        [] => "no shard had committed".to_string(),
        shards => format!(
            "shard(s) {} had committed",
            shards
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    error.detail = Some(format!(
        "COMMIT failed on shard {shard}; {done}, the others were rolled back."
    ));
    Err(error)
}
