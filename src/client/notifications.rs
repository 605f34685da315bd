//! [`Notifications`]: the NOTIFY frames a server pushes to a client, and
//! the bounded queue that carries them from the reader task to the app.
//!
//! The queue is bounded in frames and in bytes. What happens when it is
//! full is the [`NotificationPolicy`]: by default the reader waits for
//! room (nothing is lost; the server is slowed down through the
//! connection), or, if asked, the notification is dropped and the stream
//! says so with [`Notification::Lagged`]. Until the stream is taken, the
//! buffer fills without waiting (what does not fit is dropped and reported
//! by a `Lagged` item when the stream is taken), so that a client which
//! has not asked for its notifications yet never stalls; after the stream
//! is dropped, and under [`NotificationPolicy::Ignore`] (what the CLI
//! uses), nothing is buffered at all.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::Notify;

/// What a full notification buffer does with the next notification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotificationPolicy {
    /// Nothing is lost: the client stops reading from the connection until
    /// the app takes a notification. Responses arrive on the same
    /// connection, behind the notifications, so an app that takes the
    /// stream must keep reading it, or its requests stall (until their
    /// deadline). The default.
    #[default]
    Backpressure,
    /// The notification is dropped, and the stream yields
    /// [`Notification::Lagged`] with the number lost at that point.
    /// Responses are never held up.
    DropNewest,
    /// Notifications are read and discarded, never buffered: for clients
    /// that never read them (the CLI). [`Client::notifications`] still
    /// returns a stream, which only ends.
    ///
    /// [`Client::notifications`]: super::Client::notifications
    Ignore,
}

/// One item of the [`Notifications`] stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// A NOTIFY payload from the server.
    Message(Bytes),
    /// This many notifications were lost here: dropped because the buffer
    /// was full ([`NotificationPolicy::DropNewest`]), or discarded because
    /// they arrived before the stream was taken.
    Lagged(u64),
}

impl Notification {
    /// The payload, if this is a message.
    pub fn message(&self) -> Option<&Bytes> {
        match self {
            Notification::Message(payload) => Some(payload),
            Notification::Lagged(_) => None,
        }
    }
}

/// NOTIFY payloads from the server, in the order they arrived, with a
/// [`Notification::Lagged`] marker wherever some were lost. Ends when the
/// connection closes: after a GOODBYE, only once the server has sent the
/// last answers (and their NOTIFYs) and closed (with `reconnect`: when the
/// client is closed). Also a [`futures_util::Stream`]. Dropping it stops
/// the buffering.
#[derive(Debug)]
pub struct Notifications {
    queue: Arc<Queue>,
}

impl Notifications {
    /// The next notification, or `None` once the stream has ended and
    /// every buffered notification has been read.
    pub async fn recv(&mut self) -> Option<Notification> {
        std::future::poll_fn(|cx| self.queue.poll_take(cx)).await
    }
}

impl futures_util::Stream for Notifications {
    type Item = Notification;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.queue.poll_take(cx)
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let mut state = self.queue.state();
        state.listening = Listening::Gone;
        state.items.clear();
        state.bytes = 0;
        drop(state);
        self.queue.room.notify_waiters();
    }
}

/// The queue shared by the reader tasks (one per connection, across
/// reconnects) and the [`Notifications`] stream.
#[derive(Debug)]
pub(super) struct Queue {
    state: Mutex<State>,
    /// Wakes a reader waiting for room.
    room: Notify,
    policy: NotificationPolicy,
    max_items: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Notification>,
    /// Payload bytes in `items`.
    bytes: usize,
    listening: Listening,
    ended: bool,
    /// Notifications lost so far (dropped or discarded).
    lost: u64,
    waker: Option<std::task::Waker>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listening {
    NotYet,
    Yes,
    Gone,
}

impl Queue {
    pub(super) fn new(policy: NotificationPolicy, max_items: usize, max_bytes: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                listening: Listening::NotYet,
                ended: false,
                lost: 0,
                waker: None,
            }),
            room: Notify::new(),
            policy,
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }

    /// The stream, the first time; `None` after.
    pub(super) fn take(self: &Arc<Self>) -> Option<Notifications> {
        let mut state = self.state();
        if state.listening != Listening::NotYet {
            return None;
        }
        state.listening = Listening::Yes;
        Some(Notifications {
            queue: self.clone(),
        })
    }

    /// Notifications lost so far.
    pub(super) fn lost(&self) -> u64 {
        self.state().lost
    }

    /// No more notifications: the stream ends once drained. Readers
    /// waiting for room give up.
    pub(super) fn end(&self) {
        let mut state = self.state();
        state.ended = true;
        let waker = state.waker.take();
        drop(state);
        self.room.notify_waiters();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Delivers one notification, waiting for room under
    /// [`NotificationPolicy::Backpressure`].
    pub(super) async fn deliver(&self, payload: Bytes) {
        let mut payload = Some(payload);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.try_deliver(&mut payload) {
                return;
            }
            room.await;
        }
    }

    /// One attempt; `false` if the reader must wait for room.
    fn try_deliver(&self, payload: &mut Option<Bytes>) -> bool {
        let mut state = self.state();
        let unwanted = self.policy == NotificationPolicy::Ignore
            || state.listening == Listening::Gone
            || state.ended;
        if unwanted {
            return true;
        }
        let len = payload.as_ref().map_or(0, Bytes::len);
        // One notification always fits in an empty buffer, whatever its
        // size (the frame limit bounds it): otherwise a large one could
        // never be delivered.
        let fits = state.items.len() < self.max_items
            && (state.bytes == 0 || state.bytes + len <= self.max_bytes);
        if fits {
            state.bytes += len;
            let payload = payload.take().expect("delivered once");
            state.items.push_back(Notification::Message(payload));
            if let Some(waker) = state.waker.take() {
                drop(state);
                waker.wake();
            }
            return true;
        }
        // Before the stream is taken nobody can make room: drop rather
        // than stall the connection.
        if self.policy == NotificationPolicy::Backpressure && state.listening == Listening::Yes {
            return false;
        }
        state.lose();
        let lost = state.lost;
        drop(state);
        tracing::debug!(lost, "notification buffer full; dropped a notification");
        true
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        let mut state = self.state();
        match state.items.pop_front() {
            Some(item) => {
                if let Notification::Message(payload) = &item {
                    state.bytes -= payload.len();
                }
                drop(state);
                self.room.notify_waiters();
                Poll::Ready(Some(item))
            }
            None if state.ended => Poll::Ready(None),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl State {
    /// Counts one lost notification, in the marker at the queue's end.
    fn lose(&mut self) {
        self.lost += 1;
        match self.items.back_mut() {
            Some(Notification::Lagged(n)) => *n += 1,
            _ => self.items.push_back(Notification::Lagged(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(policy: NotificationPolicy) -> Arc<Queue> {
        Arc::new(Queue::new(policy, 2, 10))
    }

    fn payload(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[tokio::test]
    async fn before_the_stream_is_taken_the_bounds_hold_and_the_loss_is_reported() {
        // Room for the marker and one more message after the take.
        let queue = Arc::new(Queue::new(NotificationPolicy::Backpressure, 3, 10));
        queue.deliver(payload(8)).await;
        queue.deliver(payload(8 << 20)).await;
        queue.deliver(payload(8 << 20)).await;
        assert_eq!(queue.state().bytes, 8);
        let mut stream = queue.take().unwrap();
        assert!(queue.take().is_none());
        queue.deliver(payload(1)).await;
        queue.end();
        assert_eq!(stream.recv().await, Some(Notification::Message(payload(8))));
        assert_eq!(stream.recv().await, Some(Notification::Lagged(2)));
        assert_eq!(stream.recv().await, Some(Notification::Message(payload(1))));
        assert_eq!(stream.recv().await, None);
    }

    #[tokio::test]
    async fn ignore_buffers_nothing() {
        let queue = queue(NotificationPolicy::Ignore);
        for _ in 0..3 {
            queue.deliver(payload(8 << 20)).await;
        }
        assert_eq!(queue.state().bytes, 0);
        assert!(queue.state().items.is_empty());
        assert_eq!(queue.lost(), 0);
    }

    #[tokio::test]
    async fn drop_newest_marks_the_gap_and_stays_within_its_bytes() {
        let queue = queue(NotificationPolicy::DropNewest);
        let stream = queue.take().unwrap();
        for len in [6, 4, 1, 1, 5] {
            queue.deliver(payload(len)).await;
        }
        assert!(queue.state().bytes <= 10);
        queue.end();
        let items: Vec<_> = std::iter::from_fn(|| stream.queue.state().items.pop_front()).collect();
        assert_eq!(
            items,
            [
                Notification::Message(payload(6)),
                Notification::Message(payload(4)),
                Notification::Lagged(3),
            ]
        );
        assert_eq!(queue.lost(), 3);
    }

    #[tokio::test]
    async fn backpressure_waits_for_room_and_loses_nothing() {
        let queue = queue(NotificationPolicy::Backpressure);
        let mut stream = queue.take().unwrap();
        let producer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                for i in 0..100u8 {
                    queue.deliver(Bytes::from(vec![i; 4])).await;
                    assert!(queue.state().bytes <= 10);
                }
                queue.end();
            })
        };
        for i in 0..100u8 {
            assert_eq!(
                stream.recv().await,
                Some(Notification::Message(Bytes::from(vec![i; 4])))
            );
        }
        assert_eq!(stream.recv().await, None);
        producer.await.unwrap();
        assert_eq!(queue.lost(), 0);
    }
}
