//! The state one request carries across Pingora's hooks (and its retries), and what a Pingora
//! error means for the attempt, through the policy core.

use super::super::policy::{
    self, filter::ListFilter, Admitted, Attempts, Failure, Refusal, Verdict,
};
use super::super::RequestGuard;
use crate::upstream::{Backend, InFlight, UpstreamSet};
use pingora::protocols::http::v1::client::FIRST_BYTE_TIMEDOUT;
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-request state, shared across the hooks of one request (and its retries).
#[derive(Default)]
pub struct RequestCtx {
    pub(super) guard: Option<RequestGuard>,
    pub(super) started: Option<Instant>,
    /// An MCP request (not a local endpoint): counted in the request metrics.
    pub(super) counted: bool,
    pub(super) set: Option<Arc<UpstreamSet>>,
    pub(super) admitted: Option<Admitted>,
    pub(super) query: Option<Box<str>>,
    pub(super) attempts: Attempts,
    /// The server of the current attempt.
    pub(super) target: Option<Backend>,
    pub(super) in_flight: Option<InFlight>,
    /// When the request was handed to the current upstream connection.
    pub(super) sent_at: Option<Instant>,
    /// The current attempt's answer head has arrived.
    pub(super) head_seen: bool,
    /// A failure a filter found (it returns a bare error to Pingora).
    pub(super) failure: Option<Failure>,
    /// The answer the client gets if the request fails now.
    pub(super) refusal: Option<Refusal>,
    pub(super) body_bytes: u64,
    /// The answer is `text/event-stream` (set when its head arrives).
    pub(super) event_stream: bool,
    /// Bytes of the answer so far, and its limit (`answer::body_limit`).
    pub(super) response_bytes: u64,
    pub(super) response_limit: Option<u64>,
    /// The answer is a list the caller sees only the allowed part of.
    pub(super) filter: Option<ListFilter>,
    /// The filtered answer is JSON, held until its end.
    pub(super) held: Option<Vec<u8>>,
}

impl RequestCtx {
    /// What a Pingora error says went wrong with the attempt, when it is the server's doing.
    pub(super) fn classify(&self, e: &Error) -> Option<Failure> {
        if let Some(f) = self.failure {
            return Some(f);
        }
        let wait = self
            .set
            .as_ref()
            .map_or(Duration::ZERO, |s| policy::first_byte_wait(&s.proxy));
        if e.etype() == &FIRST_BYTE_TIMEDOUT {
            return Some(Failure::FirstByte(wait));
        }
        if e.esource() != &ErrorSource::Upstream {
            return None;
        }
        Some(match e.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Idle,
            _ if self.head_seen => Failure::BrokenAnswer,
            ErrorType::WriteError => Failure::Send,
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error => Failure::BadAnswer,
            _ => Failure::NoAnswer,
        })
    }

    /// Accounts a failed attempt through the policy; true when it may be retried.
    pub(super) fn attempt_failed(&mut self, failure: Failure) -> bool {
        let (Some(set), Some(target)) = (&self.set, &self.target) else {
            return false;
        };
        self.in_flight = None;
        match self.attempts.failed(set, target, failure) {
            Verdict::Retry => true,
            Verdict::Fail(refusal) => {
                self.refusal = Some(refusal);
                false
            }
        }
    }

    /// A filter found the answer unacceptable: the error it returns to Pingora.
    pub(super) fn fail_answer(&mut self, failure: Failure) -> Box<Error> {
        self.failure = Some(failure);
        self.attempt_failed(failure);
        Error::explain(ErrorType::HTTPStatus(502), "upstream answer refused")
    }

    /// A filter refused the request's body: the error it returns to Pingora.
    pub(super) fn refuse_request(&mut self, refusal: Refusal) -> Box<Error> {
        let status = refusal.status;
        self.refusal = Some(refusal);
        Error::explain(ErrorType::HTTPStatus(status), "request refused")
    }
}

/// The answer for a failure that is not the server's (the client's, or the proxy's own).
pub(super) fn fallback_refusal(e: &Error) -> Refusal {
    match e.esource() {
        ErrorSource::Downstream => Refusal::bad_request(),
        _ => Refusal::internal(),
    }
}
