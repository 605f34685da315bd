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

// Defined below the server and the client, which both use them; named
// here, with the streaming methods.
pub use crate::protocol::{SlowSubscriber, StreamDirection, Topic, DEFAULT_TOPIC_QUEUE};

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
