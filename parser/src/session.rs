//! Session state a statement leaves on the server: `SET`, `PREPARE`, `LISTEN`, advisory
//! locks, temp tables, held cursors …
//!
//! In transaction mode a server is shared by many clients, so anything a statement leaves
//! behind must be undone (or re-applied) before the next client gets the server. A command
//! tag alone cannot tell `CREATE TEMP TABLE` from `CREATE TABLE`, or see
//! `pg_advisory_lock()` inside a SELECT: that is what this module extracts from the AST
//! (`classify.rs` drives it) and, when sqlparser fails, from a cheap keyword scan.

use sqlparser::ast::{
    ContextModifier, DiscardObject, Expr, Ident, ObjectName, Reset, Set, Statement, UnaryOperator,
    Value,
};

/// Session state left on the server by a query. Empty (`Default`) = nothing to undo.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct SessionEffects {
    /// `SET name TO value`, in order: lower-cased name and the value PostgreSQL stores
    /// (literal text, or identifiers joined by ", " for lists like search_path); `None` =
    /// `SET name TO DEFAULT`. `SET LOCAL` and `SET TRANSACTION` are not listed (they end
    /// with the transaction).
    pub set: Vec<(String, Option<String>)>,
    /// `RESET name`, lower-cased.
    pub reset: Vec<String>,
    /// `RESET ALL`.
    pub reset_all: bool,
    /// `set_config(...)` called without a literal `true` for `is_local`.
    pub set_config: bool,
    /// SQL `PREPARE`.
    pub prepare: bool,
    /// `DEALLOCATE ALL`.
    pub deallocate_all: bool,
    /// `LISTEN`.
    pub listen: bool,
    /// `UNLISTEN *`.
    pub unlisten_all: bool,
    /// Session-level advisory lock taken (`pg_advisory_lock*`, `pg_try_advisory_lock*`).
    pub advisory_lock: bool,
    /// A temporary table, view or sequence was created.
    pub temp_table: bool,
    /// `DECLARE ... WITH HOLD` cursor.
    pub declare_with_hold: bool,
    /// `DISCARD ALL`.
    pub discard_all: bool,
    /// Any other lasting state (`SET ROLE`, `SET SESSION AUTHORIZATION`, `LOAD`, `DO`,
    /// `SET SESSION CHARACTERISTICS`, …): the caller resets with `DISCARD ALL`.
    pub other: bool,
}

impl SessionEffects {
    /// Whether the query left nothing behind that a reset must undo or a tracker must see.
    pub fn is_empty(&self) -> bool {
        // Every field named (a new one must be added here), none built or dropped: this is
        // asked of every routed query.
        let SessionEffects {
            set,
            reset,
            reset_all,
            set_config,
            prepare,
            deallocate_all,
            listen,
            unlisten_all,
            advisory_lock,
            temp_table,
            declare_with_hold,
            discard_all,
            other,
        } = self;
        set.is_empty()
            && reset.is_empty()
            && !(*reset_all
                | *set_config
                | *prepare
                | *deallocate_all
                | *listen
                | *unlisten_all
                | *advisory_lock
                | *temp_table
                | *declare_with_hold
                | *discard_all
                | *other)
    }
}

/// Records the session effects of one top-level statement (not those of function calls
/// inside it: `classify.rs` visits expressions for those).
pub(crate) fn statement_effects(statement: &Statement, effects: &mut SessionEffects) {
    match statement {
        Statement::Set(set) => set_effects(set, effects),
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => effects.reset_all = true,
            Reset::SessionAuthorization => effects.reset.push("session_authorization".into()),
            Reset::ConfigurationParameter(name) => effects.reset.push(object_name(name)),
        },
        Statement::Prepare { .. } => effects.prepare = true,
        Statement::Deallocate { name, .. } => {
            effects.deallocate_all |=
                name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
        }
        Statement::Discard { object_type } => {
            effects.discard_all |= matches!(object_type, DiscardObject::ALL);
        }
        Statement::LISTEN { .. } => effects.listen = true,
        Statement::UNLISTEN { channel } => {
            effects.unlisten_all |= channel.quote_style.is_none() && channel.value == "*";
        }
        Statement::Declare { stmts } => {
            effects.declare_with_hold |= stmts.iter().any(|d| d.hold == Some(true));
        }
        Statement::CreateTable(create) => {
            effects.temp_table |= create.temporary || in_pg_temp(&create.name);
        }
        Statement::CreateView(create) => {
            effects.temp_table |= create.temporary || in_pg_temp(&create.name);
        }
        Statement::CreateSequence {
            temporary, name, ..
        } => effects.temp_table |= *temporary || in_pg_temp(name),
        // A function in pg_temp lives as long as the session.
        Statement::CreateFunction(create) => effects.other |= in_pg_temp(&create.name),
        Statement::Load { .. } => effects.other = true,
        _ => {}
    }
}

fn set_effects(set: &Set, effects: &mut SessionEffects) {
    match set {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => {
            if matches!(scope, Some(ContextModifier::Local)) {
                return;
            }
            let name = object_name(variable);
            match set_value(&name, values) {
                Some(value) => effects.set.push((name, value)),
                None => effects.other = true,
            }
        }
        Set::SetTimeZone { local, value } => {
            if *local {
                return;
            }
            let value = match value {
                Expr::Identifier(id)
                    if id.quote_style.is_none()
                        && (id.value.eq_ignore_ascii_case("default")
                            || id.value.eq_ignore_ascii_case("local")) =>
                {
                    None
                }
                other => Some(element("timezone", other)),
            };
            effects.set.push(("timezone".into(), value));
        }
        Set::SetNames { charset_name, .. } => effects
            .set
            .push(("client_encoding".into(), Some(charset_name.value.clone()))),
        Set::SetNamesDefault {} => effects.set.push(("client_encoding".into(), None)),
        Set::SetTransaction { session, .. } => {
            // SET SESSION CHARACTERISTICS AS TRANSACTION changes the defaults of every
            // later transaction on this server; plain SET TRANSACTION ends with the txn.
            if *session {
                effects.other = true;
            }
        }
        Set::SetRole {
            context_modifier, ..
        } => {
            if !matches!(context_modifier, Some(ContextModifier::Local)) {
                effects.other = true;
            }
        }
        Set::SetSessionAuthorization(_)
        | Set::SetSessionParam(_)
        | Set::ParenthesizedAssignments { .. }
        | Set::MultipleAssignments { .. } => effects.other = true,
    }
}

/// Parameters PostgreSQL flags `GUC_LIST_QUOTE`: their list elements are stored with
/// identifier quoting (`SET search_path TO "$user", public` shows `"$user", public`).
const LIST_QUOTE: [&str; 5] = [
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

/// The value PostgreSQL would store for `SET name TO values`: `Some(None)` for DEFAULT,
/// `None` when the value cannot be represented (the caller then treats it as `other`).
fn set_value(name: &str, values: &[Expr]) -> Option<Option<String>> {
    match values {
        [] => None,
        [Expr::Identifier(id)]
            if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default") =>
        {
            Some(None)
        }
        _ => {
            let parts: Vec<String> = values.iter().map(|v| element(name, v)).collect();
            Some(Some(parts.join(", ")))
        }
    }
}

/// One element of a SET value list, as PostgreSQL's `flatten_set_variable_args` renders it.
fn element(name: &str, expr: &Expr) -> String {
    let text = match expr {
        // Unquoted identifiers are folded to lower case by PostgreSQL's lexer.
        Expr::Identifier(id) => ident_text(id),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => return n.clone(),
            Value::Boolean(b) => return b.to_string(),
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s)
            | Value::NationalStringLiteral(s)
            | Value::DoubleQuotedString(s) => s.clone(),
            Value::DollarQuotedString(s) => s.value.clone(),
            other => return other.to_string(),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => return format!("-{}", element(name, expr)),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => return element(name, expr),
        other => return other.to_string(),
    };
    if LIST_QUOTE.contains(&name) {
        quote_identifier(&text)
    } else {
        text
    }
}

fn ident_text(id: &Ident) -> String {
    if id.quote_style.is_none() {
        id.value.to_lowercase()
    } else {
        id.value.clone()
    }
}

/// PostgreSQL's `quote_identifier`, minus its keyword check (a schema named after a
/// reserved word is vanishingly rare in `search_path`).
fn quote_identifier(text: &str) -> String {
    let mut bytes = text.bytes();
    let safe = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'$'));
    if safe {
        text.to_string()
    } else {
        format!("\"{}\"", text.replace('"', "\"\""))
    }
}

/// Dotted, lower-cased name (`SET myapp.User_Id` → `myapp.user_id`).
fn object_name(name: &ObjectName) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part.as_ident() {
            Some(id) => id.value.to_lowercase(),
            None => part.to_string().to_lowercase(),
        })
        .collect();
    parts.join(".")
}

/// `CREATE TABLE pg_temp.t` creates a temporary table without the TEMP keyword.
fn in_pg_temp(name: &ObjectName) -> bool {
    name.0.len() > 1
        && name.0[0]
            .as_ident()
            .is_some_and(|id| id.value.eq_ignore_ascii_case("pg_temp"))
}

/// Effects of text sqlparser could not parse (or was not allowed to): a keyword scan of
/// each `;`-separated piece. It may over-report (a `;` inside a string literal), which only
/// costs an unneeded reset; it must not under-report the common cases.
pub(crate) fn scan_effects(sql: &str, effects: &mut SessionEffects) {
    for piece in sql.split(';') {
        let words: Vec<&str> = skip_comments(piece).split_whitespace().take(4).collect();
        let word = |i: usize| words.get(i).copied().unwrap_or("");
        let is = |i: usize, kw: &str| word(i).eq_ignore_ascii_case(kw);
        match word(0).to_ascii_uppercase().as_str() {
            "SET" => effects.other |= !(is(1, "LOCAL") || is(1, "TRANSACTION")),
            "RESET" => {
                if is(1, "ALL") {
                    effects.reset_all = true;
                } else if !word(1).is_empty() {
                    effects.reset.push(word(1).to_lowercase());
                }
            }
            "PREPARE" => effects.prepare |= !is(1, "TRANSACTION"),
            "DEALLOCATE" => {
                effects.deallocate_all |= is(1, "ALL") || (is(1, "PREPARE") && is(2, "ALL"));
            }
            "DISCARD" => effects.discard_all |= is(1, "ALL"),
            "LISTEN" => effects.listen = true,
            "UNLISTEN" => effects.unlisten_all |= word(1) == "*",
            "DECLARE" => effects.declare_with_hold |= contains_ci(piece, "with hold"),
            "CREATE" => {
                effects.temp_table |= (1..4).any(|i| is(i, "TEMP") || is(i, "TEMPORARY"))
                    || contains_ci(piece, "pg_temp.");
            }
            "LOAD" | "DO" => effects.other = true,
            _ => {}
        }
    }
    effects.set_config |= contains_ci(sql, "set_config");
    effects.advisory_lock |=
        contains_ci(sql, "pg_advisory_lock") || contains_ci(sql, "pg_try_advisory_lock");
}

/// The text after any leading `--` and `/* */` comments.
pub(crate) fn skip_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return text;
        }
    }
}

/// ASCII case-insensitive substring test, without allocating.
pub(crate) fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some(&first) = n.first() else {
        return true;
    };
    // Anchored on a byte of the needle that has no case (`_`, `.`, a space) when it has
    // one: a single memchr pass finds the few places worth comparing.
    let (at, anchor) = n
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .map_or((0, first), |i| (i, n[i]));
    let found_at = |pos: usize| {
        pos >= at
            && h.get(pos - at..pos - at + n.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(n))
    };
    if anchor.is_ascii_alphabetic() {
        let (lower, upper) = (anchor.to_ascii_lowercase(), anchor.to_ascii_uppercase());
        memchr::memchr2_iter(lower, upper, h).any(found_at)
    } else {
        memchr::memchr_iter(anchor, h).any(found_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parsed::Parsed;

    /// Empty means equal to the default, field by field.
    #[test]
    fn empty_is_the_default() {
        assert!(SessionEffects::default().is_empty());
        let flags: [fn(&mut SessionEffects); 13] = [
            |e| e.set.push(("a".into(), None)),
            |e| e.reset.push("a".into()),
            |e| e.reset_all = true,
            |e| e.set_config = true,
            |e| e.prepare = true,
            |e| e.deallocate_all = true,
            |e| e.listen = true,
            |e| e.unlisten_all = true,
            |e| e.advisory_lock = true,
            |e| e.temp_table = true,
            |e| e.declare_with_hold = true,
            |e| e.discard_all = true,
            |e| e.other = true,
        ];
        for (i, set) in flags.iter().enumerate() {
            let mut e = SessionEffects::default();
            set(&mut e);
            assert_ne!(e, SessionEffects::default(), "{i}");
            assert!(!e.is_empty(), "{i}");
        }
    }

    #[test]
    fn contains_ci_matches_the_plain_definition() {
        let plain = |h: &str, n: &str| {
            n.is_empty()
                || h.as_bytes()
                    .windows(n.len())
                    .any(|w| w.eq_ignore_ascii_case(n.as_bytes()))
        };
        let needles = ["set_config", "with hold", "pg_temp.", "abc", "", "_"];
        let hays = [
            "SELECT SET_CONFIG('a', 'b', false)",
            "select set_configx",
            "_config set_",
            "set_confi",
            "x_set_config_",
            "DECLARE c CURSOR WITH  HOLD",
            "declare c cursor With Hold for select 1",
            "create table pg_temp.t ()",
            "pg_temp",
            "ABC",
            "ab",
            "",
            "é_set_config",
        ];
        for h in hays {
            for n in needles {
                assert_eq!(contains_ci(h, n), plain(h, n), "{h:?} {n:?}");
            }
        }
    }

    fn effects(sql: &str) -> SessionEffects {
        let parsed = Parsed::parse(sql).expect("test SQL parses");
        let mut e = SessionEffects::default();
        for s in parsed.statements() {
            statement_effects(s, &mut e);
        }
        e
    }

    fn set(sql: &str) -> Vec<(String, Option<String>)> {
        effects(sql).set
    }

    fn pair(name: &str, value: Option<&str>) -> Vec<(String, Option<String>)> {
        vec![(name.to_string(), value.map(str::to_string))]
    }

    #[test]
    fn set_values_as_postgres_stores_them() {
        assert_eq!(
            set("SET application_name = 'x'"),
            pair("application_name", Some("x"))
        );
        assert_eq!(
            set("SET Application_Name TO 'MyApp'"),
            pair("application_name", Some("MyApp"))
        );
        assert_eq!(
            set("SET statement_timeout = 5"),
            pair("statement_timeout", Some("5"))
        );
        assert_eq!(set("SET x.y = -1"), pair("x.y", Some("-1")));
        assert_eq!(
            set("SET enable_seqscan = OFF"),
            pair("enable_seqscan", Some("off"))
        );
        assert_eq!(set("SET jit = true"), pair("jit", Some("true")));
        assert_eq!(set("SET work_mem TO DEFAULT"), pair("work_mem", None));
        assert_eq!(
            set("SET work_mem TO 'DEFAULT'"),
            pair("work_mem", Some("DEFAULT"))
        );
        assert_eq!(
            set("SET datestyle TO iso, mdy"),
            pair("datestyle", Some("iso, mdy"))
        );
        assert_eq!(
            set("SET search_path TO a, b"),
            pair("search_path", Some("a, b"))
        );
        assert_eq!(
            set("SET search_path = \"$user\", public"),
            pair("search_path", Some("\"$user\", public"))
        );
        assert_eq!(
            set("set search_path to 'My Schema', 'b'"),
            pair("search_path", Some("\"My Schema\", b"))
        );
        assert_eq!(set("SET x = $$a$$"), pair("x", Some("a")));
        assert_eq!(
            set("SET SESSION work_mem = '4MB'"),
            pair("work_mem", Some("4MB"))
        );
        assert_eq!(set("SET TIME ZONE 'UTC'"), pair("timezone", Some("UTC")));
        assert_eq!(set("SET TIME ZONE LOCAL"), pair("timezone", None));
        assert_eq!(set("SET TIME ZONE DEFAULT"), pair("timezone", None));
        assert_eq!(
            set("SET NAMES 'UTF8'"),
            pair("client_encoding", Some("UTF8"))
        );
        assert_eq!(set("SET a = 1; SET b = 2").len(), 2);
    }

    #[test]
    fn transaction_scoped_sets_are_not_session_state() {
        for sql in [
            "SET LOCAL x = 1",
            "SET LOCAL ROLE bob",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert!(effects(sql).is_empty(), "{sql}");
        }
    }

    #[test]
    fn other_session_state() {
        for sql in [
            "SET ROLE bob",
            "SET SESSION AUTHORIZATION bob",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "LOAD 'auto_explain'",
        ] {
            let e = effects(sql);
            assert!(e.other && e.set.is_empty(), "{sql}: {e:?}");
        }
    }

    #[test]
    fn statement_flags() {
        assert!(effects("RESET ALL").reset_all);
        assert_eq!(
            effects("RESET search_path").reset,
            vec!["search_path".to_string()]
        );
        assert_eq!(effects("RESET ROLE").reset, vec!["role".to_string()]);
        assert_eq!(
            effects("RESET SESSION AUTHORIZATION").reset,
            vec!["session_authorization".to_string()]
        );
        assert!(effects("PREPARE p AS SELECT 1").prepare);
        assert!(effects("DEALLOCATE ALL").deallocate_all);
        assert!(!effects("DEALLOCATE foo").deallocate_all);
        assert!(effects("DISCARD ALL").discard_all);
        assert!(!effects("DISCARD PLANS").discard_all);
        assert!(effects("LISTEN x").listen);
        assert!(effects("UNLISTEN *").unlisten_all);
        assert!(!effects("UNLISTEN x").unlisten_all);
        assert!(effects("DECLARE c CURSOR WITH HOLD FOR SELECT 1").declare_with_hold);
        assert!(!effects("DECLARE c CURSOR FOR SELECT 1").declare_with_hold);
        assert!(effects("CREATE TEMP TABLE t (a int)").temp_table);
        assert!(effects("CREATE TEMPORARY TABLE t AS SELECT 1").temp_table);
        assert!(effects("CREATE TABLE pg_temp.t (a int)").temp_table);
        assert!(effects("CREATE TEMPORARY VIEW v AS SELECT 1").temp_table);
        assert!(effects("CREATE TEMP SEQUENCE s").temp_table);
        assert!(!effects("CREATE TABLE t (a int)").temp_table);
        assert!(effects("SELECT 1").is_empty());
    }

    #[test]
    fn keyword_scan() {
        let scan = |sql: &str| {
            let mut e = SessionEffects::default();
            scan_effects(sql, &mut e);
            e
        };
        assert!(scan("LISTEN x").listen);
        assert!(scan("unlisten *").unlisten_all);
        assert!(scan("DISCARD ALL").discard_all);
        assert!(scan("DEALLOCATE ALL").deallocate_all);
        assert!(scan("DEALLOCATE PREPARE ALL").deallocate_all);
        assert!(scan("/* hi */ -- there\n PREPARE p AS x").prepare);
        assert!(!scan("PREPARE TRANSACTION 'x'").prepare);
        assert!(scan("SELECT 1; SET x = weird syntax").other);
        assert!(!scan("SET LOCAL x = weird").other);
        assert!(scan("DO $$ BEGIN END $$").other);
        assert!(scan("RESET ALL").reset_all);
        assert!(scan("create  temporary table t").temp_table);
        assert!(scan("DECLARE c CURSOR WITH HOLD FOR x").declare_with_hold);
        assert!(scan("SELECT pg_catalog.SET_CONFIG('a', 'b', false) ???").set_config);
        assert!(scan("SELECT pg_try_advisory_lock(1) ???").advisory_lock);
        assert!(scan("SELECT ??? FROM t").is_empty());
        assert!(scan("").is_empty());
        assert!(scan("/* unterminated").is_empty());
    }
}
