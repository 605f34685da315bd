//! Running one workload against one contender, in this process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use pipesvc::Client;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::contender::{codec, connect, start_server, used_once, Conn, Contender};
use crate::{Callers, Workload};

/// What one run measured.
#[derive(Default, Clone, Copy)]
pub struct Measured {
    pub requests_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Measured {
    pub fn from(h: &Histogram<u64>, size: usize, elapsed: Duration) -> Measured {
        let secs = elapsed.as_secs_f64();
        Measured {
            requests_per_sec: h.len() as f64 / secs,
            // Payload bytes carried both ways: the request and its echo.
            mb_per_sec: h.len() as f64 * size as f64 * 2.0 / secs / 1e6,
            p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        }
    }
}

/// What a stretch of load recorded: every request's latency, and how long
/// the stretch ran. Stretches of one contender add up (see `SLICES` in
/// `main.rs`: a row's contenders run in turn, a slice at a time).
pub struct Sample {
    pub hist: Histogram<u64>,
    pub elapsed: Duration,
}

impl Sample {
    pub fn empty() -> Sample {
        Sample {
            hist: histogram(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn add(&mut self, other: Sample) {
        self.hist.add(other.hist).unwrap();
        self.elapsed += other.elapsed;
    }

    /// The rates over the whole time recorded, the percentiles over every
    /// request of it.
    pub fn measured(&self, size: usize) -> Measured {
        Measured::from(&self.hist, size, self.elapsed)
    }
}

/// Latencies in nanoseconds, 3 significant digits, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn record(h: &mut Histogram<u64>, since: Instant) {
    h.saturating_record(since.elapsed().as_nanos() as u64);
}

/// Runs `load` against contender `c`'s server at `address` for `secs`
/// (for the curves, which run their contenders one after the other).
#[cfg(all(unix, feature = "peers"))]
pub async fn load(c: Contender, w: &Workload, address: &str, secs: f64) -> Measured {
    load_sample(c, w, address, secs).await.measured(w.size)
}

/// [`load`], as what it recorded.
pub async fn load_sample(c: Contender, load: &Workload, address: &str, secs: f64) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from(vec![0x5Au8; load.size]);
    let _server = start_server(c, address).await;
    // Every client connects before any sends: requests made while the
    // others connect would be counted, but not their time.
    let mut conns = Vec::with_capacity(load.clients);
    for _ in 0..load.clients {
        conns.push(connect(c, address).await);
    }
    let mut tasks = Vec::new();
    for conn in conns {
        let (payload, stop) = (payload.clone(), stop.clone());
        match conn {
            Conn::Pipesvc(client) => spawn_callers(load, &mut tasks, || {
                request_loop(client.clone(), payload.clone(), stop.clone())
            }),
            Conn::RawTokio(s) => tasks.push(tokio::spawn(window(s, payload, load.inflight, stop))),
            Conn::Interprocess(s) => {
                tasks.push(tokio::spawn(window(s, payload, load.inflight, stop)))
            }
        }
    }
    run_sample(secs, &stop, tasks).await
}

/// Lets the loaders run for `secs`, stops them, and merges what each
/// recorded.
pub async fn run_sample(
    secs: f64,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Histogram<u64>>>,
) -> Sample {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = histogram();
    for t in tasks {
        hist.add(t.await.unwrap()).unwrap();
    }
    Sample {
        hist,
        elapsed: start.elapsed(),
    }
}

/// Spawns one client's callers, each a loop of calls made by `caller`,
/// in the shape `load.callers` asks for: one task per client holding
/// `inflight` of them (as [`window`] holds its requests, and as `pipesvc
/// bench` runs them), or one task each.
pub fn spawn_callers<F, Fut>(
    load: &Workload,
    tasks: &mut Vec<tokio::task::JoinHandle<Histogram<u64>>>,
    mut caller: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Histogram<u64>> + Send + 'static,
{
    match load.callers {
        Callers::PerCall => tasks.extend((0..load.inflight).map(|_| tokio::spawn(caller()))),
        // Alone in its task: a `FuturesUnordered` of one wakes its task
        // again each time its future is pending (it yields once it has
        // polled them all), and that extra turn through tokio's scheduler
        // doubled the 1 x 1 latency (8 -> 16 to 19 µs p50).
        Callers::PerClient if load.inflight == 1 => tasks.push(tokio::spawn(caller())),
        Callers::PerClient => {
            let loops: FuturesUnordered<_> = (0..load.inflight).map(|_| caller()).collect();
            tasks.push(tokio::spawn(loops.fold(
                histogram(),
                |mut all, h| async move {
                    all.add(h).unwrap();
                    all
                },
            )));
        }
    }
}

/// One caller: a request, its answer, the next, each waiting for its own
/// answer on the shared client.
async fn request_loop(client: Client, payload: Bytes, stop: Arc<AtomicBool>) -> Histogram<u64> {
    let mut h = histogram();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        client.request(payload.clone()).await.unwrap();
        record(&mut h, t);
    }
    h
}

/// The baseline client: keeps `inflight` requests outstanding on one
/// connection; answers come back in order, so latencies are matched
/// against a queue of send times.
async fn window<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    payload: Bytes,
    inflight: usize,
    stop: Arc<AtomicBool>,
) -> Histogram<u64> {
    let (r, w) = tokio::io::split(stream);
    let mut reader = FramedRead::new(r, codec());
    let mut writer = FramedWrite::new(w, codec());
    let mut sent_at = std::collections::VecDeque::with_capacity(inflight);
    let mut h = histogram();
    for _ in 0..inflight {
        sent_at.push_back(Instant::now());
        writer.send(payload.clone()).await.unwrap();
    }
    while let Some(frame) = reader.next().await {
        frame.unwrap();
        let t = sent_at.pop_front().unwrap();
        record(&mut h, t);
        if !stop.load(Ordering::Relaxed) {
            sent_at.push_back(Instant::now());
            writer.send(payload.clone()).await.unwrap();
        } else if sent_at.is_empty() {
            break;
        }
    }
    h
}

/// How long `n` times a connect, one request and its answer, and a close
/// took (for pipesvc including its handshake, which every real client
/// pays), one after another.
pub async fn accept_time(c: Contender, address: &str, n: u32) -> Duration {
    let _server = start_server(c, address).await;
    let start = Instant::now();
    for _ in 0..n {
        drop(used_once(c, address).await);
    }
    start.elapsed()
}

/// The latency floor: two threads, a blocking std Unix socket, a 4-byte
/// length prefix, one request at a time.
#[cfg(unix)]
pub fn std_blocking(size: usize, secs: f64, dir: &std::path::Path) -> Option<Measured> {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    let socket = dir.join("std.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        let mut buf = vec![0u8; 4 + crate::contender::MAX_FRAME];
        while s.read_exact(&mut len).is_ok() {
            let n = u32::from_be_bytes(len) as usize;
            buf[..4].copy_from_slice(&len);
            s.read_exact(&mut buf[4..4 + n]).unwrap();
            s.write_all(&buf[..4 + n]).unwrap();
        }
    });
    let mut s = UnixStream::connect(&socket).unwrap();
    // Length prefix and payload in one buffer: one write per message.
    let mut message = (size as u32).to_be_bytes().to_vec();
    message.extend(std::iter::repeat_n(0x5Au8, size));
    let mut back = vec![0u8; size];
    let mut h = histogram();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        s.write_all(&message).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        s.read_exact(&mut back).unwrap();
        record(&mut h, t);
    }
    let elapsed = start.elapsed();
    drop(s);
    server.join().unwrap();
    let _ = std::fs::remove_file(&socket);
    Some(Measured::from(&h, size, elapsed))
}

/// Std has no named pipes: there is no blocking floor on Windows.
#[cfg(windows)]
pub fn std_blocking(_size: usize, _secs: f64, _dir: &std::path::Path) -> Option<Measured> {
    None
}
