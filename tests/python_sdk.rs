//! The official Python MCP SDK (`mcp`, installed by `.ci/setup` into `target/stdio-servers/py`)
//! as a client of the proxy in front of built-in servers: its whole session life works, ends
//! cleanly, and its requests (which carry `Connection: keep-alive`) take the fast path.

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
    let pingora = dir.metric("mcp_fleet_request_paths_total{path=\"pingora\"}");
    eprintln!("Python SDK session life: fast path {fast}, Pingora path {pingora}");
    if common::fast_path_on() {
        assert!(fast >= 20.0, "the SDK's calls missed the fast path: {fast}");
    }
}
