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
//! the runner does the last, with glibc's fastbins off so that a trim
//! reaches all of it ([`no_fastbins`]): once a second it looks at what the server's
//! clients hold, and after a burst (its peak since the last trim at least
//! [`BURST`], and now under a quarter of it) it asks glibc to give back its
//! free pages, and again at each second while what they hold keeps falling
//! and once more a second after it stopped (memory freed during or after
//! the first trim is given back too; [`Bursts`]). Nothing is done per
//! request, nor while load lasts.

use std::time::Duration;

/// Turns glibc's fastbins off for the whole process (`M_MXFAST` 0), so
/// that what `malloc_trim` is asked to give back can go back.
///
/// A small block freed past the thread's cache (seven of each size) waits
/// in a fastbin, still counted in use; when it lies between a thread
/// arena's top and the free memory below it, `malloc_trim` first merges it
/// and that memory into the top, then gives back only free blocks outside
/// the top, and no thread arena's top. Measured: `serve_memory` kept 33 to
/// 64 MiB of a 900 MiB hoard in about 1 run of 50 here (and in two CI
/// runs), in one arena's heap, with 300 KiB in use, through one more
/// trim; a C program that leaves 32 MiB that way keeps all of
/// it on glibc 2.36, and none with fastbins off (the frees that reach the
/// top then trim it as they go). What it costs: a small block freed past
/// the thread's cache goes to the arena's bins at once, merged with its
/// neighbours, instead of a list taken again as is.
pub(super) fn no_fastbins() {
    // SAFETY: mallopt only changes the allocator's tuning; 0 is in range.
    if unsafe { libc::mallopt(libc::M_MXFAST, 0) } != 1 {
        tracing::warn!("glibc refused M_MXFAST 0: freed memory may stay resident after load");
    }
}

use crate::server::ServerHandle;

/// A peak of held bytes this large makes the next quiet moment trim.
const BURST: usize = 16 * 1024 * 1024;

/// How often the server's held bytes are looked at.
const PERIOD: Duration = Duration::from_secs(1);

/// Trims glibc's arenas after each burst of what `server`'s clients made
/// it hold, until the server is gone.
pub(super) async fn return_after_bursts(server: ServerHandle) {
    let mut bursts = Bursts::default();
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let held = server.held_bytes();
        if bursts.should_trim(held) {
            // Walks the arenas under their locks: off the runtime's
            // worker threads.
            let _ = tokio::task::spawn_blocking(trim).await;
            tracing::debug!(held, "gave freed memory back to the system");
        }
    }
}

/// When to trim, from what the server's clients hold at each tick.
///
/// The tick that first sees a burst's bytes given back may come before
/// the memory behind them is freed (a connection gives its share back as
/// it is dropped, and the trim runs on another thread) or while it is
/// being freed: a trim then misses what is freed after it. So a burst is
/// trimmed at its first quiet tick and again at each tick while what is
/// held keeps falling, and once more a whole period after it stopped.
#[derive(Debug)]
enum Bursts {
    /// Load, or none: the most held since the last trim.
    Watching { peak: usize },
    /// After a burst that reached `peak`, trimmed when `last` was held.
    Settling { peak: usize, last: usize },
}

impl Default for Bursts {
    fn default() -> Bursts {
        Bursts::Watching { peak: 0 }
    }
}

impl Bursts {
    /// Whether to trim now that the clients hold `held` bytes.
    fn should_trim(&mut self, held: usize) -> bool {
        match *self {
            Bursts::Watching { peak } => {
                let peak = peak.max(held);
                let quiet = peak >= BURST && held < peak / 4;
                *self = if quiet {
                    Bursts::Settling { peak, last: held }
                } else {
                    Bursts::Watching { peak }
                };
                quiet
            }
            // Load again: its own burst is watched for.
            Bursts::Settling { peak, .. } if held >= peak / 4 => {
                *self = Bursts::Watching { peak: held };
                false
            }
            Bursts::Settling { peak, last } => {
                *self = if held < last {
                    Bursts::Settling { peak, last: held }
                } else {
                    Bursts::Watching { peak: held }
                };
                true
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    /// What `bursts` decides at each of `held`'s ticks.
    fn decisions(bursts: &mut Bursts, held: &[usize]) -> Vec<bool> {
        held.iter().map(|&held| bursts.should_trim(held)).collect()
    }

    #[test]
    fn nothing_is_trimmed_without_a_burst() {
        let mut bursts = Bursts::default();
        let held = [0, MIB, 15 * MIB, 0, 0, 3 * MIB, 0];
        assert!(!decisions(&mut bursts, &held).contains(&true));
    }

    #[test]
    fn nothing_is_trimmed_while_a_burst_lasts() {
        let mut bursts = Bursts::default();
        let held = [100 * MIB, 900 * MIB, 400 * MIB, 300 * MIB, 900 * MIB];
        assert!(!decisions(&mut bursts, &held).contains(&true));
    }

    /// The tick that sees the clients' bytes given back can come before
    /// the memory behind them is freed (a connection gives its share back
    /// as it is dropped, and the trim runs on another thread), or during:
    /// what was freed after that trim must be given back too, by a trim a
    /// whole period later. (`tests/serve_memory.rs` kept 56 MiB of a 900
    /// MiB hoard once, on a loaded machine.)
    #[test]
    fn a_burst_is_trimmed_again_a_period_after_it_ended() {
        let mut bursts = Bursts::default();
        let held = [900 * MIB, 0, 0];
        assert_eq!(decisions(&mut bursts, &held), [false, true, true]);
        // And then not again, until the next burst.
        assert!(!decisions(&mut bursts, &[0, 0, MIB, 0]).contains(&true));
        let held = [600 * MIB, 50 * MIB, 0, 0, 0];
        assert_eq!(
            decisions(&mut bursts, &held),
            [false, true, true, true, false]
        );
    }

    #[test]
    fn load_that_comes_back_while_settling_is_a_burst_of_its_own() {
        let mut bursts = Bursts::default();
        let held = [900 * MIB, 0, 800 * MIB, 100 * MIB, 100 * MIB, 100 * MIB];
        assert_eq!(
            decisions(&mut bursts, &held),
            [false, true, false, true, true, false]
        );
    }
}
