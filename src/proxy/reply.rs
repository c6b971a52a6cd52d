//! Answers the proxy writes itself: JSON-RPC error bodies (so an MCP client sees a protocol error,
//! not an HTML page) and the local `/health` and `/stats` documents.

use crate::upstream::Snapshot;
use serde_json::json;

/// JSON-RPC error codes in the implementation-defined server range.
pub mod code {
    pub const NO_ROUTE: i64 = -32001;
    pub const SESSION_NOT_FOUND: i64 = -32002;
    pub const UNAVAILABLE: i64 = -32003;
    pub const UPSTREAM_FAILED: i64 = -32004;
    pub const TIMEOUT: i64 = -32005;
    pub const BAD_REQUEST: i64 = -32600;
}

/// `{"jsonrpc":"2.0","id":null,"error":{...}}`: the id is null because the proxy answers without
/// reading the body, as JSON-RPC allows for errors whose request id is not known.
pub fn jsonrpc_error(code: i64, message: &str, data: Option<serde_json::Value>) -> Vec<u8> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": null, "error": error })
        .to_string()
        .into_bytes()
}

/// `{"categories": [...]}`: the error data of a 404, so a client can correct its URL.
pub fn categories(snapshot: &Snapshot) -> serde_json::Value {
    let names: Vec<&str> = snapshot.sets.iter().map(|s| &*s.name).collect();
    json!({ "categories": names })
}

/// `/health`: 200 when every category has a ready server, 503 otherwise.
pub fn health(
    snapshot: &Snapshot,
    draining: bool,
    labels: &[(&'static str, &'static str)],
) -> (u16, Vec<u8>) {
    let categories: Vec<_> = snapshot
        .sets
        .iter()
        .map(|s| json!({ "name": &*s.name, "ready": s.ready_count(), "total": s.all.len() }))
        .collect();
    let all_served = snapshot.sets.iter().all(|s| s.ready_count() > 0);
    let status = if draining {
        "draining"
    } else if all_served {
        "ok"
    } else {
        "degraded"
    };
    let code = if status == "ok" { 200 } else { 503 };
    let mut body = json!({
        "status": status,
        "ready": snapshot.sets.iter().map(|s| s.ready_count()).sum::<usize>(),
        "total": snapshot.sets.iter().map(|s| s.all.len()).sum::<usize>(),
        "categories": categories,
    });
    for (k, v) in labels {
        body[*k] = json!(v);
    }
    (code, body.to_string().into_bytes())
}

pub fn stats(snapshot: &Snapshot) -> Vec<u8> {
    serde_json::to_vec(&snapshot.stats()).unwrap_or_else(|_| b"{}".to_vec())
}
