//! Giving memory back after load (glibc Linux): a service's resident
//! memory should return near where it started once the clients that made
//! it grow have left.
//!
//! The server frees what its clients made it hold as soon as they are
//! answered or gone (`server/budget.rs` counts it); glibc's allocator,
//! though, keeps freed memory in its arenas (only the top of a heap is
//! returned, and large blocks raise the size at which it maps memory of
//! its own). Measured with `tests/serve_memory.rs` (`pipesvc serve`, 900
//! MiB of CALL metadata from 32 clients, who then leave): RSS 902 MiB ten
//! seconds later as is; 945 MiB with `M_ARENA_MAX=2`; 28.7 MiB with
//! `M_MMAP_THRESHOLD` fixed at 32 KiB (at the price of a `mmap` and page
//! faults for every block of 32 KiB or more, a large frame's buffer
//! included); 10.9 MiB with `malloc_trim(0)` once after the burst. So
//! the runner does the last: once a second it looks at what the server's
//! clients hold, and after a burst (its peak since the last trim at least
//! [`BURST`], and now under a quarter of it) it asks glibc to give back its
//! free pages. Nothing is done per request, nor while load lasts.

use std::time::Duration;

use crate::server::ServerHandle;

/// A peak of held bytes this large makes the next quiet moment trim.
const BURST: usize = 16 * 1024 * 1024;

/// How often the server's held bytes are looked at.
const PERIOD: Duration = Duration::from_secs(1);

/// Trims glibc's arenas after each burst of what `server`'s clients made
/// it hold, until the server is gone.
pub(super) async fn return_after_bursts(server: ServerHandle) {
    let mut peak = 0;
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let held = server.held_bytes();
        peak = peak.max(held);
        if peak >= BURST && held < peak / 4 {
            // Walks the arenas under their locks: off the runtime's
            // worker threads.
            let _ = tokio::task::spawn_blocking(trim).await;
            tracing::debug!(peak, held, "gave freed memory back to the system");
            peak = held;
        }
    }
}

fn trim() {
    // SAFETY: malloc_trim only returns free pages to the system; it has
    // no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
