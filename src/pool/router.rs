//! A pool's routing settings and memory: PgCat's routing keys turned into the parser
//! crate's `PoolRouting`, the compiled comment-hint regexes, and the analysis of query texts
//! (classification + automatic sharding keys + session effects) cached so a repeated
//! statement is parsed once, for routing and for tracking session state alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use pgcat_parser::{
    Analysis, AnalysisCache, CommentHints, KeyColumn, PoolRouting, Role, ShardingFunction,
};

use crate::config::{self, DefaultRole};

/// Query texts whose analysis a pool remembers.
const CACHE_SIZE: usize = 4096;

pub struct PoolRouter {
    pub routing: PoolRouting,
    pub hints: CommentHints,
    cache: AnalysisCache,
    /// Unique per router (a reload builds new ones): what a memo's analysis was made by.
    id: u64,
}

/// One text's analysis kept where the text lives (a client's prepared statement), so that
/// running the statement again costs an atomic load instead of the cache's hash and
/// lookup. Filled once, by the first router that analyses the text; a router built later
/// (a reload) looks the text up in its cache instead.
#[derive(Debug, Default)]
pub struct AnalysisMemo(OnceLock<(u64, Arc<Analysis>)>);

impl PoolRouter {
    /// Builds from a pool's config (already validated: regexes compile, key has one dot).
    pub fn new(pool: &config::Pool) -> Result<PoolRouter, String> {
        let routing = PoolRouting {
            shards: pool.shards.len(),
            sharding_function: match pool.sharding_function {
                config::ShardingFunction::PgBigintHash => ShardingFunction::PgBigintHash,
                config::ShardingFunction::Sha1 => ShardingFunction::Sha1,
            },
            query_parser_enabled: pool.query_parser_enabled,
            read_write_splitting: pool.query_parser_read_write_splitting,
            primary_reads_enabled: pool.primary_reads_enabled,
            default_role: match pool.default_role {
                DefaultRole::Any => None,
                DefaultRole::Primary => Some(Role::Primary),
                DefaultRole::Replica => Some(Role::Replica),
            },
            automatic_key: match &pool.automatic_sharding_key {
                Some(spec) => Some(KeyColumn::parse(spec).ok_or_else(|| {
                    format!("automatic_sharding_key '{spec}' is not table.column")
                })?),
                None => None,
            },
            max_length: pool.query_parser_max_length,
        };
        let hints = CommentHints::new(
            pool.shard_id_regex.as_deref(),
            pool.sharding_key_regex.as_deref(),
            pool.regex_search_limit,
        )
        .map_err(|e| e.to_string())?;
        Ok(PoolRouter::from_parts(routing, hints))
    }

    pub fn from_parts(routing: PoolRouting, hints: CommentHints) -> PoolRouter {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        PoolRouter {
            cache: AnalysisCache::new(CACHE_SIZE, routing.max_length),
            routing,
            hints,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Parses and analyses `sql` once; later calls with the same text, or the same text
    /// with other literal values, hit the cache.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        let routing = &self.routing;
        self.cache.get_or_insert(sql, || {
            Analysis::of(sql, routing.automatic_key.as_ref(), routing.max_length)
        })
    }

    /// [`analyze`](Self::analyze), remembered in `memo` (which belongs to this one text).
    pub fn analyze_once(&self, sql: &str, memo: Option<&AnalysisMemo>) -> Arc<Analysis> {
        let Some(memo) = memo else {
            return self.analyze(sql);
        };
        let (id, analysis) = memo.0.get_or_init(|| (self.id, self.analyze(sql)));
        if *id == self.id {
            analysis.clone()
        } else {
            self.analyze(sql)
        }
    }

    /// The analysis of `sql` for its session effects: the cached one, or, for a text
    /// longer than the router parses, one made now without that limit (not cached).
    pub fn analyze_session(&self, sql: &str) -> Arc<Analysis> {
        match self.routing.max_length {
            Some(max) if sql.len() > max => Arc::new(Analysis::of(sql, None, None)),
            _ => self.analyze(sql),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> PoolRouter {
        let hints = CommentHints::new(None, None, 1000).expect("no regexes");
        PoolRouter::from_parts(PoolRouting::default(), hints)
    }

    /// A memo answers for the router that filled it; another router (after a reload)
    /// analyses with its own cache and leaves the memo alone.
    #[test]
    fn a_memo_is_the_analysis_of_the_router_that_made_it() {
        let (first, reloaded) = (router(), router());
        let memo = AnalysisMemo::default();
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        let made = first.analyze_once(sql, Some(&memo));
        assert!(Arc::ptr_eq(&made, &first.analyze_once(sql, Some(&memo))));
        assert!(Arc::ptr_eq(&made, &first.analyze(sql)), "the cache's entry");
        let other = reloaded.analyze_once(sql, Some(&memo));
        assert!(!Arc::ptr_eq(&made, &other), "not the other router's memo");
        assert!(Arc::ptr_eq(&other, &reloaded.analyze(sql)));
        assert_eq!(*made, *other, "the same text has the same analysis");
        assert!(Arc::ptr_eq(&made, &first.analyze_once(sql, Some(&memo))));
    }
}
