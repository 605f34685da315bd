//! The table of requests waiting for an answer, and the connection's fate.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::stream::{Delivery, Flow};
use super::writer::Writer;
use crate::error::{CloseReason, Error, Result};
use crate::id_hash::IdHash;
use crate::protocol::{ErrorCode, Frame, HelloReply, Kind, ServerHello};

type Waiter = oneshot::Sender<Result<Bytes>>;

/// Where a stream's ITEMs and last answer go (revision 2.2): the
/// application's end of it ([`super::stream::RawStream`]) and the credit
/// both sides count.
#[derive(Debug)]
pub(super) struct StreamSlot {
    deliveries: mpsc::UnboundedSender<Delivery>,
    flow: Arc<Flow>,
}

/// What the reader does with an ITEM or CREDIT, by the slot its id names.
pub(super) enum StreamRoute {
    /// A stream in flight: its credit.
    Open(Arc<Flow>),
    /// No stream in flight has the id (it ended, or was given up on, and
    /// the frame crossed its last answer or CANCEL): ignored.
    Gone,
    /// The id is that of a call that does not stream: a protocol error.
    NotAStream,
}

/// When a call gives up waiting for its answer, and what its timeout
/// then says.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expiry {
    /// The call's deadline.
    pub(super) at: Instant,
    /// The limit it was given, which the timeout names.
    pub(super) limit: Duration,
    /// What the timeout says the call waited for.
    waiting_for: &'static str,
}

impl Expiry {
    /// A call of `kind` that may take `limit` from now.
    pub(super) fn after(limit: Duration, kind: Kind) -> Expiry {
        Expiry {
            at: Instant::now() + limit,
            limit,
            waiting_for: waiting_for_answer(kind),
        }
    }

    /// The same deadline, for a wait whose timeout says it waited for
    /// `what` instead of the answer.
    pub(super) fn waiting_for(self, what: &'static str) -> Expiry {
        Expiry {
            waiting_for: what,
            ..self
        }
    }

    /// The call's timeout, naming what it waited for.
    pub(super) fn error(&self) -> Error {
        Error::Timeout(self.limit, self.waiting_for)
    }
}

/// `work`, or `expiry`'s timeout once its deadline passes first (without
/// one, `work` as it is).
pub(super) async fn within<T>(
    expiry: Option<Expiry>,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match expiry {
        None => work.await,
        Some(expiry) => tokio::time::timeout_at(expiry.at, work)
            .await
            .unwrap_or_else(|_| Err(expiry.error())),
    }
}

/// What a call of `kind` waits for, for its timeout's message.
fn waiting_for_answer(kind: Kind) -> &'static str {
    match kind {
        Kind::Ping => "waiting for the answer to a PING",
        Kind::Status => "waiting for the answer to STATUS",
        Kind::Describe => "waiting for the answer to DESCRIBE",
        Kind::Call => "waiting for the answer to the call",
        Kind::Request => "waiting for the answer to the request",
        // Not requests a client waits on.
        Kind::Hello
        | Kind::Response
        | Kind::Error
        | Kind::Notify
        | Kind::Goodbye
        | Kind::Pong
        | Kind::Cancel
        | Kind::Item
        | Kind::Credit
        | Kind::End
        | Kind::Subscribe
        | Kind::Unknown(_) => "waiting for an answer",
    }
}

/// A request id in the table.
#[derive(Debug)]
enum Slot {
    /// A caller waits for the answer, until its expiry if it has one.
    Waiting(Waiter, Option<Expiry>),
    /// The caller's deadline passed: it was sent its timeout and is about
    /// to drop its [`Registration`], which sends CANCEL (or frees the id).
    Expired,
    /// A stream: ITEMs, then one last answer (revision 2.2).
    Stream(StreamSlot),
    /// The caller gave up and CANCEL was sent: the id stays taken until the
    /// server's answer arrives, since until then the server may still hold
    /// it (a new request with it would be a `duplicate id`).
    Abandoned,
}

/// What the server said in the handshake: its HELLO and its HELLO reply.
#[derive(Debug)]
pub(super) struct Greeting {
    pub(super) server: ServerHello,
    /// The connection's version, its encodings, its stream window.
    pub(super) reply: HelloReply,
}

/// Shared by the client handles and the reader task.
#[derive(Debug, Default)]
pub(super) struct Pending {
    state: Mutex<State>,
    /// The server's HELLOs: set before the connection is handed out, or,
    /// when the client sent first ([`ClientOptions::send_first`]), by the
    /// reader task once it has read them.
    ///
    /// [`ClientOptions::send_first`]: super::ClientOptions::send_first
    greeting: OnceLock<Greeting>,
    /// Signalled when the greeting is set or the connection ends.
    greeted: Notify,
    /// Signalled when the table becomes empty while someone waits for
    /// that ([`Pending::wait_idle`]), and when the connection ends.
    idle: Notify,
    /// How many [`Pending::wait_idle`] wait: without one, an answer that
    /// empties the table (every answer, one request at a time) signals
    /// nobody (`notify_waiters` takes the Notify's lock: 66 instructions
    /// a request).
    idle_watchers: AtomicUsize,
    /// Signalled when the connection stops taking new requests.
    unusable: Notify,
    /// Signalled when a call's deadline is earlier than the one
    /// [`Pending::expire_calls`] sleeps until.
    rearm: Notify,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<u32, Slot, IdHash>,
    /// How many of `waiters` are [`Slot::Abandoned`].
    abandoned: usize,
    /// How many of `waiters` are [`Slot::Stream`]: open streams do not
    /// count as requests waiting (a subscription may stay open for ever,
    /// and a graceful close does not wait for it).
    streams: usize,
    next_id: u32,
    /// Set once no new request may start, if that came before the
    /// connection was gone: why (a GOODBYE, the client closing).
    refusing: Option<CloseReason>,
    /// Set once the connection is gone: why.
    closed: Option<CloseReason>,
    /// Set if the connection ended in a handshake that went on in the
    /// background (the client sent first): the error `connect` would have
    /// returned, which every request on the connection fails with.
    handshake_failed: Option<Error>,
    /// No call waiting has a deadline before this one (`None`: no call
    /// waiting has a deadline): what [`Pending::expire_calls`] sleeps
    /// until, lowered (and it woken) by a call due earlier.
    armed: Option<Instant>,
    /// The client's `request_timeout`: with no call waiting, the timer is
    /// armed this far ahead, so that a call with that limit (most calls)
    /// never has to wake it to re-arm.
    horizon: Option<Duration>,
}

impl State {
    /// Requests whose callers still wait.
    fn waiting(&self) -> usize {
        self.waiters.len() - self.abandoned - self.streams
    }

    /// Removes `id`'s slot, keeping the counts right.
    fn remove(&mut self, id: u32) -> Option<Slot> {
        let slot = self.waiters.remove(&id);
        match slot {
            Some(Slot::Abandoned) => self.abandoned -= 1,
            Some(Slot::Stream(_)) => self.streams -= 1,
            _ => {}
        }
        slot
    }

    /// A fresh id: never 0, never one in use.
    fn fresh_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            let id = self.next_id;
            if id != 0 && !self.waiters.contains_key(&id) {
                return id;
            }
        }
    }

    /// What ended the connection first, if anything has.
    fn end_reason(&self) -> Option<&CloseReason> {
        self.refusing.as_ref().or(self.closed.as_ref())
    }

    /// Why a new request is refused, if it is: the handshake's error, or
    /// what ended the connection.
    #[inline]
    fn refusal(&self) -> Result<()> {
        if let Some(failed) = &self.handshake_failed {
            return Err(replicate(failed));
        }
        match self.end_reason() {
            Some(reason) => Err(Error::ConnectionClosed(reason.clone())),
            None => Ok(()),
        }
    }
}

impl Pending {
    fn state(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }

    /// The table of a connection whose handshake is done.
    pub(super) fn greeted(greeting: Greeting) -> Pending {
        let pending = Pending::default();
        pending.set_greeting(greeting);
        pending
    }

    /// Calls on this connection usually wait at most `limit` (the client's
    /// `request_timeout`): the timer is armed that far ahead from now on,
    /// so that such a call, due later than that, does not wake it.
    pub(super) fn expect_calls_within(&self, limit: Option<Duration>) {
        let mut state = self.state();
        state.horizon = limit;
        state.armed = limit.map(|limit| Instant::now() + limit);
    }

    /// What the server said in the handshake, once it is read.
    pub(super) fn greeting(&self) -> Option<&Greeting> {
        self.greeting.get()
    }

    /// The handshake is done: requests may use what the server said.
    pub(super) fn set_greeting(&self, greeting: Greeting) {
        let _ = self.greeting.set(greeting);
        self.greeted.notify_waiters();
    }

    /// Whether the handshake goes on in the background: the server's
    /// HELLOs are not read yet and the connection is not gone.
    pub(super) fn handshake_in_progress(&self) -> bool {
        self.greeting.get().is_none() && self.state().closed.is_none()
    }

    /// Waits for the handshake's end: what the server said, or the error
    /// the connection ended with (the handshake's own, when it failed).
    pub(super) async fn handshake_done(&self) -> Result<&Greeting> {
        loop {
            let notified = self.greeted.notified();
            if let Some(greeting) = self.greeting.get() {
                return Ok(greeting);
            }
            {
                let state = self.state();
                if let Some(failed) = &state.handshake_failed {
                    return Err(replicate(failed));
                }
                if let Some(reason) = &state.closed {
                    return Err(Error::ConnectionClosed(reason.clone()));
                }
            }
            notified.await;
        }
    }

    /// The handshake's error, if the connection ended in its handshake in
    /// the background.
    pub(super) fn handshake_error(&self) -> Option<Error> {
        self.state().handshake_failed.as_ref().map(replicate)
    }

    /// Reserves a fresh id (never 0, never one in use) for a new request,
    /// whose caller is sent `expiry`'s timeout once its deadline passes
    /// ([`Pending::expire_calls`]): one timer for a connection's calls,
    /// not a timer registered and removed at every call (800 instructions
    /// a call, callgrind).
    pub(super) fn register(
        self: &Arc<Self>,
        expiry: Option<Expiry>,
    ) -> Result<(Registration, oneshot::Receiver<Result<Bytes>>)> {
        let mut state = self.state();
        state.refusal()?;
        let id = state.fresh_id();
        let (tx, rx) = oneshot::channel();
        state.waiters.insert(id, Slot::Waiting(tx, expiry));
        let earlier = expiry.filter(|e| state.armed.is_none_or(|armed| e.at < armed));
        if let Some(expiry) = earlier {
            state.armed = Some(expiry.at);
        }
        drop(state);
        if earlier.is_some() {
            self.rearm.notify_one();
        }
        let registration = Registration {
            pending: self.clone(),
            id,
            cancel: None,
        };
        Ok((registration, rx))
    }

    /// Reserves a fresh id for a stream (revision 2.2) whose directions
    /// start with `window` bytes of credit: its registration, where its
    /// ITEMs and last answer arrive, and its credit.
    pub(super) fn register_stream(
        self: &Arc<Self>,
        window: u32,
    ) -> Result<(Registration, mpsc::UnboundedReceiver<Delivery>, Arc<Flow>)> {
        let mut state = self.state();
        state.refusal()?;
        let id = state.fresh_id();
        let (deliveries, rx) = mpsc::unbounded_channel();
        let flow = Arc::new(Flow::new(window));
        let slot = StreamSlot {
            deliveries,
            flow: flow.clone(),
        };
        state.waiters.insert(id, Slot::Stream(slot));
        state.streams += 1;
        let registration = Registration {
            pending: self.clone(),
            id,
            cancel: None,
        };
        Ok((registration, rx, flow))
    }

    /// Where an ITEM or CREDIT with `id` goes.
    pub(super) fn stream_route(&self, id: u32) -> StreamRoute {
        match self.state().waiters.get(&id) {
            Some(Slot::Stream(slot)) => StreamRoute::Open(slot.flow.clone()),
            Some(Slot::Waiting(..)) => StreamRoute::NotAStream,
            Some(Slot::Abandoned | Slot::Expired) | None => StreamRoute::Gone,
        }
    }

    /// The server answers request `id`, a call its caller made as one
    /// that does not stream, with ITEMs: the caller gets an error saying
    /// so, and the id stays taken until the stream's last answer (the
    /// caller of this sends CANCEL). `false` if `id` waits no more.
    pub(super) fn refuse_stream(&self, id: u32) -> bool {
        let waiter = {
            let mut state = self.state();
            match state.waiters.remove(&id) {
                Some(Slot::Waiting(waiter, _)) => {
                    state.waiters.insert(id, Slot::Abandoned);
                    state.abandoned += 1;
                    self.tell_if_idle(&state);
                    waiter
                }
                Some(other) => {
                    state.waiters.insert(id, other);
                    return false;
                }
                None => return false,
            }
        };
        let _ = waiter.send(Err(Error::Protocol(
            "the method answers with a stream of items: call it as a stream \
             (Client::stream, stream_raw)"
                .into(),
        )));
        true
    }

    /// Hands an ITEM's payload (checked, and within the credit) to stream
    /// `id`; dropped if the stream is gone meanwhile.
    pub(super) fn deliver_item(&self, id: u32, payload: Bytes) {
        if let Some(Slot::Stream(slot)) = self.state().waiters.get(&id) {
            let _ = slot.deliveries.send(Delivery::Item(payload));
        }
    }

    /// Delivers the answer to request `id` (an abandoned one's is
    /// discarded, and its id is free again); `false` if no request has it.
    /// A stream's answer is its last: the stream ends.
    pub(super) fn complete(&self, id: u32, answer: Result<Bytes>) -> bool {
        let slot = {
            let mut state = self.state();
            let slot = state.remove(id);
            self.tell_if_idle(&state);
            slot
        };
        match slot {
            Some(Slot::Waiting(waiter, _)) => {
                let _ = waiter.send(answer);
                true
            }
            Some(Slot::Stream(slot)) => {
                slot.flow.end();
                let _ = slot.deliveries.send(Delivery::End(answer));
                true
            }
            Some(Slot::Abandoned | Slot::Expired) => true,
            None => false,
        }
    }

    /// Sends each call whose deadline has passed its timeout, waking at
    /// the earliest deadline in the table, or when a call due earlier
    /// registers. Never ends: the client's supervisor runs it beside what
    /// it waits for. Its caller then drops its [`Registration`], which
    /// sends CANCEL for a request the server may still run, as when a
    /// caller gives up.
    pub(super) async fn expire_calls(&self) {
        loop {
            // Armed before the table is read: a call registered from now
            // on with an earlier deadline wakes this.
            let rearmed = self.rearm.notified();
            tokio::pin!(rearmed);
            rearmed.as_mut().enable();
            match self.expire(Instant::now()) {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = rearmed => {}
                    }
                }
                None => rearmed.await,
            }
        }
    }

    /// Sends the calls due by `now` their timeouts; the earliest deadline
    /// left (with none, the horizon), which is now the one armed.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut state = self.state();
            let mut next: Option<Instant> = None;
            for slot in state.waiters.values_mut() {
                let Slot::Waiting(_, Some(expiry)) = slot else {
                    continue;
                };
                if expiry.at > now {
                    next = Some(next.map_or(expiry.at, |next| next.min(expiry.at)));
                    continue;
                }
                if let Slot::Waiting(waiter, Some(expiry)) = std::mem::replace(slot, Slot::Expired)
                {
                    due.push((waiter, expiry));
                }
            }
            // Nothing due: armed a horizon ahead (see `expect_calls_within`).
            let next = next.or_else(|| state.horizon.map(|horizon| now + horizon));
            state.armed = next;
            next
        };
        for (waiter, expiry) in due {
            let _ = waiter.send(Err(expiry.error()));
        }
        next
    }

    /// Requests whose callers wait for their answers.
    pub(super) fn waiting(&self) -> usize {
        self.state().waiting()
    }

    /// Ids given up on and not answered yet.
    #[cfg(test)]
    pub(super) fn abandoned(&self) -> usize {
        self.state().abandoned
    }

    /// No new requests from now on (the server said GOODBYE, or the
    /// client is closing); those in flight still get their answers.
    pub(super) fn refuse_new(&self, reason: CloseReason) {
        {
            let mut state = self.state();
            // A connection already gone ended for its own reason.
            if state.closed.is_none() {
                state.refusing.get_or_insert(reason);
            }
        }
        self.unusable.notify_waiters();
    }

    /// The connection is gone: every waiting request fails with `reason`.
    pub(super) fn fail_all(&self, reason: CloseReason) {
        self.fail(reason, None);
    }

    /// The handshake in the background failed with `error` (the client
    /// sent first): every request made on the connection fails with it,
    /// as `connect` would have, and the connection ends for the reason it
    /// gives ([`handshake_close_reason`]).
    pub(super) fn fail_handshake(&self, error: Error) {
        self.fail(handshake_close_reason(&error), Some(error));
    }

    fn fail(&self, reason: CloseReason, handshake: Option<Error>) {
        let (slots, failed) = {
            let mut state = self.state();
            if state.closed.is_none() {
                state.handshake_failed = handshake;
            }
            state.closed.get_or_insert(reason.clone());
            state.abandoned = 0;
            state.streams = 0;
            let slots: Vec<Slot> = state.waiters.drain().map(|(_, slot)| slot).collect();
            (slots, state.handshake_failed.as_ref().map(replicate))
        };
        for slot in slots {
            let lost = Err(match &failed {
                Some(failed) => replicate(failed),
                None => Error::ConnectionClosed(reason.clone()),
            });
            match slot {
                Slot::Waiting(waiter, _) => {
                    let _ = waiter.send(lost);
                }
                Slot::Stream(slot) => {
                    slot.flow.end();
                    let _ = slot.deliveries.send(Delivery::End(lost));
                }
                Slot::Abandoned | Slot::Expired => {}
            }
        }
        self.idle.notify_waiters();
        self.unusable.notify_waiters();
        self.greeted.notify_waiters();
    }

    /// Whether new requests may still start (no GOODBYE, not closing, not gone).
    pub(super) fn accepts_requests(&self) -> bool {
        let state = self.state();
        state.closed.is_none() && state.refusing.is_none()
    }

    /// Why the connection is gone, if it is.
    pub(super) fn closed_reason(&self) -> Option<CloseReason> {
        self.state().closed.clone()
    }

    /// Why the connection ended (or is ending), and so why new requests
    /// are refused: what ended it first. A GOODBYE wins over the end of
    /// the stream that follows it, and a close by the client over the
    /// errors that closing causes.
    pub(super) fn end_reason(&self) -> Option<CloseReason> {
        self.state().end_reason().cloned()
    }

    /// Waits until the connection is gone (not merely refusing new
    /// requests: after a GOODBYE, answers and notifications still come).
    pub(super) async fn gone(&self) {
        loop {
            let notified = self.idle.notified();
            if self.state().closed.is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until the connection no longer takes new requests.
    pub(super) async fn unusable(&self) {
        loop {
            let notified = self.unusable.notified();
            if !self.accepts_requests() {
                return;
            }
            notified.await;
        }
    }

    /// Signals [`Pending::wait_idle`] if the table (`state`, locked) is
    /// empty and someone waits for that.
    fn tell_if_idle(&self, state: &State) {
        if state.waiting() == 0 && self.idle_watchers.load(Ordering::SeqCst) > 0 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no caller waits for an answer or the connection is gone.
    pub(super) async fn wait_idle(&self) {
        // Counted before the table is looked at, under its lock: an answer
        // that empties it after the look sees the count and signals.
        self.idle_watchers.fetch_add(1, Ordering::SeqCst);
        let _counted = Watching(&self.idle_watchers);
        loop {
            let notified = self.idle.notified();
            {
                let state = self.state();
                if state.waiting() == 0 || state.closed.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// A copy of `error`, one of those a handshake ends with, for each
/// request that fails with it (an [`Error`] is not `Clone`: an I/O error
/// is copied as its kind and message).
fn replicate(error: &Error) -> Error {
    match error {
        Error::ConnectionClosed(reason) => Error::ConnectionClosed(reason.clone()),
        Error::ServerTooOld { server, message } => Error::ServerTooOld {
            server: server.clone(),
            message: message.clone(),
        },
        Error::Protocol(why) => Error::Protocol(why.clone()),
        Error::Timeout(limit, what) => Error::Timeout(*limit, what),
        Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
        other => Error::Protocol(other.to_string()),
    }
}

/// Why a connection whose handshake failed with `error` ended, as
/// [`ConnectionState::Lost`](super::ConnectionState::Lost) reports it: the
/// server's refusal (ERROR or GOODBYE) or the end of the stream as read; a
/// server too old as its ERROR `unsupported version`; a broken or late
/// HELLO as a protocol error.
pub(super) fn handshake_close_reason(error: &Error) -> CloseReason {
    match error {
        Error::ConnectionClosed(reason) => reason.clone(),
        Error::ServerTooOld { message, .. } => CloseReason::ServerError {
            code: ErrorCode::UNSUPPORTED_VERSION,
            message: message.clone(),
        },
        Error::Io(e) => CloseReason::io(io::Error::new(e.kind(), e.to_string())),
        other => CloseReason::Protocol(other.to_string()),
    }
}

/// A request's place in the table. Dropping it before the answer arrived
/// (the caller stopped waiting, or its timeout fired) frees the id, or,
/// for a request the server would go on with, sends CANCEL and keeps the
/// id until the server answers.
#[derive(Debug)]
pub(super) struct Registration {
    pending: Arc<Pending>,
    pub(super) id: u32,
    /// Where to send CANCEL if the caller gives up (set once the request
    /// was sent; `None` for requests the server answers at once).
    cancel: Option<Arc<Writer>>,
}

impl Registration {
    /// From now on, giving up sends CANCEL through `writer`.
    pub(super) fn cancel_through(&mut self, writer: &Arc<Writer>) {
        self.cancel = Some(writer.clone());
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let cancel = {
            let mut state = self.pending.state();
            let unanswered = matches!(
                state.waiters.get(&self.id),
                Some(Slot::Waiting(..) | Slot::Stream(_) | Slot::Expired)
            );
            let cancel = unanswered && state.closed.is_none() && self.cancel.is_some();
            if unanswered {
                if let Some(Slot::Stream(slot)) = state.remove(self.id) {
                    slot.flow.end();
                }
            }
            if cancel {
                state.waiters.insert(self.id, Slot::Abandoned);
                state.abandoned += 1;
            }
            self.pending.tell_if_idle(&state);
            cancel
        };
        if let (true, Some(writer)) = (cancel, &self.cancel) {
            writer.queue_control(Frame::new(Kind::Cancel, self.id, Bytes::new()));
        }
    }
}

/// One [`Pending::wait_idle`] counted in `idle_watchers` until it ends
/// (or its future is dropped).
struct Watching<'a>(&'a AtomicUsize);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameCodec;
    use crate::transport::{memory, Generic};

    #[tokio::test]
    async fn an_abandoned_id_stays_taken_until_its_answer_arrives() {
        let (stream, _server_end) = memory::pair();
        let (_read, write) = tokio::io::split(Generic::new(stream));
        let pending = Arc::new(Pending::default());
        let writer = Writer::new(write, FrameCodec::default(), pending.clone());

        let (mut first, _answer) = pending.register(None).unwrap();
        first.cancel_through(&writer);
        let id = first.id;
        drop(first);
        assert_eq!((pending.abandoned(), pending.waiting()), (1, 0));

        // The next id would be `id`: it is skipped while the server may
        // still hold it.
        pending.state().next_id = id - 1;
        let (second, _answer) = pending.register(None).unwrap();
        assert_ne!(second.id, id);

        // Its answer frees it; nobody receives it.
        assert!(pending.complete(id, Ok(Bytes::new())));
        assert_eq!(pending.abandoned(), 0);
        pending.state().next_id = id - 1;
        let (third, _answer) = pending.register(None).unwrap();
        assert_eq!(third.id, id);
    }

    #[test]
    fn the_reason_a_connection_ended_is_the_first_one() {
        let pending = Pending::default();
        pending.refuse_new(CloseReason::Goodbye("restarting".into()));
        // The end of the stream that follows a GOODBYE does not replace it.
        pending.fail_all(CloseReason::Eof);
        let reason = pending.end_reason();
        assert!(
            matches!(&reason, Some(CloseReason::Goodbye(why)) if why == "restarting"),
            "{reason:?}"
        );
        // A close after the connection was lost does not rewrite why.
        let lost = Pending::default();
        lost.fail_all(CloseReason::Eof);
        lost.refuse_new(CloseReason::ClientClosed);
        assert!(matches!(lost.end_reason(), Some(CloseReason::Eof)));
    }

    #[tokio::test]
    async fn a_request_given_up_before_it_was_sent_frees_its_id_at_once() {
        let pending = Arc::new(Pending::default());
        let (first, _answer) = pending.register(None).unwrap();
        let id = first.id;
        drop(first);
        assert_eq!((pending.abandoned(), pending.waiting()), (0, 0));
        assert!(!pending.complete(id, Ok(Bytes::new())));
    }
}
