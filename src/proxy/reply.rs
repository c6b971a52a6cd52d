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

/// RFC 9728 Protected Resource Metadata of the proxy (`category: None`) or of a category's
/// endpoint; `None` when the proxy is no OAuth resource server (404) or the category is
/// unknown.
pub fn resource_metadata(
    snapshot: &Snapshot,
    auth: &crate::config::AuthConfig,
    category: Option<&str>,
) -> Option<Vec<u8>> {
    let (crate::config::AuthMode::OAuth, Some(issuer), Some(audience)) =
        (auth.mode, &auth.issuer, &auth.audience)
    else {
        return None;
    };
    let audience = audience.trim_end_matches('/');
    let (resource, scopes): (String, Vec<&str>) = match category {
        Some(name) => {
            let set = snapshot.category(name)?;
            (
                format!("{audience}/mcp/{name}"),
                set.access.auth.scopes.iter().map(String::as_str).collect(),
            )
        }
        None => {
            let mut all: Vec<&str> = snapshot
                .sets
                .iter()
                .flat_map(|s| s.access.auth.scopes.iter().map(String::as_str))
                .collect();
            all.sort_unstable();
            all.dedup();
            (audience.to_string(), all)
        }
    };
    let doc = serde_json::json!({
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-fleet",
    });
    serde_json::to_vec(&doc).ok()
}
