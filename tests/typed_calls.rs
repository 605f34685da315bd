//! Typed calls end to end (protocol 2), over the in-memory transport:
//! round trips of varied types in both encodings from many clients,
//! unknown methods, bad params, cancellation and deadlines seen by the
//! handler, metadata, and byte requests on the same server.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{guard, unique_endpoint, TestServer};
use pipesvc::client::{CallOptions, ClientOptions};
use pipesvc::protocol::{Encoding, ErrorCode};
use pipesvc::rpc::{Method, Service};
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
enum Shape {
    Point,
    Circle(f64),
    Rect { w: u32, h: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Everything {
    text: String,
    big: u64,
    small: i64,
    flag: bool,
    maybe: Option<u32>,
    nothing: Option<String>,
    shapes: Vec<Shape>,
    counts: BTreeMap<String, u16>,
    unit: (),
    pair: (u8, String),
}

const EVERYTHING: Method<Everything, Everything> = Method::new("everything", "Echoes a struct");
const TEXT: Method<String, String> = Method::new("text", "Echoes a string");
const MAX: Method<u64, u64> = Method::new("max", "Echoes a u64");
const UNIT: Method<(), ()> = Method::new("unit", "Takes and returns nothing");
const MAYBE: Method<Option<Vec<i8>>, Option<Vec<i8>>> = Method::new("maybe", "Echoes an Option");
const SHAPE: Method<Shape, Shape> = Method::new("shape", "Echoes an enum");
const FOREVER: Method<(), ()> = Method::new("forever", "Never answers; records its drop");
const TRACE: Method<(), Option<String>> = Method::new("trace", "The call's traceparent");
const NOT_THERE: Method<(), ()> = Method::new("not_there", "A method the service lacks");

#[derive(Serialize, Deserialize, JsonSchema)]
struct WrongSleep {
    ms: String,
}
/// `forever` with params of the wrong type.
const FOREVER_WRONG: Method<WrongSleep, ()> = Method::new("forever", "");

fn everything(n: u64) -> Everything {
    Everything {
        text: format!("héllo wörld ✓ 日本 🦀 {n}"),
        big: u64::MAX - n,
        small: i64::MIN + n as i64,
        flag: n.is_multiple_of(2),
        maybe: n.is_multiple_of(3).then_some(n as u32),
        nothing: None,
        shapes: vec![
            Shape::Point,
            Shape::Circle(1.5),
            Shape::Rect { w: 3, h: n as u32 },
        ],
        counts: [("a".to_owned(), 1), (format!("k{n}"), u16::MAX)].into(),
        unit: (),
        pair: (255, String::new()),
    }
}

/// What the `forever` handlers report: each start, and each drop.
struct Probe {
    started: Semaphore,
    dropped: mpsc::UnboundedSender<()>,
}

/// Sends on drop: the handler's future was dropped (cancelled).
struct DropGuard(mpsc::UnboundedSender<()>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn echo<T: Send + 'static>(
    _: Arc<Probe>,
    value: T,
    _: ConnectionContext,
) -> std::future::Ready<Result<T, ServiceError>> {
    std::future::ready(Ok(value))
}

/// A server with typed methods and a byte echo, and the receiver of the
/// `forever` handlers' drops.
fn server(test: &str) -> (TestServer, Arc<Probe>, mpsc::UnboundedReceiver<()>) {
    let (dropped, drops) = mpsc::unbounded_channel();
    let probe = Probe {
        started: Semaphore::new(0),
        dropped,
    };
    let service = Service::new("typed", "0.1.0", probe)
        .method(&EVERYTHING, echo)
        .method(&TEXT, echo)
        .method(&MAX, echo)
        .method(&UNIT, echo)
        .method(&MAYBE, echo)
        .method(&SHAPE, echo)
        .method(&FOREVER, |probe, (), _| async move {
            let _guard = DropGuard(probe.dropped.clone());
            probe.started.add_permits(1);
            std::future::pending::<()>().await;
            Ok(())
        })
        .method(&TRACE, |_, (), ctx| async move {
            Ok(ctx.metadata("traceparent").map(str::to_owned))
        });
    let probe = service.state().clone();
    let server = Server::builder(unique_endpoint(test))
        .handler(
            |request: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(request) },
        )
        .calls(service)
        .build()
        .expect("build the server");
    (TestServer::start(server), probe, drops)
}

async fn round_trips(client: pipesvc::Client, c: u64) {
    for i in 0..100 {
        let encoding = if (c + i).is_multiple_of(2) {
            Encoding::Json
        } else {
            Encoding::MessagePack
        };
        let options = || CallOptions::new().encoding(encoding);
        let n = c * 1000 + i;
        let sent = everything(n);
        let got = client.call_with(&EVERYTHING, &sent, options()).await;
        assert_eq!(got.expect("everything"), sent, "{encoding}");
        match i % 5 {
            0 => assert_eq!(
                client.call_with(&MAX, &u64::MAX, options()).await.unwrap(),
                u64::MAX
            ),
            1 => client.call_with(&UNIT, &(), options()).await.expect("unit"),
            2 => {
                let text = format!("\u{0}\u{7f}\"\\ ß {n}");
                assert_eq!(
                    client.call_with(&TEXT, &text, options()).await.unwrap(),
                    text
                );
            }
            3 => {
                for maybe in [None, Some(vec![]), Some(vec![-128, 0, 127])] {
                    let got = client.call_with(&MAYBE, &maybe, options()).await.unwrap();
                    assert_eq!(got, maybe, "{encoding}");
                }
            }
            _ => {
                let shape = Shape::Rect { w: u32::MAX, h: 0 };
                assert_eq!(
                    client.call_with(&SHAPE, &shape, options()).await.unwrap(),
                    shape
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varied_types_round_trip_from_200_clients_in_both_encodings() {
    let (server, _, _) = server("typed-round-trips");
    guard(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..200 {
            let client = server.connect_in_memory().await.expect("connect");
            tasks.spawn(round_trips(client, c));
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a client's round trips");
        }
    })
    .await;
}

#[tokio::test]
async fn an_unknown_method_is_named_in_its_error() {
    let (server, _, _) = server("typed-unknown");
    let client = guard(server.connect_in_memory()).await.expect("connect");
    let err = guard(client.call(&NOT_THERE, &())).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UNKNOWN_METHOD), "{err}");
    assert!(err.to_string().contains("not_there"), "{err}");
}

#[tokio::test]
async fn bad_params_get_bad_request_naming_the_field_in_both_encodings() {
    let (server, _, _) = server("typed-bad-params");
    for encoding in [Encoding::Json, Encoding::MessagePack] {
        let options = ClientOptions::new().encoding(encoding);
        let client = guard(server.connect_in_memory_with(options))
            .await
            .expect("connect");
        let err = guard(client.call(&FOREVER_WRONG, &WrongSleep { ms: "x".into() }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::BAD_REQUEST),
            "{encoding}: {err}"
        );
        assert!(
            err.to_string().contains("params: invalid type: map"),
            "{encoding}: {err}"
        );
        // A struct where a string is expected, one level down.
        const TEXT_WRONG: Method<Shape, String> = Method::new("text", "");
        let err = guard(client.call(&TEXT_WRONG, &Shape::Rect { w: 1, h: 2 }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::BAD_REQUEST),
            "{encoding}: {err}"
        );
        const SHAPE_WRONG: Method<BTreeMap<String, BTreeMap<String, &str>>, ()> =
            Method::new("shape", "");
        let wrong = [("Rect".to_owned(), [("w".to_owned(), "x")].into())].into();
        let err = guard(client.call(&SHAPE_WRONG, &wrong)).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("params.Rect.w: invalid type: string \"x\", expected u32"),
            "{encoding}: {message}"
        );
        // The connection carries on.
        assert_eq!(guard(client.call(&MAX, &7)).await.unwrap(), 7);
    }
}

#[tokio::test]
async fn a_dropped_call_is_cancelled_and_its_handler_dropped() {
    let (server, probe, mut drops) = server("typed-cancel");
    let client = Arc::new(guard(server.connect_in_memory()).await.expect("connect"));
    let caller = client.clone();
    let call = tokio::spawn(async move { caller.call(&FOREVER, &()).await });
    guard(probe.started.acquire())
        .await
        .expect("started")
        .forget();
    call.abort();
    guard(drops.recv()).await.expect("the handler was dropped");
    assert_eq!(guard(client.call(&MAX, &1)).await.unwrap(), 1);
    let status = guard(client.status()).await.expect("status");
    assert_eq!(status.requests_cancelled, 1);
}

#[tokio::test]
async fn the_server_enforces_the_deadline_while_the_client_waits_longer() {
    let (server, _, mut drops) = server("typed-deadline");
    let client = guard(server.connect_in_memory()).await.expect("connect");
    let options = CallOptions::new().timeout(Some(Duration::from_millis(50)));
    let err = guard(client.call_with(&FOREVER, &(), options))
        .await
        .unwrap_err();
    assert!(matches!(err, pipesvc::Error::Server { .. }), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::TIMED_OUT), "{err}");
    guard(drops.recv())
        .await
        .expect("the handler was dropped at its deadline");
}

#[tokio::test]
async fn sixty_four_abandoned_calls_leave_the_connection_usable() {
    let (server, probe, mut drops) = server("typed-abandoned");
    let client = Arc::new(guard(server.connect_in_memory()).await.expect("connect"));
    let started = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for _ in 0..64 {
        let caller = client.clone();
        calls.push(tokio::spawn(
            async move { caller.call(&FOREVER, &()).await },
        ));
    }
    // Every handler runs: the connection's whole in-flight limit is taken.
    guard(probe.started.acquire_many(64))
        .await
        .expect("started")
        .forget();
    for call in calls {
        call.abort();
    }
    for _ in 0..64 {
        guard(drops.recv()).await.expect("each handler dropped");
        started.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(started.load(Ordering::Relaxed), 64);
    guard(client.ping())
        .await
        .expect("PING after 64 abandoned calls");
    assert_eq!(
        guard(client.call(&TEXT, &"still here".to_owned()))
            .await
            .unwrap(),
        "still here"
    );
}

#[tokio::test]
async fn metadata_reaches_the_handler() {
    let (server, _, _) = server("typed-metadata");
    let client = guard(server.connect_in_memory()).await.expect("connect");
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let options = CallOptions::new()
        .metadata("traceparent", trace)
        .metadata("traceparent", "second");
    assert_eq!(
        guard(client.call_with(&TRACE, &(), options))
            .await
            .unwrap()
            .as_deref(),
        Some(trace)
    );
    assert_eq!(guard(client.call(&TRACE, &())).await.unwrap(), None);
}

#[tokio::test]
async fn byte_requests_and_typed_calls_share_one_server() {
    let (server, _, _) = server("typed-and-bytes");
    let client = guard(server.connect_in_memory()).await.expect("connect");
    let (bytes, typed) = guard(async {
        tokio::join!(
            client.request("raw bytes"),
            client.call(&TEXT, &"typed".to_owned())
        )
    })
    .await;
    assert_eq!(&bytes.unwrap()[..], b"raw bytes");
    assert_eq!(typed.unwrap(), "typed");
    let description = guard(client.describe()).await.expect("describe");
    assert_eq!(description.service, "typed");
    let everything = description.method("everything").expect("listed");
    assert_eq!(everything.request["properties"]["big"]["type"], "integer");
    assert_eq!(description.methods.len(), 8);
}
