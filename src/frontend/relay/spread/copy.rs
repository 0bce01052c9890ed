//! `COPY t FROM STDIN` with no shard inside a transaction block across shards (psycopg's
//! `copy()` in its default transaction): the block takes a server of every shard (in
//! shard order), and the rows go each to its key's shard as outside a block
//! (`copy_in::copy_rows`), but in the block's transaction: the block's COMMIT keeps them,
//! its ROLLBACK undoes them on every shard, and a failed COPY fails the block.

use super::*;

impl Client {
    /// Runs the client's COPY (a Query, first in its buffer) on every shard of the block.
    pub(super) async fn spread_copy_in(
        &mut self,
        copy: (&str, Option<usize>, &CopyFormat),
    ) -> Result<(), ClientError> {
        let every: Vec<usize> = (0..self.session.pool.shards.len()).collect();
        if let Err(error) = self.spread_touch(&every).await {
            return self.spread_reject(error).await;
        }
        let (_, _, total) =
            crate::wire::frame::whole(&self.buf, REWRITE_CAP)?.ok_or(ClientError::Gone)?;
        let query = self.buf.split_to(total);
        let Some(mut spread) = self.take_spread() else {
            return Ok(());
        };
        let mut servers = std::mem::take(&mut spread.servers);
        spread.wrote.extend(&every);
        let copied = self.copy_rows(&mut servers, &query, copy).await;
        spread.servers = servers;
        self.session.info.query_count.fetch_add(1, Relaxed);
        let (answer, broken) = match copied {
            Ok(copied) => copied,
            Err(e) => {
                // The COPY was cut short: the block's servers are cancelled and closed.
                spread.in_flight = true;
                self.rare.get_or_insert_with(Default::default).spread = Some(spread);
                return Err(e);
            }
        };
        if let Some(at) = broken.iter().position(|b| *b) {
            spread.in_flight = true;
            self.rare.get_or_insert_with(Default::default).spread = Some(spread);
            return Err(lost_in_block(every[at], &"the COPY broke off").into());
        }
        let mut out = BytesMut::new();
        match answer {
            Ok(copied) => messages::command_complete(&mut out, &format!("COPY {copied}")),
            Err(error) => {
                spread.failed = true;
                error.encode(&mut out);
            }
        }
        if !spread.quiet {
            messages::ready_for_query(&mut out, spread.status());
        }
        self.rare.get_or_insert_with(Default::default).spread = Some(spread);
        self.stream.send(&out).await?;
        Ok(())
    }
}
