//! Every frame the server must send fits its frame limit (PROTOCOL.md,
//! "Maximum frame length"): at the smallest limit a server accepts, every
//! kind of answer arrives, within the limit; below it the builder refuses
//! with the rule.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use futures_util::future::BoxFuture;
use pipesvc::protocol::{
    CallHeader, ClientHello, Encoding, ErrorCode, ErrorPayload, Frame, Kind, Status,
};
use pipesvc::server::{Calls, ConnectionContext, Handler, Server, ServerBuilder, ServiceError};
use pipesvc::Error;

/// The byte handler: `hold` never finishes, `fail` fails with a long
/// message, `big` answers more than any small frame holds; the rest is
/// echoed.
struct Bytewise;

impl Handler for Bytewise {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        match &request[..] {
            b"hold" => std::future::pending().await,
            b"fail" => Err(ServiceError::new("ü".repeat(500))),
            b"big" => Ok(Bytes::from(vec![7u8; 100_000])),
            _ => Ok(request),
        }
    }
}

/// Typed methods in both encodings: `echo`, `hold` (never finishes),
/// `whoami` (an answer larger than a small frame).
struct Methods;

impl Calls for Methods {
    fn encodings(&self) -> &[Encoding] {
        &[Encoding::MessagePack, Encoding::Json]
    }

    fn description(&self) -> Bytes {
        Bytes::from_static(br#"{"service":"limits","version":"1","protocol":2,"encodings":["msgpack","json"],"methods":[{"name":"echo"},{"name":"hold"},{"name":"whoami"}]}"#)
    }

    fn call(
        &self,
        method: &str,
        _encoding: Encoding,
        params: Bytes,
        _ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
        match method {
            "echo" => Box::pin(async move { Ok(params) }),
            "hold" => Box::pin(std::future::pending()),
            "whoami" => Box::pin(async move { Ok(Bytes::from(format!("{:0>200}", 42))) }),
            other => {
                let err = ServiceError::unknown_method(other);
                Box::pin(async move { Err(err) })
            }
        }
    }
}

fn builder(max: u32) -> ServerBuilder<Bytewise> {
    Server::builder(unique_endpoint("limits"))
        .name("pipesvc")
        .handler(Bytewise)
        .calls(Methods)
        .max_frame_len(max)
}

/// The smallest frame limit the builder accepts for this service.
fn smallest_limit() -> u32 {
    (6..=4096)
        .find(|&max| builder(max).build().is_ok())
        .expect("some limit is accepted")
}

/// A raw client that checks every frame it reads against the limit.
struct Checked {
    raw: RawClient,
    max: u32,
}

impl Checked {
    async fn recv(&mut self) -> Option<Frame> {
        let frame = guard(self.raw.recv()).await?;
        assert!(
            frame.wire_len() - 4 <= self.max as usize,
            "a frame of length {} over the limit of {}: {frame:?}",
            frame.wire_len() - 4,
            self.max
        );
        Some(frame)
    }

    async fn answer(&mut self) -> Frame {
        loop {
            let frame = self.recv().await.expect("an answer, not the end");
            if frame.kind != Kind::Notify {
                return frame;
            }
        }
    }

    /// Expects ERROR `code` for `id`; for id 0, then the end.
    async fn error(&mut self, id: u32, code: ErrorCode) -> String {
        let frame = self.answer().await;
        assert_eq!((frame.kind, frame.id), (Kind::Error, id), "{frame:?}");
        let error = ErrorPayload::decode(&frame.payload).expect("an ERROR payload");
        assert_eq!(error.code, code, "{}", error.message);
        if id == 0 {
            assert_eq!(self.recv().await, None, "the end follows ERROR id 0");
        }
        error.message
    }

    async fn send(&mut self, frame: Frame) {
        self.raw.send(frame).await;
    }
}

async fn v1(serving: &TestServer, max: u32) -> Checked {
    let stream = serving.memory_stream().expect("a stream");
    let (raw, hello) = RawClient::handshake_over(stream).await;
    assert_eq!(hello.max_frame_len, max);
    Checked { raw, max }
}

async fn v2(serving: &TestServer, max: u32) -> Checked {
    let stream = serving.memory_stream().expect("a stream");
    let (raw, _, reply) = RawClient::handshake_v2_over(stream).await;
    assert_eq!(reply.version, 2);
    Checked { raw, max }
}

/// A client that has read the server's HELLO and sent nothing.
async fn before_hello(serving: &TestServer, max: u32) -> Checked {
    let mut checked = Checked {
        raw: RawClient::over(serving.memory_stream().expect("a stream")),
        max,
    };
    let hello = checked.recv().await.expect("the server's HELLO");
    assert_eq!(hello.kind, Kind::Hello);
    checked
}

fn call(id: u32, method: &str, encoding: Encoding, params: &[u8]) -> Frame {
    let payload = CallHeader::new(method, encoding)
        .encode_with(params)
        .expect("a header");
    Frame::new(Kind::Call, id, payload)
}

#[tokio::test]
async fn at_the_smallest_limit_every_kind_of_answer_arrives_and_fits() {
    let max = smallest_limit();
    let payload_room = max as usize - 6;
    let serving = TestServer::start(
        builder(max)
            .shutdown_timeout(Duration::ZERO)
            .build()
            .expect("the smallest limit builds"),
    );

    // Answers the server makes itself, and the service's.
    let mut client = v2(&serving, max).await;
    client
        .send(Frame::new(Kind::Ping, 1, vec![1u8; payload_room]))
        .await;
    assert_eq!(client.answer().await.payload.len(), payload_room, "PONG");
    client.send(Frame::new(Kind::Status, 2, Bytes::new())).await;
    let status = client.answer().await;
    assert_eq!((status.kind, status.id), (Kind::Response, 2), "{status:?}");
    Status::decode(&status.payload).expect("a STATUS answer with its fixed counts");
    client
        .send(Frame::new(Kind::Describe, 3, Bytes::new()))
        .await;
    let describe = client.answer().await;
    assert_eq!(describe.id, 3);
    if describe.kind == Kind::Error {
        let error = ErrorPayload::decode(&describe.payload).unwrap();
        assert_eq!(error.code, ErrorCode::FRAME_TOO_LARGE, "{}", error.message);
    } else {
        assert_eq!(describe.kind, Kind::Response);
    }
    client
        .send(Frame::request(4, vec![2u8; payload_room]))
        .await;
    assert_eq!(
        client.answer().await.payload.len(),
        payload_room,
        "RESPONSE"
    );
    client.send(Frame::request(5, "fail")).await;
    let cut = client.error(5, ErrorCode::HANDLER_FAILED).await;
    assert!(!cut.is_empty() && cut.chars().all(|c| c == 'ü'), "{cut}");
    client.send(Frame::request(6, "big")).await;
    client.error(6, ErrorCode::FRAME_TOO_LARGE).await;
    client.send(call(7, "whoami", Encoding::Json, b"")).await;
    client.error(7, ErrorCode::FRAME_TOO_LARGE).await;
    let long_name = "m".repeat(payload_room - 8);
    client.send(call(8, &long_name, Encoding::Json, b"")).await;
    let unknown = client.error(8, ErrorCode::UNKNOWN_METHOD).await;
    assert!(unknown.contains("mmmm"), "{unknown}");
    let mut header = CallHeader::new("echo", Encoding::Json);
    header.encoding = 9;
    let odd = Frame::new(Kind::Call, 9, header.encode_with(b"1").unwrap());
    client.send(odd).await;
    client.error(9, ErrorCode::BAD_REQUEST).await;
    client.send(call(10, "hold", Encoding::Json, b"")).await;
    client
        .send(Frame::new(Kind::Cancel, 10, Bytes::new()))
        .await;
    client.error(10, ErrorCode::CANCELLED).await;
    let timed = CallHeader::new("hold", Encoding::Json)
        .with_timeout(Some(Duration::from_millis(1)))
        .encode_with(b"")
        .unwrap();
    client.send(Frame::new(Kind::Call, 11, timed)).await;
    client.error(11, ErrorCode::TIMED_OUT).await;
    client
        .send(Frame::new(Kind::Unknown(200), 12, Bytes::new()))
        .await;
    client.error(12, ErrorCode::UNKNOWN_KIND).await;

    // ERRORs for the connection, each the last frame.
    let mut client = v1(&serving, max).await;
    client.raw.send_raw(&(max + 1).to_le_bytes()).await;
    client.error(0, ErrorCode::FRAME_TOO_LARGE).await;
    let mut client = v2(&serving, max).await;
    client.send(Frame::request(1, "hold")).await;
    client.send(Frame::request(1, "hold")).await;
    client.error(0, ErrorCode::DUPLICATE_ID).await;
    let mut client = v2(&serving, max).await;
    client.send(Frame::response(1, "no")).await;
    client.error(0, ErrorCode::UNEXPECTED_FRAME).await;
    let mut client = v1(&serving, max).await;
    client.raw.send_raw(&[6, 0, 0, 0, 7, 9, 1, 0, 0, 0]).await;
    client.error(0, ErrorCode::MALFORMED_FRAME).await;
    let mut client = v1(&serving, max).await;
    client.send(Frame::new(Kind::Ping, 0, Bytes::new())).await;
    client.error(0, ErrorCode::MALFORMED_FRAME).await;

    // Before the handshake.
    let mut client = before_hello(&serving, max).await;
    client.send(Frame::request(1, "early")).await;
    client.error(0, ErrorCode::UNEXPECTED_FRAME).await;
    let mut client = before_hello(&serving, max).await;
    let mut long_hello = ClientHello::new().encode().to_vec();
    long_hello.resize(payload_room + 1, 0);
    client.send(Frame::new(Kind::Hello, 0, long_hello)).await;
    client.error(0, ErrorCode::FRAME_TOO_LARGE).await;
    let mut client = before_hello(&serving, max).await;
    client.send(Frame::new(Kind::Hello, 0, "PSVC\0\0")).await;
    client.error(0, ErrorCode::UNSUPPORTED_VERSION).await;

    // The shutdown: GOODBYE, then the request still running is answered.
    let mut client = v2(&serving, max).await;
    client.send(Frame::request(1, "hold")).await;
    client.send(Frame::new(Kind::Ping, 2, Bytes::new())).await;
    assert_eq!(client.answer().await.kind, Kind::Pong);
    serving.handle().shutdown();
    assert_eq!(client.answer().await.kind, Kind::Goodbye);
    client.error(1, ErrorCode::SHUTTING_DOWN).await;
    assert_eq!(client.recv().await, None);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn at_the_smallest_limit_refusals_and_timeouts_fit_too() {
    let max = smallest_limit();
    let serving = TestServer::start(
        builder(max)
            .max_connections(1)
            .handshake_timeout(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    // The one slot is taken by a client that never says HELLO: it gets
    // ERROR `timed out`; meanwhile another is refused `overloaded`.
    let mut silent = before_hello(&serving, max).await;
    let mut refused = Checked {
        raw: RawClient::over(serving.memory_stream().unwrap()),
        max,
    };
    refused.error(0, ErrorCode::OVERLOADED).await;
    silent.error(0, ErrorCode::TIMED_OUT).await;
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn below_the_smallest_limit_the_builder_says_which_frame_needs_more() {
    let max = smallest_limit();
    // The STATUS answer with its fixed counts is the largest frame every
    // server must be able to send: `length` 74.
    assert_eq!(max, 74);
    let err = builder(max - 1).build().unwrap_err();
    let Error::Config { setting, message } = &err else {
        panic!("expected a config error, got {err}");
    };
    assert_eq!(setting, "max_frame_len");
    assert!(
        message.contains("at least 74, not 73") && message.contains("STATUS"),
        "{message}"
    );
    // A long server name needs a longer HELLO, and so a larger limit.
    let name = "n".repeat(100);
    let err = builder(max).name(name.clone()).build().unwrap_err();
    assert!(err.to_string().contains("at least 116, not 74"), "{err}");
    builder(116).name(name).build().expect("the HELLO fits");
}
