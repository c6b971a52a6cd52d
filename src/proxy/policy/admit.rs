//! Admission: the checks a request head passes before any server is chosen, as one ordered
//! list (`admit`). Both engines describe the head they read as a [`Head`] and call `admit`; the
//! fast path takes a request only when it is admitted, and leaves every refusal to Pingora's
//! path, which answers it. So a rule added here holds on both, and is answered in one way.

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
}

/// A single decimal Content-Length value (no sign, no spaces inside, no list): the one reading
/// of the field on both engines, so they agree on what is a valid length.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
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
}

/// The proxy's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Health,
    Stats,
}

pub enum Admission {
    Admitted(Admitted),
    Local(Local),
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

/// The ordered admission checks. `hash_field` gives the value of a field by name (the
/// category's consistent-hash field, asked for only when the category has one).
pub fn admit<'h>(
    snapshot: &Snapshot,
    codec: &SessionCodec,
    head: &Head<'h>,
    hash_field: impl FnOnce(&http::HeaderName) -> Option<&'h [u8]>,
    now_ms: u64,
) -> Admission {
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
        let found = match codec.decode(&set.name, token, &mut buf) {
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
    Admission::Admitted(Admitted {
        set: Arc::clone(set),
        target,
        inner_session,
        hash_key,
        sse_slot,
    })
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
