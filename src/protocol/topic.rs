//! What streams and topics are, as a service declares them (revision
//! 2.2): which way a streaming method streams ([`StreamDirection`]), and a
//! topic ([`Topic`]) with its slow-subscriber policy. Defined here, below
//! the server and the client, which both use them; `rpc` names them with
//! its `StreamMethod`.

use std::fmt;
use std::marker::PhantomData;

/// Which directions of a `StreamMethod` carry items (DESCRIBE's
/// `"streams"`: `"server"`, `"client"` or `"both"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamDirection {
    /// The server sends items; the client sends only the CALL.
    Server,
    /// The client sends items after the CALL, then END; the server answers
    /// once.
    Client,
    /// Both send items.
    Both,
}

impl StreamDirection {
    /// The name DESCRIBE gives it.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamDirection::Server => "server",
            StreamDirection::Client => "client",
            StreamDirection::Both => "both",
        }
    }

    /// Whether the server sends items.
    pub const fn server_sends(self) -> bool {
        matches!(self, StreamDirection::Server | StreamDirection::Both)
    }

    /// Whether the client sends items.
    pub const fn client_sends(self) -> bool {
        matches!(self, StreamDirection::Client | StreamDirection::Both)
    }
}

/// What a topic does with a subscriber whose queue is full when an event
/// is published (PROTOCOL.md "Slow subscribers"; DESCRIBE's `"policy"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SlowSubscriber {
    /// Drop the oldest queued event; the subscriber's next ITEM starts
    /// with a `lagged` entry counting what it lost.
    #[default]
    DropOldest,
    /// End the subscription with ERROR `too slow`.
    Disconnect,
}

impl SlowSubscriber {
    /// The name DESCRIBE gives it.
    pub const fn as_str(self) -> &'static str {
        match self {
            SlowSubscriber::DropOldest => "drop_oldest",
            SlowSubscriber::Disconnect => "disconnect",
        }
    }
}

/// The events a subscriber may fall behind by, unless a topic says
/// otherwise ([`Topic::queue`]).
pub const DEFAULT_TOPIC_QUEUE: usize = 256;

/// A topic: a named stream of events of type `E` that the service
/// publishes to every subscriber. Declare it once, as a `const` both sides
/// use:
///
/// ```
/// use pipesvc::rpc::{SlowSubscriber, Topic};
///
/// /// `ticks`: the server's uptime in milliseconds, once a second.
/// pub const TICKS: Topic<u64> = Topic::new("ticks", "Uptime in ms, once a second");
/// pub const AUDIT: Topic<String> =
///     Topic::new("audit", "Every change").policy(SlowSubscriber::Disconnect).queue(1024);
/// assert_eq!(TICKS.queue_len(), 256);
/// ```
pub struct Topic<E> {
    name: &'static str,
    doc: &'static str,
    policy: SlowSubscriber,
    queue: usize,
    types: PhantomData<fn() -> E>,
}

impl<E> Topic<E> {
    /// A topic called `name` (1 to 255 bytes of UTF-8), described by `doc`,
    /// with the default policy (drop oldest) and queue (256 events).
    pub const fn new(name: &'static str, doc: &'static str) -> Self {
        Topic {
            name,
            doc,
            policy: SlowSubscriber::DropOldest,
            queue: DEFAULT_TOPIC_QUEUE,
            types: PhantomData,
        }
    }

    /// The same topic with another slow-subscriber policy.
    pub const fn policy(mut self, policy: SlowSubscriber) -> Self {
        self.policy = policy;
        self
    }

    /// The same topic letting a subscriber fall behind by `events` (at
    /// least 1).
    pub const fn queue(mut self, events: usize) -> Self {
        self.queue = if events == 0 { 1 } else { events };
        self
    }

    /// The topic's name on the wire.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Its one-line description.
    pub const fn doc(&self) -> &'static str {
        self.doc
    }

    /// Its slow-subscriber policy.
    pub const fn slow_policy(&self) -> SlowSubscriber {
        self.policy
    }

    /// How many events a subscriber may fall behind by.
    pub const fn queue_len(&self) -> usize {
        self.queue
    }
}

impl<E> Clone for Topic<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Topic<E> {}

impl<E> fmt::Debug for Topic<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.name)
            .field("event", &std::any::type_name::<E>())
            .field("policy", &self.policy)
            .field("queue", &self.queue)
            .finish()
    }
}
