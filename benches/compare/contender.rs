//! The contenders: each an echo server and a way to connect to it, over the
//! platform's transport (Unix domain sockets, or Windows named pipes).

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, Name};
use pipesvc::server::{ConnectionContext, Server, ServerHandle, ServiceError};
use pipesvc::{Client, ClientOptions, Endpoint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Largest frame any contender accepts: room for the 8 MiB payloads of
/// the payload-size curve and their headers.
pub const MAX_FRAME: usize = 16 << 20;

/// Connections pipesvc's servers take at once: the curves go to 5000
/// clients and the memory rows to 10,000 (raw tokio has no limit).
pub const MAX_CONNECTIONS: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    Pipesvc,
    RawTokio,
    Interprocess,
}

pub const ALL: [Contender; 3] = [
    Contender::Pipesvc,
    Contender::RawTokio,
    Contender::Interprocess,
];

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Contender::Pipesvc => "pipesvc",
            Contender::RawTokio => "raw tokio",
            Contender::Interprocess => "interprocess",
        }
    }

    pub fn from_name(name: &str) -> Option<Contender> {
        ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A running echo server; pipesvc's is stopped through its handle, the
/// others end with the runtime.
pub struct Running(pub Option<ServerHandle>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.shutdown();
        }
    }
}

/// Starts contender `c`'s echo server at `address` (a socket path, or a
/// full pipe name).
pub async fn start_server(c: Contender, address: &str) -> Running {
    match c {
        Contender::Pipesvc => {
            let server = Server::builder(Endpoint::new(address).unwrap())
                .max_frame_len(MAX_FRAME as u32)
                .max_connections(MAX_CONNECTIONS)
                .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
                .bind()
                .unwrap();
            let handle = server.handle();
            tokio::spawn(server.serve());
            return Running(Some(handle));
        }
        Contender::RawTokio => raw::serve(address),
        Contender::Interprocess => {
            let listener = ListenerOptions::new()
                .name(interprocess_name(address))
                .create_tokio()
                .unwrap();
            tokio::spawn(async move {
                while let Ok(s) = listener.accept().await {
                    tokio::spawn(echo(s));
                }
            });
        }
    }
    Running(None)
}

/// A connection of one contender.
pub enum Conn {
    Pipesvc(Client),
    RawTokio(raw::Stream),
    Interprocess(interprocess::local_socket::tokio::Stream),
}

pub async fn connect(c: Contender, address: &str) -> Conn {
    match c {
        Contender::Pipesvc => {
            let endpoint = Endpoint::new(address).unwrap();
            // `send_first`: connect returns without waiting for the server
            // and the first request goes out with the HELLO, in one write
            // (the accept row connects and closes; the others' first
            // requests save a round trip).
            let options = ClientOptions::new()
                .max_frame_len(MAX_FRAME as u32)
                .send_first(true);
            Conn::Pipesvc(Client::connect_with(&endpoint, options).await.unwrap())
        }
        Contender::RawTokio => Conn::RawTokio(raw::connect(address).await),
        Contender::Interprocess => {
            let stream = interprocess::local_socket::tokio::Stream::connect;
            Conn::Interprocess(retry_busy(|| stream(interprocess_name(address))).await)
        }
    }
}

fn interprocess_name(address: &str) -> Name<'static> {
    address
        .to_fs_name::<GenericFilePath>()
        .unwrap()
        .into_owned()
}

/// Named pipes say "busy" while the server creates its next instance; a
/// client written by hand waits and tries again, as this does (1 ms).
async fn retry_busy<S, F>(mut open: impl FnMut() -> F) -> S
where
    F: std::future::Future<Output = std::io::Result<S>>,
{
    loop {
        match open().await {
            Ok(s) => return s,
            Err(e) if raw::is_busy(&e) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("connect: {e}"),
        }
    }
}

pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// The baseline server a user would write: echo every frame, one task
/// per client.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let mut framed = Framed::new(stream, codec());
    while let Some(Ok(frame)) = framed.next().await {
        if framed.send(frame.freeze()).await.is_err() {
            break;
        }
    }
}

/// The raw transport, as a user of Tokio alone would drive it.
#[cfg(unix)]
pub mod raw {
    use tokio::net::{UnixListener, UnixStream};

    pub type Stream = UnixStream;
    pub type ServerStream = UnixStream;

    pub fn serve(path: &str) {
        serve_with(path, super::echo::<ServerStream>);
    }

    /// Serves each client with `handle`, one task per client.
    pub fn serve_with<F, Fut>(path: &str, handle: F)
    where
        F: Fn(ServerStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(handle(s));
            }
        });
    }

    pub async fn connect(path: &str) -> Stream {
        UnixStream::connect(path).await.unwrap()
    }

    pub fn is_busy(_: &std::io::Error) -> bool {
        false
    }
}

/// The raw transport, as a user of Tokio alone would drive it: the server
/// loop of `tokio::net::windows::named_pipe`'s documentation.
#[cfg(windows)]
pub mod raw {
    use tokio::net::windows::named_pipe::{
        ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
    };
    use windows_sys::Win32::Foundation::ERROR_PIPE_BUSY;

    pub type Stream = NamedPipeClient;
    pub type ServerStream = NamedPipeServer;

    pub fn serve(name: &str) {
        serve_with(name, super::echo::<ServerStream>);
    }

    /// Serves each client with `handle`, one task per client.
    pub fn serve_with<F, Fut>(name: &str, handle: F)
    where
        F: Fn(ServerStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut server = ServerOptions::new()
            .first_pipe_instance(true)
            .create(name)
            .unwrap();
        let name = name.to_owned();
        tokio::spawn(async move {
            loop {
                if server.connect().await.is_err() {
                    return;
                }
                let connected = server;
                server = ServerOptions::new().create(&name).unwrap();
                tokio::spawn(handle(connected));
            }
        });
    }

    pub async fn connect(name: &str) -> Stream {
        super::retry_busy(|| async { ClientOptions::new().open(name) }).await
    }

    pub fn is_busy(e: &std::io::Error) -> bool {
        e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
    }
}

/// A connection that has carried one request and its answer.
pub async fn used_once(c: Contender, address: &str) -> Conn {
    used_once_with(c, address, &bytes::Bytes::from_static(b"x")).await
}

/// [`used_once`] with a request of `payload`.
pub async fn used_once_with(c: Contender, address: &str, payload: &bytes::Bytes) -> Conn {
    let mut conn = connect(c, address).await;
    match &mut conn {
        Conn::Pipesvc(client) => {
            client.request(payload.clone()).await.unwrap();
        }
        Conn::RawTokio(s) => round_trip(s, payload).await,
        Conn::Interprocess(s) => round_trip(s, payload).await,
    }
    conn
}

async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, payload: &bytes::Bytes) {
    let mut framed = Framed::new(stream, codec());
    framed.send(payload.clone()).await.unwrap();
    framed.next().await.unwrap().unwrap();
}
