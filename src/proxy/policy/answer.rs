//! What a server's answer means and how it is passed on: what its head says about the server
//! (latency, runs of 5xx), the size limit on answers that are not event streams, the session id
//! it mints (sealed into the client's token), the header fields dropped and added, and what is
//! recorded when the request ends. Both engines call these with what they parsed.

use crate::proxy::session::SessionCodec;
use crate::upstream::{clock, Backend, UpstreamSet};
use std::time::{Duration, Instant};

/// The MCP session field, on requests and answers.
pub const SESSION_FIELD: &str = "mcp-session-id";
/// Added to event-stream answers: a buffering hop downstream (nginx in front of us, say) must
/// pass each event on as it comes.
pub const ACCEL_BUFFERING: (&str, &str) = ("x-accel-buffering", "no");

/// `Content-Type` says the answer is an event stream.
pub fn is_event_stream(content_type: &[u8]) -> bool {
    content_type.starts_with(b"text/event-stream")
}

/// Answer fields (names as parsed) that describe the server's connection, not the client's:
/// never passed on.
pub fn hop_by_hop(name: &str) -> bool {
    use crate::proxy::wire::name_is;
    name_is(name, "connection") || name_is(name, "keep-alive") || name_is(name, "proxy-connection")
}

/// The answer's body limit: `proxy.max_response_body`, except for event streams, which are
/// long-lived by design.
pub fn body_limit(set: &UpstreamSet, event_stream: bool) -> Option<u64> {
    (!event_stream).then_some(set.proxy.max_response_body)
}

/// Records what an answer head (not a 1xx) says about its server: its latency since the
/// request went out, and its status towards a run of 5xx that ejects it; `at` is when it came,
/// from the caller's own reading of the clock (which its latency is measured to as well).
pub fn head_received(
    set: &UpstreamSet,
    backend: &Backend,
    status: u16,
    latency: Duration,
    at: Instant,
) {
    let now = clock::ms_at(at);
    backend.state.observe_latency(latency, now);
    if backend
        .state
        .record_status(status, now, &set.proxy.ejection)
    {
        if let Some(span) = set.try_eject(backend, now, &set.proxy.ejection) {
            tracing::info!(server = %backend.id, ejected_for = ?span, "ejected after a run of 5xx answers");
        }
    }
}

/// The client's token for a session id the server minted; `None`: the field is dropped (an id
/// that is not visible ASCII or too long cannot be sealed, and must not reach the client
/// unsealed, or its next request would not route).
pub fn seal(
    codec: &SessionCodec,
    set: &UpstreamSet,
    caller: &super::Caller,
    backend: &Backend,
    inner: &[u8],
) -> Option<String> {
    match codec.encode_bound(&set.name, caller.binding(), backend.addr, inner) {
        Ok(token) => {
            crate::metrics::session_created(&set.name);
            Some(token)
        }
        Err(e) => {
            tracing::warn!(server = %backend.id, error = %e, "dropping a session id the server minted");
            None
        }
    }
}

/// A finished MCP request, as the metrics count it.
pub struct Outcome<'a> {
    /// `None`: the request named no known category (counted as `unknown`).
    pub set: Option<&'a UpstreamSet>,
    /// The status the client got; `0` when it got none.
    pub status: u16,
    /// The `Mcp-Method` label (`metrics::method_label`).
    pub method: &'static str,
    pub seconds: f64,
    /// A `DELETE` of a session the server accepted.
    pub ended_session: bool,
}

/// Records a finished MCP request in the metrics.
pub fn record(outcome: &Outcome) {
    match outcome.set {
        Some(set) => set.record_answer(outcome.status, outcome.method, outcome.seconds),
        None => crate::metrics::request("unknown", outcome.status, outcome.method, outcome.seconds),
    }
    if outcome.ended_session && (200..300).contains(&outcome.status) {
        crate::metrics::session_ended(outcome.set.map_or("unknown", |s| &*s.name));
    }
}
