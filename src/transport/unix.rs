//! Unix domain sockets.

pub(crate) mod caller;

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
        UnixStream::connect(path)
    })
    .await?;
    connected.server = peer_info(&connected.stream);
    Ok(connected)
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
