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

use std::collections::VecDeque;
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
use tokio_util::codec::FramedWrite;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::budget::Share;
use super::connection_context::OutputLimit;
use super::connection_context::RequestScope;
use super::fair_share::{Throttle, Users};
use super::in_flight::{error_that_fits, panic_message, run_request, InFlight, Work};
use super::input::Input;
use super::stats::Tally;
use super::waiting::{Job, Tick, Waiter, Waiting};
use super::{lock, Config, ConnectionContext, Handler, Refusal, ServiceError, Shared, Who};
use crate::frame_io::{Outbox, COALESCE_LIMIT};
use crate::log_limit::limited;
use crate::protocol::{
    negotiate, CallHeader, ClientHello, CodecError, ErrorCode, ErrorPayload, Frame, FrameCodec,
    HelloReply, Kind, ServerHello, RESERVED_METADATA_PREFIX,
};
use crate::transport::{Caller, ServerIo};

/// A read buffer larger than this is given back once it is empty.
const READ_BUFFER_KEEP: usize = 64 * 1024;

/// The size of a read buffer made again after a large frame (`FramedRead`'s
/// own initial size).
const READ_BUFFER_START: usize = 8 * 1024;

/// Longest wait for the last frames to reach a client that is being closed
/// (and for it to take its end: see `ServerIo::close_within`).
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
    /// A broadcast found the client's output full: it is cut off.
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
        let (outbound, queue) = mpsc::unbounded_channel();
        let output = Arc::new(OutputLimit::new(self.config.max_output_bytes));
        let mut wire = Wire::new(stream, &self.config, queue, output, self.shared.clone());

        let (end, ctx) = self.session(&mut wire, outbound).await;
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
        drop(ctx);
        // Handlers waiting for room to notify learn that the client is gone.
        wire.output.room.close();
        if matches!(end, End::PeerGone | End::TooSlow) {
            wire.cut().await;
        } else {
            wire.close().await;
        }
        tracing::debug!("disconnected");
    }

    /// The connection is no longer counted nor reached by broadcasts.
    fn forget(&self) {
        lock(&self.shared.connections).remove(&self.id);
    }

    /// The handshake, who the client is, and its requests; the context
    /// handlers saw, if the client got that far.
    async fn session<S: ServerIo>(
        &self,
        wire: &mut Wire<S>,
        outbound: mpsc::UnboundedSender<Frame>,
    ) -> (End, Option<ConnectionContext>) {
        let hello = ServerHello::new(self.config.max_frame_len, self.config.name.clone());
        wire.push(Frame::new(Kind::Hello, 0, hello.encode()));
        if let Err(e) = wire.flush().await {
            tracing::debug!(error = %e, "cannot send HELLO");
            return (End::PeerGone, None);
        }
        let admitted = match self.handshake(wire).await {
            Ok(version) => self.caller(wire).await.map(|caller| (version, caller)),
            Err(end) => Err(end),
        };
        let (version, caller) = match admitted {
            Ok(admitted) => admitted,
            Err(end) => {
                report(wire, &end);
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
                    report(wire, &end);
                    return (end, None);
                }
            },
        };
        let output = wire.output.clone();
        let max_payload = self.config.max_payload();
        let ctx = ConnectionContext::new(
            self.id,
            caller,
            outbound,
            output,
            max_payload,
            self.config.access.clone(),
            self.config.input_budget.clone(),
        );
        if version >= 2 {
            // Before any other frame, on_connect's NOTIFYs included.
            wire.push(Frame::new(Kind::Hello, 0, hello_reply(&self.config)));
        }
        lock(&self.shared.connections).insert(self.id, ctx.clone());
        (self.serve_requests(wire, &ctx).await, Some(ctx))
    }

    /// Who the client is: known at accept, or (Windows) read from its
    /// token now that it has written its HELLO, and checked against the
    /// access policy. A token that cannot be read refuses the client: the
    /// server never serves someone it could not identify.
    async fn caller<S: ServerIo>(&self, wire: &mut Wire<S>) -> Result<Caller, End> {
        let peer = match &self.who {
            Who::Known(caller) => return Ok(caller.clone()),
            Who::Later(peer) => *peer,
        };
        let read = tokio::time::timeout(
            self.config.handshake_timeout,
            wire.stream().read_caller(peer),
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

    /// Waits for the client's HELLO and checks it; the connection's
    /// protocol version (the lower of the client's and ours).
    async fn handshake<S: ServerIo>(&self, wire: &mut Wire<S>) -> Result<u16, End> {
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
        let hello = ClientHello::decode(&frame.payload)
            .map_err(|e| End::Protocol(e.code(), e.to_string()))?;
        let version = negotiate(hello.version);
        wire.reader.handshake_done(version);
        Ok(version)
    }

    /// Reads frames and dispatches them until the client leaves, breaks the
    /// protocol, or the server shuts down; then settles in-flight requests.
    async fn serve_requests<S: ServerIo>(
        &self,
        wire: &mut Wire<S>,
        ctx: &ConnectionContext,
    ) -> End {
        let mut in_flight = InFlight::new(self.config.max_in_flight);
        let mut state = State::new(&self.shared, &self.config, wire.output.too_slow.clone());
        // Nothing is read until the handler has greeted the client.
        state.chore = Some(chore(self.handler.on_connect(ctx.clone())));
        state.greeting = true;
        let mut ending = None;
        let end = loop {
            let event = poll_fn(|cx| wire.poll_event(cx, &mut in_flight, &mut state)).await;
            let started = match event {
                Event::Frame(frame) => self.dispatch(frame, wire, ctx, &mut in_flight, &mut state),
                Event::Unparked(waiter) => self.unparked(waiter, wire, ctx, &mut state),
                Event::Expired(waiter) => {
                    self.expired(waiter, wire, &mut state);
                    continue;
                }
                Event::Eof => {
                    if wire.stream().peer_is_gone() {
                        break End::PeerGone;
                    }
                    // A half-close: the client has sent all it will and
                    // still reads. Its requests get a deadline.
                    ending.get_or_insert(End::PeerClosed);
                    state.phase = Phase::Settling;
                    state.settle_by(self.config.shutdown_timeout, ErrorCode::TIMED_OUT);
                    continue;
                }
                Event::HungUp => {
                    tracing::debug!("the client left while its connection was not read");
                    break End::PeerGone;
                }
                Event::ReadFailed(e) => break decode_failed(e),
                Event::WriteFailed(e) => {
                    tracing::debug!(error = %e, "write failed; cutting the client off");
                    break End::PeerGone;
                }
                Event::TooSlow => break End::TooSlow,
                Event::Shutdown => {
                    // GOODBYE goes out before the last answers.
                    if ending.is_none() {
                        report(wire, &End::Shutdown);
                    }
                    ending.get_or_insert(End::Shutdown);
                    if state.phase == Phase::Serving {
                        state.phase = Phase::Draining;
                    }
                    state.settle_by(self.config.shutdown_timeout, ErrorCode::SHUTTING_DOWN);
                    continue;
                }
                Event::Deadline(code) => {
                    limited!(warn, %code, "deadline passed; cancelling requests");
                    let why = match code {
                        ErrorCode::SHUTTING_DOWN => {
                            "the server shut down before the request finished"
                        }
                        _ => "the request did not finish in time after the client's EOF",
                    };
                    for answer in in_flight.cancel(code, why) {
                        wire.tally.requests += 1;
                        wire.push(answer);
                    }
                    for waiter in state.waiting.drain() {
                        state.share.release(waiter.held);
                        if let Some(id) = waiter.job.id() {
                            wire.tally.requests += 1;
                            wire.push(Frame::error(id, code, why));
                        }
                    }
                    // `on_connect` and `on_notify` end here too.
                    state.end_chore();
                    state.phase = Phase::Settling;
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
            let start = match started {
                Ok(Some(start)) => start,
                Ok(None) => continue,
                Err(end) => break end,
            };
            let Start {
                id,
                work,
                ctx,
                deadline,
                held,
            } = start;
            // The server's request timeout reaches a request without a
            // deadline of its own through the connection's tick: no timer
            // per request.
            let untimed = deadline.is_none() && self.config.request_timeout.is_some();
            let started = untimed.then(|| state.tick.now());
            let request = run_request(&*self.handler, id, work, ctx, deadline);
            state.tick.busy = true;
            if let Err(id) = in_flight.start(id, request, held, started) {
                break duplicate(id);
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
            wire.held = None;
            if matches!(end, End::Protocol(..)) {
                // What handlers queued came before the error.
                wire.take_queued();
                report(wire, &end);
            }
        }
        end
    }

    /// Acts on one frame just read from the client. A request to start now
    /// is handed back; one that cannot start yet waits.
    fn dispatch<'a, S: ServerIo, F: Future<Output = (u32, Frame)>>(
        &'a self,
        frame: Frame,
        wire: &mut Wire<S>,
        ctx: &ConnectionContext,
        in_flight: &mut InFlight<F>,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        let id_rule = rule(frame.kind).map_or(IdRule::Zero, |rule| rule.id);
        if frame.id == 0 && matches!(id_rule, IdRule::New | IdRule::OfRequest) {
            // Its answer would carry id 0, which means "the connection".
            return Err(End::Protocol(
                ErrorCode::MALFORMED_FRAME,
                format!("a {:?} needs an id other than 0", frame.kind),
            ));
        }
        if matches!(id_rule, IdRule::New | IdRule::NewOrZero) && frame.id != 0 {
            // Its answer and the request's would share the id.
            check_not_in_flight(frame.id, in_flight, state)?;
        }
        match frame.kind {
            kind if is_request(kind) && state.phase == Phase::Draining => {
                // Read after the GOODBYE: answered at once, not started.
                wire.tally.requests += 1;
                let why = "the server is shutting down; the request was not started";
                wire.push(Frame::error(frame.id, ErrorCode::SHUTTING_DOWN, why));
            }
            // REQUEST, CALL, NOTIFY: started, or left to wait.
            kind if !answered_at_once(kind) && rule(kind).is_some() => {
                return self.admit(frame, wire, ctx, in_flight, state)
            }
            Kind::Ping => wire.push(Frame::new(Kind::Pong, frame.id, frame.payload)),
            Kind::Status => {
                let status = status_that_fits(&self.shared, self.config.max_payload());
                wire.push(match status {
                    Some(status) => Frame::response(frame.id, status),
                    None => {
                        let why = "the STATUS answer does not fit the frame limit";
                        Frame::error(frame.id, ErrorCode::FRAME_TOO_LARGE, why)
                    }
                });
            }
            Kind::Cancel => cancel(frame.id, wire, in_flight, state),
            Kind::Describe => wire.push(self.describe(frame.id)),
            Kind::Unknown(_) if frame.id == 0 => {
                tracing::debug!(kind = ?frame.kind, "ignoring a frame of an unknown kind");
                state.unanswered();
            }
            Kind::Unknown(byte) => {
                let why = format!("unknown kind {byte}");
                wire.push(Frame::error(frame.id, ErrorCode::UNKNOWN_KIND, &why));
            }
            other => {
                return Err(End::Protocol(
                    ErrorCode::UNEXPECTED_FRAME,
                    format!("a client may not send {other:?} after the handshake"),
                ))
            }
        }
        Ok(None)
    }

    /// A REQUEST, CALL or NOTIFY just read: charged to the connection's
    /// share of the budget (refused `overloaded` if the server has no room
    /// for it), then started, or left to wait behind the in-flight limit,
    /// a running `on_notify`, or the jobs already waiting.
    fn admit<'a, S: ServerIo, F: Future<Output = (u32, Frame)>>(
        &'a self,
        frame: Frame,
        wire: &mut Wire<S>,
        ctx: &ConnectionContext,
        in_flight: &InFlight<F>,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        // Its id is new: checked by `dispatch` before anything answers it.
        let (kind, id) = (frame.kind, frame.id);
        let (job, held) = match Job::read(frame) {
            Ok(job) => job,
            Err((code, why)) => {
                self.answer_now(wire, id, code, &why);
                return Ok(None);
            }
        };
        if let Job::Call { header, .. } = &job {
            let access = &self.config.access;
            if access.has_operation_rules() {
                if let Err(refusal) = access.check_operation(&header.method, ctx.caller()) {
                    log_refusal(&refusal, ctx.caller());
                    self.answer_now(wire, id, ErrorCode::NOT_ALLOWED, &refusal.to_string());
                    return Ok(None);
                }
            }
        }
        if kind == Kind::Notify {
            state.unanswered();
        }
        if !state.share.try_hold(held) {
            let why = format!(
                "the server holds its budget of {} bytes for its clients' requests; try again later",
                self.config.input_budget.limit()
            );
            if kind == Kind::Notify {
                return Err(End::Protocol(ErrorCode::OVERLOADED, why));
            }
            self.answer_now(wire, id, ErrorCode::OVERLOADED, &why);
            return Ok(None);
        }
        let free = match job {
            Job::Notify(_) => true,
            _ => in_flight.has_room(),
        };
        if free && state.chore.is_none() && state.waiting.is_empty() {
            return self.start_job(job, held, None, wire, ctx, state);
        }
        let read_at = Instant::now();
        let timeout = match &job {
            Job::Notify(_) => None,
            job => job.own_timeout().or(self.config.request_timeout),
        };
        state.waiting.push(Waiter {
            job,
            held,
            read_at,
            deadline: timeout.map(|t| read_at + t),
        });
        Ok(None)
    }

    /// Starts `job` (read at `read_at` if it waited; else just now), which
    /// holds `held` bytes: a request is handed back to start, a NOTIFY goes
    /// to `on_notify`.
    fn start_job<'a, S: ServerIo>(
        &'a self,
        job: Job,
        held: usize,
        read_at: Option<Instant>,
        wire: &mut Wire<S>,
        ctx: &ConnectionContext,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        // A job that waited gets the server's request timeout from when it
        // was read, as a timer of its own.
        let waited = read_at.and_then(|at| self.config.request_timeout.map(|t| at + t));
        match job {
            Job::Notify(payload) => {
                let notified = self.handler.on_notify(payload, ctx.clone());
                state.chore = Some(chore(notified));
                state.chore_held = held;
                state.greeting = false;
                Ok(None)
            }
            Job::Request { id, payload } => Ok(Some(Start {
                id,
                work: Work::Bytes(payload),
                ctx: ctx.clone(),
                deadline: waited,
                held,
            })),
            Job::Call { id, header, params } => {
                let work = match self.call_work(&header, params) {
                    Ok(work) => work,
                    Err(err) => {
                        state.share.release(held);
                        self.answer_now(wire, id, err.code(), err.message());
                        return Ok(None);
                    }
                };
                let own = header
                    .timeout
                    .map(|timeout| read_at.unwrap_or_else(Instant::now) + timeout);
                let mut metadata = header.metadata;
                // The protocol's own keys are not the service's (PROTOCOL.md,
                // "CALL"): none is defined yet, and a handler never sees one.
                metadata.retain(|(key, _)| !key.starts_with(RESERVED_METADATA_PREFIX));
                let scope = RequestScope {
                    method: header.method,
                    deadline: own,
                    metadata,
                    cancelled: CancellationToken::new(),
                };
                Ok(Some(Start {
                    id,
                    work,
                    ctx: ctx.for_request(Arc::new(scope)),
                    deadline: own.or(waited),
                    held,
                }))
            }
        }
    }

    /// A job that waited and may start now (or, shutting down, is
    /// answered `shutting down` unstarted).
    fn unparked<'a, S: ServerIo>(
        &'a self,
        waiter: Waiter,
        wire: &mut Wire<S>,
        ctx: &ConnectionContext,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        if let (Some(id), Phase::Draining) = (waiter.job.id(), state.phase) {
            state.share.release(waiter.held);
            wire.tally.requests += 1;
            let why = "the server is shutting down; the request was not started";
            wire.push(Frame::error(id, ErrorCode::SHUTTING_DOWN, why));
            return Ok(None);
        }
        let Waiter {
            job, held, read_at, ..
        } = waiter;
        self.start_job(job, held, Some(read_at), wire, ctx, state)
    }

    /// A waiting request whose deadline (its own, or the server's request
    /// timeout) passed before it could start.
    fn expired<S: ServerIo>(&self, waiter: Waiter, wire: &mut Wire<S>, state: &mut State<'_>) {
        state.share.release(waiter.held);
        let Some(id) = waiter.job.id() else {
            return;
        };
        let why = match waiter.job.own_timeout() {
            Some(_) => "the request's timeout passed while it waited for a slot",
            None => "the request waited longer than the server's request timeout",
        };
        wire.tally.requests += 1;
        wire.push(Frame::error(id, ErrorCode::TIMED_OUT, why));
    }

    /// What runs a CALL: the byte handler for the empty method, else one
    /// of the service's methods in an encoding it offers.
    fn call_work<'a>(
        &'a self,
        header: &CallHeader,
        params: bytes::Bytes,
    ) -> Result<Work<'a>, ServiceError> {
        if header.method.is_empty() {
            return Ok(Work::Bytes(params));
        }
        let Some(calls) = &self.config.calls else {
            return Err(ServiceError::unknown_method(&header.method));
        };
        let calls = &*calls.0;
        let offered = calls.encodings();
        match header.known_encoding().filter(|e| offered.contains(e)) {
            Some(encoding) => Ok(Work::Call {
                calls,
                encoding,
                params,
            }),
            None => {
                let names: Vec<&str> = offered.iter().map(|e| e.name()).collect();
                Err(ServiceError::bad_request(format!(
                    "encoding {} is not offered; this server offers [{}]",
                    header.encoding,
                    names.join(", ")
                )))
            }
        }
    }

    /// Answers request `id` with an ERROR at once (it never started).
    fn answer_now<S: ServerIo>(&self, wire: &mut Wire<S>, id: u32, code: ErrorCode, why: &str) {
        wire.tally.requests += 1;
        wire.push(error_that_fits(id, code, why, self.config.max_payload()));
    }

    /// The answer to DESCRIBE `id`: the service's description, or the
    /// default one of a server without typed methods.
    fn describe(&self, id: u32) -> Frame {
        let description = match &self.config.calls {
            Some(calls) => calls.0.description(),
            None => default_description(&self.config.name),
        };
        if description.len() > self.config.max_payload() {
            let why = format!(
                "the description of {} bytes exceeds the maximum payload of {}",
                description.len(),
                self.config.max_payload()
            );
            return Frame::error(id, ErrorCode::FRAME_TOO_LARGE, &why);
        }
        Frame::response(id, description)
    }
}

/// A request to start: the future's parts, and what it holds of the
/// connection's share of the budget.
struct Start<'a> {
    id: u32,
    work: Work<'a>,
    ctx: ConnectionContext,
    deadline: Option<Instant>,
    held: usize,
}

/// What the id of a frame must be (PROTOCOL.md, "Kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdRule {
    /// 0: the frame carries none (any other is ignored).
    Zero,
    /// A new request id: not 0 (the answer would read as one about the
    /// connection), and not the id of a request in flight, running or
    /// waiting at the limit (two answers would share it).
    New,
    /// A new request id, or 0: then the frame is ignored (kinds the
    /// server does not know, protocol 2).
    NewOrZero,
    /// The id of a request the client sent earlier, not 0 (CANCEL).
    OfRequest,
}

/// What the server does with a frame of one kind from a client.
#[derive(Clone, Copy, Debug)]
struct KindRule {
    id: IdRule,
    /// It starts a handler, counts against the in-flight limit and waits
    /// there for room.
    starts: bool,
    /// The server acts on it at once, also past the requests waiting at
    /// the in-flight limit; the others are admitted in order
    /// (`Connection::admit`).
    at_once: bool,
}

/// The one table of the kinds a client may send after the handshake, and
/// what each needs (PROTOCOL.md, "Kinds"); `None` for the kinds only a
/// server sends (and HELLO, sent once): ERROR `unexpected frame`.
fn rule(kind: Kind) -> Option<KindRule> {
    let (id, starts, at_once) = match kind {
        Kind::Request | Kind::Call => (IdRule::New, true, false),
        Kind::Ping | Kind::Status | Kind::Describe => (IdRule::New, false, true),
        Kind::Cancel => (IdRule::OfRequest, false, true),
        Kind::Unknown(_) => (IdRule::NewOrZero, false, true),
        // Handled one at a time, in order (`on_notify`).
        Kind::Notify => (IdRule::Zero, false, false),
        _ => return None,
    };
    Some(KindRule {
        id,
        starts,
        at_once,
    })
}

/// REQUEST and CALL: the kinds that start a handler (and wait at the
/// in-flight limit).
fn is_request(kind: Kind) -> bool {
    rule(kind).is_some_and(|rule| rule.starts)
}

/// Kinds the server acts on at once, also while a request waits at the
/// in-flight limit (PROTOCOL.md, "CANCEL").
fn answered_at_once(kind: Kind) -> bool {
    rule(kind).is_some_and(|rule| rule.at_once)
}

fn duplicate(id: u32) -> End {
    End::Protocol(
        ErrorCode::DUPLICATE_ID,
        format!("request id {id} is already in flight"),
    )
}

/// Refuses the id of a request still in flight (running or waiting).
fn check_not_in_flight<F: Future<Output = (u32, Frame)>>(
    id: u32,
    in_flight: &InFlight<F>,
    state: &State<'_>,
) -> Result<(), End> {
    match in_flight.contains(id) || state.waiting.contains(id) {
        true => Err(duplicate(id)),
        false => Ok(()),
    }
}

/// Acts on CANCEL `id`: the request in flight (or waiting to start) is
/// dropped and answered ERROR `cancelled`; any other id is ignored (and
/// counts against the connection's rate of frames without an answer).
fn cancel<S: ServerIo, F: Future<Output = (u32, Frame)>>(
    id: u32,
    wire: &mut Wire<S>,
    in_flight: &mut InFlight<F>,
    state: &mut State<'_>,
) {
    if let Some(waiter) = state.waiting.remove(id) {
        state.share.release(waiter.held);
    } else if !in_flight.cancel_one(id) {
        tracing::debug!(id, "CANCEL for a request not in flight: ignored");
        state.unanswered();
        return;
    }
    wire.tally.requests += 1;
    // The text of PROTOCOL.md's example exchange.
    wire.push(Frame::error(id, ErrorCode::CANCELLED, "cancelled"));
}

/// The HELLO reply of a protocol 2 connection: the encodings the service's
/// typed methods take (none without them).
fn hello_reply(config: &Config) -> bytes::Bytes {
    let encodings = config.calls.as_ref().map_or(&[][..], |c| c.0.encodings());
    HelloReply::new(2, encodings).encode()
}

/// The DESCRIBE answer of a server without typed methods.
fn default_description(name: &str) -> bytes::Bytes {
    let mut json = String::with_capacity(name.len() + 80);
    json.push_str("{\"service\":\"");
    for c in name.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if (c as u32) < 0x20 => json.push_str(&format!("\\u{:04x}", c as u32)),
            c => json.push(c),
        }
    }
    json.push_str("\",\"version\":\"\",\"protocol\":2,\"encodings\":[],\"methods\":[]}");
    json.into()
}

/// The server's STATUS, with as many per-code error counts (lowest codes
/// first) as fit in `max_payload`; `None` if not even the fixed fields do.
fn status_that_fits(shared: &Shared, max_payload: usize) -> Option<bytes::Bytes> {
    const PER_CODE: usize = 10;
    let mut status = shared.status();
    let full = status.encode();
    if full.len() <= max_payload {
        return Some(full);
    }
    let fixed = full.len() - status.errors.len() * PER_CODE;
    let room = max_payload.checked_sub(fixed)? / PER_CODE;
    tracing::debug!(
        codes = status.errors.len(),
        room,
        "STATUS error counts cut to fit"
    );
    status.errors.truncate(room);
    Some(status.encode())
}

/// A handler's `on_connect` or `on_notify`, running.
type Chore<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn chore<'a>(work: impl Future<Output = ()> + Send + 'a) -> Chore<'a> {
    Box::pin(AssertUnwindSafe(work).catch_unwind().map(|done| {
        if let Err(panic) = done {
            limited!(error, panic = panic_message(&panic), "handler panicked");
        }
    }))
}

/// What the request loop must act on.
enum Event {
    /// A frame from the client, just read.
    Frame(Frame),
    /// A job that waited and may start now.
    Unparked(Waiter),
    /// A waiting job whose deadline passed before it could start.
    Expired(Waiter),
    /// The client's end of the stream.
    Eof,
    /// The client closed its end while the connection was not being read
    /// (the tick's probe).
    HungUp,
    /// Reading failed, or the client sent what is not a frame.
    ReadFailed(CodecError),
    /// The client stopped taking what is written, or the write failed.
    WriteFailed(io::Error),
    /// A broadcast found no room for this client.
    TooSlow,
    /// The server is shutting down.
    Shutdown,
    /// The deadline for the last requests passed; they get ERROR `code`.
    Deadline(ErrorCode),
    /// Nothing was read for this long, with no request in flight.
    Idle(Duration),
    /// Ending, and every request is answered.
    Settled,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading and running requests.
    Serving,
    /// Shutting down: still reading what the client had sent, refusing new
    /// requests with ERROR `shutting down`, until nothing more is there and
    /// no request runs.
    Draining,
    /// Nothing more is read: the loop ends once every request is answered.
    Settling,
}

/// The request loop's timers and phase.
struct State<'a> {
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    too_slow: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// When the last requests are cancelled, and with what code.
    deadline: Option<(Pin<Box<Sleep>>, ErrorCode)>,
    phase: Phase,
    chore: Option<Chore<'a>>,
    /// What the NOTIFY the chore handles holds of the share.
    chore_held: usize,
    /// The chore is `on_connect`: nothing is read until it is done.
    greeting: bool,
    /// Requests and NOTIFYs read that cannot start yet (at the in-flight
    /// limit, or while `on_notify` runs), in order. Reading goes on past
    /// them, within their count and the share's bytes.
    waiting: Waiting,
    /// What this connection's requests hold of the server's budget.
    share: Share,
    /// The connection's rate of frames without an answer, if limited.
    throttle: Option<Throttle>,
    /// While set, the throttle keeps the connection from being read until
    /// this timer fires.
    resume: Option<Pin<Box<Sleep>>>,
    paused: bool,
    /// Frames read since the task last yielded to the runtime.
    frames: u32,
    /// Whether the loop read (or tried to) at its last turn.
    reading: bool,
    tick: Tick,
    /// The server's request timeout, in ticks.
    request_ticks: Option<u32>,
    idle: Option<Idle>,
}

/// Frames read per poll of the connection's task, after which it yields
/// to the runtime (as tokio's own budget does for I/O): a client that
/// floods frames which need no answer, and so no write, cannot keep its
/// worker thread from other connections.
const FRAMES_PER_POLL: u32 = 128;

/// The idle timeout: armed for the last read plus the timeout.
struct Idle {
    timeout: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<'a> State<'a> {
    fn new(shared: &Shared, config: &Config, too_slow: CancellationToken) -> State<'a> {
        let tick = Tick::new(config.request_timeout);
        let request_ticks = config.request_timeout.map(|t| tick.ticks_in(t));
        State {
            shutdown: Some(Box::pin(shared.shutdown.clone().cancelled_owned())),
            too_slow: Some(Box::pin(too_slow.cancelled_owned())),
            deadline: None,
            phase: Phase::Serving,
            chore: None,
            chore_held: 0,
            greeting: false,
            // One more than may run: as many as a full set of slots, and
            // (at a limit of 1) reading goes on past a lone waiting request.
            waiting: Waiting::new(config.max_in_flight.saturating_add(1)),
            share: Share::new(config.input_budget.clone(), config.max_input_bytes),
            throttle: config.unanswered_frame_rate.map(Throttle::new),
            resume: None,
            paused: false,
            frames: 0,
            reading: true,
            tick,
            request_ticks,
            idle: config.idle_timeout.map(|timeout| Idle {
                timeout,
                last_read: Instant::now(),
                timer: Box::pin(tokio::time::sleep(timeout)),
            }),
        }
    }

    /// Requests get `timeout` more (or less, if an earlier deadline is
    /// armed), then are cancelled with `code`.
    fn settle_by(&mut self, timeout: Duration, code: ErrorCode) {
        let at = Instant::now() + timeout;
        match &mut self.deadline {
            Some((timer, armed)) if timer.deadline() <= at => {
                // A shutdown says why, even under an earlier deadline.
                if code == ErrorCode::SHUTTING_DOWN {
                    *armed = code;
                }
            }
            _ => self.deadline = Some((Box::pin(tokio::time::sleep_until(at)), code)),
        }
    }

    fn poll_signals(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        if let Poll::Ready(()) = poll_once(&mut self.too_slow, cx) {
            return Poll::Ready(Event::TooSlow);
        }
        if let Poll::Ready(()) = poll_once(&mut self.shutdown, cx) {
            return Poll::Ready(Event::Shutdown);
        }
        if let Some((timer, code)) = &mut self.deadline {
            if timer.as_mut().poll(cx).is_ready() {
                let code = *code;
                self.deadline = None;
                return Poll::Ready(Event::Deadline(code));
            }
        }
        if !self.waiting.is_empty() {
            if let Poll::Ready(waiter) = self.waiting.poll_expired(cx) {
                return Poll::Ready(Event::Expired(waiter));
            }
        }
        if self.paused && poll_once(&mut self.resume, cx).is_ready() {
            self.paused = false;
        }
        Poll::Pending
    }

    /// Runs the chore, if any; ready once there is none.
    fn poll_chore(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        match self.chore {
            None => Poll::Ready(()),
            Some(_) => {
                ready!(poll_once(&mut self.chore, cx));
                self.end_chore();
                Poll::Ready(())
            }
        }
    }

    /// Drops the chore, if any (done, or given up on), and what its NOTIFY
    /// held.
    fn end_chore(&mut self) {
        self.chore = None;
        self.greeting = false;
        self.share.release(std::mem::take(&mut self.chore_held));
    }

    /// The first waiting job, once it can start.
    fn unpark<F: Future<Output = (u32, Frame)>>(
        &mut self,
        in_flight: &InFlight<F>,
    ) -> Option<Event> {
        let front = self.waiting.front()?;
        let ready = match front.job {
            Job::Notify(_) => self.chore.is_none(),
            _ if self.phase == Phase::Draining => true,
            _ => in_flight.has_room() && self.chore.is_none(),
        };
        if !ready {
            return None;
        }
        self.waiting.pop_front().map(Event::Unparked)
    }

    /// Whether the loop reads now (given room for the answers): not while
    /// greeting or settling, nor while as many jobs wait as may run, the
    /// connection's requests hold its share of the budget, or the throttle
    /// holds it back.
    fn reads(&self) -> bool {
        self.phase != Phase::Settling
            && !self.greeting
            && !self.waiting.is_full()
            && !self.share.is_full()
            && !self.paused
    }

    /// Counts a frame that gets no answer against the connection's rate;
    /// past it, reading pauses until the rate allows more.
    fn unanswered(&mut self) {
        let Some(throttle) = &mut self.throttle else {
            return;
        };
        if let Some(resume) = throttle.spend() {
            limited!(
                debug,
                "a client sends frames that need no answer faster than its rate; pausing it"
            );
            self.paused = true;
            match &mut self.resume {
                Some(timer) => timer.as_mut().reset(resume),
                None => self.resume = Some(Box::pin(tokio::time::sleep_until(resume))),
            }
        }
    }

    /// Whether the connection's tick has work: requests under the
    /// server's request timeout, a connection not read (whose client may
    /// leave unseen), or memory a burst left to give back.
    fn needs_tick<F: Future<Output = (u32, Frame)>>(&self, in_flight: &InFlight<F>) -> bool {
        (self.request_ticks.is_some() && in_flight.has_untimed())
            || (!self.reading && self.phase != Phase::Settling)
            || in_flight.has_spare()
            || self.share.has_spare()
            || self.waiting.has_spare()
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

/// Turns of [`Wire::poll_event`]'s loop before the task yields to the
/// runtime (each turn gathers, writes and reads once).
const TURN_BUDGET: usize = 16;

/// The connection's stream, what waits to be written to it, and the queue
/// of frames from handlers and broadcasts.
struct Wire<S> {
    reader: Input<S>,
    outbox: Outbox,
    queue: mpsc::UnboundedReceiver<Frame>,
    /// Room for NOTIFYs: what queued frames took is given back once they
    /// are written.
    output: Arc<OutputLimit>,
    /// NOTIFYs in the outbox that hold permits: where each ends in the
    /// stream, its permits and its length.
    charged: VecDeque<(u64, u32, usize)>,
    /// Bytes of those NOTIFYs (whole frames, the one being written too).
    charged_bytes: usize,
    /// Their permits.
    charged_permits: usize,
    /// An answer whose handler's NOTIFYs are still in the queue: it goes
    /// out after them.
    held: Option<Frame>,
    write_timeout: Duration,
    /// The largest payload a frame may carry: what is over is made to fit.
    max_payload: usize,
    /// Armed while a write waits for the client: the bytes queued when it
    /// was armed must be written by its deadline.
    drain: Option<Drain>,
    /// Nothing more is sent: an ERROR for the connection went out.
    sealed: bool,
    /// What this connection did since it last reported to the server.
    tally: Tally,
    shared: Arc<Shared>,
}

/// The write deadline: the stream position to reach, and by when.
struct Drain {
    target: u64,
    timer: Pin<Box<Sleep>>,
}

impl<S: ServerIo> Wire<S> {
    fn new(
        stream: S,
        config: &Config,
        queue: mpsc::UnboundedReceiver<Frame>,
        output: Arc<OutputLimit>,
        shared: Arc<Shared>,
    ) -> Wire<S> {
        let codec = FrameCodec::new(config.max_frame_len);
        Wire {
            reader: Input::new(stream, config),
            outbox: Outbox::new(codec),
            queue,
            output,
            charged: VecDeque::new(),
            charged_bytes: 0,
            charged_permits: 0,
            held: None,
            write_timeout: config.write_timeout,
            max_payload: config.max_payload(),
            drain: None,
            sealed: false,
            tally: Tally::default(),
            shared,
        }
    }

    fn stream(&self) -> &S {
        self.reader.get_ref()
    }

    /// Adds this connection's counts to the server's.
    fn publish(&mut self) {
        self.shared.stats.publish(&mut self.tally);
    }

    /// Queues `frame` for the next write, made to fit the frame limit if
    /// it is over ([`fit`]). Nothing follows an ERROR for the connection.
    fn push(&mut self, frame: Frame) {
        if self.sealed {
            return;
        }
        self.sealed = frame.kind == Kind::Error && frame.id == 0;
        let frame = match frame.payload.len() > self.max_payload {
            true => fit(frame, self.max_payload),
            false => frame,
        };
        self.tally.sent(&frame);
        if let Err(e) = self.outbox.push(frame) {
            // Only a frame `fit` cannot shorten (a NOTIFY, a PONG: checked
            // or echoing what fit before they get here).
            limited!(error, error = %e, "a frame over the limit");
        }
    }

    /// Moves the frames handlers and broadcasts queued into the outbox
    /// (they hold their room already) while the NOTIFYs there are under
    /// [`COALESCE_LIMIT`], so that a PONG or an answer is never behind more
    /// than that; registers for more. Whether the queue is empty.
    fn poll_queued(&mut self, cx: &mut TaskContext<'_>) -> bool {
        use tokio::sync::mpsc::error::TryRecvError;
        while self.charged_bytes < COALESCE_LIMIT {
            // `try_recv` first: unlike `poll_recv` it is not held back by
            // tokio's budget, and a frame a handler queued before its
            // answer must not be left behind it.
            match self.queue.try_recv() {
                Ok(frame) => self.push_charged(frame),
                Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => match self.queue.poll_recv(cx) {
                    Poll::Ready(Some(frame)) => self.push_charged(frame),
                    Poll::Ready(None) | Poll::Pending => return true,
                },
            }
        }
        false
    }

    /// Bytes (permits) of NOTIFYs sent to this connection and not yet in
    /// its outbox: the write deadline covers them too.
    fn unmoved_notify_bytes(&self) -> usize {
        let taken = self.output.limit - self.output.room.available_permits();
        taken.saturating_sub(self.charged_permits)
    }

    /// Like [`Wire::poll_queued`], without waiting for more.
    fn take_queued(&mut self) {
        while let Ok(frame) = self.queue.try_recv() {
            self.push_charged(frame);
        }
    }

    fn push_charged(&mut self, frame: Frame) {
        let (permits, len) = (self.output.charge(&frame), frame.wire_len());
        self.push(frame);
        let end = self.outbox.written() + self.outbox.len() as u64;
        self.charged.push_back((end, permits, len));
        self.charged_bytes += len;
        self.charged_permits += permits as usize;
    }

    /// Gives back the room of the NOTIFYs written so far.
    fn release_written(&mut self) {
        let written = self.outbox.written();
        let mut released = 0;
        while let Some(&(end, permits, len)) = self.charged.front() {
            if end > written {
                break;
            }
            self.charged.pop_front();
            released += permits as usize;
            self.charged_bytes -= len;
        }
        self.charged_permits -= released;
        if released > 0 {
            self.output.room.add_permits(released);
        }
    }

    /// Moves ready answers into the outbox while there is room: each one
    /// after the NOTIFYs its handler queued before returning (which are
    /// in the queue by then), holding it while they wait for room.
    fn gather_answers<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
    ) {
        let mut drained = self.poll_queued(cx);
        loop {
            if self.held.is_none() {
                if !self.has_room_for_answers() {
                    return;
                }
                let Poll::Ready(Some(answer)) = in_flight.poll_answer(cx) else {
                    return;
                };
                self.tally.requests += 1;
                self.held = Some(answer);
                drained = self.poll_queued(cx);
            }
            if !drained {
                return;
            }
            let answer = self.held.take().expect("held above");
            self.push(answer);
        }
    }

    /// Whether the connection's own frames (answers, PONGs) may be added,
    /// and more read: its unwritten bytes apart from NOTIFYs are under
    /// [`COALESCE_LIMIT`], as much as one write takes. So a client that
    /// reads nothing holds that much of its answers, plus the one that
    /// crossed the line, and its requests wait in their handlers (and
    /// then, unread, in the socket); a client that reads, however slowly,
    /// keeps being read, since NOTIFYs have their own room.
    fn has_room_for_answers(&self) -> bool {
        self.outbox.len().saturating_sub(self.charged_bytes) < COALESCE_LIMIT
    }

    /// The next event, doing meanwhile everything that needs no waiting:
    /// running handlers, queuing their answers and the frames handed to
    /// the connection, writing, and reading. Each turn does all three, so
    /// that neither reading nor writing waits for the other; the turns
    /// are bounded, and so is each handler poll (see [`InFlight`]).
    fn poll_event<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) -> Poll<Event> {
        let event = self.poll_turns(cx, in_flight, state);
        if event.is_pending() {
            // The task yields to the runtime now.
            state.frames = 0;
        }
        event
    }

    fn poll_turns<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) -> Poll<Event> {
        if let Poll::Ready(event) = state.poll_signals(cx) {
            return Poll::Ready(event);
        }
        for _ in 0..TURN_BUDGET {
            if let Some(event) = state.unpark(in_flight) {
                return Poll::Ready(event);
            }
            self.gather_answers(cx, in_flight);
            let chore_done = state.poll_chore(cx).is_ready();
            state.share.release(in_flight.take_released());
            if let Some(event) = state.unpark(in_flight) {
                return Poll::Ready(event);
            }
            let settled = chore_done
                && in_flight.is_empty()
                && state.waiting.is_empty()
                && self.held.is_none();
            if settled && state.phase == Phase::Settling {
                return Poll::Ready(Event::Settled);
            }
            let mut wrote_all = false;
            if !self.outbox.is_empty() {
                // Counted before the client can see the answers: a STATUS
                // it sends next includes them.
                self.publish();
                match self.poll_write(cx) {
                    Poll::Ready(Ok(())) => wrote_all = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::WriteFailed(e)),
                    Poll::Pending => {}
                }
            }
            state.reading = state.reads() && self.has_room_for_answers();
            if state.reading {
                if state.frames >= FRAMES_PER_POLL {
                    return self.yield_now(cx, in_flight, state);
                }
                match self.poll_read(cx) {
                    Poll::Ready(event) => {
                        state.read_happened();
                        state.frames += 1;
                        return Poll::Ready(event);
                    }
                    // Shutting down, nothing more is there to read, and
                    // every request is answered: done.
                    Poll::Pending if settled && state.phase == Phase::Draining => {
                        return Poll::Ready(Event::Settled)
                    }
                    Poll::Pending => {}
                }
            }
            if !wrote_all {
                // Waiting for the client, a handler or a timer.
                self.trim_read_buffer();
                self.publish();
                match self.poll_tick(cx, in_flight, state) {
                    Poll::Ready(Some(event)) => return Poll::Ready(event),
                    // It may have answered requests: another turn.
                    Poll::Ready(None) => continue,
                    Poll::Pending => {}
                }
                return state.poll_idle(cx, !in_flight.is_empty());
            }
        }
        // Budget spent with work left: let other tasks run, then go on.
        self.yield_now(cx, in_flight, state)
    }

    /// Lets other tasks run, then goes on (the task is woken at once).
    fn yield_now<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) -> Poll<Event> {
        // A busy connection still keeps its clock.
        if let Poll::Ready(Some(event)) = self.poll_tick(cx, in_flight, state) {
            return Poll::Ready(event);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The connection's tick (armed while it has work): at each, the
    /// housekeeping. `Ready(Some)`: an event it found; `Ready(None)`: it
    /// ran (and may have queued answers).
    fn poll_tick<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) -> Poll<Option<Event>> {
        if !state.tick.is_armed() {
            if !state.needs_tick(in_flight) {
                return Poll::Pending;
            }
            state.tick.arm();
        }
        ready!(state.tick.poll(cx));
        Poll::Ready(self.housekeeping(in_flight, state))
    }

    /// What the connection does once per tick: stops requests past the
    /// server's request timeout (that have no deadline of their own),
    /// notices a client that left while the connection was not read, and
    /// gives back what a burst left once a whole tick passed without a new
    /// request.
    fn housekeeping<F: Future<Output = (u32, Frame)>>(
        &mut self,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) -> Option<Event> {
        if let Some(limit) = state.request_ticks {
            // Started `limit` whole ticks ago or more (the tick it started
            // in counts as none).
            if let Some(before) = state.tick.now().checked_sub(limit.saturating_add(1)) {
                let why = "the request ran longer than the server's request timeout";
                in_flight.expire(before, |id| {
                    self.tally.requests += 1;
                    self.push(Frame::error(id, ErrorCode::TIMED_OUT, why));
                });
                state.share.release(in_flight.take_released());
            }
        }
        if !state.reading && state.phase != Phase::Settling && self.stream().peer_hung_up() {
            return Some(Event::HungUp);
        }
        if !state.tick.busy && in_flight.is_empty() && state.waiting.is_empty() {
            in_flight.trim();
            state.waiting.trim();
            state.share.trim();
            self.shrink_read_buffer();
            if !state.needs_tick(in_flight) {
                state.tick.trim();
            }
        }
        state.tick.busy = false;
        None
    }

    /// The next frame from the client, if one is there.
    fn poll_read(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        let read = ready!(self.reader.poll_next_unpin(cx));
        Poll::Ready(match read {
            Some(Ok(frame)) => {
                if frame.kind == Kind::Status {
                    // Its answer counts what this connection did before it.
                    self.publish();
                }
                self.tally.bytes_in += frame.wire_len() as u64;
                Event::Frame(frame)
            }
            Some(Err(e)) => Event::ReadFailed(e),
            None => Event::Eof,
        })
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

    /// Replaces an empty read buffer larger than a new one with a new one:
    /// what a quiet connection keeps of a burst (the tick's trim).
    fn shrink_read_buffer(&mut self) {
        let buffer = self.reader.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > READ_BUFFER_START {
            *buffer = BytesMut::with_capacity(READ_BUFFER_START);
        }
    }

    /// Writes what the outbox holds. Fails if the client does not take the
    /// bytes queued when a write first had to wait within the write
    /// timeout (then the same for what is queued by then, and so on).
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let stream = Pin::new(self.reader.get_mut());
        let written = self.outbox.poll_write_to(stream, cx);
        self.release_written();
        if let Poll::Ready(written) = written {
            self.drain = None;
            return Poll::Ready(written);
        }
        let timeout = self.write_timeout;
        let position = self.outbox.written();
        // What is queued here, and the NOTIFYs still waiting to come in.
        let queued_end = position + (self.outbox.len() + self.unmoved_notify_bytes()) as u64;
        let drain = self.drain.get_or_insert_with(|| Drain {
            target: queued_end,
            timer: Box::pin(tokio::time::sleep(timeout)),
        });
        if position >= drain.target {
            // What was queued went out in time: the same for what is now.
            drain.target = queued_end;
            drain.timer.as_mut().reset(Instant::now() + timeout);
        }
        ready!(drain.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client did not take what was queued for it within {timeout:?}"),
        )))
    }

    async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Writes the last frames (what is queued included), then closes;
    /// a client that does not take them in time is cut off.
    async fn close(mut self) {
        self.queue.close();
        self.take_queued();
        if let Some(answer) = self.held.take() {
            self.push(answer);
        }
        self.publish();
        let written = self.flush().await;
        let stream = self.reader.into_inner();
        match written {
            Ok(()) => stream.close_within(FLUSH_TIMEOUT).await,
            Err(e) => {
                tracing::debug!(error = %e, "write failed; cutting the client off");
                stream.cut_within(FLUSH_TIMEOUT).await;
            }
        }
    }

    /// Stops writing to a client that is gone or does not read (what is
    /// queued is dropped), and closes as gently as the stream allows.
    async fn cut(mut self) {
        self.publish();
        self.reader.into_inner().cut_within(FLUSH_TIMEOUT).await;
    }
}

/// `frame`, over the largest payload (`max_payload`), made to fit it: an
/// ERROR's message is cut (between two characters), an answer becomes
/// ERROR `frame too large`, so that every request still gets its one
/// answer and every ERROR is read. The smallest frame limit a server
/// accepts holds every ERROR code with some of its message.
fn fit(frame: Frame, max_payload: usize) -> Frame {
    match frame.kind {
        Kind::Error => {
            let error = ErrorPayload::decode(&frame.payload).expect("the server's own ERROR");
            error_that_fits(frame.id, error.code, &error.message, max_payload)
        }
        Kind::Response => {
            limited!(
                error,
                id = frame.id,
                len = frame.payload.len(),
                "an answer over the limit"
            );
            let why = "the answer exceeds the maximum frame length";
            error_that_fits(frame.id, ErrorCode::FRAME_TOO_LARGE, why, max_payload)
        }
        _ => frame,
    }
}

/// Queues the frame that tells the client why the connection ends, if any.
fn report<S: ServerIo>(wire: &mut Wire<S>, end: &End) {
    let frame = match end {
        End::Shutdown => Frame::goodbye("the server is shutting down"),
        End::Protocol(code, message) => Frame::error(0, *code, message),
        End::Refused(message) => Frame::error(0, ErrorCode::NOT_ALLOWED, message),
        End::UserLimit(message) => Frame::error(0, ErrorCode::OVERLOADED, message),
        End::PeerClosed | End::PeerGone | End::TooSlow => return,
    };
    wire.push(frame);
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
