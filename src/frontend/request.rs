//! Where a client's next transaction goes. The decision itself is the parser crate's; this
//! module finds the request's SQL (the Query, or the Parse behind a batch's Bind and that
//! Bind's parameters), adds the session's routing state, hints and recent writes, and
//! checks the shard. The requests the pooler answers itself are `extension`'s.

use std::sync::Arc;

use pgcat_parser::{
    bind_param_as_i64, resolve_keys, route, Analysis, CrossShard, Role, Route, SessionRouting,
};

use crate::pool::router::AnalysisMemo;
use crate::pool::UserPool;
use crate::wire::frame::{self, FrameError};
use crate::wire::messages::PgError;
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
        /// Where the analysis of a statement prepared earlier is kept.
        memo: Option<&'a AnalysisMemo>,
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

/// Where an extended batch's SQL comes from: a Parse in the batch (`parse_at`), or a
/// statement the client prepared earlier (`memo`).
#[derive(Default, Clone, Copy)]
struct Source<'a> {
    sql: Option<&'a str>,
    parse_at: Option<usize>,
    memo: Option<&'a AnalysisMemo>,
}

impl<'a> Source<'a> {
    fn request(self, bind: Option<&'a [u8]>) -> Request<'a> {
        Request::Extended {
            sql: self.sql,
            bind,
            parse_at: self.parse_at,
            memo: self.memo,
        }
    }
}

/// Reads the first request from `buf`; `None` when more bytes are needed. `named` finds
/// the SQL of a client's named statement, and where its analysis is kept.
pub fn first_request<'a>(
    buf: &'a [u8],
    cap: usize,
    named: impl Fn(&str) -> Option<(&'a str, &'a AnalysisMemo)>,
) -> Result<Option<Request<'a>>, FrameError> {
    let mut pos = 0;
    // Statements parsed earlier in this batch: (name, SQL, where its Parse starts); usually
    // one, kept inline.
    let mut parsed: smallvec::SmallVec<[(&str, &str, usize); 2]> = smallvec::SmallVec::new();
    let in_batch = |&(_, sql, at): &(&'a str, &'a str, usize)| Source {
        sql: Some(sql),
        parse_at: Some(at),
        memo: None,
    };
    let lookup = |parsed: &[(&'a str, &'a str, usize)], name: &str| {
        if let Some(p) = parsed.iter().rev().find(|(n, _, _)| *n == name) {
            return in_batch(p);
        }
        match Some(name).filter(|n| !n.is_empty()).and_then(&named) {
            Some((sql, memo)) => Source {
                sql: Some(sql),
                parse_at: None,
                memo: Some(memo),
            },
            None => Source::default(),
        }
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
                let source = cstr(body)
                    .and_then(|(_, rest)| cstr(rest))
                    .map_or_else(|_| Source::default(), |(stmt, _)| lookup(&parsed, stmt));
                return Ok(Some(source.request(Some(body))));
            }
            b'D' | b'E' | b'S' | b'H' | b'C' => {
                let source = if tag == b'D' && body.first() == Some(&b'S') {
                    cstr(&body[1..]).map_or_else(|_| Source::default(), |(n, _)| lookup(&parsed, n))
                } else {
                    parsed.last().map_or_else(Source::default, in_batch)
                };
                return Ok(Some(source.request(None)));
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

/// Where a request goes.
pub struct Decision {
    pub route: Route,
    /// The parser's analysis of the text, when it made one.
    pub routed: Option<Routed>,
    /// The statement reads the application's tables with no shard selected, in a pool
    /// that runs such statements on every shard: `route.shard` is `None`.
    pub all_shards: bool,
}

/// Decides the route of a request for a client with `session` routing state; with the
/// parser's analysis of a Query's text, when it was analysed (its session effects need not
/// be looked up again).
pub fn decide(
    request: &Request<'_>,
    session: &SessionRouting,
    pool: &UserPool,
) -> Result<Decision, PgError> {
    let router = &pool.router;
    let (sql, bind, at, memo) = match *request {
        Request::Query(sql) => (Some(sql), None, Some(0), None),
        Request::Extended {
            sql,
            bind,
            parse_at,
            memo,
        } => (sql, bind, parse_at, memo),
        Request::Opaque => (None, None, None, None),
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
    let mut analysed = parsing.then(|| router.analyze_once(sql, memo));
    // Not analysed: routed as unparsed (built once, not per request).
    static UNPARSED: std::sync::LazyLock<Analysis> = std::sync::LazyLock::new(Analysis::default);
    let analysis = analysed.as_deref().unwrap_or(&UNPARSED);
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
        let analysis = analysed.get_or_insert_with(|| router.analyze_once(sql, memo));
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

pub(super) fn check_shard(shard: usize, pool: &UserPool) -> Result<(), PgError> {
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
        let memo = AnalysisMemo::default();
        let request = first_request(&buf, 1024, |n| (n == "old").then_some(("SELECT 2", &memo)))
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
}
