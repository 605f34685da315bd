//! Heap allocations per request, and memory a server keeps after a large
//! frame, counted exactly with a counting allocator for this test binary. Each test runs its server and client on its own
//! thread (a current-thread runtime) and counts that thread's allocations
//! only, so that tests running in parallel do not count each other's.

mod common;

use bytes::Bytes;
use common::{guard, RawClient};
use pipesvc::protocol::{Frame, Kind};

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;
use heap::{
    thread_allocations as allocations, thread_held as held, thread_large_bytes as large_bytes,
};

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
    let (endpoint, serving) = common::echo("allocations");
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    // Buffers, tables and request slots reach their size.
    guard(run(&mut raw, 100, 16)).await;

    const REQUESTS: u32 = 16_000;
    for batch in [16, 1] {
        let before = allocations();
        guard(run(&mut raw, REQUESTS / batch, batch)).await;
        let allocations = allocations() - before;
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
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "current_thread")]
async fn the_client_allocates_one_block_per_request() {
    let (endpoint, serving) = common::echo("allocations-client");
    let client = guard(pipesvc::Client::connect(&endpoint)).await.unwrap();
    let payload = Bytes::from_static(&[0x5A; 64]);
    for _ in 0..1000 {
        guard(client.request(payload.clone())).await.unwrap();
    }

    const REQUESTS: usize = 16_000;
    let before = allocations();
    for _ in 0..REQUESTS {
        client.request(payload.clone()).await.unwrap();
    }
    let allocations = allocations() - before;
    let per_request = allocations as f64 / REQUESTS as f64;
    eprintln!(
        "pipesvc-report: {REQUESTS} requests through Client, one at a time: {allocations} \
         allocations ({per_request:.4} per request, client and server together)"
    );
    // The server allocates nothing (above); the client, the channel that
    // hands each answer to its caller.
    assert!(
        allocations <= REQUESTS + 16,
        "{allocations} allocations for {REQUESTS} requests"
    );
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}

/// Sends `payload` through `client` `times` times, one after another,
/// each answered with its echo.
async fn echo_times(client: &pipesvc::Client, payload: &Bytes, times: usize) {
    for _ in 0..times {
        let answer = guard(client.request(payload.clone())).await.unwrap();
        assert_eq!(answer.len(), payload.len());
    }
}

/// Large requests one after another through `Client`, client and server
/// on this thread: each side reads the next frame into the allocation the
/// last one left once its payload is gone (issue 23), instead of growing a
/// buffer for it from 64 KiB and copying what has arrived at each
/// doubling: about 2 MiB of blocks made (and 1 MiB copied) per 1 MiB
/// frame on each side before.
#[tokio::test(flavor = "current_thread")]
async fn large_frames_in_a_row_are_read_into_the_last_ones_allocation() {
    const LARGE: usize = 1 << 20;
    const REQUESTS: usize = 16;
    let (endpoint, serving) = common::echo("allocations-kept");
    let client = guard(pipesvc::Client::connect(&endpoint)).await.unwrap();
    let payload = Bytes::from(vec![7u8; LARGE]);
    // Past the server's first waits, at which it gives its buffer back.
    echo_times(&client, &payload, 8).await;
    let before = large_bytes();
    echo_times(&client, &payload, REQUESTS).await;
    let per_request = (large_bytes() - before) / REQUESTS;
    eprintln!(
        "pipesvc-report: {REQUESTS} requests of 1 MiB through Client: {per_request} B \
         allocated per request in blocks of 8 KiB or more (client and server together)"
    );
    // Each side's fresh 8 KiB read buffer for what follows a large frame.
    assert!(per_request <= 64 * 1024, "{per_request} B per request");
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}

/// What large frames in a row leave kept on both sides goes once the
/// connection is idle: the server's at a quiet tick, the client's after a
/// second without a frame (else each would hold 1 MiB until the next
/// frame, however long that takes).
#[tokio::test(flavor = "current_thread")]
async fn allocations_kept_from_large_frames_go_once_idle() {
    const LARGE: usize = 1 << 20;
    let (endpoint, serving) = common::echo("allocations-kept-idle");
    let client = guard(pipesvc::Client::connect(&endpoint)).await.unwrap();
    guard(client.request(Bytes::from_static(b"warm")))
        .await
        .unwrap();
    let before = held();
    let payload = Bytes::from(vec![7u8; LARGE]);
    echo_times(&client, &payload, 8).await;
    drop(payload);
    let kept = held() - before;
    // Each side kept one allocation a frame's size: what is held falls by
    // both. (Not to nothing on Windows, where mio keeps each pipe's last
    // read and write buffers, each as large as the frames were.)
    let both = 2 * LARGE as isize;
    let idle = tokio::time::timeout(common::HANG_GUARD, async {
        while kept - (held() - before) < both {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let after = held() - before;
    eprintln!(
        "pipesvc-report: after 1 MiB requests through Client, {kept} B more held; once idle, {after} B"
    );
    assert!(kept > both, "{kept} B: nothing was kept");
    idle.expect("client and server gave back what they kept");
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_frame_does_not_leave_its_buffer_behind() {
    const LARGE: usize = 4 << 20;
    let (endpoint, serving) = common::echo("allocations-large");
    // The client runs on a thread (and runtime) of its own, so that only
    // the server's memory is counted on this one.
    let (to_client, from_test) = std::sync::mpsc::channel::<()>();
    let (to_test, mut from_client) = tokio::sync::mpsc::unbounded_channel::<()>();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (mut raw, _) = RawClient::handshake(&endpoint).await;
            for size in [64, LARGE] {
                raw.send(Frame::request(1, vec![7u8; size])).await;
                let answer = raw.recv().await.expect("an answer");
                assert_eq!(answer.payload.len(), size);
                to_test.send(()).unwrap();
                if from_test.recv().is_err() {
                    return;
                }
            }
        });
    });

    guard(from_client.recv()).await.expect("the small answer");
    let before = held();
    to_client.send(()).unwrap();
    guard(from_client.recv()).await.expect("the large answer");
    let grown = held() - before;
    eprintln!(
        "pipesvc-report: a {} MiB request and its answer left the server holding {grown} more bytes",
        LARGE >> 20
    );
    // Without giving the read buffer back, the server kept all 4 MiB.
    assert!(grown < 128 * 1024, "{grown} bytes still held");
    drop(to_client);
    client.join().unwrap();
    guard(serving.stop()).await.expect("serve");
}

/// `count`: the numbers 1 to n, as a server stream.
#[cfg(feature = "rpc")]
const COUNT: pipesvc::rpc::StreamMethod<u64, (), u64, ()> =
    pipesvc::rpc::StreamMethod::server("count", "1 to n");

/// A typed server stream, its items read with `Client::stream`: the
/// server's queue copies each item into one buffer of entries, which the
/// ITEMs are split off, so a stream costs the server an allocation per
/// ITEM at most, not one per item (it cost one per item and more: each
/// item's own `Bytes`, and each ITEM's payload grown entry by entry). The
/// client takes ITEMs whole: its channel's blocks, not an allocation per
/// item either.
#[cfg(feature = "rpc")]
#[tokio::test(flavor = "current_thread")]
async fn a_stream_allocates_per_item_frame_not_per_item() {
    use pipesvc::rpc::Service;
    let service = Service::new("allocations", "1", ()).stream_method(
        &COUNT,
        |_, n: u64, items, _, _| async move {
            for i in 1..=n {
                items.send(&i).await?;
            }
            Ok(())
        },
    );
    let endpoint = common::unique_endpoint("allocations-stream");
    let server = pipesvc::Server::builder(endpoint.clone())
        .handler(
            |r: Bytes, _: pipesvc::server::ConnectionContext| async move {
                Ok::<_, pipesvc::server::ServiceError>(r)
            },
        )
        .calls(service)
        .bind()
        .expect("bind");
    let serving = common::TestServer::start(server);
    let client = guard(pipesvc::Client::connect(&endpoint)).await.unwrap();
    let read_all = |n: u64| {
        let client = &client;
        async move {
            let mut items = client.stream(&COUNT, &n).await.unwrap();
            let mut last = 0;
            while let Some(item) = items.next().await {
                last = item.unwrap();
            }
            items.finish().await.unwrap();
            assert_eq!(last, n);
        }
    };
    // Warm: buffers, the channel, the runtime.
    guard(read_all(1000)).await;

    const ITEMS: u64 = 20_000;
    let before = allocations();
    guard(read_all(ITEMS)).await;
    let allocations = allocations() - before;
    eprintln!(
        "pipesvc-report: a stream of {ITEMS} items: {allocations} allocations \
         ({:.4} per item, server and client together)",
        allocations as f64 / ITEMS as f64
    );
    assert!(
        allocations < ITEMS as usize / 10,
        "{allocations} allocations for a stream of {ITEMS} items"
    );
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}
