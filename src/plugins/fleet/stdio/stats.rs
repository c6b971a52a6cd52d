//! What a bridged server counts: children, spawns, reaps, exits by cause, lines it refused, and
//! processes that outlived their child (expected 0). Written by the bridge with atomics, read by
//! `/servers` (and from there `status`, `/metrics`, the dashboard).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The bridge ended it (DELETE, idle reaping, shutdown, a reload).
    Stopped,
    /// It exited by itself with status 0.
    Exited,
    /// It exited by itself with another status or a signal.
    Crashed,
    /// The kernel's OOM killer ended it at its memory limit.
    Oom,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub children: AtomicU64,
    pub spawns: AtomicU64,
    pub spawn_failures: AtomicU64,
    pub reaps: AtomicU64,
    pub stopped: AtomicU64,
    pub exited: AtomicU64,
    pub crashed: AtomicU64,
    pub oom: AtomicU64,
    /// Stdout lines that were not JSON (logged, never forwarded).
    pub non_json: AtomicU64,
    /// Stdout lines over the 16 MiB cap (the request they answer failed).
    pub oversized: AtomicU64,
    /// Processes still in a child's cgroup after it was ended and its cgroup killed.
    pub outlived: AtomicU64,
    /// Sessions closed because their client stopped reading (their queue filled).
    pub slow_closed: AtomicU64,
    /// Requests refused for want of a session or child slot (503).
    pub refused: AtomicU64,
}

impl Stats {
    pub fn exited(&self, exit: Exit) {
        self.children.fetch_sub(1, Ordering::Relaxed);
        let counter = match exit {
            Exit::Stopped => &self.stopped,
            Exit::Exited => &self.exited,
            Exit::Crashed => &self.crashed,
            Exit::Oom => &self.oom,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, sessions: usize) -> crate::api::StdioInfo {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::api::StdioInfo {
            children: get(&self.children),
            sessions: sessions as u64,
            spawns: get(&self.spawns),
            spawn_failures: get(&self.spawn_failures),
            reaps: get(&self.reaps),
            exits: crate::api::StdioExits {
                stopped: get(&self.stopped),
                exited: get(&self.exited),
                crashed: get(&self.crashed),
                oom: get(&self.oom),
            },
            non_json_lines: get(&self.non_json),
            oversized_lines: get(&self.oversized),
            outlived: get(&self.outlived),
            slow_closed: get(&self.slow_closed),
            refused: get(&self.refused),
        }
    }
}
