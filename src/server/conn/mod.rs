//! One client connection: handshake, request loop, orderly close.
//!
//! A connection is one task. Each turn of its loop gathers every frame that
//! is ready (what handlers queued, then their answers), writes them in one
//! write, and reads the next frame: reading never waits for writing, nor
//! writing for input. Under load many answers share one system call. The
//! turns, and the handler polls in each, are bounded, so that the task
//! yields to the runtime however busy its handlers are. Output is bounded
//! in bytes (`max_output_bytes` for NOTIFYs, 64 KiB of the connection's own
//! answers) and in time (the write timeout is a deadline to drain what is
//! queued); every REQUEST gets exactly one answer.
//!
//! The parts, as hyper's `proto/h1` splits its connection:
//!
//! - this file: the connection's life (handshake, who the client is, the
//!   request loop and what ends it, the close);
//! - `turn.rs`: one turn of the event loop ([`Link`]: gather, write, read);
//! - `wire.rs`: the I/O (reading frames, the outbox, the write deadline);
//! - `pushed.rs`: the NOTIFYs handlers and broadcasts push, and their room;
//! - `dispatch.rs`: what each frame the client sends does;
//! - `state.rs`: the loop's phase, timers and waiting requests;
//! - `signals.rs`: the shutdown and too-slow cancellations it listens for.

mod dispatch;
mod pushed;
mod signals;
mod state;
mod turn;
mod wire;

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_util::codec::FramedWrite;

use super::connection_context::OutputLimit;
use super::fair_share::Users;
use super::in_flight::{run_request, InFlight, Limit};
use super::{lock, Config, ConnectionContext, Handler, Refusal, Shared, Who};
use crate::log_limit::limited;
use crate::protocol::{negotiate, ClientHello, CodecError, ErrorCode, Frame, FrameCodec, Kind};
use crate::protocol::{HelloReply, ServerHello};
use crate::transport::{Caller, ServerIo};
use dispatch::Start;
use state::{chore, Phase, State};
use turn::{Event, Link};
use wire::fit;

/// Longest wait for the last frames to reach a client that is being closed
/// (and for it to take its end: see `ServerIo::close_within`).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The reason a client too slow for what it is sent gets.
const TOO_SLOW_MESSAGE: &str = "the client did not keep up with the notifications sent to it: \
     more than the server's max_output_bytes were waiting for it, and were dropped";

/// Why the request loop ended.
#[derive(Debug)]
enum End {
    /// The server is shutting down.
    Shutdown,
    /// The client closed its end.
    PeerClosed,
    /// Reading or writing failed; the client is gone.
    PeerGone,
    /// The client closed its end for good: the stream is shut both ways
    /// (on a pipe, closed), so that nothing written would be read and
    /// nothing more arrives. The stream is dropped at once: no last
    /// write, no shut down, no drain.
    PeerLeft,
    /// A broadcast found the client's output full: it is cut off, told
    /// why (ERROR `too slow`) ahead of the NOTIFYs it had not taken.
    TooSlow,
    /// The client broke the protocol: report it, then close.
    Protocol(ErrorCode, String),
    /// The access policy refused the client (Windows, once its token was
    /// read): ERROR `not allowed` with this message, then close.
    Refused(String),
    /// The client's user holds its limit of connections (Windows, once
    /// its token was read): ERROR `overloaded` with this message, then
    /// close.
    UserLimit(String),
}

/// What the request loop does after an event.
enum Flow<'a> {
    /// Goes on with the next event.
    Next,
    /// Starts this request, then goes on.
    Start(Start<'a>),
    /// Ends the loop.
    End(End),
}

pub(super) struct Connection<H> {
    pub(super) id: u64,
    pub(super) who: Who,
    /// The connections each user holds (for a user known only later).
    pub(super) users: Arc<Users>,
    pub(super) config: Arc<Config>,
    pub(super) handler: Arc<H>,
    pub(super) shared: Arc<Shared>,
}

impl<H: Handler> Connection<H> {
    pub(super) async fn run<S: ServerIo>(self, stream: S) {
        tracing::debug!("connected");
        let output = Arc::new(OutputLimit::new(self.config.max_output_bytes));
        let mut link = Link::new(stream, &self.config, output, self.shared.clone());

        let (end, ctx) = self.session(&mut link).await;
        self.forget();
        match &end {
            End::Protocol(code, message) => {
                limited!(warn, %code, message, "closing connection: protocol error")
            }
            End::Refused(_) | End::UserLimit(_) => {
                tracing::debug!("closing a refused connection")
            }
            End::TooSlow => limited!(
                warn,
                "disconnecting a client too slow for broadcasts: its output was full"
            ),
            other => tracing::debug!(end = ?other, "closing connection"),
        }
        // Handlers waiting for room to notify learn that the client is gone.
        link.pushed.output.room.close();
        // Boxed: the close's timers and drain are the largest state the
        // connection's future would keep, and every idle connection would
        // carry their room (1,976 bytes) for the one moment they are used.
        match end {
            End::PeerLeft => link.drop_stream(),
            End::PeerGone => Box::pin(link.cut()).await,
            _ => Box::pin(link.close()).await,
        }
        tracing::debug!("disconnected");
        if let Some(ctx) = ctx {
            ctx.mark_closed();
            // A panic in it is caught and logged, as `on_connect`'s.
            chore(self.handler.on_disconnect(ctx)).await;
        }
    }

    /// The connection is no longer counted nor reached by broadcasts (nor
    /// by `ServerHandle::send_to`), and whoever waits on its context's
    /// `closed` learns that it ended.
    fn forget(&self) {
        let ctx = lock(&self.shared.connections).remove(&self.id);
        if let Some(ctx) = ctx {
            ctx.mark_closed();
        }
    }

    /// The handshake, who the client is, and its requests; the context
    /// handlers saw, if the client got that far.
    async fn session<S: ServerIo>(&self, link: &mut Link<S>) -> (End, Option<ConnectionContext>) {
        let hello = self.config.hello.get_or_init(|| {
            ServerHello::new(self.config.max_frame_len, self.config.name.clone()).encode()
        });
        link.push(Frame::new(Kind::Hello, 0, hello.clone()));
        // A client of revision 2.3 may have sent its HELLO without waiting
        // for ours: if it is here already, our HELLO goes out with what
        // answers it (the HELLO reply), in one write. Otherwise ours goes
        // out now, and the client's is waited for.
        let early = link.wire.input.next().now_or_never();
        // Only a whole frame waits for the reply; anything else (nothing yet,
        // a read error, the end of input) finds our HELLO sent first, as
        // every server sends it whatever it has received.
        if !matches!(early, Some(Some(Ok(_)))) {
            if let Err(e) = link.flush().await {
                tracing::debug!(error = %e, "cannot send HELLO");
                return (End::PeerGone, None);
            }
        }
        let admitted = match self.handshake(link, early).await {
            Ok(hello) => self.caller(link).await.map(|caller| (hello, caller)),
            Err(end) => Err(end),
        };
        let ((version, takes_items), caller) = match admitted {
            Ok(admitted) => admitted,
            Err(end) => {
                report(link, &end);
                return (end, None);
            }
        };
        // A user known only now (Windows) is counted now, for as long as
        // the session lasts.
        let _user = match self.who {
            Who::Known(_) => None,
            Who::Later(_) => match self.users.admit(&caller) {
                Some(slot) => Some(slot),
                None => {
                    limited!(warn, "refusing connection: the user holds its limit");
                    let end = End::UserLimit(self.users.refusal());
                    report(link, &end);
                    return (end, None);
                }
            },
        };
        let output = link.pushed.output.clone();
        let max_payload = self.config.max_payload();
        let ctx = ConnectionContext::new(
            self.id,
            caller,
            output,
            max_payload,
            self.config.access.clone(),
            self.config.input_budget.clone(),
            self.config
                .calls
                .as_ref()
                .and_then(|calls| calls.0.publisher().cloned()),
        );
        if version >= 2 {
            // Before any other frame, on_connect's NOTIFYs included.
            link.push(Frame::new(
                Kind::Hello,
                0,
                hello_reply(&self.config, version),
            ));
        }
        lock(&self.shared.connections).insert(self.id, ctx.clone());
        let end = self.serve_requests(link, &ctx, takes_items).await;
        (end, Some(ctx))
    }

    /// Who the client is: known at accept, or (Windows) read from its
    /// token now that it has written its HELLO, and checked against the
    /// access policy. A token that cannot be read refuses the client: the
    /// server never serves someone it could not identify.
    async fn caller<S: ServerIo>(&self, link: &mut Link<S>) -> Result<Caller, End> {
        let peer = match &self.who {
            Who::Known(caller) => return Ok(caller.clone()),
            Who::Later(peer) => *peer,
        };
        let read = tokio::time::timeout(
            self.config.handshake_timeout,
            link.stream().read_caller(peer),
        );
        let caller = tokio::select! {
            read = read => read,
            _ = self.shared.shutdown.cancelled() => return Err(End::Shutdown),
        };
        let caller = match caller {
            Ok(Ok(caller)) => caller,
            Ok(Err(e)) => {
                limited!(warn, error = %e, "refusing connection: cannot read who the client is");
                return Err(End::Refused(format!(
                    "the server cannot tell who you are ({e})"
                )));
            }
            Err(_) => {
                limited!(
                    warn,
                    "refusing connection: reading who the client is took too long"
                );
                return Err(End::Refused(
                    "the server cannot tell who you are (timed out)".into(),
                ));
            }
        };
        tracing::Span::current().record("user", tracing::field::display(UserField(&caller)));
        if let Err(refusal) = self.config.access.check(&caller) {
            log_refusal(&refusal, &caller);
            return Err(End::Refused(refusal.to_string()));
        }
        Ok(caller)
    }

    /// Waits for the client's HELLO (unless it was read already: `early`)
    /// and checks it; the connection's protocol version (the lower of the
    /// client's and ours), and whether the client takes ITEM and CREDIT (it
    /// may open streams). Frames the client sent right behind its HELLO
    /// stay in the read buffer, and are read once the handshake is done,
    /// under the server's own maximum (PROTOCOL.md, revision 2.3).
    async fn handshake<S: ServerIo>(
        &self,
        link: &mut Link<S>,
        early: Option<Option<Result<Frame, CodecError>>>,
    ) -> Result<(u16, bool), End> {
        let timeout = self.config.handshake_timeout;
        let wire = &mut link.wire;
        let first = match early {
            Some(read) => Ok(read),
            None => tokio::select! {
                first = tokio::time::timeout(timeout, wire.input.next()) => first,
                _ = self.shared.shutdown.cancelled() => return Err(End::Shutdown),
            },
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
        let hello = ClientHello::decode(&frame.payload)
            .map_err(|e| End::Protocol(e.code(), e.to_string()))?;
        let version = negotiate(hello.version);
        wire.input.handshake_done(version);
        let takes_items = version >= 2 && hello.accepts(Kind::Item) && hello.accepts(Kind::Credit);
        Ok((version, takes_items))
    }

    /// Reads frames and dispatches them until the client leaves, breaks the
    /// protocol, or the server shuts down; then settles in-flight requests.
    async fn serve_requests<S: ServerIo>(
        &self,
        link: &mut Link<S>,
        ctx: &ConnectionContext,
        takes_items: bool,
    ) -> End {
        let mut in_flight = InFlight::new(self.config.max_in_flight);
        let too_slow = link.pushed.output.too_slow.clone();
        let mut state = State::new(&self.shared, &self.config, too_slow);
        state.takes_items = takes_items;
        // Nothing is read until the handler has greeted the client.
        state.chore = Some(chore(self.handler.on_connect(ctx.clone())));
        state.greeting = true;
        let mut ending = None;
        let end = loop {
            let event = poll_fn(|cx| link.poll_event(cx, &mut in_flight, &mut state)).await;
            let flow = self.on_event(event, link, ctx, &mut in_flight, &mut state, &mut ending);
            let start = match flow {
                Flow::Next => continue,
                Flow::End(end) => break end,
                Flow::Start(start) => start,
            };
            let Start {
                id,
                work,
                ctx,
                deadline,
                held,
                stream,
            } = start;
            // No timer per request: a deadline is kept by the connection's
            // one timer for them, and the server's request timeout reaches
            // a request without one through the connection's tick. It does
            // not apply to streams; a stream's own deadline is a timer of
            // its own (one per stream, not per item), so that the items it
            // queued still go out before its ERROR `timed out`.
            state.tick.busy = true;
            let started = match stream {
                None => {
                    let limit = match deadline {
                        Some(at) => Limit::Deadline(at),
                        None if self.config.request_timeout.is_some() => {
                            Limit::Tick(state.tick.now())
                        }
                        None => Limit::None,
                    };
                    if let Some(at) = deadline {
                        state.deadlines.arm(at);
                    }
                    let request = || run_request(&*self.handler, id, work, ctx, None);
                    in_flight.start(id, request, held, limit, None)
                }
                Some(stream) => {
                    let request = || run_request(&*self.handler, id, work, ctx, deadline);
                    in_flight.start_stream(id, request, held, stream)
                }
            };
            if let Err(id) = started {
                break dispatch::duplicate(id);
            }
        };
        // Forgotten first, so that whoever sees a handler dropped also sees
        // the connection gone.
        self.forget();
        if !matches!(end, End::PeerClosed | End::Shutdown) {
            // The connection is unusable: the answers are dropped, and an
            // error report is the last frame.
            in_flight.abort();
            state.end_chore();
            for waiter in state.waiting.drain() {
                state.share.release(waiter.held);
            }
            link.held = None;
            match end {
                End::Protocol(..) => {
                    // What handlers queued came before the error.
                    link.pushed.take_into(&mut link.wire);
                    report(link, &end);
                }
                End::TooSlow => {
                    // Its backlog is dropped: the reason goes out after
                    // what the outbox holds (at most about 64 KiB and a
                    // frame), within the write timeout.
                    link.pushed.drop_backlog();
                    report(link, &end);
                }
                _ => {}
            }
        }
        end
    }

    /// What the loop does with `event`. Inlined into the loop: once it
    /// grew the stream frames' arms it was called out of line, which cost
    /// every request about 50 instructions (perf guard, bytes,1,1,64).
    #[inline]
    fn on_event<'a, S: ServerIo, F: Future<Output = (u32, Frame)>>(
        &'a self,
        event: Event,
        link: &mut Link<S>,
        ctx: &ConnectionContext,
        in_flight: &mut InFlight<F>,
        state: &mut State<'a>,
        ending: &mut Option<End>,
    ) -> Flow<'a> {
        let started = match event {
            Event::Frame(frame) => self.dispatch(frame, link, ctx, in_flight, state),
            Event::Unparked(waiter) => self.unparked(waiter, link, ctx, state),
            Event::Expired(waiter) => {
                self.expired(waiter, link, state);
                return Flow::Next;
            }
            Event::Eof => {
                if link.stream().peer_is_gone() {
                    return Flow::End(End::PeerLeft);
                }
                // A half-close: the client has sent all it will and
                // still reads. Its requests get a deadline.
                ending.get_or_insert(End::PeerClosed);
                state.phase = Phase::Settling;
                state.settle_by(self.config.shutdown_timeout, ErrorCode::TIMED_OUT);
                return Flow::Next;
            }
            Event::HungUp => {
                tracing::debug!("the client left while its connection was not read");
                return Flow::End(End::PeerLeft);
            }
            Event::ReadFailed(e) => return Flow::End(decode_failed(e)),
            Event::WriteFailed(e) => {
                tracing::debug!(error = %e, "write failed; cutting the client off");
                return Flow::End(End::PeerGone);
            }
            Event::TooSlow => return Flow::End(End::TooSlow),
            Event::Shutdown => {
                self.shutting_down(link, in_flight, state, ending);
                return Flow::Next;
            }
            Event::Deadline(code) => {
                settle_now(code, link, in_flight, state);
                return Flow::Next;
            }
            Event::Idle(idle) => {
                return Flow::End(End::Protocol(
                    ErrorCode::TIMED_OUT,
                    format!("no frame for {idle:?} with no request in flight"),
                ))
            }
            Event::Settled => return Flow::End(ending.take().unwrap_or(End::PeerClosed)),
        };
        match started {
            Ok(Some(start)) => Flow::Start(start),
            Ok(None) => Flow::Next,
            Err(end) => Flow::End(end),
        }
    }

    /// The server shuts down: GOODBYE goes out before the last answers,
    /// and the requests get the shutdown timeout.
    fn shutting_down<S: ServerIo, F: Future<Output = (u32, Frame)>>(
        &self,
        link: &mut Link<S>,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
        ending: &mut Option<End>,
    ) {
        if ending.is_none() {
            report(link, &End::Shutdown);
        }
        // Subscriptions end as GOODBYE goes out (PROTOCOL.md, "SUBSCRIBE").
        in_flight.end_subscriptions(|id| {
            let why = "the server is shutting down";
            link.wire.tally.requests += 1;
            link.wire
                .push(Frame::error(id, ErrorCode::SHUTTING_DOWN, why));
        });
        ending.get_or_insert(End::Shutdown);
        if state.phase == Phase::Serving {
            state.phase = Phase::Draining;
        }
        state.settle_by(self.config.shutdown_timeout, ErrorCode::SHUTTING_DOWN);
    }
}

/// The deadline for the last requests passed: every request still running
/// or waiting is answered ERROR `code`, and the loop settles.
fn settle_now<S: ServerIo, F: Future<Output = (u32, Frame)>>(
    code: ErrorCode,
    link: &mut Link<S>,
    in_flight: &mut InFlight<F>,
    state: &mut State<'_>,
) {
    limited!(warn, %code, "deadline passed; cancelling requests");
    let why = match code {
        ErrorCode::SHUTTING_DOWN => "the server shut down before the request finished",
        _ => "the request did not finish in time after the client's EOF",
    };
    for answer in in_flight.cancel(code, why) {
        link.wire.tally.requests += 1;
        link.push(answer);
    }
    for waiter in state.waiting.drain() {
        state.share.release(waiter.held);
        if let Some(id) = waiter.job.id() {
            link.wire.tally.requests += 1;
            link.push(Frame::error(id, code, why));
        }
    }
    // `on_connect` and `on_notify` end here too.
    state.end_chore();
    state.phase = Phase::Settling;
}

/// Queues the frame that tells the client why the connection ends, if any.
fn report<S: ServerIo>(link: &mut Link<S>, end: &End) {
    let frame = match end {
        End::Shutdown => Frame::goodbye("the server is shutting down"),
        End::Protocol(code, message) => Frame::error(0, *code, message),
        End::Refused(message) => Frame::error(0, ErrorCode::NOT_ALLOWED, message),
        End::UserLimit(message) => Frame::error(0, ErrorCode::OVERLOADED, message),
        End::TooSlow => Frame::error(0, ErrorCode::TOO_SLOW, TOO_SLOW_MESSAGE),
        End::PeerClosed | End::PeerGone | End::PeerLeft => return,
    };
    link.push(frame);
}

fn decode_failed(err: CodecError) -> End {
    match err.code() {
        Some(code) => End::Protocol(code, err.to_string()),
        None => {
            tracing::debug!(error = %err, "read failed");
            End::PeerGone
        }
    }
}

/// The HELLO reply of a connection of `version` (2 or later): the kinds
/// the server accepts at that version, and the encodings the service's
/// typed methods take (none without them).
fn hello_reply(config: &Config, version: u16) -> bytes::Bytes {
    let encode = || {
        let encodings = config.calls.as_ref().map_or(&[][..], |c| c.0.encodings());
        HelloReply::new(version, encodings).encode()
    };
    if version == crate::protocol::PROTOCOL_VERSION {
        config.hello_reply.get_or_init(encode).clone()
    } else {
        encode()
    }
}

/// Logs a refusal by the access policy with the caller's identity (the
/// connection's span adds its id and pid).
pub(super) fn log_refusal(refusal: &Refusal, caller: &Caller) {
    limited!(
        warn,
        rule = refusal.rule(),
        method = refusal.operation(),
        caller = %caller,
        "not allowed by the access policy"
    );
}

/// The `user` field of a connection's span: the Windows account (or SID).
struct UserField<'a>(&'a Caller);

impl std::fmt::Display for UserField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.account(), self.0.user_sid()) {
            (Some(account), _) => f.write_str(account),
            (None, Some(sid)) => f.write_str(sid),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// Sends `refusal` (an ERROR with id 0) instead of HELLO, and closes.
pub(super) async fn refuse<S: ServerIo>(stream: S, config: Arc<Config>, refusal: Frame) {
    let refusal = fit(refusal, config.max_payload());
    let mut sink = FramedWrite::new(stream, FrameCodec::new(config.max_frame_len));
    let sent = tokio::time::timeout(FLUSH_TIMEOUT, sink.send(refusal)).await;
    let stream = sink.into_inner();
    match sent {
        Ok(Ok(())) => stream.close_within(FLUSH_TIMEOUT).await,
        _ => stream.disconnect(),
    }
}
