//! Verified tokens, by their bytes, until they expire: a warm request costs one hash and one
//! short lock, not a signature check. Sharded so worker threads seldom meet on one lock; bounded
//! (`auth.token_cache`): a full shard drops its expired entries, then half of the rest.

use super::Principal;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<Box<[u8]>, Arc<Principal>>>;

pub struct TokenCache {
    shards: Vec<Shard>,
    hasher: RandomState,
    per_shard: AtomicUsize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: AtomicUsize::new(capacity.div_ceil(SHARDS)),
        }
    }

    fn shard(&self, token: &[u8]) -> &Shard {
        let i = self.hasher.hash_one(token) as usize % SHARDS;
        &self.shards[i]
    }

    pub fn get(&self, token: &[u8]) -> Option<Arc<Principal>> {
        let shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(token).cloned()
    }

    pub fn insert(&self, token: &[u8], principal: Arc<Principal>) {
        let limit = self.per_shard.load(Ordering::Relaxed);
        if limit == 0 {
            return;
        }
        let mut shard = self.shard(token).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= limit {
            let now = super::now_secs();
            shard.retain(|_, p| p.expires.is_none_or(|e| e > now));
            if shard.len() >= limit {
                let mut n = 0;
                shard.retain(|_, _| {
                    n += 1;
                    n % 2 == 0
                });
            }
        }
        shard.insert(token.into(), principal);
    }

    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn resize(&self, capacity: usize) {
        self.per_shard
            .store(capacity.div_ceil(SHARDS), Ordering::Relaxed);
    }
}
