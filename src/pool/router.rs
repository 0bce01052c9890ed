//! A pool's routing settings and memory: PgCat's routing keys turned into the parser
//! crate's `PoolRouting`, the compiled comment-hint regexes, and the analysis of query texts
//! (classification + automatic sharding keys + session effects) cached so a repeated
//! statement is parsed once, for routing and for tracking session state alike.

use std::sync::Arc;

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
}

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
        PoolRouter {
            cache: AnalysisCache::new(CACHE_SIZE, routing.max_length),
            routing,
            hints,
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

    /// The analysis of `sql` for its session effects: the cached one, or, for a text
    /// longer than the router parses, one made now without that limit (not cached).
    pub fn analyze_session(&self, sql: &str) -> Arc<Analysis> {
        match self.routing.max_length {
            Some(max) if sql.len() > max => Arc::new(Analysis::of(sql, None, None)),
            _ => self.analyze(sql),
        }
    }
}
