//! The proxy's local `/health` and `/stats` documents (its error answers are the policy's).

use crate::upstream::Snapshot;
use serde_json::json;

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
