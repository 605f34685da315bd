//! `pipesvc::testing`'s servers and service processes, as a user's tests
//! would use them.

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use pipesvc::client::ConnectionState;
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::testing::{
    hang_guard as guard, output_within, unique_endpoint, ServiceProcess, TestServer, HANG_GUARD,
};
use pipesvc::{Client, Error};

const BIN: &str = env!("CARGO_BIN_EXE_pipesvc");

fn echo(
    endpoint: pipesvc::Endpoint,
) -> pipesvc::server::ServerBuilder<impl pipesvc::server::Handler> {
    Server::builder(endpoint)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
}

#[test]
fn unique_endpoints_differ() {
    let (a, b) = (unique_endpoint("same"), unique_endpoint("same"));
    assert_ne!(a, b);
    assert!(a.to_string().contains(&std::process::id().to_string()));
}

#[tokio::test]
async fn a_test_server_on_a_socket_stops_when_dropped() {
    guard(async {
        let endpoint = unique_endpoint("test-server-drop");
        let server = TestServer::start(echo(endpoint.clone()).bind().expect("bind"));
        let client = Client::connect(&endpoint).await.expect("connect");
        assert_eq!(&client.request("x").await.expect("answer")[..], b"x");
        let mut states = client.connection_states();
        drop(server);
        states
            .wait_for(|s| matches!(s, ConnectionState::Lost { .. }))
            .await
            .expect("the dropped server let the client go");
    })
    .await;
}

#[tokio::test]
async fn a_test_server_reconnects_its_in_memory_clients() {
    guard(async {
        let server = TestServer::start(echo(unique_endpoint("memory")).build().expect("build"));
        let options = pipesvc::client::ClientOptions::new().reconnect(true);
        let client = server
            .connect_in_memory_with(options)
            .await
            .expect("connect");
        assert_eq!(&client.request("a").await.expect("answer")[..], b"a");
        assert_eq!(server.handle().connection_count(), 1);
        server.stop().await.expect("stop");
    })
    .await;
}

/// `pipesvc serve` on a fresh endpoint for `test`, as a service process.
async fn serve_child(test: &str) -> (pipesvc::Endpoint, ServiceProcess) {
    let endpoint = unique_endpoint(test);
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--name"])
        .arg(endpoint.address())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let service = ServiceProcess::start(command, &endpoint, HANG_GUARD)
        .await
        .expect("the service starts");
    (endpoint, service)
}

#[tokio::test]
async fn a_service_process_is_ready_when_it_answers_and_stopped_gracefully_on_drop() {
    guard(async {
        let (endpoint, mut service) = serve_child("child").await;
        let client = Client::connect(&endpoint).await.expect("connect");
        assert_eq!(&client.request("hi").await.expect("answer")[..], b"hi");
        client.close().await;
        let pid = service.child().id();
        drop(service);
        // Stopped and reaped: nothing answers there any more...
        let options = pipesvc::client::ClientOptions::new().connect_timeout(Duration::ZERO);
        let gone = Client::connect_with(&endpoint, options).await;
        assert!(gone.is_err(), "pid {pid} still answers");
        // ...and it stopped gracefully: no socket file is left behind.
        #[cfg(unix)]
        assert!(
            !endpoint.address().exists(),
            "a dead socket file is left: {}",
            endpoint.address().display()
        );
    })
    .await;
}

/// On Windows `stop` terminates the process (no signal reaches a
/// console-less child; a pipe leaves nothing behind).
#[cfg(unix)]
#[tokio::test]
async fn a_stopped_service_process_reports_how_it_exited() {
    guard(async {
        let (endpoint, service) = serve_child("child-stop").await;
        let client = Client::connect(&endpoint).await.expect("connect");
        let mut states = client.connection_states();
        let status = service.stop().expect("stopped");
        assert!(status.success(), "a graceful stop exits 0: {status:?}");
        // Its clients were told GOODBYE, as a service manager's stop does.
        let lost = states
            .wait_for(|s| matches!(s, ConnectionState::Lost { .. }))
            .await
            .expect("state")
            .clone();
        assert!(
            matches!(
                lost,
                ConnectionState::Lost {
                    reason: pipesvc::error::CloseReason::Goodbye(_),
                    ..
                }
            ),
            "{lost:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_service_process_that_fails_to_start_reports_its_stderr() {
    guard(async {
        let endpoint = unique_endpoint("child-fails");
        let mut command = Command::new(BIN);
        command.args(["serve", "--no-such-flag"]);
        let err = ServiceProcess::start(command, &endpoint, HANG_GUARD)
            .await
            .expect_err("it cannot start");
        let text = err.to_string();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
        assert!(text.contains("exited with"), "{text}");
        assert!(
            text.contains("--no-such-flag"),
            "the child's stderr: {text}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_hang_guard_hands_back_what_the_future_returns() {
    assert_eq!(guard(async { 7 }).await, 7);
}

#[test]
fn a_command_run_within_a_timeout_hands_back_its_output() {
    let mut command = Command::new(BIN);
    command
        .args(["call", "--connect-timeout", "0", "--name"])
        .arg(unique_endpoint("nobody").address())
        .arg("hello")
        .env("RUST_LOG", "off");
    let output = output_within(command, HANG_GUARD).expect("it runs to its end");
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(!output.stderr.is_empty(), "it says why: {output:?}");
}

#[test]
fn a_command_that_outlasts_its_timeout_is_killed_and_fails() {
    // `serve` never exits by itself: it always outlasts the timeout.
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--name"])
        .arg(unique_endpoint("outlasts").address())
        .env("RUST_LOG", "off");
    let err = output_within(command, Duration::from_millis(200)).expect_err("it is killed");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(err.to_string().contains("still running"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_service_that_outlasts_its_timeout_is_stopped_gracefully() {
    let endpoint = unique_endpoint("outlasts-socket");
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--name"])
        .arg(endpoint.address())
        .env("RUST_LOG", "off");
    let socket = endpoint.address().to_path_buf();
    // Long enough for the service to start on a loaded machine.
    let err = output_within(command, Duration::from_secs(5)).expect_err("it is stopped");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // It had bound its socket (what it printed is in the error)...
    assert!(err.to_string().contains("listening on"), "{err}");
    // ...and removed it when stopped.
    assert!(
        !socket.exists(),
        "a dead socket file is left: {}",
        socket.display()
    );
}
