//! The official Python MCP SDK (`mcp`, installed by `.ci/setup` into `target/stdio-servers/py`)
//! as a client of the proxy in front of built-in servers: its whole session life works, ends
//! cleanly, and all its requests (which carry `Connection: keep-alive`), its GET stream and
//! DELETE among them, take the fast path.

mod common;

use common::FleetDir;
use std::process::Command;

#[test]
fn the_python_sdks_session_life_ends_cleanly_and_takes_the_fast_path() {
    let dir = FleetDir::new(&[("api", 2)], &[]);
    let _serve = dir.serve();
    let py = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/stdio-servers/py");
    assert!(
        py.join("mcp").exists(),
        "the Python SDK is missing: run `bash .ci/setup`"
    );
    let fast_before = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}");
    // The harness's own readiness poll (`/stats`) took Pingora's path before this.
    let pingora_before = dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sdk_client.py"
        ))
        .arg(format!("{}/mcp/api", dir.base()))
        .args(["session", r#"echo={"text": "hi"}"#])
        .env("PYTHONPATH", &py)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"calls\": 20"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Its DELETE is answered as the SDK counts success (it logged "Session termination
    // failed: 202" against the built-in server before).
    assert!(!stderr.contains("termination failed"), "{stderr}");
    let fast = dir.metric("mcp_fleet_request_paths_total{path=\"fast\"}") - fast_before;
    let pingora = dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}") - pingora_before;
    eprintln!("Python SDK session life: fast path {fast}, Pingora path {pingora}");
    if common::fast_path_on() {
        // initialize, notifications/initialized, tools/list, 20 calls, the GET stream, DELETE.
        assert_eq!(
            (fast, pingora),
            (25.0, 0.0),
            "every request of the SDK's session takes the fast path"
        );
    }
}
