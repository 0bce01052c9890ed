//! The parser crate's routing path for one query text, as the pooler runs it:
//! `parse_command` (PgCat's SQL extensions), `CommentHints::find`, `Analysis::of` /
//! `classify` (through the `AnalysisCache` too), Bind parameters with `resolve_keys` /
//! `bind_param_as_i64`, then `route`.
//!
//! Input: `SQL [NUL control bytes]`. A query string never contains a NUL (the wire
//! protocol ends it with one), so the SQL is everything before the first NUL, read as
//! UTF-8 lossily. The control bytes choose the pool's routing settings, the session's
//! SQL-extension state and the Bind parameters; without them the settings are derived
//! from a hash of the text, so plain SQL seeds still cover several configurations.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgcat_parser::variants::{bump_digits, swap_strings};
use pgcat_parser::{
    bind_param_as_i64, classify, find_keys, parse_command, resolve_keys, route, shard_for_key,
    Analysis, AnalysisCache, Command, CommentHints, Hint, KeyColumn, KeyValue, PoolRouting,
    PrimaryReads, Role, RoleSetting, SessionRouting, ShardSelector, ShardingFunction,
};

/// PgCat's example `shard_id_regex` / `sharding_key_regex` (pgcat.toml).
const SHARD_ID_REGEX: &str = r"/\* shard_id: (\d+) \*/";
const SHARDING_KEY_REGEX: &str = r"/\* sharding_key: (-?\d+) \*/";

/// `automatic_sharding_key` choices (`None`: automatic sharding off).
const KEY_COLUMNS: [Option<&str>; 6] = [
    Some("data.id"),
    Some("*.id"),
    Some("pgbench_accounts.aid"),
    Some("t.id"),
    Some("\"Data\".\"Id\""),
    None,
];

fuzz_target!(|data: &[u8]| run(data));

/// Bind parameters: `None` is SQL NULL; `(bytes, binary format)`.
type Params = Vec<Option<(Vec<u8>, bool)>>;

fn run(data: &[u8]) {
    let (text, control) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let sql = String::from_utf8_lossy(text);
    let sql = sql.as_ref();
    let seed = fnv(text);
    let c = |i: usize| -> u8 { control.get(i).copied().unwrap_or((seed >> (8 * i)) as u8) };

    let c0 = c(0);
    let c1 = c(1);
    let c2 = c(2);
    let c3 = c(3);
    let key = KEY_COLUMNS[(c1 as usize / 3) % KEY_COLUMNS.len()]
        .map(|spec| KeyColumn::parse(spec).expect("valid key column"));
    let max_length = (c0 & 0x80 != 0).then_some(c2 as usize * 8);
    let pool = PoolRouting {
        shards: 1 + (c0 & 7) as usize,
        sharding_function: if c0 & 8 == 0 {
            ShardingFunction::PgBigintHash
        } else {
            ShardingFunction::Sha1
        },
        query_parser_enabled: c0 & 0x10 != 0,
        read_write_splitting: c0 & 0x20 != 0,
        primary_reads_enabled: c0 & 0x40 != 0,
        default_role: [None, Some(Role::Primary), Some(Role::Replica)][c1 as usize % 3],
        automatic_key: key.clone(),
        max_length,
    };
    let search_limit = if c2 == 0 { 1000 } else { c2 as usize * 4 };
    let hints = match c3 >> 6 {
        0 => CommentHints::new(Some(SHARD_ID_REGEX), Some(SHARDING_KEY_REGEX), search_limit),
        1 => CommentHints::new(None, Some(SHARDING_KEY_REGEX), search_limit),
        2 => CommentHints::new(Some(SHARD_ID_REGEX), None, search_limit),
        _ => CommentHints::new(None, None, search_limit),
    }
    .expect("PgCat's regexes compile");
    let mut session = SessionRouting {
        role: [
            RoleSetting::Default,
            RoleSetting::Auto,
            RoleSetting::Primary,
            RoleSetting::Replica,
            RoleSetting::Any,
        ][c3 as usize % 5],
        primary_reads: [PrimaryReads::Default, PrimaryReads::On, PrimaryReads::Off]
            [(c3 as usize / 5) % 3],
        ..SessionRouting::default()
    };
    let params = params(control.get(4..).unwrap_or(&[]));

    // 1. A PgCat SQL extension: answered by the pooler and applied to the session.
    if let Some(result) = parse_command(sql) {
        let first = sql.trim_start().as_bytes().first().copied();
        assert!(matches!(first, Some(b's' | b'S')), "extension not starting with S");
        if let Ok(command) = result {
            extension(&command, &mut session, &pool, seed);
        }
    }

    // 2. A shard hint in a comment.
    let hint = hints.find(sql);
    if !hints.is_enabled() {
        assert_eq!(hint, None);
    }

    // 3. One parse: classification and the automatic sharding key's values.
    let analysis = Analysis::of(sql, key.as_ref(), max_length);
    let classification = &analysis.classification;
    assert_eq!(
        *classification,
        classify(sql, max_length),
        "Analysis::of and classify disagree"
    );
    if !classification.parsed {
        assert!(classification.write, "unparsed text must count as a write");
        assert!(analysis.keys.is_empty(), "keys from text that did not parse");
    }
    if max_length.is_some_and(|max| sql.len() > max) {
        assert!(!classification.parsed, "parsed beyond query_parser_max_length");
    }
    match &key {
        Some(k) if classification.parsed => assert_eq!(analysis.keys, find_keys(sql, k)),
        _ => assert!(analysis.keys.is_empty()),
    }
    for v in &analysis.keys {
        if let KeyValue::Param(i) = v {
            assert!(*i >= 1, "parameters are 1-based");
        }
    }
    cache_agrees(sql, key.as_ref(), max_length, &analysis);

    // 4. Bind parameters.
    let param = |i: usize| -> Option<i64> {
        let (value, binary) = params.get(i.checked_sub(1)?)?.as_ref()?;
        bind_param_as_i64(value, *binary)
    };
    for (value, binary) in params.iter().flatten() {
        if let Some(n) = bind_param_as_i64(value, *binary) {
            assert_eq!(bind_param_as_i64(n.to_string().as_bytes(), false), Some(n));
            assert_eq!(bind_param_as_i64(&n.to_be_bytes(), true), Some(n));
        }
        if *binary {
            assert_eq!(
                bind_param_as_i64(value, true).is_some(),
                matches!(value.len(), 2 | 4 | 8)
            );
        }
    }
    let resolved = resolve_keys(&analysis.keys, param);
    if let Some(keys) = &resolved {
        assert_eq!(keys.len(), analysis.keys.len());
        for (k, v) in keys.iter().zip(&analysis.keys) {
            match v {
                KeyValue::Literal(n) => assert_eq!(k, n),
                KeyValue::Param(i) => assert_eq!(Some(*k), param(*i)),
            }
        }
    } else {
        assert!(analysis.keys.iter().any(|v| matches!(v, KeyValue::Param(_))));
    }
    let keys = resolved.unwrap_or_default();

    // 5. The route, with both sharding functions.
    for function in [ShardingFunction::PgBigintHash, ShardingFunction::Sha1] {
        let pool = PoolRouting {
            sharding_function: function,
            ..pool.clone()
        };
        let r = route(classification, &keys, hint, &session, &pool);
        check_route(r.shard, r.role, classification, &keys, hint, &session, &pool);
        // What the pooler does with no SQL at hand (an opaque request).
        let r = route(&Default::default(), &[], None, &session, &pool);
        if session.shard.or(session.sharding_key_shard).is_none() {
            assert_eq!(r.shard, None);
        }
        for k in &keys {
            assert!(shard_for_key(*k, &pool) < pool.shards);
            assert_eq!(function.shard(*k, 0), 0);
        }
    }
}

/// Applies an extension as the pooler does (`SET SHARD TO n` is range-checked first) and
/// checks its effect and its `SHOW` answer.
fn extension(command: &Command, session: &mut SessionRouting, pool: &PoolRouting, seed: u64) {
    if let Command::SetShard(ShardSelector::Number(n)) = command {
        if *n >= pool.shards {
            return; // the pooler answers 22023 and leaves the session as it was
        }
    }
    let show = session.show(command, pool);
    match command {
        Command::ShowShard | Command::ShowServerRole | Command::ShowPrimaryReads => {
            let answer = show.expect("SHOW extension has an answer");
            assert!(!answer.is_empty());
        }
        _ => assert_eq!(show, None),
    }
    let before = *session;
    session.apply(command, pool, seed);
    match *command {
        Command::SetShard(selector) => {
            let shard = session.shard.expect("SET SHARD sets the shard");
            assert!(shard < pool.shards, "SET SHARD TO {selector:?} gave {shard}");
            assert_eq!(session.sharding_key_shard, None);
        }
        Command::SetShardingKey(k) => {
            assert_eq!(session.sharding_key_shard, Some(shard_for_key(k, pool)));
            assert!(shard_for_key(k, pool) < pool.shards);
            assert_eq!(session.shard, None);
        }
        Command::SetServerRole(role) => assert_eq!(session.role, role),
        Command::SetPrimaryReads(reads) => assert_eq!(session.primary_reads, reads),
        Command::ShowShard | Command::ShowServerRole | Command::ShowPrimaryReads => {
            assert_eq!(*session, before, "SHOW changed the session")
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_route(
    shard: Option<usize>,
    role: Option<Role>,
    classification: &pgcat_parser::Classification,
    keys: &[i64],
    hint: Option<Hint>,
    session: &SessionRouting,
    pool: &PoolRouting,
) {
    if let Some(s) = session.shard.or(session.sharding_key_shard) {
        assert_eq!(shard, Some(s), "the session's shard comes first");
    } else {
        match hint {
            Some(Hint::Shard(n)) => assert_eq!(shard, Some(n)),
            Some(Hint::Key(k)) => assert_eq!(shard, Some(shard_for_key(k, pool))),
            None => {
                if let Some(s) = shard {
                    assert!(s < pool.shards, "key routed to shard {s} of {}", pool.shards);
                    assert!(!keys.is_empty(), "a shard without a key");
                    assert!(keys.iter().all(|k| shard_for_key(*k, pool) == s));
                }
                let parsing = pool.query_parser_enabled || session.role == RoleSetting::Auto;
                if pool.automatic_key.is_none() || !parsing {
                    assert_eq!(shard, None);
                }
            }
        }
    }
    // A write (or text the parser could not read) never goes to a replica when the
    // parser picks the role.
    let parser_decides = session.parser_enabled(pool) && pool.read_write_splitting;
    if parser_decides && (classification.write || !classification.parsed) {
        assert_eq!(role, Some(Role::Primary), "a write routed to {role:?}");
    }
    if parser_decides && classification.begin == Some(false) {
        assert_eq!(role, Some(Role::Primary), "read-write BEGIN routed to {role:?}");
    }
    match session.role {
        RoleSetting::Primary => assert_eq!(role, Some(Role::Primary)),
        RoleSetting::Replica => assert_eq!(role, Some(Role::Replica)),
        RoleSetting::Any => assert_eq!(role, None),
        _ => {}
    }
}

/// The routing cache answers every text as a fresh analysis would, also after texts of
/// the same shape with other literals were analysed first.
fn cache_agrees(sql: &str, key: Option<&KeyColumn>, max_length: Option<usize>, fresh: &Analysis) {
    // One variant per input (parsing dominates the cost): which literals change is
    // chosen by the text's length.
    let variant = match sql.len() % 3 {
        0 => bump_digits(sql, false),
        1 => bump_digits(sql, true),
        _ => swap_strings(&bump_digits(sql, false)),
    };
    let cache = AnalysisCache::new(16, max_length);
    if variant != sql {
        cache.get_or_insert(&variant, || Analysis::of(&variant, key, max_length));
    }
    for _ in 0..2 {
        let cached = cache.get_or_insert(sql, || fresh.clone());
        assert_eq!(
            cached.classification, fresh.classification,
            "cached classification differs from a fresh parse"
        );
        assert_eq!(cached.keys, fresh.keys, "cached keys differ from a fresh parse");
    }
}

/// Bind parameters from the control bytes: `flags len bytes…` repeated; flags bit 0 =
/// binary format, bit 1 = NULL.
fn params(mut b: &[u8]) -> Params {
    let mut out = Vec::new();
    while let [flags, len, rest @ ..] = b {
        if flags & 2 != 0 {
            out.push(None);
            b = rest;
            continue;
        }
        let n = (*len as usize).min(rest.len());
        out.push(Some((rest[..n].to_vec(), flags & 1 != 0)));
        b = &rest[n..];
    }
    out
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}
