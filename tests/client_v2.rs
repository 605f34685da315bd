//! The client's side of protocol version 2, against servers written here
//! from PROTOCOL.md: a version 1 server (too old for this client), and a
//! version 2 server that shows what the client sends when it gives up on
//! a call.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pipesvc::client::{CallOptions, ClientOptions};
use pipesvc::protocol::{
    CallHeader, ClientHello, Encoding, ErrorCode, Frame, FrameCodec, HelloReply, Kind, ServerHello,
};
use pipesvc::testing::hang_guard as guard;
use pipesvc::transport::memory::{self, MemoryStream};
use pipesvc::{Client, Error};
use tokio_util::codec::Framed;

type Raw = Framed<MemoryStream, FrameCodec>;

/// The server's end of a fresh memory pair, and a client connecting over
/// the other end (the handshake runs once the server side answers).
fn pair() -> (MemoryStream, Raw) {
    let (client_end, server_end) = memory::pair();
    (
        client_end,
        Framed::new(server_end, FrameCodec::new(u32::MAX)),
    )
}

/// Sends the first HELLO every server sends; returns the client's HELLO.
async fn greet(server: &mut Raw) -> ClientHello {
    let hello = ServerHello::new(pipesvc::protocol::DEFAULT_MAX_FRAME_LEN, "raw");
    server
        .send(Frame::new(Kind::Hello, 0, hello.encode()))
        .await
        .unwrap();
    let frame = guard(server.next()).await.unwrap().unwrap();
    assert_eq!(frame.kind, Kind::Hello);
    ClientHello::decode(&frame.payload).expect("a valid client HELLO")
}

/// A version 2 server's handshake, offering `encodings`.
async fn accept_v2(server: &mut Raw, encodings: &[Encoding]) {
    let hello = greet(server).await;
    assert_eq!(hello.version, 2, "this client speaks version 2");
    let reply = HelloReply::new(2, encodings).encode();
    server
        .send(Frame::new(Kind::Hello, 0, reply))
        .await
        .unwrap();
    *server.codec_mut() = FrameCodec::new(u32::MAX).with_version(2);
}

async fn next_frame(server: &mut Raw) -> Frame {
    guard(server.next())
        .await
        .expect("a frame")
        .expect("decodes")
}

#[tokio::test]
async fn a_v2_client_refuses_a_v1_only_server_as_too_old() {
    let (client_end, mut server) = pair();
    let serving = tokio::spawn(async move {
        // What a version 1 server does (PROTOCOL.md, version 1 text, and
        // pipesvc 0.2 and 0.3): a version other than 1 is unsupported.
        let hello = greet(&mut server).await;
        assert_ne!(hello.version, 1);
        let why = format!("protocol version {} is not supported", hello.version);
        let error = Frame::error(0, ErrorCode::UNSUPPORTED_VERSION, &why);
        server.send(error).await.unwrap();
        // Nothing else came from the client.
        assert!(guard(server.next()).await.is_none());
    });
    let err = guard(Client::from_io(client_end, ClientOptions::new()))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::ServerTooOld { .. }), "{err:?}");
    assert!(message.contains("too old"), "{message}");
    assert!(message.contains("version 2"), "{message}");
    serving.await.unwrap();
}

#[tokio::test]
async fn a_dropped_call_sends_cancel_for_its_id() {
    let (client_end, mut server) = pair();
    let handshake = async { accept_v2(&mut server, &[Encoding::Json]).await };
    let (client, ()) = tokio::join!(Client::from_io(client_end, ClientOptions::new()), handshake);
    let client = client.unwrap();
    assert_eq!(client.protocol_version(), 2);

    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let options = CallOptions::new().metadata("trace", "t1");
            client
                .call_raw("slow", Encoding::Json, b"{}", &options)
                .await
        })
    };
    let sent = next_frame(&mut server).await;
    assert_eq!(sent.kind, Kind::Call);
    let (header, params) = CallHeader::decode(&sent.payload).unwrap();
    assert_eq!(header.method, "slow");
    assert_eq!(header.metadata_value("trace"), Some("t1"));
    // The client's request_timeout (30 s) is the default deadline.
    assert_eq!(header.timeout, Some(Duration::from_secs(30)));
    assert_eq!(params.as_ref(), b"{}");

    call.abort();
    let _ = call.await;
    let cancel = next_frame(&mut server).await;
    assert_eq!((cancel.kind, cancel.id), (Kind::Cancel, sent.id));
    assert!(cancel.payload.is_empty());

    // The server's answer to the cancelled call is taken and discarded;
    // the connection carries on.
    let answer = Frame::error(sent.id, ErrorCode::CANCELLED, "cancelled");
    server.send(answer).await.unwrap();
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.request("after").await }
    });
    let request = next_frame(&mut server).await;
    assert_eq!(request.kind, Kind::Request);
    server
        .send(Frame::response(request.id, "fine"))
        .await
        .unwrap();
    assert_eq!(guard(next).await.unwrap().unwrap(), Bytes::from("fine"));
}

#[tokio::test]
async fn a_call_whose_time_is_up_sends_its_deadline_then_cancel() {
    let (client, mut server) = connected_offering(ClientOptions::new(), &[Encoding::Json]).await;
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let options = CallOptions::new().timeout(Some(Duration::from_millis(20)));
            client
                .call_raw("slow", Encoding::Json, b"1", &options)
                .await
        })
    };
    let sent = next_frame(&mut server).await;
    let (header, _) = CallHeader::decode(&sent.payload).unwrap();
    assert_eq!(header.timeout, Some(Duration::from_millis(20)));
    // This server never answers: past the deadline and its grace the
    // client gives up by itself, and says so to the server.
    times_out_then_cancels(call, &mut server, sent.id).await;
}

#[tokio::test]
async fn a_dropped_byte_request_is_cancelled_and_a_dropped_ping_is_not() {
    let (client, mut server) = connected(ClientOptions::new()).await;

    let ping = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let sent_ping = next_frame(&mut server).await;
    assert_eq!(sent_ping.kind, Kind::Ping);
    ping.abort();
    let _ = ping.await;

    let request = tokio::spawn({
        let client = client.clone();
        async move { client.request("bytes").await }
    });
    // Straight after the PING comes the request: no CANCEL for a PING.
    let sent = next_frame(&mut server).await;
    assert_eq!(sent.kind, Kind::Request);
    request.abort();
    let _ = request.await;
    let cancel = next_frame(&mut server).await;
    assert_eq!((cancel.kind, cancel.id), (Kind::Cancel, sent.id));
}

#[tokio::test]
async fn the_client_picks_an_encoding_the_server_offers() {
    for (offered, wanted, picked) in [
        (vec![Encoding::Json], Encoding::MessagePack, Encoding::Json),
        (
            vec![Encoding::Json, Encoding::MessagePack],
            Encoding::MessagePack,
            Encoding::MessagePack,
        ),
        (
            vec![Encoding::MessagePack],
            Encoding::Json,
            Encoding::MessagePack,
        ),
    ] {
        let (client_end, mut server) = pair();
        let handshake = async { accept_v2(&mut server, &offered).await };
        let options = ClientOptions::new().encoding(wanted);
        let (client, ()) = tokio::join!(Client::from_io(client_end, options), handshake);
        let client = client.unwrap();
        assert_eq!(client.encodings(), offered);
        assert_eq!(client.encoding(), picked, "offered {offered:?}");
    }
}

#[tokio::test]
async fn a_hello_reply_that_does_not_parse_fails_the_connect() {
    let (client_end, mut server) = pair();
    let serving = async {
        greet(&mut server).await;
        // Version 1 in a reply: not a reply at all.
        let bad = Frame::new(Kind::Hello, 0, Bytes::from_static(b"PSVC\x01\x00"));
        server.send(bad).await.unwrap();
    };
    let (client, ()) = tokio::join!(Client::from_io(client_end, ClientOptions::new()), serving);
    let err = client.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("HELLO reply"), "{err}");
}

/// A client over a memory pair whose server side has shaken hands.
async fn connected(options: ClientOptions) -> (Client, Raw) {
    connected_offering(options, &[]).await
}

/// A client with `options` on a server that offers `encodings`.
async fn connected_offering(options: ClientOptions, encodings: &[Encoding]) -> (Client, Raw) {
    let (client_end, mut server) = pair();
    let handshake = async { accept_v2(&mut server, encodings).await };
    let (client, ()) = tokio::join!(Client::from_io(client_end, options), handshake);
    (client.unwrap(), server)
}

/// `call` fails with its timeout, and its client then tells the server it
/// gave up: CANCEL for `id`.
async fn times_out_then_cancels(
    call: tokio::task::JoinHandle<pipesvc::Result<Bytes>>,
    server: &mut Raw,
    id: u32,
) {
    let err = guard(call).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err:?}");
    let cancel = next_frame(server).await;
    assert_eq!((cancel.kind, cancel.id), (Kind::Cancel, id));
}

/// A byte request with its own timeout, on a task.
fn request_within(
    client: &Client,
    timeout: Duration,
) -> tokio::task::JoinHandle<pipesvc::Result<Bytes>> {
    let client = client.clone();
    tokio::spawn(async move { client.request_with_timeout("x", Some(timeout)).await })
}

// A connection's calls share one timer, armed for the earliest deadline:
// a call due sooner than those already waiting must re-arm it.
#[tokio::test]
async fn a_call_due_sooner_than_those_waiting_times_out_first() {
    let (client, mut server) = connected(ClientOptions::new()).await;
    let patient = request_within(&client, Duration::from_secs(600));
    let first = next_frame(&mut server).await;
    let hasty = request_within(&client, Duration::from_millis(30));
    let second = next_frame(&mut server).await;
    let err = guard(hasty).await.unwrap().unwrap_err();
    match err {
        Error::Timeout(limit, what) => {
            assert_eq!(limit, Duration::from_millis(30));
            assert_eq!(what, "waiting for the answer to the request");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The server hears that the caller gave up, as when a caller drops it.
    let cancel = next_frame(&mut server).await;
    assert_eq!((cancel.kind, cancel.id), (Kind::Cancel, second.id));
    // The other call still waits, and gets its answer.
    server
        .send(Frame::new(Kind::Response, first.id, Bytes::from("late")))
        .await
        .unwrap();
    assert_eq!(guard(patient).await.unwrap().unwrap(), Bytes::from("late"));
}

// After a GOODBYE the server still answers the calls in flight; one it
// never answers still times out (the client does not reconnect).
#[tokio::test]
async fn a_call_in_flight_when_the_server_says_goodbye_still_times_out() {
    let (client, mut server) = connected(ClientOptions::new()).await;
    let call = request_within(&client, Duration::from_millis(30));
    let sent = next_frame(&mut server).await;
    server
        .send(Frame::new(Kind::Goodbye, 0, Bytes::from("restarting")))
        .await
        .unwrap();
    times_out_then_cancels(call, &mut server, sent.id).await;
}

// A close waits for the calls in flight (within its own limit, here far
// off): one whose deadline passes meanwhile fails with its timeout, and
// the close then goes on.
#[tokio::test]
async fn a_call_in_flight_while_the_client_closes_times_out_by_its_deadline() {
    let options = ClientOptions::new().close_timeout(Duration::from_secs(600));
    let (client, mut server) = connected(options).await;
    let call = request_within(&client, Duration::from_millis(30));
    let sent = next_frame(&mut server).await;
    let closing = tokio::spawn({
        let client = client.clone();
        async move { client.close().await }
    });
    times_out_then_cancels(call, &mut server, sent.id).await;
    guard(closing).await.unwrap();
}
