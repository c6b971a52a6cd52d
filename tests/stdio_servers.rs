//! The stdio bridge with the servers people run, installed by `.ci/setup` into
//! `target/stdio-servers` (npm's reference servers, PyPI's mcp-server-time) and run from their
//! files, and with real clients: rmcp and the official Python SDK (`tests/fixtures/sdk_client.py`).

mod common;

use common::{processes_with, wait_for, FleetDir, Sections};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn installed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/stdio-servers")
}

/// The entry script of an npm reference server.
fn npm_server(name: &str) -> String {
    let path = installed().join(format!(
        "node/node_modules/@modelcontextprotocol/{name}/dist/index.js"
    ));
    assert!(
        path.exists(),
        "{} is missing: run `bash .ci/setup` (it installs the test servers)",
        path.display()
    );
    path.display().to_string()
}

/// A fleet of stdio categories: (name, servers, lines of the category).
fn fleet(categories: &[(&str, u16, String)]) -> FleetDir {
    let spawned: Vec<(&str, u16)> = categories.iter().map(|(n, s, _)| (*n, *s)).collect();
    FleetDir::with_sections(
        &spawned,
        &[],
        &Sections {
            // A Node server takes a few hundred milliseconds of CPU to start; under a busy test
            // run a session's first answer can take seconds.
            proxy: "first_byte_timeout = \"30s\"",
            health: "interval = \"1s\"\ntimeout = \"900ms\"\nunhealthy_threshold = 5",
            categories: categories
                .iter()
                .map(|(n, _, lines)| (*n, format!("transport = \"stdio\"\n{lines}")))
                .collect(),
            ..Sections::default()
        },
    )
}

/// Runs the Python SDK client; returns its JSON output.
fn python_sdk(url: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sdk_client.py"
        ))
        .arg(url)
        .args(args)
        .env("PYTHONPATH", installed().join("py"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python SDK client failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("the client's JSON")
}

fn structured(result: &rmcp::model::CallToolResult) -> Value {
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| serde_json::from_str(&common::mcp::text(result)).unwrap_or_default())
}

async fn think(client: &common::mcp::Client, n: u64) -> u64 {
    let r = common::mcp::call(
        client,
        "sequentialthinking",
        json!({"thought": format!("thought {n}"), "thoughtNumber": n, "totalThoughts": 5,
               "nextThoughtNeeded": true}),
    )
    .await
    .expect("sequentialthinking");
    structured(&r)["thoughtHistoryLength"]
        .as_u64()
        .expect("thoughtHistoryLength")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_thinking_keeps_a_history_per_session_or_one_shared() {
    let command = format!(
        "command = [\"node\", \"{}\"]",
        npm_server("server-sequential-thinking")
    );
    let dir = fleet(&[
        ("own", 1, format!("{command}\nisolation = \"session\"")),
        ("shared", 1, format!("{command}\nisolation = \"shared\"")),
    ]);
    let _serve = dir.serve();
    // Session isolation: each session's child holds only its own thoughts.
    let url = format!("{}/mcp/own", dir.base());
    let (a, b) = (
        common::mcp::connect(&url).await,
        common::mcp::connect(&url).await,
    );
    assert_eq!(think(&a, 1).await, 1);
    assert_eq!(think(&a, 2).await, 2);
    assert_eq!(think(&b, 1).await, 1, "session b saw session a's thoughts");
    assert_eq!(think(&a, 3).await, 3);
    // Shared isolation: one child, one history for every session.
    let url = format!("{}/mcp/shared", dir.base());
    let (c, d) = (
        common::mcp::connect(&url).await,
        common::mcp::connect(&url).await,
    );
    assert_eq!(think(&c, 1).await, 1);
    assert_eq!(think(&d, 1).await, 2, "a shared child keeps one history");
    for client in [a, b, c, d] {
        client.cancel().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_memory_keeps_each_servers_graph_in_its_file_across_restarts() {
    // server-memory takes a relative MEMORY_FILE_PATH relative to its own script: absolute.
    let graphs = tempfile::tempdir().expect("graphs dir");
    let dir = fleet(&[(
        "memory",
        2,
        format!(
            "command = [\"node\", \"{}\"]\nenv = {{ MEMORY_FILE_PATH = \"{}/graph-{{id}}.jsonl\" }}",
            npm_server("server-memory"),
            graphs.path().display()
        ),
    )]);
    let _serve = dir.serve();
    let servers =
        common::plain::admin_call(dir.admin_port, &dir.admin_token(), "GET", "/servers").1;
    let port = |i: usize| servers[i]["port"].as_u64().expect("port");
    // Each server is reached on its own address (the bridge listens there), to know which
    // server holds what.
    for (i, entity) in [(0, "alpha"), (1, "beta")] {
        let client = common::mcp::connect(&format!("http://127.0.0.1:{}/mcp", port(i))).await;
        common::mcp::call(
            &client,
            "create_entities",
            json!({"entities": [{"name": entity, "entityType": "test", "observations": ["seen"]}]}),
        )
        .await
        .expect("create_entities");
        client.cancel().await.expect("close");
    }
    let graph = |i: usize| {
        std::fs::read_to_string(graphs.path().join(format!("graph-memory-{i}.jsonl")))
            .unwrap_or_default()
    };
    assert!(
        graph(0).contains("alpha") && !graph(0).contains("beta"),
        "{}",
        graph(0)
    );
    assert!(
        graph(1).contains("beta") && !graph(1).contains("alpha"),
        "{}",
        graph(1)
    );
    // A restart of the server (and a new child) reads its graph back.
    let (code, out) = dir.cli(&["restart", "memory-0"]);
    assert_eq!(code, 0, "{out}");
    let client = common::mcp::connect(&format!("http://127.0.0.1:{}/mcp", port(0))).await;
    let r = common::mcp::call(&client, "read_graph", json!({}))
        .await
        .expect("read_graph");
    let text = serde_json::to_string(&structured(&r)).unwrap_or_default() + &common::mcp::text(&r);
    assert!(text.contains("alpha") && !text.contains("beta"), "{text}");
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_and_elicitation_reach_the_client_and_come_back() {
    let dir = fleet(&[(
        "everything",
        1,
        format!(
            "command = [\"node\", \"{}\", \"stdio\"]",
            npm_server("server-everything")
        ),
    )]);
    let _serve = dir.serve();
    let out = python_sdk(&format!("{}/mcp/everything", dir.base()), &["everything"]);
    assert_eq!(
        out["seen"]["sampling"],
        json!(["Resource trigger-sampling-request context: hello"]),
        "{out}"
    );
    assert!(
        out["sampling_result"]
            .as_str()
            .unwrap_or_default()
            .contains("sampled by the test client"),
        "{out}"
    );
    assert_eq!(out["seen"]["elicitation"].as_array().map(Vec::len), Some(1));
    assert!(
        out["elicitation_result"]
            .as_str()
            .unwrap_or_default()
            .contains("Ada Lovelace"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_servers_and_the_python_sdk_through_the_bridge() {
    let py = installed().join("py");
    let filesystem_root = tempfile::tempdir().expect("root");
    std::fs::write(filesystem_root.path().join("note.txt"), "bridged").expect("file");
    let dir = fleet(&[
        (
            "time",
            1,
            format!(
                "command = [\"python3\", \"-m\", \"mcp_server_time\"]\nisolation = \"shared\"\nenv = {{ PYTHONPATH = \"{}\" }}",
                py.display()
            ),
        ),
        (
            "files",
            1,
            format!(
                "command = [\"node\", \"{}\", \"{}\"]",
                npm_server("server-filesystem"),
                filesystem_root.path().display()
            ),
        ),
    ]);
    let serve = dir.serve();
    let out = python_sdk(
        &format!("{}/mcp/time", dir.base()),
        &["call", r#"get_current_time={"timezone": "Europe/Paris"}"#],
    );
    assert_eq!(out["is_error"], json!(false), "{out}");
    assert!(
        out["text"]
            .as_str()
            .unwrap_or_default()
            .contains("Europe/Paris"),
        "{out}"
    );
    let out = python_sdk(
        &format!("{}/mcp/files", dir.base()),
        &[
            "call",
            &format!(
                r#"read_text_file={{"path": "{}/note.txt"}}"#,
                filesystem_root.path().display()
            ),
        ],
    );
    assert_eq!(out["text"], json!("bridged"), "{out}");
    // A 2026-07-28 stateless request: the shared child was initialised in the handshake era,
    // and the Python SDK's server refuses a request with the stateless envelope on it; the
    // bridge takes the envelope off.
    let (status, body) = common::http::stateless_tool(
        &common::http::client(),
        &format!("{}/mcp/time", dir.base()),
        "get_current_time",
        json!({"timezone": "Asia/Tokyo"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Asia/Tokyo") && !body.contains("\"error\""),
        "{body}"
    );
    // The SDK's whole session life (initialize, list, 20 calls, DELETE), then the path counts.
    let fast_before = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
    let pingora_before = dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}");
    python_sdk(
        &format!("{}/mcp/time", dir.base()),
        &["session", r#"get_current_time={"timezone": "UTC"}"#],
    );
    let fast = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}") - fast_before;
    let pingora = dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}") - pingora_before;
    eprintln!("Python SDK session through the bridge: fast path {fast}, Pingora path {pingora}");
    assert!(
        fast + pingora >= 23.0,
        "initialize, initialized, list, 20 calls"
    );
    // The shared child outlives its sessions; the filesystem session's child ended with it.
    let marker = installed().display().to_string();
    let serve_pid = serve.pid();
    drop(serve);
    wait_for(
        "every bridged child to end with serve",
        Duration::from_secs(15),
        || (!common::alive(serve_pid) && processes_with(&marker).is_empty()).then_some(()),
    );
}
