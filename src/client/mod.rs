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
//! Calls from any number of tasks share the connection (a clone of the
//! client is a handle on it), and one task can hold many calls at once
//! (`join!`, `FuturesUnordered`). Under heavy load the second keeps the
//! tail short: in the comparison (100 clients x 16 calls in flight), one
//! task per client had a p99 of 3.0 ms and a task per call 14.5 ms, with
//! nothing else different but the 16 times as many tasks for tokio to
//! schedule (BENCHMARKS.md, "A task per call").
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
mod options;
mod pending;
mod reader;
mod stream;
mod supervisor;
mod writer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use call::{CallOptions, DEADLINE_GRACE};
pub use identity::ServerIdentity;
pub use notifications::{Notification, NotificationPolicy, Notifications};
pub use options::{
    ClientOptions, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_NOTIFICATION_BUFFER,
    DEFAULT_NOTIFICATION_BUFFER_BYTES, DEFAULT_REQUEST_TIMEOUT,
};
pub use stream::{RawStream, RawUpload};
pub use supervisor::{RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN};

use crate::endpoint::Endpoint;
use crate::error::{CloseReason, Error, Result};
use crate::protocol::{Kind, Status};
use crate::transport::{ConnectStats, PeerInfo};
use connection::{CallError, Connection, Connector};
use notifications::Queue;
use pending::{within, Expiry, Pending};
use supervisor::{open_first, supervise};

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
    ///
    /// The handshake costs one round trip: the client writes its HELLO as
    /// soon as the connection opens, without reading the server's first
    /// (PROTOCOL.md, "Sending first", revision 2.3), and returns once it
    /// has read the server's HELLO and HELLO reply, which the server sends
    /// together. So everything the handshake can say is an error of
    /// `connect` itself, with nothing but the HELLO sent: a refusal
    /// ([`Error::ConnectionClosed`] with the server's ERROR or GOODBYE), a
    /// server too old ([`Error::ServerTooOld`]), a broken HELLO
    /// ([`Error::Protocol`]); and the server's name, maximum frame length
    /// and encodings are known when it returns. Requests do not go out
    /// before the reply: the protocol would allow it, but the client
    /// would then have to pick an encoding and a frame size before
    /// knowing the server's, and report handshake failures from requests.
    /// A client that connects, asks once and goes can take that on with
    /// [`ClientOptions::send_first`]: `connect` then returns without
    /// waiting for the server, and the first request, written with the
    /// HELLO, costs no round trip more.
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
    // Not an `async fn`: the call's future is `exchange`'s own, not one
    // more state machine around it (40 instructions a request).
    pub fn request(
        &self,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Bytes>> + Send + '_ {
        let limit = self.shared.options.request_timeout;
        self.exchange(Kind::Request, payload.into(), limit)
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

    /// The connection's state now, and its changes from now on: connected,
    /// lost (with why, and whether the client is reconnecting), closed.
    /// It is a [`watch`] channel: a reader always sees the latest state,
    /// but a state that changes again before it reads (a quick reconnect
    /// after a loss) is seen only as the newer one; count
    /// [`Connected::reconnects`](ConnectionState::Connected) to know a loss
    /// happened.
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
    /// Empty until the server's HELLO is read, on a connection that sent
    /// first ([`send_first`](ClientOptions::send_first)).
    pub fn server_name(&self) -> String {
        let current = self.current();
        current
            .greeting()
            .map_or_else(String::new, |greeting| greeting.server.server_name.clone())
    }

    /// Waits until the current connection's handshake is done: at once,
    /// unless the client [sent first](ClientOptions::send_first) and the
    /// server's HELLOs are still on their way. A handshake that failed is
    /// the error [`Client::connect_with`] would have returned; a
    /// connection lost since is [`Error::ConnectionClosed`].
    pub async fn handshake_done(&self) -> Result<()> {
        let current = self.current();
        current.greeted().await.map(|_| ())
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

    /// The largest `length` field the server accepts: until the server's
    /// HELLO is read, on a connection that sent first
    /// ([`send_first`](ClientOptions::send_first)), 74, the smallest a
    /// server may announce.
    pub fn server_max_frame_len(&self) -> u32 {
        let current = self.current();
        current
            .greeting()
            .map_or(connection::SMALLEST_SERVER_MAX_FRAME_LEN, |greeting| {
                greeting.server.max_frame_len
            })
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
    /// waiting for when it ran out (a reconnect, or the answer).
    ///
    /// Calls on the current connection. With `reconnect`, a call that the
    /// connection refused before sending anything (it had just died) is
    /// made once more on the next connection, by the same deadline: the
    /// server never saw it, so it cannot be answered twice.
    async fn exchange(&self, kind: Kind, payload: Bytes, limit: Option<Duration>) -> Result<Bytes> {
        let expiry = limit.map(|limit| Expiry::after(limit, kind));
        // The wait for a reconnect is boxed, with its timer: rare, and kept
        // out of every call's future (which a caller moves, a memcpy of all
        // of it); the usual case takes no await at all.
        let connection = match self.connection_now() {
            Some(connection) => connection,
            None => Box::pin(self.reconnected_within(expiry)).await?,
        };
        // Kept for a second attempt only where one can be made: cloning a
        // payload built from a `Vec` (a typed call's) allocates to share
        // it, about 200 instructions a call for nothing otherwise.
        let again = self.reconnects_now().then(|| payload.clone());
        match (connection.call(kind, payload, expiry).await, again) {
            // Rare: the connection just died. The next one is awaited
            // (at once if it is already there), boxed as above.
            (Err(CallError::NotSent(_)), Some(payload)) if self.reconnects_now() => {
                let connection = Box::pin(self.reconnected_within(expiry)).await?;
                Ok(connection.call(kind, payload, expiry).await?)
            }
            (other, _) => Ok(other?),
        }
    }

    /// The connection a call goes to without waiting, if there is one
    /// (see [`Client::takes_calls_now`]).
    fn connection_now(&self) -> Option<Arc<Connection>> {
        let current = self.current();
        self.takes_calls_now(&current).then_some(current)
    }

    /// [`Client::connection`], giving up at `expiry`'s deadline with a
    /// timeout that says it waited for a reconnect.
    async fn reconnected_within(&self, expiry: Option<Expiry>) -> Result<Arc<Connection>> {
        let expiry = expiry.map(|e| e.waiting_for("waiting to reconnect to the server"));
        within(expiry, self.connection()).await
    }

    /// Whether a lost connection is replaced: `reconnect` is on and the
    /// client is not closed (a subscription then subscribes again).
    #[cfg(feature = "rpc")]
    pub(crate) fn reconnects_by_itself(&self) -> bool {
        self.reconnects_now()
    }

    fn reconnects_now(&self) -> bool {
        self.shared.options.reconnect && !self.shared.closed.load(Ordering::SeqCst)
    }

    fn current(&self) -> Arc<Connection> {
        lock(&self.shared.current).clone()
    }

    /// Whether a call goes to `current` without waiting: it is usable, or
    /// no reconnect will replace it (its calls then fail clearly).
    fn takes_calls_now(&self, current: &Connection) -> bool {
        current.is_usable() || !self.reconnects_now()
    }

    /// The live connection. If it is lost and `reconnect` is on, waits for
    /// the supervisor's reconnect: every caller waits on the same attempt
    /// and sees the same outcome. Otherwise the current connection, whose
    /// calls fail clearly if it is gone.
    async fn connection(&self) -> Result<Arc<Connection>> {
        // The usual case, before subscribing to the supervisor's state (a
        // receiver made and dropped at every call).
        if let Some(current) = self.connection_now() {
            return Ok(current);
        }
        // Subscribed first, then checked again: a reconnect from now on
        // is seen by `changed`.
        let mut states = self.shared.state.subscribe();
        loop {
            let current = self.current();
            if self.takes_calls_now(&current) {
                return Ok(current);
            }
            if states.changed().await.is_err() {
                return Ok(current);
            }
        }
    }
}

/// Locks a mutex, ignoring poisoning: no code panics while holding these.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
