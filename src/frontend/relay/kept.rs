//! What a client keeps when its transaction ends: the settings it changed (read back from
//! the server) and, for read-your-writes, the primary's WAL position after its write.

use super::*;

impl Client {
    /// Settings the client changed while it held the server: their values now, read from
    /// the server before it is reset, become the client's own (applied on every server it
    /// gets), as PostgreSQL keeps a committed SET for the session. Where the change is not
    /// named in the text (`set_config()` with bound arguments, a function, a setting the
    /// server reported changing), every setting the session set is read.
    pub(super) async fn keep_changed_settings(&mut self, held: &mut Held) {
        let changed = std::mem::take(&mut held.flow.changed_settings);
        if changed.is_empty() {
            return;
        }
        let Some(names) = changed.names() else {
            let read = held
                .server
                .query_rows("SELECT name, current_setting(name) FROM pg_catalog.pg_settings WHERE source = 'session'")
                .await;
            match read {
                Ok(rows) => {
                    let session = rows.into_iter().filter_map(|row| {
                        let mut row = row.into_iter();
                        Some((row.next()??, row.next()??))
                    });
                    self.session.params =
                        state::from_session_settings(&self.session.startup_params, session);
                }
                Err(e) => self.tag().in_scope(|| tracing::warn!(error = %e, "could not read the settings the client changed in its transaction")),
            }
            return;
        };
        let reads: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "current_setting({}, true)",
                    crate::backend::quote_literal(n)
                )
            })
            .collect();
        match held
            .server
            .query_row(&format!("SELECT {}", reads.join(", ")))
            .await
        {
            Ok(values) => {
                let effects = SessionEffects {
                    set: names
                        .iter()
                        .cloned()
                        .zip(values)
                        .filter_map(|(n, v)| Some((n, Some(v?))))
                        .collect(),
                    ..SessionEffects::default()
                };
                state::remember(
                    &mut self.session.params,
                    &self.session.startup_params,
                    &effects,
                );
            }
            Err(e) => {
                self.tag().in_scope(|| tracing::warn!(error = %e, "could not read the settings the client changed in its transaction"))
            }
        }
    }

    /// Read-your-writes: after a write transaction on a primary, remembers the primary's WAL
    /// position so the client's next reads skip replicas that have not replayed it. One
    /// extra round trip per write transaction, only with `read_your_writes = true`.
    pub(super) async fn note_write(&mut self, held: &mut Held) {
        let pool = &self.session.pool;
        if !pool.read_your_writes
            || !held.wrote
            || !pool.is_primary_addr(held.server.session().addr())
        {
            return;
        }
        match held
            .server
            .query_row("SELECT pg_current_wal_insert_lsn()::text")
            .await
        {
            Ok(row) => {
                if let Some(lsn) = row
                    .first()
                    .and_then(|v| v.as_deref())
                    .and_then(crate::pool::health::parse_lsn)
                {
                    let rare = self.rare.get_or_insert_default();
                    rare.min_lsn = rare.min_lsn.max(lsn);
                }
            }
            Err(e) => {
                self.tag().in_scope(|| tracing::warn!(error = %e, "could not read the primary's WAL position for read-your-writes"))
            }
        }
    }
}
