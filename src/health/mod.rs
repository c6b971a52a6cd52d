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
//! The first round of each category (every server it had when the checker first saw it judged
//! once) is logged as one line per category (`N of M in rotation`), not one line per server: a
//! 1000-server start logs ten lines, not a thousand. After it, single servers' transitions are
//! logged one by one.
//!
//! Verdicts go to the registry, which publishes a new snapshot. Runs on its own thread with a
//! single-threaded runtime, so checks never compete with proxy workers for a scheduler.

mod probe;

pub use probe::check;

use crate::config::{HealthConfig, HealthKind};
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
    category: Arc<str>,
    /// Had a verdict since the checker first saw it.
    judged: bool,
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
    // Categories whose first round was summarised.
    let mut summarised: HashSet<Arc<str>> = HashSet::new();
    let mut first_seen: HashMap<Arc<str>, Instant> = HashMap::new();
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
                category: Arc::clone(&t.category),
                judged: false,
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
                    category: Arc::clone(&t.category),
                    judged: st.judged,
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
                let kind = if t.bridged {
                    bridged_kind(&config.kind)
                } else {
                    config.kind.clone()
                };
                let (tx, permits) = (tx.clone(), Arc::clone(&permits));
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
            st.judged = true;
            let one_by_one = summarised.contains(&st.category);
            st.due = Instant::now() + jittered(config.interval, round ^ u64::from(v.addr.port()));
            match v.result {
                Ok(()) => {
                    st.passes += 1;
                    st.failures = 0;
                    let back = !st.proven || st.passes >= config.healthy_threshold;
                    st.proven = true;
                    if !st.healthy && back {
                        st.healthy = true;
                        if one_by_one {
                            tracing::info!(server = %v.addr, "health check passed: in rotation");
                        } else {
                            tracing::debug!(server = %v.addr, "health check passed: in rotation");
                        }
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
        summarise_first_rounds(&registry, &states, &mut first_seen, &mut summarised);
    }
}

/// A category whose servers do not all come up is summarised with what it has after this long.
const FIRST_ROUND_WAIT: Duration = Duration::from_secs(30);

/// One line per category, the first time all its planned servers have been judged once (or,
/// for a category some of whose servers never come up, once those that did were judged and
/// `FIRST_ROUND_WAIT` has passed since its first).
fn summarise_first_rounds(
    registry: &Registry,
    states: &HashMap<SocketAddr, TargetState>,
    first_seen: &mut HashMap<Arc<str>, Instant>,
    summarised: &mut HashSet<Arc<str>>,
) {
    let mut by: HashMap<&Arc<str>, (usize, usize, bool)> = HashMap::new();
    for st in states.values() {
        if summarised.contains(&st.category) {
            continue;
        }
        let c = by.entry(&st.category).or_insert((0, 0, true));
        c.0 += usize::from(st.healthy);
        c.1 += 1;
        c.2 &= st.judged;
    }
    let snapshot = registry.load();
    for (category, (healthy, known, all_judged)) in by {
        let since = *first_seen
            .entry(Arc::clone(category))
            .or_insert_with(Instant::now);
        let planned = snapshot.category(category).map_or(known, |s| s.planned);
        let complete = known >= planned || since.elapsed() >= FIRST_ROUND_WAIT;
        if !all_judged || !complete {
            continue;
        }
        if healthy == planned {
            tracing::info!(%category, "first health round: {healthy} of {planned} servers in rotation");
        } else {
            tracing::warn!(%category, "first health round: {healthy} of {planned} servers in rotation; the others are not up or fail their check (see the warnings above)");
        }
        summarised.insert(Arc::clone(category));
    }
}

/// The check of a bridged stdio server: a TCP connect stays one, anything else asks the bridge's
/// health path (an MCP round trip would start a child and use up a session each time).
fn bridged_kind(kind: &HealthKind) -> HealthKind {
    match kind {
        HealthKind::Tcp => HealthKind::Tcp,
        HealthKind::Http { .. } | HealthKind::Mcp => HealthKind::Http {
            path: crate::api::BRIDGE_HEALTH_PATH.into(),
            expect_status: 200,
        },
    }
}
