//! Per-connection hooks (issue 21, item 4): `Handler::on_disconnect`, the
//! context's `closed` signal and `ServerHandle::send_to`, so that a
//! service notices a gone client at once and can push to one client from
//! anywhere. Every wait is on an event, none on time.

mod common;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::client::Notification;
use pipesvc::error::Error;
use pipesvc::protocol::{ErrorCode, Frame};
use pipesvc::server::{ConnectionContext, Handler, Server, ServiceError};
use pipesvc::Client;
use tokio::sync::mpsc;

/// What the service saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Connected(u64),
    /// A task that kept the context saw `closed` resolve.
    Closed(u64),
    /// `on_disconnect`, and whether the context said it was closed then.
    Disconnected(u64, bool),
}

struct Hooks {
    seen: mpsc::UnboundedSender<Seen>,
}

impl Handler for Hooks {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        Ok(request)
    }

    async fn on_connect(&self, ctx: ConnectionContext) {
        let id = ctx.connection_id();
        assert!(!ctx.is_closed());
        self.seen.send(Seen::Connected(id)).unwrap();
        // A subscriber the service keeps, as a task would.
        let seen = self.seen.clone();
        tokio::spawn(async move {
            ctx.closed().await;
            let _ = seen.send(Seen::Closed(id));
        });
    }

    async fn on_disconnect(&self, ctx: ConnectionContext) {
        let seen = Seen::Disconnected(ctx.connection_id(), ctx.is_closed());
        self.seen.send(seen).unwrap();
    }
}

fn serve(test: &str) -> (pipesvc::Endpoint, TestServer, mpsc::UnboundedReceiver<Seen>) {
    let endpoint = unique_endpoint(test);
    let (seen, events) = mpsc::unbounded_channel();
    let server = Server::builder(endpoint.clone())
        .handler(Hooks { seen })
        .bind()
        .unwrap();
    (endpoint, TestServer::start(server), events)
}

async fn next(events: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    guard(events.recv()).await.expect("an event")
}

async fn connected(events: &mut mpsc::UnboundedReceiver<Seen>) -> u64 {
    match next(events).await {
        Seen::Connected(id) => id,
        other => panic!("expected a connection, got {other:?}"),
    }
}

/// The closed signal and `on_disconnect` of connection `id`, in either
/// order between them, `on_disconnect` seeing the context closed.
async fn gone(events: &mut mpsc::UnboundedReceiver<Seen>, id: u64) {
    let mut got = vec![next(events).await, next(events).await];
    got.sort_by_key(|seen| matches!(seen, Seen::Disconnected(..)));
    assert_eq!(got, [Seen::Closed(id), Seen::Disconnected(id, true)]);
}

#[tokio::test]
async fn on_disconnect_runs_once_and_closed_resolves_however_the_connection_ends() {
    let (endpoint, serving, mut events) = serve("hooks-disconnect");

    // The client closes.
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    let first = connected(&mut events).await;
    guard(client.close()).await;
    gone(&mut events, first).await;

    // The client breaks the protocol: ERROR, close, and the hooks.
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    let second = connected(&mut events).await;
    assert_ne!(first, second);
    raw.send(Frame::response(1, "a client may not send this"))
        .await;
    guard(raw.expect_error(0, ErrorCode::UNEXPECTED_FRAME)).await;
    gone(&mut events, second).await;

    // The client vanishes (dropped without a word).
    let (raw, _) = RawClient::handshake(&endpoint).await;
    let third = connected(&mut events).await;
    drop(raw);
    gone(&mut events, third).await;

    // The server shuts down with a client connected.
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    let fourth = connected(&mut events).await;
    guard(serving.stop()).await.expect("serve");
    gone(&mut events, fourth).await;
    drop(client);
    // Each connection's hooks ran once: nothing more came.
    assert!(events.try_recv().is_err());
}

async fn message(notifications: &mut pipesvc::client::Notifications) -> Bytes {
    match guard(notifications.recv()).await {
        Some(Notification::Message(payload)) => payload,
        other => panic!("expected a NOTIFY, got {other:?}"),
    }
}

#[tokio::test]
async fn send_to_reaches_that_one_client_and_fails_once_it_is_gone() {
    let (endpoint, serving, mut events) = serve("hooks-send-to");
    let a = guard(Client::connect(&endpoint)).await.unwrap();
    let mut a_notes = a.notifications().unwrap();
    let a_id = connected(&mut events).await;
    let b = guard(Client::connect(&endpoint)).await.unwrap();
    let mut b_notes = b.notifications().unwrap();
    let b_id = connected(&mut events).await;
    let handle = serving.handle().clone();

    guard(handle.send_to(a_id, "for a")).await.unwrap();
    guard(handle.send_to(b_id, "for b")).await.unwrap();
    assert_eq!(message(&mut a_notes).await, "for a");
    // b's first NOTIFY is its own: a's did not reach it.
    assert_eq!(message(&mut b_notes).await, "for b");

    guard(a.close()).await;
    gone(&mut events, a_id).await;
    let err = guard(handle.send_to(a_id, "too late")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    let err = guard(handle.send_to(u64::MAX, "nobody")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    // Over the frame limit: refused, the connection untouched.
    let huge = vec![0u8; b.server_max_frame_len() as usize];
    let err = guard(handle.send_to(b_id, huge)).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
    guard(handle.send_to(b_id, "still here")).await.unwrap();
    assert_eq!(message(&mut b_notes).await, "still here");
    assert_eq!(guard(b.request("echo")).await.unwrap(), "echo");
    guard(serving.stop()).await.expect("serve");
}
