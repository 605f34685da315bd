//! Side-by-side comparison, in one run on one machine and one transport:
//!
//! - **pipesvc**: `Server` + `Client`;
//! - **raw tokio**: what a user writes by hand, `LengthDelimitedCodec` echo
//!   over the same Unix socket, one task per client (the baseline);
//! - **interprocess**: the same echo over `interprocess`'s Tokio local sockets;
//! - **std blocking**: two threads ping-ponging over a std Unix socket (the
//!   latency floor; latency workload only).
//!
//! `cargo bench --bench compare` prints a table with each result as a ratio
//! to raw tokio and writes it to `BENCHMARKS.md`. `PIPESVC_BENCH_SECS` sets
//! the seconds per measurement (default 3); `PIPESVC_BENCH_ONLY=throughput`
//! runs only the workloads whose name contains that text, and prints the
//! table without writing `BENCHMARKS.md`.
//!
//! Unix only for now; the Windows/Wine run is to come.

#[cfg(not(unix))]
fn main() {
    eprintln!("benches/compare.rs runs on Unix only for now");
}

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(unix)]
mod unix {
    use std::fmt::Write as _;
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use hdrhistogram::Histogram;
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::{GenericFilePath, ListenerOptions};
    use pipesvc::server::{Context, Server, ServerHandle, ServiceError};
    use pipesvc::{Client, Endpoint};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::{UnixListener, UnixStream};
    use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

    const MAX_FRAME: usize = 8 << 20;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Contender {
        Pipesvc,
        RawTokio,
        Interprocess,
    }

    impl Contender {
        fn name(self) -> &'static str {
            match self {
                Contender::Pipesvc => "pipesvc",
                Contender::RawTokio => "raw tokio",
                Contender::Interprocess => "interprocess",
            }
        }
    }

    /// One row of the table: a workload and what it measures.
    struct Workload {
        name: &'static str,
        clients: usize,
        inflight: usize,
        size: usize,
    }

    #[derive(Default, Clone, Copy)]
    struct Result {
        requests_per_sec: f64,
        mb_per_sec: f64,
        p50_us: u64,
        p99_us: u64,
    }

    pub fn main() {
        let secs: f64 = std::env::var("PIPESVC_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let dir = scratch_dir();
        let workloads = [
            Workload {
                name: "latency: 1 client, 1 in flight, 64 B",
                clients: 1,
                inflight: 1,
                size: 64,
            },
            Workload {
                name: "throughput: 100 clients, 16 in flight, 64 B",
                clients: 100,
                inflight: 16,
                size: 64,
            },
            Workload {
                name: "bandwidth: 8 clients, 1 in flight, 1 MiB",
                clients: 8,
                inflight: 1,
                size: 1 << 20,
            },
        ];
        let contenders = [
            Contender::Pipesvc,
            Contender::RawTokio,
            Contender::Interprocess,
        ];
        let mut table = String::new();
        writeln!(
            table,
            "| workload | metric | pipesvc | raw tokio | interprocess | std blocking |"
        )
        .unwrap();
        writeln!(table, "|---|---|---:|---:|---:|---:|").unwrap();
        let only = std::env::var("PIPESVC_BENCH_ONLY").unwrap_or_default();
        for (i, workload) in workloads.iter().enumerate() {
            if !workload.name.contains(only.as_str()) {
                continue;
            }
            let mut results = Vec::new();
            for &contender in &contenders {
                let socket = dir.join(format!("w{i}-{}.sock", contender.name().replace(' ', "-")));
                let result = runtime.block_on(measure(contender, workload, &socket, secs));
                eprintln!(
                    "{:<45} {:<13} {:>10.0} req/s {:>9.1} MB/s p50 {:>6} µs p99 {:>6} µs",
                    workload.name,
                    contender.name(),
                    result.requests_per_sec,
                    result.mb_per_sec,
                    result.p50_us,
                    result.p99_us
                );
                results.push(result);
            }
            let floor = (workload.clients == 1).then(|| std_blocking(workload.size, secs, &dir));
            if let Some(r) = floor {
                eprintln!(
                    "{:<45} {:<13} {:>10.0} req/s {:>9.1} MB/s p50 {:>6} µs p99 {:>6} µs",
                    workload.name,
                    "std blocking",
                    r.requests_per_sec,
                    r.mb_per_sec,
                    r.p50_us,
                    r.p99_us
                );
            }
            write_rows(&mut table, workload, &results, floor);
        }
        if !only.is_empty() {
            // A partial run (while optimising) leaves BENCHMARKS.md alone.
            println!("{table}");
            return;
        }
        let connects: Vec<f64> = contenders
            .iter()
            .map(|&c| {
                runtime.block_on(accept_rate(
                    c,
                    &dir.join(format!("connect-{}.sock", c.name().replace(' ', "-"))),
                    1000,
                ))
            })
            .collect();
        row(
            &mut table,
            "accept: 1000 connects and disconnects",
            "connections/s (ratio)",
            [connects[0], connects[1], connects[2]],
            None,
        );
        println!("{table}");
        write_markdown(&table, secs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn write_rows(table: &mut String, w: &Workload, r: &[Result], floor: Option<Result>) {
        let pick = |f: fn(&Result) -> f64| [f(&r[0]), f(&r[1]), f(&r[2])];
        if w.clients == 1 {
            let p99 = |r: &Result| r.p99_us as f64;
            let p50 = |r: &Result| r.p50_us as f64;
            row(
                table,
                w.name,
                "p99 latency, µs (ratio)",
                pick(p99),
                floor.as_ref().map(p99),
            );
            row(
                table,
                w.name,
                "p50 latency, µs (ratio)",
                pick(p50),
                floor.as_ref().map(p50),
            );
        } else if w.size >= 1 << 20 {
            row(table, w.name, "MB/s (ratio)", pick(|r| r.mb_per_sec), None);
        } else {
            row(
                table,
                w.name,
                "requests/s (ratio)",
                pick(|r| r.requests_per_sec),
                None,
            );
        }
    }

    /// One table row: pipesvc, raw tokio (the baseline), interprocess, each
    /// with its ratio to the baseline, then the blocking floor if measured.
    fn row(table: &mut String, workload: &str, metric: &str, v: [f64; 3], floor: Option<f64>) {
        let cell = |x: f64| match v[1] {
            base if base > 0.0 => format!("{x:.0} ({:.2}x)", x / base),
            _ => format!("{x:.0}"),
        };
        let floor = floor.map_or("n/a".to_string(), |f| format!("{f:.0}"));
        let (a, b, c) = (cell(v[0]), cell(v[1]), cell(v[2]));
        writeln!(
            table,
            "| {workload} | {metric} | {a} | {b} | {c} | {floor} |"
        )
        .unwrap();
    }

    fn write_markdown(table: &str, secs: f64) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        let text = format!(
            "# Benchmarks\n\n\
             Written by `cargo bench --bench compare` ({secs} s per measurement); do not edit by hand.\n\
             Every contender runs in the same process, over Unix domain sockets, on the same\n\
             Tokio runtime (as many workers as cores); ratios are to the raw tokio baseline\n\
             (higher is better for requests/s, MB/s and connections/s; lower for latency).\n\n\
             Machine: {} cores, {}.\n\n{table}\n",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::env::consts::OS,
        );
        std::fs::write(&path, text).expect("write BENCHMARKS.md");
        eprintln!("wrote {}", path.display());
    }

    fn scratch_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pipesvc-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
    }

    fn codec() -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .new_codec()
    }

    /// Starts contender `c`'s echo server on `socket`; pipesvc's handle
    /// is returned so that it can be shut down.
    async fn start_server(c: Contender, socket: &Path) -> Option<ServerHandle> {
        match c {
            Contender::Pipesvc => {
                let server = Server::builder(Endpoint::new(socket.to_str().unwrap()).unwrap())
                    .handler(|r: Bytes, _: Context| async move { Ok::<_, ServiceError>(r) })
                    .bind()
                    .unwrap();
                let handle = server.handle();
                tokio::spawn(server.serve());
                return Some(handle);
            }
            Contender::RawTokio => {
                let listener = UnixListener::bind(socket).unwrap();
                tokio::spawn(async move {
                    while let Ok((s, _)) = listener.accept().await {
                        tokio::spawn(raw_echo(s));
                    }
                });
            }
            Contender::Interprocess => {
                let listener = ListenerOptions::new()
                    .name(interprocess_name(socket))
                    .create_tokio()
                    .unwrap();
                tokio::spawn(async move {
                    while let Ok(s) = listener.accept().await {
                        tokio::spawn(raw_echo(s));
                    }
                });
            }
        }
        None
    }

    /// A connection of one contender.
    enum Conn {
        Pipesvc(Client),
        RawTokio(UnixStream),
        Interprocess(interprocess::local_socket::tokio::Stream),
    }

    async fn connect(c: Contender, socket: &Path) -> Conn {
        match c {
            Contender::Pipesvc => {
                let endpoint = Endpoint::new(socket.to_str().unwrap()).unwrap();
                Conn::Pipesvc(Client::connect(&endpoint).await.unwrap())
            }
            Contender::RawTokio => Conn::RawTokio(UnixStream::connect(socket).await.unwrap()),
            Contender::Interprocess => {
                let name = interprocess_name(socket);
                let stream = interprocess::local_socket::tokio::Stream::connect(name);
                Conn::Interprocess(stream.await.unwrap())
            }
        }
    }

    fn interprocess_name(socket: &Path) -> interprocess::local_socket::Name<'static> {
        socket.to_fs_name::<GenericFilePath>().unwrap().into_owned()
    }

    /// Runs one workload against one contender's server, in this runtime.
    async fn measure(c: Contender, w: &Workload, socket: &Path, secs: f64) -> Result {
        let stop = Arc::new(AtomicBool::new(false));
        let payload = Bytes::from(vec![0x5Au8; w.size]);
        let server = start_server(c, socket).await;
        let mut tasks = Vec::new();
        for _ in 0..w.clients {
            let (payload, stop) = (payload.clone(), stop.clone());
            match connect(c, socket).await {
                Conn::Pipesvc(client) => {
                    for _ in 0..w.inflight {
                        let loop_ = request_loop(client.clone(), payload.clone(), stop.clone());
                        tasks.push(tokio::spawn(loop_));
                    }
                }
                Conn::RawTokio(s) => {
                    tasks.push(tokio::spawn(window_client(s, payload, w.inflight, stop)))
                }
                Conn::Interprocess(s) => {
                    tasks.push(tokio::spawn(window_client(s, payload, w.inflight, stop)))
                }
            }
        }
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = histogram();
        for t in tasks {
            all.add(t.await.unwrap()).unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        if let Some(handle) = server {
            handle.shutdown();
        }
        let _ = std::fs::remove_file(socket);
        Result {
            requests_per_sec: all.len() as f64 / elapsed,
            mb_per_sec: all.len() as f64 * w.size as f64 * 2.0 / elapsed / 1e6,
            p50_us: all.value_at_quantile(0.5),
            p99_us: all.value_at_quantile(0.99),
        }
    }

    /// The baseline server a user would write: echo every frame, one task
    /// per client.
    async fn raw_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
        let mut framed = tokio_util::codec::Framed::new(stream, codec());
        while let Some(Ok(frame)) = framed.next().await {
            if framed.send(frame.freeze()).await.is_err() {
                break;
            }
        }
    }

    /// The baseline client: keeps `inflight` requests outstanding on one
    /// connection; answers come back in order, so latencies are matched
    /// against a queue of send times.
    async fn window_client<S: AsyncRead + AsyncWrite + Send + 'static>(
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
            h.saturating_record(t.elapsed().as_micros() as u64);
            if !stop.load(Ordering::Relaxed) {
                sent_at.push_back(Instant::now());
                writer.send(payload.clone()).await.unwrap();
            } else if sent_at.is_empty() {
                break;
            }
        }
        h
    }

    /// The latency floor: two threads, a blocking std Unix socket, a 4-byte
    /// length prefix, one request at a time.
    fn std_blocking(size: usize, secs: f64, dir: &Path) -> Result {
        let socket = dir.join("std.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            let mut buf = vec![0u8; 4 + MAX_FRAME];
            while s.read_exact(&mut len).is_ok() {
                let n = u32::from_be_bytes(len) as usize;
                buf[..4].copy_from_slice(&len);
                s.read_exact(&mut buf[4..4 + n]).unwrap();
                s.write_all(&buf[..4 + n]).unwrap();
            }
        });
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
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
            h.saturating_record(t.elapsed().as_micros() as u64);
        }
        let elapsed = start.elapsed().as_secs_f64();
        drop(s);
        server.join().unwrap();
        let _ = std::fs::remove_file(&socket);
        Result {
            requests_per_sec: h.len() as f64 / elapsed,
            mb_per_sec: h.len() as f64 * size as f64 * 2.0 / elapsed / 1e6,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
        }
    }

    /// pipesvc's way: one task per request in flight, each waiting for
    /// its own answer on the shared client.
    async fn request_loop(client: Client, payload: Bytes, stop: Arc<AtomicBool>) -> Histogram<u64> {
        let mut h = histogram();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            client.request(payload.clone()).await.unwrap();
            h.saturating_record(t.elapsed().as_micros() as u64);
        }
        h
    }

    /// Connections per second: `n` connects, each closed at once (for
    /// pipesvc including its handshake, which every real client pays).
    async fn accept_rate(c: Contender, socket: &Path, n: u32) -> f64 {
        let server = start_server(c, socket).await;
        let start = Instant::now();
        for _ in 0..n {
            drop(connect(c, socket).await);
        }
        if let Some(handle) = server {
            handle.shutdown();
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(socket);
        rate
    }
}
