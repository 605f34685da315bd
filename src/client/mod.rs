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

mod notifications;
mod pending;
mod reader;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use notifications::Notifications;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::frame_io::{write_frames, OUTBOUND_QUEUE};
use crate::protocol::{
    ClientHello, DecodeError, ErrorPayload, Frame, FrameCodec, Kind, ServerHello,
    DEFAULT_MAX_FRAME_LEN, HEADER_LEN, PROTOCOL_VERSION,
};
use crate::transport::{self, ClientStream, ConnectOptions, ConnectStats, PeerInfo};
use pending::Pending;
use reader::{read_frames, Routes};

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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect: ConnectOptions::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            notification_buffer: DEFAULT_NOTIFICATION_BUFFER,
            expect_server_pid: None,
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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    server: ServerHello,
    server_peer: PeerInfo,
    connect_stats: ConnectStats,
    outbound: mpsc::Sender<Frame>,
    pending: Arc<Pending>,
    notifications: Mutex<Option<mpsc::Receiver<Bytes>>>,
    dropped_notifications: Arc<AtomicU64>,
    close: CancellationToken,
    writer: Mutex<Option<JoinHandle<io::Result<WriteHalf<ClientStream>>>>>,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer drains and shuts down; the read half goes with the
        // reader, and with both halves gone the handle closes.
        self.close.cancel();
        self.reader.abort();
    }
}

impl Client {
    /// Connects with default options: retries a busy or absent server for
    /// up to 5 s, then performs the handshake.
    pub async fn connect(endpoint: &Endpoint) -> Result<Client> {
        Client::connect_with(endpoint, ClientOptions::default()).await
    }

    /// Connects with `options`.
    pub async fn connect_with(endpoint: &Endpoint, options: ClientOptions) -> Result<Client> {
        let span = tracing::debug_span!("client", endpoint = %endpoint);
        Client::open(endpoint, options).instrument(span).await
    }

    async fn open(endpoint: &Endpoint, options: ClientOptions) -> Result<Client> {
        let connected = transport::connect(endpoint, &options.connect).await?;
        check_server_pid(endpoint, options.expect_server_pid, &connected.server)?;
        let server_peer = connected.server;
        let (read, write) = tokio::io::split(connected.stream);
        let mut reader = FramedRead::new(read, FrameCodec::new(options.max_frame_len));
        let server =
            tokio::time::timeout(options.handshake_timeout, read_server_hello(&mut reader))
                .await
                .map_err(|_| {
                    Error::Timeout(options.handshake_timeout, "waiting for the server's HELLO")
                })??;
        let mut sink = FramedWrite::new(write, FrameCodec::new(server.max_frame_len));
        let hello = ClientHello {
            version: PROTOCOL_VERSION,
        };
        sink.send(Frame::new(Kind::Hello, 0, hello.encode()))
            .await
            .map_err(into_error)?;
        tracing::debug!(server = %server.server_name, stats = ?connected.stats, "connected");
        let identity = (server, server_peer, connected.stats);
        Ok(Client::start(endpoint, options, identity, reader, sink))
    }

    fn start(
        endpoint: &Endpoint,
        options: ClientOptions,
        (server, server_peer, connect_stats): (ServerHello, PeerInfo, ConnectStats),
        reader: FramedRead<ReadHalf<ClientStream>, FrameCodec>,
        sink: FramedWrite<WriteHalf<ClientStream>, FrameCodec>,
    ) -> Client {
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let (notify_tx, notify_rx) = mpsc::channel(options.notification_buffer.max(1));
        let close = CancellationToken::new();
        let pending = Arc::new(Pending::default());
        let dropped_notifications = Arc::new(AtomicU64::new(0));
        // No write timeout: a server that stops reading shows up as
        // requests that are not answered, which the caller bounds.
        let writer = tokio::spawn(write_frames(sink, queue, close.clone(), None).in_current_span());
        let routes = Routes {
            pending: pending.clone(),
            notifications: notify_tx,
            dropped_notifications: dropped_notifications.clone(),
            outbound: outbound.clone(),
        };
        let reader_close = close.clone();
        let reader = tokio::spawn(
            async move {
                read_frames(reader, routes).await;
                reader_close.cancel();
            }
            .in_current_span(),
        );
        Client {
            inner: Arc::new(Inner {
                endpoint: endpoint.clone(),
                server,
                server_peer,
                connect_stats,
                outbound,
                pending,
                notifications: Mutex::new(Some(notify_rx)),
                dropped_notifications,
                close,
                writer: Mutex::new(Some(writer)),
                reader,
            }),
        }
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

    /// Sends a NOTIFY; the server answers nothing.
    pub async fn notify(&self, payload: impl Into<Bytes>) -> Result<()> {
        let payload = payload.into();
        self.check_size(&payload)?;
        if let Some(reason) = self.inner.pending.closed_reason() {
            return Err(Error::ConnectionClosed(reason));
        }
        self.send(Frame::notify(payload)).await
    }

    /// The stream of NOTIFY payloads from the server. It can be taken once;
    /// later calls return `None`.
    pub fn notifications(&self) -> Option<Notifications> {
        let receiver = self
            .inner
            .notifications
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        receiver.map(Notifications::new)
    }

    /// Closes the connection gracefully: new requests are refused, those
    /// in flight get their answers (or fail if the connection drops), then
    /// everything queued is written and the connection is closed.
    pub async fn close(&self) {
        self.inner
            .pending
            .refuse_new("the client is closing".into());
        self.inner.pending.wait_idle().await;
        self.inner.close.cancel();
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        self.inner.reader.abort();
        self.inner
            .pending
            .fail_all("the client closed the connection".into());
    }

    /// The name the server gave in its HELLO.
    pub fn server_name(&self) -> &str {
        &self.inner.server.server_name
    }

    /// What the operating system says about the server process (its pid
    /// on every platform; uid and gid on Unix).
    pub fn server_peer(&self) -> &PeerInfo {
        &self.inner.server_peer
    }

    /// The largest `length` field the server accepts.
    pub fn server_max_frame_len(&self) -> u32 {
        self.inner.server.max_frame_len
    }

    /// The endpoint this client is connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The connection attempts that found the server busy or absent before
    /// this connection was made.
    pub fn connect_stats(&self) -> ConnectStats {
        self.inner.connect_stats
    }

    /// Notifications dropped because the notification buffer was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.inner.dropped_notifications.load(Ordering::Relaxed)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.pending.closed_reason().is_some()
    }

    async fn call(&self, kind: Kind, payload: Bytes) -> Result<Bytes> {
        self.check_size(&payload)?;
        let (registration, answer) = self.inner.pending.register()?;
        self.send(Frame::new(kind, registration.id, payload))
            .await?;
        let answer = answer.await.unwrap_or_else(|_| Err(self.closed_error()));
        drop(registration);
        answer
    }

    async fn send(&self, frame: Frame) -> Result<()> {
        self.inner
            .outbound
            .send(frame)
            .await
            .map_err(|_| self.closed_error())
    }

    fn check_size(&self, payload: &Bytes) -> Result<()> {
        let max = self.inner.server.max_frame_len as usize - HEADER_LEN;
        if payload.len() > max {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn closed_error(&self) -> Error {
        let reason = self.inner.pending.closed_reason();
        Error::ConnectionClosed(reason.unwrap_or_else(|| "the connection is closed".into()))
    }
}

/// Refuses a server process other than the expected one.
fn check_server_pid(endpoint: &Endpoint, expected: Option<u32>, server: &PeerInfo) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match server.pid {
        Some(pid) if pid == expected => Ok(()),
        found => Err(Error::WrongServer {
            endpoint: endpoint.to_string(),
            expected,
            found: found.map_or("unknown (the OS did not say)".into(), |pid| {
                format!("pid {pid}")
            }),
        }),
    }
}

/// Reads the server's first frame: its HELLO, or an ERROR explaining why
/// it will not serve us.
async fn read_server_hello<R: AsyncRead + Unpin>(
    reader: &mut FramedRead<R, FrameCodec>,
) -> Result<ServerHello> {
    let frame = match reader.next().await {
        None => {
            return Err(Error::ConnectionClosed(
                "the server closed the connection during the handshake".into(),
            ))
        }
        Some(frame) => frame.map_err(into_error)?,
    };
    match frame.kind {
        Kind::Hello => {
            let hello = ServerHello::decode(&frame.payload)
                .map_err(|e| Error::Protocol(format!("server HELLO refused: {e}")))?;
            // Frames from the server are bounded by what it announced, and
            // by what this client accepts.
            let max = hello.max_frame_len.min(reader.decoder().max_frame_len());
            if (max as usize) < HEADER_LEN {
                return Err(Error::Protocol(format!(
                    "server announced a maximum frame length of {max}"
                )));
            }
            *reader.decoder_mut() = FrameCodec::new(max);
            Ok(hello)
        }
        Kind::Error => match ErrorPayload::decode(&frame.payload) {
            Some(error) => Err(Error::Remote {
                code: error.code,
                message: error.message,
            }),
            None => Err(Error::Protocol("ERROR frame without a code".into())),
        },
        Kind::Goodbye => Err(Error::ConnectionClosed(
            "the server is shutting down".into(),
        )),
        other => Err(Error::Protocol(format!("expected HELLO, got {other:?}"))),
    }
}

fn into_error(err: DecodeError) -> Error {
    match err {
        DecodeError::Io(e) => Error::Io(e),
        other => Error::Protocol(other.to_string()),
    }
}
