//! Memory with clients that never read: each is dropped after the write
//! timeout, every round's memory is bounded, and nothing is kept once the
//! connections are gone. Memory is measured exactly, with a counting
//! allocator for this test binary (RSS moves with the allocator's choices).
//! Prints the figures for RELIABILITY.md.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::Frame;
use pipesvc::server::{ConnectionContext, Server, ServiceError};

const ROUNDS: usize = 10;
const CLIENTS: usize = 20;
const PAYLOAD: usize = 64 * 1024;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// The counters are the whole process's: the tests here take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _turn = SERIAL.lock().await;
    let endpoint = unique_endpoint("slow-readers");
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let before = heap::live();
    let server = Server::builder(endpoint.clone())
        .write_timeout(Duration::from_millis(100))
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = TestServer::start(server);

    let (mut peaks, mut sent) = (Vec::new(), 0);
    for _ in 0..ROUNDS {
        heap::reset_peak();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(never_read(endpoint.clone(), payload.clone())))
            .collect();
        for client in clients {
            sent += guard(client).await.unwrap();
        }
        peaks.push(heap::peak());
    }
    guard(serving.stop()).await.expect("serve");
    let after = heap::live();

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

/// Floods its client with 64 KiB NOTIFYs (each waits for room), from the
/// first request on, until the client leaves.
struct Flood;

impl pipesvc::server::Handler for Flood {
    async fn call(&self, request: Bytes, ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        if &request[..] == b"flood" {
            // A fresh buffer each: the heap counts every queued NOTIFY.
            while ctx.notify(vec![3u8; PAYLOAD]).await.is_ok() {}
        }
        Ok(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_under_a_notify_flood_gets_its_pings_answered_in_bounded_memory() {
    use tokio::io::AsyncReadExt;
    const PINGS: u32 = 20;
    let _turn = SERIAL.lock().await;
    let endpoint = unique_endpoint("flooded");
    let before = heap::reset_peak();
    let server = Server::builder(endpoint.clone())
        .handler(Flood)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let (raw, _) = RawClient::handshake(&endpoint).await;
    let (mut reader, mut writer) = (raw.reader.into_inner(), raw.writer);
    use futures_util::SinkExt;
    writer.send(Frame::request(1, "flood")).await.unwrap();
    // The reader takes 64 KiB at a time, with a pause: slower than the
    // flood, never stopped. It counts the PONGs it finds in the stream.
    let reading = tokio::spawn(async move {
        let mut codec = pipesvc::protocol::FrameCodec::new(u32::MAX);
        let mut buf = bytes::BytesMut::new();
        let mut pongs = 0;
        while pongs < PINGS {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(frame) =
                tokio_util::codec::Decoder::decode(&mut codec, &mut buf).unwrap()
            {
                if frame.kind == pipesvc::protocol::Kind::Pong {
                    pongs += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pongs
    });
    for id in 0..PINGS {
        writer
            .send(Frame::new(pipesvc::protocol::Kind::Ping, 100 + id, "ping"))
            .await
            .unwrap();
    }
    let pongs = guard(reading).await.unwrap();
    let peak = heap::peak() - before;
    eprintln!(
        "pipesvc-report: slow reader under a NOTIFY flood: {pongs} of {PINGS} PINGs answered; \
         peak live heap {} MiB over the start",
        mib(peak)
    );
    assert_eq!(pongs, PINGS);
    // The default output limit (4 MiB), one frame being encoded and read,
    // and the test's own buffers, with slack.
    assert!(peak <= 16 << 20, "peak {} MiB", mib(peak));
    drop(writer);
    guard(serving.stop()).await.expect("serve");
}

/// The issue's own scenario: `ServerHandle::broadcast` in a loop while the
/// client reads slowly. Broadcasts never wait; with room in the client's
/// output budget they queue there, and the client's PINGs are still read
/// and answered at once, in the middle of the flood (before, the server
/// read nothing more until the flood was over, so every PONG came after
/// nearly all of the NOTIFYs). The budget bounds the server's heap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_during_a_broadcast_loop_gets_its_pings_answered_in_bounded_memory() {
    use futures_util::SinkExt;
    use pipesvc::protocol::Kind;
    use tokio::io::AsyncReadExt;
    const PINGS: u32 = 20;
    const BROADCASTS: usize = 200; // 12.5 MiB of 64 KiB NOTIFYs
    const BUDGET: usize = 16 << 20; // room for them all: nobody is cut off
    let _turn = SERIAL.lock().await;
    let endpoint = unique_endpoint("broadcast-loop");
    let before = heap::reset_peak();
    let server = Server::builder(endpoint.clone())
        .max_output_bytes(BUDGET)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    // Once a PING is answered, the server counts the connection: the
    // broadcasts reach it.
    raw.send(Frame::new(Kind::Ping, 1, "registered?")).await;
    assert_eq!(guard(raw.recv()).await.map(|f| f.kind), Some(Kind::Pong));
    let (mut reader, mut writer) = (raw.reader.into_inner(), raw.writer);
    // The reader takes 64 KiB at a time with a pause, slower than the
    // loop. For each PONG it notes how many NOTIFYs were still to come.
    let (first_notify, flooding) = tokio::sync::oneshot::channel();
    let reading = tokio::spawn(async move {
        let mut first_notify = Some(first_notify);
        let mut codec = pipesvc::protocol::FrameCodec::new(u32::MAX);
        let mut buf = bytes::BytesMut::new();
        let (mut notifies, mut pongs_at) = (0usize, Vec::new());
        while notifies < BROADCASTS || pongs_at.len() < PINGS as usize {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(frame) =
                tokio_util::codec::Decoder::decode(&mut codec, &mut buf).unwrap()
            {
                match frame.kind {
                    Kind::Notify => {
                        notifies += 1;
                        first_notify.take().map(|tx| tx.send(()));
                    }
                    Kind::Pong => pongs_at.push(BROADCASTS - notifies),
                    other => panic!("unexpected {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        pongs_at
    });
    let handle = serving.handle().clone();
    let broadcasting = tokio::spawn(async move {
        let mut delivered = 0;
        for _ in 0..BROADCASTS {
            // A fresh buffer each: the heap counts every queued NOTIFY.
            delivered += handle.broadcast(vec![4u8; PAYLOAD]).await;
        }
        delivered
    });
    guard(flooding).await.unwrap();
    for id in 0..PINGS {
        writer
            .send(Frame::new(Kind::Ping, 100 + id, "ping"))
            .await
            .unwrap();
    }
    let pongs_at = guard(reading).await.unwrap();
    assert_eq!(guard(broadcasting).await.unwrap(), BROADCASTS, "delivered");
    let peak = heap::peak() - before;
    let last_pong_before = *pongs_at.iter().min().unwrap();
    eprintln!(
        "pipesvc-report: slow reader during a broadcast loop: {} PONGs, the last with {} of \
         {BROADCASTS} NOTIFYs still to come; peak live heap {} MiB over the start",
        pongs_at.len(),
        last_pong_before,
        mib(peak)
    );
    assert!(
        last_pong_before >= BROADCASTS / 2,
        "PONGs waited for the flood: NOTIFYs still to come at each PONG {pongs_at:?}"
    );
    // The output budget, one frame being encoded and read, and the test's
    // own buffers, with slack.
    assert!(peak <= BUDGET + (8 << 20), "peak {} MiB", mib(peak));
    drop(writer);
    guard(serving.stop()).await.expect("serve");
}

/// Issue 21: a client that cannot keep up with the broadcasts is told why.
/// It reads nothing while the server broadcasts 64 KiB NOTIFYs until it is
/// cut off; then it reads: whole NOTIFYs (what had reached it, and what
/// the server had queued for the write), then ERROR `too slow` with id 0,
/// then the end of the stream. The backlog over `max_output_bytes` is
/// dropped, not sent, and the server's heap stays bounded by that budget.
/// (Before: the stream just ended, with no ERROR.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_for_broadcasts_is_told_why_ahead_of_the_dropped_backlog() {
    use pipesvc::protocol::{ErrorCode, ErrorPayload, Kind};
    const BUDGET: usize = 1 << 20;
    let _turn = SERIAL.lock().await;
    let endpoint = unique_endpoint("too-slow");
    let before = heap::reset_peak();
    let server = Server::builder(endpoint.clone())
        .max_output_bytes(BUDGET)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    // Once a PING is answered, the server counts the connection: the
    // broadcasts reach it.
    raw.send(Frame::new(Kind::Ping, 1, "registered?")).await;
    assert_eq!(guard(raw.recv()).await.map(|f| f.kind), Some(Kind::Pong));
    // Broadcasts never wait: each finds room in the client's budget, until
    // one does not and the client is cut off (no longer reached).
    let mut broadcasts = 0usize;
    while serving.handle().broadcast(vec![5u8; PAYLOAD]).await > 0 {
        broadcasts += 1;
        assert!(broadcasts < 100_000, "never cut off");
    }
    let mut notifies = 0usize;
    let last = loop {
        let frame = guard(raw.recv()).await.expect("an ERROR before the end");
        match frame.kind {
            Kind::Notify => {
                assert_eq!(frame.payload.len(), PAYLOAD, "whole NOTIFYs");
                notifies += 1;
            }
            _ => break frame,
        }
    };
    let peak = heap::peak() - before;
    eprintln!(
        "pipesvc-report: a client too slow for broadcasts: {broadcasts} broadcasts reached it, \
         {notifies} NOTIFYs read before the ERROR; peak live heap {} MiB over the start",
        mib(peak)
    );
    assert_eq!((last.kind, last.id), (Kind::Error, 0), "{last:?}");
    let error = ErrorPayload::decode(&last.payload).unwrap();
    assert_eq!(error.code, ErrorCode::TOO_SLOW, "{}", error.message);
    assert!(
        error.message.contains("max_output_bytes"),
        "{}",
        error.message
    );
    assert_eq!(guard(raw.recv()).await, None, "the end after the ERROR");
    assert!(notifies < broadcasts, "the backlog was dropped");
    // The output budget, the outbox, one frame in the test's reader, slack.
    assert!(peak <= BUDGET + (4 << 20), "peak {} MiB", mib(peak));
    guard(serving.stop()).await.expect("serve");
}

/// Issue 21: the client library surfaces the reason as the connection's
/// end: an app that took its notifications and stopped reading them holds
/// up its client's reading (the default policy, backpressure), the server
/// cuts it off, and once the app reads on, the client's state is `Lost`
/// with ERROR `too slow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_reports_too_slow_as_the_connections_end() {
    use pipesvc::client::ConnectionState;
    use pipesvc::error::CloseReason;
    use pipesvc::protocol::ErrorCode;
    use pipesvc::Client;
    let _turn = SERIAL.lock().await;
    let endpoint = unique_endpoint("too-slow-client");
    let server = Server::builder(endpoint.clone())
        .max_output_bytes(256 * 1024)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    let mut notifications = client.notifications().expect("the stream");
    // Answered: the server counts the connection, broadcasts reach it.
    guard(client.ping()).await.unwrap();
    let mut broadcasts = 0usize;
    while serving.handle().broadcast(vec![6u8; PAYLOAD]).await > 0 {
        broadcasts += 1;
        assert!(broadcasts < 100_000, "never cut off");
    }
    // The app reads on: what had reached the client, then the end.
    while guard(notifications.recv()).await.is_some() {}
    let mut states = client.connection_states();
    let state = guard(states.wait_for(|s| !matches!(s, ConnectionState::Connected { .. })))
        .await
        .unwrap()
        .clone();
    match state {
        ConnectionState::Lost {
            reason: CloseReason::ServerError { code, message },
            ..
        } => {
            assert_eq!(code, ErrorCode::TOO_SLOW, "{message}");
            assert!(message.contains("max_output_bytes"), "{message}");
        }
        other => panic!("the end reason is too slow, not {other:?}"),
    }
    guard(serving.stop()).await.expect("serve");
}
