//! The stdio bridge's test helpers: a fleet running the fake stdio server
//! (`tests/fixtures/fake_stdio.py`), raw MCP requests and their answers, the bridge's counters.

use super::http::ACCEPT;
use super::{FleetDir, Sections};
use serde_json::{json, Value};
use std::time::Duration;

pub const FAKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_stdio.py");

/// A fleet with one stdio category `fake` of `servers` servers running the fake server with
/// `flags`; `lines` are more keys of the category. The config folder's path is on every
/// child's command line, so the test can find every process that came from it.
pub fn fleet(servers: u16, lines: &str, flags: &[&str]) -> (FleetDir, String) {
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
pub fn fleet_with(
    servers: u16,
    lines: &str,
    flags: &[&str],
    proxy: &str,
    health: &str,
) -> (FleetDir, String) {
    let marker = format!("fake-{}", super::free_port());
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

pub fn servers(dir: &FleetDir) -> Vec<Value> {
    let (status, body) =
        super::plain::admin_call(dir.admin_port, &dir.admin_token(), "GET", "/servers");
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

/// The sum of one `stdio` counter over the category's servers (`exits.crashed` for nested).
pub fn stdio_total(dir: &FleetDir, field: &str) -> u64 {
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

pub async fn post(c: &reqwest::Client, url: &str, sid: Option<&str>, body: Value) -> (u16, Value) {
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
pub fn answer_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .next_back()
            .unwrap_or(Value::Null)
    })
}

pub fn call(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
}

/// An `echo` of `text` in session `sid` that must come back whole.
pub async fn assert_echo(c: &reqwest::Client, url: &str, sid: &str, text: &str) {
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
pub async fn first_event(stream: &mut reqwest::Response) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("an event within 10 s")
        .expect("read")
        .expect("a chunk");
    String::from_utf8_lossy(&chunk).into_owned()
}

pub fn tool_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
