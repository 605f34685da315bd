//! A cheap hasher for the tables keyed by request id (`u32`): the
//! server's in-flight table and the client's pending table. Each is
//! looked up two or three times per request, and the standard library's
//! SipHash-1-3 cost about 130 instructions a lookup there (issue 23: 4
//! of them were about 660 instructions of a 64-byte round trip's 9,300).
//!
//! One folded 64x64->128 multiply of the id with a per-table random seed
//! (the mix foldhash and ahash use): every bit of the id moves the low
//! bits hashbrown picks a bucket with and the top 7 it keeps as a tag.
//! The seed comes from the standard library's `RandomState`, so a peer
//! choosing its ids cannot aim them at one bucket without seeing the
//! table's seed; and the server's table never holds more than its
//! connection's in-flight limit (plus open streams) anyway, so even
//! colliding ids cost a bounded scan.

use std::hash::{BuildHasher, Hasher};

/// Builds [`IdHasher`]s with one random seed per table.
#[derive(Clone, Debug)]
pub(crate) struct IdHash {
    seed: u64,
}

impl Default for IdHash {
    fn default() -> IdHash {
        // One SipHash per table made, for a seed no peer sees.
        IdHash {
            seed: std::collections::hash_map::RandomState::new().hash_one(0x9e37_79b9_7f4a_7c15u64),
        }
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.seed)
    }
}

/// The hasher of [`IdHash`]; meant for one `u32` (or `u64`), and still
/// correct, if slower, for anything else.
#[derive(Debug)]
pub(crate) struct IdHasher(u64);

/// An odd constant with well-spread bits (from PCG's multiplier).
const MULTIPLE: u64 = 0x5851_f42d_4c95_7f2d;

fn fold(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = fold(self.0 ^ n, MULTIPLE);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        let hash = IdHash::default();
        let hashes: Vec<u64> = (0u32..1024).map(|id| hash.hash_one(id)).collect();
        // hashbrown: low bits pick the bucket, the top 7 are the tag.
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(buckets.len() > 550, "{} buckets of 1024", buckets.len());
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn tables_are_seeded_apart() {
        assert_ne!(
            IdHash::default().hash_one(7u32),
            IdHash::default().hash_one(7u32)
        );
    }
}
