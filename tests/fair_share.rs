//! One client cannot take the service from the others: a user's
//! connections are limited, a flood of frames that get no answer cannot
//! keep a bystander waiting, and a decode bomb is refused off the
//! connection's task, so that a bystander is served meanwhile.
//!
//! No speed is asserted: each test checks the mechanism, on a
//! current-thread runtime (server and clients on one thread, so that a
//! connection task that does not yield, or a decode run on that thread,
//! holds up everyone), with counts that would differ if it broke. The
//! one time checked is a lower bound that load cannot break:
//!
//! - Rate of frames without an answer: a flood of 30,000 CANCELs at a
//!   rate of 10,000 a second takes the server at least 1.9 s to read (a
//!   second's worth at once, the rest at the rate, less one read's worth
//!   of read-ahead): measured 1.954 s; with the rate off, 143 ms.
//!
//! - CANCEL flood: the server's connection task handles at most 128
//!   frames (`FRAMES_PER_POLL`) before it yields to the runtime. Four
//!   flooders' streams hold a million CANCELs each before the bystander
//!   connects (the rate of frames without an answer is off, so that only
//!   the yield holds them back); the bystander's PING must be answered
//!   while the server has read at most a tenth of each backlog (the
//!   stream counts what the server takes). With no yield, a flooder's
//!   task reads its whole backlog at its first poll.
//! - MessagePack array of nils: params of 64 KiB or more are decoded on a
//!   blocking thread. The method's request type waits, inside its
//!   `Deserialize`, at a gate the test opens; the bystander's PING (and
//!   each attacker's own) is answered while a decode is held there, and
//!   only then is the gate opened. A decode on the runtime's thread would
//!   hold the PONG until the gate gave up waiting (after the hang guard),
//!   and the PONG would come after a decode finished.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use common::{guard, unique_endpoint, RawClient, TestServer, HANG_GUARD};
use pipesvc::protocol::{
    CallHeader, ClientHello, Encoding, ErrorCode, ErrorPayload, Frame, Kind, HEADER_LEN,
};
use pipesvc::rpc::{Method, Service};
use pipesvc::server::{AccessPolicy, ConnectionContext, Server, ServiceError};
use pipesvc::transport::{memory, PeerInfo};
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

#[path = "common/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

const MIB: usize = 1 << 20;

async fn bytes_echo(request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    Ok(request)
}

/// A PING from `client` with `id`: the next frame that is not a NOTIFY.
async fn ping(client: &mut RawClient, id: u32) -> Frame {
    client.send(Frame::new(Kind::Ping, id, Bytes::new())).await;
    guard(client.recv_skipping_notify())
        .await
        .expect("an answer to the PING")
}

/// A flood of frames without an answer is read at `unanswered_frame_rate`:
/// a second's worth at once, then the rest at the rate. No time bounds the
/// test from above; what is checked is that the server took at least as
/// long as the rate allows to read the flood, which no load can shorten.
/// With the rate off the server reads the whole flood in one go, and the
/// test fails.
#[tokio::test]
async fn a_flood_of_frames_without_an_answer_is_read_at_the_rate() {
    const RATE: u32 = 10_000;
    /// Three seconds' worth: one as the burst, two at the rate.
    const CANCELS: u64 = 3 * RATE as u64;
    let server = Server::builder(unique_endpoint("cancel-rate"))
        .handler(bytes_echo)
        .unanswered_frame_rate(Some(RATE))
        .build()
        .unwrap();
    let serving = TestServer::start(server);
    let (flood, count) = Flood::new(CANCELS);
    let started = std::time::Instant::now();
    serving
        .handle()
        .serve_connection(flood, PeerInfo::current())
        .unwrap();
    // The guard allows minutes: the rate's two seconds are far within.
    guard(count.ended.notified()).await;
    let took = started.elapsed();
    eprintln!("pipesvc-report: {CANCELS} CANCELs at {RATE}/s read in {took:?}");
    assert_eq!(count.cancels_read(), CANCELS);
    // By time t at most RATE * (1 + t) tokens were ever there, so the
    // server handled the flood's last frame no sooner than CANCELS / RATE
    // - 1 = 2 s; the stream ends when its last bytes are read, which is up
    // to one 8 KiB read (820 CANCELs, 82 ms) ahead of handling them.
    assert!(
        took >= std::time::Duration::from_millis(1_900),
        "{CANCELS} frames without an answer read in {took:?}: faster than {RATE}/s allows"
    );
    guard(serving.stop()).await.expect("serve");
}

/// A CANCEL frame's bytes: the length, the header, no payload.
const CANCEL_LEN: u64 = 4 + HEADER_LEN as u64;

/// The CANCEL for `id`, as the protocol lays it out.
fn cancel(id: u32) -> [u8; CANCEL_LEN as usize] {
    let mut frame = [0; CANCEL_LEN as usize];
    frame[..4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    frame[4] = Kind::Cancel.to_u8();
    frame[6..].copy_from_slice(&id.to_le_bytes());
    frame
}

/// What the test sees of a [`Flood`] the server owns.
struct FloodCount {
    /// Bytes the server has read from the stream (its HELLO included).
    read: AtomicU64,
    /// The HELLO's bytes, before the CANCELs.
    hello_len: u64,
    /// Set: the stream ends after the frame being read.
    stop: AtomicBool,
    /// Notified once the server has read the whole stream.
    ended: Notify,
}

/// The server's end of a flooder's connection, as a client that queued
/// its whole flood before the server read any of it: a protocol 2 HELLO,
/// then `cancels` CANCELs for ids that are not in flight (made as they
/// are read, so the backlog is as long as asked, with nothing buffered
/// and nothing to wait for), then the end of the stream. What the server
/// writes is thrown away.
struct Flood {
    hello: Bytes,
    cancels: u64,
    /// Bytes read so far.
    at: u64,
    count: Arc<FloodCount>,
}

impl Flood {
    fn new(cancels: u64) -> (Flood, Arc<FloodCount>) {
        let hello = ClientHello::with_version(2).encode();
        let mut frame = Vec::with_capacity(4 + HEADER_LEN + hello.len());
        frame.extend_from_slice(&((HEADER_LEN + hello.len()) as u32).to_le_bytes());
        frame.extend_from_slice(&[Kind::Hello.to_u8(), 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&hello);
        let count = Arc::new(FloodCount {
            read: AtomicU64::new(0),
            hello_len: frame.len() as u64,
            stop: AtomicBool::new(false),
            ended: Notify::new(),
        });
        let flood = Flood {
            hello: frame.into(),
            cancels,
            at: 0,
            count: count.clone(),
        };
        (flood, count)
    }

    /// Where the stream ends: after the last CANCEL, or once stopped,
    /// after the frame being read.
    fn end(&self) -> u64 {
        let hello = self.hello.len() as u64;
        let end = hello + CANCEL_LEN * self.cancels;
        if !self.count.stop.load(Ordering::Relaxed) {
            return end;
        }
        let begun = self.at.saturating_sub(hello).div_ceil(CANCEL_LEN);
        end.min(hello + CANCEL_LEN * begun)
    }
}

impl FloodCount {
    /// CANCELs the server has read (whole or in part).
    fn cancels_read(&self) -> u64 {
        self.read
            .load(Ordering::Relaxed)
            .saturating_sub(self.hello_len)
            .div_ceil(CANCEL_LEN)
    }
}

impl AsyncRead for Flood {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (hello, end) = (this.hello.len() as u64, this.end());
        while buf.remaining() > 0 && this.at < end {
            let n = if this.at < hello {
                let rest = &this.hello[this.at as usize..];
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                n
            } else {
                let offset = this.at - hello;
                let id = u32::try_from(offset / CANCEL_LEN + 1).expect("fewer CANCELs");
                let within = (offset % CANCEL_LEN) as usize;
                let frame = cancel(id);
                let n = (frame.len() - within).min(buf.remaining());
                buf.put_slice(&frame[within..within + n]);
                n
            };
            this.at += n as u64;
        }
        this.count.read.store(this.at, Ordering::Relaxed);
        if this.at == end {
            this.count.ended.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Flood {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancel_flood_does_not_slow_a_bystander() {
    /// Connections flooding at once.
    const FLOODERS: usize = 4;
    /// Each one's backlog: 10 MB of CANCELs, far more than the server
    /// reads in the turns it takes to serve the bystander.
    const CANCELS: u64 = 1_000_000;
    let server = Server::builder(unique_endpoint("cancel-flood"))
        .handler(bytes_echo)
        // The rate of frames that get no answer would pause each flooder
        // after its burst (10,000), whether the task yields or not: off,
        // so that what is checked is the yield alone.
        .unanswered_frame_rate(None)
        .build()
        .unwrap();
    let serving = TestServer::start(server);
    let floods: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (flood, count) = Flood::new(CANCELS);
            serving
                .handle()
                .serve_connection(flood, PeerInfo::current())
                .unwrap();
            count
        })
        .collect();
    // Every flooder's backlog is queued before the bystander connects.
    let stream = serving.memory_stream().unwrap();
    let mut bystander = guard(RawClient::handshake_v2_over(stream)).await.0;
    let pong = ping(&mut bystander, 1).await;
    let read: Vec<u64> = floods.iter().map(|f| f.cancels_read()).collect();
    assert_eq!((pong.kind, pong.id), (Kind::Pong, 1), "{pong:?}");
    eprintln!(
        "pipesvc-report: CANCEL flood: the bystander's PONG came when the server had read \
         {read:?} of the {FLOODERS} flooders' {CANCELS} CANCELs each"
    );
    assert!(
        read.iter().all(|&n| n <= CANCELS / 10),
        "the bystander waited behind the flooders' backlog: {read:?} of {CANCELS} CANCELs \
         each read before its PONG"
    );
    for flood in &floods {
        flood.stop.store(true, Ordering::Relaxed);
    }
    guard(serving.stop()).await.expect("serve");
}

/// A MessagePack array of `n` nils (array32 header), optionally ending in
/// a byte that is no MessagePack value (so that decoding fails at the last
/// element).
fn nils(n: u32, bad_end: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n as usize + 5);
    bytes.push(0xdd);
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes.resize(n as usize + 5, 0xc0);
    if bad_end {
        *bytes.last_mut().unwrap() = 0xc1;
    }
    bytes
}

fn msgpack_call(id: u32, method: &str, params: &[u8]) -> Frame {
    let header = CallHeader::new(method, Encoding::MessagePack);
    Frame::new(Kind::Call, id, header.encode_with(params).unwrap())
}

/// Where the decodes of [`Gated`] params wait until the test lets them
/// go on. Only the nil-bomb test decodes them.
struct Gate {
    state: Mutex<GateState>,
    opened: Condvar,
    /// Notified at each decode that starts.
    started: Notify,
}

#[derive(Clone, Copy, Debug, Default)]
struct GateState {
    /// Decodes begun (at the gate or past it), and finished.
    started: u64,
    finished: u64,
    open: bool,
}

static GATE: LazyLock<Gate> = LazyLock::new(|| Gate {
    state: Mutex::default(),
    opened: Condvar::new(),
    started: Notify::new(),
});

impl Gate {
    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A decode starts: it waits until the gate is open. A decode that
    /// blocks the thread the test runs on would wait for ever; after
    /// [`HANG_GUARD`] the gate opens by itself, so that the test fails
    /// instead of hanging.
    fn pass(&self) {
        let mut state = self.state();
        state.started += 1;
        self.started.notify_waiters();
        let (mut state, waited) = self
            .opened
            .wait_timeout_while(state, HANG_GUARD, |s| !s.open)
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            state.open = true;
            self.opened.notify_all();
        }
    }

    fn finished(&self) {
        self.state().finished += 1;
    }

    /// Waits until at least `n` decodes have started.
    async fn started(&self, n: u64) {
        loop {
            let notified = self.started.notified();
            if self.state().started >= n {
                return;
            }
            notified.await;
        }
    }

    fn open(&self) {
        self.state().open = true;
        self.opened.notify_all();
    }
}

/// Opens [`GATE`] when dropped.
struct OpensGate;

impl Drop for OpensGate {
    fn drop(&mut self) {
        GATE.open();
    }
}

/// `echo`'s params: any value, decoded once [`GATE`] lets it.
#[derive(schemars::JsonSchema)]
struct Gated(serde_json::Value);

impl<'de> Deserialize<'de> for Gated {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Gated, D::Error> {
        GATE.pass();
        let value = serde_json::Value::deserialize(deserializer);
        GATE.finished();
        value.map(Gated)
    }
}

/// `echo`: any value, returned as it came, its decode held at [`GATE`].
const ECHO: Method<Gated, serde_json::Value> = Method::new("echo", "Returns its params");

fn gated_echo_service() -> Service {
    Service::new("test", "1", ()).method(&ECHO, |_, Gated(value), _| async move { Ok(value) })
}

#[tokio::test(flavor = "current_thread")]
async fn a_messagepack_array_of_nils_is_bounded_and_a_bystander_is_served() {
    // The largest that fits the default 8 MiB frame with its header.
    const NILS: u32 = 8 * MIB as u32 - 64;
    /// Connections sending it at once: more than decode at once (half the
    /// CPUs), so that some wait for their turn.
    const ATTACKERS: usize = 4;
    let server = Server::builder(unique_endpoint("nil-bomb"))
        .handler(bytes_echo)
        .calls(gated_echo_service())
        .build()
        .unwrap();
    let serving = TestServer::start(server);
    // Should the test fail, the decodes held at the gate go on.
    let _opens = OpensGate;
    let before = heap::reset_peak();
    let stream = serving.memory_stream().unwrap();
    let mut bystander = guard(RawClient::handshake_v2_over(stream)).await.0;
    let (good, bad) = (
        Bytes::from(nils(NILS, false)),
        Bytes::from(nils(NILS, true)),
    );
    // One sends the value whole, the next one that fails at its last
    // element; each from a task of its own (the server reads the 8 MiB
    // as they are written).
    let sending: Vec<_> = (0..ATTACKERS)
        .map(|n| {
            let params = if n % 2 == 0 { &good } else { &bad }.clone();
            let stream = serving.memory_stream().unwrap();
            tokio::spawn(async move {
                let mut client = RawClient::handshake_v2_over(stream).await.0;
                client.send(msgpack_call(1, "echo", &params)).await;
                client
            })
        })
        .collect();
    // A bomb is being decoded, and held there.
    guard(GATE.started(1)).await;
    let pong = ping(&mut bystander, 1).await;
    let at_pong = *GATE.state();
    assert_eq!((pong.kind, pong.id), (Kind::Pong, 1), "{pong:?}");
    assert_eq!(
        at_pong.finished, 0,
        "the bystander's PONG came only after a decode had finished ({at_pong:?}): the \
         decode held up the runtime's thread"
    );
    // Each attacker's own PING too, before its CALL's answer.
    let mut attackers = Vec::new();
    for sent in sending {
        let mut attacker = guard(sent).await.expect("the attacker's task");
        let pong = ping(&mut attacker, 2).await;
        assert_eq!((pong.kind, pong.id), (Kind::Pong, 2), "{pong:?}");
        attackers.push(attacker);
    }
    let at_pongs = *GATE.state();
    GATE.open();
    let mut answers = Vec::new();
    for attacker in &mut attackers {
        let answer = guard(attacker.recv_skipping_notify())
            .await
            .expect("an answer");
        let code = (answer.kind == Kind::Error)
            .then(|| ErrorPayload::decode(&answer.payload).unwrap().code);
        answers.push((answer.kind, answer.id, code));
    }
    let peak = heap::peak() - before;
    eprintln!(
        "pipesvc-report: {ATTACKERS} CALLs of an 8 MiB MessagePack array of nils: PONGs \
         with decodes {at_pong:?} at the bystander's, {at_pongs:?} at the attackers'; peak \
         heap {:.1} MiB above the start (server and clients); answers {answers:?}",
        peak as f64 / MIB as f64
    );
    assert!(
        answers.iter().all(|&(kind, id, code)| kind == Kind::Error
            && id == 1
            && code == Some(ErrorCode::BAD_REQUEST)),
        "every one is refused as a bad request: {answers:?}"
    );
    guard(serving.stop()).await.expect("serve");
}

/// The first frame a client gets on `stream`: HELLO if served; if refused,
/// the ERROR's code, or `None` when the server had so many refusals in
/// progress that it closed without one.
async fn admitted(stream: memory::MemoryStream) -> (RawClient, Result<(), Option<ErrorCode>>) {
    let mut client = RawClient::over(stream);
    let Some(first) = guard(client.recv()).await else {
        return (client, Err(None));
    };
    match first.kind {
        Kind::Hello => {
            let hello = pipesvc::protocol::ClientHello::with_version(1).encode();
            client.send(Frame::new(Kind::Hello, 0, hello)).await;
            (client, Ok(()))
        }
        Kind::Error => {
            let code = ErrorPayload::decode(&first.payload).unwrap().code;
            (client, Err(Some(code)))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_user_with_a_thousand_idle_connections_leaves_room_for_another() {
    // Two users other than the server's own (uid on Unix, pid on Windows).
    let greedy = PeerInfo::new()
        .with_uid(65534)
        .with_gid(65534)
        .with_pid(4242);
    let other = PeerInfo::new()
        .with_uid(65533)
        .with_gid(65533)
        .with_pid(4343);
    let server = Server::builder(unique_endpoint("per-user"))
        .max_connections(1000)
        .access(AccessPolicy::anyone())
        .handler(bytes_echo)
        .build()
        .unwrap();
    let serving = TestServer::start(server);
    let connect = |peer: PeerInfo| {
        let (client_end, server_end) = memory::pair();
        serving.handle().serve_connection(server_end, peer).unwrap();
        admitted(client_end)
    };
    let mut idle = Vec::new();
    let (mut held, mut refused) = (0, 0);
    for _ in 0..1000 {
        let (client, outcome) = connect(greedy).await;
        match outcome {
            // Held, idle.
            Ok(()) => {
                held += 1;
                idle.push(client);
            }
            Err(code) => {
                assert!(code.is_none_or(|c| c == ErrorCode::OVERLOADED), "{code:?}");
                refused += 1;
            }
        }
    }
    let (mut client, outcome) = connect(other).await;
    eprintln!(
        "pipesvc-report: one user opened 1000 idle connections: {held} held, {refused} \
         refused; another user's client: {outcome:?}"
    );
    assert_eq!(outcome, Ok(()), "the other user is served");
    client.send(Frame::request(1, "mine")).await;
    assert_eq!(
        guard(client.recv_skipping_notify()).await,
        Some(Frame::response(1, "mine"))
    );
    assert!(refused > 0, "one user took every connection");
    drop(idle);
    guard(serving.stop()).await.expect("serve");
}
