//! Unix defaults: a private 0700 directory, a 0600 socket, and only the
//! server's own user (and root) admitted by default, proved with a real
//! second user when the tests run as root.
#![cfg(unix)]

mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use common::{guard, raise_nofile, unique_endpoint, TestServer};
use pipesvc::client::ClientOptions;
use pipesvc::protocol::ErrorCode;
use pipesvc::server::{AccessPolicy, ConnectionContext, Server, ServerBuilder, ServiceError};
use pipesvc::{Client, Endpoint, Error};

/// The unprivileged user the tests borrow (`nobody` on Debian).
const OTHER_UID: u32 = 65534;
const OTHER_GID: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory with `mode`, unique to this test run, removed with
/// everything in it (copies of binaries among them) when dropped.
fn scratch_dir(test: &str, mode: u32) -> ScratchDir {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pipesvc-sec-{}-{test}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(mode).create(&dir).unwrap();
    // The umask may have narrowed the mode: set it exactly.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    ScratchDir(dir)
}

/// See [`scratch_dir`].
struct ScratchDir(PathBuf);

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn echo(request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    Ok(request)
}

fn bind_error(builder: ServerBuilder<impl pipesvc::server::Handler>) -> String {
    match builder.bind() {
        // The cause is the error's source, not repeated in its message.
        Err(e) => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
        Ok(_) => panic!("bind should have failed"),
    }
}

#[tokio::test]
async fn a_private_directory_with_loose_permissions_is_refused() {
    let dir = scratch_dir("loose", 0o755);
    let endpoint = Endpoint::in_private_dir("svc", &dir).unwrap();
    let err = bind_error(Server::builder(endpoint.clone()).handler(echo));
    assert!(err.contains("mode 0700") && err.contains("755"), "{err}");
    // Once private, it is accepted.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(Server::builder(endpoint).handler(echo).bind().unwrap());
}

#[tokio::test]
async fn a_private_directory_owned_by_someone_else_is_refused() {
    // As root, hand a fresh directory to another user; otherwise `/` is a
    // directory that some other user (root) owns.
    let scratch = is_root().then(|| {
        let dir = scratch_dir("owner", 0o700);
        std::os::unix::fs::chown(&dir, Some(OTHER_UID), Some(OTHER_GID)).unwrap();
        dir
    });
    let dir = scratch.as_deref().unwrap_or(Path::new("/"));
    let endpoint = Endpoint::in_private_dir("svc", dir).unwrap();
    let err = bind_error(Server::builder(endpoint).handler(echo));
    assert!(err.contains("must be a directory owned by uid"), "{err}");
}

#[tokio::test]
async fn a_missing_private_directory_is_created_0700_and_the_socket_is_0600() {
    let parent = scratch_dir("create", 0o755);
    let dir = parent.join("run");
    let endpoint = Endpoint::in_private_dir("svc", &dir).unwrap();
    let _server = Server::builder(endpoint.clone())
        .handler(echo)
        .bind()
        .unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(endpoint.address()), 0o600);
}

#[tokio::test]
async fn the_context_carries_the_peer_credentials() {
    let endpoint = unique_endpoint("peer-cred");
    let handler = |_request: Bytes, ctx: ConnectionContext| async move {
        let peer = ctx.peer();
        Ok::<_, ServiceError>(Bytes::from(format!(
            "{:?} {:?} {:?}",
            peer.uid, peer.gid, peer.pid
        )))
    };
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(handler)
            .bind()
            .unwrap(),
    );
    let client = Client::connect(&endpoint).await.unwrap();
    // SAFETY: plain getters without preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let expected = format!(
        "{:?} {:?} {:?}",
        Some(uid),
        Some(gid),
        Some(std::process::id())
    );
    assert_eq!(client.request("").await.unwrap(), expected);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test]
async fn the_client_can_require_the_server_process_id() {
    let endpoint = unique_endpoint("server-pid");
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(echo)
            .bind()
            .unwrap(),
    );
    let with_pid = |pid| ClientOptions::new().expect_server_pid(Some(pid));
    let ours = std::process::id();
    let client = Client::connect_with(&endpoint, with_pid(ours))
        .await
        .unwrap();
    assert_eq!(client.server_peer().pid, Some(ours));
    let err = Client::connect_with(&endpoint, with_pid(ours + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongServer { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("expected pid {}", ours + 1)),
        "{err}"
    );
    guard(serving.stop()).await.expect("serve");
}

/// `pipesvc call` as another user, from a copy of the binary that user can run.
fn call_as_other_user(dir: &Path, socket: &Path) -> Output {
    let bin = dir.join("pipesvc");
    if !bin.exists() {
        common::copy_executable(Path::new(env!("CARGO_BIN_EXE_pipesvc")), &bin);
    }
    let socket = socket.to_str().unwrap();
    // The copy was written by `cp`, never open here: it cannot be busy.
    Command::new(&bin)
        .args([
            "call",
            "--name",
            socket,
            "--connect-timeout",
            "0.5",
            "hello",
        ])
        .env("RUST_LOG", "off")
        .current_dir(dir)
        .uid(OTHER_UID)
        .gid(OTHER_GID)
        .output()
        .expect("run pipesvc as another user")
}

/// Runs `serve` until `call` (run on a blocking thread) has finished.
async fn serve_while<T: Send + 'static>(
    builder: ServerBuilder<impl pipesvc::server::Handler>,
    call: impl FnOnce() -> T + Send + 'static,
) -> T {
    let serving = TestServer::start(builder.bind().unwrap());
    let output = guard(tokio::task::spawn_blocking(call)).await.unwrap();
    guard(serving.stop()).await.expect("serve");
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_by_default_and_admitted_once_allowed() {
    if !is_root() {
        // Only root can start a process as another user; prove the same
        // refusal path with a policy that leaves out our own uid instead.
        eprintln!("not root: checking the refusal with a policy that excludes this user");
        let endpoint = unique_endpoint("policy");
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let policy = AccessPolicy::custom(move |peer| peer.uid != Some(me));
        let serving = TestServer::start(
            Server::builder(endpoint.clone())
                .access(policy)
                .handler(echo)
                .bind()
                .unwrap(),
        );
        let err = Client::connect(&endpoint).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
        guard(serving.stop()).await.expect("serve");
        return;
    }
    // A directory and socket the other user may reach, so that only the
    // access policy stands in the way.
    let dir = scratch_dir("other-user", 0o755);
    let socket = dir.join("svc.sock");
    let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
    let open_to_all = || {
        Server::builder(endpoint.clone())
            .socket_mode(0o666)
            .handler(echo)
    };

    let (d, s) = (dir.to_path_buf(), socket.clone());
    let refused = serve_while(open_to_all(), move || call_as_other_user(&d, &s)).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "uid {OTHER_UID} was served by default"
    );
    assert!(stderr.contains("not allowed"), "{stderr}");

    let (d, s) = (dir.to_path_buf(), socket.clone());
    let allowed = open_to_all().access(AccessPolicy::same_user().allow_uid(OTHER_UID));
    let served = serve_while(allowed, move || call_as_other_user(&d, &s)).await;
    let stdout = String::from_utf8_lossy(&served.stdout);
    assert!(served.status.success(), "{served:?}");
    assert_eq!(stdout, "hello\n");

    let (d, s) = (dir.to_path_buf(), socket.clone());
    let allowed = open_to_all().access(AccessPolicy::same_user().allow_gid(OTHER_GID));
    let served = serve_while(allowed, move || call_as_other_user(&d, &s)).await;
    assert!(served.status.success(), "allowed by group: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_socket_mode_keeps_another_user_out_even_if_the_policy_allows() {
    let dir = scratch_dir("mode-0600", 0o755);
    let socket = dir.join("svc.sock");
    let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
    let builder = Server::builder(endpoint)
        .access(AccessPolicy::anyone())
        .handler(echo);
    let (d, s) = (dir.to_path_buf(), socket.clone());
    let outcome = serve_while(builder, move || {
        let mode = std::fs::metadata(&s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the socket's default mode");
        // Only root can start a process as another user.
        is_root().then(|| call_as_other_user(&d, &s))
    })
    .await;
    if let Some(refused) = outcome {
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success(),
            "uid {OTHER_UID} got through a 0600 socket"
        );
        assert!(stderr.contains("Permission denied"), "{stderr}");
    }
}

#[tokio::test]
async fn a_uid_allowed_after_a_custom_check_is_admitted() {
    // Before 0.3, `custom(..)` followed by `allow_uid(..)` dropped the uid.
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let serve = |policy: AccessPolicy| {
        let endpoint = unique_endpoint("custom-and-uid");
        let server = Server::builder(endpoint.clone())
            .access(policy)
            .handler(echo)
            .bind()
            .unwrap();
        (endpoint, TestServer::start(server))
    };
    let (endpoint, serving) = serve(AccessPolicy::custom(|_| false));
    let err = guard(Client::connect(&endpoint)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NOT_ALLOWED), "{err}");
    guard(serving.stop()).await.expect("serve");

    let (endpoint, serving) = serve(AccessPolicy::custom(|_| false).allow_uid(me));
    let client = guard(Client::connect(&endpoint)).await.unwrap();
    assert_eq!(client.request("admitted").await.unwrap(), "admitted");
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

/// Set in the child that plays the other user: the socket to hoard.
const HOARD_CHILD: &str = "PIPESVC_TEST_HOARD_SOCKET";
const HOARD_TEST: &str = "one_user_with_a_thousand_idle_connections_leaves_room_for_another";

/// The child's part: opens 1,000 connections to `socket`, completes the
/// handshake of each one admitted, reports how many were held and how
/// many refused, and keeps them open (idle) until its stdin closes.
fn hoard_connections(socket: &str) {
    use std::io::{Read, Write};
    raise_nofile(1200);
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..1000 {
        let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        let mut length = [0u8; 4];
        // A server with many refusals in progress closes without one.
        if stream.read_exact(&mut length).is_err() {
            refused += 1;
            continue;
        }
        let mut frame = vec![0u8; u32::from_le_bytes(length) as usize];
        stream.read_exact(&mut frame).unwrap();
        match frame[0] {
            1 => {
                // The client's HELLO, version 1.
                stream
                    .write_all(&[12, 0, 0, 0, 1, 0, 0, 0, 0, 0, b'P', b'S', b'V', b'C', 1, 0])
                    .unwrap();
                held.push(stream);
            }
            _ => {
                assert_eq!(u16::from_le_bytes([frame[6], frame[7]]), 6, "overloaded");
                refused += 1;
            }
        }
    }
    println!("pipesvc-child: held {} refused {refused}", held.len());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_with_a_thousand_idle_connections_leaves_room_for_another() {
    use std::io::BufRead;
    if let Ok(socket) = std::env::var(HOARD_CHILD) {
        return hoard_connections(&socket);
    }
    if !is_root() {
        // Only root can start a process as another user; the limit itself
        // is proved over the in-memory transport by
        // fair_share::one_user_with_a_thousand_idle_connections_leaves_room_for_another.
        eprintln!("not root: the per-user limit is checked in tests/fair_share.rs");
        return;
    }
    raise_nofile(2400);
    // A directory and socket the other user may reach, and a policy that
    // admits it, so that only the connection limits stand in the way.
    let dir = scratch_dir("per-user", 0o755);
    let socket = dir.join("svc.sock");
    let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .socket_mode(0o666)
            .max_connections(1000)
            .access(AccessPolicy::same_user().allow_uid(OTHER_UID))
            .handler(echo)
            .bind()
            .unwrap(),
    );
    // This test binary, copied where the other user can run it.
    let bin = dir.join("unix_security-test");
    common::copy_executable(&std::env::current_exe().unwrap(), &bin);
    let mut child = Command::new(&bin)
        .args(["--exact", HOARD_TEST, "--nocapture", "--test-threads=1"])
        .env(HOARD_CHILD, &socket)
        .current_dir(&dir)
        .uid(OTHER_UID)
        .gid(OTHER_GID)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the test binary as another user");
    // Its report, read on a thread that then drains what else it prints.
    let stdout = child.stdout.take().unwrap();
    let (report_tx, report_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // libtest may have begun the line with the test's name.
            if let Some((_, report)) = line.split_once("pipesvc-child: ") {
                let _ = report_tx.send(report.to_owned());
            }
        }
    });
    let report = guard(tokio::task::spawn_blocking(move || report_rx.recv()))
        .await
        .unwrap()
        .expect("the child's report");
    // Root (the server's own user here) connects beside them.
    let client = guard(Client::connect(&endpoint)).await;
    eprintln!(
        "pipesvc-report: uid {OTHER_UID} opened 1000 idle connections ({report}); \
         root's client: {:?}",
        client.as_ref().map(|_| "served")
    );
    let client = client.expect("the other user is served");
    assert_eq!(guard(client.request("mine")).await.unwrap(), "mine");
    client.close().await;
    assert!(
        !report.contains("refused 0"),
        "one user took every connection: {report}"
    );
    drop(child.stdin.take());
    child.wait().unwrap();
    guard(serving.stop()).await.expect("serve");
}
