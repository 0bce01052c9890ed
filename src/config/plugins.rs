//! PgCat's plugins: `[plugins]` for every pool, `[pools.<name>.plugins]` replacing it for
//! one pool. `intercept` (queries answered by the pooler with configured rows),
//! `query_logger` (every query logged) and `table_access` (queries touching listed tables
//! refused) and `prewarmer` (queries run on each new server connection) are built here.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::build::Ctx;
use super::keys::join;
use super::ConfigError;

#[derive(Deserialize, Clone, Default)]
pub(crate) struct RawPlugins {
    pub intercept: Option<RawIntercept>,
    pub query_logger: Option<RawToggle>,
    pub table_access: Option<RawTableAccess>,
    pub prewarmer: Option<RawPrewarmer>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct RawToggle {
    pub enabled: Option<bool>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct RawPrewarmer {
    pub enabled: Option<bool>,
    pub queries: Option<Vec<String>>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct RawTableAccess {
    pub enabled: Option<bool>,
    pub tables: Option<Vec<String>>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct RawIntercept {
    pub enabled: Option<bool>,
    pub queries: Option<BTreeMap<String, RawInterceptQuery>>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct RawInterceptQuery {
    pub query: Option<String>,
    pub schema: Option<Vec<Vec<String>>>,
    pub result: Option<Vec<Vec<String>>>,
}

/// The plugins a pool runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plugins {
    /// `intercept` (when enabled): the queries the pooler answers itself.
    pub intercept: Vec<Intercept>,
    /// `query_logger` is enabled.
    pub query_logger: bool,
    /// `table_access` (when enabled): tables no query may touch (`table` or
    /// `schema.table`, as PostgreSQL folds names).
    pub blocked_tables: Vec<String>,
    /// `prewarmer` (when enabled): queries run on each new server connection before its
    /// first use.
    pub prewarm: Vec<String>,
}

/// One intercepted query and its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Intercept {
    /// The query as configured (compared after normalising both sides).
    pub query: String,
    /// Each column: name and type name (`text`, `int4`, `int8`, `bool`, …).
    pub columns: Vec<(String, String)>,
    /// The rows, `${DATABASE}` and `${USER}` substituted when answered.
    pub rows: Vec<Vec<String>>,
}

/// The type names a column of an intercepted answer may have.
const TYPES: [&str; 6] = ["text", "varchar", "int2", "int4", "int8", "bool"];

/// The plugins of one pool (`key`: `plugins` or `pools.<name>.plugins`).
pub(crate) fn build_plugins(
    ctx: &Ctx,
    key: &str,
    raw: &RawPlugins,
) -> Result<Plugins, ConfigError> {
    let mut plugins = Plugins {
        query_logger: raw
            .query_logger
            .as_ref()
            .is_some_and(|q| q.enabled.unwrap_or(false)),
        blocked_tables: raw
            .table_access
            .iter()
            .filter(|t| t.enabled.unwrap_or(false))
            .flat_map(|t| t.tables.iter().flatten())
            .map(|t| t.trim().to_lowercase())
            .collect(),
        prewarm: raw
            .prewarmer
            .iter()
            .filter(|p| p.enabled.unwrap_or(false))
            .flat_map(|p| p.queries.iter().flatten().cloned())
            .collect(),
        ..Plugins::default()
    };
    let Some(intercept) = &raw.intercept else {
        return Ok(plugins);
    };
    if !intercept.enabled.unwrap_or(false) {
        return Ok(plugins);
    }
    let queries_key = join(&join(key, "intercept"), "queries");
    for (name, q) in intercept.queries.iter().flatten() {
        let at = join(&queries_key, name);
        let query = q
            .query
            .clone()
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| ctx.err(join(&at, "query"), "is required"))?;
        let mut columns = Vec::new();
        for column in q.schema.iter().flatten() {
            match column.as_slice() {
                [name, ty] if TYPES.contains(&ty.to_ascii_lowercase().as_str()) => {
                    columns.push((name.clone(), ty.to_ascii_lowercase()));
                }
                _ => {
                    return Err(ctx.err(
                        join(&at, "schema"),
                        format!(
                            "each column must be [\"name\", \"type\"] with a type among {}",
                            TYPES.join(", ")
                        ),
                    ))
                }
            }
        }
        if columns.is_empty() {
            return Err(ctx.err(join(&at, "schema"), "needs at least one column"));
        }
        let rows = q.result.clone().unwrap_or_default();
        if let Some(row) = rows.iter().find(|r| r.len() != columns.len()) {
            return Err(ctx.err(
                join(&at, "result"),
                format!(
                    "a row has {} values for {} columns: {row:?}",
                    row.len(),
                    columns.len()
                ),
            ));
        }
        plugins.intercept.push(Intercept {
            query,
            columns,
            rows,
        });
    }
    Ok(plugins)
}
