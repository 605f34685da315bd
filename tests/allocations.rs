//! Heap allocations per request on the server's hot path, counted exactly
//! with a counting allocator for this test binary. The client is a raw
//! frame client that allocates nothing per request once warmed up (static
//! payloads, buffers that are reused), so the count is the server's.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::{guard, RawClient, Serving};
use pipesvc::protocol::{Frame, Kind};

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only the
// counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sends `batches` batches of `batch` pipelined requests, reading the
/// answers after each batch.
async fn run(raw: &mut RawClient, batches: u32, batch: u32) {
    let payload = Bytes::from_static(&[0x5A; 64]);
    for _ in 0..batches {
        for id in 1..=batch {
            raw.send(Frame::request(id, payload.clone())).await;
        }
        for _ in 0..batch {
            let answer = raw.recv().await.expect("an answer");
            assert_eq!(answer.kind, Kind::Response);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_allocates_nothing_per_request_once_warm() {
    let (endpoint, serving) = Serving::echo("allocations");
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    // Buffers, tables and request slots reach their size.
    guard(run(&mut raw, 100, 16)).await;

    const REQUESTS: u32 = 16_000;
    for batch in [16, 1] {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        guard(run(&mut raw, REQUESTS / batch, batch)).await;
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let per_request = allocations as f64 / REQUESTS as f64;
        eprintln!(
            "pipesvc-report: {REQUESTS} requests in batches of {batch}: {allocations} \
             allocations ({per_request:.4} per request, server and raw client together)"
        );
        // Not one per request, nor one per batch: at most the odd one of
        // the runtime's own.
        assert!(
            allocations <= 16,
            "{allocations} allocations for {REQUESTS} requests in batches of {batch}"
        );
    }
    serving.stop().await;
}
