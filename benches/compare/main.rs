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
//! Knobs: `PIPESVC_BENCH_SECS` (seconds per measurement, default 3);
//! `PIPESVC_BENCH_ONLY=throughput` runs only the workloads whose name
//! contains that text and prints the table without writing anything;
//! `PIPESVC_BENCH_ONLY=typed` (or `streams`) runs only the typed (or the
//! streams) table and rewrites its section.
//!
//! A third table streams 64-byte items from the server (`stream.rs`): a
//! pipesvc server streaming method, the same items as separate typed calls,
//! and raw tokio's one frame per item, with 1 and 100 streams at once.

mod chart;
mod contender;
mod count;
mod measure;
mod memory;
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
}

const WORKLOADS: [Workload; 3] = [
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
    let secs: f64 = std::env::var("PIPESVC_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let only = std::env::var("PIPESVC_BENCH_ONLY").unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let platform = Platform::current();

    let mut rows = Vec::new();
    for (i, workload) in WORKLOADS.iter().enumerate() {
        if workload.name.contains(only.as_str()) {
            rows.extend(run_workload(&runtime, &platform, i, workload, secs));
        }
    }
    if ACCEPT.contains(only.as_str()) {
        let rates = ALL.map(|c| {
            let address = platform.address("connect", c);
            let rate = runtime.block_on(measure::accept_rate(c, &address, 1000));
            eprintln!("{ACCEPT:<45} {:<13} {rate:>10.0} connections/s", c.name());
            rate
        });
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
    drop(runtime);
    let _ = std::fs::remove_dir_all(&platform.scratch);

    let table = render(&rows, platform.wine.is_some());
    println!("{table}");
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

const TYPED: &str = "typed: 100 clients, 16 in flight, 64 B";

/// Byte requests, typed MessagePack calls and typed JSON calls on the
/// throughput workload, one server answering all three; each with its
/// ratio to the byte request.
fn typed_table(runtime: &tokio::runtime::Runtime, platform: &Platform, secs: f64) -> String {
    let w = &WORKLOADS[1];
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

/// Measures `w` for every contender; the table rows it makes.
fn run_workload(
    runtime: &tokio::runtime::Runtime,
    platform: &Platform,
    i: usize,
    w: &Workload,
    secs: f64,
) -> Vec<Row> {
    let r: Vec<Measured> = ALL
        .iter()
        .map(|&c| {
            let address = platform.address(&format!("w{i}"), c);
            let m = runtime.block_on(measure::load(c, w, &address, secs));
            log(w.name, c.name(), &m);
            m
        })
        .collect();
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
    } else {
        let (metric, f): (_, fn(&Measured) -> f64) = if w.size >= 1 << 20 {
            ("MB/s (ratio)", |m| m.mb_per_sec)
        } else {
            ("requests/s (ratio)", |m| m.requests_per_sec)
        };
        vec![Row {
            workload: w.name,
            metric,
            values: pick(f),
            floor: None,
            higher_is_better: true,
        }]
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
/// streams.
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
        "streams-" => "Server streams of 64 B items, ",
        _ => "Typed calls next to byte requests, ",
    };
    let section = format!(
        "{start}\n## {title}{}: {os}\n\n\
         Written by `{how}` ({secs} s per measurement, {} cores){only}.\n\n\
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
            let label = row.workload.split(':').next().unwrap_or(row.workload);
            let label = match row.metric.split(',').next() {
                Some(metric) if row.metric.contains("latency") => metric.to_owned(),
                _ => label.to_owned(),
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
