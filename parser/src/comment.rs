//! Shard hints in SQL comments: PgCat's `shard_id_regex` and `sharding_key_regex`.
//!
//! The regexes are the syntax (PgCat has no built-in comment format): capture group 1 holds
//! a shard number or a sharding key. Only the first `regex_search_limit` bytes are searched,
//! so a long query costs a bounded amount; a shard id wins over a sharding key. Hashing the
//! key into a shard is the caller's job (`route.rs`), because it needs the pool's settings.

use regex::Regex;

/// A routing hint found in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// An explicit shard number (`shard_id_regex`). Not range-checked here.
    Shard(usize),
    /// A sharding key (`sharding_key_regex`), hashed by the pool's sharding function.
    Key(i64),
}

/// The compiled comment regexes of one pool.
#[derive(Debug, Clone)]
pub struct CommentHints {
    shard_id: Option<Regex>,
    sharding_key: Option<Regex>,
    search_limit: usize,
}

impl CommentHints {
    /// Compiles the pool's regexes. An invalid regex is a configuration error, reported to
    /// the caller so it can refuse the config (PgCat validates them at load).
    pub fn new(
        shard_id_regex: Option<&str>,
        sharding_key_regex: Option<&str>,
        search_limit: usize,
    ) -> Result<Self, regex::Error> {
        Ok(CommentHints {
            shard_id: shard_id_regex.map(Regex::new).transpose()?,
            sharding_key: sharding_key_regex.map(Regex::new).transpose()?,
            search_limit,
        })
    }

    /// Whether any regex is configured; when not, callers can skip `find` entirely.
    pub fn is_enabled(&self) -> bool {
        self.shard_id.is_some() || self.sharding_key.is_some()
    }

    /// The hint in the first `search_limit` bytes of `sql`, if any. A capture that does not
    /// fit its type (e.g. a shard number with 30 digits) is ignored, as in PgCat.
    pub fn find(&self, sql: &str) -> Option<Hint> {
        if !self.is_enabled() {
            return None;
        }
        let head = prefix(sql, self.search_limit);
        if let Some(shard) = capture(self.shard_id.as_ref(), head).and_then(|s| s.parse().ok()) {
            return Some(Hint::Shard(shard));
        }
        capture(self.sharding_key.as_ref(), head)
            .and_then(|s| s.parse().ok())
            .map(Hint::Key)
    }
}

fn capture<'t>(regex: Option<&Regex>, text: &'t str) -> Option<&'t str> {
    regex?.captures(text)?.get(1).map(|m| m.as_str().trim())
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a char boundary.
fn prefix(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD_ID: &str = r"/\* shard_id: (\d+) \*/";
    const SHARDING_KEY: &str = r"/\* sharding_key: (-?\d+) \*/";

    fn hints(limit: usize) -> CommentHints {
        CommentHints::new(Some(SHARD_ID), Some(SHARDING_KEY), limit).expect("valid regexes")
    }

    /// PgCat's `test_regex_shard_parsing`.
    #[test]
    fn pgcat_comment_parsing() {
        let h = hints(1000);
        assert_eq!(h.find(";"), None);
        assert_eq!(
            h.find("/* shard_id: 1 */ select 1 from foo;"),
            Some(Hint::Shard(1))
        );
        assert_eq!(
            h.find("/* shard_id: 0 */ select 1 from foo;"),
            Some(Hint::Shard(0))
        );
        assert_eq!(
            h.find("/* sharding_key: 6 */ select 1 from foo;"),
            Some(Hint::Key(6))
        );
        assert_eq!(
            h.find("/* sharding_key: -6 */ select 1"),
            Some(Hint::Key(-6))
        );
        assert_eq!(h.find("select 1 /* shard_id: 3 */"), Some(Hint::Shard(3)));
    }

    #[test]
    fn shard_id_wins_over_key() {
        let h = hints(1000);
        assert_eq!(
            h.find("/* sharding_key: 6 */ /* shard_id: 4 */ select 1"),
            Some(Hint::Shard(4))
        );
    }

    #[test]
    fn unparsable_capture_falls_through() {
        let h = hints(1000);
        assert_eq!(
            h.find("/* shard_id: 99999999999999999999999 */ /* sharding_key: 2 */"),
            Some(Hint::Key(2))
        );
        assert_eq!(h.find("/* sharding_key: 99999999999999999999999 */"), None);
    }

    #[test]
    fn search_limit_is_respected_and_char_safe() {
        let h = hints(10);
        assert_eq!(h.find("select 1 /* shard_id: 3 */"), None);
        let h = hints(20);
        assert_eq!(h.find("/* shard_id: 3 */ select 1"), Some(Hint::Shard(3)));
        // The limit falls inside a multi-byte character: no panic.
        for limit in 0..12 {
            let h = hints(limit);
            assert_eq!(h.find("éééééé /* shard_id: 3 */"), None);
        }
    }

    #[test]
    fn none_configured_or_invalid() {
        let h = CommentHints::new(None, None, 1000).expect("nothing to compile");
        assert!(!h.is_enabled());
        assert_eq!(h.find("/* shard_id: 1 */ select 1"), None);
        let only_key = CommentHints::new(None, Some(SHARDING_KEY), 1000).expect("valid");
        assert_eq!(only_key.find("/* shard_id: 1 */ select 1"), None);
        assert_eq!(only_key.find("/* sharding_key: 1 */"), Some(Hint::Key(1)));
        assert!(CommentHints::new(Some("(unclosed"), None, 1000).is_err());
        // A regex without a capture group never produces a hint.
        let no_group = CommentHints::new(Some("shard"), None, 1000).expect("valid");
        assert_eq!(no_group.find("shard 1"), None);
    }
}
