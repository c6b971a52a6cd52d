//! Through the real proxy to a real fleet of built-in servers, with rmcp's client: sessions stick
//! to their server, stateless calls are balanced, unknown routes get JSON-RPC 404s.

mod common;

use common::{http, mcp, FleetDir};
use serde_json::json;
use std::collections::BTreeSet;

fn fleet() -> (FleetDir, common::Proc) {
    let dir = FleetDir::new(&[("database", 4), ("api", 4), ("cache", 4)], &[]);
    let proc = dir.serve();
    (dir, proc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_stateless_balances_and_bad_routes_get_jsonrpc_404() {
    let (dir, _serve) = fleet();
    let base = dir.base();

    // One session: tools/list, then 50 remember/recall pairs, all on the server that minted it.
    let url = format!("{base}/mcp/database");
    let client = mcp::connect(&url).await;
    let name = mcp::server_name(&client);
    assert!(name.starts_with("mcp-fleet-backend database:"), "{name}");
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: BTreeSet<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for t in [
        "echo",
        "remember",
        "recall",
        "forget",
        "list_memories",
        "countdown",
    ] {
        assert!(names.contains(t), "missing tool {t}: {names:?}");
    }
    assert!(
        !names.contains("grow_memory"),
        "debug tool offered without --debug-tools"
    );
    for i in 0..50 {
        let key = format!("k{i}");
        let value = format!("value-{i}");
        mcp::call(&client, "remember", json!({"key": key, "value": value}))
            .await
            .expect("remember");
        let got = mcp::call(&client, "recall", json!({"key": key}))
            .await
            .expect("recall");
        assert_eq!(got.is_error, Some(false), "recall {i} failed: {got:?}");
        assert_eq!(mcp::text(&got), value);
    }
    client.cancel().await.expect("close session");

    // 20 concurrent sessions per category spread over more than one server, each recalling
    // only its own memory.
    for category in ["database", "api", "cache"] {
        let url = format!("{base}/mcp/{category}");
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    let c = mcp::connect(&url).await;
                    mcp::call(
                        &c,
                        "remember",
                        json!({"key": "me", "value": format!("s{i}")}),
                    )
                    .await
                    .expect("remember");
                    let got = mcp::call(&c, "recall", json!({"key": "me"}))
                        .await
                        .expect("recall");
                    assert_eq!(mcp::text(&got), format!("s{i}"));
                    let name = mcp::server_name(&c);
                    c.cancel().await.expect("close");
                    name
                })
            })
            .collect();
        let mut servers = BTreeSet::new();
        for t in tasks {
            servers.insert(t.await.expect("session task"));
        }
        assert!(
            servers.len() > 1,
            "{category}: 20 sessions all on {servers:?}"
        );
        assert!(servers.iter().all(|s| s.contains(&format!("{category}:"))));
    }

    // Stateless (2026-07-28) requests: balanced per request; the Mcp-Name header the server
    // requires arrives untouched.
    let c = http::client();
    let mut servers = BTreeSet::new();
    for i in 0..8 {
        let (status, body) =
            http::stateless_call(&c, &format!("{base}/mcp/api"), &format!("hi{i}")).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json reply");
        assert_eq!(v["result"]["content"][0]["text"], format!("hi{i}"));
        servers.insert(
            v["result"]["structuredContent"]["server"]
                .as_str()
                .map(String::from),
        );
    }
    assert_eq!(servers.len(), 4, "round-robin over 4 servers: {servers:?}");

    // Unknown category: 404 with a JSON-RPC error naming the known categories.
    let resp = c
        .post(format!("{base}/mcp/nosuch"))
        .header("accept", http::ACCEPT)
        .json(&http::initialize_body())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 404);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["error"]["code"], -32001);
    // Listed in the order of their port ranges, which the harness picks at random: compare
    // the names, not their order.
    let mut listed: Vec<&str> = v["error"]["data"]["categories"]
        .as_array()
        .expect("a list of categories")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, ["api", "cache", "database"]);

    for path in ["/mcp/database/x", "/mcp/..%2Fetc", "/other", "/mcp/"] {
        let resp = c.get(format!("{base}{path}")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let v: serde_json::Value = resp.json().await.expect("json");
        assert!(v["error"]["code"].is_i64(), "{path}: {v}");
    }

    // Local endpoints: /health and /stats answer without a backend.
    let health: serde_json::Value = c
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["serving"], 12);
    let stats: serde_json::Value = c
        .get(format!("{base}/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["total"], 12);
    let api = stats["categories"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "api"))
        .expect("api stats");
    assert_eq!(api["servers"].as_array().map(Vec::len), Some(4));
    let served: u64 = api["servers"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["requests"].as_u64()).sum())
        .unwrap_or(0);
    assert!(served >= 8 + 20, "api served {served} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_reply_arrives_event_by_event() {
    let (dir, _serve) = fleet();
    let url = format!("{}/mcp/cache", dir.base());
    let c = http::client();
    let (sid, _) = http::open_session(&c, &url).await;

    // countdown sends one progress notification per step, 400 ms apart, then the result. A
    // buffering proxy would hand over everything in one piece at the end.
    let mut resp = http::countdown(&c, &url, &sid, 4, 400).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(
        resp.headers()
            .get("x-accel-buffering")
            .and_then(|v| v.to_str().ok()),
        Some("no")
    );
    let mut reads_with_progress_before_result = 0;
    let mut all = String::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        let text = String::from_utf8_lossy(&chunk).to_string();
        all.push_str(&text);
        if all.contains("liftoff") {
            break;
        }
        if text.contains("notifications/progress") {
            reads_with_progress_before_result += 1;
        }
    }
    assert!(all.contains("liftoff after 4 steps"), "{all}");
    assert!(
        reads_with_progress_before_result >= 3,
        "progress events did not arrive separately before the result: {all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_streams_open_and_delete_ends_the_session() {
    let dir = FleetDir::new(&[("queue", 2)], &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/queue", dir.base());
    let c = http::client();
    let (sid, _) = http::open_session(&c, &url).await;

    // GET opens the server-to-client stream: its headers arrive while the stream stays open.
    let stream = c
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stream.status().as_u16(), 200);
    assert_eq!(
        stream
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    drop(stream);

    let delete = c
        .delete(&url)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("DELETE");
    assert!(delete.status().is_success(), "{}", delete.status());
    // The server has ended the session: it answers 404 itself, through the proxy.
    let after = c
        .post(&url)
        .header("accept", http::ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .expect("after delete");
    assert_eq!(after.status().as_u16(), 404);

    // Other methods are refused by the proxy with a JSON-RPC body.
    let put = c.put(&url).body("{}").send().await.expect("PUT");
    assert_eq!(put.status().as_u16(), 405);
    let v: serde_json::Value = put.json().await.expect("json");
    assert_eq!(v["jsonrpc"], "2.0");
}
