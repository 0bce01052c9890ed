//! `cargo bench --bench merge`: the cost per row of answering a statement run on every
//! shard (`pgcat::merge`). Three shards of 20,000 sorted rows each (an int8 key and a
//! 40-byte text) merged by `ORDER BY id` (a k-way merge comparing decoded keys), and the
//! same rows concatenated (no ORDER BY); throughput is in rows per second.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgcat::merge::{Merge, Plan};
use pgcat_parser::cross_shard::{SortColumn, SortKey};

const SHARDS: usize = 3;
const ROWS: usize = 20_000;

fn row_description() -> Vec<u8> {
    let mut b = 2u16.to_be_bytes().to_vec();
    for (name, type_oid) in [("id", 20u32), ("value", 25)] {
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(&[0, 0, 64, 0, 0, 1]); // table OID, column number
        b.extend_from_slice(&type_oid.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
    }
    b
}

/// Shard `s`'s rows, sorted by id: ids s, s + 3, s + 6, …
fn rows(s: usize) -> Vec<Vec<u8>> {
    (0..ROWS)
        .map(|i| {
            let id = (i * SHARDS + s).to_string();
            let value = [b'x'; 40];
            let mut b = 2u16.to_be_bytes().to_vec();
            b.extend_from_slice(&(id.len() as i32).to_be_bytes());
            b.extend_from_slice(id.as_bytes());
            b.extend_from_slice(&(value.len() as i32).to_be_bytes());
            b.extend_from_slice(&value);
            b
        })
        .collect()
}

fn merge(c: &mut Criterion) {
    let desc = row_description();
    let shards: Vec<Vec<Vec<u8>>> = (0..SHARDS).map(rows).collect();
    let mut group = c.benchmark_group("merge");
    group.throughput(Throughput::Elements((SHARDS * ROWS) as u64));
    group.bench_function("ORDER BY id, 3 shards", |b| {
        b.iter(|| {
            let key = SortKey {
                column: SortColumn::Name("id".into()),
                descending: false,
                nulls_first: false,
            };
            let mut merge = Merge::new(Plan::Rows {
                order: vec![key],
                limit: None,
                offset: 0,
                distinct_on: 0,
            });
            let mut out = BytesMut::with_capacity(4 << 20);
            for shard in 0..SHARDS {
                merge.on_message(shard, b'T', &desc, &mut out);
            }
            let mut next = [0usize; SHARDS];
            loop {
                let least = (0..SHARDS)
                    .filter(|s| next[*s] < ROWS)
                    .min_by(|a, b| merge.compare(&shards[*a][next[*a]], &shards[*b][next[*b]]));
                let Some(s) = least else { break };
                merge.push_row(&shards[s][next[s]], &mut out);
                next[s] += 1;
            }
            merge.finish(&mut out);
            black_box(out.len())
        })
    });
    group.bench_function("concatenated, 3 shards", |b| {
        b.iter(|| {
            let mut merge = Merge::new(Plan::Rows {
                order: Vec::new(),
                limit: None,
                offset: 0,
                distinct_on: 0,
            });
            let mut out = BytesMut::with_capacity(4 << 20);
            for (shard, rows) in shards.iter().enumerate() {
                merge.on_message(shard, b'T', &desc, &mut out);
                for row in rows {
                    merge.push_row(row, &mut out);
                }
            }
            merge.finish(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
