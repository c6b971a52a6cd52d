//! A cheap monotonic millisecond clock for ejection deadlines and latency averages, counted from
//! the first call in the process so it fits an `AtomicU64`.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process first asked; never 0, so 0 can mean "never".
pub fn now_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}
