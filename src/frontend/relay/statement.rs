//! One statement for the shards: read from the client's buffer (a Query, or an extended
//! batch made unnamed), what each shard gets of it (the same messages; an INSERT's rows
//! each to its shard; a statement with OFFSET rewritten to a larger LIMIT), and the merge
//! its answers go through, with LIMIT and OFFSET resolved from literals or the Bind.

use super::batch;
use super::*;
use crate::merge::{GroupPlan, Merge, Plan};
use crate::wire::bind::BindParams;
use pgcat_parser::cross_shard::{Aggregate, Count, ShardSql};
use pgcat_parser::CrossShard;

/// One statement ready for the shards.
pub(super) struct ShardStatement {
    /// What each shard gets: the client's Query, or its extended batch made unnamed.
    messages: BytesMut,
    /// The client's bytes it came in.
    len: usize,
    /// An extended batch: the client's Parse (to remember a named statement) and whether
    /// it asked for the portal's description.
    extended: Option<(Option<Vec<u8>>, bool)>,
    /// An extended batch's statement as parsed and bound (see `batch::Batch::parts`).
    parts: Option<(Vec<u8>, Vec<u8>)>,
}

impl ShardStatement {
    /// Per shard (ascending) what it gets: every one of the pool's `shards` the same
    /// messages, or, for an INSERT split by key (`plan`), each shard its rows.
    pub(super) fn targets(
        &self,
        plan: &pgcat_parser::CrossShard,
        keys: &[pgcat_parser::KeyValue],
        routing: &pgcat_parser::PoolRouting,
        shards: impl Iterator<Item = usize>,
    ) -> Result<Vec<(usize, BytesMut)>, PgError> {
        match plan {
            CrossShard::Insert => {
                let sql = match &self.parts {
                    Some((parse, _)) => request::text(parse),
                    None => request::text(self.messages.get(5..).unwrap_or_default()),
                };
                super::insert::split(sql, keys, routing, self.parts.as_ref())
            }
            CrossShard::Concat {
                shard_sql: Some(sql),
                ..
            }
            | CrossShard::CopyOut {
                shard_sql: Some(sql),
                ..
            }
            | CrossShard::Grouped { shard_sql: sql, .. } => {
                let messages = self.with_text(sql)?;
                Ok(shards.map(|s| (s, messages.clone())).collect())
            }
            _ => Ok(shards.map(|s| (s, self.messages.clone())).collect()),
        }
    }

    /// The Bind's parameters: each value (`None`: NULL), whether it is binary, and the
    /// type the Parse declared for it (0: none).
    fn params(&self) -> Vec<Option<(Vec<u8>, bool, u32)>> {
        let Some((parse, bind)) = &self.parts else {
            return Vec::new();
        };
        let Some(bind) = BindParams::read(bind) else {
            return Vec::new();
        };
        let types = batch::declared_types(parse).unwrap_or_default();
        (0..)
            .map_while(|i| {
                let declared = types.get(i).copied().unwrap_or(0);
                bind.value(i)
                    .map(|v| v.map(|v| (v.to_vec(), bind.binary(i), declared)))
            })
            .collect()
    }

    /// The client's Bind asks for a result format per column.
    fn per_column_formats(&self) -> bool {
        let bind = self.parts.as_ref().and_then(|(_, b)| BindParams::read(b));
        bind.is_some_and(|b| b.result_formats() > 1)
    }

    /// The client's bytes the statement came in.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The statement's messages with the pooler's `shard` statement instead of its text,
    /// bound with the client's parameters it takes.
    fn with_text(&self, shard: &ShardSql) -> Result<BytesMut, PgError> {
        match &self.parts {
            Some((parse, bind)) => batch::rewritten(parse, bind, &shard.text, &shard.params)
                .ok_or_else(|| PgError::error("08P01", "malformed Parse or Bind message")),
            None => {
                let mut out = BytesMut::new();
                messages::query(&mut out, &[shard.text.as_bytes()]);
                Ok(out)
            }
        }
    }

    /// A LIMIT or OFFSET count's value: a number, or the Bind's parameter (NULL: none);
    /// PostgreSQL's error for a negative one.
    fn count(&self, count: Option<Count>, what: &str, code: &str) -> Result<Option<u64>, PgError> {
        let n = match count {
            None => return Ok(None),
            Some(Count::Number(n)) => return Ok(Some(n)),
            Some(Count::Param(i)) => {
                let bind = self.parts.as_ref().and_then(|(_, b)| BindParams::read(b));
                let value = bind
                    .as_ref()
                    .and_then(|b| Some((b.value(i - 1)?, b.binary(i - 1))));
                match value {
                    Some((None, _)) => return Ok(None),
                    Some((Some(v), binary)) => pgcat_parser::bind_param_as_i64(v, binary),
                    None => None,
                }
            }
        };
        match n {
            Some(n) if n >= 0 => Ok(Some(n as u64)),
            Some(_) => Err(PgError::error(code, format!("{what} must not be negative"))),
            None => Err(PgError::error(
                "22P02",
                format!("{what} is not an integer the pooler can read"),
            )),
        }
    }
}

/// The statement at the start of the client's buffer, as the shards get it.
pub(super) enum Prepared {
    Ready(ShardStatement),
    /// It cannot run on every shard (the client gets this error).
    Refused(PgError),
    /// More of the client's batch is needed.
    Incomplete,
}

impl Client {
    /// The statement at the start of the buffer (a Query, or an extended batch up to its
    /// Sync), as the shards get it.
    pub(super) fn shard_statement(&self) -> Result<Prepared, ClientError> {
        if self.buf[0] == b'Q' {
            let (_, _, total) =
                crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
            return Ok(Prepared::Ready(ShardStatement {
                messages: BytesMut::from(&self.buf[..total]),
                len: total,
                extended: None,
                parts: None,
            }));
        }
        let statements = &self.statements;
        Ok(
            match batch::read(&self.buf, REWRITE_CAP, |name| statements.parse_of(name))? {
                batch::Read::Batch(b) => Prepared::Ready(ShardStatement {
                    messages: b.shard_messages,
                    len: b.len,
                    extended: Some((b.parse, b.describe)),
                    parts: Some(b.parts),
                }),
                batch::Read::Refused(error) => Prepared::Refused(error),
                batch::Read::Incomplete => Prepared::Incomplete,
            },
        )
    }

    /// Reads more of the client's request (the next round decides again).
    pub(super) async fn read_more(&mut self) -> Result<(), ClientError> {
        if read(&mut self.stream, &mut self.buf).await? == 0 {
            return Err(ClientError::Gone);
        }
        Ok(())
    }

    /// The client's named statement exists once its batch succeeded: kept by the pooler,
    /// prepared wherever it runs next.
    pub(super) fn remember(&mut self, statement: &ShardStatement) {
        if let Some((Some(parse), _)) = &statement.extended {
            let epoch = self.session.pool.schema_epoch.get();
            if let Err(e) = self.statements.define(parse, epoch) {
                tracing::debug!(error = %e.message, "statement not remembered");
            }
        }
    }
}

/// The merge of a statement with this plan, for the client's `statement`.
/// Its LIMIT or OFFSET can be refused (negative, unreadable).
pub(super) fn merge_for(plan: &CrossShard, statement: &ShardStatement) -> Result<Merge, PgError> {
    let plan = match plan {
        CrossShard::Aggregate { functions, columns } => Plan::Groups(GroupPlan {
            functions: functions.iter().copied().map(Some).collect(),
            columns: columns.clone(),
            ..GroupPlan::default()
        }),
        CrossShard::Grouped {
            functions, visible, ..
        } if (functions.contains(&Some(Aggregate::Avg)) || *visible < functions.len())
            && statement.per_column_formats() =>
        {
            return Err(PgError::error(
                "0A000",
                "cannot run avg(), or HAVING or ORDER BY on an aggregate that is not an output \
                 column, on every shard with a result format per column: not supported yet (one \
                 format for all columns is)",
            ));
        }
        CrossShard::Grouped {
            functions,
            columns,
            visible,
            order,
            limit,
            offset,
            having,
            ..
        } => Plan::Groups(GroupPlan {
            functions: functions.clone(),
            columns: columns.clone(),
            visible: Some(*visible),
            having: having.clone(),
            order: order.clone(),
            offset: statement.count(*offset, "OFFSET", "2201X")?.unwrap_or(0),
            limit: statement.count(*limit, "LIMIT", "2201W")?,
            params: statement.params(),
        }),
        CrossShard::CopyOut { format, .. } => {
            let binary = format.kind == pgcat_parser::cross_shard::CopyKind::Binary;
            Plan::CopyOut {
                binary,
                header: format.header && !binary,
            }
        }
        CrossShard::Concat {
            order,
            distinct_on,
            limit,
            offset,
            ..
        } => Plan::Rows {
            distinct_on: *distinct_on,
            order: order.clone(),
            limit: statement.count(*limit, "LIMIT", "2201W")?,
            offset: statement.count(*offset, "OFFSET", "2201X")?.unwrap_or(0),
        },
        _ => Plan::Rows {
            order: Vec::new(),
            limit: None,
            offset: 0,
            distinct_on: 0,
        },
    };
    let mut merge = Merge::new(plan);
    if let Some((parse, describe)) = &statement.extended {
        merge.extended(parse.is_some(), *describe);
    }
    Ok(merge)
}
