//! One turn of the connection's event loop ([`Link::poll_event`]): the
//! frames handlers pushed, then the answers that are ready (each after
//! the NOTIFYs its handler queued before it), then a write, then a read.
//! Reading never waits for writing, nor writing for input; the turns, and
//! the handler polls in each, are bounded, so that the task yields to the
//! runtime however busy its handlers are.

use std::future::{poll_fn, Future};
use std::io;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::super::connection_context::OutputLimit;
use super::super::in_flight::{Answer, InFlight};
use super::super::waiting::Waiter;
use super::super::{Config, Shared};
use super::pushed::Pushed;
use super::state::{Phase, State, FRAMES_PER_POLL};
use super::wire::Wire;
use crate::frame_io::COALESCE_LIMIT;
use crate::protocol::{CodecError, ErrorCode, Frame};
use crate::transport::ServerIo;
use std::sync::Arc;

/// Turns of [`Link::poll_event`]'s loop before the task yields to the
/// runtime (each turn gathers, writes and reads once).
const TURN_BUDGET: usize = 16;

/// What the request loop must act on.
pub(super) enum Event {
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

/// Both directions of the connection: its [`Wire`], the frames pushed to
/// it ([`Pushed`]), and the order of its answers.
pub(super) struct Link<S> {
    pub(super) wire: Wire<S>,
    pub(super) pushed: Pushed,
    /// An answer whose handler's NOTIFYs are still in the queue: it goes
    /// out after them.
    pub(super) held: Option<Answer>,
}

/// Whether the task's waker was registered, in this poll of the task, with
/// the queue of woken requests and with the queue of NOTIFYs. A poll goes
/// round the turn several times (two to four a request), and each
/// registration is two atomic swaps: once per poll is enough, since a wake
/// after it either finds it or finds the task already woken (and polled
/// again), and every turn still looks at both queues.
#[derive(Default)]
struct Registered {
    answers: bool,
    pushed: bool,
}

impl<S: ServerIo> Link<S> {
    pub(super) fn new(
        stream: S,
        config: &Config,
        output: Arc<OutputLimit>,
        shared: Arc<Shared>,
    ) -> Link<S> {
        Link {
            wire: Wire::new(stream, config, shared),
            pushed: Pushed::new(output),
            held: None,
        }
    }

    pub(super) fn stream(&self) -> &S {
        self.wire.stream()
    }

    /// Queues `frame` for the next write (see [`Wire::push`]).
    pub(super) fn push(&mut self, frame: Frame) {
        self.wire.push(frame);
    }

    /// Moves ready answers into the outbox while there is room: each one
    /// after the NOTIFYs its handler queued before returning (which are
    /// in the queue by then), holding it while they wait for room.
    fn gather_answers<F: Future<Output = (u32, Frame)>>(
        &mut self,
        cx: &mut TaskContext<'_>,
        in_flight: &mut InFlight<F>,
        registered: &mut Registered,
    ) {
        let mut drained = self
            .pushed
            .poll_into(&mut self.wire, cx, &mut registered.pushed);
        loop {
            if self.held.is_none() {
                if !self.has_room_for_answers() {
                    return;
                }
                let answer = in_flight.poll_answer(cx, &mut registered.answers);
                let Poll::Ready(Some(answer)) = answer else {
                    return;
                };
                if let Answer::Last(_) = answer {
                    self.wire.tally.requests += 1;
                }
                self.held = Some(answer);
                drained = self
                    .pushed
                    .poll_into(&mut self.wire, cx, &mut registered.pushed);
            }
            if !drained {
                return;
            }
            let answer = self.held.take().expect("held above");
            self.wire.push(answer.into_frame());
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
        let answers = self.wire.outbox.len();
        answers.saturating_sub(self.pushed.charged_bytes()) < COALESCE_LIMIT
    }

    /// The next event, doing meanwhile everything that needs no waiting:
    /// running handlers, queuing their answers and the frames handed to
    /// the connection, writing, and reading. Each turn does all three, so
    /// that neither reading nor writing waits for the other; the turns
    /// are bounded, and so is each handler poll (see [`InFlight`]).
    pub(super) fn poll_event<F: Future<Output = (u32, Frame)>>(
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
        // What this poll has registered its waker with: every turn below.
        let mut registered = Registered::default();
        for _ in 0..TURN_BUDGET {
            if let Some(event) = state.unpark(in_flight) {
                return Poll::Ready(event);
            }
            self.gather_answers(cx, in_flight, &mut registered);
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
            // A whole frame already read waits for no system call: it is
            // taken first, and what is queued goes out with its answer, so
            // that a burst read at once is answered in one write, not in
            // one each. Bounded by the frames a poll reads and by the room
            // for answers (past it, nothing is read before the write).
            let has_output = !self.wire.outbox.is_empty();
            let read_first = has_output
                && state.frames < FRAMES_PER_POLL
                && self.wire.holds_whole_frame()
                && state.reads()
                && self.has_room_for_answers();
            if read_first {
                if let Poll::Ready(event) = self.wire.poll_read(cx) {
                    state.read_happened();
                    return Poll::Ready(event);
                }
            }
            let mut wrote_all = false;
            if has_output {
                match self.poll_write_all(cx) {
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
                match self.wire.poll_read(cx) {
                    Poll::Ready(event) => {
                        state.read_happened();
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
                self.wire.trim_read_buffer();
                if !self.wire.holds_read_buffer() {
                    // Gave its read buffer back (a connection's first
                    // waits, or a quiet tick): the rest goes with it.
                    give_back_spare(in_flight, state, &mut self.wire);
                }
                self.wire.publish();
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
        if state.deadlines.poll(cx).is_ready() {
            self.expire_deadlines(in_flight, state);
            return Poll::Ready(None);
        }
        if !state.tick.is_armed() {
            if !state.needs_tick(in_flight) && !self.wire.holds_read_buffer() {
                return Poll::Pending;
            }
            state.tick.arm();
        }
        ready!(state.tick.poll(cx));
        Poll::Ready(self.housekeeping(in_flight, state))
    }

    /// The deadlines' timer fired: requests past their deadline are
    /// stopped with ERROR `timed out` (dropping a request fires its
    /// cancelled signal), and the timer is armed for the earliest left.
    fn expire_deadlines<F: Future<Output = (u32, Frame)>>(
        &mut self,
        in_flight: &mut InFlight<F>,
        state: &mut State<'_>,
    ) {
        let why = "the request did not finish within its timeout";
        let left = in_flight.expire_deadlines(Instant::now(), |id| {
            self.wire.tally.requests += 1;
            self.wire.push(Frame::error(id, ErrorCode::TIMED_OUT, why));
        });
        state.share.release(in_flight.take_released());
        match left {
            Some(at) => state.deadlines.arm(at),
            None => state.deadlines.trim(),
        }
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
                    self.wire.tally.requests += 1;
                    self.wire.push(Frame::error(id, ErrorCode::TIMED_OUT, why));
                });
                state.share.release(in_flight.take_released());
            }
        }
        if !state.reading && state.phase != Phase::Settling && self.stream().peer_hung_up() {
            return Some(Event::HungUp);
        }
        if !state.tick.busy && in_flight.is_empty() && state.waiting.is_empty() {
            self.wire.give_back_read_buffer();
            give_back_spare(in_flight, state, &mut self.wire);
        }
        state.tick.busy = false;
        None
    }

    /// Writes the outbox's frames, counted first: a STATUS the client
    /// sends after reading them includes them.
    fn poll_write_all(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.wire.publish();
        self.poll_write(cx)
    }

    /// Writes what the outbox holds, giving back the room of the NOTIFYs
    /// written. Fails if the client does not take what is queued within
    /// the write timeout ([`Wire::poll_deadline`]).
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let written = self.wire.poll_write_once(cx);
        self.pushed.release(self.wire.outbox.written());
        if written.is_ready() {
            return written;
        }
        self.wire.poll_deadline(cx, self.pushed.unmoved_bytes())
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Writes the last frames (what is queued included), then closes;
    /// a client that does not take them in time is cut off.
    pub(super) async fn close(mut self) {
        self.pushed.close();
        self.pushed.take_into(&mut self.wire);
        if let Some(answer) = self.held.take() {
            self.wire.push(answer.into_frame());
        }
        self.wire.publish();
        let written = self.flush().await;
        self.wire.close(written).await;
    }

    /// Stops writing to a client that is gone or does not read (what is
    /// queued is dropped), and closes as gently as the stream allows.
    pub(super) async fn cut(self) {
        self.wire.cut().await;
    }

    /// Drops the stream of a client that left (see `End::PeerLeft`).
    pub(super) fn drop_stream(self) {
        self.wire.drop_stream();
    }
}

/// Gives back what a burst left (request slots, the waiting queue and its
/// timer, the input share, the outbox's staging buffer, the tick's timer)
/// once no request is in flight or waiting: at a quiet tick, and as soon
/// as the connection gave its read buffer back (its first waits for the
/// client: a connection that says HELLO, asks once and waits, as most do,
/// then holds only what an idle connection needs).
fn give_back_spare<S: ServerIo, F: Future<Output = (u32, Frame)>>(
    in_flight: &mut InFlight<F>,
    state: &mut State<'_>,
    wire: &mut Wire<S>,
) {
    if !in_flight.is_empty() || !state.waiting.is_empty() {
        return;
    }
    in_flight.trim();
    state.waiting.trim();
    state.share.trim();
    wire.outbox.give_back();
    if !state.needs_tick(in_flight) {
        state.tick.trim();
    }
}
