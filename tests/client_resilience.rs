//! The client across faults: request timeouts and reconnecting after the
//! server restarts, with no request answered twice.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, Serving};
use pipesvc::client::ClientOptions;
use pipesvc::server::{Context, Server, ServiceError};
use pipesvc::{Client, Endpoint, Error};
use tokio::sync::mpsc;

/// Echoes, except that `hold` is never answered (it reports that it started).
fn start(endpoint: &Endpoint) -> (Serving, mpsc::UnboundedReceiver<()>) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let handler = move |request: Bytes, _ctx: Context| {
        let started_tx = started_tx.clone();
        async move {
            if request == "hold" {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
            }
            Ok::<_, ServiceError>(request)
        }
    };
    let server = Server::builder(endpoint.clone())
        .shutdown_timeout(Duration::from_millis(10))
        .handler(handler)
        .bind()
        .unwrap();
    (Serving::start(server), started)
}

#[tokio::test]
async fn a_request_past_its_timeout_fails_and_the_connection_carries_on() {
    let endpoint = unique_endpoint("request-timeout");
    let (serving, _started) = start(&endpoint);
    let options = ClientOptions {
        request_timeout: Some(Duration::from_millis(50)),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    let err = client.request("hold").await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err}");
    assert_eq!(client.request("next").await.unwrap(), "next");
    serving.stop().await;
}

#[tokio::test]
async fn a_reconnecting_client_outlives_a_server_restart() {
    let endpoint = unique_endpoint("reconnect");
    let (serving, mut started) = start(&endpoint);
    let options = ClientOptions {
        reconnect: true,
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    assert_eq!(client.request("before").await.unwrap(), "before");

    // A request in flight when the server goes away fails, clearly...
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.request("hold").await })
    };
    started.recv().await.unwrap();
    serving.stop().await;
    let err = guard(in_flight).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Remote { .. } | Error::ConnectionClosed(_)),
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
    serving.stop().await;
}

#[tokio::test]
async fn without_reconnect_a_lost_connection_stays_lost() {
    let endpoint = unique_endpoint("no-reconnect");
    let (serving, _started) = start(&endpoint);
    let client = Client::connect(&endpoint).await.unwrap();
    serving.stop().await;
    let (serving, _started) = start(&endpoint);
    let err = client.request("x").await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed(_)), "{err}");
    assert!(client.is_closed());
    assert_eq!(client.reconnects(), 0);
    serving.stop().await;
}
