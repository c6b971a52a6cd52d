//! Deadlines for a connection's waits, without a timer per wait.
//!
//! `tokio::time::timeout` builds a timer for every wait and, when the wait is pending, registers
//! it in the runtime's timer wheel and takes it out again afterwards, a lock each way: two waits
//! of each proxied request are always pending (the answer, then the next request), and a write
//! that never waits still pays for building its timer and reading the clock. A `Timer` belongs
//! to one connection's side and lives as long as it: a wait polls its future first and asks
//! for its deadline only when the future is pending. A deadline later than the armed one (the
//! usual case: "now plus the same timeout" again) is only written down: the timer fires at the
//! earlier one, finds the wait's deadline not reached and is armed again for it, once per
//! timeout at most instead of once per wait (each re-arming clones the runtime's handle and
//! converts the deadline). A timer that fires while no wait is under way wakes the task once,
//! for nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::time::{Instant, Sleep};

#[derive(Default)]
pub struct Timer {
    /// Made at the first wait that is pending; armed at or before the deadline of the wait
    /// under way.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The two timers of a client connection: one for waits on the client, one for waits on the
/// server its requests go to. Kept apart so that each one's deadlines keep moving later.
#[derive(Default)]
pub struct Timers {
    pub client: Timer,
    pub upstream: Timer,
}

/// The deadline `wait` from when it is asked for (when a wait turns out to be pending).
pub fn after(wait: std::time::Duration) -> impl FnOnce() -> Instant {
    move || Instant::now() + wait
}

impl Timer {
    /// `fut`'s output, or None when it has not finished by the deadline `by` gives, which is
    /// asked for only if `fut` does not finish at once.
    pub async fn within<F: Future>(
        &mut self,
        by: impl FnOnce() -> Instant,
        fut: F,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut by = Some(by);
        let mut deadline = None;
        let slot = &mut self.sleep;
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if let Some(by) = by.take() {
                let wait_until = by();
                deadline = Some(wait_until);
                match slot {
                    // Armed earlier: armed again when it fires.
                    Some(sleep) if sleep.deadline() <= wait_until => {}
                    Some(sleep) => sleep.as_mut().reset(wait_until),
                    None => *slot = Some(Box::pin(tokio::time::sleep_until(wait_until))),
                }
            }
            let (Some(sleep), Some(deadline)) = (slot.as_mut(), deadline) else {
                return Poll::Pending;
            };
            while sleep.as_mut().poll(cx).is_ready() {
                if sleep.deadline() >= deadline {
                    return Poll::Ready(None);
                }
                sleep.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_own_deadline_however_the_last_one_was_set() {
        let mut timer = Timer::default();
        let soon = || Instant::now() + Duration::from_secs(1);
        let later = || Instant::now() + Duration::from_secs(30);
        // Finished at once: no deadline asked for, no timer made.
        assert_eq!(timer.within(|| unreachable!(), async { 7 }).await, Some(7));
        assert!(timer.sleep.is_none());
        // Pending past its deadline.
        let start = Instant::now();
        assert_eq!(timer.within(soon, std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // A later deadline on the same timer, and a wait that finishes before it.
        let start = Instant::now();
        let done = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(timer.within(later, done).await, Some(()));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // The armed deadline (25 s away) moved earlier: the next wait still ends at its own.
        let start = Instant::now();
        assert_eq!(timer.within(soon, std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Later again, past where the earlier one was: the timer fires early, is armed again
        // and the wait ends at its own deadline, not before.
        let start = Instant::now();
        assert_eq!(
            timer.within(later, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // A wait that outlives the deadline armed by an earlier one is not timed out by it.
        let armed = timer.within(soon, tokio::time::sleep(Duration::from_millis(1)));
        assert_eq!(armed.await, Some(()));
        let start = Instant::now();
        let done = tokio::time::sleep(Duration::from_secs(20));
        assert_eq!(timer.within(later, done).await, Some(()));
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }
}
