//! The client across faults: request timeouts, reconnecting after the
//! server restarts (with no request answered twice, and every waiting
//! caller sharing one reconnect), a bounded close, connection states, and
//! notification delivery (lossless by default, marked losses when asked).

mod common;
#[path = "common/rogue.rs"]
mod rogue;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, TestServer};
use futures_util::StreamExt;
use pipesvc::client::{ClientOptions, ConnectionState, Notification, NotificationPolicy};
use pipesvc::error::CloseReason;
use pipesvc::protocol::{FrameCodec, Kind};
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::transport::{Listener, ListenerOptions};
use pipesvc::{Client, Endpoint, Error};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// Echoes, except that `hold` is never answered (it reports that it started).
fn start(endpoint: &Endpoint) -> (TestServer, mpsc::UnboundedReceiver<()>) {
    let (builder, started) = service(endpoint);
    (TestServer::start(builder.bind().unwrap()), started)
}

/// [`start`], serving in-memory streams only.
fn start_in_memory(test: &str) -> (TestServer, mpsc::UnboundedReceiver<()>) {
    let (builder, started) = service(&unique_endpoint(test));
    (TestServer::start(builder.build().unwrap()), started)
}

fn service(
    endpoint: &Endpoint,
) -> (
    pipesvc::server::ServerBuilder<impl pipesvc::server::Handler>,
    mpsc::UnboundedReceiver<()>,
) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let handler = move |request: Bytes, _ctx: ConnectionContext| {
        let started_tx = started_tx.clone();
        async move {
            if request == "hold" {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
            }
            Ok::<_, ServiceError>(request)
        }
    };
    let builder = Server::builder(endpoint.clone())
        .shutdown_timeout(Duration::from_millis(10))
        .handler(handler);
    (builder, started)
}

#[tokio::test]
async fn a_request_past_its_timeout_fails_and_the_connection_carries_on() {
    let (serving, _started) = start_in_memory("request-timeout");
    let options = ClientOptions::new().request_timeout(Some(Duration::from_millis(50)));
    let client = Client::from_io(serving.memory_stream().unwrap(), options)
        .await
        .unwrap();
    let err = client.request("hold").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    assert_eq!(client.request("next").await.unwrap(), "next");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn a_reconnecting_client_outlives_a_server_restart() {
    let endpoint = unique_endpoint("reconnect");
    let (serving, mut started) = start(&endpoint);
    let options = ClientOptions::new().reconnect(true);
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    assert_eq!(client.request("before").await.unwrap(), "before");

    // A request in flight when the server goes away fails, clearly...
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.request("hold").await })
    };
    started.recv().await.unwrap();
    guard(serving.stop()).await.expect("serve");
    let err = guard(in_flight).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Server { .. } | Error::ConnectionClosed(_)),
        "{err}"
    );

    // ...and the next one, once a new server runs, gets through.
    let (serving, _started) = start(&endpoint);
    assert_eq!(client.request("after").await.unwrap(), "after");
    assert_eq!(client.reconnects(), 1);
    assert!(!client.is_closed());
    client.close().await;
    assert!(client.is_closed());
    assert!(
        client.request("closed").await.is_err(),
        "a closed client stays closed"
    );
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn without_reconnect_a_lost_connection_stays_lost() {
    let endpoint = unique_endpoint("no-reconnect");
    let (serving, _started) = start(&endpoint);
    let client = Client::connect(&endpoint).await.unwrap();
    guard(serving.stop()).await.expect("serve");
    let (serving, _started) = start(&endpoint);
    let err = client.request("x").await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    assert!(client.is_closed());
    assert_eq!(client.reconnects(), 0);
    guard(serving.stop()).await.expect("serve");
}

/// Waits until the client's connection state satisfies `wanted`.
async fn state_where(
    states: &mut tokio::sync::watch::Receiver<ConnectionState>,
    wanted: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    guard(states.wait_for(|s| wanted(s)))
        .await
        .expect("the client is alive")
        .clone()
}

#[tokio::test]
async fn a_listen_only_client_reconnects_across_a_server_restart() {
    let endpoint = unique_endpoint("listen-only");
    let (serving, _started) = start(&endpoint);
    let options = ClientOptions::new().reconnect(true);
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    let mut notes = client.notifications().unwrap();
    let mut states = client.connection_states();
    // A round trip: the server has registered the connection.
    client.ping().await.unwrap();
    assert_eq!(serving.handle().broadcast("first").await, 1);
    assert_eq!(
        guard(notes.recv()).await,
        Some(Notification::Message("first".into()))
    );

    guard(serving.stop()).await.expect("serve");
    let lost = state_where(&mut states, |s| matches!(s, ConnectionState::Lost { .. })).await;
    assert!(
        matches!(
            lost,
            ConnectionState::Lost {
                reconnecting: true,
                ..
            }
        ),
        "{lost:?}"
    );
    // No call is made: the client reconnects on its own.
    let (serving, _started) = start(&endpoint);
    state_where(&mut states, |s| {
        matches!(s, ConnectionState::Connected { reconnects: 1.. })
    })
    .await;
    // The reconnect happened on its own; this round trip only makes sure
    // the new server has registered the connection before broadcasting.
    client.ping().await.unwrap();
    assert_eq!(serving.handle().broadcast("second").await, 1);
    assert_eq!(
        guard(notes.recv()).await,
        Some(Notification::Message("second".into()))
    );
    client.close().await;
    assert_eq!(guard(notes.recv()).await, None, "the stream ends on close");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn callers_waiting_on_one_reconnect_fail_together_at_their_deadline() {
    let endpoint = unique_endpoint("outage");
    let (serving, _started) = start(&endpoint);
    let options = ClientOptions::new()
        .reconnect(true)
        .request_timeout(Some(Duration::from_secs(2)))
        // Each reconnect attempt gives up well within a caller's deadline.
        .connect_timeout(Duration::from_millis(300));
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    let mut states = client.connection_states();
    guard(serving.stop()).await.expect("serve");
    state_where(&mut states, |s| matches!(s, ConnectionState::Lost { .. })).await;

    let callers: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.request(format!("call {i}")).await })
        })
        .collect();
    for caller in callers {
        let err = guard(caller).await.unwrap().unwrap_err();
        // Not one connect error each, one after the other: the same
        // outcome for all, at the deadline.
        assert!(
            matches!(err, Error::Timeout(d, what)
                if d == Duration::from_secs(2) && what.contains("reconnect")),
            "{err}"
        );
    }
    assert!(!client.is_closed(), "it keeps trying in the background");
    client.close().await;
}

#[tokio::test]
async fn a_close_during_a_reconnect_wins() {
    let endpoint = unique_endpoint("close-while-reconnecting");
    let (serving, _started) = start(&endpoint);
    let options = ClientOptions::new().reconnect(true);
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    let mut states = client.connection_states();
    guard(serving.stop()).await.expect("serve");
    state_where(&mut states, |s| matches!(s, ConnectionState::Lost { .. })).await;

    // A server that accepts the reconnect but holds its HELLO back.
    let mut listener = Listener::bind(&endpoint, &ListenerOptions::default()).unwrap();
    let (stream, _peer) = guard(listener.accept()).await.unwrap();
    // A call waits on that reconnect...
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.request("after close").await })
    };
    // ...when the client is closed; then the HELLO arrives.
    guard(client.close()).await;
    let (read, mut write) = tokio::io::split(stream);
    let _ = write.write_all(&rogue::hello("late")).await;
    let mut frames = FramedRead::new(read, FrameCodec::new(u32::MAX));
    // The client hung up: its HELLO (sent as the connection opened,
    // PROTOCOL.md revision 2.3) is all it wrote, no request.
    let mut first = guard(frames.next()).await;
    if let Some(Ok(hello)) = &first {
        if hello.kind == Kind::Hello {
            first = guard(frames.next()).await;
        }
    }
    match first {
        None | Some(Err(_)) => {}
        Some(Ok(frame)) => panic!("the closed client still used the connection: {frame:?}"),
    }
    let err = guard(call).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    assert_eq!(client.reconnects(), 0);
    assert!(client.is_closed());
    assert!(matches!(
        *client.connection_states().borrow(),
        ConnectionState::Closed
    ));
}

/// A client of `serving` over an in-memory stream (`close_timeout`, no
/// request timeout), and `payload` asked of it from a task of its own.
async fn asking(
    serving: &TestServer,
    close_timeout: Duration,
    payload: &'static str,
) -> (Client, tokio::task::JoinHandle<Result<Bytes, Error>>) {
    let options = ClientOptions::new()
        .close_timeout(close_timeout)
        .request_timeout(None);
    let client = Client::from_io(serving.memory_stream().unwrap(), options)
        .await
        .unwrap();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.request(payload).await })
    };
    (client, in_flight)
}

#[tokio::test]
async fn close_with_a_long_request_in_flight_returns_within_its_bound() {
    let (serving, mut started) = start_in_memory("bounded-close");
    let (client, in_flight) = asking(&serving, Duration::from_millis(100), "hold").await;
    started.recv().await.unwrap();
    guard(client.close()).await;
    let err = guard(in_flight).await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::ConnectionClosed(CloseReason::ClientClosed)),
        "{err}"
    );
    guard(serving.stop()).await.expect("serve");
}

/// A close waits for the answer of a request in flight and returns as
/// soon as it has come: the answer that empties the table wakes the close
/// (whose own bound, an hour here, is not what ends it).
#[tokio::test]
async fn close_returns_once_the_answer_in_flight_has_come() {
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = {
        let gate = gate.clone();
        move |request: Bytes, _ctx: ConnectionContext| {
            let (gate, started_tx) = (gate.clone(), started_tx.clone());
            async move {
                let _ = started_tx.send(());
                gate.notified().await;
                Ok::<_, ServiceError>(request)
            }
        }
    };
    let server = Server::builder(unique_endpoint("close-after-answer")).handler(handler);
    let serving = TestServer::start(server.build().unwrap());
    let (client, in_flight) = asking(&serving, Duration::from_secs(3600), "answer me").await;
    guard(started.recv()).await.unwrap();
    let closing = {
        let client = client.clone();
        tokio::spawn(async move { client.close().await })
    };
    // One thread: the close runs to its wait for the answer in the turn
    // that marks the client closed.
    while !client.is_closed() {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    guard(closing).await.unwrap();
    let answer = guard(in_flight).await.unwrap().expect("answered");
    assert_eq!(answer, "answer me");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_lose_none_of_a_thousand_broadcasts_by_default() {
    const CLIENTS: usize = 200;
    const BROADCASTS: usize = 1000;
    /// The readers start reading only once this many broadcasts were sent:
    /// more than a buffer of 256 holds, yet few enough (35 KB) that the
    /// stream and the server's outbox take the rest without the server
    /// waiting, so that a client which dropped on a full buffer would lose
    /// some, and one that applies backpressure loses none.
    const UNREAD: usize = 300;
    let serving = common::echo_in_memory("broadcast-lossless");
    let (sent_tx, sent) = tokio::sync::watch::channel(0usize);
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let client = serving.connect_in_memory().await.unwrap();
        let mut notes = client.notifications().unwrap();
        client.ping().await.unwrap(); // registered by the server
        let mut sent = sent.clone();
        readers.push(tokio::spawn(async move {
            sent.wait_for(|&n| n >= UNREAD).await.unwrap();
            let mut received = 0;
            while received < BROADCASTS {
                match notes.recv().await {
                    Some(Notification::Message(_)) => received += 1,
                    other => return Err(format!("after {received}: {other:?}")),
                }
            }
            drop(client);
            Ok(received)
        }));
    }
    for i in 0..BROADCASTS {
        let payload = format!("broadcast {i:04} {}", "x".repeat(100));
        assert_eq!(serving.handle().broadcast(payload).await, CLIENTS);
        sent_tx.send_replace(i + 1);
    }
    let mut total = 0;
    for reader in readers {
        total += guard(reader).await.unwrap().expect("no notification lost");
    }
    eprintln!("{total} of {} notifications received", CLIENTS * BROADCASTS);
    assert_eq!(total, CLIENTS * BROADCASTS);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn the_dropping_policy_marks_what_it_lost() {
    let serving = common::echo_in_memory("broadcast-lagged");
    let options = ClientOptions::new()
        .notification_policy(NotificationPolicy::DropNewest)
        .notification_buffer(4);
    let client = Client::from_io(serving.memory_stream().unwrap(), options)
        .await
        .unwrap();
    let mut notes = client.notifications().unwrap();
    client.ping().await.unwrap(); // registered by the server
    for i in 0..100 {
        assert_eq!(serving.handle().broadcast(format!("n{i}")).await, 1);
    }
    // The answer comes behind the notifications: all 100 have been routed.
    assert_eq!(client.request("sync").await.unwrap(), "sync");
    client.close().await;
    let (mut messages, mut lagged) = (0, 0);
    while let Some(item) = guard(notes.recv()).await {
        match item {
            Notification::Message(_) => messages += 1,
            Notification::Lagged(n) => lagged += n,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(lagged > 0, "the buffer of 4 overflowed");
    assert_eq!(messages + lagged, 100, "each one is read or counted");
    assert_eq!(client.dropped_notifications(), lagged);
    guard(serving.stop()).await.expect("serve");
}

/// A handler that, for `run`, sends `BEFORE` NOTIFYs, reports that it
/// started, waits for the test's go, sends `AFTER` more and answers `done`.
const BEFORE: usize = 5;
const AFTER: usize = 16;

#[tokio::test]
async fn notifications_of_a_call_running_at_goodbye_all_arrive() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let handler = {
        let go = go.clone();
        move |_request: Bytes, ctx: ConnectionContext| {
            let (started_tx, go) = (started_tx.clone(), go.clone());
            async move {
                for i in 0..BEFORE {
                    ctx.notify(format!("before {i}")).await.expect("notify");
                }
                let _ = started_tx.send(());
                go.notified().await;
                for i in 0..AFTER {
                    ctx.notify(format!("after {i}")).await.expect("notify");
                }
                Ok::<_, ServiceError>(Bytes::from_static(b"done"))
            }
        }
    };
    let server = Server::builder(unique_endpoint("goodbye-notify"))
        // The call runs to its end: shutdown waits for it.
        .shutdown_timeout(common::HANG_GUARD)
        .handler(handler)
        .build()
        .unwrap();
    let serving = TestServer::start(server);
    // No reconnect: the connection the GOODBYE came on is the only one.
    let client = serving.connect_in_memory().await.unwrap();
    let mut notes = client.notifications().unwrap();
    let mut states = client.connection_states();
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.request("run").await })
    };
    guard(started.recv()).await.unwrap();
    serving.handle().shutdown();
    // The client has read the GOODBYE...
    state_where(&mut states, |s| matches!(s, ConnectionState::Lost { .. })).await;
    // ...and the call still running sends the rest of its NOTIFYs.
    go.notify_one();
    assert_eq!(guard(call).await.unwrap().unwrap(), "done");
    let mut received = Vec::new();
    while let Some(note) = guard(notes.recv()).await {
        received.push(note);
    }
    let messages = received.iter().filter(|n| n.message().is_some()).count();
    eprintln!(
        "{messages} of {} notifications arrived; dropped_notifications() = {}; {:?}",
        BEFORE + AFTER,
        client.dropped_notifications(),
        received.last()
    );
    assert_eq!(messages, BEFORE + AFTER, "{received:?}");
    assert_eq!(received.len(), BEFORE + AFTER, "no Lagged: {received:?}");
    assert_eq!(client.dropped_notifications(), 0);
    guard(serving.stop()).await.expect("serve");
}

/// A server that completes the handshake, then says GOODBYE and closes at
/// once: the client reads both in one go.
async fn goodbye_then_close(stream: pipesvc::transport::memory::MemoryStream) {
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(&rogue::hello("leaving")).await.unwrap();
    let mut reader = FramedRead::new(read, FrameCodec::new(u32::MAX));
    assert!(rogue::answer_hello(&mut reader, &mut write).await);
    let goodbye = rogue::frame_bytes(pipesvc::protocol::Kind::Goodbye, 0, b"restarting");
    write.write_all(&goodbye).await.unwrap();
    write.shutdown().await.unwrap();
    drop((reader, write));
}

#[tokio::test]
async fn a_goodbye_followed_by_the_end_of_the_stream_is_lost_to_the_goodbye() {
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let (client_end, server_end) = pipesvc::transport::memory::pair();
        let server = tokio::spawn(goodbye_then_close(server_end));
        let client = Client::from_io(client_end, ClientOptions::new())
            .await
            .unwrap();
        let mut states = client.connection_states();
        let lost = state_where(&mut states, |s| matches!(s, ConnectionState::Lost { .. })).await;
        guard(server).await.unwrap();
        let ConnectionState::Lost { reason, .. } = lost else {
            unreachable!()
        };
        reasons.push(reason);
    }
    let goodbyes = reasons
        .iter()
        .filter(|r| matches!(r, CloseReason::Goodbye(why) if why == "restarting"))
        .count();
    eprintln!(
        "{goodbyes} of 20 ended by the GOODBYE: {:?}",
        reasons.first()
    );
    assert_eq!(goodbyes, 20, "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_is_reported_as_goodbye_every_time() {
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let (endpoint, serving) = common::echo("graceful-reason");
        let client = Client::connect(&endpoint).await.unwrap();
        let mut states = client.connection_states();
        client.ping().await.unwrap();
        guard(serving.stop()).await.expect("serve");
        let lost = state_where(&mut states, |s| matches!(s, ConnectionState::Lost { .. })).await;
        let ConnectionState::Lost { reason, .. } = lost else {
            unreachable!()
        };
        // What a caller is told for a request now names the GOODBYE too.
        let err = client.request("late").await.unwrap_err();
        reasons.push((reason, err.to_string()));
    }
    let goodbyes = reasons
        .iter()
        .filter(|(r, err)| matches!(r, CloseReason::Goodbye(_)) && err.contains("goodbye"))
        .count();
    eprintln!(
        "{goodbyes} of 20 reported as GOODBYE: {:?}",
        reasons.first()
    );
    assert_eq!(goodbyes, 20, "{reasons:?}");
}

/// How a client waits for its service in these tests: far longer than
/// any of them takes, so that only a wrong refusal could end the wait.
fn waiting() -> ClientOptions {
    ClientOptions::new().wait_for_service(common::HANG_GUARD)
}

#[tokio::test]
async fn a_client_started_before_its_service_waits_for_it() {
    let serving = common::echo_in_memory("wait-connector");
    let handle = serving.handle().clone();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let connector = {
        let attempts = attempts.clone();
        move || {
            // The first three find no service; the fourth does.
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let opened = if attempt < 3 {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            } else {
                let (client_end, server_end) = pipesvc::transport::memory::pair();
                handle
                    .serve_connection(server_end, pipesvc::transport::PeerInfo::current())
                    .map(|()| client_end)
                    .map_err(std::io::Error::other)
            };
            std::future::ready(opened)
        }
    };
    let client = guard(Client::from_connector(connector, waiting()))
        .await
        .expect("connected once the service was there");
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(client.request("x").await.unwrap(), "x");
    assert_eq!(
        client.reconnects(),
        0,
        "the first connection is no reconnect"
    );
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn a_client_waits_through_a_service_that_is_not_ready_yet() {
    let endpoint = unique_endpoint("wait-endpoint");
    // What answers first: a service at its connection limit, which
    // refuses with `overloaded`, then goes away.
    let mut listener = Listener::bind(&endpoint, &ListenerOptions::default()).unwrap();
    let connecting = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move { Client::connect_with(&endpoint, waiting()).await })
    };
    let (mut refused, _peer) = guard(listener.accept()).await.unwrap();
    let overloaded = pipesvc::protocol::ErrorPayload::encode(
        pipesvc::protocol::ErrorCode::OVERLOADED,
        "at the connection limit",
    );
    let error = rogue::frame_bytes(pipesvc::protocol::Kind::Error, 0, &overloaded);
    refused.write_all(&error).await.unwrap();
    drop((refused, listener));
    // Then the service proper.
    let (serving, _started) = start(&endpoint);
    let client = guard(connecting).await.unwrap().expect("connected");
    assert_eq!(client.request("after").await.unwrap(), "after");
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn waiting_for_a_service_does_not_wait_out_what_waiting_cannot_fix() {
    let (endpoint, serving) = common::echo("wait-wrong-server");
    // Not the server's pid: refused at once, not retried until the deadline
    // (the hang guard would fail the test first).
    let options = waiting().expect_server_pid(Some(std::process::id() + 1));
    let err = guard(Client::connect_with(&endpoint, options))
        .await
        .expect_err("the wrong server");
    assert!(matches!(err, Error::WrongServer { .. }), "{err}");
    guard(serving.stop()).await.expect("serve");
}

/// A stream that says when it is dropped: when the client has let go of
/// its connection.
struct Watched<S> {
    inner: S,
    dropped: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<S> Watched<S> {
    fn new(inner: S) -> (Watched<S>, tokio::sync::oneshot::Receiver<()>) {
        let (dropped, watch) = tokio::sync::oneshot::channel();
        let stream = Watched {
            inner,
            dropped: Some(dropped),
        };
        (stream, watch)
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            let _ = dropped.send(());
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_dropped_client_lets_go_of_a_server_that_does_not_read_at_its_close_timeout() {
    let (serving, _started) = start_in_memory("dropped-unread");
    let (stream, faults) = pipesvc::testing::Faulty::new(serving.memory_stream().unwrap());
    let (stream, dropped) = Watched::new(stream);
    let options = ClientOptions::new().close_timeout(Duration::from_millis(100));
    let client = Client::from_io(stream, options).await.unwrap();
    // The server stops reading: a request's frame cannot be written.
    faults.stall_writes();
    let request = client.request_with_timeout(vec![0u8; 1 << 20], Some(Duration::from_millis(50)));
    let err = guard(request).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    // Dropped without close(): what is queued gets the close timeout to be
    // written, as with close(), then the connection is let go.
    let start = tokio::time::Instant::now();
    drop(client);
    guard(dropped)
        .await
        .expect("the client lets go of its stream");
    eprintln!("stream let go {:?} after the drop", start.elapsed());
    guard(serving.stop()).await.expect("serve");
}
