//! [`Method`]: a method's name and doc, and its request and response types.

use std::fmt;
use std::marker::PhantomData;

/// A method of a typed service: its name on the wire, its one-line doc, and
/// the types of its request (`Req`) and response (`Resp`).
///
/// Declare each method once, as a `const` both the server
/// ([`Service::method`](super::Service::method)) and the client
/// ([`Client::call`](crate::Client::call)) use:
///
/// ```
/// use pipesvc::rpc::Method;
///
/// pub const SHOUT: Method<String, String> = Method::new("shout", "The text in capitals");
/// assert_eq!(SHOUT.name(), "shout");
/// ```
pub struct Method<Req, Resp> {
    name: &'static str,
    doc: &'static str,
    // `fn(Req) -> Resp`: a method holds no value of either type, so it is
    // Send, Sync and Copy whatever they are.
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Method<Req, Resp> {
    /// A method called `name` (what a CALL carries: 1 to 255 bytes of
    /// UTF-8; [`Service::method`](super::Service::method) checks it),
    /// described by `doc` in DESCRIBE.
    pub const fn new(name: &'static str, doc: &'static str) -> Self {
        Method {
            name,
            doc,
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
}

impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Method<Req, Resp> {}

impl<Req, Resp> fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method")
            .field("name", &self.name)
            .field("request", &std::any::type_name::<Req>())
            .field("response", &std::any::type_name::<Resp>())
            .finish()
    }
}
