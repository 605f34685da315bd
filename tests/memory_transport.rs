//! A server and clients talking over the in-memory transport: no pipe, no
//! socket, the same protocol, limits and shutdown as over the OS.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use pipesvc::client::{ClientOptions, ConnectionState, Notification};
use pipesvc::error::CloseReason;
use pipesvc::server::{AccessPolicy, ConnectionContext, Handler, Server, ServiceError};
use pipesvc::testing::TestServer;
use pipesvc::transport::{memory, PeerInfo};
use pipesvc::{Client, Error};

use common::guard;

/// Echoes requests; a NOTIFY `x` is answered with a NOTIFY `re: x`.
struct Echo;

impl Handler for Echo {
    async fn call(&self, request: Bytes, _: ConnectionContext) -> Result<Bytes, ServiceError> {
        Ok(request)
    }

    async fn on_notify(&self, payload: Bytes, ctx: ConnectionContext) {
        let reply = [b"re: ".as_slice(), &payload].concat();
        ctx.notify(reply).await.expect("notify back");
    }
}

fn in_memory_server() -> Server<Echo> {
    Server::builder(common::unique_endpoint("memory"))
        .handler(Echo)
        .build()
        .expect("build")
}

async fn connect(handle: &pipesvc::server::ServerHandle) -> Client {
    let (client_end, server_end) = memory::pair();
    handle
        .serve_connection(server_end, PeerInfo::current())
        .expect("serve the stream");
    Client::from_io(client_end, ClientOptions::default())
        .await
        .expect("handshake over memory")
}

async fn next_message(notifications: &mut pipesvc::client::Notifications) -> Bytes {
    match notifications.next().await.expect("a notification") {
        Notification::Message(payload) => payload,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_notifications_broadcast_and_shutdown_over_memory() {
    guard(async {
        let server = in_memory_server();
        let handle = server.handle();
        let serving = tokio::spawn(server.serve());
        let (a, b) = (connect(&handle).await, connect(&handle).await);
        let mut a_notes = a.notifications().expect("stream");
        let mut b_notes = b.notifications().expect("stream");
        assert_eq!(a.endpoint(), None);
        assert_eq!(a.server_name(), "pipesvc");

        assert_eq!(&a.request("one").await.expect("request")[..], b"one");
        let many = common::spawn_requests(&b, (0..50).map(|i| common::payload(2, i, 100)));
        for (i, answer) in many.into_iter().enumerate() {
            let expected = common::payload(2, i as u32, 100);
            assert_eq!(answer.await.expect("task").expect("answer"), expected);
        }
        a.ping().await.expect("ping");
        assert_eq!(a.status().await.expect("status").connections_open, 2);

        a.notify("hello").await.expect("notify");
        assert_eq!(&next_message(&mut a_notes).await[..], b"re: hello");

        assert_eq!(handle.connection_count(), 2);
        assert_eq!(handle.broadcast("to all").await, 2);
        assert_eq!(&next_message(&mut a_notes).await[..], b"to all");
        assert_eq!(&next_message(&mut b_notes).await[..], b"to all");

        let mut states = a.connection_states();
        handle.shutdown();
        serving.await.expect("serve task").expect("serve");
        let lost = states
            .wait_for(|s| matches!(s, ConnectionState::Lost { .. }))
            .await
            .expect("state")
            .clone();
        // The GOODBYE ended it, not the end of the stream that follows.
        assert!(
            matches!(
                lost,
                ConnectionState::Lost {
                    reason: CloseReason::Goodbye(_),
                    reconnecting: false
                }
            ),
            "{lost:?}"
        );
        assert!(matches!(
            a.request("late").await,
            Err(Error::ConnectionClosed(_))
        ));
        // Once the server is gone, a stream handed over is refused.
        let (_client_end, server_end) = memory::pair();
        let refused = handle.serve_connection(server_end, PeerInfo::current());
        assert!(matches!(refused, Err(Error::Io(_))), "{refused:?}");
    })
    .await;
}

#[tokio::test]
async fn a_context_kept_after_its_call_still_notifies_that_connection() {
    guard(async {
        let kept: Arc<Mutex<Option<ConnectionContext>>> = Arc::default();
        let handler = {
            let kept = kept.clone();
            move |request: Bytes, ctx: ConnectionContext| {
                *kept.lock().unwrap() = Some(ctx);
                async move { Ok::<_, ServiceError>(request) }
            }
        };
        let server = Server::builder(common::unique_endpoint("memory-kept"))
            .handler(handler)
            .build()
            .expect("build");
        let serving = TestServer::start(server);
        let client = serving.connect_in_memory().await.expect("connect");
        let mut notes = client.notifications().expect("stream");
        assert_eq!(&client.request("keep").await.expect("answer")[..], b"keep");
        let ctx = kept.lock().unwrap().take().expect("the handler kept it");
        // The call is answered; its context still reaches the client.
        ctx.notify("later").await.expect("notify after the call");
        assert_eq!(&next_message(&mut notes).await[..], b"later");
        // Once the connection is gone (the server has stopped, so every
        // connection has ended), it says so.
        client.close().await;
        serving.stop().await.expect("serve");
        let err = ctx
            .notify("gone")
            .await
            .expect_err("the connection is gone");
        assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_client_is_told_once_and_who_it_was_taken_for() {
    guard(async {
        let server = Server::builder(common::unique_endpoint("memory-refused"))
            .handler(Echo)
            .access(AccessPolicy::custom(|_| false))
            .build()
            .expect("build");
        let serving = TestServer::start(server);
        let (client_end, server_end) = memory::pair();
        let stranger = PeerInfo::new().with_pid(4321).with_uid(1234);
        serving
            .handle()
            .serve_connection(server_end, stranger)
            .expect("hand over");
        let err = Client::from_io(client_end, ClientOptions::default())
            .await
            .expect_err("refused");
        let text = err.to_string();
        eprintln!("a refused client sees: {text}");
        assert_eq!(err.code(), Some(pipesvc::protocol::ErrorCode::NOT_ALLOWED));
        assert_eq!(text.matches("not allowed").count(), 1, "{text}");
        assert!(
            text.contains("access policy")
                && text.contains("uid 1234")
                && text.contains("pid 4321"),
            "{text}"
        );
        serving.stop().await.expect("serve");
    })
    .await;
}

#[tokio::test]
async fn access_policy_and_connection_limit_apply_to_handed_over_streams() {
    guard(async {
        let uid = PeerInfo::current().uid.unwrap_or(0);
        let server = Server::builder(common::unique_endpoint("memory-policy"))
            .handler(Echo)
            .max_connections(1)
            .access(AccessPolicy::custom(move |peer| peer.gid != Some(4242)))
            .build()
            .expect("build");
        let handle = server.handle();
        let serving = tokio::spawn(server.serve());

        let (client_end, server_end) = memory::pair();
        let stranger = PeerInfo::new().with_uid(uid).with_gid(4242);
        handle
            .serve_connection(server_end, stranger)
            .expect("hand over");
        let refused = Client::from_io(client_end, ClientOptions::default()).await;
        assert_eq!(
            refused.expect_err("not allowed").code(),
            Some(pipesvc::protocol::ErrorCode::NOT_ALLOWED)
        );

        let first = connect(&handle).await;
        let (client_end, server_end) = memory::pair();
        handle
            .serve_connection(server_end, PeerInfo::current())
            .expect("hand over");
        let over = Client::from_io(client_end, ClientOptions::default()).await;
        assert_eq!(
            over.expect_err("over the limit").code(),
            Some(pipesvc::protocol::ErrorCode::OVERLOADED)
        );
        assert_eq!(&first.request("still").await.expect("served")[..], b"still");
        handle.shutdown();
        serving.await.expect("serve task").expect("serve");
    })
    .await;
}

#[tokio::test]
async fn from_io_refuses_what_it_cannot_do() {
    let (client_end, _server_end) = memory::pair();
    let options = ClientOptions::new().reconnect(true);
    let refused = Client::from_io(client_end, options).await;
    assert!(matches!(refused, Err(Error::Config { ref setting, .. }) if setting == "reconnect"));
    let (client_end, _server_end) = memory::pair();
    let options = ClientOptions::new().wait_for_service(std::time::Duration::from_secs(1));
    let refused = Client::from_io(client_end, options).await;
    assert!(
        matches!(refused, Err(Error::Config { ref setting, .. }) if setting == "wait_for_service")
    );
    let (client_end, _server_end) = memory::pair();
    let options = ClientOptions::new().expect_server_pid(Some(1));
    let refused = Client::from_io(client_end, options).await;
    assert!(
        matches!(refused, Err(Error::Config { ref setting, .. }) if setting == "expect_server_pid")
    );
}

#[tokio::test]
async fn a_connector_client_reconnects_to_the_next_in_memory_server() {
    guard(async {
        let (first, second) = (in_memory_server(), in_memory_server());
        let (first_handle, second_handle) = (first.handle(), second.handle());
        let first_serving = tokio::spawn(first.serve());
        let second_serving = tokio::spawn(second.serve());
        // The server the connector reaches: the first, then its successor
        // (as a service restarted under the same name).
        let current = Arc::new(Mutex::new(first_handle.clone()));
        let reach = current.clone();
        let connector = move || {
            let handle = reach.lock().expect("lock").clone();
            async move {
                let (client_end, server_end) = memory::pair();
                handle
                    .serve_connection(server_end, PeerInfo::current())
                    .map_err(std::io::Error::other)?;
                Ok(client_end)
            }
        };
        let options = ClientOptions::new().reconnect(true);
        let client = Client::from_connector(connector, options)
            .await
            .expect("connect");
        assert_eq!(
            &client.request("first").await.expect("answer")[..],
            b"first"
        );

        let mut states = client.connection_states();
        *current.lock().expect("lock") = second_handle.clone();
        first_handle.shutdown();
        first_serving.await.expect("serve task").expect("serve");
        states
            .wait_for(|s| matches!(s, ConnectionState::Connected { reconnects: 1 }))
            .await
            .expect("reconnected");
        assert_eq!(
            &client.request("again").await.expect("answer")[..],
            b"again"
        );
        assert_eq!(second_handle.connection_count(), 1);
        client.close().await;
        second_handle.shutdown();
        second_serving.await.expect("serve task").expect("serve");
    })
    .await;
}
