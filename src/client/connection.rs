//! One connection of a client: handshake, writer and reader tasks, and the
//! requests waiting on it. A [`Client`](super::Client) holds one at a time.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::Instrument;

use super::notifications::Queue;
use super::pending::{within, Expiry, Greeting, Pending};
use super::reader::{read_frames, Routes};
use super::writer::Writer;
use super::ClientOptions;
use crate::endpoint::Endpoint;
use crate::error::{CloseReason, Error, Result};
use crate::protocol::{
    ClientHello, CodecError, ErrorCode, ErrorPayload, Frame, FrameCodec, HelloReply, KeepingCodec,
    Kind, KindSet, ServerHello, HEADER_LEN, KINDS, PROTOCOL_VERSION,
};
use crate::transport::{self, ConnectStats, Generic, PeerInfo};

/// The smallest maximum frame length a server may announce (PROTOCOL.md,
/// "Maximum frame length"): what this client's frames are held to before
/// the server's HELLO says its own.
pub(super) const SMALLEST_SERVER_MAX_FRAME_LEN: u32 = 74;

/// Opens a stream for a client that does not connect to an endpoint
/// ([`Client::from_io`](super::Client::from_io),
/// [`Client::from_connector`](super::Client::from_connector)).
pub(super) type Connector =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Generic>> + Send + Sync>;

#[derive(Debug)]
pub(super) struct Connection {
    /// When the stream was connected, before the handshake.
    pub(super) connected_at: Instant,
    pub(super) server_peer: PeerInfo,
    pub(super) connect_stats: ConnectStats,
    pub(super) writer: Arc<Writer>,
    pub(super) pending: Arc<Pending>,
    reader: JoinHandle<()>,
    close_timeout: Duration,
    /// Where the connection's tasks run, for the flusher's bound on drop.
    runtime: tokio::runtime::Handle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The flusher writes what is queued and shuts down; the read half
        // goes with the reader, and with both halves gone the handle closes.
        // With nothing to write, the write half goes now, and the flusher
        // (if it was ever started) with it: no task woken, nothing spawned
        // below.
        if !self.writer.close_if_idle() {
            self.writer.close();
        }
        self.reader.abort();
        // The reader may not have ended it: whoever waits on this
        // connection (the client's supervisor) learns that it is gone.
        self.pending.fail_all(CloseReason::ClientClosed);
        // As on close(), what is queued gets `close_timeout` to be written:
        // a server that does not read would otherwise keep the flusher, and
        // with it the connection, for as long as it likes.
        if let Some(flusher) = self.writer.take_flusher().filter(|f| !f.is_finished()) {
            let limit = self.close_timeout;
            self.runtime.spawn(async move {
                let abort = flusher.abort_handle();
                if tokio::time::timeout(limit, flusher).await.is_err() {
                    abort.abort();
                }
            });
        }
    }
}

impl Connection {
    /// Connects, checks who serves, and performs the handshake. A server
    /// that goes away before its HELLO (one being killed or stopped while
    /// we connected) counts like an absent one: tried again until the
    /// connect timeout.
    pub(super) async fn open(
        endpoint: &Endpoint,
        options: &ClientOptions,
        notifications: &Arc<Queue>,
    ) -> Result<Connection> {
        let deadline = tokio::time::Instant::now() + options.connect.timeout;
        let mut pause = Duration::from_millis(1);
        let mut attempt = options.clone();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            attempt.connect.timeout = left;
            match Connection::open_once(endpoint, &attempt, notifications).await {
                Err(e) if server_vanished(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "server went away during the handshake; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                // The connect error names the configured timeout, not what
                // was left of it for this attempt.
                Err(Error::Connect {
                    endpoint,
                    attempts,
                    source,
                    ..
                }) => {
                    return Err(Error::Connect {
                        endpoint,
                        timeout: options.connect.timeout,
                        attempts,
                        source,
                    })
                }
                outcome => return outcome,
            }
        }
    }

    async fn open_once(
        endpoint: &Endpoint,
        options: &ClientOptions,
        notifications: &Arc<Queue>,
    ) -> Result<Connection> {
        let connected = transport::connect(endpoint, &options.connect).await?;
        check_server_pid(endpoint, options.expect_server_pid, &connected.server)?;
        super::identity::check(
            endpoint,
            &options.server_identity,
            &connected.stream,
            &connected.server,
        )?;
        let io = transport::client_io(connected.stream);
        Connection::start(
            io,
            connected.server,
            connected.stats,
            options,
            notifications,
        )
        .await
    }

    /// Performs the handshake over a stream the caller connected, within
    /// the connect timeout (a connector's time included). No identity check
    /// applies: the caller vouches for the stream.
    pub(super) async fn open_io(
        connector: &Connector,
        options: &ClientOptions,
        notifications: &Arc<Queue>,
    ) -> Result<Connection> {
        let timeout = options.connect.timeout;
        let opening = async {
            let io = connector().await?;
            let (peer, stats) = (PeerInfo::new(), ConnectStats::default());
            Connection::start(io, peer, stats, options, notifications).await
        };
        tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or(Err(Error::Timeout(timeout, "connecting over the stream")))
    }

    /// The handshake and the reader and writer tasks, over a connected
    /// stream. The whole handshake (ours written, the server's HELLO, its
    /// HELLO reply) has one deadline, `handshake_timeout` from now: a
    /// server dribbling its HELLOs cannot stretch it step by step.
    ///
    /// Our HELLO goes out first, without waiting for the server's
    /// (PROTOCOL.md, revision 2.3): the server reads it as soon as it has
    /// sent its own and answers with its HELLO reply at once, so the
    /// handshake takes one round trip, where reading the server's HELLO
    /// first took one and a half (and one more wake-up on each side).
    ///
    /// With [`ClientOptions::send_first`], the connection is handed out at
    /// once, our HELLO held to leave with the first frame written (or
    /// written by the reader task as it starts): the reader task reads the
    /// server's HELLOs (within the same deadline) before anything else, and a
    /// handshake that fails there fails every request made meanwhile with
    /// the error this would have returned.
    async fn start(
        io: Generic,
        server_peer: PeerInfo,
        connect_stats: ConnectStats,
        options: &ClientOptions,
        notifications: &Arc<Queue>,
    ) -> Result<Connection> {
        let connected_at = Instant::now();
        let handshake = Handshake {
            deadline: connected_at + options.handshake_timeout,
            limit: options.handshake_timeout,
        };
        let (read, mut write) = tokio::io::split(io);
        let mut reader = FramedRead::new(
            read,
            KeepingCodec::new(FrameCodec::new(options.max_frame_len)),
        );
        // Before the server's HELLO says its maximum, a frame is held to
        // the smallest maximum a server may announce (our HELLO fits it).
        let first_codec = FrameCodec::new(SMALLEST_SERVER_MAX_FRAME_LEN);
        let hello = Frame::new(Kind::Hello, 0, client_hello_payload());
        // Sending first, our HELLO is held in the outbox, and the first
        // frame written carries it: the server finds the HELLO and the
        // first request in one read and answers both in one write (see
        // `Writer::hold`). The reader task writes it alone if nothing else
        // has by the time it starts.
        let early = options.send_first;
        let (pending, held) = match early {
            true => (Arc::new(Pending::default()), Some(hello)),
            false => {
                let sent = write_frame(&mut write, first_codec, hello);
                let sent = handshake.step("sending the client's HELLO", sent).await;
                let greeting = greet(&mut reader, &handshake, sent).await?;
                log_connected(&greeting, &connect_stats);
                (Arc::new(Pending::greeted(greeting)), None)
            }
        };
        pending.expect_calls_within(options.request_timeout);
        let max = pending
            .greeting()
            .map_or(SMALLEST_SERVER_MAX_FRAME_LEN, |greeting| {
                greeting.server.max_frame_len
            });
        // No write timeout: a server that stops reading shows up as
        // requests that are not answered, which the caller bounds.
        let writer = Writer::new(write, FrameCodec::new(max), pending.clone());
        if let Some(hello) = held {
            writer.hold(hello);
        }
        let routes = Routes {
            pending: pending.clone(),
            notifications: notifications.clone(),
            writer: writer.clone(),
        };
        let reader_writer = writer.clone();
        let reader = tokio::spawn(
            async move {
                if early {
                    poll_fn(|cx| {
                        routes.writer.write_held(cx);
                        Poll::Ready(())
                    })
                    .await;
                    match greet(&mut reader, &handshake, Ok(())).await {
                        Ok(greeting) => {
                            log_connected(&greeting, &connect_stats);
                            let codec = FrameCodec::new(greeting.server.max_frame_len);
                            routes.writer.set_codec(codec);
                            routes.pending.set_greeting(greeting);
                            // A write that broke during the handshake
                            // left the connection to us: it ends now.
                            if let Some(why) = routes.writer.failure() {
                                routes.pending.fail_all(why);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the handshake failed after sending first");
                            routes.pending.fail_handshake(e);
                            reader_writer.close();
                            return;
                        }
                    }
                }
                read_frames(reader, routes).await;
                reader_writer.close();
            }
            .in_current_span(),
        );
        Ok(Connection {
            connected_at,
            server_peer,
            connect_stats,
            writer,
            pending,
            reader,
            close_timeout: options.close_timeout,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// What the server said in the handshake; `None` while the handshake
    /// goes on in the background (the client sent first).
    pub(super) fn greeting(&self) -> Option<&Greeting> {
        self.pending.greeting()
    }

    /// What the server said in the handshake, once it is read: at once
    /// unless the client sent first; the handshake's error if it failed.
    pub(super) async fn greeted(&self) -> Result<&Greeting> {
        self.pending.handshake_done().await
    }

    /// Sends a REQUEST or PING and waits for its answer.
    // Inlined so that its future is built where its caller keeps it:
    // returned from a call it is moved there (a memcpy of its state twice
    // per request, 58 instructions, callgrind).
    /// Gives up with `expiry`'s timeout once its deadline passes: the
    /// table sends the timeout to a call waiting for its answer; the rare
    /// waits before (the server's HELLO, room to send) have timers of
    /// their own.
    #[inline]
    pub(super) async fn call(
        &self,
        kind: Kind,
        payload: Bytes,
        expiry: Option<Expiry>,
    ) -> Result<Bytes, CallError> {
        match self.check_size_now(&payload) {
            Some(checked) => checked.map_err(CallError::Sent)?,
            None => Box::pin(within(expiry, self.check_size(&payload)))
                .await
                .map_err(CallError::Sent)?,
        }
        let (mut registration, answer) =
            self.pending.register(expiry).map_err(CallError::NotSent)?;
        let mut frame = Some(Frame::new(kind, registration.id, payload));
        // `Writer::send_within` written out here, so that its first try is
        // part of this future rather than a state machine of its own (60
        // instructions a call). No room before the deadline: the timeout,
        // and not sent again on another connection either.
        let sent = match poll_fn(|cx| Poll::Ready(self.writer.try_send(cx, &mut frame))).await {
            Some(sent) => sent,
            None => Box::pin(self.writer.send_when_room(frame, expiry))
                .await
                .map_err(CallError::Sent)?,
        };
        if let Err(why) = sent {
            // Boxed, as the size check's wait: rare, and kept out of every
            // call's future.
            let failed = Box::pin(within(expiry, async { Ok(self.send_failed(why).await) })).await;
            return Err(match failed {
                Ok(failed) => CallError::NotSent(failed),
                Err(timeout) => CallError::Sent(timeout),
            });
        }
        // The server runs REQUESTs and CALLs until they finish: a caller
        // that gives up tells it, so that the handler stops and its slot is
        // free. PING, STATUS and DESCRIBE are answered at once anyway.
        if kind.rules().starts {
            registration.cancel_through(&self.writer);
        }
        let answer = answer.await.unwrap_or_else(|_| Err(self.closed_error()));
        // Dropping the registration (here, or earlier if the caller gave up)
        // frees the id; a late answer then finds nobody and is discarded.
        drop(registration);
        answer.map_err(CallError::Sent)
    }

    pub(super) async fn notify(&self, payload: Bytes) -> Result<()> {
        self.check_size(&payload).await?;
        if let Some(failed) = self.pending.handshake_error() {
            return Err(failed);
        }
        if let Some(reason) = self.pending.end_reason() {
            return Err(Error::ConnectionClosed(reason));
        }
        self.send(Frame::notify(payload)).await
    }

    /// Refuses new requests, waits for the answers to those in flight,
    /// then writes what is queued and closes.
    pub(super) async fn close(&self) {
        self.pending.refuse_new(CloseReason::ClientClosed);
        self.pending.wait_idle().await;
        self.writer.close();
        self.writer.closed().await;
        self.reader.abort();
        self.pending.fail_all(CloseReason::ClientClosed);
    }

    /// Ends the connection now: requests in flight fail, nothing more is
    /// written or read.
    pub(super) fn abort(&self) {
        self.pending.refuse_new(CloseReason::ClientClosed);
        self.reader.abort();
        self.writer.abort(CloseReason::ClientClosed);
        self.pending.fail_all(CloseReason::ClientClosed);
    }

    /// Whether new requests can use this connection: it is not gone, and
    /// the server has not said GOODBYE.
    pub(super) fn is_usable(&self) -> bool {
        self.pending.accepts_requests()
    }

    async fn send(&self, frame: Frame) -> Result<()> {
        match self.writer.send(frame).await {
            Ok(()) => Ok(()),
            Err(why) => Err(self.send_failed(why).await),
        }
    }

    /// Why a frame could not be sent (`why`, as the writer says). During
    /// a handshake in the background the server may have refused us and
    /// closed, which the reader is about to read: its word wins.
    pub(super) async fn send_failed(&self, why: CloseReason) -> Error {
        if self.pending.handshake_in_progress() {
            if let Err(failed) = self.greeted().await {
                return failed;
            }
        }
        self.closed_error_or(why)
    }

    /// Refuses a payload over the server's maximum. Before the server's
    /// HELLO is read (the client sent first), a frame that fits the
    /// smallest maximum a server may announce goes out at once; a larger
    /// one waits for the HELLO (PROTOCOL.md, "Sending first": over the
    /// server's maximum it would end the connection).
    async fn check_size(&self, payload: &Bytes) -> Result<()> {
        match self.check_size_now(payload) {
            Some(checked) => checked,
            None => fits(payload, self.greeted().await?.server.max_frame_len),
        }
    }

    /// [`Connection::check_size`] if it can be made without waiting:
    /// always once the server's HELLO is read, and before it for a frame
    /// small enough for any server. A request's future calls this first
    /// and awaits the rest only when it must (boxed), so that its state,
    /// moved at every call, does not carry that wait.
    fn check_size_now(&self, payload: &Bytes) -> Option<Result<()>> {
        match self.greeting() {
            Some(greeting) => Some(fits(payload, greeting.server.max_frame_len)),
            None if payload.len() + HEADER_LEN <= SMALLEST_SERVER_MAX_FRAME_LEN as usize => {
                Some(Ok(()))
            }
            None => None,
        }
    }

    fn closed_error(&self) -> Error {
        self.closed_error_or(CloseReason::Lost)
    }

    /// Why the connection is closed: what the reader or writer saw first,
    /// else `why`.
    pub(super) fn closed_error_or(&self, why: CloseReason) -> Error {
        if let Some(failed) = self.pending.handshake_error() {
            return failed;
        }
        Error::ConnectionClosed(self.pending.closed_reason().unwrap_or(why))
    }
}

/// The frame kinds this client accepts from a server (PROTOCOL.md,
/// "Handshake": 1 3 4 5 6 8 13 14): every kind a server may send, from
/// the kinds' table.
pub(super) fn accepted_from_server() -> KindSet {
    let kinds: Vec<u8> = KINDS
        .iter()
        .filter(|kind| kind.rules().from_server())
        .map(|kind| kind.to_u8())
        .collect();
    KindSet::from_bytes(&kinds)
}

/// This client's HELLO (version 2, and the kinds it accepts), encoded
/// once: the same bytes open every connection.
fn client_hello_payload() -> Bytes {
    static PAYLOAD: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let encode = || {
        let mut hello = ClientHello::new();
        hello.kinds = Some(accepted_from_server());
        hello.encode()
    };
    PAYLOAD.get_or_init(encode).clone()
}

/// Writes `frame` alone (the client's HELLO, before the writer exists),
/// and flushes it: no frame writer (and its 8 KiB buffer) for one frame.
async fn write_frame<W: AsyncWrite + Unpin>(
    write: &mut W,
    mut codec: FrameCodec,
    frame: Frame,
) -> Result<()> {
    let mut bytes = BytesMut::new();
    codec.encode(frame, &mut bytes).map_err(into_error)?;
    write.write_all(&bytes).await?;
    write.flush().await?;
    Ok(())
}

/// Reads the server's HELLO and HELLO reply, our HELLO `sent` (or not:
/// then the server's refusal, if it sent one, is the error), and readies
/// `reader` for the connection's frames.
async fn greet<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, KeepingCodec>,
    handshake: &Handshake,
    sent: Result<()>,
) -> Result<Greeting> {
    let hello = read_server_hello(reader);
    let server = match handshake
        .step("waiting for the server's HELLO", hello)
        .await
    {
        // A server that refused us (ERROR or GOODBYE in place of its
        // HELLO) may have closed before our HELLO reached it: its
        // refusal, still readable, says more than the failed write.
        Err(refused @ Error::ConnectionClosed(_)) if sent.is_err() => return Err(refused),
        Err(e) => return Err(sent.err().unwrap_or(e)),
        Ok(server) => {
            sent?;
            server
        }
    };
    let reply = read_hello_reply(reader, &server);
    let reply = handshake
        .step("waiting for the server's HELLO reply", reply)
        .await?;
    // From here on the server's frames are of the connection's version
    // (revision 2.2: ITEM and CREDIT, which this client's HELLO listed).
    let codec_in = reader.decoder().codec.with_version(reply.version);
    reader.decoder_mut().codec = codec_in;
    Ok(Greeting { server, reply })
}

fn log_connected(greeting: &Greeting, stats: &ConnectStats) {
    tracing::debug!(
        server = %greeting.server.server_name,
        version = greeting.reply.version,
        ?stats,
        "connected"
    );
}

/// The one deadline of a connection's handshake.
#[derive(Clone, Copy)]
struct Handshake {
    deadline: Instant,
    /// The configured `handshake_timeout`, which a timeout names.
    limit: Duration,
}

impl Handshake {
    /// `step` of the handshake, within its deadline; past it, a timeout
    /// naming `what` was waited for.
    async fn step<T>(
        &self,
        what: &'static str,
        step: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout_at(self.deadline, step)
            .await
            .unwrap_or(Err(Error::Timeout(self.limit, what)))
    }
}

/// How a call failed: before its frame was queued (so the server cannot
/// have seen it, and it may safely be sent elsewhere) or after.
#[derive(Debug)]
pub(super) enum CallError {
    NotSent(Error),
    Sent(Error),
}

impl From<CallError> for Error {
    fn from(err: CallError) -> Error {
        match err {
            CallError::NotSent(e) | CallError::Sent(e) => e,
        }
    }
}

/// Whether `err` says the server went away before answering the handshake.
fn server_vanished(err: &Error) -> bool {
    match err {
        Error::ConnectionClosed(
            CloseReason::EofDuringHandshake | CloseReason::Reset(_) | CloseReason::Goodbye(_),
        ) => true,
        Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Refuses a server process other than the expected one.
fn check_server_pid(endpoint: &Endpoint, expected: Option<u32>, server: &PeerInfo) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match server.pid {
        Some(pid) if pid == expected => Ok(()),
        found => Err(Error::WrongServer {
            endpoint: endpoint.to_string(),
            expected: format!("pid {expected}"),
            found: found.map_or("unknown (the OS did not say)".into(), |pid| {
                format!("pid {pid}")
            }),
        }),
    }
}

/// Reads the server's first frame: its HELLO, or an ERROR explaining why
/// it will not serve us.
async fn read_server_hello<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, KeepingCodec>,
) -> Result<ServerHello> {
    let frame = match reader.next().await {
        None => return Err(Error::ConnectionClosed(CloseReason::EofDuringHandshake)),
        Some(frame) => frame.map_err(into_error)?,
    };
    match frame.kind {
        Kind::Hello => {
            let hello = ServerHello::decode(&frame.payload)
                .map_err(|e| Error::Protocol(format!("server HELLO refused: {e}")))?;
            // Frames from the server are bounded by what it announced, and
            // by what this client accepts.
            let max = hello
                .max_frame_len
                .min(reader.decoder().codec.max_frame_len());
            if (max as usize) < HEADER_LEN {
                return Err(Error::Protocol(format!(
                    "server announced a maximum frame length of {max}"
                )));
            }
            reader.decoder_mut().codec = FrameCodec::new(max);
            Ok(hello)
        }
        _ => Err(refusal(frame, "HELLO")),
    }
}

/// What a frame other than the HELLO expected during the handshake says:
/// an ERROR or GOODBYE is the server refusing the client, anything else
/// breaks the protocol.
fn refusal(frame: Frame, expected: &str) -> Error {
    match frame.kind {
        Kind::Error => match ErrorPayload::decode(&frame.payload) {
            Some(error) => Error::ConnectionClosed(CloseReason::ServerError {
                code: error.code,
                message: error.message,
            }),
            None => Error::Protocol("ERROR frame without a code".into()),
        },
        Kind::Goodbye => Error::ConnectionClosed(CloseReason::Goodbye(
            String::from_utf8_lossy(&frame.payload).into_owned(),
        )),
        other => Error::Protocol(format!("expected {expected}, got {other:?}")),
    }
}

/// Reads the server's second HELLO, which says it speaks version 2. A
/// server of version 1 answers our HELLO with ERROR `unsupported version`
/// instead: it is too old for this client.
async fn read_hello_reply<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, KeepingCodec>,
    server: &ServerHello,
) -> Result<HelloReply> {
    let frame = match reader.next().await {
        None => return Err(Error::ConnectionClosed(CloseReason::EofDuringHandshake)),
        Some(frame) => frame.map_err(into_error)?,
    };
    match frame.kind {
        Kind::Hello => {
            let reply = HelloReply::decode(&frame.payload)
                .map_err(|e| Error::Protocol(format!("server HELLO reply refused: {e}")))?;
            if reply.version != PROTOCOL_VERSION {
                return Err(Error::Protocol(format!(
                    "the server chose protocol version {}, but this client asked for {PROTOCOL_VERSION}",
                    reply.version
                )));
            }
            Ok(reply)
        }
        Kind::Error => match ErrorPayload::decode(&frame.payload) {
            Some(error) if error.code == ErrorCode::UNSUPPORTED_VERSION => {
                Err(Error::ServerTooOld {
                    server: server.server_name.clone(),
                    message: error.message,
                })
            }
            _ => Err(refusal(frame, "the server's HELLO reply")),
        },
        _ => Err(refusal(frame, "the server's HELLO reply")),
    }
}

fn into_error(err: CodecError) -> Error {
    match err {
        CodecError::Io(e) => Error::Io(e),
        other => Error::Protocol(other.to_string()),
    }
}

/// Whether `payload` fits a frame of the server's `max_frame_len`.
fn fits(payload: &Bytes, max_frame_len: u32) -> Result<()> {
    let max = max_frame_len as usize - HEADER_LEN;
    if payload.len() > max {
        return Err(Error::PayloadTooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(())
}
