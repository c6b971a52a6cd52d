//! Failures through the real proxy: killed servers cost clients nothing, a hung server costs one
//! timeout, a request that may have reached a server is never sent twice, health checks leave no
//! sessions behind, and a client that hangs up ends its upstream request.

mod common;

use common::fake::{self, Behaviour};
use common::{alive, children_of, http, start_backend, wait_for, FleetDir, Sections};
use std::net::SocketAddr;
use std::time::Duration;

/// (pid, port) of each server `serve` spawned.
fn servers_of(serve: u32) -> Vec<(u32, u16)> {
    children_of(serve)
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let i = args.iter().position(|a| a == "--port")?;
            Some((pid, args.get(i + 1)?.parse().ok()?))
        })
        .collect()
}

async fn sequential(c: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(http::stateless_call(c, url, &format!("s{i}")).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_3_of_10_servers_fails_no_request_and_they_come_back() {
    let dir = FleetDir::new(&[("fo", 10)], &[]);
    let serve = dir.serve();
    let c = http::client();
    let url = format!("{}/mcp/fo", dir.base());
    assert!(sequential(&c, &url, 20).await.iter().all(|&s| s == 200));

    let victims: Vec<(u32, u16)> = servers_of(serve.pid()).into_iter().take(3).collect();
    assert_eq!(victims.len(), 3);
    for (pid, _) in &victims {
        common::signal(*pid, 9);
    }
    wait_for("the victims to die", Duration::from_secs(10), || {
        victims.iter().all(|(p, _)| !alive(*p)).then_some(())
    });
    let statuses = sequential(&c, &url, 60).await;
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    assert_eq!(
        failed, 0,
        "client saw failures after the kill: {statuses:?}"
    );

    // The killed servers are out of rotation in /stats (not ready, unhealthy or ejected) ...
    let stats = http::stats(&c, &dir.base()).await;
    let servers = http::servers(&stats, "fo");
    for (_, port) in &victims {
        let s = servers
            .iter()
            .find(|s| {
                s["addr"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&format!(":{port}")))
            })
            .expect("victim in stats");
        let out =
            s["ready"] == false || s["healthy"] == false || s["ejected_ms"].as_u64() > Some(0);
        assert!(out, "killed server still in rotation: {s}");
    }
    // ... and once the fleet has restarted them and they pass a check, they are used again.
    wait_for("the victims to be back", Duration::from_secs(30), || {
        let (_, body) = common::plain::blocking_get(&format!("{}/stats", dir.base()))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["ready"] == 10).then_some(())
    });
    let before: Vec<u64> = victim_requests(&c, &dir, &victims).await;
    assert!(sequential(&c, &url, 30).await.iter().all(|&s| s == 200));
    let after: Vec<u64> = victim_requests(&c, &dir, &victims).await;
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a > b,
            "a restarted server got no traffic: {before:?} -> {after:?}"
        );
    }
}

async fn victim_requests(c: &reqwest::Client, dir: &FleetDir, victims: &[(u32, u16)]) -> Vec<u64> {
    let stats = http::stats(c, &dir.base()).await;
    let servers = http::servers(&stats, "fo");
    victims
        .iter()
        .map(|(_, port)| {
            servers
                .iter()
                .find(|s| {
                    s["addr"]
                        .as_str()
                        .is_some_and(|a| a.ends_with(&format!(":{port}")))
                })
                .and_then(|s| s["requests"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_costs_one_timeout_then_is_ejected() {
    let ports = [
        common::free_port(),
        common::free_port(),
        common::free_port(),
    ];
    let backends: Vec<_> = ports.iter().map(|p| start_backend("hang", *p)).collect();
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| ([127, 0, 0, 1], *p).into()).collect();
    let dir = FleetDir::with_sections(
        &[],
        &[("hang", addrs)],
        &Sections {
            proxy: "first_byte_timeout = \"1s\"",
            health: "interval = \"3s\"\ntimeout = \"1s\"",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let url = format!("{}/mcp/hang", dir.base());
    assert!(sequential(&c, &url, 6).await.iter().all(|&s| s == 200));

    // Accepts connections (the kernel does) but never answers.
    common::signal(backends[0].pid(), 19);
    let statuses = sequential(&c, &url, 30).await;
    common::signal(backends[0].pid(), 18);
    let timeouts = statuses.iter().filter(|&&s| s == 504).count();
    assert!(timeouts <= 1, "more than one timeout: {statuses:?}");
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count() + timeouts,
        30,
        "{statuses:?}"
    );
    let stats = http::stats(&c, &dir.base()).await;
    let hung = http::servers(&stats, "hang")
        .into_iter()
        .find(|s| s["addr"] == format!("127.0.0.1:{}", ports[0]).as_str())
        .expect("hung server");
    assert!(
        hung["ejections"].as_u64() >= Some(1) || hung["healthy"] == false,
        "hung server neither ejected nor unhealthy: {hung}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_reached_a_server_is_never_sent_twice() {
    let mut holes = Vec::new();
    for _ in 0..3 {
        holes.push(fake::spawn(Behaviour::BlackHole).await);
    }
    let refused = common::free_port(); // nothing listens here
    let good = common::free_port();
    let _good = start_backend("mixed", good);
    let dir = FleetDir::with_sections(
        &[],
        &[
            (
                "holes",
                holes
                    .iter()
                    .map(|(p, _)| ([127, 0, 0, 1], *p).into())
                    .collect(),
            ),
            (
                "mixed",
                vec![
                    ([127, 0, 0, 1], refused).into(),
                    ([127, 0, 0, 1], good).into(),
                ],
            ),
        ],
        &Sections {
            health: "enabled = false",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();

    // Each black hole reads the request and hangs up: the proxy cannot know whether it was
    // processed, so it answers 502 and does not retry.
    let statuses = sequential(&c, &format!("{}/mcp/holes", dir.base()), 5).await;
    assert_eq!(statuses, vec![502; 5]);
    let reached: usize = holes.iter().map(|(_, n)| n.requests()).sum();
    assert_eq!(reached, 5, "a request was sent to more than one server");

    // A refused connection reached nobody: retried on the other server, the client never
    // notices.
    let statuses = sequential(&c, &format!("{}/mcp/mixed", dir.base()), 10).await;
    assert_eq!(statuses, vec![200; 10]);
    let stats = http::stats(&c, &dir.base()).await;
    let dead = http::servers(&stats, "mixed")
        .into_iter()
        .find(|s| s["addr"] == format!("127.0.0.1:{refused}").as_str())
        .expect("dead server");
    assert!(dead["connect_failures"].as_u64() >= Some(1), "{dead}");
    dir.assert_engine();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_health_checks_end_their_sessions_and_a_dead_category_gets_503() {
    let (stub, counts) = fake::spawn(Behaviour::McpStub).await;
    let dead = common::free_port();
    let dir = FleetDir::with_sections(
        &[],
        &[
            ("stub", vec![([127, 0, 0, 1], stub).into()]),
            ("dead", vec![([127, 0, 0, 1], dead).into()]),
        ],
        &Sections {
            health: "interval = \"200ms\"\ntimeout = \"200ms\"\nkind = \"mcp\"",
            ..Sections::default()
        },
    );
    let _serve = dir.serve_no_wait();
    wait_for("several checks", Duration::from_secs(20), || {
        (counts.initializes() >= 5).then_some(())
    });
    let (inits, deletes) = (counts.initializes(), counts.deletes());
    assert!(
        deletes + 1 >= inits,
        "checks left sessions behind: {inits} initialize, {deletes} DELETE"
    );
    // The stub passed its checks; the dead server never did.
    let c = http::client();
    let stats = http::stats(&c, &dir.base()).await;
    assert_eq!(http::servers(&stats, "stub")[0]["healthy"], true);
    assert_eq!(http::servers(&stats, "dead")[0]["healthy"], false);
    let resp = c
        .post(format!("{}/mcp/dead", dir.base()))
        .header("accept", http::ACCEPT)
        .json(&http::stateless_echo("x"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], -32003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_stream_ends_the_upstream_request() {
    let dir = FleetDir::new(&[("slow", 1)], &[]);
    let _serve = dir.serve();
    let c = http::client();
    let url = format!("{}/mcp/slow", dir.base());
    let (sid, _) = http::open_session(&c, &url).await;
    // 40 steps of 250 ms: 10 s if nobody hangs up.
    let mut resp = http::countdown(&c, &url, &sid, 40, 250).await;
    let first = resp.chunk().await.expect("first event");
    assert!(first.is_some());
    let in_flight = |v: &serde_json::Value| {
        http::servers(v, "slow")
            .first()
            .and_then(|s| s["in_flight"].as_u64())
            .unwrap_or(99)
    };
    assert_eq!(in_flight(&http::stats(&c, &dir.base()).await), 1);
    let started = std::time::Instant::now();
    drop(resp);
    wait_for(
        "the proxy to end the upstream request",
        Duration::from_secs(5),
        || {
            let (_, body) = common::plain::blocking_get(&format!("{}/stats", dir.base()))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (in_flight(&v) == 0).then_some(())
        },
    );
    println!(
        "upstream request ended {:?} after the client hung up",
        started.elapsed()
    );
}

/// A static server that is not up yet when `serve` starts joins within a second or so of coming
/// up (checks of a server that never passed back off from 0.5 s, not a whole interval), and the
/// reason it is out is logged once at `warn`, not every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_starts_late_joins_soon_and_says_why_it_was_out() {
    // Below the ephemeral range, so no other test's free_port() can be handed this port while
    // nothing listens on it yet.
    let port = common::free_port_block(1);
    let dir = FleetDir::with_sections(
        &[],
        &[("late", vec![([127, 0, 0, 1], port).into()])],
        &Sections {
            health: "kind = \"tcp\"\ninterval = \"30s\"\ntimeout = \"500ms\"",
            ..Sections::default()
        },
    );
    let _serve = dir.serve_no_wait();
    let why = "health check failed, not in rotation yet";
    wait_for(
        "the first failure to be logged",
        Duration::from_secs(10),
        || dir.log().contains(why).then_some(()),
    );
    // Several more checks fail for the same reason before the server comes up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _late = start_backend("late", port);
    wait_for(
        "the late server to be in rotation",
        Duration::from_secs(10),
        || {
            let (_, body) = common::plain::blocking_get(&format!("{}/stats", dir.base()))?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["ready"] == 1).then_some(())
        },
    );
    let log = dir.log();
    assert_eq!(
        log.matches(why).count(),
        1,
        "one warning per reason:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains(why) && l.contains("WARN")),
        "{log}"
    );
}
