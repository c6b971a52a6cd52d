//! The client's side of Pingora's path: the framing as the head arrived, bodies read whole
//! before a server is chosen, the proxy's own answers and the lingering read after an early
//! one.

use super::super::policy::{self, BodyFraming, Refusal};
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use pingora::Result;
use std::time::Duration;

/// Pingora drops `Content-Length` when `Transfer-Encoding` is present (RFC 9112 lets a server
/// do that); a proxy must refuse such a request instead, so look at the head as it arrived.
pub(super) fn raw_head_has_content_length(session: &Session) -> bool {
    session.as_downstream().as_http1().is_some_and(|h1| {
        h1.get_headers_raw_bytes()
            .split(|&b| b == b'\n')
            .skip(1)
            .any(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
    })
}

/// The request's framing as admission reads it.
pub(super) fn request_framing(session: &Session) -> Result<BodyFraming, &'static str> {
    let headers = &session.req_header().headers;
    let lengths = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(HeaderValue::as_bytes);
    let codings = headers.get_all(http::header::TRANSFER_ENCODING);
    if codings.iter().next().is_some() && raw_head_has_content_length(session) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    policy::framing(lengths, codings.iter().map(HeaderValue::as_bytes))
}

pub(super) enum Preread {
    Complete,
    Refused(Refusal),
}

/// Reads a request body whole (up to 64 KiB), into Pingora's replay buffer, before a server is
/// chosen: a chunked body so that broken chunk framing is answered here, and a body the policy
/// reads (`Admitted::wants_body`); nothing of such a request reaches a server until it is read.
pub(super) async fn preread(session: &mut Session, limit: Duration) -> Preread {
    session.as_downstream_mut().enable_retry_buffering();
    let read = tokio::time::timeout(limit, async {
        let mut total = 0usize;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    total += chunk.len();
                    if total > policy::CHUNKED_BODY_LIMIT {
                        return Preread::Refused(Refusal::chunked_too_large());
                    }
                }
                Ok(None) => return Preread::Complete,
                Err(_) => return Preread::Refused(Refusal::malformed_chunked()),
            }
        }
    })
    .await;
    read.unwrap_or(Preread::Refused(Refusal::body_timeout()))
}

/// Reads and discards what is left of the request after an early answer, within the policy's
/// bounds, so a client still writing its body reads the answer instead of a reset.
pub(super) async fn linger(session: &mut Session) {
    if session.as_downstream_mut().is_body_done() {
        return;
    }
    let deadline = tokio::time::Instant::now() + policy::LINGER_TIME;
    let mut discarded = 0u64;
    while discarded < policy::LINGER_BYTES {
        let read = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + policy::LINGER_IDLE),
            session.read_request_body(),
        );
        match read.await {
            Ok(Ok(Some(chunk))) => discarded += chunk.len() as u64,
            _ => break,
        }
    }
}

pub(super) async fn respond<V: AsRef<str>>(
    session: &mut Session,
    status: u16,
    body: Vec<u8>,
    fields: impl Iterator<Item = (&'static str, V)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header("content-length", body.len())?;
    for (name, value) in fields {
        resp.append_header(name, value.as_ref())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// Writes the policy's answer and adds it to its counter; Pingora writes `Connection` itself
/// from the keep-alive state.
pub(super) async fn refuse(
    session: &mut Session,
    refusal: &Refusal,
    category: Option<&str>,
) -> Result<()> {
    refusal.record(category);
    if refusal.close {
        session.set_keepalive(None);
    }
    let written = respond(session, refusal.status, refusal.body(), refusal.fields()).await;
    linger(session).await;
    written
}
