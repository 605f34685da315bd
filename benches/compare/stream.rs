//! Server streams: a client asks for ITEMS items of SIZE bytes and reads
//! them as they come, on each of STREAMS connections at once, asking again
//! as soon as one stream ends. The result is items per second.
//!
//! - raw tokio: a request frame `[items u32][size u32]`, answered with one
//!   length-delimited frame per item (`send_all`, which writes when its
//!   buffer fills, as a Tokio user streams a sink);
//! - tonic: a server-streaming gRPC method (`peers::tonic_peer`);
//! - tarpc has no streaming responses (its requests each get one answer):
//!   not measured;
//! - pipesvc: a server streaming method, `typed::STREAM_ITEMS` (MessagePack bin
//!   items), read with `Client::stream`: the server batches items into
//!   ITEM frames while the client is behind, under its credit window.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use pipesvc::client::CallOptions;
use pipesvc::rpc::Encoding;
use pipesvc::{Client, Endpoint};

use crate::contender::{codec, raw};
use crate::typed::{self, Ask};

/// Items per stream in the comparison's stream rows.
pub const ITEMS: u32 = 1000;

/// Serves raw tokio streams at `path`, one task per client.
pub fn serve_raw(path: &str) {
    raw::serve_with(path, serve_streams::<raw::ServerStream>);
}

async fn serve_streams<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let mut framed = Framed::new(stream, codec());
    while let Some(Ok(mut ask)) = framed.next().await {
        if ask.len() != 8 {
            return;
        }
        let (items, size) = (ask.get_u32(), ask.get_u32() as usize);
        let item = Bytes::from(vec![0x5Au8; size]);
        let mut all = futures_util::stream::iter((0..items).map(|_| Ok(item.clone())));
        if framed.send_all(&mut all).await.is_err() {
            return;
        }
    }
}

fn ask(items: u32, size: usize) -> Bytes {
    let mut ask = BytesMut::with_capacity(8);
    ask.put_u32(items);
    ask.put_u32(size as u32);
    ask.freeze()
}

/// Reads one whole stream of `items`; false if the connection failed.
async fn one_raw_stream<S: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<S, tokio_util::codec::LengthDelimitedCodec>,
    items: u32,
    size: usize,
) -> bool {
    if framed.send(ask(items, size)).await.is_err() {
        return false;
    }
    for _ in 0..items {
        match framed.next().await {
            Some(Ok(item)) if item.len() == size => {}
            _ => return false,
        }
    }
    true
}

/// Items per second of raw tokio streams: `streams` connections, each
/// asking for [`ITEMS`] at a time, for `secs`.
pub async fn raw_items_per_sec(address: &str, streams: usize, size: usize, secs: f64) -> f64 {
    serve_raw(address);
    let stop = Arc::new(AtomicBool::new(false));
    let items = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut framed = Framed::new(raw::connect(address).await, codec());
        let (stop, items) = (stop.clone(), items.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert!(one_raw_stream(&mut framed, ITEMS, size).await, "raw stream");
                items.fetch_add(ITEMS as u64, Ordering::Relaxed);
            }
        }));
    }
    per_sec(secs, &stop, tasks, &items).await
}

/// Lets the streams run for `secs`, stops them (each finishes the stream
/// it is reading) and divides.
pub async fn per_sec(
    secs: f64,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    items: &AtomicU64,
) -> f64 {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    items.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// For `count`: `total` items over `streams` raw streams (one each);
/// the items read.
pub async fn count_raw(address: &str, streams: usize, size: usize, total: u64) -> u64 {
    serve_raw(address);
    let mut tasks = Vec::new();
    for share in shares(total, streams) {
        let mut framed = Framed::new(raw::connect(address).await, codec());
        tasks.push(tokio::spawn(async move {
            one_raw_stream(&mut framed, share as u32, size).await
        }));
    }
    read_shares(total, streams, tasks).await
}

/// `total` items shared out over `streams` streams, as evenly as can be.
fn shares(total: u64, streams: usize) -> impl Iterator<Item = u64> {
    let n = streams as u64;
    (0..n).map(move |i| total / n + u64::from(i < total % n))
}

/// The items read by the streams of [`shares`] (a failed stream read none).
async fn read_shares(total: u64, streams: usize, tasks: Vec<tokio::task::JoinHandle<bool>>) -> u64 {
    let mut read = 0;
    for (share, t) in shares(total, streams).zip(tasks) {
        if t.await.unwrap() {
            read += share;
        }
    }
    read
}

/// Reads one whole pipesvc stream of `n` items of `size` bytes; false if
/// it failed.
async fn one_pipesvc_stream(client: &Client, n: u32, size: usize) -> bool {
    let ask = Ask {
        n,
        size: size as u32,
    };
    let options = CallOptions::new().encoding(Encoding::MessagePack);
    let Ok(mut items) = client
        .stream_with(&typed::STREAM_ITEMS, &ask, options)
        .await
    else {
        return false;
    };
    let mut read = 0;
    while let Some(item) = items.next().await {
        match item {
            Ok(blob) if blob.0.len() == size => read += 1,
            _ => return false,
        }
    }
    read == n && items.finish().await.is_ok()
}

async fn pipesvc_client(address: &str) -> Client {
    Client::connect(&Endpoint::new(address).unwrap())
        .await
        .expect("connect")
}

/// Items per second of pipesvc server streams: `streams` connections, each
/// asking for [`ITEMS`] at a time, for `secs`.
pub async fn pipesvc_items_per_sec(address: &str, streams: usize, size: usize, secs: f64) -> f64 {
    let _server = typed::start_server(address);
    let stop = Arc::new(AtomicBool::new(false));
    let items = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let client = pipesvc_client(address).await;
        let (stop, items) = (stop.clone(), items.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert!(
                    one_pipesvc_stream(&client, ITEMS, size).await,
                    "pipesvc stream"
                );
                items.fetch_add(ITEMS as u64, Ordering::Relaxed);
            }
        }));
    }
    per_sec(secs, &stop, tasks, &items).await
}

/// For `count`: `total` items over `streams` pipesvc streams (one each);
/// the items read.
pub async fn count_pipesvc(address: &str, streams: usize, size: usize, total: u64) -> u64 {
    let _server = typed::start_server(address);
    let mut tasks = Vec::new();
    for share in shares(total, streams) {
        let client = pipesvc_client(address).await;
        tasks.push(tokio::spawn(async move {
            one_pipesvc_stream(&client, share as u32, size).await
        }));
    }
    read_shares(total, streams, tasks).await
}
