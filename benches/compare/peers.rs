//! The RPC frameworks a user would pick instead of pipesvc, each with the
//! same `echo` of bytes and (where it has them) a server stream, over a
//! Unix socket:
//!
//! - **tonic** (gRPC over HTTP/2): prost messages derived by hand and a
//!   hand-written service, as `tonic-build` would generate them (no
//!   protoc, no build script); the generic `tonic::client::Grpc` client;
//! - **tarpc**: a `#[tarpc::service]` over its serde transport (bincode,
//!   length-delimited frames). tarpc answers each request once: it has no
//!   server streams.
//!
//! Bytes travel as bytes in each: protobuf `bytes`, `serde_bytes` in
//! bincode (and in pipesvc's MessagePack, `typed::Blob`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::contender::MAX_FRAME;
use crate::measure::{histogram, run_sample, spawn_callers, Measured, Sample};
use crate::Workload;

/// An RPC contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Tonic,
    Tarpc,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Tonic => "tonic",
            Peer::Tarpc => "tarpc",
        }
    }
}

/// A connection of one peer, cheap to clone for each call in flight.
#[derive(Clone)]
pub enum PeerClient {
    Tonic(tonic_peer::Client),
    Tarpc(tarpc_peer::EchoClient),
}

/// Starts `peer`'s server at `address` (a socket path); it ends with the
/// runtime.
pub async fn start_server(peer: Peer, address: &str) {
    match peer {
        Peer::Tonic => tonic_peer::serve(address),
        Peer::Tarpc => tarpc_peer::serve(address).await,
    }
}

pub async fn connect(peer: Peer, address: &str) -> PeerClient {
    match peer {
        Peer::Tonic => PeerClient::Tonic(tonic_peer::connect(address).await),
        Peer::Tarpc => PeerClient::Tarpc(tarpc_peer::connect(address).await),
    }
}

impl PeerClient {
    /// One echo call of `payload`; panics if it fails (a benchmark has no
    /// failures to report).
    pub async fn echo(&mut self, payload: &Bytes) {
        match self {
            PeerClient::Tonic(c) => tonic_peer::echo(c, payload).await,
            PeerClient::Tarpc(c) => tarpc_peer::echo(c, payload).await,
        }
    }
}

/// Runs `load` against `peer`'s server at `address` for `secs`: `clients`
/// connections, `inflight` callers on each.
pub async fn load(peer: Peer, w: &Workload, address: &str, secs: f64) -> Measured {
    load_sample(peer, w, address, secs).await.measured(w.size)
}

/// [`load`], as what it recorded.
pub async fn load_sample(peer: Peer, load: &Workload, address: &str, secs: f64) -> Sample {
    start_server(peer, address).await;
    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from(vec![0x5Au8; load.size]);
    // Every client connects before any calls (as `measure::load`).
    let mut clients = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        clients.push(connect(peer, address).await);
    }
    let mut tasks = Vec::new();
    for client in clients {
        spawn_callers(load, &mut tasks, || {
            calls(client.clone(), payload.clone(), stop.clone())
        });
    }
    run_sample(secs, &stop, tasks).await
}

async fn calls(mut client: PeerClient, payload: Bytes, stop: Arc<AtomicBool>) -> Histogram<u64> {
    let mut h = histogram();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        client.echo(&payload).await;
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    h
}

/// tonic's server streams: items per second with `streams` streams at
/// once, each of `crate::stream::ITEMS` items of `size` bytes, for `secs`.
pub async fn tonic_items_per_sec(address: &str, streams: usize, size: usize, secs: f64) -> f64 {
    tonic_peer::serve(address);
    let stop = Arc::new(AtomicBool::new(false));
    let items = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut client = tonic_peer::connect(address).await;
        let (stop, items) = (stop.clone(), items.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = tonic_peer::stream(&mut client, crate::stream::ITEMS, size).await;
                items.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    crate::stream::per_sec(secs, &stop, tasks, &items).await
}

/// gRPC with tonic, without code generation.
pub mod tonic_peer {
    use std::convert::Infallible;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use hyper_util::rt::TokioIo;
    use tokio::net::{UnixListener, UnixStream};
    use tonic::codegen::tokio_stream::wrappers::UnixListenerStream;
    use tonic::codegen::{http, BoxFuture, BoxStream, Context, Poll, Service, StdError};
    use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
    use tonic::transport::{Channel, Endpoint, Server, Uri};
    use tonic_prost::ProstCodec;

    use super::MAX_FRAME;

    /// `message Blob { bytes data = 1; }`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Blob {
        #[prost(bytes = "bytes", tag = "1")]
        pub data: Bytes,
    }

    /// `message Ask { uint32 items = 1; uint32 size = 2; }`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Ask {
        #[prost(uint32, tag = "1")]
        pub items: u32,
        #[prost(uint32, tag = "2")]
        pub size: u32,
    }

    const ECHO: &str = "/bench.Echo/Echo";
    const STREAM: &str = "/bench.Echo/Stream";

    /// `service Echo { rpc Echo(Blob) returns (Blob);
    /// rpc Stream(Ask) returns (stream Blob); }`, as tonic-build writes it.
    #[derive(Clone)]
    pub struct EchoServer;

    impl NamedService for EchoServer {
        const NAME: &'static str = "bench.Echo";
    }

    struct EchoMethod;

    impl UnaryService<Blob> for EchoMethod {
        type Response = Blob;
        type Future = BoxFuture<tonic::Response<Blob>, tonic::Status>;
        fn call(&mut self, request: tonic::Request<Blob>) -> Self::Future {
            Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
        }
    }

    struct StreamMethod;

    impl ServerStreamingService<Ask> for StreamMethod {
        type Response = Blob;
        type ResponseStream = BoxStream<Blob>;
        type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;
        fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
            let ask = request.into_inner();
            let item = Blob {
                data: Bytes::from(vec![0x5Au8; ask.size as usize]),
            };
            let items = futures_util::stream::iter((0..ask.items).map(move |_| Ok(item.clone())));
            Box::pin(async move { Ok(tonic::Response::new(items.boxed())) })
        }
    }

    fn grpc() -> Grpc<ProstCodec<Blob, Blob>> {
        Grpc::new(ProstCodec::default())
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME)
    }

    impl<B> Service<http::Request<B>> for EchoServer
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            match request.uri().path() {
                ECHO => Box::pin(async move { Ok(grpc().unary(EchoMethod, request).await) }),
                STREAM => Box::pin(async move {
                    let mut grpc = Grpc::new(ProstCodec::<Blob, Ask>::default())
                        .max_encoding_message_size(MAX_FRAME);
                    Ok(grpc.server_streaming(StreamMethod, request).await)
                }),
                _ => Box::pin(async move {
                    Ok(tonic::Status::unimplemented("no such method").into_http())
                }),
            }
        }
    }

    /// Serves [`EchoServer`] at `path` in the background.
    pub fn serve(path: &str) {
        let incoming = UnixListenerStream::new(UnixListener::bind(path).unwrap());
        tokio::spawn(Server::builder().serve_with_incoming(EchoServer, incoming));
    }

    /// A client: one HTTP/2 connection (a `Channel`); each clone shares it.
    pub type Client = tonic::client::Grpc<Channel>;

    pub async fn connect(path: &str) -> Client {
        let path = path.to_owned();
        // The URI is required and ignored: the connector opens the socket.
        let channel =
            Endpoint::from_static("http://[::]:50051")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .expect("connect to the tonic server");
        tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME)
    }

    pub async fn echo(client: &mut Client, payload: &Bytes) {
        client.ready().await.expect("tonic ready");
        let request = tonic::Request::new(Blob {
            data: payload.clone(),
        });
        let path = http::uri::PathAndQuery::from_static(ECHO);
        let codec = ProstCodec::<Blob, Blob>::default();
        let answer = client
            .unary(request, path, codec)
            .await
            .expect("tonic echo");
        assert_eq!(answer.get_ref().data.len(), payload.len());
    }

    /// Reads one server stream of `items` items of `size` bytes; how many
    /// came.
    pub async fn stream(client: &mut Client, items: u32, size: usize) -> u64 {
        client.ready().await.expect("tonic ready");
        let ask = tonic::Request::new(Ask {
            items,
            size: size as u32,
        });
        let path = http::uri::PathAndQuery::from_static(STREAM);
        let codec = ProstCodec::<Ask, Blob>::default();
        let answer = client.server_streaming(ask, path, codec).await;
        let mut stream = answer.expect("tonic stream").into_inner();
        let mut n = 0;
        while let Some(item) = stream.message().await.expect("tonic item") {
            assert_eq!(item.data.len(), size);
            n += 1;
        }
        n
    }
}

/// tarpc over its serde transport (bincode) on a Unix socket.
pub mod tarpc_peer {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use serde::{Deserialize, Serialize};
    use tarpc::server::{BaseChannel, Channel};
    use tarpc::tokio_serde::formats::Bincode;
    use tarpc::{client, context};

    use super::MAX_FRAME;

    /// Bytes as bytes in bincode.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Blob(#[serde(with = "serde_bytes")] pub Vec<u8>);

    #[tarpc::service]
    pub trait Echo {
        /// Returns its bytes.
        async fn echo(blob: Blob) -> Blob;
    }

    #[derive(Clone)]
    struct EchoServer;

    impl Echo for EchoServer {
        async fn echo(self, _: context::Context, blob: Blob) -> Blob {
            blob
        }
    }

    /// Serves [`Echo`] at `path` in the background: one task per
    /// connection, one per request, as tarpc's examples do.
    pub async fn serve(path: &str) {
        let mut listener = tarpc::serde_transport::unix::listen(path, Bincode::default)
            .await
            .expect("tarpc listen");
        listener.config_mut().max_frame_length(MAX_FRAME);
        tokio::spawn(async move {
            while let Some(Ok(transport)) = listener.next().await {
                let channel = BaseChannel::with_defaults(transport);
                let requests = channel.execute(EchoServer.serve());
                tokio::spawn(requests.for_each(|answer| async move {
                    tokio::spawn(answer);
                }));
            }
        });
    }

    pub async fn connect(path: &str) -> EchoClient {
        let mut connect = tarpc::serde_transport::unix::connect(path, Bincode::default);
        connect.config_mut().max_frame_length(MAX_FRAME);
        let transport = connect.await.expect("tarpc connect");
        EchoClient::new(client::Config::default(), transport).spawn()
    }

    pub async fn echo(client: &EchoClient, payload: &Bytes) {
        let blob = Blob(payload.to_vec());
        let answer = client.echo(context::current(), blob).await;
        assert_eq!(answer.expect("tarpc echo").0.len(), payload.len());
    }
}
