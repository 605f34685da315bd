//! Work a connection has read and holds: each REQUEST, CALL and NOTIFY as
//! a [`Job`] with what it holds of the budget, the jobs waiting to start
//! ([`Waiting`]), and the connection's clock for what has no deadline of
//! its own ([`Tick`]).
//!
//! A REQUEST or CALL read at the in-flight limit (or while `on_notify`
//! runs), and a NOTIFY read while another one is handled, wait here in the
//! order read; the frames the server answers at once (PING, STATUS,
//! DESCRIBE, CANCEL, unknown kinds) pass them. Reading goes on while
//! fewer than `max_in_flight` jobs wait and the connection's requests hold
//! less than its share of the budget, so that a client's CANCEL, PING and
//! departure are seen while its requests wait. A CANCEL reaches a waiting
//! request; a waiting CALL's deadline (and the server's request timeout)
//! runs.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use crate::protocol::{
    own_copy, CallError, ErrorCode, Frame, Kind, ReadHeader, HEADER_LEN, LENGTH_FIELD_LEN,
};

/// A frame's bytes beyond which it had a buffer of its own (the codec's
/// plain read buffer holds smaller ones, many frames to a buffer).
const OWN_BUFFER: usize = crate::protocol::READ_CHUNK;

/// A REQUEST, CALL or NOTIFY read from the client.
#[derive(Debug)]
pub(super) enum Job {
    /// A REQUEST for the byte handler.
    Request { id: u32, payload: Bytes },
    /// A CALL, its header read (the metadata copied out of the frame) and
    /// its params.
    Call {
        id: u32,
        header: ReadHeader,
        params: Bytes,
    },
    /// A NOTIFY for `on_notify`.
    Notify(Bytes),
}

impl Job {
    /// The job of `frame` (a REQUEST, CALL or NOTIFY), and the bytes it
    /// holds. A CALL whose header cannot be read is refused with the code
    /// and message to answer it with.
    pub(super) fn read(frame: Frame) -> Result<(Job, usize), (ErrorCode, String)> {
        let wire = LENGTH_FIELD_LEN + HEADER_LEN;
        match frame.kind {
            Kind::Request => {
                let held = wire + frame.payload.len();
                let (id, payload) = (frame.id, frame.payload);
                Ok((Job::Request { id, payload }, held))
            }
            Kind::Notify => {
                let held = wire + frame.payload.len();
                Ok((Job::Notify(frame.payload), held))
            }
            _ => Job::call(frame),
        }
    }

    /// A CALL: its header copied out, and its params kept as a slice of
    /// the frame, or copied too when they are a small part of a frame that
    /// has a buffer of its own (metadata-laden calls), so that a small
    /// slice does not keep a large frame alive.
    fn call(frame: Frame) -> Result<(Job, usize), (ErrorCode, String)> {
        let refused = |e: CallError| match e {
            CallError::NoMemory(_) => (ErrorCode::OVERLOADED, e.to_string()),
            _ => (ErrorCode::BAD_REQUEST, e.to_string()),
        };
        let (mut header, params) = ReadHeader::decode(&frame.payload).map_err(refused)?;
        let whole = frame.payload.len();
        let (params, kept) = if whole > OWN_BUFFER && params.len() * 2 < whole {
            let copy = own_copy(&params).map_err(refused)?;
            // The method is a slice of the frame too: copied with the
            // params, or it would keep the frame.
            header.method = header.method.detached().map_err(refused)?;
            let kept = copy.len();
            (copy, kept)
        } else {
            (params, whole)
        };
        let held = LENGTH_FIELD_LEN + HEADER_LEN + kept + header.heap_len();
        let id = frame.id;
        Ok((Job::Call { id, header, params }, held))
    }

    /// The request id (`None` for a NOTIFY).
    pub(super) fn id(&self) -> Option<u32> {
        match self {
            Job::Request { id, .. } | Job::Call { id, .. } => Some(*id),
            Job::Notify(_) => None,
        }
    }

    /// The deadline the job carries itself (a CALL's timeout), from when
    /// it was read.
    pub(super) fn own_timeout(&self) -> Option<Duration> {
        match self {
            Job::Call { header, .. } => header.timeout,
            _ => None,
        }
    }
}

/// A job waiting to start.
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) job: Job,
    /// What it holds of the connection's share.
    pub(super) held: usize,
    pub(super) read_at: Instant,
    /// When it is answered ERROR `timed out` if it has not started: its
    /// own deadline, else the server's request timeout (none for NOTIFY).
    pub(super) deadline: Option<Instant>,
}

/// The jobs waiting to start, in the order read.
#[derive(Debug)]
pub(super) struct Waiting {
    jobs: VecDeque<Waiter>,
    /// Reading stops while this many wait.
    limit: usize,
    /// Armed for the earliest deadline of a waiting job.
    timer: Option<Pin<Box<Sleep>>>,
    next_deadline: Option<Instant>,
}

impl Waiting {
    pub(super) fn new(limit: usize) -> Waiting {
        Waiting {
            jobs: VecDeque::new(),
            limit,
            timer: None,
            next_deadline: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether reading must stop until one starts.
    pub(super) fn is_full(&self) -> bool {
        self.jobs.len() >= self.limit
    }

    pub(super) fn push(&mut self, waiter: Waiter) {
        if let Some(deadline) = waiter.deadline {
            if self.next_deadline.is_none_or(|next| deadline < next) {
                self.arm(deadline);
            }
        }
        self.jobs.push_back(waiter);
    }

    pub(super) fn front(&self) -> Option<&Waiter> {
        self.jobs.front()
    }

    pub(super) fn pop_front(&mut self) -> Option<Waiter> {
        self.jobs.pop_front()
    }

    /// Whether a request with `id` waits.
    pub(super) fn contains(&self, id: u32) -> bool {
        !self.jobs.is_empty() && self.jobs.iter().any(|w| w.job.id() == Some(id))
    }

    /// Takes the request `id` out (it was cancelled).
    pub(super) fn remove(&mut self, id: u32) -> Option<Waiter> {
        let at = self.jobs.iter().position(|w| w.job.id() == Some(id))?;
        self.jobs.remove(at)
    }

    /// Every waiting job, taken out (the connection ends).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.next_deadline = None;
        self.jobs.drain(..)
    }

    /// The next waiting job whose deadline has passed, taken out.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Waiter> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        if self.next_deadline.is_none() || timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        let expired = self
            .jobs
            .iter()
            .position(|w| w.deadline.is_some_and(|at| at <= now));
        let waiter = expired.and_then(|at| self.jobs.remove(at));
        // The next deadline, if any job still has one.
        self.next_deadline = None;
        if let Some(next) = self.jobs.iter().filter_map(|w| w.deadline).min() {
            self.arm(next);
        }
        match waiter {
            Some(waiter) => Poll::Ready(waiter),
            None => {
                // Woken for a job that started or was cancelled since.
                if self.next_deadline.is_some() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn arm(&mut self, at: Instant) {
        self.next_deadline = Some(at);
        set_timer(&mut self.timer, at);
    }

    /// Gives back what a burst of waiting jobs left behind (the queue's
    /// room, the timer), once none waits.
    pub(super) fn trim(&mut self) {
        if self.jobs.is_empty() {
            self.jobs = VecDeque::new();
            self.timer = None;
            self.next_deadline = None;
        }
    }

    /// Whether a burst left something to give back.
    pub(super) fn has_spare(&self) -> bool {
        self.jobs.is_empty() && (self.jobs.capacity() > 0 || self.timer.is_some())
    }
}

/// The connection's coarse clock, for what has no timer of its own: the
/// request timeout of requests that started at once (a timer each would
/// cost the byte path), noticing a client that left while the connection
/// is not read, and giving back what a burst left. It ticks only while one
/// of those needs it, once per `period`.
#[derive(Debug)]
pub(super) struct Tick {
    period: Duration,
    timer: Timer,
    armed: bool,
    count: u32,
    /// A request started since the last tick: nothing is given back yet.
    pub(super) busy: bool,
}

/// The longest period of the [`Tick`], and its shortest.
const TICK_MAX: Duration = Duration::from_secs(1);
const TICK_MIN: Duration = Duration::from_millis(10);

impl Tick {
    /// Ticks at most a second apart, and eight times per `request_timeout`.
    pub(super) fn new(request_timeout: Option<Duration>) -> Tick {
        let period = request_timeout.map_or(TICK_MAX, |t| (t / 8).clamp(TICK_MIN, TICK_MAX));
        Tick {
            period,
            timer: Timer::default(),
            armed: false,
            count: 0,
            busy: false,
        }
    }

    /// Ticks so far.
    pub(super) fn now(&self) -> u32 {
        self.count
    }

    /// Whole ticks in `timeout`, rounded up.
    pub(super) fn ticks_in(&self, timeout: Duration) -> u32 {
        let ticks = timeout.as_nanos().div_ceil(self.period.as_nanos().max(1));
        ticks.min(u32::MAX as u128 / 2) as u32
    }

    /// Whether a period runs.
    pub(super) fn is_armed(&self) -> bool {
        self.armed
    }

    /// Starts the next period, unless one runs.
    pub(super) fn arm(&mut self) {
        if self.armed {
            return;
        }
        self.armed = true;
        self.timer.set(Instant::now() + self.period);
    }

    /// Ready once per period while armed (then disarmed).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            return Poll::Pending;
        }
        ready!(self.timer.poll(cx));
        self.armed = false;
        self.count = self.count.wrapping_add(1);
        Poll::Ready(())
    }

    /// Drops the timer (nothing needs the clock now).
    pub(super) fn trim(&mut self) {
        if !self.armed {
            self.timer.clear();
        }
    }
}

/// A timer the connection keeps for something that recurs (its tick, its
/// requests' deadlines): made once (boxed, so that a connection without
/// one holds a pointer) and reset, and polled again only when it may have
/// fired or the waker is another. Polled with the same waker before it
/// fires, tokio's timer would only register that waker once more: 80 to
/// 130 instructions on every turn of the connection.
#[derive(Debug, Default)]
pub(super) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The waker the timer was last polled with while it waited.
    waiting_with: Option<Waker>,
}

impl Timer {
    /// Fires at `at`.
    pub(super) fn set(&mut self, at: Instant) {
        self.waiting_with = None;
        set_timer(&mut self.sleep, at);
    }

    /// Ready once the time set has come (and again at each poll after,
    /// until set again); pending while nothing is set.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(sleep) = &mut self.sleep else {
            return Poll::Pending;
        };
        // A timer still in tokio's wheel has not fired, and wakes the
        // waker it holds when it does. Anything else (fired, or set and
        // not yet registered, or another waker) is polled.
        let same = (self.waiting_with.as_ref()).is_some_and(|w| w.will_wake(cx.waker()));
        if same && !sleep.is_elapsed() {
            return Poll::Pending;
        }
        if sleep.as_mut().poll(cx).is_pending() {
            if !same {
                self.waiting_with = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        self.waiting_with = None;
        Poll::Ready(())
    }

    /// Drops the timer.
    pub(super) fn clear(&mut self) {
        *self = Timer::default();
    }
}

/// Sets `timer` to fire at `at`: the timer a connection keeps is reset,
/// and made (boxed, so that a connection without one holds a pointer)
/// only the first time.
pub(super) fn set_timer(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match timer {
        Some(timer) => timer.as_mut().reset(at),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
}

/// The one timer of a connection's requests that have deadlines of their
/// own (a CALL's timeout, or the server's request timeout counted from
/// when a request that waited for a slot was read): armed for the
/// earliest, so that a request pays no timer of its own (a tokio timer
/// registered and removed per call cost some 700 instructions).
///
/// It is armed at a deadline no later than any running request's; it may
/// be armed earlier (for a request since finished): it then fires, finds
/// nothing due, and is armed for the earliest left. Requests that carry
/// the same timeout start in deadline order, so a new one seldom moves it.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    timer: Timer,
    /// Where the timer is armed; `None` while it is not.
    at: Option<Instant>,
}

impl Deadlines {
    /// A request with deadline `at` started: the timer fires by then.
    pub(super) fn arm(&mut self, at: Instant) {
        if self.at.is_some_and(|armed| armed <= at) {
            return;
        }
        self.at = Some(at);
        self.timer.set(at);
    }

    /// Ready once the armed deadline has passed (then disarmed: the caller
    /// expires what is due and arms it for the earliest left).
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.at.is_none() {
            return Poll::Pending;
        }
        ready!(self.timer.poll(cx));
        self.at = None;
        Poll::Ready(())
    }

    /// Drops the timer, unless it is armed (nothing needs it now).
    pub(super) fn trim(&mut self) {
        if self.at.is_none() {
            self.timer.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: u32, params: &[u8], metadata: usize, timeout: Option<Duration>) -> Frame {
        let metadata = (0..metadata)
            .map(|n| (format!("k{n}"), "v".repeat(1000)))
            .collect();
        let header = crate::protocol::CallHeader::new("m", crate::protocol::Encoding::Json)
            .with_metadata(metadata)
            .with_timeout(timeout);
        Frame::new(Kind::Call, id, header.encode_with(params).unwrap())
    }

    #[test]
    fn a_small_slice_of_a_large_call_is_copied_out_and_the_rest_is_not_kept() {
        let frame = call(1, b"{}", 100, None);
        let whole = frame.payload.len();
        let frame_memory = frame.payload.as_ptr_range();
        let (job, held) = Job::read(frame).unwrap();
        let Job::Call { params, header, .. } = job else {
            panic!("a call")
        };
        assert_eq!(params.as_ref(), b"{}");
        assert_eq!(header.method.as_str(), "m");
        for kept in [params.as_ptr(), header.method.as_str().as_ptr()] {
            assert!(!frame_memory.contains(&kept), "a slice keeps the frame");
        }
        assert_eq!(held, 10 + 2 + header.heap_len());
        // The copies and the params, not the frame as well.
        assert!(held < whole * 11 / 10, "{held} for a frame of {whole}");
        // Params that are most of the frame stay a slice of it.
        let big = vec![b'1'; 64 * 1024];
        let (_, held) = Job::read(call(2, &big, 1, None)).unwrap();
        assert!(held > big.len(), "{held}");
    }

    #[test]
    fn a_call_that_cannot_be_read_is_a_bad_request() {
        let frame = Frame::new(Kind::Call, 1, Bytes::from_static(b"\x01"));
        let (code, why) = Job::read(frame).unwrap_err();
        assert_eq!(code, ErrorCode::BAD_REQUEST, "{why}");
    }

    #[tokio::test]
    async fn a_waiting_jobs_deadline_takes_it_out_and_cancel_finds_it() {
        let mut waiting = Waiting::new(2);
        let now = Instant::now();
        // Job 2's deadline has passed already; job 1's is far off.
        for (id, deadline) in [(1, now + Duration::from_secs(3600)), (2, now)] {
            let (job, held) = Job::read(Frame::request(id, "x")).unwrap();
            waiting.push(Waiter {
                job,
                held,
                read_at: now,
                deadline: Some(deadline),
            });
        }
        assert!(waiting.is_full() && waiting.contains(1) && !waiting.contains(3));
        let expired = std::future::poll_fn(|cx| waiting.poll_expired(cx)).await;
        assert_eq!(expired.job.id(), Some(2));
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(waiting.poll_expired(cx).is_pending())).await
        );
        assert_eq!(waiting.remove(1).unwrap().job.id(), Some(1));
        assert!(waiting.is_empty());
        waiting.trim();
        assert!(!waiting.has_spare());
    }

    #[test]
    fn the_tick_is_an_eighth_of_the_request_timeout_within_bounds() {
        assert_eq!(Tick::new(None).period, TICK_MAX);
        assert_eq!(Tick::new(Some(Duration::from_secs(300))).period, TICK_MAX);
        let tick = Tick::new(Some(Duration::from_secs(2)));
        assert_eq!(tick.period, Duration::from_millis(250));
        assert_eq!(tick.ticks_in(Duration::from_secs(2)), 8);
        assert_eq!(Tick::new(Some(Duration::from_millis(1))).period, TICK_MIN);
    }

    /// A waker that a test can wait on: its wake is a permit to `notified`.
    #[derive(Default)]
    struct Woken(tokio::sync::Notify);

    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.notify_one();
        }
    }

    #[tokio::test]
    async fn the_tick_wakes_the_waker_of_its_last_poll_though_polls_in_between_are_skipped() {
        let mut tick = Tick::new(Some(Duration::from_millis(1)));
        tick.arm();
        let (a, b) = (
            std::sync::Arc::new(Woken::default()),
            std::sync::Arc::new(Woken::default()),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let mut ca = Context::from_waker(&wa);
        assert!(tick.poll(&mut ca).is_pending());
        // The same waker, the timer not fired: the timer is not polled.
        assert!(tick.poll(&mut ca).is_pending());
        // Another waker: the timer is polled, and wakes this one.
        let mut cb = Context::from_waker(&wb);
        assert!(tick.poll(&mut cb).is_pending());
        let fired = tokio::time::timeout(Duration::from_secs(60), b.0.notified()).await;
        fired.expect("the tick wakes the waker it was last polled with");
        assert!(tick.poll(&mut cb).is_ready());
        assert_eq!(tick.now(), 1);
        // Once fired it is disarmed; armed again, it waits again.
        assert!(tick.poll(&mut cb).is_pending());
        tick.arm();
        assert!(tick.poll(&mut ca).is_pending());
        let fired = tokio::time::timeout(Duration::from_secs(60), a.0.notified()).await;
        fired.expect("the tick, armed again, fires again");
        assert!(tick.poll(&mut ca).is_ready());
        assert_eq!(tick.now(), 2);
    }
}
