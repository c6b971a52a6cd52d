//! A cheap monotonic millisecond clock for ejection deadlines and latency averages, counted from
//! the first call in the process so it fits an `AtomicU64`.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process first asked; never 0, so 0 can mean "never".
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// `now_ms()` as of `at`, for a caller that has just read the clock anyway.
pub fn ms_at(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| at);
    at.saturating_duration_since(epoch).as_millis() as u64 + 1
}

/// Seconds since the Unix epoch, for timestamps shown to people (histories, alerts).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
