//! The analysis of a query text, remembered: a statement the pooler has seen costs a hash
//! and a lookup instead of a sqlparser run (~7 µs for a pgbench statement, ~175 µs for a
//! 1 KB join). Bounded LRU keyed by the text's shape (or exact text); safe to share
//! between threads.

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;
use lru::LruCache;

use crate::classify::{classify_parsed, Classification};
use crate::cross_shard::CrossShard;
use crate::parsed::Parsed;
use crate::shape::{is_word, shape};
use crate::shard_key::{find_keys_parsed, KeyColumn, KeyValue};

/// What routing needs to know about a query text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub classification: Classification,
    /// Automatic sharding key values (literals, or Bind parameters by position).
    pub keys: Vec<KeyValue>,
    /// The text names the automatic sharding key's column: which key values it has (or
    /// whether one fits an i64) depends on its literals.
    pub names_key_column: bool,
    /// How it runs when no shard is selected and the pool runs such statements on every
    /// shard.
    pub cross_shard: CrossShard,
    /// Every relation the text names (`crate::tables`), empty when it did not parse.
    pub tables: Vec<String>,
}

impl Analysis {
    /// Parses once and derives everything from that parse.
    pub fn of(sql: &str, key: Option<&KeyColumn>, max_length: Option<usize>) -> Analysis {
        let parsed = Parsed::parse_within(sql, max_length);
        let keys = match (&parsed, key) {
            (Some(p), Some(column)) => find_keys_parsed(p, column),
            _ => Vec::new(),
        };
        Analysis {
            classification: classify_parsed(sql, parsed.as_ref()),
            cross_shard: CrossShard::of(sql, parsed.as_ref(), key),
            keys,
            names_key_column: key.is_some_and(|k| contains_word_ci(sql, &k.column)),
            tables: parsed
                .as_ref()
                .map(crate::tables::relations)
                .unwrap_or_default(),
        }
    }

    /// Whether a text of the same shape with other literal values has this analysis: it
    /// parsed, and neither a sharding key nor a setting's value can come from a literal.
    pub fn same_for_any_literals(&self) -> bool {
        self.classification.parsed
            && self.classification.session.set.is_empty()
            && !self.names_key_column
    }
}

/// Whether `word` occurs in `text` (ASCII case-insensitive) with no word character on
/// either side.
fn contains_word_ci(text: &str, word: &str) -> bool {
    let (t, w) = (text.as_bytes(), word.as_bytes());
    let is_word = |i: usize| t.get(i).copied().is_some_and(is_word);
    !w.is_empty()
        && t.windows(w.len()).enumerate().any(|(i, x)| {
            x.eq_ignore_ascii_case(w) && !(i > 0 && is_word(i - 1)) && !is_word(i + w.len())
        })
}

/// Analyses by query shape (literals blanked, see [`crate::shape`]) or, where the analysis
/// depends on a literal's value or the lexer gave up, by exact text. Least recently used
/// dropped first. Keys are hashes seeded per process, so a client cannot craft collisions.
pub struct AnalysisCache {
    entries: Mutex<LruCache<u64, Arc<Analysis>>>,
    hashes: RandomState,
    /// Texts longer than this are not parsed, so their shape says nothing about a shorter
    /// text with the same shape (and the other way round).
    max_length: Option<usize>,
}

impl AnalysisCache {
    pub fn new(capacity: usize, max_length: Option<usize>) -> AnalysisCache {
        AnalysisCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            hashes: RandomState::default(),
            max_length,
        }
    }

    /// The analysis of `sql`, computed with `analyze` on a miss.
    pub fn get_or_insert(&self, sql: &str, analyze: impl FnOnce() -> Analysis) -> Arc<Analysis> {
        let shape_key = self.shape_key(sql);
        // A shape whose analysis depends on literal values is looked up by exact text.
        let mut by_text = shape_key.is_none();
        if let Some(key) = shape_key {
            match self.lock().get(&key) {
                Some(a) if a.same_for_any_literals() => return a.clone(),
                Some(_) => by_text = true,
                None => {}
            }
        }
        let mut h = self.hashes.build_hasher();
        h.write_u8(0);
        h.write(sql.as_bytes());
        let text_key = h.finish();
        if by_text {
            if let Some(a) = self.lock().get(&text_key) {
                return a.clone();
            }
        }
        let analysis = Arc::new(analyze());
        let mut entries = self.lock();
        if let Some(key) = shape_key {
            entries.put(key, analysis.clone());
        }
        if shape_key.is_none() || !analysis.same_for_any_literals() {
            entries.put(text_key, analysis.clone());
        }
        analysis
    }

    fn shape_key(&self, sql: &str) -> Option<u64> {
        if self.max_length.is_some_and(|max| sql.len() > max) {
            return None;
        }
        let mut h = self.hashes.build_hasher();
        h.write_u8(1);
        shape(sql, &mut h)?;
        Some(h.finish())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<Analysis>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_does_not_analyse_again() {
        let cache = AnalysisCache::new(8, None);
        let key = KeyColumn::parse("t.id");
        let first = cache.get_or_insert("SELECT * FROM t WHERE id = 5", || {
            Analysis::of("SELECT * FROM t WHERE id = 5", key.as_ref(), None)
        });
        assert_eq!(first.keys, vec![KeyValue::Literal(5)]);
        let again =
            cache.get_or_insert("SELECT * FROM t WHERE id = 5", || panic!("analysed twice"));
        assert!(Arc::ptr_eq(&first, &again));
    }

    fn analyse(cache: &AnalysisCache, sql: &str) -> Arc<Analysis> {
        let key = KeyColumn::parse("t.id");
        cache.get_or_insert(sql, || Analysis::of(sql, key.as_ref(), None))
    }

    #[test]
    fn other_literals_reuse_the_analysis_of_the_shape() {
        let cache = AnalysisCache::new(8, None);
        let first = analyse(&cache, "SELECT abalance FROM a WHERE aid = 17");
        assert!(!first.classification.write);
        let again = cache.get_or_insert("SELECT abalance FROM a WHERE aid = 4242", || {
            panic!("analysed twice")
        });
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn values_taken_from_literals_are_cached_by_exact_text() {
        let cache = AnalysisCache::new(8, None);
        for id in [5, 6, 5] {
            let a = analyse(&cache, &format!("SELECT * FROM t WHERE id = {id}"));
            assert_eq!(a.keys, vec![KeyValue::Literal(id)]);
        }
        for path in ["a", "b"] {
            let a = analyse(&cache, &format!("SET search_path TO '{path}'"));
            assert_eq!(
                a.classification.session.set,
                vec![("search_path".into(), Some(path.into()))]
            );
        }
        // is_local decides whether set_config leaves session state.
        assert!(
            !analyse(&cache, "SELECT set_config('a.b', 'x', 'true')")
                .classification
                .session
                .set_config
        );
        assert!(
            analyse(&cache, "SELECT set_config('a.b', 'x', 'false')")
                .classification
                .session
                .set_config
        );
    }

    #[test]
    fn a_shape_never_crosses_the_parse_length_limit() {
        let cache = AnalysisCache::new(8, Some(40));
        let short = "SELECT x FROM a WHERE y = 1";
        let long = "SELECT x FROM a WHERE y = 123456789012345";
        let limit = Some(40);
        assert!(
            cache
                .get_or_insert(short, || Analysis::of(short, None, limit))
                .classification
                .parsed
        );
        assert!(
            !cache
                .get_or_insert(long, || Analysis::of(long, None, limit))
                .classification
                .parsed
        );
        assert!(
            cache
                .get_or_insert(short, || panic!("analysed twice"))
                .classification
                .parsed
        );
    }

    /// Every statement of the routing suites, analysed through the cache after a variant of
    /// it with other literal values, gets the analysis a fresh parse gives.
    #[test]
    fn shape_hits_agree_with_a_fresh_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/sql");
        let mut checked = 0;
        for (entry, key) in std::fs::read_dir(dir).expect("tests/sql").flat_map(|e| {
            [
                (
                    e.as_ref().expect("entry").path(),
                    KeyColumn::parse("data.id"),
                ),
                (e.expect("entry").path(), None),
            ]
        }) {
            let text = std::fs::read_to_string(entry).unwrap_or_default();
            for sql in text.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
                let cache = AnalysisCache::new(64, None);
                let variant = crate::variants::bump_digits(sql, false);
                cache.get_or_insert(&variant, || Analysis::of(&variant, key.as_ref(), None));
                let cached = cache.get_or_insert(sql, || Analysis::of(sql, key.as_ref(), None));
                assert_eq!(*cached, Analysis::of(sql, key.as_ref(), None), "{sql}");
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} statements");
    }
}
