//! Helpers for testing services built on pipesvc (cargo feature
//! `testing`, off by default; enable it in your `[dev-dependencies]`):
//!
//! - [`unique_endpoint`]: an endpoint no other test, in this process or
//!   another, uses, so that tests run in parallel.
//! - [`TestServer`]: a server running in a task of the current runtime,
//!   shut down when dropped; it reaches its clients over its endpoint or
//!   the in-memory transport ([`TestServer::connect_in_memory`]).
//! - [`ServiceProcess`]: a service binary started as a child process,
//!   ready once it answers a PING on its endpoint, stopped gracefully
//!   (SIGTERM on Unix, as a service manager stops it) when dropped, so
//!   that it leaves no socket file behind.
//! - [`output_within`]: a command (a service binary's subcommand) run to
//!   its end, or stopped ([`stop_process`]) if it hangs.
//! - [`stop_process`]: stops a child process the way a service manager
//!   does, for tests that start services themselves.
//! - [`hang_guard`]: fails a test that hangs instead of hanging the run.
//! - [`Faulty`]: a stream wrapper that injects faults: cut the connection
//!   after a number of bytes (mid-frame), delay reads or writes, stall them
//!   until released.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pipesvc::Result<()> {
//! use bytes::Bytes;
//! use pipesvc::server::{ConnectionContext, Server, ServiceError};
//! use pipesvc::testing::{unique_endpoint, TestServer};
//!
//! let server = Server::builder(unique_endpoint("echo"))
//!     .handler(|request: Bytes, _: ConnectionContext| async move {
//!         Ok::<_, ServiceError>(request)
//!     })
//!     .build()?;
//! let server = TestServer::start(server);
//! let client = server.connect_in_memory().await?;
//! assert_eq!(&client.request("hi").await?[..], b"hi");
//! server.stop().await
//! # }
//! ```

use std::future::Future;
use std::io::{self, Read};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use crate::client::{Client, ClientOptions};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::server::{Handler, Server, ServerHandle};
use crate::transport::memory::{self, MemoryStream};
use crate::transport::PeerInfo;

/// An endpoint no other test uses: its name holds the process id, `test`
/// and a counter, so tests in one process and in several never meet.
/// `test` must be a valid endpoint name part (letters, digits, `-`, `_`).
///
/// On Unix the endpoint's private directory exists (mode 0700) when this
/// returns, as a server binding it would make it, so its full
/// [`address`](Endpoint::address) can be handed to another process
/// (`pipesvc serve --name PATH`) even before any server of this user ran.
///
/// # Panics
/// If `test` makes the name invalid, or the private directory cannot be
/// made or is not private.
pub fn unique_endpoint(test: &str) -> Endpoint {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("pipesvc-t{}-{test}-{n}", std::process::id());
    let endpoint = Endpoint::new(&name).expect("a valid test endpoint name");
    #[cfg(unix)]
    if let Some(dir) = endpoint.private_dir() {
        crate::transport::unix::ensure_private_dir(dir)
            .unwrap_or_else(|e| panic!("the test endpoint's directory: {e}"));
    }
    endpoint
}

/// How long [`hang_guard`] lets a future run: far longer than anything a
/// test waits for on a loaded machine, so it only ever catches hangs.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Runs `future` to its end, or panics (failing the test) if it takes
/// longer than [`HANG_GUARD`]: a test that hangs fails instead of hanging
/// CI. It is a guard, never a way to decide what a correct result is.
///
/// # Panics
/// If `future` runs longer than [`HANG_GUARD`], or outside a Tokio
/// runtime with a timer.
pub async fn hang_guard<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .expect("test hung: the hang guard expired")
}

/// A server running in a task of the current Tokio runtime. Dropping it
/// starts a graceful shutdown (which finishes in the background); call
/// [`TestServer::stop`] to wait for it and see `serve`'s outcome.
#[derive(Debug)]
pub struct TestServer {
    endpoint: Endpoint,
    handle: ServerHandle,
    task: Option<JoinHandle<Result<()>>>,
}

impl TestServer {
    /// Runs `server` (bound with `bind`, or made with `build` to serve
    /// in-memory streams only).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start<H: Handler>(server: Server<H>) -> TestServer {
        TestServer {
            endpoint: server.endpoint().clone(),
            handle: server.handle(),
            task: Some(tokio::spawn(server.serve())),
        }
    }

    /// The endpoint the server was built for (bound only if it was made
    /// with `bind`).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Controls the server: broadcast, status, shutdown.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// A stream the server serves, as a client's end of an in-memory
    /// connection whose peer is this process.
    pub fn memory_stream(&self) -> Result<MemoryStream> {
        let (client_end, server_end) = memory::pair();
        self.handle
            .serve_connection(server_end, PeerInfo::current())?;
        Ok(client_end)
    }

    /// A client connected to the server in memory, with default options.
    pub async fn connect_in_memory(&self) -> Result<Client> {
        self.connect_in_memory_with(ClientOptions::default()).await
    }

    /// A client connected to the server in memory, with `options`; with
    /// `reconnect` it reconnects to this server in memory.
    pub async fn connect_in_memory_with(&self, options: ClientOptions) -> Result<Client> {
        let handle = self.handle.clone();
        let connector = move || {
            let (client_end, server_end) = memory::pair();
            let served = handle
                .serve_connection(server_end, PeerInfo::current())
                .map(|()| client_end)
                .map_err(io::Error::other);
            std::future::ready(served)
        };
        Client::from_connector(connector, options).await
    }

    /// Shuts the server down gracefully and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<()> {
        self.handle.shutdown();
        let task = self.task.take().expect("the task is taken only here");
        task.await.map_err(io::Error::other)?
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A service binary running as a child process, stopped gracefully (and
/// reaped) when dropped or with [`ServiceProcess::stop`]: see
/// [`stop_process`]. A service that had to be killed has its dead socket
/// file removed, so that a test run leaves none behind. Its stderr is
/// collected, for the error if it fails to start and for
/// [`ServiceProcess::stderr`].
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    endpoint: Endpoint,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Closed once all of stderr is read (the process and whatever it
    /// started have closed it).
    stderr_read: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// How often [`ServiceProcess::start`] asks whether the service answers.
const READY_POLL: Duration = Duration::from_millis(20);

impl ServiceProcess {
    /// Starts `command` (stdin closed, stderr captured) and waits until a
    /// PING on `endpoint` is answered, for up to `timeout`. Fails with
    /// [`Error::Io`] if the process cannot start, exits first, or does not
    /// answer in time; the message holds what it wrote to stderr.
    pub async fn start(
        mut command: Command,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<ServiceProcess> {
        command.stdin(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (read, stderr_read) = tokio::sync::oneshot::channel::<()>();
        if let Some(mut pipe) = child.stderr.take() {
            let sink = stderr.clone();
            // A thread of its own: a child blocked on a full stderr pipe
            // would never become ready.
            std::thread::spawn(move || {
                let mut chunk = [0; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    lock(&sink).extend_from_slice(&chunk[..n]);
                }
                drop(read);
            });
        }
        let mut service = ServiceProcess {
            child,
            endpoint: endpoint.clone(),
            stderr,
            stderr_read: Some(stderr_read),
        };
        service.wait_ready(timeout).await?;
        Ok(service)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // What it wrote last may still be on its way from the pipe.
                if let Some(read) = self.stderr_read.take() {
                    let _ = tokio::time::timeout(STOP_TIMEOUT, read).await;
                }
                return Err(self.failed(&format!("exited with {status} before it was ready")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.failed(&format!("did not answer a PING within {timeout:?}")));
            }
            if self.answers(left.min(Duration::from_secs(1))).await {
                return Ok(());
            }
            tokio::time::sleep(READY_POLL.min(left)).await;
        }
    }

    /// Whether a client connects and gets a PONG within `limit`.
    async fn answers(&self, limit: Duration) -> bool {
        let mut options = ClientOptions::default();
        options.connect.timeout = limit;
        options.request_timeout = Some(limit);
        let attempt = async {
            let client = Client::connect_with(&self.endpoint, options).await?;
            client.ping().await?;
            client.close().await;
            Ok::<_, Error>(())
        };
        matches!(tokio::time::timeout(limit, attempt).await, Ok(Ok(())))
    }

    fn failed(&self, what: &str) -> Error {
        let stderr = self.stderr();
        Error::Io(io::Error::other(format!(
            "the service for {} {what}; its stderr: {}",
            self.endpoint,
            if stderr.trim().is_empty() {
                "(empty)"
            } else {
                stderr.trim_end()
            }
        )))
    }

    /// The endpoint the service answers on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The child process, to signal or wait for it.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// What the service wrote to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&lock(&self.stderr)).into_owned()
    }

    /// Stops the service as a service manager does ([`stop_process`]
    /// within [`STOP_TIMEOUT`]) and returns how it exited: a test can check
    /// that it stopped cleanly (exit status 0).
    pub fn stop(mut self) -> io::Result<ExitStatus> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> io::Result<ExitStatus> {
        let stopped = stop_process(&mut self.child, STOP_TIMEOUT)?;
        if stopped.killed {
            self.remove_dead_socket();
        }
        Ok(stopped.status)
    }

    /// A service killed on the spot cannot remove its socket file: the
    /// endpoint was its own, so the file is removed here.
    fn remove_dead_socket(&self) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let path = self.endpoint.address();
            let is_socket =
                std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
            if is_socket {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // Already stopped (by `stop`) or not: nothing more to do either way.
        let _ = self.stop_now();
    }
}

/// How long [`ServiceProcess`] gives a service to stop gracefully before
/// it kills it: more than a service's default shutdown timeout (5 s) for
/// the requests it still runs.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`stop_process`] looks whether the process has exited.
#[cfg(unix)]
const STOP_POLL: Duration = Duration::from_millis(5);

/// How a process stopped by [`stop_process`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether it had to be killed: it did not exit within the timeout,
    /// or (on Windows) there was no gentler way.
    pub killed: bool,
}

/// Stops `child` the way a service manager does and reaps it: on Unix
/// SIGTERM, then up to `timeout` for it to exit (a service built on
/// [`ops::serve`](crate::ops::serve) says GOODBYE to its clients and
/// removes its socket file), and SIGKILL past that. On Windows it is
/// terminated at once (a pipe leaves nothing behind, and a console-less
/// child has no gentler stop). A process that has exited already is only
/// reaped.
pub fn stop_process(child: &mut Child, timeout: Duration) -> io::Result<Stopped> {
    if let Some(status) = child.try_wait()? {
        return Ok(Stopped {
            status,
            killed: false,
        });
    }
    #[cfg(unix)]
    if terminate(child)? {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Stopped {
                    status,
                    killed: false,
                });
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            // std has no wait with a timeout: look again shortly.
            std::thread::sleep(STOP_POLL);
        }
    }
    #[cfg(not(unix))]
    let _ = timeout;
    // It may have exited meanwhile: then there is nothing to kill.
    let _ = child.kill();
    Ok(Stopped {
        status: child.wait()?,
        killed: true,
    })
}

/// Sends SIGTERM to `child`; `false` if it is already gone.
#[cfg(unix)]
fn terminate(child: &Child) -> io::Result<bool> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    // The child is not reaped yet (only `wait` does that), so its pid
    // cannot belong to another process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        _ => Err(err),
    }
}

/// Runs `command` to its end (stdin closed, stdout and stderr collected)
/// and returns what it printed, as [`Command::output`] does, but stops it
/// ([`stop_process`]: gracefully first) if it runs longer than `timeout`:
/// a command that should exit but does not (a `serve` wrongly allowed to
/// start, a client that never gives up) fails the test instead of hanging
/// it. Fails with `TimedOut` then (the message holds what it printed), or
/// with the error of starting or waiting for it.
pub fn output_within(mut command: Command, timeout: Duration) -> io::Result<Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    // Each pipe is read on a thread of its own (a child blocked on a full
    // pipe would never exit); each reaches its end when the child exits.
    let stdout = read_to_end_apart(child.stdout.take());
    let stderr = read_to_end_apart(child.stderr.take());
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let out = stdout.recv_timeout(left()).ok();
    let err = out.as_ref().and_then(|_| stderr.recv_timeout(left()).ok());
    if let (Some(stdout), Some(stderr)) = (out.clone(), err) {
        return Ok(Output {
            status: child.wait()?,
            stdout,
            stderr,
        });
    }
    let stopped = stop_process(&mut child, STOP_TIMEOUT)?;
    // Its pipes close now that it is gone (unless a process it started
    // keeps them open: what it printed is then not waited for long).
    let printed = |bytes: Option<Vec<u8>>, pipe: &mpsc::Receiver<Vec<u8>>| {
        let bytes = bytes.or_else(|| pipe.recv_timeout(STOP_TIMEOUT).ok());
        String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
    };
    let (out, err) = (printed(out, &stdout), printed(None, &stderr));
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{command:?} was still running after {timeout:?} and was stopped ({}); \
             its stdout: {out:?}; its stderr: {err:?}",
            stopped.status
        ),
    ))
}

/// All that `pipe` yields, read on a thread; it arrives on the receiver.
fn read_to_end_apart(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = send.send(bytes);
    });
    receive
}

/// A stream that misbehaves on request, for testing how a client or a
/// server copes: wrap either end of a connection (usually an in-memory
/// [`pair`](memory::pair)) and steer it through its [`Faults`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use pipesvc::testing::Faulty;
/// use pipesvc::transport::memory;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let (a, mut b) = memory::pair();
/// let (mut a, faults) = Faulty::new(a);
/// faults.cut_after_writing(3);
/// a.write_all(b"hello").await.expect_err("cut after 3 bytes");
/// let mut got = Vec::new();
/// b.read_to_end(&mut got).await.expect("the end of the stream");
/// assert_eq!(got, b"hel");
/// # }
/// ```
#[derive(Debug)]
pub struct Faulty<S> {
    /// `None` once cut: dropping the stream shows the peer the cut.
    inner: Option<S>,
    faults: Faults,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

/// Steers a [`Faulty`] stream; clones steer the same stream. Every setting
/// applies from the next read or write on.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Bytes written through so far.
    written: u64,
    /// Writes that took bytes so far.
    writes: u64,
    /// The stream is cut once this many bytes are written in all.
    cut_at: Option<u64>,
    cut: bool,
    read_delay: Option<Duration>,
    write_delay: Option<Duration>,
    reads_stalled: bool,
    writes_stalled: bool,
    /// Reads and writes waiting for a release (or a cut).
    waiting: Vec<Waker>,
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.state)
    }

    /// Cuts the connection once `bytes` more have been written through
    /// (in the middle of a frame, if one is being written): the stream
    /// takes exactly that many, the write that crosses the line fails
    /// with `ConnectionReset`, and the stream is dropped, so the peer
    /// sees the end of the stream after a partial frame.
    pub fn cut_after_writing(&self, bytes: u64) {
        let mut state = self.state();
        state.cut_at = Some(state.written + bytes);
        if bytes == 0 {
            state.cut = true;
            wake_all(&mut state);
        }
    }

    /// Cuts the connection now: reads and writes fail with
    /// `ConnectionReset`, and the peer sees the end of the stream.
    pub fn cut(&self) {
        let mut state = self.state();
        state.cut = true;
        wake_all(&mut state);
    }

    /// Each read waits `delay` before it reads (`None`: no delay).
    pub fn delay_reads(&self, delay: Option<Duration>) {
        self.state().read_delay = delay;
    }

    /// Each write waits `delay` before it writes (`None`: no delay).
    pub fn delay_writes(&self, delay: Option<Duration>) {
        self.state().write_delay = delay;
    }

    /// Reads wait, taking nothing, until [`Faults::release`].
    pub fn stall_reads(&self) {
        self.state().reads_stalled = true;
    }

    /// Writes wait, taking nothing, until [`Faults::release`]: the peer
    /// looks like one that stopped reading.
    pub fn stall_writes(&self) {
        self.state().writes_stalled = true;
    }

    /// Ends the stalls; waiting reads and writes go on.
    pub fn release(&self) {
        let mut state = self.state();
        state.reads_stalled = false;
        state.writes_stalled = false;
        wake_all(&mut state);
    }

    /// Bytes written through the stream so far.
    pub fn written(&self) -> u64 {
        self.state().written
    }

    /// Writes that took bytes so far (each is a system call on a real
    /// stream): how many writes a server's answers took, to check that it
    /// batches them.
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// Whether the stream has been cut.
    pub fn is_cut(&self) -> bool {
        self.state().cut
    }
}

impl Faults {
    /// A read or write waiting on the stream is woken by a cut too.
    fn wake_on_cut<T>(&self, cx: &mut Context<'_>, poll: Poll<T>) -> Poll<T> {
        if poll.is_pending() {
            let mut state = self.state();
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
        }
        poll
    }
}

fn wake_all(state: &mut FaultState) {
    for waker in state.waiting.drain(..) {
        waker.wake();
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the connection was cut (fault injected by pipesvc::testing)",
    )
}

/// Which way a read or write goes, for the checks they share.
#[derive(Clone, Copy)]
enum Way {
    Read,
    Write,
}

impl<S> Faulty<S> {
    /// Wraps `inner`; it behaves normally until told otherwise through the
    /// returned [`Faults`].
    pub fn new(inner: S) -> (Faulty<S>, Faults) {
        let faults = Faults::default();
        let stream = Faulty {
            inner: Some(inner),
            faults: faults.clone(),
            read_timer: None,
            write_timer: None,
        };
        (stream, faults)
    }

    /// Ready once a read or write may go ahead: not cut (else the error),
    /// not stalled, and its delay (if any) passed.
    fn poll_admit(&mut self, cx: &mut Context<'_>, way: Way) -> Poll<io::Result<()>> {
        let delay = {
            let mut state = self.faults.state();
            if state.cut {
                drop(state);
                self.inner = None;
                return Poll::Ready(Err(reset()));
            }
            let (stalled, delay) = match way {
                Way::Read => (state.reads_stalled, state.read_delay),
                Way::Write => (state.writes_stalled, state.write_delay),
            };
            if stalled {
                if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                    state.waiting.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
            delay
        };
        let Some(delay) = delay else {
            return Poll::Ready(Ok(()));
        };
        let timer = match way {
            Way::Read => &mut self.read_timer,
            Way::Write => &mut self.write_timer,
        };
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }

    fn inner(&mut self) -> io::Result<Pin<&mut S>>
    where
        S: Unpin,
    {
        self.inner.as_mut().map(Pin::new).ok_or_else(reset)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Faulty<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_admit(cx, Way::Read))?;
        let read = this.inner()?.poll_read(cx, buf);
        let read = ready!(this.faults.wake_on_cut(cx, read));
        this.read_timer = None;
        Poll::Ready(read)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Faulty<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_admit(cx, Way::Write))?;
        let room = {
            let state = this.faults.state();
            state.cut_at.map(|at| at.saturating_sub(state.written))
        };
        if room == Some(0) {
            this.faults.cut();
            this.inner = None;
            return Poll::Ready(Err(reset()));
        }
        let allowed = room.map_or(buf.len(), |room| buf.len().min(room as usize));
        let written = this.inner()?.poll_write(cx, &buf[..allowed]);
        let written = ready!(this.faults.wake_on_cut(cx, written));
        this.write_timer = None;
        if let Ok(n @ 1..) = written {
            let mut state = this.faults.state();
            state.written += n as u64;
            state.writes += 1;
        }
        Poll::Ready(written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_shutdown(cx)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
