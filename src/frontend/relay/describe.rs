//! A statement that runs on every shard, prepared by name and described before it runs,
//! with Flush instead of Sync (asyncpg: Parse, Describe statement, Flush; then Bind,
//! Execute, Sync once it has the description). Any shard describes it the same, so shard
//! 0 does, in a conversation of its own that ends with a Sync (the server goes back at
//! once); the client gets ParseComplete and the description, and the pooler keeps the
//! statement, so its Bind later runs it on every shard.

use super::*;

/// The client's Parse body of a named statement followed by a Describe of it and a Flush
/// (or, when `sync` allows, a Sync: tokio-postgres prepares so), and the batch's length;
/// `None` when the buffer starts with something else.
pub(super) fn flush_batch(buf: &[u8], sync: bool) -> Result<Option<(&[u8], usize)>, FrameError> {
    let mut pos = 0;
    let mut parse = None;
    for want in [b'P', b'D', b'H'] {
        let Some((tag, body, total)) = crate::wire::frame::whole(&buf[pos..], REWRITE_CAP)? else {
            return Ok(None);
        };
        if tag != want && !(sync && want == b'H' && tag == b'S') {
            return Ok(None);
        }
        match tag {
            b'P' => match crate::wire::startup::cstr(body) {
                Ok((name, _)) if !name.is_empty() => parse = Some((name, body)),
                _ => return Ok(None),
            },
            b'D' => {
                let described = body
                    .strip_prefix(b"S")
                    .and_then(|rest| crate::wire::startup::cstr(rest).ok());
                if described.map(|(name, _)| name) != parse.map(|(name, _)| name) {
                    return Ok(None);
                }
            }
            _ => {}
        }
        pos += total;
    }
    Ok(parse.map(|(_, body)| (body, pos)))
}

impl Client {
    /// Answers the client's Parse, Describe and Flush (`parse`: the Parse body, `len`: the
    /// batch's bytes) from a server of shard 0, and keeps the statement for its Bind.
    pub(super) async fn describe_on_shard0(
        &mut self,
        parse: Vec<u8>,
        len: usize,
    ) -> Result<(), ClientError> {
        let pool = self.session.pool.clone();
        let server = self.take_shard(0, None, now_us()).await;
        let mut server = match server {
            Ok(server) => server,
            Err(e) => return self.reject(e, false).await,
        };
        self.buf.advance(len);
        match describe(&mut server, &parse).await {
            Ok((out, described, b'I')) => {
                checkin(server, pool.mode).await;
                self.described(&parse, &out, described).await
            }
            Ok((out, described, _)) => {
                server.discard();
                self.described(&parse, &out, described).await
            }
            Err(e) => {
                server.discard();
                self.reject(e.to_client(), false).await
            }
        }
    }

    /// Sends the client the description `out` of its statement `parse`, and keeps the
    /// statement when it was `described` (not refused).
    pub(super) async fn described(
        &mut self,
        parse: &[u8],
        out: &[u8],
        described: bool,
    ) -> Result<(), ClientError> {
        if described {
            let epoch = self.session.pool.schema_epoch.get();
            if let Err(e) = self.statements.define(parse, epoch) {
                tracing::debug!(error = %e.message, "statement not remembered");
            }
        }
        // After an error the client sends Sync, which gets its ReadyForQuery as usual.
        self.stream.send(out).await?;
        Ok(())
    }
}

/// Has `server` describe the statement of the client's Parse body `parse` (as unnamed):
/// what the client gets of its answer, whether it succeeded, and the server's transaction
/// status after it.
pub(super) async fn describe(
    server: &mut Server,
    parse: &[u8],
) -> Result<(BytesMut, bool, u8), BackendError> {
    let text = crate::wire::startup::cstr(parse).map_or(&[][..], |(_, text)| text);
    let mut ask = BytesMut::new();
    messages::parse(&mut ask, "", text);
    messages::describe_statement(&mut ask, "");
    messages::message(&mut ask, b'S', |_| {});
    let mut out = BytesMut::new();
    let mut failed = false;
    server.write_all(&ask).await?;
    loop {
        let (tag, body) = server.read_message().await?;
        match tag {
            b'Z' => return Ok((out, !failed, body.first().copied().unwrap_or(b'E'))),
            b'E' => failed = true,
            _ => {}
        }
        if matches!(tag, b'1' | b't' | b'T' | b'n' | b'E' | b'N') {
            messages::message(&mut out, tag, |m| m.extend_from_slice(&body));
        }
    }
}
