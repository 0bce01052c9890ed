//! The automatic sharding key (`automatic_sharding_key = "table.column"`): the key values a
//! statement is restricted to, found in its AST.
//!
//! A value is only reported when it *restricts* the rows the statement touches: `col = 5`
//! or `col IN (5, $2)` in a WHERE clause (through AND; an OR counts only if every branch is
//! restricted), an INNER JOIN's ON, or every row of `INSERT (cols) VALUES`. Anything looser
//! yields nothing and the query goes to the pool's default shard, as in PgCat. A bare column
//! is trusted only when the statement reads a single table (or the key's table is `*`);
//! qualified columns are resolved through table aliases.

use sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FromTable, Ident, Insert, JoinConstraint, JoinOperator,
    ObjectName, Query, Select, SetExpr, Statement, TableFactor, TableObject, TableWithJoins,
    UnaryOperator, UpdateTableFromKind, Value,
};

use crate::parsed::Parsed;

/// The configured sharding key column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    /// Lower-cased table name; `None` for `*` (the column name alone identifies the key).
    pub table: Option<String>,
    /// Lower-cased column name.
    pub column: String,
}

impl KeyColumn {
    /// Parses `"table.column"` or `"*.column"` (quotes are stripped, exactly one dot, as
    /// PgCat validates it). `None` for anything else.
    pub fn parse(spec: &str) -> Option<KeyColumn> {
        let cleaned: String = spec.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
        let (table, column) = cleaned.trim().split_once('.')?;
        let (table, column) = (table.trim(), column.trim());
        if table.is_empty() || column.is_empty() || column.contains('.') {
            return None;
        }
        Some(KeyColumn {
            table: (table != "*").then(|| table.to_lowercase()),
            column: column.to_lowercase(),
        })
    }
}

/// One sharding key value found in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValue {
    /// An integer literal (or a quoted string holding one).
    Literal(i64),
    /// A parameter `$n` (1-based), resolved from the Bind message.
    Param(usize),
}

/// The key values `sql` is restricted to (empty: none known). Parses `sql`; when the
/// pooler already parsed it, use [`find_keys_parsed`].
pub fn find_keys(sql: &str, key: &KeyColumn) -> Vec<KeyValue> {
    Parsed::parse(sql).map_or_else(Vec::new, |p| find_keys_parsed(&p, key))
}

/// The key values the statements are restricted to. Statements without a restriction
/// (e.g. `BEGIN`) are ignored; values of several statements are all reported, so the
/// caller sees when they span shards.
pub fn find_keys_parsed(parsed: &Parsed, key: &KeyColumn) -> Vec<KeyValue> {
    let mut found = Vec::new();
    for statement in parsed.statements() {
        if let Some(values) = statement_keys(statement, key) {
            found.extend(values);
        }
    }
    found
}

/// Whether an UPDATE assigns to the sharding key. Moving a row between shards is not
/// something a pooler can do in one statement; the caller may refuse it (PgCat errors).
pub fn updates_key(parsed: &Parsed, key: &KeyColumn) -> bool {
    parsed.statements().iter().any(|statement| {
        let Statement::Update(update) = statement else {
            return false;
        };
        let scope = Scope::of(&[&update.table]);
        let table_ok = match &key.table {
            None => true,
            Some(t) => scope.single_table_is(t),
        };
        table_ok
            && update.assignments.iter().any(|a| match &a.target {
                AssignmentTarget::ColumnName(name) => last_is(name, &key.column),
                AssignmentTarget::Tuple(names) => names.iter().any(|n| last_is(n, &key.column)),
            })
    })
}

/// Resolves parameters with `param` (e.g. from a Bind). `None` if any value cannot be
/// resolved: routing by the others could send the query to the wrong shard.
pub fn resolve_keys(values: &[KeyValue], param: impl Fn(usize) -> Option<i64>) -> Option<Vec<i64>> {
    values
        .iter()
        .map(|v| match *v {
            KeyValue::Literal(n) => Some(n),
            KeyValue::Param(i) => param(i),
        })
        .collect()
}

/// A Bind parameter as a bigint: text format is decimal (blanks allowed, as in `int8in`);
/// binary format is a big-endian int2, int4 or int8, told apart by length.
pub fn bind_param_as_i64(value: &[u8], format_binary: bool) -> Option<i64> {
    if format_binary {
        match value.len() {
            2 => Some(i16::from_be_bytes([value[0], value[1]]) as i64),
            4 => Some(i32::from_be_bytes([value[0], value[1], value[2], value[3]]) as i64),
            8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(value);
                Some(i64::from_be_bytes(bytes))
            }
            _ => None,
        }
    } else {
        std::str::from_utf8(value).ok()?.trim().parse().ok()
    }
}

/// Whether one statement is restricted to sharding key values (it names its shard).
pub(crate) fn restricted_to_keys(statement: &Statement, key: &KeyColumn) -> bool {
    statement_keys(statement, key).is_some_and(|keys| !keys.is_empty())
}

fn statement_keys(statement: &Statement, key: &KeyColumn) -> Option<Vec<KeyValue>> {
    match statement {
        Statement::Query(query) => query_keys(query, key),
        Statement::Insert(insert) => insert_keys(insert, key),
        Statement::Update(update) => {
            let mut tables = vec![&update.table];
            if let Some(
                UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from),
            ) = &update.from
            {
                tables.extend(from);
            }
            restricted(&tables, update.selection.as_ref(), key)
        }
        Statement::Delete(delete) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
            let mut tables: Vec<&TableWithJoins> = from.iter().collect();
            if let Some(using) = &delete.using {
                tables.extend(using);
            }
            restricted(&tables, delete.selection.as_ref(), key)
        }
        Statement::Explain { statement, .. } => statement_keys(statement, key),
        _ => None,
    }
}

fn query_keys(query: &Query, key: &KeyColumn) -> Option<Vec<KeyValue>> {
    let mut found: Option<Vec<KeyValue>> = None;
    // Restricted CTEs count too, so that `WITH x AS (... id = 7) SELECT ... id = 5` is seen
    // to need two shards; unrestricted ones (reference tables) are ignored.
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            if let Some(values) = query_keys(&cte.query, key) {
                found.get_or_insert_with(Vec::new).extend(values);
            }
        }
    }
    if let Some(values) = set_expr_keys(&query.body, key) {
        found.get_or_insert_with(Vec::new).extend(values);
    }
    found
}

fn set_expr_keys(body: &SetExpr, key: &KeyColumn) -> Option<Vec<KeyValue>> {
    match body {
        SetExpr::Select(select) => select_keys(select, key),
        SetExpr::Query(query) => query_keys(query, key),
        // Every branch of a UNION/INTERSECT/EXCEPT runs; all must be restricted. The chain
        // is walked with a stack: a client can send thousands of UNIONs.
        SetExpr::SetOperation { .. } => {
            let mut values = Vec::new();
            let mut stack = vec![body];
            while let Some(part) = stack.pop() {
                match part {
                    SetExpr::SetOperation { left, right, .. } => {
                        stack.push(right);
                        stack.push(left);
                    }
                    leaf => values.extend(set_expr_keys(leaf, key)?),
                }
            }
            Some(values)
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            statement_keys(s, key)
        }
        _ => None,
    }
}

fn select_keys(select: &Select, key: &KeyColumn) -> Option<Vec<KeyValue>> {
    let tables: Vec<&TableWithJoins> = select.from.iter().collect();
    restricted(&tables, select.selection.as_ref(), key)
}

/// Key values that restrict `tables` joined as given and filtered by `selection`.
fn restricted(
    tables: &[&TableWithJoins],
    selection: Option<&Expr>,
    key: &KeyColumn,
) -> Option<Vec<KeyValue>> {
    let scope = Scope::of(tables);
    let matcher = Matcher { scope: &scope, key };
    let mut conditions: Vec<&Expr> = Vec::new();
    for table in tables {
        inner_join_conditions(table, &mut conditions);
    }
    conditions.extend(selection);
    // The conditions are ANDed together.
    let mut found: Option<Vec<KeyValue>> = None;
    for condition in conditions {
        if let Some(values) = matcher.constraint(condition) {
            found.get_or_insert_with(Vec::new).extend(values);
        }
    }
    found
}

fn inner_join_conditions<'a>(table: &'a TableWithJoins, out: &mut Vec<&'a Expr>) {
    if let TableFactor::NestedJoin {
        table_with_joins, ..
    } = &table.relation
    {
        inner_join_conditions(table_with_joins, out);
    }
    for join in &table.joins {
        if let JoinOperator::Join(JoinConstraint::On(on))
        | JoinOperator::Inner(JoinConstraint::On(on)) = &join.join_operator
        {
            out.push(on);
        }
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = &join.relation
        {
            inner_join_conditions(table_with_joins, out);
        }
    }
}

/// One table a statement reads: its (lower-cased, schema-less) name, if it is a plain
/// table, and its alias.
struct TableRef {
    name: Option<String>,
    alias: Option<String>,
}

/// The tables visible to a WHERE clause, for resolving column references.
struct Scope {
    tables: Vec<TableRef>,
}

impl Scope {
    fn of(tables: &[&TableWithJoins]) -> Scope {
        let mut scope = Scope { tables: Vec::new() };
        for table in tables {
            scope.add(&table.relation);
            for join in &table.joins {
                scope.add(&join.relation);
            }
        }
        scope
    }

    fn add(&mut self, factor: &TableFactor) {
        match factor {
            TableFactor::Table { name, alias, .. } => self.tables.push(TableRef {
                name: name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.to_lowercase()),
                alias: alias.as_ref().map(|a| a.name.value.to_lowercase()),
            }),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                self.add(&table_with_joins.relation);
                for join in &table_with_joins.joins {
                    self.add(&join.relation);
                }
            }
            // Subqueries, functions, …: a table we cannot name, which still makes a bare
            // column ambiguous.
            _ => self.tables.push(TableRef {
                name: None,
                alias: None,
            }),
        }
    }

    fn single_table_is(&self, table: &str) -> bool {
        matches!(self.tables.as_slice(), [only] if only.name.as_deref() == Some(table))
    }

    /// Whether qualifier `q` (a table name or alias) denotes `table`.
    fn qualifier_is(&self, q: &Ident, table: &str) -> bool {
        // An alias hides the table's own name in PostgreSQL, so aliases are checked first.
        if let Some(t) = self.tables.iter().find(|t| {
            t.alias
                .as_deref()
                .is_some_and(|a| q.value.eq_ignore_ascii_case(a))
        }) {
            return t.name.as_deref() == Some(table);
        }
        q.value.eq_ignore_ascii_case(table)
    }
}

struct Matcher<'a> {
    scope: &'a Scope,
    key: &'a KeyColumn,
}

impl Matcher<'_> {
    /// The key values `expr` restricts the key to, or `None` if it does not restrict it.
    fn constraint(&self, expr: &Expr) -> Option<Vec<KeyValue>> {
        match strip_nested(expr) {
            Expr::BinaryOp {
                op: BinaryOperator::And,
                ..
            } => {
                let mut found: Option<Vec<KeyValue>> = None;
                for term in flatten(expr, &BinaryOperator::And) {
                    if let Some(values) = self.constraint(term) {
                        found.get_or_insert_with(Vec::new).extend(values);
                    }
                }
                found
            }
            Expr::BinaryOp {
                op: BinaryOperator::Or,
                ..
            } => {
                let mut all = Vec::new();
                for term in flatten(expr, &BinaryOperator::Or) {
                    all.extend(self.constraint(term)?);
                }
                Some(all)
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                if self.is_key(left) {
                    key_value(right).map(|v| vec![v])
                } else if self.is_key(right) {
                    key_value(left).map(|v| vec![v])
                } else {
                    None
                }
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } if self.is_key(expr) => list.iter().map(key_value).collect(),
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } if self.is_key(left) => match strip_nested(right) {
                Expr::Array(array) => array.elem.iter().map(key_value).collect(),
                _ => None,
            },
            _ => None,
        }
    }

    fn is_key(&self, expr: &Expr) -> bool {
        match strip_nested(expr) {
            Expr::Identifier(id) => {
                id.value.eq_ignore_ascii_case(&self.key.column)
                    && match &self.key.table {
                        None => true,
                        Some(table) => self.scope.single_table_is(table),
                    }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let column = &parts[parts.len() - 1];
                let qualifier = &parts[parts.len() - 2];
                column.value.eq_ignore_ascii_case(&self.key.column)
                    && match &self.key.table {
                        None => true,
                        Some(table) => self.scope.qualifier_is(qualifier, table),
                    }
            }
            _ => false,
        }
    }
}

/// The operands of a chain of `op` (`a AND b AND c` → `[a, b, c]`), without recursion:
/// a client can send thousands of terms.
fn flatten<'a>(expr: &'a Expr, op: &BinaryOperator) -> Vec<&'a Expr> {
    let mut out = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match strip_nested(e) {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            other => out.push(other),
        }
    }
    out
}

fn strip_nested(mut expr: &Expr) -> &Expr {
    while let Expr::Nested(inner) = expr {
        expr = inner;
    }
    expr
}

/// An integer literal, a quoted integer, or a `$n` parameter, through casts and signs.
/// A loop, not recursion: `1::int::int::…` can be thousands of casts deep.
fn key_value(mut expr: &Expr) -> Option<KeyValue> {
    let mut negative = false;
    loop {
        match expr {
            Expr::Nested(inner)
            | Expr::Cast { expr: inner, .. }
            | Expr::UnaryOp {
                op: UnaryOperator::Plus,
                expr: inner,
            } => expr = inner,
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } => {
                negative = !negative;
                expr = inner;
            }
            Expr::Value(v) => return literal(&v.value, negative),
            _ => return None,
        }
    }
}

fn literal(value: &Value, negative: bool) -> Option<KeyValue> {
    match value {
        // Parse with the sign so that i64::MIN is representable.
        Value::Number(n, _) if negative => format!("-{n}").parse().ok().map(KeyValue::Literal),
        Value::Number(n, _) => n.parse().ok().map(KeyValue::Literal),
        Value::SingleQuotedString(s) => {
            let n: i64 = s.trim().parse().ok()?;
            if negative { n.checked_neg() } else { Some(n) }.map(KeyValue::Literal)
        }
        Value::Placeholder(p) if !negative => p
            .strip_prefix('$')?
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(KeyValue::Param),
        _ => None,
    }
}

/// INSERT INTO t (..., key, ...) VALUES (...), (...): the key of every row, or nothing.
pub(crate) fn insert_keys(insert: &Insert, key: &KeyColumn) -> Option<Vec<KeyValue>> {
    let TableObject::TableName(table) = &insert.table else {
        return None;
    };
    if let Some(t) = &key.table {
        if !last_is(table, t) {
            return None;
        }
    }
    let index = insert
        .columns
        .iter()
        .position(|c| last_is(c, &key.column))?;
    let source = insert.source.as_ref()?;
    let SetExpr::Values(values) = source.body.as_ref() else {
        return None;
    };
    values
        .rows
        .iter()
        .map(|row| row.content.get(index).and_then(key_value))
        .collect()
}

fn last_is(name: &ObjectName, wanted: &str) -> bool {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case(wanted))
}

#[cfg(test)]
#[path = "shard_key_tests.rs"]
mod tests;
