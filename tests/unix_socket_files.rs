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
    use pipesvc::server::{ConnectionContext, Server, ServiceError};

    let endpoint = unique_endpoint("handed");
    let listener = made_elsewhere(&endpoint);
    std::fs::set_permissions(endpoint.address(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let server = Server::builder(endpoint.clone())
        .socket_mode(0o600) // not applied: the socket is not the server's
        .handler(
            |request: Bytes, _ctx: ConnectionContext| async move { Ok::<_, ServiceError>(request) },
        )
        .bind_listener(listener)
        .expect("serve the handed listener");
    assert_eq!(server.endpoint(), &endpoint);
    let serving = common::TestServer::start(server);
    let client = common::guard(pipesvc::Client::connect(&endpoint))
        .await
        .unwrap();
    let answer = common::guard(client.request("handed over")).await.unwrap();
    assert_eq!(&answer[..], b"handed over");
    client.close().await;
    common::guard(serving.stop()).await.expect("serve");
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
    use pipesvc::server::{ConnectionContext, Server, ServiceError};

    let endpoint = unique_endpoint("handed-here");
    let elsewhere = unique_endpoint("handed-there");
    let listener = made_elsewhere(&elsewhere);
    let result = Server::builder(endpoint.clone())
        .handler(
            |request: bytes::Bytes, _ctx: ConnectionContext| async move {
                Ok::<_, ServiceError>(request)
            },
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

/// Leaves a dead server's socket at `endpoint`'s path: bound, never
/// unlinked, nobody listening.
fn leave_stale_socket(endpoint: &Endpoint) {
    drop(std::os::unix::net::UnixListener::bind(endpoint.address()).unwrap());
}

/// Servers starting at once on a path holding a stale socket: exactly one
/// wins, the others say why they lost, and the winner is the one clients
/// reach. Before the lock, two "winners" (one of them orphaned: its socket
/// deleted as stale by the other) or a loser failing with `No such file or
/// directory` showed up within a few rounds.
#[test]
fn servers_starting_at_once_on_a_stale_socket_elect_exactly_one() {
    const SERVERS: usize = 8;
    const ROUNDS: usize = 200;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = unique_endpoint("race");
    {
        let _enter = runtime.enter();
        create_private_dir(&endpoint);
    }
    for round in 0..ROUNDS {
        leave_stale_socket(&endpoint);
        let start = std::sync::Arc::new(std::sync::Barrier::new(SERVERS));
        let contenders: Vec<_> = (0..SERVERS)
            .map(|_| {
                let (endpoint, start) = (endpoint.clone(), start.clone());
                let handle = runtime.handle().clone();
                std::thread::spawn(move || {
                    let _enter = handle.enter();
                    start.wait();
                    bind(&endpoint)
                })
            })
            .collect();
        let outcomes: Vec<_> = contenders.into_iter().map(|t| t.join().unwrap()).collect();
        let mut winners = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(listener) => winners.push(listener),
                Err(e) => {
                    let text = common::chain(&e);
                    assert!(
                        text.contains("already in use: another server is listening there")
                            || text.contains("another server is starting on this path"),
                        "round {round}: a loser's error does not say why: {text}"
                    );
                }
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners");
        std::os::unix::net::UnixStream::connect(endpoint.address())
            .unwrap_or_else(|e| panic!("round {round}: the winner is unreachable: {e}"));
        drop(winners); // and the next round starts from a stale socket again
    }
}

/// `<socket>.lock`, the file a starting server locks.
fn lock_path(endpoint: &Endpoint) -> std::path::PathBuf {
    let mut path = endpoint.address().as_os_str().to_owned();
    path.push(".lock");
    path.into()
}

#[tokio::test]
async fn the_lock_file_exists_only_while_a_server_starts() {
    let endpoint = unique_endpoint("lock-gone");
    let listener = bind(&endpoint).unwrap();
    assert!(!lock_path(&endpoint).exists(), "removed once bound");
    drop(listener);
    // One left by a server that died while starting is reused, then removed.
    std::fs::write(lock_path(&endpoint), b"").unwrap();
    let listener = bind(&endpoint).expect("a leftover, unlocked lock file is no obstacle");
    assert!(!lock_path(&endpoint).exists());
    drop(listener);
}

#[tokio::test]
async fn a_server_finding_the_lock_taken_says_another_is_starting() {
    use std::os::fd::AsRawFd;
    let endpoint = unique_endpoint("lock-held");
    create_private_dir(&endpoint);
    leave_stale_socket(&endpoint);
    let held = std::fs::File::create(lock_path(&endpoint)).unwrap();
    // SAFETY: flock on a descriptor `held` owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let err = bind_error(&endpoint);
    assert!(
        err.contains("another server is starting on this path"),
        "{err}"
    );
    let meta = std::fs::symlink_metadata(endpoint.address()).unwrap();
    assert!(meta.file_type().is_socket(), "the socket is left alone");
    drop(held);
    let listener = bind(&endpoint).expect("free once the lock is released");
    drop(listener);
    std::fs::remove_file(lock_path(&endpoint)).ok();
}

#[tokio::test]
async fn a_symlink_planted_as_the_lock_file_is_not_followed() {
    let endpoint = unique_endpoint("lock-link");
    create_private_dir(&endpoint);
    let target = endpoint.address().with_extension("target");
    std::os::unix::fs::symlink(&target, lock_path(&endpoint)).unwrap();
    let err = bind_error(&endpoint);
    assert!(err.contains("is a symbolic link"), "{err}");
    assert!(!target.exists(), "nothing created through the link");
    assert!(!endpoint.address().exists(), "nothing bound");
    std::fs::remove_file(lock_path(&endpoint)).unwrap();
}

#[tokio::test]
async fn an_explicit_path_in_a_shared_directory_binds_and_cleans_up() {
    let endpoint = unique_endpoint("shared-dir");
    // A world-writable sticky directory, like /tmp.
    let dir = endpoint.address().with_extension("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = dir.join("svc.sock");
    let explicit: Endpoint = socket.to_str().unwrap().parse().unwrap();
    assert_eq!(explicit.private_dir(), None);
    let listener = bind(&explicit).expect("bind in a shared directory");
    std::os::unix::net::UnixStream::connect(&socket).expect("reachable");
    drop(listener);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        left.is_empty(),
        "neither socket nor lock file left: {left:?}"
    );
    std::fs::remove_dir(&dir).unwrap();
}

#[tokio::test]
async fn an_explicit_path_in_a_missing_directory_fails_naming_the_directory() {
    // Before, the lock file (the first thing made there) was blamed:
    // "the lock file ….lock cannot be opened: No such file or directory".
    let endpoint = unique_endpoint("missing-dir");
    let dir = endpoint.address().with_extension("missing");
    let explicit: Endpoint = dir.join("svc.sock").to_str().unwrap().parse().unwrap();
    let err = bind_error(&explicit);
    assert!(
        err.contains(&format!("the directory {} does not exist", dir.display())),
        "{err}"
    );
    assert!(!dir.exists(), "pipesvc does not create it");
}

#[tokio::test]
async fn a_test_endpoints_full_path_is_usable_before_any_server_ran() {
    // `unique_endpoint` makes its private directory, as a server would, so
    // another process can be handed the full path: on a fresh runtime
    // directory `pipesvc serve --name PATH` failed (protocol_md, run alone).
    let endpoint = unique_endpoint("full-path");
    let dir = endpoint.private_dir().expect("a bare name's directory");
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    let explicit: Endpoint = endpoint.address().to_str().unwrap().parse().unwrap();
    drop(bind(&explicit).expect("the full path binds"));
}

#[tokio::test]
async fn a_name_given_with_its_sock_suffix_is_the_same_socket() {
    // `--name svc.sock` used to listen on `svc.sock.sock`.
    let bare = unique_endpoint("suffix");
    let name = bare.address().file_stem().unwrap().to_str().unwrap();
    let with_suffix = Endpoint::new(&format!("{name}.sock")).unwrap();
    assert_eq!(with_suffix.address(), bare.address());
    let listener = bind(&with_suffix).unwrap();
    assert!(std::fs::metadata(bare.address())
        .unwrap()
        .file_type()
        .is_socket());
    drop(listener);
}
