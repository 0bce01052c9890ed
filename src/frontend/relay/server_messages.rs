//! The server's messages on their way to the client: tracking the conversation
//! (ReadyForQuery, errors, COPY, settings the server reports, schema changes), swallowing
//! the replies to what the pooler added, and stopping at a server that ended.

use super::*;

/// Why forwarding a server's bytes stopped short of what was read.
enum Stop {
    /// The server sent this error and is done: a FATAL, or an error to a BEGIN the pooler
    /// had answered.
    Ended(ServerError),
    /// A reply to be swallowed was streamed (too large to read whole).
    Unswallowable(u8),
}

impl Client {
    /// Forwards server messages to the client, noting the ones that change the flow,
    /// swallowing replies to messages the pooler added and inserting the ones it made up.
    pub(super) async fn forward_server(
        &mut self,
        server: &mut ServerConn,
        flow: &mut Flow,
        scan: &mut Scanner,
    ) -> Option<End> {
        let mut out = BytesMut::new();
        let mut copied = 0;
        let mut dropped_all = false;
        let mut kept = None;
        let mut discarded = false;
        // Where the server's stream stops making sense for this client, and why: nothing
        // from there on is forwarded (see `Stop`).
        let mut stop: Option<(usize, Stop)> = None;
        // A reply the pooler swallows must be seen whole, so it can be dropped whole.
        let swallowing = flow.replies.swallows();
        let tracks_state = self.mode != Mode::PassThrough;
        let log_params = self.session.pool.log_client_parameter_status_changes;
        let known = &self.session.pool.known_statements;
        let epoch = &self.session.pool.schema_epoch;
        let client_statements = &mut self.statements;
        let info = &self.session.info;
        let (io, session) = server.split();
        let buf = io.received();
        let scanned = scan.scan(
            buf,
            |tag| {
                swallowing
                    || (log_params && tag == b'S')
                    || matches!(
                        tag,
                        b'Z' | b'C' | b'1' | b'2' | b'3' | b'T' | b'n' | b'I' | b's' | b'E'
                    )
            },
            |tag, body, start| {
                if stop.is_some() {
                    return;
                }
                if tag == b'E' {
                    if let Some(b) = body {
                        // A FATAL ends the server: the client hears of it once, from
                        // `server_lost`. An error to a BEGIN the pooler answered already
                        // leaves the client's transaction without a server transaction.
                        if ServerError::ends_session(b) || flow.replies.awaits_held_begin() {
                            stop = Some((start, Stop::Ended(ServerError::new(b))));
                            info.error_count.fetch_add(1, Relaxed);
                            session.count_error();
                            return;
                        }
                    }
                }
                match tag {
                    b'Z' => {
                        flow.status = body.and_then(|b| b.first().copied()).unwrap_or(b'I');
                        flow.copy = false;
                        let now = now_us();
                        let query_us = now.saturating_sub(flow.query_started.take().unwrap_or(now));
                        let xact_us =
                            (flow.status == b'I').then(|| now.saturating_sub(flow.xact_started));
                        session.count_query(query_us, xact_us);
                        info.query_count.fetch_add(1, Relaxed);
                        if flow.status == b'I' {
                            info.xact_count.fetch_add(1, Relaxed);
                            flow.xact_started = now;
                            flow.ddl = false;
                        }
                        if let Some(e) = flow.remember.take() {
                            if flow.status != b'I' {
                                // The same query opened a transaction: not the client's to keep.
                                session.dirty_mut().settings = true;
                            } else if !flow.failed {
                                kept = Some(e);
                            }
                        }
                        flow.failed = false;
                    }
                    b'E' => {
                        flow.failed = true;
                        if let (true, Some(b)) = (tracks_state, body) {
                            if let (Some(code), Some(message)) = (field(b, b'C'), field(b, b'M')) {
                                if epoch.on_error(code, message) {
                                    if let Some(s) = session.statements_mut() {
                                        s.age();
                                    }
                                }
                            }
                        }
                        info.error_count.fetch_add(1, Relaxed);
                        session.count_error();
                    }
                    b'G' | b'H' | b'W' => flow.copy = true,
                    // A reported setting changed, however (set_config(), a function, a
                    // RESET): the client's settings are read back at release.
                    b'S' => {
                        if let (true, Some(b)) = (log_params, body) {
                            log_parameter(info, b);
                        }
                        if tracks_state {
                            flow.changed_settings.reported();
                            session.dirty_mut().settings = true;
                        }
                    }
                    b'C' if tracks_state && body.is_some_and(|b| epoch.on_command(b, flow.ddl)) => {
                        flow.ddl = true;
                    }
                    // DISCARD ALL / DEALLOCATE ALL drop every statement, the client's and the
                    // ones the pooler prepared on this server; DISCARD ALL resets settings too.
                    b'C' if body.is_some_and(|b| {
                        b.starts_with(b"DISCARD ALL") || b.starts_with(b"DEALLOCATE ALL")
                    }) =>
                    {
                        dropped_all = true;
                        let everything = body.is_some_and(|b| b.starts_with(b"DISCARD ALL"));
                        discarded |= everything;
                        session.client_discarded(everything);
                    }
                    _ => {}
                }
                let end = body.map(|b| start + 5 + b.len());
                let action = flow.replies.on_server(tag, |event| match event {
                    Event::Prepared(name) => known.insert(name),
                    Event::Failed(name) => {
                        if let Some(s) = session.statements_mut() {
                            s.forget(name);
                        }
                    }
                    Event::Undefined(name) => client_statements.undefine(name),
                });
                tracing::trace!(tag = %char::from(tag), ?action, "server message");
                if action == Action::Swallow {
                    let Some(end) = end else {
                        // Larger than a message the pooler reads whole: it cannot be
                        // dropped without cutting the client's stream, so nothing of it
                        // is forwarded and the server is given up.
                        stop = Some((start, Stop::Unswallowable(tag)));
                        return;
                    };
                    out.extend_from_slice(&buf[copied..start]);
                    copied = end;
                }
                let mut synth = BytesMut::new();
                flow.replies.take_synth(|t| messages::empty(&mut synth, t));
                if !synth.is_empty() {
                    if let Some(end) = end {
                        out.extend_from_slice(&buf[copied..end]);
                        copied = end;
                    }
                    out.extend_from_slice(&synth);
                }
            },
        );
        let n = match (scanned, &stop) {
            (_, Some((at, _))) => *at,
            (Ok(n), None) => n,
            (Err(e), None) => {
                return Some(End::ServerGone(BackendError::Protocol {
                    addr: session.addr().to_string(),
                    reason: e.to_string(),
                }))
            }
        };
        if dropped_all {
            self.statements.clear();
        }
        if discarded {
            // The client's DISCARD ALL resets its own remembered settings, nobody else's,
            // and ends its LISTENs (UNLISTEN *), as on PostgreSQL.
            self.session.params = self.session.startup_params.clone();
            if let Some(rare) = &mut self.rare {
                rare.listening = None;
            }
        }
        if let Some(e) = kept {
            // The client's own SET/RESET: remembered, and this server now carries it.
            let params = &mut self.session.params;
            state::remember(params, &self.session.startup_params, &e);
            if e.reset.is_empty() && !e.reset_all && e.set.iter().all(|(_, v)| v.is_some()) {
                session.applied_now(params);
            } else {
                // RESET returns to the server's default, not the client's: re-apply next time.
                session.forget_applied();
            }
        }
        let received = io.received();
        let result = if out.is_empty() && copied == 0 {
            self.stream.send(&received[..n]).await
        } else {
            out.extend_from_slice(&received[copied.min(n)..n]);
            self.stream.send(&out).await
        };
        io.consume(n);
        session.count_received(n);
        if result.is_err() {
            return Some(End::ClientGone);
        }
        let addr = session.addr().to_string();
        match stop? {
            (_, Stop::Ended(error)) => {
                Some(End::ServerGone(BackendError::Terminated { addr, error }))
            }
            (_, Stop::Unswallowable(tag)) => {
                // The client got nothing of that message: its stream is whole.
                *scan = Scanner::default();
                let reason = format!(
                    "reply '{}' to a statement the pooler added is too large to drop",
                    char::from(tag)
                );
                Some(End::ServerGone(BackendError::Protocol { addr, reason }))
            }
        }
    }
}

/// `log_client_parameter_status_changes`: a ParameterStatus the client is sent (a setting
/// the server reports changed: a SET, set_config(), a RESET), logged with the client.
fn log_parameter(info: &crate::stats::ClientInfo, body: &[u8]) {
    let mut parts = body.split(|b| *b == 0);
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
    tracing::info!(
        client = info.id,
        database = %info.database,
        user = %info.user,
        parameter = %name,
        %value,
        "client parameter status changed"
    );
}
