//! The queue of frames handlers and broadcasts push to one connection
//! (NOTIFYs from `ConnectionContext::notify` and `ServerHandle::broadcast`),
//! taken by the connection's task.
//!
//! Its bytes are bounded before a frame gets here (the connection's
//! [`OutputLimit`](super::connection_context::OutputLimit) room), so the
//! queue itself needs no bound. It is a `VecDeque` under a mutex, not a
//! tokio channel: a channel allocates its first block (32 frames) and its
//! cache-padded state when it is made, 1.8 KB for every connection, most of
//! which never receive a NOTIFY; an empty `VecDeque` holds nothing. And the
//! connection looks at the queue at every event: the channel's `poll_recv`
//! (tokio's budget, its atomics) cost 430 to 800 instructions a request
//! more than one atomic load (scripts/perf-guard.sh).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use futures_util::task::AtomicWaker;

use super::lock;
use crate::protocol::Frame;

/// Frames pushed to a connection, in order.
#[derive(Debug, Default)]
pub(crate) struct PushQueue {
    state: Mutex<State>,
    /// How many frames are queued: an empty queue is seen without the lock.
    len: AtomicUsize,
    /// The connection's task, woken by a push.
    task: AtomicWaker,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    /// The connection takes no more frames.
    closed: bool,
}

impl PushQueue {
    /// Queues `frame` and wakes the connection; gives it back if the
    /// connection takes no more.
    pub(crate) fn push(&self, frame: Frame) -> Result<(), Frame> {
        {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(frame);
            }
            state.frames.push_back(frame);
            self.len.store(state.frames.len(), Ordering::Release);
        }
        self.task.wake();
        Ok(())
    }

    /// The first frame queued, if any. The check for none is inlined into
    /// the connection's loop, which asks up to three times a turn (a call
    /// each cost 35 instructions, perf guard, bytes,1,1,64).
    #[inline]
    pub(crate) fn pop(&self) -> Option<Frame> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.pop_queued()
    }

    fn pop_queued(&self) -> Option<Frame> {
        let mut state = lock(&self.state);
        let frame = state.frames.pop_front();
        self.len.store(state.frames.len(), Ordering::Release);
        frame
    }

    /// `waker` is woken by the next push. Registered before looking at the
    /// queue once more, so that a push in between is not missed.
    pub(crate) fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// No more frames are taken; those queued stay to be popped.
    pub(crate) fn close(&self) {
        lock(&self.state).closed = true;
    }

    /// No more frames are taken, and those queued are dropped: their bytes.
    pub(crate) fn close_and_clear(&self) -> usize {
        let frames = {
            let mut state = lock(&self.state);
            state.closed = true;
            self.len.store(0, Ordering::Release);
            std::mem::take(&mut state.frames)
        };
        frames.iter().map(Frame::wire_len).sum()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::protocol::Kind;
    use std::sync::Arc;
    use std::task::Wake;

    fn notify(byte: u8) -> Frame {
        Frame::new(Kind::Notify, 0, vec![byte])
    }

    /// A waker that counts its wakes (these tests' and `conn::signals`').
    #[derive(Default)]
    pub(in crate::server) struct Count(pub(in crate::server) AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A counting waker, and its count.
    pub(in crate::server) fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    #[test]
    fn frames_come_out_in_order_and_a_push_wakes_the_registered_task() {
        let queue = PushQueue::default();
        let (count, waker) = counted();
        queue.register(&waker);
        assert!(queue.pop().is_none());
        queue.push(notify(1)).unwrap();
        queue.push(notify(2)).unwrap();
        assert!(
            count.0.load(Ordering::SeqCst) >= 1,
            "the push woke the task"
        );
        assert_eq!(queue.pop().unwrap().payload[..], [1]);
        assert_eq!(queue.pop().unwrap().payload[..], [2]);
        assert!(queue.pop().is_none());
    }

    #[test]
    fn a_closed_queue_refuses_pushes_and_keeps_what_it_held() {
        let queue = PushQueue::default();
        queue.push(notify(1)).unwrap();
        queue.close();
        assert!(queue.push(notify(2)).is_err());
        assert_eq!(queue.pop().unwrap().payload[..], [1]);
        assert!(queue.pop().is_none());
    }

    #[test]
    fn clearing_drops_what_was_queued_and_counts_its_bytes() {
        let queue = PushQueue::default();
        queue.push(notify(1)).unwrap();
        queue.push(notify(2)).unwrap();
        let one = notify(1).wire_len();
        assert_eq!(queue.close_and_clear(), 2 * one);
        assert!(queue.pop().is_none());
        assert!(queue.push(notify(3)).is_err());
    }
}
