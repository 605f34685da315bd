//! Unix domain sockets.

pub(crate) mod caller;

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use super::{
    bind_error, retry_connect, ConnectOptions, Connected, ListenerOptions, PeerInfo, Retry,
};
use crate::endpoint::Endpoint;
use crate::error::Result;

/// The server's end of a connection.
pub type ServerStream = UnixStream;

/// The client's end of a connection.
pub type ClientStream = UnixStream;

/// A listening socket. Dropping it removes the socket file if it created
/// it, unless another server has replaced it since; a socket handed over
/// with [`Listener::from_std`] is left alone.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created; `None` for a
    /// socket someone else created (and so removes).
    identity: Option<(u64, u64)>,
    /// A descriptor kept open to be given up when the process runs out of
    /// them, so that the client waiting in the queue can still be accepted
    /// and told no (see [`Listener::refuse_over_fd_limit`]).
    reserve: Option<fs::File>,
}

impl Listener {
    /// Listens on `endpoint`, creating its private directory if needed and
    /// replacing a stale socket left by a dead server.
    ///
    /// Fails, without touching the file, if a live server owns the socket
    /// or if the path exists and is not a socket, and with
    /// [`Error::Config`](crate::Error::Config) for options that cannot work.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn bind(endpoint: &Endpoint, options: &ListenerOptions) -> Result<Listener> {
        options.validate()?;
        Self::bind_path(endpoint, options).map_err(|e| bind_error(endpoint, e))
    }

    fn bind_path(endpoint: &Endpoint, options: &ListenerOptions) -> io::Result<Listener> {
        if let Some(dir) = endpoint.private_dir() {
            ensure_private_dir(dir)?;
        }
        let path = endpoint.address();
        // Check, remove and bind under the lock: two servers starting at
        // once must not both find the socket stale, each deleting the
        // other's fresh one (leaving an orphan nobody can reach).
        let lock = StartLock::acquire(path)?;
        remove_stale_socket(path)?;
        let inner = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(options.socket_mode))?;
        let meta = fs::symlink_metadata(path)?;
        drop(lock);
        Ok(Listener {
            inner,
            path: path.to_owned(),
            identity: Some((meta.dev(), meta.ino())),
            reserve: open_reserve(),
        })
    }

    /// Serves on `listener`, a socket that is already bound and listening
    /// at `endpoint`'s path, such as one a service manager passed on
    /// (systemd socket activation). Nothing is created, re-moded or, when
    /// the listener is dropped, removed: whoever made the socket owns it.
    ///
    /// Fails if the socket is not bound to `endpoint`'s path.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn from_std(
        listener: std::os::unix::net::UnixListener,
        endpoint: &Endpoint,
    ) -> Result<Listener> {
        Self::adopt(listener, endpoint).map_err(|e| bind_error(endpoint, e))
    }

    fn adopt(
        listener: std::os::unix::net::UnixListener,
        endpoint: &Endpoint,
    ) -> io::Result<Listener> {
        let addr = listener.local_addr()?;
        let expected = endpoint.address();
        match addr.as_pathname() {
            Some(path) if path == expected => {}
            Some(path) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the listening socket handed over is bound to {}, not to {}",
                        path.display(),
                        expected.display()
                    ),
                ))
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the listening socket handed over is not bound to a path \
                     (abstract and unnamed sockets are not supported)",
                ))
            }
        }
        listener.set_nonblocking(true)?;
        Ok(Listener {
            inner: UnixListener::from_std(listener)?,
            path: expected.to_owned(),
            identity: None,
            reserve: open_reserve(),
        })
    }

    /// Waits for the next client.
    pub async fn accept(&mut self) -> io::Result<(ServerStream, PeerInfo)> {
        let (stream, _) = self.inner.accept().await?;
        let peer = peer_info(&stream);
        Ok((stream, peer))
    }

    /// After [`accept`](Self::accept) failed because the process (`EMFILE`)
    /// or the system (`ENFILE`) is out of file descriptors: gives up the
    /// reserve descriptor, accepts the client waiting in the queue, writes
    /// `reply` to it (without waiting: it fits in a fresh socket's buffer),
    /// closes it and takes the reserve back. Without this, the client
    /// would wait in the queue, answered by nobody, while `accept` kept
    /// failing.
    ///
    /// Linux fails `accept` with `EMFILE` even when nobody is waiting
    /// ([`OverLimit::NoneWaiting`]); the next `accept` then waits for a
    /// client as usual.
    pub(crate) fn refuse_over_fd_limit(&mut self, reply: &[u8]) -> OverLimit {
        if self.reserve.take().is_none() {
            self.reserve = open_reserve();
            return OverLimit::Failed;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let outcome = match self.inner.poll_accept(&mut cx) {
            std::task::Poll::Ready(Ok((stream, _))) => {
                // Best effort: a client that cannot take 50 bytes is gone.
                let _ = stream.try_write(reply);
                OverLimit::Refused
            }
            std::task::Poll::Pending => OverLimit::NoneWaiting,
            std::task::Poll::Ready(Err(_)) => OverLimit::Failed,
        };
        self.reserve = open_reserve();
        outcome
    }
}

/// What [`Listener::refuse_over_fd_limit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OverLimit {
    /// A waiting client was answered and closed.
    Refused,
    /// Nobody was waiting.
    NoneWaiting,
    /// No client could be accepted even with the reserve given up (or no
    /// reserve could be opened).
    Failed,
}

/// Whether `err` says the process or the system is out of descriptors.
pub(crate) fn is_out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The reserve descriptor: `/dev/null`, which every Unix has.
fn open_reserve() -> Option<fs::File> {
    fs::File::open("/dev/null").ok()
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some(identity) = self.identity else {
            return;
        };
        let ours = fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == identity)
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates `dir` with mode 0700, or checks that the existing one is ours
/// and private: a socket in a directory others can write to can be swapped.
/// (Also `testing::unique_endpoint`'s, so that another process can be
/// handed the endpoint's full path.)
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The parent is missing (an unusual XDG_RUNTIME_DIR): create it too.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a directory owned by uid {uid} with mode 0700 \
                 (found owner {} and mode {:o}); fix or remove it",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// An exclusive `flock` on `<socket path>.lock`, held while a server
/// checks, removes and binds the socket, and removed (still locked) when
/// dropped: the file exists only while a server is starting.
///
/// A server that finds the lock taken fails at once ("another server is
/// starting on this path") rather than waiting: the holder either binds,
/// and then owns the name, or fails, and a retry finds the path free.
/// The lock file is opened without following symlinks and must be a
/// regular file owned by this user, so that a file planted beside a socket
/// in a shared directory can neither redirect the lock nor be locked
/// through; such a file is reported, never deleted.
struct StartLock {
    file: fs::File,
    path: PathBuf,
}

impl StartLock {
    fn acquire(socket: &Path) -> io::Result<StartLock> {
        let mut path = socket.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        loop {
            let file = open_lock_file(&path)?;
            // SAFETY: flock on a descriptor `file` owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another server is starting on this path (it holds {})",
                            path.display()
                        ),
                    ));
                }
                return Err(err);
            }
            // The previous holder removes the file when it is done: a lock
            // on a file no longer at `path` protects nothing, so start over.
            if same_file(&file, &path)? {
                return Ok(StartLock { file, path });
            }
        }
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        // Unlink before the lock goes (when `file` closes), so that whoever
        // locks the file next sees it is gone and opens a fresh one.
        if same_file(&self.file, &self.path).unwrap_or(false) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Opens (creating with mode 0600) the lock file, refusing a symlink or a
/// file that is not a regular file of this user's.
fn open_lock_file(path: &Path) -> io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            // The lock file is the first thing made beside the socket, so a
            // full path in a missing directory fails here: name the
            // directory, not the lock file. pipesvc does not create it: only
            // a bare name's private directory is pipesvc's to make.
            if let Some(dir) = path.parent().filter(|dir| !dir.exists()) {
                return io::Error::new(
                    e.kind(),
                    format!(
                        "the directory {} does not exist (pipesvc creates the \
                         directory only for a bare name)",
                        dir.display()
                    ),
                );
            }
            let what = if e.raw_os_error() == Some(libc::ELOOP) {
                "is a symbolic link; refusing to use it"
            } else {
                "cannot be opened"
            };
            io::Error::new(
                e.kind(),
                format!("the lock file {} {what}: {e}", path.display()),
            )
        })?;
    let meta = file.metadata()?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_file() || meta.uid() != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the lock file {} must be a regular file owned by uid {uid} (found owner {}); \
                 remove it if no server is starting",
                path.display(),
                meta.uid()
            ),
        ));
    }
    Ok(file)
}

/// Whether `path` still names the file `file` has open.
fn same_file(file: &fs::File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(named) => Ok((named.dev(), named.ino()) == (open.dev(), open.ino())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes a socket file no server answers on; refuses anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to delete it",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "already in use: another server is listening there",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket left by a dead server");
            fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Connects to `endpoint`, retrying while no server listens there
/// (`ENOENT`, `ECONNREFUSED`) or its listen queue is full (`EAGAIN`) until
/// `options.timeout` runs out.
pub async fn connect(
    endpoint: &Endpoint,
    options: &ConnectOptions,
) -> Result<Connected<ClientStream>> {
    options.validate()?;
    let path = endpoint.address();
    let mut connected = retry_connect(endpoint, options.timeout, is_retryable, || {
        connect_now(path)
    })
    .await?;
    connected.server = peer_info(&connected.stream);
    Ok(connected)
}

/// Connects a socket to `path`, without waiting for the runtime's driver.
///
/// A Unix socket's `connect` completes in the call, or fails (`EAGAIN`
/// when the listen queue is full, retried by the caller). tokio's
/// `UnixStream::connect` waits after it all the same, for the driver to
/// report the new socket writable; on a multi-threaded runtime whose
/// driver another thread is running, that wait is a wake-up from that
/// thread, the largest single cost of a short connection (the comparison's
/// accept row: 0.52x to 0.69x raw tokio's connections/s with it, 0.78x to
/// 0.81x without). A system that reports `EINPROGRESS` instead gets that
/// wait and the socket's error, as tokio does.
async fn connect_now(path: &Path) -> io::Result<UnixStream> {
    let socket = nonblocking_socket()?;
    let in_progress = match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) => return Err(e),
    };
    let stream = UnixStream::from_std(OwnedFd::from(socket).into())?;
    if in_progress {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// A Unix stream socket, non-blocking and close-on-exec (both set as it is
/// made where the system allows it).
fn nonblocking_socket() -> io::Result<Socket> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    return Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None);
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        #[cfg(target_vendor = "apple")]
        socket.set_nosigpipe(true)?;
        Ok(socket)
    }
}

/// A client's connected socket, whose writes go to the socket at once.
///
/// tokio learns that a socket is writable from its driver's events; a
/// stream it did not accept itself (a client's, connected by
/// [`connect_now`]) starts with no readiness, so its first write would
/// wait for the driver's first event (a wake-up from another thread, as
/// above) although its buffer is empty. Writes are tried on the socket
/// first; the first one that would block hands writing to tokio for good,
/// which then waits for readiness as usual.
#[derive(Debug)]
pub(crate) struct WritesAtOnce {
    stream: UnixStream,
    /// Writes are tried on the socket before tokio knows it is writable;
    /// `false` once one would have blocked.
    direct: bool,
}

impl WritesAtOnce {
    pub(crate) fn new(stream: UnixStream) -> WritesAtOnce {
        WritesAtOnce {
            stream,
            direct: true,
        }
    }

    /// `send` on the socket itself: `None` once it would block (and from
    /// then on), so that the caller goes through tokio.
    fn try_direct(
        &mut self,
        send: impl Fn(SockRef<'_>) -> io::Result<usize>,
    ) -> Option<io::Result<usize>> {
        while self.direct {
            match send(SockRef::from(&self.stream)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.direct = false,
                done => return Some(done),
            }
        }
        None
    }
}

/// The most slices one `sendmsg` takes (Linux's `UIO_MAXIOV`, the
/// `IOV_MAX` of the BSDs and macOS).
const MAX_IOV: usize = 1024;

/// No SIGPIPE for a write to a closed peer (on Apple systems the socket's
/// `SO_NOSIGPIPE` does that), as std's and tokio's own writes.
#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: libc::c_int = 0;

impl tokio::io::AsyncRead for WritesAtOnce {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for WritesAtOnce {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.try_direct(|socket| socket.send_with_flags(buf, SEND_FLAGS)) {
            Some(done) => Poll::Ready(done),
            None => Pin::new(&mut self.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // At most the kernel's limit of slices per call (more would fail
        // with `EMSGSIZE`): the rest is left for the next write, as std's
        // `write_vectored` does.
        let bufs = &bufs[..bufs.len().min(MAX_IOV)];
        match self.try_direct(|socket| socket.send_vectored_with_flags(bufs, SEND_FLAGS)) {
            Some(done) => Poll::Ready(done),
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The credentials of the process on the other end of `stream`.
fn peer_info(stream: &UnixStream) -> PeerInfo {
    match stream.peer_cred() {
        Ok(cred) => PeerInfo {
            pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
            uid: Some(cred.uid()),
            gid: Some(cred.gid()),
        },
        Err(_) => PeerInfo::default(),
    }
}

fn is_retryable(err: &io::Error) -> Option<Retry> {
    match err.kind() {
        // A reset: the listener was closing (its server killed) as we came.
        io::ErrorKind::NotFound
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset => Some(Retry::Absent),
        io::ErrorKind::WouldBlock => Some(Retry::Busy),
        _ => None,
    }
}

impl super::ServerIo for ServerStream {
    /// Asked of the kernel at that moment with a `poll` that does not wait:
    /// a socket whose peer is closed reports POLLHUP (both directions
    /// shut), a half-closed one only POLLRDHUP, and still takes what is
    /// written. (tokio's cached readiness could lag behind an EOF that a
    /// read found first.)
    fn peer_is_gone(&self) -> bool {
        self.peer_hung_up()
    }

    fn peer_hung_up(&self) -> bool {
        // POLLHUP: both directions are shut, whatever unread data the
        // socket still holds (a half-close sets only POLLRDHUP).
        let mut probe = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for a socket this stream owns; a zero
        // timeout never blocks.
        let ready = unsafe { libc::poll(&mut probe, 1, 0) };
        ready > 0 && probe.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }

    fn disconnect(&self) {
        disconnect(self);
    }

    fn flush_to_peer(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        flush_to_peer(self)
    }

    /// The credentials, the supplementary groups and (with `pin_process`)
    /// a pidfd of the peer: all there at accept.
    fn caller_at_accept(&self, peer: PeerInfo, pin_process: bool) -> Option<super::Caller> {
        Some(caller::capture(self, peer, pin_process))
    }
}

/// Cuts the client off at once, discarding unread data. On Unix closing the
/// socket does that, so this does nothing; it exists for Windows, where a
/// pipe with a write the client never reads stays open after it is dropped.
pub(crate) fn disconnect(_stream: &ServerStream) {}

/// Makes sure the peer gets everything written before the stream is
/// dropped. On Unix, written data survives a close, so this only shuts down
/// the write side, which the peer reads as end of stream.
pub async fn flush_to_peer(stream: &mut ServerStream) -> io::Result<()> {
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::Read;
    use std::task::Waker;

    use tokio::io::AsyncWrite;

    use super::*;

    /// A connected pair whose first end tokio has never seen ready (as a
    /// stream a client connected itself), and the other end, blocking.
    fn fresh_pair() -> (UnixStream, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (UnixStream::from_std(ours).unwrap(), theirs)
    }

    #[tokio::test]
    async fn a_write_goes_out_before_the_driver_reports_the_socket() {
        let (ours, mut theirs) = fresh_pair();
        let mut cx = Context::from_waker(Waker::noop());
        // What this is for: tokio's own write waits for the driver's first
        // event, although the socket's buffer is empty.
        let (mut plain, _other) = fresh_pair();
        assert!(Pin::new(&mut plain)
            .poll_write(&mut cx, b"hello")
            .is_pending());
        let mut writes = WritesAtOnce::new(ours);
        let written = Pin::new(&mut writes).poll_write(&mut cx, b"hello");
        assert!(matches!(written, Poll::Ready(Ok(5))), "{written:?}");
        let vectored = [io::IoSlice::new(b", "), io::IoSlice::new(b"world")];
        let written = Pin::new(&mut writes).poll_write_vectored(&mut cx, &vectored);
        assert!(matches!(written, Poll::Ready(Ok(7))), "{written:?}");
        let mut got = [0; 12];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, world");
    }

    /// More slices than one system call takes: the first `MAX_IOV` are
    /// written (a partial write, as std's), not an error.
    #[tokio::test]
    async fn a_write_of_more_slices_than_the_kernel_takes_writes_the_first() {
        let (ours, mut theirs) = fresh_pair();
        let mut writes = WritesAtOnce::new(ours);
        let bytes: Vec<u8> = (0..2 * MAX_IOV).map(|i| i as u8).collect();
        let slices: Vec<_> = bytes.chunks(1).map(io::IoSlice::new).collect();
        let mut cx = Context::from_waker(Waker::noop());
        let written = Pin::new(&mut writes).poll_write_vectored(&mut cx, &slices);
        assert!(matches!(written, Poll::Ready(Ok(MAX_IOV))), "{written:?}");
        let mut got = vec![0; MAX_IOV];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes[..MAX_IOV]);
    }

    /// Once the socket's buffer is full, writing is tokio's: the write
    /// waits, and the driver wakes it when the peer has read.
    #[tokio::test]
    async fn a_write_that_would_block_waits_for_the_driver() {
        let (ours, mut theirs) = fresh_pair();
        let mut writes = WritesAtOnce::new(ours);
        let chunk = vec![7u8; 64 * 1024];
        let mut cx = Context::from_waker(Waker::noop());
        let mut total = 0;
        while let Poll::Ready(written) = Pin::new(&mut writes).poll_write(&mut cx, &chunk) {
            total += written.unwrap();
        }
        assert!(
            !writes.direct,
            "a write that would block hands writing to tokio"
        );
        let expected = total + 4;
        let reader = std::thread::spawn(move || {
            let mut all = vec![0; expected];
            theirs.read_exact(&mut all).unwrap();
            all
        });
        let last = poll_fn(|cx| Pin::new(&mut writes).poll_write(cx, b"last"));
        let written = tokio::time::timeout(std::time::Duration::from_secs(60), last)
            .await
            .expect("woken once the peer has read");
        assert_eq!(written.unwrap(), 4);
        let all = reader.join().unwrap();
        assert!(all[..total].iter().all(|&b| b == 7));
        assert_eq!(&all[total..], b"last");
    }
}
