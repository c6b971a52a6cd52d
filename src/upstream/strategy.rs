//! Selection strategies: given the eligible backends of one category, pick one. A strategy is
//! built once per snapshot and called once per request, so `pick` allocates nothing and takes no
//! lock. Round-robin, weighted, p2c, peak-EWMA and consistent-hash picks are O(1) or O(log n);
//! least-connections scans (O(n)), as nginx's does.
//!
//! Passively ejected servers stay in the snapshot (ejection is an atomic deadline, so it takes
//! effect on the very next request without a swap); every strategy skips them, and the server a
//! retry is moving away from.

use super::backend::Backend;
use crate::config::StrategyKind;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What one pick must respect.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest {
    /// Hash of the consistent-hash header, when the category has one and the request carries it.
    pub key: Option<u64>,
    /// A server a retry is moving away from.
    pub avoid: Option<SocketAddr>,
    pub now_ms: u64,
}

impl PickRequest {
    #[inline]
    fn ok(&self, b: &Backend) -> bool {
        b.state.usable(self.now_ms) && Some(b.addr) != self.avoid
    }
}

/// The seam every strategy plugs into.
pub trait Strategy: Send + Sync + std::fmt::Debug {
    /// Index into `ready` of the backend to use, or `None` when no backend passes `req`.
    fn pick(&self, ready: &[Backend], req: &PickRequest) -> Option<usize>;
}

/// First backend from `start` (wrapping) that passes `req`.
#[inline]
fn scan_from(ready: &[Backend], start: usize, req: &PickRequest) -> Option<usize> {
    let n = ready.len();
    (0..n).map(|k| (start + k) % n).find(|&i| req.ok(&ready[i]))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        // Distinct per thread without a syscall: the address of a thread-local and the clock.
        let local = 0u8;
        let seed = &local as *const u8 as u64 ^ crate::upstream::clock::now_ms().rotate_left(32);
        seed | 1
    });
}

/// xorshift64*: a few nanoseconds, good enough to choose between servers.
#[inline]
fn random() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[inline]
fn below(n: usize) -> usize {
    (((random() >> 32) * n as u64) >> 32) as usize
}

/// Plain rotation. The cursor is shared by every snapshot of the category, so a swap (a server
/// becoming ready, say) does not send the next requests back to the first server.
#[derive(Debug)]
pub struct RoundRobin {
    cursor: Arc<AtomicUsize>,
}

impl Strategy for RoundRobin {
    fn pick(&self, ready: &[Backend], req: &PickRequest) -> Option<usize> {
        if ready.is_empty() {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % ready.len();
        scan_from(ready, start, req)
    }
}

/// Smooth weighted round-robin, nginx's algorithm: weights 5:1:1 give a a b a c a a. The whole
/// period is computed when the snapshot is built; a pick is one atomic increment and an index.
#[derive(Debug)]
pub struct Weighted {
    cursor: Arc<AtomicUsize>,
    sequence: Vec<u32>,
}

/// Longest period computed exactly with nginx's O(period x servers) loop; beyond it the period
/// is built with stride scheduling in O(period log servers), which is just as smooth but may
/// order ties differently.
const EXACT_WORK_LIMIT: u64 = 4_000_000;
/// Weights are scaled down (keeping proportions) until the period fits this.
const MAX_PERIOD: u64 = 1 << 20;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Weighted {
    fn new(ready: &[Backend], cursor: Arc<AtomicUsize>) -> Self {
        Self {
            cursor,
            sequence: smooth_sequence(
                &ready
                    .iter()
                    .map(|b| u64::from(b.weight.max(1)))
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// One period of smooth weighted round-robin over `weights` (indices into it).
pub fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let mut w: Vec<u64> = weights.iter().map(|x| x / g).collect();
    let mut total: u64 = w.iter().sum();
    if total > MAX_PERIOD {
        let scale = total.div_ceil(MAX_PERIOD);
        w.iter_mut().for_each(|x| *x = (*x / scale).max(1));
        total = w.iter().sum();
    }
    let mut sequence = Vec::with_capacity(total as usize);
    if total.saturating_mul(w.len() as u64) <= EXACT_WORK_LIMIT {
        let mut current = vec![0i64; w.len()];
        for _ in 0..total {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i] as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            sequence.push(best as u32);
        }
    } else {
        // Stride scheduling: server i's k-th turn falls at (k + 1/2) / w_i of the period.
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap: BinaryHeap<Reverse<(u128, u32)>> = w
            .iter()
            .enumerate()
            .map(|(i, &wi)| Reverse(((u128::from(total) << 20) / (2 * u128::from(wi)), i as u32)))
            .collect();
        while let Some(Reverse((at, i))) = heap.pop() {
            sequence.push(i);
            if sequence.len() as u64 == total {
                break;
            }
            let step = (u128::from(total) << 20) / u128::from(w[i as usize]);
            heap.push(Reverse((at + step, i)));
        }
    }
    sequence
}

impl Strategy for Weighted {
    fn pick(&self, ready: &[Backend], req: &PickRequest) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        // A few turns forward finds a usable server without breaking the rhythm much; past that,
        // any usable server will do.
        for k in 0..len.min(8) {
            let i = self.sequence[(start + k) % len] as usize;
            if req.ok(&ready[i]) {
                return Some(i);
            }
        }
        scan_from(ready, start % ready.len(), req)
    }
}

/// Load of a backend for comparison: in-flight requests per unit of weight, compared by cross
/// multiplication so no division or float is needed.
#[inline]
fn lighter(a: &Backend, b: &Backend) -> bool {
    u64::from(a.state.in_flight()) * u64::from(b.weight)
        < u64::from(b.state.in_flight()) * u64::from(a.weight)
}

/// Fewest in-flight requests (per unit of weight), ties broken round-robin: one pass finds the
/// lowest load and how many servers share it, a second takes the next of those in turn. O(n), as
/// nginx's least_conn; p2c is the O(1) choice for very large categories.
#[derive(Debug)]
pub struct LeastConnections {
    cursor: Arc<AtomicUsize>,
}

impl Strategy for LeastConnections {
    fn pick(&self, ready: &[Backend], req: &PickRequest) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut ties = 0usize;
        for (i, b) in ready.iter().enumerate() {
            if !req.ok(b) {
                continue;
            }
            match best {
                Some(j) if lighter(b, &ready[j]) => {
                    best = Some(i);
                    ties = 1;
                }
                Some(j) if !lighter(&ready[j], b) => ties += 1,
                Some(_) => {}
                None => {
                    best = Some(i);
                    ties = 1;
                }
            }
        }
        let first = best?;
        if ties == 1 {
            return Some(first);
        }
        let mut turn = self.cursor.fetch_add(1, Ordering::Relaxed) % ties;
        for (i, b) in ready.iter().enumerate().skip(first) {
            if req.ok(b) && !lighter(&ready[first], b) && !lighter(b, &ready[first]) {
                if turn == 0 {
                    return Some(i);
                }
                turn -= 1;
            }
        }
        Some(first)
    }
}

/// Power of two random choices (Envoy's default): of two random servers, the lighter.
#[derive(Debug)]
pub struct P2c {
    peak_ewma: bool,
}

impl P2c {
    /// Peak-EWMA cost: latency x (in-flight + 1) / weight. A server with no sample yet is
    /// charged 1 ms, so a new server gets traffic without being flooded.
    #[inline]
    fn cost(b: &Backend) -> f64 {
        let latency = b.state.latency_us().unwrap_or(1_000.0);
        latency * f64::from(b.state.in_flight() + 1) / f64::from(b.weight.max(1))
    }

    #[inline]
    fn better(&self, a: &Backend, b: &Backend) -> bool {
        if self.peak_ewma {
            Self::cost(a) <= Self::cost(b)
        } else {
            !lighter(b, a)
        }
    }
}

impl Strategy for P2c {
    fn pick(&self, ready: &[Backend], req: &PickRequest) -> Option<usize> {
        let n = ready.len();
        match n {
            0 => return None,
            1 => return req.ok(&ready[0]).then_some(0),
            _ => {}
        }
        for _ in 0..4 {
            let a = below(n);
            let mut b = below(n - 1);
            if b >= a {
                b += 1;
            }
            match (req.ok(&ready[a]), req.ok(&ready[b])) {
                (true, true) => {
                    return Some(if self.better(&ready[a], &ready[b]) {
                        a
                    } else {
                        b
                    })
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => continue,
            }
        }
        scan_from(ready, below(n), req)
    }
}

/// 64-bit FNV-1a with a final avalanche (splitmix64), for ring points and header values.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Ring points per unit of weight: enough for an even spread over 10-1000 servers.
const POINTS_PER_WEIGHT: u32 = 100;
const MAX_RING_POINTS: usize = 400_000;

/// A hash ring (ketama-style). A point's place depends only on its server's address, so a server
/// joining or leaving moves only the keys that land on its own points.
#[derive(Debug)]
pub struct ConsistentHash {
    ring: Vec<(u64, u32)>,
    /// `starts[b]`: first ring position whose hash is at or past bucket `b` (the top
    /// `INDEX_BITS` bits of a key), so a lookup is an index and a short forward scan instead of
    /// a binary search through up to 400,000 points.
    starts: Vec<u32>,
    fallback: RoundRobin,
}

const INDEX_BITS: u32 = 16;

impl ConsistentHash {
    fn new(ready: &[Backend], cursor: Arc<AtomicUsize>) -> Self {
        let total_weight: u64 = ready.iter().map(|b| u64::from(b.weight.max(1))).sum();
        let per_weight = (MAX_RING_POINTS as u64 / total_weight.max(1))
            .clamp(1, u64::from(POINTS_PER_WEIGHT)) as u32;
        let mut ring = Vec::with_capacity((total_weight * u64::from(per_weight)) as usize);
        let mut buf = [0u8; 64];
        for (i, b) in ready.iter().enumerate() {
            let addr = b.addr.to_string();
            for v in 0..b.weight.max(1) * per_weight {
                let len = {
                    use std::io::Write;
                    let mut cursor = std::io::Cursor::new(&mut buf[..]);
                    let _ = write!(cursor, "{addr}#{v}");
                    cursor.position() as usize
                };
                ring.push((hash_bytes(&buf[..len]), i as u32));
            }
        }
        ring.sort_unstable();
        let mut starts = Vec::with_capacity(1 << INDEX_BITS);
        let mut pos = 0usize;
        for bucket in 0u64..(1 << INDEX_BITS) {
            let floor = bucket << (64 - INDEX_BITS);
            while pos < ring.len() && ring[pos].0 < floor {
                pos += 1;
            }
            starts.push(pos as u32);
        }
        Self {
            ring,
            starts,
            fallback: RoundRobin { cursor },
        }
    }
}

impl Strategy for ConsistentHash {
    fn pick(&self, ready: &[Backend], req: &PickRequest) -> Option<usize> {
        let Some(key) = req.key else {
            return self.fallback.pick(ready, req);
        };
        if self.ring.is_empty() {
            return None;
        }
        let mut start = self.starts[(key >> (64 - INDEX_BITS)) as usize] as usize;
        while start < self.ring.len() && self.ring[start].0 < key {
            start += 1;
        }
        // Walk clockwise past unusable servers: their keys spill to the next server on the ring,
        // and come back when they return.
        let len = self.ring.len();
        for k in 0..len.min(ready.len() * 4 + 8) {
            let i = self.ring[(start + k) % len].1 as usize;
            if req.ok(&ready[i]) {
                return Some(i);
            }
        }
        scan_from(ready, 0, req)
    }
}

/// Per-category state a strategy keeps across snapshots.
#[derive(Debug, Default, Clone)]
pub struct StrategyMemory {
    cursor: Arc<AtomicUsize>,
}

/// Builds the strategy for one snapshot of a category's eligible backends.
pub fn build(kind: StrategyKind, ready: &[Backend], memory: &StrategyMemory) -> Box<dyn Strategy> {
    let cursor = Arc::clone(&memory.cursor);
    match kind {
        StrategyKind::RoundRobin => Box::new(RoundRobin { cursor }),
        StrategyKind::Weighted => Box::new(Weighted::new(ready, cursor)),
        StrategyKind::LeastConnections => Box::new(LeastConnections { cursor }),
        StrategyKind::P2c => Box::new(P2c { peak_ewma: false }),
        StrategyKind::PeakEwma => Box::new(P2c { peak_ewma: true }),
        StrategyKind::ConsistentHash => Box::new(ConsistentHash::new(ready, cursor)),
    }
}

#[cfg(test)]
mod tests;
