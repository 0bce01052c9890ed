//! Which text the merge may order or compare: it orders text byte by byte, which is
//! PostgreSQL's order only under a C-like collation. The pool learns the collations from
//! the catalog (`pool::catalog`); a column whose collation is not C-like, or an expression
//! whose collation cannot be known here in a database that has such columns, is refused,
//! naming the collation.

/// Collations under which text orders as its bytes do (UTF-8 code point order is byte
/// order): libc's C and POSIX, C.UTF-8, `ucs_basic`, PostgreSQL 17's builtin C ones.
const BYTEWISE: [&str; 6] = ["C", "POSIX", "C.UTF-8", "C.utf8", "ucs_basic", "pg_c_utf8"];

/// A database's collations, as far as ordering text across shards goes.
#[derive(Debug, Clone, Default)]
pub struct Collations {
    /// The database's default collation, when it is not C-like.
    default: Option<String>,
    /// Table columns whose collation is not C-like: table OID, column number, table and
    /// column names, and the collation's name.
    columns: Vec<Column>,
}

/// A column whose collation is not C-like.
#[derive(Debug, Clone)]
pub struct Column {
    pub table: u32,
    pub attnum: i16,
    pub table_name: String,
    pub name: String,
    pub collation: String,
}

impl Collations {
    /// From the database's default collation and its tables' columns (`default` ones
    /// need not be listed).
    pub fn new(default: &str, columns: impl IntoIterator<Item = Column>) -> Self {
        Collations {
            default: (!bytewise(default)).then(|| default.to_string()),
            columns: columns
                .into_iter()
                .filter(|c| c.collation != "default" && !bytewise(&c.collation))
                .collect(),
        }
    }

    /// [`Collations::of`] for the column `column` of a table named `table` (any schema).
    pub(super) fn of_column(&self, table: &str, column: &str) -> Result<(), String> {
        let named = |c: &&Column| c.table_name == table && c.name == column;
        match self.columns.iter().find(named) {
            Some(c) => Err(c.collation.clone()),
            None => self.default.clone().map_or(Ok(()), Err),
        }
    }

    /// `Ok` when text of the output column from `table`'s column `attnum` (0 and 0 for an
    /// expression) orders byte by byte; else the collation that does not.
    pub(super) fn of(&self, table: u32, attnum: i16) -> Result<(), String> {
        if let Some(c) = self
            .columns
            .iter()
            .find(|c| c.table == table && c.attnum == attnum)
        {
            return Err(c.collation.clone());
        }
        if let Some(default) = &self.default {
            return Err(default.clone());
        }
        match (table, self.columns.first()) {
            (0, Some(c)) => Err(format!(
                "{}\" of column {}.{}, so the collation of an expression is not known here (\"",
                c.collation, c.table_name, c.name
            )),
            _ => Ok(()),
        }
    }
}

fn bytewise(name: &str) -> bool {
    BYTEWISE.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_c_like_collations_order_byte_by_byte() {
        let plain = Collations::new("C", []);
        assert_eq!(plain.of(0, 0), Ok(()));
        assert_eq!(plain.of(16384, 2), Ok(()));
        let column = |attnum: i16, name: &str, collation: &str| Column {
            table: 16384,
            attnum,
            table_name: "t".into(),
            name: name.into(),
            collation: collation.into(),
        };
        let mixed = Collations::new(
            "C.UTF-8",
            [column(2, "a", "und-x-icu"), column(3, "b", "POSIX")],
        );
        assert_eq!(mixed.of(16384, 2), Err("und-x-icu".into()));
        assert_eq!(mixed.of(16384, 3), Ok(()));
        assert_eq!(mixed.of(16390, 1), Ok(()));
        assert!(
            mixed.of(0, 0).is_err(),
            "an expression's collation is not known"
        );
        assert_eq!(mixed.of_column("t", "a"), Err("und-x-icu".into()));
        assert_eq!(mixed.of_column("t", "b"), Ok(()));
        assert_eq!(mixed.of_column("u", "a"), Ok(()));
        assert_eq!(
            Collations::new("en_US.UTF-8", []).of(16384, 1),
            Err("en_US.UTF-8".into())
        );
    }
}
