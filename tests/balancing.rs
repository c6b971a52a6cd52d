//! Distribution through the real proxy: round-robin is exact, weighted keeps its ratio,
//! least-connections and p2c starve a slow server, consistent hashing pins a tenant.

mod common;

use common::{http, start_backend_with, FleetDir, Sections};
use std::collections::{BTreeMap, BTreeSet};

fn requests_by_server(stats: &serde_json::Value, category: &str) -> BTreeMap<String, u64> {
    http::servers(stats, category)
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["requests"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_10k_requests_over_100_servers_within_one() {
    let dir = FleetDir::with_sections(
        &[("wide", 100)],
        &[],
        &Sections {
            fleet: "batch_size = 50",
            // Checks that time out under this load would flip servers in and out mid-count.
            health: "interval = \"10s\"\ntimeout = \"5s\"",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let statuses = http::blast(&c, &format!("{}/mcp/wide", dir.base()), 10_000, 32, None).await;
    assert!(
        statuses.iter().all(|&s| s == 200),
        "failures: {:?}",
        statuses.iter().filter(|&&s| s != 200).count()
    );
    let counts = requests_by_server(&http::stats(&c, &dir.base()).await, "wide");
    assert_eq!(counts.len(), 100);
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    println!("round-robin over 100 servers: min {min}, max {max} requests");
    assert!(min >= 99 && max <= 101, "min {min} max {max}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_three_to_one_within_three_percent() {
    let dir = FleetDir::with_sections(
        &[("w", 2)],
        &[],
        &Sections {
            categories: vec![(
                "w",
                "strategy = \"weighted\"\nserver_weights = { \"w-0\" = 3 }".into(),
            )],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let statuses = http::blast(&c, &format!("{}/mcp/w", dir.base()), 4_000, 16, None).await;
    assert!(statuses.iter().all(|&s| s == 200));
    let counts = requests_by_server(&http::stats(&c, &dir.base()).await, "w");
    let heavy = counts["w-0"] as f64;
    let light = counts["w-1"] as f64;
    let share = heavy / (heavy + light);
    println!(
        "weighted 3:1 -> {heavy}:{light} ({:.2}% heavy)",
        share * 100.0
    );
    assert!((share - 0.75).abs() <= 0.03, "share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_and_p2c_send_less_to_a_slow_server() {
    // Three categories of four static servers each; in every one, the last server is slow.
    let mut procs = Vec::new();
    let mut statics = Vec::new();
    for category in ["rr", "lc", "p2c"] {
        let mut addrs = Vec::new();
        for i in 0..4 {
            let port = common::free_port();
            let flags: &[&str] = if i == 3 { &["--delay-ms", "250"] } else { &[] };
            procs.push(start_backend_with(category, port, flags));
            addrs.push(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        }
        statics.push((category, addrs));
    }
    let statics: Vec<(&str, Vec<std::net::SocketAddr>)> = statics;
    let dir = FleetDir::with_sections(
        &[],
        &statics,
        &Sections {
            categories: vec![
                ("lc", "strategy = \"least-connections\"".into()),
                ("p2c", "strategy = \"p2c\"".into()),
            ],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let mut shares = BTreeMap::new();
    for (category, addrs) in &statics {
        let statuses =
            http::blast(&c, &format!("{}/mcp/{category}", dir.base()), 240, 12, None).await;
        assert!(statuses.iter().all(|&s| s == 200), "{category}");
        let stats = http::stats(&c, &dir.base()).await;
        let slow_addr = addrs[3].to_string();
        let servers = http::servers(&stats, category);
        let total: u64 = servers.iter().filter_map(|s| s["requests"].as_u64()).sum();
        let slow = servers
            .iter()
            .find(|s| s["addr"] == slow_addr.as_str())
            .and_then(|s| s["requests"].as_u64())
            .unwrap_or(0);
        shares.insert(*category, (slow, total));
    }
    println!("slow server's share (requests, of total): {shares:?}");
    let (rr_slow, rr_total) = shares["rr"];
    assert_eq!(
        rr_slow * 4,
        rr_total,
        "round-robin gives the slow server its quarter"
    );
    for category in ["lc", "p2c"] {
        let (slow, total) = shares[category];
        assert!(
            slow * 10 < total,
            "{category}: slow server got {slow} of {total} requests"
        );
    }
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_each_tenant_on_one_server() {
    let dir = FleetDir::with_sections(
        &[("tenants", 4)],
        &[],
        &Sections {
            categories: vec![(
                "tenants",
                "strategy = \"consistent-hash\"\nhash_header = \"X-Tenant\"".into(),
            )],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let url = format!("{}/mcp/tenants", dir.base());
    let mut homes = BTreeSet::new();
    for tenant in 0..12 {
        let mut servers = BTreeSet::new();
        for _ in 0..5 {
            let resp = c
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", http::ACCEPT)
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "echo")
                .header("x-tenant", format!("tenant-{tenant}"))
                .json(&http::stateless_echo("x"))
                .send()
                .await
                .expect("send");
            let v: serde_json::Value = resp.json().await.expect("json");
            servers.insert(v["result"]["structuredContent"]["server"].to_string());
        }
        assert_eq!(
            servers.len(),
            1,
            "tenant-{tenant} moved between {servers:?}"
        );
        homes.extend(servers);
    }
    assert!(homes.len() > 1, "12 tenants all hashed to {homes:?}");
}
