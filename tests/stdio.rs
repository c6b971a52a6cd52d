//! The stdio bridge against a fake stdio server that fails on purpose
//! (`tests/fixtures/fake_stdio.py`): sessions and their children, ids that collide, crashes,
//! lines too long or not JSON, cancellation, idle reaping, limits, and no process left behind
//! by a stop or a `kill -9` of `serve`. The real npm and PyPI servers are in `stdio_servers.rs`.

mod common;

use common::http::{self as h, ACCEPT};
use common::{processes_with, wait_for, FleetDir, Sections};
use serde_json::{json, Value};
use std::time::Duration;

const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_stdio.py");

/// A fleet with one stdio category `fake` of `servers` servers running the fake server with
/// `flags`; `lines` are more keys of the category. The config folder's path is on every
/// child's command line, so the test can find every process that came from it.
fn fleet(servers: u16, lines: &str, flags: &[&str]) -> (FleetDir, String) {
    // Children start slowly when the machine is busy (other tests, a hundred interpreters):
    // wide enough margins that a slow start is not taken for a dead server.
    fleet_with(
        servers,
        lines,
        flags,
        "first_byte_timeout = \"30s\"",
        "interval = \"1s\"\ntimeout = \"900ms\"\nunhealthy_threshold = 5",
    )
}

/// `proxy` and `health`: more lines for those sections.
fn fleet_with(
    servers: u16,
    lines: &str,
    flags: &[&str],
    proxy: &str,
    health: &str,
) -> (FleetDir, String) {
    let marker = format!("fake-{}", common::free_port());
    let mut args = vec![
        format!("\"{FAKE}\""),
        "\"--marker\"".into(),
        format!("\"{marker}\""),
    ];
    args.extend(flags.iter().map(|f| format!("\"{f}\"")));
    let category = format!(
        "transport = \"stdio\"\ncommand = [\"python3\", {}]\n{lines}",
        args.join(", ")
    );
    let dir = FleetDir::with_sections(
        &[("fake", servers)],
        &[],
        &Sections {
            proxy,
            health,
            categories: vec![("fake", category)],
            ..Sections::default()
        },
    );
    (dir, marker)
}

fn servers(dir: &FleetDir) -> Vec<Value> {
    let (status, body) =
        common::plain::admin_call(dir.admin_port, &dir.admin_token(), "GET", "/servers");
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

/// The sum of one `stdio` counter over the category's servers (`exits.crashed` for nested).
fn stdio_total(dir: &FleetDir, field: &str) -> u64 {
    servers(dir)
        .iter()
        .filter_map(|s| {
            field
                .split('.')
                .try_fold(&s["stdio"], |v, k| v.get(k))
                .and_then(Value::as_u64)
        })
        .sum()
}

async fn post(c: &reqwest::Client, url: &str, sid: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = c
        .post(url)
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(s) = sid {
        req = req.header("mcp-session-id", s);
    }
    let resp = req.json(&body).send().await.expect("post");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, answer_of(&text))
}

/// The JSON-RPC answer in a body that is JSON or an event stream (its last `data:` line).
fn answer_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .next_back()
            .unwrap_or(Value::Null)
    })
}

fn call(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
}

/// An `echo` of `text` in session `sid` that must come back whole.
async fn assert_echo(c: &reqwest::Client, url: &str, sid: &str, text: &str) {
    let (status, answer) = post(
        c,
        url,
        Some(sid),
        call(json!(99), "echo", json!({"text": text})),
    )
    .await;
    assert_eq!(
        (status, tool_text(&answer).as_str()),
        (200, text),
        "{answer}"
    );
}

/// The next chunk of an event stream (one event, as the bridge writes one per chunk).
async fn first_event(stream: &mut reqwest::Response) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("an event within 10 s")
        .expect("read")
        .expect("a chunk");
    String::from_utf8_lossy(&chunk).into_owned()
}

fn tool_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

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
    let stateless = |id: u64, tool: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args,
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}})
    };
    let send = |body: Value, tool: &'static str| {
        c.post(&url)
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .json(&body)
            .send()
    };
    // The shared child is started (and initialised) by a first request.
    let (status, _) = tokio::time::timeout(Duration::from_secs(30), async {
        let r = send(stateless(3, "echo", json!({"text": "warm"})), "echo")
            .await
            .expect("warm-up");
        (r.status().as_u16(), r.text().await)
    })
    .await
    .expect("warm-up answered");
    assert_eq!(status, 200);
    // The client gives up after 300 ms of a 10 s call: its stream closes.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        send(stateless(1, "slow", json!({"ms": 10_000})), "slow"),
    )
    .await;
    assert!(gave_up.is_err(), "the slow call answered early");
    let cancelled = wait_for("the child to be told", Duration::from_secs(10), || {
        let rt = tokio::runtime::Handle::current();
        let body = tokio::task::block_in_place(|| {
            rt.block_on(async {
                let r = send(stateless(2, "cancelled", json!({})), "cancelled")
                    .await
                    .ok()?;
                r.text().await.ok()
            })
        })?;
        let list: Vec<Value> = serde_json::from_str(&tool_text(&answer_of(&body))).ok()?;
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_reaped_and_the_session_limit_answers_503() {
    let (dir, marker) = fleet(1, "idle_timeout = \"1s\"\nmax_sessions = 2", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (_b, _) = h::open_session(&c, &url).await;
    assert_eq!(processes_with(&marker).len(), 2);
    let resp = c
        .post(&url)
        .header("accept", ACCEPT)
        .json(&h::initialize_body())
        .send()
        .await
        .expect("third initialize");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let answer: Value = resp.json().await.expect("a JSON-RPC error body");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("2 sessions"));
    // Nothing in flight, no stream: both are reaped and the process count is back to zero.
    wait_for(
        "idle children to be reaped",
        Duration::from_secs(15),
        || processes_with(&marker).is_empty().then_some(()),
    );
    wait_for("both reaps to be counted", Duration::from_secs(10), || {
        (stdio_total(&dir, "reaps") == 2).then_some(())
    });
    let (status, _) = post(&c, &url, Some(&a), call(json!(1), "echo", json!({}))).await;
    assert_eq!(status, 404, "a reaped session is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_over_its_memory_limit_is_ended_by_the_memory_policy() {
    // The watcher, not the kernel, enforces here (kernel_memory_limit = false), every 200 ms.
    let marker = format!("fake-{}", common::free_port());
    let dir = FleetDir::with_sections(
        &[("fake", 1)],
        &[],
        &Sections {
            proxy: "first_byte_timeout = \"30s\"",
            fleet: "memory_interval = \"200ms\"\nkernel_memory_limit = false",
            categories: vec![(
                "fake",
                format!(
                    "transport = \"stdio\"\nmax_memory_mb = 40\n\
                     command = [\"python3\", \"{FAKE}\", \"--marker\", \"{marker}\"]"
                ),
            )],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (sid, _) = h::open_session(&c, &url).await;
    // Sampled: the server's memory is its child's.
    let sampled = wait_for("a sample of the child", Duration::from_secs(10), || {
        servers(&dir)[0]["memory_bytes"].as_u64().filter(|&b| b > 0)
    });
    assert!(sampled < 40 << 20, "an idle child over 40 MiB: {sampled}");
    let (status, answer) = post(
        &c,
        &url,
        Some(&sid),
        call(json!(1), "grow", json!({"mib": 80})),
    )
    .await;
    assert_eq!((status, tool_text(&answer).as_str()), (200, "grown"));
    wait_for("the child to be ended", Duration::from_secs(15), || {
        processes_with(&marker).is_empty().then_some(())
    });
    let (status, _) = post(&c, &url, Some(&sid), call(json!(2), "echo", json!({}))).await;
    assert_eq!(status, 404, "its session ended with it");
    let (code, memory) =
        common::plain::admin_call(dir.admin_port, &dir.admin_token(), "GET", "/memory");
    assert_eq!(code, 200);
    let events = memory["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["id"] == "fake-0.1" && e["action"] == "restart"),
        "{memory}"
    );
    // A new session gets a new child.
    let (sid, _) = h::open_session(&c, &url).await;
    assert_echo(&c, &url, &sid, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_max_children_counts_every_stdio_child() {
    let marker = format!("fake-{}", common::free_port());
    let category = format!(
        "transport = \"stdio\"\ncommand = [\"python3\", \"{FAKE}\", \"--marker\", \"{marker}\"]"
    );
    let dir = FleetDir::with_sections(
        &[("a", 1), ("b", 1)],
        &[],
        &Sections {
            proxy: "first_byte_timeout = \"30s\"",
            fleet: "max_children = 1",
            categories: vec![("a", category.clone()), ("b", category)],
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = h::client();
    let (sid, _) = h::open_session(&c, &format!("{}/mcp/a", dir.base())).await;
    let initialize_b = || {
        c.post(format!("{}/mcp/b", dir.base()))
            .header("accept", ACCEPT)
            .json(&h::initialize_body())
            .send()
    };
    // The fleet's one child is taken: a server of another category cannot start one.
    let resp = initialize_b().await.expect("initialize b");
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("fleet.max_children"), "{body}");
    assert_eq!(processes_with(&marker).len(), 1);
    // Once it ends, the place is free again.
    let r = c
        .delete(format!("{}/mcp/a", dir.base()))
        .header("mcp-session-id", &sid)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 200);
    let mut status = 0;
    for _ in 0..100 {
        status = initialize_b()
            .await
            .expect("initialize b")
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "b never got the freed place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_session_limits_in_place_and_keeps_the_children() {
    let (dir, marker) = fleet(1, "max_sessions = 1", &[]);
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let (a, _) = h::open_session(&c, &url).await;
    let (_, answer) = post(&c, &url, Some(&a), call(json!(1), "whoami", json!({}))).await;
    let pid = tool_text(&answer);
    let second = || {
        c.post(&url)
            .header("accept", ACCEPT)
            .json(&h::initialize_body())
            .send()
    };
    assert_eq!(second().await.expect("second").status().as_u16(), 503);
    let text = std::fs::read_to_string(dir.config()).expect("config");
    std::fs::write(
        dir.config(),
        text.replace("max_sessions = 1", "max_sessions = 2"),
    )
    .expect("write");
    let (status, report) =
        common::plain::admin_call(dir.admin_port, &dir.admin_token(), "POST", "/reload");
    assert_eq!(status, 200, "{report}");
    assert!(
        report["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["key"] == "categories.fake.max_sessions")),
        "{report}"
    );
    assert_eq!(second().await.expect("second").status().as_u16(), 200);
    // The first session's child is the one it had: the server was not replaced.
    let (status, answer) = post(&c, &url, Some(&a), call(json!(2), "whoami", json!({}))).await;
    assert_eq!((status, tool_text(&answer)), (200, pid));
    assert_eq!(processes_with(&marker).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_sessions_on_one_server() {
    // A hundred children start at once on two cores (about 10 s of CPU for a hundred Python
    // interpreters here): more than the default 5 s to first byte, and longer than the
    // harness's 500 ms health timeout (a server out of rotation has its sessions refused).
    let (dir, marker) = fleet_with(
        1,
        "max_sessions = 100",
        &[],
        "first_byte_timeout = \"60s\"",
        "interval = \"10s\"\ntimeout = \"9s\"",
    );
    let _serve = dir.serve();
    let url = format!("{}/mcp/fake", dir.base());
    let c = h::client();
    let sessions = futures::future::join_all((0..100).map(|n| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let (sid, _) = h::open_session(&c, &url).await;
            let (status, answer) =
                post(&c, &url, Some(&sid), call(json!(1), "whoami", json!({}))).await;
            assert_eq!(status, 200, "session {n}: {answer}");
            (sid, tool_text(&answer))
        }
    }))
    .await;
    let pids: std::collections::HashSet<&String> = sessions.iter().map(|(_, p)| p).collect();
    assert_eq!(pids.len(), 100, "each session had its own child");
    assert_eq!(processes_with(&marker).len(), 100);
    for (sid, _) in &sessions {
        let r = c
            .delete(&url)
            .header("mcp-session-id", sid)
            .send()
            .await
            .expect("DELETE");
        assert_eq!(r.status().as_u16(), 200);
    }
    wait_for("all children to end", Duration::from_secs(30), || {
        processes_with(&marker).is_empty().then_some(())
    });
}

/// Stopping `serve` ends a child that ignores both EOF and SIGTERM (SIGKILL after the grace);
/// `kill -9` of `serve` leaves nothing either, not even a grandchild that left the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_outlives_serve_even_after_kill_9() {
    for kill in [false, true] {
        let (dir, marker) = fleet(2, "isolation = \"session\"", &["--ignore-eof"]);
        let mut serve = dir.serve();
        let url = format!("{}/mcp/fake", dir.base());
        let c = h::client();
        for _ in 0..2 {
            let (sid, _) = h::open_session(&c, &url).await;
            let (status, answer) =
                post(&c, &url, Some(&sid), call(json!(1), "fork", json!({}))).await;
            assert_eq!(status, 200, "{answer}");
        }
        // Two children, each with a grandchild in its own session.
        wait_for(
            "children and grandchildren",
            Duration::from_secs(10),
            || (processes_with(&marker).len() == 4).then_some(()),
        );
        if kill {
            common::signal(serve.pid(), 9);
        } else {
            common::signal(serve.pid(), 15);
        }
        let pid = serve.pid();
        serve.wait_exit(Duration::from_secs(30));
        let how = if kill { "kill -9" } else { "SIGTERM" };
        wait_for(
            &format!("no process left after {how}"),
            Duration::from_secs(15),
            || processes_with(&marker).is_empty().then_some(()),
        );
        // The watchdog did its work and left, and so did the fleet's cgroups.
        let fleet_cgroups = format!("mcp-fleet-{pid}");
        wait_for(
            &format!("the watchdog to exit after {how}"),
            Duration::from_secs(15),
            || {
                processes_with("reap-cgroups")
                    .into_iter()
                    .all(|p| {
                        !std::fs::read(format!("/proc/{p}/cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&fleet_cgroups))
                    })
                    .then_some(())
            },
        );
        for root in [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ] {
            let left = std::path::Path::new(root).join(&fleet_cgroups);
            assert!(!left.exists(), "{} left behind after {how}", left.display());
        }
    }
}
