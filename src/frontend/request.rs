//! Where a client's next transaction goes, and PgCat's SQL extensions answered by the
//! pooler itself (`SET SHARD TO`, `SET SHARDING KEY TO`, `SET SERVER ROLE TO`,
//! `SET PRIMARY READS TO`, `SHOW SHARD` …), in the simple protocol and as an extended
//! protocol statement. The decision itself is the parser crate's; this module finds the
//! request's SQL (the Query, or the Parse behind a batch's Bind and that Bind's
//! parameters), checks the shard, and writes the replies the pooler makes up.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgcat_parser::{
    bind_param_as_i64, may_be_command, parse_command, resolve_keys, route, Analysis, Command,
    CommandError, CrossShard, Role, Route, SessionRouting, ShardSelector,
};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::Message;

use crate::pool::UserPool;
use crate::wire::frame::{self, FrameError, INSPECT_CAP};
use crate::wire::messages::{self, PgError};
use crate::wire::startup::cstr;

/// The first request in a client's buffer, as far as routing is concerned.
pub enum Request<'a> {
    /// A simple Query.
    Query(&'a str),
    /// An extended batch: the SQL of the statement its first Bind (or Describe/Sync)
    /// uses, when known, that Bind's body, and where the Parse that carries the SQL starts
    /// when it is in this batch (not a statement prepared earlier).
    Extended {
        sql: Option<&'a str>,
        bind: Option<&'a [u8]>,
        parse_at: Option<usize>,
    },
    /// Something else (FunctionCall, a Query too large to inspect): default route.
    Opaque,
}

/// The parser's analysis of the text of the message that starts at `at` in the client's
/// buffer: the Query routed, or the Parse of the statement an extended batch runs. It has
/// that text's session effects, so they need no second lookup when the message is relayed.
#[derive(Debug)]
pub struct Routed {
    pub analysis: Arc<Analysis>,
    pub at: usize,
}

/// Reads the first request from `buf`; `None` when more bytes are needed. `named` finds
/// the SQL of a client's named statement.
impl<'a> Request<'a> {
    /// The statement's text, when the pooler has it.
    pub fn sql(&self) -> Option<&'a str> {
        match *self {
            Request::Query(sql) => Some(sql),
            Request::Extended { sql, .. } => sql,
            Request::Opaque => None,
        }
    }
}

pub fn first_request<'a>(
    buf: &'a [u8],
    cap: usize,
    named: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<Request<'a>>, FrameError> {
    let mut pos = 0;
    // Statements parsed earlier in this batch: (name, SQL, where its Parse starts); usually
    // one, kept inline.
    let mut parsed: smallvec::SmallVec<[(&str, &str, usize); 2]> = smallvec::SmallVec::new();
    let lookup = |parsed: &[(&'a str, &'a str, usize)], name: &str| {
        parsed
            .iter()
            .rev()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, sql, at)| (Some(sql), Some(at)))
            .unwrap_or_else(|| (if name.is_empty() { None } else { named(name) }, None))
    };
    loop {
        let Some((tag, len)) = frame::header(&buf[pos..])? else {
            return Ok(None);
        };
        if len - 4 > cap {
            return Ok(Some(Request::Opaque));
        }
        let Some((_, body, total)) = frame::whole(&buf[pos..], cap)? else {
            return Ok(None);
        };
        match tag {
            b'Q' if pos == 0 => return Ok(Some(Request::Query(text(body)))),
            b'P' => {
                if let Ok((name, rest)) = cstr(body) {
                    parsed.push((name, text(rest), pos));
                }
            }
            b'B' => {
                let (sql, parse_at) = cstr(body)
                    .and_then(|(_, rest)| cstr(rest))
                    .map_or((None, None), |(stmt, _)| lookup(&parsed, stmt));
                return Ok(Some(Request::Extended {
                    sql,
                    bind: Some(body),
                    parse_at,
                }));
            }
            b'D' | b'E' | b'S' | b'H' | b'C' => {
                let (sql, parse_at) = if tag == b'D' && body.first() == Some(&b'S') {
                    cstr(&body[1..]).map_or((None, None), |(n, _)| lookup(&parsed, n))
                } else {
                    parsed
                        .last()
                        .map_or((None, None), |&(_, sql, at)| (Some(sql), Some(at)))
                };
                return Ok(Some(Request::Extended {
                    sql,
                    bind: None,
                    parse_at,
                }));
            }
            _ => return Ok(Some(Request::Opaque)),
        }
        pos += total;
    }
}

/// The text of a query string (up to its NUL); invalid UTF-8 routes like unparsable SQL.
pub fn text(body: &[u8]) -> &str {
    let end = memchr::memchr(0, body).unwrap_or(body.len());
    std::str::from_utf8(&body[..end]).unwrap_or("\u{FFFD}")
}

/// Decides the route of a request for a client with `session` routing state; with the
/// parser's analysis of a Query's text, when it was analysed (its session effects need not
/// be looked up again).
/// Where a request goes.
pub struct Decision {
    pub route: Route,
    /// The parser's analysis of the text, when it made one.
    pub routed: Option<Routed>,
    /// The statement reads the application's tables with no shard selected, in a pool
    /// that runs such statements on every shard: `route.shard` is `None`.
    pub all_shards: bool,
}

pub fn decide(
    request: &Request<'_>,
    session: &SessionRouting,
    pool: &UserPool,
) -> Result<Decision, PgError> {
    let router = &pool.router;
    let (sql, bind, at) = match *request {
        Request::Query(sql) => (Some(sql), None, Some(0)),
        Request::Extended {
            sql,
            bind,
            parse_at,
        } => (sql, bind, parse_at),
        Request::Opaque => (None, None, None),
    };
    let Some(sql) = sql else {
        // Unknown text (a FunctionCall, a query too large to read, a Bind of an unnamed
        // statement parsed in an earlier batch): no shard can be picked for it.
        let runs = matches!(
            request,
            Request::Opaque | Request::Extended { bind: Some(_), .. }
        );
        if super::cross_shard::decides(session, pool) && runs {
            return Err(super::cross_shard::opaque());
        }
        let routed = route(&Default::default(), &[], None, session, &router.routing);
        return Ok(Decision {
            route: routed,
            routed: None,
            all_shards: false,
        });
    };
    let hint = router.hints.find(sql);
    let parsing = session.parser_enabled(&router.routing)
        && (router.routing.read_write_splitting || router.routing.automatic_key.is_some());
    let mut analysed = parsing.then(|| router.analyze(sql));
    let default_analysis = Default::default();
    let analysis = analysed.as_deref().unwrap_or(&default_analysis);
    let keys =
        resolve_keys(&analysis.keys, |i| bind.and_then(|b| bind_param(b, i))).unwrap_or_default();
    let mut routed = route(
        &analysis.classification,
        &keys,
        hint,
        session,
        &router.routing,
    );
    // db_activity_based_routing: a read of a table written lately, or any read while the
    // database warms up after an idle spell, goes to the primary.
    if let (Some(activity), Some(analysis)) = (&pool.activity, analysed.as_deref()) {
        let c = &analysis.classification;
        if c.parsed
            && routed.role != Some(Role::Primary)
            && session.parser_decides(&router.routing)
            && activity.read_needs_primary(&analysis.tables, false)
        {
            routed.role = Some(Role::Primary);
        } else if c.write {
            activity.read_needs_primary(&analysis.tables, true);
        }
    }
    let mut all_shards = false;
    let decides = super::cross_shard::decides(session, pool);
    // Several statements, not every one naming its key: the keys of some do not pick the
    // shard of all (a key of its own, the session's shard or a hint still do).
    let chosen = session.shard.or(session.sharding_key_shard).is_some() || hint.is_some();
    let keys_for_all = chosen || !decides || analysed.as_deref().is_none_or(keys_pick_shard);
    if let Some(shard) = routed.shard.filter(|_| keys_for_all) {
        check_shard(shard, pool)?;
    } else if decides {
        let analysis = analysed.get_or_insert_with(|| router.analyze(sql));
        let describe_only = matches!(request, Request::Extended { bind: None, .. });
        all_shards = super::cross_shard::place(analysis, session, pool, describe_only)?;
        if !all_shards {
            routed.shard = Some(0);
        }
    } else if keys.len() > 1 {
        let mut shards: Vec<usize> = keys
            .iter()
            .map(|k| pgcat_parser::shard_for_key(*k, &router.routing))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        if shards.len() > 1 {
            let list = shards
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PgError::error(
                "0A000",
                format!("the query's sharding keys are on shards {list}: cross-shard queries are not supported"),
            )
            .with_hint("Query one shard at a time (one sharding key, or SET SHARD TO)."));
        }
    }
    // A statement on every shard keeps its analysis (the merge follows it) wherever its
    // text was parsed.
    let at = at.or(all_shards.then_some(0));
    let analysed = analysed
        .zip(at)
        .map(|(analysis, at)| Routed { analysis, at });
    Ok(Decision {
        route: routed,
        routed: analysed,
        all_shards,
    })
}

/// Whether the keys found in a query string pick the shard of the whole string: not when
/// it has several statements of which some read the application's tables without a key.
fn keys_pick_shard(analysis: &Analysis) -> bool {
    analysis.classification.statement_count < 2
        || matches!(
            analysis.cross_shard,
            CrossShard::AnyShard | CrossShard::Control | CrossShard::Several { keyed: true, .. }
        )
}

fn check_shard(shard: usize, pool: &UserPool) -> Result<(), PgError> {
    let n = pool.shards.len();
    if shard >= n {
        return Err(PgError::error(
            "22023",
            format!(
                "shard {shard} is not configured: pool \"{}\" has shards 0 to {}",
                pool.pool_name,
                n - 1
            ),
        ));
    }
    Ok(())
}

/// Parameter `i` (1-based) of a Bind body as a bigint, if it is one.
pub fn bind_param(body: &[u8], i: usize) -> Option<i64> {
    let (_, rest) = cstr(body).ok()?;
    let (_, rest) = cstr(rest).ok()?;
    let params = crate::wire::bind::BindParams::read(rest)?;
    let value = params.value(i.checked_sub(1)?)??;
    bind_param_as_i64(value, params.binary(i - 1))
}

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

    fn bind(params: &[(&[u8], i16)]) -> Vec<u8> {
        let mut b = b"\0stmt\0".to_vec();
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for (_, f) in params {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for (v, _) in params {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v);
        }
        b.extend_from_slice(&[0, 0]);
        b
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Where the Parse that carries a batch's SQL starts: the router's analysis of that
    /// text stands for the Parse at that offset only.
    #[test]
    fn a_batch_names_the_parse_its_sql_came_from() {
        let parse =
            |name: &str, sql: &str| message(b'P', format!("{name}\0{sql}\0\0\0").as_bytes());
        let bind = |stmt: &str| message(b'B', format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes());
        let first = parse("a", "SELECT 1");
        let mut buf = first.clone();
        buf.extend(parse("b", "SET x = 1"));
        buf.extend(bind("b"));
        let request = first_request(&buf, 1024, |_| None)
            .expect("frames")
            .expect("whole");
        let Request::Extended { sql, parse_at, .. } = request else {
            panic!("an extended batch")
        };
        assert_eq!((sql, parse_at), (Some("SET x = 1"), Some(first.len())));

        // A statement prepared in an earlier batch: its SQL is known, no Parse here.
        let buf = bind("old");
        let request = first_request(&buf, 1024, |n| (n == "old").then_some("SELECT 2"))
            .expect("frames")
            .expect("whole");
        let Request::Extended { sql, parse_at, .. } = request else {
            panic!("an extended batch")
        };
        assert_eq!((sql, parse_at), (Some("SELECT 2"), None));

        // Describe and Sync: the batch's last Parse.
        let mut buf = parse("", "SELECT 3");
        buf.extend(message(b'S', b""));
        let request = first_request(&buf, 1024, |_| None)
            .expect("frames")
            .expect("whole");
        let Request::Extended { sql, parse_at, .. } = request else {
            panic!("an extended batch")
        };
        assert_eq!((sql, parse_at), (Some("SELECT 3"), Some(0)));
    }

    #[test]
    fn bind_parameters_are_read_in_text_and_binary() {
        let b = bind(&[
            (b"42", 0),
            (&7i64.to_be_bytes(), 1),
            (&(-3i32).to_be_bytes(), 1),
        ]);
        assert_eq!(bind_param(&b, 1), Some(42));
        assert_eq!(bind_param(&b, 2), Some(7));
        assert_eq!(bind_param(&b, 3), Some(-3));
        assert_eq!(bind_param(&b, 4), None);
        assert_eq!(
            bind_param(&b[..8], 1),
            None,
            "truncated input is not an error"
        );
    }

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
