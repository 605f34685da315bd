//! Topics (PROTOCOL.md "Topics" and "Slow subscribers", revision 2.2),
//! frame by frame over a real socket: SUBSCRIBE, the `subscribed` marker,
//! events in order, a lagging subscriber, the disconnect policy, the
//! refusals, and STATUS's counts.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer};
use pipesvc::protocol::{
    decode_item, encode_credit, CallHeader, ClientHello, Encoding, Entry, ErrorCode, ErrorPayload,
    Frame, FrameCodec, Kind, KindSet, Status, Subscribe,
};
use pipesvc::rpc::{Service, SlowSubscriber, StreamMethod, Topic};
use pipesvc::server::{AccessPolicy, ConnectionContext, Publisher, Rule, ServiceError};
use pipesvc::transport::{self, ConnectOptions};
use pipesvc::Server;

/// Drop oldest, 4 events of room.
const NEWS: Topic<String> = Topic::new("news", "headlines").queue(4);
/// Disconnect, 2 events of room.
const STRICT: Topic<String> = Topic::new("strict", "all or nothing")
    .policy(SlowSubscriber::Disconnect)
    .queue(2);
/// Reserved to a group the test user is not in.
const SECRET: Topic<u32> = Topic::new("secret", "for staff");
/// Publishes `n` events to NEWS from a handler (through its context).
const SHOUT: StreamMethod<u32, (), (), ()> = StreamMethod::server("shout", "publishes");

/// A rule no caller meets, on every platform (a Unix gid would not be a
/// rule on Windows: `bind` refuses it there).
fn nobody() -> Rule {
    Rule::custom("staff only", |_| false)
}

struct Fixture {
    server: TestServer,
    publisher: Publisher,
}

fn server(test: &str) -> Fixture {
    let service = Service::new("topics", "0.1.0", ())
        .topic(&NEWS)
        .topic(&STRICT)
        .topic(&SECRET)
        .stream_method(
            &SHOUT,
            |_, n: u32, _, _, ctx: ConnectionContext| async move {
                let publisher = ctx.publisher().expect("a service has a publisher");
                for i in 0..n {
                    publisher.publish(&NEWS, &format!("shout {i}"));
                }
                Ok(())
            },
        );
    let publisher = service.publisher().clone();
    let policy = AccessPolicy::same_user().method("topic:secret", nobody());
    let server = Server::builder(unique_endpoint(test))
        .access(policy)
        .shutdown_timeout(Duration::from_secs(30))
        .handler(
            |request: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(request) },
        )
        .calls(service)
        .bind()
        .expect("bind the server");
    Fixture {
        server: TestServer::start(server),
        publisher,
    }
}

async fn connect(fixture: &Fixture, kinds: Option<&[u8]>) -> RawClient {
    let stream = transport::connect(fixture.server.endpoint(), &ConnectOptions::default())
        .await
        .expect("connect")
        .stream;
    let mut client = RawClient::over(stream);
    *client.reader.decoder_mut() = FrameCodec::new(u32::MAX).with_version(2);
    client.recv().await.expect("HELLO");
    let mut ours = ClientHello::with_version(2);
    ours.kinds = kinds.map(KindSet::from_bytes);
    client.send(Frame::new(Kind::Hello, 0, ours.encode())).await;
    let reply = client.recv().await.expect("the HELLO reply");
    assert_eq!(reply.kind, Kind::Hello);
    client
}

async fn connect_22(fixture: &Fixture) -> RawClient {
    connect(fixture, Some(&[1, 3, 4, 5, 6, 8, 13, 14])).await
}

fn subscribe(id: u32, topic: &str) -> Frame {
    let payload = Subscribe::new(Encoding::Json, topic).unwrap().encode();
    Frame::new(Kind::Subscribe, id, payload)
}

fn entries(frame: &Frame, id: u32) -> Vec<Entry> {
    assert_eq!((frame.kind, frame.id), (Kind::Item, id), "{frame:?}");
    decode_item(&frame.payload, false).expect("a valid ITEM")
}

fn event(text: &str) -> Entry {
    Entry::Item(Bytes::from(format!("\"{text}\"")))
}

fn error_of(frame: &Frame) -> (ErrorCode, String) {
    assert_eq!(frame.kind, Kind::Error, "{frame:?}");
    let error = ErrorPayload::decode(&frame.payload).unwrap();
    (error.code, error.message)
}

async fn next(client: &mut RawClient) -> Frame {
    client.recv_skipping_notify().await.expect("a frame")
}

async fn status(client: &mut RawClient, id: u32) -> Status {
    client.send(Frame::new(Kind::Status, id, "")).await;
    let frame = next(client).await;
    assert_eq!((frame.kind, frame.id), (Kind::Response, id), "{frame:?}");
    Status::decode(&frame.payload).expect("a STATUS answer")
}

/// Subscribes with `id` and reads the `subscribed` marker: from then on
/// every event published reaches the subscription.
async fn subscribed(client: &mut RawClient, id: u32, topic: &str) {
    client.send(subscribe(id, topic)).await;
    let frame = next(client).await;
    assert_eq!(entries(&frame, id), [Entry::Subscribed]);
}

/// Takes the subscription's credit below 0 (the client grants none): an
/// event larger than the window, read whole. The server then queues what
/// is published.
async fn exhaust_credit(fixture: &Fixture, client: &mut RawClient, id: u32, topic: &Topic<String>) {
    let big = "b".repeat(300 * 1024);
    fixture.publisher.publish(topic, &big);
    let frame = next(client).await;
    assert_eq!(entries(&frame, id), [event(&big)]);
}

#[tokio::test]
async fn a_subscription_starts_with_subscribed_then_every_event_in_order() {
    guard(async {
        let fixture = server("topic_order");
        let mut client = connect_22(&fixture).await;
        subscribed(&mut client, 1, "news").await;
        for i in 0..100 {
            assert_eq!(fixture.publisher.publish(&NEWS, &format!("e{i}")), 1);
        }
        // The queue holds 4 and the test publishes faster than the
        // connection may send: what was dropped is counted in `lagged`
        // entries, and what arrives is in the order published.
        let (mut events, mut lagged) = (Vec::new(), 0);
        while events.len() as u64 + lagged < 100 {
            let frame = next(&mut client).await;
            for entry in entries(&frame, 1) {
                match entry {
                    Entry::Lagged(n) => lagged += n,
                    entry => events.push(entry),
                }
            }
        }
        let want: Vec<Entry> = (0..100).map(|i| event(&format!("e{i}"))).collect();
        let mut last = None;
        for e in &events {
            let at = want.iter().position(|w| w == e).expect("a published event");
            assert!(last.is_none_or(|l| at > l), "out of order");
            last = Some(at);
        }
        assert_eq!(events.last(), want.last(), "the newest is never dropped");
        // Events from a handler (through its context) arrive too.
        client.send(call(2, "shout", "3")).await;
        let mut shouts = Vec::new();
        while shouts.len() < 3 {
            let frame = next(&mut client).await;
            if frame.id == 1 {
                shouts.extend(entries(&frame, 1));
            }
        }
        assert_eq!(
            shouts,
            [event("shout 0"), event("shout 1"), event("shout 2")]
        );
        fixture.server.stop().await.unwrap();
    })
    .await
}

fn call(id: u32, method: &str, params: &str) -> Frame {
    let payload = CallHeader::new(method, Encoding::Json)
        .encode_with(params.as_bytes())
        .unwrap();
    Frame::new(Kind::Call, id, payload)
}

#[tokio::test]
async fn a_lagging_subscriber_gets_a_lagged_entry_with_the_count_then_the_newest_events() {
    guard(async {
        let fixture = server("topic_lagged");
        let mut client = connect_22(&fixture).await;
        subscribed(&mut client, 1, "news").await;
        exhaust_credit(&fixture, &mut client, 1, &NEWS).await;
        // The queue holds 4: of 10, the 6 oldest are dropped.
        for i in 0..10 {
            fixture.publisher.publish(&NEWS, &format!("n{i}"));
        }
        let counts = status(&mut client, 9).await;
        assert_eq!(counts.events_dropped, 6);
        assert_eq!(counts.subscribers, 1);
        client
            .send(Frame::new(Kind::Credit, 1, encode_credit(1 << 20)))
            .await;
        let frame = next(&mut client).await;
        let mut want = vec![Entry::Lagged(6)];
        want.extend((6..10).map(|i| event(&format!("n{i}"))));
        assert_eq!(entries(&frame, 1), want);
        // The subscription carries on.
        fixture.publisher.publish(&NEWS, &"after".to_owned());
        assert_eq!(entries(&next(&mut client).await, 1), [event("after")]);
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn under_the_disconnect_policy_a_slow_subscriber_gets_too_slow_and_the_connection_carries_on()
{
    guard(async {
        let fixture = server("topic_disconnect");
        let mut client = connect_22(&fixture).await;
        subscribed(&mut client, 1, "strict").await;
        exhaust_credit(&fixture, &mut client, 1, &STRICT).await;
        for i in 0..2 {
            assert_eq!(fixture.publisher.publish(&STRICT, &format!("s{i}")), 1);
        }
        // The third does not fit: the subscription ends, its queue dropped.
        assert_eq!(fixture.publisher.publish(&STRICT, &"s2".to_owned()), 0);
        let frame = next(&mut client).await;
        assert_eq!(frame.id, 1);
        let (code, message) = error_of(&frame);
        assert_eq!(code, ErrorCode::TOO_SLOW, "{message}");
        let counts = status(&mut client, 2).await;
        assert_eq!((counts.subscribers, counts.events_dropped), (0, 3));
        assert_eq!(fixture.publisher.subscribers(&STRICT), 0);
        // Subscribing again works.
        subscribed(&mut client, 1, "strict").await;
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn subscribe_refusals_carry_the_subscribes_id() {
    guard(async {
        let fixture = server("topic_refusals");
        let mut client = connect_22(&fixture).await;
        let cases: [(Frame, ErrorCode); 5] = [
            (subscribe(1, "nope"), ErrorCode::UNKNOWN_METHOD),
            (subscribe(2, "secret"), ErrorCode::NOT_ALLOWED),
            (
                Frame::new(Kind::Subscribe, 3, &b"\x01"[..]),
                ErrorCode::BAD_REQUEST,
            ),
            (
                Frame::new(Kind::Subscribe, 4, &b"\x01\x00"[..]),
                ErrorCode::BAD_REQUEST,
            ),
            (
                Frame::new(Kind::Subscribe, 5, &b"\x07\x04news"[..]),
                ErrorCode::BAD_REQUEST,
            ),
        ];
        for (frame, code) in cases {
            let id = frame.id;
            client.send(frame).await;
            let answer = next(&mut client).await;
            assert_eq!(answer.id, id);
            let (got, message) = error_of(&answer);
            assert_eq!(got, code, "{id}: {message}");
            if id == 2 {
                assert!(message.contains("topic:secret"), "{message}");
            }
        }
        // 64 subscriptions, then overloaded.
        for id in 10..74 {
            subscribed(&mut client, id, "news").await;
        }
        client.send(subscribe(74, "news")).await;
        let answer = next(&mut client).await;
        assert_eq!(
            (answer.id, error_of(&answer).0),
            (74, ErrorCode::OVERLOADED)
        );
        assert_eq!(fixture.publisher.subscribers(&NEWS), 64);
        // A client that does not accept ITEM and CREDIT: bad request.
        let mut old = connect(&fixture, None).await;
        old.send(subscribe(1, "news")).await;
        let answer = next(&mut old).await;
        assert_eq!(
            (answer.id, error_of(&answer).0),
            (1, ErrorCode::BAD_REQUEST)
        );
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn cancel_unsubscribes_and_closing_the_topic_answers_an_empty_response() {
    guard(async {
        let fixture = server("topic_cancel_close");
        let mut client = connect_22(&fixture).await;
        subscribed(&mut client, 1, "news").await;
        subscribed(&mut client, 2, "news").await;
        assert_eq!(status(&mut client, 3).await.subscribers, 2);
        client.send(Frame::new(Kind::Cancel, 1, "")).await;
        let answer = next(&mut client).await;
        assert_eq!((answer.id, error_of(&answer).0), (1, ErrorCode::CANCELLED));
        assert_eq!(fixture.publisher.subscribers(&NEWS), 1);
        // The service closes the topic: queued events, then RESPONSE.
        fixture.publisher.publish(&NEWS, &"last".to_owned());
        fixture.publisher.close(&NEWS);
        let mut events = Vec::new();
        let last = loop {
            let frame = next(&mut client).await;
            if frame.kind != Kind::Item {
                break frame;
            }
            events.extend(entries(&frame, 2));
        };
        assert_eq!(events, [event("last")]);
        assert_eq!((last.kind, last.id), (Kind::Response, 2));
        assert!(last.payload.is_empty());
        let counts = status(&mut client, 4).await;
        assert_eq!(counts.subscribers, 0);
        assert!(counts.events_sent >= 1);
        fixture.server.stop().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn goodbye_ends_subscriptions_with_shutting_down_at_once() {
    guard(async {
        let fixture = server("topic_goodbye");
        let mut client = connect_22(&fixture).await;
        subscribed(&mut client, 1, "news").await;
        let handle = fixture.server.handle().clone();
        // The server's shutdown timeout is 30 s: the subscription must not
        // wait for it.
        let stopping = tokio::spawn(fixture.server.stop());
        let goodbye = next(&mut client).await;
        assert_eq!(goodbye.kind, Kind::Goodbye);
        let answer = next(&mut client).await;
        assert_eq!(
            (answer.id, error_of(&answer).0),
            (1, ErrorCode::SHUTTING_DOWN)
        );
        assert_eq!(client.recv().await, None);
        stopping.await.unwrap().unwrap();
        assert_eq!(handle.status().subscribers, 0);
    })
    .await
}

#[tokio::test]
async fn describe_lists_topics_with_their_event_schema_policy_and_queue() {
    guard(async {
        let fixture = server("topic_describe");
        let mut client = connect_22(&fixture).await;
        client.send(Frame::new(Kind::Describe, 1, "")).await;
        let frame = next(&mut client).await;
        let description: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        let topics = description["topics"].as_array().unwrap();
        assert_eq!(topics.len(), 3);
        assert_eq!(topics[0]["name"], "news");
        assert_eq!(topics[0]["event"]["type"], "string");
        assert_eq!(topics[0]["policy"], "drop_oldest");
        assert_eq!(topics[0]["queue"], 4);
        assert_eq!(topics[1]["policy"], "disconnect");
        assert_eq!(topics[2]["event"]["type"], "integer");
        fixture.server.stop().await.unwrap();
    })
    .await
}
