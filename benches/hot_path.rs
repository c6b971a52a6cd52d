//! Cost of the per-request hot path: one snapshot load plus a pick, per strategy and set size,
//! and the session codec. Reported, not asserted: `cargo bench --bench hot_path`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use mcp_fleet::proxy::session::{decode_buffer, SessionCodec};
use mcp_fleet::upstream::{clock, PickRequest, Registry};
use std::net::SocketAddr;
use std::path::Path;

const STRATEGIES: [&str; 6] = [
    "round-robin",
    "weighted",
    "least-connections",
    "p2c",
    "peak-ewma",
    "consistent-hash",
];

fn registry(strategy: &str, n: u32) -> Registry {
    let backends = (0..n)
        .map(|i| {
            format!(
                "\"127.{}.{}.{}:7000\"",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    // Uneven weights so weighted and the weight-aware strategies do real work.
    let weights = (0..n.min(50))
        .map(|i| format!("\"127.0.0.{}:7000\" = {}", i & 255, 1 + i % 5))
        .filter(|_| n < 256)
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[fleet]\nenabled = false\n[health]\nenabled = false\n[categories.c]\nstrategy = \"{strategy}\"\n\
         hash_header = \"x-tenant\"\nbackends = [{backends}]\nserver_weights = {{ {weights} }}\n"
    );
    let config =
        mcp_fleet::config::parse(&text, Path::new("b.toml"), Path::new(".")).expect("bench config");
    Registry::new(&config, &[])
}

fn pick(c: &mut Criterion) {
    for strategy in STRATEGIES {
        let mut group = c.benchmark_group(format!("load+pick/{strategy}"));
        for n in [10u32, 100, 1_000, 10_000] {
            let r = registry(strategy, n);
            // Some load, so least-connections and p2c compare real numbers.
            let snap = r.load();
            let set = snap.category("c").expect("set");
            let _held: Vec<_> = set
                .all
                .iter()
                .step_by(3)
                .map(|b| b.state.start_request())
                .collect();
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let snap = r.load();
                    let set = snap.category(black_box("c")).expect("set");
                    let req = PickRequest {
                        key: Some(key),
                        avoid: None,
                        now_ms: clock::now_ms(),
                    };
                    black_box(set.pick(&req).map(|b| b.addr))
                })
            });
        }
        group.finish();
    }
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
