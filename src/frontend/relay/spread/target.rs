//! Where a statement of a cross-shard transaction block runs (`Target`), decided from the
//! parser's analysis, and the statements such a block refuses.

use super::*;

/// Where a statement of the block runs.
pub(super) enum Target {
    /// On the shards listed (in order), answered as one; `plan` says how (an INSERT's
    /// rows go each to its shard by their `keys`); whether the statement writes.
    Shards(Vec<usize>, Box<CrossShard>, Vec<KeyValue>, bool),
    /// COMMIT (`true`) or ROLLBACK.
    End(bool),
    /// A query string of several statements, each as the client wrote it (see `several`).
    Several(Vec<String>),
    /// `COPY t FROM STDIN` on every shard: table, the key's column position, the format
    /// (see `copy`).
    CopyIn(String, Option<usize>, CopyFormat),
}

impl Client {
    /// Where the block's next statement runs, or the error it gets.
    pub(super) fn spread_target(&self, request: &Request<'_>) -> Result<Target, PgError> {
        let pool = &self.session.pool;
        let failed = self.spread().is_some_and(|s| s.failed);
        let every = || (0..pool.shards.len()).collect::<Vec<_>>();
        let Some(sql) = request.sql() else {
            return Err(crate::frontend::cross_shard::opaque());
        };
        let analysis = pool.router.analyze(sql);
        let c = &analysis.classification;
        let implicit = self.spread().is_some_and(|s| s.implicit && !s.quiet);
        if let CrossShard::Several { texts, .. } = &analysis.cross_shard {
            if !matches!(request, Request::Query(_)) {
                return Err(PgError::error(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                ));
            }
            if failed {
                return Err(aborted_transaction());
            }
            return Ok(Target::Several(texts.clone()));
        }
        if implicit {
            return Err(PgError::error(
                "XX000",
                "a multi-statement query's transaction got a statement of its own",
            ));
        }
        if matches!(request, Request::Query(_)) && c.ends_transaction && c.statement_count == 1 {
            let first = sql.trim_start().get(..5).unwrap_or_default();
            let rollback =
                first.eq_ignore_ascii_case("rollb") || first.eq_ignore_ascii_case("abort");
            return Ok(Target::End(!rollback));
        }
        if c.begin.is_some() || c.ends_transaction {
            return Err(PgError::error(
                "0A000",
                "in a transaction spanning shards, COMMIT and ROLLBACK must be sent alone, as \
                 a simple query",
            ));
        }
        let rollback_to = analysis.cross_shard == CrossShard::Control
            && sql
                .trim_start()
                .get(..8)
                .is_some_and(|w| w.eq_ignore_ascii_case("rollback"));
        if failed && !rollback_to {
            return Err(aborted_transaction());
        }
        if !c.session.is_empty() {
            return Err(PgError::error(
                "0A000",
                "cannot change session state (SET, PREPARE, LISTEN, temporary tables …) inside \
                 a transaction spanning shards",
            )
            .with_hint("Use SET LOCAL, or make the change before BEGIN."));
        }
        if analysis.cross_shard == CrossShard::Control {
            return Ok(Target::Shards(
                every(),
                Box::new(CrossShard::Control),
                Vec::new(),
                false,
            ));
        }
        let copy = matches!(
            &analysis.cross_shard,
            CrossShard::CopyIn { .. } | CrossShard::CopyOut { .. }
        );
        if copy && !matches!(request, Request::Query(_)) {
            return Err(PgError::error(
                "0A000",
                "COPY across shards needs the simple query protocol",
            ));
        }
        let decided = request::decide(request, &self.routing, pool)?;
        if decided.all_shards {
            if let CrossShard::CopyIn { table, key, format } = &analysis.cross_shard {
                return Ok(Target::CopyIn(table.clone(), *key, format.clone()));
            }
            let (plan, keys) = (analysis.cross_shard.clone(), analysis.keys.clone());
            return Ok(Target::Shards(every(), Box::new(plan), keys, c.write));
        }
        if copy {
            return Err(PgError::error(
                "0A000",
                "COPY of one shard inside a transaction spanning shards is not supported yet",
            )
            .with_hint("Run it outside the transaction block, or on every shard."));
        }
        let shard = decided.route.shard.unwrap_or(0);
        Ok(Target::Shards(
            vec![shard],
            Box::new(CrossShard::AnyShard),
            Vec::new(),
            c.write,
        ))
    }

    /// The error a statement on every shard gets before it runs, if any.
    pub(super) async fn spread_refusal(
        &self,
        pool: &UserPool,
        request: &Request<'_>,
        plan: &CrossShard,
    ) -> Option<PgError> {
        let analysis = pool.router.analyze(request.sql()?);
        let routed = Routed { analysis, at: 0 };
        match plan {
            CrossShard::Concat { .. } => fanout::refused_aggregate(pool, &routed).await,
            _ => None,
        }
    }
}
