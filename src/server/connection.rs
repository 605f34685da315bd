//! One client connection: handshake, request loop, orderly close.
//!
//! A connection is one task. It reads frames, runs their handlers (see
//! [`super::in_flight`]) and, once nothing more can be done without
//! waiting, writes every frame that is ready in one write. Under load many
//! answers share one system call; an answer is never held back waiting
//! for input that has not arrived.

use std::future::{poll_fn, Future};
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::in_flight::{call_handler, panic_message, InFlight};
use super::stats::Tally;
use super::{lock, Config, Context, Handler, Shared};
use crate::frame_io::{timed_out, Outbox, OUTBOUND_QUEUE};
use crate::protocol::{
    ClientHello, DecodeError, ErrorCode, Frame, FrameCodec, Kind, ServerHello, PROTOCOL_VERSION,
};
use crate::transport::{close_within, disconnect, PeerInfo, ServerStream};

/// A read buffer larger than this is given back once it is empty.
const READ_BUFFER_KEEP: usize = 64 * 1024;

/// The size of a read buffer made again after a large frame (`FramedRead`'s
/// own initial size).
const READ_BUFFER_START: usize = 8 * 1024;

/// Longest wait for the last frames to reach a client that is being closed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the request loop ended.
#[derive(Debug)]
enum End {
    /// The server is shutting down.
    Shutdown,
    /// The client closed its end.
    PeerClosed,
    /// Reading or writing failed; the client is gone.
    PeerGone,
    /// The client broke the protocol: report it, then close.
    Protocol(ErrorCode, String),
}

pub(super) struct Connection<H> {
    pub(super) id: u64,
    pub(super) peer: PeerInfo,
    pub(super) config: Arc<Config>,
    pub(super) handler: Arc<H>,
    pub(super) shared: Arc<Shared>,
}

impl<H: Handler> Connection<H> {
    pub(super) async fn run(self, stream: ServerStream) {
        tracing::debug!("connected");
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let ctx = Context::new(self.id, self.peer, outbound, self.config.max_payload());
        let mut wire = Wire::new(stream, &self.config, queue, self.shared.clone());

        let end = self.session(&mut wire, &ctx).await;
        lock(&self.shared.connections).remove(&self.id);
        match &end {
            End::Protocol(code, message) => {
                tracing::warn!(%code, message, "closing connection: protocol error")
            }
            other => tracing::debug!(end = ?other, "closing connection"),
        }
        drop(ctx);
        if matches!(end, End::PeerGone) {
            wire.publish();
            disconnect(wire.stream());
        } else {
            wire.close().await;
        }
        tracing::debug!("disconnected");
    }

    async fn session(&self, wire: &mut Wire, ctx: &Context) -> End {
        let hello = ServerHello {
            version: PROTOCOL_VERSION,
            max_frame_len: self.config.max_frame_len,
            server_name: self.config.name.clone(),
        };
        wire.push(Frame::new(Kind::Hello, 0, hello.encode()));
        if let Err(e) = wire.flush().await {
            tracing::debug!(error = %e, "cannot send HELLO");
            return End::PeerGone;
        }
        match self.handshake(wire).await {
            Ok(()) => {
                lock(&self.shared.connections).insert(self.id, ctx.clone());
                self.serve_requests(wire, ctx).await
            }
            Err(end) => {
                report(wire, &end);
                end
            }
        }
    }

    /// Waits for the client's HELLO and checks it.
    async fn handshake(&self, wire: &mut Wire) -> Result<(), End> {
        let timeout = self.config.handshake_timeout;
        let first = tokio::select! {
            first = tokio::time::timeout(timeout, wire.reader.next()) => first,
            _ = self.shared.shutdown.cancelled() => return Err(End::Shutdown),
        };
        let frame = match first {
            Err(_) => {
                return Err(End::Protocol(
                    ErrorCode::TIMED_OUT,
                    format!("no HELLO within {timeout:?}"),
                ))
            }
            Ok(None) => return Err(End::PeerClosed),
            Ok(Some(Err(e))) => return Err(decode_failed(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        wire.tally.bytes_in += frame.wire_len() as u64;
        if frame.kind != Kind::Hello {
            return Err(End::Protocol(
                ErrorCode::UNEXPECTED_FRAME,
                format!("expected HELLO, got {:?}", frame.kind),
            ));
        }
        ClientHello::decode(&frame.payload)
            .map(drop)
            .map_err(|e| End::Protocol(e.code(), e.to_string()))
    }

    /// Reads frames and dispatches them until the client leaves, breaks the
    /// protocol, or the server shuts down; then settles in-flight requests.
    async fn serve_requests(&self, wire: &mut Wire, ctx: &Context) -> End {
        let mut in_flight = InFlight::new(self.config.max_in_flight);
        let mut state = State::new(&self.shared, &self.config);
        // Nothing is read until the handler has greeted the client.
        state.chore = Some(chore(self.handler.on_connect(ctx.clone())));
        let mut ending = None;
        let end = loop {
            let event = poll_fn(|cx| wire.poll_event(cx, &mut in_flight, &mut state)).await;
            let frame = match event {
                Event::Read(Some(Ok(frame))) => frame,
                Event::Read(None) => {
                    // The client has sent all it will; it still reads.
                    ending.get_or_insert(End::PeerClosed);
                    state.settling = true;
                    continue;
                }
                Event::Read(Some(Err(e))) => break decode_failed(e),
                Event::WriteFailed(e) => {
                    tracing::debug!(error = %e, "write failed; cutting the client off");
                    break End::PeerGone;
                }
                Event::Shutdown => {
                    // GOODBYE goes out before the last answers.
                    if ending.is_none() {
                        report(wire, &End::Shutdown);
                    }
                    ending.get_or_insert(End::Shutdown);
                    state.settle_by(self.config.shutdown_timeout);
                    continue;
                }
                Event::Deadline => {
                    tracing::warn!("shutdown deadline passed; cancelling requests");
                    for answer in in_flight.cancel() {
                        wire.tally.requests += 1;
                        wire.push(answer);
                    }
                    continue;
                }
                Event::Idle(idle) => {
                    break End::Protocol(
                        ErrorCode::TIMED_OUT,
                        format!("no frame for {idle:?} with no request in flight"),
                    )
                }
                Event::Settled => break ending.take().unwrap_or(End::PeerClosed),
            };
            if frame.id == 0 && matches!(frame.kind, Kind::Request | Kind::Ping | Kind::Status) {
                // Its answer would carry id 0, which means "the connection".
                break End::Protocol(
                    ErrorCode::MALFORMED_FRAME,
                    format!("a {:?} needs an id other than 0", frame.kind),
                );
            }
            match frame.kind {
                Kind::Request => {
                    let call = call_handler(&*self.handler, frame.id, frame.payload, ctx.clone());
                    if let Err(id) = in_flight.start(frame.id, call) {
                        break End::Protocol(
                            ErrorCode::DUPLICATE_ID,
                            format!("request id {id} is already in flight"),
                        );
                    }
                }
                Kind::Ping => wire.push(Frame::new(Kind::Pong, frame.id, frame.payload)),
                Kind::Status => wire.push(Frame::response(frame.id, self.shared.status().encode())),
                Kind::Notify => {
                    // Notifications are handled one at a time, in order.
                    let notified = self.handler.on_notify(frame.payload, ctx.clone());
                    state.chore = Some(chore(notified));
                }
                other => {
                    break End::Protocol(
                        ErrorCode::UNEXPECTED_FRAME,
                        format!("a client may not send {other:?} after the handshake"),
                    )
                }
            }
        };
        if matches!(end, End::Protocol(..)) {
            // The connection is unusable: the error report is the last frame.
            in_flight.abort();
            report(wire, &end);
        }
        end
    }
}

type Reader = FramedRead<ServerStream, FrameCodec>;

/// A handler's `on_connect` or `on_notify`, running; reading waits for it.
type Chore<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn chore<'a>(work: impl Future<Output = ()> + Send + 'a) -> Chore<'a> {
    Box::pin(AssertUnwindSafe(work).catch_unwind().map(|done| {
        if let Err(panic) = done {
            tracing::error!(panic = panic_message(&panic), "handler panicked");
        }
    }))
}

/// What the request loop must act on.
enum Event {
    /// A frame from the client, the end of its stream, or a read error.
    Read(Option<Result<Frame, DecodeError>>),
    /// The client stopped taking what is written, or the write failed.
    WriteFailed(io::Error),
    /// The server is shutting down.
    Shutdown,
    /// The shutdown deadline passed with requests still running.
    Deadline,
    /// Nothing was read for this long, with no request in flight.
    Idle(Duration),
    /// Settling, and every request is answered.
    Settled,
}

/// The request loop's timers and phase.
struct State<'a> {
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// No more frames are read: the loop ends once requests are answered.
    settling: bool,
    chore: Option<Chore<'a>>,
    idle: Option<Idle>,
}

/// The idle timeout: armed for the last read plus the timeout.
struct Idle {
    timeout: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<'a> State<'a> {
    fn new(shared: &Shared, config: &Config) -> State<'a> {
        State {
            shutdown: Some(Box::pin(shared.shutdown.clone().cancelled_owned())),
            deadline: None,
            settling: false,
            chore: None,
            idle: config.idle_timeout.map(|timeout| Idle {
                timeout,
                last_read: Instant::now(),
                timer: Box::pin(tokio::time::sleep(timeout)),
            }),
        }
    }

    /// Stop reading; requests get `timeout` more, then are cancelled.
    fn settle_by(&mut self, timeout: Duration) {
        self.settling = true;
        self.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
    }

    fn poll_shutdown(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        poll_once(&mut self.shutdown, cx).map(|()| Event::Shutdown)
    }

    fn poll_deadline(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        poll_once(&mut self.deadline, cx).map(|()| Event::Deadline)
    }

    /// Runs the chore, if any; ready once there is none.
    fn poll_chore(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        match self.chore {
            None => Poll::Ready(()),
            Some(_) => poll_once(&mut self.chore, cx),
        }
    }

    fn poll_idle(&mut self, cx: &mut TaskContext<'_>, busy: bool) -> Poll<Event> {
        let Some(idle) = &mut self.idle else {
            return Poll::Pending;
        };
        loop {
            ready!(idle.timer.as_mut().poll(cx));
            let quiet_until = idle.last_read + idle.timeout;
            let now = Instant::now();
            if !busy && now >= quiet_until {
                return Poll::Ready(Event::Idle(idle.timeout));
            }
            let next = if busy {
                now + idle.timeout
            } else {
                quiet_until
            };
            idle.timer.as_mut().reset(next);
        }
    }

    fn read_happened(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.last_read = Instant::now();
        }
    }
}

/// Polls the future in `slot`, if there is one; when it completes, empties
/// the slot and is ready, once.
fn poll_once<F: Future + ?Sized>(
    slot: &mut Option<Pin<Box<F>>>,
    cx: &mut TaskContext<'_>,
) -> Poll<()> {
    let Some(future) = slot else {
        return Poll::Pending;
    };
    ready!(future.as_mut().poll(cx));
    *slot = None;
    Poll::Ready(())
}

/// The connection's stream, what waits to be written to it, and the queue
/// of frames from handlers and broadcasts.
struct Wire {
    reader: Reader,
    outbox: Outbox,
    queue: mpsc::Receiver<Frame>,
    write_timeout: Duration,
    /// Armed while a write waits for the client; pushed back whenever the
    /// client takes some bytes.
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// What this connection did since it last reported to the server.
    tally: Tally,
    shared: Arc<Shared>,
}

impl Wire {
    fn new(
        stream: ServerStream,
        config: &Config,
        queue: mpsc::Receiver<Frame>,
        shared: Arc<Shared>,
    ) -> Wire {
        let codec = FrameCodec::new(config.max_frame_len);
        Wire {
            reader: FramedRead::new(stream, codec),
            outbox: Outbox::new(codec),
            queue,
            write_timeout: config.write_timeout,
            write_deadline: None,
            tally: Tally::default(),
            shared,
        }
    }

    fn stream(&self) -> &ServerStream {
        self.reader.get_ref()
    }

    /// Adds this connection's counts to the server's.
    fn publish(&mut self) {
        self.shared.stats.publish(&mut self.tally);
    }

    /// Queues `frame` for the next write.
    fn push(&mut self, frame: Frame) {
        self.tally.sent(&frame, &self.shared.stats);
        if let Err(e) = self.outbox.push(frame) {
            // Answers and notifications are checked against the limit
            // before they get here.
            tracing::error!(error = %e, "dropping a frame over the limit");
        }
    }

    /// The next event, doing meanwhile everything that needs no waiting:
    /// running handlers, queuing their answers and the frames handed to
    /// the connection, and writing once nothing else is ready.
    fn poll_event<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) -> Poll<Event> {
        if let Poll::Ready(event) = state.poll_shutdown(cx) {
            return Poll::Ready(event);
        }
        if let Poll::Ready(event) = state.poll_deadline(cx) {
            return Poll::Ready(event);
        }
        loop {
            // Collect what is ready to go while the outbox has room; a full
            // outbox holds everything back until the client reads.
            while self.outbox.has_room() {
                if let Poll::Ready(Some(answer)) = in_flight.poll_answer(cx) {
                    self.tally.requests += 1;
                    self.push(answer);
                } else if let Poll::Ready(Some(frame)) = self.queue.poll_recv(cx) {
                    self.push(frame);
                } else {
                    break;
                }
            }
            let chore_done = state.poll_chore(cx).is_ready();
            if state.settling && chore_done && in_flight.is_empty() {
                return Poll::Ready(Event::Settled);
            }
            // With nothing left in the read buffer, reading again is a
            // system call that most likely finds nothing yet: write first,
            // so that the answers do not wait for it.
            let answers_first = self.reader.read_buffer().is_empty() && !self.outbox.is_empty();
            let can_read = chore_done && !state.settling && in_flight.has_room();
            if can_read && self.outbox.has_room() && !answers_first {
                if let Poll::Ready(frame) = self.reader.poll_next_unpin(cx) {
                    if let Some(Ok(frame)) = &frame {
                        self.tally.bytes_in += frame.wire_len() as u64;
                    }
                    state.read_happened();
                    return Poll::Ready(Event::Read(frame));
                }
            }
            if self.outbox.is_empty() {
                break;
            }
            // Counted before the client can see the answers: a STATUS it
            // sends next includes them.
            self.publish();
            match self.poll_write(cx) {
                // Room again: take more before waiting.
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Event::WriteFailed(e)),
                Poll::Pending => break,
            }
        }
        // About to wait: a good moment to report the counts, and to give
        // back a read buffer that a large frame grew.
        self.publish();
        self.trim_read_buffer();
        state.poll_idle(cx, !in_flight.is_empty())
    }

    /// Replaces an empty read buffer grown past [`READ_BUFFER_KEEP`] (by a
    /// large frame) with a small one: a connection keeps what its usual
    /// traffic needs, not the most it ever received.
    fn trim_read_buffer(&mut self) {
        let buffer = self.reader.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > READ_BUFFER_KEEP {
            *buffer = BytesMut::with_capacity(READ_BUFFER_START);
        }
    }

    /// Writes what the outbox holds. Fails if the client takes nothing for
    /// the write timeout.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let before = self.outbox.len();
        let stream = Pin::new(self.reader.get_mut());
        if let Poll::Ready(written) = self.outbox.poll_write_to(stream, cx) {
            self.write_deadline = None;
            return Poll::Ready(written);
        }
        let timeout = self.write_timeout;
        let deadline = self
            .write_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if self.outbox.len() < before {
            deadline.as_mut().reset(Instant::now() + timeout);
        }
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(timed_out(timeout)))
    }

    async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Writes the last frames (what is queued included), then closes;
    /// a client that does not take them in time is cut off.
    async fn close(mut self) {
        self.queue.close();
        while let Ok(frame) = self.queue.try_recv() {
            self.push(frame);
        }
        self.publish();
        let written = self.flush().await;
        let stream = self.reader.into_inner();
        match written {
            Ok(()) => close_within(stream, FLUSH_TIMEOUT).await,
            Err(e) => {
                tracing::debug!(error = %e, "write failed; cutting the client off");
                disconnect(&stream);
            }
        }
    }
}

/// Queues the frame that tells the client why the connection ends, if any.
fn report(wire: &mut Wire, end: &End) {
    let frame = match end {
        End::Shutdown => Frame::goodbye("the server is shutting down"),
        End::Protocol(code, message) => Frame::error(0, *code, message),
        End::PeerClosed | End::PeerGone => return,
    };
    wire.push(frame);
}

fn decode_failed(err: DecodeError) -> End {
    match err.code() {
        Some(code) => End::Protocol(code, err.to_string()),
        None => {
            tracing::debug!(error = %err, "read failed");
            End::PeerGone
        }
    }
}

/// Sends `refusal` (an ERROR with id 0) instead of HELLO, and closes.
pub(super) async fn refuse(stream: ServerStream, config: Arc<Config>, refusal: Frame) {
    let mut sink = FramedWrite::new(stream, FrameCodec::new(config.max_frame_len));
    let sent = tokio::time::timeout(FLUSH_TIMEOUT, sink.send(refusal)).await;
    let stream = sink.into_inner();
    match sent {
        Ok(Ok(())) => close_within(stream, FLUSH_TIMEOUT).await,
        _ => disconnect(&stream),
    }
}
