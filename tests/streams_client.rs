//! The client's streams against a real server (revision 2.2): many
//! clients with concurrent streams, every item in order; cancel by drop
//! seen by the producer; an error mid-stream; an upload larger than the
//! maximum frame.

mod common;

use bytes::Bytes;
use common::{guard, unique_endpoint, TestServer};
use pipesvc::client::ClientOptions;
use pipesvc::protocol::{ErrorCode, ServiceCode};
use pipesvc::rpc::{Service, StreamMethod, Topic, TopicEvent};
use pipesvc::server::Publisher;
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::Client;
use tokio::sync::mpsc;

/// The numbers `from` to `from + n - 1` (params: `(from, n)`).
const RANGE: StreamMethod<(u64, u64), (), u64, u64> =
    StreamMethod::server("range", "from..from+n, then n");
/// Items until dropped; its drop is reported.
const FOREVER: StreamMethod<(), (), u64, ()> =
    StreamMethod::server("forever", "Counts until cancelled");
/// One item, then nothing, for ever.
const STUCK: StreamMethod<(), (), u64, ()> = StreamMethod::server("stuck", "One item, then waits");
/// Two items, then the error 1234.
const FAILING: StreamMethod<(), (), u64, ()> =
    StreamMethod::server("failing", "Two items, then an error");
/// Each string uploaded, in capitals, as it comes; then how many.
const UPPER: StreamMethod<(), String, String, u64> =
    StreamMethod::both("upper", "Each string in capitals");
/// The bytes of every string uploaded.
const SIZE: StreamMethod<(), String, (), u64> =
    StreamMethod::client("size", "Counts the bytes uploaded");

/// What the tests publish.
const NEWS: Topic<String> = Topic::new("news", "Headlines");

const BROKEN: ServiceCode = match ServiceCode::new(1234) {
    Some(code) => code,
    None => panic!("a service code"),
};

/// Sends on drop: the producer's future was dropped (cancelled).
struct DropGuard(mpsc::UnboundedSender<()>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn server(test: &str) -> (TestServer, mpsc::UnboundedReceiver<()>) {
    let (server, _, drops) = server_on(unique_endpoint(test));
    (server, drops)
}

/// The test's service on `endpoint`, and its publisher.
fn server_on(endpoint: pipesvc::Endpoint) -> (TestServer, Publisher, mpsc::UnboundedReceiver<()>) {
    let (dropped, drops) = mpsc::unbounded_channel();
    let service = Service::new("streams", "0.1.0", dropped)
        .topic(&NEWS)
        .stream_method(&RANGE, |_, (from, n): (u64, u64), items, _, _| async move {
            for i in from..from + n {
                items.send(&i).await?;
            }
            Ok(n)
        })
        .stream_method(&FOREVER, |dropped, (), items, _, _| async move {
            let _guard = DropGuard((*dropped).clone());
            for i in 0.. {
                items.send(&i).await?;
            }
            Ok(())
        })
        .stream_method(&STUCK, |_, (), items, _, _| async move {
            items.send(&1).await?;
            std::future::pending::<()>().await;
            Ok(())
        })
        .stream_method(&FAILING, |_, (), items, _, _| async move {
            items.send(&1).await?;
            items.send(&2).await?;
            Err(ServiceError::with_code(BROKEN, "broken after two"))
        })
        .stream_method(&UPPER, |_, (), items, mut lines, _| async move {
            let mut n = 0;
            while let Some(line) = lines.next().await? {
                let line: String = line;
                items.send(&line.to_uppercase()).await?;
                n += 1;
            }
            Ok(n)
        })
        .stream_method(&SIZE, |_, (), _, mut lines, _| async move {
            let mut bytes = 0u64;
            while let Some(line) = lines.next().await? {
                let line: String = line;
                bytes += line.len() as u64;
            }
            Ok(bytes)
        });
    let publisher = service.publisher().clone();
    let server = Server::builder(endpoint)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .calls(service)
        .bind()
        .expect("bind the server");
    (TestServer::start(server), publisher, drops)
}

/// Publishes `headline` once `n` subscribers are there (subscribing is
/// acknowledged by the first ITEM, which may come after the publish).
async fn publish_to(publisher: &Publisher, n: usize, headline: &str) {
    let mut waits = 0u32;
    while publisher.publish(&NEWS, &headline.to_owned()) < n {
        // Nobody (or not everyone) subscribed yet: the publish reached
        // fewer; the subscriber's SUBSCRIBE is on its way.
        waits += 1;
        assert!(waits < 100_000, "the subscribers never came");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_with_concurrent_streams_get_every_item_in_order() {
    common::raise_nofile(4096);
    let (server, _drops) = server("streams-200");
    let endpoint = server.endpoint().clone();
    let mut clients = Vec::new();
    for c in 0..200u64 {
        let endpoint = endpoint.clone();
        clients.push(tokio::spawn(async move {
            let client = Client::connect(&endpoint).await.expect("connect");
            let streams = (0..4u64).map(|s| {
                let client = client.clone();
                async move {
                    let from = (c * 4 + s) * 1_000_000;
                    // 300 items: more than one batch and more than a
                    // half window of grants for the smallest items.
                    let mut items = client.stream(&RANGE, &(from, 300)).await?;
                    let mut want = from;
                    while let Some(item) = items.next().await {
                        assert_eq!(item?, want, "client {c} stream {s}");
                        want += 1;
                    }
                    assert_eq!(want, from + 300);
                    assert_eq!(items.finish().await?, 300);
                    Ok::<_, pipesvc::Error>(())
                }
            });
            for outcome in futures_util::future::join_all(streams).await {
                outcome.expect("a stream");
            }
            client.close().await;
        }));
    }
    for client in clients {
        guard(client).await.expect("a client");
    }
}

#[tokio::test]
async fn a_large_stream_is_paced_by_the_credit_and_arrives_whole() {
    // 100 000 items of about 10 bytes: the window (256 KiB) is granted
    // back many times over.
    let (server, _drops) = server("streams-large");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    let mut items = guard(client.stream(&RANGE, &(0, 100_000))).await.unwrap();
    let mut want = 0;
    while let Some(item) = guard(items.next()).await {
        assert_eq!(item.unwrap(), want);
        want += 1;
    }
    assert_eq!(want, 100_000);
    assert_eq!(guard(items.finish()).await.unwrap(), 100_000);
}

#[tokio::test]
async fn dropping_a_stream_cancels_it_on_the_server() {
    let (server, mut drops) = server("streams-cancel");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    let mut items = guard(client.stream(&FOREVER, &())).await.unwrap();
    for want in 0..3 {
        assert_eq!(guard(items.next()).await.unwrap().unwrap(), want);
    }
    drop(items);
    // The producer's future is dropped: CANCEL reached it.
    guard(drops.recv()).await.expect("the producer was dropped");
    // The connection carries on.
    let mut again = guard(client.stream(&RANGE, &(7, 1))).await.unwrap();
    assert_eq!(guard(again.next()).await.unwrap().unwrap(), 7);
}

#[tokio::test]
async fn an_error_mid_stream_ends_it_with_that_error() {
    let (server, _drops) = server("streams-error");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    let mut items = guard(client.stream(&FAILING, &())).await.unwrap();
    assert_eq!(guard(items.next()).await.unwrap().unwrap(), 1);
    assert_eq!(guard(items.next()).await.unwrap().unwrap(), 2);
    let err = guard(items.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::from(BROKEN)), "{err}");
    assert!(err.to_string().contains("broken after two"), "{err}");
    assert!(guard(items.next()).await.is_none());
    let err = guard(items.finish()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::from(BROKEN)));
}

#[tokio::test]
async fn an_unknown_streaming_method_is_the_streams_first_item() {
    let (server, _drops) = server("streams-unknown");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    const NOPE: StreamMethod<(), (), u64, ()> = StreamMethod::server("nope", "absent");
    let mut items = guard(client.stream(&NOPE, &())).await.unwrap();
    let err = guard(items.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_METHOD), "{err}");
}

#[tokio::test]
async fn an_upload_larger_than_the_maximum_frame_arrives_whole() {
    let (server, _drops) = server("streams-upload");
    let options = ClientOptions::new();
    let client = guard(Client::connect_with(server.endpoint(), options))
        .await
        .unwrap();
    let max = client.server_max_frame_len() as u64;
    // Items of 64 KiB up to twice the maximum frame.
    let chunk = "u".repeat(64 * 1024);
    let count = 2 * max / chunk.len() as u64 + 1;
    let mut upload = guard(client.upload(&SIZE, &())).await.unwrap();
    for _ in 0..count {
        guard(upload.send(&chunk)).await.unwrap();
    }
    let total = guard(upload.finish()).await.unwrap();
    assert_eq!(total, count * chunk.len() as u64);
    assert!(total > max, "{total} bytes, more than a frame of {max}");
}

#[tokio::test]
async fn a_bidirectional_stream_answers_each_item_as_it_comes() {
    let (server, _drops) = server("streams-both");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    let (mut sender, mut answers) = guard(client.stream_both(&UPPER, &())).await.unwrap();
    // Lockstep: each answer comes before the next item is sent.
    for word in ["a", "bc", "déf"] {
        guard(sender.send(&word.to_owned())).await.unwrap();
        let answer = guard(answers.next()).await.unwrap().unwrap();
        assert_eq!(answer, word.to_uppercase());
    }
    guard(sender.end()).await.unwrap();
    assert!(guard(answers.next()).await.is_none());
    assert_eq!(guard(answers.finish()).await.unwrap(), 3);
}

#[tokio::test]
async fn a_subscription_follows_the_topic_across_a_server_restart() {
    let endpoint = unique_endpoint("streams-restart");
    let (server, publisher, _drops) = server_on(endpoint.clone());
    let options = ClientOptions::new().reconnect(true);
    let client = guard(Client::connect_with(&endpoint, options))
        .await
        .unwrap();
    let mut news = guard(client.subscribe(&NEWS)).await.unwrap();
    // The first publish that reaches the subscriber is the first event.
    publish_to(&publisher, 1, "one").await;
    let first = guard(news.next()).await.unwrap().unwrap();
    assert_eq!(first, TopicEvent::Event("one".to_owned()));

    // The service restarts on the same endpoint: its new self has no
    // subscription, and the client makes it again by itself.
    guard(server.stop()).await.unwrap();
    let (_server, publisher, _drops) = server_on(endpoint.clone());
    let reading = tokio::spawn(async move {
        let resubscribed = news.next().await.unwrap().unwrap();
        let event = news.next().await.unwrap().unwrap();
        (resubscribed, event)
    });
    publish_to(&publisher, 1, "two").await;
    let (resubscribed, event) = guard(reading).await.unwrap();
    assert_eq!(resubscribed, TopicEvent::Resubscribed);
    assert_eq!(event, TopicEvent::Event("two".to_owned()));
}

#[tokio::test]
async fn an_unknown_topic_is_the_subscriptions_error() {
    let (server, _drops) = server("streams-no-topic");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    const NOPE: Topic<u64> = Topic::new("nope", "absent");
    let mut nope = guard(client.subscribe(&NOPE)).await.unwrap();
    let err = guard(nope.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_METHOD), "{err}");
    assert!(guard(nope.next()).await.is_none());
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_many_events_it_lost() {
    let (server, publisher, _drops) = server_on(unique_endpoint("streams-lagged"));
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    let mut news = guard(client.subscribe(&NEWS)).await.unwrap();
    publish_to(&publisher, 1, "ready").await;
    let ready = guard(news.next()).await.unwrap().unwrap();
    assert_eq!(ready, TopicEvent::Event("ready".to_owned()));
    // 300 events at once, on this (the server's) thread: the
    // subscription's queue of 256 overflows before any is sent.
    for i in 0..300 {
        publisher.publish(&NEWS, &i.to_string());
    }
    let mut lost = 0;
    let mut next = None;
    let mut events = Vec::new();
    while events.last().map(String::as_str) != Some("299") {
        match guard(news.next()).await.unwrap().unwrap() {
            TopicEvent::Lagged(n) => {
                lost += n;
                next = None;
            }
            TopicEvent::Event(event) => {
                // In order, with gaps only where a lag was reported.
                let n: u64 = event.parse().unwrap();
                if let Some(want) = next {
                    assert_eq!(n, want, "a gap without a lagged marker");
                }
                next = Some(n + 1);
                events.push(event);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        lost + events.len() as u64,
        300,
        "every event seen or counted"
    );
    assert!(lost >= 44, "the queue holds 256: {lost} lost");
}

#[tokio::test]
async fn a_streaming_method_called_as_a_plain_call_fails_that_call_only() {
    let (server, mut drops) = server("streams-as-call");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    // The same name, declared (wrongly) as a method that answers once.
    const AS_CALL: pipesvc::rpc::Method<(), u64> = pipesvc::rpc::Method::new("forever", "");
    let err = guard(client.call(&AS_CALL, &())).await.unwrap_err();
    assert!(err.to_string().contains("stream"), "{err}");
    // Its stream was cancelled, and the connection carries on.
    guard(drops.recv()).await.expect("the producer was dropped");
    let mut again = guard(client.stream(&RANGE, &(7, 1))).await.unwrap();
    assert_eq!(guard(again.next()).await.unwrap().unwrap(), 7);
}

#[tokio::test]
async fn a_streams_options_set_its_deadline_and_encoding() {
    use pipesvc::client::CallOptions;
    use pipesvc::protocol::Encoding;
    use std::time::Duration;
    let (server, _drops) = server("streams-options");
    let client = guard(Client::connect(server.endpoint())).await.unwrap();
    // MessagePack both ways: params, items and result.
    let options = CallOptions::new().encoding(Encoding::MessagePack);
    let mut items = guard(client.stream_with(&RANGE, &(5, 2), options))
        .await
        .unwrap();
    assert_eq!(guard(items.next()).await.unwrap().unwrap(), 5);
    assert_eq!(guard(items.next()).await.unwrap().unwrap(), 6);
    assert_eq!(guard(items.finish()).await.unwrap(), 2);
    // The deadline covers the whole stream, items or not: the server
    // ends it there (the client would give up itself half a second on).
    let options = CallOptions::new().timeout(Some(Duration::from_millis(50)));
    let mut stuck = guard(client.stream_with(&STUCK, &(), options))
        .await
        .unwrap();
    assert_eq!(guard(stuck.next()).await.unwrap().unwrap(), 1);
    let err = guard(stuck.next()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TIMED_OUT), "{err}");
}
