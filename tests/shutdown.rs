//! Graceful shutdown with clients connected and requests in flight.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, spawn_requests, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{ErrorCode, Kind};
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::{Client, Error};
use tokio::sync::{mpsc, Notify};

/// A server whose handler reports each request it starts and then waits
/// for `release` before echoing.
fn held_server(
    test: &str,
    shutdown_timeout: Duration,
) -> (
    pipesvc::Endpoint,
    Server<impl pipesvc::server::Handler>,
    mpsc::UnboundedReceiver<()>,
    Arc<Notify>,
) {
    let endpoint = unique_endpoint(test);
    let release = Arc::new(Notify::new());
    let (started_tx, started) = mpsc::unbounded_channel();
    let handler = {
        let release = release.clone();
        move |request: Bytes, _ctx: ConnectionContext| {
            let (release, started_tx) = (release.clone(), started_tx.clone());
            async move {
                let released = release.notified();
                let _ = started_tx.send(());
                released.await;
                Ok::<_, ServiceError>(request)
            }
        }
    };
    let server = Server::builder(endpoint.clone())
        .shutdown_timeout(shutdown_timeout)
        .handler(handler)
        .bind()
        .unwrap();
    (endpoint, server, started, release)
}

#[tokio::test]
async fn in_flight_requests_finish_when_they_can() {
    let (endpoint, server, mut started, release) = held_server("finish", Duration::from_secs(30));
    let serving = TestServer::start(server);
    let client = Client::connect(&endpoint).await.unwrap();
    let requests = spawn_requests(&client, (0..4).map(|i| format!("r{i}")));
    for _ in 0..4 {
        started.recv().await.unwrap();
    }
    serving.handle().shutdown();
    release.notify_waiters();
    for (i, request) in requests.into_iter().enumerate() {
        assert_eq!(guard(request).await.unwrap().unwrap(), format!("r{i}"));
    }
    guard(serving.stop()).await.unwrap();
    // The server is gone: new requests fail clearly, none hangs.
    let err = guard(client.request("late")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
}

#[tokio::test]
async fn requests_past_the_deadline_are_answered_shutting_down() {
    let (endpoint, server, mut started, _release) =
        held_server("deadline", Duration::from_millis(50));
    let serving = TestServer::start(server);
    let client = Client::connect(&endpoint).await.unwrap();
    let requests = spawn_requests(&client, ["stuck"; 3]);
    for _ in 0..3 {
        started.recv().await.unwrap();
    }
    serving.handle().shutdown();
    for request in requests {
        let err = guard(request).await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::SHUTTING_DOWN), "{err}");
    }
    guard(serving.stop()).await.unwrap();
}

#[tokio::test]
async fn clients_are_told_goodbye_and_the_endpoint_is_released() {
    let (endpoint, server, _started, _release) = held_server("goodbye", Duration::from_secs(5));
    let serving = TestServer::start(server);
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    let idle = Client::connect(&endpoint).await.unwrap();

    serving.handle().shutdown();
    let goodbye = guard(raw.recv()).await.expect("GOODBYE before the close");
    assert_eq!(goodbye.kind, Kind::Goodbye);
    assert_eq!(guard(raw.recv()).await, None, "then the connection closes");
    guard(serving.stop()).await.unwrap();
    assert!(guard(idle.request("x")).await.is_err());

    // The name is free again: a new server can bind it at once.
    let again = Server::builder(endpoint.clone())
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .expect("rebind after shutdown");
    drop(again);
}

#[tokio::test]
async fn an_idle_connection_closes_at_once_while_another_is_still_busy() {
    // Each connection closes as soon as it has nothing in flight and
    // nothing more to read, not all of them at the deadline.
    let (endpoint, server, mut started, release) =
        held_server("idle-first", Duration::from_secs(30));
    let serving = TestServer::start(server);
    let busy = Client::connect(&endpoint).await.unwrap();
    let request = spawn_requests(&busy, ["busy"]).pop().unwrap();
    started.recv().await.unwrap();
    let (mut v1, _) = RawClient::handshake(&endpoint).await;
    let stream = pipesvc::transport::connect(&endpoint, &Default::default())
        .await
        .unwrap()
        .stream;
    let (mut v2, _, _) = RawClient::handshake_v2_over(stream).await;

    serving.handle().shutdown();
    for idle in [&mut v1, &mut v2] {
        let goodbye = guard(idle.recv()).await.expect("GOODBYE");
        assert_eq!(goodbye.kind, Kind::Goodbye);
        assert_eq!(guard(idle.recv()).await, None, "then the end, at once");
    }
    // Only now is the busy request let go; it is still answered.
    release.notify_waiters();
    assert_eq!(guard(request).await.unwrap().unwrap(), "busy");
    guard(serving.stop()).await.unwrap();
}

#[tokio::test]
async fn serve_until_stops_on_its_signal() {
    let (endpoint, server, _started, _release) = held_server("signal", Duration::from_secs(5));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_until(async {
        let _ = stop_rx.await;
    }));
    let client = Client::connect(&endpoint).await.unwrap();
    client.ping().await.unwrap();
    stop_tx.send(()).unwrap();
    guard(serving).await.unwrap().unwrap();
}
