//! pgcat-parser: the routing brain of pgcat. Decides where a transaction goes from its
//! SQL, the session's SQL-extension settings and the pool's settings. No I/O, no tokio:
//! everything here is testable byte for byte.
//!
//! The pooler's path for one query text:
//! 1. [`parse_command`]: a PgCat SQL extension (`SET SHARD TO …`)? Answer it locally.
//! 2. [`CommentHints::find`]: a shard hint in a comment?
//! 3. [`Parsed::parse_within`] once, then [`classify_parsed`] and [`find_keys_parsed`]
//!    (parameters resolved with [`resolve_keys`] / [`bind_param_as_i64`]).
//! 4. [`route`] → [`Route`] { shard, role }.

pub mod cache;
pub mod classify;
pub mod command;
pub mod comment;
pub mod cross_shard;
pub mod hash;
pub mod names;
pub mod parsed;
pub mod route;
pub mod session;
pub mod shape;
pub mod shard_key;
pub mod split;
pub mod statements;
pub mod tables;
#[doc(hidden)]
pub mod variants;

pub use cache::{Analysis, AnalysisCache};
pub use classify::{classify, classify_parsed, Classification};
pub use command::{
    may_be_command, parse_command, Command, CommandError, PrimaryReads, RoleSetting, ShardSelector,
};
pub use comment::{CommentHints, Hint};
pub use cross_shard::CrossShard;
pub use hash::ShardingFunction;
pub use names::{may_name, named_statement, NamedStatement};
pub use parsed::{normalized, Parsed};
pub use route::{route, shard_for_key, PoolRouting, Role, Route, SessionRouting};
pub use session::SessionEffects;
pub use shard_key::{
    bind_param_as_i64, find_keys, find_keys_parsed, resolve_keys, updates_key, KeyColumn, KeyValue,
};
