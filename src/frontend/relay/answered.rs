//! Requests the pooler answers without a server: SQL extensions (also inside a
//! pipeline), statements naming the client's prepared statements (`DEALLOCATE`, `PREPARE` of
//! a name in use), LISTEN/UNLISTEN in transaction mode, and prepares of known statements.

use pgcat_parser::may_name;

use super::*;

impl Client {
    /// Where to stop forwarding: before a request (after a Query or Sync) that is, or may
    /// still turn out to be, an SQL extension; the pooler answers it once the server has
    /// answered everything before it. The whole buffer otherwise.
    pub(super) fn extension_cut(&self) -> usize {
        let buf = &self.buf[..];
        if !self.scanner.at_boundary() {
            return buf.len();
        }
        let candidate = |rest: &[u8]| {
            let small = matches!(crate::wire::frame::header(rest), Ok(Some((b'Q' | b'P' | b'B' | b'D', l))) if l < INSPECT_CAP);
            let complete =
                matches!(crate::wire::frame::header(rest), Ok(Some((_, l))) if rest.len() > l);
            small && (!complete || self.command_request_at(rest).is_some())
        };
        if self.request_boundary && !extension::plain_query(buf) && candidate(buf) {
            return 0;
        }
        let mut pos = 0;
        while let Ok(Some((tag, len))) = crate::wire::frame::header(&buf[pos..]) {
            let next = pos + 1 + len;
            if next >= buf.len() {
                break;
            }
            if matches!(tag, b'Q' | b'S') {
                let rest = &buf[next..];
                let small = matches!(crate::wire::frame::header(rest), Ok(Some((b'Q' | b'P' | b'B' | b'D', l))) if l < INSPECT_CAP);
                let complete =
                    matches!(crate::wire::frame::header(rest), Ok(Some((_, l))) if rest.len() > l);
                if small && (!complete || self.command_request_at(rest).is_some()) {
                    return next;
                }
            }
            pos = next;
        }
        buf.len()
    }

    /// Whether the buffer starts with a whole message (or one long enough to be streamed),
    /// so forwarding it makes progress.
    pub(super) fn has_complete_message(&self) -> bool {
        match crate::wire::frame::header(&self.buf) {
            Ok(Some((_, len))) => len > REWRITE_CAP || self.buf.len() > len,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Whether the buffer starts with a Close of a statement that is an SQL extension.
    pub(super) fn closes_command_statement(&self) -> bool {
        match crate::wire::frame::whole(&self.buf, INSPECT_CAP) {
            Ok(Some((b'C', body, _))) if body.first() == Some(&b'S') => {
                crate::wire::startup::cstr(&body[1..])
                    .is_ok_and(|(name, _)| self.command_statements.contains_key(name))
            }
            _ => false,
        }
    }

    /// Answers Close messages (through their Sync) of statements that are SQL extensions:
    /// they never reached a server. Returns false, consuming nothing, when the request is
    /// anything else.
    pub(super) async fn close_command_statement(
        &mut self,
        status: u8,
    ) -> Result<bool, ClientError> {
        if !self.closes_command_statement() {
            return Ok(false);
        }
        let (pos, names) = loop {
            let mut pos = 0;
            let mut names = Vec::new();
            let complete = loop {
                let Ok(next) = crate::wire::frame::whole(&self.buf[pos..], INSPECT_CAP) else {
                    // Too large to be a Close or Sync: not ours to answer.
                    return Ok(false);
                };
                let Some((tag, body, total)) = next else {
                    break false;
                };
                pos += total;
                match tag {
                    b'C' if body.first() == Some(&b'S') => {
                        let name =
                            crate::wire::startup::cstr(&body[1..]).map(|(n, _)| n.to_string());
                        match name {
                            Ok(n) if self.command_statements.contains_key(&n) => names.push(n),
                            _ => return Ok(false),
                        }
                    }
                    b'S' => break true,
                    _ => return Ok(false),
                }
            };
            if complete {
                break (pos, names);
            }
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        };
        let mut out = BytesMut::new();
        for name in &names {
            self.command_statements.remove(name);
            messages::empty(&mut out, b'3');
        }
        messages::ready_for_query(&mut out, status);
        self.buf.advance(pos);
        self.stream.send(&out).await?;
        Ok(true)
    }

    /// The SQL extension at the start of the buffer, if that is what it holds.
    pub(super) fn command_request(
        &self,
    ) -> Option<(
        Result<pgcat_parser::Command, pgcat_parser::CommandError>,
        bool,
    )> {
        self.command_request_at(&self.buf)
    }

    fn command_request_at(
        &self,
        buf: &[u8],
    ) -> Option<(
        Result<pgcat_parser::Command, pgcat_parser::CommandError>,
        bool,
    )> {
        let named = &self.command_statements;
        extension::command_request(buf, |name| named.get(name).map(String::as_str))
    }

    /// Answers the SQL extension at the start of the buffer (a Query, or an extended
    /// batch through its Sync). `status` is the client's transaction status. Returns true
    /// when the session's target changed.
    pub(super) async fn answer_command(&mut self, status: u8) -> Result<bool, ClientError> {
        loop {
            let Some((command, extended)) = self.command_request() else {
                return Ok(false);
            };
            let pool = self.session.pool.clone();
            let before = self.routing;
            let mut trial = self.routing;
            let result = extension::apply(&command, &mut trial, &pool, status != b'I');
            let mut out = BytesMut::new();
            let reply_status = if result.is_err() && status == b'T' {
                b'T'
            } else {
                status
            };
            match extension::answer(
                &self.buf,
                extended,
                (extension::column_of(&command), "SET"),
                &result,
                reply_status,
                &mut out,
            )? {
                Some(used) => {
                    if extended {
                        for (name, sql) in extension::parsed_names(&self.buf[..used]) {
                            self.command_statements.insert(name, sql);
                        }
                    }
                    self.buf.advance(used);
                    self.routing = trial;
                    self.stream.send(&out).await?;
                    return Ok(self.routing != before);
                }
                None => {
                    if read(&mut self.stream, &mut self.buf).await? == 0 {
                        return Err(ClientError::Gone);
                    }
                }
            }
        }
    }

    /// The text of the request at the start of the buffer when it is a whole Query or an
    /// extended batch's whole unnamed Parse that may name a session object (see
    /// [`pgcat_parser::named_statement`]), and whether it is extended. Anything else is
    /// dismissed on its first byte, before any UTF-8 check: this runs for every request.
    fn named_request(&self) -> Option<(&str, bool)> {
        let (sql, extended) = extension::simple_or_unnamed_sql(&self.buf)?;
        may_name(sql).then(|| (request::text(sql), extended))
    }

    /// Reads until the request at the start of the buffer is whole (an extended one
    /// through its Sync), so that the pooler answers and applies it once.
    async fn read_request(&mut self, extended: bool) -> Result<(), ClientError> {
        let probe = |buf: &BytesMut| {
            extension::answer(
                buf,
                extended,
                ("", ""),
                &Ok(None),
                b'I',
                &mut BytesMut::new(),
            )
        };
        while probe(&self.buf)?.is_none() {
            if read(&mut self.stream, &mut self.buf).await? == 0 {
                return Err(ClientError::Gone);
            }
        }
        Ok(())
    }

    /// In `Rewrite` mode, the request at the start of the buffer is SQL the pooler answers
    /// about the client's statements (see [`ClientStatements::answer_sql`]): whether it is
    /// extended.
    fn statement_sql_request(&self) -> Option<bool> {
        if self.mode != Mode::Rewrite {
            return None;
        }
        let (sql, extended) = self.named_request()?;
        self.statements.answers_sql(sql).then_some(extended)
    }

    pub(super) fn answers_statement_sql(&self) -> bool {
        self.statement_sql_request().is_some()
    }

    /// Answers SQL `DEALLOCATE name` of a statement the pooler manages for the client (the
    /// server knows it under the pooler's name) and `PREPARE` of a name in use as
    /// PostgreSQL would, without a server. `status` is the client's transaction status.
    /// False (consuming nothing) for anything else.
    pub(super) async fn answer_statement_sql(&mut self, status: u8) -> Result<bool, ClientError> {
        let Some(extended) = self.statement_sql_request() else {
            return Ok(false);
        };
        self.read_request(extended).await?;
        let sql = self
            .named_request()
            .map(|(sql, _)| sql.to_owned())
            .unwrap_or_default();
        let (tag, result) = if status == b'E' {
            ("", Err(aborted_transaction()))
        } else {
            match self.statements.answer_sql(&sql) {
                Some(Ok(tag)) => (tag, Ok(None)),
                Some(Err(e)) => ("", Err(e)),
                None => return Ok(false),
            }
        };
        self.reply_here(extended, tag, &result, status).await
    }

    /// Answers the whole request at the start of the buffer (see [`extension::answer`]) with
    /// `result` (`Ok(None)`: CommandComplete `done`) and consumes it.
    async fn reply_here(
        &mut self,
        extended: bool,
        done: &str,
        result: &Result<Option<String>, PgError>,
        status: u8,
    ) -> Result<bool, ClientError> {
        let mut out = BytesMut::new();
        let used = extension::answer(&self.buf, extended, ("", done), result, status, &mut out)?
            .unwrap_or_default();
        self.buf.advance(used);
        self.stream.send(&out).await?;
        Ok(true)
    }

    /// Transaction mode: the LISTEN or UNLISTEN at the start of the buffer (a whole Query,
    /// or an extended batch's unnamed Parse), and whether it is extended.
    pub(super) fn listen_request(&self) -> Option<(Listen, bool)> {
        if self.session.pool.mode != PoolMode::Transaction {
            return None;
        }
        let (sql, extended) = self.named_request()?;
        listen::parse(sql).map(|l| (l, extended))
    }

    /// Answers LISTEN and UNLISTEN in transaction mode (see [`listen`]): the pooler's hub
    /// listens for the client. False (consuming nothing) for anything else.
    pub(super) async fn answer_listen(&mut self, status: u8) -> Result<bool, ClientError> {
        let Some((_, extended)) = self.listen_request() else {
            return Ok(false);
        };
        self.read_request(extended).await?;
        let Some((request, extended)) = self.listen_request() else {
            return Ok(false);
        };
        let result = if status == b'E' {
            Err(aborted_transaction())
        } else {
            let pool = self.session.pool.clone();
            let client = self.session.info.id;
            self.rare
                .get_or_insert_default()
                .listening
                .get_or_insert_with(|| Listening::new(pool.notifications().clone(), client))
                .apply(&request, pool.connect_timeout)
                .await
                .map(|()| None)
        };
        self.reply_here(extended, request.tag(), &result, status)
            .await
    }

    /// Answers a request made only of Parse of statements the pool knows, Close of
    /// statements, and a final Sync, without a server. Returns false (consuming nothing)
    /// for anything else.
    pub(super) async fn prepare_locally(&mut self) -> Result<bool, ClientError> {
        let known = &self.session.pool.known_statements;
        let mut pos = 0;
        let mut replies = BytesMut::new();
        loop {
            // Incomplete, or too large to be a prepare answered here.
            let Ok(Some((tag, body, total))) =
                crate::wire::frame::whole(&self.buf[pos..], INSPECT_CAP)
            else {
                return Ok(false);
            };
            let answerable = match tag {
                b'P' => self
                    .statements
                    .is_known_parse(body, |name| known.contains(name)),
                b'C' => body.first() == Some(&b'S'),
                b'S' => true,
                _ => false,
            };
            if !answerable {
                return Ok(false);
            }
            pos += total;
            if tag == b'S' {
                break;
            }
        }
        // All answerable: apply them for real.
        let mut scratch = BytesMut::new();
        let mut queue = Replies::default();
        let epoch = self.session.pool.schema_epoch.get();
        while let Ok(Some((tag, body, total))) = crate::wire::frame::whole(&self.buf, INSPECT_CAP) {
            if tag == b'S' {
                self.buf.advance(total);
                break;
            }
            self.statements.on_message(
                Mode::Rewrite,
                tag,
                body,
                None,
                epoch,
                &mut queue,
                &mut scratch,
            )?;
            messages::empty(&mut replies, if tag == b'P' { b'1' } else { b'3' });
            self.buf.advance(total);
        }
        messages::ready_for_query(&mut replies, b'I');
        self.stream.send(&replies).await?;
        Ok(true)
    }
}
