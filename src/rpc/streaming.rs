//! Streaming methods and topics (PROTOCOL.md revision 2.2), declared once
//! as `const`s that the server and the client share, like [`Method`](super::Method).
//!
//! - [`StreamMethod`]: a method that answers with a stream of items (server
//!   streaming), takes a stream of items from the client (client
//!   streaming, an upload of any size) or both, then ends with a result.
//! - [`Topic`]: a named stream of events the service publishes to every
//!   subscriber, with the policy for a subscriber that falls behind.

use std::fmt;
use std::marker::PhantomData;

/// Which directions of a [`StreamMethod`] carry items (DESCRIBE's
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

/// A streaming method: its name and doc, which directions stream, and the
/// types of its params (`Req`), of the items the client sends (`In`), of
/// the items the server sends (`Out`) and of its result (`Resp`).
///
/// A direction that does not stream has the item type `()`:
///
/// ```
/// use pipesvc::rpc::StreamMethod;
///
/// /// `count`: the numbers 1 to n.
/// pub const COUNT: StreamMethod<u64, (), u64, ()> =
///     StreamMethod::server("count", "The numbers 1 to n");
/// /// `lines`: takes lines, answers how many.
/// pub const LINES: StreamMethod<(), String, (), u64> =
///     StreamMethod::client("lines", "Counts the lines uploaded");
/// assert_eq!(COUNT.name(), "count");
/// ```
pub struct StreamMethod<Req, In, Out, Resp> {
    name: &'static str,
    doc: &'static str,
    direction: StreamDirection,
    // Holds no value of any of the types: Send, Sync and Copy whatever
    // they are.
    types: Types<Req, In, Out, Resp>,
}

/// The types a [`StreamMethod`] fixes, as a function's: it holds no value.
type Types<Req, In, Out, Resp> = PhantomData<fn(Req, In) -> (Out, Resp)>;

impl<Req, Out, Resp> StreamMethod<Req, (), Out, Resp> {
    /// A server streaming method called `name`, described by `doc`.
    pub const fn server(name: &'static str, doc: &'static str) -> Self {
        StreamMethod::new(name, doc, StreamDirection::Server)
    }
}

impl<Req, In, Resp> StreamMethod<Req, In, (), Resp> {
    /// A client streaming method (an upload) called `name`.
    pub const fn client(name: &'static str, doc: &'static str) -> Self {
        StreamMethod::new(name, doc, StreamDirection::Client)
    }
}

impl<Req, In, Out, Resp> StreamMethod<Req, In, Out, Resp> {
    /// A method streaming both ways called `name`.
    pub const fn both(name: &'static str, doc: &'static str) -> Self {
        StreamMethod::new(name, doc, StreamDirection::Both)
    }

    const fn new(name: &'static str, doc: &'static str, direction: StreamDirection) -> Self {
        StreamMethod {
            name,
            doc,
            direction,
            types: PhantomData,
        }
    }

    /// The method's name on the wire.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Its one-line description.
    pub const fn doc(&self) -> &'static str {
        self.doc
    }

    /// Which directions carry items.
    pub const fn direction(&self) -> StreamDirection {
        self.direction
    }
}

impl<Req, In, Out, Resp> Clone for StreamMethod<Req, In, Out, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, In, Out, Resp> Copy for StreamMethod<Req, In, Out, Resp> {}

impl<Req, In, Out, Resp> fmt::Debug for StreamMethod<Req, In, Out, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamMethod")
            .field("name", &self.name)
            .field("direction", &self.direction)
            .field("request", &std::any::type_name::<Req>())
            .field("client_item", &std::any::type_name::<In>())
            .field("server_item", &std::any::type_name::<Out>())
            .field("response", &std::any::type_name::<Resp>())
            .finish()
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
