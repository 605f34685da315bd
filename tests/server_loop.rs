//! The connection's event loop under pressure: fair between reading and
//! writing, bounded in time, every request answered exactly once, frames
//! in order, departures noticed. Each test failed on the loop before
//! issue 11 (see RELIABILITY.md).

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{ErrorCode, ErrorPayload, Frame, Kind};
use pipesvc::server::{ConnectionContext, Handler, Server, ServiceCode, ServiceError};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify, Semaphore};

fn error_of(frame: &Frame) -> ErrorPayload {
    assert_eq!(frame.kind, Kind::Error, "expected ERROR, got {frame:?}");
    ErrorPayload::decode(&frame.payload).expect("ERROR payload")
}

/// Reports each call it starts, then holds it until `gate` gives a permit.
fn gated(
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<()>,
) -> impl Fn(
    Bytes,
    ConnectionContext,
) -> Pin<Box<dyn Future<Output = Result<Bytes, ServiceError>> + Send>>
       + Send
       + Sync
       + 'static {
    move |request: Bytes, _ctx: ConnectionContext| {
        let (gate, started) = (gate.clone(), started.clone());
        Box::pin(async move {
            let _ = started.send(());
            gate.acquire().await.unwrap().forget();
            Ok(request)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_status_are_answered_at_the_in_flight_limit() {
    const LIMIT: u32 = 4;
    let endpoint = unique_endpoint("ping-at-limit");
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .max_in_flight(LIMIT as usize)
            .handler(gated(gate.clone(), started_tx))
            .bind()
            .unwrap(),
    );
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    for id in 1..=LIMIT {
        raw.send(Frame::request(id, "held")).await;
    }
    for _ in 0..LIMIT {
        guard(started.recv()).await.unwrap();
    }
    raw.send(Frame::new(Kind::Ping, 100, "are you there")).await;
    raw.send(Frame::new(Kind::Status, 101, Bytes::new())).await;
    let pong = guard(raw.recv()).await.unwrap();
    assert_eq!((pong.kind, pong.id), (Kind::Pong, 100));
    let status = guard(raw.recv()).await.unwrap();
    assert_eq!((status.kind, status.id), (Kind::Response, 101));
    gate.add_permits(LIMIT as usize);
    let mut ids = HashSet::new();
    for _ in 0..LIMIT {
        let frame = guard(raw.recv()).await.unwrap();
        assert_eq!(frame.kind, Kind::Response);
        ids.insert(frame.id);
    }
    assert_eq!(ids, (1..=LIMIT).collect());
    guard(serving.stop()).await.expect("serve");
}

/// A handler that queues three NOTIFYs naming its request, then answers.
struct Chatty;

impl Handler for Chatty {
    async fn call(&self, request: Bytes, ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        for _ in 0..3 {
            ctx.notify(request.clone()).await.unwrap();
        }
        Ok(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_queued_by_a_handler_precede_its_answer() {
    const REQUESTS: u32 = 1000;
    let endpoint = unique_endpoint("notify-order");
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(Chatty)
            .bind()
            .unwrap(),
    );
    let (raw, _) = RawClient::handshake(&endpoint).await;
    let (mut reader, mut writer) = (raw.reader, raw.writer);
    let sending = tokio::spawn(async move {
        use futures_util::SinkExt;
        for id in 1..=REQUESTS {
            writer
                .feed(Frame::request(id, id.to_string()))
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        writer
    });
    let mut notes: HashMap<u32, u32> = HashMap::new();
    let mut overtaken = 0;
    for _ in 0..REQUESTS * 4 {
        let frame = guard(futures_util::StreamExt::next(&mut reader))
            .await
            .unwrap()
            .unwrap();
        let id: u32 = std::str::from_utf8(&frame.payload)
            .unwrap()
            .parse()
            .unwrap();
        match frame.kind {
            Kind::Notify => *notes.entry(id).or_default() += 1,
            Kind::Response => {
                assert_eq!(frame.id, id);
                if notes.get(&id).copied().unwrap_or(0) != 3 {
                    overtaken += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("pipesvc-report: RESPONSE before its 3 NOTIFYs in {overtaken} of {REQUESTS}");
    assert_eq!(overtaken, 0, "of {REQUESTS} requests");
    drop(guard(sending).await.unwrap());
    guard(serving.stop()).await.expect("serve");
}

/// Greets every client with a NOTIFY from `on_connect`.
struct Greeter;

impl Handler for Greeter {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        Ok(request)
    }

    async fn on_connect(&self, ctx: ConnectionContext) {
        let _ = ctx.notify("welcome").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_follows_an_error_for_the_connection() {
    let endpoint = unique_endpoint("error-0-last");
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(Greeter)
            .bind()
            .unwrap(),
    );
    let mut after = 0;
    for _ in 0..50 {
        let mut raw = RawClient::connect(&endpoint).await;
        assert_eq!(guard(raw.recv()).await.unwrap().kind, Kind::Hello);
        // HELLO and a protocol error in one write.
        let hello = Frame::new(
            Kind::Hello,
            0,
            pipesvc::protocol::ClientHello::with_version(1).encode(),
        );
        let mut bytes = bytes::BytesMut::new();
        let mut codec = pipesvc::protocol::FrameCodec::default();
        tokio_util::codec::Encoder::encode(&mut codec, hello, &mut bytes).unwrap();
        tokio_util::codec::Encoder::encode(&mut codec, Frame::request(0, "bad id"), &mut bytes)
            .unwrap();
        raw.send_raw(&bytes).await;
        let mut frames = Vec::new();
        while let Some(frame) = guard(raw.recv()).await {
            frames.push(frame);
        }
        let at = frames
            .iter()
            .position(|f| f.kind == Kind::Error && f.id == 0)
            .expect("an ERROR with id 0");
        assert_eq!(error_of(&frames[at]).code, ErrorCode::MALFORMED_FRAME);
        after += frames.len() - at - 1;
    }
    eprintln!("pipesvc-report: frames after ERROR id 0 in 50 connections: {after}");
    assert_eq!(after, 0);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_error_message_is_truncated_and_still_answers() {
    const MAX: u32 = 1 << 20;
    let endpoint = unique_endpoint("long-error");
    let handler = |request: Bytes, _ctx: ConnectionContext| async move {
        match &request[..] {
            // 2 MiB of a 3-byte character: the cut must fall between two.
            b"error" => Err(ServiceError::with_code(
                ServiceCode::new(1000).unwrap(),
                "€".repeat(700_000),
            )),
            b"big" => Ok(Bytes::from(vec![1u8; 2 << 20])),
            _ => Ok(request),
        }
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .max_frame_len(MAX)
            .handler(handler)
            .bind()
            .unwrap(),
    );
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::request(1, "error")).await;
    raw.send(Frame::request(2, "big")).await;
    raw.send(Frame::request(3, "after")).await;
    let mut answers = HashMap::new();
    for _ in 0..3 {
        let frame = guard(raw.recv()).await.unwrap();
        assert!(frame.wire_len() <= MAX as usize + 4);
        assert!(
            answers.insert(frame.id, frame).is_none(),
            "one answer per id"
        );
    }
    let long = error_of(&answers[&1]);
    assert_eq!(long.code, ErrorCode(1000));
    assert!(long.message.len() > 1000 && long.message.chars().all(|c| c == '€'));
    assert_eq!(error_of(&answers[&2]).code, ErrorCode::FRAME_TOO_LARGE);
    assert_eq!(answers[&3].payload, "after");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_always_fits_the_frame_limit() {
    // 300 distinct error codes need 3000 bytes in STATUS; the frame holds
    // 1024.
    let endpoint = unique_endpoint("status-fits");
    let handler = |request: Bytes, _ctx: ConnectionContext| async move {
        let code: u16 = std::str::from_utf8(&request).unwrap().parse().unwrap();
        Err::<Bytes, _>(ServiceError::with_code(code.try_into().unwrap(), "x"))
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .max_frame_len(1024)
            .handler(handler)
            .bind()
            .unwrap(),
    );
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    for code in 1000..1300u32 {
        raw.send(Frame::request(code, code.to_string())).await;
        assert_eq!(guard(raw.recv()).await.unwrap().kind, Kind::Error);
    }
    raw.send(Frame::new(Kind::Status, 7, Bytes::new())).await;
    let status = guard(raw.recv()).await.unwrap();
    assert_eq!((status.kind, status.id), (Kind::Response, 7));
    let status = pipesvc::protocol::Status::decode(&status.payload).unwrap();
    assert!(!status.errors.is_empty() && status.errors.len() < 300);
    guard(serving.stop()).await.expect("serve");
}

/// Wakes itself and returns `Pending`, forever: a future that never
/// yields to the runtime of its own accord.
struct Spinner;

impl Future for Spinner {
    type Output = Result<Bytes, ServiceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn a_self_waking_handler_does_not_hang_a_current_thread_runtime() {
    let endpoint = unique_endpoint("spinner");
    // The server runs alone on a current-thread runtime of its own; the
    // client on another.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_endpoint = endpoint.clone();
    let server_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let handler = |request: Bytes, _ctx: ConnectionContext| async move {
                match &request[..] {
                    b"spin" => Spinner.await,
                    _ => Ok(request),
                }
            };
            let server = Server::builder(server_endpoint)
                .shutdown_timeout(Duration::from_millis(10))
                .handler(handler)
                .bind()
                .unwrap();
            let handle = server.handle();
            ready_tx.send(handle).unwrap();
            server.serve().await.unwrap();
        });
    });
    let handle = ready_rx.recv().unwrap();
    let client_runtime = tokio::runtime::Runtime::new().unwrap();
    client_runtime.block_on(async {
        let (mut raw, _) = RawClient::handshake(&endpoint).await;
        raw.send(Frame::request(1, "spin")).await;
        raw.send(Frame::new(Kind::Ping, 2, "ping")).await;
        raw.send(Frame::request(3, "echo")).await;
        let pong = guard(raw.recv()).await.unwrap();
        assert_eq!((pong.kind, pong.id), (Kind::Pong, 2));
        let echo = guard(raw.recv()).await.unwrap();
        assert_eq!(
            (echo.kind, echo.id, &echo.payload[..]),
            (Kind::Response, 3, &b"echo"[..])
        );
        // A second connection is served too.
        let (mut other, _) = RawClient::handshake(&endpoint).await;
        other.send(Frame::new(Kind::Ping, 9, "")).await;
        assert_eq!(guard(other.recv()).await.unwrap().kind, Kind::Pong);
        handle.shutdown();
        // The spinning request is cancelled at the shutdown deadline.
        let mut codes = Vec::new();
        while let Some(frame) = guard(raw.recv()).await {
            if frame.kind == Kind::Error {
                codes.push((frame.id, error_of(&frame).code));
            }
        }
        assert_eq!(codes, [(1, ErrorCode::SHUTTING_DOWN)]);
    });
    server_thread.join().unwrap();
}

/// Sets `dropped` when the future holding it is dropped.
struct DropSignal(Arc<Notify>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_a_quiet_request_is_noticed() {
    let endpoint = unique_endpoint("leave-quiet");
    let dropped = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = {
        let dropped = dropped.clone();
        move |_request: Bytes, _ctx: ConnectionContext| {
            let signal = DropSignal(dropped.clone());
            let started = started_tx.clone();
            async move {
                let _signal = signal;
                let _ = started.send(());
                std::future::pending::<()>().await;
                Ok::<Bytes, ServiceError>(Bytes::new())
            }
        }
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(handler)
            .bind()
            .unwrap(),
    );
    for round in 0..5 {
        let (mut raw, _) = RawClient::handshake(&endpoint).await;
        raw.send(Frame::request(1, "quiet")).await;
        guard(started.recv()).await.unwrap();
        assert_eq!(serving.handle().connection_count(), 1, "round {round}");
        drop(raw);
        guard(dropped.notified()).await;
        // The connection is forgotten before its requests are dropped.
        assert_eq!(serving.handle().connection_count(), 0, "round {round}");
    }
    guard(serving.stop()).await.expect("serve");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_still_gets_its_answers() {
    use tokio::io::AsyncWriteExt;
    let endpoint = unique_endpoint("half-close");
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(gated(gate.clone(), started_tx))
            .bind()
            .unwrap(),
    );
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    for id in 1..=3 {
        raw.send(Frame::request(id, format!("r{id}"))).await;
    }
    for _ in 0..3 {
        guard(started.recv()).await.unwrap();
    }
    raw.writer.get_mut().shutdown().await.unwrap();
    gate.add_permits(3);
    let mut ids = HashSet::new();
    while let Some(frame) = guard(raw.recv()).await {
        assert_eq!(frame.kind, Kind::Response);
        ids.insert(frame.id);
    }
    assert_eq!(ids, (1..=3).collect());
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_reader_is_cut_off_by_the_write_deadline() {
    // Two answers of 4 MiB. (On Windows mio takes a whole write into its
    // own buffer at once: the deadline applies from the second write.)
    const ANSWER: usize = 4 << 20;
    const BIG: usize = 2 * ANSWER;
    let endpoint = unique_endpoint("trickle");
    let handler = |_request: Bytes, _ctx: ConnectionContext| async move {
        Ok::<_, ServiceError>(vec![5u8; ANSWER].into())
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .write_timeout(Duration::from_secs(2))
            .handler(handler)
            .bind()
            .unwrap(),
    );
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::request(1, "big")).await;
    raw.send(Frame::request(2, "big")).await;
    // Up to 64 KiB every 250 ms: the server's writes make progress well
    // within the write timeout, again and again, but the whole answer
    // would take half a minute.
    let stream = raw.reader.get_mut();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let cut_off = guard(async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => total += n,
            }
            if total >= BIG {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    eprintln!(
        "pipesvc-report: trickling reader read {total} bytes of {BIG} before the server closed"
    );
    assert!(cut_off, "the trickling reader got the whole answer");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_does_not_stall_broadcasts() {
    const BROADCASTS: u32 = 300;
    let endpoint = unique_endpoint("broadcast-stuck");
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .write_timeout(Duration::from_secs(3600))
            .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
            .bind()
            .unwrap(),
    );
    let (mut stuck, _) = RawClient::handshake(&endpoint).await;
    let (mut good, _) = RawClient::handshake(&endpoint).await;
    // Both are counted once each has answered a PING.
    for client in [&mut stuck, &mut good] {
        client.send(Frame::new(Kind::Ping, 1, "")).await;
        assert_eq!(guard(client.recv()).await.unwrap().kind, Kind::Pong);
    }
    let mut delivered = Vec::new();
    for i in 0..BROADCASTS {
        let mut payload = vec![0u8; 64 * 1024];
        payload[..4].copy_from_slice(&i.to_le_bytes());
        delivered.push(guard(serving.handle().broadcast(payload)).await);
        let note = guard(good.recv()).await.unwrap();
        assert_eq!(
            (note.kind, &note.payload[..4]),
            (Kind::Notify, &i.to_le_bytes()[..])
        );
    }
    // The stuck client was cut off: it reads the NOTIFYs that had reached
    // it or were queued for the write, then (issue 21) ERROR `too slow`,
    // then the end.
    let mut got = 0;
    let mut told = None;
    while let Some(Ok(frame)) = guard(futures_util::StreamExt::next(&mut stuck.reader)).await {
        assert!(told.is_none(), "nothing after the ERROR: {frame:?}");
        match frame.kind {
            Kind::Notify => got += 1,
            _ => told = Some(frame),
        }
    }
    let told = told.expect("ERROR too slow before the end");
    let error = pipesvc::protocol::ErrorPayload::decode(&told.payload).unwrap();
    assert_eq!((told.kind, told.id), (Kind::Error, 0));
    assert_eq!(error.code, pipesvc::protocol::ErrorCode::TOO_SLOW);
    eprintln!(
        "pipesvc-report: stuck client got {got} of {BROADCASTS} broadcasts before it was cut off; \
         clients reached per broadcast: first {}, last {}",
        delivered[0],
        delivered[delivered.len() - 1]
    );
    assert!(got < BROADCASTS);
    assert_eq!(delivered[delivered.len() - 1], 1);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_buffered_at_shutdown_are_each_answered() {
    const CLIENTS: u32 = 20;
    const REQUESTS: u32 = 200;
    let endpoint = unique_endpoint("buffered-shutdown");
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .max_in_flight(4)
            .shutdown_timeout(Duration::from_secs(30))
            .handler(gated(gate.clone(), started_tx))
            .bind()
            .unwrap(),
    );
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (mut raw, _) = RawClient::handshake(&endpoint).await;
        let mut bytes = bytes::BytesMut::new();
        let mut codec = pipesvc::protocol::FrameCodec::default();
        for id in 1..=REQUESTS {
            tokio_util::codec::Encoder::encode(&mut codec, Frame::request(id, "r"), &mut bytes)
                .unwrap();
        }
        raw.send_raw(&bytes).await;
        clients.push(raw);
    }
    // Every connection has its limit of requests running: the rest wait
    // in the server's buffers (and the socket's).
    for _ in 0..CLIENTS * 4 {
        guard(started.recv()).await.unwrap();
    }
    serving.handle().shutdown();
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let mut unanswered = 0;
    for mut raw in clients {
        let mut answered = HashSet::new();
        let mut goodbye = false;
        while let Some(frame) = guard(raw.recv()).await {
            match frame.kind {
                Kind::Goodbye => goodbye = true,
                Kind::Response => assert!(answered.insert(frame.id)),
                Kind::Error => {
                    assert_eq!(error_of(&frame).code, ErrorCode::SHUTTING_DOWN);
                    assert!(answered.insert(frame.id));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(goodbye);
        unanswered += REQUESTS as usize - answered.len();
    }
    eprintln!(
        "pipesvc-report: requests written before shutdown left unanswered: {unanswered} of {}",
        CLIENTS * REQUESTS
    );
    assert_eq!(unanswered, 0);
    guard(serving.stop()).await.unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_clients_requests_get_a_deadline() {
    use tokio::io::AsyncWriteExt;
    let endpoint = unique_endpoint("half-close-deadline");
    // A request that never finishes, one that does.
    let handler = |request: Bytes, _ctx: ConnectionContext| async move {
        if &request[..] == b"never" {
            std::future::pending::<()>().await;
        }
        Ok::<_, ServiceError>(request)
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .shutdown_timeout(Duration::from_millis(100))
            .handler(handler)
            .bind()
            .unwrap(),
    );
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::request(1, "never")).await;
    raw.send(Frame::request(2, "soon")).await;
    raw.writer.get_mut().shutdown().await.unwrap();
    let mut answers = HashMap::new();
    while let Some(frame) = guard(raw.recv()).await {
        answers.insert(frame.id, frame);
    }
    assert_eq!(answers[&2].kind, Kind::Response);
    assert_eq!(error_of(&answers[&1]).code, ErrorCode::TIMED_OUT);
    assert_eq!(answers.len(), 2);
    guard(serving.stop()).await.expect("serve");
}

/// Records the message of every event logged on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(message.0);
    }
}

/// `on_connect` (when `greet_forever`) or `on_notify` work that never ends;
/// `dropped` fires when the server drops it.
struct EndlessChores {
    greet_forever: bool,
    started: mpsc::UnboundedSender<()>,
    dropped: Arc<Notify>,
}

impl EndlessChores {
    async fn forever(&self) {
        let _signal = DropSignal(self.dropped.clone());
        let _ = self.started.send(());
        std::future::pending::<()>().await;
    }
}

impl Handler for EndlessChores {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        Ok(request)
    }

    async fn on_connect(&self, _ctx: ConnectionContext) {
        if self.greet_forever {
            self.forever().await;
        }
    }

    async fn on_notify(&self, _payload: Bytes, _ctx: ConnectionContext) {
        self.forever().await;
    }
}

/// At the shutdown deadline the connection drops its `on_connect` or
/// `on_notify` work and closes by itself, rather than waiting to be
/// aborted once the grace period after the deadline is over too (which is
/// what the server logs as "aborting connections that did not close in
/// time"). Current-thread runtime: every event of the server is on this
/// thread, where the capturing subscriber is the default.
#[test]
fn chores_are_dropped_at_the_shutdown_deadline() {
    use tracing_subscriber::layer::SubscriberExt;
    for greet_forever in [true, false] {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        let _default = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let endpoint = unique_endpoint("chore-at-deadline");
            let (started_tx, mut started) = mpsc::unbounded_channel();
            let dropped = Arc::new(Notify::new());
            let handler = EndlessChores {
                greet_forever,
                started: started_tx,
                dropped: dropped.clone(),
            };
            let server = Server::builder(endpoint.clone())
                .shutdown_timeout(Duration::from_millis(50))
                .handler(handler)
                .bind()
                .unwrap();
            let serving = TestServer::start(server);
            let (mut raw, _) = RawClient::handshake(&endpoint).await;
            if !greet_forever {
                raw.send(Frame::notify("never done")).await;
            }
            guard(started.recv()).await.expect("the chore started");
            guard(serving.stop()).await.expect("serve");
            guard(dropped.notified()).await; // the chore was dropped
                                             // The client got GOODBYE, then the end of the stream.
            let goodbye = guard(raw.recv()).await.expect("GOODBYE");
            assert_eq!(goodbye.kind, Kind::Goodbye, "{goodbye:?}");
            assert!(guard(raw.recv()).await.is_none(), "the end of the stream");
        });
        let lines = captured.0.lock().unwrap().clone();
        assert!(
            !lines.iter().any(|l| l.contains("aborting connections")),
            "greet_forever {greet_forever}: the connection had to be aborted: {lines:?}"
        );
    }
}
