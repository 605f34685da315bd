//! The client: one connection, shared by any number of tasks.
//!
//! ```no_run
//! # async fn run() -> pipesvc::Result<()> {
//! let client = pipesvc::Client::connect(&"my_service".parse()?).await?;
//! let answer = client.request("hello").await?;
//! assert_eq!(&answer[..], b"hello");
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! A client also runs over any byte stream the caller connected
//! ([`Client::from_io`]; no reconnect) or opens ([`Client::from_connector`],
//! which can reconnect and wait for its service), such as one end of an in-memory
//! [`pair`](crate::transport::memory::pair). The caller vouches for the
//! server behind such a stream: no identity check applies.

mod call;
mod connection;
mod identity;
mod notifications;
mod pending;
mod reader;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use call::{CallOptions, DEADLINE_GRACE};
pub use identity::ServerIdentity;
pub use notifications::{Notification, NotificationPolicy, Notifications};

use crate::endpoint::Endpoint;
use crate::error::{CloseReason, Error, Result};
use crate::protocol::{
    Encoding, ErrorCode, Kind, ServerHello, Status, DEFAULT_MAX_FRAME_LEN, HEADER_LEN,
};
use crate::transport::{ConnectOptions, ConnectStats, PeerInfo};
use crate::validate;
use connection::{CallError, Connection, Connector};
use notifications::Queue;
use pending::Pending;

/// Default time the server has to send its HELLO.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline of a request, ping or status call: everything the call
/// waits for (a reconnect, room to send, the answer) fits in it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of notifications buffered for [`Client::notifications`].
pub const DEFAULT_NOTIFICATION_BUFFER: usize = 256;
/// Default payload bytes buffered for [`Client::notifications`] (one
/// notification is always taken into an empty buffer, whatever its size).
pub const DEFAULT_NOTIFICATION_BUFFER_BYTES: usize = 4 << 20;
/// Default time [`Client::close`] waits for answers in flight before it
/// aborts the connection.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause between two reconnect attempts; it doubles after each
/// failed attempt, up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between two reconnect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How a [`Client`] connects: [`ClientOptions::new`] (the defaults), then
/// the setters, each returning the options:
///
/// ```
/// use std::time::Duration;
/// use pipesvc::client::ClientOptions;
///
/// let options = ClientOptions::new()
///     .request_timeout(Some(Duration::from_secs(5)))
///     .reconnect(true);
/// # let _ = options;
/// ```
///
/// A value that cannot work (a zero timeout, an empty buffer, a frame
/// limit too small for the server's HELLO) is refused by
/// [`Client::connect_with`] with [`Error::Config`] naming the setting,
/// before anything is opened.
///
/// # What bounds what
///
/// Every wait of the client has a limit, whatever the server does (says
/// nothing, dribbles its frames a byte at a time, stops reading):
///
/// | wait | bounded by |
/// |---|---|
/// | reaching the server: retrying while it is busy or absent, or when it went away during its handshake | [`connect_timeout`](Self::connect_timeout) (5 s) |
/// | the handshake, from the moment the stream is connected: the server's HELLO, this client's HELLO written, the server's HELLO reply, all together | [`handshake_timeout`](Self::handshake_timeout) (5 s) |
/// | [`Client::connect_with`] as a whole | `connect_timeout` + `handshake_timeout`, plus [`wait_for_service`](Self::wait_for_service) if set (no attempt starts after it) |
/// | [`Client::from_io`], [`Client::from_connector`]: opening the stream and the handshake | `connect_timeout` (the handshake also by `handshake_timeout`) |
/// | a request, PING, STATUS or DESCRIBE: a reconnect in progress, room to send (a server that does not read), the answer | [`request_timeout`](Self::request_timeout) (30 s), or the call's own |
/// | a typed call ([`Client::call_raw`]) | its deadline ([`CallOptions::timeout`], default `request_timeout`) plus [`DEADLINE_GRACE`] |
/// | a NOTIFY: a reconnect in progress, room to send | `request_timeout` |
/// | [`Client::close`]: answers in flight, queued frames written | [`close_timeout`](Self::close_timeout) (5 s), then the connection is aborted |
/// | dropping the last clone without `close`: queued frames written, in the background | `close_timeout`, then the connection is aborted |
/// | each reconnect attempt (with [`reconnect`](Self::reconnect)) | `connect_timeout` + `handshake_timeout` |
///
/// Only a `request_timeout` of `None` (or a call's own `None`) waits
/// without limit: the caller's choice. A caller with one deadline for a
/// whole exchange, handshake included, starts it at
/// [`Client::connected_at`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    pub(crate) connect: ConnectOptions,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_frame_len: u32,
    pub(crate) notification_buffer: usize,
    pub(crate) notification_buffer_bytes: usize,
    pub(crate) notification_policy: NotificationPolicy,
    pub(crate) expect_server_pid: Option<u32>,
    pub(crate) server_identity: ServerIdentity,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) close_timeout: Duration,
    pub(crate) reconnect: bool,
    pub(crate) wait_for_service: Duration,
    pub(crate) encoding: Encoding,
}

impl ClientOptions {
    /// The defaults, as each setter gives them.
    pub fn new() -> ClientOptions {
        ClientOptions::default()
    }

    /// Transport options: connect timeout (default 5 s), read-only, pipe
    /// mode. See [`connect_timeout`](Self::connect_timeout) for the usual
    /// one.
    pub fn connect(mut self, connect: ConnectOptions) -> Self {
        self.connect = connect;
        self
    }

    /// How long to keep retrying a busy or absent server (default 5 s;
    /// zero tries once): [`ConnectOptions::timeout`] of
    /// [`connect`](Self::connect).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect.timeout = timeout;
        self
    }

    /// Time the whole handshake may take once the stream is connected
    /// (default 5 s; above zero): the server's HELLO, this client's HELLO
    /// written, and the server's HELLO reply, however the server spreads
    /// them. Past it, [`Error::Timeout`] names the step it was in.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Largest frame accepted from the server (default 8 MiB, the
    /// protocol's default maximum; at least the 26 bytes of the smallest
    /// HELLO reply, the larger of the server's two HELLOs). A
    /// frame announcing more is refused from its length field, before its
    /// payload is read, and ends the connection. Requests are bounded by
    /// the maximum the server announces instead.
    pub fn max_frame_len(mut self, max: u32) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Notifications buffered until read (default 256; at least 1); see
    /// [`notification_policy`](Self::notification_policy) for what happens
    /// when the buffer is full.
    pub fn notification_buffer(mut self, notifications: usize) -> Self {
        self.notification_buffer = notifications;
        self
    }

    /// Payload bytes buffered until read (default 4 MiB; at least 1; one
    /// notification is always taken into an empty buffer, so a single
    /// frame up to `max_frame_len` fits).
    pub fn notification_buffer_bytes(mut self, bytes: usize) -> Self {
        self.notification_buffer_bytes = bytes;
        self
    }

    /// What a full notification buffer does: wait for the app (the
    /// default, lossless), drop with a [`Notification::Lagged`] marker, or
    /// ignore notifications altogether.
    pub fn notification_policy(mut self, policy: NotificationPolicy) -> Self {
        self.notification_policy = policy;
        self
    }

    /// Connect only if the server process has this id (read from the OS:
    /// `GetNamedPipeServerProcessId` on Windows, `SO_PEERCRED` on Unix),
    /// so that a process squatting on the name is not mistaken for the
    /// service. Checked before anything is sent. Default: no check.
    pub fn expect_server_pid(mut self, pid: Option<u32>) -> Self {
        self.expect_server_pid = pid;
        self
    }

    /// Which server the client agrees to talk to, checked after connecting
    /// and before anything is sent. Default
    /// [`ServerIdentity::SameUserOrAdmin`]: one running as this process's
    /// user or as root / LocalSystem, reached (on Unix) through directories
    /// no other user controls. Anything else fails with
    /// [`Error::WrongServer`]. See SECURITY.md. Not checked for a stream
    /// from the caller ([`Client::from_io`]): the caller vouches for it.
    pub fn server_identity(mut self, identity: ServerIdentity) -> Self {
        self.server_identity = identity;
        self
    }

    /// Lets the server act as this client (Windows): connect at the
    /// impersonation level (`SECURITY_SQOS_PRESENT | SECURITY_IMPERSONATION`
    /// on `CreateFileW`), so that the server's
    /// [`ConnectionContext::run_as_client`](crate::server::ConnectionContext::run_as_client)
    /// may open files and start processes with this client's rights.
    /// Default `false`: the identification level, at which a server learns
    /// who the client is but cannot act as it. Only for a server you
    /// trust that far (the [`server_identity`](Self::server_identity)
    /// check runs first either way). No effect on Unix, where a server
    /// cannot act as its client. Sets [`ConnectOptions::allow_impersonation`].
    pub fn allow_impersonation(mut self, allow: bool) -> Self {
        self.connect = self.connect.allow_impersonation(allow);
        self
    }

    /// The deadline of each request, ping or status call (default 30 s;
    /// `None`: none; not zero). It covers everything the call waits for: a
    /// reconnect in progress, room to send, the answer. A call past it
    /// fails with [`Error::Timeout`] naming what it waited for; a late
    /// answer is discarded. [`Client::request_with_timeout`] sets it per
    /// call.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long [`Client::close`] waits for answers in flight and for
    /// queued frames to be written before it aborts the connection
    /// (default 5 s; zero aborts at once). A client dropped without
    /// `close` writes what is queued in the background, within the same
    /// time.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// When the connection is lost (or the server says GOODBYE), connect
    /// again in the background, pausing between attempts from 50 ms
    /// doubling up to 5 s, until it succeeds or the client is closed; the
    /// notification stream carries on. Calls made meanwhile wait for that
    /// reconnect (within their deadline). Requests in flight when the
    /// connection died fail with [`Error::ConnectionClosed`] and are never
    /// sent again, so no request is ever answered twice. Default: off.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How long the first connect waits for a service that is not there
    /// yet (default zero: not beyond the connect timeout), for an app that
    /// may start before its service. The first connection is then tried
    /// like a reconnect: again after each failure, pausing from 50 ms
    /// doubling up to 5 s, while the service is absent, starting, busy or
    /// refusing for now (`overloaded`, `shutting down`, going away during
    /// the handshake); no new attempt starts once `timeout` has passed, and
    /// each is bounded by the connect and handshake timeouts as always.
    /// What waiting cannot fix fails at once: a setting, the wrong server,
    /// `not allowed`, a server too old. [`Client::connect_with`] and
    /// [`Client::from_connector`] wait; for [`Client::from_io`] (one stream
    /// given once) a non-zero wait is refused with [`Error::Config`]. At
    /// most a year.
    pub fn wait_for_service(mut self, timeout: Duration) -> Self {
        self.wait_for_service = timeout;
        self
    }

    /// The encoding typed calls use when the server offers it (default
    /// MessagePack); otherwise the first of the server's this client
    /// knows. [`CallOptions::encoding`] overrides it per call.
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Refuses, by name, settings that cannot work.
    fn validate(&self) -> Result<()> {
        self.connect.validate()?;
        validate::positive_timeout("handshake_timeout", self.handshake_timeout)?;
        if let Some(timeout) = self.request_timeout {
            validate::positive_timeout("request_timeout", timeout)?;
        }
        validate::bounded_timeout("close_timeout", self.close_timeout)?;
        validate::bounded_timeout("wait_for_service", self.wait_for_service)?;
        // The server's HELLO reply (protocol 2) is the larger of its two
        // HELLOs, even when it offers no encoding.
        let reply = crate::protocol::HelloReply::new(crate::protocol::PROTOCOL_VERSION, &[]);
        let hello =
            (HEADER_LEN + ServerHello::fixed_len()).max(HEADER_LEN + reply.encode().len()) as u64;
        let why = "the server's HELLO reply needs that much";
        validate::at_least("max_frame_len", self.max_frame_len.into(), hello, why)?;
        let why = "no notification could be buffered";
        let count = self.notification_buffer as u64;
        validate::at_least("notification_buffer", count, 1, why)?;
        let bytes = self.notification_buffer_bytes as u64;
        validate::at_least("notification_buffer_bytes", bytes, 1, why)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect: ConnectOptions::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            notification_buffer: DEFAULT_NOTIFICATION_BUFFER,
            notification_buffer_bytes: DEFAULT_NOTIFICATION_BUFFER_BYTES,
            notification_policy: NotificationPolicy::default(),
            expect_server_pid: None,
            server_identity: ServerIdentity::SameUserOrAdmin,
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            reconnect: false,
            wait_for_service: Duration::ZERO,
            encoding: Encoding::MessagePack,
        }
    }
}

/// The state of a client's connection, as [`Client::connection_states`]
/// reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connected; `reconnects` is how many times the client has connected
    /// again after losing a connection.
    Connected {
        /// Reconnections so far.
        reconnects: u64,
    },
    /// The connection is lost (or the server said GOODBYE), for `reason`.
    /// With `reconnecting`, the client is connecting again in the
    /// background; without, the client stays disconnected.
    Lost {
        /// Why the connection ended.
        reason: CloseReason,
        /// Whether the client is connecting again.
        reconnecting: bool,
    },
    /// [`Client::close`] was called.
    Closed,
}

/// A connection to a pipesvc server. Clone it freely: every clone shares
/// the one connection, and requests from all of them are multiplexed by id.
/// The connection closes when the last clone is dropped or on [`close`].
///
/// [`close`]: Client::close
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

/// Where a client's connections come from.
#[derive(Clone)]
enum Target {
    Endpoint(Endpoint),
    /// A stream from the caller: given once ([`Client::from_io`]) or made
    /// by a connector ([`Client::from_connector`]).
    Io(Connector),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Endpoint(endpoint) => write!(f, "{endpoint}"),
            Target::Io(_) => f.write_str("a stream from the caller"),
        }
    }
}

impl Target {
    async fn open(&self, options: &ClientOptions, queue: &Arc<Queue>) -> Result<Connection> {
        let span = tracing::debug_span!("client", target = ?self);
        match self {
            Target::Endpoint(endpoint) => {
                Connection::open(endpoint, options, queue)
                    .instrument(span)
                    .await
            }
            Target::Io(connector) => {
                Connection::open_io(connector, options, queue)
                    .instrument(span)
                    .await
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    target: Target,
    options: ClientOptions,
    current: Mutex<Arc<Connection>>,
    /// Outlives connections, so that the stream carries on across
    /// reconnects.
    notifications: Arc<Queue>,
    state: watch::Sender<ConnectionState>,
    reconnects: AtomicU64,
    /// Set (under `current`'s lock) by [`Client::close`].
    closed: AtomicBool,
    /// Stops the supervisor, also in the middle of a reconnect.
    stop: CancellationToken,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
        self.notifications.end();
    }
}

impl Shared {
    /// Publishes `state`, unless the client was closed (a close wins over
    /// whatever the supervisor was doing).
    fn publish(&self, state: ConnectionState) {
        let _current = lock(&self.current);
        if self.closed.load(Ordering::SeqCst) && !matches!(state, ConnectionState::Closed) {
            return;
        }
        self.state.send_replace(state);
    }

    /// Installs a new connection, unless the client was closed meanwhile
    /// (then `fresh` is dropped, which closes it).
    fn install(&self, fresh: Connection) -> Option<Arc<Pending>> {
        let mut current = lock(&self.current);
        if self.closed.load(Ordering::SeqCst) {
            drop(current);
            tracing::debug!("closed during a reconnect; dropping the new connection");
            return None;
        }
        let pending = fresh.pending.clone();
        *current = Arc::new(fresh);
        let reconnects = self.reconnects.fetch_add(1, Ordering::SeqCst) + 1;
        self.state
            .send_replace(ConnectionState::Connected { reconnects });
        drop(current);
        tracing::info!(target = ?self.target, reconnects, "reconnected");
        Some(pending)
    }
}

impl Client {
    /// Connects with default options: retries a busy or absent server for
    /// up to 5 s, then performs the handshake.
    pub async fn connect(endpoint: &Endpoint) -> Result<Client> {
        Client::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with `options`; a setting that cannot work is
    /// [`Error::Config`] naming it, before anything is opened.
    pub async fn connect_with(endpoint: &Endpoint, options: ClientOptions) -> Result<Client> {
        Client::open(Target::Endpoint(endpoint.clone()), options).await
    }

    /// Runs a client over `io`, a stream already connected to a pipesvc
    /// server: one end of an in-memory
    /// [`pair`](crate::transport::memory::pair), or a transport of your
    /// own. The handshake and everything after it are as over a pipe, and
    /// bounded by the same options; the connect timeout bounds the
    /// handshake.
    ///
    /// The caller vouches for the server: `server_identity` does not apply
    /// (nothing the OS says about a generic stream can be checked), and
    /// [`Client::server_peer`] knows nothing. A stream cannot be opened
    /// again, so `reconnect` and `expect_server_pid` are refused with
    /// [`Error::Config`]; for reconnects use [`Client::from_connector`].
    pub async fn from_io<S>(io: S, options: ClientOptions) -> Result<Client>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        if options.reconnect || !options.wait_for_service.is_zero() {
            let setting = match options.reconnect {
                true => "reconnect",
                false => "wait_for_service",
            };
            return Err(Error::config(
                setting,
                "a client over a given stream cannot open it again; \
                 use Client::from_connector to reconnect or wait",
            ));
        }
        let once = Mutex::new(Some(crate::transport::Generic::new(io)));
        let connector: Connector = Arc::new(move || {
            let io = lock(&once).take();
            Box::pin(async move {
                io.ok_or_else(|| {
                    Error::Io(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "the stream given to Client::from_io was used already",
                    ))
                })
            })
        });
        Client::from_target_io(connector, options).await
    }

    /// Runs a client over the streams `connector` opens: one for the first
    /// connection and, with `reconnect`, one for each reconnect. Each
    /// attempt (the connector's time and the handshake) is bounded by the
    /// connect timeout; a failed one is retried like a reconnect to an
    /// endpoint.
    ///
    /// As with [`Client::from_io`], the caller vouches for the server:
    /// `server_identity` does not apply, `expect_server_pid` is refused
    /// with [`Error::Config`], and [`Client::server_peer`] knows nothing.
    pub async fn from_connector<F, Fut, S>(connector: F, options: ClientOptions) -> Result<Client>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::io::Result<S>> + Send + 'static,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let connector: Connector = Arc::new(move || {
            let opening = connector();
            Box::pin(async move { Ok(crate::transport::Generic::new(opening.await?)) })
        });
        Client::from_target_io(connector, options).await
    }

    async fn from_target_io(connector: Connector, options: ClientOptions) -> Result<Client> {
        if options.expect_server_pid.is_some() {
            return Err(Error::config(
                "expect_server_pid",
                "the pid of the server behind a stream from the caller cannot be checked",
            ));
        }
        Client::open(Target::Io(connector), options).await
    }

    async fn open(target: Target, options: ClientOptions) -> Result<Client> {
        options.validate()?;
        let queue = Arc::new(Queue::new(
            options.notification_policy,
            options.notification_buffer,
            options.notification_buffer_bytes,
        ));
        let first = open_first(&target, &options, &queue).await?;
        let pending = first.pending.clone();
        let (state, _) = watch::channel(ConnectionState::Connected { reconnects: 0 });
        let shared = Arc::new(Shared {
            target,
            current: Mutex::new(Arc::new(first)),
            notifications: queue,
            state,
            reconnects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            options,
        });
        let supervisor = supervise(Arc::downgrade(&shared), pending, shared.stop.clone());
        tokio::spawn(supervisor.in_current_span());
        Ok(Client { shared })
    }

    /// Sends a request and waits for its answer, within the client's
    /// [`request_timeout`](ClientOptions::request_timeout). A failure of the
    /// service is [`Error::Remote`]; one at the protocol level (say, the
    /// server is shutting down) [`Error::Server`]; a lost connection is
    /// [`Error::ConnectionClosed`]; no answer in time [`Error::Timeout`].
    pub async fn request(&self, payload: impl Into<Bytes>) -> Result<Bytes> {
        let limit = self.shared.options.request_timeout;
        self.exchange(Kind::Request, payload.into(), limit).await
    }

    /// [`Client::request`] with its own deadline (`None`: none) instead of
    /// the client's `request_timeout`: for a call known to take long, or
    /// one that must fail fast. Layers built on the client (typed calls)
    /// pass their per-call deadline here.
    pub async fn request_with_timeout(
        &self,
        payload: impl Into<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<Bytes> {
        self.exchange(Kind::Request, payload.into(), timeout).await
    }

    /// Sends a PING and returns the round-trip time (within the client's
    /// `request_timeout`).
    pub async fn ping(&self) -> Result<Duration> {
        self.ping_with_timeout(self.shared.options.request_timeout)
            .await
    }

    /// [`Client::ping`] with its own deadline (`None`: none).
    pub async fn ping_with_timeout(&self, timeout: Option<Duration>) -> Result<Duration> {
        let start = Instant::now();
        self.exchange(Kind::Ping, Bytes::new(), timeout).await?;
        Ok(start.elapsed())
    }

    /// Asks the server for its counters: uptime, connections, requests
    /// served (cancelled and timed out among them), errors by code, bytes
    /// in and out (STATUS), within the client's `request_timeout`. Every
    /// server this client connects to (protocol 2) answers it.
    pub async fn status(&self) -> Result<Status> {
        let limit = self.shared.options.request_timeout;
        let payload = self.exchange(Kind::Status, Bytes::new(), limit).await?;
        Status::decode(&payload)
            .ok_or_else(|| Error::Protocol("the server's STATUS answer is malformed".into()))
    }

    /// Sends a NOTIFY; the server answers nothing. Bounded by the client's
    /// `request_timeout` (waiting for a reconnect, or for room to send).
    pub async fn notify(&self, payload: impl Into<Bytes>) -> Result<()> {
        let payload = payload.into();
        let send = async { self.connection().await?.notify(payload).await };
        match self.shared.options.request_timeout {
            None => send.await,
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .unwrap_or(Err(Error::Timeout(limit, "sending a NOTIFY"))),
        }
    }

    /// The stream of NOTIFY payloads from the server. It can be taken once;
    /// later calls return `None`. With `reconnect` it carries on across
    /// connections and ends on [`close`](Client::close).
    ///
    /// Take it early: until it is taken, notifications fill the buffer
    /// without waiting and those that do not fit are dropped (the stream's
    /// [`Notification::Lagged`] item then says how many). Once taken, under
    /// the default [`NotificationPolicy::Backpressure`], read it: the
    /// client stops reading the connection while the buffer is full, and
    /// answers to requests queue up behind the unread notifications.
    pub fn notifications(&self) -> Option<Notifications> {
        self.shared.notifications.take()
    }

    /// The connection's state now, and every change from now on: connected,
    /// lost (with why, and whether the client is reconnecting), closed.
    pub fn connection_states(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Closes the connection gracefully: new requests are refused, those
    /// in flight get their answers (or fail if the connection drops), then
    /// everything queued is written and the connection is closed. Past the
    /// [`close_timeout`](ClientOptions::close_timeout) the connection is
    /// aborted instead: requests still in flight fail with
    /// [`CloseReason::ClientClosed`]. A closed client does not reconnect,
    /// and a reconnect in progress is abandoned.
    pub async fn close(&self) {
        {
            let _current = lock(&self.shared.current);
            self.shared.closed.store(true, Ordering::SeqCst);
        }
        self.shared.stop.cancel();
        self.shared.publish(ConnectionState::Closed);
        let current = self.current();
        let limit = self.shared.options.close_timeout;
        if tokio::time::timeout(limit, current.close()).await.is_err() {
            tracing::debug!(timeout = ?limit, "close timed out; aborting the connection");
            current.abort();
        }
        self.shared.notifications.end();
    }

    /// The name the server gave in its HELLO, as it sent it (escape it with
    /// [`crate::error::Escaped`] before printing it).
    pub fn server_name(&self) -> String {
        self.current().server.server_name.clone()
    }

    /// When the current connection's stream was connected, just before its
    /// handshake: where a deadline for a whole exchange, the handshake
    /// included, starts (as the `pipesvc` commands' `--timeout` does).
    pub fn connected_at(&self) -> Instant {
        self.current().connected_at
    }

    /// What the operating system says about the server process (its pid
    /// on every platform; uid and gid on Unix). Nothing, for a client over
    /// a stream from the caller.
    pub fn server_peer(&self) -> PeerInfo {
        self.current().server_peer
    }

    /// The largest `length` field the server accepts.
    pub fn server_max_frame_len(&self) -> u32 {
        self.current().server.max_frame_len
    }

    /// The endpoint this client connects to; `None` for a client over a
    /// stream from the caller ([`Client::from_io`],
    /// [`Client::from_connector`]).
    pub fn endpoint(&self) -> Option<&Endpoint> {
        match &self.shared.target {
            Target::Endpoint(endpoint) => Some(endpoint),
            Target::Io(_) => None,
        }
    }

    /// The attempts that found the server busy or absent before the
    /// current connection was made.
    pub fn connect_stats(&self) -> ConnectStats {
        self.current().connect_stats
    }

    /// How many times the client has connected again after losing its
    /// connection (with `reconnect`).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::SeqCst)
    }

    /// Notifications lost: dropped because the buffer was full (under
    /// [`NotificationPolicy::DropNewest`], or before the stream was taken).
    /// The stream reports each loss too, as [`Notification::Lagged`].
    pub fn dropped_notifications(&self) -> u64 {
        self.shared.notifications.lost()
    }

    /// Whether requests can no longer succeed: the connection is lost (or
    /// the server said GOODBYE) and will not be replaced, because
    /// `reconnect` is off or the client was closed.
    pub fn is_closed(&self) -> bool {
        let lost = !self.current().is_usable();
        lost && (!self.shared.options.reconnect || self.shared.closed.load(Ordering::SeqCst))
    }

    /// One call within `limit`; the timeout names what the call was
    /// waiting for when it ran out.
    async fn exchange(&self, kind: Kind, payload: Bytes, limit: Option<Duration>) -> Result<Bytes> {
        let connected = AtomicBool::new(false);
        let work = self.call_once_more_if_unsent(kind, payload, &connected);
        let Some(limit) = limit else {
            return work.await;
        };
        match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) if !connected.load(Ordering::Relaxed) => {
                Err(Error::Timeout(limit, "waiting to reconnect to the server"))
            }
            Err(_) => Err(Error::Timeout(limit, waiting_for_answer(kind))),
        }
    }

    /// Calls on the current connection. With `reconnect`, a call that the
    /// connection refused before sending anything (it had just died) is
    /// made once more on the next connection: the server never saw it, so
    /// it cannot be answered twice.
    async fn call_once_more_if_unsent(
        &self,
        kind: Kind,
        payload: Bytes,
        connected: &AtomicBool,
    ) -> Result<Bytes> {
        let connection = self.connection().await?;
        connected.store(true, Ordering::Relaxed);
        match connection.call(kind, payload.clone()).await {
            Err(CallError::NotSent(_)) if self.reconnects_now() => {
                connected.store(false, Ordering::Relaxed);
                let connection = self.connection().await?;
                connected.store(true, Ordering::Relaxed);
                Ok(connection.call(kind, payload).await?)
            }
            other => Ok(other?),
        }
    }

    fn reconnects_now(&self) -> bool {
        self.shared.options.reconnect && !self.shared.closed.load(Ordering::SeqCst)
    }

    fn current(&self) -> Arc<Connection> {
        lock(&self.shared.current).clone()
    }

    /// The live connection. If it is lost and `reconnect` is on, waits for
    /// the supervisor's reconnect: every caller waits on the same attempt
    /// and sees the same outcome. Otherwise the current connection, whose
    /// calls fail clearly if it is gone.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut states = self.shared.state.subscribe();
        loop {
            let current = self.current();
            if current.is_usable() || !self.reconnects_now() {
                return Ok(current);
            }
            if states.changed().await.is_err() {
                return Ok(current);
            }
        }
    }
}

fn waiting_for_answer(kind: Kind) -> &'static str {
    match kind {
        Kind::Ping => "waiting for the answer to a PING",
        Kind::Status => "waiting for the answer to STATUS",
        Kind::Describe => "waiting for the answer to DESCRIBE",
        Kind::Call => "waiting for the answer to the call",
        _ => "waiting for the answer to the request",
    }
}

/// The client's supervisor task: watches the current connection and, when
/// it is lost, publishes why and (with `reconnect`) connects again in the
/// background. It is the only task that reconnects, so callers waiting for
/// a connection all share one attempt's outcome. It holds no strong
/// reference to the client between attempts: it ends when the last clone
/// is dropped, or on close.
async fn supervise(shared: Weak<Shared>, mut pending: Arc<Pending>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = pending.unusable() => {}
            () = stop.cancelled() => return,
        }
        let Some(client) = shared.upgrade() else {
            return;
        };
        let reason = pending.end_reason().unwrap_or(CloseReason::Lost);
        let reconnecting = client.options.reconnect;
        tracing::debug!(%reason, reconnecting, "connection lost");
        client.publish(ConnectionState::Lost {
            reason,
            reconnecting,
        });
        if !reconnecting {
            // After a GOODBYE the server still answers the calls in flight,
            // and their NOTIFYs come first: the stream ends only with the
            // connection (or on close, which ends it itself).
            let notifications = client.notifications.clone();
            drop(client);
            tokio::select! {
                () = pending.gone() => notifications.end(),
                () = stop.cancelled() => {}
            }
            return;
        }
        let (target, options) = (client.target.clone(), client.options.clone());
        let queue = client.notifications.clone();
        drop(client);
        match reconnect(&shared, &target, &options, &queue, &stop).await {
            Some(next) => pending = next,
            None => return,
        }
    }
}

/// Connects again until it succeeds, with a pause growing from
/// [`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`] between attempts;
/// `None` if the client was closed or dropped meanwhile.
async fn reconnect(
    shared: &Weak<Shared>,
    target: &Target,
    options: &ClientOptions,
    queue: &Arc<Queue>,
    stop: &CancellationToken,
) -> Option<Arc<Pending>> {
    let mut pause = RECONNECT_BACKOFF_MIN;
    loop {
        let attempt = target.open(options, queue);
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = stop.cancelled() => return None,
        };
        match outcome {
            Ok(fresh) => return shared.upgrade()?.install(fresh),
            Err(e) => tracing::warn!(error = %e, retry_in = ?pause, "reconnect failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return None,
        }
        pause = (pause * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// The first connection. With [`ClientOptions::wait_for_service`], a
/// service that is not there yet is tried again, with the reconnect's
/// pauses, until that time has passed.
async fn open_first(
    target: &Target,
    options: &ClientOptions,
    queue: &Arc<Queue>,
) -> Result<Connection> {
    let deadline = Instant::now() + options.wait_for_service;
    let mut pause = RECONNECT_BACKOFF_MIN;
    loop {
        let err = match target.open(options, queue).await {
            Ok(connection) => return Ok(connection),
            Err(err) => err,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !not_there_yet(&err) {
            return Err(err);
        }
        tracing::debug!(error = %err, retry_in = ?pause, "waiting for the service");
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Whether `err` says the service is not there yet (absent, starting,
/// busy, going away), which waiting can fix; not a bad setting, the wrong
/// server, a refusal for good or a broken protocol.
fn not_there_yet(err: &Error) -> bool {
    use std::io::ErrorKind;
    match err {
        Error::Connect { .. } | Error::Timeout(..) => true,
        Error::ConnectionClosed(reason) => match reason {
            CloseReason::ServerError { code, .. } => {
                matches!(*code, ErrorCode::OVERLOADED | ErrorCode::SHUTTING_DOWN)
            }
            CloseReason::EofDuringHandshake
            | CloseReason::Eof
            | CloseReason::Reset(_)
            | CloseReason::Goodbye(_) => true,
            _ => false,
        },
        Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::NotFound
                | ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::WouldBlock
                | ErrorKind::TimedOut
        ),
        _ => false,
    }
}

/// Locks a mutex, ignoring poisoning: no code panics while holding these.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
