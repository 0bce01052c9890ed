//! `cargo bench --bench relay`: the relay path's framing cost. A server reply of 8,000
//! DataRows (~160 bytes each) and a ReadyForQuery is scanned by header (only the tags the
//! relay watches are inspected) and forwarded as one batch, as the client task does;
//! throughput is in messages per second.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgcat::wire::Scanner;

const ROWS: usize = 8_000;

fn reply() -> Vec<u8> {
    let mut buf = Vec::with_capacity(ROWS * 165 + 6);
    let body = [7u8; 160];
    for _ in 0..ROWS {
        buf.push(b'D');
        buf.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        buf.extend_from_slice(&body);
    }
    buf.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    buf
}

/// The server-side tags the relay inspects (see frontend::relay).
fn inspected(tag: u8) -> bool {
    matches!(
        tag,
        b'Z' | b'C' | b'1' | b'2' | b'3' | b'T' | b'n' | b'I' | b's'
    )
}

fn framing(c: &mut Criterion) {
    let data = reply();
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(ROWS as u64 + 1));
    group.bench_function("header scan", |b| {
        b.iter(|| {
            let mut scanner = Scanner::default();
            let mut ready = 0;
            let n = scanner
                .scan(black_box(&data), inspected, |tag, _, _| {
                    if tag == b'Z' {
                        ready += 1;
                    }
                })
                .unwrap_or(0);
            black_box((n, ready))
        })
    });
    // Scan in 16 KB reads, as they arrive from the socket, and forward each batch whole.
    group.bench_function("scan + batch forward (16 KB reads)", |b| {
        let mut out = BytesMut::with_capacity(data.len());
        b.iter(|| {
            out.clear();
            let mut scanner = Scanner::default();
            let mut pending = BytesMut::new();
            for chunk in data.chunks(16 * 1024) {
                pending.extend_from_slice(chunk);
                let n = scanner.scan(&pending, inspected, |_, _, _| {}).unwrap_or(0);
                out.extend_from_slice(&pending[..n]);
                let _ = pending.split_to(n);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
