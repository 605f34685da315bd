//! A client that does not wait for the server's HELLO (PROTOCOL.md,
//! "Handshake", revision 2.3): it writes its HELLO and its first requests
//! as soon as the connection opens, all in one write, before it reads
//! anything. Every frame is read, in order, under the right limits; a
//! refused client's early requests are not run; and pipesvc's own client
//! sends its HELLO first.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{guard, unique_endpoint, RawClient, TestServer};
use futures_util::{SinkExt, StreamExt};
use pipesvc::protocol::{
    CallHeader, ClientHello, Encoding, ErrorCode, ErrorPayload, Frame, FrameCodec, HelloReply,
    Kind, ServerHello,
};
use pipesvc::server::{ConnectionContext, Handler, Server, ServiceError};
use pipesvc::{Client, ClientOptions};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};

/// Echoes each REQUEST and counts them.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl Handler for Counting {
    async fn call(&self, request: Bytes, _: ConnectionContext) -> Result<Bytes, ServiceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    }
}

/// The bytes of `frames`, back to back: what one write sends.
fn wire(frames: impl IntoIterator<Item = Frame>) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    let mut codec = FrameCodec::new(u32::MAX);
    for frame in frames {
        codec.encode(frame, &mut bytes).unwrap();
    }
    bytes.to_vec()
}

/// pipesvc's client's HELLO (version 2, the kinds it accepts).
fn hello_v2() -> Frame {
    let kinds = [1, 3, 4, 5, 6, 8, 13, 14];
    let mut hello = ClientHello::new();
    hello.kinds = Some(pipesvc::protocol::KindSet::from_bytes(&kinds));
    Frame::new(Kind::Hello, 0, hello.encode())
}

fn call(id: u32, method: &str, encoding: Encoding, params: &'static [u8]) -> Frame {
    let payload = CallHeader::new(method, encoding)
        .encode_with(params)
        .unwrap();
    Frame::new(Kind::Call, id, payload)
}

async fn next(client: &mut RawClient) -> Frame {
    guard(client.recv()).await.expect("a frame")
}

/// Expects the server's HELLO, then (version 2) its HELLO reply.
async fn expect_handshake(client: &mut RawClient, version: u16) -> Option<HelloReply> {
    let hello = next(client).await;
    assert_eq!((hello.kind, hello.id), (Kind::Hello, 0), "{hello:?}");
    ServerHello::decode(&hello.payload).expect("the server's HELLO");
    if version < 2 {
        return None;
    }
    let reply = next(client).await;
    assert_eq!((reply.kind, reply.id), (Kind::Hello, 0), "{reply:?}");
    Some(HelloReply::decode(&reply.payload).expect("the HELLO reply"))
}

/// A server with the counting byte handler, `echo` in JSON, and one
/// request run at a time, so that answers come in the order read.
fn server(test: &str, counting: &Counting) -> TestServer {
    let server = Server::builder(unique_endpoint(test))
        .handler(counting.clone())
        .calls(common::JsonEcho)
        .max_in_flight(1)
        .build()
        .expect("build");
    TestServer::start(server)
}

/// HELLO and six frames behind it in one write, before anything is read:
/// the server answers the handshake, then every request, in order. The
/// second REQUEST is larger than the 256-byte limit before HELLO: the
/// server's own maximum applies to it, although it arrived in the same
/// read as the HELLO.
#[tokio::test]
async fn hello_and_requests_in_one_write_are_all_answered_in_order() {
    let counting = Counting::default();
    let serving = server("early-v2", &counting);
    let mut client = RawClient::over(serving.memory_stream().unwrap());
    let large = Bytes::from(vec![b'x'; 1000]);
    let frames = [
        hello_v2(),
        Frame::new(Kind::Request, 1, Bytes::from_static(b"one")),
        Frame::new(Kind::Request, 2, large.clone()),
        call(3, "echo", Encoding::Json, br#"{"a":1}"#),
        // The server offers JSON only: MessagePack is a `bad request`.
        call(4, "echo", Encoding::MessagePack, b"\x81\xa1a\x01"),
        Frame::new(Kind::Request, 5, Bytes::from_static(b"five")),
        Frame::new(Kind::Notify, 0, Bytes::from_static(b"note")),
    ];
    client.send_raw(&wire(frames)).await;
    let reply = expect_handshake(&mut client, 2).await.unwrap();
    assert_eq!(reply.known_encodings(), [Encoding::Json]);
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(next(&mut client).await);
    }
    let ids: Vec<u32> = answers.iter().map(|f| f.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "{answers:?}");
    assert_eq!(answers[0].payload, "one");
    assert_eq!(
        (answers[1].kind, &answers[1].payload),
        (Kind::Response, &large)
    );
    assert_eq!(answers[2].payload, r#"{"a":1}"#);
    assert_eq!(answers[3].kind, Kind::Error);
    let error = ErrorPayload::decode(&answers[3].payload).unwrap();
    assert_eq!(error.code, ErrorCode::BAD_REQUEST, "{}", error.message);
    assert_eq!(answers[4].payload, "five");
    assert_eq!(counting.0.load(Ordering::SeqCst), 3);
    // The connection carries on.
    client.send(Frame::new(Kind::Ping, 6, Bytes::new())).await;
    assert_eq!(next(&mut client).await.kind, Kind::Pong);
    guard(serving.stop()).await.expect("serve");
}

/// The same with a version 1 HELLO: version 1 clients may send early too
/// (the server's HELLO carries version 1 whatever it speaks).
#[tokio::test]
async fn a_v1_hello_and_requests_in_one_write_are_answered() {
    let counting = Counting::default();
    let serving = server("early-v1", &counting);
    let mut client = RawClient::over(serving.memory_stream().unwrap());
    let hello = Frame::new(Kind::Hello, 0, ClientHello::with_version(1).encode());
    let frames = [
        hello,
        Frame::new(Kind::Request, 7, Bytes::from_static(b"a")),
        Frame::new(Kind::Ping, 8, Bytes::new()),
        Frame::new(Kind::Request, 9, Bytes::from_static(b"b")),
    ];
    client.send_raw(&wire(frames)).await;
    expect_handshake(&mut client, 1).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(next(&mut client).await);
    }
    answers.sort_by_key(|f| f.id);
    let got: Vec<(Kind, u32)> = answers.iter().map(|f| (f.kind, f.id)).collect();
    assert_eq!(
        got,
        [(Kind::Response, 7), (Kind::Pong, 8), (Kind::Response, 9)]
    );
    assert_eq!(
        (&answers[0].payload[..], &answers[2].payload[..]),
        (&b"a"[..], &b"b"[..])
    );
    guard(serving.stop()).await.expect("serve");
}

/// A frame behind the HELLO over the server's maximum is `frame too
/// large`, close, as after any HELLO: the early client's own risk.
#[tokio::test]
async fn an_early_frame_over_the_servers_maximum_is_frame_too_large() {
    let counting = Counting::default();
    let server = Server::builder(unique_endpoint("early-too-large"))
        .handler(counting.clone())
        .max_frame_len(74)
        .build()
        .expect("build");
    let serving = TestServer::start(server);
    let mut client = RawClient::over(serving.memory_stream().unwrap());
    let frames = [
        hello_v2(),
        Frame::new(Kind::Request, 1, Bytes::from(vec![0u8; 100])),
    ];
    client.send_raw(&wire(frames)).await;
    expect_handshake(&mut client, 2).await;
    guard(client.expect_error(0, ErrorCode::FRAME_TOO_LARGE)).await;
    assert_eq!(counting.0.load(Ordering::SeqCst), 0);
    guard(serving.stop()).await.expect("serve");
}

/// A server at its connection limit answers ERROR `overloaded` in place
/// of its HELLO: the early requests behind the refused client's HELLO get
/// no answer, and none of them ran.
#[cfg(unix)]
#[tokio::test]
async fn early_requests_of_a_refused_client_are_not_run() {
    let counting = Counting::default();
    let endpoint = unique_endpoint("early-refused");
    let server = Server::builder(endpoint.clone())
        .handler(counting.clone())
        .max_connections(1)
        .bind()
        .expect("bind");
    let serving = TestServer::start(server);
    let (mut holder, _) = guard(RawClient::handshake(&endpoint)).await;
    guard(async {
        while serving.handle().connection_count() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mut refused = guard(RawClient::connect(&endpoint)).await;
    let frames = [
        hello_v2(),
        Frame::new(Kind::Request, 1, Bytes::from_static(b"one")),
        Frame::new(Kind::Request, 2, Bytes::from_static(b"two")),
    ];
    refused.send_raw(&wire(frames)).await;
    let message = guard(refused.expect_error(0, ErrorCode::OVERLOADED)).await;
    assert!(!message.is_empty());
    // The holder's request is the first the handler sees.
    holder
        .send(Frame::new(Kind::Request, 1, Bytes::from_static(b"held")))
        .await;
    let answer = next(&mut holder).await;
    assert_eq!((answer.kind, answer.id), (Kind::Response, 1));
    assert_eq!(counting.0.load(Ordering::SeqCst), 1);
    drop(holder);
    guard(serving.stop()).await.expect("serve");
}

/// pipesvc's client writes its HELLO before it reads anything: a server
/// that waits for it before sending its own HELLO still gets one (a client
/// that read first would wait for ever). Fails before revision 2.3's
/// client.
#[tokio::test]
async fn the_client_sends_its_hello_before_reading_the_servers() {
    let (ours, theirs) = pipesvc::transport::memory::pair();
    let (read, write) = tokio::io::split(theirs);
    let server = tokio::spawn(async move {
        let mut reader = FramedRead::new(read, FrameCodec::new(u32::MAX));
        let mut writer = FramedWrite::new(write, FrameCodec::new(u32::MAX));
        let hello = reader
            .next()
            .await
            .expect("a frame")
            .expect("a valid frame");
        assert_eq!((hello.kind, hello.id), (Kind::Hello, 0));
        let hello = ClientHello::decode(&hello.payload).expect("the client's HELLO");
        assert_eq!(hello.version, 2);
        let ours = ServerHello::new(1 << 20, "late");
        writer
            .send(Frame::new(Kind::Hello, 0, ours.encode()))
            .await
            .unwrap();
        let reply = HelloReply::new(2, &[Encoding::Json]);
        writer
            .send(Frame::new(Kind::Hello, 0, reply.encode()))
            .await
            .unwrap();
        // An answer to the first request.
        let request = reader
            .next()
            .await
            .expect("a frame")
            .expect("a valid frame");
        writer
            .send(Frame::new(Kind::Response, request.id, request.payload))
            .await
            .unwrap();
        (reader, writer)
    });
    let options = ClientOptions::new().handshake_timeout(Duration::from_secs(30));
    let client = guard(Client::from_io(ours, options))
        .await
        .expect("connect");
    assert_eq!(client.server_name(), "late");
    assert_eq!(guard(client.request("hi")).await.unwrap(), "hi");
    let _ends = guard(server).await.unwrap();
}

/// The start of a frame, then the end of input, all there before the
/// server sends anything (found by the `server` fuzz target: the server
/// sent nothing at all). The server's HELLO still comes first, whatever it
/// has received.
#[tokio::test]
async fn the_servers_hello_comes_first_even_when_the_input_ends_at_once() {
    use tokio::io::AsyncWriteExt;
    let counting = Counting::default();
    let serving = server("early-cut", &counting);
    let mut client = RawClient::over(serving.memory_stream().unwrap());
    // A 37-byte frame of which 14 bytes are sent, then the end of input.
    let cut = [0x25, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0x50, 0x53, 0x56, 0x43];
    client.send_raw(&cut).await;
    client
        .writer
        .get_mut()
        .shutdown()
        .await
        .expect("half-close");
    let hello = next(&mut client).await;
    assert_eq!((hello.kind, hello.id), (Kind::Hello, 0), "{hello:?}");
    ServerHello::decode(&hello.payload).expect("the server's HELLO");
    guard(serving.stop()).await.expect("serve");
}

/// A burst of requests the server reads at once is answered in one write,
/// with the handshake's HELLO and HELLO reply: frames already read are
/// taken before the write (they cost no system call), so their answers,
/// ready at once, leave together. (The server wrote once per request of
/// such a burst before issue 23's second stop: 17 writes here.)
#[tokio::test]
async fn a_burst_read_at_once_is_answered_in_one_write() {
    let counting = Counting::default();
    let serving = TestServer::start(
        Server::builder(unique_endpoint("burst-one-write"))
            .handler(counting.clone())
            .build()
            .expect("build"),
    );
    let (client_end, server_end) = pipesvc::transport::memory::pair();
    let mut client = RawClient::over(client_end);
    let requests = (1..=16).map(|id| Frame::new(Kind::Request, id, Bytes::from(format!("r{id}"))));
    // All of it is there before the server reads anything.
    client
        .send_raw(&wire(std::iter::once(hello_v2()).chain(requests)))
        .await;
    let (server_end, faults) = pipesvc::testing::Faulty::new(server_end);
    serving
        .handle()
        .serve_connection(server_end, pipesvc::transport::PeerInfo::current())
        .unwrap();
    expect_handshake(&mut client, 2).await.unwrap();
    for id in 1..=16 {
        let answer = next(&mut client).await;
        assert_eq!((answer.kind, answer.id), (Kind::Response, id), "{answer:?}");
        assert_eq!(answer.payload, format!("r{id}"));
    }
    assert_eq!(
        faults.writes(),
        1,
        "writes for the handshake and 16 answers"
    );
    assert_eq!(counting.0.load(Ordering::SeqCst), 16);
    guard(serving.stop()).await.expect("serve");
}
