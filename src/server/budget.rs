//! What clients make the server hold, in bytes: one server-wide
//! [`MemoryBudget`] for all of it, and each connection's [`Share`].
//!
//! The budget covers every byte a client's frames keep alive in the server,
//! whatever the request's state:
//!
//! - an **unfinished** frame's buffer as it grows (charged by
//!   `server/input.rs`, given back when the frame is complete);
//! - a **complete** REQUEST, CALL or NOTIFY, **waiting** at the in-flight
//!   limit or **running**: its payload (or the part of it that is kept),
//!   a CALL's method and metadata copied out of the frame, until it is
//!   answered, cancelled or dropped;
//! - the **decoded** params of a typed call beyond a small allowance
//!   (`rpc`), until its handler returns.
//!
//! A connection takes its requests' bytes from the budget in chunks
//! ([`Share`]), so that small requests touch no shared counter: the byte
//! path's hot loop costs two additions per request. What a connection may
//! hold is bounded too (`max_input_bytes`): past it the server stops
//! reading that connection (its client is slowed by the kernel's buffers),
//! and a frame larger than the share is let through alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The bytes all clients' frames may hold at once, across connections.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    held: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit,
            held: AtomicUsize::new(0),
        }
    }

    /// The budget's size in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget, or nothing if fewer are left.
    pub(crate) fn try_take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&sum| sum <= self.limit)
            })
            .is_ok()
    }

    pub(crate) fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// Bytes taken from a [`MemoryBudget`], given back when dropped: what a
/// typed call's decoded params hold while its handler runs.
#[derive(Debug)]
#[cfg_attr(not(feature = "rpc"), allow(dead_code))]
pub(crate) struct Hold {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

#[cfg_attr(not(feature = "rpc"), allow(dead_code))]
impl Hold {
    /// Nothing held yet, on `budget`.
    pub(crate) fn empty(budget: Arc<MemoryBudget>) -> Hold {
        Hold { budget, bytes: 0 }
    }

    /// Holds `bytes` more, if the budget has them.
    pub(crate) fn try_add(&mut self, bytes: usize) -> bool {
        let taken = self.budget.try_take(bytes);
        if taken {
            self.bytes += bytes;
        }
        taken
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Bytes a connection takes from the budget at once, and keeps spare
/// between requests: its small requests come out of this reserve with no
/// atomic operation on the shared counter.
const CHUNK: usize = 16 * 1024;

/// One connection's part of the budget: what its requests hold (`held`),
/// within what it has taken from the server's budget (`reserved`).
#[derive(Debug)]
pub(super) struct Share {
    budget: Arc<MemoryBudget>,
    reserved: usize,
    held: usize,
    /// Past this the connection is not read (`max_input_bytes`).
    limit: usize,
}

impl Share {
    pub(super) fn new(budget: Arc<MemoryBudget>, limit: usize) -> Share {
        Share {
            budget,
            reserved: 0,
            held: 0,
            limit,
        }
    }

    /// Holds `bytes` more for a request; `false` if the server's budget
    /// has no room for them (the request is refused, `overloaded`).
    pub(super) fn try_hold(&mut self, bytes: usize) -> bool {
        let wanted = self.held.saturating_add(bytes);
        if wanted > self.reserved {
            let short = wanted - self.reserved;
            // A chunk more than needed, so that the next small requests
            // need no trip to the shared counter; failing that, exactly.
            let generous = short.saturating_add(CHUNK);
            if self.budget.try_take(generous) {
                self.reserved += generous;
            } else if self.budget.try_take(short) {
                self.reserved += short;
            } else {
                return false;
            }
        }
        self.held = wanted;
        true
    }

    /// Gives back what an answered (or dropped) request held. The reserve
    /// past one chunk goes back to the server's budget.
    pub(super) fn release(&mut self, bytes: usize) {
        debug_assert!(bytes <= self.held, "{bytes} > {}", self.held);
        self.held -= bytes.min(self.held);
        let spare = self.reserved - self.held;
        if spare > 2 * CHUNK {
            let back = spare - CHUNK;
            self.budget.give_back(back);
            self.reserved -= back;
        }
    }

    /// Gives back the whole spare reserve (the connection is idle).
    pub(super) fn trim(&mut self) {
        self.budget.give_back(self.reserved - self.held);
        self.reserved = self.held;
    }

    /// Whether the connection holds its limit: it is not read until some
    /// of it is given back.
    pub(super) fn is_full(&self) -> bool {
        self.held >= self.limit
    }

    /// The bytes the connection's requests hold.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Whether part of the server's budget sits unused in this share.
    pub(super) fn has_spare(&self) -> bool {
        self.reserved > self.held
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.budget.give_back(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_reserves_in_chunks_and_gives_back_what_it_does_not_use() {
        let budget = Arc::new(MemoryBudget::new(100 * CHUNK));
        let mut share = Share::new(budget.clone(), 10 * CHUNK);
        assert!(share.try_hold(10));
        assert_eq!(budget.held(), 10 + CHUNK, "a chunk more than asked");
        // Small requests now come out of the reserve.
        for _ in 0..100 {
            assert!(share.try_hold(100));
        }
        assert_eq!(budget.held(), 10 + CHUNK);
        for _ in 0..100 {
            share.release(100);
        }
        share.release(10);
        assert_eq!(share.held(), 0);
        assert!(!share.is_full());
        share.trim();
        assert_eq!(budget.held(), 0);
        // Large holds past the share's limit make it full.
        assert!(share.try_hold(11 * CHUNK));
        assert!(share.is_full());
        share.release(11 * CHUNK);
        assert!(budget.held() <= CHUNK, "{}", budget.held());
        drop(share);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_share_is_refused_what_the_server_has_not_got() {
        let budget = Arc::new(MemoryBudget::new(4 * CHUNK));
        let mut a = Share::new(budget.clone(), usize::MAX);
        let mut b = Share::new(budget.clone(), usize::MAX);
        assert!(a.try_hold(2 * CHUNK));
        assert_eq!(budget.held(), 3 * CHUNK);
        // The exact amount still fits when a chunk more does not.
        assert!(b.try_hold(CHUNK / 2));
        assert!(!b.try_hold(CHUNK));
        a.release(2 * CHUNK);
        a.trim();
        assert!(b.try_hold(CHUNK));
        let mut hold = Hold::empty(budget.clone());
        assert!(!hold.try_add(4 * CHUNK));
        drop((a, b));
        assert!(hold.try_add(4 * CHUNK));
        assert_eq!(hold.bytes(), 4 * CHUNK);
        drop(hold);
        assert_eq!(budget.held(), 0);
    }
}
