//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

#[cfg(windows)]
#[allow(dead_code)] // Not every test binary asks.
pub mod token;
mod wine;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pipesvc::protocol::{
    ClientHello, ErrorCode, ErrorPayload, Frame, FrameCodec, HelloReply, Kind, ServerHello,
};
use pipesvc::transport::{self, ConnectOptions};
use pipesvc::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

/// The hang guard and unique endpoints come from the library's own test
/// helpers, as a product's tests would use them.
#[allow(unused_imports)] // each test binary uses a different subset
pub use pipesvc::testing::{hang_guard as guard, unique_endpoint, TestServer, HANG_GUARD};

/// An echo server (default settings) on a fresh endpoint for `test`.
pub fn echo(test: &str) -> (Endpoint, TestServer) {
    let endpoint = unique_endpoint(test);
    let server = echo_builder(&endpoint).bind().expect("bind an echo server");
    (endpoint, TestServer::start(server))
}

/// An echo server (default settings) that serves in-memory streams only
/// ([`TestServer::memory_stream`], [`TestServer::connect_in_memory`]).
pub fn echo_in_memory(test: &str) -> TestServer {
    let server = echo_builder(&unique_endpoint(test))
        .build()
        .expect("build an echo server");
    TestServer::start(server)
}

fn echo_builder(
    endpoint: &Endpoint,
) -> pipesvc::server::ServerBuilder<impl pipesvc::server::Handler> {
    pipesvc::Server::builder(endpoint.clone()).handler(
        |r: Bytes, _: pipesvc::server::ConnectionContext| async move {
            Ok::<_, pipesvc::server::ServiceError>(r)
        },
    )
}

/// A client that speaks the protocol frame by frame, as a client written in
/// another language would from PROTOCOL.md alone.
pub struct RawClient {
    pub reader: FramedRead<ReadHalf<RawStream>, FrameCodec>,
    pub writer: FramedWrite<WriteHalf<RawStream>, FrameCodec>,
}

/// Any stream a [`RawClient`] speaks over: a pipe, a socket, memory.
pub trait RawIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawIo for T {}

/// The stream under a [`RawClient`].
pub type RawStream = Box<dyn RawIo>;

impl RawClient {
    /// Connects without any handshake.
    pub async fn connect(endpoint: &Endpoint) -> RawClient {
        let stream = transport::connect(endpoint, &ConnectOptions::default())
            .await
            .expect("connect")
            .stream;
        RawClient::over(stream)
    }

    /// Speaks over `stream` (already connected), without any handshake.
    pub fn over(stream: impl RawIo) -> RawClient {
        let (read, write) = tokio::io::split(Box::new(stream) as RawStream);
        // Generous limits: the tests decide what is sent and expected.
        RawClient {
            reader: FramedRead::new(read, FrameCodec::new(u32::MAX)),
            writer: FramedWrite::new(write, FrameCodec::new(u32::MAX)),
        }
    }

    /// Connects and completes the handshake; returns the server's HELLO.
    pub async fn handshake(endpoint: &Endpoint) -> (RawClient, ServerHello) {
        RawClient::connect(endpoint).await.say_hello().await
    }

    /// Connects and completes a protocol 2 handshake.
    pub async fn connect_v2(endpoint: &Endpoint) -> RawClient {
        let stream = transport::connect(endpoint, &ConnectOptions::default())
            .await
            .expect("connect")
            .stream;
        RawClient::handshake_v2_over(stream).await.0
    }

    /// Completes the handshake over `stream`; returns the server's HELLO.
    pub async fn handshake_over(stream: impl RawIo) -> (RawClient, ServerHello) {
        RawClient::over(stream).say_hello().await
    }

    /// Connects and completes a protocol 2 handshake; returns the server's
    /// HELLO and its HELLO reply.
    pub async fn handshake_v2_over(stream: impl RawIo) -> (RawClient, ServerHello, HelloReply) {
        let (mut client, hello) = RawClient::over(stream).say_hello_version(2).await;
        let reply = client.recv().await.expect("the HELLO reply");
        assert_eq!((reply.kind, reply.id), (Kind::Hello, 0), "{reply:?}");
        let reply = HelloReply::decode(&reply.payload).expect("a valid HELLO reply");
        (client, hello, reply)
    }

    /// A version 1 client's handshake: a client written from the version
    /// 1 text (protocol 2 tests use [`RawClient::handshake_v2_over`]).
    async fn say_hello(self) -> (RawClient, ServerHello) {
        self.say_hello_version(1).await
    }

    /// Reads the server's HELLO and answers with a HELLO of `version`.
    pub async fn say_hello_version(self, version: u16) -> (RawClient, ServerHello) {
        let mut client = self;
        let hello = client.recv().await.expect("server HELLO");
        assert_eq!(hello.kind, Kind::Hello);
        let hello = ServerHello::decode(&hello.payload).expect("valid server HELLO");
        let ours = ClientHello::with_version(version).encode();
        client.send(Frame::new(Kind::Hello, 0, ours)).await;
        (client, hello)
    }

    pub async fn send(&mut self, frame: Frame) {
        self.try_send(frame).await.expect("send frame");
    }

    /// Sends a frame; an error means the server has closed the connection.
    pub async fn try_send(&mut self, frame: Frame) -> Result<(), pipesvc::protocol::CodecError> {
        self.writer.send(frame).await
    }

    /// Writes bytes as they are, framed or not.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.writer.get_mut();
        stream.write_all(bytes).await.expect("write raw bytes");
        stream.flush().await.expect("flush");
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        match self.reader.next().await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => panic!("bad frame from server: {e}"),
            None => None,
        }
    }

    /// The next frame that is not a NOTIFY.
    pub async fn recv_skipping_notify(&mut self) -> Option<Frame> {
        loop {
            let frame = self.recv().await?;
            if frame.kind != Kind::Notify {
                return Some(frame);
            }
        }
    }

    /// Expects an ERROR with `id` and `code`, then (for id 0) the close.
    pub async fn expect_error(&mut self, id: u32, code: ErrorCode) -> String {
        let frame = self.recv_skipping_notify().await.expect("an ERROR frame");
        assert_eq!(frame.kind, Kind::Error, "expected ERROR, got {frame:?}");
        assert_eq!(frame.id, id);
        let error = ErrorPayload::decode(&frame.payload).expect("ERROR payload");
        assert_eq!(error.code, code, "message: {}", error.message);
        if id == 0 {
            assert_eq!(
                self.recv_skipping_notify().await,
                None,
                "connection closes after ERROR"
            );
        }
        error.message
    }
}

/// Sends each payload as a request from a task of its own, so that they
/// are all in flight at once.
pub fn spawn_requests<I>(
    client: &pipesvc::Client,
    payloads: I,
) -> Vec<tokio::task::JoinHandle<pipesvc::Result<Bytes>>>
where
    I: IntoIterator,
    I::Item: Into<Bytes>,
{
    payloads
        .into_iter()
        .map(|payload| {
            let (client, payload) = (client.clone(), payload.into());
            tokio::spawn(async move { client.request(payload).await })
        })
        .collect()
}

/// A payload unique to (`client`, `index`) of exactly `len` bytes.
pub fn payload(client: u32, index: u32, len: usize) -> Bytes {
    let fill = (client.wrapping_mul(31).wrapping_add(index) % 251) as u8;
    let mut bytes = vec![fill; len];
    let tag: Vec<u8> = [client.to_le_bytes(), index.to_le_bytes()].concat();
    let n = tag.len().min(len);
    bytes[..n].copy_from_slice(&tag[..n]);
    Bytes::from(bytes)
}

// Not every test binary asks.
#[allow(unused_imports)]
pub use wine::wine_version;

/// Raises this process's soft limit of open descriptors to at least
/// `want` (up to the hard limit), for tests that hold many connections.
pub fn raise_nofile(want: u64) {
    #[cfg(unix)]
    // SAFETY: plain system calls on a valid struct.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if (limit.rlim_cur as u64) < want {
            limit.rlim_cur = (want as libc::rlim_t).min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    #[cfg(windows)]
    let _ = want;
}

/// Runs `work` on a thread of its own with a current-thread runtime (a
/// client apart from the server it talks to, or from the thread whose
/// memory a test counts).
pub fn on_thread<T: Send + 'static, F: std::future::Future<Output = T>>(
    work: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
}

/// Reports that `test` did not check what it is for, because of `gap` (what
/// is missing on this platform), as exactly one stderr line:
/// `pipesvc-skip: <test>: <gap>`. scripts/test-windows.sh counts these.
pub fn skip(test: &str, gap: &str) {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    eprintln!("pipesvc-skip: {}: {}", one_line(test), one_line(gap));
}

/// An error's message followed by its chain of causes (`source()`), as a
/// user sees it printed by the CLI or anyhow: `Error::Bind` and
/// `Error::Connect` keep the OS error as their source.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Asserts that a client connected to `server` (a raw pipe instance)
/// closed without writing a byte. A pipe whose client is gone may end in
/// a broken pipe rather than a clean end of stream.
#[cfg(windows)]
pub async fn assert_client_sent_nothing(server: &mut transport::ServerStream) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    match guard(server.read_to_end(&mut received)).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("reading what the client sent: {e}"),
    }
    assert!(received.is_empty(), "the client sent {received:?}");
}

/// Copies the executable `from` to `to`, mode 0755, in a `cp` process, so
/// that this process never holds `to` open for writing. A copy written
/// here (`std::fs::copy`) is inherited by every process another test
/// thread forks while it is open, and exec of the copy then fails with
/// ETXTBSY ("Text file busy") until that child execs, which on a loaded
/// machine is longer than any retry.
#[cfg(unix)]
pub fn copy_executable(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("--")
        .arg(from)
        .arg(to)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("run cp");
    assert!(status.success(), "cp {from:?} {to:?}: {status}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .expect("make the copy executable");
}

/// Typed calls by hand: `echo` returns its params, in JSON only (a server
/// that does not take MessagePack, the client's default encoding).
pub struct JsonEcho;

impl pipesvc::server::Calls for JsonEcho {
    fn encodings(&self) -> &[pipesvc::protocol::Encoding] {
        &[pipesvc::protocol::Encoding::Json]
    }

    fn description(&self) -> Bytes {
        Bytes::from_static(br#"{"service":"test","version":"1","protocol":2,"encodings":["json"],"methods":[{"name":"echo"}]}"#)
    }

    fn call(
        &self,
        method: &str,
        _encoding: pipesvc::protocol::Encoding,
        params: Bytes,
        _ctx: pipesvc::server::ConnectionContext,
    ) -> futures_util::future::BoxFuture<'static, Result<Bytes, pipesvc::server::ServiceError>>
    {
        let answer = match method {
            "echo" => Ok(params),
            other => Err(pipesvc::server::ServiceError::unknown_method(other)),
        };
        Box::pin(async move { answer })
    }
}
