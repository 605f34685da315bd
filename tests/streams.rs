//! Streaming methods (PROTOCOL.md "Streams" and "Flow control", revision
//! 2.2), frame by frame over a real socket, as a client written from the
//! text alone would speak them.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{
    decode_credit, decode_item, encode_credit, encode_item, CallHeader, ClientHello, Encoding,
    Entry, ErrorCode, ErrorPayload, Frame, Kind, KindSet, DEFAULT_STREAM_WINDOW,
};
use pipesvc::rpc::{Service, StreamMethod};
use pipesvc::server::{ConnectionContext, ServiceError};
use pipesvc::transport::{self, ConnectOptions};
use pipesvc::Server;
use tokio::sync::{mpsc, watch};

/// `count`: the numbers 1 to n, all sent at once (queued together).
const COUNT: StreamMethod<u64, (), u64, ()> = StreamMethod::server("count", "1 to n");
/// `flood`: items of `len` bytes (a string), until cancelled.
const FLOOD: StreamMethod<usize, (), String, ()> = StreamMethod::server("flood", "forever");
/// `fail`: three items, then a service error.
const FAIL: StreamMethod<(), (), u32, ()> = StreamMethod::server("fail", "fails mid-stream");
/// `hold`: sends nothing and never ends.
const HOLD: StreamMethod<(), (), u32, ()> = StreamMethod::server("hold", "never ends");
/// `lines`: takes strings until END; answers how many.
const LINES: StreamMethod<(), String, (), u64> = StreamMethod::client("lines", "upload");
/// `deaf`: a client stream that never takes an item.
const DEAF: StreamMethod<(), String, (), ()> = StreamMethod::client("deaf", "never reads");
/// `spawned`: hands its items to a task of its own, which sends until a
/// send fails (and reports the code), and waits for its cancelled signal.
const SPAWNED: StreamMethod<(), (), u32, ()> = StreamMethod::server("spawned", "a task sends");
/// `double`: both ways, each number back doubled; answers the count.
const DOUBLE: StreamMethod<(), u64, u64, u64> = StreamMethod::both("double", "n -> 2n");

/// What the test sees of its handlers.
#[derive(Default)]
struct Probe {
    /// Items `flood` has queued.
    flooded: AtomicU64,
    /// While `flood`'s send waits for room in the stream's queue and
    /// nothing has woken it yet: the items it had queued by then
    /// ([`watched`]).
    waiting: watch::Sender<Option<u64>>,
    /// Handlers dropped (cancelled, or the connection gone).
    dropped: Option<mpsc::UnboundedSender<()>>,
    /// What `spawned`'s task saw: its send failing (the code), and the
    /// call's cancelled signal (0).
    seen: Option<mpsc::UnboundedSender<u16>>,
}

struct DropGuard(Option<mpsc::UnboundedSender<()>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(());
        }
    }
}

fn service(probe: Probe) -> Service<Probe> {
    Service::new("streams", "0.1.0", probe)
        .stream_method(&COUNT, |_, n: u64, items, _, _| async move {
            for i in 1..=n {
                items.send(&i).await?;
            }
            Ok(())
        })
        .stream_method(&FLOOD, |probe, len: usize, items, _, _| async move {
            let _guard = DropGuard(probe.dropped.clone());
            let item = "x".repeat(len);
            loop {
                watched(&probe, items.send(&item)).await?;
                probe.flooded.fetch_add(1, Ordering::SeqCst);
            }
        })
        .stream_method(&FAIL, |_, (), items, _, _| async move {
            for i in 0..3 {
                items.send(&i).await?;
            }
            Err(ServiceError::with_code(
                pipesvc::protocol::ServiceCode::new(1001).unwrap(),
                "the disk is full",
            ))
        })
        .stream_method(&HOLD, |_, (), _, _, _| async move {
            std::future::pending::<()>().await;
            Ok(())
        })
        .stream_method(&LINES, |_, (), _, mut lines, _| async move {
            let mut n = 0;
            while lines.next().await?.is_some() {
                n += 1;
            }
            Ok(n)
        })
        .stream_method(&DEAF, |probe, (), _, _, _| async move {
            let _guard = DropGuard(probe.dropped.clone());
            std::future::pending::<()>().await;
            Ok(())
        })
        .stream_method(&SPAWNED, |probe, (), items, _, ctx| async move {
            let seen = probe.seen.clone().unwrap();
            let cancelled = ctx.cancellation().expect("a CALL has a cancelled signal");
            let signal = seen.clone();
            tokio::spawn(async move {
                cancelled.cancelled().await;
                let _ = signal.send(0);
            });
            tokio::spawn(async move {
                let mut n = 0u32;
                let code = loop {
                    if let Err(e) = items.send(&n).await {
                        break e.code().0;
                    }
                    n += 1;
                };
                let _ = seen.send(code);
            });
            std::future::pending::<()>().await;
            Ok(())
        })
        .stream_method(&DOUBLE, |_, (), out, mut numbers, _| async move {
            let mut n = 0;
            while let Some(x) = numbers.next().await? {
                out.send(&(2 * x)).await?;
                n += 1;
            }
            Ok(n)
        })
}

/// Runs `flood`'s `send`, telling the probe while it waits: a poll that
/// leaves it pending sets `waiting` to the items queued so far, and a wake
/// clears it before waking the task. So `waiting` is set only while the
/// send waits and nothing has woken it: a send woken by the room an ITEM
/// made, and not polled again yet, no longer counts. Once the client's
/// credit is used up no ITEM goes out and nothing makes room, so a test
/// that sees `waiting` set then knows the producer waits for credit, and
/// will until the client grants some (no sleep to find out).
async fn watched<F: Future>(probe: &Arc<Probe>, send: F) -> F::Output {
    let mut send = std::pin::pin!(send);
    std::future::poll_fn(|cx| {
        let wake = Arc::new(ClearWaiting {
            probe: probe.clone(),
            woken: AtomicBool::new(false),
            task: cx.waker().clone(),
        });
        let waker = Waker::from(wake.clone());
        let poll = send.as_mut().poll(&mut Context::from_waker(&waker));
        let queued = probe.flooded.load(Ordering::SeqCst);
        // Under the watch's lock, as the wake clears it: a wake that came
        // between the poll and here (from another thread) is not missed.
        probe.waiting.send_if_modified(|waiting| {
            let woken = wake.woken.load(Ordering::SeqCst);
            let now = (poll.is_pending() && !woken).then_some(queued);
            std::mem::replace(waiting, now) != now
        });
        poll
    })
    .await
}

/// The waker [`watched`] polls `flood`'s send with: a wake clears the
/// probe's `waiting`, then wakes the task.
struct ClearWaiting {
    probe: Arc<Probe>,
    woken: AtomicBool,
    task: Waker,
}

impl Wake for ClearWaiting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.probe
            .waiting
            .send_if_modified(|waiting| waiting.take().is_some());
        self.task.wake_by_ref();
    }
}

struct Fixture {
    server: TestServer,
    probe: Arc<Probe>,
    drops: mpsc::UnboundedReceiver<()>,
    seen: mpsc::UnboundedReceiver<u16>,
}

/// Settings a test changes from the defaults.
#[derive(Default)]
struct Settings {
    max_in_flight: Option<usize>,
    max_frame_len: Option<u32>,
    request_timeout: Option<Duration>,
}

fn server_with(test: &str, settings: Settings) -> Fixture {
    let (dropped, drops) = mpsc::unbounded_channel();
    let (saw, seen) = mpsc::unbounded_channel();
    let service = service(Probe {
        flooded: AtomicU64::new(0),
        waiting: watch::Sender::new(None),
        dropped: Some(dropped),
        seen: Some(saw),
    });
    let probe = service.state().clone();
    let mut builder = Server::builder(unique_endpoint(test)).handler(
        |request: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(request) },
    );
    if let Some(max) = settings.max_in_flight {
        builder = builder.max_in_flight(max);
    }
    if let Some(max) = settings.max_frame_len {
        builder = builder.max_frame_len(max);
    }
    if let Some(timeout) = settings.request_timeout {
        builder = builder.request_timeout(Some(timeout));
    }
    // Streams are requests: at shutdown they get this long, then ERROR
    // `shutting down`.
    let server = builder
        .shutdown_timeout(Duration::from_millis(300))
        .calls(service)
        .bind()
        .expect("bind the server");
    Fixture {
        server: TestServer::start(server),
        probe,
        drops,
        seen,
    }
}

fn server(test: &str) -> Fixture {
    server_with(test, Settings::default())
}

/// The kinds pipesvc's client lists (PROTOCOL.md, "Handshake").
const CLIENT_KINDS: [u8; 8] = [1, 3, 4, 5, 6, 8, 13, 14];

/// A revision 2.2 client's handshake (it lists ITEM and CREDIT), or a
/// version 2 client's without kinds.
async fn connect(fixture: &Fixture, kinds: Option<&[u8]>) -> RawClient {
    let stream = transport::connect(fixture.server.endpoint(), &ConnectOptions::default())
        .await
        .expect("connect")
        .stream;
    let mut client = RawClient::over(stream);
    // The reader decodes the kinds of version 2.
    let codec = pipesvc::protocol::FrameCodec::new(u32::MAX).with_version(2);
    *client.reader.decoder_mut() = codec;
    let hello = client.recv().await.expect("HELLO");
    assert_eq!(hello.kind, Kind::Hello);
    let mut ours = ClientHello::with_version(2);
    ours.kinds = kinds.map(KindSet::from_bytes);
    client.send(Frame::new(Kind::Hello, 0, ours.encode())).await;
    let reply = client.recv().await.expect("the HELLO reply");
    let reply = pipesvc::protocol::HelloReply::decode(&reply.payload).expect("a HELLO reply");
    assert_eq!(reply.kinds, [1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
    assert_eq!(reply.stream_window, Some(DEFAULT_STREAM_WINDOW));
    client
}

async fn connect_22(fixture: &Fixture) -> RawClient {
    connect(fixture, Some(&CLIENT_KINDS)).await
}

fn call(id: u32, method: &str, params: &str) -> Frame {
    let payload = CallHeader::new(method, Encoding::Json)
        .encode_with(params.as_bytes())
        .expect("a header");
    Frame::new(Kind::Call, id, payload)
}

fn items(frame: &Frame) -> Vec<String> {
    assert_eq!(frame.kind, Kind::Item, "{frame:?}");
    decode_item(&frame.payload, false)
        .expect("a valid ITEM")
        .into_iter()
        .map(|entry| match entry {
            Entry::Item(value) => String::from_utf8(value.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn item_frame(id: u32, values: &[&str]) -> Frame {
    let entries: Vec<Entry> = values
        .iter()
        .map(|v| Entry::Item(Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    Frame::new(Kind::Item, id, encode_item(&entries))
}

fn error_of(frame: &Frame) -> (ErrorCode, String) {
    assert_eq!(frame.kind, Kind::Error, "{frame:?}");
    let error = ErrorPayload::decode(&frame.payload).unwrap();
    (error.code, error.message)
}

async fn pong(client: &mut RawClient, id: u32) {
    client.send(Frame::new(Kind::Ping, id, "p")).await;
    loop {
        let frame = client.recv_skipping_notify().await.expect("PONG");
        if frame.kind == Kind::Pong {
            assert_eq!(frame.id, id);
            return;
        }
    }
}

#[tokio::test]
async fn a_server_stream_sends_every_item_in_order_batched_then_its_result() {
    guard(async {
        let fixture = server("items_in_order");
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "count", "1000")).await;
        let mut got = Vec::new();
        let mut frames = 0;
        let last = loop {
            let frame = client.recv_skipping_notify().await.expect("a frame");
            if frame.kind != Kind::Item {
                break frame;
            }
            assert_eq!(frame.id, 1);
            frames += 1;
            got.extend(items(&frame));
        };
        let want: Vec<String> = (1..=1000).map(|n| n.to_string()).collect();
        assert_eq!(got, want);
        // Queued together while the connection was busy: they share frames.
        assert!(frames < 10, "{frames} ITEMs for 1000 items");
        assert_eq!((last.kind, last.id), (Kind::Response, 1));
        assert_eq!(last.payload, "null");
        // The id is free again.
        client.send(call(1, "count", "2")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!(items(&frame), ["1", "2"]);
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_consumer_that_grants_no_credit_makes_the_producer_wait_with_bounded_memory() {
    guard(async {
        let fixture = server("slow_consumer");
        let mut client = connect_22(&fixture).await;
        const LEN: usize = 1000;
        client.send(call(1, "flood", &LEN.to_string())).await;
        // The client reads what the window lets out, and grants nothing.
        let mut received = 0usize;
        while received < DEFAULT_STREAM_WINDOW as usize {
            let frame = client.recv_skipping_notify().await.unwrap();
            received += frame.payload.len();
        }
        // The credit is used up: the producer fills the queue, then waits
        // for room that only credit makes. Without flow control it is not
        // seen waiting here (the hang guard fails the test), or it waits
        // with far more than the bound produced.
        let mut waiting = fixture.probe.waiting.subscribe();
        let queued = waiting
            .wait_for(Option::is_some)
            .await
            .map(|waiting| waiting.expect("checked"))
            .expect("the probe is kept by the fixture");
        // What it produced: the window sent, and at most a window queued.
        let entry = LEN + 2 + 5;
        let bound = (2 * DEFAULT_STREAM_WINDOW as usize) / entry + 2;
        assert!(
            (queued as usize) <= bound,
            "{queued} items produced, at most {bound} expected"
        );
        // The server still answers: flow control is per stream.
        pong(&mut client, 2).await;
        // And the producer has not moved: it still waits for credit.
        assert_eq!(*waiting.borrow(), Some(queued), "the producer was woken");
        let later = fixture.probe.flooded.load(Ordering::SeqCst);
        assert_eq!(queued, later, "the producer went on without credit");
        // Credit lets it go on. What the client grants makes its credit
        // the window again: it reads that much more.
        client
            .send(Frame::new(Kind::Credit, 1, encode_credit(received as u32)))
            .await;
        let mut more = 0usize;
        while more < DEFAULT_STREAM_WINDOW as usize {
            let frame = client.recv_skipping_notify().await.unwrap();
            assert_eq!((frame.kind, frame.id), (Kind::Item, 1));
            more += frame.payload.len();
        }
        // The producer too: it queued more, and waits again. (Only once
        // all that was sent has been read: the connection does not run
        // its handlers while its output waits for a client that does not
        // read.)
        waiting
            .wait_for(|waiting| waiting.is_some_and(|n| n > queued))
            .await
            .expect("the probe is kept by the fixture");
        // Gone: the server need not wait for it to read.
        drop(client);
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn cancel_mid_stream_stops_the_producer_and_answers_cancelled() {
    guard(async {
        let mut fixture = server("cancel_mid_stream");
        let mut client = connect_22(&fixture).await;
        client.send(call(7, "flood", "10")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.kind, frame.id), (Kind::Item, 7));
        client.send(Frame::new(Kind::Cancel, 7, "")).await;
        // ITEMs already on their way may come first.
        let last = loop {
            let frame = client.recv_skipping_notify().await.unwrap();
            if frame.kind != Kind::Item {
                break frame;
            }
        };
        assert_eq!(last.id, 7);
        assert_eq!(error_of(&last).0, ErrorCode::CANCELLED);
        // The producer was stopped (its future dropped).
        fixture.drops.recv().await.expect("the handler dropped");
        // Nothing more on the stream; a CREDIT for it is ignored.
        client
            .send(Frame::new(Kind::Credit, 7, encode_credit(100)))
            .await;
        pong(&mut client, 8).await;
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn an_error_mid_stream_is_the_last_answer_after_the_items() {
    guard(async {
        let fixture = server("error_mid_stream");
        let mut client = connect_22(&fixture).await;
        client.send(call(3, "fail", "null")).await;
        let mut got = Vec::new();
        let last = loop {
            let frame = client.recv_skipping_notify().await.unwrap();
            if frame.kind != Kind::Item {
                break frame;
            }
            got.extend(items(&frame));
        };
        assert_eq!(got, ["0", "1", "2"]);
        assert_eq!(last.id, 3);
        let (code, message) = error_of(&last);
        assert_eq!((code.0, message.as_str()), (1001, "the disk is full"));
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn streams_do_not_count_against_the_in_flight_limit_and_64_are_allowed() {
    guard(async {
        let fixture = server_with(
            "stream_cap",
            Settings {
                max_in_flight: Some(2),
                ..Settings::default()
            },
        );
        let mut client = connect_22(&fixture).await;
        for id in 1..=64 {
            client.send(call(id, "hold", "null")).await;
        }
        client.send(call(65, "hold", "null")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!(frame.id, 65);
        assert_eq!(error_of(&frame).0, ErrorCode::OVERLOADED);
        // Plain calls still run: the limit of 2 is theirs.
        client.send(call(100, "count", "1")).await; // a stream too: refused
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.id, error_of(&frame).0), (100, ErrorCode::OVERLOADED));
        client.send(Frame::new(Kind::Request, 101, "a")).await;
        client.send(Frame::new(Kind::Request, 102, "b")).await;
        for _ in 0..2 {
            let frame = client.recv_skipping_notify().await.unwrap();
            assert_eq!(frame.kind, Kind::Response);
        }
        // A cancelled stream makes room for another.
        client.send(Frame::new(Kind::Cancel, 1, "")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.id, error_of(&frame).0), (1, ErrorCode::CANCELLED));
        client.send(call(66, "count", "1")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.kind, frame.id), (Kind::Item, 66));
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_client_that_does_not_accept_items_gets_bad_request() {
    guard(async {
        let fixture = server("no_kinds");
        for kinds in [None, Some(&[1u8, 3, 4, 5, 6, 8, 13][..])] {
            let mut client = connect(&fixture, kinds).await;
            client.send(call(1, "count", "3")).await;
            let frame = client.recv_skipping_notify().await.unwrap();
            assert_eq!(frame.id, 1);
            let (code, message) = error_of(&frame);
            assert_eq!(code, ErrorCode::BAD_REQUEST, "{message}");
            assert!(message.contains("ITEM and CREDIT"), "{message}");
            pong(&mut client, 2).await;
        }
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_credit_past_the_maximum_is_flow_control_and_closes() {
    guard(async {
        let fixture = server("credit_overflow");
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "hold", "null")).await;
        client
            .send(Frame::new(Kind::Credit, 1, encode_credit(u32::MAX)))
            .await;
        client.expect_error(0, ErrorCode::FLOW_CONTROL).await;
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn an_item_without_credit_is_flow_control_and_closes() {
    guard(async {
        let mut fixture = server("item_without_credit");
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "deaf", "null")).await;
        // One ITEM may take the credit below 0 (an item larger than the
        // window goes alone); the next has none.
        let big = format!("\"{}\"", "y".repeat(DEFAULT_STREAM_WINDOW as usize));
        client.send(item_frame(1, &[&big])).await;
        pong(&mut client, 2).await;
        client.send(item_frame(1, &["\"z\""])).await;
        client.expect_error(0, ErrorCode::FLOW_CONTROL).await;
        fixture.drops.recv().await.expect("the handler dropped");
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn stream_frames_for_what_is_not_a_stream_are_refused_or_ignored() {
    guard(async {
        let fixture = server("not_a_stream");
        // For no request in flight: ignored.
        let mut client = connect_22(&fixture).await;
        client.send(item_frame(9, &["1"])).await;
        client.send(Frame::new(Kind::End, 9, "")).await;
        client
            .send(Frame::new(Kind::Credit, 9, encode_credit(1)))
            .await;
        pong(&mut client, 1).await;
        // Id 0: malformed.
        client.send(item_frame(0, &["1"])).await;
        client.expect_error(0, ErrorCode::MALFORMED_FRAME).await;
        // An ITEM on a server stream: unexpected.
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "hold", "null")).await;
        client.send(item_frame(1, &["1"])).await;
        client.expect_error(0, ErrorCode::UNEXPECTED_FRAME).await;
        // A `lagged` entry from a client: malformed.
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "lines", "null")).await;
        let lagged = encode_item(&[Entry::Lagged(3)]);
        client.send(Frame::new(Kind::Item, 1, lagged)).await;
        client.expect_error(0, ErrorCode::MALFORMED_FRAME).await;
        // An ITEM after END: unexpected.
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "deaf", "null")).await;
        client.send(Frame::new(Kind::End, 1, "")).await;
        client.send(item_frame(1, &["\"a\""])).await;
        client.expect_error(0, ErrorCode::UNEXPECTED_FRAME).await;
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_client_stream_takes_items_until_end_and_grants_credit_as_it_consumes() {
    guard(async {
        // An upload of 1 MiB through a server whose frames hold 64 KiB.
        let fixture = server_with(
            "upload",
            Settings {
                max_frame_len: Some(64 * 1024),
                ..Settings::default()
            },
        );
        let mut client = connect_22(&fixture).await;
        client.send(call(4, "lines", "null")).await;
        let line = format!("\"{}\"", "l".repeat(10 * 1024 - 2));
        let mut credit = i64::from(DEFAULT_STREAM_WINDOW);
        let (mut sent, mut grants) = (0, 0);
        while sent < 100 {
            if credit > 0 {
                let frame = item_frame(4, &[&line, &line]);
                credit -= frame.payload.len() as i64;
                client.send(frame).await;
                sent += 2;
                continue;
            }
            let frame = client.recv_skipping_notify().await.unwrap();
            assert_eq!((frame.kind, frame.id), (Kind::Credit, 4), "{frame:?}");
            credit += i64::from(decode_credit(&frame.payload).unwrap());
            grants += 1;
        }
        client.send(Frame::new(Kind::End, 4, "")).await;
        let last = loop {
            let frame = client.recv_skipping_notify().await.unwrap();
            if frame.kind != Kind::Credit {
                break frame;
            }
        };
        assert_eq!((last.kind, last.id), (Kind::Response, 4), "{last:?}");
        assert_eq!(last.payload, "100");
        assert!(grants >= 2, "{grants} CREDITs");
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn an_item_that_does_not_decode_ends_the_stream_with_bad_request() {
    guard(async {
        let fixture = server("bad_item");
        let mut client = connect_22(&fixture).await;
        client.send(call(5, "lines", "null")).await;
        client.send(item_frame(5, &["\"ok\"", "42"])).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!(frame.id, 5);
        let (code, message) = error_of(&frame);
        assert_eq!(code, ErrorCode::BAD_REQUEST);
        assert!(message.starts_with("item"), "{message}");
        // END and ITEMs that crossed the answer are ignored.
        client.send(item_frame(5, &["\"late\""])).await;
        client.send(Frame::new(Kind::End, 5, "")).await;
        pong(&mut client, 6).await;
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_stream_both_ways_answers_each_item() {
    guard(async {
        let fixture = server("both_ways");
        let mut client = connect_22(&fixture).await;
        client.send(call(2, "double", "null")).await;
        let mut got = Vec::new();
        for n in 1..=5 {
            client.send(item_frame(2, &[&n.to_string()])).await;
            let frame = client.recv_skipping_notify().await.unwrap();
            got.extend(items(&frame));
        }
        client.send(Frame::new(Kind::End, 2, "")).await;
        let last = client.recv_skipping_notify().await.unwrap();
        assert_eq!(got, ["2", "4", "6", "8", "10"]);
        assert_eq!(
            (last.kind, last.payload.as_ref()),
            (Kind::Response, &b"5"[..])
        );
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_stream_gets_the_calls_timeout_and_not_the_request_timeout() {
    guard(async {
        let fixture = server_with(
            "stream_deadline",
            Settings {
                request_timeout: Some(Duration::from_millis(50)),
                ..Settings::default()
            },
        );
        let mut client = connect_22(&fixture).await;
        // No deadline of its own: the request timeout does not stop it.
        client.send(call(1, "hold", "null")).await;
        let timed = CallHeader::new("hold", Encoding::Json)
            .with_timeout(Some(Duration::from_millis(300)))
            .encode_with(b"null")
            .unwrap();
        client.send(Frame::new(Kind::Call, 2, timed)).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.id, error_of(&frame).0), (2, ErrorCode::TIMED_OUT));
        // Stream 1 still runs: cancelling it is answered.
        client.send(Frame::new(Kind::Cancel, 1, "")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.id, error_of(&frame).0), (1, ErrorCode::CANCELLED));
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn describe_lists_streams_and_their_item_schemas() {
    guard(async {
        let fixture = server("describe_streams");
        let mut client = connect_22(&fixture).await;
        client.send(Frame::new(Kind::Describe, 1, "")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        let description: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        let method = |name: &str| {
            description["methods"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == name)
                .unwrap()
                .clone()
        };
        let count = method("count");
        assert_eq!(count["streams"], "server");
        assert_eq!(count["server_item"]["type"], "integer");
        assert!(count.get("client_item").is_none());
        let lines = method("lines");
        assert_eq!(lines["streams"], "client");
        assert_eq!(lines["client_item"]["type"], "string");
        assert_eq!(lines["response"]["type"], "integer");
        assert_eq!(method("double")["streams"], "both");
        assert_eq!(description["topics"], serde_json::json!([]));
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn status_counts_open_streams_and_items_sent() {
    guard(async {
        let fixture = server("stream_status");
        let mut client = connect_22(&fixture).await;
        let before = status(&mut client, 1).await;
        assert_eq!(before.streams_open, 0);
        client.send(call(2, "hold", "null")).await;
        client.send(call(3, "count", "10")).await;
        let mut got = 0;
        while got < 10 {
            got += items(&client.recv_skipping_notify().await.unwrap()).len();
        }
        let last = client.recv_skipping_notify().await.unwrap();
        assert_eq!((last.kind, last.id), (Kind::Response, 3));
        let during = status(&mut client, 4).await;
        assert_eq!(during.streams_open, 1, "hold is open");
        assert_eq!(during.items_sent - before.items_sent, 10);
        client.send(Frame::new(Kind::Cancel, 2, "")).await;
        client.recv_skipping_notify().await.unwrap();
        assert_eq!(status(&mut client, 5).await.streams_open, 0);
        fixture.server.stop().await.unwrap();
    })
    .await
}

async fn status(client: &mut RawClient, id: u32) -> pipesvc::protocol::Status {
    client.send(Frame::new(Kind::Status, id, "")).await;
    let answer = client.recv_skipping_notify().await.unwrap();
    pipesvc::protocol::Status::decode(&answer.payload).unwrap()
}

#[tokio::test]
async fn at_shutdown_a_stream_gets_goodbye_then_shutting_down() {
    guard(async {
        let fixture = server("stream_shutdown");
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "hold", "null")).await;
        pong(&mut client, 2).await;
        let stopping = tokio::spawn(fixture.server.stop());
        let goodbye = client.recv_skipping_notify().await.unwrap();
        assert_eq!(goodbye.kind, Kind::Goodbye);
        let last = client.recv_skipping_notify().await.unwrap();
        assert_eq!((last.id, error_of(&last).0), (1, ErrorCode::SHUTTING_DOWN));
        assert_eq!(client.recv().await, None);
        stopping.await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn a_producer_in_a_task_of_its_own_sees_the_cancel_as_a_failed_send_and_a_signal() {
    guard(async {
        let mut fixture = server("cancel_spawned");
        let mut client = connect_22(&fixture).await;
        client.send(call(1, "spawned", "null")).await;
        let frame = client.recv_skipping_notify().await.unwrap();
        assert_eq!((frame.kind, frame.id), (Kind::Item, 1));
        client.send(Frame::new(Kind::Cancel, 1, "")).await;
        let last = loop {
            let frame = client.recv_skipping_notify().await.unwrap();
            if frame.kind != Kind::Item {
                break frame;
            }
        };
        assert_eq!((last.id, error_of(&last).0), (1, ErrorCode::CANCELLED));
        // Both, in either order: the signal (0) and the send's `cancelled`.
        let mut seen = [
            fixture.seen.recv().await.unwrap(),
            fixture.seen.recv().await.unwrap(),
        ];
        seen.sort_unstable();
        assert_eq!(seen, [0, ErrorCode::CANCELLED.0]);
        fixture.server.stop().await.unwrap();
    })
    .await
}
