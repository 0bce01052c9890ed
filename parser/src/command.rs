//! PgCat's SQL extensions: `SET SHARD TO`, `SET SHARDING KEY TO`, `SET SERVER ROLE TO`,
//! `SET PRIMARY READS TO` and their `SHOW` counterparts.
//!
//! They are matched here, before sqlparser, because sqlparser rejects most of them and
//! PostgreSQL must never see them. The matcher is a tiny hand-written tokenizer rather than
//! PgCat's regex set: an ordinary query (`SELECT ...`) is dismissed after looking at its
//! first letter, so the check costs nothing on the hot path.
//!
//! Accepted syntax is a superset of PgCat's regexes: keywords in any case, any whitespace
//! between words, the value quoted (`'…'`) or bare, an optional trailing `;`, surrounding
//! whitespace. This module only parses; applying a command to a session lives in `route.rs`.

use std::fmt;

/// The target of `SET SHARD TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSelector {
    /// A shard number. Not range-checked here: the caller knows the shard count.
    Number(usize),
    /// `ANY`: the caller picks a shard at random (PgCat semantics).
    Any,
    /// `ALL`: statements with no shard of their own run on every shard.
    All,
}

/// The value of `SET SERVER ROLE TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RoleSetting {
    /// Always the primary; the query parser is off for routing.
    Primary,
    /// Always a replica; the query parser is off for routing.
    Replica,
    /// Any server; the query parser is off for routing.
    Any,
    /// The query parser decides (turns it on even if the pool has it off).
    Auto,
    /// Back to the pool's `default_role` and `query_parser_enabled`.
    #[default]
    Default,
}

/// The value of `SET PRIMARY READS TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum PrimaryReads {
    /// Reads may go to the primary too (any server).
    On,
    /// Reads go to replicas only.
    Off,
    /// Back to the pool's `primary_reads_enabled`.
    #[default]
    Default,
}

/// One recognised SQL extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `SET SHARD TO n | ANY`
    SetShard(ShardSelector),
    /// `SET SHARDING KEY TO k` (hashed by the pool's sharding function)
    SetShardingKey(i64),
    /// `SET SERVER ROLE TO primary | replica | any | auto | default`
    SetServerRole(RoleSetting),
    /// `SET PRIMARY READS TO on | off | default`
    SetPrimaryReads(PrimaryReads),
    /// `SHOW SHARD`
    ShowShard,
    /// `SHOW SERVER ROLE`
    ShowServerRole,
    /// `SHOW PRIMARY READS`
    ShowPrimaryReads,
}

/// A recognised extension with a bad value. The pooler answers it with SQLSTATE 22023
/// (invalid_parameter_value) and this message, which names the valid values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// Human-readable text for the ErrorResponse.
    pub message: String,
}

impl CommandError {
    fn new(message: String) -> Self {
        CommandError { message }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

/// Recognises a PgCat SQL extension.
///
/// `None`: not an extension, send it on (this includes real PostgreSQL commands such as
/// `SET search_path TO x` and `SHOW work_mem`). `Some(Err)`: the keywords are ours but the
/// value is not valid; answer with an error and do not forward.
pub fn parse_command(sql: &str) -> Option<Result<Command, CommandError>> {
    if !may_be_command(sql.as_bytes()) {
        return None;
    }
    let mut words = Words::new(sql.trim_start());
    let first = words.word()?;
    if first.eq_ignore_ascii_case("set") {
        parse_set(&mut words)
    } else if first.eq_ignore_ascii_case("show") {
        parse_show(&mut words)
    } else {
        None
    }
}

/// Fast pre-check on raw query bytes (before any UTF-8 check): every extension starts
/// with SET or SHOW, so anything else is dismissed without further work.
pub fn may_be_command(sql: &[u8]) -> bool {
    let trimmed = sql.trim_ascii_start();
    trimmed
        .get(..3)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"set") || w.eq_ignore_ascii_case(b"sho"))
}

fn parse_set(words: &mut Words<'_>) -> Option<Result<Command, CommandError>> {
    let second = words.word()?;
    let (what, kind): (&str, SetKind) = if second.eq_ignore_ascii_case("shard") {
        ("SET SHARD", SetKind::Shard)
    } else if second.eq_ignore_ascii_case("sharding") {
        if !words.word()?.eq_ignore_ascii_case("key") {
            return None;
        }
        ("SET SHARDING KEY", SetKind::ShardingKey)
    } else if second.eq_ignore_ascii_case("server") {
        if !words.word()?.eq_ignore_ascii_case("role") {
            return None;
        }
        ("SET SERVER ROLE", SetKind::ServerRole)
    } else if second.eq_ignore_ascii_case("primary") {
        if !words.word()?.eq_ignore_ascii_case("reads") {
            return None;
        }
        ("SET PRIMARY READS", SetKind::PrimaryReads)
    } else {
        return None;
    };
    // From here on the statement is ours: PostgreSQL has no such parameters (custom
    // parameters need a dot), so a malformed tail is our error, not PostgreSQL's.
    if !words.assignment() {
        return Some(Err(CommandError::new(format!(
            "syntax error in {what}: expected TO followed by a value"
        ))));
    }
    let value = match words.value() {
        Ok(value) => value,
        Err(()) => {
            return Some(Err(CommandError::new(format!(
                "syntax error in {what}: unterminated quoted value"
            ))))
        }
    };
    if !words.at_end() {
        return Some(Err(CommandError::new(format!(
            "syntax error in {what}: unexpected text after the value"
        ))));
    }
    Some(kind.parse_value(value))
}

#[derive(Clone, Copy)]
enum SetKind {
    Shard,
    ShardingKey,
    ServerRole,
    PrimaryReads,
}

impl SetKind {
    fn parse_value(self, value: &str) -> Result<Command, CommandError> {
        match self {
            SetKind::Shard => {
                if value.eq_ignore_ascii_case("any") {
                    Ok(Command::SetShard(ShardSelector::Any))
                } else if value.eq_ignore_ascii_case("all") {
                    Ok(Command::SetShard(ShardSelector::All))
                } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    value
                        .parse::<usize>()
                        .map(|n| Command::SetShard(ShardSelector::Number(n)))
                        .map_err(|_| invalid_shard(value))
                } else {
                    Err(invalid_shard(value))
                }
            }
            SetKind::ShardingKey => value
                .parse::<i64>()
                .map(Command::SetShardingKey)
                .map_err(|_| {
                    CommandError::new(format!(
                        "invalid value for SET SHARDING KEY: \"{value}\" (valid values: an integer between {} and {})",
                        i64::MIN,
                        i64::MAX
                    ))
                }),
            SetKind::ServerRole => {
                let role = match value.to_ascii_lowercase().as_str() {
                    "primary" => RoleSetting::Primary,
                    "replica" => RoleSetting::Replica,
                    "any" => RoleSetting::Any,
                    "auto" => RoleSetting::Auto,
                    "default" => RoleSetting::Default,
                    _ => {
                        return Err(CommandError::new(format!(
                            "invalid value for SET SERVER ROLE: \"{value}\" (valid values: primary, replica, any, auto, default)"
                        )))
                    }
                };
                Ok(Command::SetServerRole(role))
            }
            SetKind::PrimaryReads => {
                let reads = match value.to_ascii_lowercase().as_str() {
                    "on" => PrimaryReads::On,
                    "off" => PrimaryReads::Off,
                    "default" => PrimaryReads::Default,
                    _ => {
                        return Err(CommandError::new(format!(
                            "invalid value for SET PRIMARY READS: \"{value}\" (valid values: on, off, default)"
                        )))
                    }
                };
                Ok(Command::SetPrimaryReads(reads))
            }
        }
    }
}

fn invalid_shard(value: &str) -> CommandError {
    CommandError::new(format!(
        "invalid value for SET SHARD: \"{value}\" (valid values: a shard number, any, or all)"
    ))
}

fn parse_show(words: &mut Words<'_>) -> Option<Result<Command, CommandError>> {
    let second = words.word()?;
    let command = if second.eq_ignore_ascii_case("shard") {
        Command::ShowShard
    } else if second.eq_ignore_ascii_case("server") {
        if !words.word()?.eq_ignore_ascii_case("role") {
            return None;
        }
        Command::ShowServerRole
    } else if second.eq_ignore_ascii_case("primary") {
        if !words.word()?.eq_ignore_ascii_case("reads") {
            return None;
        }
        Command::ShowPrimaryReads
    } else {
        return None;
    };
    // `SHOW SHARD x` is not ours; let PostgreSQL produce its own error for it.
    words.at_end().then_some(Ok(command))
}

/// A cursor over the statement text that yields keywords and one value.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(text: &'a str) -> Self {
        Words { rest: text }
    }

    fn skip_blank(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// The next run of ASCII letters/underscores (a keyword), or `None`.
    fn word(&mut self) -> Option<&'a str> {
        self.skip_blank();
        let end = self
            .rest
            .bytes()
            .position(|b| !(b.is_ascii_alphabetic() || b == b'_'))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        // A keyword must end at a blank, a quote, `;`, `=` or the end of the text, so
        // `SET shard_count ...` or `SHOW shard.x` are not mistaken for ours.
        match self.rest.as_bytes().get(end) {
            None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\'' | b';' | b'=') => {}
            Some(_) => return None,
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }

    /// Consumes `TO` or `=`.
    fn assignment(&mut self) -> bool {
        self.skip_blank();
        if let Some(rest) = self.rest.strip_prefix('=') {
            self.rest = rest;
            return true;
        }
        let bytes = self.rest.as_bytes();
        if bytes.len() >= 2 && bytes[..2].eq_ignore_ascii_case(b"to") {
            match bytes.get(2) {
                None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\'') => {
                    self.rest = &self.rest[2..];
                    return true;
                }
                Some(_) => {}
            }
        }
        false
    }

    /// A `'quoted'` value (with `''` as an escaped quote, kept simple: the raw text
    /// between the quotes) or a bare run of non-blank, non-`;` characters.
    fn value(&mut self) -> Result<&'a str, ()> {
        self.skip_blank();
        if let Some(inner) = self.rest.strip_prefix('\'') {
            let end = inner.find('\'').ok_or(())?;
            let (value, rest) = inner.split_at(end);
            self.rest = &rest[1..];
            Ok(value.trim())
        } else {
            let end = self
                .rest
                .find(|c: char| c.is_whitespace() || c == ';')
                .unwrap_or(self.rest.len());
            let (value, rest) = self.rest.split_at(end);
            self.rest = rest;
            Ok(value)
        }
    }

    /// Only blanks and at most one `;` remain.
    fn at_end(&mut self) -> bool {
        self.skip_blank();
        if let Some(rest) = self.rest.strip_prefix(';') {
            self.rest = rest;
            self.skip_blank();
        }
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> Command {
        match parse_command(sql) {
            Some(Ok(command)) => command,
            other => panic!("{sql:?} gave {other:?}"),
        }
    }

    fn err(sql: &str) -> String {
        match parse_command(sql) {
            Some(Err(e)) => e.message,
            other => panic!("{sql:?} gave {other:?}"),
        }
    }

    #[test]
    fn every_variant() {
        use Command::*;
        assert_eq!(ok("SET SHARD TO '1'"), SetShard(ShardSelector::Number(1)));
        assert_eq!(ok("SET SHARD TO ANY"), SetShard(ShardSelector::Any));
        assert_eq!(ok("set shard to 'any'"), SetShard(ShardSelector::Any));
        assert_eq!(ok("SET SHARD TO 'ALL'"), SetShard(ShardSelector::All));
        assert_eq!(ok("set shard to all"), SetShard(ShardSelector::All));
        assert_eq!(ok("SET SHARDING KEY TO '13'"), SetShardingKey(13));
        assert_eq!(ok("SET SHARDING KEY TO '-7'"), SetShardingKey(-7));
        assert_eq!(
            ok("SET SERVER ROLE TO 'primary'"),
            SetServerRole(RoleSetting::Primary)
        );
        assert_eq!(
            ok("SET SERVER ROLE TO 'replica'"),
            SetServerRole(RoleSetting::Replica)
        );
        assert_eq!(
            ok("SET SERVER ROLE TO 'any'"),
            SetServerRole(RoleSetting::Any)
        );
        assert_eq!(
            ok("SET SERVER ROLE TO 'auto'"),
            SetServerRole(RoleSetting::Auto)
        );
        assert_eq!(
            ok("SET SERVER ROLE TO 'default'"),
            SetServerRole(RoleSetting::Default)
        );
        assert_eq!(
            ok("SET SERVER ROLE TO 'Primary'"),
            SetServerRole(RoleSetting::Primary)
        );
        assert_eq!(
            ok("SET PRIMARY READS TO 'on'"),
            SetPrimaryReads(PrimaryReads::On)
        );
        assert_eq!(
            ok("SET PRIMARY READS TO 'ON'"),
            SetPrimaryReads(PrimaryReads::On)
        );
        assert_eq!(
            ok("SET PRIMARY READS TO off"),
            SetPrimaryReads(PrimaryReads::Off)
        );
        assert_eq!(
            ok("SET PRIMARY READS TO 'deFaUlt'"),
            SetPrimaryReads(PrimaryReads::Default)
        );
        assert_eq!(ok("SHOW SHARD"), ShowShard);
        assert_eq!(ok("SHOW SERVER ROLE"), ShowServerRole);
        assert_eq!(ok("SHOW PRIMARY READS"), ShowPrimaryReads);
    }

    /// PgCat's `test_regex_set` inputs: upper/lower case, no quotes, spaces, semicolons.
    #[test]
    fn pgcat_regex_variants() {
        let accepted = [
            "SET SHARDING KEY TO '1'",
            "SET SHARD TO '1'",
            "SHOW SHARD",
            "SET SERVER ROLE TO 'replica'",
            "SET SERVER ROLE TO 'primary'",
            "SET SERVER ROLE TO 'any'",
            "SET SERVER ROLE TO 'auto'",
            "SHOW SERVER ROLE",
            "SET PRIMARY READS TO 'on'",
            "SET PRIMARY READS TO 'off'",
            "SET PRIMARY READS TO 'default'",
            "SHOW PRIMARY READS",
            "set sharding key to '1'",
            "set shard to '1'",
            "show shard",
            "set server role to 'replica'",
            "set server role to 'primary'",
            "set server role to 'any'",
            "set server role to 'auto'",
            "show server role",
            "set primary reads to 'on'",
            "set primary reads to 'OFF'",
            "set primary reads to 'deFaUlt'",
            "SET SHARDING KEY TO 11235",
            "SET SHARD TO 15",
            "SET PRIMARY READS TO off",
            "  SET SHARDING KEY TO 11235  ; ",
            "  SET SHARD TO 15;   ",
            "  SET SHARDING KEY TO 11235  ;",
            " SET SERVER ROLE TO 'primary';   ",
            "    SET SERVER ROLE TO 'primary'  ; ",
            "  SET SERVER ROLE TO 'primary'  ;",
            "  SET PRIMARY READS TO 'off'    ;",
            // Beyond PgCat: tabs/newlines, several blanks, unquoted role, `=`.
            "SET\tSHARD\n TO\r\n  '2'",
            "SET   SERVER    ROLE   TO   replica",
            "SHOW SHARD;",
            "  show   primary   reads ;  ",
            "SET SHARD = 3",
        ];
        for sql in accepted {
            assert!(matches!(parse_command(sql), Some(Ok(_))), "{sql:?}");
        }
        assert_eq!(
            ok("  SET SHARD TO 15;   "),
            Command::SetShard(ShardSelector::Number(15))
        );
        assert_eq!(
            ok("SET SHARDING KEY TO 11235  ;"),
            Command::SetShardingKey(11235)
        );
    }

    #[test]
    fn ordinary_sql_is_not_ours() {
        let not_ours = [
            "SELECT * FROM table",
            "SELECT * FROM table WHERE value = 'set sharding key to 5'",
            "SET search_path TO x",
            "SET statement_timeout = 0",
            "SHOW work_mem",
            "SHOW server_version",
            "SET SESSION AUTHORIZATION bob",
            "SET shard_count TO 1",
            "SHOW shards",
            "SHOW SHARD 1",
            "SET SERVER x TO 1",
            "SET ROLE bob",
            "",
            ";",
            "   ",
            "sELECT 1",
            "S",
            "SET",
            "SHOW",
            "/* comment */ SET SHARD TO 1",
        ];
        for sql in not_ours {
            assert_eq!(parse_command(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(err("SET SHARD TO 'abc'").contains("any"));
        assert!(err("SET SHARD TO '-1'").contains("shard number"));
        assert!(err("SET SHARD TO '99999999999999999999999'").contains("SET SHARD"));
        let role = err("SET SERVER ROLE TO 'leader'");
        for valid in ["primary", "replica", "any", "auto", "default"] {
            assert!(role.contains(valid), "{role}");
        }
        assert!(err("SET SHARDING KEY TO 'x'").contains("integer"));
        assert!(err("SET SHARDING KEY TO '99999999999999999999'").contains("integer"));
        let reads = err("SET PRIMARY READS TO 'maybe'");
        for valid in ["on", "off", "default"] {
            assert!(reads.contains(valid), "{reads}");
        }
        assert!(err("SET SHARD TO ''").contains("SET SHARD"));
        assert!(err("SET SHARD TO '1").contains("unterminated"));
        assert!(err("SET SHARD 1").contains("TO"));
        assert!(err("SET SHARD TO 1; SELECT 1").contains("unexpected"));
        assert!(err("SET SHARD TO 1 2").contains("unexpected"));
        assert!(err("SET SHARD TO").contains("SET SHARD"));
    }

    #[test]
    fn non_ascii_input_does_not_panic() {
        for sql in [
            "SET SHARD TO 'é'",
            "SET SHARD TO é",
            "SÉT SHARD",
            "SET ШАРД TO 1",
            "SET SHARD TO '1é'",
        ] {
            let _ = parse_command(sql);
        }
        assert!(matches!(parse_command("SET SHARD TO é"), Some(Err(_))));
    }
}
