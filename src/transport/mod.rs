//! Raw byte streams between a server and its clients, one module per platform.
//!
//! Windows uses named pipes with overlapped I/O through
//! `tokio::net::windows::named_pipe`; Unix uses Unix domain sockets. Both
//! offer the same interface for raw use: [`Listener::bind`],
//! [`Listener::accept`], [`connect`] and [`flush_to_peer`] (call it before
//! dropping a server stream, or the client may miss the end of what was
//! written). Nothing here frames data: the seed's hello examples use this
//! layer directly, the protocol layers sit on top.
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
use crate::validate;

mod caller;
pub mod memory;
#[cfg(unix)]
pub(crate) mod unix;
#[cfg(unix)]
use unix::caller as platform_caller;
#[cfg(unix)]
pub(crate) use unix::caller::{
    executable_id as platform_executable_id, gid_of, own_executable_id, uid_of,
};
#[cfg(unix)]
pub use unix::{connect, flush_to_peer, ClientStream, Listener, ServerStream};
#[cfg(unix)]
pub(crate) use unix::{is_out_of_descriptors, OverLimit};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::caller as platform_caller;
#[cfg(windows)]
pub(crate) use windows::{
    account_name, canonical_sid, interactive_users_descriptor, process_user, sid_of_account,
    sid_string,
};
#[cfg(windows)]
pub use windows::{
    connect, default_security_descriptor, flush_to_peer, ClientStream, Listener, ServerStream,
};

#[cfg(test)]
pub(crate) use caller::caller_details;
pub use caller::{Caller, ImpersonationLevel, Integrity, UserKey};

/// Runs `work` as `caller` on a blocking thread (Windows): see
/// [`ConnectionContext::run_as_client`](crate::server::ConnectionContext::run_as_client).
#[cfg(unix)]
pub(crate) async fn run_as<T, F>(caller: &Caller, work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _ = (caller, work);
    Err(Error::Impersonation(
        "Unix has no impersonation: a server cannot act as its client there (check the \
         caller's uid and groups instead)"
            .into(),
    ))
}

#[cfg(windows)]
pub(crate) use windows::caller::run_as;

/// Default number of pipe instances listening at once on Windows.
pub const DEFAULT_BACKLOG: usize = 4;

/// Default time a client keeps trying to connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How data is delimited on the pipe (Windows only; Unix sockets are streams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipeMode {
    /// A byte stream, like the seed's `PIPE_TYPE_BYTE`.
    #[default]
    Byte,
    /// Message mode: each write is read as one message.
    Message,
}

/// How a server listens: [`ListenerOptions::new`] (the defaults), then the
/// setters, each returning the options. Bad values are refused by
/// [`Listener::bind`] with [`Error::Config`] naming the setting.
///
/// ```
/// let options = pipesvc::transport::ListenerOptions::new()
///     .backlog(1)
///     .max_instances(Some(1))
///     .outbound_only(true);
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ListenerOptions {
    pub(crate) backlog: usize,
    pub(crate) max_instances: Option<u8>,
    pub(crate) pipe_mode: PipeMode,
    pub(crate) outbound_only: bool,
    pub(crate) socket_mode: u32,
    pub(crate) security_descriptor: Option<String>,
    pub(crate) reject_remote_clients: bool,
}

impl ListenerOptions {
    /// The defaults: a backlog of 4, unlimited instances, byte mode, two
    /// ways, socket mode 0600, pipesvc's security descriptor, remote
    /// clients refused.
    pub fn new() -> ListenerOptions {
        ListenerOptions::default()
    }

    /// Pipe instances kept listening at once (Windows; at least 1). More
    /// instances mean fewer `ERROR_PIPE_BUSY` retries in a burst of clients.
    pub fn backlog(mut self, backlog: usize) -> Self {
        self.backlog = backlog;
        self
    }

    /// Upper bound on pipe instances serving clients, connected or not
    /// (Windows; 1 to 254, `None` for unlimited). The placeholder instance
    /// that holds the name comes on top, within the 254 Windows allows (so
    /// 254 serves at most 253).
    pub fn max_instances(mut self, max: Option<u8>) -> Self {
        self.max_instances = max;
        self
    }

    /// Byte or message mode (Windows).
    pub fn pipe_mode(mut self, mode: PipeMode) -> Self {
        self.pipe_mode = mode;
        self
    }

    /// The server only writes, like the seed's `PIPE_ACCESS_OUTBOUND`
    /// (Windows; on Unix the socket is always two-way).
    pub fn outbound_only(mut self, outbound_only: bool) -> Self {
        self.outbound_only = outbound_only;
        self
    }

    /// Permission bits of the socket file (Unix; default 0600, at most
    /// 0777).
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode;
        self
    }

    /// Security descriptor of every pipe instance, in SDDL (Windows).
    /// `None` means pipesvc's default: full access for the creating user
    /// and SYSTEM only.
    pub fn security_descriptor(mut self, sddl: Option<String>) -> Self {
        self.security_descriptor = sddl;
        self
    }

    /// Refuse clients on other machines (Windows; default `true`).
    pub fn reject_remote_clients(mut self, reject: bool) -> Self {
        self.reject_remote_clients = reject;
        self
    }

    /// Refuses settings that cannot work, by name, on every platform (so
    /// that a setting for the other one is checked too).
    pub(crate) fn validate(&self) -> Result<()> {
        let why = "no client could ever connect";
        validate::at_least("backlog", self.backlog as u64, 1, why)?;
        if let Some(max) = self.max_instances {
            let max = u64::from(max);
            validate::at_least("max_instances", max, 1, why)?;
            let why = "Windows allows 254 instances of a pipe (255 means unlimited)";
            validate::at_most("max_instances", max, 254, why)?;
        }
        let why = "only the nine permission bits apply to a socket (0777)";
        validate::at_most("socket_mode", self.socket_mode.into(), 0o777, why)
    }
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

/// How a client connects: [`ConnectOptions::new`] (the defaults), then
/// the setters. Bad values are refused by [`connect`] (and the client's
/// `connect`) with [`Error::Config`] naming the setting.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    pub(crate) timeout: Duration,
    pub(crate) read_only: bool,
    pub(crate) pipe_mode: PipeMode,
    pub(crate) allow_impersonation: bool,
}

impl ConnectOptions {
    /// The defaults: retry for 5 s, read and write, byte mode.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// How long to keep retrying a busy or absent server (default 5 s;
    /// zero tries once, at most a year).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Open for reading only, like the seed's client (`GENERIC_READ`);
    /// needed to connect to an outbound-only pipe (Windows).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Byte or message mode (Windows).
    pub fn pipe_mode(mut self, mode: PipeMode) -> Self {
        self.pipe_mode = mode;
        self
    }

    /// Connect at the impersonation level instead of identification, so
    /// that the server may act as this client (Windows; default `false`).
    /// See `ClientOptions::allow_impersonation`.
    pub fn allow_impersonation(mut self, allow: bool) -> Self {
        self.allow_impersonation = allow;
        self
    }

    /// The connect timeout: the deadline arithmetic must not overflow.
    pub(crate) fn validate(&self) -> Result<()> {
        validate::bounded_timeout("connect_timeout", self.timeout)
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            read_only: false,
            pipe_mode: PipeMode::Byte,
            allow_impersonation: false,
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

    /// Without reading: whether the peer has closed the connection (both
    /// directions; a half-close is not a departure). For a connection the
    /// server is not reading (its requests wait), whose client could
    /// otherwise leave unseen. A stream that cannot tell says `false`.
    fn peer_hung_up(&self) -> bool {
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

    /// Closes the stream so that the peer reads everything written and
    /// then the end of the stream, not a reset; a peer that does not take
    /// it within `timeout` is cut off.
    ///
    /// The default, for streams that half-close (sockets): the sending
    /// side is shut ([`flush_to_peer`](ServerIo::flush_to_peer)), then what
    /// the peer still sends is read and thrown away ([`drain`]) before the
    /// stream is dropped. A socket closed with unread data in it resets
    /// its peer (ECONNRESET on Linux), and a client still writing would
    /// then lose the frames it was last sent: common client stacks
    /// (Python's asyncio streams) drop what they had received.
    fn close_within(mut self, timeout: Duration) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move {
            let closing = async {
                self.flush_to_peer().await?;
                drain(&mut self).await
            };
            if !matches!(tokio::time::timeout(timeout, closing).await, Ok(Ok(()))) {
                self.disconnect();
            }
        }
    }

    /// Stops sending to a peer that does not take what is written (what
    /// is not written yet is dropped), as gently as the stream allows
    /// within `timeout`. The default is [`close_within`](ServerIo::close_within):
    /// shutting a socket's sending side does not wait for the peer, which
    /// still reads what reached it, then the end of the stream.
    fn cut_within(self, timeout: Duration) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        self.close_within(timeout)
    }

    /// Who the client is, when the stream tells it at accept at no cost
    /// (Unix); `pin_process` asks for a handle on the client's process
    /// where the platform has one, for rules that read its executable.
    /// `None`: it must be read from the stream once the client has
    /// written to it ([`read_caller`](Self::read_caller), Windows).
    fn caller_at_accept(&self, peer: PeerInfo, pin_process: bool) -> Option<Caller> {
        let _ = pin_process;
        Some(Caller::from(peer))
    }

    /// Who the client is, read from the stream after the client's first
    /// frame (Windows: its token, on a blocking thread). Asked only when
    /// [`caller_at_accept`](Self::caller_at_accept) said `None`.
    fn read_caller(&self, peer: PeerInfo) -> impl Future<Output = io::Result<Caller>> + Send {
        std::future::ready(Ok(Caller::from(peer)))
    }
}

/// The most a closing server reads (and throws away) of what its peer
/// still sends: a client in the middle of large frames can finish, and
/// one that never stops costs a bounded amount of reading.
pub(crate) const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// How long a closing server waits for more from a peer that has stopped
/// sending (without closing its end) before it closes: more than the gaps
/// within a burst of writes, little enough for a stop not to linger.
pub(crate) const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// Reads and throws away what `stream` still receives, until its end (or
/// a read error: the peer is gone either way), nothing for
/// [`DRAIN_QUIET`], or [`DRAIN_LIMIT`] bytes (an error: it keeps sending).
/// What reaches the stream after it was left quiet this long may still
/// reset the peer: a peer that reads the end of the stream and then
/// closes its own is never reset.
pub(crate) async fn drain<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<()> {
    // On the heap, and only while draining: an array here would be part
    // of every connection task's future, idle ones included (8 KiB each).
    // Not zeroed: `read_buf` fills spare capacity, and most closes read
    // only the end of the stream.
    let mut chunk = Vec::with_capacity(8 * 1024);
    let mut drained = 0;
    let quiet = tokio::time::sleep(DRAIN_QUIET);
    tokio::pin!(quiet);
    while drained < DRAIN_LIMIT {
        chunk.clear();
        let read = tokio::io::AsyncReadExt::read_buf(stream, &mut chunk);
        tokio::select! {
            read = read => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => drained += n,
            },
            () = &mut quiet => return Ok(()),
        }
        quiet.as_mut().reset(Instant::now() + DRAIN_QUIET);
    }
    Err(io::Error::other(
        "the peer kept sending while the stream closed",
    ))
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

/// The stream a client connected with [`connect`], as the client reads and
/// writes it: on Unix its writes go to the socket at once, before tokio
/// has heard that it is writable (see `unix::WritesAtOnce`).
pub(crate) fn client_io(stream: ClientStream) -> Generic {
    #[cfg(unix)]
    return Generic::new(unix::WritesAtOnce::new(stream));
    #[cfg(windows)]
    return Generic::new(stream);
}

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
#[non_exhaustive]
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
#[non_exhaustive]
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

fn bind_error(endpoint: &Endpoint, source: io::Error) -> Error {
    Error::Bind {
        endpoint: endpoint.to_string(),
        source,
    }
}
