//! The routing decision: which shard and which role one query goes to, from its
//! classification and keys, the session's SQL-extension settings and the pool's settings.
//!
//! Pure and stateless: the pooler keeps `SessionRouting` per client and calls `route` per
//! query (or per transaction start). Two rules differ from PgCat on purpose: a query that
//! does not parse goes to the primary (PgCat kept the previous role, #865), and automatic
//! sharding keeps working when `SET SERVER ROLE` pins the role (PgCat silently stopped
//! sharding then, sending keyed writes to the default shard).

use crate::classify::Classification;
use crate::command::{Command, PrimaryReads, RoleSetting, ShardSelector};
use crate::comment::Hint;
use crate::shard_key::KeyColumn;

pub use crate::hash::ShardingFunction;

/// A server role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The primary: writes and anything unsure.
    Primary,
    /// A replica: reads.
    Replica,
}

/// Where one query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    /// The shard; `None` = the pool's `default_shard` decides.
    pub shard: Option<usize>,
    /// The role; `None` = any server (primary or replica).
    pub role: Option<Role>,
}

/// The routing settings of one pool (from `[pools.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRouting {
    /// Number of shards (≥ 1 in a valid config).
    pub shards: usize,
    /// `sharding_function`.
    pub sharding_function: ShardingFunction,
    /// `query_parser_enabled`.
    pub query_parser_enabled: bool,
    /// `query_parser_read_write_splitting`.
    pub read_write_splitting: bool,
    /// `primary_reads_enabled`: reads may also go to the primary.
    pub primary_reads_enabled: bool,
    /// `default_role`; `None` = `any`.
    pub default_role: Option<Role>,
    /// `automatic_sharding_key`, parsed.
    pub automatic_key: Option<KeyColumn>,
    /// `query_parser_max_length`.
    pub max_length: Option<usize>,
}

impl Default for PoolRouting {
    /// PgCat's code defaults: one shard, parser off, `default_role = any`.
    fn default() -> Self {
        PoolRouting {
            shards: 1,
            sharding_function: ShardingFunction::PgBigintHash,
            query_parser_enabled: false,
            read_write_splitting: false,
            primary_reads_enabled: false,
            default_role: None,
            automatic_key: None,
            max_length: None,
        }
    }
}

/// What a client's SQL extensions have set; starts at `Default` (nothing set). Serialised
/// when a client moves to another pooler process (an online upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SessionRouting {
    /// `SET SHARD TO n`.
    pub shard: Option<usize>,
    /// The shard of the last `SET SHARDING KEY TO k`.
    pub sharding_key_shard: Option<usize>,
    /// `SET SHARD TO ALL`: statements with no shard of their own run on every shard.
    pub all_shards: bool,
    /// `SET SERVER ROLE TO …`.
    pub role: RoleSetting,
    /// `SET PRIMARY READS TO …`.
    pub primary_reads: PrimaryReads,
}

impl SessionRouting {
    /// Applies a `SET` extension. The caller range-checks `SET SHARD TO n` first (it
    /// answers the error); `random` picks the shard for `SET SHARD TO ANY`. The last of
    /// `SET SHARD` / `SET SHARDING KEY` wins, as in PgCat. `SHOW` commands change nothing.
    pub fn apply(&mut self, command: &Command, pool: &PoolRouting, random: u64) {
        match *command {
            Command::SetShard(selector) => {
                self.shard = match selector {
                    ShardSelector::Number(n) => Some(n),
                    ShardSelector::Any => Some((random % pool.shards.max(1) as u64) as usize),
                    ShardSelector::All => None,
                };
                self.all_shards = selector == ShardSelector::All;
                self.sharding_key_shard = None;
            }
            Command::SetShardingKey(key) => {
                self.sharding_key_shard = Some(shard_for_key(key, pool));
                self.shard = None;
                self.all_shards = false;
            }
            Command::SetServerRole(role) => self.role = role,
            Command::SetPrimaryReads(reads) => self.primary_reads = reads,
            Command::ShowShard | Command::ShowServerRole | Command::ShowPrimaryReads => {}
        }
    }

    /// The one-row answer to a `SHOW` extension, PgCat's values: shard number or `unset`;
    /// `primary`/`replica`, else `auto` with the parser on or `any`; `on`/`off`.
    pub fn show(&self, command: &Command, pool: &PoolRouting) -> Option<String> {
        match command {
            Command::ShowShard if self.all_shards => Some("all".to_string()),
            Command::ShowShard => Some(
                self.shard
                    .or(self.sharding_key_shard)
                    .map_or_else(|| "unset".to_string(), |n| n.to_string()),
            ),
            Command::ShowServerRole => Some(
                match self.fixed_role(pool) {
                    Some(Role::Primary) if !self.parser_decides(pool) => "primary",
                    Some(Role::Replica) if !self.parser_decides(pool) => "replica",
                    _ if self.parser_enabled(pool) => "auto",
                    _ => "any",
                }
                .to_string(),
            ),
            Command::ShowPrimaryReads => Some(
                if self.primary_reads_enabled(pool) {
                    "on"
                } else {
                    "off"
                }
                .to_string(),
            ),
            _ => None,
        }
    }

    /// Whether the query parser is on for this session: `SET SERVER ROLE` overrides the
    /// pool (primary/replica/any turn it off, auto turns it on).
    pub fn parser_enabled(&self, pool: &PoolRouting) -> bool {
        match self.role {
            RoleSetting::Primary | RoleSetting::Replica | RoleSetting::Any => false,
            RoleSetting::Auto => true,
            RoleSetting::Default => pool.query_parser_enabled,
        }
    }

    /// Whether reads may use the primary too (session override, else the pool's setting).
    pub fn primary_reads_enabled(&self, pool: &PoolRouting) -> bool {
        match self.primary_reads {
            PrimaryReads::On => true,
            PrimaryReads::Off => false,
            PrimaryReads::Default => pool.primary_reads_enabled,
        }
    }

    /// The role when the parser does not decide: the pinned role, or the pool default.
    fn fixed_role(&self, pool: &PoolRouting) -> Option<Role> {
        match self.role {
            RoleSetting::Primary => Some(Role::Primary),
            RoleSetting::Replica => Some(Role::Replica),
            RoleSetting::Any | RoleSetting::Auto => None,
            RoleSetting::Default => pool.default_role,
        }
    }

    /// Whether the parser picks the role per query (parser on and r/w splitting on).
    pub fn parser_decides(&self, pool: &PoolRouting) -> bool {
        self.parser_enabled(pool) && pool.read_write_splitting
    }
}

/// The shard of a sharding key under the pool's sharding function.
pub fn shard_for_key(key: i64, routing: &PoolRouting) -> usize {
    routing.sharding_function.shard(key, routing.shards)
}

/// Routes one query. `keys` are the automatic sharding key values, already resolved
/// (parameters from the Bind); `hint` comes from a comment.
///
/// Shard: `SET SHARD` > `SET SHARDING KEY` > comment hint > automatic key (only if all keys
/// hash to one shard) > `None`. Role: with the parser on and read/write splitting, a read
/// goes to a replica (or anywhere with primary reads on), everything else — writes, text
/// that did not parse or was too long, a read-write `BEGIN` — to the primary; otherwise
/// the session's pinned role or the pool's `default_role`.
pub fn route(
    classification: &Classification,
    keys: &[i64],
    hint: Option<Hint>,
    session: &SessionRouting,
    pool: &PoolRouting,
) -> Route {
    Route {
        shard: route_shard(keys, hint, session, pool),
        role: route_role(classification, session, pool),
    }
}

fn route_shard(
    keys: &[i64],
    hint: Option<Hint>,
    session: &SessionRouting,
    pool: &PoolRouting,
) -> Option<usize> {
    if let Some(shard) = session.shard.or(session.sharding_key_shard) {
        return Some(shard);
    }
    match hint {
        Some(Hint::Shard(shard)) => return Some(shard),
        Some(Hint::Key(key)) => return Some(shard_for_key(key, pool)),
        None => {}
    }
    // Keys are used whenever the pool parses queries for sharding, whatever role the
    // session pinned: the role says which server of the shard, not which shard.
    let parsing = pool.query_parser_enabled || session.role == RoleSetting::Auto;
    if pool.automatic_key.is_none() || !parsing {
        return None;
    }
    let (first, rest) = keys.split_first()?;
    let shard = shard_for_key(*first, pool);
    rest.iter()
        .all(|key| shard_for_key(*key, pool) == shard)
        .then_some(shard)
}

fn route_role(c: &Classification, session: &SessionRouting, pool: &PoolRouting) -> Option<Role> {
    if !session.parser_decides(pool) {
        return session.fixed_role(pool);
    }
    if !c.parsed || c.write || c.begin == Some(false) {
        return Some(Role::Primary);
    }
    if session.primary_reads_enabled(pool) {
        None
    } else {
        Some(Role::Replica)
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
