//! The `shards` of a pool: integer keys contiguous from 0, each with a database and a
//! non-empty list of `[host, port, role]` servers (at most one primary, no address twice)
//! and optional `[host, port, server_index]` mirrors.
//! Part of validation (`build.rs`); never resolves or connects to the addresses.

use std::collections::{BTreeMap, HashSet};

use super::build::Ctx;
use super::keys::join;
use super::raw::RawShard;
use super::types::{parse_role, MirrorAddress, Role, ServerAddress, Shard};
use super::ConfigError;

/// Shard keys must be integers contiguous from 0; shard `i` lands at index `i`.
pub(crate) fn build_shards(
    ctx: &Ctx,
    pool_key: &str,
    raw: BTreeMap<String, RawShard>,
) -> Result<Vec<Shard>, ConfigError> {
    let shards_key = join(pool_key, "shards");
    if raw.is_empty() {
        return Err(ctx.err(shards_key, "at least one shard (\"0\") is required"));
    }
    let mut numbered = Vec::with_capacity(raw.len());
    for (name, shard) in raw {
        let key = join(&shards_key, &name);
        let Some(n) = name
            .parse::<usize>()
            .ok()
            .filter(|_| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            return Err(ctx.err(
                key,
                "shard keys must be integers contiguous from 0 (\"0\", \"1\", ...)",
            ));
        };
        numbered.push((n, name, key, shard));
    }
    numbered.sort_by_key(|(n, ..)| *n);

    let mut shards = Vec::with_capacity(numbered.len());
    for (index, (n, _name, key, shard)) in numbered.into_iter().enumerate() {
        if n != index {
            let reason = if n < index {
                format!("shard {n} is defined twice")
            } else {
                format!("shard keys must be contiguous from 0, but shard {index} is missing")
            };
            return Err(ctx.err(key, reason));
        }
        shards.push(build_shard(ctx, &key, shard)?);
    }
    Ok(shards)
}

fn build_shard(ctx: &Ctx, key: &str, s: RawShard) -> Result<Shard, ConfigError> {
    let database = ctx.required(&join(key, "database"), s.database)?;
    if database.is_empty() {
        return Err(ctx.err(join(key, "database"), "must not be empty"));
    }
    let servers_key = join(key, "servers");
    let raw_servers = ctx.required(&servers_key, s.servers)?;
    if raw_servers.is_empty() {
        return Err(ctx.err(servers_key, "at least one server is required"));
    }
    let mut servers: Vec<ServerAddress> = Vec::with_capacity(raw_servers.len());
    let mut seen = HashSet::new();
    let mut primary: Option<usize> = None;
    for (i, entry) in raw_servers.iter().enumerate() {
        let entry_key = format!("{servers_key}[{i}]");
        let server = parse_server(ctx, &entry_key, entry)?;
        if server.role == Role::Primary {
            if let Some(first) = primary {
                return Err(ctx.err(
                    entry_key,
                    format!(
                        "a shard has at most one primary, and servers[{first}] is already primary"
                    ),
                ));
            }
            primary = Some(i);
        }
        if !seen.insert((server.host.clone(), server.port)) {
            return Err(ctx.err(
                entry_key,
                format!("{}:{} is listed twice", server.host, server.port),
            ));
        }
        servers.push(server);
    }
    let mirrors_key = join(key, "mirrors");
    let mut mirrors = Vec::new();
    for (i, entry) in s.mirrors.iter().flatten().enumerate() {
        let entry_key = format!("{mirrors_key}[{i}]");
        let mirror = parse_mirror(ctx, &entry_key, entry, servers.len())?;
        if servers
            .iter()
            .any(|s| (s.host.as_str(), s.port) == (mirror.host.as_str(), mirror.port))
        {
            return Err(ctx.err(
                entry_key,
                format!(
                    "{}:{} is one of the shard's servers; a mirror must be another server",
                    mirror.host, mirror.port
                ),
            ));
        }
        mirrors.push(mirror);
    }
    Ok(Shard {
        database,
        servers,
        mirrors,
    })
}

/// `[host, port, server_index]`, the index one of the shard's `servers`.
fn parse_mirror(
    ctx: &Ctx,
    key: &str,
    entry: &toml::Value,
    servers: usize,
) -> Result<MirrorAddress, ConfigError> {
    const SHAPE: &str = "expected [\"host\", port, server_index]";
    let items = match entry.as_array() {
        Some(items) if items.len() == 3 => items,
        _ => return Err(ctx.err(key, SHAPE)),
    };
    let (host, port) = host_port(ctx, key, items, SHAPE)?;
    let server_index = items[2]
        .as_integer()
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < servers)
        .ok_or_else(|| {
            ctx.err(
                key,
                format!(
                    "server_index must be the index of one of the shard's {servers} servers (0 to {}); {SHAPE}",
                    servers - 1
                ),
            )
        })?;
    Ok(MirrorAddress {
        host,
        port,
        server_index,
    })
}

/// The host and port of a `[host, port, ...]` entry.
fn host_port(
    ctx: &Ctx,
    key: &str,
    items: &[toml::Value],
    shape: &str,
) -> Result<(String, u16), ConfigError> {
    let host = match items[0].as_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(ctx.err(key, format!("the host must be a non-empty string; {shape}"))),
    };
    let port = items[1]
        .as_integer()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ctx.err(
                key,
                format!("the port must be an integer between 1 and 65535; {shape}"),
            )
        })?;
    Ok((host, port))
}

/// `[host, port, role]`; the role may be left out (then it is `auto`).
fn parse_server(ctx: &Ctx, key: &str, entry: &toml::Value) -> Result<ServerAddress, ConfigError> {
    const SHAPE: &str = "expected [\"host\", port, \"primary\" | \"replica\" | \"auto\"]";
    let items = match entry.as_array() {
        Some(items) if (2..=3).contains(&items.len()) => items,
        _ => return Err(ctx.err(key, SHAPE)),
    };
    let (host, port) = host_port(ctx, key, items, SHAPE)?;
    let role = match items.get(2) {
        None => Role::Auto,
        Some(v) => {
            let Some(s) = v.as_str() else {
                return Err(ctx.err(key, format!("the role must be a string; {SHAPE}")));
            };
            parse_role(s).map_err(|expected| {
                ctx.err(
                    key,
                    format!("'{s}' is not a valid server role (expected {expected})"),
                )
            })?
        }
    };
    Ok(ServerAddress { host, port, role })
}
