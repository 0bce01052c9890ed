//! What a query does, from sqlparser's AST: read or write, transaction control, and the
//! session state it leaves behind (`session.rs`).
//!
//! "Read" is narrow on purpose: a read may be sent to a hot standby, so anything that could
//! write, lock or take session-level resources is a write, and so is anything sqlparser
//! cannot parse (PgCat kept the previous role on a parse error and sent writes to replicas,
//! postgresml/pgcat#865). Transaction and session control (`BEGIN`, `COMMIT`, `SET`, …)
//! is neither: it goes wherever the surrounding transaction goes.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Query, Select, Statement,
    TableFactor, TransactionAccessMode, TransactionMode, Value, Visit, Visitor,
};

use crate::parsed::Parsed;
use crate::session::{scan_effects, skip_comments, statement_effects, SessionEffects};

/// The routing-relevant facts about one query string.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// sqlparser understood the text (and it was within `max_length`). When false the
    /// caller routes to the primary: a write must never reach a replica.
    pub parsed: bool,
    /// Not a pure read: any statement writes, locks, calls a side-effecting function, or
    /// the text did not parse.
    pub write: bool,
    /// `Some(read_only)` when the query opens a transaction (`BEGIN`, `START
    /// TRANSACTION`); `Some(true)` only if every opening is `READ ONLY`.
    pub begin: Option<bool>,
    /// `COMMIT` / `ROLLBACK` / `END` / `ABORT` (not `ROLLBACK TO SAVEPOINT`, not `AND
    /// CHAIN`, which keep a transaction open).
    pub ends_transaction: bool,
    /// Session state the query leaves on the server.
    pub session: SessionEffects,
    /// Number of statements in the text.
    pub statement_count: usize,
}

/// Parses (unless longer than `max_length` bytes) and classifies `sql`.
pub fn classify(sql: &str, max_length: Option<usize>) -> Classification {
    classify_parsed(sql, Parsed::parse_within(sql, max_length).as_ref())
}

/// Classifies `sql` from its parse, so one sqlparser run serves classification and sharding
/// key extraction. `parsed` is `None` when parsing failed or was skipped; `sql` is then
/// scanned for keywords so session state is still noticed.
pub fn classify_parsed(sql: &str, parsed: Option<&Parsed>) -> Classification {
    match parsed {
        Some(parsed) => from_statements(parsed.statements()),
        None => unparsed(sql),
    }
}

fn from_statements(statements: &[Statement]) -> Classification {
    let mut c = Classification {
        parsed: true,
        statement_count: statements.len(),
        ..Classification::default()
    };
    for statement in statements {
        match statement {
            Statement::StartTransaction { modes, .. } => {
                let read_only = is_read_only(modes);
                c.begin = Some(c.begin.unwrap_or(true) && read_only);
            }
            Statement::Commit { chain, .. } => c.ends_transaction |= !chain,
            Statement::Rollback { chain, savepoint } => {
                c.ends_transaction |= !chain && savepoint.is_none();
            }
            _ => {}
        }
        if !is_read_or_control(statement) {
            c.write = true;
        }
        statement_effects(statement, &mut c.session);
    }
    // One walk over every nested query and expression: locking clauses, SELECT INTO,
    // data-modifying CTEs and side-effecting functions can hide anywhere.
    let mut walker = Walker::default();
    for statement in statements {
        let _ = statement.visit(&mut walker);
    }
    c.write |= walker.write;
    c.session.set_config |= walker.set_config;
    c.session.advisory_lock |= walker.advisory_lock;
    c.session.temp_table |= walker.temp_table;
    c.session.other |= walker.other;
    c
}

/// Statements that may run on a replica as far as their kind goes (the walker still vets
/// what is inside them).
fn is_read_or_control(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Set(_)
        | Statement::Reset(_)
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCollation { .. } => true,
        // EXPLAIN (with or without ANALYZE) is judged by what it explains: EXPLAIN of a
        // read is a read, EXPLAIN of a write goes to the primary (harmless without
        // ANALYZE, required with it).
        Statement::Explain { statement, .. } => is_read_or_control(statement),
        _ => false,
    }
}

fn is_read_only(modes: &[TransactionMode]) -> bool {
    // PostgreSQL lets the last access mode win (`BEGIN READ ONLY, READ WRITE`).
    modes
        .iter()
        .rev()
        .find_map(|mode| match mode {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => Some(true),
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => Some(false),
            TransactionMode::IsolationLevel(_) => None,
        })
        .unwrap_or(false)
}

/// Collects what nested nodes reveal. Never breaks early: the session flags need the whole
/// tree, and queries are small.
#[derive(Default)]
struct Walker {
    write: bool,
    set_config: bool,
    advisory_lock: bool,
    temp_table: bool,
    other: bool,
}

impl Walker {
    fn function(&mut self, name: &ObjectName, args: Option<&FunctionArguments>) {
        let Some(last) = name.0.last().and_then(|p| p.as_ident()) else {
            return;
        };
        let name = last.value.to_ascii_lowercase();
        let name = name.as_str();
        if is_side_effect_function(name) {
            self.write = true;
        }
        if name.starts_with("pg_advisory_lock") || name.starts_with("pg_try_advisory_lock") {
            self.advisory_lock = true;
        }
        if name == "set_config" && !third_arg_is_true(args) {
            self.set_config = true;
        }
        if name == "setseed" {
            self.other = true;
        }
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            self.write = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into {
            self.write = true;
            self.temp_table |= into.temporary;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        // Nested DML: `WITH d AS (DELETE ... RETURNING *) SELECT ...`.
        if matches!(
            statement,
            Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
                | Statement::Merge(_)
        ) {
            self.write = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        // `SELECT * FROM nextval('s')`, `SELECT * FROM pg_advisory_lock(1)`.
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.function(name, None),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.function(&f.name, Some(&f.args));
        }
        ControlFlow::Continue(())
    }
}

/// Functions that write, take locks, consume sequence values or signal other sessions:
/// they must run on the primary even inside a SELECT. User-defined volatile functions
/// cannot be known from SQL text; `SET SERVER ROLE` and primary reads cover those.
fn is_side_effect_function(name: &str) -> bool {
    const EXACT: [&str; 33] = [
        "nextval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
        "set_config",
        "setseed",
        "pg_notify",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_promote",
        "pg_drop_replication_slot",
        "pg_replication_slot_advance",
        "pg_logical_slot_get_changes",
        "pg_logical_slot_get_binary_changes",
        "pg_logical_emit_message",
        "pg_import_system_collations",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        "pg_log_backend_memory_contexts",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_truncate_visibility_map",
        "brin_summarize_new_values",
        "gin_clean_pending_list",
    ];
    const PREFIXES: [&str; 9] = [
        "lo_",
        "pg_advisory_",
        "pg_try_advisory_",
        "pg_stat_reset",
        "pg_create_",
        "pg_copy_",
        "pg_replication_origin_",
        "dblink",
        "brin_summarize",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `set_config(name, value, true)`: the setting ends with the transaction.
fn third_arg_is_true(args: Option<&FunctionArguments>) -> bool {
    let Some(FunctionArguments::List(list)) = args else {
        return false;
    };
    match list.args.get(2) {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::Boolean(b) => *b,
            Value::SingleQuotedString(s) => {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "t" | "on" | "yes" | "y" | "1"
                )
            }
            _ => false,
        },
        _ => false,
    }
}

/// The text did not parse (or was too long to try): a write, with session effects and
/// transaction control found by keyword.
fn unparsed(sql: &str) -> Classification {
    let mut c = Classification {
        parsed: false,
        write: true,
        ..Classification::default()
    };
    for piece in sql.split(';') {
        let text = skip_comments(piece);
        let mut words = text.split_whitespace();
        let Some(first) = words.next() else { continue };
        c.statement_count += 1;
        let second = words.next().unwrap_or("");
        let is = |w: &str, kw: &str| w.eq_ignore_ascii_case(kw);
        if is(first, "BEGIN") || (is(first, "START") && is(second, "TRANSACTION")) {
            c.begin = Some(false);
        } else if is(first, "COMMIT")
            || is(first, "END")
            || is(first, "ABORT")
            || (is(first, "ROLLBACK") && !is(second, "TO"))
        {
            c.ends_transaction = true;
        }
    }
    scan_effects(sql, &mut c.session);
    c
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
