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

mod connection;
mod identity;
mod notifications;
mod pending;
mod reader;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

pub use identity::ServerIdentity;
pub use notifications::Notifications;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::protocol::{Kind, Status, DEFAULT_MAX_FRAME_LEN};
use crate::transport::{ConnectOptions, ConnectStats, PeerInfo};
use connection::{CallError, Connection, NotificationSink};

/// Default time the server has to send its HELLO.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of notifications buffered for [`Client::notifications`].
pub const DEFAULT_NOTIFICATION_BUFFER: usize = 256;

/// How a [`Client`] connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Transport options: connect timeout (default 5 s) and more.
    pub connect: ConnectOptions,
    /// Time the server has to send its HELLO (default 5 s).
    pub handshake_timeout: Duration,
    /// Largest frame accepted from the server (default 8 MiB). Requests are
    /// bounded by the maximum the server announces instead.
    pub max_frame_len: u32,
    /// Notifications buffered until read (default 256); past that, new ones
    /// are dropped and counted rather than stalling responses.
    pub notification_buffer: usize,
    /// Connect only if the server process has this id (read from the OS:
    /// `GetNamedPipeServerProcessId` on Windows, `SO_PEERCRED` on Unix),
    /// so that a process squatting on the name is not mistaken for the
    /// service. Checked before anything is sent. Default: no check.
    pub expect_server_pid: Option<u32>,
    /// Which server the client agrees to talk to, checked after connecting
    /// and before anything is sent. Default
    /// [`ServerIdentity::SameUserOrAdmin`]: one running as this process's
    /// user or as root / LocalSystem, reached (on Unix) through directories
    /// no other user controls. Anything else fails with
    /// [`Error::WrongServer`]. See SECURITY.md.
    pub server_identity: ServerIdentity,
    /// A request or ping not answered within this time fails with
    /// [`Error::Timeout`]; its late answer is discarded. Default: none.
    pub request_timeout: Option<Duration>,
    /// When the connection is lost, the next call connects again (retrying
    /// for up to `connect.timeout`), so that a client outlives a server
    /// restart. Requests in flight when the connection died fail with
    /// [`Error::ConnectionClosed`] and are never sent again, so no request
    /// is ever answered twice. Default: off.
    pub reconnect: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect: ConnectOptions::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            notification_buffer: DEFAULT_NOTIFICATION_BUFFER,
            expect_server_pid: None,
            server_identity: ServerIdentity::SameUserOrAdmin,
            request_timeout: None,
            reconnect: false,
        }
    }
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

#[derive(Debug)]
struct Shared {
    endpoint: Endpoint,
    options: ClientOptions,
    current: Mutex<Arc<Connection>>,
    /// One reconnect at a time; the others wait and use its result.
    reconnecting: tokio::sync::Mutex<()>,
    notifications: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Kept only with `reconnect`, for the next connections; without it the
    /// notification stream ends with the one connection.
    sink: Mutex<Option<NotificationSink>>,
    dropped_notifications: Arc<AtomicU64>,
    reconnects: AtomicU64,
    closed: AtomicBool,
}

impl Client {
    /// Connects with default options: retries a busy or absent server for
    /// up to 5 s, then performs the handshake.
    pub async fn connect(endpoint: &Endpoint) -> Result<Client> {
        Client::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with `options`.
    pub async fn connect_with(endpoint: &Endpoint, options: ClientOptions) -> Result<Client> {
        let (sender, receiver) = mpsc::channel(options.notification_buffer.max(1));
        let sink = NotificationSink {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let span = tracing::debug_span!("client", endpoint = %endpoint);
        let first = Connection::open(endpoint, &options, sink.clone())
            .instrument(span)
            .await?;
        let shared = Shared {
            endpoint: endpoint.clone(),
            current: Mutex::new(Arc::new(first)),
            reconnecting: tokio::sync::Mutex::new(()),
            notifications: Mutex::new(Some(receiver)),
            dropped_notifications: sink.dropped.clone(),
            sink: Mutex::new(options.reconnect.then_some(sink)),
            reconnects: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            options,
        };
        Ok(Client {
            shared: Arc::new(shared),
        })
    }

    /// Sends a request and waits for its answer. A server-side failure is
    /// [`Error::Remote`]; a lost connection is [`Error::ConnectionClosed`].
    pub async fn request(&self, payload: impl Into<Bytes>) -> Result<Bytes> {
        self.call(Kind::Request, payload.into()).await
    }

    /// Sends a PING and returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.call(Kind::Ping, Bytes::new()).await?;
        Ok(start.elapsed())
    }

    /// Asks the server for its counters: uptime, connections, requests
    /// served, errors by code, bytes in and out (STATUS, protocol 1.1).
    ///
    /// A server older than protocol 1.1 does not know STATUS: it answers
    /// ERROR `unknown kind` (4) and closes the connection, which this
    /// reports as [`Error::ConnectionClosed`] naming that error.
    pub async fn status(&self) -> Result<Status> {
        let payload = self.call(Kind::Status, Bytes::new()).await?;
        Status::decode(&payload)
            .ok_or_else(|| Error::Protocol("the server's STATUS answer is malformed".into()))
    }

    /// Sends a NOTIFY; the server answers nothing.
    pub async fn notify(&self, payload: impl Into<Bytes>) -> Result<()> {
        self.connection().await?.notify(payload.into()).await
    }

    /// The stream of NOTIFY payloads from the server. It can be taken once;
    /// later calls return `None`. With `reconnect` it carries on across
    /// connections and ends on [`close`](Client::close).
    pub fn notifications(&self) -> Option<Notifications> {
        lock(&self.shared.notifications)
            .take()
            .map(Notifications::new)
    }

    /// Closes the connection gracefully: new requests are refused, those
    /// in flight get their answers (or fail if the connection drops), then
    /// everything queued is written and the connection is closed. A closed
    /// client does not reconnect.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        lock(&self.shared.sink).take();
        self.current().close().await;
    }

    /// The name the server gave in its HELLO.
    pub fn server_name(&self) -> String {
        self.current().server.server_name.clone()
    }

    /// What the operating system says about the server process (its pid
    /// on every platform; uid and gid on Unix).
    pub fn server_peer(&self) -> PeerInfo {
        self.current().server_peer
    }

    /// The largest `length` field the server accepts.
    pub fn server_max_frame_len(&self) -> u32 {
        self.current().server.max_frame_len
    }

    /// The endpoint this client connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// The attempts that found the server busy or absent before the
    /// current connection was made.
    pub fn connect_stats(&self) -> ConnectStats {
        self.current().connect_stats
    }

    /// How many times the client has connected again after losing its
    /// connection (with `reconnect`).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Notifications dropped because the notification buffer was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.shared.dropped_notifications.load(Ordering::Relaxed)
    }

    /// Whether requests can no longer succeed: the connection is lost (or
    /// the server said GOODBYE) and will not be replaced, because
    /// `reconnect` is off or the client was closed.
    pub fn is_closed(&self) -> bool {
        let lost = !self.current().is_usable();
        lost && (!self.shared.options.reconnect || self.shared.closed.load(Ordering::SeqCst))
    }

    async fn call(&self, kind: Kind, payload: Bytes) -> Result<Bytes> {
        let Some(limit) = self.shared.options.request_timeout else {
            return self.call_once_more_if_unsent(kind, payload).await;
        };
        tokio::time::timeout(limit, self.call_once_more_if_unsent(kind, payload))
            .await
            .unwrap_or(Err(Error::Timeout(limit, "waiting for the answer")))
    }

    /// Calls on the current connection. With `reconnect`, a call that the
    /// connection refused before sending anything (it had just died) is
    /// made once more on a new connection: the server never saw it, so it
    /// cannot be answered twice.
    async fn call_once_more_if_unsent(&self, kind: Kind, payload: Bytes) -> Result<Bytes> {
        let first = self.connection().await?.call(kind, payload.clone()).await;
        match first {
            Err(CallError::NotSent(_)) if self.reconnects_now() => {
                Ok(self.connection().await?.call(kind, payload).await?)
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

    /// The live connection, connecting again first if it was lost (or the
    /// server said GOODBYE) and `reconnect` is on. Otherwise the current
    /// one, whose calls fail clearly if it is gone.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let current = self.current();
        if current.is_usable() || !self.reconnects_now() {
            return Ok(current);
        }
        let _one_at_a_time = self.shared.reconnecting.lock().await;
        let current = self.current();
        if current.is_usable() {
            return Ok(current); // another task reconnected meanwhile
        }
        let Some(sink) = lock(&self.shared.sink).clone() else {
            return Ok(current); // closed meanwhile
        };
        let span = tracing::debug_span!("client", endpoint = %self.shared.endpoint);
        let fresh = Connection::open(&self.shared.endpoint, &self.shared.options, sink)
            .instrument(span)
            .await?;
        let fresh = Arc::new(fresh);
        *lock(&self.shared.current) = fresh.clone();
        let count = self.shared.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(endpoint = %self.shared.endpoint, reconnects = count, "reconnected");
        Ok(fresh)
    }
}

/// Locks a mutex, ignoring poisoning: no code panics while holding these.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
