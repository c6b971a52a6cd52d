//! Active health checks. Every ready server is checked every `health.interval` (each server's
//! turn jittered by +-10% so a thousand checks do not fire together), at most
//! `health.concurrency` at once. `unhealthy_threshold` failures in a row take a server out,
//! `healthy_threshold` passes bring it back; a server that has just become ready (new, or
//! restarted) is out until it passes once, and is checked at once rather than at its next turn.
//! Until it first passes it is checked again on a short back-off (`FIRST_RETRY`, doubling up to
//! the interval), so a server still starting joins within a second or so of being up, not a
//! whole interval later; the first failure of each distinct reason is logged at `warn`, so an
//! operator sees why a new server is not in rotation.
//!
//! Verdicts go to the registry, which publishes a new snapshot. Runs on its own thread with a
//! single-threaded runtime, so checks never compete with proxy workers for a scheduler.

mod probe;

pub use probe::check;

use crate::config::HealthConfig;
use crate::upstream::Registry;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

#[derive(Debug)]
struct TargetState {
    epoch: u64,
    passes: u32,
    failures: u32,
    /// Passed at least once since it last became ready.
    proven: bool,
    healthy: bool,
    due: Instant,
    checking: bool,
    /// The reason of the last failure logged while the server has never passed.
    unproven_reason: Option<String>,
}

/// The first re-check of a server that has never passed; doubled per failure up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// When a server that has never passed is checked again after `failures` failures in a row.
fn unproven_retry(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(interval)
}

struct Verdict {
    addr: SocketAddr,
    epoch: u64,
    result: Result<(), String>,
}

pub struct HealthChecker {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecker {
    /// Starts the checker; it reads `[health]` from the registry on every round, so a reload
    /// that changes it (or turns checks on or off) applies without a restart.
    pub fn start(registry: Arc<Registry>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("health".into())
            .spawn(move || runtime.block_on(run(registry, shutdown_rx)))?;
        Ok(Self {
            shutdown,
            thread: Some(thread),
        })
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `interval` +-10%, so servers checked together drift apart.
fn jittered(interval: Duration, salt: u64) -> Duration {
    let spread = interval.as_millis() as u64 / 5;
    if spread == 0 {
        return interval;
    }
    let r = crate::upstream::hash_bytes(&salt.to_le_bytes()) % spread;
    interval - interval / 10 + Duration::from_millis(r)
}

async fn run(registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    let mut states: HashMap<SocketAddr, TargetState> = HashMap::new();
    let mut generation = registry.subscribe();
    let mut config: HealthConfig = registry.health_config();
    let mut permits = Arc::new(Semaphore::new(config.concurrency));
    let (tx, mut rx) = mpsc::unbounded_channel::<Verdict>();
    let mut round: u64 = 0;
    loop {
        let latest = registry.health_config();
        if latest.concurrency != config.concurrency {
            permits = Arc::new(Semaphore::new(latest.concurrency));
        }
        config = latest;
        if !config.enabled {
            states.clear();
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = generation.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let now = Instant::now();
        let targets = registry.health_targets();
        let mut seen = HashSet::with_capacity(targets.len());
        for t in targets {
            seen.insert(t.addr);
            let st = states.entry(t.addr).or_insert_with(|| TargetState {
                epoch: t.ready_epoch,
                passes: 0,
                failures: 0,
                proven: t.healthy,
                healthy: t.healthy,
                // Healthy members (checks were off, or a restart of this checker) take their
                // turn somewhere in the first interval; the others are checked now.
                due: if t.healthy {
                    now + jittered(config.interval, t.addr.port().into())
                } else {
                    now
                },
                checking: false,
                unproven_reason: None,
            });
            if st.epoch != t.ready_epoch {
                *st = TargetState {
                    epoch: t.ready_epoch,
                    passes: 0,
                    failures: 0,
                    proven: false,
                    healthy: t.healthy,
                    due: now,
                    checking: false,
                    unproven_reason: None,
                };
            }
            st.healthy = t.healthy;
            if !st.checking && st.due <= now {
                st.checking = true;
                let (tx, permits, kind) = (tx.clone(), Arc::clone(&permits), config.kind.clone());
                let (addr, epoch, path, timeout) =
                    (t.addr, t.ready_epoch, t.mcp_path, config.timeout);
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    let result = check(&kind, addr, &path, timeout).await;
                    let _ = tx.send(Verdict {
                        addr,
                        epoch,
                        result,
                    });
                });
            }
        }
        states.retain(|addr, _| seen.contains(addr));
        let next = states
            .values()
            .filter(|s| !s.checking)
            .map(|s| s.due)
            .min()
            .unwrap_or(now + config.interval)
            .min(now + Duration::from_secs(1));

        let first = tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(next) => None,
            changed = generation.changed() => {
                if changed.is_err() {
                    return;
                }
                None
            }
            v = rx.recv() => v,
        };
        let mut flips = Vec::new();
        let mut verdicts: Vec<Verdict> = first.into_iter().collect();
        while let Ok(v) = rx.try_recv() {
            verdicts.push(v);
        }
        for v in verdicts {
            round += 1;
            let Some(st) = states.get_mut(&v.addr) else {
                continue;
            };
            if st.epoch != v.epoch {
                continue; // a verdict on a previous life of the server
            }
            st.checking = false;
            st.due = Instant::now() + jittered(config.interval, round ^ u64::from(v.addr.port()));
            match v.result {
                Ok(()) => {
                    st.passes += 1;
                    st.failures = 0;
                    let back = !st.proven || st.passes >= config.healthy_threshold;
                    st.proven = true;
                    if !st.healthy && back {
                        st.healthy = true;
                        tracing::info!(server = %v.addr, "health check passed: in rotation");
                        flips.push((v.addr, true));
                    }
                }
                Err(why) => {
                    st.failures += 1;
                    st.passes = 0;
                    if !st.proven {
                        st.due = Instant::now() + unproven_retry(st.failures, config.interval);
                        if st.unproven_reason.as_deref() != Some(why.as_str()) {
                            tracing::warn!(server = %v.addr, failures = st.failures, "health check failed, not in rotation yet: {why}");
                            st.unproven_reason = Some(why);
                        } else {
                            tracing::debug!(server = %v.addr, failures = st.failures, "health check failed: {why}");
                        }
                    } else if st.healthy && st.failures >= config.unhealthy_threshold {
                        st.healthy = false;
                        tracing::warn!(server = %v.addr, failures = st.failures, "health check failed: out of rotation: {why}");
                        flips.push((v.addr, false));
                    } else {
                        tracing::debug!(server = %v.addr, failures = st.failures, "health check failed: {why}");
                    }
                }
            }
        }
        if !flips.is_empty() {
            registry.set_health(&flips);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_never_passed_is_retried_soon_then_less_often() {
        let interval = Duration::from_secs(30);
        let waits: Vec<_> = (1..=8).map(|f| unproven_retry(f, interval)).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[5], Duration::from_secs(16));
        assert_eq!(waits[6], interval, "never longer than the interval");
        assert_eq!(unproven_retry(u32::MAX, interval), interval);
        assert_eq!(
            unproven_retry(1, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }
}
