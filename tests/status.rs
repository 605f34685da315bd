//! STATUS: the server's counters, as a client and the server's handle see
//! them.

mod common;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{ErrorCode, Frame, Kind};
use pipesvc::server::{ConnectionContext, Server, ServiceCode, ServiceError};
use pipesvc::Client;

#[tokio::test]
async fn status_counts_requests_errors_connections_and_bytes() {
    let endpoint = unique_endpoint("status");
    let server = Server::builder(endpoint.clone())
        .handler(|r: Bytes, _: ConnectionContext| async move {
            match &r[..] {
                b"fail" => Err(ServiceError::with_code(
                    ServiceCode::new(1234).unwrap(),
                    "asked to fail",
                )),
                _ => Ok(r),
            }
        })
        .bind()
        .unwrap();
    let handle = server.handle();
    let serving = TestServer::start(server);

    let client = guard(Client::connect(&endpoint)).await.unwrap();
    for i in 0..10 {
        guard(client.request(format!("r{i}"))).await.unwrap();
    }
    guard(client.request("fail")).await.unwrap_err();
    guard(client.ping()).await.unwrap();
    // Another client breaks the protocol: ERROR `unknown kind`, closed.
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send_raw(&[6, 0, 0, 0, 99, 0, 0, 0, 0, 0]).await;
    raw.expect_error(0, ErrorCode::UNKNOWN_KIND).await;

    let status = guard(client.status()).await.unwrap();
    assert_eq!(status.requests_served, 11, "{status:?}");
    assert_eq!(
        status.errors,
        vec![(ErrorCode::UNKNOWN_KIND, 1), (ErrorCode(1234), 1)]
    );
    assert_eq!(status.connections_open, 1, "{status:?}");
    assert_eq!(status.connections_total, 2, "{status:?}");
    // What the clients sent before this STATUS, frame by frame: the
    // client's HELLO (27 bytes: revision 2.2's kinds field, 3 + 8 bytes,
    // after the 16 of magic and version), the raw client's (16), ten
    // requests of 2 bytes (12 each), "fail" (14) and an empty PING (10).
    // The raw client's bad frame was never decoded.
    assert_eq!(status.bytes_in, 27 + 16 + 10 * 12 + 14 + 10, "{status:?}");
    // At least the server's two HELLOs (27 bytes each: "pipesvc"), ten
    // echoes, the error answer, the PONG and the ERROR that closed the raw
    // client.
    assert!(
        status.bytes_out > 2 * 27 + 10 * 12 + 10 + 2 * 12,
        "{status:?}"
    );

    let seen = handle.status();
    assert_eq!(seen.requests_served, 11);
    assert_eq!(seen.errors, status.errors);
    assert!(seen.uptime >= status.uptime);
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}

/// The STATUS answer to `id`, and the answer's length on the wire.
async fn status_of(raw: &mut RawClient, id: u32) -> (pipesvc::protocol::Status, u64) {
    raw.send(Frame::new(Kind::Status, id, Bytes::new())).await;
    let answer = guard(raw.recv()).await.unwrap();
    assert_eq!((answer.kind, answer.id), (Kind::Response, id));
    let status = pipesvc::protocol::Status::decode(&answer.payload).unwrap();
    (status, answer.wire_len() as u64)
}

#[tokio::test]
async fn bytes_in_and_out_count_whole_frames_before_the_status_itself() {
    // PROTOCOL.md, "Status": every frame with its 4-byte length field,
    // received (and sent) on every connection before this STATUS was
    // read; the STATUS itself and its answer count in the next one.
    let endpoint = unique_endpoint("status-bytes");
    let server = Server::builder(endpoint.clone())
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::new(Kind::Ping, 1, Bytes::new())).await;
    assert_eq!(guard(raw.recv()).await.unwrap().kind, Kind::Pong);
    let (first, first_len) = status_of(&mut raw, 2).await;
    // In: the client's HELLO (16) and the PING (10). Out: the server's
    // HELLO (27, "pipesvc") and the PONG (10).
    assert_eq!((first.bytes_in, first.bytes_out), (16 + 10, 27 + 10));
    let (second, _) = status_of(&mut raw, 3).await;
    assert_eq!(second.bytes_in, first.bytes_in + 10, "the first STATUS");
    assert_eq!(second.bytes_out, first.bytes_out + first_len, "its answer");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn a_status_with_id_0_is_a_malformed_frame() {
    let (endpoint, serving) = common::echo("status-id0");
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::new(Kind::Status, 0, Bytes::new())).await;
    raw.expect_error(0, ErrorCode::MALFORMED_FRAME).await;
    guard(serving.stop()).await.expect("serve");
}
