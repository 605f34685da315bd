//! `ClientOptions::send_first`: connecting without a round trip
//! (PROTOCOL.md, "Sending first", revision 2.3). `connect` returns without
//! waiting for the server, the first requests go out with the client's
//! HELLO (in one write), and a handshake that then fails fails them with
//! the error `connect` would have returned.
//!
//! The scripted servers read the client's HELLO and its first request
//! before they send anything: a client that waited for the server's HELLO
//! would never send that request, and the test would hang (the guard
//! fails it).

mod common;

use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, RawClient};
use pipesvc::client::ConnectionState;
use pipesvc::error::CloseReason;
use pipesvc::protocol::{
    ClientHello, Encoding, ErrorCode, ErrorPayload, Frame, HelloReply, Kind, ServerHello,
};
use pipesvc::transport::memory;
use pipesvc::{Client, ClientOptions, Error};

fn send_first() -> ClientOptions {
    ClientOptions::new()
        .send_first(true)
        .handshake_timeout(Duration::from_secs(30))
}

/// The server's end of an in-memory pair, and a client that sent first
/// over the other end (connected before the server has sent anything).
async fn scripted() -> (RawClient, Client) {
    let (ours, theirs) = memory::pair();
    let client = guard(Client::from_io(ours, send_first()))
        .await
        .expect("connect: nothing but the HELLO to write");
    (RawClient::over(theirs), client)
}

/// Reads what the client sent first: its HELLO (version 2), then one
/// request, whose frame it returns.
async fn read_hello_and_request(server: &mut RawClient) -> Frame {
    let hello = guard(server.recv()).await.expect("the client's HELLO");
    assert_eq!((hello.kind, hello.id), (Kind::Hello, 0), "{hello:?}");
    let hello = ClientHello::decode(&hello.payload).expect("a valid HELLO");
    assert_eq!(hello.version, 2);
    guard(server.recv())
        .await
        .expect("the request, sent before the server's HELLO")
}

/// The server's HELLO (announcing `max_frame_len`) and its HELLO reply.
async fn greet(server: &mut RawClient, max_frame_len: u32) {
    let hello = ServerHello::new(max_frame_len, "scripted");
    server
        .send(Frame::new(Kind::Hello, 0, hello.encode()))
        .await;
    let reply = HelloReply::new(2, &[Encoding::Json]);
    server
        .send(Frame::new(Kind::Hello, 0, reply.encode()))
        .await;
}

fn error_frame(code: ErrorCode, message: &str) -> Frame {
    Frame::new(Kind::Error, 0, ErrorPayload::encode(code, message))
}

/// Waits for the client's state to say the connection is lost; why.
async fn lost(client: &Client) -> CloseReason {
    let mut states = client.connection_states();
    let state = guard(states.wait_for(|s| matches!(s, ConnectionState::Lost { .. })))
        .await
        .expect("the client is alive")
        .clone();
    match state {
        ConnectionState::Lost { reason, .. } => reason,
        other => unreachable!("{other:?}"),
    }
}

/// A real server: connect, and the first request (sent behind the HELLO)
/// is answered; what the server said is known once the handshake is done.
#[tokio::test]
async fn a_real_server_answers_the_request_sent_behind_the_hello() {
    let (endpoint, serving) = common::echo("send-first-real");
    let client = guard(Client::connect_with(&endpoint, send_first()))
        .await
        .expect("connect");
    let answer = guard(client.request("first")).await.expect("the answer");
    assert_eq!(answer, "first");
    guard(client.handshake_done()).await.expect("handshake");
    assert!(!client.server_name().is_empty());
    assert_eq!(
        client.server_max_frame_len(),
        pipesvc::protocol::DEFAULT_MAX_FRAME_LEN
    );
    // A payload over what fits before the server's HELLO, now known.
    let large = Bytes::from(vec![b'x'; 10_000]);
    assert_eq!(guard(client.request(large.clone())).await.unwrap(), large);
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}

/// Requests made before the server has said anything go out behind the
/// HELLO; the server reads them before it sends its HELLO, then answers.
/// Until then, what only the server's HELLOs say is not known.
#[tokio::test]
async fn the_hello_and_first_request_go_out_before_the_server_says_anything() {
    let (mut server, client) = scripted().await;
    assert_eq!(client.server_name(), "");
    assert_eq!(client.server_max_frame_len(), 74);
    assert!(client.encodings().is_empty());
    let asking = ask_early(&client);
    let request = read_hello_and_request(&mut server).await;
    assert_eq!(
        (request.kind, &request.payload[..]),
        (Kind::Request, &b"early"[..])
    );
    greet(&mut server, 1 << 20).await;
    server
        .send(Frame::new(Kind::Response, request.id, request.payload))
        .await;
    let answer = guard(asking).await.unwrap().expect("the answer");
    assert_eq!(answer, "early");
    guard(client.handshake_done()).await.expect("handshake");
    assert_eq!(client.server_name(), "scripted");
    assert_eq!(client.server_max_frame_len(), 1 << 20);
    assert_eq!(client.encodings(), [Encoding::Json]);
}

/// A refusal in place of the server's HELLO (`overloaded`, `not
/// allowed`, GOODBYE): the early request fails with the error `connect`
/// would have returned, so do requests made after it, and the connection
/// is lost for that reason.
#[tokio::test]
async fn a_refusal_fails_the_early_request_with_the_refusal() {
    for (code, message) in [
        (ErrorCode::OVERLOADED, "too many connections"),
        (ErrorCode::NOT_ALLOWED, "not for you"),
    ] {
        let (mut server, client) = scripted().await;
        let asking = ask_early(&client);
        read_hello_and_request(&mut server).await;
        server.send(error_frame(code, message)).await;
        let failed = guard(asking).await.unwrap().expect_err("refused");
        let refused = |e: &Error| {
            matches!(e, Error::ConnectionClosed(CloseReason::ServerError { code: c, message: m })
                if *c == code && m == message)
        };
        assert!(refused(&failed), "{failed:?}");
        let after = guard(client.request("later")).await.expect_err("refused");
        assert!(refused(&after), "{after:?}");
        let handshake = guard(client.handshake_done()).await.expect_err("refused");
        assert!(refused(&handshake), "{handshake:?}");
        let reason = lost(&client).await;
        assert!(
            matches!(&reason, CloseReason::ServerError { code: c, .. } if *c == code),
            "{reason:?}"
        );
        assert!(client.is_closed());
    }

    let (mut server, client) = scripted().await;
    let asking = ask_early(&client);
    read_hello_and_request(&mut server).await;
    let goodbye = Frame::new(Kind::Goodbye, 0, Bytes::from_static(b"restarting"));
    server.send(goodbye).await;
    let failed = guard(asking).await.unwrap().expect_err("refused");
    assert!(
        matches!(&failed, Error::ConnectionClosed(CloseReason::Goodbye(why)) if why == "restarting"),
        "{failed:?}"
    );
}

/// A real server at its connection limit refuses with `overloaded`: the
/// request sent behind the HELLO fails with it.
#[cfg(unix)]
#[tokio::test]
async fn a_real_server_at_its_limit_fails_the_early_request_with_overloaded() {
    let endpoint = common::unique_endpoint("send-first-overloaded");
    let server = pipesvc::Server::builder(endpoint.clone())
        .handler(
            |r: Bytes, _: pipesvc::server::ConnectionContext| async move {
                Ok::<_, pipesvc::server::ServiceError>(r)
            },
        )
        .max_connections(1)
        .bind()
        .expect("bind");
    let serving = common::TestServer::start(server);
    let holder = guard(Client::connect(&endpoint)).await.expect("the one");
    let client = guard(Client::connect_with(&endpoint, send_first()))
        .await
        .expect("connect: nothing waited for");
    let failed = guard(client.request("early")).await.expect_err("refused");
    assert!(
        matches!(&failed, Error::ConnectionClosed(CloseReason::ServerError { code, .. })
            if *code == ErrorCode::OVERLOADED),
        "{failed:?}"
    );
    guard(holder.close()).await;
    guard(serving.stop()).await.expect("serve");
}

/// A version 1 server: its HELLO, then ERROR `unsupported version` for
/// the client's version 2 HELLO. The early request fails with
/// [`Error::ServerTooOld`], as `connect` fails without `send_first`.
#[tokio::test]
async fn a_version_1_server_fails_the_early_request_with_server_too_old() {
    let (mut server, client) = scripted().await;
    let asking = ask_early(&client);
    read_hello_and_request(&mut server).await;
    let hello = ServerHello::new(1 << 16, "old");
    server
        .send(Frame::new(Kind::Hello, 0, hello.encode()))
        .await;
    let unsupported = error_frame(ErrorCode::UNSUPPORTED_VERSION, "version 1 only");
    server.send(unsupported).await;
    drop(server);
    let failed = guard(asking).await.unwrap().expect_err("too old");
    assert!(
        matches!(&failed, Error::ServerTooOld { server, message } if server == "old" && message == "version 1 only"),
        "{failed:?}"
    );
    let after = guard(client.request("later")).await.expect_err("too old");
    assert!(matches!(after, Error::ServerTooOld { .. }), "{after:?}");
    let reason = lost(&client).await;
    assert!(
        matches!(&reason, CloseReason::ServerError { code, .. } if *code == ErrorCode::UNSUPPORTED_VERSION),
        "{reason:?}"
    );
}

/// A server that closes once it has read the HELLO and request, without
/// a word: the request fails with the end of the handshake, no hang.
#[tokio::test]
async fn a_server_that_closes_fails_the_early_request() {
    let (mut server, client) = scripted().await;
    let asking = ask_early(&client);
    read_hello_and_request(&mut server).await;
    drop(server);
    let failed = guard(asking).await.unwrap().expect_err("closed");
    assert!(
        matches!(
            failed,
            Error::ConnectionClosed(CloseReason::EofDuringHandshake)
        ),
        "{failed:?}"
    );
    assert!(matches!(
        lost(&client).await,
        CloseReason::EofDuringHandshake
    ));
}

/// A server gone before the client connected over its stream: `connect`
/// does not wait for the server, so it returns, and the first request
/// fails with the end of the stream (its HELLO, held to leave with that
/// request, finds nobody), as does the connection.
#[tokio::test]
async fn a_server_gone_at_once_fails_the_first_request() {
    let (ours, theirs) = memory::pair();
    drop(theirs);
    let client = guard(Client::from_io(ours, send_first()))
        .await
        .expect("connect does not wait for the server");
    let failed = guard(client.request("early"))
        .await
        .expect_err("nobody there");
    let gone = |e: &Error| {
        matches!(
            e,
            Error::Io(_) | Error::ConnectionClosed(CloseReason::EofDuringHandshake)
        )
    };
    assert!(gone(&failed), "{failed:?}");
    let reason = lost(&client).await;
    assert!(
        matches!(
            reason,
            CloseReason::EofDuringHandshake | CloseReason::Reset(_)
        ),
        "{reason:?}"
    );
}

/// Sending first, the HELLO waits to leave with the first request; a
/// client that makes none still sends it (the reader task writes it when
/// it starts), so the handshake completes.
#[tokio::test]
async fn a_client_that_asks_nothing_still_sends_its_hello() {
    let (mut server, client) = scripted().await;
    let hello = guard(server.recv()).await.expect("the client's HELLO");
    assert_eq!((hello.kind, hello.id), (Kind::Hello, 0), "{hello:?}");
    greet(&mut server, 1 << 20).await;
    guard(client.handshake_done()).await.expect("handshake");
    assert_eq!(client.server_name(), "scripted");
}

/// The HELLO and a request made as `connect` returns leave in one write,
/// so that a server finds both in one read and answers both in one write
/// (its HELLO, HELLO reply and answer). The client's stream counts its
/// writes (`testing::Faulty`, with no fault set).
#[tokio::test]
async fn the_hello_and_the_first_request_leave_in_one_write() {
    let (ours, theirs) = memory::pair();
    let (ours, faults) = pipesvc::testing::Faulty::new(ours);
    let client = guard(Client::from_io(ours, send_first()))
        .await
        .expect("connect");
    // The request's first poll, as `connect` returns: on this
    // current-thread runtime no other task (the reader's) runs meanwhile.
    let mut asking = Box::pin(client.request("early"));
    let first = poll_fn(|cx| Poll::Ready(asking.as_mut().poll(cx).is_pending())).await;
    assert!(first, "the request waits for its answer");
    assert_eq!(faults.writes(), 1, "HELLO and request in one write");
    let mut server = RawClient::over(theirs);
    let request = read_hello_and_request(&mut server).await;
    greet(&mut server, 1 << 20).await;
    server
        .send(Frame::new(Kind::Response, request.id, request.payload))
        .await;
    assert_eq!(guard(asking).await.expect("the answer"), "early");
    assert_eq!(faults.writes(), 1, "nothing written since");
}

/// A HELLO that is not one: the early request fails with the protocol
/// error `connect` would have returned.
#[tokio::test]
async fn a_broken_hello_fails_the_early_request_with_a_protocol_error() {
    let (mut server, client) = scripted().await;
    let asking = ask_early(&client);
    read_hello_and_request(&mut server).await;
    server
        .send(Frame::new(Kind::Hello, 0, Bytes::from_static(b"XXXX")))
        .await;
    let failed = guard(asking).await.unwrap().expect_err("broken");
    assert!(matches!(failed, Error::Protocol(_)), "{failed:?}");
}

/// A request too large for the smallest maximum a server may announce
/// (74) is not sent before the server's HELLO says its own: here 80, so
/// the request fails as too large, and nothing but the HELLO was sent.
#[tokio::test]
async fn a_request_over_74_bytes_waits_for_the_servers_hello() {
    let (mut server, client) = scripted().await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request(vec![b'x'; 100]).await }
    });
    let hello = guard(server.recv()).await.expect("the client's HELLO");
    assert_eq!(hello.kind, Kind::Hello);
    greet(&mut server, 80).await;
    let failed = guard(asking).await.unwrap().expect_err("too large");
    assert!(
        matches!(failed, Error::PayloadTooLarge { len: 100, max: 74 }),
        "{failed:?}"
    );
    // The next frame the server reads is the PING sent now, not the
    // large request.
    let pinging = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let ping = guard(server.recv()).await.expect("the PING");
    assert_eq!(ping.kind, Kind::Ping, "{ping:?}");
    server
        .send(Frame::new(Kind::Pong, ping.id, ping.payload))
        .await;
    guard(pinging).await.unwrap().expect("pong");
}

/// A server that refuses and closes before the client's request is
/// written: the write fails, but the refusal, still readable, is the
/// request's error (not the broken write).
#[tokio::test]
async fn a_refusal_wins_over_the_write_it_broke() {
    let (mut server, client) = scripted().await;
    let hello = guard(server.recv()).await.expect("the client's HELLO");
    assert_eq!(hello.kind, Kind::Hello);
    server
        .send(error_frame(ErrorCode::OVERLOADED, "too many"))
        .await;
    drop(server);
    for _ in 0..2 {
        let failed = guard(client.request("late")).await.expect_err("refused");
        assert!(
            matches!(&failed, Error::ConnectionClosed(CloseReason::ServerError { code, .. })
                if *code == ErrorCode::OVERLOADED),
            "{failed:?}"
        );
    }
}

/// Reconnects do not send first: they complete their handshake before a
/// call uses them. The first connection (sent first) is lost; the next
/// server refuses with `overloaded`, the one after serves: a call made
/// meanwhile waits for the good one instead of failing with the refusal.
#[tokio::test]
async fn a_reconnect_completes_its_handshake_before_calls_use_it() {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    let mut ends = VecDeque::new();
    let mut scripts = Vec::new();
    for _ in 0..3 {
        let (ours, theirs) = memory::pair();
        ends.push_back(ours);
        scripts.push(RawClient::over(theirs));
    }
    let ends = Arc::new(Mutex::new(ends));
    let connector = move || {
        let next = ends.lock().unwrap().pop_front();
        async move { next.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)) }
    };
    let options = send_first().reconnect(true);
    let client = guard(Client::from_connector(connector, options))
        .await
        .expect("connect");
    let mut scripts = scripts.into_iter();
    let (mut first, mut refusing, mut serving) = (
        scripts.next().unwrap(),
        scripts.next().unwrap(),
        scripts.next().unwrap(),
    );

    // The first connection: the early request is answered, then the
    // server goes away.
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request("one").await }
    });
    let request = read_hello_and_request(&mut first).await;
    greet(&mut first, 1 << 20).await;
    first
        .send(Frame::new(Kind::Response, request.id, request.payload))
        .await;
    assert_eq!(guard(asking).await.unwrap().expect("answer"), "one");
    drop(first);

    // The reconnect to the refusing server fails in its handshake (the
    // client's HELLO and nothing else), and is tried again.
    let refuser = tokio::spawn(async move {
        let hello = refusing.recv().await.expect("the client's HELLO");
        assert_eq!(hello.kind, Kind::Hello);
        refusing
            .send(error_frame(ErrorCode::OVERLOADED, "busy"))
            .await;
        assert!(refusing.recv().await.is_none(), "nothing after the HELLO");
    });
    let server = tokio::spawn(async move {
        let hello = serving.recv().await.expect("the client's HELLO");
        assert_eq!(hello.kind, Kind::Hello);
        greet(&mut serving, 1 << 20).await;
        let request = serving.recv().await.expect("the request");
        serving
            .send(Frame::new(Kind::Response, request.id, request.payload))
            .await;
        serving
    });
    let answer = guard(client.request("two")).await.expect("answered");
    assert_eq!(answer, "two");
    assert_eq!(client.reconnects(), 1);
    guard(refuser).await.unwrap();
    let _serving = guard(server).await.unwrap();
}

/// A typed call made before the HELLO reply is in the client's encoding
/// (MessagePack); a server that takes JSON only answers `bad request`
/// without running it, and the call is made again in JSON. A stream's
/// encoding is chosen once the handshake is done.
#[cfg(feature = "rpc")]
#[tokio::test]
async fn an_early_typed_call_in_an_encoding_the_server_refuses_is_made_again() {
    const ECHO: pipesvc::rpc::Method<String, String> =
        pipesvc::rpc::Method::new("echo", "The params, back");
    let server = pipesvc::Server::builder(common::unique_endpoint("send-first-json"))
        .handler(
            |r: Bytes, _: pipesvc::server::ConnectionContext| async move {
                Ok::<_, pipesvc::server::ServiceError>(r)
            },
        )
        .calls(common::JsonEcho)
        .build()
        .expect("build");
    let serving = common::TestServer::start(server);
    let stream = serving.memory_stream().expect("a stream");
    let client = guard(Client::from_io(stream, send_first()))
        .await
        .expect("connect");
    assert_eq!(client.encoding(), Encoding::MessagePack);
    let answer = guard(client.call(&ECHO, &"hi".to_owned()))
        .await
        .expect("answered in JSON");
    assert_eq!(answer, "hi");
    assert_eq!(client.encoding(), Encoding::Json);
    guard(client.close()).await;
    guard(serving.stop()).await.expect("serve");
}

/// A server that reads the HELLO and the request and says nothing: the
/// handshake's deadline, in the background, fails the early request with
/// the timeout `connect` would have returned.
#[tokio::test]
async fn a_silent_server_fails_the_early_request_at_the_handshake_deadline() {
    let (ours, theirs) = memory::pair();
    let options = send_first().handshake_timeout(Duration::from_millis(200));
    let client = guard(Client::from_io(ours, options))
        .await
        .expect("connect");
    let mut server = RawClient::over(theirs);
    let asking = ask_early(&client);
    read_hello_and_request(&mut server).await;
    let failed = guard(asking).await.unwrap().expect_err("timed out");
    assert!(
        matches!(failed, Error::Timeout(limit, what)
            if limit == Duration::from_millis(200) && what.contains("the server's HELLO")),
        "{failed:?}"
    );
    assert!(matches!(lost(&client).await, CloseReason::Protocol(_)));
    drop(server);
}

/// The client's first request ("early"), made in a task of its own so that
/// the scripted server can read it before it answers anything.
fn ask_early(client: &Client) -> tokio::task::JoinHandle<Result<Bytes, Error>> {
    let client = client.clone();
    tokio::spawn(async move { client.request("early").await })
}
