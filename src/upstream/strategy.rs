//! Selection strategies: given the ready backends of one category, pick one. A strategy is built
//! once per snapshot and called once per request, so `pick` must be O(1) or O(log n), allocate
//! nothing and take no lock.

use super::backend::Backend;
use crate::config::StrategyKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The seam every strategy plugs into (round-robin now; weighted, least-connections, p2c,
/// peak-ewma and consistent hashing implement the same trait).
pub trait Strategy: Send + Sync + std::fmt::Debug {
    /// Index into `ready` of the backend to use, or `None` when `ready` is empty.
    fn pick(&self, ready: &[Backend]) -> Option<usize>;
}

/// Plain rotation. The cursor is shared by every snapshot of the category, so a swap (a server
/// becoming ready, say) does not send the next requests back to the first server.
#[derive(Debug)]
pub struct RoundRobin {
    cursor: Arc<AtomicUsize>,
}

impl RoundRobin {
    pub fn new(cursor: Arc<AtomicUsize>) -> Self {
        Self { cursor }
    }
}

impl Strategy for RoundRobin {
    fn pick(&self, ready: &[Backend]) -> Option<usize> {
        if ready.is_empty() {
            return None;
        }
        Some(self.cursor.fetch_add(1, Ordering::Relaxed) % ready.len())
    }
}

/// Per-category state a strategy keeps across snapshots.
#[derive(Debug, Default, Clone)]
pub struct StrategyMemory {
    cursor: Arc<AtomicUsize>,
}

pub fn build(kind: StrategyKind, memory: &StrategyMemory) -> Box<dyn Strategy> {
    match kind {
        StrategyKind::RoundRobin => Box::new(RoundRobin::new(Arc::clone(&memory.cursor))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::backend::Origin;

    fn backends(n: u16) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                id: format!("b{i}").into(),
                addr: ([127, 0, 0, 1], 1000 + i).into(),
                origin: Origin::Static,
                ready: true,
                state: Arc::default(),
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_every_backend_evenly() {
        let set = backends(7);
        let rr = RoundRobin::new(Arc::default());
        let mut counts = [0u32; 7];
        for _ in 0..700 {
            counts[rr.pick(&set).expect("non-empty")] += 1;
        }
        assert!(counts.iter().all(|&c| c == 100), "{counts:?}");
        assert_eq!(rr.pick(&[]), None);
    }
}
