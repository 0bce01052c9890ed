//! The client's messages on their way to the server: tracking what each one is owed,
//! rewriting the ones that name prepared statements, and writing them without blocking
//! the server's replies.

use super::*;

/// Puts `replacement` where the message at `start` (body of `len` bytes) was in what goes
/// to the server: `out` gets the client's bytes before it (from `copied` on) and the
/// replacement, and `copied` moves past the message.
fn splice(
    out: &mut BytesMut,
    buf: &[u8],
    copied: &mut usize,
    (start, len): (usize, usize),
    replacement: &mut BytesMut,
) {
    if out.capacity() == 0 {
        out.reserve(buf.len() + 256);
    }
    out.extend_from_slice(&buf[*copied..start]);
    out.extend_from_slice(replacement);
    replacement.clear();
    *copied = start + 5 + len;
}

/// A query text as on the wire, without its NUL.
fn query_bytes(body: &[u8]) -> &[u8] {
    body.split(|b| *b == 0).next().unwrap_or_default()
}

/// A Query body's text (invalid UTF-8 routes like unparsable SQL).
fn query_bytes_str(body: &[u8]) -> &str {
    request::text(body)
}

impl Client {
    /// Forwards complete (or streamed) client messages to the server, rewriting the ones
    /// that name prepared statements, then sends the client any replies made up for them.
    pub(super) async fn forward_client(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        server_scan: &mut Scanner,
    ) -> Option<End> {
        // An ordinary whole Query or unnamed Parse (its first word tells) is none of the
        // requests intercepted here.
        if flow.settled() && self.scanner.at_boundary() && !extension::plain_query(&self.buf) {
            match crate::wire::frame::header(&self.buf) {
                // A small Query or Parse still arriving: it may be an SQL extension, which
                // must not reach the server. Wait for the rest.
                Ok(Some((b'Q' | b'P', len))) if len < INSPECT_CAP && self.buf.len() < len + 1 => {
                    return None
                }
                Ok(Some((b'Q' | b'P' | b'B' | b'D', _))) if self.command_request().is_some() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                Ok(Some((b'C', _))) if self.closes_command_statement() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                Ok(Some((b'Q' | b'P', _))) if self.answers_statement_sql() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                Ok(Some((b'Q' | b'P', _))) if self.listen_request().is_some() => {
                    flow.routed = None;
                    return Some(End::Intercept);
                }
                _ => {}
            }
        }
        // The router's analysis is of one message of this first batch, found by its offset.
        let routed = flow.routed.take();
        let routed_at = |start: usize| {
            routed
                .as_ref()
                .filter(|r| r.at == start)
                .map(|r| &*r.analysis)
        };
        let cut = self.extension_cut();
        let mut last = None;
        let last_tag = &mut last;
        let mut terminate_at = None;
        let mut failure = None;
        let mut out = BytesMut::new();
        let mut replacement = BytesMut::new();
        let mut copied = 0;
        let mode = self.mode;
        let statements = &mut self.statements;
        let buf = &self.buf;
        let epoch = self.session.pool.schema_epoch.get();
        let session = server.session_mut();
        let effects = state::Effects::new(&self.session.pool.router);
        let tracks_state = mode != Mode::PassThrough;
        // Statements that would need other shards than the held server's are made to fail
        // there (see `cross_shard::refused_on_held`).
        let pool = &*self.session.pool;
        let guard = cross_shard::decides(&self.routing, pool).then_some((&self.routing, pool));
        let held_shard = flow.shard;
        // The text of the client's last unnamed Parse, for the guard at its Bind.
        let mut unnamed_sql: Option<String> = None;
        let scanned = self.scanner.scan(
            &buf[..cut],
            |tag| {
                matches!(tag, b'P' | b'B' | b'D' | b'C')
                    || ((tracks_state || guard.is_some()) && tag == b'Q')
            },
            |tag, body, start| {
                tracing::trace!(tag = %char::from(tag), len = body.map(<[u8]>::len), "client message");
                *last_tag = Some(tag);
                match tag {
                b'Q' if guard.is_some_and(|(routing, pool)| {
                    body.and_then(|b| cross_shard::refused_on_held(query_bytes_str(b), routing, pool, None, held_shard))
                        .map(|e| messages::query(&mut replacement, &[cross_shard::raise_sql(&e).as_bytes()]))
                        .is_some()
                }) => {
                    let len = body.map_or(0, <[u8]>::len);
                    splice(&mut out, buf, &mut copied, (start, len), &mut replacement);
                    flow.replies.push(Expect::Query);
                    flow.query_started.get_or_insert_with(now_us);
                }
                b'Q' => {
                    // SQL PREPARE/EXECUTE of the client's statements, renamed.
                    let rewritten = match (mode, body, session.statements_mut()) {
                        (Mode::Rewrite, Some(b), Some(server)) => statements.rewrite_sql(
                            query_bytes(b),
                            server,
                            epoch,
                            &mut flow.replies,
                            &mut replacement,
                        ),
                        _ => None,
                    };
                    if let Some(e) = rewritten
                        .as_ref()
                        .and_then(|r| r.runs.as_ref())
                        .and_then(|stmt| effects.of(&stmt.body, None))
                    {
                        state::note(&mut flow.changed_settings, session.dirty_mut(), &e);
                    } else if tracks_state && rewritten.is_none() {
                        let idle = flow.replies.is_empty() && flow.status == b'I';
                        let routed = routed_at(start);
                        match body.map(|b| (effects.of(b, routed), b)) {
                            None => *session.dirty_mut() = Dirty::all(),
                            Some((None, _)) => {}
                            // A plain SET outside a transaction: kept once it succeeds.
                            Some((Some(e), t))
                                if idle
                                    && state::only_settings(&e)
                                    && flow.remember.is_none()
                                    && !effects.controls_transaction(t, routed) =>
                            {
                                flow.remember = Some(e);
                            }
                            Some((Some(e), _)) => {
                                state::note(&mut flow.changed_settings, session.dirty_mut(), &e);
                            }
                        }
                    }
                    flow.replies.push(Expect::Query);
                    flow.query_started.get_or_insert_with(now_us);
                    if let (Some(r), Some(body)) = (rewritten, body) {
                        if let Some((server_name, client_name)) = r.defines {
                            flow.replies.push(Expect::Defines(server_name, client_name));
                        }
                        messages::query(&mut replacement, &[r.text.as_bytes()]);
                        splice(&mut out, buf, &mut copied, (start, body.len()), &mut replacement);
                    }
                }
                b'F' => {
                    flow.replies.push(Expect::FunctionCall);
                    flow.query_started.get_or_insert_with(now_us);
                }
                b'S' => {
                    flow.replies.push_sync(|server_name, client_name| {
                        if let Some(server) = session.statements_mut() {
                            server.forget(server_name);
                        }
                        statements.undefine(client_name);
                    });
                    flow.batch = false;
                    flow.query_started.get_or_insert_with(now_us);
                }
                b'E' => {
                    flow.replies.push_execute();
                    flow.batch = true;
                }
                b'H' => flow.batch = true,
                b'P' | b'B' | b'D' | b'C' => {
                    flow.batch = true;
                    let Some(body) = body else {
                        failure.get_or_insert(PgError::fatal(
                            "54000",
                            format!(
                                "{} message larger than {REWRITE_CAP} bytes",
                                char::from(tag)
                            ),
                        ));
                        return;
                    };
                    // A Bind of a statement prepared earlier that would need other shards:
                    // an unnamed statement that fails with the reason runs instead.
                    if let (b'P', Some(_)) = (tag, guard) {
                        if let Ok(("", rest)) = crate::wire::startup::cstr(body) {
                            unnamed_sql = Some(query_bytes_str(rest).to_string());
                        }
                    }
                    let refused_bind = (tag == b'B')
                        .then_some(guard)
                        .flatten()
                        .and_then(|(routing, pool)| {
                            let (_, rest) = crate::wire::startup::cstr(body).ok()?;
                            let (name, _) = crate::wire::startup::cstr(rest).ok()?;
                            let sql = match name {
                                "" => unnamed_sql.as_deref()?,
                                _ => statements.sql_of(name)?,
                            };
                            cross_shard::refused_on_held(sql, routing, pool, Some(body), held_shard)
                        });
                    if let Some(error) = refused_bind {
                        // Bound instead: an unnamed statement that fails with the reason when
                        // the client's Execute runs it (its ParseComplete swallowed).
                        let raise = cross_shard::raise_sql(&error);
                        let parse = [raise.as_bytes(), &[0, 0, 0]].concat();
                        messages::parse(&mut replacement, "", &parse);
                        messages::bind(&mut replacement, "", "", &[0, 0, 0, 0, 0, 0]);
                        splice(&mut out, buf, &mut copied, (start, body.len()), &mut replacement);
                        flow.replies.push(Expect::SwallowParse(Arc::from("")));
                        flow.replies.push(Expect::Bind);
                        return;
                    }
                    if tag == b'P' && tracks_state {
                        if let Ok((name, rest)) = crate::wire::startup::cstr(body) {
                            // Cache off: the client's own statement names stay on the server.
                            if mode == Mode::Pin && !name.is_empty() {
                                session.dirty_mut().prepared = true;
                            }
                            // A renamed SQL PREPARE leaves no state of the client's.
                            let renamed = mode == Mode::Rewrite
                                && statements.renames(query_bytes(rest));
                            if let Some(e) =
                                effects.of(rest, routed_at(start)).filter(|_| !renamed)
                            {
                                state::note(&mut flow.changed_settings, session.dirty_mut(), &e);
                            }
                        }
                    }
                    let original_len = body.len();
                    if mode == Mode::Rewrite && replacement.capacity() == 0 {
                        // Room for a rewritten message in one allocation, not a chain of
                        // reallocations as its fields are appended.
                        replacement.reserve(body.len() + 128);
                    }
                    match statements.on_message(
                        mode,
                        tag,
                        body,
                        session.statements_mut(),
                        epoch,
                        &mut flow.replies,
                        &mut replacement,
                    ) {
                        Ok(Outcome::Keep) => {}
                        Ok(outcome) => {
                            if let Outcome::Runs(stmt) = outcome {
                                if let Some(e) = effects.of(&stmt.body, None) {
                                    state::note(&mut flow.changed_settings, session.dirty_mut(), &e);
                                }
                            }
                            splice(&mut out, buf, &mut copied, (start, original_len), &mut replacement);
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
                b'X' => {
                    terminate_at.get_or_insert(start);
                }
                other if !crate::wire::frame::is_frontend_tag(other) => {
                    failure.get_or_insert(PgError::fatal("08P01", crate::wire::frame::invalid_frontend_tag(other)));
                }
                _ => {}
            }},
        );
        let n = match scanned {
            Ok(n) => n,
            Err(e) => return Some(End::Fatal(PgError::fatal("08P01", e.to_string()))),
        };
        if let Some(e) = failure {
            return Some(End::Fatal(e));
        }
        if let Some(tag) = last {
            self.request_boundary = matches!(tag, b'Q' | b'S');
        }
        server.session().count_sent(n);
        let send = terminate_at.unwrap_or(n);
        let bytes: &[u8] = if copied == 0 {
            &self.buf[..send]
        } else {
            out.extend_from_slice(&self.buf[copied.min(send)..send]);
            &out
        };
        // Usually the socket takes it all at once; what it does not take is written while
        // the server's replies keep flowing (see `drain_to_server`).
        server.mirror(bytes);
        let written = match server.io().try_write(bytes) {
            Ok(w) => w,
            Err(e) => return Some(End::ServerGone(server.io().lost(e))),
        };
        let rest = (written < bytes.len()).then(|| BytesMut::from(&bytes[written..]));
        self.buf.advance(n);
        if rest.is_some() || server.io().wants_flush() {
            let rest = rest.unwrap_or_default();
            if let Some(end) = self.drain_to_server(server, flow, server_scan, rest).await {
                return Some(end);
            }
        }
        if terminate_at.is_some() {
            return Some(End::ClientGone);
        }
        let mut synth = BytesMut::new();
        flow.replies
            .take_synth(|tag| messages::empty(&mut synth, tag));
        if !synth.is_empty() && self.stream.send(&synth).await.is_err() {
            return Some(End::ClientGone);
        }
        None
    }

    /// Writes `rest` (and TLS records rustls holds back) to the server while relaying what
    /// the server sends meanwhile. A server blocked sending results stops reading, so
    /// writing a large pipeline without reading would deadlock both.
    async fn drain_to_server(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        scan: &mut Scanner,
        mut rest: BytesMut,
    ) -> Option<End> {
        while !rest.is_empty() || server.io().wants_flush() {
            match server.io().write_or_read(&rest).await {
                Err(e) => return Some(End::ServerGone(e)),
                Ok((written, read)) => {
                    rest.advance(written);
                    if read {
                        if let Some(end) = self.forward_server(server, flow, scan).await {
                            return Some(end);
                        }
                    }
                }
            }
        }
        None
    }
}
