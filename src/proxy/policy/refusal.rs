//! The proxy's own answers: every refusal and failure a client can get, with its HTTP status,
//! JSON-RPC error code, message and extra header fields, written once. The fast path renders a
//! `Refusal` to bytes (`proxy::wire::answer`); Pingora's path walks [`Refusal::fields`] into a
//! `ResponseHeader`. Neither writes a status, code or message of its own.

use serde_json::json;
use std::borrow::Cow;
use std::time::Duration;

/// JSON-RPC error codes in the implementation-defined server range.
pub mod code {
    pub const NO_ROUTE: i64 = -32001;
    pub const SESSION_NOT_FOUND: i64 = -32002;
    pub const UNAVAILABLE: i64 = -32003;
    pub const UPSTREAM_FAILED: i64 = -32004;
    pub const TIMEOUT: i64 = -32005;
    pub const BAD_REQUEST: i64 = -32600;
    pub const PARSE_ERROR: i64 = -32700;
    pub const UNAUTHORIZED: i64 = -32010;
    pub const FORBIDDEN: i64 = -32011;
    pub const RATE_LIMITED: i64 = -32012;
}

/// The fields of every JSON answer the proxy writes itself (refusals, `/health`, `/stats`).
pub const JSON_FIELDS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
];

/// An answer the proxy gives instead of (or after failing to get) a server's.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: i64,
    pub message: Cow<'static, str>,
    /// The JSON-RPC error's `data` (the known categories of a 404).
    pub data: Option<serde_json::Value>,
    /// The connection is closed after the answer: the request's bytes cannot be trusted to end
    /// where the next one starts (bad framing, a body not read, a failed exchange).
    pub close: bool,
    /// The counter the answer adds to, by the engine that gives it (admission may be asked
    /// twice about one request: the fast path asks, and leaves the answer to Pingora's path).
    pub tally: Tally,
    /// What the edge's refusals add (boxed: most refusals have none, and the type is returned
    /// by value on the request path).
    pub detail: Option<Box<Detail>>,
}

/// The edge's part of a refusal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    /// `WWW-Authenticate` of a 401 or 403 for credentials.
    pub challenge: Option<String>,
    /// Seconds for `Retry-After` (a 503 says 1 unless this is set).
    pub retry_after: Option<u64>,
    /// The request's JSON-RPC id, when its body was read (the error answers that request).
    pub id: Option<serde_json::Value>,
    /// Who was refused and what they asked for (method, name), when known: the audit line's.
    pub principal: Option<std::sync::Arc<str>>,
    pub call: Option<(String, String)>,
}

/// Metrics a refusal counts in, beside the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    None,
    SessionNotFound,
    /// `mcp_fleet_refused_total{reason}`, the limit's key.
    Limit(&'static str),
    /// `mcp_fleet_auth_refused_total{reason}`.
    Auth(&'static str),
    /// `mcp_fleet_policy_refused_total{category, reason}`.
    Policy(&'static str),
    /// `mcp_fleet_rate_limited_total{kind}`.
    RateLimited(&'static str),
}

/// `{"jsonrpc":"2.0","id":null,"error":{...}}`: the id is null because the proxy answers without
/// reading the body, as JSON-RPC allows for errors whose request id is not known.
pub fn jsonrpc_error(code: i64, message: &str, data: Option<&serde_json::Value>) -> Vec<u8> {
    jsonrpc_error_for(None, code, message, data)
}

/// The same, answering the request with JSON-RPC id `id`.
pub fn jsonrpc_error_for(
    id: Option<&serde_json::Value>,
    code: i64,
    message: &str,
    data: Option<&serde_json::Value>,
) -> Vec<u8> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data.clone();
    }
    let id = id.cloned().unwrap_or(serde_json::Value::Null);
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
        .to_string()
        .into_bytes()
}

fn refuse(status: u16, code: i64, message: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        data: None,
        close: false,
        tally: Tally::None,
        detail: None,
    }
}

fn session_not_found(reason: &str) -> Refusal {
    refuse(
        404,
        code::SESSION_NOT_FOUND,
        format!("session not found ({reason}): initialize a new session"),
    )
    .counted(Tally::SessionNotFound)
}

impl Refusal {
    // Admission (in the order `admit` checks them).
    pub fn headers_too_large() -> Self {
        refuse(
            431,
            code::BAD_REQUEST,
            "request headers too many or too large (proxy.max_headers, proxy.max_header_bytes)",
        )
        .closing()
    }
    pub fn bad_framing(why: &'static str) -> Self {
        refuse(
            400,
            code::BAD_REQUEST,
            format!("bad request framing: {why}"),
        )
        .closing()
    }
    pub fn uri_too_long() -> Self {
        refuse(
            414,
            code::BAD_REQUEST,
            "request URI longer than proxy.max_uri",
        )
    }
    pub fn no_such_endpoint(categories: serde_json::Value) -> Self {
        Refusal {
            data: Some(categories),
            ..refuse(
                404,
                code::NO_ROUTE,
                "no such endpoint: MCP is served on /mcp/{category}",
            )
        }
    }
    pub fn unknown_category(known: &str, categories: serde_json::Value) -> Self {
        Refusal {
            data: Some(categories),
            ..refuse(
                404,
                code::NO_ROUTE,
                format!("unknown category; known categories: {known}"),
            )
        }
    }
    pub fn origin_not_allowed() -> Self {
        refuse(
            403,
            code::BAD_REQUEST,
            "Origin not allowed (proxy.allowed_origins)",
        )
    }
    pub fn body_too_large() -> Self {
        refuse(
            413,
            code::BAD_REQUEST,
            "request body larger than proxy.max_body",
        )
        .closing()
    }
    pub fn method_not_allowed() -> Self {
        refuse(
            405,
            code::BAD_REQUEST,
            "method not allowed: MCP uses POST, GET and DELETE",
        )
    }
    pub fn session_forged() -> Self {
        session_not_found("not issued by this fleet")
    }
    pub fn session_malformed() -> Self {
        session_not_found("malformed")
    }
    pub fn session_server_gone() -> Self {
        session_not_found("its server is gone, unhealthy or ejected")
    }
    pub fn none_ready(category: &str) -> Self {
        refuse(
            503,
            code::UNAVAILABLE,
            format!("no server of category {category} is ready"),
        )
    }
    pub fn too_many_streams() -> Self {
        refuse(
            503,
            code::UNAVAILABLE,
            "too many open event streams (proxy.max_sse_streams)",
        )
        .counted(Tally::Limit("max_sse_streams"))
    }
    pub fn too_many_connections() -> Self {
        refuse(
            503,
            code::UNAVAILABLE,
            "too many client connections (proxy.max_connections)",
        )
        .closing()
    }
    pub fn chunked_too_large() -> Self {
        refuse(
            413,
            code::BAD_REQUEST,
            "chunked request bodies are limited to 64 KiB: send larger ones with Content-Length",
        )
        .closing()
    }
    pub fn malformed_chunked() -> Self {
        Self::bad_framing("malformed chunked body")
    }
    pub fn body_timeout() -> Self {
        refuse(
            408,
            code::BAD_REQUEST,
            "request body not received within body_timeout",
        )
        .closing()
    }

    // The edge: credentials, rate limits, allow-lists (`access`, `inspect`).
    pub fn unauthorized(why: String, challenge: String) -> Self {
        refuse(
            401,
            code::UNAUTHORIZED,
            format!("authentication required: {why}"),
        )
        .with(|d| d.challenge = Some(challenge))
    }
    pub fn insufficient_scope(needed: String, challenge: String) -> Self {
        refuse(
            403,
            code::FORBIDDEN,
            format!("insufficient scope: the category needs {needed}"),
        )
        .with(|d| d.challenge = Some(challenge))
    }
    pub fn forbidden(why: String) -> Self {
        refuse(403, code::FORBIDDEN, why)
    }
    pub fn keys_unavailable() -> Self {
        refuse(
            503,
            code::UNAVAILABLE,
            "the authorization server's signing keys are not loaded yet",
        )
    }
    pub fn rate_limited(wait_secs: u64, rate: &str) -> Self {
        refuse(
            429,
            code::RATE_LIMITED,
            format!("rate limit exceeded ({rate}): retry after {wait_secs} s"),
        )
        .with(|d| d.retry_after = Some(wait_secs))
    }
    pub fn not_allowed(
        kind: &str,
        name: &str,
        category: &str,
        id: Option<serde_json::Value>,
    ) -> Self {
        refuse(
            403,
            code::FORBIDDEN,
            format!("{kind} {name:?} is not allowed in category {category} (categories.{category}.auth)"),
        )
        .with(|d| d.id = id)
    }
    pub fn routing_fields_disagree(field: &str, id: Option<serde_json::Value>) -> Self {
        refuse(
            400,
            code::BAD_REQUEST,
            format!("the {field} field does not match the request body"),
        )
        .with(|d| d.id = id)
    }
    pub fn body_unreadable() -> Self {
        refuse(
            400,
            code::PARSE_ERROR,
            "the request body is not one JSON-RPC message",
        )
    }
    pub fn too_large_to_inspect() -> Self {
        refuse(
            413,
            code::BAD_REQUEST,
            "this category's allow-lists read request bodies of up to 64 KiB; this one is larger",
        )
        .closing()
    }

    // Attempts that failed (see `attempt`).
    pub fn no_server() -> Self {
        refuse(503, code::UNAVAILABLE, "no ready server in the category").closing()
    }
    pub fn session_server_silent() -> Self {
        Refusal {
            tally: Tally::None,
            ..session_not_found("its server does not answer").closing()
        }
    }
    pub fn connect_exhausted() -> Self {
        refuse(
            502,
            code::UPSTREAM_FAILED,
            "upstream server refused the connection; retries exhausted",
        )
        .closing()
    }
    pub fn upstream_failed() -> Self {
        refuse(502, code::UPSTREAM_FAILED, "upstream server failed").closing()
    }
    pub fn answer_too_large() -> Self {
        refuse(
            502,
            code::UPSTREAM_FAILED,
            "upstream answer larger than proxy.max_response_body",
        )
        .closing()
    }
    pub fn first_byte_timeout(wait: Duration) -> Self {
        refuse(
            504,
            code::TIMEOUT,
            format!("upstream server sent no answer within {wait:?}"),
        )
        .closing()
    }
    pub fn upstream_timed_out() -> Self {
        refuse(504, code::TIMEOUT, "upstream server timed out").closing()
    }
    pub fn bad_request() -> Self {
        refuse(400, code::BAD_REQUEST, "bad request").closing()
    }
    pub fn internal() -> Self {
        refuse(500, code::UPSTREAM_FAILED, "proxy error").closing()
    }

    fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Sets part of the edge's detail.
    pub fn with(mut self, set: impl FnOnce(&mut Detail)) -> Self {
        set(self.detail.get_or_insert_with(Box::default));
        self
    }

    pub fn counted(mut self, tally: Tally) -> Self {
        self.tally = tally;
        self
    }

    /// Adds the answer to its counter and writes its audit line; called by the engine that
    /// gives it, once.
    pub fn record(&self, category: Option<&str>) {
        let detail = self.detail.as_deref();
        let (method, name) = detail
            .and_then(|d| d.call.as_ref())
            .map_or(("-", "-"), |(m, n)| (m.as_str(), n.as_str()));
        tracing::info!(
            target: "mcp_fleet::audit",
            decision = "refused",
            principal = detail.and_then(|d| d.principal.as_deref()).unwrap_or("-"),
            category = category.unwrap_or("-"),
            method,
            name,
            status = self.status,
            reason = %self.message,
            "request refused"
        );
        match self.tally {
            Tally::None => {}
            Tally::SessionNotFound => {
                crate::metrics::session_not_found(category.unwrap_or("unknown"));
            }
            Tally::Limit(key) => crate::metrics::refused(key),
            Tally::Auth(reason) => crate::metrics::auth_refused(reason),
            Tally::Policy(reason) => {
                crate::metrics::policy_refused(category.unwrap_or("unknown"), reason);
            }
            Tally::RateLimited(kind) => crate::metrics::rate_limited(kind),
        }
    }

    /// The JSON-RPC body.
    pub fn body(&self) -> Vec<u8> {
        let id = self.detail.as_ref().and_then(|d| d.id.as_ref());
        jsonrpc_error_for(id, self.code, &self.message, self.data.as_ref())
    }

    /// The header fields of the answer, `Content-Length` and `Connection` aside (each engine
    /// says `Connection: close` its own way when `close` is set), in the order they are written.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> {
        let extra: &'static [(&'static str, &'static str)] = match self.status {
            // A client may try again shortly: the limit or the fleet frees up in seconds.
            503 if self.detail.as_ref().is_none_or(|d| d.retry_after.is_none()) => {
                &[("retry-after", "1")]
            }
            405 => &[("allow", "GET, POST, DELETE")],
            _ => &[],
        };
        let detail = self.detail.as_deref();
        let retry_after = detail
            .and_then(|d| d.retry_after)
            .map(|s| ("retry-after", Cow::Owned(s.to_string())));
        let challenge = detail
            .and_then(|d| d.challenge.as_deref())
            .map(|c| ("www-authenticate", Cow::Borrowed(c)));
        JSON_FIELDS
            .into_iter()
            .chain(extra.iter().copied())
            .map(|(n, v)| (n, Cow::Borrowed(v)))
            .chain(retry_after)
            .chain(challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_that_leave_bytes_unread_close() {
        assert!(!Refusal::origin_not_allowed().close);
        assert!(Refusal::body_too_large().close);
        let refusal = Refusal::method_not_allowed();
        let allow: Vec<_> = refusal.fields().collect();
        assert!(allow.contains(&("allow", Cow::Borrowed("GET, POST, DELETE"))));
        assert!(!allow.iter().any(|(n, _)| *n == "connection"));
    }
}
