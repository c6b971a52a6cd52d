//! The history of deployments and reloads (`GET /deployments`, the dashboard, the report). Owned
//! by neither writer: the fleet records its deployments, restarts and retries, the reloader its
//! reloads, so an instance without a fleet still shows its reloads.

use crate::api::{Entry, EntryKind, Outcome};
use crate::upstream::clock::unix_now;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// Entries kept.
const KEEP: usize = 200;

#[derive(Debug, Default)]
pub struct History {
    /// The newest `KEEP` entries and the number the last one got.
    entries: Mutex<(VecDeque<Entry>, u64)>,
}

/// An entry of `kind` for work that began at `started`, nothing deployed or failed yet; callers
/// fill in what happened with struct update syntax. `seq` is set by `record`.
pub fn entry(kind: EntryKind, started: Instant, outcome: Outcome) -> Entry {
    let elapsed = started.elapsed();
    Entry {
        seq: 0,
        kind,
        started_at: unix_now().saturating_sub(elapsed.as_secs()),
        duration_ms: elapsed.as_millis() as u64,
        requested: 0,
        deployed: Vec::new(),
        failed: Vec::new(),
        already: Vec::new(),
        outcome,
        notes: Vec::new(),
    }
}

impl History {
    /// Numbers and keeps `e`; returns it with its number.
    pub fn record(&self, mut e: Entry) -> Entry {
        let mut guard = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (list, seq) = &mut *guard;
        *seq += 1;
        e.seq = *seq;
        list.push_back(e.clone());
        while list.len() > KEEP {
            list.pop_front();
        }
        e
    }

    /// Oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .iter()
            .cloned()
            .collect()
    }
}
