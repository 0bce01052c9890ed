//! A statement run on every shard (`default_shard = "all"`, `SET SHARD TO ALL`): one
//! server per shard, taken in shard order, the Query sent to all of them before any answer
//! is read (so they run in parallel), their answers merged into one (`merge`), and the
//! servers given back. The client's cancel request reaches every one of them.

use super::statement::{merge_for, Prepared, ShardStatement};
use super::write;
use super::*;
use crate::merge::Merge;

impl Client {
    /// Runs the client's Query (complete, first in its buffer) on every shard, with `role`
    /// deciding which server of each, and answers it as one database would.
    pub(super) async fn fan_out(
        &mut self,
        role: Option<Role>,
        routed: &Routed,
    ) -> Result<(), ClientError> {
        let pool = self.session.pool.clone();
        match &routed.analysis.cross_shard {
            pgcat_parser::CrossShard::CopyIn { table, key, format } => {
                return self.copy_in(role, (table, *key, format)).await;
            }
            pgcat_parser::CrossShard::CopyOut { .. } if self.buf[0] != b'Q' => {
                let error = PgError::error(
                    "0A000",
                    "COPY across shards needs the simple query protocol",
                );
                return self.reject(error, false).await;
            }
            _ => {}
        }
        if let Some(error) = refused_aggregate(&pool, routed).await {
            return self.reject(error, false).await;
        }
        let statement = match self.shard_statement()? {
            Prepared::Ready(statement) => statement,
            Prepared::Refused(error) => return self.reject(error, false).await,
            Prepared::Incomplete => return self.read_more().await,
        };
        let plan = &routed.analysis.cross_shard;
        let routing = &pool.router.routing;
        let targets = statement.targets(plan, &routed.analysis.keys, routing, 0..pool.shards.len());
        let targets = match targets {
            Ok(targets) => targets,
            Err(error) => return self.reject(error, false).await,
        };
        let mut merge = match merge_for(plan, &statement) {
            Ok(merge) => merge,
            Err(error) => return self.reject(error, false).await,
        };
        // Before any server is taken: the catalog lookup may need one of shard 0.
        if let Err(error) = learn_collations(&pool, &mut merge, None).await {
            return self.reject(error, false).await;
        }
        let info = self.session.info.clone();
        let shards = targets.iter().map(|(shard, _)| *shard);
        let mut servers = match self.take_all(shards, role).await {
            Ok(servers) => servers,
            Err(error) => return self.reject(error, false).await,
        };
        let write = matches!(
            plan,
            pgcat_parser::CrossShard::Write
                | pgcat_parser::CrossShard::Schema
                | pgcat_parser::CrossShard::Insert
        );
        if write {
            if let Err((shard, e)) = write::begin_all(&mut servers, "BEGIN").await {
                for (_, server) in servers {
                    server.discard();
                }
                info.hold_server(None);
                info.set_state(ClientState::Idle, now_us);
                let error = crate::merge::on_shard(shard, e.to_client());
                return self.reject(error, false).await;
            }
        }
        let mut broken = vec![false; servers.len()];
        let answer = self
            .run_statement(
                &mut servers,
                (&statement, &targets),
                merge,
                &mut broken,
                write,
            )
            .await;
        let answer = match answer {
            Ok((out, ok)) if write => match write::end_all(
                &mut servers,
                &mut broken,
                ok,
                write::Writes {
                    coordinator: self.coordinator(),
                    wrote: &vec![true; targets.len()],
                },
            )
            .await
            {
                Ok(()) => Ok((out, ok)),
                Err(error) => {
                    let mut out = BytesMut::new();
                    error.encode(&mut out);
                    Ok((out, false))
                }
            },
            other => other,
        };
        if write && routed.analysis.cross_shard == pgcat_parser::CrossShard::Schema {
            pool.schema_epoch.changed();
        }
        info.hold_server(None);
        info.set_state(ClientState::Idle, now_us);
        info.query_count.fetch_add(1, Relaxed);
        info.xact_count.fetch_add(1, Relaxed);
        let mut out = match answer {
            Ok((out, ok)) => {
                if ok {
                    self.remember(&statement);
                }
                out
            }
            Err(lost) => {
                // Some servers got the statement and their answers were not read: closed,
                // never reused.
                for (_, server) in servers.drain(..) {
                    server.discard();
                }
                let Lost::Server(shard, e) = lost else {
                    return Err(ClientError::Gone);
                };
                let mut out = BytesMut::new();
                let mut merge = Merge::default();
                merge.fail(shard, e.to_client());
                merge.finish(&mut out);
                out
            }
        };
        messages::ready_for_query(&mut out, b'I');
        for ((_, server), broken) in servers.into_iter().zip(broken) {
            if broken {
                server.discard();
            } else {
                checkin(server, pool.mode).await;
            }
        }
        self.stream.send(&out).await?;
        Ok(())
    }

    /// A server of each of `shards` (ascending: two clients running on several shards
    /// never wait for each other's servers in opposite orders), the client's state
    /// following; none when one cannot be had (the client's error, naming the shard).
    pub(super) async fn take_all(
        &mut self,
        shards: impl Iterator<Item = usize>,
        role: Option<Role>,
    ) -> Result<Vec<(usize, Server)>, PgError> {
        let info = self.session.info.clone();
        let mode = self.session.pool.mode;
        let waited = now_us();
        info.set_state(ClientState::Waiting, || waited);
        let mut servers: Vec<(usize, Server)> = Vec::new();
        for shard in shards {
            match self.take_shard(shard, role, waited).await {
                Ok(server) => servers.push((shard, server)),
                Err(error) => {
                    for (_, server) in servers {
                        checkin(server, mode).await;
                    }
                    info.set_state(ClientState::Idle, now_us);
                    return Err(error);
                }
            }
        }
        info.set_state(ClientState::Active, now_us);
        info.hold_servers(
            servers
                .iter()
                .map(|(_, s)| s.session().cancel_key().clone()),
        );
        Ok(servers)
    }

    /// A server of `shard` for a statement on several shards (`waited`: since when the
    /// client waits, µs of [`now_us`]), or the client's error naming the shard.
    pub(super) async fn take_shard(
        &self,
        shard: usize,
        role: Option<Role>,
        waited: u64,
    ) -> Result<Server, PgError> {
        let route = Route {
            shard: Some(shard),
            role,
        };
        let min_lsn = self.rare.as_ref().map_or(0, |r| r.min_lsn);
        let params = &self.session.params;
        let taken = self
            .session
            .pool
            .take_with_params(route, min_lsn, params, |server| {
                let waited_us = now_us().saturating_sub(waited);
                server.session().count_checkout(waited_us);
            })
            .await;
        taken.map_err(|e| {
            self.session.info.error_count.fetch_add(1, Relaxed);
            PgError {
                detail: Some(format!("The statement needs a server of shard {shard}.")),
                ..e.into_client()
            }
        })
    }

    /// Takes `statement` off the client's buffer and runs it on `servers` (see
    /// `run_on_all`).
    pub(super) async fn run_statement(
        &mut self,
        servers: &mut [(usize, Server)],
        (statement, messages): (&ShardStatement, &[(usize, BytesMut)]),
        merge: Merge,
        broken: &mut [bool],
        in_transaction: bool,
    ) -> Result<(BytesMut, bool), Lost> {
        self.buf.advance(statement.len());
        self.run_on_all(servers, messages, merge, broken, in_transaction)
            .await
    }

    /// Sends each server its `messages` (aligned with `servers`), then reads their answers in shard order, streaming
    /// the merged answer to the client as it grows; returns its end (before ReadyForQuery)
    /// and whether the statement succeeded. A server whose answer broke off, or that ends
    /// outside a transaction when `in_transaction` (else inside one), is marked in
    /// `broken` (not to be reused).
    async fn run_on_all(
        &mut self,
        servers: &mut [(usize, Server)],
        messages: &[(usize, BytesMut)],
        mut merge: Merge,
        broken: &mut [bool],
        write: bool,
    ) -> Result<(BytesMut, bool), Lost> {
        for ((shard, server), (_, query)) in servers.iter_mut().zip(messages) {
            let shard = *shard;
            server.session().count_sent(query.len());
            server
                .write_all(query)
                .await
                .map_err(|e| Lost::Server(shard, e))?;
        }
        let mut out = BytesMut::new();
        if merge.is_ordered() {
            // A k-way merge: each shard's next row at hand, the least one sent first.
            let mut heads: Vec<Option<BytesMut>> = Vec::with_capacity(servers.len());
            for (shard, (_, server)) in servers.iter_mut().enumerate() {
                heads.push(
                    next_row(
                        server,
                        shard,
                        &mut merge,
                        &mut out,
                        (&mut broken[shard], write),
                    )
                    .await,
                );
            }
            while merge.wants_rows() {
                let least = (0..heads.len())
                    .filter(|i| heads[*i].is_some())
                    .min_by(|a, b| merge.compare(heads_row(&heads, *a), heads_row(&heads, *b)));
                let Some(shard) = least else { break };
                if let Some(row) = heads[shard].take() {
                    merge.push_row(&row, &mut out);
                }
                let server = &mut servers[shard].1;
                heads[shard] = next_row(
                    server,
                    shard,
                    &mut merge,
                    &mut out,
                    (&mut broken[shard], write),
                )
                .await;
                if out.len() >= INSPECT_CAP {
                    self.stream.send(&out).await.map_err(|_| Lost::Client)?;
                    out.clear();
                }
            }
            // Past the LIMIT (or an error): the rest is read and dropped.
            for (shard, (_, server)) in servers.iter_mut().enumerate() {
                while heads[shard].take().is_some() {
                    heads[shard] = next_row(
                        server,
                        shard,
                        &mut merge,
                        &mut out,
                        (&mut broken[shard], write),
                    )
                    .await;
                }
            }
        } else {
            for (shard, (_, server)) in servers.iter_mut().enumerate() {
                while let Some(row) = next_row(
                    server,
                    shard,
                    &mut merge,
                    &mut out,
                    (&mut broken[shard], write),
                )
                .await
                {
                    merge.push_row(&row, &mut out);
                    if out.len() >= INSPECT_CAP {
                        self.stream.send(&out).await.map_err(|_| Lost::Client)?;
                        out.clear();
                    }
                }
            }
        }
        let ok = !merge.failed();
        merge.finish(&mut out);
        Ok((out, ok))
    }
}

/// The row in `heads[i]` (present: the caller filtered).
fn heads_row(heads: &[Option<BytesMut>], i: usize) -> &[u8] {
    heads[i].as_deref().unwrap_or_default()
}

/// Reads `server`'s answer up to its next DataRow (returned) or its end (`None`), giving
/// `merge` every other message. A server that breaks, or ends in another transaction state
/// than expected (inside the transaction of a `write`, else outside one), is marked
/// `broken`.
async fn next_row(
    server: &mut Server,
    shard: usize,
    merge: &mut Merge,
    out: &mut BytesMut,
    (broken, write): (&mut bool, bool),
) -> Option<BytesMut> {
    if *broken {
        return None;
    }
    loop {
        let (tag, body) = match server.read_message().await {
            Ok(message) => message,
            Err(e) => {
                // The others still answer: read to their end, so they can be reused.
                merge.fail(shard, e.to_client());
                *broken = true;
                return None;
            }
        };
        server.session().count_received(body.len() + 5);
        match tag {
            b'D' if !merge.is_combining() => {
                // A row that cannot be ordered fails the statement; the rest is drained.
                if !merge.is_ordered() || merge.admit(shard, &body) {
                    return Some(body);
                }
            }
            b'Z' => {
                // Outside a transaction after a read; inside the one `write` opened.
                let status = body.first().copied();
                *broken = if write {
                    status == Some(b'I')
                } else {
                    status != Some(b'I')
                };
                return None;
            }
            _ => merge.on_message(shard, tag, &body, out),
        }
    }
}

/// Why running on every shard stopped short.
pub(super) enum Lost {
    /// The client went away.
    Client,
    /// A shard's server failed before it got the whole statement.
    Server(usize, BackendError),
}

/// Tells `merge` the collations of `pool`'s shard 0, when it orders or compares values.
/// `held`: a server of shard 0 the client holds, to ask on.
pub(super) async fn learn_collations(
    pool: &UserPool,
    merge: &mut Merge,
    held: Option<&mut Server>,
) -> Result<(), PgError> {
    if merge.is_ordered() || merge.is_combining() {
        merge.collations(pool.collations(held.map(|s| &mut **s)).await?);
    }
    Ok(())
}

/// For a plain SELECT on every shard: the error it gets when it calls an aggregate whose
/// rows would need combining (not concatenating), which is not done yet.
pub(super) async fn refused_aggregate(pool: &UserPool, routed: &Routed) -> Option<PgError> {
    let pgcat_parser::CrossShard::Concat { functions, .. } = &routed.analysis.cross_shard else {
        return None;
    };
    match pool.first_aggregate(functions).await {
        Ok(None) => None,
        Ok(Some(name)) => Some(crate::frontend::cross_shard::aggregate(name)),
        Err(e) => Some(e),
    }
}
