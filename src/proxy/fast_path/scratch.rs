//! Buffers for one exchange, taken from a per-thread stack of spares and given back when the
//! exchange ends: in steady state a request allocates nothing for its bytes, while an idle
//! keep-alive connection holds no answer buffer at all (memory follows requests in flight, not
//! connections open).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Spares kept per thread, and the largest buffer worth keeping.
const SPARES: usize = 64;
const KEEP_UP_TO: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub struct Scratch(Vec<u8>);

impl Scratch {
    /// An empty buffer with room for at least `capacity` bytes.
    pub fn take(capacity: usize) -> Self {
        let mut buf = SPARE
            .with_borrow_mut(|spares| spares.pop())
            .unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        Scratch(buf)
    }

    /// Gives the buffer back while the exchange waits (an open event stream between events),
    /// so a quiet exchange holds none; `ensure` takes one again.
    pub fn release(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }

    /// Room for at least `capacity` more bytes, from a spare when the buffer was released.
    pub fn ensure(&mut self, capacity: usize) {
        if self.0.capacity() == 0 {
            *self = Scratch::take(capacity);
        } else {
            self.0.reserve(capacity);
        }
    }
}

fn give_back(buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > KEEP_UP_TO {
        return;
    }
    // A thread being torn down has no stack to give back to: the buffer is simply freed.
    let _ = SPARE.try_with(|spares| {
        if let Ok(mut spares) = spares.try_borrow_mut() {
            if spares.len() < SPARES {
                spares.push(buf);
            }
        }
    });
}

impl Drop for Scratch {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

impl Deref for Scratch {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_big_ones_are_not_kept() {
        let mut a = Scratch::take(100);
        a.extend_from_slice(b"left over");
        let ptr = a.as_ptr();
        drop(a);
        let b = Scratch::take(10);
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the spare is reused");
        drop(b);
        let mut big = Scratch::take(KEEP_UP_TO + 1);
        big.push(1);
        let big_ptr = big.as_ptr();
        drop(big);
        let c = Scratch::take(10);
        assert_ne!(c.as_ptr(), big_ptr);
        drop(c);

        let mut d = Scratch::take(10);
        let d_ptr = d.as_ptr();
        d.release();
        assert_eq!(d.capacity(), 0, "a released buffer holds nothing");
        d.ensure(10);
        assert_eq!(d.as_ptr(), d_ptr, "and takes a spare again");
    }
}
