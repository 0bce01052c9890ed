//! A query string of several statements that run on different shards (`SELECT count(*)
//! FROM t; UPDATE t …`): each statement runs in turn where it belongs, as a statement of
//! a transaction block across shards, and the client gets their answers as from one
//! database: every statement's results, an error ending the string, one ReadyForQuery
//! after the last.
//!
//! PostgreSQL runs such a string in one implicit transaction: outside a block the pooler
//! opens one on the shards the statements touch and commits it after the last statement
//! (all or nothing, as far as one-phase commits go), or rolls it back after an error.
//! Inside a block the statements join the block. `BEGIN`, `COMMIT` and `ROLLBACK` in such
//! a string are refused before anything runs.

use super::*;

impl Client {
    /// Runs the statements of the client's multi-statement Query (`texts`) in its block.
    pub(super) async fn spread_several(&mut self, texts: Vec<String>) -> Result<(), ClientError> {
        let pool = self.session.pool.clone();
        let control = texts.iter().any(|text| {
            let c = &pool.router.analyze(text).classification;
            c.begin.is_some() || c.ends_transaction
        });
        if control {
            return self
                .spread_reject(PgError::error(
                    "0A000",
                    "BEGIN, COMMIT or ROLLBACK in a query string whose statements run on \
                     several shards: send them as queries of their own",
                ))
                .await;
        }
        let (_, _, total) =
            crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
        self.buf.advance(total);
        if let Some(spread) = self.spread_mut() {
            spread.quiet = true;
        }
        for text in &texts {
            // Each statement as a Query of its own, before what the client sent after
            // the string.
            let mut next = BytesMut::new();
            messages::query(&mut next, &[text.as_bytes()]);
            next.unsplit(std::mem::take(&mut self.buf));
            self.buf = next;
            // Boxed: a statement of the string is never several, but the types recurse.
            Box::pin(self.spread_statement()).await?;
            if self.spread().is_none_or(|s| s.failed) {
                break;
            }
        }
        let Some(spread) = self.spread_mut() else {
            return Ok(());
        };
        spread.quiet = false;
        let mut out = BytesMut::new();
        if spread.implicit {
            let commit = !spread.failed;
            if let Some(spread) = self.take_spread() {
                if let Err(error) = self.finish_spread(spread, commit).await {
                    error.encode(&mut out);
                }
            }
            messages::ready_for_query(&mut out, b'I');
        } else {
            messages::ready_for_query(&mut out, spread.status());
        }
        self.stream.send(&out).await?;
        Ok(())
    }
}
