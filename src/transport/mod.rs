//! Raw byte streams between a server and its clients, one module per platform.
//!
//! Windows uses named pipes with overlapped I/O through
//! `tokio::net::windows::named_pipe`; Unix uses Unix domain sockets. Both
//! offer the same interface: [`Listener::bind`], [`Listener::accept`],
//! [`connect`], [`flush_to_peer`] and [`disconnect`]. Nothing here frames data: the seed's
//! hello examples use this layer directly, the protocol layers sit on top.
//!
//! [`memory`] is a transport of a third kind: a connected pair of streams in
//! one process, which the server and the client run over like any other
//! byte stream (see `ServerHandle::serve_connection` and `Client::from_io`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

pub mod memory;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::{
    connect, disconnect, flush_to_peer, is_out_of_descriptors, ClientStream, Listener, OverLimit,
    ServerStream,
};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{
    connect, default_security_descriptor, disconnect, flush_to_peer, ClientStream, Listener,
    ServerStream,
};
#[cfg(windows)]
pub(crate) use windows::{process_user, sid_string};

/// Default number of pipe instances listening at once on Windows.
pub const DEFAULT_BACKLOG: usize = 4;

/// Default time a client keeps trying to connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How data is delimited on the pipe (Windows only; Unix sockets are streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PipeMode {
    /// A byte stream, like the seed's `PIPE_TYPE_BYTE`.
    #[default]
    Byte,
    /// Message mode: each write is read as one message.
    Message,
}

/// How a server listens.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Pipe instances kept listening at once (Windows; at least 1). More
    /// instances mean fewer `ERROR_PIPE_BUSY` retries in a burst of clients.
    pub backlog: usize,
    /// Upper bound on pipe instances serving clients, connected or not
    /// (Windows; 1 to 254, `None` for unlimited). The placeholder instance
    /// that holds the name comes on top, within the 254 Windows allows (so
    /// 254 serves at most 253).
    pub max_instances: Option<u8>,
    /// Byte or message mode (Windows).
    pub pipe_mode: PipeMode,
    /// The server only writes, like the seed's `PIPE_ACCESS_OUTBOUND`
    /// (Windows; on Unix the socket is always two-way).
    pub outbound_only: bool,
    /// Permission bits of the socket file (Unix; default 0600).
    pub socket_mode: u32,
    /// Security descriptor of every pipe instance, in SDDL (Windows).
    /// `None` means pipesvc's default: full access for the creating user and
    /// SYSTEM only.
    pub security_descriptor: Option<String>,
    /// Refuse clients on other machines (Windows; default `true`).
    pub reject_remote_clients: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            backlog: DEFAULT_BACKLOG,
            max_instances: None,
            pipe_mode: PipeMode::Byte,
            outbound_only: false,
            socket_mode: 0o600,
            security_descriptor: None,
            reject_remote_clients: true,
        }
    }
}

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// How long to keep retrying a busy or absent server.
    pub timeout: Duration,
    /// Open for reading only, like the seed's client (`GENERIC_READ`);
    /// needed to connect to an outbound-only pipe (Windows).
    pub read_only: bool,
    /// Byte or message mode (Windows).
    pub pipe_mode: PipeMode,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            read_only: false,
            pipe_mode: PipeMode::Byte,
        }
    }
}

/// What the operating system tells about the process on the other end.
///
/// Read its fields; build one (for [`ServerHandle::serve_connection`],
/// which serves a stream the caller vouches for) with [`PeerInfo::new`] and
/// the `with_*` methods, or take [`PeerInfo::current`]. It may gain fields.
///
/// [`ServerHandle::serve_connection`]: crate::server::ServerHandle::serve_connection
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's process id, when known.
    pub pid: Option<u32>,
    /// The peer's user id (Unix).
    pub uid: Option<u32>,
    /// The peer's group id (Unix).
    pub gid: Option<u32>,
}

impl PeerInfo {
    /// Nothing known about the peer. An [`AccessPolicy`] other than
    /// [`anyone`](crate::server::AccessPolicy::anyone) refuses such a peer
    /// on Unix (no uid to check).
    ///
    /// [`AccessPolicy`]: crate::server::AccessPolicy
    pub const fn new() -> PeerInfo {
        PeerInfo {
            pid: None,
            uid: None,
            gid: None,
        }
    }

    /// This process: its pid, and on Unix its uid and gid. What the
    /// in-memory transport's ends report, since both are in this process.
    pub fn current() -> PeerInfo {
        let me = PeerInfo::new().with_pid(std::process::id());
        #[cfg(unix)]
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        let me = unsafe { me.with_uid(libc::getuid()).with_gid(libc::getgid()) };
        me
    }

    /// The same, with process id `pid`.
    #[must_use]
    pub const fn with_pid(mut self, pid: u32) -> PeerInfo {
        self.pid = Some(pid);
        self
    }

    /// The same, with user id `uid`.
    #[must_use]
    pub const fn with_uid(mut self, uid: u32) -> PeerInfo {
        self.uid = Some(uid);
        self
    }

    /// The same, with group id `gid`.
    #[must_use]
    pub const fn with_gid(mut self, gid: u32) -> PeerInfo {
        self.gid = Some(gid);
        self
    }
}

/// What the server needs of a connection's stream beyond reading and
/// writing. The OS streams answer with what their platform can tell; any
/// other stream (see [`Generic`]) gets the defaults.
pub(crate) trait ServerIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// After a read found the end of the stream: whether the peer closed
    /// the connection rather than only its sending side (a half-close, after
    /// which it still reads). A stream that cannot tell says `false`: its
    /// answers are written, and a write to a peer that is gone fails.
    fn peer_is_gone(&self) -> bool {
        false
    }

    /// Cuts the peer off at once, discarding what it has not read.
    /// Dropping the stream does that for most streams.
    fn disconnect(&self) {}

    /// Makes sure the peer gets everything written before the stream is
    /// dropped, and sees the end of the stream.
    fn flush_to_peer(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        tokio::io::AsyncWriteExt::shutdown(self)
    }
}

/// Any byte stream a caller hands the server, type-erased so that one
/// server serves streams of many types.
pub(crate) struct Generic(Box<dyn AnyIo>);

/// What a stream handed to the server must be.
pub(crate) trait AnyIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AnyIo for T {}

impl Generic {
    pub(crate) fn new(io: impl AnyIo) -> Generic {
        Generic(Box::new(io))
    }
}

impl ServerIo for Generic {}

impl std::fmt::Debug for Generic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Generic(..)")
    }
}

impl AsyncRead for Generic {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Generic {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// A connected client stream, who is on the other end, and what it took.
#[derive(Debug)]
pub struct Connected<S> {
    /// The stream.
    pub stream: S,
    /// What the operating system says about the server process.
    pub server: PeerInfo,
    /// The failed attempts before the one that succeeded.
    pub stats: ConnectStats,
}

/// Failed connection attempts, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectStats {
    /// Every instance was taken (Windows `ERROR_PIPE_BUSY`; Unix `EAGAIN`,
    /// the listen queue was full).
    pub busy_retries: u32,
    /// Nothing was listening (Windows `ERROR_FILE_NOT_FOUND`; Unix `ENOENT`
    /// or `ECONNREFUSED`), as while a server starts or restarts.
    pub absent_retries: u32,
}

/// Why a connection attempt may be worth repeating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    Busy,
    Absent,
}

/// First and largest pause between connection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// Calls `attempt` until it succeeds, fails with an error `retryable` does
/// not accept, or `timeout` runs out; the error names the endpoint.
async fn retry_connect<S, F, Fut>(
    endpoint: &Endpoint,
    timeout: Duration,
    retryable: fn(&io::Error) -> Option<Retry>,
    mut attempt: F,
) -> Result<Connected<S>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut stats = ConnectStats::default();
    loop {
        let err = match attempt().await {
            Ok(stream) => {
                return Ok(Connected {
                    stream,
                    server: PeerInfo::default(),
                    stats,
                })
            }
            Err(err) => err,
        };
        let now = Instant::now();
        let retry = retryable(&err).filter(|_| now < deadline);
        let Some(retry) = retry else {
            return Err(Error::Connect {
                endpoint: endpoint.to_string(),
                timeout,
                attempts: stats.busy_retries + stats.absent_retries + 1,
                source: explain_connect_error(err, retryable),
            });
        };
        match retry {
            Retry::Busy => stats.busy_retries += 1,
            Retry::Absent => stats.absent_retries += 1,
        }
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Rewords the errors a user meets most, keeping the OS error as the cause.
fn explain_connect_error(err: io::Error, retryable: fn(&io::Error) -> Option<Retry>) -> io::Error {
    let hint = match retryable(&err) {
        Some(Retry::Absent) => "no server is listening (is the service running?)",
        Some(Retry::Busy) => "the server is busy: every pipe instance is taken",
        None => return err,
    };
    io::Error::new(err.kind(), format!("{hint}: {err}"))
}

/// Closes a server stream, giving the client `timeout` to take what was
/// written; a client that does not is cut off with [`disconnect`].
pub async fn close_within(stream: ServerStream, timeout: Duration) {
    close_stream_within(stream, timeout).await;
}

/// [`close_within`] for any stream the server serves.
pub(crate) async fn close_stream_within<S: ServerIo>(mut stream: S, timeout: Duration) {
    let flushed = tokio::time::timeout(timeout, stream.flush_to_peer()).await;
    if !matches!(flushed, Ok(Ok(()))) {
        stream.disconnect();
    }
}

fn bind_error(endpoint: &Endpoint, source: io::Error) -> Error {
    Error::Bind {
        endpoint: endpoint.to_string(),
        source,
    }
}
