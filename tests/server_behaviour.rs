//! What a server does for well-behaved and badly-behaved clients.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{guard, spawn_requests, unique_endpoint, RawClient, TestServer};
use pipesvc::client::ClientOptions;
use pipesvc::protocol::{ErrorCode, Frame, Kind};
use pipesvc::server::{ConnectionContext, Handler, Server, ServiceCode, ServiceError};
use pipesvc::{Client, Error};
use tokio::sync::mpsc;

/// Echoes, fails on `fail`, panics on `panic`, greets on connect, and
/// forwards client notifications to the test.
struct TestService {
    notes: mpsc::UnboundedSender<Bytes>,
}

impl Handler for TestService {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        match &request[..] {
            b"fail" => Err(ServiceError::with_code(
                ServiceCode::new(1234).unwrap(),
                "asked to fail",
            )),
            b"panic" => panic!("asked to panic"),
            // Stays in flight until the server shuts down.
            b"hold" => std::future::pending().await,
            _ => Ok(request),
        }
    }

    async fn on_connect(&self, ctx: ConnectionContext) {
        ctx.notify("welcome").await.unwrap();
    }

    async fn on_notify(&self, payload: Bytes, _ctx: ConnectionContext) {
        let _ = self.notes.send(payload);
    }
}

struct Running {
    serving: TestServer,
    notes: mpsc::UnboundedReceiver<Bytes>,
}

impl Running {
    async fn stop(self) {
        guard(self.serving.stop()).await.expect("serve");
    }
}

fn start(
    test: &str,
    configure: impl FnOnce(
        pipesvc::server::ServerBuilder<TestService>,
    ) -> pipesvc::server::ServerBuilder<TestService>,
) -> Running {
    let endpoint = unique_endpoint(test);
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let builder = Server::builder(endpoint.clone()).handler(TestService { notes: notes_tx });
    // In memory: these tests are about the protocol, not the transport.
    let server = configure(builder).build().expect("build");
    Running {
        serving: TestServer::start(server),
        notes,
    }
}

#[tokio::test]
async fn requests_notifications_and_pings_work() {
    let mut server = start("basics", |b| b.name("test-server"));
    let client = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap();
    assert_eq!(client.server_name(), "test-server");
    let mut notes = client.notifications().unwrap();
    assert!(client.notifications().is_none(), "the stream is taken once");
    assert_eq!(notes.recv().await.unwrap().message().unwrap(), "welcome");

    assert_eq!(client.request("abc").await.unwrap(), "abc");
    assert_eq!(client.request(Bytes::new()).await.unwrap(), "");
    client.ping().await.unwrap();

    client.notify("from client").await.unwrap();
    assert_eq!(server.notes.recv().await.unwrap(), "from client");

    assert_eq!(server.serving.handle().broadcast("to all").await, 1);
    assert_eq!(notes.recv().await.unwrap().message().unwrap(), "to all");
    client.close().await;
    assert!(client.request("late").await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn service_errors_and_panics_answer_that_request_only() {
    let server = start("errors", |b| b);
    let client = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap();
    match client.request("fail").await {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, ErrorCode(1234));
            assert_eq!(message, "asked to fail");
        }
        other => panic!("expected a service error, got {other:?}"),
    }
    let panicked = client.request("panic").await.unwrap_err();
    assert_eq!(
        panicked.code(),
        Some(ErrorCode::HANDLER_FAILED),
        "{panicked}"
    );
    // The connection carries on.
    assert_eq!(client.request("still here").await.unwrap(), "still here");
    server.stop().await;
}

#[tokio::test]
async fn broadcast_reaches_every_client() {
    let server = start("broadcast", |b| b);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
            .await
            .unwrap();
        let mut notes = client.notifications().unwrap();
        assert_eq!(notes.recv().await.unwrap().message().unwrap(), "welcome");
        clients.push((client, notes));
    }
    assert_eq!(server.serving.handle().connection_count(), 5);
    assert_eq!(server.serving.handle().broadcast("news").await, 5);
    for (_, notes) in &mut clients {
        assert_eq!(notes.recv().await.unwrap().message().unwrap(), "news");
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_frame_gets_an_error_and_others_carry_on() {
    let server = start("oversized", |b| b.max_frame_len(1024));
    let bystander = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap();

    let (mut raw, hello) = RawClient::handshake_over(server.serving.memory_stream().unwrap()).await;
    assert_eq!(hello.max_frame_len, 1024);
    raw.send_raw(&0xFFFF_FFFFu32.to_le_bytes()).await;
    raw.expect_error(0, ErrorCode::FRAME_TOO_LARGE).await;

    // The library client refuses locally, before sending anything.
    let too_big = bystander.request(vec![0u8; 1024]).await.unwrap_err();
    assert!(
        matches!(
            too_big,
            Error::PayloadTooLarge {
                len: 1024,
                max: 1018
            }
        ),
        "{too_big}"
    );
    assert_eq!(
        bystander.request(vec![1u8; 1018]).await.unwrap().len(),
        1018
    );
    server.stop().await;
}

#[tokio::test]
async fn a_frame_limit_too_small_for_the_servers_own_frames_is_refused_at_bind() {
    let endpoint = unique_endpoint("tiny-limit");
    let builder = |max| {
        Server::builder(endpoint.clone())
            .name("pipesvc")
            .max_frame_len(max)
            .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
    };
    let err = builder(73).bind().unwrap_err().to_string();
    assert!(
        err.contains("max_frame_len: must be at least 74, not 73"),
        "{err}"
    );
    // The smallest limit that fits works end to end.
    let serving = TestServer::start(builder(74).bind().unwrap());
    let client = Client::connect(&endpoint).await.unwrap();
    assert_eq!(client.request("").await.unwrap(), "");
    guard(serving.stop()).await.expect("serve");
}

/// Ends `raw`'s stream in the middle of the frame it sent, and checks that
/// the server closed the connection without an ERROR and released it.
#[cfg(unix)]
async fn cut_off(mut raw: RawClient, handle: &pipesvc::server::ServerHandle, open: usize) {
    // A half-close: the end of the stream, while the answer can still be
    // read.
    tokio::io::AsyncWriteExt::shutdown(raw.writer.get_mut())
        .await
        .expect("half-close");
    assert_eq!(
        guard(raw.recv_skipping_notify()).await,
        None,
        "the server closes without an ERROR"
    );
    // Removed before its stream is closed: no longer counted.
    assert_eq!(handle.connection_count(), open);
}

/// Ends `raw`'s stream in the middle of the frame it sent (a pipe has no
/// half-close: the client goes away), and checks that the server released
/// the connection.
#[cfg(windows)]
async fn cut_off(raw: RawClient, handle: &pipesvc::server::ServerHandle, open: usize) {
    drop(raw);
    guard(async {
        while handle.connection_count() != open {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn protocol_violations_get_their_documented_codes() {
    let server = start("violations", |b| b);
    let memory = || server.serving.memory_stream().unwrap();

    // A REQUEST before the client's HELLO.
    let mut raw = RawClient::over(memory());
    assert_eq!(raw.recv().await.unwrap().kind, Kind::Hello);
    raw.send(Frame::request(1, "too early")).await;
    raw.expect_error(0, ErrorCode::UNEXPECTED_FRAME).await;

    // A HELLO with a version the server does not speak (0: it speaks
    // every version from 1 up, taking a later one as 2).
    let mut raw = RawClient::over(memory());
    raw.recv().await.unwrap();
    raw.send(Frame::new(Kind::Hello, 0, &b"PSVC\x00\x00"[..]))
        .await;
    raw.expect_error(0, ErrorCode::UNSUPPORTED_VERSION).await;

    // A HELLO with the wrong magic.
    let mut raw = RawClient::over(memory());
    raw.recv().await.unwrap();
    raw.send(Frame::new(Kind::Hello, 0, &b"HTTP\x01\x00"[..]))
        .await;
    raw.expect_error(0, ErrorCode::MALFORMED_FRAME).await;

    // Unknown kind, non-zero flags, a header shorter than 6 bytes.
    for (bytes, code) in [
        (
            &[6, 0, 0, 0, 99, 0, 0, 0, 0, 0][..],
            ErrorCode::UNKNOWN_KIND,
        ),
        (
            &[6, 0, 0, 0, 2, 1, 0, 0, 0, 0][..],
            ErrorCode::MALFORMED_FRAME,
        ),
        (&[2, 0, 0, 0, 2, 0][..], ErrorCode::MALFORMED_FRAME),
    ] {
        let (mut raw, _) = RawClient::handshake_over(memory()).await;
        raw.send_raw(bytes).await;
        raw.expect_error(0, code).await;
    }

    // A REQUEST or PING with id 0.
    for kind in [Kind::Request, Kind::Ping] {
        let (mut raw, _) = RawClient::handshake_over(memory()).await;
        raw.send(Frame::new(kind, 0, "zero")).await;
        raw.expect_error(0, ErrorCode::MALFORMED_FRAME).await;
    }

    // A RESPONSE or a GOODBYE sent by a client.
    for frame in [Frame::response(5, "not yours"), Frame::goodbye("bye")] {
        let (mut raw, _) = RawClient::handshake_over(memory()).await;
        raw.send(frame).await;
        raw.expect_error(0, ErrorCode::UNEXPECTED_FRAME).await;
    }

    // A frame cut off, then the client's stream ends: the server closes
    // at once, without an ERROR (PROTOCOL.md, "Closing"), and the
    // connection no longer counts.
    let open = server.serving.handle().connection_count();
    let (mut raw, _) = RawClient::handshake_over(memory()).await;
    raw.send_raw(&[100, 0, 0, 0, 2, 0, 1, 0, 0, 0, b'x', b'y'])
        .await;
    cut_off(raw, server.serving.handle(), open).await;

    // PING answered with PONG, same id and payload.
    let (mut raw, _) = RawClient::handshake_over(memory()).await;
    raw.send(Frame::new(Kind::Ping, 77, "tick")).await;
    let pong = raw.recv_skipping_notify().await.unwrap();
    assert_eq!(
        (pong.kind, pong.id, &pong.payload[..]),
        (Kind::Pong, 77, &b"tick"[..])
    );

    // The server is unharmed.
    let client = Client::from_io(memory(), Default::default()).await.unwrap();
    assert_eq!(client.request("ok").await.unwrap(), "ok");
    server.stop().await;
}

#[tokio::test]
async fn random_garbage_gets_an_error_and_leaves_others_alone() {
    // Garbage that happens to start a plausible frame leaves the server
    // waiting for the rest: the idle timeout ends those connections.
    let server = start("garbage", |b| {
        b.max_frame_len(64 * 1024)
            .idle_timeout(std::time::Duration::from_millis(100))
            .shutdown_timeout(std::time::Duration::from_millis(10))
    });
    // The bystander keeps a request in flight, so that the idle timeout
    // never applies to it however slow the machine: its HELLO and that
    // request go in one write, and are read before any timer is checked.
    let mut bystander = RawClient::over(server.serving.memory_stream().unwrap());
    assert_eq!(bystander.recv().await.unwrap().kind, Kind::Hello);
    let mut opening = bytes::BytesMut::new();
    let mut codec = pipesvc::protocol::FrameCodec::default();
    let hello = pipesvc::protocol::ClientHello::with_version(1).encode();
    tokio_util::codec::Encoder::encode(&mut codec, Frame::new(Kind::Hello, 0, hello), &mut opening)
        .unwrap();
    tokio_util::codec::Encoder::encode(&mut codec, Frame::request(1, "hold"), &mut opening)
        .unwrap();
    bystander.send_raw(&opening).await;
    // A fixed pseudo-random sequence per round (xorshift), so any failure
    // can be replayed.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..50 {
        let garbage: Vec<u8> = (0..256)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let (mut raw, _) = RawClient::handshake_over(server.serving.memory_stream().unwrap()).await;
        raw.send_raw(&garbage).await;
        // Whatever the bytes decode to, the connection ends with an ERROR
        // for the whole connection: a decoding problem, or `timed out`.
        let mut last_error = None;
        while let Some(frame) = guard(raw.recv()).await {
            if frame.kind == Kind::Error && frame.id == 0 {
                last_error = pipesvc::protocol::ErrorPayload::decode(&frame.payload);
            }
        }
        let code = last_error.expect("an ERROR before the close").code;
        assert!(code.0 <= 10, "round {round}: {code}");
        bystander.send(Frame::request(2, "fine")).await;
        let answer = guard(bystander.recv_skipping_notify()).await.unwrap();
        assert_eq!(
            (answer.kind, answer.id),
            (Kind::Response, 2),
            "round {round}"
        );
        assert_eq!(answer.payload, "fine", "round {round}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_closed_by_the_handshake_timeout() {
    let server = start("no-hello", |b| {
        b.handshake_timeout(std::time::Duration::from_millis(50))
    });
    let mut raw = RawClient::over(server.serving.memory_stream().unwrap());
    assert_eq!(raw.recv().await.unwrap().kind, Kind::Hello);
    let message = guard(raw.expect_error(0, ErrorCode::TIMED_OUT)).await;
    assert!(message.contains("no HELLO within"), "{message}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_per_connection_are_bounded() {
    const LIMIT: usize = 4;
    const SENT: u32 = 20;
    let endpoint = unique_endpoint("in-flight");
    // Each call holds a permit of `gate` until the test releases one; the
    // handler records how many calls ran at once.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = {
        let (gate, running, peak) = (gate.clone(), running.clone(), peak.clone());
        move |request: Bytes, _ctx: ConnectionContext| {
            let (gate, running, peak) = (gate.clone(), running.clone(), peak.clone());
            let started_tx = started_tx.clone();
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let _ = started_tx.send(());
                gate.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ServiceError>(request)
            }
        }
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .max_in_flight(LIMIT)
            .handler(handler)
            .bind()
            .unwrap(),
    );

    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    for id in 1..=SENT {
        raw.send(Frame::request(id, format!("r{id}"))).await;
    }
    // LIMIT calls start and block; only releasing one lets another start.
    for _ in 0..LIMIT {
        guard(started.recv()).await.unwrap();
    }
    assert_eq!(running.load(Ordering::SeqCst), LIMIT);
    for _ in LIMIT as u32..SENT {
        gate.add_permits(1);
        guard(started.recv()).await.unwrap();
    }
    gate.add_permits(LIMIT);
    let mut answered = 0;
    while answered < SENT {
        let frame = guard(raw.recv()).await.unwrap();
        assert_eq!(frame.kind, Kind::Response);
        answered += 1;
    }
    assert_eq!(peak.load(Ordering::SeqCst), LIMIT);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn a_silent_client_is_closed_by_the_idle_timeout() {
    let server = start("idle", |b| {
        b.idle_timeout(std::time::Duration::from_millis(50))
    });
    let (mut raw, _) = RawClient::handshake_over(server.serving.memory_stream().unwrap()).await;
    let message = guard(raw.expect_error(0, ErrorCode::TIMED_OUT)).await;
    assert!(message.contains("no frame for"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn traffic_resets_the_idle_timer() {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
    let server = start("idle-traffic", |b| b.idle_timeout(TIMEOUT));
    let (mut raw, _) = RawClient::handshake_over(server.serving.memory_stream().unwrap()).await;
    // PINGs a tenth of the timeout apart for twice the timeout: each is
    // read long before the timer could fire, so the connection stays open.
    // Were the timer not reset by traffic, it would close one timeout
    // after the handshake. (Only a stall of nine tenths of the timeout
    // between two reads could close it.)
    let started = std::time::Instant::now();
    let mut id = 0;
    while started.elapsed() < TIMEOUT * 2 {
        tokio::time::sleep(TIMEOUT / 10).await;
        id += 1;
        let _ = raw.try_send(Frame::new(Kind::Ping, id, "")).await;
        let answer = guard(raw.recv_skipping_notify()).await;
        assert_eq!(
            answer.map(|f| (f.kind, f.id)),
            Some((Kind::Pong, id)),
            "after {:?} of traffic",
            started.elapsed()
        );
    }
    // Quiet from here on: the timer closes it.
    guard(raw.expect_error(0, ErrorCode::TIMED_OUT)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    let server = start("no-reader", |b| {
        b.write_timeout(std::time::Duration::from_millis(100))
    });
    let bystander = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap();
    let (mut raw, _) = RawClient::handshake_over(server.serving.memory_stream().unwrap()).await;
    // Send requests and never read an answer. Once the answers fill the
    // pipe, the server's writer stalls; past the write timeout the server
    // drops the client, and only that makes a send here fail (it would hang
    // if the server waited on: the in-flight limit stops it reading).
    let mut sent = 0u32;
    while guard(raw.try_send(Frame::request(sent + 1, vec![0u8; 1 << 20])))
        .await
        .is_ok()
    {
        sent += 1;
    }
    assert!(sent > 0);
    assert_eq!(bystander.request("fine").await.unwrap(), "fine");
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_request_id_in_flight_is_refused() {
    // A handler that holds requests until told, so the first stays in flight.
    let endpoint = unique_endpoint("duplicate");
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let handler = {
        let (release, started) = (release.clone(), started.clone());
        move |request: Bytes, _ctx: ConnectionContext| {
            let (release, started, started_tx) =
                (release.clone(), started.clone(), started_tx.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = started_tx.send(());
                release.notified().await;
                Ok::<_, ServiceError>(request)
            }
        }
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(handler)
            .bind()
            .unwrap(),
    );

    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::request(9, "first")).await;
    started_rx.recv().await.unwrap();
    raw.send(Frame::request(9, "again")).await;
    raw.expect_error(0, ErrorCode::DUPLICATE_ID).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        1,
        "the duplicate never reached the handler"
    );

    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn a_client_over_the_connection_limit_is_told_overloaded() {
    let server = start("limit", |b| b.max_connections(1));
    let first = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap();
    let refused = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::OVERLOADED), "{refused}");
    assert_eq!(first.request("fine").await.unwrap(), "fine");
    server.stop().await;
}

#[tokio::test]
async fn pending_requests_fail_at_once_when_the_connection_drops() {
    let endpoint = unique_endpoint("drop");
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let handler = move |_request: Bytes, _ctx: ConnectionContext| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
            Ok::<_, ServiceError>(Bytes::new())
        }
    };
    let server = Server::builder(endpoint.clone())
        .handler(handler)
        .bind()
        .unwrap();
    let serving = tokio::spawn(server.serve());
    let client = Client::connect(&endpoint).await.unwrap();
    let requests = spawn_requests(&client, ["never answered"; 3]);
    for _ in 0..3 {
        started_rx.recv().await.unwrap();
    }
    // Kill the server outright: no GOODBYE, no answers.
    serving.abort();
    for request in requests {
        let err = guard(request).await.unwrap().unwrap_err();
        assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    }
    assert!(client.is_closed());
    assert!(matches!(
        client.request("after").await,
        Err(Error::ConnectionClosed(_))
    ));
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_the_endpoint_in_the_error() {
    let endpoint = unique_endpoint("nobody");
    let options = ClientOptions::new().connect_timeout(std::time::Duration::from_millis(50));
    let err = Client::connect_with(&endpoint, options).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{text}");
    assert!(text.contains(&endpoint.to_string()), "{text}");
    // The OS error is the source, not repeated in the message.
    let cause = std::error::Error::source(&err)
        .expect("a cause")
        .to_string();
    assert!(cause.contains("no server"), "{cause}");
    assert!(!text.contains(&cause), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_client_works_on_a_current_thread_runtime() {
    let server = start("current-thread", |b| b);
    let client = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
        .await
        .unwrap();
    let answers = futures_util::future::join_all((0..50).map(|i| {
        let client = client.clone();
        async move { client.request(format!("n{i}")).await.unwrap() }
    }))
    .await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &format!("n{i}"));
    }
    client.close().await;
    server.stop().await;
}

#[test]
fn a_current_thread_client_talks_to_a_server_in_another_runtime() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(async { start("other-runtime", |b| b) });
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let client = Client::from_io(server.serving.memory_stream().unwrap(), Default::default())
            .await
            .unwrap();
        assert_eq!(client.request("across").await.unwrap(), "across");
        client.close().await;
    });
    server_rt.block_on(server.stop());
}
