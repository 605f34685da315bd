//! Raw byte streams between a server and its clients, one module per platform.
//!
//! Windows uses named pipes with overlapped I/O through
//! `tokio::net::windows::named_pipe`; Unix uses Unix domain sockets. Both
//! offer the same interface: [`Listener::bind`], [`Listener::accept`],
//! [`connect`], [`flush_to_peer`] and [`disconnect`]. Nothing here frames data: the seed's
//! hello examples use this layer directly, the protocol layers sit on top.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's process id, when known.
    pub pid: Option<u32>,
    /// The peer's user id (Unix).
    pub uid: Option<u32>,
    /// The peer's group id (Unix).
    pub gid: Option<u32>,
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
pub async fn close_within(mut stream: ServerStream, timeout: Duration) {
    let flushed = tokio::time::timeout(timeout, flush_to_peer(&mut stream)).await;
    if !matches!(flushed, Ok(Ok(()))) {
        disconnect(&stream);
    }
}

fn bind_error(endpoint: &Endpoint, source: io::Error) -> Error {
    Error::Bind {
        endpoint: endpoint.to_string(),
        source,
    }
}
