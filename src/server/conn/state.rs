//! The request loop's state besides the I/O: its phase, its timers
//! (shutdown, the last requests' deadline, the idle timeout, the throttle,
//! the tick), the handler's `on_connect`/`on_notify` running, and the
//! requests waiting to start with what they hold of the budget.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::super::budget::Share;
use super::super::fair_share::Throttle;
use super::super::in_flight::{panic_message, InFlight};
use super::super::waiting::{set_timer, Deadlines, Job, Tick, Waiting};
use super::super::{Config, Shared};
use super::signals::{Signal, Signals};
use super::turn::Event;
use crate::log_limit::limited;
use crate::protocol::{ErrorCode, Frame};

/// A handler's `on_connect` or `on_notify`, running.
pub(super) type Chore<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub(super) fn chore<'a>(work: impl Future<Output = ()> + Send + 'a) -> Chore<'a> {
    Box::pin(AssertUnwindSafe(work).catch_unwind().map(|done| {
        if let Err(panic) = done {
            limited!(error, panic = panic_message(&panic), "handler panicked");
        }
    }))
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) struct State<'a> {
    signals: Signals,
    /// When the last requests are cancelled, and with what code.
    deadline: Option<(Pin<Box<Sleep>>, ErrorCode)>,
    pub(super) phase: Phase,
    pub(super) chore: Option<Chore<'a>>,
    /// What the NOTIFY the chore handles holds of the share.
    pub(super) chore_held: usize,
    /// The chore is `on_connect`: nothing is read until it is done.
    pub(super) greeting: bool,
    /// Requests and NOTIFYs read that cannot start yet (at the in-flight
    /// limit, or while `on_notify` runs), in order. Reading goes on past
    /// them, within their count and the share's bytes.
    pub(super) waiting: Waiting,
    /// What this connection's requests hold of the server's budget.
    pub(super) share: Share,
    /// The connection's rate of frames without an answer, if limited.
    throttle: Option<Throttle>,
    /// While set, the throttle keeps the connection from being read until
    /// this timer fires.
    resume: Option<Pin<Box<Sleep>>>,
    paused: bool,
    /// Frames read since the task last yielded to the runtime.
    pub(super) frames: u32,
    /// Whether the loop read (or tried to) at its last turn.
    pub(super) reading: bool,
    pub(super) tick: Tick,
    /// The timer of the running requests' deadlines.
    pub(super) deadlines: Deadlines,
    /// The server's request timeout, in ticks.
    pub(super) request_ticks: Option<u32>,
    idle: Option<Idle>,
    /// The client listed ITEM and CREDIT in its HELLO (revision 2.2): it
    /// may open streams.
    pub(super) takes_items: bool,
}

/// Frames read per poll of the connection's task, after which it yields
/// to the runtime (as tokio's own budget does for I/O): a client that
/// floods frames which need no answer, and so no write, cannot keep its
/// worker thread from other connections.
pub(super) const FRAMES_PER_POLL: u32 = 128;

/// The idle timeout: armed for the last read plus the timeout.
struct Idle {
    timeout: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<'a> State<'a> {
    pub(super) fn new(shared: &Shared, config: &Config, too_slow: CancellationToken) -> State<'a> {
        let tick = Tick::new(config.request_timeout);
        let request_ticks = config.request_timeout.map(|t| tick.ticks_in(t));
        State {
            signals: Signals::new(&shared.shutdown, too_slow),
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
            deadlines: Deadlines::default(),
            request_ticks,
            idle: config.idle_timeout.map(|timeout| Idle {
                timeout,
                last_read: Instant::now(),
                timer: Box::pin(tokio::time::sleep(timeout)),
            }),
            takes_items: false,
        }
    }

    /// Requests get `timeout` more (or less, if an earlier deadline is
    /// armed), then are cancelled with `code`.
    pub(super) fn settle_by(&mut self, timeout: Duration, code: ErrorCode) {
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

    pub(super) fn poll_signals(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        if let Poll::Ready(signal) = self.signals.poll(cx) {
            return Poll::Ready(match signal {
                Signal::TooSlow => Event::TooSlow,
                Signal::Shutdown => Event::Shutdown,
            });
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

    /// Runs the chore, if any; ready once there is none. The check for
    /// none, asked at every turn, is inlined into the loop.
    #[inline]
    pub(super) fn poll_chore(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        match self.chore {
            None => Poll::Ready(()),
            Some(_) => self.run_chore(cx),
        }
    }

    fn run_chore(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        ready!(poll_once(&mut self.chore, cx));
        self.end_chore();
        Poll::Ready(())
    }

    /// Drops the chore, if any (done, or given up on), and what its NOTIFY
    /// held.
    pub(super) fn end_chore(&mut self) {
        self.chore = None;
        self.greeting = false;
        self.share.release(std::mem::take(&mut self.chore_held));
    }

    /// The first waiting job, once it can start.
    pub(super) fn unpark<F: Future<Output = (u32, Frame)>>(
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
    pub(super) fn reads(&self) -> bool {
        self.phase != Phase::Settling
            && !self.greeting
            && !self.waiting.is_full()
            && !self.share.is_full()
            && !self.paused
    }

    /// Counts a frame that gets no answer against the connection's rate;
    /// past it, reading pauses until the rate allows more.
    pub(super) fn unanswered(&mut self) {
        let Some(throttle) = &mut self.throttle else {
            return;
        };
        if let Some(resume) = throttle.spend() {
            limited!(
                debug,
                "a client sends frames that need no answer faster than its rate; pausing it"
            );
            self.paused = true;
            set_timer(&mut self.resume, resume);
        }
    }

    /// Whether the connection's tick has work: requests under the
    /// server's request timeout, a connection not read (whose client may
    /// leave unseen), or memory a burst left to give back.
    pub(super) fn needs_tick<F: Future<Output = (u32, Frame)>>(
        &self,
        in_flight: &InFlight<F>,
    ) -> bool {
        (self.request_ticks.is_some() && in_flight.has_untimed())
            || (!self.reading && self.phase != Phase::Settling)
            || in_flight.has_spare()
            || self.share.has_spare()
            || self.waiting.has_spare()
    }

    pub(super) fn poll_idle(&mut self, cx: &mut TaskContext<'_>, busy: bool) -> Poll<Event> {
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

    /// A frame (or the end of the stream) was read: the idle clock starts
    /// again, and the poll's count of frames goes up.
    pub(super) fn read_happened(&mut self) {
        self.frames += 1;
        if let Some(idle) = &mut self.idle {
            idle.last_read = Instant::now();
        }
    }
}

/// Polls the future in `slot`, if there is one; when it completes, empties
/// the slot and is ready, once.
pub(super) fn poll_once<F: Future + ?Sized>(
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
