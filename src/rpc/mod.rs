//! Typed services (feature `rpc`): methods with serde messages, defined
//! once and used by both sides of protocol 2's CALL.
//!
//! A [`Method`] names a method and fixes its request and response types.
//! Declare each one as a `const` that the server and the client share, so
//! that they cannot disagree on its types:
//!
//! ```
//! use pipesvc::rpc::Method;
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! pub struct Add {
//!     pub a: i64,
//!     pub b: i64,
//! }
//!
//! /// `add`: the sum of `a` and `b`.
//! pub const ADD: Method<Add, i64> = Method::new("add", "Adds two numbers");
//! ```
//!
//! The server registers a handler per method on a [`Service`], which
//! answers CALLs and DESCRIBE ([`Server::builder(..).calls(service)`](crate::server::ServerBuilder::calls)):
//!
//! ```
//! # use pipesvc::rpc::Method;
//! # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! # pub struct Add { pub a: i64, pub b: i64 }
//! # pub const ADD: Method<Add, i64> = Method::new("add", "Adds two numbers");
//! use pipesvc::rpc::Service;
//! use pipesvc::server::ServiceError;
//!
//! let service = Service::new("calculator", "1.0.0", ())
//!     .method(&ADD, |_state, add: Add, _ctx| async move {
//!         add.a.checked_add(add.b).ok_or(ServiceError::new("overflow"))
//!     });
//! # let _ = service;
//! ```
//!
//! and the client calls it with [`Client::call`](crate::Client::call)
//! (`client.call(&ADD, &Add { a: 1, b: 2 }).await?` is `3`), or
//! [`Client::call_with`](crate::Client::call_with) for a deadline,
//! metadata or another encoding ([`CallOptions`]).
//!
//! Messages travel in the CALL's [`Encoding`]: MessagePack (structs as maps
//! of field names, `rmp_serde::to_vec_named`) or JSON. Params that do not
//! decode get ERROR `bad request` naming the field
//! (`params.b: invalid type: string "x", expected i64`); empty params are
//! read as `null` (so a method taking `()` or an `Option` can be called
//! with none). The [`Description`] a DESCRIBE returns lists every method
//! with its doc and the JSON Schemas (from [`schemars`]) of its request and
//! response.
//!
//! ## Deriving with pipesvc's re-exports
//!
//! A crate that does not depend on serde and schemars itself can derive
//! through [`rpc::serde`](serde) and [`rpc::schemars`](schemars), telling
//! the derives where they are:
//!
//! ```
//! use pipesvc::rpc::{schemars, serde};
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! #[serde(crate = "pipesvc::rpc::serde")]
//! #[schemars(crate = "pipesvc::rpc::schemars")]
//! pub struct Ping {
//!     pub text: String,
//! }
//! ```

mod bounded;
mod client;
mod client_stream;
mod codec;
mod description;
mod items;
mod method;
mod service;
mod streaming;

pub use crate::client::CallOptions;
pub use crate::protocol::Encoding;
pub use client_stream::{ItemSender, ItemStream, Subscription, TopicEvent, Upload};
pub use description::{Description, MethodDescription, TopicDescription};
pub use items::{ItemSink, ItemSource};
pub use method::Method;
pub use service::Service;
pub use streaming::{SlowSubscriber, StreamDirection, StreamMethod, Topic, DEFAULT_TOPIC_QUEUE};

/// The `schemars` crate, whose `JsonSchema` derive every message needs
/// (see [Deriving with pipesvc's re-exports](self#deriving-with-pipesvcs-re-exports)).
pub use schemars;
/// The `serde` crate, whose derives every message needs.
pub use serde;
/// The `serde_json` crate: [`MethodDescription`]'s schemas are its `Value`s.
pub use serde_json;
