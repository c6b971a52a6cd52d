//! Cost of the per-request hot path pieces: one snapshot load plus a pick, and the session codec.
//! Reported, not asserted: `cargo bench --bench hot_path`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use mcp_fleet::proxy::session::{decode_buffer, SessionCodec};
use mcp_fleet::upstream::Registry;
use std::net::SocketAddr;
use std::path::Path;

fn registry(n: u32) -> Registry {
    let text = format!(
        "[fleet]\nenabled = false\n[categories.c]\nbackends = [{}]\n",
        (0..n)
            .map(|i| format!(
                "\"127.{}.{}.{}:7000\"",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let config =
        mcp_fleet::config::parse(&text, Path::new("b.toml"), Path::new(".")).expect("bench config");
    Registry::new(&config)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("load+pick/round-robin");
    for n in [10u32, 100, 1_000, 10_000] {
        let r = registry(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let snap = r.load();
                let set = snap.category(black_box("c")).expect("set");
                black_box(set.pick().map(|b| b.addr))
            })
        });
    }
    group.finish();
}

fn session(c: &mut Criterion) {
    let codec = SessionCodec::new(&[7; 32]);
    let addr: SocketAddr = "127.0.0.1:50007".parse().expect("addr");
    let inner = b"9f1c6a1e-7d4b-4b8e-a3b0-2f6c1d0e5a77";
    let token = codec.encode("database", addr, inner).expect("encode");
    c.bench_function("session/encode", |b| {
        b.iter(|| codec.encode(black_box("database"), addr, black_box(inner)))
    });
    c.bench_function("session/decode", |b| {
        b.iter(|| {
            let mut buf = decode_buffer();
            codec
                .decode(black_box("database"), black_box(token.as_bytes()), &mut buf)
                .map(|r| r.backend)
        })
    });
}

criterion_group!(benches, pick, session);
criterion_main!(benches);
