//! What a client makes the server hold once its frames are complete:
//! requests waiting at the in-flight limit and running, with their params
//! and metadata, bounded in bytes and in time; a client that leaves is
//! noticed whatever its requests are doing; CANCEL and PING are read while
//! requests wait.
//!
//! Memory is counted exactly with a counting allocator for this test
//! binary: each test that measures runs its server and clients on one
//! current-thread runtime and counts that thread's allocations only (as
//! tests/allocations.rs does).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, on_thread, raise_nofile, unique_endpoint, RawClient, TestServer, HANG_GUARD};
use futures_util::future::BoxFuture;
use pipesvc::protocol::{CallHeader, Encoding, ErrorCode, ErrorPayload, Frame, Kind};
use pipesvc::server::{Calls, ConnectionContext, Handler, Server, ServerBuilder, ServiceError};
use pipesvc::Endpoint;
use tokio::time::Instant;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;
use heap::{reset_thread_peak as reset_peak, thread_peak as peak};

const MIB: usize = 1 << 20;

fn mib(bytes: isize) -> f64 {
    bytes as f64 / MIB as f64
}

/// The byte handler: `hold` never finishes (until dropped), anything else
/// is echoed.
struct Bytewise;

impl Handler for Bytewise {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        if request.starts_with(b"hold") {
            std::future::pending::<()>().await;
        }
        Ok(request)
    }
}

/// Typed methods by hand: `wait` never finishes (until dropped), `echo`
/// returns its params.
struct Methods;

impl Calls for Methods {
    fn encodings(&self) -> &[Encoding] {
        &[Encoding::Json]
    }

    fn description(&self) -> Bytes {
        Bytes::from_static(b"{}")
    }

    fn call(
        &self,
        method: &str,
        _encoding: Encoding,
        params: Bytes,
        _ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
        match method {
            "wait" => Box::pin(async move {
                std::future::pending::<()>().await;
                Ok(params)
            }),
            _ => Box::pin(async move { Ok(params) }),
        }
    }
}

fn server(endpoint: &Endpoint) -> ServerBuilder<Bytewise> {
    Server::builder(endpoint.clone())
        .handler(Bytewise)
        .calls(Methods)
}

/// A CALL of `method` (JSON) with `timeout_ms` (0: none), `metadata` and
/// `params`.
fn call(id: u32, method: &str, timeout_ms: u64, metadata: Vec<(String, String)>) -> Frame {
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
    let header = CallHeader::new(method, Encoding::Json)
        .with_timeout(timeout)
        .with_metadata(metadata);
    Frame::new(Kind::Call, id, header.encode_with(b"{}").unwrap())
}

fn empty(kind: Kind, id: u32) -> Frame {
    Frame::new(kind, id, Bytes::new())
}

fn error_code(frame: &Frame) -> ErrorCode {
    assert_eq!(frame.kind, Kind::Error, "expected ERROR, got {frame:?}");
    ErrorPayload::decode(&frame.payload)
        .expect("ERROR payload")
        .code
}

/// The hoard, scaled down: 8 connections each send 64 CALLs of a
/// method that never finishes, without a deadline, each carrying 1 MiB of
/// metadata (16 entries of 64 KiB).
#[tokio::test(flavor = "current_thread")]
async fn metadata_laden_calls_are_bounded_and_answered_in_time() {
    const CONNECTIONS: usize = 8;
    const CALLS: u32 = 64;
    const BUDGET: usize = 128 * MIB;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let endpoint = unique_endpoint("metadata-hoard");
    let serving = TestServer::start(
        server(&endpoint)
            .input_budget(BUDGET)
            .request_timeout(Some(TIMEOUT))
            .bind()
            .unwrap(),
    );
    let metadata: Vec<(String, String)> = (0..16)
        .map(|n| (format!("k{n}"), "m".repeat(65_535)))
        .collect();
    let before = reset_peak();
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = RawClient::connect_v2(&endpoint).await;
        let (mut reader, mut writer) = (client.reader, client.writer);
        let metadata = metadata.clone();
        tokio::spawn(async move {
            use futures_util::SinkExt;
            for id in 1..=CALLS {
                // The server may close a connection it cannot serve.
                if writer
                    .send(call(id, "wait", 0, metadata.clone()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // Kept open until the answers are read.
            std::future::pending::<()>().await;
        });
        // Each CALL's answer, or the ERROR that closed the connection.
        readers.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            let (mut codes, mut closed) = (Vec::new(), None);
            while codes.len() < CALLS as usize {
                match reader.next().await {
                    Some(Ok(frame)) if frame.kind == Kind::Notify => {}
                    Some(Ok(frame)) if frame.id == 0 => closed = Some(error_code(&frame)),
                    Some(Ok(frame)) => codes.push(error_code(&frame)),
                    _ => break,
                }
            }
            (codes, closed)
        }));
    }
    let answered = tokio::time::timeout(HANG_GUARD, async {
        let mut all = Vec::new();
        for reader in readers {
            all.push(reader.await.unwrap());
        }
        all
    })
    .await;
    let held = peak() - before;
    let took = started.elapsed();
    let outcomes = answered.unwrap_or_default();
    let codes: Vec<ErrorCode> = outcomes.iter().flat_map(|(c, _)| c.clone()).collect();
    let count = |code| codes.iter().filter(|&&c| c == code).count();
    let closed = outcomes
        .iter()
        .filter(|(_, closed)| closed.is_some())
        .count();
    eprintln!(
        "pipesvc-report: {CONNECTIONS} connections x {CALLS} CALLs with 1 MiB of metadata, \
         no deadline (budget {} MiB, request timeout {TIMEOUT:?}): peak heap {:.1} MiB above \
         the start; {} answered in {took:.2?} ({} overloaded, {} timed out), {closed} \
         connections closed `overloaded`",
        BUDGET / MIB,
        mib(held),
        codes.len(),
        count(ErrorCode::OVERLOADED),
        count(ErrorCode::TIMED_OUT),
    );
    assert_eq!(outcomes.len(), CONNECTIONS, "the hang guard expired");
    // Every CALL is answered (refused or timed out), unless its connection
    // was closed because a frame it was sending did not fit the budget.
    for (codes, closed) in &outcomes {
        assert!(codes.len() == CALLS as usize || *closed == Some(ErrorCode::OVERLOADED));
        assert!(
            codes
                .iter()
                .all(|&c| c == ErrorCode::OVERLOADED || c == ErrorCode::TIMED_OUT),
            "{codes:?}"
        );
    }
    assert!(
        count(ErrorCode::TIMED_OUT) > 0,
        "the request timeout stopped none"
    );
    // The budget, twice over for the buffers of frames being received and
    // written at that moment, and the clients' own frames.
    assert!(
        held < 2 * BUDGET as isize + 64 * MIB as isize,
        "{:.1} MiB held",
        mib(held)
    );
    guard(serving.stop()).await.expect("serve");
}

/// Wedges a connection at the in-flight limit (2): two requests that never
/// finish, a third waiting for a slot, a fourth behind it; then a PING.
/// With `large`, two requests of 48 KiB that never finish: together they
/// hold more than the connection's share (64 KiB here), so the server
/// stops reading it after them (nothing more is sent: a client of named
/// pipes with a write pending would not close its handle).
async fn wedge(client: &mut RawClient, large: bool) {
    if large {
        let mut hold = b"hold".to_vec();
        hold.resize(48 * 1024, b'.');
        for id in 1..=2 {
            client.send(Frame::request(id, hold.clone())).await;
        }
        return;
    }
    for id in 1..=4 {
        client.send(Frame::request(id, "hold")).await;
    }
    client.send(Frame::new(Kind::Ping, 5, "p")).await;
}

/// 1,000 clients wedge their connections and close them. The server must
/// notice every one (and free its slot), and serve a new client.
#[tokio::test(flavor = "current_thread")]
async fn a_thousand_ghost_connections_are_noticed_and_a_new_client_is_served() {
    const GHOSTS: usize = if cfg!(windows) { 100 } else { 1000 };
    raise_nofile(2 * GHOSTS as u64 + 200);
    let endpoint = unique_endpoint("ghosts");
    let serving = TestServer::start(
        server(&endpoint)
            .max_connections(GHOSTS)
            .max_connections_per_user(GHOSTS)
            .max_in_flight(2)
            .max_input_bytes(64 * 1024)
            .bind()
            .unwrap(),
    );
    // Half wedged by count (the server reads on past the waiting requests
    // and sees the end of the stream), half by bytes (the server stops
    // reading, and must notice the client left without reading).
    guard(async {
        for n in 0..GHOSTS {
            let mut client = RawClient::connect_v2(&endpoint).await;
            wedge(&mut client, n % 2 == 1).await;
            drop(client);
        }
    })
    .await;
    let started = Instant::now();
    let handle = serving.handle().clone();
    let noticed = tokio::time::timeout(HANG_GUARD, async {
        while handle.connection_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    eprintln!(
        "pipesvc-report: {GHOSTS} ghost connections (wedged at the in-flight limit or their \
         byte share, then closed by the client): {} still counted after {:.2?}",
        handle.connection_count(),
        started.elapsed()
    );
    noticed.expect("every ghost connection was noticed (the hang guard expired)");
    // Their slots are free: a new client is served.
    let client = guard(pipesvc::Client::connect(&endpoint)).await.unwrap();
    assert_eq!(guard(client.request("alive")).await.unwrap(), "alive");
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

/// While requests wait at the in-flight limit (one slot, held; more read
/// and waiting), PING and CANCEL are read and acted on, and a waiting
/// CALL's deadline runs.
#[tokio::test(flavor = "current_thread")]
async fn while_requests_wait_ping_cancel_and_deadlines_are_acted_on() {
    let endpoint = unique_endpoint("wedged-acts");
    let serving = TestServer::start(server(&endpoint).max_in_flight(1).bind().unwrap());
    let mut client = RawClient::connect_v2(&endpoint).await;
    client.send(call(1, "wait", 0, Vec::new())).await;
    client.send(Frame::request(2, "waiting")).await;
    client.send(Frame::new(Kind::Ping, 3, "p")).await;
    let pong = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(pong, Frame::new(Kind::Pong, 3, "p"));
    // A second waiting request, whose deadline passes while it waits.
    client.send(call(4, "wait", 100, Vec::new())).await;
    let timed_out = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(
        (timed_out.id, error_code(&timed_out)),
        (4, ErrorCode::TIMED_OUT)
    );
    // CANCEL reaches the running call; the waiting REQUEST then runs.
    client.send(empty(Kind::Cancel, 1)).await;
    let cancelled = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(
        (cancelled.id, error_code(&cancelled)),
        (1, ErrorCode::CANCELLED)
    );
    let answer = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(answer, Frame::response(2, "waiting"));
    guard(serving.stop()).await.expect("serve");
}

/// Holds each request until the test gives a permit, counting those it
/// holds.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    started: Arc<tokio::sync::Semaphore>,
}

impl Handler for Gated {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        self.started.add_permits(1);
        self.gate.acquire().await.unwrap().forget();
        Ok(request)
    }
}

/// A connection that ran a burst of requests (64 at once, as many more
/// waiting for a slot) and then goes quiet gives back what the burst made
/// the server hold: request slots, the waiting queue, its reserve of the
/// budget. Only the server runs on this thread, so only its memory is
/// counted; the client runs on a thread of its own.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_gives_back_what_a_burst_made_it_hold() {
    use heap::thread_held as held;
    const BURST: u32 = 128;
    let endpoint = unique_endpoint("idle-trim");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let handler = Gated {
        gate: gate.clone(),
        started: started.clone(),
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(handler)
            .bind()
            .unwrap(),
    );
    let (to_client, from_test) = std::sync::mpsc::channel::<()>();
    let (to_test, mut from_client) = tokio::sync::mpsc::unbounded_channel::<()>();
    let target = endpoint.clone();
    let client = on_thread(move || {
        async move {
            let mut client = RawClient::connect_v2(&target).await;
            client.send(Frame::request(1, "warm")).await;
            to_test.send(()).unwrap();
            client.recv_skipping_notify().await.unwrap();
            to_test.send(()).unwrap();
            from_test.recv().unwrap();
            for id in 1..=BURST {
                client.send(Frame::request(id, vec![1u8; 1024])).await;
            }
            for _ in 1..=BURST {
                client.recv_skipping_notify().await.unwrap();
            }
            to_test.send(()).unwrap();
            // Idle, connected, until the test is done.
            let _ = from_test.recv();
        }
    });
    guard(from_client.recv()).await.unwrap();
    gate.add_permits(1);
    guard(from_client.recv()).await.unwrap();
    let before = held();
    to_client.send(()).unwrap();
    // The first 64 run at once; the rest wait for a slot.
    guard(started.acquire_many(64)).await.unwrap().forget();
    let during = held() - before;
    gate.add_permits(BURST as usize);
    guard(from_client.recv()).await.unwrap();
    let quiet = Instant::now();
    // On Windows mio keeps a pipe's last write buffer for reuse (as much
    // as one coalesced write, 64 KiB here): that is below pipesvc.
    let slack = if cfg!(windows) { 72 * 1024 } else { 1024 };
    let released = tokio::time::timeout(HANG_GUARD, async {
        while held() - before > slack {
            tokio::task::yield_now().await;
        }
    })
    .await;
    eprintln!(
        "pipesvc-report: a burst of {BURST} requests (64 running, 64 waiting): the server \
         held {} KiB more during it; {} KiB more {:.2?} after it",
        during / 1024,
        (held() - before) / 1024,
        quiet.elapsed()
    );
    released.expect("the server gave back what the burst made it hold");
    drop(to_client);
    client.join().unwrap();
    guard(serving.stop()).await.expect("serve");
}

/// Complete requests the budget has no room for are refused with their
/// own id, and the connection carries on; a NOTIFY that does not fit
/// closes it (it has no id to answer).
#[tokio::test(flavor = "current_thread")]
async fn a_request_the_budget_has_no_room_for_is_refused_and_the_connection_carries_on() {
    let endpoint = unique_endpoint("budget-refusal");
    // Room for three requests of 6 KiB (small frames: no buffer of their
    // own, so the budget sees them only once complete).
    let serving = TestServer::start(server(&endpoint).input_budget(20 * 1024).bind().unwrap());
    let mut client = RawClient::connect_v2(&endpoint).await;
    let mut hold = b"hold".to_vec();
    hold.resize(6 * 1024, b'.');
    for id in 1..=4 {
        client.send(Frame::request(id, hold.clone())).await;
    }
    let refused = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(
        (refused.id, error_code(&refused)),
        (4, ErrorCode::OVERLOADED)
    );
    let message = ErrorPayload::decode(&refused.payload).unwrap().message;
    assert!(message.contains("budget of 20480 bytes"), "{message}");
    client.send(Frame::new(Kind::Ping, 5, "p")).await;
    let pong = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(pong, Frame::new(Kind::Pong, 5, "p"));
    // Freed by a CANCEL, the room takes a request again.
    client.send(empty(Kind::Cancel, 1)).await;
    let cancelled = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(cancelled.id, 1);
    client.send(Frame::request(6, "small")).await;
    let answer = guard(client.recv_skipping_notify()).await.unwrap();
    assert_eq!(answer, Frame::response(6, "small"));
    client.send(Frame::request(7, hold)).await;
    // A NOTIFY with no room: the connection ends with `overloaded`.
    client
        .send(Frame::new(Kind::Notify, 0, vec![0u8; 3 * 1024]))
        .await;
    guard(client.expect_error(0, ErrorCode::OVERLOADED)).await;
    guard(serving.stop()).await.expect("serve");
}
