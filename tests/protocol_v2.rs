//! The server side of protocol version 2 (PROTOCOL.md, "Version 2"), frame
//! by frame, as a client written from PROTOCOL.md alone sees it: the HELLO
//! reply, CALL, CANCEL, deadlines, DESCRIBE, unknown kinds, and the
//! in-flight limit; and that a version 1 client sees none of it.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{guard, unique_endpoint, RawClient, TestServer};
use futures_util::future::BoxFuture;
use pipesvc::protocol::{
    CallHeader, Encoding, ErrorCode, ErrorPayload, Frame, FrameCodec, Kind, Status,
};
use pipesvc::server::{Calls, ConnectionContext, Handler, Server, ServerBuilder, ServiceError};
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

/// What the handlers report to the test.
#[derive(Debug)]
enum Seen {
    /// A holding handler started: its cancelled signal and deadline.
    Started(Option<CancellationToken>, Option<tokio::time::Instant>),
    /// A holding handler's future was dropped before it finished.
    Dropped,
}

/// Sends [`Seen::Dropped`] when dropped: a handler holding it was stopped.
struct DropFlag(mpsc::UnboundedSender<Seen>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        let _ = self.0.send(Seen::Dropped);
    }
}

/// Reports, then never finishes (until dropped).
async fn hold(seen: mpsc::UnboundedSender<Seen>, ctx: &ConnectionContext) -> ! {
    let _ = seen.send(Seen::Started(ctx.cancellation(), ctx.deadline()));
    let _flag = DropFlag(seen);
    std::future::pending().await
}

/// The byte handler: `hold` holds, anything else is echoed.
struct Bytewise(mpsc::UnboundedSender<Seen>);

impl Handler for Bytewise {
    async fn call(&self, request: Bytes, ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        match &request[..] {
            b"hold" => hold(self.0.clone(), &ctx).await,
            // The metadata the handler sees, as `key=value;...`.
            b"metadata" => Ok(ctx
                .metadata_entries()
                .iter()
                .map(|(k, v)| format!("{k}={v};"))
                .collect::<String>()
                .into()),
            _ => Ok(request),
        }
    }
}

/// Typed methods written by hand against the real trait: `echo`, `wait`
/// (holds), `panic`; JSON only.
struct Methods(mpsc::UnboundedSender<Seen>);

const DESCRIPTION: &str = r#"{"service":"test","version":"1","protocol":2,"encodings":["json"],"methods":[{"name":"echo"}]}"#;

impl Calls for Methods {
    fn encodings(&self) -> &[Encoding] {
        &[Encoding::Json]
    }

    fn description(&self) -> Bytes {
        Bytes::from_static(DESCRIPTION.as_bytes())
    }

    fn call(
        &self,
        method: &str,
        _encoding: Encoding,
        params: Bytes,
        ctx: ConnectionContext,
    ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
        let seen = self.0.clone();
        match method {
            "echo" => Box::pin(async move { Ok(params) }),
            "wait" => Box::pin(async move { hold(seen, &ctx).await }),
            "panic" => Box::pin(async move { panic!("asked to panic") }),
            other => {
                let err = ServiceError::unknown_method(other);
                Box::pin(async move { Err(err) })
            }
        }
    }
}

struct Fixture {
    serving: TestServer,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Fixture {
    /// A server in memory with the byte handler, typed methods if `typed`,
    /// and `configure`'s settings.
    fn start(
        test: &str,
        typed: bool,
        configure: impl FnOnce(ServerBuilder<Bytewise>) -> ServerBuilder<Bytewise>,
    ) -> Fixture {
        let (tx, seen) = mpsc::unbounded_channel();
        let mut builder = Server::builder(unique_endpoint(test)).handler(Bytewise(tx.clone()));
        if typed {
            builder = builder.calls(Methods(tx));
        }
        let server = configure(builder).build().expect("build");
        Fixture {
            serving: TestServer::start(server),
            seen,
        }
    }

    async fn v2(&self) -> RawClient {
        let stream = self.serving.memory_stream().expect("memory stream");
        RawClient::handshake_v2_over(stream).await.0
    }

    async fn v1(&self) -> RawClient {
        let stream = self.serving.memory_stream().expect("memory stream");
        RawClient::handshake_over(stream).await.0
    }

    /// The next thing a handler reports.
    async fn next_seen(&mut self) -> Seen {
        guard(self.seen.recv()).await.expect("a handler report")
    }

    async fn started(&mut self) -> (Option<CancellationToken>, Option<tokio::time::Instant>) {
        match self.next_seen().await {
            Seen::Started(token, deadline) => (token, deadline),
            other => panic!("expected a handler to start, got {other:?}"),
        }
    }

    async fn dropped(&mut self) {
        match self.next_seen().await {
            Seen::Dropped => {}
            other => panic!("expected a handler to be dropped, got {other:?}"),
        }
    }

    async fn stop(self) {
        guard(self.serving.stop()).await.expect("serve");
    }
}

/// A CALL frame.
fn call(id: u32, method: &str, encoding: u8, timeout_ms: u64, params: &[u8]) -> Frame {
    let mut header = CallHeader::new(method, Encoding::Json);
    header.encoding = encoding;
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
    let payload = header.with_timeout(timeout).encode_with(params).unwrap();
    Frame::new(Kind::Call, id, payload)
}

fn empty(kind: Kind, id: u32) -> Frame {
    Frame::new(kind, id, Bytes::new())
}

/// A frame's bytes on the wire.
fn wire(frame: Frame) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    FrameCodec::new(u32::MAX).encode(frame, &mut bytes).unwrap();
    bytes.to_vec()
}

/// The hex bytes as PROTOCOL.md writes them (`1c 00 ...`).
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

async fn next(client: &mut RawClient) -> Frame {
    guard(client.recv()).await.expect("a frame")
}

/// Expects ERROR `code` for `id` (not 0); its message.
async fn expect_error(client: &mut RawClient, id: u32, code: ErrorCode) -> String {
    guard(client.expect_error(id, code)).await
}

async fn status_of(client: &mut RawClient, id: u32) -> Status {
    client.send(empty(Kind::Status, id)).await;
    let answer = next(client).await;
    assert_eq!((answer.kind, answer.id), (Kind::Response, id), "{answer:?}");
    Status::decode(&answer.payload).expect("a STATUS payload")
}

async fn ping(client: &mut RawClient, id: u32) {
    client.send(Frame::new(Kind::Ping, id, "p")).await;
    assert_eq!(next(client).await, Frame::new(Kind::Pong, id, "p"));
}

#[tokio::test]
async fn the_hello_reply_lists_the_services_encodings_in_its_own_order() {
    // A service preferring JSON, then MessagePack (`pipesvc serve` prefers
    // MessagePack: PROTOCOL.md's example, checked by tests/protocol_md.rs).
    struct Both;
    impl Calls for Both {
        fn encodings(&self) -> &[Encoding] {
            &[Encoding::Json, Encoding::MessagePack]
        }
        fn description(&self) -> Bytes {
            Bytes::new()
        }
        fn call(
            &self,
            method: &str,
            _: Encoding,
            _: Bytes,
            _: ConnectionContext,
        ) -> BoxFuture<'static, Result<Bytes, ServiceError>> {
            let err = ServiceError::unknown_method(method);
            Box::pin(async move { Err(err) })
        }
    }
    let both = Server::builder(unique_endpoint("v2-reply-bytes"))
        .calls(Both)
        .build()
        .unwrap();
    let serving = TestServer::start(both);
    let stream = serving.memory_stream().unwrap();
    let (mut client, hello) = RawClient::over(stream).say_hello_version(2).await;
    assert_eq!(hello.version, 1, "the first HELLO still says 1");
    let reply = next(&mut client).await;
    let expected = "27 00 00 00 01 00 00 00 00 00 50 53 56 43 02 00 01 02 00 01 02 \
                    02 0c 00 01 02 05 07 09 0a 0b 0c 0d 0e 0f 10 03 04 00 00 00 04 00";
    assert_eq!(wire(reply), hex(expected));
    ping(&mut client, 1).await;
    guard(serving.stop()).await.unwrap();

    // Without typed methods the encodings field is empty; a client naming
    // a later version (9) is served version 2.
    let fixture = Fixture::start("v2-reply-none", false, |b| b);
    let stream = fixture.serving.memory_stream().unwrap();
    let (mut client, _) = RawClient::over(stream).say_hello_version(9).await;
    let reply = next(&mut client).await;
    let expected = "25 00 00 00 01 00 00 00 00 00 50 53 56 43 02 00 01 00 00 \
                    02 0c 00 01 02 05 07 09 0a 0b 0c 0d 0e 0f 10 03 04 00 00 00 04 00";
    assert_eq!(wire(reply), hex(expected));
    fixture.stop().await;
}

#[tokio::test]
async fn a_v1_client_sees_the_v1_exchange_and_v2_kinds_are_unknown_to_it() {
    let fixture = Fixture::start("v1-unchanged", true, |b| b);
    let mut client = fixture.v1().await;
    // No HELLO reply: the first frame after the handshake is the PONG.
    ping(&mut client, 1).await;
    client.send(Frame::request(2, "hi")).await;
    assert_eq!(next(&mut client).await, Frame::response(2, "hi"));
    // A STATUS answer a v1 reader decodes (it ignores the appended counts).
    status_of(&mut client, 3).await;
    for frame in [
        call(4, "echo", 1, 0, b"1"),
        empty(Kind::Cancel, 4),
        empty(Kind::Describe, 4),
        empty(Kind::Unknown(200), 4),
    ] {
        let mut client = fixture.v1().await;
        client.send(frame).await;
        let message = expect_error(&mut client, 0, ErrorCode::UNKNOWN_KIND).await;
        assert!(message.contains("kind"), "{message}");
    }
    fixture.stop().await;
}

#[tokio::test]
async fn a_call_of_the_empty_method_reaches_the_byte_handler() {
    for typed in [false, true] {
        let fixture = Fixture::start("call-bytes", typed, |b| b);
        let mut client = fixture.v2().await;
        // The encoding byte is ignored for the byte handler.
        client.send(call(1, "", 0, 0, b"raw \x00 bytes")).await;
        assert_eq!(
            next(&mut client).await,
            Frame::response(1, "raw \x00 bytes")
        );
        client.send(call(2, "", 7, 5000, b"x")).await;
        assert_eq!(next(&mut client).await, Frame::response(2, "x"));
        fixture.stop().await;
    }
}

#[tokio::test]
async fn typed_calls_answer_bad_requests_and_unknown_methods_and_carry_on() {
    let fixture = Fixture::start("call-errors", true, |b| b);
    let mut client = fixture.v2().await;
    client.send(call(1, "echo", 1, 0, b"{\"a\":1}")).await;
    assert_eq!(next(&mut client).await, Frame::response(1, "{\"a\":1}"));

    client.send(call(2, "no.such", 1, 0, b"{}")).await;
    let message = expect_error(&mut client, 2, ErrorCode::UNKNOWN_METHOD).await;
    assert!(message.contains("no.such"), "{message}");

    // MessagePack (2) and an unknown byte (9) are not offered.
    for encoding in [2, 9] {
        client.send(call(3, "echo", encoding, 0, b"{}")).await;
        let message = expect_error(&mut client, 3, ErrorCode::BAD_REQUEST).await;
        assert!(message.contains("json"), "{message}");
    }

    // Headers cut short, and a method name that is not UTF-8.
    for payload in [
        &b""[..],
        b"\x01",
        b"\x01\x05ech",
        b"\x01\x04echo\x00\x00",
        b"\x01\x01\xff\x00\x00\x00\x00\x00",
    ] {
        client
            .send(Frame::new(Kind::Call, 4, payload.to_vec()))
            .await;
        let message = expect_error(&mut client, 4, ErrorCode::BAD_REQUEST).await;
        assert!(message.contains("CALL"), "{message}");
    }

    // A typed method that panics: handler failed, the connection carries on.
    client.send(call(5, "panic", 1, 0, b"{}")).await;
    expect_error(&mut client, 5, ErrorCode::HANDLER_FAILED).await;
    client.send(call(6, "echo", 1, 0, b"[]")).await;
    assert_eq!(next(&mut client).await, Frame::response(6, "[]"));

    // Without typed methods a named method is unknown.
    fixture.stop().await;
    let fixture = Fixture::start("call-untyped", false, |b| b);
    let mut client = fixture.v2().await;
    client.send(call(1, "echo", 1, 0, b"{}")).await;
    let message = expect_error(&mut client, 1, ErrorCode::UNKNOWN_METHOD).await;
    assert!(message.contains("echo"), "{message}");
    fixture.stop().await;
}

#[tokio::test]
async fn a_cancelled_request_is_dropped_answered_once_and_its_slot_freed() {
    let mut fixture = Fixture::start("cancel", true, |b| b.max_in_flight(1));
    let mut client = fixture.v2().await;
    let requests = [
        Frame::request(1, "hold"),
        call(1, "", 0, 0, b"hold"),
        call(1, "wait", 1, 0, b"{}"),
    ];
    for (n, request) in requests.into_iter().enumerate() {
        client.send(request).await;
        let (token, deadline) = fixture.started().await;
        // A REQUEST has no scope (nothing is allocated for it); its handler
        // sees the cancel as its future being dropped. A CALL has a signal.
        assert_eq!(token.is_none(), n == 0, "round {n}");
        assert_eq!(deadline, None, "no timeout was sent");
        assert!(!token.as_ref().is_some_and(|t| t.is_cancelled()));
        client.send(empty(Kind::Cancel, 1)).await;
        let message = expect_error(&mut client, 1, ErrorCode::CANCELLED).await;
        assert!(message.contains("cancel"), "{message}");
        fixture.dropped().await;
        if let Some(token) = token {
            guard(token.cancelled()).await;
        }
        // The one slot is free: the next request runs at once.
        client.send(Frame::request(2, "next")).await;
        assert_eq!(next(&mut client).await, Frame::response(2, "next"));
        // CANCELs of answered (and unknown) ids are ignored: the next
        // frame is the PONG, and the counts say one cancel per round.
        client.send(empty(Kind::Cancel, 2)).await;
        client.send(empty(Kind::Cancel, 1)).await;
        client.send(empty(Kind::Cancel, 99)).await;
        ping(&mut client, 3).await;
        let status = status_of(&mut client, 4).await;
        assert_eq!(status.requests_cancelled, n as u64 + 1);
        assert_eq!(status.requests_timed_out, 0);
    }
    // A CANCEL with id 0 is malformed.
    client.send(empty(Kind::Cancel, 0)).await;
    expect_error(&mut client, 0, ErrorCode::MALFORMED_FRAME).await;
    fixture.stop().await;
}

#[tokio::test]
async fn the_server_stops_a_call_at_its_deadline() {
    let mut fixture = Fixture::start("deadline", true, |b| b);
    let mut client = fixture.v2().await;
    for (id, request) in [
        (1, call(1, "wait", 1, 50, b"{}")),
        (2, call(2, "", 1, 50, b"hold")),
    ] {
        client.send(request).await;
        let (token, deadline) = fixture.started().await;
        assert!(deadline.is_some(), "the handler sees the deadline");
        // The client waits far longer (the hang guard's minute): the
        // server's answer is what arrives.
        let message = expect_error(&mut client, id, ErrorCode::TIMED_OUT).await;
        assert!(message.contains("timeout"), "{message}");
        fixture.dropped().await;
        assert!(token.expect("a cancelled signal").is_cancelled());
    }
    let status = status_of(&mut client, 3).await;
    assert_eq!(
        (status.requests_timed_out, status.requests_cancelled),
        (2, 0)
    );
    // A cancel is counted apart.
    client.send(call(4, "wait", 1, 0, b"{}")).await;
    fixture.started().await;
    client.send(empty(Kind::Cancel, 4)).await;
    expect_error(&mut client, 4, ErrorCode::CANCELLED).await;
    let status = status_of(&mut client, 5).await;
    assert_eq!(
        (status.requests_timed_out, status.requests_cancelled),
        (2, 1)
    );
    fixture.stop().await;
}

#[tokio::test]
async fn a_call_due_sooner_than_one_running_is_stopped_at_its_own_deadline() {
    let mut fixture = Fixture::start("deadline-order", true, |b| b);
    let mut client = fixture.v2().await;
    // The connection keeps one timer for its calls' deadlines, armed for
    // the earliest: here the first call's, far off, until the second comes
    // due sooner. It must fire for the second alone (were it left at the
    // first's, both would be stopped together, 30 s on).
    client.send(call(1, "wait", 1, 30_000, b"{}")).await;
    fixture.started().await;
    client.send(call(2, "wait", 1, 50, b"{}")).await;
    fixture.started().await;
    let message = expect_error(&mut client, 2, ErrorCode::TIMED_OUT).await;
    assert!(message.contains("timeout"), "{message}");
    fixture.dropped().await;
    let status = status_of(&mut client, 3).await;
    assert_eq!(status.requests_timed_out, 1, "the first call still runs");
    client.send(empty(Kind::Cancel, 1)).await;
    expect_error(&mut client, 1, ErrorCode::CANCELLED).await;
    fixture.dropped().await;
    fixture.stop().await;
}

#[tokio::test]
async fn a_v1_request_has_no_scope() {
    // An EOF over memory reads as a half-close: the request then gets the
    // shutdown timeout, here none, before it is dropped.
    let mut fixture = Fixture::start("v1-scope", true, |b| b.shutdown_timeout(Duration::ZERO));
    let mut client = fixture.v1().await;
    client.send(Frame::request(1, "hold")).await;
    let (token, deadline) = fixture.started().await;
    assert!(token.is_none() && deadline.is_none());
    drop(client);
    fixture.dropped().await;
    fixture.stop().await;
}

#[tokio::test]
async fn unknown_kinds_with_an_id_are_answered_and_without_one_ignored() {
    let fixture = Fixture::start("unknown-kinds", true, |b| b);
    let mut client = fixture.v2().await;
    client.send(empty(Kind::Unknown(200), 4)).await;
    let message = expect_error(&mut client, 4, ErrorCode::UNKNOWN_KIND).await;
    assert!(message.contains("200"), "{message}");
    client
        .send(Frame::new(Kind::Unknown(17), 5, "a payload"))
        .await;
    expect_error(&mut client, 5, ErrorCode::UNKNOWN_KIND).await;
    // Id 0: ignored, so the PONG is the next frame.
    client.send(empty(Kind::Unknown(200), 0)).await;
    client.send(empty(Kind::Unknown(0), 0)).await;
    ping(&mut client, 6).await;
    // Kinds a client may never send still close.
    client.send(Frame::response(7, "")).await;
    expect_error(&mut client, 0, ErrorCode::UNEXPECTED_FRAME).await;

    // An unknown kind reusing an id in flight is a duplicate id.
    let mut client = fixture.v2().await;
    client.send(Frame::request(8, "hold")).await;
    client.send(empty(Kind::Unknown(200), 8)).await;
    expect_error(&mut client, 0, ErrorCode::DUPLICATE_ID).await;
    fixture.stop().await;
}

#[tokio::test]
async fn a_frame_reusing_the_id_of_a_request_in_flight_is_a_duplicate_id() {
    // Every kind whose answer carries its id (PING, STATUS and DESCRIBE
    // too: their answers would share the id with the request's), whether
    // the request runs or waits at the in-flight limit.
    let fixture = Fixture::start("duplicate-ids", true, |b| b.max_in_flight(1));
    for kind in [
        Kind::Ping,
        Kind::Status,
        Kind::Describe,
        Kind::Unknown(200),
        Kind::Request,
        Kind::Call,
    ] {
        for id in [1, 2] {
            let mut client = fixture.v2().await;
            client.send(Frame::request(1, "hold")).await;
            client.send(Frame::request(2, "parked")).await;
            let reused = match kind {
                Kind::Call => call(id, "", 0, 0, b"x"),
                Kind::Request => Frame::request(id, "x"),
                other => empty(other, id),
            };
            client.send(reused).await;
            let message = expect_error(&mut client, 0, ErrorCode::DUPLICATE_ID).await;
            assert!(message.contains(&format!("id {id}")), "{kind:?}: {message}");
        }
    }
    // Frames answered at once are not in flight once answered: the same id
    // again is fine, and so is the id of a request that was answered.
    let mut client = fixture.v2().await;
    ping(&mut client, 5).await;
    ping(&mut client, 5).await;
    client.send(Frame::request(6, "done")).await;
    assert_eq!(next(&mut client).await, Frame::response(6, "done"));
    ping(&mut client, 6).await;
    fixture.stop().await;
}

#[tokio::test]
async fn before_the_handshake_every_frame_but_hello_is_an_unexpected_frame() {
    // Whatever its kind: one of version 2 or one no version defines is
    // no different, since the version is not known yet.
    let fixture = Fixture::start("before-hello", true, |b| b);
    for frame in [
        Frame::request(1, "early"),
        Frame::new(Kind::Ping, 1, "p"),
        empty(Kind::Status, 1),
        call(1, "echo", 1, 0, b"1"),
        empty(Kind::Describe, 1),
        empty(Kind::Cancel, 1),
        empty(Kind::Unknown(200), 1),
        empty(Kind::Unknown(200), 0),
    ] {
        let kind = frame.kind;
        let mut client = RawClient::over(fixture.serving.memory_stream().unwrap());
        assert_eq!(next(&mut client).await.kind, Kind::Hello);
        client.send(frame).await;
        let message = expect_error(&mut client, 0, ErrorCode::UNEXPECTED_FRAME).await;
        assert!(message.contains("expected HELLO"), "{kind:?}: {message}");
    }
    fixture.stop().await;
}

#[tokio::test]
async fn reserved_metadata_is_not_passed_to_the_service() {
    // Keys starting with `pipesvc-` belong to the protocol: a handler
    // never sees them, so that no service comes to rely on one.
    let fixture = Fixture::start("reserved-metadata", false, |b| b);
    let mut client = fixture.v2().await;
    let metadata = vec![
        ("pipesvc-deadline".to_owned(), "1".to_owned()),
        ("trace".to_owned(), "ab".to_owned()),
        ("pipesvc-".to_owned(), "".to_owned()),
        ("Pipesvc-case".to_owned(), "kept".to_owned()),
    ];
    let payload = CallHeader::new("", Encoding::Json)
        .with_metadata(metadata)
        .encode_with(b"metadata")
        .unwrap();
    client.send(Frame::new(Kind::Call, 1, payload)).await;
    assert_eq!(
        next(&mut client).await,
        Frame::response(1, "trace=ab;Pipesvc-case=kept;")
    );
    fixture.stop().await;
}

#[tokio::test]
async fn payloads_of_status_describe_and_cancel_are_ignored() {
    let fixture = Fixture::start("ignored-payloads", true, |b| b);
    let mut client = fixture.v2().await;
    client.send(Frame::new(Kind::Status, 1, "ignored")).await;
    let status = next(&mut client).await;
    assert_eq!((status.kind, status.id), (Kind::Response, 1));
    Status::decode(&status.payload).expect("the STATUS answer");
    client.send(Frame::new(Kind::Describe, 2, "ignored")).await;
    assert_eq!(next(&mut client).await, Frame::response(2, DESCRIPTION));
    client.send(Frame::request(3, "hold")).await;
    client.send(Frame::new(Kind::Cancel, 3, "ignored")).await;
    expect_error(&mut client, 3, ErrorCode::CANCELLED).await;
    fixture.stop().await;
}

/// Fills the in-flight limit (64) with requests that never end, parks one
/// more, then CANCELs the 64 and PINGs: every one is answered.
async fn abandon_64_then_ping(fixture: &Fixture, request: impl Fn(u32) -> Frame) {
    let mut client = fixture.v2().await;
    for id in 1..=65 {
        client.send(request(id)).await;
    }
    for id in 1..=64 {
        client.send(empty(Kind::Cancel, id)).await;
    }
    client.send(Frame::new(Kind::Ping, 100, "alive?")).await;
    let mut cancelled = Vec::new();
    loop {
        let frame = next(&mut client).await;
        if frame.kind == Kind::Pong {
            assert_eq!(frame, Frame::new(Kind::Pong, 100, "alive?"));
            break;
        }
        assert_eq!(frame.kind, Kind::Error, "{frame:?}");
        let error = ErrorPayload::decode(&frame.payload).unwrap();
        assert_eq!(error.code, ErrorCode::CANCELLED, "{}", error.message);
        cancelled.push(frame.id);
    }
    cancelled.sort_unstable();
    assert_eq!(cancelled, (1..=64).collect::<Vec<_>>());
    // The parked one started once a slot was free, and can go too.
    client.send(empty(Kind::Cancel, 65)).await;
    expect_error(&mut client, 65, ErrorCode::CANCELLED).await;
    ping(&mut client, 101).await;
}

#[tokio::test]
async fn sixty_four_abandoned_requests_do_not_wedge_the_connection() {
    let fixture = Fixture::start("abandoned-requests", true, |b| b);
    abandon_64_then_ping(&fixture, |id| Frame::request(id, "hold")).await;
    abandon_64_then_ping(&fixture, |id| call(id, "wait", 1, 0, b"{}")).await;
    fixture.stop().await;
}

#[tokio::test]
async fn at_the_limit_ping_status_and_describe_are_read_past_a_parked_request() {
    let fixture = Fixture::start("at-limit", true, |b| b.max_in_flight(1));
    let mut client = fixture.v2().await;
    // The one slot: a call the server stops after 50 ms.
    client.send(call(1, "", 0, 50, b"hold")).await;
    client.send(Frame::request(2, "parked")).await;
    ping(&mut client, 3).await;
    status_of(&mut client, 4).await;
    client.send(empty(Kind::Describe, 5)).await;
    assert_eq!(next(&mut client).await, Frame::response(5, DESCRIPTION));
    // A REQUEST behind the parked one waits with it, and reading stops:
    // the PING after it is read (and answered) only once both ran.
    client.send(Frame::request(6, "behind")).await;
    client.send(Frame::new(Kind::Ping, 7, "p")).await;
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(next(&mut client).await);
    }
    let why = "the request did not finish within its timeout";
    assert_eq!(
        frames,
        vec![
            Frame::error(1, ErrorCode::TIMED_OUT, why),
            Frame::response(2, "parked"),
            Frame::response(6, "behind"),
            Frame::new(Kind::Pong, 7, "p"),
        ]
    );
    // A CANCEL of the parked request itself answers it, unstarted.
    client.send(Frame::request(8, "hold")).await;
    client.send(Frame::request(9, "never started")).await;
    client.send(empty(Kind::Cancel, 9)).await;
    expect_error(&mut client, 9, ErrorCode::CANCELLED).await;
    client.send(empty(Kind::Cancel, 8)).await;
    expect_error(&mut client, 8, ErrorCode::CANCELLED).await;
    ping(&mut client, 10).await;
    fixture.stop().await;
}

#[tokio::test]
async fn describe_returns_the_description_or_the_default_one() {
    let fixture = Fixture::start("describe", true, |b| b);
    let mut client = fixture.v2().await;
    client.send(empty(Kind::Describe, 1)).await;
    assert_eq!(next(&mut client).await, Frame::response(1, DESCRIPTION));
    fixture.stop().await;

    let fixture = Fixture::start("describe-default", false, |b| b.name("a \"quoted\"\\name"));
    let mut client = fixture.v2().await;
    client.send(empty(Kind::Describe, 2)).await;
    let answer = next(&mut client).await;
    assert_eq!((answer.kind, answer.id), (Kind::Response, 2));
    let json: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "service": "a \"quoted\"\\name",
            "version": "",
            "protocol": 2,
            "encodings": [],
            "methods": [],
            "topics": [],
        })
    );
    client.send(empty(Kind::Describe, 0)).await;
    expect_error(&mut client, 0, ErrorCode::MALFORMED_FRAME).await;
    fixture.stop().await;
}

#[tokio::test]
async fn a_description_too_large_for_a_frame_is_frame_too_large() {
    let fixture = Fixture::start("describe-large", true, |b| b.max_frame_len(74));
    let mut client = fixture.v2().await;
    client.send(empty(Kind::Describe, 1)).await;
    expect_error(&mut client, 1, ErrorCode::FRAME_TOO_LARGE).await;
    ping(&mut client, 2).await;
    fixture.stop().await;
}

#[tokio::test]
async fn requests_in_flight_at_shutdown_are_dropped_with_their_signal() {
    let mut fixture = Fixture::start("shutdown-scope", true, |b| {
        b.shutdown_timeout(Duration::ZERO)
    });
    let mut client = fixture.v2().await;
    client.send(call(1, "wait", 1, 0, b"{}")).await;
    let (token, _) = fixture.started().await;
    fixture.serving.handle().shutdown();
    let frame = next(&mut client).await;
    assert_eq!(frame.kind, Kind::Goodbye);
    expect_error(&mut client, 1, ErrorCode::SHUTTING_DOWN).await;
    fixture.dropped().await;
    assert!(token.unwrap().is_cancelled());
    fixture.stop().await;
}
