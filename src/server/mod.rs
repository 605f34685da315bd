//! The server: accepts clients on an endpoint and runs a [`Handler`] for
//! their requests, one task per connection.
//!
//! ```no_run
//! # async fn run() -> pipesvc::Result<()> {
//! use bytes::Bytes;
//! use pipesvc::server::{ConnectionContext, Server, ServiceError};
//!
//! let server = Server::builder("my_service".parse()?)
//!     .handler(|request: Bytes, _ctx: ConnectionContext| async move {
//!         Ok::<_, ServiceError>(request)
//!     })
//!     .bind()?;
//! server.serve_until(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! Besides the clients it accepts on its endpoint, a server serves any byte
//! stream handed to it with [`ServerHandle::serve_connection`], such as one
//! end of an in-memory [`pair`](crate::transport::memory::pair), under the
//! same policy, limits and shutdown. [`ServerBuilder::build`] makes a
//! server that listens nowhere and serves only such streams.

mod access;
mod budget;
mod calls;
mod conn;
mod connection_context;
mod fair_share;
#[cfg(unix)]
mod fd_limit;
mod handler;
mod in_flight;
mod input;
mod push_queue;
mod stats;
mod stream;
mod topics;
mod waiting;

#[cfg(feature = "rpc")]
pub(crate) use budget::{Hold, MemoryBudget};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::protocol::ServiceCode;
pub use access::{AccessPolicy, Preset, Refusal, Rule};
pub use calls::Calls;
pub use connection_context::ConnectionContext;
pub use handler::{Handler, ServiceError};
pub use input::HANDSHAKE_MAX_FRAME_LEN;
pub use stream::{ItemReceiver, ItemSender, StreamClosed, StreamItems};
pub use topics::Publisher;
pub(crate) use topics::PushCounters;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::log_limit::limited;
use crate::protocol::{
    Encoding, ErrorCode, Frame, HelloReply, ServerHello, Status, DEFAULT_MAX_FRAME_LEN, HEADER_LEN,
    PROTOCOL_VERSION, SMALLEST_STATUS_LEN,
};
use crate::transport::{Caller, Generic, Listener, ListenerOptions, PeerInfo, PipeMode, ServerIo};
use crate::validate;

/// The smallest `max_frame_len` a server accepts: 74, the `length` of the
/// largest frame every server must be able to send itself whatever it
/// serves, the STATUS answer with its fixed counts. A server's HELLO (16
/// bytes plus its name) or HELLO reply (26 plus one per encoding) may need
/// more, and then that is the smallest; every other frame the server makes
/// fits whatever is accepted: its ERRORs are cut to fit, an answer or
/// description too large becomes ERROR `frame too large`.
pub const MIN_MAX_FRAME_LEN: u32 = (HEADER_LEN + SMALLEST_STATUS_LEN) as u32;

/// Default limit on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default limit on requests handled at once per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default time a client has to answer the server's HELLO.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time in-flight requests get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a client may leave queued frames unread before it is dropped.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit on the bytes of NOTIFYs (from handlers and broadcasts)
/// one connection holds unwritten.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// The largest `max_output_bytes` (512 MiB less one byte): a connection
/// counts its room in a semaphore's permits, and tokio allows no more on
/// 32-bit hosts (2^29 - 1), so one bound holds everywhere.
pub const MAX_OUTPUT_BYTES: usize = (u32::MAX >> 3) as usize;
/// Default time a client has to finish a frame it has started sending.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on the bytes all clients' frames make the server hold at
/// once, unfinished, waiting or running (with their metadata and decoded
/// params): 256 MiB, room for 200 clients each sending a 1 MiB frame at
/// the same moment (1/32 of what 1024 connections with 8 MiB frames would
/// hold).
pub const DEFAULT_INPUT_BUDGET: usize = 256 * 1024 * 1024;
/// Default bound on the bytes one connection's requests make the server
/// hold before it stops reading that connection: 32 MiB, four frames of
/// the default maximum (so a client pipelining large requests keeps the
/// server busy), 1/8 of the default input budget.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 32 * 1024 * 1024;
/// Default time a request without a deadline of its own (every REQUEST, a
/// CALL with timeout 0) may run before the server answers it ERROR `timed
/// out`: 5 minutes, far beyond what an interactive call takes, short
/// enough that a client cannot park memory in the server for hours.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Default share of `max_connections` one user may hold
/// ([`ServerBuilder::max_connections_per_user`]): an eighth, so that at
/// least eight users always find room (128 of the default 1024).
pub const DEFAULT_CONNECTIONS_PER_USER_DIVISOR: usize = 8;
/// Default number of frames that get no answer (a CANCEL for a request not
/// in flight, a NOTIFY, an unknown kind with id 0) one connection may send
/// per second, after a burst of as many: far more than any client needs
/// (a CANCEL per request, NOTIFYs of its own), few enough that a flood
/// costs the server a few percent of a core.
pub const DEFAULT_UNANSWERED_FRAME_RATE: u32 = 10_000;

/// Extra time, past the shutdown deadline, for connections to flush their
/// last frames before their tasks are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Refusals (ERROR instead of HELLO) in progress at once; past that a
/// client to refuse is just disconnected, so that a reconnect flood
/// cannot make a task per client. Each refusal lasts at most two flush
/// timeouts (1 s each: sending the ERROR, then closing).
const MAX_REFUSALS: usize = 32;

/// First and longest pause after `accept` fails (for a reason other than
/// a client the reserve descriptor lets us refuse); it doubles while the
/// failures go on, so that a lasting failure neither spins nor floods.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Settings shared by every connection of one server.
#[derive(Debug)]
struct Config {
    name: String,
    max_frame_len: u32,
    max_in_flight: usize,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    idle_timeout: Option<Duration>,
    write_timeout: Duration,
    max_output_bytes: usize,
    frame_timeout: Duration,
    /// Shared by every connection: the bytes their frames hold, unfinished,
    /// waiting or running.
    input_budget: Arc<budget::MemoryBudget>,
    /// What one connection's requests may hold before it is not read.
    max_input_bytes: usize,
    /// How long a request without a deadline of its own may run.
    request_timeout: Option<Duration>,
    /// Frames without an answer one connection may send per second.
    unanswered_frame_rate: Option<u32>,
    /// The typed methods, if the service has any (protocol 2).
    calls: Option<CallsRef>,
    /// Who may connect and call what, with its names resolved.
    access: Arc<AccessPolicy>,
    /// Whether the policy reads callers' executables: then each client's
    /// process is pinned at accept where the platform can.
    pin_process: bool,
    /// The HELLO reply at this crate's version, encoded at the first
    /// connection that needs it: it depends only on the version and the
    /// service's encodings, and building it cost 1,600 instructions a
    /// connect.
    hello_reply: std::sync::OnceLock<bytes::Bytes>,
    /// The server's HELLO, encoded at the first connection: it depends
    /// only on the maximum frame length and the name, and building it
    /// (the name copied, the frame encoded) took two allocations a connect.
    hello: std::sync::OnceLock<bytes::Bytes>,
}

/// The service's [`Calls`], shared by its connections.
#[derive(Clone)]
struct CallsRef(Arc<dyn Calls>);

impl std::fmt::Debug for CallsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("encodings", &self.0.encodings())
            .finish_non_exhaustive()
    }
}

impl Config {
    fn max_payload(&self) -> usize {
        self.max_frame_len as usize - HEADER_LEN
    }
}

/// Builds a [`Server`]. Start with [`Server::builder`].
#[must_use]
pub struct ServerBuilder<H = ()> {
    endpoint: Endpoint,
    listener: ListenerOptions,
    max_connections: usize,
    /// `None`: a share of `max_connections`.
    max_connections_per_user: Option<usize>,
    access: AccessPolicy,
    config: Config,
    handler: H,
}

/// Who the client of a new connection is.
enum Who {
    /// Known at accept (Unix), or vouched for by whoever handed the stream
    /// over.
    Known(Caller),
    /// Read from the stream once the client has written to it (Windows:
    /// its token, after its HELLO); what the listener said until then.
    Later(PeerInfo),
}

impl<H> ServerBuilder<H> {
    /// The service's handler.
    pub fn handler<H2: Handler>(self, handler: H2) -> ServerBuilder<H2> {
        ServerBuilder {
            endpoint: self.endpoint,
            listener: self.listener,
            max_connections: self.max_connections,
            max_connections_per_user: self.max_connections_per_user,
            access: self.access,
            config: self.config,
            handler,
        }
    }

    /// The service's typed methods (protocol 2), such as an
    /// [`rpc::Service`](crate::rpc::Service): they answer CALLs and
    /// DESCRIBE, beside the byte handler that answers REQUESTs. A server
    /// without them still speaks protocol 2: its CALLs reach only the byte
    /// handler (the empty method), and DESCRIBE lists no methods.
    pub fn calls(mut self, calls: impl Calls) -> Self {
        self.config.calls = Some(CallsRef(Arc::new(calls)));
        self
    }

    /// The name sent in HELLO (default `pipesvc`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Connections served at once (default 1024; at least 1, or `bind`
    /// fails). A client over the limit gets ERROR `overloaded` and is
    /// disconnected.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Largest `length` field accepted and sent (default 8 MiB). It must
    /// hold the largest frame the server sends itself, or `bind` fails: at
    /// least [`MIN_MAX_FRAME_LEN`] (74, the STATUS answer), and more if
    /// the server's HELLO (16 bytes plus the name) or its HELLO reply (26
    /// bytes plus one per encoding) is longer.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.config.max_frame_len = max;
        self
    }

    /// Requests handled at once per connection (default 64; at least 1, or
    /// `bind` fails). At the limit the server reads on: the REQUESTs (and
    /// CALLs, and NOTIFYs) it reads there wait in order and start as slots
    /// free, while PING and STATUS (and on protocol 2 CANCEL, DESCRIBE and
    /// unknown kinds) are answered at once; a CANCEL reaches a waiting
    /// request. Reading stops once one more than this many wait, or when
    /// the connection's requests hold [`max_input_bytes`](Self::max_input_bytes).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max;
        self
    }

    /// Time a client has to send its HELLO (default 10 s; above zero).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Time in-flight requests get to finish at shutdown (default 5 s; zero
    /// answers them at once);
    /// the rest are answered with ERROR `shutting down`. The same time is
    /// given to a client's requests once it has closed its sending side
    /// (its EOF); the rest are answered with ERROR `timed out`.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Closes a connection (ERROR `timed out`) that has sent no frame for
    /// this long while none of its requests is in flight; it is noticed
    /// between one and two times `timeout` after the last frame. Default:
    /// off, since a GUI may rightly keep a quiet connection for hours. Zero
    /// makes `bind` fail.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Drops a client that does not take what is queued for it within
    /// this long (default 30 s; above zero): whenever a write has to wait, the bytes
    /// queued at that moment must all be written within the timeout (a
    /// client that reads a little now and then does not restart it), so
    /// that a client that stops or trickles cannot pin the server's memory.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Bytes of NOTIFY frames (from [`ConnectionContext::notify`] and
    /// [`ServerHandle::broadcast`]) one connection may hold unwritten
    /// (default 4 MiB; at least 1, at most [`MAX_OUTPUT_BYTES`]). `notify` waits for room; a client with no room for
    /// a broadcast is too slow and is disconnected: the NOTIFYs it had not
    /// taken are dropped, and it gets ERROR `too slow` (15) after what was
    /// already queued for the write (PROTOCOL.md, "Too slow"). A frame larger than
    /// the limit is let through alone. The connection's own answers are
    /// apart from these: it takes more of them (and reads on) only while
    /// less than 64 KiB of them wait to be written.
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.config.max_output_bytes = bytes;
        self
    }

    /// Time a client has to finish a frame once the server waits for its
    /// rest (default 30 s; above zero): past it the connection gets ERROR `timed out`
    /// and is closed, so that a client cannot hold a partial frame, and
    /// the memory for it, for as long as it likes. The clock starts when
    /// the server first finds part of a frame and waits for more.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.config.frame_timeout = timeout;
        self
    }

    /// Bytes all clients' frames may make the server hold at once, across
    /// all connections (default 256 MiB; at least 1): frames still
    /// arriving, and requests waiting at the in-flight limit or running,
    /// with their params, a CALL's method and metadata, and a typed call's
    /// decoded params (past a small allowance) until its handler returns.
    /// A frame's buffer grows as its bytes arrive (to at most twice what
    /// has arrived); a connection whose growth would pass the budget gets
    /// ERROR `overloaded` and is closed. After a frame over 64 KiB a busy
    /// connection keeps its allocation to read the next one as large into
    /// (no buffer grown and copied per frame): counted until a smaller
    /// frame or a quiet tick (at most a second without a request) lets it
    /// go, so while that frame's request runs its bytes count twice. A complete REQUEST or CALL that
    /// does not fit is answered ERROR `overloaded` with its id (the
    /// connection carries on); a NOTIFY that does not fit closes the
    /// connection with ERROR `overloaded`. The others are served. Each
    /// connection's plain 8 KiB read buffer is not counted.
    pub fn input_budget(mut self, bytes: usize) -> Self {
        self.config.input_budget = Arc::new(budget::MemoryBudget::new(bytes));
        self
    }

    /// Bytes one connection's requests may make the server hold (default
    /// 32 MiB; at least 1): its requests waiting and running, as the
    /// input budget counts them. At that much the server stops reading the
    /// connection until some are answered, so a client that sends faster
    /// than its requests finish is slowed by the kernel's buffers; a frame
    /// larger than this is let through alone.
    pub fn max_input_bytes(mut self, bytes: usize) -> Self {
        self.config.max_input_bytes = bytes;
        self
    }

    /// How long a request without a deadline of its own (every REQUEST,
    /// and a CALL whose timeout is 0) may run, counted from when it is
    /// read, before the server stops it (its handler is dropped) and
    /// answers ERROR `timed out`: default 5 minutes; `None` lets such
    /// requests run as long as their handlers do. A request that starts
    /// at once is stopped between the timeout and an eighth of it (at most
    /// a second) later; one that waited for a slot, at the timeout.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Connections one user may hold at once (default: an eighth of
    /// `max_connections`, at least 1; at least 1, or `bind` fails). The
    /// next one gets ERROR `overloaded` instead of HELLO (on Windows,
    /// once the client's token is read after its HELLO). A user is what
    /// [`Caller::user_key`](crate::transport::Caller::user_key) tells
    /// apart: the uid on Unix, the user SID on Windows. The server's own
    /// user and root (LocalSystem on Windows) are not limited.
    pub fn max_connections_per_user(mut self, max: usize) -> Self {
        self.max_connections_per_user = Some(max);
        self
    }

    /// Frames that get no answer (a CANCEL for a request not in flight, a
    /// NOTIFY, an unknown kind with id 0) one connection may send per
    /// second, after a burst of as many (default 100,000; `None`:
    /// unlimited; `Some(0)` makes `bind` fail). Past it the server stops
    /// reading that connection until the rate allows more: such frames
    /// cost the server work without any answer to slow their sender.
    pub fn unanswered_frame_rate(mut self, rate: Option<u32>) -> Self {
        self.config.unanswered_frame_rate = rate;
        self
    }

    /// Pipe instances kept listening at once on Windows (default 4; at
    /// least 1).
    pub fn backlog(mut self, backlog: usize) -> Self {
        self.listener.backlog = backlog;
        self
    }

    /// Upper bound on pipe instances serving clients on Windows (default
    /// unlimited; 1 to 254, or `bind` fails); the placeholder instance
    /// holding the name comes on top, within the 254 Windows allows (so
    /// 254 serves at most 253).
    pub fn max_instances(mut self, max: u8) -> Self {
        self.listener.max_instances = Some(max);
        self
    }

    /// Byte (default) or message mode on Windows. The protocol's length
    /// prefix works in both.
    pub fn pipe_mode(mut self, mode: PipeMode) -> Self {
        self.listener.pipe_mode = mode;
        self
    }

    /// Who may use the service once connected, and who may call which
    /// method (default: the server's own user and root on Unix, whoever
    /// the pipe's security descriptor admits on Windows). See
    /// [`AccessPolicy`]; its names are resolved, and its rules checked for
    /// this platform, at `bind`.
    pub fn access(mut self, policy: AccessPolicy) -> Self {
        self.access = policy;
        self
    }

    /// Permission bits of the socket file on Unix (default 0600; at most
    /// 0777, or `bind` fails).
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.listener.socket_mode = mode;
        self
    }

    /// The security descriptor of every pipe instance on Windows, in SDDL
    /// (default: full access for the creating user and SYSTEM only). An
    /// invalid string makes `bind` fail.
    pub fn security_descriptor(mut self, sddl: impl Into<String>) -> Self {
        self.listener.security_descriptor = Some(sddl.into());
        self
    }

    /// Whether clients on other machines are refused on Windows (default
    /// `true`).
    pub fn reject_remote_clients(mut self, reject: bool) -> Self {
        self.listener.reject_remote_clients = reject;
        self
    }
}

impl<H: Handler> ServerBuilder<H> {
    /// Starts listening. Errors here (name in use, bad directory) are the
    /// ones a service wants to report at start-up. A setting that cannot
    /// work is [`Error::Config`] naming it, checked before anything is
    /// opened.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn bind(mut self) -> Result<Server<H>> {
        self.validate()?;
        #[cfg(unix)]
        fd_limit::raise_and_check(self.max_connections, 1 + u64::from(self.config.pin_process));
        let listener = Listener::bind(&self.endpoint, &self.listener)?;
        tracing::info!(endpoint = %self.endpoint, "listening");
        Ok(self.into_server(Some(listener)))
    }

    /// Builds the server without listening anywhere: it serves only the
    /// streams handed to it with [`ServerHandle::serve_connection`] (an
    /// in-memory server for tests, or connections from a transport of your
    /// own). The endpoint is not touched; it names the server in logs and
    /// [`Server::endpoint`]. Fails with [`Error::Config`] like
    /// [`bind`](Self::bind).
    pub fn build(mut self) -> Result<Server<H>> {
        self.validate()?;
        tracing::info!(endpoint = %self.endpoint, "serving handed-over streams only");
        Ok(self.into_server(None))
    }

    /// Serves on `listener`, a socket already bound to the endpoint's path
    /// and listening, instead of binding one: for a socket a service manager
    /// passed on (systemd socket activation) or one made by other code.
    ///
    /// The socket is used as it is: [`socket_mode`](Self::socket_mode) is
    /// not applied, no private directory is created or checked, and the
    /// socket file is not removed when the server stops, since whoever made
    /// it owns it. The access policy applies as usual.
    ///
    /// Fails with [`Error::Bind`] if the socket is not bound to the
    /// endpoint's path (an abstract or unnamed socket included), and with
    /// [`Error::Config`] like [`bind`](Self::bind).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    #[cfg(unix)]
    pub fn bind_listener(
        mut self,
        listener: std::os::unix::net::UnixListener,
    ) -> Result<Server<H>> {
        self.validate()?;
        fd_limit::raise_and_check(self.max_connections, 1 + u64::from(self.config.pin_process));
        let listener = Listener::from_std(listener, &self.endpoint)?;
        tracing::info!(endpoint = %self.endpoint, "listening on a socket handed over");
        Ok(self.into_server(Some(listener)))
    }

    fn into_server(self, listener: Option<Listener>) -> Server<H> {
        let users = fair_share::Users::new(self.connections_per_user());
        let config = Arc::new(self.config);
        let (handed_over, incoming) = mpsc::unbounded_channel();
        Server {
            endpoint: self.endpoint,
            listener,
            incoming,
            connection_slots: Arc::new(Semaphore::new(self.max_connections)),
            users,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            config: config.clone(),
            handler: Arc::new(self.handler),
            shared: Arc::new(Shared {
                handed_over,
                connections: Mutex::default(),
                next_id: AtomicU64::default(),
                shutdown: CancellationToken::default(),
                stats: stats::Stats::default(),
                push: Arc::default(),
                budget: config.input_budget.clone(),
            }),
        }
    }
}

impl<H> ServerBuilder<H> {
    /// The per-user limit: as set, or a share of `max_connections`.
    fn connections_per_user(&self) -> usize {
        self.max_connections_per_user
            .unwrap_or((self.max_connections / DEFAULT_CONNECTIONS_PER_USER_DIVISOR).max(1))
    }

    /// Every setting, before anything is opened (the listener's own are
    /// checked by [`Listener::bind`] too); resolves the access policy's
    /// names into the configuration.
    fn validate(&mut self) -> Result<()> {
        self.validate_limits()?;
        let access = self.access.resolve()?;
        self.config.pin_process = access.reads_executable();
        self.config.access = Arc::new(access);
        self.apply_preset()?;
        let config = &self.config;
        validate::positive_timeout("handshake_timeout", config.handshake_timeout)?;
        validate::bounded_timeout("shutdown_timeout", config.shutdown_timeout)?;
        if let Some(idle) = config.idle_timeout {
            validate::positive_timeout("idle_timeout", idle)?;
        }
        validate::positive_timeout("write_timeout", config.write_timeout)?;
        validate::positive_timeout("frame_timeout", config.frame_timeout)?;
        if let Some(timeout) = config.request_timeout {
            validate::positive_timeout("request_timeout", timeout)?;
        }
        self.listener.validate()
    }

    /// The pipe's security descriptor from the access policy's preset, so
    /// that the two agree on every pipe instance (Windows); a warning when
    /// a connection rule admits callers whom the default descriptor keeps
    /// out.
    fn apply_preset(&mut self) -> Result<()> {
        let Some(preset) = self.config.access.preset() else {
            if cfg!(windows)
                && self.listener.security_descriptor.is_none()
                && self.config.access.admits_others()
            {
                tracing::warn!(
                    "the access policy admits callers that the pipe's default security \
                     descriptor (SYSTEM and this user) keeps out: set security_descriptor to \
                     admit them too, or use a preset (see SECURITY.md)"
                );
            }
            return Ok(());
        };
        if self.listener.security_descriptor.is_some() {
            return Err(Error::config(
                "security_descriptor",
                format!(
                    "the access policy's {} preset sets the pipe's descriptor, so that the two \
                     agree: remove this one",
                    preset.name()
                ),
            ));
        }
        let sddl = preset.security_descriptor().map_err(|e| {
            Error::config(
                "access",
                format!(
                    "cannot build the {} preset's descriptor: {e}",
                    preset.name()
                ),
            )
        })?;
        self.listener.security_descriptor = Some(sddl);
        Ok(())
    }

    /// Counts and sizes. Every frame the server must send itself has to
    /// fit its frame limit ([`smallest_frame_len`]).
    fn validate_limits(&self) -> Result<()> {
        let config = &self.config;
        // The semaphore holding the slots cannot have more permits.
        let most = Semaphore::MAX_PERMITS as u64;
        let count = |n: usize| n as u64;
        let why = "no client could be served";
        validate::at_least("max_connections", count(self.max_connections), 1, why)?;
        validate::at_most(
            "max_connections",
            count(self.max_connections),
            most,
            "too many",
        )?;
        let why = "no request could be handled";
        validate::at_least("max_in_flight", count(config.max_in_flight), 1, why)?;
        let why = "no NOTIFY could be queued";
        validate::at_least("max_output_bytes", count(config.max_output_bytes), 1, why)?;
        let why = "a connection's room for NOTIFYs cannot count more";
        let most = count(MAX_OUTPUT_BYTES);
        validate::at_most(
            "max_output_bytes",
            count(config.max_output_bytes),
            most,
            why,
        )?;
        let why = "no frame could be received";
        validate::at_least("input_budget", count(config.input_budget.limit()), 1, why)?;
        validate::at_least("max_input_bytes", count(config.max_input_bytes), 1, why)?;
        let why = "no client could be served";
        validate::at_least(
            "max_connections_per_user",
            count(self.connections_per_user()),
            1,
            why,
        )?;
        if let Some(rate) = config.unanswered_frame_rate {
            let why = "no CANCEL or NOTIFY could ever be read; use None for no limit";
            validate::at_least("unanswered_frame_rate", rate.into(), 1, why)?;
        }
        let encodings = config.calls.as_ref().map_or(&[][..], |c| c.0.encodings());
        let (min, why) = smallest_frame_len(&config.name, encodings);
        validate::at_least("max_frame_len", config.max_frame_len.into(), min, &why)
    }
}

/// The one rule for the smallest frame limit of a server named `name`
/// whose typed methods take `encodings`: the `length` of the largest frame
/// it must be able to send itself (the STATUS answer with its fixed
/// counts, its HELLO, its HELLO reply), and what that frame is.
fn smallest_frame_len(name: &str, encodings: &[Encoding]) -> (u64, String) {
    let hello = HEADER_LEN + ServerHello::fixed_len() + name.len();
    // A protocol 2 client also gets the HELLO reply.
    let reply = HEADER_LEN + HelloReply::new(PROTOCOL_VERSION, encodings).encode().len();
    let frames = [
        (hello, format!("its HELLO (name {name:?})")),
        (reply, "its HELLO reply".to_owned()),
        (
            MIN_MAX_FRAME_LEN as usize,
            "its STATUS answer with the fixed counts".to_owned(),
        ),
    ];
    let (len, frame) = frames
        .into_iter()
        .max_by_key(|(len, _)| *len)
        .expect("three frames");
    let why = format!(
        "the largest frame the server must be able to send, {frame}, needs that much \
         (its ERRORs are cut to fit)"
    );
    (len as u64, why)
}

/// A bound server. Run it with [`Server::serve`] or [`Server::serve_until`].
pub struct Server<H> {
    endpoint: Endpoint,
    /// `None` for a server that serves handed-over streams only.
    listener: Option<Listener>,
    /// Streams handed over with [`ServerHandle::serve_connection`].
    incoming: mpsc::UnboundedReceiver<HandedOver>,
    connection_slots: Arc<Semaphore>,
    /// The connections each user holds.
    users: Arc<fair_share::Users>,
    /// Caps the refusals in progress ([`MAX_REFUSALS`]).
    refusals: Arc<Semaphore>,
    config: Arc<Config>,
    handler: Arc<H>,
    shared: Arc<Shared>,
}

// Handlers need not be `Debug` (closures are not): show everything else.
impl<H> std::fmt::Debug for ServerBuilder<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("endpoint", &self.endpoint)
            .field("listener", &self.listener)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("access", &self.access)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoint", &self.endpoint)
            .field("listener", &self.listener)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A stream handed to the server, and who is on its other end.
type HandedOver = (Generic, Caller);

/// State every connection shares with the [`ServerHandle`]s.
#[derive(Debug)]
struct Shared {
    /// Where [`ServerHandle::serve_connection`] sends its streams.
    handed_over: mpsc::UnboundedSender<HandedOver>,
    connections: Mutex<HashMap<u64, ConnectionContext>>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    stats: stats::Stats,
    /// Streams' and topics' counts (revision 2.2).
    push: Arc<PushCounters>,
    /// The server's input budget (also in [`Config`]), for its handles.
    budget: Arc<budget::MemoryBudget>,
}

impl Shared {
    fn status(&self) -> Status {
        let open = lock(&self.connections).len() as u64;
        let mut status = self
            .stats
            .status(open, self.next_id.load(Ordering::Relaxed));
        let push = &self.push;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        status.streams_open = load(&push.streams_open);
        status.items_sent = load(&push.items_sent);
        status.subscribers = load(&push.subscribers);
        status.events_sent = load(&push.events_sent);
        status.events_dropped = load(&push.events_dropped);
        status
    }
}

impl Server<()> {
    /// Starts building a server for `endpoint`.
    pub fn builder(endpoint: Endpoint) -> ServerBuilder<()> {
        ServerBuilder {
            endpoint,
            listener: ListenerOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_user: None,
            access: AccessPolicy::default(),
            config: Config {
                name: "pipesvc".into(),
                max_frame_len: DEFAULT_MAX_FRAME_LEN,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                idle_timeout: None,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
                frame_timeout: DEFAULT_FRAME_TIMEOUT,
                input_budget: Arc::new(budget::MemoryBudget::new(DEFAULT_INPUT_BUDGET)),
                max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
                request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
                unanswered_frame_rate: Some(DEFAULT_UNANSWERED_FRAME_RATE),
                calls: None,
                access: Arc::new(AccessPolicy::default()),
                pin_process: false,
                hello_reply: std::sync::OnceLock::new(),
                hello: std::sync::OnceLock::new(),
            },
            handler: (),
        }
    }
}

impl<H: Handler> Server<H> {
    /// The endpoint the server listens on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A handle to broadcast to clients or stop the server from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until [`ServerHandle::shutdown`] is called.
    pub async fn serve(self) -> Result<()> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves until `signal` completes (or [`ServerHandle::shutdown`]),
    /// then shuts down gracefully: stops accepting, sends GOODBYE to every
    /// client, gives in-flight requests the shutdown timeout to finish,
    /// answers the rest with ERROR `shutting down`, and closes.
    pub async fn serve_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        let mut connections = JoinSet::new();
        let mut accept_failures = 0u32;
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = self.shared.shutdown.cancelled() => break,
                Some((stream, caller)) = self.incoming.recv() => {
                    self.spawn_connection(&mut connections, stream, Who::Known(caller));
                }
                accepted = accept(self.listener.as_mut()) => match accepted {
                    Ok((stream, peer)) => {
                        accept_failures = 0;
                        let who = match stream.caller_at_accept(peer, self.config.pin_process) {
                            Some(caller) => Who::Known(caller),
                            None => Who::Later(peer),
                        };
                        self.spawn_connection(&mut connections, stream, who);
                    }
                    Err(e) => self.accept_failed(e, &mut accept_failures).await,
                },
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    log_connection_end(done);
                }
            }
        }
        self.shut_down(connections).await;
        Ok(())
    }

    /// Keeps serving after `accept` failed. Out of file descriptors (Unix),
    /// the waiting client is answered ERROR `overloaded` through the
    /// listener's reserve descriptor; otherwise, or if that fails, the loop
    /// backs off, longer while the failures go on. Both lines are
    /// rate-limited.
    async fn accept_failed(&mut self, err: std::io::Error, failures: &mut u32) {
        #[cfg(unix)]
        if crate::transport::is_out_of_descriptors(&err) {
            use crate::transport::OverLimit;
            let Some(listener) = self.listener.as_mut() else {
                return;
            };
            match listener.refuse_over_fd_limit(&over_fd_limit_reply()) {
                OverLimit::Refused => {
                    // Counted like every refused connection.
                    self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                    self.shared.stats.error(ErrorCode::OVERLOADED);
                    limited!(
                        warn,
                        error = %err,
                        "refused a client with ERROR overloaded: out of file descriptors \
                         (raise the open-file limit, or lower max_connections)"
                    );
                    return;
                }
                OverLimit::NoneWaiting => return,
                OverLimit::Failed => {}
            }
        }
        *failures = failures.saturating_add(1);
        limited!(error, error = %err, failures = *failures, "accept failed");
        let pause = ACCEPT_BACKOFF_FIRST
            .saturating_mul(1 << (*failures - 1).min(16))
            .min(ACCEPT_BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = self.shared.shutdown.cancelled() => {}
        }
    }

    fn spawn_connection<S: ServerIo>(&self, connections: &mut JoinSet<()>, stream: S, who: Who) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = match &who {
            Who::Known(caller) => *caller.peer(),
            Who::Later(peer) => *peer,
        };
        // The peer's identity on every line the connection logs (fields the
        // platform does not know, such as the uid on Windows, are left out;
        // the Windows user is recorded once read from the client's token).
        let span = tracing::info_span!(
            "conn",
            id,
            pid = peer.pid,
            uid = peer.uid,
            gid = peer.gid,
            user = tracing::field::Empty
        );
        if let Who::Known(caller) = &who {
            if let Err(refusal) = self.config.access.check(caller) {
                span.in_scope(|| conn::log_refusal(&refusal, caller));
                let message = refusal.to_string();
                self.refuse(connections, stream, span, ErrorCode::NOT_ALLOWED, &message);
                return;
            }
        }
        // A user known now is counted now; on Windows, once its token is
        // read (`Connection::session`).
        let user_slot = match &who {
            Who::Known(caller) => match self.users.admit(caller) {
                Some(slot) => Some(slot),
                None => {
                    span.in_scope(|| {
                        limited!(warn, "refusing connection: the user holds its limit")
                    });
                    let why = self.users.refusal();
                    self.refuse(connections, stream, span, ErrorCode::OVERLOADED, &why);
                    return;
                }
            },
            Who::Later(_) => None,
        };
        let Ok(slot) = self.connection_slots.clone().try_acquire_owned() else {
            span.in_scope(|| limited!(warn, "refusing connection: at the connection limit"));
            let why = "the server is at its connection limit; try again later";
            self.refuse(connections, stream, span, ErrorCode::OVERLOADED, why);
            return;
        };
        let conn = conn::Connection {
            id,
            who,
            users: self.users.clone(),
            config: self.config.clone(),
            handler: self.handler.clone(),
            shared: self.shared.clone(),
        };
        connections.spawn(
            async move {
                conn.run(stream).await;
                drop((slot, user_slot));
            }
            .instrument(span),
        );
    }

    /// Answers a client with ERROR `code` instead of HELLO, and closes.
    fn refuse<S: ServerIo>(
        &self,
        connections: &mut JoinSet<()>,
        stream: S,
        span: tracing::Span,
        code: ErrorCode,
        message: &str,
    ) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            span.in_scope(|| {
                limited!(
                    warn,
                    "closing a connection without an answer: {MAX_REFUSALS} refusals in progress"
                )
            });
            stream.disconnect();
            return;
        };
        self.shared.stats.error(code);
        let refusal = Frame::error(0, code, message);
        let config = self.config.clone();
        let refusing = async move {
            conn::refuse(stream, config, refusal).await;
            drop(permit);
        };
        connections.spawn(refusing.instrument(span));
    }

    async fn shut_down(self, mut connections: JoinSet<()>) {
        let Server {
            listener,
            incoming,
            shared,
            config,
            ..
        } = self;
        // No new clients from here on; streams handed over from now on
        // are refused (and those not yet taken are dropped).
        drop((listener, incoming));
        shared.shutdown.cancel();
        tracing::info!(open = connections.len(), "shutting down");
        let all_closed = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(config.shutdown_timeout + SHUTDOWN_GRACE, all_closed)
            .await
            .is_err()
        {
            tracing::warn!(
                left = connections.len(),
                "aborting connections that did not close in time"
            );
            connections.shutdown().await;
        }
    }
}

/// What a client past the file-descriptor limit reads instead of HELLO.
#[cfg(unix)]
fn over_fd_limit_reply() -> bytes::BytesMut {
    use tokio_util::codec::Encoder;
    let frame = Frame::error(
        0,
        ErrorCode::OVERLOADED,
        "the server is out of file descriptors; try again later",
    );
    let mut reply = bytes::BytesMut::new();
    crate::protocol::FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
        .encode(frame, &mut reply)
        .expect("a short ERROR always encodes");
    reply
}

/// The next client on `listener`; never, for a server without one.
async fn accept(
    listener: Option<&mut Listener>,
) -> std::io::Result<(crate::transport::ServerStream, PeerInfo)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

fn log_connection_end(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "connection task failed");
    }
}

/// Controls a running server from elsewhere. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// Sends a NOTIFY to the one client of connection `connection` (its
    /// [`ConnectionContext::connection_id`]), from anywhere in the
    /// service. Like [`ConnectionContext::notify`], it waits while that
    /// connection holds its limit of unwritten NOTIFY bytes
    /// ([`ServerBuilder::max_output_bytes`]), so nothing is lost; fails
    /// with [`Error::ConnectionClosed`] if no such connection is open (it
    /// ended, or has not finished its handshake), or it closes meanwhile,
    /// and with [`Error::PayloadTooLarge`] over the frame limit.
    pub async fn send_to(&self, connection: u64, payload: impl Into<Bytes>) -> Result<()> {
        let ctx = lock(&self.shared.connections).get(&connection).cloned();
        match ctx {
            Some(ctx) => ctx.notify(payload).await,
            None => Err(Error::ConnectionClosed(
                crate::error::CloseReason::ClientDisconnected,
            )),
        }
    }

    /// Sends a NOTIFY to every connected client; returns how many got it.
    ///
    /// Never waits for a client: one that holds its limit of unwritten
    /// NOTIFY bytes (see [`ServerBuilder::max_output_bytes`]) cannot keep
    /// up, and is disconnected rather than left with a gap in its stream
    /// (it is not counted), told why with ERROR `too slow`. A payload over
    /// the frame limit reaches no one.
    pub async fn broadcast(&self, payload: impl Into<Bytes>) -> usize {
        let payload = payload.into();
        let clients: Vec<ConnectionContext> =
            lock(&self.shared.connections).values().cloned().collect();
        clients
            .iter()
            .filter(|ctx| ctx.offer(Frame::notify(payload.clone())))
            .count()
    }

    /// Serves one connection over `io`, any byte stream (an in-memory
    /// [`pair`](crate::transport::memory::pair), a TCP stream tunnelled by
    /// your own code), as if a client with `peer`'s credentials had
    /// connected (a [`PeerInfo`], or a whole [`Caller`] such as
    /// [`Caller::current`] for a stream inside this process): the
    /// [`AccessPolicy`] checks `peer`, handlers see it as
    /// [`ConnectionContext::caller`], and the connection
    /// counts towards the connection limit, the stats and broadcasts, and
    /// gets GOODBYE at shutdown like any other. The caller vouches for
    /// `peer`: nothing checks it against the stream.
    ///
    /// The stream is served once [`Server::serve`] runs (at once if it
    /// does). A stream whose peer closes only its sending side is taken
    /// for a half-close: the answers still go out, and a write to a peer
    /// that is gone fails, which ends the connection.
    ///
    /// Fails with [`Error::Io`] (`NotConnected`), dropping `io`, once the
    /// server has started to shut down or is gone.
    pub fn serve_connection<S>(&self, io: S, peer: impl Into<Caller>) -> Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let stopped = || {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the server is shutting down or gone; the connection was not served",
            ))
        };
        if self.shared.shutdown.is_cancelled() {
            return Err(stopped());
        }
        self.shared
            .handed_over
            .send((Generic::new(io), peer.into()))
            .map_err(|_| stopped())
    }

    /// The server's counters: what a client's STATUS request gets.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Bytes the clients' frames make the server hold now, as its input
    /// budget counts them ([`ServerBuilder::input_budget`]): frames being
    /// received (and a large frame's allocation kept for the next one),
    /// requests waiting and running with their params and metadata, typed
    /// calls' decoded params.
    pub fn held_bytes(&self) -> usize {
        self.shared.budget.held()
    }

    /// Clients connected and past the handshake.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    /// Starts a graceful shutdown; `serve` returns when it is complete.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }
}

/// Locks a mutex, ignoring poisoning: the maps it guards stay consistent
/// because no code panics while holding the lock.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
