//! Session ids are sealed routes, not table entries: they survive a proxy restart and work on a
//! second instance that shares the key, and an edited id reaches nobody.

mod common;

use common::{http, mcp, start_backend, FleetDir};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_the_proxy_and_moves_to_a_second_instance() {
    // Static backends that outlive the proxy processes.
    let ports = [
        common::free_port(),
        common::free_port(),
        common::free_port(),
    ];
    let _backends: Vec<_> = ports.iter().map(|p| start_backend("notes", *p)).collect();
    let addrs: Vec<_> = ports
        .iter()
        .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let first = FleetDir::new(&[], &[("notes", addrs.clone())]);
    let mut serve = first.serve();

    let c = http::client();
    let url = format!("{}/mcp/notes", first.base());
    let (sid, _) = http::initialize(&c, &url).await;
    assert!(sid.starts_with("f1"), "proxy token expected, got {sid}");
    let call = |base: String, sid: String, tool: &'static str, args: serde_json::Value| {
        let c = c.clone();
        async move { http::session_tool(&c, &format!("{base}/mcp/notes"), &sid, tool, args).await }
    };
    let (status, body) = call(
        first.base(),
        sid.clone(),
        "remember",
        json!({"key": "k", "value": "kept"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Restart the proxy on the same config and state dir: the same id still routes.
    common::signal(serve.pid(), 15);
    assert_eq!(serve.wait_exit(Duration::from_secs(15)), Some(0));
    let _serve = first.serve();
    for _ in 0..6 {
        let (status, body) = call(first.base(), sid.clone(), "recall", json!({"key": "k"})).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("kept"),
            "recall after restart went elsewhere: {body}"
        );
    }

    // A second instance with a copy of the state dir (same key) and the same backends.
    let second = FleetDir::new(&[], &[("notes", addrs.clone())]);
    std::fs::create_dir_all(second.path().join("state")).expect("mkdir");
    std::fs::copy(
        first.path().join("state/session.key"),
        second.path().join("state/session.key"),
    )
    .expect("copy key");
    let _serve2 = second.serve();
    let (status, body) = call(second.base(), sid.clone(), "recall", json!({"key": "k"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("kept"),
        "second instance routed elsewhere: {body}"
    );

    // A third instance with its own key refuses the id: 404, as the spec wants.
    let stranger = FleetDir::new(&[], &[("notes", addrs)]);
    let _serve3 = stranger.serve();
    let (status, body) = call(stranger.base(), sid.clone(), "recall", json!({"key": "k"})).await;
    assert_eq!(status, 404, "{body}");

    // Tampered ids, one character changed anywhere, a truncation, an overlong one: all 404
    // with a JSON-RPC error body.
    let mut tampered = Vec::new();
    for i in [2, sid.len() / 2, sid.len() - 1] {
        let mut b = sid.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        tampered.push(String::from_utf8(b).expect("ascii"));
    }
    tampered.push(sid[..sid.len() - 4].to_string());
    tampered.push(format!("{sid}{}", "A".repeat(2000)));
    tampered.push("not-a-token".to_string());
    for bad in tampered {
        let (status, body) = call(first.base(), bad.clone(), "recall", json!({"key": "k"})).await;
        assert_eq!(status, 404, "{bad}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json error body");
        assert_eq!(v["error"]["code"], -32002, "{body}");
    }
}

/// Initializes sessions until one lands on `port`; returns its session id.
async fn session_on(c: &reqwest::Client, url: &str, port: u16) -> String {
    for _ in 0..50 {
        let (sid, body) = http::initialize(c, url).await;
        if body.contains(&format!(":{port}\"")) {
            return sid;
        }
    }
    panic!("no session landed on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_session_gets_404_and_a_new_session_works() {
    let port = common::free_port();
    let other = common::free_port();
    let mut doomed = start_backend("solo", port);
    let _other = start_backend("solo", other);
    let dir = FleetDir::new(
        &[],
        &[(
            "solo",
            vec![
                ([127, 0, 0, 1], port).into(),
                ([127, 0, 0, 1], other).into(),
            ],
        )],
    );
    let _serve = dir.serve();
    let url = format!("{}/mcp/solo", dir.base());
    let c = http::client();
    let sid = session_on(&c, &url, port).await;

    let _ = doomed.child.kill();
    let _ = doomed.child.wait();

    let resp = c
        .post(&url)
        .header("accept", http::ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 404, "orphaned session must get 404");
    let v: serde_json::Value = resp.json().await.expect("json error body");
    assert_eq!(v["error"]["code"], -32002);

    // The client re-initializes, as the spec says, and gets the surviving server.
    let client = mcp::connect(&url).await;
    assert!(mcp::server_name(&client).ends_with(&format!(":{other}")));
    client.cancel().await.expect("close");
}
