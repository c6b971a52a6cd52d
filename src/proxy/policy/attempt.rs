//! Attempts: which server a request goes to, and what a failed attempt means (another server
//! or an answer to the client; whether the server is blamed). Both engines keep an [`Attempts`]
//! per request and call it; neither decides a retry or a blame itself.
//!
//! The safety rule, kept here and nowhere else: **a request that may have reached a server is
//! never sent again**. Only two failures prove that nothing did ([`Failure::sent_nothing`]): a
//! connection that could not be opened, and a reused connection that took none of the
//! request's bytes. Everything else (a write that got some bytes out, a connection that closed
//! or broke before an answer, a timeout) may have reached a server that acted on it: a
//! `tools/call` is not idempotent, whatever its HTTP method says.
//!
//! Blame follows one rule: every failure counts against the server (passive ejection), except
//! a reused connection that took none of the request, which the server closed while it was idle
//! (a keep-alive race, no fault of its own; a server that died shows up as a refused connect on
//! the next attempt).

use super::refusal::Refusal;
use crate::upstream::{clock, Backend, PickRequest, UpstreamSet};
use std::net::SocketAddr;
use std::time::Duration;

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened (refused, unreachable, timed out).
    Connect,
    /// A reused connection took none of the request's bytes: its first write failed, so the
    /// kernel accepted nothing of this request, and the earlier exchange on it was complete
    /// before it was pooled. The server cannot have read any of it.
    Stale,
    /// The request could not be written in full: some of it may have reached the server.
    Send,
    /// The connection closed or broke before an answer head.
    NoAnswer,
    /// No answer head within the first-byte wait (given).
    FirstByte(Duration),
    /// Silence longer than `proxy.idle_timeout` while reading or writing.
    Idle,
    /// An answer head that is not acceptable HTTP/1.1.
    BadAnswer,
    /// An answer longer than `proxy.max_response_body`.
    TooLarge,
    /// The answer broke after its head had been passed on (framing, reset, early end).
    BrokenAnswer,
}

impl Failure {
    /// Nothing of the request can have reached the server.
    pub fn sent_nothing(self) -> bool {
        matches!(self, Failure::Connect | Failure::Stale)
    }

    /// The server is blamed for it (see the module's comment).
    pub fn blames_server(self) -> bool {
        self != Failure::Stale
    }
}

/// What the engine does after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Pick again (`Attempts::pick`) and send the request there.
    Retry,
    /// Give the client this answer (when its answer has not started).
    Fail(Refusal),
}

/// The attempts of one request.
#[derive(Debug, Default)]
pub struct Attempts {
    count: usize,
    /// The request is bound to its session's server: there is nowhere else to go.
    session_bound: bool,
    last_failed: Option<SocketAddr>,
    /// The current attempt's failure has been accounted (an engine may see one failure through
    /// two hooks).
    settled: bool,
}

impl Attempts {
    pub fn new(session_bound: bool) -> Self {
        Self {
            session_bound,
            ..Self::default()
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn session_bound(&self) -> bool {
        self.session_bound
    }

    /// The server for the next attempt: the session's server, or the strategy's pick (away
    /// from the one that just failed while another is ready).
    pub fn pick(
        &mut self,
        set: &UpstreamSet,
        target: Option<&Backend>,
        hash_key: Option<u64>,
        now_ms: u64,
    ) -> Result<Backend, Refusal> {
        self.count += 1;
        self.settled = false;
        let backend = match target {
            Some(b) => Some(b.clone()),
            None => set
                .pick(&PickRequest {
                    key: hash_key,
                    avoid: self.last_failed,
                    now_ms,
                })
                .cloned(),
        };
        backend.ok_or_else(Refusal::no_server)
    }

    /// Accounts a failed attempt on `backend` and decides what follows. Called once per
    /// attempt; a second call for the same attempt only gives the answer again.
    pub fn failed(&mut self, set: &UpstreamSet, backend: &Backend, failure: Failure) -> Verdict {
        let first = !self.settled;
        self.settled = true;
        if first {
            self.last_failed = Some(backend.addr);
            if failure == Failure::Connect {
                backend.state.record_connect_failure();
            }
            if failure == Failure::TooLarge {
                crate::metrics::refused("max_response_body");
            }
            if failure.blames_server() {
                backend.state.record_failure();
                if let Some(span) = set.try_eject(backend, clock::now_ms(), &set.proxy.ejection) {
                    tracing::info!(server = %backend.id, ejected_for = ?span, "ejected after a failed request");
                }
            }
            if self.may_retry(set, failure) {
                crate::metrics::retry(
                    &set.name,
                    match failure {
                        Failure::Connect => "connect",
                        _ => "reused-connection",
                    },
                );
                return Verdict::Retry;
            }
        }
        Verdict::Fail(self.answer(failure))
    }

    /// Whether another attempt may be made after `failure`: only when nothing was sent, within
    /// `proxy.max_retries` and the retry budget. A session's request that could not connect has
    /// nowhere else to go; one whose idle connection was stale goes to the same server again.
    fn may_retry(&self, set: &UpstreamSet, failure: Failure) -> bool {
        failure.sent_nothing()
            && !(self.session_bound && failure == Failure::Connect)
            && self.count <= set.proxy.max_retries
            && set.try_retry(clock::now_ms(), &set.proxy.retry_budget)
    }

    /// The client's answer after `failure`, when no retry follows.
    fn answer(&self, failure: Failure) -> Refusal {
        match failure {
            Failure::Connect if self.session_bound => Refusal::session_server_silent(),
            Failure::Connect => Refusal::connect_exhausted(),
            Failure::FirstByte(wait) => Refusal::first_byte_timeout(wait),
            Failure::Idle => Refusal::upstream_timed_out(),
            Failure::TooLarge => Refusal::answer_too_large(),
            Failure::Stale
            | Failure::Send
            | Failure::NoAnswer
            | Failure::BadAnswer
            | Failure::BrokenAnswer => Refusal::upstream_failed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_sent_nothing_may_be_retried_and_only_stale_ones_go_unblamed() {
        let all = [
            Failure::Connect,
            Failure::Stale,
            Failure::Send,
            Failure::NoAnswer,
            Failure::FirstByte(Duration::from_secs(5)),
            Failure::Idle,
            Failure::BadAnswer,
            Failure::TooLarge,
            Failure::BrokenAnswer,
        ];
        let resendable: Vec<_> = all.iter().filter(|f| f.sent_nothing()).collect();
        assert_eq!(resendable, [&Failure::Connect, &Failure::Stale]);
        let unblamed: Vec<_> = all.iter().filter(|f| !f.blames_server()).collect();
        assert_eq!(unblamed, [&Failure::Stale]);
        let session = Attempts::new(true);
        assert_eq!(session.answer(Failure::Connect).status, 404);
        assert_eq!(Attempts::new(false).answer(Failure::Connect).status, 502);
        assert_eq!(
            session.answer(Failure::FirstByte(Duration::ZERO)).status,
            504
        );
    }
}
