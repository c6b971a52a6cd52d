//! Token buckets for `proxy.rate_limit`, keyed by principal or client address. Sharded locks,
//! bounded: a full shard forgets the buckets that have refilled (they hold no state worth
//! keeping, else half of them), so a flood of new addresses cannot grow memory without end.

use crate::config::Rate;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;
/// Buckets held per shard (16 shards: about a million callers).
const PER_SHARD: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    Principal(Arc<str>),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<BucketKey, Bucket>>>,
    hasher: RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl RateLimiter {
    /// Takes one token; `Err(seconds)` until the next one is due (at least 1).
    pub fn take(&self, key: BucketKey, rate: &Rate, now_ms: u64) -> Result<(), u64> {
        let i = self.hasher.hash_one(&key) as usize % SHARDS;
        let mut shard = self.shards[i].lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PER_SHARD && !shard.contains_key(&key) {
            shard.retain(|_, b| refill(b, rate, now_ms) < rate.burst);
            // All still draining: forget half rather than scan a full shard for every new
            // caller (a forgotten caller starts again with a full bucket).
            if shard.len() >= PER_SHARD {
                let mut n = 0;
                shard.retain(|_, _| {
                    n += 1;
                    n % 2 == 0
                });
            }
        }
        let bucket = shard.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at_ms: now_ms,
        });
        let tokens = refill(bucket, rate, now_ms);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(((1.0 - tokens) / rate.per_second).ceil().max(1.0) as u64)
        }
    }
}

fn refill(b: &Bucket, rate: &Rate, now_ms: u64) -> f64 {
    let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
    (b.tokens + elapsed * rate.per_second).min(rate.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3.0,
            text: "2/s".into(),
        };
        let limiter = RateLimiter::default();
        let key = || BucketKey::Principal("key:a".into());
        for _ in 0..3 {
            assert_eq!(limiter.take(key(), &rate, 1000), Ok(()));
        }
        assert_eq!(limiter.take(key(), &rate, 1000), Err(1));
        // Half a second later one token has come back.
        assert_eq!(limiter.take(key(), &rate, 1500), Ok(()));
        assert!(limiter.take(key(), &rate, 1500).is_err());
        // Another caller has its own bucket.
        assert_eq!(
            limiter.take(BucketKey::Ip([127, 0, 0, 1].into()), &rate, 1500),
            Ok(())
        );
    }
}
