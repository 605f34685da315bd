//! Side-by-side comparison, in one run on one machine and one transport
//! (Unix domain sockets, or named pipes on Windows):
//!
//! - **pipesvc**: `Server` + `Client`;
//! - **raw tokio**: what a user writes by hand, `LengthDelimitedCodec` echo
//!   over the same transport, one task per client (the baseline);
//! - **interprocess**: the same echo over `interprocess`'s Tokio local sockets;
//! - **std blocking**: two threads ping-ponging over a std Unix socket (the
//!   latency floor; latency workload only, Unix only: std has no pipes).
//!
//! A second table puts pipesvc's typed calls (protocol 2, MessagePack and
//! JSON) next to its byte requests on the throughput workload, against one
//! server answering both (`typed.rs`).
//!
//! `cargo bench --bench compare` prints a table with each result as a ratio
//! to raw tokio, writes it into its platform's section of `BENCHMARKS.md`
//! and draws it in `docs/bench-<platform>.svg`. `scripts/bench-windows.sh`
//! runs the same under Wine.
//!
//! A third table (Unix only) sets pipesvc's typed calls against the RPC
//! frameworks a user would pick instead, tonic (gRPC) and tarpc, each over
//! a Unix socket with the same `echo` of bytes, and server streams against
//! tonic's and raw tokio's (`peers.rs`, `stream.rs`).
//!
//! Scaling curves (Unix only, `curves.rs`): requests/s and p99 latency
//! against clients (1 to 5000) and against payload size (64 B to 8 MiB)
//! for pipesvc (bytes and typed), raw tokio, tonic and tarpc, drawn in
//! `docs/curves-*.svg`.
//!
//! Under Wine (or on Windows) the typed and stream tables go into the one
//! named pipes section, below the comparison's rows; tonic, tarpc and the
//! curves are not built there.
//!
//! The main table's contenders take turns within each row, `SLICES`
//! stretches each (see `in_turn`), so that a machine's load that comes
//! and goes falls on all of them.
//!
//! Knobs: `PIPESVC_BENCH_SECS` (seconds per measurement, default 3);
//! `PIPESVC_BENCH_CURVE_SECS` (seconds per point of the curves, default 1);
//! `PIPESVC_BENCH_ONLY=throughput` runs only the workloads whose name
//! contains that text and prints the table without writing anything;
//! `PIPESVC_BENCH_ONLY=typed` (or `streams`, `peers`, `curves`) runs only
//! that table and rewrites its section (on Windows only the full run
//! writes).
//!
//! A fourth table streams 64-byte items from the server (`stream.rs`): a
//! pipesvc server streaming method, the same items as separate typed calls,
//! and raw tokio's one frame per item, with 1 and 100 streams at once.

mod chart;
mod contender;
mod count;
#[cfg(all(unix, feature = "peers"))]
mod curves;
mod measure;
mod memory;
#[cfg(all(unix, feature = "peers"))]
mod peers;
mod stream;
mod typed;
#[path = "../../tests/common/wine.rs"]
mod wine;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use contender::{Contender, ALL};
use measure::Measured;

/// One load of the table.
pub struct Workload {
    name: &'static str,
    pub clients: usize,
    pub inflight: usize,
    pub size: usize,
    /// How pipesvc's client holds its `inflight` calls; raw tokio's and
    /// interprocess's clients always hold them in one task per connection.
    pub callers: Callers,
}

/// How pipesvc's client keeps `inflight` calls outstanding on each
/// connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// One task per client holding all its calls: the shape of raw tokio's
    /// and interprocess's client (`measure::window`), so that the table
    /// compares the libraries, not how many tasks tokio schedules.
    PerClient,
    /// One task per call in flight, as a program that spawns a task per
    /// caller: 16 times the tasks of the baseline at 16 in flight, and a
    /// p99 3.5 to 4.8 times as long (BENCHMARKS.md, "A task per call").
    PerCall,
}

/// [`WORKLOADS`]' throughput load with a task per call: what the typed,
/// peers and stream tables run for every contender of theirs (tonic's and
/// tarpc's clients are called that way, a task per call).
const PER_CALL: usize = 2;

const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "latency: 1 client, 1 in flight, 64 B",
        clients: 1,
        inflight: 1,
        size: 64,
        callers: Callers::PerClient,
    },
    Workload {
        name: "throughput: 100 clients, 16 in flight, 64 B",
        clients: 100,
        inflight: 16,
        size: 64,
        callers: Callers::PerClient,
    },
    Workload {
        name: "throughput, pipesvc with a task per call: 100 clients, 16 in flight, 64 B",
        clients: 100,
        inflight: 16,
        size: 64,
        callers: Callers::PerCall,
    },
    Workload {
        name: "bandwidth: 8 clients, 1 in flight, 1 MiB",
        clients: 8,
        inflight: 1,
        size: 1 << 20,
        callers: Callers::PerClient,
    },
];

const ACCEPT: &str = "accept: 1000 x connect, one request, close";
const IDLE: [&str; 3] = [
    "memory: 1000 idle clients",
    "memory: 10000 idle clients",
    "memory: slope, 1000 to 10000 idle clients",
];

/// One row of the table: each contender's value (pipesvc, raw tokio,
/// interprocess) and, where measured, the blocking floor.
struct Row {
    workload: &'static str,
    metric: &'static str,
    values: [f64; 3],
    floor: Option<f64>,
    higher_is_better: bool,
}

/// Where this platform's contenders listen, and what its section is called.
struct Platform {
    key: &'static str,
    transport: &'static str,
    /// Under Wine: its version. Only ratios are shown then: Wine's
    /// absolute speed says nothing about Windows.
    wine: Option<String>,
    scratch: PathBuf,
}

impl Platform {
    fn current() -> Platform {
        let scratch = std::env::temp_dir().join(format!("pipesvc-compare-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let (key, transport) = if cfg!(windows) {
            ("windows", "named pipes")
        } else {
            ("unix", "Unix domain sockets")
        };
        Platform {
            key,
            transport,
            wine: wine::wine_version(),
            scratch,
        }
    }

    /// A fresh address for `what`: a socket path, or a pipe name.
    fn address(&self, what: &str, c: Contender) -> String {
        let name = format!("{what}-{}", c.name().replace(' ', "-"));
        if cfg!(windows) {
            format!(r"\\.\pipe\pipesvc-compare-{}-{name}", std::process::id())
        } else {
            let path = self.scratch.join(format!("{name}.sock"));
            path.to_str().unwrap().to_owned()
        }
    }
}

/// Makes glibc's allocator serve every contender the same way, whatever
/// ran before it in this process.
///
/// glibc maps a block of 128 KiB or more with an `mmap` of its own, and
/// every page of it faults when first touched (1.4 µs a page on the
/// shared 2-core machine: 360 µs a MiB, where copying a MiB takes 22 µs),
/// until such a block is freed: that raises the threshold to the freed
/// block's size, after which blocks that large come from the heap. So the
/// 1 MiB rows measured a contender faster or slower by what the contender
/// before it had freed: raw tokio's bandwidth was 4,128 and 7,632 MB/s in
/// two runs of one binary (issue 23's sixth stop). The two thresholds are
/// fixed where glibc itself puts them once a process has freed a mapped
/// block of 32 MiB, the most it raises them to (`mallopt(3)`): blocks up
/// to 32 MiB from the heap, whose top is given back to the system only
/// past 64 MiB free (left at its 128 KiB default, the heap's top would be
/// given back and faulted in again at each large block). Fixing them
/// stops the raising. The memory rows' servers (child processes) and the
/// guard's counted runs keep glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn steady_allocator() {
    // SAFETY: mallopt only changes the allocator's tuning; both values are
    // in range (the threshold at most HEAP_MAX_SIZE / 2 on 64-bit).
    let fixed = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20)
            + libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20)
    };
    assert_eq!(
        fixed, 2,
        "glibc refused M_MMAP_THRESHOLD or M_TRIM_THRESHOLD"
    );
}

/// Other platforms' allocators: as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn steady_allocator() {}

fn main() {
    if let Ok(spec) = std::env::var(memory::CHILD_ENV) {
        return memory::serve_child(&spec);
    }
    if let Ok(spec) = std::env::var(count::COUNT_ENV) {
        let platform = Platform::current();
        let status = count::run(&spec, &platform.address("count", Contender::Pipesvc));
        let _ = std::fs::remove_dir_all(&platform.scratch);
        std::process::exit(status);
    }
    steady_allocator();
    let secs: f64 = std::env::var("PIPESVC_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let only = std::env::var("PIPESVC_BENCH_ONLY").unwrap_or_default();
    check_peers_feature(&only);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let platform = Platform::current();

    let mut rows = Vec::new();
    for (i, workload) in WORKLOADS.iter().enumerate() {
        if workload.name.contains(only.as_str()) {
            rows.extend(run_workload(&runtime, &platform, i, workload, secs));
        }
    }
    if ACCEPT.contains(only.as_str()) {
        let mut took = ALL.map(|_| std::time::Duration::ZERO);
        for (slice, who) in in_turn(ALL.len()) {
            let c = ALL[who];
            let address = platform.address(&format!("connect-{slice}"), c);
            took[who] += runtime.block_on(measure::accept_time(c, &address, ACCEPTS));
        }
        let rates = took.map(|took| (SLICES as u32 * ACCEPTS) as f64 / took.as_secs_f64());
        for (c, rate) in ALL.iter().zip(rates) {
            eprintln!("{ACCEPT:<45} {:<13} {rate:>10.0} connections/s", c.name());
        }
        rows.push(Row {
            workload: ACCEPT,
            metric: "connections/s (ratio)",
            values: rates,
            floor: None,
            higher_is_better: true,
        });
    }
    rows.extend(memory_rows(&runtime, &platform, &only));
    let typed = TYPED.contains(only.as_str()).then(|| {
        let table = typed_table(&runtime, &platform, secs);
        println!("{table}");
        table
    });
    let streams = STREAMS.contains(only.as_str()).then(|| {
        let table = streams_table(&runtime, &platform, secs);
        println!("{table}");
        table
    });
    #[cfg(all(unix, feature = "peers"))]
    let peers = (only.is_empty() || only == "peers").then(|| {
        let table = peers_table(&runtime, &platform, secs);
        println!("{table}");
        table
    });
    #[cfg(all(unix, feature = "peers"))]
    let curves = (only.is_empty() || only == "curves").then(|| {
        let secs = curve_secs();
        let address = |name: &str| platform.address(name, Contender::Pipesvc);
        (curves::run(&runtime, &address, secs), secs)
    });
    drop(runtime);
    let _ = std::fs::remove_dir_all(&platform.scratch);

    let mut table = render(&rows, platform.wine.is_some());
    println!("{table}");
    if cfg!(windows) {
        // One section for named pipes: the typed and stream tables go
        // under the comparison's (as ratios under Wine), not beside it.
        let more = [
            ("Typed calls next to byte requests", typed),
            ("Server streams of 64 B items", streams),
        ];
        for (title, more) in more {
            if let Some(more) = more {
                write!(table, "\n### {title}\n\n{more}").unwrap();
            }
        }
        if only.is_empty() {
            write_section(&platform, "", &table, secs);
            draw(&platform, &rows);
        }
        return;
    }
    if only.is_empty() {
        write_section(&platform, "", &table, secs);
        draw(&platform, &rows);
    }
    if let (Some(table), true) = (typed, only.is_empty() || only == "typed") {
        write_section(&platform, "typed-", &table, secs);
    }
    if let (Some(table), true) = (streams, only.is_empty() || only == "streams") {
        write_section(&platform, "streams-", &table, secs);
    }
    #[cfg(all(unix, feature = "peers"))]
    if let Some(table) = peers {
        write_section(&platform, "peers-", &table, secs);
    }
    #[cfg(all(unix, feature = "peers"))]
    if let Some((curves, secs)) = curves {
        write_curves(&platform, &curves, secs);
    }
}

/// The peers table and the curves (tonic, tarpc) are built with the
/// `peers` feature only, on Unix: asked for without it, the bench stops
/// and says how; a whole run without it says what it leaves out.
fn check_peers_feature(only: &str) {
    if cfg!(all(unix, feature = "peers")) {
        return;
    }
    let how = if cfg!(unix) {
        "cargo bench --bench compare --features peers"
    } else {
        "a Unix machine (tonic and tarpc run over Unix sockets)"
    };
    if only == "peers" || only == "curves" {
        eprintln!("PIPESVC_BENCH_ONLY={only} needs {how}");
        std::process::exit(2);
    }
    if only.is_empty() {
        eprintln!("the peers table and the curves are left as they are: they need {how}");
    }
}

/// Seconds per point of the scaling curves: `PIPESVC_BENCH_CURVE_SECS`,
/// default 1 (50 points: the whole run takes a few minutes).
#[cfg(all(unix, feature = "peers"))]
fn curve_secs() -> f64 {
    std::env::var("PIPESVC_BENCH_CURVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Draws each curve into `docs/curves-<curve>-<platform>.svg` and writes
/// the tables and charts into the `curves-` section.
#[cfg(all(unix, feature = "peers"))]
fn write_curves(platform: &Platform, curves: &[curves::Curve], secs: f64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    let names = curves::SERIES.map(curves::Series::name);
    let mut charts = Vec::new();
    for curve in curves {
        let file = format!("curves-{}-{}.svg", curve.key, platform.key);
        let xs: Vec<f64> = curve.points.iter().map(|(x, _)| *x as f64).collect();
        let line = |f: fn(&Measured) -> f64| -> Vec<Vec<f64>> {
            (0..names.len())
                .map(|k| curve.points.iter().map(|(_, m)| f(&m[k])).collect())
                .collect()
        };
        let panels = [
            chart::Panel {
                y_desc: "requests/s",
                values: line(|m| m.requests_per_sec),
            },
            chart::Panel {
                y_desc: "p99 latency, µs",
                values: line(|m| m.p99_us),
            },
        ];
        let title = format!(
            "echo against {} ({}): {}",
            curve.key, curve.fixed, platform.transport
        );
        chart::draw_curves(&dir.join(&file), &title, curve.axis, &names, &xs, &panels);
        eprintln!("wrote docs/{file}");
        charts.push(format!("docs/{file}"));
    }
    let text = curves::render(curves, &charts);
    println!("{text}");
    write_section(platform, "curves-", &text, secs);
}

/// The memory rows (`IDLE`), from one run per contender (`memory.rs`):
/// the server's memory per idle connection at 1000 and 10,000 clients,
/// and the bytes each extra connection adds.
fn memory_rows(runtime: &tokio::runtime::Runtime, platform: &Platform, only: &str) -> Vec<Row> {
    if !IDLE.iter().any(|row| row.contains(only)) {
        return Vec::new();
    }
    let idle = ALL.map(|c| {
        let idle = memory::idle_connections(runtime, c, &platform.address("idle", c));
        let steps = memory::STEPS.iter().zip(idle.per_connection);
        let steps: Vec<String> = steps.map(|(n, b)| format!("{n}: {b:.0}")).collect();
        eprintln!(
            "memory: idle clients {:<13} bytes per connection {}; slope {:.0} bytes per connection",
            c.name(),
            steps.join(", "),
            idle.slope
        );
        idle
    });
    let last = memory::STEPS.len() - 1;
    let row = |workload, metric, value: &dyn Fn(&memory::Idle) -> f64| Row {
        workload,
        metric,
        values: [value(&idle[0]), value(&idle[1]), value(&idle[2])],
        floor: None,
        higher_is_better: false,
    };
    vec![
        row(
            IDLE[0],
            "server memory per connection, bytes (ratio)",
            &|i| i.per_connection[0],
        ),
        row(
            IDLE[1],
            "server memory per connection, bytes (ratio)",
            &|i| i.per_connection[last],
        ),
        row(
            IDLE[2],
            "server memory per extra connection, bytes (ratio)",
            &|i| i.slope,
        ),
    ]
}

const STREAMS: &str = "streams: server streams of 64 B items";

/// Items per second of a server stream of 64-byte items, with 1 and 100
/// streams at once: pipesvc's streaming method, the same items as
/// separate typed calls (16 in flight per connection, as the throughput
/// row), and raw tokio's one frame per item; each with its ratio to raw
/// tokio.
fn streams_table(runtime: &tokio::runtime::Runtime, platform: &Platform, secs: f64) -> String {
    let size = 64;
    let ratios_only = platform.wine.is_some();
    let mut table = String::from(
        "| streams at once | pipesvc stream, items/s | pipesvc typed calls, 16 in flight, items/s \
         | raw tokio stream, one frame per item, items/s |\n",
    );
    table.push_str("|---:|---:|---:|---:|\n");
    for (i, streams) in [1usize, 100].into_iter().enumerate() {
        let address = |who: &str, c| platform.address(&format!("streams{i}-{who}"), c);
        let ours = runtime.block_on(stream::pipesvc_items_per_sec(
            &address("stream", Contender::Pipesvc),
            streams,
            size,
            secs,
        ));
        let calls = Workload {
            name: STREAMS,
            clients: streams,
            inflight: 16,
            size,
            callers: Callers::PerCall,
        };
        let way = typed::Way::Typed(pipesvc::rpc::Encoding::MessagePack);
        let called = runtime
            .block_on(typed::load(
                way,
                &calls,
                &address("calls", Contender::Pipesvc),
                secs,
            ))
            .requests_per_sec;
        let raw = runtime.block_on(stream::raw_items_per_sec(
            &address("raw", Contender::RawTokio),
            streams,
            size,
            secs,
        ));
        eprintln!(
            "{STREAMS:<45} {streams:>3} at once: pipesvc {ours:.0}, calls {called:.0}, raw tokio {raw:.0} items/s"
        );
        let cell = |x: f64| match ratios_only {
            true => format!("{:.2}x", x / raw),
            false => format!("{x:.0} ({:.2}x)", x / raw),
        };
        writeln!(
            table,
            "| {streams} | {} | {} | {} |",
            cell(ours),
            cell(called),
            cell(raw)
        )
        .unwrap();
    }
    table
}

/// The RPC peers' table: pipesvc's typed echo of bytes (MessagePack),
/// raw tokio's byte echo, tonic and tarpc on the latency and throughput
/// workloads; then server streams of 64-byte items. The last two columns
/// are pipesvc's figure over tonic's and over tarpc's (the issue's targets
/// are written that way).
#[cfg(all(unix, feature = "peers"))]
fn peers_table(runtime: &tokio::runtime::Runtime, platform: &Platform, secs: f64) -> String {
    use peers::Peer;
    let mut table = String::from(
        "| workload | metric | pipesvc, typed | raw tokio, bytes | tonic | tarpc \
         | pipesvc / tonic | pipesvc / tarpc |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, w) in [&WORKLOADS[0], &WORKLOADS[PER_CALL]]
        .into_iter()
        .enumerate()
    {
        let name = format!("echo of bytes: {}", w.name.split_once(": ").unwrap().1);
        let address = |who: &str| platform.address(&format!("peers{i}-{who}"), Contender::Pipesvc);
        // pipesvc, raw tokio, tonic, tarpc: in turns, as the main table's.
        let names = [
            "pipesvc",
            "raw tokio",
            Peer::Tonic.name(),
            Peer::Tarpc.name(),
        ];
        let mut samples = names.map(|_| measure::Sample::empty());
        let stretch = secs / SLICES as f64;
        for (slice, who) in in_turn(names.len()) {
            let address = address(&format!("{}-{slice}", names[who]));
            let sample = runtime.block_on(async {
                match who {
                    0 => typed::load_sample(typed::Way::TypedBytes, w, &address, stretch).await,
                    1 => measure::load_sample(Contender::RawTokio, w, &address, stretch).await,
                    2 => peers::load_sample(Peer::Tonic, w, &address, stretch).await,
                    _ => peers::load_sample(Peer::Tarpc, w, &address, stretch).await,
                }
            });
            samples[who].add(sample);
        }
        let [pipesvc, raw, tonic, tarpc] = samples.map(|sample| sample.measured(w.size));
        for (who, m) in names.iter().zip([&pipesvc, &raw, &tonic, &tarpc]) {
            log(&name, who, m);
        }
        let all = [pipesvc, raw, tonic, tarpc];
        let mut row = |metric: &str, f: fn(&Measured) -> f64| {
            let [a, b, c, d] = all.each_ref().map(f);
            let n = |x: f64| match x < 100.0 {
                true => format!("{x:.1}"),
                false => format!("{x:.0}"),
            };
            writeln!(
                table,
                "| {name} | {metric} | {} | {} | {} | {} | {:.2}x | {:.2}x |",
                n(a),
                n(b),
                n(c),
                n(d),
                a / c,
                a / d
            )
            .unwrap();
        };
        row("calls/s", |m| m.requests_per_sec);
        if w.clients == 1 {
            row("p50 latency, µs", |m| m.p50_us);
        }
        row("p99 latency, µs", |m| m.p99_us);
    }
    for streams in [1, 100] {
        let name = format!("server stream: {streams} at once, 64 B items");
        // pipesvc, raw tokio, tonic: in turns; stretches of equal length,
        // so the mean of their rates is the rate over all of them.
        let mut rates = [0.0f64; 3];
        let stretch = secs / SLICES as f64;
        for (slice, who) in in_turn(rates.len()) {
            let name = ["pipesvc", "raw", "tonic"][who];
            let address = |c| platform.address(&format!("stream{streams}-{name}-{slice}"), c);
            let rate = runtime.block_on(async {
                match who {
                    0 => {
                        let address = address(Contender::Pipesvc);
                        stream::pipesvc_items_per_sec(&address, streams, 64, stretch).await
                    }
                    1 => {
                        let address = address(Contender::RawTokio);
                        stream::raw_items_per_sec(&address, streams, 64, stretch).await
                    }
                    _ => {
                        let address = address(Contender::Pipesvc);
                        peers::tonic_items_per_sec(&address, streams, 64, stretch).await
                    }
                }
            });
            rates[who] += rate / SLICES as f64;
        }
        let [ours, raw, tonic] = rates;
        eprintln!(
            "{name:<45} pipesvc {ours:>10.0}, raw tokio {raw:>10.0}, tonic {tonic:>10.0} items/s"
        );
        writeln!(
            table,
            "| {name} | items/s | {ours:.0} | {raw:.0} | {tonic:.0} | n/a (tarpc has no streams) | {:.2}x | n/a |",
            ours / tonic
        )
        .unwrap();
    }
    table
}

const TYPED: &str = "typed: 100 clients, 16 in flight, 64 B";

/// Byte requests, typed MessagePack calls and typed JSON calls on the
/// throughput workload, one server answering all three; each with its
/// ratio to the byte request.
fn typed_table(runtime: &tokio::runtime::Runtime, platform: &Platform, secs: f64) -> String {
    let w = &WORKLOADS[PER_CALL];
    let measured = typed::WAYS.map(|way| {
        let address = platform.address(
            &format!("typed-{}", way.name().replace([',', ' '], "")),
            Contender::Pipesvc,
        );
        let m = runtime.block_on(typed::load(way, w, &address, secs));
        log(TYPED, way.name(), &m);
        m
    });
    let base = measured[0].requests_per_sec;
    let ratios_only = platform.wine.is_some();
    let mut table =
        String::from("| workload | metric | byte request | typed, msgpack | typed, json |\n");
    table.push_str("|---|---|---:|---:|---:|\n");
    let cell = |x: f64| match ratios_only {
        true => format!("{:.2}x", x / base),
        false => format!("{x:.0} ({:.2}x)", x / base),
    };
    let [a, b, c] = measured.map(|m| cell(m.requests_per_sec));
    writeln!(table, "| {TYPED} | requests/s (ratio) | {a} | {b} | {c} |").unwrap();
    let [a, b, c] = measured.map(|m| format!("{:.0}", m.p99_us));
    if !ratios_only {
        writeln!(table, "| {TYPED} | p99 latency, µs | {a} | {b} | {c} |").unwrap();
    }
    table
}

/// How many stretches each contender's time in a row of the main table
/// is cut into, the contenders taking turns (`in_turn`). A shared machine
/// swings by a third over seconds (a neighbour's load comes and goes):
/// measured one after the other, a contender could have all of a quiet
/// spell and the next all of a busy one. In turns, each gets a share of
/// both, and the ratio says more about the code than about the moment.
const SLICES: usize = 3;

/// Connections per stretch of the accept row (`SLICES` of them per
/// contender, in turns).
const ACCEPTS: u32 = 1000;

/// The order a row's stretches run in, as (stretch, contender's index
/// among `n`): each round runs every contender once, the first of one
/// round going last in the next, so that none always follows the same
/// other.
fn in_turn(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..SLICES).flat_map(move |slice| (0..n).map(move |k| (slice, (slice + k) % n)))
}

/// Measures `w` for every contender, in turns; the table rows it makes.
fn run_workload(
    runtime: &tokio::runtime::Runtime,
    platform: &Platform,
    i: usize,
    w: &Workload,
    secs: f64,
) -> Vec<Row> {
    let mut samples = ALL.map(|_| measure::Sample::empty());
    let stretch = secs / SLICES as f64;
    for (slice, who) in in_turn(ALL.len()) {
        let c = ALL[who];
        let address = platform.address(&format!("w{i}-{slice}"), c);
        samples[who].add(runtime.block_on(measure::load_sample(c, w, &address, stretch)));
    }
    let r = samples.map(|sample| sample.measured(w.size));
    for (c, m) in ALL.iter().zip(&r) {
        log(w.name, c.name(), m);
    }
    let pick = |f: fn(&Measured) -> f64| [f(&r[0]), f(&r[1]), f(&r[2])];
    if w.clients == 1 {
        let floor = measure::std_blocking(w.size, secs, &platform.scratch);
        if let Some(m) = &floor {
            log(w.name, "std blocking", m);
        }
        let p99 = |m: &Measured| m.p99_us;
        let p50 = |m: &Measured| m.p50_us;
        let latency = |metric, f: fn(&Measured) -> f64| Row {
            workload: w.name,
            metric,
            values: pick(f),
            floor: floor.as_ref().map(f),
            higher_is_better: false,
        };
        vec![
            latency("p99 latency, µs (ratio)", p99),
            latency("p50 latency, µs (ratio)", p50),
        ]
    } else if w.size >= 1 << 20 {
        vec![Row {
            workload: w.name,
            metric: "MB/s (ratio)",
            values: pick(|m| m.mb_per_sec),
            floor: None,
            higher_is_better: true,
        }]
    } else {
        // The p99 under load is a target of its own (issue 23): a row, not
        // only the log line.
        vec![
            Row {
                workload: w.name,
                metric: "requests/s (ratio)",
                values: pick(|m| m.requests_per_sec),
                floor: None,
                higher_is_better: true,
            },
            Row {
                workload: w.name,
                metric: "p99 latency, µs (ratio)",
                values: pick(|m| m.p99_us),
                floor: None,
                higher_is_better: false,
            },
        ]
    }
}

fn log(workload: &str, contender: &str, m: &Measured) {
    eprintln!(
        "{workload:<45} {contender:<13} {:>10.0} req/s {:>9.1} MB/s p50 {:>8.1} µs p99 {:>8.1} µs",
        m.requests_per_sec, m.mb_per_sec, m.p50_us, m.p99_us
    );
}

/// The table: each value with its ratio to raw tokio (or the ratio alone),
/// then the floor.
fn render(rows: &[Row], ratios_only: bool) -> String {
    let mut table = String::new();
    writeln!(
        table,
        "| workload | metric | pipesvc | raw tokio | interprocess | std blocking |"
    )
    .unwrap();
    writeln!(table, "|---|---|---:|---:|---:|---:|").unwrap();
    for row in rows {
        let base = row.values[1];
        let number = |x: f64| match x {
            x if x < 100.0 => format!("{x:.1}"),
            x => format!("{x:.0}"),
        };
        let cell = |x: f64| match base {
            base if base > 0.0 && ratios_only => format!("{:.2}x", x / base),
            base if base > 0.0 => format!("{} ({:.2}x)", number(x), x / base),
            _ => number(x),
        };
        let floor = row.floor.map_or("n/a".to_string(), number);
        let [a, b, c] = row.values.map(cell);
        writeln!(
            table,
            "| {} | {} | {a} | {b} | {c} | {floor} |",
            row.workload, row.metric
        )
        .unwrap();
    }
    table
}

/// Replaces this platform's section of `BENCHMARKS.md` (the other
/// platform's stays as its last run left it); `kind` is "" for the
/// comparison, "typed-" for the typed calls, "streams-" for the server
/// streams, "peers-" for the RPC frameworks, "curves-" for the scaling
/// curves.
fn write_section(platform: &Platform, kind: &str, table: &str, secs: f64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let (start, end) = (
        format!("<!-- compare:{kind}{} -->", platform.key),
        format!("<!-- /compare:{kind}{} -->", platform.key),
    );
    let (os, how, only) = match &platform.wine {
        Some(version) => (
            format!("Windows build under Wine {version}"),
            "scripts/bench-windows.sh",
            "; ratios only: Wine's absolute speed says nothing about Windows",
        ),
        None => (
            std::env::consts::OS.to_owned(),
            "cargo bench --bench compare",
            "",
        ),
    };
    let chart = match kind {
        "" => format!("\n![chart](docs/bench-{}.svg)", platform.key),
        _ => String::new(),
    };
    let title = match kind {
        "" => "",
        "typed-" => "Typed calls next to byte requests, ",
        "streams-" => "Server streams of 64 B items, ",
        "curves-" => "Scaling curves, ",
        _ => "Typed calls next to the RPC frameworks, ",
    };
    let once = match kind {
        "peers-" => {
            " The contenders of each row take turns, a third of their time at a time. \
             One run: compare the ratios within it, not the absolute figures across runs."
        }
        "curves-" => {
            " One run: compare the ratios within it, not the absolute figures across runs."
        }
        "" => {
            " The contenders of each row take turns, a third of their time (a \
             third of their connections for accept) at a time."
        }
        _ => "",
    };
    let section = format!(
        "{start}\n## {title}{}: {os}\n\n\
         Written by `{how}` ({secs} s per measurement, {} cores){only}.{once}\n\n\
         {table}{chart}\n{end}",
        platform.transport,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let text = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &old[..a], &old[b + end.len()..])
        }
        _ if old.is_empty() => format!("# Benchmarks\n\n{section}\n"),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(&path, text).expect("write BENCHMARKS.md");
    eprintln!("wrote {}", path.display());
}

fn draw(platform: &Platform, rows: &[Row]) {
    let groups: Vec<chart::Group> = rows
        .iter()
        .map(|row| {
            let base = row.values[1];
            let load = row.workload.split(':').next().unwrap_or(row.workload);
            // The latency workload's bars are named by their metric; a
            // latency under another load by both.
            let label = match row.metric.split(',').next() {
                Some(metric) if row.metric.contains("latency") && load == "latency" => {
                    metric.to_owned()
                }
                Some(metric) if row.metric.contains("latency") => format!("{load}, {metric}"),
                _ => load.to_owned(),
            };
            chart::Group {
                label,
                ratios: row
                    .values
                    .iter()
                    .map(|&x| match (x > 0.0, row.higher_is_better) {
                        (false, _) => None,
                        (true, true) => Some(x / base),
                        (true, false) => Some(base / x),
                    })
                    .collect(),
            }
        })
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("bench-{}.svg", platform.key));
    let title = format!(
        "pipesvc vs raw tokio vs interprocess: {}",
        platform.transport
    );
    let names = ALL.map(Contender::name);
    chart::draw(&path, &title, &names, &groups);
    eprintln!("wrote {}", path.display());
}
