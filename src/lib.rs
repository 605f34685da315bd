//! # pipesvc
//!
//! Local IPC services over Windows named pipes, with Tokio: a server loop
//! that always has a pipe instance listening, a framed request/response
//! protocol ([`PROTOCOL.md`](https://docs.rs/crate/pipesvc/latest/source/PROTOCOL.md)),
//! and an async client that many tasks share. On Unix the same API runs
//! over Unix domain sockets.
//!
//! - [`server`]: [`Server`] runs a [`Handler`](server::Handler) for each request.
//! - [`client`]: [`Client`] sends requests and receives notifications.
//! - `rpc` (feature `rpc`, default): typed services, methods with serde
//!   messages in JSON or MessagePack, defined once for both sides.
//! - [`protocol`]: the frame layout and its [`FrameCodec`](protocol::FrameCodec).
//! - [`transport`]: raw byte streams, one module per platform, and an
//!   in-memory one ([`transport::memory`]).
//! - `testing` (feature `testing`): unique endpoints, a server that stops
//!   on drop, a service binary as a child process, fault injection.
//! - [`Endpoint`]: one name that works on every platform.
//! - [`ops`]: running your own handler as a service (config file and
//!   variables, systemd, the Windows service manager), each behind a
//!   feature.
//!
//! ## Features
//!
//! - `cli` (default): the `pipesvc` binary; turns on every feature below
//!   but `testing`.
//! - `rpc` (default): `rpc`, typed services and typed calls (serde,
//!   serde_json, rmp-serde, schemars, serde_path_to_error).
//! - `config`: `ops::config`, settings from a TOML file, `PREFIX_*`
//!   variables and command-line flags; `ops::serve`; `Product::parse`.
//! - `logging`: `ops::logging`, log lines as text or JSON to stderr or a
//!   file (tracing-subscriber).
//! - `systemd`: `ops::systemd`, readiness and socket activation (Linux).
//! - `windows-service`: `ops::windows_service`, the Windows service
//!   commands and the Service Control Manager entry point (implies
//!   `config` and `logging`).
//! - `testing`: `testing`, helpers for a product's tests.
//! - `peers`: nothing in the library; the comparison bench's tonic and
//!   tarpc contenders (Unix only).
//!
//! With `default-features = false` the library needs only Tokio,
//! tokio-util, bytes, futures-util, tracing and thiserror.

#![warn(missing_docs)]

pub mod client;
pub mod endpoint;
pub mod error;
mod frame_io;
mod id_hash;
mod log_limit;
pub mod ops;
pub mod protocol;
#[cfg(feature = "rpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "rpc")))]
pub mod rpc;
pub mod server;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod transport;
mod validate;

/// The `bytes` crate, whose [`Bytes`](bytes::Bytes) carries every request,
/// response and notification: `pipesvc::bytes::Bytes` needs no dependency
/// of your own.
pub use bytes;
pub use client::{Client, ClientOptions};
pub use endpoint::Endpoint;
pub use error::{Error, Result};
pub use server::Server;

// The README's Rust snippets compile as doc tests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
