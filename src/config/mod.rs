//! `pgcat.toml`: PgCat's configuration format, read with PgCat's *code* defaults (a few
//! documented departures: client `auth_type` scram-sha-256, `worker_threads` = CPU cores,
//! `prepared_statements_cache_size` 500), validated, with warnings for unknown keys and for
//! known keys this pooler does not implement yet (`keys::NOT_IMPLEMENTED`).
//!
//! Owns reading and checking the file only: it never connects anywhere and never applies a
//! configuration. Errors name the file, the key and the reason; secrets never appear in them
//! or in `Debug` output.
//!
//! Layout: `types.rs` the validated types, `raw.rs` the serde view of the file and the
//! defaults, `keys.rs` the known-key schema and its warnings, `build.rs` validation (`shards.rs` for
//! shards and servers).

mod build;
mod general;
mod keys;
mod plugins;
mod raw;
mod shards;
mod types;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use keys::NOT_IMPLEMENTED;
pub use plugins::{Intercept, Plugins};
pub use types::*;

/// A validated configuration and the warnings to log once it is in use.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// One line each: unknown keys, keys not implemented yet, doubtful but valid settings.
    pub warnings: Vec<String>,
}

/// Why a configuration was rejected. `Display` is `<file>: <key path>: <reason>`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML; `detail` is toml's own message with line, column and the offending line.
    #[error("{}: {detail}", .file.display())]
    Syntax { file: PathBuf, detail: String },
    /// Valid TOML, but a key has a wrong type or value, or a rule between keys is broken.
    #[error("{}: {key}: {reason}", .file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The dotted key path the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates `text`; `path` is recorded in `Config::path` and named in messages.
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError::Syntax {
        file: path.to_path_buf(),
        detail: e.to_string().trim_end().to_string(),
    };
    let doc: toml::Table = toml::from_str(text).map_err(syntax)?;
    let mut warnings = keys::key_warnings(&doc);

    let de = toml::Deserializer::parse(text).map_err(syntax)?;
    let raw: raw::RawConfig =
        serde_path_to_error::deserialize(de).map_err(|e| type_error(path, text, e))?;
    let config = build::build(raw, path, &mut warnings)?;
    Ok(Loaded { config, warnings })
}

/// A wrong type or out-of-range number, as `<file>: <key>: <serde's reason> (line L, column C)`.
/// The value is left out of the message when the key holds a secret.
fn type_error(
    path: &Path,
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let mut key = String::new();
    for segment in e.path().iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                keys::push_segment(&mut key, k);
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let inner = e.inner();
    let mut reason = if key.rsplit('.').next().unwrap_or("").contains("password") {
        "has the wrong type (expected a string; value not shown)".to_string()
    } else {
        inner.message().trim_end().to_string()
    };
    if let Some(span) = inner.span() {
        let (line, column) = line_column(text, span.start);
        reason.push_str(&format!(" (line {line}, column {column})"));
    }
    ConfigError::Invalid {
        file: path.to_path_buf(),
        key: if key.is_empty() {
            "(top level)".into()
        } else {
            key
        },
        reason,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
