//! The stdio bridge against a fake stdio server that fails on purpose
//! (`tests/fixtures/fake_stdio.py`): sessions and their children, ids that collide, crashes,
//! lines too long or not JSON, progress, notifications, back-pressure, cancellation. Limits,
//! reaping, memory policy, reloads and what is left after a stop are in `stdio_lifecycle.rs`;
//! the real npm and PyPI servers in `stdio_servers.rs`.

mod common;

use common::http::{self as h, ACCEPT};
use common::stdio::*;
use common::{processes_with, wait_for};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_serves_mcp_and_starts_a_child_only_for_a_session() {
    let (dir, marker) = fleet(1, "", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    // Health rounds went by (interval 1 s) and none of them started a child.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        processes_with(&marker).is_empty(),
        "a child before any request"
    );
    assert_eq!(
        stdio_total(&dir, "spawns"),
        0,
        "health checks started a child"
    );

    // A real client: rmcp's Streamable HTTP client through the proxy.
    let client = common::mcp::connect(&url).await;
    assert_eq!(common::mcp::server_name(&client), "fake-stdio");
    let r = common::mcp::call(&client, "echo", json!({"text": "hello\nworld"}))
        .await
        .expect("echo");
    assert_eq!(common::mcp::text(&r), "hello\nworld");
    assert_eq!(
        processes_with(&marker).len(),
        1,
        "one child for the session"
    );
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "whoami"));
    client.cancel().await.expect("close the session");
    // Its DELETE ends the child.
    wait_for(
        "the session's child to end",
        Duration::from_secs(10),
        || processes_with(&marker).is_empty().then_some(()),
    );
    wait_for("the stop to be counted", Duration::from_secs(10), || {
        (stdio_total(&dir, "exits.stopped") == 1).then_some(())
    });
    assert_eq!(stdio_total(&dir, "children"), 0);
    assert_eq!(stdio_total(&dir, "outlived"), 0);
    // The same counts in /metrics, `status` and the dashboard's JSON.
    assert_eq!(
        dir.metric("mcp_fleet_stdio_spawns_total{category=\"fake\"}"),
        1.0
    );
    assert_eq!(
        dir.metric("mcp_fleet_stdio_exits_total{category=\"fake\",cause=\"stopped\"}"),
        1.0
    );
    assert_eq!(
        dir.metric("mcp_fleet_stdio_outlived_processes_total{category=\"fake\"}"),
        0.0
    );
    let (code, out) = dir.cli(&["status"]);
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("fake ") && l.split_whitespace().count() == 9)
        .unwrap_or_else(|| panic!("no stdio row in status:\n{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[1..4],
        ["0", "0", "1"],
        "children, sessions, spawns: {row}"
    );
    let (_, body) = common::plain::blocking_get(&format!(
        "http://127.0.0.1:{}/dashboard.json",
        dir.monitor_port
    ))
    .expect("dashboard.json");
    let d: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(d["categories"][0]["stdio"]["spawns"], json!(1), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_sending_the_same_ids_see_only_their_own_answers() {
    for isolation in ["session", "shared"] {
        let (dir, marker) = fleet(1, &format!("isolation = \"{isolation}\""), &[]);
        let _serve = dir.serve();
        let url = format!("{}/mcp/fake", dir.base());
        let c = h::client();
        let mut sessions = Vec::new();
        for _ in 0..4 {
            sessions.push(h::open_session(&c, &url).await.0);
        }
        // Every session sends id 1, all at once, many times; each must get its own text.
        let rounds = futures::future::join_all(sessions.iter().enumerate().map(|(n, sid)| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                for round in 0..10 {
                    let text = format!("session {n} round {round}");
                    let (status, answer) = post(
                        &c,
                        &url,
                        Some(sid),
                        call(json!(1), "echo", json!({"text": text})),
                    )
                    .await;
                    assert_eq!(status, 200, "{answer}");
                    assert_eq!(answer["id"], json!(1));
                    assert_eq!(
                        tool_text(&answer),
                        text,
                        "{isolation}: another session's answer"
                    );
                }
            }
        }));
        rounds.await;
        let children = processes_with(&marker).len();
        match isolation {
            "session" => assert_eq!(children, 4, "one child per session"),
            _ => assert_eq!(children, 1, "one shared child"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_child_sends_before_its_initialize_answer_waits_for_the_session() {
    let (dir, _marker) = fleet(1, "", &["--log-on-initialize"]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    // The child logs before it answers: the answer is still the initialize result ...
    let (sid, body) = h::open_session(&c, &url).await;
    assert!(body.contains("fake-stdio"), "{body}");
    // ... and the log line is on the session's stream when it opens.
    let mut stream = c
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .expect("GET stream");
    let event = first_event(&mut stream).await;
    assert!(event.contains("starting up"), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_crashes_mid_call_fails_the_call_and_its_session_is_gone() {
    let (dir, _marker) = fleet(1, "", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (sid, _) = h::open_session(&c, &url).await;
    let (status, answer) = post(&c, &url, Some(&sid), call(json!(5), "crash", json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(answer["id"], json!(5));
    assert_eq!(answer["error"]["code"], json!(-32603), "{answer}");
    wait_for("the crash to be counted", Duration::from_secs(10), || {
        (stdio_total(&dir, "exits.crashed") == 1).then_some(())
    });
    let (status, answer) = post(&c, &url, Some(&sid), call(json!(6), "echo", json!({}))).await;
    assert_eq!(status, 404, "the session of a dead child: {answer}");
    // The client initialises again and goes on.
    let (sid, _) = h::open_session(&c, &url).await;
    assert_echo(&c, &url, &sid, "again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_too_long_fails_only_its_request_and_non_json_is_never_forwarded() {
    // The proxy's answer cap is raised so the bridge's own 16 MiB line cap is what is tested.
    let (dir, _marker) = fleet(1, "", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (sid, _) = h::open_session(&c, &url).await;
    let (status, answer) = post(
        &c,
        &url,
        Some(&sid),
        call(json!(2), "huge", json!({"mib": 20})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["error"]["code"], json!(-32603), "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("16 MiB"),
        "{answer}"
    );
    let (status, answer) = post(&c, &url, Some(&sid), call(json!(3), "garbage", json!({}))).await;
    assert_eq!(
        (status, tool_text(&answer).as_str()),
        (200, "after garbage")
    );
    let (status, answer) = post(
        &c,
        &url,
        Some(&sid),
        call(json!(4), "spam_stderr", json!({"lines": 5000})),
    )
    .await;
    assert_eq!((status, tool_text(&answer).as_str()), (200, "spammed"));
    assert_echo(&c, &url, &sid, "still here").await;
    assert_eq!(stdio_total(&dir, "oversized_lines"), 1);
    assert_eq!(stdio_total(&dir, "non_json_lines"), 1);
    assert_eq!(
        stdio_total(&dir, "children"),
        1,
        "the child survived all of it"
    );
    // stderr went to the server's log file, not to the client.
    let log = std::fs::read_to_string(dir.path().join("logs/fake/fake-0.log")).unwrap_or_default();
    assert!(
        log.contains("stderr line 4999"),
        "stderr not in the log: {}",
        log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_notifications_reach_the_stream_of_their_call() {
    let (dir, _marker) = fleet(1, "", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (sid, _) = h::open_session(&c, &url).await;
    let body = json!({"jsonrpc": "2.0", "id": "call-a", "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 200}, "_meta": {"progressToken": "tok-a"}}});
    let resp = c
        .post(&url)
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .json(&body)
        .send()
        .await
        .expect("slow");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap_or_default(),
        "text/event-stream"
    );
    let text = resp.text().await.expect("stream");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["method"], json!("notifications/progress"));
    assert_eq!(
        events[0]["params"]["progressToken"],
        json!("tok-a"),
        "token put back"
    );
    assert_eq!(events[1]["id"], json!("call-a"), "id put back");
    // A notification the child sends during a call travels on that call's stream.
    let resp = c
        .post(&url)
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .json(&call(json!(8), "notify", json!({})))
        .send()
        .await
        .expect("notify");
    let text = resp.text().await.expect("stream");
    assert!(text.contains("notifications/tools/list_changed"), "{text}");
    assert!(text.contains("notified"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_childs_notifications_reach_every_sessions_stream() {
    let (dir, _marker) = fleet(1, "isolation = \"shared\"", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (b, _) = h::open_session(&c, &url).await;
    let stream = c
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &b)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stream.status().as_u16(), 200);
    let (status, answer) = post(&c, &url, Some(&a), call(json!(1), "notify", json!({}))).await;
    assert_eq!((status, tool_text(&answer).as_str()), (200, "notified"));
    let mut stream = stream;
    let text = first_event(&mut stream).await;
    assert!(text.contains("notifications/tools/list_changed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_cannot_stall_the_other_sessions_of_a_shared_child() {
    let (dir, _marker) = fleet(1, "isolation = \"shared\"", &[]);
    let _serve = dir.serve();
    let port = servers(&dir)[0]["port"].as_u64().expect("port");
    // The bridge's own address: no proxy buffers in between.
    let url = format!("http://127.0.0.1:{port}/mcp");
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (b, _) = h::open_session(&c, &url).await;
    // B opens its stream and never reads it.
    let stalled = c
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &b)
        .send()
        .await
        .expect("GET stream");
    assert_eq!(stalled.status().as_u16(), 200);
    // 48 MiB of notifications to every session: far more than the sockets hold.
    let (status, answer) = post(
        &c,
        &url,
        Some(&a),
        call(json!(1), "flood", json!({"n": 6000, "size": 8192})),
    )
    .await;
    assert_eq!((status, tool_text(&answer).as_str()), (200, "flooded"));
    wait_for(
        "the stalled session to be closed",
        Duration::from_secs(20),
        || (stdio_total(&dir, "slow_closed") >= 1).then_some(()),
    );
    let (status, answer) = post(
        &c,
        &url,
        Some(&a),
        call(json!(2), "echo", json!({"text": "on"})),
    )
    .await;
    assert_eq!(
        (status, tool_text(&answer).as_str()),
        (200, "on"),
        "session a stalled"
    );
    let (status, _) = post(&c, &url, Some(&b), call(json!(3), "echo", json!({}))).await;
    assert_eq!(status, 404, "the stalled session is closed");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_childs_own_requests_are_refused_and_discover_is_answered_for_it() {
    let (dir, _marker) = fleet(1, "isolation = \"shared\"", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (sid, _) = h::open_session(&c, &url).await;
    // Which session would answer a shared child's sampling request? None: the bridge says so.
    let (status, answer) = post(&c, &url, Some(&sid), call(json!(1), "ask", json!({}))).await;
    assert_eq!(status, 200);
    let asked: Value = serde_json::from_str(&tool_text(&answer)).expect("the child's view");
    assert_eq!(asked["error"]["code"], json!(-32601), "{asked}");
    assert!(
        asked["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("isolation = \"session\""),
        "{asked}"
    );
    // A stateless client's server/discover: the fake server does not know it (-32601), so the
    // bridge describes it from its initialize answer.
    let resp = c
        .post(&url)
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .json(
            &json!({"jsonrpc": "2.0", "id": "d", "method": "server/discover",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}),
        )
        .send()
        .await
        .expect("discover");
    assert_eq!(resp.status().as_u16(), 200);
    let d: Value = resp.json().await.expect("json");
    assert_eq!(d["id"], json!("d"));
    assert!(
        d["result"]["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("2026-07-28"))),
        "{d}"
    );
    assert_eq!(
        d["result"]["capabilities"]["tools"]["listChanged"],
        json!(true),
        "{d}"
    );
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        json!("fake-stdio")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_childs_resource_updates_reach_only_the_subscribed_session() {
    let (dir, _marker) = fleet(1, "isolation = \"shared\"", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (b, _) = h::open_session(&c, &url).await;
    let subscribe = json!({"jsonrpc": "2.0", "id": 5, "method": "resources/subscribe",
                           "params": {"uri": "file:///watched"}});
    let (status, answer) = post(&c, &url, Some(&a), subscribe).await;
    assert_eq!(status, 200, "{answer}");
    let open = |sid: String| {
        c.get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", sid)
            .send()
    };
    let (mut stream_a, mut stream_b) = (
        open(a.clone()).await.expect("a"),
        open(b.clone()).await.expect("b"),
    );
    let (status, answer) = post(
        &c,
        &url,
        Some(&b),
        call(json!(1), "update", json!({"uri": "file:///watched"})),
    )
    .await;
    assert_eq!((status, tool_text(&answer).as_str()), (200, "updated"));
    // The child sent the update, then list_changed: a sees both, b (not subscribed) only the
    // second. Events come in the child's order, so b's first event tells.
    let a_first = first_event(&mut stream_a).await;
    assert!(
        a_first.contains("notifications/resources/updated"),
        "{a_first}"
    );
    let b_first = first_event(&mut stream_b).await;
    assert!(
        b_first.contains("list_changed") && !b_first.contains("resources/updated"),
        "{b_first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_stateless_stream_cancels_the_call_at_the_child() {
    let (dir, _marker) = fleet(1, "", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    // The shared child is started (and initialised) by a first request.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(30),
        h::stateless_tool(&c, &url, "echo", json!({"text": "warm"})),
    )
    .await
    .expect("warm-up answered");
    assert_eq!(status, 200);
    // The client gives up after 300 ms of a 10 s call: its stream closes.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        h::stateless_tool(&c, &url, "slow", json!({"ms": 10_000})),
    )
    .await;
    assert!(gave_up.is_err(), "the slow call answered early");
    let cancelled = wait_for("the child to be told", Duration::from_secs(10), || {
        let rt = tokio::runtime::Handle::current();
        let (_, body) = tokio::task::block_in_place(|| {
            rt.block_on(h::stateless_tool(&c, &url, "cancelled", json!({})))
        });
        let list: Vec<Value> = serde_json::from_str(&tool_text(&answer_of(&body))).ok()?;
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
}
