//! The requests one connection is handling.
//!
//! Handler futures run inside the connection's own task (as in hyper's
//! HTTP/1 server): no task is spawned and no channel is crossed per
//! request, and every answer that is ready goes out in the connection's
//! next write. Handlers still run concurrently with each other; CPU-heavy
//! work belongs in `spawn_blocking` or a task of its own.
//!
//! A request answers once (its future's output), or many times: a
//! streaming request also has [`Parts`], frames it sends before its last
//! answer (a stream's items), which the slot hands out as they are ready
//! and always before the last one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::FutureExt;

use tokio::time::Instant;

use super::connection_context::RequestScope;
use super::stream::{StreamIo, StreamItems};
use super::{lock, Calls, ConnectionContext, Handler, ServiceError};
use crate::id_hash::IdHash;
use crate::log_limit::limited;
use crate::protocol::{decode_credit, Encoding, ErrorCode, ErrorPayload, Frame, Kind};

/// Requests started and not yet answered. `F` is the future of one request,
/// as made by [`run_request`]; it yields the request's id and its answer.
///
/// Each future lives in a slot that is reused by later requests (the
/// future is replaced in place), with a waker made once per slot: once as
/// many slots exist as requests run at once, starting and finishing a
/// request allocates nothing.
pub(super) struct InFlight<F> {
    slots: Vec<Slot<F>>,
    /// Slots with no request, ready for the next one.
    free: Vec<usize>,
    /// The id of each running request, and its slot (so that one can be
    /// cancelled by id).
    ids: HashMap<u32, usize, IdHash>,
    woken: Arc<Woken>,
    limit: usize,
    /// Bytes held by requests that have finished (or were dropped) since
    /// the connection last took this count ([`InFlight::take_released`]).
    released: usize,
    /// Requests running under the server's request timeout.
    untimed: usize,
    /// Streams among the requests: they do not count against `limit`.
    streams: usize,
    /// Subscriptions among the streams.
    subscriptions: usize,
}

struct Slot<F> {
    future: Pin<Box<Option<F>>>,
    waker: Arc<SlotWaker>,
    /// What a streaming request sends before its last answer.
    parts: Option<Arc<dyn Parts>>,
    /// A stream's halves (revision 2.2), for the client's ITEM, CREDIT and
    /// END; also `parts`.
    stream: Option<Arc<StreamIo>>,
    /// The last answer of a request whose future finished while parts
    /// were still to be sent: it waits for them.
    last: Option<Frame>,
    /// What the request holds of the connection's share of the budget.
    held: usize,
    /// The connection's [`Tick`](super::waiting::Tick) when it started, if
    /// the server's request timeout applies to it (it has no deadline of
    /// its own).
    started: Option<u32>,
    /// When it is stopped with ERROR `timed out`, if it has a deadline
    /// (kept by the connection's [`Deadlines`](super::waiting::Deadlines)).
    deadline: Option<Instant>,
}

/// The slots to poll: those just started, and those whose waker fired.
#[derive(Default)]
struct Woken {
    slots: Mutex<VecDeque<usize>>,
    /// The connection task, to wake when a slot is.
    task: AtomicWaker,
}

struct SlotWaker {
    index: usize,
    /// Whether the slot is in the queue already.
    queued: AtomicBool,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.woken.slots).push_back(self.index);
            self.woken.task.wake();
        }
    }
}

/// One frame a request sends: part of its answer (an item of a stream),
/// or its last (the answer; the request is done and its id free).
#[derive(Debug)]
pub(super) enum Answer {
    Part(Frame),
    Last(Frame),
}

impl Answer {
    pub(super) fn into_frame(self) -> Frame {
        match self {
            Answer::Part(frame) | Answer::Last(frame) => frame,
        }
    }
}

/// The frames a streaming request sends before its last answer, made by
/// its handler (or the server) and taken by the connection as it can send
/// them.
pub(super) trait Parts: Send + Sync {
    /// Wakes `waker` whenever a part is ready: the request's slot is then
    /// polled for it.
    fn attach(&self, waker: Waker);

    /// The next frame that may be sent now, if any.
    fn next_part(&self) -> Option<Frame>;

    /// Whether every part was taken: only then is the last answer sent.
    fn is_drained(&self) -> bool;
}

impl<F: Future<Output = (u32, Frame)>> InFlight<F> {
    pub(super) fn new(limit: usize) -> InFlight<F> {
        InFlight {
            slots: Vec::new(),
            free: Vec::new(),
            ids: HashMap::default(),
            woken: Arc::default(),
            limit,
            released: 0,
            untimed: 0,
            streams: 0,
            subscriptions: 0,
        }
    }

    /// Whether another request may start (streams do not count).
    pub(super) fn has_room(&self) -> bool {
        self.ids.len() - self.streams < self.limit
    }

    /// How many streams of streaming methods are open.
    pub(super) fn streams(&self) -> usize {
        self.streams - self.subscriptions
    }

    /// How many subscriptions are open.
    pub(super) fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// Ends every subscription (the server sends GOODBYE: they end at
    /// once), calling `answer` with each one's id.
    pub(super) fn end_subscriptions(&mut self, mut answer: impl FnMut(u32)) {
        if self.subscriptions == 0 {
            return;
        }
        let ids: Vec<u32> = self
            .ids
            .iter()
            .filter(|&(_, &index)| {
                let stream = self.slots[index].stream.as_ref();
                stream.is_some_and(|s| s.subscriber.is_some())
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.cancel_one(id);
            answer(id);
        }
    }

    /// The request `id`, if it is in flight: `Some(Some(stream))` for a
    /// stream, `Some(None)` for a request that does not stream.
    pub(super) fn stream(&self, id: u32) -> Option<Option<&Arc<StreamIo>>> {
        let &index = self.ids.get(&id)?;
        Some(self.slots[index].stream.as_ref())
    }

    /// Stream `id` holds `bytes` more of the budget (items read from the
    /// client), given back as the server grants them back.
    pub(super) fn hold(&mut self, id: u32, bytes: usize) {
        if let Some(&index) = self.ids.get(&id) {
            self.slots[index].held += bytes;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether request `id` is running.
    pub(super) fn contains(&self, id: u32) -> bool {
        self.ids.contains_key(&id)
    }

    /// Drops request `id` (its future, so its handler stops) and frees its
    /// slot at once; `false` if it is not running (answered already, or
    /// never started). The caller answers it.
    pub(super) fn cancel_one(&mut self, id: u32) -> bool {
        let Some(index) = self.ids.remove(&id) else {
            return false;
        };
        // A wake still queued for the slot finds it empty (or finds the
        // next request there, which then gets one poll more: harmless).
        self.free_slot(index);
        true
    }

    /// Empties slot `index` (dropping its request) and counts what the
    /// request held as released.
    fn free_slot(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.future.as_mut().set(None);
        slot.parts = None;
        if let Some(stream) = slot.stream.take() {
            stream.close();
            self.streams -= 1;
            self.subscriptions -= usize::from(stream.subscriber.is_some());
        }
        slot.last = None;
        self.released += std::mem::take(&mut slot.held);
        if slot.started.take().is_some() {
            self.untimed -= 1;
        }
        slot.deadline = None;
        self.free.push(index);
    }

    /// The bytes held by requests that finished or were dropped since the
    /// last call, for the connection to give back to its share.
    pub(super) fn take_released(&mut self) -> usize {
        std::mem::take(&mut self.released)
    }

    /// Starts `request`, whose id is `id` and which holds `held` bytes;
    /// `started` is the tick it starts at if the server's request timeout
    /// applies to it; `parts`, what it sends before its last answer if it
    /// streams. Refuses an id still in flight. It is first polled by the
    /// next [`InFlight::poll_answer`].
    // `request` makes the future where the slot keeps it (with the
    // function inlined): a request's future, passed by value, was moved
    // three times on its way into the slot (memcpy, 210 instructions a
    // request).
    #[inline]
    pub(super) fn start(
        &mut self,
        id: u32,
        request: impl FnOnce() -> F,
        held: usize,
        limit: Limit,
        parts: Option<Arc<dyn Parts>>,
    ) -> Result<(), u32> {
        let index = self.free.pop().unwrap_or_else(|| self.new_slot());
        // One lookup for the check and the insert.
        match self.ids.entry(id) {
            Entry::Occupied(_) => {
                self.free.push(index);
                return Err(id);
            }
            Entry::Vacant(vacant) => vacant.insert(index),
        };
        let slot = &mut self.slots[index];
        slot.future.as_mut().set(Some(request()));
        slot.held = held;
        (slot.started, slot.deadline) = match limit {
            Limit::None => (None, None),
            Limit::Tick(tick) => (Some(tick), None),
            Limit::Deadline(at) => (None, Some(at)),
        };
        if let Some(parts) = &parts {
            parts.attach(Waker::from(slot.waker.clone()));
        }
        slot.parts = parts;
        self.untimed += usize::from(slot.started.is_some());
        // Queued for its first poll without waking the connection's task:
        // that task is the caller, and polls the queue next. (A wake would
        // schedule it again, and could hand it to another worker thread.)
        if !slot.waker.queued.swap(true, Ordering::AcqRel) {
            lock(&self.woken.slots).push_back(index);
        }
        Ok(())
    }

    /// Starts stream `id` (revision 2.2): a request outside the in-flight
    /// limit, with no request timeout, whose frames before its last answer
    /// come from `stream`.
    pub(super) fn start_stream(
        &mut self,
        id: u32,
        request: impl FnOnce() -> F,
        held: usize,
        stream: Arc<StreamIo>,
    ) -> Result<(), u32> {
        let parts: Arc<dyn Parts> = stream.clone();
        self.start(id, request, held, Limit::None, Some(parts))?;
        let index = self.ids[&id];
        self.subscriptions += usize::from(stream.subscriber.is_some());
        self.slots[index].stream = Some(stream);
        self.streams += 1;
        Ok(())
    }

    fn new_slot(&mut self) -> usize {
        let index = self.slots.len();
        self.slots.push(Slot {
            future: Box::pin(None),
            waker: Arc::new(SlotWaker {
                index,
                queued: AtomicBool::new(false),
                woken: self.woken.clone(),
            }),
            parts: None,
            stream: None,
            last: None,
            held: 0,
            started: None,
            deadline: None,
        });
        index
    }

    /// Drops every request whose deadline is `now` or earlier, calling
    /// `answer` with each one's id; returns the earliest deadline left.
    pub(super) fn expire_deadlines(
        &mut self,
        now: Instant,
        mut answer: impl FnMut(u32),
    ) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut due = Vec::new();
        for (&id, &index) in &self.ids {
            match self.slots[index].deadline {
                Some(at) if at <= now => due.push((id, index)),
                Some(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                None => {}
            }
        }
        for (id, index) in due {
            self.ids.remove(&id);
            self.free_slot(index);
            answer(id);
        }
        earliest
    }

    /// Drops every request that started at tick `before` or earlier under
    /// the server's request timeout, calling `answer` with each one's id.
    pub(super) fn expire(&mut self, before: u32, mut answer: impl FnMut(u32)) {
        let expired: Vec<(u32, usize)> = self
            .ids
            .iter()
            .filter(|&(_, &index)| {
                self.slots[index]
                    .started
                    .is_some_and(|at| before.wrapping_sub(at) < u32::MAX / 2)
            })
            .map(|(&id, &index)| (id, index))
            .collect();
        for (id, index) in expired {
            self.ids.remove(&id);
            self.free_slot(index);
            answer(id);
        }
    }

    /// Whether any request runs under the server's request timeout.
    pub(super) fn has_untimed(&self) -> bool {
        self.untimed > 0
    }

    /// Gives back the slots (and their futures' memory) a burst of
    /// requests left, once none is in flight: a connection keeps what its
    /// usual traffic needs, not the most it ever ran at once.
    pub(super) fn trim(&mut self) {
        if !self.ids.is_empty() || self.slots.is_empty() {
            return;
        }
        self.slots = Vec::new();
        self.free = Vec::new();
        // Its seed kept: making one costs a SipHash.
        self.ids = HashMap::with_hasher(self.ids.hasher().clone());
        // Wakes still queued name slots that are gone.
        *lock(&self.woken.slots) = VecDeque::new();
    }

    /// Whether a burst left slots to give back.
    pub(super) fn has_spare(&self) -> bool {
        self.ids.is_empty() && !self.slots.is_empty()
    }

    /// The next frame a request has ready: a part of a streaming request's
    /// answer, or a request's last answer, whose id is free again from
    /// here on (the client may reuse it as soon as it has the answer).
    ///
    /// Polls at most [`POLL_BUDGET`] request futures per call: a future
    /// that wakes itself at once (or many that are woken over and over)
    /// cannot keep the connection's task from its other work and from
    /// yielding to the runtime. Past the budget the task is woken again
    /// and this returns `Pending`, as tokio's own budget does.
    ///
    /// Registers the task's waker only if `registered` says this poll of
    /// the task has not yet (and sets it): the connection's turn calls
    /// this several times a poll.
    pub(super) fn poll_answer(
        &mut self,
        cx: &mut TaskContext<'_>,
        registered: &mut bool,
    ) -> Poll<Option<Answer>> {
        if !*registered {
            self.woken.task.register(cx.waker());
            *registered = true;
        }
        for _ in 0..POLL_BUDGET {
            let Some(index) = lock(&self.woken.slots).pop_front() else {
                return match self.is_empty() {
                    true => Poll::Ready(None),
                    false => Poll::Pending,
                };
            };
            // A wake for a slot given back since ([`InFlight::trim`]).
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            slot.waker.queued.store(false, Ordering::Release);
            if let Some(parts) = &slot.parts {
                if let Some(answer) = poll_parts(parts, &mut slot.last, &slot.waker) {
                    if let Answer::Part(frame) = &answer {
                        // The client's items granted back are no longer held.
                        let granted = granted(frame).min(slot.held);
                        slot.held -= granted;
                        self.released += granted;
                    }
                    if let Answer::Last(frame) = &answer {
                        let id = frame.id;
                        self.free_slot(index);
                        self.ids.remove(&id);
                    }
                    return Poll::Ready(Some(answer));
                }
            }
            // A slot woken after its request finished has nothing to poll.
            let Some(future) = slot.future.as_mut().as_pin_mut() else {
                continue;
            };
            let waker = Waker::from(slot.waker.clone());
            if let Poll::Ready((id, answer)) = future.poll(&mut TaskContext::from_waker(&waker)) {
                if slot.parts.as_ref().is_some_and(|parts| !parts.is_drained()) {
                    // Its parts go first: it answers once they are sent.
                    slot.future.as_mut().set(None);
                    slot.last = Some(answer);
                    slot.waker.wake_by_ref();
                    continue;
                }
                self.free_slot(index);
                self.ids.remove(&id);
                return Poll::Ready(Some(Answer::Last(answer)));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Drops every running request and answers each with ERROR `code`.
    pub(super) fn cancel<'a>(
        &'a mut self,
        code: ErrorCode,
        why: &'a str,
    ) -> impl Iterator<Item = Frame> + 'a {
        self.drop_all();
        self.ids
            .drain()
            .map(move |(id, _)| Frame::error(id, code, why))
    }

    /// Drops every running request unanswered (the connection is unusable).
    pub(super) fn abort(&mut self) {
        self.drop_all();
        self.ids.clear();
    }

    fn drop_all(&mut self) {
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.future.is_some() || slot.last.is_some() {
                self.free_slot(index);
            }
        }
    }
}

/// What stops a request that runs too long.
#[derive(Clone, Copy, Debug)]
pub(super) enum Limit {
    /// Nothing (a stream; or no timeout applies).
    None,
    /// The server's request timeout, counted in the connection's ticks
    /// from the one it started in.
    Tick(u32),
    /// A deadline: its own, or the request timeout of one that waited.
    Deadline(Instant),
}

/// Request futures polled per [`InFlight::poll_answer`] call.
const POLL_BUDGET: usize = 64;

/// The next frame of a streaming request's slot: a part if one is ready
/// (the slot is polled again for the next), or the last answer its future
/// left once every part is sent.
fn poll_parts(
    parts: &Arc<dyn Parts>,
    last: &mut Option<Frame>,
    waker: &Arc<SlotWaker>,
) -> Option<Answer> {
    if let Some(part) = parts.next_part() {
        waker.wake_by_ref();
        return Some(Answer::Part(part));
    }
    match last {
        Some(_) if parts.is_drained() => last.take().map(Answer::Last),
        _ => None,
    }
}

/// The bytes a CREDIT the server sends grants (0 for other frames).
fn granted(frame: &Frame) -> usize {
    match frame.kind {
        Kind::Credit => decode_credit(&frame.payload).map_or(0, |n| n as usize),
        _ => 0,
    }
}

/// What one request asks for.
pub(super) enum Work<'a> {
    /// A REQUEST, or a CALL of the empty method: the byte handler, with
    /// these bytes.
    Bytes(Bytes),
    /// A CALL of one of the service's typed methods (the method is the
    /// request scope's).
    Call {
        calls: &'a dyn Calls,
        encoding: Encoding,
        params: Bytes,
    },
    /// What ends a subscription (revision 2.2): its last answer, a
    /// RESPONSE or an ERROR.
    Wait(futures_util::future::BoxFuture<'static, Result<Bytes, ServiceError>>),
    /// A CALL of one of the service's streaming methods (revision 2.2).
    Stream {
        calls: &'a dyn Calls,
        encoding: Encoding,
        params: Bytes,
        /// Boxed: every request's `Work` (and the future that runs it) is
        /// as large as its largest variant, and only streams carry these.
        items: Box<StreamItems>,
    },
}

/// Runs one request (the byte handler, or a typed method) and makes its
/// answer: the response, the handler's error, ERROR `handler failed` if it
/// panicked, or ERROR `timed out` if `deadline` passed first (the handler
/// is dropped then). The request's cancelled signal (protocol 2: `ctx`
/// has a request scope) fires if the handler does not finish: at the
/// deadline, or when this future is dropped (cancelled by the client, the
/// connection gone, the server shut down). One future type for every
/// request, so that [`InFlight`]'s slots hold any of them.
pub(super) async fn run_request<H: Handler>(
    handler: &H,
    id: u32,
    work: Work<'_>,
    ctx: ConnectionContext,
    deadline: Option<Instant>,
) -> (u32, Frame) {
    let max_payload = ctx.max_payload();
    let mut guard = CancelOnDrop(ctx.request_scope().cloned());
    let run = async {
        match work {
            Work::Bytes(request) => handler.call(request, ctx).await,
            Work::Call {
                calls,
                encoding,
                params,
            } => {
                let scope = ctx.request_scope().cloned();
                let method = scope.as_deref().map_or("", |s| s.method.as_str());
                calls.call(method, encoding, params, ctx).await
            }
            Work::Wait(ending) => ending.await,
            Work::Stream {
                calls,
                encoding,
                params,
                items,
            } => {
                let scope = ctx.request_scope().cloned();
                let method = scope.as_deref().map_or("", |s| s.method.as_str());
                calls
                    .call_stream(method, encoding, params, *items, ctx)
                    .await
            }
        }
    };
    let run = AssertUnwindSafe(run).catch_unwind();
    let outcome = match deadline {
        None => run.await,
        Some(at) => match tokio::time::timeout_at(at, run).await {
            Ok(outcome) => outcome,
            // The guard fires the cancelled signal as this returns.
            Err(_) => {
                let why = "the request did not finish within its timeout";
                return (id, Frame::error(id, ErrorCode::TIMED_OUT, why));
            }
        },
    };
    guard.0 = None;
    (id, answer(id, outcome, max_payload))
}

/// Fires a request's cancelled signal when dropped, unless emptied first
/// (the handler finished).
struct CancelOnDrop(Option<Arc<RequestScope>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take() {
            scope.cancelled.fire();
        }
    }
}

/// The frame that answers request `id`.
fn answer(
    id: u32,
    outcome: std::thread::Result<Result<Bytes, ServiceError>>,
    max_payload: usize,
) -> Frame {
    match outcome {
        Ok(Ok(body)) if body.len() > max_payload => {
            limited!(
                error,
                id,
                len = body.len(),
                "response too large for one frame"
            );
            Frame::error(
                id,
                ErrorCode::FRAME_TOO_LARGE,
                &format!(
                    "the response of {} bytes exceeds the maximum of {max_payload}",
                    body.len()
                ),
            )
        }
        Ok(Ok(body)) => Frame::response(id, body),
        Ok(Err(err)) => error_that_fits(id, err.code(), err.message(), max_payload),
        Err(panic) => {
            limited!(error, id, panic = panic_message(&panic), "handler panicked");
            Frame::error(id, ErrorCode::HANDLER_FAILED, "the handler panicked")
        }
    }
}

/// What a panic said, for the log.
pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// ERROR `code` for request `id`, its message cut (between two characters)
/// to fit a payload of `max_payload` bytes: an over-long message must not
/// cost the request its answer.
pub(super) fn error_that_fits(
    id: u32,
    code: ErrorCode,
    message: &str,
    max_payload: usize,
) -> Frame {
    let room = max_payload.saturating_sub(ErrorPayload::encode(code, "").len());
    let mut end = message.len().min(room);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    if end < message.len() {
        limited!(
            warn,
            id,
            len = message.len(),
            "error message cut to fit one frame"
        );
    }
    Frame::error(id, code, &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parts from a queue the test fills.
    #[derive(Default)]
    struct Queue {
        frames: Mutex<VecDeque<Frame>>,
        waker: Mutex<Option<Waker>>,
    }

    impl Queue {
        fn push(&self, frame: Frame) {
            lock(&self.frames).push_back(frame);
            if let Some(waker) = lock(&self.waker).as_ref() {
                waker.wake_by_ref();
            }
        }
    }

    impl Parts for Queue {
        fn attach(&self, waker: Waker) {
            *lock(&self.waker) = Some(waker);
        }

        fn next_part(&self) -> Option<Frame> {
            lock(&self.frames).pop_front()
        }

        fn is_drained(&self) -> bool {
            lock(&self.frames).is_empty()
        }
    }

    fn next<F: Future<Output = (u32, Frame)>>(in_flight: &mut InFlight<F>) -> Poll<Option<Answer>> {
        let waker = futures_util::task::noop_waker();
        in_flight.poll_answer(&mut TaskContext::from_waker(&waker), &mut false)
    }

    fn part(n: u8) -> Frame {
        Frame::new(crate::protocol::Kind::Notify, 7, vec![n])
    }

    #[test]
    fn a_streaming_request_sends_its_parts_then_its_last_answer_and_only_then_frees_its_id() {
        let parts = Arc::new(Queue::default());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let request = async move {
            let _ = done_rx.await;
            (7, Frame::response(7, "last"))
        };
        let mut in_flight = InFlight::new(4);
        let handed: Arc<dyn Parts> = parts.clone();
        in_flight
            .start(7, || request, 0, Limit::None, Some(handed))
            .unwrap();
        assert!(next(&mut in_flight).is_pending());
        parts.push(part(1));
        parts.push(part(2));
        for n in [1, 2] {
            let Poll::Ready(Some(Answer::Part(frame))) = next(&mut in_flight) else {
                panic!("part {n}")
            };
            assert_eq!(frame.payload.as_ref(), [n]);
        }
        assert!(next(&mut in_flight).is_pending() && in_flight.contains(7));
        // The request finishes with a part still to send: the part first.
        parts.push(part(3));
        done_tx.send(()).unwrap();
        let mut answers = Vec::new();
        while let Poll::Ready(Some(answer)) = next(&mut in_flight) {
            answers.push(answer);
        }
        assert!(
            matches!(&answers[..], [Answer::Part(p), Answer::Last(last)]
                if p.payload.as_ref() == [3] && last.kind == crate::protocol::Kind::Response),
            "{answers:?}"
        );
        assert!(!in_flight.contains(7) && in_flight.is_empty());
    }

    #[test]
    fn an_error_message_is_cut_between_characters_to_fit() {
        let frame = error_that_fits(3, ErrorCode(1000), &"€".repeat(10), 2 + 7);
        let error = ErrorPayload::decode(&frame.payload).unwrap();
        assert_eq!(error.message, "€€");
        let whole = error_that_fits(3, ErrorCode(1000), "short", 100);
        assert_eq!(
            ErrorPayload::decode(&whole.payload).unwrap().message,
            "short"
        );
    }
}
