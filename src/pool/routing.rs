//! A pool's routing settings and memory: PgCat's routing keys turned into the parser
//! crate's `PoolRouting`, the compiled comment-hint regexes, and the analysis of query texts
//! (classification + automatic sharding keys) cached so a repeated statement is parsed once.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use pgcat_parser::{
    classify_parsed, find_keys_parsed, Classification, CommentHints, KeyColumn, KeyValue, Parsed,
    PoolRouting, Role, ShardingFunction,
};

use crate::config::{self, DefaultRole};

/// Query texts whose analysis a pool remembers.
const CACHE_SIZE: usize = 4096;

/// What the router needs to know about a query text.
#[derive(Debug, Default)]
pub struct Analysis {
    pub classification: Classification,
    /// Automatic sharding key values (literals, or Bind parameters by position).
    pub keys: Vec<KeyValue>,
}

pub struct PoolRouter {
    pub routing: PoolRouting,
    pub hints: CommentHints,
    cache: Mutex<LruCache<u64, Arc<Analysis>>>,
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
        Ok(PoolRouter {
            routing,
            hints,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// Parses and analyses `sql` once; later calls with the same text hit the cache.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sql.hash(&mut h);
        let key = h.finish();
        if let Some(a) = self.lock().get(&key) {
            return a.clone();
        }
        let parsed = Parsed::parse_within(sql, self.routing.max_length);
        let keys = match (&parsed, &self.routing.automatic_key) {
            (Some(p), Some(column)) => find_keys_parsed(p, column),
            _ => Vec::new(),
        };
        let analysis = Arc::new(Analysis {
            classification: classify_parsed(sql, parsed.as_ref()),
            keys,
        });
        self.lock().put(key, analysis.clone());
        analysis
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<Analysis>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
