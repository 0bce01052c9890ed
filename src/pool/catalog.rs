//! What a pool learns from its databases' catalogs for statements it runs on every shard:
//! which function names are aggregates (built in or the application's own), since a
//! statement calling one needs its shards' results combined, not concatenated.

use pgcat_parser::Route;

use super::UserPool;
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
