//! The policy core: every decision about a request, written once. The two engines (the fast
//! path and Pingora's path) read bytes, describe what they read and call these functions; they
//! move bytes as told and decide nothing of their own.
//!
//! - [`admit`]: the ordered admission checks (limits, framing, route, Origin, body size,
//!   method, session, event-stream slots).
//! - [`attempt`]: the choice of server, and what a failed attempt means: retry (only when
//!   nothing can have reached a server), blame, and the answer the client gets.
//! - [`answer`]: what an answer head means (latency, 5xx runs, size limit, session sealing,
//!   fields dropped and added) and what is recorded when a request ends.
//! - [`refusal`]: every status, JSON-RPC code, message and field of the proxy's own answers.
//! - the upstream request (below): its path, `Host` and forwarded fields; the pooling of
//!   upstream connections; the first-byte wait.

pub mod access;
pub mod admit;
pub mod answer;
pub mod attempt;
pub mod filter;
pub mod inspect;
pub mod origin;
pub mod rate;
pub mod refusal;
pub mod route;

pub use access::{Caller, Edge, SharedEdge};
pub use admit::{
    admit, content_length, enter, framing, Admission, Admitted, BodyFraming, Context, Entry, Head,
    Local,
};
pub use attempt::{Attempts, Failure, Verdict};
pub use inspect::RoutingFields;
pub use refusal::{code, Refusal, Tally};

use crate::config::ProxyConfig;
use crate::upstream::{Snapshot, UpstreamSet};
use serde_json::json;
use std::time::Duration;

/// Pooled upstream connections idle longer than this are closed rather than reused: servers
/// commonly close idle keep-alive connections after a minute or more, and a connection they
/// closed first costs the request that takes it a failed write. Both engines' pools use it.
pub const POOLED_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// The client's `Host`, passed to the server as this field: the server checks `Host` against
/// its own allow-list (DNS-rebinding defence), so it must see its own address as `Host`.
pub const FORWARDED_HOST: &str = "x-forwarded-host";

/// Longest chunked request body read whole before a server is chosen (so broken chunk framing
/// is answered by the proxy and nothing of such a request reaches a server).
pub const CHUNKED_BODY_LIMIT: usize = 64 * 1024;

/// How long an answer given before its request was read in full (a refusal of the head: 413,
/// 403, 404, 503, ...) keeps reading and discarding the rest before the connection closes, as
/// nginx's `lingering_close` does: a client that writes its whole body before it reads (Python's
/// `urllib`, many simple clients) then sees the answer instead of a reset. Bounded in time and
/// bytes so a client cannot hold the proxy reading.
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// Longest pause between two reads while lingering.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);
/// Most bytes read and discarded while lingering.
pub const LINGER_BYTES: u64 = 128 * 1024 * 1024;

/// The first-byte wait: from the request's last byte sent to the answer's head. Never longer
/// than the idle timeout, which bounds every read.
pub fn first_byte_wait(proxy: &ProxyConfig) -> Duration {
    proxy.first_byte_timeout.min(proxy.idle_timeout)
}

/// The request target on the server: the category's MCP path, with the client's query.
pub fn upstream_target(set: &UpstreamSet, query: Option<&str>) -> Option<http::Uri> {
    match query {
        None => Some(set.mcp_uri.clone()),
        Some(q) => format!("{}?{q}", set.mcp_path).parse().ok(),
    }
}

/// `{"categories": [...]}`: the error data of a 404, so a client can correct its URL.
pub fn categories(snapshot: &Snapshot) -> serde_json::Value {
    let names: Vec<&str> = snapshot.sets.iter().map(|s| &*s.name).collect();
    json!({ "categories": names })
}
