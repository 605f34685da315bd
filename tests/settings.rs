//! One validation policy: a setting that cannot work is `Error::Config`
//! naming it, from `bind` (server, listener) and `connect` (client,
//! transport), before anything is opened; never a clamp or a panic.

mod common;

use std::time::Duration;

use bytes::Bytes;
use pipesvc::client::ClientOptions;
use pipesvc::server::{ConnectionContext, Server, ServerBuilder, ServiceError};
use pipesvc::transport::{self, ConnectOptions, Listener, ListenerOptions};
use pipesvc::{Client, Endpoint, Error};

use common::unique_endpoint;

async fn echo(request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    Ok(request)
}

/// The setting and message of an `Error::Config`; any other outcome fails.
fn config_error<T: std::fmt::Debug>(outcome: pipesvc::Result<T>) -> (String, String) {
    match outcome {
        Err(Error::Config { setting, message }) => (setting, message),
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

/// Nothing was created for a refused configuration (on Unix, no socket).
fn assert_untouched(endpoint: &Endpoint) {
    if cfg!(unix) {
        assert!(
            !endpoint.address().exists(),
            "{} was created",
            endpoint.address().display()
        );
    }
}

type Tweak = fn(ServerBuilder<()>) -> ServerBuilder<()>;

#[tokio::test]
async fn every_bad_server_setting_fails_bind_by_name() {
    let cases: [(&str, Tweak, &str); 23] = [
        (
            "max_connections",
            |b| b.max_connections(0),
            "at least 1, not 0",
        ),
        (
            "max_connections",
            |b| b.max_connections(usize::MAX),
            "at most",
        ),
        ("max_in_flight", |b| b.max_in_flight(0), "at least 1, not 0"),
        ("max_output_bytes", |b| b.max_output_bytes(0), "at least 1"),
        // Was clamped to what a connection's budget can count.
        (
            "max_output_bytes",
            |b| b.max_output_bytes(usize::MAX),
            "at most 536870911",
        ),
        ("input_budget", |b| b.input_budget(0), "at least 1"),
        ("max_input_bytes", |b| b.max_input_bytes(0), "at least 1"),
        (
            "max_connections_per_user",
            |b| b.max_connections_per_user(0),
            "at least 1, not 0",
        ),
        (
            "request_timeout",
            |b| b.request_timeout(Some(Duration::ZERO)),
            "above zero",
        ),
        (
            "request_timeout",
            |b| b.request_timeout(Some(Duration::MAX)),
            "a year",
        ),
        (
            "unanswered_frame_rate",
            |b| b.unanswered_frame_rate(Some(0)),
            "at least 1, not 0",
        ),
        (
            "max_frame_len",
            |b| b.max_frame_len(5),
            "at least 74, not 5",
        ),
        // The STATUS answer with its fixed counts is 74 bytes.
        ("max_frame_len", |b| b.max_frame_len(73), "STATUS answer"),
        (
            "handshake_timeout",
            |b| b.handshake_timeout(Duration::ZERO),
            "above zero",
        ),
        (
            "handshake_timeout",
            |b| b.handshake_timeout(Duration::MAX),
            "a year",
        ),
        (
            "shutdown_timeout",
            |b| b.shutdown_timeout(Duration::MAX),
            "a year",
        ),
        (
            "idle_timeout",
            |b| b.idle_timeout(Duration::ZERO),
            "above zero",
        ),
        (
            "write_timeout",
            |b| b.write_timeout(Duration::ZERO),
            "above zero",
        ),
        (
            "frame_timeout",
            |b| b.frame_timeout(Duration::ZERO),
            "above zero",
        ),
        ("backlog", |b| b.backlog(0), "at least 1, not 0"),
        ("max_instances", |b| b.max_instances(0), "at least 1, not 0"),
        (
            "max_instances",
            |b| b.max_instances(255),
            "at most 254, not 255",
        ),
        ("socket_mode", |b| b.socket_mode(0o1777), "at most 511"),
    ];
    for (setting, tweak, why) in cases {
        let endpoint = unique_endpoint("bad-setting");
        let builder = tweak(Server::builder(endpoint.clone()));
        let (named, message) = config_error(builder.handler(echo).bind());
        assert_eq!(named, setting, "{message}");
        assert!(message.contains(why), "{setting}: {message}");
        assert_untouched(&endpoint);
    }
}

#[tokio::test]
async fn the_error_says_which_setting_and_why() {
    let endpoint = unique_endpoint("bad-setting-text");
    let err = Server::builder(endpoint)
        .max_connections(0)
        .handler(echo)
        .bind()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: max_connections: must be at least 1, not 0: \
         no client could be served"
    );
}

#[tokio::test]
async fn the_edges_of_each_range_are_accepted_as_given() {
    // The smallest working values, and zero where zero means "do not wait".
    let endpoint = unique_endpoint("edge-settings");
    let server = Server::builder(endpoint.clone())
        .name("")
        .max_connections(1)
        .max_in_flight(1)
        .max_output_bytes(1)
        .input_budget(1)
        .max_input_bytes(1)
        .max_connections_per_user(1)
        .request_timeout(Some(Duration::from_nanos(1)))
        .unanswered_frame_rate(Some(1))
        // The STATUS answer's 74 bytes (the HELLO with no name is 16, the
        // HELLO reply 26).
        .max_frame_len(74)
        .shutdown_timeout(Duration::ZERO)
        .backlog(1)
        .max_instances(254)
        .handler(echo)
        .bind()
        .expect("the smallest working settings bind");
    drop(server);
    let serving = common::TestServer::start(
        Server::builder(endpoint.clone())
            .max_connections(1)
            .handler(echo)
            .bind()
            .unwrap(),
    );
    let client = Client::connect(&endpoint).await.unwrap();
    assert_eq!(client.request("one").await.unwrap(), "one");
    client.close().await;
    common::guard(serving.stop()).await.expect("serve");
}

type ClientTweak = fn(ClientOptions) -> ClientOptions;

#[tokio::test]
async fn every_bad_client_setting_fails_connect_by_name() {
    let cases: [(&str, ClientTweak, &str); 9] = [
        (
            "wait_for_service",
            |o| o.wait_for_service(Duration::MAX),
            "a year",
        ),
        (
            "handshake_timeout",
            |o| o.handshake_timeout(Duration::ZERO),
            "above zero",
        ),
        (
            "request_timeout",
            |o| o.request_timeout(Some(Duration::ZERO)),
            "above zero",
        ),
        (
            "close_timeout",
            |o| o.close_timeout(Duration::MAX),
            "a year",
        ),
        (
            "connect_timeout",
            |o| o.connect_timeout(Duration::MAX),
            "a year",
        ),
        (
            "max_frame_len",
            |o| o.max_frame_len(25),
            "at least 37, not 25",
        ),
        (
            "notification_buffer",
            |o| o.notification_buffer(0),
            "at least 1",
        ),
        (
            "notification_buffer_bytes",
            |o| o.notification_buffer_bytes(0),
            "at least 1",
        ),
        (
            "connect_timeout",
            |o| o.connect(ConnectOptions::new().timeout(Duration::MAX)),
            "a year",
        ),
    ];
    // A live server: the client refuses its own settings before connecting.
    let (endpoint, serving) = common::echo("bad-client-setting");
    for (setting, tweak, why) in cases {
        let options = tweak(ClientOptions::new());
        let (named, message) = config_error(Client::connect_with(&endpoint, options).await);
        assert_eq!(named, setting, "{message}");
        assert!(message.contains(why), "{setting}: {message}");
    }
    assert_eq!(serving.handle().status().connections_total, 0);
    // Zero where it means "do not wait", and no request deadline at all.
    let options = ClientOptions::new()
        .close_timeout(Duration::ZERO)
        .request_timeout(None)
        // The server's HELLO reply (protocol 2, revision 2.2: kinds 1 to
        // 16 and the stream window), 37 bytes, is larger than its HELLO
        // (16 + "pipesvc").
        .max_frame_len(37);
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    assert_eq!(client.request("x").await.unwrap(), "x");
    client.close().await;
    common::guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn the_raw_transport_checks_its_options_too() {
    let endpoint = unique_endpoint("bad-listener");
    let options = ListenerOptions::new().backlog(0);
    let (setting, _) = config_error(Listener::bind(&endpoint, &options));
    assert_eq!(setting, "backlog");
    assert_untouched(&endpoint);
    let options = ConnectOptions::new().timeout(Duration::MAX);
    let (setting, _) = config_error(transport::connect(&endpoint, &options).await);
    assert_eq!(setting, "connect_timeout");
}
