//! Statements with no shard selected, in a pool that does not send them to a default shard
//! (`default_shard = "all"` or `"error"`, or after `SET SHARD TO ALL`): what reads none of
//! the application's tables goes to shard 0 (any shard answers it the same); the rest runs
//! on every shard, or is refused with an error that says why and how to pick a shard. The
//! parser says what a statement needs (`pgcat_parser::CrossShard`); running it is the
//! relay's (`relay::fanout`).

use pgcat_parser::{Analysis, CrossShard, SessionRouting};

use super::request::Request;
use crate::config::{DefaultShard, PoolMode};
use crate::pool::UserPool;
use crate::wire::messages::PgError;

/// Whether statements with no shard are this module's to place, for a client with
/// `session` routing in `pool`.
pub fn decides(session: &SessionRouting, pool: &UserPool) -> bool {
    pool.shards.len() > 1
        && (session.all_shards
            || matches!(pool.default_shard, DefaultShard::All | DefaultShard::Error))
}

/// Places a statement with no shard: `Ok(true)` runs it on every shard, `Ok(false)` on
/// shard 0 (it reads no table of the application's, or `describe_only`: an extended batch
/// that prepares or describes it without running it, which any shard answers the same);
/// refused otherwise.
pub fn place(
    analysis: &Analysis,
    session: &SessionRouting,
    pool: &UserPool,
    describe_only: bool,
) -> Result<bool, PgError> {
    let all = session.all_shards || pool.default_shard == DefaultShard::All;
    let plan = &analysis.cross_shard;
    if matches!(plan, CrossShard::AnyShard | CrossShard::Control)
        || (describe_only && runs_everywhere(plan))
    {
        return Ok(false);
    }
    // Several statements each naming its key run each on its shard, in either mode.
    if !all && !matches!(plan, CrossShard::Several { keyed: true, .. }) {
        return Err(no_shard(pool));
    }
    match plan {
        CrossShard::Refused(what) => Err(not_yet(what)),
        CrossShard::Unknown => Err(PgError::error(
            "0A000",
            "the statement names no shard and the query parser could not read it, so it \
             cannot run on every shard",
        )
        .with_hint(HOW)),
        CrossShard::Concat { .. }
        | CrossShard::Aggregate { .. }
        | CrossShard::Grouped { .. }
        | CrossShard::Write
        | CrossShard::Schema
        | CrossShard::Insert
        | CrossShard::CopyIn { .. }
        | CrossShard::CopyOut { .. }
        | CrossShard::Several { .. } => Ok(true),
        CrossShard::AnyShard | CrossShard::Control => Ok(false),
    }
}

/// Whether a statement with this plan runs on every shard (when it is to run).
pub fn runs_everywhere(plan: &CrossShard) -> bool {
    matches!(
        plan,
        CrossShard::Concat { .. }
            | CrossShard::Aggregate { .. }
            | CrossShard::Grouped { .. }
            | CrossShard::Write
            | CrossShard::Schema
            | CrossShard::Insert
            | CrossShard::CopyIn { .. }
            | CrossShard::CopyOut { .. }
            | CrossShard::Several { .. }
    )
}

/// A request whose text the pooler does not have (a FunctionCall, a query too large to
/// inspect, a Bind of an unnamed statement parsed in an earlier batch) with no shard
/// selected.
pub fn opaque() -> PgError {
    PgError::error(
        "0A000",
        "the request names no shard and the pooler cannot read its statement (a function \
         call, a query too large to inspect, or an unnamed statement parsed in an earlier \
         batch: send Parse with Bind, or name the statement)",
    )
    .with_hint(HOW)
}

/// `SET SHARD TO ALL` needs a pool that decides per statement.
pub fn check_set_all(pool: &UserPool) -> Result<(), PgError> {
    if pool.mode == PoolMode::Session {
        return Err(PgError::error(
            "0A000",
            "SET SHARD TO ALL needs pool_mode = \"transaction\": a session-mode client keeps one server",
        ));
    }
    Ok(())
}

/// For a statement relayed to the one server a client holds (inside a transaction
/// block, or pipelined behind another statement), on shard `held` (if known): the error
/// it gets instead, when it would need every shard or another shard than `held`. `bind`:
/// it is a Bind of a statement with this text (a key among its parameters is read from
/// the Bind's body); else a Query's text.
pub fn refused_on_held(
    sql: &str,
    session: &SessionRouting,
    pool: &UserPool,
    bind: Option<&[u8]>,
    held: Option<usize>,
) -> Option<PgError> {
    let request = match bind {
        // It is to run (a Bind follows): not merely described.
        Some(body) => Request::Extended {
            sql: Some(sql),
            bind: Some(body),
            parse_at: None,
            memo: None,
        },
        None => Request::Query(sql),
    };
    match super::request::decide(&request, session, pool) {
        Err(e) => Some(e),
        Ok(d) if d.all_shards => Some(in_transaction()),
        // What reads no table of the application's runs on any shard.
        Ok(_)
            if matches!(
                pool.router.analyze(sql).cross_shard,
                CrossShard::AnyShard | CrossShard::Control
            ) =>
        {
            None
        }
        Ok(d) => match (d.route.shard, held) {
            (Some(wanted), Some(held)) if wanted != held => Some(
                PgError::error(
                    "0A000",
                    format!(
                        "the statement's sharding key is on shard {wanted}, but it runs on the \
                     server of shard {held} that the client holds (inside a transaction, or \
                     pipelined behind another statement before Sync): not supported yet"
                    ),
                )
                .with_hint(
                    "Send statements for other shards in their own transaction, or after Sync.",
                ),
            ),
            _ => None,
        },
    }
}

/// SQL that fails with `error` on the server (which then ends the client's transaction
/// block as PostgreSQL's own errors do, and answers in the protocol's order).
pub fn raise_sql(error: &PgError) -> String {
    let quote = |s: &str| s.replace('\'', "''").replace("$pgcat$", "");
    format!(
        "DO $pgcat$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{}', HINT = '{}'; END$pgcat$",
        quote(&error.code),
        quote(&error.message),
        quote(error.hint.as_deref().unwrap_or_default()),
    )
}

/// A statement calling an aggregate, refused until aggregates are merged.
pub fn aggregate(name: &str) -> PgError {
    not_yet(&format!("the aggregate function {name}()"))
}

/// A statement on every shard inside a transaction block, refused for now.
pub fn in_transaction() -> PgError {
    not_yet(
        "statements on every shard inside a transaction block (BEGIN … COMMIT) or pipelined \
         behind another statement",
    )
}

const HOW: &str = "Pick a shard with SET SHARD TO n, SET SHARDING KEY TO k, a /* shard_id: n */ \
                   comment or the sharding key in the WHERE clause.";

fn no_shard(pool: &UserPool) -> PgError {
    PgError::error(
        "0A000",
        format!(
            "the statement names no shard and pool \"{}\" refuses to guess one (default_shard = \"error\")",
            pool.pool_name
        ),
    )
    .with_hint(HOW)
}

fn not_yet(what: &str) -> PgError {
    PgError::error(
        "0A000",
        format!("cannot run {what} on every shard: not supported yet"),
    )
    .with_hint(HOW)
}
