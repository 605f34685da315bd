//! What an idle connection costs the server, counted exactly with a
//! counting allocator for this test binary: each test runs its server on
//! its own thread (a current-thread runtime) and its clients on another,
//! and counts the server thread's heap only, so that tests running in
//! parallel do not count each other's.

mod common;

use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use common::{guard, RawClient};
use pipesvc::protocol::{Frame, Kind};
use pipesvc::testing::TestServer;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;
use heap::thread_held as held;

/// Connections opened (and used once) before the first count, so that
/// what the server makes once (its tables, the runtime's) is not counted
/// per connection.
const WARM_UP: usize = 16;

/// Connections counted.
const IDLE: usize = 64;

/// The read buffer a connection makes when bytes arrive (tokio-util's
/// `FramedRead` starts with as much): a connection that kept one while
/// it waits would hold at least this.
const READ_BUFFER: isize = 8 * 1024;

/// How a test's clients reach the server.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Socket,
    Memory,
}

/// Opens `WARM_UP` connections, then `IDLE` more, each of which sends a
/// request of `size` bytes and reads its answer; returns the bytes the
/// server's thread holds per connection of the `IDLE` (all of them open
/// and idle, every answer read).
async fn held_per_idle_connection(test: &str, transport: Transport, size: usize) -> isize {
    let endpoint = common::unique_endpoint(test);
    let server = pipesvc::Server::builder(endpoint.clone())
        .max_frame_len(4 << 20)
        .handler(
            |r: Bytes, _: pipesvc::server::ConnectionContext| async move {
                Ok::<_, pipesvc::server::ServiceError>(r)
            },
        );
    let server = match transport {
        Transport::Socket => server.bind(),
        Transport::Memory => server.build(),
    };
    let serving = TestServer::start(server.expect("a server"));
    // The clients run on a thread (and runtime) of their own, so that
    // only the server's memory is counted on this one; in memory, the
    // server makes each stream here.
    let streams = (0..WARM_UP + IDLE).map(|_| match transport {
        Transport::Socket => None,
        Transport::Memory => Some(serving.memory_stream().expect("a memory stream")),
    });
    let streams: Vec<_> = streams.collect();
    let before_streams = held();
    let (to_client, from_test) = std_mpsc::channel::<()>();
    let (to_test, mut from_client) = tokio::sync::mpsc::unbounded_channel::<()>();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut open = Vec::new();
            for (i, stream) in streams.into_iter().enumerate() {
                let (mut raw, _) = match stream {
                    Some(stream) => RawClient::handshake_over(stream).await,
                    None => RawClient::handshake(&endpoint).await,
                };
                raw.send(Frame::request(1, vec![7u8; size])).await;
                let answer = raw.recv().await.expect("an answer");
                assert_eq!((answer.kind, answer.payload.len()), (Kind::Response, size));
                open.push(raw);
                if i + 1 == WARM_UP || i + 1 == WARM_UP + IDLE {
                    to_test.send(()).unwrap();
                    if from_test.recv().is_err() {
                        return;
                    }
                }
            }
        });
    });
    guard(from_client.recv()).await.expect("the warm-up");
    // The memory streams' server ends moved to their connections' tasks.
    let before = held();
    to_client.send(()).unwrap();
    guard(from_client.recv()).await.expect("the idle connections");
    let per_connection = (held() - before) / IDLE as isize;
    eprintln!(
        "pipesvc-report: {IDLE} idle connections ({transport:?}, each used once with \
         {size} B) hold {per_connection} B each on the server (streams made: {} B)",
        before - before_streams
    );
    drop(to_client);
    client.join().unwrap();
    guard(serving.stop()).await.expect("serve");
    per_connection
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_holds_no_read_buffer() {
    let per_connection = held_per_idle_connection("idle-socket", Transport::Socket, 64).await;
    assert!(
        per_connection < READ_BUFFER,
        "{per_connection} B per idle connection: a read buffer is kept"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_holds_no_read_buffer_in_memory() {
    let per_connection = held_per_idle_connection("idle-memory", Transport::Memory, 64).await;
    assert!(
        per_connection < READ_BUFFER,
        "{per_connection} B per idle connection: a read buffer is kept"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_idle_after_a_large_request_holds_no_read_buffer() {
    let per_connection =
        held_per_idle_connection("idle-large", Transport::Socket, 256 * 1024).await;
    assert!(
        per_connection < READ_BUFFER,
        "{per_connection} B per idle connection: a read buffer is kept"
    );
}
