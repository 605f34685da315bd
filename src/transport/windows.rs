//! Windows named pipes, with overlapped I/O through Tokio.
//!
//! The listener keeps `backlog` instances waiting for clients at all times
//! and creates a replacement before handing a connected instance out, so a
//! client never finds the name missing while the server runs.
//!
//! The name itself is held for the listener's lifetime by a placeholder
//! instance, as go-winio does: the first instance (or the next, if another
//! client connected to the first before the listener's own: that client is
//! served), to which the listener
//! connects a client of its own and closes it at once, so that the
//! instance stays busy (clients see `ERROR_PIPE_BUSY`, never
//! `ERROR_FILE_NOT_FOUND`) and is never handed to anyone. Without it, if
//! every served instance closed while no replacement could be created
//! (`max_instances` reached, out of resources), the name would vanish and
//! another process could create it and impersonate the service. The
//! placeholder counts toward the limit Windows enforces: the listener asks
//! for `max_instances + 1` (at most 254).
//!
//! Security: every instance gets the same security descriptor (by default
//! the creating user and SYSTEM only; see [`security`]), remote clients are
//! refused unless the options say otherwise, the first instance claims the
//! name with `FILE_FLAG_FIRST_PIPE_INSTANCE`, and the client connects at the
//! identification level, so a server can learn who it is but not act as it.

pub(crate) mod caller;
mod security;

/// For the client's check of who the server is (`client::identity`), and
/// the access policy's rules and preset (`server::access`).
pub(crate) use security::{
    account_name, canonical_sid, interactive_users_descriptor, process_user, sid_of_account,
    sid_string,
};

use std::future::Future;
use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle};
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, PipeMode as TokioPipeMode, ServerOptions,
};
use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_PIPE_BUSY, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{SECURITY_IDENTIFICATION, SECURITY_IMPERSONATION};

use super::{
    bind_error, retry_connect, ConnectOptions, Connected, ListenerOptions, PeerInfo, PipeMode,
    Retry,
};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use security::{PipeSecurity, SecurityError};

/// The server's end of a connection.
pub type ServerStream = NamedPipeServer;

/// The client's end of a connection.
pub type ClientStream = NamedPipeClient;

type PendingConnect = Pin<Box<dyn Future<Output = (NamedPipeServer, io::Result<()>)> + Send>>;

/// How long `accept` waits before retrying when no instance can be created
/// (`max_instances` reached): an instance frees up only when a client leaves.
const REFILL_RETRY: Duration = Duration::from_millis(10);

/// A set of pipe instances waiting for clients.
pub struct Listener {
    name: std::ffi::OsString,
    options: ListenerOptions,
    /// Built once at bind, used for every instance.
    security: PipeSecurity,
    waiting: FuturesUnordered<PendingConnect>,
    /// An instance kept busy and never served (the first one, unless a client
    /// took that before the listener's own did): it holds the name.
    _placeholder: NamedPipeServer,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("security_descriptor", &self.security.sddl())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

impl Listener {
    /// Checks the options (a setting that cannot work is [`Error::Config`]),
    /// builds the security descriptor (an invalid custom SDDL is
    /// [`Error::Config`] too), creates the first instance with
    /// `first_pipe_instance(true)`, so that binding fails if another process
    /// already owns the name, makes it the placeholder that holds the name
    /// (see the module documentation), then fills the backlog; fails if not
    /// even one instance to serve on can be made.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn bind(endpoint: &Endpoint, options: &ListenerOptions) -> Result<Listener> {
        options.validate()?;
        let security =
            PipeSecurity::new(options.security_descriptor.as_deref()).map_err(|e| match e {
                SecurityError::InvalidSddl(message) => {
                    Error::config("security_descriptor", message)
                }
                SecurityError::Default(e) => bind_error(
                    endpoint,
                    io::Error::new(
                        e.kind(),
                        format!("cannot build the default security descriptor: {e}"),
                    ),
                ),
            })?;
        let name = endpoint.address().as_os_str().to_owned();
        let first = create_instance(&name, options, &security, true).map_err(|e| {
            let e = if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
                io::Error::new(
                    e.kind(),
                    format!(
                        "already in use: another process already owns this pipe name (it \
                         may be squatting on it to impersonate the service): {e}"
                    ),
                )
            } else {
                e
            };
            bind_error(endpoint, e)
        })?;
        let (placeholder, taken) = hold_name(&name, first, || {
            create_instance(&name, options, &security, false)
        })
        .map_err(|e| bind_error(endpoint, e))?;
        let mut listener = Listener {
            name,
            options: options.clone(),
            security,
            waiting: FuturesUnordered::new(),
            _placeholder: placeholder,
        };
        // Clients that connected before the placeholder was held are served.
        for server in taken {
            listener.wait_on(server);
        }
        listener.refill();
        if listener.waiting.is_empty() {
            // Not even one instance to serve on: report it now, not as a
            // server that never answers.
            let e = create_instance(&listener.name, options, &listener.security, false)
                .err()
                .unwrap_or_else(|| io::Error::other("no pipe instance could be created"));
            return Err(bind_error(endpoint, e));
        }
        Ok(listener)
    }

    /// Waits for the next client. A replacement instance is created before
    /// the connected one is returned.
    pub async fn accept(&mut self) -> io::Result<(ServerStream, PeerInfo)> {
        loop {
            while self.waiting.is_empty() {
                // Every instance is taken (max_instances): wait for one to free up.
                tokio::time::sleep(REFILL_RETRY).await;
                self.refill();
            }
            let (server, result) = self.waiting.next().await.expect("set is not empty");
            self.refill();
            match result {
                Ok(()) => {
                    let peer = peer_info(&server);
                    return Ok((server, peer));
                }
                // A client that came and went before the connect completed.
                Err(e) => tracing::debug!(error = %e, "pipe instance failed to connect"),
            }
        }
    }

    fn create(&self) -> io::Result<NamedPipeServer> {
        create_instance(&self.name, &self.options, &self.security, false)
    }

    fn wait_on(&mut self, server: NamedPipeServer) {
        self.waiting.push(Box::pin(async move {
            let result = server.connect().await;
            (server, result)
        }));
    }

    /// Tops the set of waiting instances up to the backlog. At
    /// `max_instances` failing is expected (an instance frees up when a
    /// client leaves); any other failure is a warning (rate-limited), since
    /// clients find the pipe busy until an instance can be made.
    fn refill(&mut self) {
        while self.waiting.len() < self.options.backlog.max(1) {
            match self.create() {
                Ok(server) => self.wait_on(server),
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                    tracing::debug!("at max_instances: no pipe instance to add yet");
                    break;
                }
                Err(e) => {
                    crate::log_limit::limited!(
                        warn,
                        error = %e,
                        waiting = self.waiting.len(),
                        "cannot re-create a pipe instance; clients find the pipe busy \
                         until one can be (the name stays held)"
                    );
                    break;
                }
            }
        }
    }
}

/// Creates one instance of pipe `name`; `first` claims the name with
/// `FILE_FLAG_FIRST_PIPE_INSTANCE`.
fn create_instance(
    name: &std::ffi::OsStr,
    listener: &ListenerOptions,
    security: &PipeSecurity,
    first: bool,
) -> io::Result<NamedPipeServer> {
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(listener.reject_remote_clients)
        .access_inbound(!listener.outbound_only)
        .access_outbound(true)
        .pipe_mode(tokio_mode(listener.pipe_mode));
    if let Some(max) = listener.max_instances {
        // 1 to 254, checked by `ListenerOptions::validate` (Tokio panics
        // above 254, Windows rejects 0). One more for the placeholder, within what Windows can express.
        options.max_instances(usize::from(max).saturating_add(1).min(254));
    }
    // SAFETY: `as_raw` points to a SECURITY_ATTRIBUTES (and descriptor)
    // owned by `security`, alive for the whole call, which only reads it.
    unsafe { options.create_with_security_attributes_raw(name, security.as_raw()) }
}

/// How many instances `hold_name` tries before giving up: each try after
/// the first means a client took the instance just made, before ours.
const HOLD_ATTEMPTS: usize = 8;

/// Makes an instance a busy placeholder nobody can use: connects a client
/// of our own (no access rights asked) and closes it. The instance then
/// waits for a `DisconnectNamedPipe` that never comes, holding the name.
///
/// `first` is the instance that claimed the name. A client of someone
/// else's (one retrying while the service restarts) may connect to it
/// before ours does: that instance is then connected, is returned to be
/// served like any other, and `create` makes the next candidate. (Cutting
/// that client off instead would not help: a disconnected instance does not
/// listen again until it is connected, so ours would find it busy too.)
/// Ours connects to the candidate because no other instance listens yet.
fn hold_name(
    name: &std::ffi::OsStr,
    first: NamedPipeServer,
    mut create: impl FnMut() -> io::Result<NamedPipeServer>,
) -> io::Result<(NamedPipeServer, Vec<NamedPipeServer>)> {
    let mut client = ClientOptions::new();
    client.read(false).write(false);
    let mut taken = Vec::new();
    let mut candidate = first;
    for _ in 0..HOLD_ATTEMPTS {
        match client.open(name) {
            Ok(ours) => {
                drop(ours);
                return Ok((candidate, taken));
            }
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                taken.push(candidate);
                candidate = create().map_err(|e| cannot_hold(&e, taken.len()))?;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot hold the pipe name with a placeholder instance: {e}"),
                ))
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "cannot hold the pipe name: other clients connected to each of the first \
             {HOLD_ATTEMPTS} instances before the server's own placeholder client could"
        ),
    ))
}

/// Why no further placeholder candidate could be made after `taken`
/// instances went to other clients.
fn cannot_hold(e: &io::Error, taken: usize) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cannot hold the pipe name: {taken} instance(s) went to clients before the \
             server's placeholder, and no further instance can be made: {e}"
        ),
    )
}

fn tokio_mode(mode: PipeMode) -> TokioPipeMode {
    match mode {
        PipeMode::Byte => TokioPipeMode::Byte,
        PipeMode::Message => TokioPipeMode::Message,
    }
}

/// The process on the other end of a pipe, as `query` (one of
/// `GetNamedPipeClientProcessId` / `GetNamedPipeServerProcessId`) reports it.
fn pipe_peer(
    pipe: &impl AsRawHandle,
    query: unsafe extern "system" fn(HANDLE, *mut u32) -> windows_sys::core::BOOL,
) -> PeerInfo {
    let mut pid = 0u32;
    // SAFETY: the handle is a valid pipe handle owned by `pipe`, and `pid`
    // outlives the call.
    let ok = unsafe { query(pipe.as_raw_handle() as HANDLE, &mut pid) };
    PeerInfo {
        pid: (ok != 0).then_some(pid),
        uid: None,
        gid: None,
    }
}

fn peer_info(server: &NamedPipeServer) -> PeerInfo {
    pipe_peer(
        server,
        windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId,
    )
}

/// Connects to `endpoint`, retrying `ERROR_PIPE_BUSY` (every instance
/// taken) and `ERROR_FILE_NOT_FOUND` (no server, or one restarting) until
/// `options.timeout` runs out.
pub async fn connect(
    endpoint: &Endpoint,
    options: &ConnectOptions,
) -> Result<Connected<ClientStream>> {
    options.validate()?;
    let mut client = ClientOptions::new();
    // Identification level by default: the server may learn who the
    // client is but cannot act as it. Tokio adds SECURITY_SQOS_PRESENT
    // itself.
    let level = if options.allow_impersonation {
        SECURITY_IMPERSONATION
    } else {
        SECURITY_IDENTIFICATION
    };
    client
        .security_qos_flags(level)
        .read(true)
        .write(!options.read_only)
        .pipe_mode(tokio_mode(options.pipe_mode));
    let name = endpoint.address().as_os_str();
    let mut connected = retry_connect(endpoint, options.timeout, is_retryable, || {
        std::future::ready(client.open(name))
    })
    .await?;
    connected.server = server_info(&connected.stream);
    Ok(connected)
}

fn server_info(client: &NamedPipeClient) -> PeerInfo {
    pipe_peer(
        client,
        windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId,
    )
}

fn is_retryable(err: &io::Error) -> Option<Retry> {
    match err.raw_os_error()? {
        code if code == ERROR_PIPE_BUSY as i32 => Some(Retry::Busy),
        code if code == ERROR_FILE_NOT_FOUND as i32 => Some(Retry::Absent),
        _ => None,
    }
}

/// The security descriptor (SDDL) a listener uses when none is set:
/// `D:P(A;;GA;;;SY)(A;;GA;;;<user SID>)`, full access for SYSTEM and the
/// user this process runs as, nothing for anyone else.
///
/// Useful to hand another process a descriptor naming *this* user: for
/// example `pipesvc service install` bakes the installing user's into a
/// service that will run as SYSTEM, so that this user can still connect.
pub fn default_security_descriptor() -> io::Result<String> {
    security::default_sddl()
}

impl super::ServerIo for ServerStream {
    /// A named pipe has no half-close: EOF means the client closed its
    /// handle.
    fn peer_is_gone(&self) -> bool {
        true
    }

    /// A pipe whose client closed its handle fails a peek with
    /// `ERROR_BROKEN_PIPE` (or `ERROR_PIPE_NOT_CONNECTED` once
    /// disconnected), whatever unread data it still holds.
    fn peer_hung_up(&self) -> bool {
        use windows_sys::Win32::Foundation::{
            GetLastError, ERROR_BROKEN_PIPE, ERROR_PIPE_NOT_CONNECTED,
        };
        use windows_sys::Win32::System::Pipes::PeekNamedPipe;
        let mut available = 0u32;
        // SAFETY: the handle is open for this borrow; a peek of no bytes
        // into no buffer reads nothing and never blocks.
        let peeked = unsafe {
            PeekNamedPipe(
                self.as_raw_handle() as HANDLE,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                &mut available,
                std::ptr::null_mut(),
            )
        };
        // SAFETY: reads this thread's last error, set by the call above.
        peeked == 0
            && matches!(
                unsafe { GetLastError() },
                ERROR_BROKEN_PIPE | ERROR_PIPE_NOT_CONNECTED
            )
    }

    fn disconnect(&self) {
        disconnect(self);
    }

    fn flush_to_peer(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        flush_to_peer(self)
    }

    /// A pipe has no half-close, and closing it resets nothing: the client
    /// has everything once it has read it (`FlushFileBuffers`), then the
    /// instance is closed, which it reads as the end of the stream.
    /// Meanwhile what it still sends is read and thrown away, so that a
    /// client blocked in a write (the pipe's buffer full) gets to its reads.
    async fn close_within(self, timeout: Duration) {
        let closing = async {
            let flushed = flush_started(&self)?;
            tokio::pin!(flushed);
            tokio::select! {
                flushed = &mut flushed => flushed,
                () = drain(&self) => flushed.await,
            }
        };
        if !matches!(tokio::time::timeout(timeout, closing).await, Ok(Ok(()))) {
            disconnect(&self);
        }
    }

    /// A pipe whose client does not take a write cannot close gently (mio
    /// keeps the write pending): the client is disconnected, and reads a
    /// broken pipe.
    fn cut_within(self, _timeout: Duration) -> impl Future<Output = ()> + Send {
        disconnect(&self);
        std::future::ready(())
    }

    /// Not before the client has written: its token comes with what the
    /// server reads (`read_caller`).
    fn caller_at_accept(&self, _peer: PeerInfo, _pin_process: bool) -> Option<super::Caller> {
        None
    }

    fn read_caller(
        &self,
        peer: PeerInfo,
    ) -> impl Future<Output = io::Result<super::Caller>> + Send {
        caller::read_caller(self, peer)
    }
}

/// Reads and throws away what the client sends, until it closes its end
/// (or reading fails) or [`DRAIN_LIMIT`](super::DRAIN_LIMIT) bytes.
async fn drain(stream: &ServerStream) {
    // On the heap, and only while draining: an array here would be part
    // of every connection task's future, idle ones included (8 KiB each).
    let mut chunk = vec![0u8; 8 * 1024];
    let mut drained = 0;
    while drained < super::DRAIN_LIMIT {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Cuts the client off at once (`DisconnectNamedPipe`), discarding unread
/// data and failing its pending I/O. Needed before dropping a pipe whose
/// client stopped reading: mio does not cancel a pending write on drop (to
/// flush it), so the instance, and a `flush_to_peer` blocked on it, would
/// otherwise live as long as the client.
pub(crate) fn disconnect(stream: &ServerStream) {
    if let Err(e) = stream.disconnect() {
        tracing::debug!(error = %e, "DisconnectNamedPipe failed");
    }
}

/// Waits until the client has read everything written, so that dropping
/// the instance loses nothing (`FlushFileBuffers`, as Microsoft advises
/// before closing a pipe).
pub async fn flush_to_peer(stream: &mut ServerStream) -> io::Result<()> {
    flush_started(stream)?.await
}

/// Starts `FlushFileBuffers` on `stream`; the future of its outcome does
/// not borrow the stream, which can be read meanwhile.
fn flush_started(
    stream: &ServerStream,
) -> io::Result<impl Future<Output = io::Result<()>> + Send + 'static> {
    // The blocking call gets its own duplicate of the handle, so it stays
    // valid even if this future is dropped while the call is running.
    // SAFETY: the raw handle is open, owned by `stream`, for this borrow.
    let handle =
        unsafe { BorrowedHandle::borrow_raw(stream.as_raw_handle()) }.try_clone_to_owned()?;
    let flushing = tokio::task::spawn_blocking(move || {
        // SAFETY: `handle` is an open pipe handle owned by this closure.
        let ok = unsafe {
            windows_sys::Win32::Storage::FileSystem::FlushFileBuffers(
                handle.as_raw_handle() as HANDLE
            )
        };
        // Read the error on the thread that made the call.
        if ok == 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    });
    Ok(async move { flushing.await.map_err(io::Error::other)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn unique_name(tag: &str) -> std::ffi::OsString {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!(r"\\.\pipe\pipesvc-unit-{tag}-{}-{n}", std::process::id()).into()
    }

    /// A client retrying while the service restarts can connect to the
    /// first instance before the listener's own client does. Binding must
    /// still succeed, that client must be served, and the name held.
    #[tokio::test]
    async fn a_client_on_the_first_instance_is_served_and_the_name_still_held() {
        let name = unique_name("early");
        let options = ListenerOptions::default();
        let security = PipeSecurity::new(None).expect("default descriptor");
        let first = create_instance(&name, &options, &security, true).expect("first instance");
        let mut early = ClientOptions::new().open(&name).expect("early client");
        let (placeholder, taken) = hold_name(&name, first, || {
            create_instance(&name, &options, &security, false)
        })
        .expect("the name is held although a client took the first instance");
        assert_eq!(taken.len(), 1, "the early client's instance is handed back");
        let mut served = taken.into_iter().next().unwrap();
        served.connect().await.expect("already connected");
        early.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        served.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let probe = ClientOptions::new()
            .open(&name)
            .expect_err("no instance listens");
        assert_eq!(
            probe.raw_os_error(),
            Some(ERROR_PIPE_BUSY as i32),
            "{probe}"
        );
        drop(placeholder);
    }
}
