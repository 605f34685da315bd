//! Topics (PROTOCOL.md "Topics", revision 2.2): the registry a service
//! publishes through ([`Publisher`]), and each subscription's bounded
//! queue of events on their way to its client ([`Subscriber`]).
//!
//! - **The service never waits.** [`Publisher::publish`] encodes the event
//!   once per encoding in use and queues it for every subscriber; a full
//!   queue applies the topic's policy at once: drop the oldest event (the
//!   next ITEM starts with a `lagged` entry counting what was lost) or end
//!   the subscription with ERROR `too slow`, its queue dropped.
//! - **Bounded.** A subscription holds at most its topic's `queue` events;
//!   the connection takes them as ITEMs under the client's credit, as a
//!   server stream's items ([`Parts`]).
//! - **Counted.** Events sent and dropped, and the subscriptions open, go
//!   to the server's [`PushCounters`] (STATUS).
// Without `rpc` no service registers a topic nor publishes.
#![cfg_attr(not(feature = "rpc"), allow(dead_code))]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
#[cfg(feature = "rpc")]
use serde::Serialize;

use super::in_flight::Parts;
use super::{lock, ServiceError};
use crate::log_limit::limited;
use crate::protocol::{Credit, CreditOverflow, Encoding, Entry, ErrorCode, Frame, Kind};
use crate::protocol::{SlowSubscriber, Topic};
use crate::protocol::{ENTRY_HEADER_LEN, MAX_CREDIT};

/// The server's counts of streams and topics (STATUS, revision 2.2),
/// shared by every connection and subscription.
#[derive(Debug, Default)]
pub(crate) struct PushCounters {
    /// Streams of streaming methods open now.
    pub(crate) streams_open: AtomicU64,
    /// Item entries sent in ITEMs of streaming methods.
    pub(crate) items_sent: AtomicU64,
    /// Subscriptions open now.
    pub(crate) subscribers: AtomicU64,
    /// Event entries sent to subscribers.
    pub(crate) events_sent: AtomicU64,
    /// Events subscribers lost: dropped from a full queue, or left unsent
    /// when a subscription or its connection was cut off.
    pub(crate) events_dropped: AtomicU64,
}

impl PushCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// What a service publishes its topics' events through: one registry per
/// [`rpc::Service`](crate::rpc::Service) (its
/// [`publisher`](crate::rpc::Service::publisher)), cheap to clone, reached
/// from a handler through
/// [`ConnectionContext::publisher`](super::ConnectionContext::publisher)
/// and by the product before it serves (take it from the service before
/// handing the service to the server or to `ops::serve`).
#[derive(Clone, Default)]
pub struct Publisher {
    registry: Arc<RwLock<HashMap<&'static str, Arc<TopicState>>>>,
}

/// One topic: its policy and its subscribers.
struct TopicState {
    policy: SlowSubscriber,
    queue: usize,
    /// Its subscriptions; those that ended are dropped at the next publish
    /// or subscribe.
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

impl Publisher {
    /// Adds `topic`; `false` if one of that name exists.
    pub(crate) fn register<E>(&self, topic: &Topic<E>) -> bool {
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if registry.contains_key(topic.name()) {
            return false;
        }
        let state = TopicState {
            policy: topic.slow_policy(),
            queue: topic.queue_len(),
            subscribers: Mutex::new(Vec::new()),
        };
        registry.insert(topic.name(), Arc::new(state));
        true
    }

    fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        registry.get(name).cloned()
    }

    /// Whether the service has a topic called `name`.
    pub(crate) fn has_topic(&self, name: &str) -> bool {
        self.topic(name).is_some()
    }

    /// Publishes `event` to every subscriber of `topic` (in the order
    /// published, per subscriber), without waiting for any: a subscriber
    /// whose queue is full meets the topic's policy. Returns how many
    /// subscribers it was queued for. An event that does not encode, or a
    /// topic the service did not register, reaches nobody (logged).
    #[cfg(feature = "rpc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rpc")))]
    pub fn publish<E: Serialize>(&self, topic: &Topic<E>, event: &E) -> usize {
        let Some(state) = self.topic(topic.name()) else {
            limited!(
                warn,
                topic = topic.name(),
                "publish to a topic the service has not registered"
            );
            return 0;
        };
        let mut subscribers = lock(&state.subscribers);
        subscribers.retain(|s| !s.is_over());
        if subscribers.is_empty() {
            return 0;
        }
        // Encoded once per encoding its subscribers use.
        let mut encoded: [Option<Bytes>; 2] = [None, None];
        let mut reached = 0;
        for subscriber in subscribers.iter() {
            let slot = match subscriber.encoding {
                Encoding::Json => 0,
                Encoding::MessagePack => 1,
            };
            if encoded[slot].is_none() {
                match encode(subscriber.encoding, event) {
                    Ok(bytes) => encoded[slot] = Some(bytes),
                    Err(e) => {
                        limited!(warn, topic = topic.name(), error = %e, "an event does not encode");
                        return 0;
                    }
                }
            }
            let value = encoded[slot].as_ref().expect("encoded above");
            if subscriber.offer(value, state.policy, state.queue) {
                reached += 1;
            }
        }
        subscribers.retain(|s| !s.is_over());
        reached
    }

    /// Ends every subscription to `topic` open now: each gets the events
    /// queued for it, then a RESPONSE (empty payload). Later SUBSCRIBEs
    /// open new subscriptions.
    pub fn close<E>(&self, topic: &Topic<E>) {
        let Some(state) = self.topic(topic.name()) else {
            return;
        };
        for subscriber in lock(&state.subscribers).drain(..) {
            subscriber.end(Ending::Closed);
        }
    }

    /// How many subscriptions to `topic` are open now.
    pub fn subscribers<E>(&self, topic: &Topic<E>) -> usize {
        self.topic(topic.name()).map_or(0, |state| {
            let subscribers = lock(&state.subscribers);
            subscribers.iter().filter(|s| !s.is_over()).count()
        })
    }

    /// Adds a subscription to the topic `name` (which exists: checked by
    /// [`Publisher::has_topic`]).
    pub(super) fn subscribe(&self, name: &str, subscriber: Arc<Subscriber>) {
        if let Some(state) = self.topic(name) {
            let mut subscribers = lock(&state.subscribers);
            // Also here: a client that subscribes and cancels over and
            // over does not grow the list while nothing is published.
            subscribers.retain(|s| !s.is_over());
            subscribers.push(subscriber);
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&str> = registry.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("Publisher").field("topics", &names).finish()
    }
}

/// How a subscription ends from the service's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The service closed the topic: RESPONSE after the queued events.
    Closed,
    /// It fell behind under the `disconnect` policy: ERROR `too slow`,
    /// its queue dropped.
    TooSlow,
}

/// One subscription: its queue of events, as the connection sends them.
pub(super) struct Subscriber {
    id: u32,
    encoding: Encoding,
    max_payload: usize,
    counters: Arc<PushCounters>,
    inner: Mutex<SubInner>,
}

struct SubInner {
    /// The `subscribed` entry is still to be sent.
    subscribed: bool,
    /// Encoded events not yet sent, oldest first.
    queue: VecDeque<Bytes>,
    /// Events dropped since the last ITEM.
    lagged: u64,
    /// The client's credit.
    credit: Credit,
    /// The subscription's slot, to wake when an ITEM may go out.
    slot: Option<Waker>,
    ending: Option<Ending>,
    /// The subscription's last answer, waiting for its ending.
    end_waker: Option<Waker>,
    /// The stream is over on the connection's side (cancelled, shut
    /// down, the connection gone): nothing more is queued.
    closed: bool,
}

impl Subscriber {
    pub(super) fn new(
        id: u32,
        encoding: Encoding,
        window: u32,
        max_payload: usize,
        counters: Arc<PushCounters>,
    ) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            id,
            encoding,
            max_payload,
            counters,
            inner: Mutex::new(SubInner {
                subscribed: true,
                queue: VecDeque::new(),
                lagged: 0,
                credit: Credit::new(window),
                slot: None,
                ending: None,
                end_waker: None,
                closed: false,
            }),
        })
    }

    fn is_over(&self) -> bool {
        let inner = lock(&self.inner);
        inner.closed || inner.ending.is_some()
    }

    /// Queues `value` under `policy` with room for `queue` events; `false`
    /// if the subscription is over (or just ended, too slow).
    fn offer(&self, value: &Bytes, policy: SlowSubscriber, queue: usize) -> bool {
        if ENTRY_HEADER_LEN + value.len() > self.max_payload {
            limited!(
                warn,
                len = value.len(),
                "an event larger than the frame limit was dropped"
            );
            PushCounters::add(&self.counters.events_dropped, 1);
            return true;
        }
        let mut inner = lock(&self.inner);
        if inner.closed || inner.ending.is_some() {
            return false;
        }
        inner.queue.push_back(value.clone());
        if inner.queue.len() > queue {
            match policy {
                SlowSubscriber::DropOldest => {
                    inner.queue.pop_front();
                    inner.lagged += 1;
                    PushCounters::add(&self.counters.events_dropped, 1);
                }
                SlowSubscriber::Disconnect => {
                    // Its ERROR goes ahead of everything queued: dropped.
                    let dropped = inner.queue.len() as u64;
                    inner.queue.clear();
                    inner.subscribed = false;
                    inner.lagged = 0;
                    PushCounters::add(&self.counters.events_dropped, dropped);
                    drop(inner);
                    self.end(Ending::TooSlow);
                    return false;
                }
            }
        }
        if inner.credit.may_send() {
            wake(&inner.slot);
        }
        true
    }

    fn end(&self, ending: Ending) {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.ending.is_some() {
            return;
        }
        inner.ending = Some(ending);
        if let Some(waker) = inner.end_waker.take() {
            waker.wake();
        }
    }

    /// The client granted `bytes` more credit.
    pub(super) fn grant(&self, bytes: u32) -> Result<(), CreditOverflow> {
        let mut inner = lock(&self.inner);
        inner.credit.grant(bytes)?;
        debug_assert!(inner.credit.get() <= MAX_CREDIT);
        if inner.credit.may_send() {
            wake(&inner.slot);
        }
        Ok(())
    }

    /// The stream is over on the connection's side: what was queued is
    /// lost (counted as dropped).
    pub(super) fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        let dropped = inner.queue.len() as u64;
        inner.queue.clear();
        PushCounters::add(&self.counters.events_dropped, dropped);
    }

    /// The subscription's last answer, once the service's side ends it:
    /// an empty RESPONSE (the topic closed) or ERROR `too slow`.
    pub(super) fn last_answer(
        self: Arc<Self>,
    ) -> impl Future<Output = Result<Bytes, ServiceError>> + Send + 'static {
        std::future::poll_fn(move |cx| {
            let mut inner = lock(&self.inner);
            match inner.ending {
                Some(Ending::Closed) => Poll::Ready(Ok(Bytes::new())),
                Some(Ending::TooSlow) => Poll::Ready(Err(ServiceError::protocol(
                    ErrorCode::TOO_SLOW,
                    format!(
                        "subscription {} fell behind: more events were published than its queue holds",
                        self.id
                    ),
                ))),
                None => {
                    inner.end_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

impl Parts for Subscriber {
    fn attach(&self, waker: Waker) {
        lock(&self.inner).slot = Some(waker);
    }

    /// The next ITEM while the credit is above 0: the `subscribed` entry
    /// first (once), a `lagged` entry if events were dropped since the
    /// last ITEM, then as many events as fit one payload (at least one).
    fn next_part(&self) -> Option<Frame> {
        let mut inner = lock(&self.inner);
        let pending = inner.subscribed || inner.lagged > 0 || !inner.queue.is_empty();
        if !pending || !inner.credit.may_send() {
            return None;
        }
        let mut payload = BytesMut::new();
        if std::mem::take(&mut inner.subscribed) {
            Entry::Subscribed.encode_into(&mut payload);
        }
        let lagged = std::mem::take(&mut inner.lagged);
        if lagged > 0 {
            Entry::Lagged(lagged).encode_into(&mut payload);
        }
        let mut events = 0;
        while let Some(value) = inner.queue.front() {
            let len = ENTRY_HEADER_LEN + value.len();
            if !payload.is_empty() && payload.len() + len > self.max_payload {
                break;
            }
            let value = inner.queue.pop_front().expect("a front event");
            Entry::Item(value).encode_into(&mut payload);
            events += 1;
        }
        inner.credit.take(payload.len());
        drop(inner);
        PushCounters::add(&self.counters.events_sent, events);
        Some(Frame::new(Kind::Item, self.id, payload.freeze()))
    }

    fn is_drained(&self) -> bool {
        let inner = lock(&self.inner);
        inner.closed || (!inner.subscribed && inner.lagged == 0 && inner.queue.is_empty())
    }
}

/// `event` in `encoding`, as `rpc`'s codec writes messages (MessagePack
/// with structs as maps of field names).
#[cfg(feature = "rpc")]
fn encode<E: Serialize>(encoding: Encoding, event: &E) -> Result<Bytes, String> {
    match encoding {
        Encoding::Json => serde_json::to_vec(event).map_err(|e| e.to_string()),
        Encoding::MessagePack => rmp_serde::to_vec_named(event).map_err(|e| e.to_string()),
    }
    .map(Bytes::from)
}

fn wake(slot: &Option<Waker>) {
    if let Some(waker) = slot {
        waker.wake_by_ref();
    }
}
