//! Memory with clients that never read: each is dropped after the write
//! timeout, every round's memory is bounded, and nothing is kept once the
//! connections are gone. Memory is measured exactly, with a counting
//! allocator for this test binary (RSS moves with the allocator's choices).
//! Prints the figures for RELIABILITY.md.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, Serving};
use pipesvc::protocol::Frame;
use pipesvc::server::{Context, Server, ServiceError};

const ROUNDS: usize = 10;
const CLIENTS: usize = 20;
const PAYLOAD: usize = 64 * 1024;

/// Bytes allocated and not yet freed, and the most there were at once.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only the
// counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// Sends requests and never reads, until the server drops the connection.
async fn never_read(endpoint: pipesvc::Endpoint, payload: Bytes) -> u32 {
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    let mut sent = 0u32;
    while raw
        .try_send(Frame::request(sent + 1, payload.clone()))
        .await
        .is_ok()
    {
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_bounded_and_freed_with_clients_that_never_read() {
    let endpoint = unique_endpoint("slow-readers");
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let before = LIVE.load(Ordering::Relaxed);
    let server = Server::builder(endpoint.clone())
        .write_timeout(Duration::from_millis(100))
        .handler(|r: Bytes, _: Context| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = Serving::start(server);

    let (mut peaks, mut sent) = (Vec::new(), 0);
    for _ in 0..ROUNDS {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(never_read(endpoint.clone(), payload.clone())))
            .collect();
        for client in clients {
            sent += guard(client).await.unwrap();
        }
        peaks.push(PEAK.load(Ordering::Relaxed));
    }
    serving.stop().await;
    let after = LIVE.load(Ordering::Relaxed);

    let peaks_mib: Vec<String> = peaks.iter().map(|&p| mib(p)).collect();
    eprintln!(
        "pipesvc-report: {ROUNDS} rounds of {CLIENTS} clients that never read \
         ({sent} requests of {} KiB, each client dropped by the write timeout): \
         peak live heap per round (MiB) {peaks_mib:?}; live heap before the \
         server {} MiB, after it stopped {} MiB",
        PAYLOAD / 1024,
        mib(before),
        mib(after)
    );
    // Every round is bounded by the frame limits: per stuck client at most
    // (128 queued + 64 in flight) frames, plus one encoded in each writer's
    // buffer and one being read, each counted twice for slack.
    let bound = CLIENTS * (128 + 64 + 2) * PAYLOAD * 2;
    for (round, &peak) in peaks.iter().enumerate() {
        assert!(peak <= before + bound, "round {round}: {} MiB", mib(peak));
    }
    // Nothing is kept once the connections are gone (a little slack for
    // the runtime's own caches).
    assert!(
        after <= before + 1024 * 1024,
        "{} MiB still allocated after the server stopped (was {} MiB)",
        mib(after),
        mib(before)
    );
}
