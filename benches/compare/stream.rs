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
//! - pipesvc: STREAM HOOK, no server streams until issue 21 ("Push:
//!   streaming methods") lands; its cell reads "n/a" until then. Fill
//!   `pipesvc_items` (and `count::stream`) when it does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::contender::{codec, raw};

/// Items per stream in the comparison's stream rows.
#[allow(
    dead_code,
    reason = "read by the peers table (issue 23 item 5), which lands with the tonic and tarpc contenders"
)]
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
#[allow(
    dead_code,
    reason = "read by the peers table (issue 23 item 5), which lands with the tonic and tarpc contenders"
)]
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
#[allow(
    dead_code,
    reason = "read by the peers table (issue 23 item 5), which lands with the tonic and tarpc contenders"
)]
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
    for i in 0..streams as u64 {
        let share = total / streams as u64 + u64::from(i < total % streams as u64);
        let mut framed = Framed::new(raw::connect(address).await, codec());
        tasks.push(tokio::spawn(async move {
            match one_raw_stream(&mut framed, share as u32, size).await {
                true => share,
                false => 0,
            }
        }));
    }
    let mut read = 0;
    for t in tasks {
        read += t.await.unwrap();
    }
    read
}
