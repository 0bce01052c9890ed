//! `COPY t [(columns)] FROM STDIN` with no shard: every shard's server opens a transaction
//! and starts the same COPY; the client's data is split into rows (`crate::copy`), each
//! sent to its key's shard in CopyData of up to 64 KiB (the header and end marker to
//! every shard), so memory stays bounded whatever the data's size. At CopyDone every
//! shard ends its COPY and all commit only if every one succeeded: the client gets one
//! `COPY n` for the total, or the error (a shard's, PostgreSQL's own, or the pooler's for
//! a row it cannot place) with nothing loaded anywhere.

use super::*;
use crate::copy::{Piece, Splitter};
use pgcat_parser::cross_shard::CopyFormat;

/// A shard's rows are sent once this many bytes of them are waiting.
const FLUSH: usize = 64 * 1024;

/// How the client's COPY data ended.
enum DataEnd {
    /// CopyDone.
    Done,
    /// CopyFail, with the client's message.
    Failed(String),
}

impl Client {
    /// Runs the client's `COPY … FROM STDIN` (a Query, first in its buffer) on every
    /// shard: rows of `table` go to their shards by the key, at position `key` among the
    /// columns (`None`: the table's column order, from the catalog).
    pub(super) async fn copy_in(
        &mut self,
        role: Option<Role>,
        (table, key, format): (&str, Option<usize>, &CopyFormat),
    ) -> Result<(), ClientError> {
        if self.buf[0] != b'Q' {
            let error = PgError::error(
                "0A000",
                "COPY across shards needs the simple query protocol",
            );
            return self.reject(error, false).await;
        }
        let (_, _, total) =
            crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
        let query = self.buf.split_to(total);
        let pool = self.session.pool.clone();
        let mut servers = match self.take_all(0..pool.shards.len(), role).await {
            Ok(servers) => servers,
            Err(error) => return self.answer_error(error).await,
        };
        if let Err((shard, e)) = super::write::begin_all(&mut servers, "BEGIN").await {
            close_all(servers);
            return self
                .answer_error(crate::merge::on_shard(shard, e.to_client()))
                .await;
        }
        let (copied, mut broken) = match self
            .copy_rows(&mut servers, &query, (table, key, format))
            .await
        {
            Ok(copied) => copied,
            Err(e) => {
                close_all(servers);
                return Err(e);
            }
        };
        let wrote = vec![true; servers.len()];
        let writes = super::write::Writes {
            coordinator: self.coordinator(),
            wrote: &wrote,
        };
        let ended = super::write::end_all(&mut servers, &mut broken, copied.is_ok(), writes).await;
        let answer = match (copied, ended) {
            (Err(error), _) | (Ok(_), Err(error)) => Err(error),
            (Ok(copied), Ok(())) => Ok(copied),
        };
        release(servers, &broken, pool.mode).await;
        self.session.info.hold_server(None);
        self.session.info.query_count.fetch_add(1, Relaxed);
        self.session.info.xact_count.fetch_add(1, Relaxed);
        let mut out = BytesMut::new();
        match answer {
            Ok(copied) => messages::command_complete(&mut out, &format!("COPY {copied}")),
            Err(error) => error.encode(&mut out),
        }
        messages::ready_for_query(&mut out, b'I');
        self.stream.send(&out).await?;
        Ok(())
    }

    /// Runs the client's COPY (`query`, taken from its buffer) on `servers`, each in a
    /// transaction already: the rows copied, or the error that failed the COPY (every
    /// server's COPY ended, their transactions left for the caller to end), and the
    /// servers not to reuse. `Err`: the client is gone or the COPY was cut short (the
    /// servers' state is unknown).
    pub(super) async fn copy_rows(
        &mut self,
        servers: &mut [(usize, Server)],
        query: &[u8],
        (table, key, format): (&str, Option<usize>, &CopyFormat),
    ) -> Result<(Result<u64, PgError>, Vec<bool>), ClientError> {
        let key = match key {
            Some(key) => key,
            None => match self.key_position(&mut servers[0].1, table).await {
                Ok(key) => key,
                Err(error) => return Ok((Err(error), vec![false; servers.len()])),
            },
        };
        let (response, broken) = start_copy(servers, query).await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return Ok((Err(error), broken)),
        };
        self.stream.send(&response).await?;
        let mut splitter = Splitter::new(format.clone(), key);
        let refused = match self.stream_rows(servers, &mut splitter).await? {
            Ok(DataEnd::Done) => None,
            Ok(DataEnd::Failed(why)) => Some(PgError::error(
                "57014",
                format!("COPY from stdin failed: {why}"),
            )),
            Err(error) => Some(error),
        };
        Ok(end_copy(servers, refused).await)
    }

    /// Where the sharding key is among `table`'s columns, from shard 0's catalog.
    async fn key_position(&self, server: &mut Server, table: &str) -> Result<usize, PgError> {
        let column = match &self.session.pool.router.routing.automatic_key {
            Some(key) => key.column.replace('\'', "''"),
            None => return Err(PgError::error("0A000", "the pool has no sharding key")),
        };
        let sql = format!(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = k.attrelid \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attnum < k.attnum) \
             FROM pg_catalog.pg_attribute k WHERE k.attrelid = $1::regclass \
             AND k.attname = '{column}' AND NOT k.attisdropped"
        );
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let row = server
            .query_row_with(&sql, &quoted)
            .await
            .map_err(|e| e.to_client())?;
        let position = row
            .into_iter()
            .next()
            .flatten()
            .and_then(|n| n.parse().ok());
        position.ok_or_else(|| {
            PgError::error(
                "0A000",
                format!("table {table} has no sharding key column \"{column}\", so COPY cannot split its rows"),
            )
        })
    }

    /// Reads the client's COPY data to its end, sending each row to its shard. `Ok(Err)`:
    /// the rows could not all be placed (the data was read to its end regardless, and the
    /// servers' COPY was failed); `Err`: the client or a server is gone.
    async fn stream_rows(
        &mut self,
        servers: &mut [(usize, Server)],
        splitter: &mut Splitter,
    ) -> Result<Result<DataEnd, PgError>, ClientError> {
        let routing = self.session.pool.router.routing.clone();
        let mut waiting: Vec<Vec<u8>> = vec![Vec::new(); servers.len()];
        let mut refused: Option<PgError> = None;
        // Bytes of the CopyData message being read that are still to come.
        let mut remaining = 0usize;
        let end = loop {
            if self.buf.is_empty() && self.read_more_copy().await? == 0 {
                return Err(ClientError::Gone);
            }
            if remaining > 0 {
                let take = remaining.min(self.buf.len());
                let data = self.buf.split_to(take);
                remaining -= take;
                if refused.is_none() {
                    let placed = splitter.feed(&data, |piece| place(piece, &routing, &mut waiting));
                    refused = placed.err();
                    flush(servers, &mut waiting, FLUSH).await?;
                }
                continue;
            }
            let Some((tag, len)) = crate::wire::frame::header(&self.buf)? else {
                self.read_more_copy().await?;
                continue;
            };
            if tag == b'd' {
                self.buf.advance(5);
                remaining = len - 4;
                continue;
            }
            let Some((_, body, total)) = crate::wire::frame::whole(&self.buf, INSPECT_CAP)? else {
                self.read_more_copy().await?;
                continue;
            };
            let end = match tag {
                b'c' => Some(DataEnd::Done),
                b'f' => Some(DataEnd::Failed(request::text(body).to_string())),
                // Flush and Sync mean nothing during COPY.
                b'H' | b'S' => None,
                other => {
                    let error = PgError::error(
                        "08P01",
                        format!("unexpected message type 0x{other:02X} during COPY from stdin"),
                    );
                    return Err(error.into());
                }
            };
            self.buf.advance(total);
            if let Some(end) = end {
                break end;
            }
        };
        if let (DataEnd::Done, None) = (&end, &refused) {
            let finished = splitter.finish(|piece| place(piece, &routing, &mut waiting));
            refused = finished.err();
        }
        if refused.is_none() {
            flush(servers, &mut waiting, 0).await?;
        }
        Ok(match refused {
            Some(error) => Err(error),
            None => Ok(end),
        })
    }

    /// Reads more of the client's data into the (empty or partial) buffer.
    async fn read_more_copy(&mut self) -> Result<usize, ClientError> {
        let n = read(&mut self.stream, &mut self.buf).await?;
        if n == 0 {
            return Err(ClientError::Gone);
        }
        Ok(n)
    }

    /// Sends the client `error` and ReadyForQuery for its COPY.
    async fn answer_error(&mut self, error: PgError) -> Result<(), ClientError> {
        self.session.info.hold_server(None);
        let mut out = BytesMut::new();
        error.encode(&mut out);
        messages::ready_for_query(&mut out, b'I');
        self.stream.send(&out).await?;
        Ok(())
    }
}

/// Starts the COPY on every server: the client's CopyInResponse, and the servers not to
/// reuse. When a server refuses it, the others' COPY is failed and every server read to
/// its ReadyForQuery (their transactions failed, for the caller to end).
async fn start_copy(
    servers: &mut [(usize, Server)],
    query: &[u8],
) -> (Result<BytesMut, PgError>, Vec<bool>) {
    let mut broken = vec![false; servers.len()];
    let mut copying = vec![false; servers.len()];
    let mut failure = None;
    for (i, (shard, server)) in servers.iter_mut().enumerate() {
        if let Err(e) = server.write_all(query).await {
            broken[i] = true;
            failure.get_or_insert(crate::merge::on_shard(*shard, e.to_client()));
        }
    }
    let mut response = BytesMut::new();
    for (i, (shard, server)) in servers.iter_mut().enumerate() {
        if broken[i] {
            continue;
        }
        let started = read_through(server, *shard, &mut failure, |tag, body| {
            if tag != b'G' {
                return false;
            }
            if response.is_empty() {
                messages::message(&mut response, b'G', |m| m.extend_from_slice(body));
            }
            copying[i] = true;
            true
        });
        broken[i] = !started.await;
    }
    let Some(failure) = failure else {
        return (Ok(response), broken);
    };
    let mut fail = BytesMut::new();
    messages::message(&mut fail, b'f', |m| {
        m.extend_from_slice(b"another shard refused the COPY\0")
    });
    for (i, (_, server)) in servers.iter_mut().enumerate() {
        if !copying[i] || broken[i] {
            continue;
        }
        let mut ignored = None;
        broken[i] = server.write_all(&fail).await.is_err()
            || !read_through(server, 0, &mut ignored, |_, _| false).await;
    }
    (Err(failure), broken)
}

/// Puts a piece of the data where it goes: a row to its shard, the header and end to all.
fn place(piece: Piece<'_>, routing: &pgcat_parser::PoolRouting, waiting: &mut [Vec<u8>]) {
    match piece {
        Piece::Row(key, row) => {
            let shard = pgcat_parser::shard_for_key(key, routing);
            if let Some(w) = waiting.get_mut(shard) {
                w.extend_from_slice(row);
            }
        }
        Piece::Header(bytes) | Piece::End(bytes) => {
            for w in waiting.iter_mut() {
                w.extend_from_slice(bytes);
            }
        }
    }
}

/// Sends each server its waiting rows, as one CopyData, once more than `over` bytes wait.
async fn flush(
    servers: &mut [(usize, Server)],
    waiting: &mut [Vec<u8>],
    over: usize,
) -> Result<(), ClientError> {
    for ((_, server), rows) in servers.iter_mut().zip(waiting.iter_mut()) {
        if rows.is_empty() || rows.len() < over {
            continue;
        }
        let mut message = BytesMut::with_capacity(rows.len() + 5);
        messages::message(&mut message, b'd', |m| m.extend_from_slice(rows));
        rows.clear();
        server.session().count_sent(message.len());
        if let Err(e) = server.write_all(&message).await {
            return Err(PgError::fatal("08006", format!("{e}; the COPY did not complete")).into());
        }
    }
    Ok(())
}

/// Ends every server's COPY (CopyDone, or CopyFail when `refused`): the rows copied or
/// the client's error, and the servers not to reuse.
async fn end_copy(
    servers: &mut [(usize, Server)],
    refused: Option<PgError>,
) -> (Result<u64, PgError>, Vec<bool>) {
    let mut end = BytesMut::new();
    match &refused {
        None => messages::message(&mut end, b'c', |_| {}),
        Some(e) => messages::message(&mut end, b'f', |m| {
            m.extend_from_slice(e.message.as_bytes());
            m.extend_from_slice(&[0]);
        }),
    }
    let mut failure = refused;
    let mut copied = 0u64;
    let mut broken = vec![false; servers.len()];
    for (i, (shard, server)) in servers.iter_mut().enumerate() {
        if let Err(e) = server.write_all(&end).await {
            broken[i] = true;
            failure.get_or_insert(crate::merge::on_shard(*shard, e.to_client()));
            continue;
        }
        let ended = read_through(server, *shard, &mut failure, |tag, body| {
            if tag == b'C' {
                let n = request::text(body).rsplit(' ').next();
                copied += n.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
            false
        });
        broken[i] = !ended.await;
    }
    (failure.map_or(Ok(copied), Err), broken)
}

/// Reads a server's messages up to its ReadyForQuery, or up to one `each` stops at (each
/// message but errors goes to `each`); its first ErrorResponse (or the reason it is lost)
/// becomes `failure` unless one is there. `false`: the server is lost.
async fn read_through(
    server: &mut Server,
    shard: usize,
    failure: &mut Option<PgError>,
    mut each: impl FnMut(u8, &[u8]) -> bool,
) -> bool {
    loop {
        match server.read_message().await {
            Ok((b'E', body)) => {
                failure.get_or_insert(crate::merge::on_shard(shard, PgError::from_fields(&body)));
            }
            Ok((b'Z', _)) => return true,
            Ok((tag, body)) => {
                if each(tag, &body) {
                    return true;
                }
            }
            Err(e) => {
                failure.get_or_insert(crate::merge::on_shard(shard, e.to_client()));
                return false;
            }
        }
    }
}

/// Gives the servers back, closing those marked `broken`.
async fn release(servers: Vec<(usize, Server)>, broken: &[bool], mode: crate::config::PoolMode) {
    for ((_, server), broken) in servers.into_iter().zip(broken) {
        if *broken {
            server.discard();
        } else {
            checkin(server, mode).await;
        }
    }
}

/// Closes servers whose state is unknown (a COPY cut short).
fn close_all(servers: Vec<(usize, Server)>) {
    for (_, server) in servers {
        server.discard();
    }
}
