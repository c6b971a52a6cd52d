//! The retry budget of one category: retries may add at most `percent` of the requests of the
//! last 10 s, plus `min` per 10 s, so that during an outage retries cannot multiply the load on
//! the servers that are left. Two 10 s buckets (current and previous, weighted by how much of the
//! previous still falls in the sliding window); atomics only.

use crate::config::RetryBudget;
use std::sync::atomic::{AtomicU64, Ordering};

const WINDOW_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub struct BudgetState {
    window_start: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    prev_requests: AtomicU64,
    prev_retries: AtomicU64,
}

impl BudgetState {
    fn roll(&self, now_ms: u64) -> u64 {
        let start = self.window_start.load(Ordering::Acquire);
        if now_ms.saturating_sub(start) < WINDOW_MS {
            return start;
        }
        // One thread wins the roll; the others see the new start. Counts racing with the roll
        // may land in either bucket, which a budget can live with.
        let fresh = now_ms - now_ms % WINDOW_MS;
        if self
            .window_start
            .compare_exchange(start, fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let adjacent = fresh.saturating_sub(start) <= WINDOW_MS;
            let (r, t) = (
                self.requests.swap(0, Ordering::AcqRel),
                self.retries.swap(0, Ordering::AcqRel),
            );
            self.prev_requests
                .store(if adjacent { r } else { 0 }, Ordering::Release);
            self.prev_retries
                .store(if adjacent { t } else { 0 }, Ordering::Release);
            fresh
        } else {
            self.window_start.load(Ordering::Acquire)
        }
    }

    pub fn record_request(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, or refuses.
    pub fn try_retry(&self, now_ms: u64, budget: &RetryBudget) -> bool {
        let start = self.roll(now_ms);
        let into = now_ms.saturating_sub(start).min(WINDOW_MS);
        let prev_share = (WINDOW_MS - into) as f64 / WINDOW_MS as f64;
        let requests = self.requests.load(Ordering::Relaxed) as f64
            + self.prev_requests.load(Ordering::Relaxed) as f64 * prev_share;
        let retries = self.retries.load(Ordering::Relaxed) as f64
            + self.prev_retries.load(Ordering::Relaxed) as f64 * prev_share;
        let allowed = f64::from(budget.min) + requests * f64::from(budget.percent) / 100.0;
        if retries + 1.0 <= allowed {
            self.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_by_share_and_floor() {
        let b = BudgetState::default();
        let budget = RetryBudget {
            percent: 20,
            min: 5,
        };
        let now = 1_000_000;
        for _ in 0..100 {
            b.record_request(now);
        }
        let granted = (0..100).filter(|_| b.try_retry(now, &budget)).count();
        assert_eq!(granted, 25, "5 floor + 20% of 100");
        // Much later the window is fresh: the floor is available again.
        let later = now + 60_000;
        let granted = (0..100).filter(|_| b.try_retry(later, &budget)).count();
        assert_eq!(granted, 5);
    }
}
