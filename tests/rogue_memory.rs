//! The client's memory against a rogue server flooding 8 MiB NOTIFYs,
//! measured with a counting allocator. One test per binary, so that no
//! other test's allocations are counted.

mod common;
#[path = "common/rogue.rs"]
mod rogue;

use std::time::Duration;

use common::{guard, unique_endpoint};
use pipesvc::client::ClientOptions;
use pipesvc::{Client, Error};
use rogue::{Behaviour, Rogue};

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const MIB: usize = 1 << 20;
/// NOTIFY payload size: the protocol's default maximum frame, less header.
const NOTIFY_LEN: usize = 8 * MIB - 16;
/// Frames the rogue gets written before memory is read: 512 MiB, far more
/// than any bound, and what the old 256-frame buffer would have kept.
const FLOOD_FRAMES: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_8_mib_notifies_is_not_hoarded() {
    let rogue = Rogue::start(
        unique_endpoint("rogue-memory"),
        "rogue",
        Behaviour::NotifyFlood(NOTIFY_LEN),
    );
    let before = heap::reset_peak();
    let options = ClientOptions::new().request_timeout(Some(Duration::from_millis(200)));
    // The client never takes its notification stream, like the CLI.
    let client = guard(Client::connect_with(&rogue.endpoint, options))
        .await
        .unwrap();
    guard(rogue.notifies.reached(FLOOD_FRAMES)).await;
    let err = guard(client.request("x")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    let peak = heap::peak().saturating_sub(before);
    eprintln!(
        "peak client memory over {FLOOD_FRAMES} notifies of 8 MiB: {} MiB \
         (the rogue's one frame included)",
        peak / MIB
    );
    // The rogue's own frame (8 MiB), the client's read buffer (up to one
    // frame) and its buffer of unread notifications (4 MiB, or one frame).
    assert!(
        peak < 64 * MIB,
        "peak {} MiB: notifications are hoarded",
        peak / MIB
    );
    assert!(client.dropped_notifications() > 0);
}
