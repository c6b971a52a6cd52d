use super::*;
use crate::config::EjectionConfig;
use crate::upstream::backend::Origin;
use std::time::Duration;

fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Backend {
            id: format!("b{i}").into(),
            host: crate::upstream::host_header(([127, 0, 0, 1], 1000 + i as u16).into()),
            addr: ([127, 0, 0, 1], 1000 + i as u16).into(),
            origin: Origin::Static,
            weight: w,
            ready: true,
            healthy: true,
            draining: false,
            state: Arc::default(),
        })
        .collect()
}

fn req() -> PickRequest {
    PickRequest {
        key: None,
        avoid: None,
        now_ms: 1,
    }
}

fn counts(s: &dyn Strategy, set: &[Backend], picks: usize) -> Vec<usize> {
    let mut c = vec![0; set.len()];
    for _ in 0..picks {
        c[s.pick(set, &req()).expect("a pick")] += 1;
    }
    c
}

#[test]
fn round_robin_visits_every_backend_evenly() {
    let set = backends(&[1; 7]);
    let rr = build(StrategyKind::RoundRobin, &set, &StrategyMemory::default());
    assert_eq!(counts(rr.as_ref(), &set, 700), vec![100; 7]);
    assert_eq!(rr.pick(&[], &req()), None);
}

#[test]
fn smooth_weighted_matches_nginx() {
    assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    assert_eq!(smooth_sequence(&[2, 2, 2]), vec![0, 1, 2]);
    let set = backends(&[3, 1]);
    let w = build(StrategyKind::Weighted, &set, &StrategyMemory::default());
    assert_eq!(counts(w.as_ref(), &set, 4000), vec![3000, 1000]);
}

#[test]
fn huge_periods_use_stride_scheduling_and_keep_proportions() {
    let weights: Vec<u64> = (0..2000).map(|i| if i == 0 { 1000 } else { 999 }).collect();
    let seq = smooth_sequence(&weights);
    assert!(seq.len() as u64 <= MAX_PERIOD);
    let first = seq.iter().filter(|&&i| i == 0).count();
    let second = seq.iter().filter(|&&i| i == 1).count();
    assert!(first >= second && first > 0, "{first} vs {second}");
    // Never more than two turns in a row for one server among equals.
    assert!(seq.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])));
}

#[test]
fn least_connections_prefers_idle_and_breaks_ties_round_robin() {
    let set = backends(&[1; 4]);
    let lc = build(
        StrategyKind::LeastConnections,
        &set,
        &StrategyMemory::default(),
    );
    let _busy: Vec<_> = (0..3).map(|_| set[0].state.start_request()).collect();
    let _one = set[1].state.start_request();
    let c = counts(lc.as_ref(), &set, 100);
    assert_eq!(c[0], 0, "{c:?}");
    assert_eq!(c[1], 0, "{c:?}");
    assert_eq!(c[2] + c[3], 100);
    assert!(c[2] > 30 && c[3] > 30, "ties not rotated: {c:?}");
}

#[test]
fn p2c_avoids_the_loaded_server() {
    let set = backends(&[1; 5]);
    let p = build(StrategyKind::P2c, &set, &StrategyMemory::default());
    let _load: Vec<_> = (0..10).map(|_| set[0].state.start_request()).collect();
    let c = counts(p.as_ref(), &set, 2000);
    assert_eq!(
        c[0], 0,
        "a server that loses every comparison is never picked: {c:?}"
    );
    assert!(c[1..].iter().all(|&x| x > 300), "{c:?}");
}

#[test]
fn peak_ewma_prefers_the_fast_server() {
    let set = backends(&[1; 2]);
    set[0].state.observe_latency(Duration::from_millis(50), 10);
    set[1].state.observe_latency(Duration::from_millis(1), 10);
    let p = build(StrategyKind::PeakEwma, &set, &StrategyMemory::default());
    let c = counts(p.as_ref(), &set, 100);
    assert_eq!(c, vec![0, 100]);
}

#[test]
fn consistent_hash_is_stable_and_moves_only_the_leavers_keys() {
    let set = backends(&[1; 10]);
    let ring = build(
        StrategyKind::ConsistentHash,
        &set,
        &StrategyMemory::default(),
    );
    let pick = |s: &dyn Strategy, set: &[Backend], key: u64| {
        let r = PickRequest {
            key: Some(key),
            ..req()
        };
        set[s.pick(set, &r).expect("pick")].addr
    };
    let keys: Vec<u64> = (0..5000u32)
        .map(|k| hash_bytes(format!("tenant-{k}").as_bytes()))
        .collect();
    let before: Vec<_> = keys.iter().map(|&k| pick(ring.as_ref(), &set, k)).collect();
    let again: Vec<_> = keys.iter().map(|&k| pick(ring.as_ref(), &set, k)).collect();
    assert_eq!(before, again);
    let mut per = std::collections::HashMap::new();
    for a in &before {
        *per.entry(*a).or_insert(0) += 1;
    }
    assert!(
        per.values().all(|&n| n > 250 && n < 800),
        "uneven ring: {per:?}"
    );

    let gone = set[3].addr;
    let fewer: Vec<Backend> = set.iter().filter(|b| b.addr != gone).cloned().collect();
    let ring2 = build(
        StrategyKind::ConsistentHash,
        &fewer,
        &StrategyMemory::default(),
    );
    let after: Vec<_> = keys
        .iter()
        .map(|&k| pick(ring2.as_ref(), &fewer, k))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        if *b != gone {
            assert_eq!(b, a, "a key of a staying server moved");
        }
    }
}

#[test]
fn every_strategy_skips_ejected_and_avoided_servers() {
    let set = backends(&[1, 1, 1]);
    let eject = EjectionConfig {
        after_5xx: 5,
        base_time: Duration::from_secs(10),
        max_time: Duration::from_secs(60),
        max_percent: 100,
    };
    set[0].state.eject(1, &eject);
    for kind in [
        StrategyKind::RoundRobin,
        StrategyKind::Weighted,
        StrategyKind::LeastConnections,
        StrategyKind::P2c,
        StrategyKind::PeakEwma,
        StrategyKind::ConsistentHash,
    ] {
        let s = build(kind, &set, &StrategyMemory::default());
        for key in 0..200u64 {
            let r = PickRequest {
                key: Some(hash_bytes(&key.to_be_bytes())),
                avoid: Some(set[1].addr),
                now_ms: 2,
            };
            assert_eq!(s.pick(&set, &r), Some(2), "{kind:?}");
        }
        // Once the ejection has run out the server is back.
        let later = PickRequest {
            key: None,
            avoid: Some(set[1].addr),
            now_ms: 20_000,
        };
        let mut seen0 = false;
        for _ in 0..200 {
            seen0 |= s.pick(&set, &later) == Some(0);
        }
        assert!(
            seen0,
            "{kind:?} never returned to the server after its ejection"
        );
    }
}
