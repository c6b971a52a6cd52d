//! A multiply-rotate hash for tables whose keys are all written by the configuration (server
//! addresses, category names): SipHash's defence against flooding is for tables that client
//! input fills, and here it costs ~170-300 instructions a lookup on every request. A lookup with
//! a key a client chose (a category name from the path) cannot flood such a table: at worst it
//! costs the comparisons of one probe.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default)]
pub struct KeyHasher(u64);

/// For `HashMap<K, V, FastHash>`.
pub type FastHash = BuildHasherDefault<KeyHasher>;

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // The count in the last byte, which the rest never reaches: "a" and "a\0" differ.
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            w[7] = rest.len() as u8;
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn names_that_differ_anywhere_hash_apart() {
        let h = |s: &str| FastHash::default().hash_one(s);
        // Within a word, past the first word, in the last partial word, and by trailing zero
        // bytes alone.
        assert_ne!(h("database"), h("databasf"));
        assert_ne!(h("search-engine-1"), h("search-engine-2"));
        assert_ne!(h("api"), h("apj"));
        assert_ne!(h("a"), h("a\0"));
        assert_eq!(h("api"), h("api"));
    }
}
