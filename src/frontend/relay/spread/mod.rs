//! A transaction block in a pool that runs statements on every shard (`default_shard =
//! "all"` or `"error"`, or after `SET SHARD TO ALL`): the held BEGIN's transaction takes a
//! server on each shard as its statements first touch it, opens the client's BEGIN there,
//! and keeps them all until COMMIT or ROLLBACK, which ends it on every one (all or nothing
//! as far as one-phase commits go: see `write`).
//!
//! Meanwhile each statement runs where it belongs: on every shard (merged as outside a
//! transaction), on the shard its key or hint names, on shard 0 when it reads no table;
//! `SAVEPOINT`, `RELEASE`, `ROLLBACK TO` and `SET LOCAL` on every shard. After an error
//! the block is failed as PostgreSQL's would be: every statement gets 25P02 until
//! ROLLBACK (or ROLLBACK TO SAVEPOINT), and COMMIT rolls back.
//!
//! Servers are taken in shard order. A statement that needs a lower shard than one the
//! transaction holds waits for it at most the pool's checkout timeout, then fails with
//! 40P01: two such transactions never wait for each other forever.
//!
//! Beside it: `target` (where each statement runs, and what a block refuses), `several`
//! (a query string of several statements), `copy` (COPY into every shard).

mod copy;
mod several;
mod target;

use target::Target;

use super::fanout;
use super::statement::{merge_for, Prepared};
use super::*;
use pgcat_parser::cross_shard::CopyFormat;
use pgcat_parser::{CrossShard, KeyValue};

/// A client's transaction block across shards.
pub(super) struct Spread {
    /// The client's BEGIN, opened on each shard's server when the block first touches it.
    begin: String,
    role: Option<Role>,
    /// The servers taken, in shard order.
    servers: Vec<(usize, Server)>,
    /// An error ended a statement: the block is failed until it is rolled back.
    failed: bool,
    /// A statement's answers are being read: the servers' state is unknown until then.
    in_flight: bool,
    /// The block changed the schema (its end, commit or rollback, changes it again).
    ddl: bool,
    /// The shards a statement that writes ran on (which commit in two phases when
    /// there are several and the pool says so).
    wrote: std::collections::BTreeSet<usize>,
    mode: PoolMode,
    /// The block is a multi-statement query's implicit transaction (see `several`): it
    /// ends with the query, committed unless a statement failed.
    implicit: bool,
    /// The statements of a multi-statement query are running: no ReadyForQuery after
    /// each, one after the last.
    quiet: bool,
}

impl Spread {
    pub(super) fn new(begin: &str, role: Option<Role>, mode: PoolMode) -> Spread {
        Spread {
            begin: begin.to_string(),
            role,
            servers: Vec::new(),
            failed: false,
            in_flight: false,
            ddl: false,
            wrote: Default::default(),
            mode,
            implicit: false,
            quiet: false,
        }
    }

    /// The implicit transaction of a query string of several statements that run on
    /// different shards, as PostgreSQL runs such a string in one transaction.
    pub(super) fn implicit(role: Option<Role>, mode: PoolMode) -> Spread {
        let mut spread = Spread::new("BEGIN", role, mode);
        spread.implicit = true;
        spread
    }

    /// The client's transaction status.
    fn status(&self) -> u8 {
        if self.failed {
            b'E'
        } else {
            b'T'
        }
    }
}

impl Drop for Spread {
    /// The client left inside the block: each server's transaction is rolled back (a
    /// server with a statement in flight is cancelled and closed).
    fn drop(&mut self) {
        let handle = tokio::runtime::Handle::try_current();
        for (_, server) in self.servers.drain(..) {
            match &handle {
                Ok(handle) => {
                    handle.spawn(abandon(server, b'T', !self.in_flight, self.mode));
                }
                Err(_) => server.discard(),
            }
        }
    }
}

impl Client {
    /// The client's transaction block across shards, if it is in one.
    pub(super) fn spread(&self) -> Option<&Spread> {
        self.rare.as_ref()?.spread.as_deref()
    }

    fn spread_mut(&mut self) -> Option<&mut Spread> {
        self.rare.as_mut()?.spread.as_deref_mut()
    }

    fn take_spread(&mut self) -> Option<Box<Spread>> {
        self.rare.as_mut()?.spread.take()
    }

    /// Waits for the next request of a client inside a block: at most
    /// idle_client_in_transaction_timeout (0: no limit), then the client is closed with
    /// 25P03 and every shard's transaction rolled back (the block's `Drop`).
    pub(super) async fn wait_in_block(&mut self) -> Result<(), ClientError> {
        let limit = self.app.config().general.idle_client_in_transaction_timeout;
        let reading = read(&mut self.stream, &mut self.buf);
        let read = if limit > 0 {
            match tokio::time::timeout(std::time::Duration::from_millis(limit), reading).await {
                Ok(read) => read,
                Err(_) => {
                    return Err(PgError::fatal(
                        "25P03",
                        "terminating connection due to idle-in-transaction timeout (idle_client_in_transaction_timeout)",
                    )
                    .into())
                }
            }
        } else {
            reading.await
        };
        match read {
            Ok(0) | Err(_) => Err(ClientError::Gone),
            Ok(_) => Ok(()),
        }
    }

    /// Serves one request of a client inside a transaction block across shards; `false`
    /// when the client is done.
    pub(super) async fn spread_request(&mut self) -> Result<bool, ClientError> {
        let status = self.spread().map_or(b'T', |s| s.status());
        match self.buf[0] {
            b'X' => return Ok(false),
            tag if !crate::wire::frame::is_frontend_tag(tag) => {
                return Err(
                    PgError::fatal("08P01", crate::wire::frame::invalid_frontend_tag(tag)).into(),
                )
            }
            _ => {}
        }
        if self.answer_here(true, status).await? {
            return Ok(true);
        }
        if let Some((tag, _, mut total)) = crate::wire::frame::whole(&self.buf, REWRITE_CAP)? {
            // A Sync, Flush or Close of its own (after a batch's error, or closing a
            // statement the pooler keeps): answered here.
            let mut out = BytesMut::new();
            match tag {
                b'S' => messages::ready_for_query(&mut out, status),
                b'C' => messages::empty(&mut out, b'3'),
                b'H' => {}
                _ => total = 0,
            }
            if total > 0 {
                self.buf.advance(total);
                self.stream.send(&out).await?;
                return Ok(true);
            }
        }
        if let Some((parse, len)) = describe::flush_batch(&self.buf, true)? {
            let parse = parse.to_vec();
            let sync = self.buf.get(len - 5) == Some(&b'S');
            return self.spread_describe(parse, len, sync).await.map(|()| true);
        }
        self.spread_statement().await.map(|()| true)
    }

    /// Runs the block's next statement, the request at the front of the client's buffer.
    async fn spread_statement(&mut self) -> Result<(), ClientError> {
        let statements = &self.statements;
        let request =
            request::first_request(&self.buf, REWRITE_CAP, |name| statements.prepared(name))?;
        let Some(request) = request else {
            return self.read_more().await;
        };
        let target = self.spread_target(&request);
        let pool = self.session.pool.clone();
        match target {
            Ok(Target::End(commit)) => self.end_spread(commit).await,
            Ok(Target::Several(texts)) => self.spread_several(texts).await,
            Ok(Target::CopyIn(table, key, format)) => {
                self.spread_copy_in((&table, key, &format)).await
            }
            Ok(Target::Shards(shards, plan, keys, writes)) => {
                if let Some(error) = self.spread_refusal(&pool, &request, &plan).await {
                    return self.spread_reject(error).await;
                }
                self.spread_run(&shards, (&plan, &keys), writes).await
            }
            Err(error) => self.spread_reject(error).await,
        }
    }

    /// Answers the client's request with `error`; the block is failed (a multi-statement
    /// query's implicit one ends, rolled back).
    async fn spread_reject(&mut self, error: PgError) -> Result<(), ClientError> {
        let Some(spread) = self.spread_mut() else {
            return self.reject_in(error, false, b'E').await;
        };
        spread.failed = true;
        let (quiet, implicit) = (spread.quiet, spread.implicit);
        if quiet {
            // One statement of several: its error, the ReadyForQuery after the last.
            let (_, _, total) =
                crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
            self.buf.advance(total);
            let mut out = BytesMut::new();
            error.encode(&mut out);
            self.stream.send(&out).await?;
            return Ok(());
        }
        if implicit {
            if let Some(spread) = self.take_spread() {
                let _ = self.finish_spread(spread, false).await;
            }
            return self.reject_in(error, false, b'I').await;
        }
        self.reject_in(error, false, b'E').await
    }

    /// Takes (in shard order) the servers of `shards` the block does not hold yet, opening
    /// its BEGIN on each; the client's error when one cannot be had.
    async fn spread_touch(&mut self, shards: &[usize]) -> Result<(), PgError> {
        let Some(spread) = self.spread() else {
            return Ok(());
        };
        let missing: Vec<usize> = shards
            .iter()
            .copied()
            .filter(|s| !spread.servers.iter().any(|(held, _)| held == s))
            .collect();
        let (role, begin) = (spread.role, spread.begin.clone());
        let highest = spread.servers.last().map(|(shard, _)| *shard);
        for shard in missing {
            let taken = self.take_shard(shard, role, now_us()).await;
            let mut server = match taken {
                Ok(server) => server,
                Err(e) if highest.is_some_and(|h| h > shard) => {
                    return Err(PgError {
                        code: "40P01".into(),
                        hint: Some(
                            "The transaction holds a server of a higher shard, so it waited \
                             at most the checkout timeout for this one. Retry the transaction."
                                .into(),
                        ),
                        ..e
                    })
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = server.execute(&begin).await {
                server.discard();
                return Err(crate::merge::on_shard(shard, e.to_client()));
            }
            let info = self.session.info.clone();
            let Some(spread) = self.spread_mut() else {
                return Ok(());
            };
            let at = spread.servers.partition_point(|(held, _)| *held < shard);
            spread.servers.insert(at, (shard, server));
            info.hold_servers(
                spread
                    .servers
                    .iter()
                    .map(|(_, s)| s.session().cancel_key().clone()),
            );
        }
        Ok(())
    }

    /// Runs the client's statement on `shards` of the block, merged by `plan` (an INSERT's
    /// rows each on its shard, by their `keys`); `writes`: the statement writes.
    async fn spread_run(
        &mut self,
        shards: &[usize],
        (plan, keys): (&CrossShard, &[KeyValue]),
        writes: bool,
    ) -> Result<(), ClientError> {
        let statement = match self.shard_statement()? {
            Prepared::Ready(statement) => statement,
            Prepared::Refused(error) => return self.spread_reject(error).await,
            Prepared::Incomplete => return self.read_more().await,
        };
        let routing = &self.session.pool.router.routing;
        let targets = match statement.targets(plan, keys, routing, shards.iter().copied()) {
            Ok(targets) => targets,
            Err(error) => return self.spread_reject(error).await,
        };
        let shards: Vec<usize> = targets.iter().map(|(shard, _)| *shard).collect();
        if writes {
            if let Some(spread) = self.spread_mut() {
                spread.wrote.extend(&shards);
            }
        }
        if let Err(error) = self.spread_touch(&shards).await {
            return self.spread_reject(error).await;
        }
        let Some(mut spread) = self.take_spread() else {
            return Ok(());
        };
        let mut merge = match merge_for(plan, &statement) {
            Ok(merge) => merge,
            Err(error) => return self.spread_reject(error).await,
        };
        if *plan == CrossShard::AnyShard {
            merge.one_shard();
        }
        let shard0 = spread.servers.first_mut().filter(|(shard, _)| *shard == 0);
        let asked =
            fanout::learn_collations(&self.session.pool, &mut merge, shard0.map(|(_, s)| s));
        if let Err(error) = asked.await {
            merge.fail(0, error);
        }
        // The servers of the statement's shards, taken out of the block for it.
        let (mut servers, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut spread.servers)
            .into_iter()
            .partition(|(shard, _)| shards.contains(shard));
        spread.servers = rest;
        spread.in_flight = true;
        let mut broken = vec![false; servers.len()];
        let answer = self
            .run_statement(
                &mut servers,
                (&statement, &targets),
                merge,
                &mut broken,
                true,
            )
            .await;
        spread.in_flight = false;
        spread.servers.append(&mut servers);
        spread.servers.sort_by_key(|(shard, _)| *shard);
        self.session.info.query_count.fetch_add(1, Relaxed);
        let (mut out, ok) = match answer {
            Ok(answer) => answer,
            Err(Lost::Client) => return Err(ClientError::Gone),
            Err(Lost::Server(shard, e)) => {
                return Err(lost_in_block(shard, &e).into());
            }
        };
        if broken.iter().any(|b| *b) {
            // A server left the transaction (or broke off): the block cannot be ended
            // as one any more.
            return Err(lost_in_block(shards[0], &"its transaction ended").into());
        }
        if ok {
            self.remember(&statement);
            if *plan == CrossShard::Schema {
                spread.ddl = true;
                self.session.pool.schema_epoch.changed();
            }
        } else {
            spread.failed = true;
        }
        if *plan == CrossShard::Control && ok && spread.failed {
            // ROLLBACK TO SAVEPOINT on every shard: the block is usable again.
            spread.failed = false;
        }
        if !spread.quiet {
            messages::ready_for_query(&mut out, spread.status());
        }
        self.rare.get_or_insert_with(Default::default).spread = Some(spread);
        self.stream.send(&out).await?;
        Ok(())
    }

    /// Answers a Parse, Describe and Flush (or Sync) from shard 0 of the block.
    async fn spread_describe(
        &mut self,
        parse: Vec<u8>,
        len: usize,
        sync: bool,
    ) -> Result<(), ClientError> {
        if let Err(error) = self.spread_touch(&[0]).await {
            return self.spread_reject(error).await;
        }
        let Some(mut spread) = self.take_spread() else {
            return Ok(());
        };
        self.buf.advance(len);
        spread.in_flight = true;
        let Some((_, server)) = spread.servers.first_mut() else {
            return Ok(());
        };
        let answer = describe::describe(server, &parse).await;
        spread.in_flight = false;
        let (mut out, described, status) = answer.map_err(|e| lost_in_block(0, &e))?;
        if status == b'I' {
            return Err(lost_in_block(0, &"its transaction ended").into());
        }
        spread.failed |= !described;
        if sync {
            messages::ready_for_query(&mut out, spread.status());
        }
        self.rare.get_or_insert_with(Default::default).spread = Some(spread);
        self.described(&parse, &out, described).await
    }

    /// Ends the block on every shard: COMMIT when asked and no statement failed, else
    /// ROLLBACK.
    async fn end_spread(&mut self, commit: bool) -> Result<(), ClientError> {
        let (_, _, total) =
            crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
        self.buf.advance(total);
        let Some(spread) = self.take_spread() else {
            return Ok(());
        };
        let commit = commit && !spread.failed;
        let ended = self.finish_spread(spread, commit).await;
        self.session.info.query_count.fetch_add(1, Relaxed);
        let mut out = BytesMut::new();
        match ended {
            Ok(()) => {
                messages::command_complete(&mut out, if commit { "COMMIT" } else { "ROLLBACK" })
            }
            Err(error) => error.encode(&mut out),
        }
        messages::ready_for_query(&mut out, b'I');
        self.stream.send(&out).await?;
        Ok(())
    }

    /// Commits (`commit`) or rolls back the block's transaction on every shard it holds
    /// and gives their servers back; the error when a shard failed to end it.
    async fn finish_spread(
        &mut self,
        mut spread: Box<Spread>,
        commit: bool,
    ) -> Result<(), PgError> {
        let mut servers = std::mem::take(&mut spread.servers);
        let mut broken = vec![false; servers.len()];
        let wrote: Vec<bool> = servers
            .iter()
            .map(|(shard, _)| spread.wrote.contains(shard))
            .collect();
        let writes = write::Writes {
            coordinator: self.coordinator(),
            wrote: &wrote,
        };
        let ended = write::end_all(&mut servers, &mut broken, commit, writes).await;
        if spread.ddl {
            self.session.pool.schema_epoch.changed();
        }
        let info = &self.session.info;
        info.hold_server(None);
        info.xact_count.fetch_add(1, Relaxed);
        for ((_, server), broken) in servers.into_iter().zip(broken) {
            if broken {
                server.discard();
            } else {
                checkin(server, spread.mode).await;
            }
        }
        ended
    }
}

/// The FATAL a client gets when a server of its block was lost: its transaction cannot
/// be finished (as PostgreSQL closes a client whose backend died).
fn lost_in_block(shard: usize, why: &dyn std::fmt::Display) -> PgError {
    PgError::fatal(
        "08006",
        format!("the server of shard {shard} was lost inside the transaction ({why}); the transaction is lost"),
    )
}
