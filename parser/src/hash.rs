//! Sharding functions: which shard a bigint sharding key belongs to.
//!
//! `pg_bigint_hash` is PostgreSQL's own `PARTITION BY HASH (bigint)`: shard `i` of `n`
//! holds exactly the rows of `FOR VALUES WITH (MODULUS n, REMAINDER i)`, so PostgreSQL can
//! check the pooler's routing. `sha1` is PgCat's alternative.

use sha1::{Digest, Sha1};

/// `HASH_PARTITION_SEED` from PostgreSQL's partitioning code.
const PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// Added by `hash_combine64(0, h)` when PostgreSQL combines column hashes.
const COMBINE: u64 = 0x49a0_f4dd_15e5_a8e3;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// PostgreSQL's `hashint8extended(key, HASH_PARTITION_SEED)` combined as for a
/// one-column partition key.
pub fn partition_hash(key: i64) -> u64 {
    // hashint8 folds the high half in so that values fitting in int4 hash like int4.
    let lo = key as u32;
    let hi = (key >> 32) as u32;
    let folded = lo ^ if key >= 0 { hi } else { !hi };
    // hash_uint32_extended(folded, seed)
    let init = 0x9e37_79b9u32.wrapping_add(4).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    a = a.wrapping_add((PARTITION_SEED >> 32) as u32);
    b = b.wrapping_add(PARTITION_SEED as u32);
    mix(&mut a, &mut b, &mut c);
    a = a.wrapping_add(folded);
    final_mix(&mut a, &mut b, &mut c);
    let h = ((b as u64) << 32) | c as u64;
    h.wrapping_add(COMBINE)
}

/// A pool's `sharding_function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardingFunction {
    /// `pg_bigint_hash` (PgCat's default): PostgreSQL's hash partitioning of a bigint.
    #[default]
    PgBigintHash,
    /// `sha1`: PgCat's SHA-1 based alternative.
    Sha1,
}

impl ShardingFunction {
    /// The shard of `key` among `shards`; 0 when `shards` is 0 (no division by zero on a
    /// misconfigured pool: the caller's range check reports it).
    pub fn shard(self, key: i64, shards: usize) -> usize {
        if shards == 0 {
            return 0;
        }
        match self {
            ShardingFunction::PgBigintHash => pg_bigint_hash(key, shards),
            ShardingFunction::Sha1 => sha1(key, shards),
        }
    }
}

/// The shard of `key` among `shards` under `pg_bigint_hash`.
pub fn pg_bigint_hash(key: i64, shards: usize) -> usize {
    (partition_hash(key) % shards as u64) as usize
}

/// The shard of `key` among `shards` under PgCat's `sha1`: the last 8 hex digits of the
/// SHA-1 of the decimal key, as an integer, modulo the shard count.
pub fn sha1(key: i64, shards: usize) -> usize {
    let digest = Sha1::digest(key.to_string().as_bytes());
    let tail = u32::from_be_bytes([digest[16], digest[17], digest[18], digest[19]]);
    (tail as u64 % shards as u64) as usize
}

/// PgCat's partition_hash_test_setup.sql: MODULUS 5, the keys of each REMAINDER.
#[cfg(test)]
pub(crate) const PARTITION_VECTORS: [&[i64]; 5] = [
    &[1, 4, 5, 14, 19, 39, 40, 46, 47, 53],
    &[2, 3, 11, 17, 21, 23, 30, 49, 51, 54],
    &[6, 7, 15, 16, 18, 20, 25, 28, 34, 35],
    &[8, 12, 13, 22, 29, 31, 33, 36, 41, 43],
    &[9, 10, 24, 26, 27, 32, 37, 38, 42, 45],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_hash_partitions() {
        for (shard, keys) in PARTITION_VECTORS.iter().enumerate() {
            for key in *keys {
                assert_eq!(pg_bigint_hash(*key, 5), shard, "key {key}");
            }
        }
    }

    #[test]
    fn sharding_function_dispatch() {
        assert_eq!(
            ShardingFunction::PgBigintHash.shard(6, 5),
            pg_bigint_hash(6, 5)
        );
        assert_eq!(ShardingFunction::Sha1.shard(6, 12), sha1(6, 12));
        assert_eq!(ShardingFunction::PgBigintHash.shard(6, 0), 0);
        assert_eq!(ShardingFunction::Sha1.shard(6, 0), 0);
        assert_eq!(ShardingFunction::default(), ShardingFunction::PgBigintHash);
    }

    #[test]
    fn sha1_matches_pgcat() {
        let expected = [
            4, 7, 8, 3, 6, 0, 0, 10, 3, 11, 1, 7, 4, 4, 11, 2, 5, 0, 8, 3,
        ];
        for (key, shard) in expected.iter().enumerate() {
            assert_eq!(sha1(key as i64, 12), *shard, "key {key}");
        }
    }
}
