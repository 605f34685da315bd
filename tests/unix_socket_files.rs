//! Unix socket files: stale ones are replaced, live ones and non-sockets
//! are left alone, and the private directory stays private.
#![cfg(unix)]

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::unique_endpoint;
use pipesvc::transport::{Listener, ListenerOptions};
use pipesvc::{Endpoint, Error};

fn bind(endpoint: &Endpoint) -> pipesvc::Result<Listener> {
    Listener::bind(endpoint, &ListenerOptions::default())
}

fn bind_error(endpoint: &Endpoint) -> String {
    match bind(endpoint) {
        Err(e @ Error::Bind { .. }) => common::chain(&e),
        other => panic!("expected a bind error, got {other:?}"),
    }
}

/// Creates the endpoint's private directory the way a server does.
fn create_private_dir(endpoint: &Endpoint) {
    drop(bind(endpoint).unwrap());
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let endpoint = unique_endpoint("stale");
    create_private_dir(&endpoint);
    // A dead server's socket: bound, never unlinked, nobody listening.
    let path = endpoint.address();
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
    assert!(std::fs::metadata(path).unwrap().file_type().is_socket());
    let listener = bind(&endpoint).expect("stale socket replaced");
    drop(listener);
    assert!(!path.exists(), "removed on drop");
}

#[tokio::test]
async fn a_live_socket_is_in_use() {
    let endpoint = unique_endpoint("live");
    let _live = bind(&endpoint).unwrap();
    let err = bind_error(&endpoint);
    assert!(err.contains("already in use"), "{err}");
    assert!(endpoint.address().exists(), "the live socket is untouched");
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_deleted() {
    let endpoint = unique_endpoint("regular");
    create_private_dir(&endpoint);
    std::fs::write(endpoint.address(), b"precious").unwrap();
    let err = bind_error(&endpoint);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(endpoint.address()).unwrap(), b"precious");
    std::fs::remove_file(endpoint.address()).unwrap();
}

#[tokio::test]
async fn socket_is_0600_in_a_0700_directory() {
    let endpoint = unique_endpoint("modes");
    let _listener = bind(&endpoint).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(endpoint.address()), 0o600);
    assert_eq!(mode(endpoint.private_dir().unwrap()), 0o700);
}

#[tokio::test]
async fn a_replacement_socket_is_not_removed_by_the_old_listener() {
    let endpoint = unique_endpoint("replaced");
    let old = bind(&endpoint).unwrap();
    // Someone removes the socket and a new server takes the name.
    std::fs::remove_file(endpoint.address()).unwrap();
    let new = bind(&endpoint).unwrap();
    drop(old);
    assert!(
        endpoint.address().exists(),
        "the new server's socket survives"
    );
    drop(new);
    assert!(!endpoint.address().exists());
}

/// A listening socket made elsewhere (as systemd makes one for socket
/// activation), at `endpoint`'s path.
fn made_elsewhere(endpoint: &Endpoint) -> std::os::unix::net::UnixListener {
    create_private_dir(endpoint);
    std::os::unix::net::UnixListener::bind(endpoint.address()).unwrap()
}

#[tokio::test]
async fn a_server_serves_a_listener_it_is_handed_and_leaves_its_file() {
    use bytes::Bytes;
    use pipesvc::server::{Context, Server, ServiceError};

    let endpoint = unique_endpoint("handed");
    let listener = made_elsewhere(&endpoint);
    std::fs::set_permissions(endpoint.address(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let server = Server::builder(endpoint.clone())
        .socket_mode(0o600) // not applied: the socket is not the server's
        .handler(|request: Bytes, _ctx: Context| async move { Ok::<_, ServiceError>(request) })
        .bind_listener(listener)
        .expect("serve the handed listener");
    assert_eq!(server.endpoint(), &endpoint);
    let serving = common::Serving::start(server);
    let client = common::guard(pipesvc::Client::connect(&endpoint))
        .await
        .unwrap();
    let answer = common::guard(client.request("handed over")).await.unwrap();
    assert_eq!(&answer[..], b"handed over");
    client.close().await;
    serving.stop().await;
    let meta = std::fs::metadata(endpoint.address()).expect("the file is left in place");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o640,
        "its mode untouched"
    );
    std::fs::remove_file(endpoint.address()).unwrap();
}

#[tokio::test]
async fn a_handed_listener_must_be_at_the_endpoint() {
    use pipesvc::server::{Context, Server, ServiceError};

    let endpoint = unique_endpoint("handed-here");
    let elsewhere = unique_endpoint("handed-there");
    let listener = made_elsewhere(&elsewhere);
    let result = Server::builder(endpoint.clone())
        .handler(
            |request: bytes::Bytes, _ctx: Context| async move { Ok::<_, ServiceError>(request) },
        )
        .bind_listener(listener);
    let err = match result {
        Err(e @ Error::Bind { .. }) => common::chain(&e),
        other => panic!("expected a bind error, got {other:?}"),
    };
    let expected = format!(
        "bound to {}, not to {}",
        elsewhere.address().display(),
        endpoint.address().display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(elsewhere.address().exists(), "nothing removed");
    std::fs::remove_file(elsewhere.address()).unwrap();
}
