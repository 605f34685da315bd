//! What each frame a client sends does, once the handshake is done: the
//! kinds' rules (`Kind::rules`) check its id; a request is charged to the
//! connection's share of the budget and started or left to wait; PING,
//! STATUS, DESCRIBE, CANCEL and unknown kinds are acted on at once.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::super::connection_context::{Cancel, RequestScope};
use super::super::in_flight::{error_that_fits, InFlight, Work};
use super::super::stream::{InError, StreamIo};
use super::super::topics::Subscriber;
use super::super::waiting::{Job, Waiter};
use super::super::{ConnectionContext, Handler, ServiceError, Shared};
use super::state::{chore, Phase, State};
use super::turn::Link;
use super::{log_refusal, Connection, End};
use crate::protocol::StreamDirection;
use crate::protocol::{decode_credit, CreditOverflow, Subscribe, DEFAULT_STREAM_WINDOW};
use crate::protocol::{ErrorCode, Frame, Kind, ReadHeader, RESERVED_METADATA_PREFIX};
use crate::transport::ServerIo;

impl<H: Handler> Connection<H> {
    /// Acts on one frame just read from the client. A request to start now
    /// is handed back; one that cannot start yet waits.
    pub(super) fn dispatch<'a, S: ServerIo, F: Future<Output = (u32, Frame)>>(
        &'a self,
        frame: Frame,
        link: &mut Link<S>,
        ctx: &ConnectionContext,
        in_flight: &mut InFlight<F>,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        let rules = frame.kind.rules();
        if frame.id == 0 && rules.needs_id() {
            // Its answer would carry id 0, which means "the connection".
            return Err(End::Protocol(
                ErrorCode::MALFORMED_FRAME,
                format!("a {:?} needs an id other than 0", frame.kind),
            ));
        }
        if rules.takes_new_id() && frame.id != 0 {
            // Its answer and the request's would share the id.
            check_not_in_flight(frame.id, in_flight, state)?;
        }
        match frame.kind {
            _ if rules.starts && state.phase == Phase::Draining => {
                // Read after the GOODBYE: answered at once, not started.
                link.wire.tally.requests += 1;
                let why = "the server is shutting down; the request was not started";
                link.push(Frame::error(frame.id, ErrorCode::SHUTTING_DOWN, why));
            }
            // Started, or left to wait (NOTIFY: `on_notify`, in order).
            Kind::Request | Kind::Call | Kind::Notify => {
                return self.admit(frame, link, ctx, in_flight, state)
            }
            Kind::Ping => link.push(Frame::new(Kind::Pong, frame.id, frame.payload)),
            Kind::Status => {
                let status = status_that_fits(&self.shared, self.config.max_payload());
                link.push(match status {
                    Some(status) => Frame::response(frame.id, status),
                    None => {
                        let why = "the STATUS answer does not fit the frame limit";
                        Frame::error(frame.id, ErrorCode::FRAME_TOO_LARGE, why)
                    }
                });
            }
            Kind::Cancel => cancel(frame.id, link, in_flight, state),
            Kind::Describe => link.push(self.describe(frame.id)),
            Kind::Item | Kind::Credit | Kind::End => {
                return on_stream_frame(frame, link, in_flight, state)
            }
            Kind::Subscribe => return Ok(self.subscribe(frame, link, ctx, in_flight, state)),
            Kind::Unknown(_) if frame.id == 0 => {
                tracing::debug!(kind = ?frame.kind, "ignoring a frame of an unknown kind");
                state.unanswered();
            }
            Kind::Unknown(byte) => {
                let why = format!("unknown kind {byte}");
                link.push(Frame::error(frame.id, ErrorCode::UNKNOWN_KIND, &why));
            }
            // A second HELLO, or kinds only a server sends.
            Kind::Hello | Kind::Response | Kind::Error | Kind::Goodbye | Kind::Pong => {
                return Err(End::Protocol(
                    ErrorCode::UNEXPECTED_FRAME,
                    format!("a client may not send {:?} after the handshake", frame.kind),
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
        link: &mut Link<S>,
        ctx: &ConnectionContext,
        in_flight: &InFlight<F>,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        // Its id is new: checked by `dispatch` before anything answers it.
        let (kind, id) = (frame.kind, frame.id);
        let (job, held) = match Job::read(frame) {
            Ok(job) => job,
            Err((code, why)) => {
                self.answer_now(link, id, code, &why);
                return Ok(None);
            }
        };
        if let Job::Call { header, .. } = &job {
            let access = &self.config.access;
            if access.has_operation_rules() {
                if let Err(refusal) = access.check_operation(header.method.as_str(), ctx.caller()) {
                    log_refusal(&refusal, ctx.caller());
                    self.answer_now(link, id, ErrorCode::NOT_ALLOWED, &refusal.to_string());
                    return Ok(None);
                }
            }
        }
        if kind == Kind::Notify {
            state.unanswered();
        }
        // A CALL of a streaming method is a stream (revision 2.2).
        let stream = match &job {
            Job::Call { header, .. } => self.stream_direction(header.method.as_str()),
            _ => None,
        };
        if stream.is_some() {
            if let Err((code, why)) = may_open_stream(in_flight, state) {
                self.answer_now(link, id, code, why);
                return Ok(None);
            }
        }
        if !state.share.try_hold(held) {
            let why = format!(
                "the server holds its budget of {} bytes for its clients' requests; try again later",
                self.config.input_budget.limit()
            );
            if kind == Kind::Notify {
                return Err(End::Protocol(ErrorCode::OVERLOADED, why));
            }
            self.answer_now(link, id, ErrorCode::OVERLOADED, &why);
            return Ok(None);
        }
        if stream.is_some() {
            // A stream never waits at the in-flight limit: the frames
            // that keep it going could be stuck behind what waits there.
            return self.start_job(job, held, None, stream, link, ctx, state);
        }
        let free = match job {
            Job::Notify(_) => true,
            _ => in_flight.has_room(),
        };
        if free && state.chore.is_none() && state.waiting.is_empty() {
            return self.start_job(job, held, None, None, link, ctx, state);
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
    /// to `on_notify`. `stream`: the job is a CALL of a streaming method
    /// that streams this way.
    #[allow(clippy::too_many_arguments)]
    fn start_job<'a, S: ServerIo>(
        &'a self,
        job: Job,
        held: usize,
        read_at: Option<Instant>,
        stream: Option<StreamDirection>,
        link: &mut Link<S>,
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
                stream: None,
            })),
            Job::Call { id, header, params } => {
                let work = match self.call_work(id, &header, params, stream) {
                    Ok(work) => work,
                    Err(err) => {
                        state.share.release(held);
                        self.answer_now(link, id, err.code(), err.message());
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
                    cancelled: Cancel::default(),
                };
                let (work, stream) = work;
                Ok(Some(Start {
                    id,
                    work,
                    ctx: ctx.for_request(Arc::new(scope)),
                    deadline: own.or(waited),
                    held,
                    stream,
                }))
            }
        }
    }

    /// A job that waited and may start now (or, shutting down, is
    /// answered `shutting down` unstarted).
    pub(super) fn unparked<'a, S: ServerIo>(
        &'a self,
        waiter: Waiter,
        link: &mut Link<S>,
        ctx: &ConnectionContext,
        state: &mut State<'a>,
    ) -> Result<Option<Start<'a>>, End> {
        if let (Some(id), Phase::Draining) = (waiter.job.id(), state.phase) {
            state.share.release(waiter.held);
            link.wire.tally.requests += 1;
            let why = "the server is shutting down; the request was not started";
            link.push(Frame::error(id, ErrorCode::SHUTTING_DOWN, why));
            return Ok(None);
        }
        let Waiter {
            job, held, read_at, ..
        } = waiter;
        self.start_job(job, held, Some(read_at), None, link, ctx, state)
    }

    /// A waiting request whose deadline (its own, or the server's request
    /// timeout) passed before it could start.
    pub(super) fn expired<S: ServerIo>(
        &self,
        waiter: Waiter,
        link: &mut Link<S>,
        state: &mut State<'_>,
    ) {
        state.share.release(waiter.held);
        let Some(id) = waiter.job.id() else {
            return;
        };
        let why = match waiter.job.own_timeout() {
            Some(_) => "the request's timeout passed while it waited for a slot",
            None => "the request waited longer than the server's request timeout",
        };
        link.wire.tally.requests += 1;
        link.push(Frame::error(id, ErrorCode::TIMED_OUT, why));
    }

    /// A SUBSCRIBE (revision 2.2): refused with its id (`bad request`,
    /// `unknown method`, `not allowed`, `overloaded`, or `shutting down`
    /// after GOODBYE), else started at once as a stream outside the
    /// in-flight limit, ended by the service's side (its last answer) or
    /// by CANCEL.
    fn subscribe<'a, S: ServerIo, F: Future<Output = (u32, Frame)>>(
        &'a self,
        frame: Frame,
        link: &mut Link<S>,
        ctx: &ConnectionContext,
        in_flight: &InFlight<F>,
        state: &mut State<'a>,
    ) -> Option<Start<'a>> {
        let id = frame.id;
        let (code, why) = match self.subscription(&frame.payload, ctx, in_flight, state) {
            Ok((topic, encoding)) => {
                let window = DEFAULT_STREAM_WINDOW;
                let max = self.config.max_payload();
                let counters = &self.shared.push;
                let subscriber = Subscriber::new(id, encoding, window, max, counters.clone());
                let publisher = ctx.publisher().expect("checked: the service has topics");
                publisher.subscribe(&topic, subscriber.clone());
                let ending = Box::pin(subscriber.clone().last_answer());
                return Some(Start {
                    id,
                    work: Work::Wait(ending),
                    ctx: ctx.clone(),
                    deadline: None,
                    held: 0,
                    stream: Some(StreamIo::subscription(subscriber, counters)),
                });
            }
            Err(refused) => refused,
        };
        self.answer_now(link, id, code, &why);
        None
    }

    /// The topic and encoding of a SUBSCRIBE's `payload`, if this client
    /// may subscribe to it now.
    fn subscription<F: Future<Output = (u32, Frame)>>(
        &self,
        payload: &[u8],
        ctx: &ConnectionContext,
        in_flight: &InFlight<F>,
        state: &State<'_>,
    ) -> Result<(String, crate::protocol::Encoding), (ErrorCode, String)> {
        let bad = |why: String| (ErrorCode::BAD_REQUEST, why);
        if state.phase == Phase::Draining {
            let why = "the server is shutting down; the subscription was not opened";
            return Err((ErrorCode::SHUTTING_DOWN, why.into()));
        }
        let subscribe = Subscribe::decode(payload).map_err(|e| bad(e.to_string()))?;
        if !state.takes_items {
            let why = "a subscription needs a client that accepts ITEM and CREDIT \
                       (kinds 13 and 14 in its HELLO)";
            return Err(bad(why.into()));
        }
        let calls = self.config.calls.as_ref().map(|calls| &*calls.0);
        let offered = calls.map_or(&[][..], |calls| calls.encodings());
        let encoding = crate::protocol::Encoding::from_u8(subscribe.encoding)
            .filter(|e| offered.contains(e))
            .ok_or_else(|| {
                let names: Vec<&str> = offered.iter().map(|e| e.name()).collect();
                bad(format!(
                    "encoding {} is not offered; this server offers [{}]",
                    subscribe.encoding,
                    names.join(", ")
                ))
            })?;
        let topic = subscribe.topic;
        let known = ctx.publisher().is_some_and(|p| p.has_topic(&topic));
        if !known {
            return Err((ErrorCode::UNKNOWN_METHOD, format!("no topic {topic:?}")));
        }
        let access = &self.config.access;
        if access.has_operation_rules() {
            let operation = format!("topic:{topic}");
            if let Err(refusal) = access.check_operation(&operation, ctx.caller()) {
                log_refusal(&refusal, ctx.caller());
                return Err((ErrorCode::NOT_ALLOWED, refusal.to_string()));
            }
        }
        if in_flight.subscriptions() >= MAX_SUBSCRIPTIONS {
            let why = "this connection has as many subscriptions open as the server allows (64)";
            return Err((ErrorCode::OVERLOADED, why.into()));
        }
        Ok((topic, encoding))
    }

    /// Whether `method` is one of the service's streaming methods, and
    /// which way it streams.
    fn stream_direction(&self, method: &str) -> Option<StreamDirection> {
        let calls = self.config.calls.as_ref()?;
        calls.0.stream_direction(method)
    }

    /// What runs CALL `id`: the byte handler for the empty method, else one
    /// of the service's methods in an encoding it offers; for a streaming
    /// method (`stream`), the stream's halves too.
    fn call_work<'a>(
        &'a self,
        id: u32,
        header: &ReadHeader,
        params: bytes::Bytes,
        stream: Option<StreamDirection>,
    ) -> Result<(Work<'a>, Option<Arc<StreamIo>>), ServiceError> {
        let method = header.method.as_str();
        if method.is_empty() {
            return Ok((Work::Bytes(params), None));
        }
        let Some(calls) = &self.config.calls else {
            return Err(ServiceError::unknown_method(method));
        };
        let calls = &*calls.0;
        let offered = calls.encodings();
        match header.known_encoding().filter(|e| offered.contains(e)) {
            Some(encoding) => Ok(match stream {
                None => (
                    Work::Call {
                        calls,
                        encoding,
                        params,
                    },
                    None,
                ),
                Some(direction) => {
                    let window = DEFAULT_STREAM_WINDOW;
                    let max = self.config.max_payload();
                    let (io, items) = StreamIo::open(id, direction, window, max, &self.shared.push);
                    let work = Work::Stream {
                        calls,
                        encoding,
                        params,
                        items: Box::new(items),
                    };
                    (work, Some(io))
                }
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
    fn answer_now<S: ServerIo>(&self, link: &mut Link<S>, id: u32, code: ErrorCode, why: &str) {
        link.wire.tally.requests += 1;
        link.push(error_that_fits(id, code, why, self.config.max_payload()));
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
pub(super) struct Start<'a> {
    pub(super) id: u32,
    pub(super) work: Work<'a>,
    pub(super) ctx: ConnectionContext,
    pub(super) deadline: Option<Instant>,
    pub(super) held: usize,
    /// A stream's halves (revision 2.2): it starts outside the in-flight
    /// limit, with no request timeout.
    pub(super) stream: Option<Arc<StreamIo>>,
}

/// The streams one connection may have open at once (PROTOCOL.md,
/// "Streams": pipesvc 64).
pub(super) const MAX_STREAMS: usize = 64;

/// The subscriptions one connection may have open at once (PROTOCOL.md,
/// "SUBSCRIBE": pipesvc 64).
pub(super) const MAX_SUBSCRIPTIONS: usize = 64;

/// Whether the client may open one more stream: it listed ITEM and CREDIT
/// in its HELLO, and has fewer than [`MAX_STREAMS`] open.
fn may_open_stream<F: Future<Output = (u32, Frame)>>(
    in_flight: &InFlight<F>,
    state: &State<'_>,
) -> Result<(), (ErrorCode, &'static str)> {
    if !state.takes_items {
        let why = "a streaming method needs a client that accepts ITEM and CREDIT \
                   (kinds 13 and 14 in its HELLO)";
        return Err((ErrorCode::BAD_REQUEST, why));
    }
    if in_flight.streams() >= MAX_STREAMS {
        let why = "this connection has as many streams open as the server allows (64)";
        return Err((ErrorCode::OVERLOADED, why));
    }
    Ok(())
}

pub(super) fn duplicate(id: u32) -> End {
    End::Protocol(
        ErrorCode::DUPLICATE_ID,
        format!("request id {id} is already in flight"),
    )
}

/// An ITEM, CREDIT or END from the client (revision 2.2), for the stream
/// with its id: ignored once the stream ended (it crossed the last
/// answer); `unexpected frame` for a request that is not a stream, or a
/// direction the stream does not have; `flow control` past the credit.
fn on_stream_frame<S: ServerIo, F: Future<Output = (u32, Frame)>>(
    frame: Frame,
    link: &mut Link<S>,
    in_flight: &mut InFlight<F>,
    state: &mut State<'_>,
) -> Result<Option<Start<'static>>, End> {
    let (kind, id) = (frame.kind, frame.id);
    let credit = match kind {
        Kind::Credit => Some(decode_credit(&frame.payload).ok_or_else(|| {
            let why = "a CREDIT carries a u32";
            End::Protocol(ErrorCode::MALFORMED_FRAME, why.into())
        })?),
        _ => None,
    };
    let unexpected = |why: &str| End::Protocol(ErrorCode::UNEXPECTED_FRAME, why.to_owned());
    let stream = match in_flight.stream(id) {
        None if state.waiting.contains(id) => {
            return Err(unexpected(&format!(
                "a {kind:?} for request {id}, which is not a stream"
            )))
        }
        None => {
            tracing::debug!(
                id,
                ?kind,
                "a frame for a stream no longer in flight: ignored"
            );
            state.unanswered();
            return Ok(None);
        }
        Some(None) => {
            return Err(unexpected(&format!(
                "a {kind:?} for request {id}, which is not a stream"
            )))
        }
        Some(Some(stream)) => stream.clone(),
    };
    if let Some(bytes) = credit {
        let flow = |e: CreditOverflow| End::Protocol(ErrorCode::FLOW_CONTROL, e.to_string());
        // A client stream has no server credit: ignored.
        if let Some(out) = &stream.out {
            out.grant(bytes).map_err(flow)?;
        }
        if let Some(subscriber) = &stream.subscriber {
            subscriber.grant(bytes).map_err(flow)?;
        }
        return Ok(None);
    }
    let Some(input) = &stream.input else {
        let why = format!("a {kind:?} on stream {id}, which takes no items from the client");
        return Err(unexpected(&why));
    };
    let received = match kind {
        Kind::End => input.end(),
        _ => input.receive(&frame.payload),
    };
    match received {
        Ok(()) if kind == Kind::Item => {
            let len = frame.payload.len();
            if state.share.try_hold(len) {
                in_flight.hold(id, len);
            } else {
                // No room for the client's items: the stream ends.
                in_flight.cancel_one(id);
                link.wire.tally.requests += 1;
                let why = "the server has no room for this stream's items now; try again later";
                link.push(Frame::error(id, ErrorCode::OVERLOADED, why));
            }
            Ok(None)
        }
        Ok(()) => Ok(None),
        Err(InError::FlowControl) => Err(End::Protocol(
            ErrorCode::FLOW_CONTROL,
            format!("an ITEM on stream {id}, whose credit was used up"),
        )),
        Err(InError::Malformed(e)) => Err(End::Protocol(ErrorCode::MALFORMED_FRAME, e.to_string())),
        Err(InError::Ended) => Err(unexpected(&format!(
            "a {kind:?} on stream {id} after its END"
        ))),
    }
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
    link: &mut Link<S>,
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
    link.wire.tally.requests += 1;
    // The text of PROTOCOL.md's example exchange.
    link.push(Frame::error(id, ErrorCode::CANCELLED, "cancelled"));
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
    json.push_str(
        "\",\"version\":\"\",\"protocol\":2,\"encodings\":[],\"methods\":[],\"topics\":[]}",
    );
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
    // Revision 2.2's five counts go first when even the fixed fields do
    // not fit (PROTOCOL.md, "Status").
    let push = fixed <= max_payload;
    let fixed = if push { fixed } else { fixed - 40 };
    let room = max_payload.checked_sub(fixed)? / PER_CODE;
    tracing::debug!(
        codes = status.errors.len(),
        room,
        "STATUS error counts cut to fit"
    );
    status.errors.truncate(room);
    Some(status.encode_with_push(push))
}
