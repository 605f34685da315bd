//! Fuzzes a live pipesvc `Server` with arbitrary client bytes.
//!
//! Once per process a server runs on a Tokio runtime (echo-style handler,
//! 1 KiB maximum frame length, short handshake timeout, an access policy
//! with connection and per-method rules: the client, this process's own
//! identity with its groups, is admitted; CALLs of methods starting with
//! `s` are refused `not allowed`, those starting with `o` pass their rule
//! and meet `unknown method`), serving the
//! in-memory transport only: each input is one `memory::pair`, so that no
//! socket is opened per input (the connection code is the same for every
//! stream; the socket-only half-close probe is not fuzzed).
//! Input: one control byte, then the bytes a client sends. Bit 0 of the
//! control byte: send a valid client HELLO before the input; bits 1-3: how
//! the bytes are split into writes; bit 4: that HELLO names version 2
//! (else 1), so that CALL, CANCEL, DESCRIBE and unknown kinds are served
//! (the HELLO reply must then follow the server's HELLO). The client then shuts down its write
//! side and reads until the server closes; more than 2 s is a hang (panic).
//!
//! Checked: every byte the server sends decodes with `FrameCodec` under its
//! announced maximum; the first frame is a valid HELLO (then, on a
//! version 2 connection, the HELLO reply); only RESPONSE, ERROR, NOTIFY,
//! GOODBYE and PONG follow; every answer matches something
//! the client sent (right id, payload and kind); and a model of PROTOCOL.md
//! (fed the same bytes) predicts how the connection ends: which ERROR it
//! ends with, or that every request and PING was answered. After each input
//! the server holds no connection, and every `LIVENESS_EVERY` inputs a
//! fresh client must get its echo. A panic anywhere in the server (even one
//! Tokio would catch) aborts the process: libfuzzer-sys makes every panic
//! a crash.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pipesvc::protocol::{
    negotiate, CallHeader, ClientHello, ErrorCode, ErrorPayload, Frame, FrameCodec, HelloReply,
    Kind, ServerHello, ServiceCode, Status,
};
use pipesvc::server::{
    AccessPolicy, ConnectionContext, Rule, Server, ServerHandle, ServiceError,
    HANDSHAKE_MAX_FRAME_LEN,
};
use pipesvc::transport::{memory, Caller};
use pipesvc::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio_util::codec::{Decoder, Encoder};

/// The server's maximum frame length: small, so that fuzz inputs reach it.
const MAX_FRAME_LEN: u32 = 1024;
/// A whole session (connect, write, read to the close) taking longer than
/// this is a hang.
const HANG: Duration = Duration::from_secs(2);
/// Check that a fresh client still gets an echo every this many inputs.
const LIVENESS_EVERY: u64 = 8;
/// Service error code the handler uses for payloads starting with `!`.
const SERVICE_CODE: ServiceCode = ServiceCode::new(1000).unwrap();

struct Fixture {
    runtime: Runtime,
    handle: ServerHandle,
    inputs: AtomicU64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // Named for the logs only: nothing is bound.
        let endpoint = Endpoint::new("pipesvc-fuzz").expect("endpoint");
        let server = {
            let _guard = runtime.enter();
            Server::builder(endpoint)
                .access(policy())
                .handler(handler)
                .max_frame_len(MAX_FRAME_LEN)
                .max_in_flight(4)
                .handshake_timeout(Duration::from_millis(500))
                .build()
                .expect("build the fuzzed server")
        };
        let handle = server.handle();
        runtime.spawn(async move {
            let result = server.serve().await;
            panic!("the server stopped serving: {result:?}");
        });
        Fixture {
            runtime,
            handle,
            inputs: AtomicU64::new(0),
        }
    })
}

/// Admits this process (its own user, or its primary group); methods
/// starting with `s` need a uid no process has, those starting with `o`
/// the server's own user or an administrator.
fn policy() -> AccessPolicy {
    let me = Caller::current();
    let gid = me.gid().unwrap_or(0);
    AccessPolicy::only(Rule::same_user())
        .allow(Rule::gid(gid).or(Rule::admin()))
        .method("s*", Rule::uid(u32::MAX - 1).named("no one"))
        .method("o*", Rule::same_user().or(Rule::admin()))
}

/// Echoes, except for payloads starting with `!` (a service error), `B`
/// (a response too large for a frame), `N` (a NOTIFY with the payload
/// first) and `Y` (yields first, so answers may come out of order).
async fn handler(request: Bytes, ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
    match request.first() {
        Some(b'!') => Err(ServiceError::with_code(SERVICE_CODE, "refused")),
        Some(b'B') => Ok(Bytes::from(vec![b'B'; MAX_FRAME_LEN as usize])),
        Some(b'N') => {
            let _ = ctx.notify(request.clone()).await;
            Ok(request)
        }
        Some(b'Y') => {
            tokio::task::yield_now().await;
            Ok(request)
        }
        _ => Ok(request),
    }
}

/// The ERROR code the handler answers `payload` with, if not a RESPONSE.
fn error_answer(payload: &[u8]) -> Option<ErrorCode> {
    match payload.first() {
        Some(b'!') => Some(ErrorCode::from(SERVICE_CODE)),
        Some(b'B') => Some(ErrorCode::FRAME_TOO_LARGE),
        _ => None,
    }
}

fn client_hello(version: u16) -> Bytes {
    let mut wire = BytesMut::new();
    FrameCodec::new(MAX_FRAME_LEN)
        .encode(
            Frame::new(Kind::Hello, 0, ClientHello::with_version(version).encode()),
            &mut wire,
        )
        .expect("encode HELLO");
    wire.freeze()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let mut sent = Vec::with_capacity(rest.len() + 16);
    if control & 1 == 1 {
        let version = if control & 0x10 != 0 { 2 } else { 1 };
        sent.extend_from_slice(&client_hello(version));
    }
    sent.extend_from_slice(rest);
    let write_size = [usize::MAX, 1, 2, 3, 7, 10, 64, 500][usize::from((control >> 1) & 7)];

    let received = fixture
        .runtime
        .block_on(session(&fixture.handle, &sent, write_size));
    check(&sent, &received);
    assert_eq!(
        fixture.handle.connection_count(),
        0,
        "the server still holds a connection its client saw closed"
    );

    if fixture
        .inputs
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(LIVENESS_EVERY)
    {
        let mut hello = client_hello(1).to_vec();
        let mut wire = BytesMut::new();
        FrameCodec::new(MAX_FRAME_LEN)
            .encode(Frame::request(7, Bytes::from_static(b"alive?")), &mut wire)
            .expect("encode REQUEST");
        hello.extend_from_slice(&wire);
        let received = fixture
            .runtime
            .block_on(session(&fixture.handle, &hello, usize::MAX));
        let frames = decode_all(&received);
        assert_eq!(
            frames.last(),
            Some(&Frame::response(7, Bytes::from_static(b"alive?"))),
            "the server no longer echoes a fresh client"
        );
    }
});

/// Connects in memory, writes `bytes` in writes of `write_size` while
/// reading, shuts the write side down, and reads until the server closes.
/// Returns what the server sent. Panics after [`HANG`].
async fn session(server: &ServerHandle, bytes: &[u8], write_size: usize) -> Vec<u8> {
    let run = async {
        let (stream, server_end) = memory::pair();
        server
            .serve_connection(server_end, Caller::current())
            .expect("the fuzzed server takes the stream");
        let (mut read, mut write) = tokio::io::split(stream);
        let writing = async {
            // The server may close first (after a protocol error): then
            // writes fail, which is fine.
            for chunk in bytes.chunks(write_size) {
                if write.write_all(chunk).await.is_err() {
                    return;
                }
                if write_size != usize::MAX {
                    tokio::task::yield_now().await;
                }
            }
            let _ = write.shutdown().await;
        };
        let reading = async {
            let mut received = Vec::new();
            match read.read_to_end(&mut received).await {
                Ok(_) => {}
                // The server closed with our bytes unread: Linux then reports
                // ECONNRESET after the data it sent.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("reading from the server failed: {e}"),
            }
            received
        };
        tokio::join!(writing, reading).1
    };
    tokio::time::timeout(HANG, run)
        .await
        .unwrap_or_else(|_| panic!("hang: the session did not end within {HANG:?}"))
}

/// Decodes everything the server sent: whole frames, each within the
/// maximum the server announces.
fn decode_all(received: &[u8]) -> Vec<Frame> {
    let mut codec = FrameCodec::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::from(received);
    let mut frames = Vec::new();
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return frames,
            Err(e) => panic!(
                "the server sent an undecodable frame after {frames:?}: {e} \
                 (bytes left: {buf:02x?})"
            ),
        }
    }
}

/// How the model says the connection ends.
#[derive(Debug, PartialEq)]
enum End {
    /// The client's stream ended cleanly after the handshake: every request
    /// and PING is answered, then the server closes.
    Clean,
    /// The stream ended (cleanly or mid-frame) where the server just closes,
    /// without an ERROR; answers still in flight may be lost.
    Silent,
    /// The server reports this ERROR (id 0) and closes; answers still in
    /// flight may be lost.
    Error(ErrorCode),
}

/// What PROTOCOL.md says the server does with `sent`.
struct Model {
    /// REQUESTs the server reads, in order.
    requests: Vec<(u32, Bytes)>,
    /// PINGs the server reads.
    pings: Vec<(u32, Bytes)>,
    /// Ids of the STATUS requests the server reads.
    statuses: Vec<u32>,
    /// Ids of the DESCRIBE requests the server reads (protocol 2).
    describes: Vec<u32>,
    /// Frames the server answers at once with an ERROR of this code and id
    /// (protocol 2: a CALL it cannot start, a kind it does not know).
    refused: Vec<(u32, ErrorCode)>,
    /// Ids the client sent CANCEL for: a request of such an id may be
    /// answered ERROR `cancelled` instead (if the CANCEL found it running).
    cancelled: Vec<u32>,
    /// Ids of CALLs with a deadline: they may be answered ERROR `timed out`.
    deadlines: Vec<u32>,
    /// The connection's version, if the handshake got that far.
    version: Option<u16>,
    end: End,
    /// A frame reused an id that may still be in flight: whether the
    /// server sees it as a duplicate depends on timing.
    racy: bool,
    /// An ITEM, CREDIT or END named an id that may be in flight (a request
    /// that does not stream: `unexpected frame`), depending on timing.
    racy_stream: bool,
}

fn model(sent: &[u8]) -> Model {
    // Before its HELLO is accepted, a client's frames are limited to
    // HANDSHAKE_MAX_FRAME_LEN (revision 1.2); after, to the maximum. Any
    // kind byte is read then: every frame but HELLO is `unexpected frame`
    // (revision 2.1).
    let mut codec = FrameCodec::new(HANDSHAKE_MAX_FRAME_LEN.min(MAX_FRAME_LEN)).with_version(2);
    let mut buf = BytesMut::from(sent);
    let mut model = Model {
        requests: Vec::new(),
        pings: Vec::new(),
        statuses: Vec::new(),
        describes: Vec::new(),
        refused: Vec::new(),
        cancelled: Vec::new(),
        deadlines: Vec::new(),
        version: None,
        end: End::Silent,
        racy: false,
        racy_stream: false,
    };
    let mut handshaken = false;
    model.end = loop {
        let frame = match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) if handshaken => break End::Clean,
            Ok(None) => break End::Silent,
            Err(e) => match e.code() {
                Some(code) => break End::Error(code),
                None => break End::Silent, // a partial frame at the end
            },
        };
        if !handshaken {
            if frame.kind != Kind::Hello {
                break End::Error(ErrorCode::UNEXPECTED_FRAME);
            }
            let hello = match ClientHello::decode(&frame.payload) {
                Ok(hello) => hello,
                Err(e) => break End::Error(e.code()),
            };
            handshaken = true;
            let version = negotiate(hello.version);
            model.version = Some(version);
            codec = FrameCodec::new(MAX_FRAME_LEN).with_version(version);
            continue;
        }
        let needs_id = matches!(
            frame.kind,
            Kind::Request
                | Kind::Ping
                | Kind::Status
                | Kind::Call
                | Kind::Cancel
                | Kind::Describe
                | Kind::Item
                | Kind::Credit
                | Kind::End
                | Kind::Subscribe
        );
        if frame.id == 0 && needs_id {
            // PROTOCOL.md: these need an id other than 0.
            break End::Error(ErrorCode::MALFORMED_FRAME);
        }
        match frame.kind {
            Kind::Request => model.request(frame.id, frame.payload),
            Kind::Call => match CallHeader::decode(&frame.payload) {
                Ok((header, params)) if header.method.is_empty() => {
                    if header.timeout.is_some() {
                        model.deadlines.push(frame.id);
                    }
                    model.request(frame.id, params);
                }
                // The access policy refuses methods starting with `s`; the
                // fuzzed server has no typed methods.
                Ok((header, _)) if header.method.starts_with('s') => {
                    model.refuse(frame.id, ErrorCode::NOT_ALLOWED)
                }
                Ok(_) => model.refuse(frame.id, ErrorCode::UNKNOWN_METHOD),
                Err(_) => model.refuse(frame.id, ErrorCode::BAD_REQUEST),
            },
            Kind::Cancel => model.cancelled.push(frame.id),
            Kind::Describe => {
                model.answered_at_once(frame.id);
                model.describes.push(frame.id);
            }
            Kind::Unknown(_) if frame.id == 0 => {}
            Kind::Unknown(_) => model.refuse(frame.id, ErrorCode::UNKNOWN_KIND),
            Kind::Ping => {
                model.answered_at_once(frame.id);
                model.pings.push((frame.id, frame.payload));
            }
            Kind::Status => {
                model.answered_at_once(frame.id);
                model.statuses.push(frame.id);
            }
            Kind::Notify => {}
            // Revision 2.2. A CREDIT carries a u32.
            Kind::Credit if frame.payload.len() < 4 => {
                break End::Error(ErrorCode::MALFORMED_FRAME)
            }
            // The fuzzed server has no streaming methods: an id in flight
            // is a request that does not stream (`unexpected frame`), any
            // other is ignored; which one it is depends on timing.
            Kind::Item | Kind::Credit | Kind::End => {
                if model.uses(frame.id) {
                    model.racy_stream = true;
                }
            }
            // The fuzzing client lists no kinds in its HELLO (and the
            // server has no topics): `bad request`.
            Kind::Subscribe => model.refuse(frame.id, ErrorCode::BAD_REQUEST),
            _ => break End::Error(ErrorCode::UNEXPECTED_FRAME),
        }
    };
    model
}

impl Model {
    /// A request for the byte handler (a REQUEST, or a CALL of the empty
    /// method): an id reused may still be in flight, which makes a
    /// duplicate-id close a matter of timing.
    fn request(&mut self, id: u32, payload: Bytes) {
        if self.uses(id) {
            self.racy = true;
        }
        self.requests.push((id, payload));
    }

    /// A frame answered at once with ERROR `code`; a duplicate id if a
    /// request of that id may be in flight.
    fn refuse(&mut self, id: u32, code: ErrorCode) {
        if self.uses(id) {
            self.racy = true;
        }
        self.refused.push((id, code));
    }

    /// A PING, STATUS or DESCRIBE: answered at once, unless a request of
    /// its id may be in flight (a duplicate id, revision 2.1).
    fn answered_at_once(&mut self, id: u32) {
        if self.uses(id) {
            self.racy = true;
        }
    }

    fn uses(&self, id: u32) -> bool {
        self.requests.iter().any(|(used, _)| *used == id)
            || self.refused.iter().any(|(used, _)| *used == id)
    }
}

/// Checks what the server sent against the rules and the model.
fn check(sent: &[u8], received: &[u8]) {
    let frames = decode_all(received);
    let context = || format!("client sent {sent:02x?}\nserver sent {frames:?}");
    let model = model(sent);

    let (first, rest) = frames
        .split_first()
        .unwrap_or_else(|| panic!("no HELLO from the server\n{}", context()));
    assert_eq!(first.kind, Kind::Hello, "{}", context());
    let hello = ServerHello::decode(&first.payload).expect("a valid server HELLO");
    assert_eq!((hello.version, hello.max_frame_len), (1, MAX_FRAME_LEN));
    let rest = match model.version {
        Some(version) if version >= 2 => {
            let (reply, rest) = rest
                .split_first()
                .unwrap_or_else(|| panic!("no HELLO reply\n{}", context()));
            assert_eq!((reply.kind, reply.id), (Kind::Hello, 0), "{}", context());
            let reply = HelloReply::decode(&reply.payload).expect("a valid HELLO reply");
            assert_eq!(reply, HelloReply::new(2, &[]), "{}", context());
            rest
        }
        _ => rest,
    };

    // Match every answer to something the client sent, at most once each.
    let mut requests: HashMap<(u32, Bytes), usize> = HashMap::new();
    for request in &model.requests {
        *requests.entry(request.clone()).or_default() += 1;
    }
    let mut pings: HashMap<(u32, Bytes), usize> = HashMap::new();
    for ping in &model.pings {
        *pings.entry(ping.clone()).or_default() += 1;
    }
    let mut notifies: HashMap<Bytes, usize> = HashMap::new();
    for (_, payload) in &model.requests {
        if payload.first() == Some(&b'N') {
            *notifies.entry(payload.clone()).or_default() += 1;
        }
    }
    fn take_from<K: std::hash::Hash + Eq + std::fmt::Debug>(
        map: &mut HashMap<K, usize>,
        key: K,
        what: &str,
        context: &dyn Fn() -> String,
    ) {
        match map.get_mut(&key) {
            Some(n) if *n > 0 => *n -= 1,
            _ => panic!(
                "{what} {key:?} answers nothing the client sent\n{}",
                context()
            ),
        }
    }
    let context_fn = &context;
    macro_rules! take {
        ($map:expr, $key:expr, $what:expr) => {
            take_from($map, $key, $what, context_fn)
        };
    }
    let mut statuses: HashMap<u32, usize> = HashMap::new();
    for id in &model.statuses {
        *statuses.entry(*id).or_default() += 1;
    }
    let mut describes: HashMap<u32, usize> = HashMap::new();
    for id in &model.describes {
        *describes.entry(*id).or_default() += 1;
    }
    let mut refused: HashMap<(u32, ErrorCode), usize> = HashMap::new();
    for refusal in &model.refused {
        *refused.entry(*refusal).or_default() += 1;
    }
    let mut final_error = None;
    let mut stops: HashMap<u32, usize> = HashMap::new();
    for (i, frame) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match frame.kind {
            Kind::Response
                if !requests.contains_key(&(frame.id, frame.payload.clone()))
                    && frame.payload.starts_with(b"{\"service\":") =>
            {
                // The answer to a DESCRIBE: the default description (no
                // methods; revision 2.2: no topics either).
                assert!(
                    frame.payload.ends_with(b"\"methods\":[],\"topics\":[]}"),
                    "{}",
                    context()
                );
                take!(&mut describes, frame.id, "DESCRIBE answer");
            }
            Kind::Response if !requests.contains_key(&(frame.id, frame.payload.clone())) => {
                // Not an echo: the answer to a STATUS.
                assert!(Status::decode(&frame.payload).is_some(), "{}", context());
                match statuses.get_mut(&frame.id) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => panic!(
                        "RESPONSE {} answers nothing the client sent\n{}",
                        frame.id,
                        context()
                    ),
                }
            }
            Kind::Response => {
                assert_eq!(error_answer(&frame.payload), None, "{}", context());
                take!(&mut requests, (frame.id, frame.payload.clone()), "RESPONSE")
            }
            Kind::Pong => take!(&mut pings, (frame.id, frame.payload.clone()), "PONG"),
            Kind::Notify => {
                if let Some(n) = notifies.get_mut(&frame.payload).filter(|n| **n > 0) {
                    *n -= 1;
                } else {
                    panic!("NOTIFY nobody asked for\n{}", context());
                }
            }
            Kind::Error => {
                let code = ErrorPayload::decode(&frame.payload)
                    .unwrap_or_else(|| panic!("ERROR without a code\n{}", context()))
                    .code;
                // The last frame may be the ERROR that closes the connection
                // (id 0), or a request's answer (never id 0: such requests
                // are refused).
                let may_close = last && frame.id == 0;
                // Cancelled or stopped at its deadline instead of its own
                // answer, if the client asked for that.
                let stopped = (code == ErrorCode::CANCELLED && model.cancelled.contains(&frame.id))
                    || (code == ErrorCode::TIMED_OUT && model.deadlines.contains(&frame.id));
                let answered = requests
                    .iter()
                    .find(|((id, payload), n)| {
                        **n > 0 && *id == frame.id && error_answer(payload) == Some(code)
                    })
                    .map(|(request, _)| request.clone());
                // Which request of that id was stopped cannot be told (ids
                // may be reused): counted by id, settled after the loop.
                let may_stop = stopped
                    && requests
                        .iter()
                        .any(|((id, _), n)| *n > 0 && *id == frame.id);
                let refusal = (frame.id, code);
                if may_close
                    && (model.end == End::Error(code)
                        || (model.racy && code == ErrorCode::DUPLICATE_ID)
                        || (model.racy_stream && code == ErrorCode::UNEXPECTED_FRAME))
                {
                    final_error = Some(code);
                } else if let Some(request) = answered {
                    take!(&mut requests, request, "ERROR");
                } else if may_stop {
                    *stops.entry(frame.id).or_default() += 1;
                } else if refused.get(&refusal).is_some_and(|n| *n > 0) {
                    take!(&mut refused, refusal, "ERROR");
                } else if may_close {
                    final_error = Some(code); // judged against the model below
                } else {
                    panic!("unexpected ERROR {code:?}\n{}", context());
                }
            }
            Kind::Goodbye => panic!(
                "GOODBYE, but the server is not shutting down\n{}",
                context()
            ),
            // HELLO, REQUEST, PING, STATUS, or a kind added later (Kind is
            // non-exhaustive): never something the server sends here.
            _ => {
                panic!("the server sent a {:?}\n{}", frame.kind, context())
            }
        }
    }

    // Each ERROR `cancelled` or `timed out` answers one request of its id
    // that got no other answer.
    for (id, mut n) in stops {
        for ((request_id, _), left) in requests.iter_mut() {
            let k = n.min(*left);
            if *request_id == id && k > 0 {
                *left -= k;
                n -= k;
            }
        }
        assert_eq!(
            n,
            0,
            "more requests of id {id} stopped than sent\n{}",
            context()
        );
    }

    match (&model.end, final_error) {
        (End::Error(want), Some(got)) if *want == got => {}
        (_, Some(got)) if model.racy && got == ErrorCode::DUPLICATE_ID => {}
        (_, Some(got)) if model.racy_stream && got == ErrorCode::UNEXPECTED_FRAME => {}
        (End::Clean, None) if model.racy || model.racy_stream => {}
        (End::Clean, None) => {
            let unanswered: Vec<_> = requests.iter().filter(|(_, n)| **n > 0).collect();
            assert!(
                unanswered.is_empty(),
                "unanswered {unanswered:?}\n{}",
                context()
            );
            let unponged: Vec<_> = pings.iter().filter(|(_, n)| **n > 0).collect();
            assert!(
                unponged.is_empty(),
                "no PONG for {unponged:?}\n{}",
                context()
            );
            let unrefused: Vec<_> = refused.iter().filter(|(_, n)| **n > 0).collect();
            assert!(
                unrefused.is_empty(),
                "no ERROR for {unrefused:?}\n{}",
                context()
            );
            let undescribed: Vec<_> = describes.iter().filter(|(_, n)| **n > 0).collect();
            assert!(
                undescribed.is_empty(),
                "no description for {undescribed:?}\n{}",
                context()
            );
        }
        (End::Silent, None) => {}
        (want, got) => panic!(
            "the connection ended with ERROR {got:?}; PROTOCOL.md says {want:?}\n{}",
            context()
        ),
    }
}
