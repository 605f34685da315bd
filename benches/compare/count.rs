//! Counted runs, for `scripts/perf-guard.sh`: exactly N requests of one
//! workload against one contender, then exit, so that a tool outside (the
//! guard runs this under `valgrind --tool=callgrind` and `strace -f -c`)
//! counts the instructions and system calls they took. Nothing is timed
//! and nothing is written.
//!
//! Client and server share one current-thread runtime: on a Unix socket a
//! write is readable by the peer as soon as it returns, so with a single
//! thread the whole exchange (every poll, every read that finds nothing)
//! happens in the same order in every run, and so do the counts. Two runs
//! of the same spec agree to a few instructions per request; the guard
//! takes the difference between a run of N and one of 2N requests, which
//! cancels what starting and stopping cost.
//!
//! Spec (`PIPESVC_BENCH_COUNT`): `WORKLOAD,CLIENTS,INFLIGHT,SIZE,CONTENDER,N`
//! with WORKLOAD `bytes` (the byte echo), `typed` (a MessagePack call of
//! pipesvc's typed `echo` of bytes; raw tokio has no typed calls, so its
//! `typed` is its byte echo, the baseline the targets name) or
//! `stream` (N items of SIZE bytes, CLIENTS streams at once) or `connect`
//! (N times, one after another: connect, one request of SIZE bytes and its
//! answer, close: the accept row; CLIENTS and INFLIGHT must be 1);
//! CONTENDER `pipesvc` or `raw-tokio`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pipesvc::Client;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::contender::{codec, connect, start_server, Conn, Contender};
use crate::typed::{self, Blob};

/// The environment variable that asks for a counted run.
pub const COUNT_ENV: &str = "PIPESVC_BENCH_COUNT";

/// What a counted run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bytes,
    Typed,
    Stream,
    Connect,
}

struct Spec {
    kind: Kind,
    clients: usize,
    inflight: usize,
    size: usize,
    contender: Contender,
    requests: u64,
}

fn parse(spec: &str) -> Result<Spec, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [kind, clients, inflight, size, contender, requests] = parts[..] else {
        return Err(format!("{COUNT_ENV}: want 6 fields, got {spec:?}"));
    };
    let number = |what: &str, s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{COUNT_ENV}: {what} must be a positive number, got {s:?}"))
    };
    let kind = match kind {
        "bytes" => Kind::Bytes,
        "typed" => Kind::Typed,
        "stream" => Kind::Stream,
        "connect" => Kind::Connect,
        other => return Err(format!("{COUNT_ENV}: unknown workload {other:?}")),
    };
    let contender = Contender::from_name(&contender.replace('-', " "))
        .filter(|c| matches!(c, Contender::Pipesvc | Contender::RawTokio))
        .ok_or_else(|| format!("{COUNT_ENV}: contender must be pipesvc or raw-tokio"))?;
    let (clients, inflight) = (number("CLIENTS", clients)?, number("INFLIGHT", inflight)?);
    if kind == Kind::Connect && (clients, inflight) != (1, 1) {
        return Err(format!(
            "{COUNT_ENV}: connect runs 1 client with 1 in flight"
        ));
    }
    Ok(Spec {
        kind,
        clients: clients as usize,
        inflight: inflight as usize,
        size: number("SIZE", size)? as usize,
        contender,
        requests: number("N", requests)?,
    })
}

/// Runs the counted load `spec` describes; the process's exit status: 0
/// when every request was answered, 1 when some were not, 2 for a wrong
/// spec.
pub fn run(spec: &str, address: &str) -> i32 {
    let spec = match parse(spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(load(&spec, address)) {
        done if done == spec.requests => 0,
        done => {
            eprintln!("{done} of {} requests answered", spec.requests);
            1
        }
    }
}

/// Loads the server for `spec.requests` requests; how many were answered.
async fn load(spec: &Spec, address: &str) -> u64 {
    match spec.kind {
        Kind::Stream => return stream(spec, address).await,
        Kind::Connect => return connections(spec, address).await,
        Kind::Bytes | Kind::Typed => {}
    }
    let budget = Arc::new(AtomicU64::new(spec.requests));
    let _server = match (spec.kind, spec.contender) {
        (Kind::Typed, Contender::Pipesvc) => typed::start_server(address),
        (_, c) => start_server(c, address).await,
    };
    let payload = Bytes::from(vec![0x5Au8; spec.size]);
    let mut tasks = Vec::new();
    for _ in 0..spec.clients {
        match connect(spec.contender, address).await {
            Conn::Pipesvc(client) => {
                for _ in 0..spec.inflight {
                    let (client, budget) = (client.clone(), budget.clone());
                    let payload = payload.clone();
                    tasks.push(tokio::spawn(match spec.kind {
                        Kind::Typed => typed_loop(client, payload, budget).boxed(),
                        _ => request_loop(client, payload, budget).boxed(),
                    }));
                }
            }
            Conn::RawTokio(s) => {
                let budget = budget.clone();
                tasks.push(tokio::spawn(
                    window(s, payload.clone(), spec.inflight, budget).boxed(),
                ));
            }
            Conn::Interprocess(_) => unreachable!("parse admits pipesvc and raw tokio only"),
        }
    }
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("a loader panicked");
    }
    done
}

use futures_util::FutureExt as _;

/// Takes one request from the shared budget; false once it is spent.
fn claim(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

async fn request_loop(client: Client, payload: Bytes, budget: Arc<AtomicU64>) -> u64 {
    let mut done = 0;
    while claim(&budget) {
        client.request(payload.clone()).await.expect("request");
        done += 1;
    }
    done
}

async fn typed_loop(client: Client, payload: Bytes, budget: Arc<AtomicU64>) -> u64 {
    let blob = Blob(payload.to_vec());
    let mut done = 0;
    while claim(&budget) {
        client.call(&typed::ECHO_BYTES, &blob).await.expect("call");
        done += 1;
    }
    done
}

/// The raw client: up to `inflight` requests outstanding on one
/// connection, each taken from the budget.
async fn window<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    payload: Bytes,
    inflight: usize,
    budget: Arc<AtomicU64>,
) -> u64 {
    let (r, w) = tokio::io::split(stream);
    let mut reader = FramedRead::new(r, codec());
    let mut writer = FramedWrite::new(w, codec());
    let mut outstanding = VecDeque::with_capacity(inflight);
    let mut done = 0;
    while outstanding.len() < inflight && claim(&budget) {
        writer.send(payload.clone()).await.expect("send");
        outstanding.push_back(());
    }
    while outstanding.pop_front().is_some() {
        reader.next().await.expect("an answer").expect("a frame");
        done += 1;
        if claim(&budget) {
            writer.send(payload.clone()).await.expect("send");
            outstanding.push_back(());
        }
    }
    done
}

/// N items of a server stream, `clients` streams at once. Raw tokio: one
/// frame per item after a request that names how many; pipesvc: one typed
/// streaming call per stream (`crate::stream`).
async fn stream(spec: &Spec, address: &str) -> u64 {
    let (clients, size, total) = (spec.clients, spec.size, spec.requests);
    match spec.contender {
        Contender::RawTokio => crate::stream::count_raw(address, clients, size, total).await,
        _ => crate::stream::count_pipesvc(address, clients, size, total).await,
    }
}

/// N connections one after another, each used for one request of
/// `spec.size` bytes and closed: what the accept row times.
async fn connections(spec: &Spec, address: &str) -> u64 {
    let _server = start_server(spec.contender, address).await;
    let payload = Bytes::from(vec![0x5Au8; spec.size]);
    for _ in 0..spec.requests {
        drop(crate::contender::used_once_with(spec.contender, address, &payload).await);
    }
    spec.requests
}
