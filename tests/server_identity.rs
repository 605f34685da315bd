//! Who is the server? A client talks only to a server running as its own
//! user or root by default (issue 12, item 4). The squatting scenarios need
//! a second user: they run as root with the squatter as uid 65534, a
//! thread of this process that switched to that user alone (the raw
//! `setresuid` system call changes one thread's credentials, unlike libc's
//! wrapper), so the kernel reports it as the socket's owner and as the
//! peer. Not as root, those tests say so and return.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{guard, TestServer, HANG_GUARD};
use pipesvc::client::{ClientOptions, ServerIdentity};
use pipesvc::protocol::{Encoding, Frame, FrameCodec, HelloReply, Kind, ServerHello};
use pipesvc::server::{AccessPolicy, ConnectionContext, Server, ServiceError};
use pipesvc::{Client, Endpoint, Error};
use tokio_util::codec::{Decoder, Encoder};

/// The unprivileged user who squats (`nobody` on Debian).
const SQUATTER: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Says why a squatting test cannot run, for the report. Not a Wine gap:
/// only root can act as a second user.
fn not_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, not root: only root can run the squatter as uid {SQUATTER}");
    true
}

/// A fresh path under /tmp, unique to this test run (nothing is created);
/// whatever the test makes there is removed when the guard is dropped.
fn scratch_path(test: &str) -> Scratch {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Scratch(PathBuf::from(format!(
        "/tmp/pipesvc-id-{}-{test}-{n}",
        std::process::id()
    )))
}

/// See [`scratch_path`].
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // A symbolic link is removed itself, not followed.
        let _ = std::fs::remove_dir_all(&self.0).or_else(|_| std::fs::remove_file(&self.0));
    }
}

/// Creates `dir` with exactly `mode`, as whoever the calling thread is.
fn make_dir(dir: &Path, mode: u32) {
    std::fs::DirBuilder::new().mode(mode).create(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Turns the calling thread, and only it, into uid/gid 65534 with no
/// supplementary groups: the raw system calls act per thread on Linux.
fn become_squatter() {
    let id = libc::c_long::from(SQUATTER);
    // SAFETY: plain system calls on this thread's credentials; a null list
    // with length 0 clears the supplementary groups.
    unsafe {
        assert_eq!(
            libc::syscall(
                libc::SYS_setgroups,
                0 as libc::c_long,
                std::ptr::null::<u32>()
            ),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, id, id, id), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, id, id, id), 0);
    }
}

/// A server squatting on a socket path as uid 65534. It speaks the
/// protocol well enough to fool a client (HELLO, then an answer to every
/// request) and keeps every byte the client sent.
struct Squatter {
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Squatter {
    /// As uid 65534: runs `prepare` (to create the squatter's directories),
    /// binds `socket` and waits for one client.
    fn start(socket: &Path, prepare: impl FnOnce() + Send + 'static) -> Squatter {
        let socket = socket.to_owned();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            become_squatter();
            prepare();
            let listener = UnixListener::bind(&socket).expect("the squatter binds");
            // Whoever the victim is, let it in.
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
            ready.send(()).unwrap();
            let (stream, _) = listener.accept().expect("the squatter accepts");
            fool(stream)
        });
        started.recv().expect("the squatter thread started");
        Squatter { thread }
    }

    /// Everything the client sent, once it has gone.
    async fn received(self) -> Vec<u8> {
        guard(tokio::task::spawn_blocking(move || self.thread.join()))
            .await
            .unwrap()
            .expect("the squatter thread")
    }
}

/// Greets the client like a pipesvc server, answers its requests with
/// "squatted", and returns what it read until the client went away.
fn fool(mut stream: UnixStream) -> Vec<u8> {
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut codec = FrameCodec::default();
    let hello = ServerHello::new(codec.max_frame_len(), "squatter");
    let send = |stream: &mut UnixStream, frame: Frame| {
        let mut out = BytesMut::new();
        FrameCodec::default().encode(frame, &mut out).unwrap();
        let _ = stream.write_all(&out);
    };
    send(&mut stream, Frame::new(Kind::Hello, 0, hello.encode()));
    let mut received = Vec::new();
    let mut pending = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return received,
            Ok(n) => n,
        };
        received.extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
        while let Ok(Some(frame)) = codec.decode(&mut pending) {
            if frame.kind == Kind::Hello {
                // It imitates a version 2 server.
                let reply = HelloReply::new(2, &[Encoding::Json]);
                send(&mut stream, Frame::new(Kind::Hello, 0, reply.encode()));
                continue;
            }
            let answer = match frame.kind {
                Kind::Request | Kind::Status => Kind::Response,
                Kind::Ping => Kind::Pong,
                _ => continue,
            };
            send(&mut stream, Frame::new(answer, frame.id, "squatted"));
        }
    }
}

/// Connects as a victim would, and, if that works, sends the secret.
async fn victim(endpoint: &Endpoint, options: ClientOptions) -> Result<Bytes, Error> {
    let client = guard(Client::connect_with(endpoint, options)).await?;
    let answer = guard(client.request("secret")).await;
    client.close().await;
    answer
}

fn default_options() -> ClientOptions {
    ClientOptions::new().connect_timeout(Duration::from_secs(5))
}

/// The client refused with `WrongServer` and the squatter got nothing.
fn assert_refused(outcome: &Result<Bytes, Error>, received: &[u8], expect_in_message: &str) {
    assert!(
        received.is_empty(),
        "the squatter received {} bytes ({:?}); the client got {outcome:?}",
        received.len(),
        String::from_utf8_lossy(received)
    );
    let text = refusal(outcome);
    eprintln!("refused: {text}");
    assert!(text.contains(expect_in_message), "{text}");
}

/// The message of the `WrongServer` error `outcome` must be.
fn refusal<T>(outcome: &Result<T, Error>) -> String {
    match outcome {
        Err(e @ Error::WrongServer { .. }) => e.to_string(),
        Err(other) => panic!("expected WrongServer, got {other:?}"),
        Ok(_) => panic!("expected WrongServer, got a connection"),
    }
}

async fn echo(request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    Ok(request)
}

// (a) Another user pre-created the per-user private directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_directory_owned_by_another_user_is_refused_before_anything_is_sent() {
    if not_root("private directory squatted") {
        return;
    }
    let dir = scratch_path("squat-dir");
    let endpoint = Endpoint::in_private_dir("svc", &dir).unwrap();
    let made = dir.to_path_buf();
    let squatter = Squatter::start(endpoint.address(), move || make_dir(&made, 0o700));
    // The real service refuses to start there, as it always did.
    let bind = Server::builder(endpoint.clone()).handler(echo).bind();
    assert!(bind.is_err(), "the service started in a squatted directory");

    let outcome = victim(&endpoint, default_options()).await;
    let received = squatter.received().await;
    assert_refused(&outcome, &received, "uid 65534");
}

// (c) An explicit socket path in a shared sticky directory (like /tmp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_of_another_user_in_a_shared_sticky_directory_is_refused() {
    if not_root("shared sticky directory") {
        return;
    }
    let shared = scratch_path("sticky");
    make_dir(&shared, 0o1777);
    let socket = shared.join("svc.sock");
    let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
    let squatter = Squatter::start(&socket, || {});
    assert_eq!(std::fs::symlink_metadata(&socket).unwrap().uid(), SQUATTER);

    let outcome = victim(&endpoint, default_options()).await;
    let received = squatter.received().await;
    assert_refused(&outcome, &received, "uid 65534");
}

/// `pipesvc call` as the test's user (root), with `env`.
fn cli_call(args: &[&str], env: &[(&str, &Path)]) -> Output {
    cli("call", args, env)
}

/// `pipesvc COMMAND` as the test's user (root), with `env`.
fn cli(command_name: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipesvc"));
    command
        .arg(command_name)
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("PIPESVC_NAME")
        .env_remove("XDG_RUNTIME_DIR");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run pipesvc call")
}

// (b) XDG_RUNTIME_DIR points into a directory another user owns: the CLI,
// as the issue reports it (`pipesvc call --name svc secret`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_a_squatted_xdg_runtime_dir_and_exits_non_zero() {
    if not_root("squatted XDG_RUNTIME_DIR") {
        return;
    }
    let xdg = scratch_path("xdg");
    let socket = xdg.join("pipesvc").join("svc.sock");
    let made = xdg.to_path_buf();
    let squatter = Squatter::start(&socket, move || {
        make_dir(&made, 0o700);
        make_dir(&made.join("pipesvc"), 0o700);
    });
    let run = tokio::task::spawn_blocking(move || {
        cli_call(&["--name", "svc", "secret"], &[("XDG_RUNTIME_DIR", &xdg)])
    });
    let output = guard(run).await.unwrap();
    let received = squatter.received().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("pipesvc call said: {stderr}");
    assert!(
        received.is_empty(),
        "the squatter received {:?}; pipesvc call printed {stdout:?} and exited {}",
        String::from_utf8_lossy(&received),
        output.status
    );
    assert!(!output.status.success(), "{output:?}");
    assert!(
        stderr.contains("refusing to talk to") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    assert!(!stdout.contains("squatted"), "{stdout}");
}

// (b) again, in the library: the private directory is the user's own, but
// its parent belongs to someone else, who can rename it away and put
// another in its place. Here the server is genuine (root), so only the
// directory check can refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_directory_inside_a_directory_of_another_user_is_refused() {
    if not_root("parent owned by another user") {
        return;
    }
    let xdg = scratch_path("xdg-parent");
    make_dir(&xdg, 0o755);
    std::os::unix::fs::chown(&xdg, Some(SQUATTER), Some(SQUATTER)).unwrap();
    let endpoint = Endpoint::in_private_dir("svc", xdg.join("pipesvc")).unwrap();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(echo)
            .bind()
            .unwrap(),
    );
    let outcome = guard(Client::connect_with(&endpoint, default_options())).await;
    let text = refusal(&outcome);
    assert!(
        text.contains(xdg.to_str().unwrap()) && text.contains("uid 65534"),
        "{text}"
    );
    guard(serving.stop()).await.expect("serve");
}

// A directory anyone may write to, without the sticky bit: anyone can
// replace the socket, whoever made it.
#[tokio::test]
async fn a_socket_in_a_world_writable_directory_without_sticky_bit_is_refused() {
    let shared = scratch_path("world-writable");
    make_dir(&shared, 0o777);
    let socket = shared.join("svc.sock");
    let text = refusal_of_echo_at(&socket).await;
    assert!(text.contains("writable by others"), "{text}");
}

/// Serves the echo at the socket path `socket` and connects to it with the
/// default check: the `WrongServer` message the client refuses it with.
async fn refusal_of_echo_at(socket: &Path) -> String {
    let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(echo)
            .bind()
            .unwrap(),
    );
    let outcome = guard(Client::connect_with(&endpoint, default_options())).await;
    guard(serving.stop()).await.expect("serve");
    refusal(&outcome)
}

// The legitimate cases still connect: a server of our own user (root
// here), bare name or explicit path, also in a shared sticky directory.
#[tokio::test]
async fn a_server_of_the_same_user_connects() {
    let (endpoint, serving) = common::echo("same-user");
    let client = Client::connect_with(&endpoint, default_options())
        .await
        .unwrap();
    // SAFETY: getuid has no preconditions.
    assert_eq!(client.server_peer().uid, Some(unsafe { libc::getuid() }));
    assert_eq!(client.request("hi").await.unwrap(), "hi");
    client.close().await;
    guard(serving.stop()).await.expect("serve");

    let shared = scratch_path("sticky-ours");
    make_dir(&shared, 0o1777);
    let endpoint = Endpoint::new(shared.join("svc.sock").to_str().unwrap()).unwrap();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .handler(echo)
            .bind()
            .unwrap(),
    );
    let client = Client::connect_with(&endpoint, default_options())
        .await
        .unwrap();
    assert_eq!(client.request("hi").await.unwrap(), "hi");
    client.close().await;
    guard(serving.stop()).await.expect("serve");
}

/// A copy of the pipesvc binary that uid 65534 can run, in `dir`.
fn binary_for_squatter(dir: &Path) -> PathBuf {
    let bin = dir.join("pipesvc");
    common::copy_executable(Path::new(env!("CARGO_BIN_EXE_pipesvc")), &bin);
    bin
}

/// Runs `command` as uid 65534 and waits for it.
fn as_squatter(command: &mut Command) -> std::io::Result<Output> {
    command.uid(SQUATTER).gid(SQUATTER).env("RUST_LOG", "off");
    command.output()
}

// A client that is not root (uid 65534) talks to a root server: root is
// trusted by everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_user_connects_to_a_root_server() {
    if not_root("non-root client, root server") {
        return;
    }
    let dir = scratch_path("root-server");
    make_dir(&dir, 0o755);
    let bin = binary_for_squatter(&dir);
    let socket = dir.join("svc.sock");
    let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
    let serving = TestServer::start(
        Server::builder(endpoint.clone())
            .socket_mode(0o666)
            .access(AccessPolicy::same_user().allow_uid(SQUATTER))
            .handler(echo)
            .bind()
            .unwrap(),
    );
    let call = tokio::task::spawn_blocking(move || {
        as_squatter(
            Command::new(&bin)
                .args(["call", "--name", socket.to_str().unwrap(), "hello"])
                .current_dir("/"),
        )
    });
    let output = guard(call).await.unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    guard(serving.stop()).await.expect("serve");
}

// A client that is not root talks to a server of its own user: both run
// as uid 65534, with a private XDG_RUNTIME_DIR of that user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_and_server_of_the_same_unprivileged_user_connect() {
    if not_root("non-root client and server") {
        return;
    }
    let dir = scratch_path("same-nobody");
    make_dir(&dir, 0o755);
    let bin = binary_for_squatter(&dir);
    let xdg = dir.join("xdg");
    make_dir(&xdg, 0o700);
    std::os::unix::fs::chown(&xdg, Some(SQUATTER), Some(SQUATTER)).unwrap();
    let run = tokio::task::spawn_blocking(move || {
        let mut serve = Command::new(&bin);
        serve
            .args(["serve", "--name", "svc"])
            .env("XDG_RUNTIME_DIR", &xdg)
            .env_remove("PIPESVC_NAME")
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::null())
            .current_dir("/")
            .uid(SQUATTER)
            .gid(SQUATTER);
        let mut server = serve.spawn().expect("start pipesvc serve");
        // `call` retries while the server is not listening yet.
        let output = as_squatter(
            Command::new(&bin)
                .args(["call", "--name", "svc", "--connect-timeout", "30", "hello"])
                .env("XDG_RUNTIME_DIR", &xdg)
                .env_remove("PIPESVC_NAME")
                .current_dir("/"),
        );
        pipesvc::testing::stop_process(&mut server, pipesvc::testing::STOP_TIMEOUT).unwrap();
        output
    });
    let output = guard(run).await.unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
}

// The options: `Any` relaxes the check (the squatter is then served, as
// before), `Uid` names the one user to accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_server_and_an_expected_uid_admit_the_other_user() {
    if not_root("options admit the other user") {
        return;
    }
    for identity in [ServerIdentity::Any, ServerIdentity::Uid(SQUATTER)] {
        let shared = scratch_path("admitted");
        make_dir(&shared, 0o1777);
        let socket = shared.join("svc.sock");
        let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
        let squatter = Squatter::start(&socket, || {});
        let options = default_options().server_identity(identity.clone());
        let outcome = victim(&endpoint, options).await;
        let received = squatter.received().await;
        assert_eq!(outcome.unwrap(), "squatted", "{identity:?}");
        assert!(!received.is_empty(), "{identity:?}");
    }
}

#[tokio::test]
async fn an_expected_uid_refuses_every_other_server_even_root() {
    let (endpoint, serving) = common::echo("expect-uid");
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let other = if me == SQUATTER { 1 } else { SQUATTER };
    let options = default_options().server_identity(ServerIdentity::Uid(other));
    let err = Client::connect_with(&endpoint, options).await.unwrap_err();
    let text = err.to_string();
    match err {
        Error::WrongServer {
            expected, found, ..
        } => {
            assert_eq!(
                expected,
                format!("a server running as uid {other}"),
                "{text}"
            );
            assert_eq!(
                found,
                format!("a server running as uid {me} (pid {})", std::process::id()),
                "{text}"
            );
        }
        other => panic!("expected WrongServer, got {other}"),
    }
    let options = default_options().server_identity(ServerIdentity::Uid(me));
    let client = Client::connect_with(&endpoint, options).await.unwrap();
    assert_eq!(client.request("hi").await.unwrap(), "hi");
    client.close().await;
    // A SID means nothing on Unix: a configuration error, not a refusal.
    let options = default_options().server_identity(ServerIdentity::Sid("S-1-5-18".into()));
    let err = Client::connect_with(&endpoint, options).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    guard(serving.stop()).await.expect("serve");
}

#[test]
fn a_user_name_resolves_to_its_uid() {
    assert_eq!(
        ServerIdentity::of_user("root").unwrap(),
        ServerIdentity::Uid(0)
    );
    let err = ServerIdentity::of_user("no-such-user-here").unwrap_err();
    assert!(err.to_string().contains("no-such-user-here"), "{err}");
}

// The CLI flags: --expect-user / --any-server admit the squatter on
// purpose, --expect-uid refuses a server of another uid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_flags_tighten_and_relax_the_check() {
    if not_root("CLI identity flags") {
        return;
    }
    for flags in [&["--expect-user", "nobody"][..], &["--any-server"][..]] {
        let shared = scratch_path("cli-admitted");
        make_dir(&shared, 0o1777);
        let socket = shared.join("svc.sock");
        let squatter = Squatter::start(&socket, || {});
        let mut args = vec!["--name", socket.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.push("secret");
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let run = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli_call(&args, &[])
        });
        let output = guard(run).await.unwrap();
        let received = squatter.received().await;
        assert!(output.status.success(), "{flags:?}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "squatted\n");
        assert!(!received.is_empty());
    }

    let (endpoint, serving) = common::echo("cli-expect-uid");
    for (command, last) in [("call", Some("hi")), ("ping", None), ("status", None)] {
        let name = endpoint.address().to_str().unwrap().to_owned();
        let run = tokio::task::spawn_blocking(move || {
            let mut args = vec!["--name", &name, "--expect-uid", "65534"];
            args.extend(last);
            cli(command, &args, &[])
        });
        let output = guard(run).await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {output:?}");
        assert!(
            stderr.contains("refusing to talk to")
                && stderr.contains("expected a server running as uid 65534")
                && stderr.contains("found a server running as uid 0"),
            "{command}: {stderr}"
        );
    }
    guard(serving.stop()).await.expect("serve");
}

// A private directory that is a symbolic link could point anywhere its
// owner likes (the server refuses one too): refused even when it leads to
// a genuine server.
#[tokio::test]
async fn a_private_directory_that_is_a_symbolic_link_is_refused() {
    let real = scratch_path("real-dir");
    let served = Endpoint::in_private_dir("svc", &real).unwrap();
    let serving = TestServer::start(Server::builder(served).handler(echo).bind().unwrap());
    let link = scratch_path("link-dir");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let endpoint = Endpoint::in_private_dir("svc", &link).unwrap();
    let outcome = guard(Client::connect_with(&endpoint, default_options())).await;
    let text = refusal(&outcome);
    assert!(text.contains("is a symbolic link"), "{text}");
    guard(serving.stop()).await.expect("serve");
}

// A symbolic link on the way to an explicit socket path is followed: the
// directories it leads to are checked too, here one that anyone may write
// to without the sticky bit. (The client resolves the path only when a
// link, `.` or `..` is on it; this is the case where it must.)
#[tokio::test]
async fn a_socket_reached_through_a_symbolic_link_is_checked_where_it_leads() {
    let shared = scratch_path("link-target");
    make_dir(&shared, 0o777);
    let link = scratch_path("link-to-shared");
    std::os::unix::fs::symlink(&*shared, &*link).unwrap();
    let text = refusal_of_echo_at(&link.join("svc.sock")).await;
    assert!(text.contains("writable by others"), "{text}");
    assert!(text.contains(shared.to_str().unwrap()), "{text}");
    // Through `..`, the same.
    let dotted = link.join("..").join(shared.file_name().unwrap());
    let text = refusal_of_echo_at(&dotted.join("svc.sock")).await;
    assert!(text.contains("writable by others"), "{text}");
}
