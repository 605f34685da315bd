//! The client's side of revision 2.2 (streams, flow control, topics)
//! against a scripted server: the test plays the server frame by frame,
//! over an in-memory stream, so that every byte the client sends and
//! every fault of the server is under its control.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pipesvc::client::ClientOptions;
use pipesvc::error::CloseReason;
use pipesvc::protocol::{
    decode_credit, decode_item, encode_item, ClientHello, Encoding, Entry, ErrorCode, Frame,
    FrameCodec, HelloReply, Kind, ServerHello, Subscribe,
};
use pipesvc::rpc::{StreamMethod, Topic, TopicEvent};
use pipesvc::transport::memory::{self, MemoryStream};
use pipesvc::{Client, Error};
use tokio::io::{ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

use common::guard;

const COUNT: StreamMethod<u64, (), u64, ()> = StreamMethod::server("count", "1 to n");
const LINES: StreamMethod<(), String, (), u64> = StreamMethod::client("lines", "Counts lines");
const TICKS: Topic<u64> = Topic::new("ticks", "Uptime");

/// The server's end of a connection, played by the test.
struct Script {
    reader: FramedRead<ReadHalf<MemoryStream>, FrameCodec>,
    writer: FramedWrite<WriteHalf<MemoryStream>, FrameCodec>,
}

impl Script {
    /// Performs a server's handshake: `window` is the HELLO reply's stream
    /// window (`None`: a server of revision 2.1, which lists no ITEM).
    async fn handshake(io: MemoryStream, max_frame: u32, window: Option<u32>) -> Script {
        let (read, write) = tokio::io::split(io);
        let mut script = Script {
            reader: FramedRead::new(read, FrameCodec::new(u32::MAX).with_version(2)),
            writer: FramedWrite::new(write, FrameCodec::new(u32::MAX)),
        };
        let hello = ServerHello::new(max_frame, "script").encode();
        script.send(Frame::new(Kind::Hello, 0, hello)).await;
        let theirs = script.recv().await.expect("the client's HELLO");
        // PROTOCOL.md, "A complete exchange, revision 2.2", byte for byte.
        assert_eq!(
            &theirs.payload[..],
            b"PSVC\x02\x00\x02\x08\x00\x01\x03\x04\x05\x06\x08\x0d\x0e"
        );
        let theirs = ClientHello::decode(&theirs.payload).expect("a valid HELLO");
        // PROTOCOL.md: pipesvc's client accepts 1 3 4 5 6 8 13 14.
        let kinds = theirs.kinds.expect("a kinds field").bytes();
        assert_eq!(kinds, [1, 3, 4, 5, 6, 8, 13, 14]);
        let mut reply = HelloReply::new(2, &[Encoding::Json]);
        // Revision 2.1's kinds, then 2.2's with the window.
        reply.kinds.retain(|&kind| kind <= 12);
        reply.stream_window = None;
        if let Some(window) = window {
            reply.kinds.extend([13, 14, 15, 16]);
            reply.stream_window = Some(window);
        }
        script
            .send(Frame::new(Kind::Hello, 0, reply.encode()))
            .await;
        script
    }

    async fn send(&mut self, frame: Frame) {
        self.writer.send(frame).await.expect("the client reads");
    }

    /// The next frame from the client; `None` once it closed.
    async fn recv(&mut self) -> Option<Frame> {
        match guard(self.reader.next()).await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => panic!("bad frame from the client: {e}"),
            None => None,
        }
    }

    /// The next frame, which must be of kind byte `kind`.
    async fn expect(&mut self, kind: u8) -> Frame {
        let frame = self.recv().await.expect("a frame");
        assert_eq!(frame.kind.to_u8(), kind, "{frame:?}");
        frame
    }

    async fn items(&mut self, id: u32, values: &[&str]) {
        let entries: Vec<Entry> = values
            .iter()
            .map(|v| Entry::Item(Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        self.send(Frame::new(Kind::Item, id, encode_item(&entries)))
            .await;
    }
}

/// A client over memory to a scripted server with stream window `window`.
async fn connect(window: Option<u32>) -> (Client, Script) {
    connect_max(window, 1 << 20).await
}

async fn connect_max(window: Option<u32>, max_frame: u32) -> (Client, Script) {
    let (ours, theirs) = memory::pair();
    let script = tokio::spawn(Script::handshake(theirs, max_frame, window));
    let client = guard(Client::from_io(ours, ClientOptions::new()))
        .await
        .expect("connected");
    (client, script.await.unwrap())
}

#[tokio::test]
async fn a_server_stream_yields_its_items_then_its_result() {
    let (client, mut server) = connect(Some(1024)).await;
    let mut numbers = guard(client.stream(&COUNT, &3)).await.unwrap();
    let call = server.expect(10).await;
    assert_eq!(call.id, numbers.id());
    // Two items batched in one ITEM, the third alone, then the result.
    server.items(call.id, &["1", "2"]).await;
    server.items(call.id, &["3"]).await;
    server.send(Frame::response(call.id, "null")).await;
    let mut got = Vec::new();
    while let Some(n) = guard(numbers.next()).await {
        got.push(n.unwrap());
    }
    assert_eq!(got, [1, 2, 3]);
    guard(numbers.finish()).await.unwrap();
}

#[tokio::test]
async fn credit_goes_back_only_as_the_application_takes_items() {
    let (client, mut server) = connect(Some(40)).await;
    let mut numbers = guard(client.stream(&COUNT, &8)).await.unwrap();
    let id = server.expect(10).await.id;
    // Four ITEMs of 6 bytes and one more: 30 bytes, within the window.
    for n in ["1", "2", "3", "4", "5"] {
        server.items(id, &[n]).await;
    }
    // Nothing taken yet, so no CREDIT: the PONG comes first.
    server.send(Frame::new(Kind::Ping, 77, "")).await;
    let pong = server.expect(8).await;
    assert_eq!(pong.id, 77);
    // Taking 4 items (24 bytes, half the window of 40 at 20) grants them.
    for want in 1..=4 {
        assert_eq!(guard(numbers.next()).await.unwrap().unwrap(), want);
    }
    let credit = server.expect(14).await;
    assert_eq!((credit.id, decode_credit(&credit.payload)), (id, Some(24)));
    server.send(Frame::response(id, "null")).await;
    assert_eq!(guard(numbers.next()).await.unwrap().unwrap(), 5);
    assert!(guard(numbers.next()).await.is_none());
}

#[tokio::test]
async fn an_item_beyond_the_credit_closes_the_connection() {
    let (client, mut server) = connect(Some(10)).await;
    let mut numbers = guard(client.stream(&COUNT, &8)).await.unwrap();
    let id = server.expect(10).await.id;
    // 16 bytes while 10 were left: allowed (the credit was above 0)...
    server.items(id, &["10", "11", "12"][..2]).await;
    // ...but now the credit is below 0: this one breaks flow control.
    server.items(id, &["3"]).await;
    let mut errors = Vec::new();
    while let Some(item) = guard(numbers.next()).await {
        if let Err(e) = item {
            errors.push(e);
        }
    }
    match &errors[..] {
        [Error::ConnectionClosed(CloseReason::Protocol(why))] => {
            assert!(why.contains("flow control"), "{why}")
        }
        other => panic!("expected the connection closed for flow control: {other:?}"),
    }
    assert!(server.recv().await.is_none(), "the client closed");
}

#[tokio::test]
async fn a_malformed_item_closes_the_connection() {
    let (client, mut server) = connect(Some(1024)).await;
    let mut numbers = guard(client.stream(&COUNT, &8)).await.unwrap();
    let id = server.expect(10).await.id;
    // An entry whose length runs past the payload.
    server
        .send(Frame::new(Kind::Item, id, &b"\x00\x09\x00\x00\x001"[..]))
        .await;
    let err = guard(numbers.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::ConnectionClosed(CloseReason::Protocol(why)) if why.contains("past the end")),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_a_stream_sends_cancel_and_late_items_are_ignored() {
    let (client, mut server) = connect(Some(1024)).await;
    let numbers = guard(client.stream(&COUNT, &8)).await.unwrap();
    let id = server.expect(10).await.id;
    drop(numbers);
    let cancel = server.expect(11).await;
    assert_eq!(cancel.id, id);
    // ITEMs that crossed the CANCEL, then its answer: discarded, and the
    // connection carries on.
    server.items(id, &["1"]).await;
    server
        .send(Frame::error(id, ErrorCode::CANCELLED, "cancelled"))
        .await;
    let ping = tokio::spawn(async move { client.ping().await.map(|_| client) });
    let ping_frame = server.expect(7).await;
    server.send(Frame::new(Kind::Pong, ping_frame.id, "")).await;
    guard(ping).await.unwrap().unwrap();
}

#[tokio::test]
async fn an_error_mid_stream_ends_it_with_an_err_item() {
    let (client, mut server) = connect(Some(1024)).await;
    let mut numbers = guard(client.stream(&COUNT, &8)).await.unwrap();
    let id = server.expect(10).await.id;
    server.items(id, &["1"]).await;
    server
        .send(Frame::error(id, ErrorCode(1000), "the disk is full"))
        .await;
    assert_eq!(guard(numbers.next()).await.unwrap().unwrap(), 1);
    let err = guard(numbers.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Remote { message, .. } if message == "the disk is full"),
        "{err}"
    );
    assert!(guard(numbers.next()).await.is_none());
    let again = guard(numbers.finish()).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode(1000)));
}

#[tokio::test]
async fn a_server_without_streams_is_refused_before_anything_is_sent() {
    let (client, mut server) = connect(None).await;
    let err = guard(client.stream(&COUNT, &3)).await.unwrap_err();
    assert!(matches!(&err, Error::ServerTooOld { .. }), "{err}");
    assert!(err.to_string().contains("2.2"), "{err}");
    let err = guard(client.subscribe(&TICKS)).await.unwrap_err();
    assert!(matches!(&err, Error::ServerTooOld { .. }), "{err}");
    // The next frame the server sees is the PING sent after: nothing else.
    let ping = tokio::spawn(async move { client.ping().await.map(|_| client) });
    let frame = server.expect(7).await;
    server.send(Frame::new(Kind::Pong, frame.id, "")).await;
    guard(ping).await.unwrap().unwrap();
}

#[tokio::test]
async fn an_upload_larger_than_the_maximum_frame_waits_for_credit() {
    // Frames of at most 1 KiB, a window of 2 KiB: 64 items of 200 bytes
    // (12.8 KB in all) need credit six times over.
    let (client, mut server) = connect_max(Some(2048), 1024).await;
    let line = "x".repeat(198);
    let uploading = tokio::spawn(async move {
        let mut upload = client.upload(&LINES, &()).await?;
        for _ in 0..64 {
            upload.send(&line).await?;
        }
        upload.finish().await
    });
    let id = server.expect(10).await.id;
    let (mut items, mut credit, mut bytes) = (0, 2048i64, 0usize);
    loop {
        let frame = server.recv().await.expect("a frame");
        match frame.kind.to_u8() {
            13 => {
                assert!(credit > 0, "an ITEM without credit");
                credit -= frame.payload.len() as i64;
                bytes += frame.payload.len();
                for entry in decode_item(&frame.payload, true).unwrap() {
                    assert_eq!(
                        entry,
                        Entry::Item(Bytes::from(format!("\"{}\"", "x".repeat(198))))
                    );
                    items += 1;
                }
                if credit <= 0 {
                    // Grant what was consumed, as a server does.
                    let grant = (2048 - credit) as u32;
                    credit += i64::from(grant);
                    let payload = pipesvc::protocol::encode_credit(grant);
                    server.send(Frame::new(Kind::Credit, id, payload)).await;
                }
            }
            15 => break,
            other => panic!("unexpected kind {other}"),
        }
    }
    assert_eq!(items, 64);
    assert!(
        bytes > 1024 * 4,
        "the upload is larger than a frame: {bytes}"
    );
    server.send(Frame::response(id, "64")).await;
    assert_eq!(guard(uploading).await.unwrap().unwrap(), 64);
}

#[tokio::test]
async fn an_upload_the_server_fails_early_says_why() {
    let (client, mut server) = connect(Some(1024)).await;
    let mut upload = guard(client.upload(&LINES, &())).await.unwrap();
    let id = server.expect(10).await.id;
    server
        .send(Frame::error(id, ErrorCode::BAD_REQUEST, "no lines today"))
        .await;
    // Sends go on until the answer is seen; then its error.
    let mut err = None;
    for _ in 0..1000 {
        if let Err(e) = guard(upload.send(&"a".to_owned())).await {
            err = Some(e);
            break;
        }
        tokio::task::yield_now().await;
    }
    let err = err.expect("the upload fails");
    assert!(err.to_string().contains("no lines today"), "{err}");
}

#[tokio::test]
async fn a_subscription_yields_events_and_lag() {
    let (client, mut server) = connect(Some(1024)).await;
    let mut ticks = guard(client.subscribe(&TICKS)).await.unwrap();
    let subscribe = server.expect(16).await;
    let topic = Subscribe::decode(&subscribe.payload).unwrap();
    assert_eq!((topic.topic.as_str(), topic.encoding), ("ticks", 1));
    let id = subscribe.id;
    let first = encode_item(&[Entry::Subscribed, Entry::Item(Bytes::from("1000"))]);
    server.send(Frame::new(Kind::Item, id, first)).await;
    let lagged = encode_item(&[Entry::Lagged(2), Entry::Item(Bytes::from("4000"))]);
    server.send(Frame::new(Kind::Item, id, lagged)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(guard(ticks.next()).await.unwrap().unwrap());
    }
    assert_eq!(
        got,
        [
            TopicEvent::Event(1000),
            TopicEvent::Lagged(2),
            TopicEvent::Event(4000)
        ]
    );
    // Unsubscribing is a CANCEL; the topic closed is the end.
    drop(ticks);
    assert_eq!(server.expect(11).await.id, id);
}

#[tokio::test]
async fn a_subscription_subscribes_again_after_a_reconnect() {
    // Each connection the client opens is handed to the test's script.
    let (ends_tx, mut ends) = tokio::sync::mpsc::unbounded_channel();
    let connector = move || {
        let (ours, theirs) = memory::pair();
        let _ = ends_tx.send(theirs);
        async move { Ok(ours) }
    };
    let options = ClientOptions::new().reconnect(true);
    let connecting = tokio::spawn(Client::from_connector(connector, options));
    let mut server = Script::handshake(ends.recv().await.unwrap(), 1 << 20, Some(1024)).await;
    let client = guard(connecting).await.unwrap().unwrap();
    let mut ticks = guard(client.subscribe(&TICKS)).await.unwrap();
    let id = server.expect(16).await.id;
    let first = encode_item(&[Entry::Subscribed, Entry::Item(Bytes::from("1"))]);
    server.send(Frame::new(Kind::Item, id, first)).await;
    assert_eq!(
        guard(ticks.next()).await.unwrap().unwrap(),
        TopicEvent::Event(1)
    );
    // The server goes away; the next one knows no subscription.
    drop(server);
    let mut server = Script::handshake(ends.recv().await.unwrap(), 1 << 20, Some(1024)).await;
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(ticks.next().await.unwrap().unwrap());
        }
        got
    });
    let again = server.expect(16).await;
    let events = encode_item(&[Entry::Subscribed, Entry::Item(Bytes::from("2"))]);
    server.send(Frame::new(Kind::Item, again.id, events)).await;
    assert_eq!(
        guard(reading).await.unwrap(),
        [TopicEvent::Resubscribed, TopicEvent::Event(2)]
    );
}

#[tokio::test]
async fn too_slow_is_the_connections_end_reason() {
    let (client, mut server) = connect(Some(1024)).await;
    let mut numbers = guard(client.stream(&COUNT, &8)).await.unwrap();
    let id = server.expect(10).await.id;
    let mut states = client.connection_states();
    // PROTOCOL.md "Too slow": whole frames, then ERROR too slow (id 0).
    server.items(id, &["1"]).await;
    server
        .send(Frame::error(
            0,
            ErrorCode::TOO_SLOW,
            "too slow: 9 MiB unread",
        ))
        .await;
    drop(server);
    assert_eq!(guard(numbers.next()).await.unwrap().unwrap(), 1);
    let err = guard(numbers.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TOO_SLOW), "{err}");
    let reason = Arc::new(Mutex::new(None));
    guard(states.wait_for(|state| {
        if let pipesvc::client::ConnectionState::Lost { reason: why, .. } = state {
            *reason.lock().unwrap() = Some(why.clone());
            true
        } else {
            false
        }
    }))
    .await
    .unwrap();
    let reason = reason.lock().unwrap().take().unwrap();
    assert!(
        matches!(&reason, CloseReason::ServerError { code, .. } if *code == ErrorCode::TOO_SLOW),
        "{reason}"
    );
    let err = guard(client.ping()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TOO_SLOW), "{err}");
}
