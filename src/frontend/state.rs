//! Session state in transaction mode: which statements leave state on the server that
//! another client must not see, and which `SET`s are the client's own to keep.
//!
//! Statements are classified by the parser crate (command tags cannot tell `CREATE TEMP
//! TABLE` from `CREATE TABLE`, or see `pg_advisory_lock()` inside a SELECT). A cheap keyword
//! check runs first so ordinary queries never reach sqlparser, and results are cached by
//! query text in the pool's router (one cache per pool for routing and state tracking).

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use pgcat_parser::{Analysis, SessionEffects};

use super::request::text;
use crate::backend::Dirty;
use crate::pool::router::PoolRouter;

/// Words that start, or functions that appear in, statements with session effects.
const HINTS: [&str; 12] = [
    "set",
    "reset",
    "prepare",
    "listen",
    "lock",
    "temp",
    "declare",
    "discard",
    "load",
    "deallocate",
    "role",
    "authorization",
];

/// The hints as one case-insensitive automaton: a single pass over the query, one table
/// step per byte.
static HINT_SEARCH: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .kind(Some(AhoCorasickKind::DFA))
        .build(HINTS)
        .expect("fixed ASCII patterns")
});

/// The hints for the SIMD searcher (Teddy), which has no case-insensitive mode: it runs on
/// a lower-cased copy of the query. `None` where the CPU has no support for it.
static HINT_SEARCH_SIMD: LazyLock<Option<aho_corasick::packed::Searcher>> =
    LazyLock::new(|| aho_corasick::packed::Searcher::new(HINTS));

/// Queries up to this long are lower-cased on the stack for the SIMD search; longer ones
/// take the automaton.
const FOLD_MAX: usize = 512;

/// Cheap pre-check on a query's bytes: false means the text cannot leave session state.
/// Any of the hints anywhere (case-insensitive) sends it to the parser.
pub fn may_change_session(sql: &[u8]) -> bool {
    match (&*HINT_SEARCH_SIMD, sql.len()) {
        (Some(searcher), 0..=128) => find_folded::<128>(searcher, sql),
        (Some(searcher), 0..=FOLD_MAX) => find_folded::<FOLD_MAX>(searcher, sql),
        _ => HINT_SEARCH.is_match(sql),
    }
}

/// Searches a copy of `sql` (at most `N` bytes) with bit 0x20 set in every byte: a byte
/// becomes a lower-case letter exactly when it is that letter in either case, and the
/// hints are lower-case letters, so the search is case-insensitive. (A loop that
/// vectorises, on a buffer sized to the text, short texts not paying for a large one.)
fn find_folded<const N: usize>(searcher: &aho_corasick::packed::Searcher, sql: &[u8]) -> bool {
    let mut folded = [0u8; N];
    let folded = &mut folded[..sql.len()];
    for (f, &b) in folded.iter_mut().zip(sql) {
        *f = b | 0x20;
    }
    searcher.find(&*folded).is_some()
}

/// The router's analysis of a text, if it parsed.
fn parsed(routed: Option<&Analysis>) -> Option<&Analysis> {
    routed.filter(|a| a.classification.parsed)
}

/// Session effects of query texts, from the pool router's analysis cache (one cache per
/// pool serves routing and state tracking).
#[derive(Clone, Copy)]
pub struct Effects<'a>(&'a PoolRouter);

impl<'a> Effects<'a> {
    pub fn new(router: &'a PoolRouter) -> Effects<'a> {
        Effects(router)
    }

    /// The session effects of the query text in `body` (as on the wire, up to its NUL);
    /// `None` when it has none. `routed` is the router's analysis of the same text, if it
    /// made one: when that parsed, it has the same statements and so the same answer, and
    /// no second lookup is needed.
    pub fn of(&self, body: &[u8], routed: Option<&Analysis>) -> Option<SessionEffects> {
        let session = match parsed(routed) {
            Some(analysis) => &analysis.classification.session,
            None if !may_change_session(body) => return None,
            None => &self.analysis(text(body)).classification.session,
        };
        (!session.is_empty()).then(|| session.clone())
    }

    /// `sql` opens or ends a transaction (`BEGIN; SET …; ROLLBACK` keeps nothing) or could
    /// not be parsed. Only asked of texts [`Effects::of`] found effects in (cached then, or
    /// in `routed`, as there).
    pub fn controls_transaction(&self, body: &[u8], routed: Option<&Analysis>) -> bool {
        let cached;
        let c = match parsed(routed) {
            Some(analysis) => &analysis.classification,
            None => {
                cached = self.analysis(text(body));
                &cached.classification
            }
        };
        !c.parsed || c.begin.is_some() || c.ends_transaction
    }

    fn analysis(&self, sql: &str) -> std::sync::Arc<Analysis> {
        self.0.analyze_session(sql)
    }
}

/// Settings a client changed while it held a server, whose values on that server become
/// the client's own when it is released (a commit keeps them, a rollback undoes them).
#[derive(Debug, Default)]
pub struct Changed {
    /// Set or reset by name (`SET`, `RESET`).
    names: Vec<String>,
    /// Changed in a way the text does not name (`set_config()` with bound arguments, a
    /// function, a setting the server reported changing): every session setting is read.
    unnamed: bool,
}

impl Changed {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.unnamed
    }

    /// The server reported a setting changing (ParameterStatus).
    pub fn reported(&mut self) {
        self.unnamed = true;
    }

    /// What to read back from the server: the settings by name, or (`None`) every one the
    /// session set.
    pub fn names(&self) -> Option<&[String]> {
        (!self.unnamed).then_some(&self.names[..])
    }
}

/// What a statement run inside a flow did to its server: the parameters it changed (their
/// values are read back when the server is released) into `changed`, and what the server
/// must undo into `dirty`.
pub fn note(changed: &mut Changed, dirty: &mut Dirty, e: &SessionEffects) {
    note_settings(changed, e);
    merge(dirty, self::dirty(e));
}

/// Records the parameters `e` changes (`RESET ALL` and other state are handled by resets,
/// not tracked by name).
fn note_settings(changed: &mut Changed, e: &SessionEffects) {
    changed.unnamed |= e.set_config;
    for name in e.set.iter().map(|(n, _)| n).chain(&e.reset) {
        if !changed.names.contains(name) {
            changed.names.push(name.clone());
        }
    }
}

/// Settings that are the server's or the session's identity, never a client's to carry to
/// another server (`SET ROLE` and `SET SESSION AUTHORIZATION` reset the server instead).
const NOT_CARRIED: [&str; 2] = ["role", "session_authorization"];

/// The client's parameters once a server holding them reports its session settings
/// (`name`, value; as `pg_settings` with source `session` lists them): its startup
/// parameters with those on top, so a `RESET` returns to the startup value as it does
/// in PostgreSQL.
pub fn from_session_settings(
    startup: &[(String, String)],
    session: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut params = startup.to_vec();
    for (name, value) in session {
        let name = name.to_ascii_lowercase();
        if NOT_CARRIED.contains(&name.as_str()) {
            continue;
        }
        params.retain(|(n, _)| *n != name);
        params.push((name, value));
    }
    params.sort();
    params
}

/// Only plain `SET`/`RESET` of parameters: state the client may keep as its own.
pub fn only_settings(e: &SessionEffects) -> bool {
    let settings = SessionEffects {
        set: e.set.clone(),
        reset: e.reset.clone(),
        reset_all: e.reset_all,
        ..SessionEffects::default()
    };
    *e == settings
}

/// What a server must undo after these effects.
fn dirty(e: &SessionEffects) -> Dirty {
    Dirty {
        settings: !e.set.is_empty() || !e.reset.is_empty() || e.reset_all || e.set_config,
        prepared: e.prepare,
        listen: e.listen,
        advisory: e.advisory_lock,
        temp: e.temp_table,
        cursors: e.declare_with_hold,
        everything: e.other,
    }
}

/// Adds `more` to `into`.
fn merge(into: &mut Dirty, more: Dirty) {
    into.settings |= more.settings;
    into.prepared |= more.prepared;
    into.listen |= more.listen;
    into.advisory |= more.advisory;
    into.temp |= more.temp;
    into.cursors |= more.cursors;
    into.everything |= more.everything;
}

/// Applies a client's successful `SET`/`RESET` (outside a transaction) to its remembered
/// parameters (`params`, lower-case names, sorted). `startup` holds the values it logged in
/// with, which `RESET` returns to.
pub fn remember(
    params: &mut Vec<(String, String)>,
    startup: &[(String, String)],
    e: &SessionEffects,
) {
    let restore = |params: &mut Vec<(String, String)>, name: &str| {
        params.retain(|(n, _)| n != name);
        if let Some(p) = startup.iter().find(|(n, _)| n == name) {
            params.push(p.clone());
        }
    };
    if e.reset_all {
        *params = startup.to_vec();
    }
    for (name, value) in &e.set {
        match value {
            Some(v) => {
                params.retain(|(n, _)| n != name);
                params.push((name.clone(), v.clone()));
            }
            None => restore(params, name),
        }
    }
    for name in &e.reset {
        restore(params, name);
    }
    params.sort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_router() -> PoolRouter {
        let hints = pgcat_parser::CommentHints::new(None, None, 1000).expect("no regexes");
        PoolRouter::from_parts(pgcat_parser::PoolRouting::default(), hints)
    }

    #[test]
    fn prefilter_lets_plain_queries_through() {
        assert!(!may_change_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"
        ));
        assert!(may_change_session(b"select pg_advisory_lock(1)"));
        assert!(may_change_session(b"CREATE TEMP TABLE t (a int)"));
        assert!(may_change_session(b"SELECT 1; SET x = 1"));
        assert!(may_change_session(b"SeT"));
        assert!(!may_change_session(b"se"));
        assert!(!may_change_session(b""));
    }

    /// The scan finds exactly what comparing every hint at every position finds, on texts
    /// made of the hints' letters, their neighbours and non-ASCII bytes.
    #[test]
    fn prefilter_matches_the_plain_definition() {
        let plain = |sql: &[u8]| {
            (0..sql.len()).any(|i| {
                HINTS.iter().any(|h| {
                    sql[i..]
                        .get(..h.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(h.as_bytes()))
                })
            })
        };
        let alphabet = b"setSETrlpRLPadoinTmckAzu@[`{ _;\xc3\xa9";
        let mut seed = 0x9e37_79b9_u32;
        for len in 0..400 {
            let sql: Vec<u8> = (0..len % 40)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[seed as usize % alphabet.len()]
                })
                .collect();
            assert_eq!(may_change_session(&sql), plain(&sql), "{sql:?}");
        }
        // Around the lengths where the folded copy's buffer grows and where the SIMD search
        // hands over to the automaton, with a hint (or not) at either end.
        for len in (120..136)
            .chain(FOLD_MAX - 8..FOLD_MAX + 8)
            .chain([2 * FOLD_MAX])
        {
            for (at, hint) in [(None, ""), (Some(0), "LoCk"), (Some(len - 4), "TeMp")] {
                let mut sql = vec![b'x'; len];
                if let Some(at) = at {
                    sql[at..at + 4].copy_from_slice(hint.as_bytes());
                }
                assert_eq!(may_change_session(&sql), plain(&sql), "{len} {at:?}");
            }
        }
        for hint in HINTS {
            assert!(may_change_session(hint.to_uppercase().as_bytes()));
        }
    }

    #[test]
    fn effects_are_classified_and_cached() {
        let router = test_router();
        let e = Effects::new(&router);
        assert!(e.of(b"SELECT 1", None).is_none());
        let set = e.of(b"SET search_path = a, b", None).unwrap();
        assert!(only_settings(&set));
        assert!(dirty(&set).settings);
        let temp = e.of(b"create temporary table t (a int)", None).unwrap();
        assert!(!only_settings(&temp));
        assert!(dirty(&temp).temp);
        assert!(dirty(&e.of(b"SELECT pg_advisory_lock(7)", None).unwrap()).advisory);
        // An UPDATE's SET is not a session SET.
        assert!(e.of(b"UPDATE t SET a = 1", None).is_none());
    }

    #[test]
    fn the_routers_parsed_analysis_gives_the_same_answers() {
        let router = test_router();
        let e = Effects::new(&router);
        for sql in [
            "SELECT 1",
            "SET search_path = a, b",
            "BEGIN; SET statement_timeout = 5; COMMIT",
            "create temporary table t (a int)",
            "SELECT pg_advisory_lock(7)",
            "UPDATE t SET a = 1",
        ] {
            let routed = Analysis::of(sql, None, Some(1024));
            assert!(routed.classification.parsed, "{sql}");
            let body = sql.as_bytes();
            assert_eq!(e.of(body, Some(&routed)), e.of(body, None), "{sql}");
            assert_eq!(
                e.controls_transaction(body, Some(&routed)),
                e.controls_transaction(body, None),
                "{sql}"
            );
        }
        // One that did not parse (longer than the router's limit) is not used.
        let long = "SET search_path = a";
        let unparsed = Analysis::of(long, None, Some(4));
        assert!(!unparsed.classification.parsed);
        assert_eq!(
            e.of(long.as_bytes(), Some(&unparsed)),
            e.of(long.as_bytes(), None)
        );
        assert!(e.of(long.as_bytes(), None).is_some());
    }

    #[test]
    fn remembered_settings_follow_set_and_reset() {
        let startup = vec![("application_name".to_string(), "psql".to_string())];
        let mut params = startup.clone();
        let router = test_router();
        let e = Effects::new(&router);
        remember(
            &mut params,
            &startup,
            &e.of(b"SET application_name = 'x'", None).unwrap(),
        );
        remember(
            &mut params,
            &startup,
            &e.of(b"SET statement_timeout = 1234", None).unwrap(),
        );
        assert_eq!(
            params,
            vec![
                ("application_name".to_string(), "x".to_string()),
                ("statement_timeout".to_string(), "1234".to_string())
            ]
        );
        remember(&mut params, &startup, &e.of(b"RESET ALL", None).unwrap());
        assert_eq!(params, startup);
    }
}
