//! The proxy's local `/health` and `/stats` documents (its error answers are the policy's). Both
//! are views of the snapshot (`upstream::views`), the same ones the monitor serves.

use crate::upstream::Snapshot;

/// `/health`: 200 while every category serves (`ok`, or `partial` when some has fewer servers
/// than planned), 503 when one serves none or the proxy is stopping.
pub fn health(
    snapshot: &Snapshot,
    draining: bool,
    labels: &[(&'static str, &'static str)],
) -> (u16, Vec<u8>) {
    let health = snapshot.health(draining, labels);
    let body = serde_json::to_vec(&health).unwrap_or_else(|_| b"{}".to_vec());
    (health.status.http_status(), body)
}

pub fn stats(snapshot: &Snapshot) -> Vec<u8> {
    serde_json::to_vec(&snapshot.stats()).unwrap_or_else(|_| b"{}".to_vec())
}
