//! What a pool learns from its databases' catalogs for statements it runs on every shard:
//! which function names are aggregates (built in or the application's own), since a
//! statement calling one needs its shards' results combined, not concatenated; and the
//! collations, since the merge orders text byte by byte (right only under C-like ones).

use pgcat_parser::Route;

use super::UserPool;
use crate::backend::ServerConn;
use crate::merge::{Collations, Column};
use crate::wire::messages::PgError;

impl UserPool {
    /// The first of `functions` (lower-case names) that some schema defines as an
    /// aggregate, learned once per pool from a server of shard 0.
    pub async fn first_aggregate<'a>(
        &self,
        functions: &'a [String],
    ) -> Result<Option<&'a str>, PgError> {
        if functions.is_empty() {
            return Ok(None);
        }
        let aggregates = self
            .aggregates
            .get_or_try_init(|| async {
                let mut conn = self.checkout(Route::default()).await?;
                let sql =
                    "SELECT DISTINCT lower(proname) FROM pg_catalog.pg_proc WHERE prokind = 'a'";
                let rows = conn.query_rows(sql).await.map_err(|e| e.to_client())?;
                let mut names: Vec<String> = rows
                    .into_iter()
                    .filter_map(|row| row.into_iter().next().flatten())
                    .collect();
                names.sort_unstable();
                Ok::<_, PgError>(names)
            })
            .await?;
        Ok(functions
            .iter()
            .find(|f| aggregates.binary_search(f).is_ok())
            .map(String::as_str))
    }
}

impl UserPool {
    /// Shard 0's database's collations (see `merge::Collations`): its default and every
    /// collation its tables' columns name. Learned from the catalog once per schema epoch
    /// (DDL through the pooler starts a new one), on `held` (a server of shard 0 the
    /// caller holds) or a server checked out.
    pub async fn collations(&self, held: Option<&mut ServerConn>) -> Result<Collations, PgError> {
        let epoch = self.schema_epoch.get();
        if let Some((at, known)) = self.collations.lock().ok().and_then(|k| k.clone()) {
            if at == epoch {
                return Ok(known);
            }
        }
        // to_jsonb: the provider column exists from PostgreSQL 15 on.
        let sql = "SELECT 0, 0, '', '', CASE WHEN to_jsonb(d) ->> 'datlocprovider' = 'i' \
                   THEN coalesce(to_jsonb(d) ->> 'daticulocale', 'icu') ELSE d.datcollate END \
                   FROM pg_catalog.pg_database d WHERE d.datname = current_database() \
                   UNION ALL SELECT a.attrelid::int8, a.attnum, r.relname, a.attname, c.collname \
                   FROM pg_catalog.pg_attribute a \
                   JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation \
                   JOIN pg_catalog.pg_class r ON r.oid = a.attrelid \
                   JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
                   WHERE a.attnum > 0 AND NOT a.attisdropped AND c.collname <> 'default' \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')";
        let rows = match held {
            Some(server) => server.query_rows(sql).await,
            None => self.checkout(Route::default()).await?.query_rows(sql).await,
        };
        let rows = rows.map_err(|e| e.to_client())?;
        let text = |row: &[Option<String>], i: usize| row.get(i).cloned().flatten();
        let default = rows.first().and_then(|r| text(r, 4)).unwrap_or_default();
        let columns = rows.iter().skip(1).filter_map(|row| {
            Some(Column {
                table: text(row, 0)?.parse().ok()?,
                attnum: text(row, 1)?.parse().ok()?,
                table_name: text(row, 2)?,
                name: text(row, 3)?,
                collation: text(row, 4)?,
            })
        });
        let known = Collations::new(&default, columns);
        if let Ok(mut slot) = self.collations.lock() {
            *slot = Some((epoch, known.clone()));
        }
        Ok(known)
    }
}
