//! A client's Unix socket connect: it completes in the call, without the
//! wait for the runtime's driver that tokio's `UnixStream::connect` adds
//! (on a multi-threaded runtime, a wake-up from the driver's thread: the
//! largest single cost of a short connection, BENCHMARKS.md).
#![cfg(unix)]

mod common;

use std::future::{poll_fn, Future};
use std::task::Poll;

use common::{guard, unique_endpoint};
use pipesvc::transport::{self, ConnectOptions, Listener, ListenerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `transport::connect` is ready at its first poll, and what it returns is
/// connected: the listener accepts it and bytes written both ways arrive.
#[tokio::test]
async fn a_connect_is_done_at_its_first_poll() {
    let endpoint = unique_endpoint("connect-at-once");
    let mut listener = Listener::bind(&endpoint, &ListenerOptions::default()).unwrap();
    let options = ConnectOptions::default();
    let mut connecting = Box::pin(transport::connect(&endpoint, &options));
    let first = poll_fn(|cx| Poll::Ready(connecting.as_mut().poll(cx))).await;
    let Poll::Ready(connected) = first else {
        panic!("connect waited for the runtime's driver");
    };
    let mut client = connected.expect("connected").stream;
    let (mut server, peer) = guard(listener.accept()).await.expect("accepted");
    assert_eq!(peer.pid, Some(std::process::id()));
    guard(client.write_all(b"ping")).await.unwrap();
    let mut got = [0; 4];
    guard(server.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
    guard(server.write_all(b"pong")).await.unwrap();
    guard(client.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"pong");
}

/// Nobody listening: the connect's error is as before (retried until the
/// connect timeout, then named).
#[tokio::test]
async fn a_connect_to_nobody_fails_as_before() {
    let endpoint = unique_endpoint("connect-nobody");
    let options = ConnectOptions::default().timeout(std::time::Duration::from_millis(50));
    let failed = guard(transport::connect(&endpoint, &options))
        .await
        .expect_err("nobody there");
    assert!(
        matches!(failed, pipesvc::Error::Connect { .. }),
        "{failed:?}"
    );
}
