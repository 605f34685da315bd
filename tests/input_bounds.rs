//! The server's input is bounded in bytes and in time: frames that clients
//! start and do not finish commit little memory, are cut off at the frame
//! deadline, share a server-wide budget, and an allocation the system
//! refuses is an `overloaded` answer, not an abort.
//!
//! Memory is counted exactly with a counting allocator for this test
//! binary: each test runs its server and clients on one current-thread
//! runtime and counts that thread's allocations only (as
//! tests/allocations.rs does), so tests running in parallel do not count
//! each other's.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{guard, raise_nofile, unique_endpoint, RawClient, TestServer, HANG_GUARD};
use pipesvc::protocol::{ErrorCode, ErrorPayload, Frame, Kind, HEADER_LEN};
use pipesvc::server::{ConnectionContext, Server, ServerBuilder, ServiceError};
use pipesvc::Endpoint;
use tokio::io::AsyncWriteExt;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;
use heap::{reset_thread_peak as reset_peak, thread_peak as peak};

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

const MIB: usize = 1 << 20;

/// A 10-byte REQUEST header (id 1) announcing `payload` bytes.
fn header(payload: usize) -> Vec<u8> {
    let mut bytes = ((HEADER_LEN + payload) as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&[Kind::Request.to_u8(), 0, 1, 0, 0, 0]);
    bytes
}

fn echo(endpoint: &Endpoint) -> ServerBuilder<impl pipesvc::server::Handler> {
    Server::builder(endpoint.clone())
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
}

/// Writes `bytes`; an error means the server has closed the connection.
async fn write(raw: &mut RawClient, bytes: &[u8]) -> std::io::Result<()> {
    let stream = raw.writer.get_mut();
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// The ERROR code the next frame carries, after checking it is an ERROR
/// about the connection followed by the close.
async fn connection_error(raw: &mut RawClient) -> ErrorCode {
    let frame = raw.recv().await.expect("an ERROR frame");
    assert_eq!((frame.kind, frame.id), (Kind::Error, 0), "{frame:?}");
    let code = ErrorPayload::decode(&frame.payload).unwrap().code;
    assert_eq!(raw.recv().await, None, "the connection closes after ERROR");
    code
}

/// Checks that nothing follows an ERROR about the connection: the end of
/// the stream, or a reset (the server closed with the rest of the client's
/// frame unread, which a Unix socket reports as a reset).
async fn assert_closed(raw: &mut RawClient) {
    use futures_util::StreamExt;
    match guard(raw.reader.next()).await {
        None => {}
        Some(Err(pipesvc::protocol::CodecError::Io(e)))
            if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the close after ERROR, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn unfinished_frames_after_the_handshake_are_bounded_in_memory_and_time() {
    // 1000 connections (2000 descriptors in this process, server and
    // client ends; the tests' soft limit is raised if it is lower). Under
    // Wine, whose pipe server is slow to create instances, 100: the bound
    // is per connection.
    const CLIENTS: usize = if cfg!(windows) { 100 } else { 1000 };
    raise_nofile(2 * CLIENTS as u64 + 200);
    let endpoint = unique_endpoint("unfinished");
    // The budget out of the way (1 GiB): this test is about growth and the
    // deadline; the budget has its own test.
    let server = echo(&endpoint)
        .frame_timeout(Duration::from_secs(2))
        .input_budget(1 << 30)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let before = reset_peak();

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (mut raw, _) = guard(RawClient::handshake(&endpoint)).await;
        // The header of an 8 MiB request and its first KiB, then silence.
        let mut start = header(8 * MIB - HEADER_LEN - 4);
        start.extend_from_slice(&[0x5A; 1024]);
        write(&mut raw, &start).await.unwrap();
        clients.push(raw);
    }
    // Each is cut off at the frame deadline with ERROR `timed out`.
    let waited = tokio::time::timeout(HANG_GUARD, async {
        for raw in &mut clients {
            assert_eq!(connection_error(raw).await, ErrorCode::TIMED_OUT);
        }
    })
    .await;
    let grown = peak() - before;
    eprintln!(
        "pipesvc-report: {CLIENTS} connections holding the start of an 8 MiB frame: \
         peak heap (server and raw clients) {:.1} MiB above the start ({} KiB per connection)",
        mib(grown),
        grown / 1024 / CLIENTS as isize
    );
    waited.expect("every connection timed out (the hang guard expired)");
    // Each connection: its 8 KiB read buffer, the 64 KiB first growth step
    // and the rest of a connection on both sides (raw client buffers,
    // tasks); before, 8 MiB each.
    assert!(
        grown < (CLIENTS * 160 * 1024) as isize,
        "{:.1} MiB for {CLIENTS} unfinished frames",
        mib(grown)
    );
    drop(clients);
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "current_thread")]
async fn headers_before_hello_commit_nothing() {
    const CLIENTS: usize = 300;
    raise_nofile(2 * CLIENTS as u64 + 200);
    let endpoint = unique_endpoint("before-hello");
    let serving = TestServer::start(echo(&endpoint).bind().unwrap());
    let before = reset_peak();

    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut raw = guard(RawClient::connect(&endpoint)).await;
        assert_eq!(raw.recv().await.unwrap().kind, Kind::Hello);
        // A header announcing 8 MiB instead of the client's HELLO.
        write(&mut raw, &header(8 * MIB - HEADER_LEN - 4))
            .await
            .unwrap();
        clients.push(raw);
    }
    let mut codes = Vec::new();
    let waited = tokio::time::timeout(HANG_GUARD, async {
        for raw in &mut clients {
            codes.push(connection_error(raw).await);
        }
    })
    .await;
    let grown = peak() - before;
    eprintln!(
        "pipesvc-report: {CLIENTS} connections sending an 8 MiB header before HELLO: \
         peak heap {:.1} MiB above the start",
        mib(grown)
    );
    waited.expect("every connection was answered (the hang guard expired)");
    // Refused as soon as the length arrives: over the handshake's limit.
    assert!(codes.iter().all(|&code| code == ErrorCode::FRAME_TOO_LARGE));
    assert!(
        grown < (CLIENTS * 64 * 1024) as isize,
        "{:.1} MiB for {CLIENTS} headers",
        mib(grown)
    );
    guard(serving.stop()).await.expect("serve");
}

#[test]
fn the_frame_deadline_applies_by_default() {
    // What CONFIG.md and the builder's documentation say, and what a
    // builder without options has.
    assert_eq!(
        pipesvc::server::DEFAULT_FRAME_TIMEOUT,
        Duration::from_secs(30)
    );
    assert_eq!(pipesvc::server::DEFAULT_INPUT_BUDGET, 256 * MIB);
    assert_eq!(pipesvc::server::HANDSHAKE_MAX_FRAME_LEN, 256);
    let builder = Server::builder(unique_endpoint("defaults"));
    let shown = format!("{builder:?}");
    assert!(shown.contains("frame_timeout: 30s"), "{shown}");
    assert!(shown.contains(&format!("limit: {}", 256 * MIB)), "{shown}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_stalled_frame_times_out_and_others_are_served() {
    let endpoint = unique_endpoint("stalled");
    let server = echo(&endpoint)
        .frame_timeout(Duration::from_millis(300))
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let (mut stalled, _) = RawClient::handshake(&endpoint).await;
    write(&mut stalled, &header(100)[..7]).await.unwrap();
    let (mut busy, _) = RawClient::handshake(&endpoint).await;
    // Frames that arrive whole are not affected, however long the gaps
    // between them (measured in the server's waits, not as a time here).
    busy.send(Frame::request(5, "still here")).await;
    assert_eq!(guard(busy.recv()).await.unwrap().payload, "still here");
    let message = {
        let frame = guard(stalled.recv()).await.expect("an ERROR");
        ErrorPayload::decode(&frame.payload).unwrap()
    };
    assert_eq!(message.code, ErrorCode::TIMED_OUT, "{}", message.message);
    assert!(message.message.contains("300ms"), "{}", message.message);
    assert_eq!(guard(stalled.recv()).await, None);
    busy.send(Frame::request(6, "and here")).await;
    assert_eq!(guard(busy.recv()).await.unwrap().payload, "and here");
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "current_thread")]
async fn unfinished_frames_past_the_budget_get_overloaded_and_others_are_served() {
    // 12 connections each send 600 KiB of a 1 MiB request: when a write
    // returns, the server has read all but what the socket buffers hold
    // (about 200 KiB), so each holds at least a 512 KiB buffer: 6 MiB,
    // over a 4 MiB budget.
    const CLIENTS: usize = 12;
    const PAYLOAD: usize = MIB;
    const FIRST: usize = 600 * 1024;
    let endpoint = unique_endpoint("budget");
    let server = echo(&endpoint)
        .input_budget(4 * MIB)
        .frame_timeout(HANG_GUARD)
        .bind()
        .unwrap();
    let serving = TestServer::start(server);
    let payload = vec![0x33u8; PAYLOAD];
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (mut raw, _) = guard(RawClient::handshake(&endpoint)).await;
        let mut start = header(PAYLOAD);
        start.extend_from_slice(&payload[..FIRST]);
        // A refused connection may fail the write: it is told below.
        let _ = guard(write(&mut raw, &start)).await;
        clients.push(raw);
    }
    // Every connection finishes its frame; each gets its answer or, if its
    // frame did not fit the budget, ERROR `overloaded`.
    for raw in &mut clients {
        let _ = guard(write(raw, &payload[FIRST..])).await;
    }
    let (mut served, mut refused) = (0, 0);
    for raw in &mut clients {
        let frame = guard(raw.recv()).await.expect("an answer or an ERROR");
        match frame.kind {
            Kind::Response => {
                assert_eq!(frame.payload.len(), PAYLOAD);
                served += 1;
            }
            Kind::Error => {
                let error = ErrorPayload::decode(&frame.payload).unwrap();
                assert_eq!(frame.id, 0);
                assert_eq!(error.code, ErrorCode::OVERLOADED, "{}", error.message);
                assert_closed(raw).await;
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "pipesvc-report: {CLIENTS} unfinished 1 MiB frames against a 4 MiB input budget: \
         {served} served, {refused} refused with `overloaded`"
    );
    assert!(refused >= 1, "the budget refused no one");
    assert!(served >= 1, "the budget served no one");
    // The budget is given back: a whole frame of the same size fits again.
    let (mut raw, _) = RawClient::handshake(&endpoint).await;
    raw.send(Frame::request(9, payload.clone())).await;
    let answer = guard(raw.recv()).await.unwrap();
    assert_eq!(
        answer.kind,
        Kind::Response,
        "{:?}",
        ErrorPayload::decode(&answer.payload)
    );
    guard(serving.stop()).await.expect("serve");
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_frames_allocation_kept_for_the_next_counts_against_the_budget_until_quiet() {
    // A busy connection (past its first waits, at which it gives its read
    // buffer back) keeps its last large frame's allocation to read the
    // next one into: charged to the budget while it is kept, given back
    // with the read buffer at a quiet tick.
    const PAYLOAD: usize = MIB;
    let endpoint = unique_endpoint("kept");
    let serving = TestServer::start(echo(&endpoint).bind().unwrap());
    let (mut raw, _) = guard(RawClient::handshake(&endpoint)).await;
    for id in 1..=8 {
        raw.send(Frame::request(id, vec![5u8; PAYLOAD])).await;
        let answer = guard(raw.recv()).await.expect("an answer");
        assert_eq!(
            (answer.kind, answer.payload.len()),
            (Kind::Response, PAYLOAD)
        );
    }
    let kept = serving.handle().held_bytes();
    assert!(
        kept >= PAYLOAD,
        "{kept} B charged with the request answered"
    );
    let quiet = tokio::time::timeout(HANG_GUARD, async {
        while serving.handle().held_bytes() >= PAYLOAD {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let after = serving.handle().held_bytes();
    eprintln!("pipesvc-report: a kept 1 MiB allocation: {kept} B charged, {after} B once quiet");
    quiet.expect("the kept allocation was given back at a quiet tick");
    guard(serving.stop()).await.expect("serve");
}

/// The server under an address-space limit runs in a child process (this
/// test binary again, running only this test), so that the limit does not
/// hit the test runner.
#[cfg(target_os = "linux")]
mod address_space {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    const CHILD: &str = "PIPESVC_TEST_RLIMIT_AS_CHILD";
    const TEST: &str =
        "address_space::a_server_under_an_address_space_limit_refuses_instead_of_aborting";
    /// Address space the child may use past what it has when it starts.
    const HEADROOM: u64 = 200 << 20;

    #[test]
    fn a_server_under_an_address_space_limit_refuses_instead_of_aborting() {
        if let Ok(name) = std::env::var(CHILD) {
            return serve_limited(&name);
        }
        let endpoint = unique_endpoint("rlimit-as");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD, endpoint.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Waits for the child to listen (its line, not a delay).
        let listening = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("pipesvc-child: listening"));
        assert!(listening, "the child server did not start");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (served, refused) = runtime.block_on(fill_the_address_space(&endpoint));
        let status = child.try_wait().unwrap();
        eprintln!(
            "pipesvc-report: under RLIMIT_AS (start + {} MiB), 8 MiB frames: {served} \
             served, {refused} refused with `overloaded`; child {status:?}",
            HEADROOM >> 20
        );
        assert_eq!(status, None, "the server process died");
        assert!(
            refused >= 1,
            "no frame was refused: the limit was not reached"
        );
        assert!(served >= 1);
        // Still serving, on the same socket file.
        assert!(endpoint.address().exists(), "the socket file is gone");
        runtime.block_on(async {
            let client = guard(pipesvc::Client::connect(&endpoint)).await.unwrap();
            assert_eq!(guard(client.request("alive")).await.unwrap(), "alive");
        });
        // Its stdin closed, the child shuts down gracefully.
        drop(child.stdin.take());
        let (done, exited) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(child.wait()));
        let status = exited.recv_timeout(HANG_GUARD).expect("the child exits");
        assert!(status.unwrap().success());
        assert!(
            !endpoint.address().exists(),
            "the socket file is removed on shutdown"
        );
    }

    /// Starts connections that each hold an 8 MiB buffer until one is
    /// refused, then finishes every frame: each gets its answer or ERROR
    /// `overloaded`.
    async fn fill_the_address_space(endpoint: &Endpoint) -> (usize, usize) {
        const PAYLOAD: usize = 8 * MIB - HEADER_LEN - 4;
        // Past half the frame: the buffer grows to the whole 8 MiB.
        const FIRST: usize = 4 * MIB + 512 * 1024;
        let payload = vec![0x44u8; PAYLOAD];
        let mut clients = Vec::new();
        // 200 MiB hold about 25 such buffers: 64 connections are past it.
        for _ in 0..64 {
            let (mut raw, _) = guard(RawClient::handshake(endpoint)).await;
            let mut start = header(PAYLOAD);
            start.extend_from_slice(&payload[..FIRST]);
            let _ = guard(write(&mut raw, &start)).await;
            clients.push(raw);
        }
        let (mut served, mut refused) = (0, 0);
        for raw in &mut clients {
            let _ = guard(write(raw, &payload[FIRST..])).await;
            let frame = guard(raw.recv()).await.expect("an answer or an ERROR");
            match frame.kind {
                Kind::Response => served += 1,
                Kind::Error => {
                    let error = ErrorPayload::decode(&frame.payload).unwrap();
                    assert_eq!(error.code, ErrorCode::OVERLOADED, "{}", error.message);
                    assert_closed(raw).await;
                    refused += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (served, refused)
    }

    /// The child: limits its address space, then serves until killed.
    fn serve_limited(name: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = Endpoint::new(name).unwrap();
        let server = runtime.block_on(async {
            // The budget out of the way: the system's limit is reached first.
            echo(&endpoint).input_budget(usize::MAX).bind().unwrap()
        });
        // The child ends with its parent, gracefully (its socket file
        // removed): when its stdin closes.
        let handle = server.handle();
        std::thread::spawn(move || {
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
            handle.shutdown();
        });
        limit_address_space(HEADROOM);
        println!("pipesvc-child: listening");
        runtime.block_on(server.serve()).unwrap();
    }

    fn limit_address_space(headroom: u64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmSize:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmSize in /proc/self/status");
        let limit = libc::rlimit {
            rlim_cur: (vm_kib * 1024 + headroom) as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a plain system call on a valid struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    }
}
