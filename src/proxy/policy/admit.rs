//! Admission: the checks a request head passes before any server is chosen, as one ordered
//! list (`admit`). Both engines describe the head they read as a [`Head`] and call `admit`; the
//! fast path takes a request only when it is admitted, and leaves every refusal to Pingora's
//! path, which answers it. So a rule added here holds on both, and is answered in one way.

use super::access::{self, Caller, Checked, Edge};
use super::filter::ListFilter;
use super::inspect::{self, Inspection, RoutingFields};
use super::refusal::Refusal;
use super::route::{self, Route};
use crate::proxy::session::{self, SessionCodec, SessionError};
use crate::upstream::{hash_bytes, Backend, Snapshot, UpstreamSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How the request says its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    None,
    Length(u64),
    Chunked,
}

/// What admission reads of a request head. Each engine fills it from its own parse.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Bytes of the request target (path and query).
    pub uri_len: usize,
    pub fields: usize,
    /// Bytes of all field names and values.
    pub field_bytes: u64,
    /// The framing, or why it is ambiguous (see [`framing`]).
    pub framing: Result<BodyFraming, &'static str>,
    pub origin: Option<&'a [u8]>,
    pub session: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub client_ip: Option<std::net::IpAddr>,
    pub routing: RoutingFields<'a>,
}

/// A single decimal Content-Length value (no sign, no spaces inside, no list): the one reading
/// of the field on both engines, so they agree on what is a valid length.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    // Nineteen digits always fit a u64, so the sum below cannot overflow.
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// The framing of a request from its `Content-Length` and `Transfer-Encoding` fields, given as
/// they arrived (every occurrence). A length given twice or both ways is how requests are
/// smuggled past one hop to the next (RFC 9112 section 6.3): refused, never guessed at.
pub fn framing<'v>(
    lengths: impl IntoIterator<Item = &'v [u8]>,
    codings: impl IntoIterator<Item = &'v [u8]>,
) -> Result<BodyFraming, &'static str> {
    let mut lengths = lengths.into_iter();
    let length = match lengths.next() {
        None => None,
        Some(v) => Some(content_length(v).ok_or("Content-Length is not a number")?),
    };
    if lengths.next().is_some() {
        return Err("more than one Content-Length");
    }
    let mut codings = codings.into_iter();
    match (codings.next(), length) {
        (None, None) => Ok(BodyFraming::None),
        (None, Some(n)) => Ok(BodyFraming::Length(n)),
        (Some(_), Some(_)) => Err("both Content-Length and Transfer-Encoding"),
        (Some(te), None) => {
            if codings.next().is_some() || !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err("Transfer-Encoding other than a single chunked");
            }
            Ok(BodyFraming::Chunked)
        }
    }
}

/// The server's own session id, carried to it in place of the client's token. Visible ASCII
/// only (the codec checks it), so a valid header value. Boxed: only session requests pay for it,
/// and a stateless request's admission stays small to move.
pub type InnerSession = Box<[u8]>;

/// An admitted MCP request.
pub struct Admitted {
    pub set: Arc<UpstreamSet>,
    /// The server that owns the request's session; `None`: the strategy picks.
    pub target: Option<Backend>,
    pub inner_session: Option<InnerSession>,
    /// Hash of the category's consistent-hash field, when present.
    pub hash_key: Option<u64>,
    /// A standalone event stream's place among `proxy.max_sse_streams`.
    pub sse_slot: Option<SseSlot>,
    pub caller: Caller,
    /// The body must be read whole and passed to [`enter`] before a server is chosen.
    pub wants_body: bool,
}

/// The proxy's own endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Health,
    Stats,
    /// RFC 9728 metadata: of the proxy, or of a category's endpoint.
    ResourceMetadata(Option<Arc<str>>),
}

pub enum Admission {
    Admitted(Admitted),
    Local(Local),
    /// The credential names a signing key not held yet: fetch keys, then admit again with
    /// `keys_fetched` (Pingora's path does; the fast path leaves the request to it).
    AwaitKeys,
    Refused {
        refusal: Refusal,
        /// The category, when the request named a known one (for its metrics).
        set: Option<Arc<UpstreamSet>>,
        /// Counted as an MCP request (a request for no endpoint at all is not).
        counted: bool,
    },
}

fn refused(refusal: Refusal, set: Option<&Arc<UpstreamSet>>) -> Admission {
    Admission::Refused {
        refusal,
        set: set.cloned(),
        counted: true,
    }
}

/// What the proxy needs beside the snapshot to admit a request.
pub struct Context<'a> {
    pub codec: &'a SessionCodec,
    pub edge: &'a Edge,
    pub now_ms: u64,
    /// Keys were fetched for this request already (see [`Admission::AwaitKeys`]).
    pub keys_fetched: bool,
}

/// The ordered admission checks. `hash_field` gives the value of a field by name (the
/// category's consistent-hash field, asked for only when the category has one).
pub fn admit<'h>(
    snapshot: &Snapshot,
    cx: &Context,
    head: &Head<'h>,
    hash_field: impl FnOnce(&http::HeaderName) -> Option<&'h [u8]>,
) -> Admission {
    let codec = cx.codec;
    let now_ms = cx.now_ms;
    let limits = &snapshot.proxy;
    // 1-3: limits on the head itself, before it is interpreted.
    if head.fields > limits.max_headers || head.field_bytes > limits.max_header_bytes {
        return refused(Refusal::headers_too_large(), None);
    }
    let framing = match head.framing {
        Ok(f) => f,
        Err(why) => return refused(Refusal::bad_framing(why), None),
    };
    if head.uri_len > limits.max_uri {
        return refused(Refusal::uri_too_long(), None);
    }
    // 4: the route.
    let category = match route::parse(head.path, head.query) {
        Route::Health => return Admission::Local(Local::Health),
        Route::Stats => return Admission::Local(Local::Stats),
        Route::ResourceMetadata(category) => {
            return Admission::Local(Local::ResourceMetadata(category.map(Arc::from)))
        }
        Route::NotFound => {
            return Admission::Refused {
                refusal: Refusal::no_such_endpoint(super::categories(snapshot)),
                set: None,
                counted: false,
            }
        }
        Route::Mcp { category, .. } => category,
    };
    let Some(set) = snapshot.category(category) else {
        return refused(
            Refusal::unknown_category(&snapshot.known, super::categories(snapshot)),
            None,
        );
    };
    let proxy = &set.proxy;
    // 5-7: what the category allows.
    if let Some(origin) = head.origin {
        if !super::origin::allowed(origin, &proxy.allowed_origins) {
            return refused(Refusal::origin_not_allowed(), Some(set));
        }
    }
    // The caller: credentials, audience, category and scopes.
    let caller = match access::check(
        cx.edge,
        set,
        head.authorization,
        head.client_ip,
        cx.keys_fetched,
    ) {
        Checked::Caller(c) => c,
        Checked::Refused(refusal) => return refused(refusal, Some(set)),
        Checked::AwaitKeys => return Admission::AwaitKeys,
    };
    if matches!(framing, BodyFraming::Length(n) if n > proxy.max_body) {
        return refused(Refusal::body_too_large(), Some(set));
    }
    if !matches!(head.method, "POST" | "GET" | "DELETE") {
        return refused(Refusal::method_not_allowed(), Some(set));
    }
    // 8: the session's server, or any ready server.
    let mut target = None;
    let mut inner_session = None;
    if let Some(token) = head.session {
        let mut buf = session::decode_buffer();
        // Sealed for the caller that opened it: another caller's request gets 404.
        let found = match codec.decode_bound(&set.name, caller.binding(), token, &mut buf) {
            Err(SessionError::Forged) => Err(Refusal::session_forged()),
            Err(SessionError::Malformed | SessionError::BadInner) => {
                Err(Refusal::session_malformed())
            }
            Ok(route) => match set.session_target(&route.backend, now_ms) {
                Some(backend) => Ok((backend.clone(), InnerSession::from(route.inner))),
                None => Err(Refusal::session_server_gone()),
            },
        };
        match found {
            Ok((backend, inner)) => {
                target = Some(backend);
                inner_session = Some(inner);
            }
            Err(refusal) => return refused(refusal, Some(set)),
        }
    } else if set.ready_count() == 0 {
        return refused(Refusal::none_ready(&set.name), Some(set));
    }
    // 9: a standalone event stream holds a place among proxy.max_sse_streams.
    let mut sse_slot = None;
    if head.method == "GET" {
        match SseSlot::take(proxy.max_sse_streams) {
            Some(slot) => sse_slot = Some(slot),
            None => return refused(Refusal::too_many_streams(), Some(set)),
        }
    }
    let hash_key = set
        .hash_header
        .as_ref()
        .and_then(hash_field)
        .map(hash_bytes);
    let named_audit = || cx.edge.auth.audits_all();
    let wants_body = inspect::wants_body(set, head.method, &head.routing, named_audit);
    // Routing fields on a body too large to hold are the server's to check (its MUST); a
    // category with allow-lists cannot let an unread body through.
    let too_large = matches!(framing, BodyFraming::Length(n) if n > inspect::INSPECT_LIMIT as u64);
    if wants_body && too_large && set.access.auth.inspects_bodies() {
        return refused(Refusal::too_large_to_inspect(), Some(set));
    }
    let wants_body = wants_body && !too_large;
    Admission::Admitted(Admitted {
        set: Arc::clone(set),
        target,
        inner_session,
        hash_key,
        sse_slot,
        caller,
        wants_body,
    })
}

/// The last steps, once the body is read (when `wants_body`): the allow-lists and routing
/// fields (`inspect`), then the rate limit, charged last so a request one engine hands to the
/// other is charged once.
pub enum Entry {
    Go {
        /// The answer is a list to filter.
        filter: Option<ListFilter>,
    },
    Refused(Refusal),
    /// The answer needs filtering, which the asking engine does not do (`can_filter`): nothing
    /// was charged or logged; the other engine takes the request.
    Defer,
}

pub fn enter(
    admitted: &Admitted,
    cx: &Context,
    routing: &RoutingFields,
    body: Option<&[u8]>,
    can_filter: bool,
) -> Entry {
    let set = &admitted.set;
    let mut filter = None;
    let mut call = (None, None);
    if let Some(body) = body.filter(|_| admitted.wants_body) {
        match inspect::inspect(set, routing, body) {
            Inspection::Pass { method, name } => call = (method, name),
            Inspection::Filter(_) if !can_filter => return Entry::Defer,
            Inspection::Filter(f) => filter = Some(f),
            Inspection::Refused(r) => {
                let principal = admitted
                    .caller
                    .principal
                    .as_ref()
                    .map(|p| Arc::clone(&p.name));
                return Entry::Refused(r.with(|d| d.principal = principal));
            }
        }
    }
    if let Err(refusal) = access::charge(set, &admitted.caller, cx.edge, cx.now_ms) {
        return Entry::Refused(*refusal);
    }
    access::audit(
        cx.edge,
        &access::Decision {
            caller: admitted.caller.name(),
            category: &set.name,
            method: call.0.as_deref().unwrap_or("-"),
            name: call.1.as_deref().unwrap_or("-"),
        },
    );
    Entry::Go { filter }
}

/// Standalone event streams (MCP `GET`) open now, across worker threads.
static SSE_OPEN: AtomicUsize = AtomicUsize::new(0);

/// A place among `proxy.max_sse_streams`, held by a `GET` request for its whole life.
#[derive(Debug)]
pub struct SseSlot;

impl SseSlot {
    fn take(limit: usize) -> Option<Self> {
        let before = SSE_OPEN.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            SSE_OPEN.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        crate::metrics::metrics().sse_streams.inc();
        Some(SseSlot)
    }
}

impl Drop for SseSlot {
    fn drop(&mut self) {
        SSE_OPEN.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::metrics().sse_streams.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_read_one_way() {
        let none: [&[u8]; 0] = [];
        assert_eq!(framing(none, none), Ok(BodyFraming::None));
        assert_eq!(framing([&b" 12 "[..]], none), Ok(BodyFraming::Length(12)));
        assert_eq!(framing(none, [&b"Chunked"[..]]), Ok(BodyFraming::Chunked));
        assert!(framing([&b"1"[..], b"1"], none).is_err());
        assert!(framing([&b"1,1"[..]], none).is_err());
        assert!(framing([&b"5"[..]], [&b"chunked"[..]]).is_err());
        assert!(framing(none, [&b"gzip, chunked"[..]]).is_err());
        assert!(framing(none, [&b"chunked"[..], b"chunked"]).is_err());
    }
}
