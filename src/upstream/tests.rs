//! Unit tests of the registry: snapshots, live state across swaps, ejection, drains.
use super::*;
use std::collections::HashSet;
use std::path::Path;

fn registry(extra: &str) -> Registry {
    let config = crate::config::parse(
        &format!(
            r#"
{extra}
[categories.a]
ports = "41000-41002"
[categories.b]
backends = ["127.0.0.1:7000", "127.0.0.1:7001"]
"#
        ),
        Path::new("t.toml"),
        Path::new("."),
    )
    .expect("valid");
    Registry::new(&config, &spawned(&config))
}

/// What the fleet's plan gives the registry for `config`.
fn spawned(config: &ValidConfig) -> Vec<SpawnedMember> {
    config
        .categories
        .iter()
        .flat_map(|c| {
            c.spawned_ports()
                .enumerate()
                .map(|(i, port)| SpawnedMember {
                    id: server_id(&c.name, i).into(),
                    category: c.name.as_str().into(),
                    addr: SocketAddr::new(config.fleet.host, port),
                })
        })
        .collect()
}

fn config_with(servers: u16) -> ValidConfig {
    crate::config::parse(
        &format!("[health]\nenabled = false\n[categories.a]\nports = \"41000-41003\"\nservers = {servers}\n"),
        Path::new("t.toml"),
        Path::new("."),
    )
    .expect("valid")
}

#[test]
fn a_member_taken_back_before_its_drain_ends_leaves_the_drain_and_stays() {
    let four = config_with(4);
    let r = Registry::new(&four, &spawned(&four));
    let addrs: Vec<SocketAddr> = r.load().sets[0].all.iter().map(|b| b.addr).collect();
    r.set_ready(&addrs.iter().map(|a| (*a, true)).collect::<Vec<_>>());
    let two = config_with(2);
    let (draining, ..) = r.apply(&two, &spawned(&two), &HashSet::new(), 1);
    assert_eq!(draining, addrs[2..].to_vec());
    let snap = r.load();
    assert_eq!(snap.sets[0].planned, 2);
    assert_eq!(
        snap.sets[0].ready_count(),
        2,
        "the leaving two take no new requests"
    );
    drop(snap);
    // Grown back within the drain: the two are members again at once, state kept.
    let (draining, ..) = r.apply(&four, &spawned(&four), &HashSet::new(), 2);
    assert!(draining.is_empty(), "{draining:?}");
    let snap = r.load();
    assert_eq!(snap.sets[0].planned, 4);
    assert_eq!(
        snap.sets[0].ready_count(),
        4,
        "back in rotation, still ready"
    );
    drop(snap);
    // The first reload's timer fires: nothing of its drain is left to end.
    assert_eq!(r.finish_drain(1), Drained::default());
    assert_eq!(r.load().sets[0].ready_count(), 4);
}

#[test]
fn each_reload_ends_only_its_own_drain() {
    let four = config_with(4);
    let r = Registry::new(&four, &spawned(&four));
    let three = config_with(3);
    r.apply(&three, &spawned(&three), &HashSet::new(), 1);
    let two = config_with(2);
    let (draining, ..) = r.apply(&two, &spawned(&two), &HashSet::new(), 2);
    assert_eq!(
        draining.len(),
        1,
        "a-3 was already draining; a-2 begins now"
    );
    let first = r.finish_drain(1);
    assert_eq!(first.removed, vec![Arc::<str>::from("a-3")]);
    assert_eq!(
        r.load().sets[0].all.len(),
        3,
        "a-2 still drains for reload 2"
    );
    let second = r.finish_drain(2);
    assert_eq!(second.removed, vec![Arc::<str>::from("a-2")]);
    assert_eq!(r.load().sets[0].all.len(), 2);
}

fn req() -> PickRequest {
    PickRequest {
        key: None,
        avoid: None,
        now_ms: clock::now_ms(),
    }
}

#[test]
fn spawned_start_unready_static_start_unhealthy_until_checked() {
    let r = registry("");
    let snap = r.load();
    assert_eq!(snap.known, "a, b");
    let a = snap.category("a").expect("a");
    assert_eq!(a.all.len(), 3);
    assert!(a.pick(&req()).is_none());
    let b = snap.category("b").expect("b");
    assert_eq!(
        b.ready_count(),
        0,
        "static servers wait for their first check"
    );
    assert_eq!(r.health_targets().len(), 2);
    let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
    assert_eq!(r.set_health(&[(addr, true)]), 1);
    assert_eq!(r.load().category("b").expect("b").ready_count(), 1);
    assert!(snap.category("c").is_none());
}

#[test]
fn without_health_checks_ready_means_eligible() {
    let r = registry("[health]\nenabled = false");
    assert_eq!(r.load().category("b").expect("b").ready_count(), 2);
}

#[test]
fn publishing_swaps_a_snapshot_and_keeps_live_state() {
    let r = registry("");
    let mut generation = r.subscribe();
    let addr: SocketAddr = "127.0.0.1:41001".parse().expect("addr");
    let before = r.load().category("a").expect("a").all[1].state.clone();
    let guard = before.start_request();
    assert_eq!(r.set_ready(&[(addr, true)]), 1);
    assert!(generation.has_changed().expect("sender alive"));
    generation.mark_unchanged();
    assert_eq!(r.set_ready(&[(addr, true)]), 0, "no change, no swap");
    assert!(!generation.has_changed().expect("sender alive"));
    assert!(
        r.load().category("a").expect("a").pick(&req()).is_none(),
        "not yet checked"
    );
    let target = r
        .health_targets()
        .into_iter()
        .find(|t| t.addr == addr)
        .expect("target");
    assert_eq!(target.ready_epoch, 1);
    r.set_health(&[(addr, true)]);
    let snap = r.load();
    let a = snap.category("a").expect("a");
    let picked = a.pick(&req()).expect("one eligible");
    assert_eq!(picked.addr, addr);
    assert_eq!(picked.state.in_flight(), 1, "counters carried over");
    drop(guard);
    assert_eq!(picked.state.in_flight(), 0);
    assert!(a.session_target(&addr, clock::now_ms()).is_some());
    let other: SocketAddr = "127.0.0.1:41000".parse().expect("addr");
    assert!(a.session_target(&other, clock::now_ms()).is_none());

    // A restart makes it unhealthy again until it passes a check.
    r.set_ready(&[(addr, false)]);
    r.set_ready(&[(addr, true)]);
    assert_eq!(r.load().category("a").expect("a").ready_count(), 0);
}

#[test]
fn ejection_respects_the_share_cap() {
    let r = registry("[health]\nenabled = false");
    let snap = r.load();
    let b = snap.category("b").expect("b");
    let config = EjectionConfig {
        after_5xx: 5,
        base_time: Duration::from_secs(10),
        max_time: Duration::from_secs(60),
        max_percent: 50,
    };
    let now = clock::now_ms();
    assert!(b.try_eject(&b.all[0], now, &config).is_some());
    assert!(
        b.try_eject(&b.all[1], now, &config).is_none(),
        "a second ejection would take 100% out"
    );
    let p = b.pick(&req()).expect("the other one");
    assert_eq!(p.addr, b.all[1].addr);
    assert!(
        b.session_target(&b.all[0].addr, now).is_none(),
        "ejected: sessions get 404"
    );
}

#[test]
fn a_change_rebuilds_only_the_category_it_touches() {
    let r = registry("[health]\nenabled = false");
    let before = Arc::clone(&*r.load());
    let addr: SocketAddr = "127.0.0.1:41001".parse().expect("addr");
    assert_eq!(r.set_ready(&[(addr, true)]), 1);
    let after = Arc::clone(&*r.load());
    let (a0, a1) = (
        before.category("a").expect("a"),
        after.category("a").expect("a"),
    );
    assert!(!Arc::ptr_eq(a0, a1), "the changed category is rebuilt");
    assert_eq!(a1.ready_count(), a0.ready_count() + 1);
    let (b0, b1) = (
        before.category("b").expect("b"),
        after.category("b").expect("b"),
    );
    assert!(Arc::ptr_eq(b0, b1), "the other one is kept as it was");
}
