//! PgCat's SQL extensions, answered by the pooler itself (`SET SHARD TO`,
//! `SET SHARDING KEY TO`, `SET SERVER ROLE TO`, `SET PRIMARY READS TO`, `SHOW SHARD` …) in
//! the simple protocol and as extended protocol statements: recognising them in the
//! client's buffer, applying them to the session's routing state, and writing the replies
//! PostgreSQL would send to any request the pooler answers (these, LISTEN, a statement
//! naming a prepared statement).

use bytes::{BufMut, BytesMut};
use pgcat_parser::{
    may_be_command, parse_command, Command, CommandError, SessionRouting, ShardSelector,
};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::Message;

use super::request::{check_shard, text};
use crate::pool::UserPool;
use crate::wire::frame::{self, FrameError, INSPECT_CAP};
use crate::wire::messages::{self, PgError};
use crate::wire::startup::cstr;

/// An SQL extension at the start of `buf`: the command, and whether it comes as an
/// extended batch (through its Sync) rather than a Query. The batch may Parse the
/// extension, or Bind/Describe a statement that is one (`named` gives the SQL of the
/// client's extension statements). `None`: not an extension (or not complete yet).
pub fn command_request<'a>(
    buf: &'a [u8],
    named: impl Fn(&str) -> Option<&'a str>,
) -> Option<(Result<Command, CommandError>, bool)> {
    let (tag, body, _) = frame::whole(buf, INSPECT_CAP).ok()??;
    let sql = match tag {
        b'Q' if may_be_command(body) => return parse_command(text(body)).map(|c| (c, false)),
        b'P' => {
            let sql = cstr(body).ok()?.1;
            if !may_be_command(sql) {
                return None;
            }
            text(sql)
        }
        b'B' => named(cstr(cstr(body).ok()?.1).ok()?.0)?,
        b'D' if body.first() == Some(&b'S') => named(cstr(&body[1..]).ok()?.0)?,
        _ => return None,
    };
    parse_command(sql).map(|c| (c, true))
}

/// Whether the buffer starts with a whole simple Query, or an unnamed Parse, that is none of
/// the requests the pooler may answer itself (an SQL extension, LISTEN, a statement naming
/// a prepared statement, a prepare of a known statement): its first word tells, so the
/// checks for each of them are skipped for ordinary queries (one header read and two byte
/// comparisons).
pub fn plain_query(buf: &[u8]) -> bool {
    simple_or_unnamed_sql(buf)
        .is_some_and(|(sql, _)| !may_be_command(sql) && !pgcat_parser::may_name(sql))
}

/// The SQL bytes (up to the message's end) of the whole Query, or the whole unnamed
/// Parse, at the start of the buffer, and whether it is a Parse.
pub fn simple_or_unnamed_sql(buf: &[u8]) -> Option<(&[u8], bool)> {
    match frame::whole(buf, INSPECT_CAP).ok()?? {
        (b'Q', body, _) => Some((body, false)),
        (b'P', [0, sql @ ..], _) => Some((sql, true)),
        _ => None,
    }
}

/// The named statements an extension batch prepares: (name, SQL).
pub fn parsed_names(buf: &[u8]) -> Vec<(String, String)> {
    let mut names = Vec::new();
    let mut pos = 0;
    while let Ok(Some((tag, body, total))) = frame::whole(&buf[pos..], INSPECT_CAP) {
        pos += total;
        if tag == b'P' {
            if let Ok((name, rest)) = cstr(body) {
                if !name.is_empty() {
                    names.push((name.to_string(), text(rest).to_string()));
                }
            }
        }
        if tag == b'S' {
            break;
        }
    }
    names
}

/// Applies an extension to the session, or says why not. `in_transaction`: the client is
/// inside a transaction block, where the target cannot change.
pub fn apply(
    command: &Result<Command, CommandError>,
    session: &mut SessionRouting,
    pool: &UserPool,
    in_transaction: bool,
) -> Result<Option<String>, PgError> {
    let command = command
        .as_ref()
        .map_err(|e| PgError::error("22023", e.message.clone()))?;
    let routing = &pool.router.routing;
    if let Some(shown) = session.show(command, routing) {
        return Ok(Some(shown));
    }
    if in_transaction {
        return Err(PgError::error(
            "25001",
            "cannot change the shard, sharding key, server role or primary reads inside a transaction",
        )
        .with_hint("Run it before BEGIN or after COMMIT."));
    }
    match command {
        Command::SetShard(ShardSelector::Number(n)) => check_shard(*n, pool)?,
        Command::SetShard(ShardSelector::All) => super::cross_shard::check_set_all(pool)?,
        _ => {}
    }
    session.apply(command, routing, rand::random());
    Ok(None)
}

/// Writes the replies to a request the pooler answers, spanning `buf[..]` up to its Sync
/// (extended) or its Query (simple): the result (`Ok(Some(value))`, a row in `column`, for
/// SHOW; `Ok(None)`, CommandComplete `done`, for SET, LISTEN …) or the error, then
/// ReadyForQuery with `status`. Returns the bytes consumed, `None` if the
/// extended batch is not complete yet.
pub fn answer(
    buf: &[u8],
    extended: bool,
    (column, done): (&str, &str),
    result: &Result<Option<String>, PgError>,
    status: u8,
    out: &mut BytesMut,
) -> Result<Option<usize>, FrameError> {
    let put_result = |out: &mut BytesMut| match result {
        Ok(Some(value)) => {
            let _ = DataRow::new(row_value(value), 1).encode(out);
            messages::command_complete(out, "SHOW");
        }
        Ok(None) => messages::command_complete(out, done),
        Err(e) => e.encode(out),
    };
    if !extended {
        let Some((_, _, total)) = frame::whole(buf, INSPECT_CAP)? else {
            return Ok(None);
        };
        if let Ok(Some(_)) = result {
            row_description(out, column);
        }
        put_result(out);
        messages::ready_for_query(out, status);
        return Ok(Some(total));
    }
    // Extended: find the Sync first so nothing is consumed half-way.
    let mut pos = 0;
    let mut end = None;
    while let Some((tag, _, total)) = frame::whole(&buf[pos..], INSPECT_CAP)? {
        pos += total;
        if tag == b'S' {
            end = Some(pos);
            break;
        }
    }
    let Some(end) = end else {
        return Ok(None);
    };
    let mut pos = 0;
    let mut failed = false;
    while pos < end {
        let Some((tag, body, total)) = frame::whole(&buf[pos..end], INSPECT_CAP)? else {
            break;
        };
        pos += total;
        if failed && tag != b'S' {
            continue;
        }
        match tag {
            b'P' => out.extend_from_slice(&[b'1', 0, 0, 0, 4]),
            b'B' => out.extend_from_slice(&[b'2', 0, 0, 0, 4]),
            b'C' => out.extend_from_slice(&[b'3', 0, 0, 0, 4]),
            b'D' => {
                if body.first() == Some(&b'S') {
                    out.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
                }
                match result {
                    Ok(Some(_)) => row_description(out, column),
                    _ => out.extend_from_slice(&[b'n', 0, 0, 0, 4]),
                }
            }
            b'E' => {
                put_result(out);
                failed = result.is_err();
            }
            b'S' => messages::ready_for_query(out, status),
            _ => {}
        }
    }
    Ok(Some(end))
}

fn row_value(value: &str) -> BytesMut {
    let mut data = BytesMut::with_capacity(value.len() + 4);
    data.put_i32(value.len() as i32);
    data.extend_from_slice(value.as_bytes());
    data
}

fn row_description(out: &mut BytesMut, column: &str) {
    let field = FieldDescription::new(column.to_string(), 0, 0, 25, -1, -1, 0);
    let _ = RowDescription::new(vec![field]).encode(out);
}

/// The column name PgCat gives a SHOW extension's one-row answer.
pub fn column_of(command: &Result<Command, CommandError>) -> &'static str {
    match command {
        Ok(Command::ShowServerRole) => "server role",
        Ok(Command::ShowPrimaryReads) => "primary reads",
        _ => "shard",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_extension_batch_gets_the_replies_postgres_would_send() {
        let mut buf = Vec::new();
        for (tag, body) in [
            (b'P', &b"\0SHOW SHARD\0\0\0"[..]),
            (b'B', &b"\0\0\0\0\0\0\0\0"[..]),
            (b'D', &b"P\0"[..]),
            (b'E', &b"\0\0\0\0\0"[..]),
            (b'S', &b""[..]),
        ] {
            buf.push(tag);
            buf.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            buf.extend_from_slice(body);
        }
        let mut out = BytesMut::new();
        let used = answer(
            &buf,
            true,
            ("shard", "SET"),
            &Ok(Some("unset".into())),
            b'I',
            &mut out,
        )
        .unwrap();
        assert_eq!(used, Some(buf.len()));
        let tags: Vec<u8> = {
            let mut t = Vec::new();
            let mut p = 0;
            while let Ok(Some((tag, _, total))) = frame::whole(&out[p..], 1 << 20) {
                t.push(tag);
                p += total;
            }
            t
        };
        assert_eq!(tags, b"12TDCZ".to_vec());
        assert_eq!(
            answer(
                &buf[..buf.len() - 5],
                true,
                ("shard", "SET"),
                &Ok(None),
                b'I',
                &mut out
            )
            .unwrap(),
            None
        );
    }
}
