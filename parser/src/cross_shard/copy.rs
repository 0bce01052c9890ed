//! COPY across shards: `COPY … FROM STDIN` split by the key column (where the key is, and
//! how the data is written, for the pooler's splitting), `COPY … TO STDOUT` concatenated
//! (a table's COPY run as its SELECT's).

use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};

use super::{name_of, select, CrossShard, ShardSql};
use crate::shard_key::KeyColumn;

/// How COPY data is written (the options the rows' splitting needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub kind: CopyKind,
    /// The first line names the columns (text and CSV).
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: u8,
    /// How NULL is written.
    pub null: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Text,
    Csv,
    Binary,
}

/// A COPY from the client (split by key) or to it (every shard's rows).
pub(super) fn plan_copy(statement: &Statement, key: Option<&KeyColumn>) -> CrossShard {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return CrossShard::Unknown;
    };
    let Some(format) = copy_format(options, legacy_options) else {
        return CrossShard::Refused("COPY with these options");
    };
    match (to, target, source) {
        (true, CopyTarget::Stdout, CopySource::Query(query)) => {
            match select::plan_query(query, false) {
                CrossShard::Concat {
                    order,
                    limit,
                    offset,
                    ..
                } if order.is_empty() && limit.is_none() && offset.is_none() => {
                    CrossShard::CopyOut {
                        format,
                        shard_sql: None,
                    }
                }
                CrossShard::AnyShard => CrossShard::AnyShard,
                _ => CrossShard::Refused("COPY of a query that is not a plain SELECT of one table"),
            }
        }
        (
            true,
            CopyTarget::Stdout,
            CopySource::Table {
                table_name,
                columns,
            },
        ) => {
            let options = copy_options(options, legacy_options);
            let columns = match columns.as_slice() {
                [] => "*".to_string(),
                named => named
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            CrossShard::CopyOut {
                format,
                shard_sql: Some(ShardSql {
                    text: format!("COPY (SELECT {columns} FROM {table_name}) TO STDOUT{options}"),
                    params: Vec::new(),
                }),
            }
        }
        (
            false,
            CopyTarget::Stdin,
            CopySource::Table {
                table_name,
                columns,
            },
        ) => {
            let Some(key) = key else {
                return CrossShard::Refused("COPY FROM without a sharding key");
            };
            let table = table_name.0.last().and_then(|p| p.as_ident());
            let Some(table) = table.map(name_of) else {
                return CrossShard::Refused("COPY FROM without a sharding key");
            };
            if key.table.as_ref().is_some_and(|t| *t != table) {
                return CrossShard::Refused(
                    "COPY FROM into a table other than the sharding key's (automatic_sharding_key)",
                );
            }
            let at = if columns.is_empty() {
                None
            } else {
                match columns.iter().position(|c| name_of(c) == key.column) {
                    Some(at) => Some(at),
                    None => {
                        return CrossShard::Refused(
                            "COPY FROM whose column list leaves out the sharding key",
                        )
                    }
                }
            };
            CrossShard::CopyIn {
                table,
                key: at,
                format,
            }
        }
        _ => CrossShard::Refused("COPY to or from a file or program"),
    }
}

/// A COPY's options as SQL (sqlparser prints a quote character unescaped).
fn copy_options(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> String {
    let quoted = |c: &char| format!("'{}'", c.to_string().replace('\'', "''"));
    let mut out = String::new();
    if !options.is_empty() {
        let printed: Vec<String> = options
            .iter()
            .map(|o| match o {
                CopyOption::Delimiter(c) => format!("DELIMITER {}", quoted(c)),
                CopyOption::Quote(c) => format!("QUOTE {}", quoted(c)),
                CopyOption::Escape(c) => format!("ESCAPE {}", quoted(c)),
                other => other.to_string(),
            })
            .collect();
        out.push_str(&format!(" ({})", printed.join(", ")));
    }
    for o in legacy {
        let printed = match o {
            CopyLegacyOption::Delimiter(c) => format!("DELIMITER {}", quoted(c)),
            CopyLegacyOption::Csv(csv) => {
                let parts: Vec<String> = csv
                    .iter()
                    .map(|c| match c {
                        CopyLegacyCsvOption::Quote(c) => format!("QUOTE {}", quoted(c)),
                        CopyLegacyCsvOption::Escape(c) => format!("ESCAPE {}", quoted(c)),
                        other => other.to_string(),
                    })
                    .collect();
                format!("CSV {}", parts.join(" "))
            }
            other => other.to_string(),
        };
        out.push(' ');
        out.push_str(printed.trim_end());
    }
    out
}

/// The format options of a COPY; `None` for options that change how rows split which
/// are not read here.
fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Option<CopyFormat> {
    let mut format = CopyFormat {
        kind: CopyKind::Text,
        header: false,
        delimiter: b'\t',
        quote: b'"',
        escape: 0,
        null: "\\N".into(),
    };
    let (mut delimiter, mut quote, mut escape, mut null) = (None, None, None, None);
    let byte = |c: &char| u8::try_from(*c as u32).ok().filter(u8::is_ascii);
    for option in options {
        match option {
            CopyOption::Format(name) => {
                format.kind = match name.value.to_lowercase().as_str() {
                    "text" => CopyKind::Text,
                    "csv" => CopyKind::Csv,
                    "binary" => CopyKind::Binary,
                    _ => return None,
                }
            }
            CopyOption::Header(h) => format.header = *h,
            CopyOption::Delimiter(c) => delimiter = Some(byte(c)?),
            CopyOption::Quote(c) => quote = Some(byte(c)?),
            CopyOption::Escape(c) => escape = Some(byte(c)?),
            CopyOption::Null(n) => null = Some(n.clone()),
            CopyOption::Freeze(_)
            | CopyOption::ForceQuote(_)
            | CopyOption::ForceNotNull(_)
            | CopyOption::ForceNull(_)
            | CopyOption::Encoding(_) => {}
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Binary => format.kind = CopyKind::Binary,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(c)?),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            CopyLegacyOption::Csv(csv) => {
                format.kind = CopyKind::Csv;
                for o in csv {
                    match o {
                        CopyLegacyCsvOption::Header => format.header = true,
                        CopyLegacyCsvOption::Quote(c) => quote = Some(byte(c)?),
                        CopyLegacyCsvOption::Escape(c) => escape = Some(byte(c)?),
                        _ => {}
                    }
                }
            }
            _ => return None,
        }
    }
    if format.kind == CopyKind::Csv {
        format.delimiter = b',';
        format.null = String::new();
    }
    format.delimiter = delimiter.unwrap_or(format.delimiter);
    format.quote = quote.unwrap_or(format.quote);
    format.escape = escape.unwrap_or(format.quote);
    format.null = null.unwrap_or(format.null);
    Some(format)
}
