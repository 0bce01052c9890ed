//! An idle client's next request: answered by the pooler where it can (SQL extensions, a
//! BEGIN held back until the statement after it, a known prepare), else routed, and a
//! server taken for it.

use super::*;
use pgcat_parser::CrossShard;

/// What an idle client asked for.
pub(super) enum Idle {
    /// It left.
    Exit,
    /// The pooler answered (an SQL extension, a held BEGIN, a known prepare), or more
    /// bytes are needed.
    Answered,
    /// A server is needed for this route; with the BEGIN held back, if any, and the
    /// parser's analysis of the Query, if it made one.
    Route(Route, Option<BytesMut>, Option<Routed>),
    /// The Query runs on every shard, on servers of this role; with the parser's analysis.
    AllShards(Option<Role>, Routed),
    /// A transaction block in a pool that runs statements on every shard begins: it takes
    /// a server on each shard it touches (see `spread`).
    Spread(Box<Spread>),
}

/// What the pooler answers for a BEGIN it holds back.
enum HeldReply {
    /// Hold this BEGIN (read only or not).
    Begin(bool),
    /// The held transaction ends before it started: COMMIT or ROLLBACK.
    End(&'static str),
}

/// A BEGIN the pooler answered itself: the statement after it decides the server.
pub(super) struct HeldBegin {
    pub(super) message: BytesMut,
    pub(super) read_only: bool,
}

impl Client {
    /// Serves an idle client's next request without a server where the pooler can (SQL
    /// extensions, a BEGIN held back until the statement after it, a known prepare), else
    /// says where it goes.
    pub(super) async fn idle(&mut self) -> Result<Idle, ClientError> {
        if self.buf[0] == b'X' {
            return Ok(Idle::Exit);
        }
        if !crate::wire::frame::is_frontend_tag(self.buf[0]) {
            return Err(PgError::fatal(
                "08P01",
                crate::wire::frame::invalid_frontend_tag(self.buf[0]),
            )
            .into());
        }
        let in_transaction = self.held_begin.is_some();
        let status = if in_transaction { b'T' } else { b'I' };
        if !extension::plain_query(&self.buf) && self.answer_here(in_transaction, status).await? {
            return Ok(Idle::Answered);
        }
        let pool = self.session.pool.clone();
        if !in_transaction && cross_shard::decides(&self.routing, &pool) {
            if let Some((parse, len)) = describe::flush_batch(&self.buf, false)? {
                let text =
                    request::text(crate::wire::startup::cstr(parse).map_or(&[][..], |(_, t)| t));
                let needs_all =
                    cross_shard::runs_everywhere(&pool.router.analyze(text).cross_shard);
                if needs_all {
                    let parse = parse.to_vec();
                    self.describe_on_shard0(parse, len).await?;
                    return Ok(Idle::Answered);
                }
            }
        }
        if pool.query_logger || !pool.intercepts.is_empty() || !pool.blocked_tables.is_empty() {
            let sql = match crate::wire::frame::whole(&self.buf, REWRITE_CAP)? {
                Some((b'Q', body, _)) => Some((request::text(body).to_string(), true)),
                // A Parse: its statement's text after the name.
                Some((b'P', body, _)) => crate::wire::startup::cstr(body)
                    .ok()
                    .map(|(_, rest)| (request::text(rest).to_string(), false)),
                _ => None,
            };
            if let Some((sql, simple)) = sql {
                if self.run_plugins(&sql, simple, status).await? {
                    return Ok(Idle::Answered);
                }
            }
        }
        let statements = &self.statements;
        let request =
            request::first_request(&self.buf, REWRITE_CAP, |name| statements.prepared(name))?;
        let Some(request) = request else {
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Ok(Idle::Exit);
            }
            return Ok(Idle::Answered);
        };
        if let Request::Query(sql) = request {
            if let Some(reply) = self.held_begin_reply(sql, &pool) {
                let (_, _, total) =
                    crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
                let message = self.buf.split_to(total);
                let mut out = BytesMut::new();
                match reply {
                    HeldReply::Begin(read_only) => {
                        self.held_begin = Some(Box::new(HeldBegin { message, read_only }));
                        messages::command_complete(&mut out, "BEGIN");
                        messages::ready_for_query(&mut out, b'T');
                    }
                    HeldReply::End(tag) => {
                        self.held_begin = None;
                        messages::command_complete(&mut out, tag);
                        messages::ready_for_query(&mut out, b'I');
                    }
                }
                self.stream.send(&out).await?;
                return Ok(Idle::Answered);
            }
        }
        let writes = |begin: &HeldBegin| {
            let routing = &pool.router.routing;
            !begin.read_only && self.routing.parser_enabled(routing) && routing.read_write_splitting
        };
        if cross_shard::decides(&self.routing, &pool) {
            if let Some(begin) = self.held_begin.take() {
                let role = writes(&begin).then_some(Role::Primary);
                let text = request::text(begin.message.get(5..).unwrap_or_default());
                return Ok(Idle::Spread(Box::new(Spread::new(text, role, pool.mode))));
            }
        }
        let mut decided = request::decide(&request, &self.routing, &pool);
        if let (Ok(d), Some(begin)) = (&mut decided, &self.held_begin) {
            if writes(begin) {
                d.route.role = Some(Role::Primary);
            }
        }
        match decided {
            Ok(d) if d.all_shards => match d.routed {
                Some(routed)
                    if matches!(routed.analysis.cross_shard, CrossShard::Several { .. }) =>
                {
                    Ok(Idle::Spread(Box::new(Spread::implicit(
                        d.route.role,
                        pool.mode,
                    ))))
                }
                Some(routed) => Ok(Idle::AllShards(d.route.role, routed)),
                None => Err(
                    PgError::error("XX000", "no analysis for a statement on every shard").into(),
                ),
            },
            Ok(d) => Ok(Idle::Route(
                d.route,
                self.held_begin.take().map(|b| b.message),
                d.routed,
            )),
            Err(e) => {
                self.held_begin = None;
                self.reject(e, false).await?;
                Ok(Idle::Answered)
            }
        }
    }

    /// Answers the request at the start of the buffer if the pooler answers it without a
    /// server (a known prepare outside a transaction, a Close of or statement about the
    /// client's statements, LISTEN, an SQL extension): whether it did.
    pub(super) async fn answer_here(
        &mut self,
        in_transaction: bool,
        status: u8,
    ) -> Result<bool, ClientError> {
        if !in_transaction && self.mode == Mode::Rewrite && self.prepare_locally().await? {
            return Ok(true);
        }
        if self.close_command_statement(status).await?
            || self.answer_statement_sql(status).await?
            || self.answer_listen(status).await?
        {
            return Ok(true);
        }
        if self.command_request().is_some() {
            self.answer_command(status).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// With several shards, a lone BEGIN waits for the statement after it (whose keys or
    /// hints pick the shard): the pooler answers it, and answers COMMIT/ROLLBACK of a
    /// transaction that never got further.
    fn held_begin_reply(&self, sql: &str, pool: &UserPool) -> Option<HeldReply> {
        if pool.mode != PoolMode::Transaction || pool.shards.len() < 2 {
            return None;
        }
        let first = sql.trim_start().get(..5)?.to_ascii_lowercase();
        if !matches!(
            first.as_str(),
            "begin" | "start" | "commi" | "rollb" | "end" | "end;" | "abort"
        ) {
            return None;
        }
        let analysis = pool.router.analyze(sql);
        let c = &analysis.classification;
        if c.statement_count != 1 {
            return None;
        }
        match (c.begin, self.held_begin.is_some()) {
            (Some(read_only), false) => Some(HeldReply::Begin(read_only)),
            (None, true) if c.ends_transaction => Some(HeldReply::End(
                if first.starts_with("rollb") || first == "abort" {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                },
            )),
            _ => None,
        }
    }

    /// Moves the client to its pool's replacement after a reload changed the pool.
    pub(super) fn follow_reload(&mut self) {
        if !self.session.pool.retired.load(Relaxed) {
            return;
        }
        let pools = self.app.pools();
        if let Some(new) = pools.get(&self.session.info.database, &self.session.info.user) {
            self.session.pool = new.clone();
            self.mode = statement_mode(new);
        }
    }

    /// Checks out a server for `route` and brings it in line with the client (parameters,
    /// a held BEGIN). On failure the client gets the error for its request.
    pub(super) async fn take_server(
        &mut self,
        route: Route,
        begin: Option<BytesMut>,
        routed: Option<Routed>,
    ) -> Result<Option<Box<Held>>, ClientError> {
        let pool = self.session.pool.clone();
        let info = self.session.info.clone();
        let waited = now_us();
        info.set_state(ClientState::Waiting, || waited);
        let min_lsn = self.rare.as_ref().map_or(0, |r| r.min_lsn);
        let mut got = waited;
        let taken = pool
            .take_with_params(route, min_lsn, &self.session.params, |server| {
                got = now_us();
                let waited_us = got.saturating_sub(waited);
                server.session().count_checkout(waited_us);
            })
            .await;
        let mut server = match taken {
            Ok(server) => server,
            Err(TakeError::Checkout(e)) => {
                info.set_state(ClientState::Idle, now_us);
                info.error_count.fetch_add(1, Relaxed);
                let rare = self.rare.get_or_insert_with(Default::default);
                rare.checkout_failures += 1;
                if let Some(limit) = pool.checkout_failure_limit {
                    if rare.checkout_failures >= limit {
                        return Err(checkout_limit_reached(rare.checkout_failures, limit).into());
                    }
                }
                self.reject(e, false).await?;
                return Ok(None);
            }
            Err(TakeError::Params(server, e)) => {
                let to_client = e.to_client();
                match e {
                    BackendError::Query { .. } if !e.lost_connection() => {
                        checkin(server, pool.mode).await
                    }
                    _ => server.discard(),
                }
                info.set_state(ClientState::Idle, now_us);
                self.reject(to_client, false).await?;
                return Ok(None);
            }
        };
        info.set_state(ClientState::Active, || got);
        let mut flow = Flow::new(got);
        flow.routed = routed;
        flow.shard = route.shard;
        if let Some(begin) = begin {
            if let Err(e) = server.write_all(&begin).await {
                server.discard();
                self.reject(e.to_client(), false).await?;
                return Ok(None);
            }
            // The client already has its BEGIN reply, and is in a transaction.
            flow.replies.push(Expect::SwallowQuery);
            flow.status = b'T';
        }
        Ok(Some(Box::new(Held {
            server,
            flow,
            scan: Scanner::default(),
            wrote: route.role == Some(Role::Primary),
        })))
    }
}

/// The FATAL of a client whose checkouts failed `checkout_failure_limit` times (PgCat's
/// reason: behind a load balancer, a client stuck on an overloaded pooler reconnects and may
/// land on another).
fn checkout_limit_reached(failures: u64, limit: u64) -> PgError {
    PgError::fatal(
        "53300",
        format!(
            "checkout failure limit reached ({failures} / {limit}): the pool could not give \
             this client a server {failures} times; disconnecting"
        ),
    )
    .with_hint("Reconnect (behind a load balancer, possibly to another pooler).")
}
