//! `pipesvc::testing`'s fault injection against a real server and client
//! over the in-memory transport: a connection cut mid-frame (either way)
//! fails clearly and ends only that connection; a client that stops
//! reading trips the server's write timeout.

use std::time::Duration;

use bytes::Bytes;
use pipesvc::client::{ClientOptions, ConnectionState};
use pipesvc::error::CloseReason;
use pipesvc::server::{ConnectionContext, Server, ServerHandle, ServiceError};
use pipesvc::testing::{hang_guard as guard, unique_endpoint, Faults, Faulty, TestServer};
use pipesvc::transport::{memory, PeerInfo};
use pipesvc::{Client, Error};

fn echo_server(test: &str, write_timeout: Duration) -> TestServer {
    let server = Server::builder(unique_endpoint(test))
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .write_timeout(write_timeout)
        .build()
        .expect("build");
    TestServer::start(server)
}

/// A client whose stream, on the server's side, is faulty.
async fn client_with_faulty_server_end(server: &TestServer) -> (Client, Faults) {
    let (client_end, server_end) = memory::pair();
    let (server_end, faults) = Faulty::new(server_end);
    server
        .handle()
        .serve_connection(server_end, PeerInfo::current())
        .expect("serve");
    let client = Client::from_io(client_end, ClientOptions::default())
        .await
        .expect("handshake");
    (client, faults)
}

/// Waits (yielding, never sleeping) until the server counts `n` clients.
async fn until_connections(handle: &ServerHandle, n: usize) {
    while handle.connection_count() != n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_answer_cut_mid_frame_fails_that_client_only() {
    guard(async {
        let server = echo_server("cut-answer", Duration::from_secs(30));
        let bystander = server.connect_in_memory().await.expect("bystander");
        let (client, faults) = client_with_faulty_server_end(&server).await;
        until_connections(server.handle(), 2).await;

        // 20 bytes of a 1 KiB answer reach the client, then the cut.
        faults.cut_after_writing(20);
        let err = client
            .request(vec![7u8; 1024])
            .await
            .expect_err("the answer was cut");
        assert!(
            matches!(err, Error::ConnectionClosed(_)),
            "a clear error, not {err:?}"
        );
        let text = err.to_string();
        assert!(text.starts_with("connection closed"), "{text}");
        assert!(faults.is_cut());
        assert!(client.is_closed());

        until_connections(server.handle(), 1).await;
        let answer = bystander.request("still served").await.expect("answer");
        assert_eq!(&answer[..], b"still served");
        server.stop().await.expect("stop");
    })
    .await;
}

#[tokio::test]
async fn a_request_cut_mid_frame_ends_that_connection_only() {
    guard(async {
        let server = echo_server("cut-request", Duration::from_secs(30));
        let bystander = server.connect_in_memory().await.expect("bystander");
        let (client_end, server_end) = memory::pair();
        let (client_end, faults) = Faulty::new(client_end);
        server
            .handle()
            .serve_connection(server_end, PeerInfo::current())
            .expect("serve");
        let client = Client::from_io(client_end, ClientOptions::default())
            .await
            .expect("handshake");
        until_connections(server.handle(), 2).await;

        // The server gets the header and a few bytes of the payload.
        faults.cut_after_writing(12);
        let err = client
            .request(vec![1u8; 4096])
            .await
            .expect_err("the request was cut");
        assert!(matches!(err, Error::ConnectionClosed(_)), "{err:?}");

        // The server drops the half-sent frame's connection, serves on.
        until_connections(server.handle(), 1).await;
        assert_eq!(&bystander.request("on").await.expect("answer")[..], b"on");
        server.stop().await.expect("stop");
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_trips_the_write_timeout() {
    guard(async {
        let server = echo_server("stalled", Duration::from_millis(200));
        let bystander = server.connect_in_memory().await.expect("bystander");
        let (client, faults) = client_with_faulty_server_end(&server).await;
        until_connections(server.handle(), 2).await;
        let mut states = client.connection_states();

        // Nothing the server writes gets through: its answer waits, and
        // the write timeout drops the client.
        faults.stall_writes();
        let err = client
            .request_with_timeout("never answered", None)
            .await
            .expect_err("dropped by the server");
        assert!(matches!(err, Error::ConnectionClosed(_)), "{err:?}");
        let lost = states
            .wait_for(|s| matches!(s, ConnectionState::Lost { .. }))
            .await
            .expect("state")
            .clone();
        assert!(
            matches!(
                lost,
                ConnectionState::Lost {
                    reason: CloseReason::Eof | CloseReason::Reset(_),
                    ..
                }
            ),
            "{lost:?}"
        );
        until_connections(server.handle(), 1).await;
        assert_eq!(
            &bystander.request("fine").await.expect("answer")[..],
            b"fine"
        );
        server.stop().await.expect("stop");
    })
    .await;
}

#[tokio::test]
async fn stalled_reads_go_on_once_released_and_delays_only_slow_down() {
    guard(async {
        let server = echo_server("stall-release", Duration::from_secs(30));
        let (client, faults) = client_with_faulty_server_end(&server).await;
        faults.delay_reads(Some(Duration::from_millis(5)));
        faults.delay_writes(Some(Duration::from_millis(5)));
        assert_eq!(&client.request("slow").await.expect("answer")[..], b"slow");
        faults.delay_reads(None);
        faults.delay_writes(None);

        // The server reads nothing while stalled: the request is not
        // counted until the release.
        faults.stall_reads();
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.request("held").await }
        });
        let other = server.connect_in_memory().await.expect("other");
        let before = other.status().await.expect("status").requests_served;
        faults.release();
        assert_eq!(&pending.await.expect("task").expect("answer")[..], b"held");
        let after = other.status().await.expect("status").requests_served;
        assert_eq!(after, before + 1);
        server.stop().await.expect("stop");
    })
    .await;
}
