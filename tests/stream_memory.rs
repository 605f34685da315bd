//! What slow consumers of server streams make the server hold (RELIABILITY.md):
//! streams whose client reads the window and grants no more credit stop
//! their producers, and the process's heap stays within the streams'
//! windows (a queue of at most one window per stream), whatever the
//! producers would send. Alone in its binary: it counts the process's
//! heap.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{
    CallHeader, ClientHello, Encoding, Frame, FrameCodec, Kind, KindSet, DEFAULT_STREAM_WINDOW,
};
use pipesvc::rpc::{Service, StreamMethod};
use pipesvc::server::{ConnectionContext, ServiceError};
use pipesvc::transport::{self, ConnectOptions};
use pipesvc::Server;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Items of `len` bytes (a JSON string), until cancelled.
const FLOOD: StreamMethod<usize, (), String, ()> = StreamMethod::server("flood", "forever");

const STREAMS: u32 = 16;

/// Items of 1000 bytes, then of 1 byte: tiny items cost the queue more
/// heap than their bytes (a `Bytes` handle and an allocation each), which
/// the queue's limit must count too (it did not: 1-byte items held 1.1 MiB
/// of heap per stalled stream, 4.4 windows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_make_producers_wait_and_the_heap_stays_within_the_windows() {
    guard(async {
        // One after the other: the test counts the whole process's heap.
        for item in [1000, 1] {
            stalled_streams(item).await;
        }
    })
    .await
}

/// [`STREAMS`] streams of `item`-byte items whose client reads the window
/// and grants nothing: the producers stop, the heap stays within two
/// windows a stream.
async fn stalled_streams(item: usize) {
    {
        let produced = Arc::new(AtomicU64::new(0));
        let service = Service::new("flood", "0.1.0", produced.clone()).stream_method(
            &FLOOD,
            |produced, len: usize, items, _, _| async move {
                let item = "x".repeat(len);
                loop {
                    items.send(&item).await?;
                    produced.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
        let server = Server::builder(unique_endpoint("stream_memory"))
            .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
            .calls(service)
            .bind()
            .unwrap();
        let server = TestServer::start(server);
        let stream = transport::connect(server.endpoint(), &ConnectOptions::default())
            .await
            .unwrap()
            .stream;
        let mut client = RawClient::over(stream);
        *client.reader.decoder_mut() = FrameCodec::new(u32::MAX).with_version(2);
        client.recv().await.unwrap();
        let mut hello = ClientHello::with_version(2);
        hello.kinds = Some(KindSet::from_bytes(&[1, 3, 4, 5, 6, 8, 13, 14]));
        client
            .send(Frame::new(Kind::Hello, 0, hello.encode()))
            .await;
        client.recv().await.unwrap();
        let before = heap::live();
        for id in 1..=STREAMS {
            let params = item.to_string();
            let call = CallHeader::new("flood", Encoding::Json)
                .encode_with(params.as_bytes())
                .unwrap();
            client.send(Frame::new(Kind::Call, id, call)).await;
        }
        // The client reads each stream's window and grants nothing.
        let mut received = vec![0usize; STREAMS as usize + 1];
        let window = DEFAULT_STREAM_WINDOW as usize;
        while received[1..].iter().any(|&n| n < window) {
            let frame = client.recv_skipping_notify().await.unwrap();
            assert_eq!(frame.kind, Kind::Item);
            received[frame.id as usize] += frame.payload.len();
        }
        // Every producer has filled its queue and waits (a PING is
        // answered: the connection is not stuck).
        client.send(Frame::new(Kind::Ping, 100, "")).await;
        while client.recv_skipping_notify().await.unwrap().kind != Kind::Pong {}
        let stalled = produced.load(Ordering::SeqCst);
        let held = heap::live().saturating_sub(before);
        let per_stream = held / STREAMS as usize;
        eprintln!(
            "{STREAMS} stalled streams of {item}-byte items: {stalled} items produced, \
             heap +{held} bytes ({per_stream} per stream; window {window})"
        );
        // Sent: a window each; queued: at most a window each (and one item).
        let entry = item + 2 + 5;
        let most = STREAMS as u64 * (2 * window / entry + 2) as u64;
        assert!(stalled <= most, "{stalled} items produced, at most {most}");
        // The queues' items, their Bytes and the slots: under two windows a
        // stream.
        assert!(
            per_stream < 2 * window,
            "{per_stream} bytes held per stalled stream"
        );
        drop(client);
        server.stop().await.unwrap();
    }
}
