//! An extended-protocol batch (Parse, Bind, Describe, Execute, Sync) run on every shard:
//! read from the client's buffer and rewritten into the batch each shard gets, an unnamed
//! statement and portal (the client's names live in the pooler, not on those servers).
//! Pure, so unit tests drive it byte for byte.

use bytes::BytesMut;

use crate::wire::frame::{self, FrameError};
use crate::wire::messages::{self, PgError};
use crate::wire::startup::cstr;

/// A client's batch, ready to run on every shard.
#[derive(Debug)]
pub(super) struct Batch {
    /// Its bytes in the client's buffer, up to and including the Sync.
    pub(super) len: usize,
    /// The client's Parse, when the batch has one: its body (name included), to remember
    /// a named statement.
    pub(super) parse: Option<Vec<u8>>,
    /// The client asked for the portal's description.
    pub(super) describe: bool,
    /// What each shard gets: Parse, Bind, Describe (always: the merge needs the columns),
    /// Execute, Sync, all unnamed.
    pub(super) shard_messages: BytesMut,
    /// The statement as parsed (the Parse body after the name: query, parameter types)
    /// and bound (the Bind body after the portal and statement names): what a statement
    /// split by shard is rebuilt from.
    pub(super) parts: (Vec<u8>, Vec<u8>),
}

/// What the client's buffer holds.
#[derive(Debug)]
pub(super) enum Read {
    /// Not the whole batch yet.
    Incomplete,
    Batch(Batch),
    /// A batch this cannot run on every shard.
    Refused(PgError),
}

/// Reads the batch at the start of `buf`; `statement` gives the Parse body (after the name)
/// of a statement the client prepared earlier.
pub(super) fn read<'a>(
    buf: &'a [u8],
    cap: usize,
    statement: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Read, FrameError> {
    let refuse = |what: &str| {
        Ok(Read::Refused(PgError::error(
            "0A000",
            format!("cannot run {what} on every shard: not supported yet"),
        )))
    };
    let mut pos = 0;
    // The client's Parse: its whole body, and its name.
    let mut parse: Option<(&[u8], &str)> = None;
    // What the shards parse (query, parameter types) and the Bind after the statement name.
    let mut bound: Option<(&[u8], &[u8])> = None;
    let mut describe = false;
    let mut executed = false;
    loop {
        let Some((tag, body, total)) = frame::whole(&buf[pos..], cap)? else {
            return Ok(Read::Incomplete);
        };
        pos += total;
        match tag {
            b'P' if parse.is_none() && bound.is_none() => match cstr(body) {
                Ok((name, _)) => parse = Some((body, name)),
                Err(_) => return refuse("a malformed Parse"),
            },
            b'B' if bound.is_none() => {
                let Ok((name, rest)) = cstr(body).and_then(|(_, rest)| cstr(rest)) else {
                    return refuse("a malformed Bind");
                };
                let text = match parse {
                    Some((body, parsed)) if parsed == name => cstr(body).ok().map(|(_, r)| r),
                    _ if name.is_empty() => None,
                    _ => statement(name),
                };
                let Some(text) = text else {
                    return refuse("a statement prepared on another server");
                };
                bound = Some((text, rest));
            }
            b'D' if bound.is_some() && !executed && body.first() == Some(&b'P') => {
                describe = true;
            }
            b'E' if bound.is_some() && !executed => {
                let max_rows = cstr(body).ok().and_then(|(_, rest)| rest.get(..4));
                if max_rows != Some(&[0, 0, 0, 0][..]) {
                    return refuse("an Execute with a row limit (portal suspension)");
                }
                executed = true;
            }
            b'S' if executed => break,
            _ => return refuse("a pipeline of several statements (one Bind and Execute per Sync)"),
        }
    }
    let Some((text, bind_rest)) = bound else {
        return refuse("this batch");
    };
    Ok(Read::Batch(Batch {
        len: pos,
        parse: parse.map(|(body, _)| body.to_vec()),
        describe,
        shard_messages: unnamed(text, bind_rest),
        parts: (text.to_vec(), bind_rest.to_vec()),
    }))
}

/// The batch a shard gets for the pooler's own `text` in place of the client's statement
/// (parsed as `parse`, the Parse body after the name, and bound with `bind`, the Bind
/// body after the names), whose `$k` is the client's parameter `params[k - 1]`: those
/// parameters' declared types, values and formats. `None` when the messages are malformed.
pub(super) fn rewritten(
    parse: &[u8],
    bind: &[u8],
    text: &str,
    params: &[usize],
) -> Option<BytesMut> {
    let types = declared_types(parse)?;
    let mut body = text.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        let oid = types.get(p.checked_sub(1)?).copied().unwrap_or(0);
        body.extend_from_slice(&oid.to_be_bytes());
    }
    let bind = crate::wire::bind::BindParams::read(bind)?.subset(params)?;
    Some(unnamed(&body, &bind))
}

/// The parameter types a Parse body (after the name) declares, 0 for one left to the
/// server; `None` when the body is malformed.
pub(super) fn declared_types(parse: &[u8]) -> Option<Vec<u32>> {
    let (_, declared) = cstr(parse).ok()?;
    let count = u16::from_be_bytes(declared.get(..2)?.try_into().ok()?) as usize;
    (0..count)
        .map(|i| {
            let at = 2 + 4 * i;
            Some(u32::from_be_bytes(
                declared.get(at..at + 4)?.try_into().ok()?,
            ))
        })
        .collect()
}

/// The batch a shard gets for a statement parsed as `text` (the Parse body after the name)
/// and bound with `bind_rest` (the Bind body after the names): Parse, Bind, Describe of the
/// portal (the merge needs the columns), Execute, Sync, all unnamed.
pub(super) fn unnamed(text: &[u8], bind_rest: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(text.len() + bind_rest.len() + 64);
    messages::parse(&mut out, "", text);
    messages::bind(&mut out, "", "", bind_rest);
    messages::message(&mut out, b'D', |m| m.extend_from_slice(b"P\0"));
    messages::message(&mut out, b'E', |m| m.extend_from_slice(&[0, 0, 0, 0, 0]));
    messages::message(&mut out, b'S', |_| {});
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(parts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for (tag, body) in parts {
            messages::message(&mut out, *tag, |m| m.extend_from_slice(body));
        }
        out.to_vec()
    }

    const BIND_REST: &[u8] = b"\0\0\0\x01\0\0\0\x011\0\0"; // one text parameter "1"

    #[test]
    fn a_named_parse_bind_describe_execute_becomes_unnamed_for_the_shards() {
        let parse = b"s1\0SELECT id FROM t WHERE grp = $1\0\0\x01\0\0\0\x17";
        let mut bind = b"p\0s1\0".to_vec();
        bind.extend_from_slice(BIND_REST);
        let buf = framed(&[
            (b'P', parse),
            (b'B', &bind),
            (b'D', b"Pp\0"),
            (b'E', b"p\0\0\0\0\0"),
            (b'S', b""),
            (b'Q', b"SELECT 1\0"),
        ]);
        let Read::Batch(batch) = read(&buf, 1 << 16, |_| None).expect("frames") else {
            panic!("not a batch");
        };
        assert_eq!(batch.len, buf.len() - 14, "up to the Sync");
        assert_eq!(batch.parse.as_deref(), Some(&parse[..]));
        assert!(batch.describe);
        let mut unnamed_bind = b"\0\0".to_vec();
        unnamed_bind.extend_from_slice(BIND_REST);
        let want = framed(&[
            (b'P', b"\0SELECT id FROM t WHERE grp = $1\0\0\x01\0\0\0\x17"),
            (b'B', &unnamed_bind),
            (b'D', b"P\0"),
            (b'E', b"\0\0\0\0\0"),
            (b'S', b""),
        ]);
        assert_eq!(batch.shard_messages.to_vec(), want);
    }

    #[test]
    fn a_statement_prepared_earlier_is_parsed_again_and_the_rest_refused() {
        let mut bind = b"\0old\0".to_vec();
        bind.extend_from_slice(BIND_REST);
        let buf = framed(&[(b'B', &bind), (b'E', b"\0\0\0\0\0"), (b'S', b"")]);
        let body: &[u8] = b"SELECT 2\0\0\0";
        let Read::Batch(batch) =
            read(&buf, 1 << 16, |name| (name == "old").then_some(body)).expect("frames")
        else {
            panic!("not a batch");
        };
        assert!(batch.parse.is_none() && !batch.describe);
        assert!(batch
            .shard_messages
            .starts_with(&framed(&[(b'P', b"\0SELECT 2\0\0\0")])));
        // Not whole yet.
        let known = |name: &str| (name == "old").then_some(body);
        assert!(matches!(
            read(&buf[..buf.len() - 2], 1 << 16, known),
            Ok(Read::Incomplete)
        ));
        for parts in [
            // unknown statement
            vec![
                (b'B', &bind[..]),
                (b'E', &b"\0\0\0\0\0"[..]),
                (b'S', &b""[..]),
            ],
            // a row limit
            vec![
                (b'P', &b"\0SELECT 1\0\0\0"[..]),
                (b'B', &b"\0\0\0\0\0\0\0\0"[..]),
                (b'E', &b"\0\0\0\0\x05"[..]),
                (b'S', &b""[..]),
            ],
            // two statements before the Sync
            vec![
                (b'P', &b"\0SELECT 1\0\0\0"[..]),
                (b'B', &b"\0\0\0\0\0\0\0\0"[..]),
                (b'E', &b"\0\0\0\0\0"[..]),
                (b'B', &b"\0\0\0\0\0\0\0\0"[..]),
                (b'S', &b""[..]),
            ],
        ] {
            let buf = framed(&parts);
            assert!(
                matches!(read(&buf, 1 << 16, |_| None), Ok(Read::Refused(_))),
                "{parts:?}"
            );
        }
    }
}
