//! Typed calls (protocol 2) next to byte requests, in one run: the same
//! pipesvc server answers both (a byte echo handler, and a typed `echo`
//! method), and the same clients load it three ways on the throughput
//! workload. The byte request is the baseline of its ratios.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use pipesvc::client::CallOptions;
use pipesvc::rpc::{Encoding, Method, Service, StreamMethod};
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::{Client, ClientOptions, Endpoint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contender::Running;
use crate::measure::{histogram, run_sample, spawn_callers, Measured, Sample};
use crate::Workload;

/// The typed echo: a string in, the same string out.
pub const ECHO: Method<String, String> = Method::new("echo", "Returns its params");

/// Bytes as a typed message: MessagePack's bin (not an array of integers,
/// which is what serde makes of a bare `Vec<u8>`).
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Blob(
    #[serde(with = "serde_bytes")]
    #[schemars(with = "Vec<u8>")]
    pub Vec<u8>,
);

/// The typed echo of bytes, as the tonic and tarpc contenders' `echo`.
pub const ECHO_BYTES: Method<Blob, Blob> = Method::new("echo_bytes", "Returns its bytes");

/// What [`STREAM_ITEMS`] is asked for: `n` items of `size` bytes.
#[derive(Serialize, Deserialize, JsonSchema)]
pub struct Ask {
    pub n: u32,
    pub size: u32,
}

/// A server stream of `n` [`Blob`]s of `size` bytes (the stream rows: as
/// raw tokio's one frame per item, `crate::stream`).
pub const STREAM_ITEMS: StreamMethod<Ask, (), Blob, ()> =
    StreamMethod::server("items", "n items of size bytes");

/// A pipesvc server answering byte requests (echo), [`ECHO`],
/// [`ECHO_BYTES`] and the stream [`STREAM_ITEMS`], served in the background at
/// `address`.
pub fn start_server(address: &str) -> Running {
    let service = Service::new("bench", "1", ())
        .method(&ECHO, |_, text: String, _| async move {
            Ok::<_, ServiceError>(text)
        })
        .method(&ECHO_BYTES, |_, blob: Blob, _| async move {
            Ok::<_, ServiceError>(blob)
        })
        .stream_method(&STREAM_ITEMS, |_, ask: Ask, items, _, _| async move {
            let item = Blob(vec![0x5A; ask.size as usize]);
            for _ in 0..ask.n {
                items.send(&item).await?;
            }
            Ok(())
        });
    let server = Server::builder(Endpoint::new(address).unwrap())
        .max_frame_len(crate::contender::MAX_FRAME as u32)
        .max_connections(crate::contender::MAX_CONNECTIONS)
        .handler(|r: Bytes, _: ConnectionContext| async move { Ok::<_, ServiceError>(r) })
        .calls(service)
        .bind()
        .unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve());
    Running(Some(handle))
}

/// How the clients call.
#[derive(Clone, Copy, Debug)]
pub enum Way {
    Bytes,
    Typed(Encoding),
    /// [`ECHO_BYTES`] in MessagePack: the payload as `bin`, as the RPC
    /// contenders (`peers.rs`) carry it.
    #[cfg_attr(
        not(all(unix, feature = "peers")),
        allow(
            dead_code,
            reason = "used only by the peers table: Unix only (tonic and tarpc on Unix sockets), with the `peers` feature"
        )
    )]
    TypedBytes,
}

pub const WAYS: [Way; 3] = [
    Way::Bytes,
    Way::Typed(Encoding::MessagePack),
    Way::Typed(Encoding::Json),
];

impl Way {
    pub fn name(self) -> &'static str {
        match self {
            Way::Bytes => "byte request",
            Way::Typed(Encoding::MessagePack) => "typed, msgpack",
            Way::Typed(_) => "typed, json",
            Way::TypedBytes => "typed bytes, msgpack",
        }
    }
}

/// Runs `load` against a pipesvc server at `address`, calling `way`.
pub async fn load(way: Way, w: &Workload, address: &str, secs: f64) -> Measured {
    load_sample(way, w, address, secs).await.measured(w.size)
}

/// [`load`], as what it recorded.
pub async fn load_sample(way: Way, load: &Workload, address: &str, secs: f64) -> Sample {
    let _server = start_server(address);
    let stop = Arc::new(AtomicBool::new(false));
    // Every client connects before any calls (as `measure::load`).
    let endpoint = Endpoint::new(address).unwrap();
    let options = ClientOptions::new().max_frame_len(crate::contender::MAX_FRAME as u32);
    let mut clients = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        clients.push(
            Client::connect_with(&endpoint, options.clone())
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for client in clients {
        spawn_callers(load, &mut tasks, || {
            calls(way, client.clone(), load.size, stop.clone())
        });
    }
    run_sample(secs, &stop, tasks).await
}

/// One request in flight at a time, each waiting for its own answer, as
/// the byte contender's `request_loop` does.
async fn calls(way: Way, client: Client, size: usize, stop: Arc<AtomicBool>) -> Histogram<u64> {
    let text = "Z".repeat(size);
    let payload = Bytes::from(text.clone());
    let options = match way {
        Way::Typed(encoding) => CallOptions::new().encoding(encoding),
        Way::Bytes | Way::TypedBytes => CallOptions::new(),
    };
    let blob = Blob(payload.to_vec());
    let mut h = histogram();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match way {
            Way::Bytes => drop(client.request(payload.clone()).await.unwrap()),
            Way::Typed(_) => drop(
                client
                    .call_with(&ECHO, &text, options.clone())
                    .await
                    .unwrap(),
            ),
            Way::TypedBytes => drop(client.call(&ECHO_BYTES, &blob).await.unwrap()),
        }
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    h
}
