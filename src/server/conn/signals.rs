//! The two cancellations a connection listens for: the server's shutdown
//! and "too slow" (its client stopped reading what it is sent).
//!
//! The request loop asks at every event whether either fired. Polling a
//! `CancellationToken`'s future locks the token's mutex and its waiter
//! list's, twice per token. So the futures are polled with a waker of
//! their own, which marks that one of them woke before it wakes the task:
//! the loop polls them again only then, and otherwise asks one atomic.
//! That saved 650 instructions a request on one client with one request in
//! flight, 360 on 16 clients with 16 each (scripts/perf-guard.sh).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::state::poll_once;

/// Which cancellation fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signal {
    TooSlow,
    Shutdown,
}

/// The connection's shutdown and too-slow futures, polled only once their
/// waker fired.
pub(super) struct Signals {
    too_slow: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    relay: Arc<Relay>,
    /// `relay` as a waker, made once.
    waker: Waker,
}

/// The futures' waker: notes that one of them woke, then wakes the task.
struct Relay {
    /// Set when a future woke (and at first, so they get polled once and
    /// register this waker); taken by the next poll.
    woke: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Signals {
    pub(super) fn new(shutdown: &CancellationToken, too_slow: CancellationToken) -> Signals {
        let relay = Arc::new(Relay {
            woke: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Signals {
            too_slow: Some(Box::pin(too_slow.cancelled_owned())),
            shutdown: Some(Box::pin(shutdown.clone().cancelled_owned())),
            waker: Waker::from(relay.clone()),
            relay,
        }
    }

    /// Which cancellation fired since the last poll, if one did; once
    /// reported, a cancellation is not reported again.
    pub(super) fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Signal> {
        // Registered before `woke` is read: a wake after the read still
        // reaches the task (an unchanged waker costs no clone).
        self.relay.task.register(cx.waker());
        if !self.relay.woke.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut own = TaskContext::from_waker(&self.waker);
        let fired = if poll_once(&mut self.too_slow, &mut own).is_ready() {
            Signal::TooSlow
        } else if poll_once(&mut self.shutdown, &mut own).is_ready() {
            Signal::Shutdown
        } else {
            return Poll::Pending;
        };
        // The other may have fired too, and its wake was taken with this
        // one's: the next poll looks at it again.
        self.relay.woke.store(true, Ordering::Release);
        Poll::Ready(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::push_queue::tests::counted;

    #[test]
    fn a_cancel_wakes_the_task_and_is_reported_once() {
        let (shutdown, too_slow) = (CancellationToken::new(), CancellationToken::new());
        let mut signals = Signals::new(&shutdown, too_slow.clone());
        let (count, waker) = counted();
        let mut cx = TaskContext::from_waker(&waker);
        assert_eq!(signals.poll(&mut cx), Poll::Pending);
        assert_eq!(signals.poll(&mut cx), Poll::Pending);
        too_slow.cancel();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the cancel woke the task"
        );
        assert_eq!(signals.poll(&mut cx), Poll::Ready(Signal::TooSlow));
        assert_eq!(signals.poll(&mut cx), Poll::Pending, "reported once");
        shutdown.cancel();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(signals.poll(&mut cx), Poll::Ready(Signal::Shutdown));
        assert_eq!(signals.poll(&mut cx), Poll::Pending);
    }

    #[test]
    fn both_cancels_at_once_are_both_reported() {
        let (shutdown, too_slow) = (CancellationToken::new(), CancellationToken::new());
        let mut signals = Signals::new(&shutdown, too_slow.clone());
        let (_, waker) = counted();
        let mut cx = TaskContext::from_waker(&waker);
        assert!(signals.poll(&mut cx).is_pending());
        shutdown.cancel();
        too_slow.cancel();
        assert_eq!(signals.poll(&mut cx), Poll::Ready(Signal::TooSlow));
        assert_eq!(signals.poll(&mut cx), Poll::Ready(Signal::Shutdown));
        assert_eq!(signals.poll(&mut cx), Poll::Pending);
    }

    #[test]
    fn a_cancel_before_the_first_poll_is_reported() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut signals = Signals::new(&shutdown, CancellationToken::new());
        let (_, waker) = counted();
        let mut cx = TaskContext::from_waker(&waker);
        assert_eq!(signals.poll(&mut cx), Poll::Ready(Signal::Shutdown));
    }

    #[test]
    fn the_task_waker_that_polled_last_is_the_one_woken() {
        let shutdown = CancellationToken::new();
        let mut signals = Signals::new(&shutdown, CancellationToken::new());
        let (first, waker) = counted();
        assert!(signals
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending());
        let (second, waker) = counted();
        assert!(signals
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending());
        shutdown.cancel();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        let mut cx = TaskContext::from_waker(&waker);
        assert_eq!(signals.poll(&mut cx), Poll::Ready(Signal::Shutdown));
    }
}
