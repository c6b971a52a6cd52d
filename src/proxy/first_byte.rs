//! The first-byte timeout. Pingora applies one read timeout to every read of an upstream
//! response, header and body alike, but MCP needs two: a short wait for the first byte (5 s, the
//! seed's `timeout`) and a long one between SSE events (5 min). So the peer gets the long one and
//! this watchdog enforces the short one: armed when the request is sent, disarmed when the
//! response header arrives, and when it fires it shuts the connection down, which makes Pingora's
//! pending read fail at once.
//!
//! The watchdog keeps its own duplicate of the socket's descriptor, so it can never touch a
//! descriptor number that Pingora has closed and the kernel has handed to another connection.

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const ARMED: u8 = 0;
const DISARMED: u8 = 1;
const FIRED: u8 = 2;

#[derive(Debug)]
pub struct Watchdog {
    state: Arc<AtomicU8>,
    task: tokio::task::AbortHandle,
}

impl Watchdog {
    /// Arms a watchdog on the upstream connection `fd`; `None` if the descriptor cannot be
    /// duplicated (the request then runs with the idle timeout only).
    pub fn arm(fd: RawFd, after: Duration) -> Option<Self> {
        #[allow(unsafe_code)]
        // SAFETY: Pingora passes the descriptor of the live upstream connection to
        // `connected_to_upstream`, and this runs inside that hook: the descriptor is open for the
        // whole borrow, which only lasts for the duplication below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let own = TcpStream::from(borrowed.try_clone_to_owned().ok()?);
        let state = Arc::new(AtomicU8::new(ARMED));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if shared
                .compare_exchange(ARMED, FIRED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _ = own.shutdown(Shutdown::Both);
            }
        });
        Some(Self {
            state,
            task: task.abort_handle(),
        })
    }

    /// The response header arrived (or the request is over): stand down.
    pub fn disarm(&self) {
        let _ = self
            .state
            .compare_exchange(ARMED, DISARMED, Ordering::AcqRel, Ordering::Acquire);
        self.task.abort();
    }

    pub fn fired(&self) -> bool {
        self.state.load(Ordering::Acquire) == FIRED
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}
