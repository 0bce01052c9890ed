//! A write run on every shard (`UPDATE`, `DELETE` or DDL with no shard), and a
//! transaction block spanning shards, are all or nothing on errors: each shard's server
//! opens a transaction first, and they commit only when every shard succeeded, else all
//! roll back. Without two-phase commit a COMMIT can still fail
//! on one shard after another committed: the client is told which ones did.

use super::*;

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

/// Ends the transaction on every server not `broken`: COMMIT when the statement succeeded
/// (`ok`), else ROLLBACK. A COMMIT that fails rolls the rest back; the error names the
/// shards that had committed. A server whose end failed is marked `broken`.
pub(super) async fn end_all(
    servers: &mut [(usize, Server)],
    broken: &mut [bool],
    mut ok: bool,
) -> Result<(), PgError> {
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
