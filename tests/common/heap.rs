//! A counting global allocator, for the tests that measure memory exactly
//! (RSS moves with the allocator's own choices). A test binary that wants it
//! includes this file and installs it:
//!
//! ```ignore
//! #[path = "common/heap.rs"]
//! mod heap;
//! #[global_allocator]
//! static ALLOCATOR: heap::Counting = heap::Counting;
//! ```
//!
//! It counts twice: per thread, for a test that runs its server and clients
//! on one current-thread runtime (tests running in parallel on other
//! threads are not counted), and for the whole process, for a server whose
//! tasks run on worker threads (the tests of such a binary take turns).

#![allow(dead_code)] // each test binary uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes allocated and not yet freed in the process, and the most there
/// were at once since [`reset_peak`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// Clippy 1.96 for the Windows target asks for the `const` that is there.
#[allow(clippy::missing_const_for_thread_local)]
mod per_thread {
    use std::cell::Cell;

    // Allocations made by each thread, the bytes it holds (allocated less
    // freed by it), and the most it held since the last reset.
    thread_local!(pub static ALLOCATIONS: Cell<usize> = const { Cell::new(0) });
    thread_local!(pub static HELD: Cell<isize> = const { Cell::new(0) });
    thread_local!(pub static PEAK: Cell<isize> = const { Cell::new(0) });
    // Blocks of at least `LARGE_BLOCK` bytes allocated by each thread,
    // less those it freed.
    thread_local!(pub static LARGE: Cell<isize> = const { Cell::new(0) });
    // Bytes each thread allocated in blocks of at least `LARGE_BLOCK`
    // (a `realloc` counts its new size), however many it freed since.
    thread_local!(pub static LARGE_BYTES: Cell<usize> = const { Cell::new(0) });
}

/// The size from which [`thread_large_blocks`] counts a block: a
/// connection's read buffer is made this large.
pub const LARGE_BLOCK: usize = 8 * 1024;

/// Blocks of at least [`LARGE_BLOCK`] bytes this thread allocated, less
/// those it freed.
pub fn thread_large_blocks() -> isize {
    per_thread::LARGE.with(Cell::get)
}

/// Bytes this thread has allocated in blocks of at least [`LARGE_BLOCK`]
/// so far (a `realloc` counts the size it grew to): what growing buffers
/// cost, which [`thread_large_blocks`] does not show once they are freed.
pub fn thread_large_bytes() -> usize {
    per_thread::LARGE_BYTES.with(Cell::get)
}

/// Allocations made by this thread so far (a `realloc` counts as one).
pub fn thread_allocations() -> usize {
    per_thread::ALLOCATIONS.with(Cell::get)
}

/// Bytes this thread holds: allocated less freed by it.
pub fn thread_held() -> isize {
    per_thread::HELD.with(Cell::get)
}

/// The most this thread held since [`reset_thread_peak`].
pub fn thread_peak() -> isize {
    per_thread::PEAK.with(Cell::get)
}

/// Starts counting this thread's peak afresh; returns what it holds now.
pub fn reset_thread_peak() -> isize {
    let held = thread_held();
    per_thread::PEAK.with(|peak| peak.set(held));
    held
}

/// Bytes the process holds.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most the process held since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts counting the process's peak afresh; returns what it holds now.
pub fn reset_peak() -> usize {
    let live = live();
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// Counts `freed` bytes given back and `taken` bytes allocated, by one call.
fn count(allocated: bool, freed: usize, taken: usize) {
    LIVE.fetch_sub(freed, Ordering::Relaxed);
    let now = LIVE.fetch_add(taken, Ordering::Relaxed) + taken;
    PEAK.fetch_max(now, Ordering::Relaxed);
    // Never fails: a const-initialised Cell has no destructor to run.
    if allocated {
        let _ = per_thread::ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
    let large = (taken >= LARGE_BLOCK) as isize - (freed >= LARGE_BLOCK) as isize;
    if large != 0 {
        let _ = per_thread::LARGE.try_with(|n| n.set(n.get() + large));
    }
    if taken >= LARGE_BLOCK {
        let _ = per_thread::LARGE_BYTES.try_with(|n| n.set(n.get() + taken));
    }
    let _ = per_thread::HELD.try_with(|held| {
        let now = held.get() + taken as isize - freed as isize;
        held.set(now);
        let _ = per_thread::PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

/// The system allocator, counted.
pub struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only the
// counters are added, and only for calls that succeeded.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(true, 0, layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(false, layout.size(), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(true, layout.size(), new_size);
        }
        new
    }
}
