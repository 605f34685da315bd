//! Scaling curves (Unix only: tonic and tarpc run on Unix sockets here):
//! requests per second and p99 latency of an echo, for each contender,
//!
//! - against the number of clients ([`CLIENTS`], 64 B payloads, one
//!   request in flight per client: the load grows with the connections
//!   alone, and no contender drowns in a queue it cannot drain within a
//!   short measurement);
//! - against the payload size ([`SIZES`], 8 clients with one request in
//!   flight each, as the bandwidth row).
//!
//! The contenders are pipesvc's byte request, pipesvc's typed `echo` of
//! bytes (MessagePack bin, as the RPC frameworks carry bytes), raw tokio's
//! byte echo, tonic and tarpc. Every one accepts frames of
//! [`crate::contender::MAX_FRAME`] (16 MiB): pipesvc's default 8 MiB limit
//! counts its frame header too, so an 8 MiB payload does not fit under it,
//! and tonic's default 4 MiB message limit is raised as well.
//!
//! `PIPESVC_BENCH_ONLY=curves` runs them alone, each point for
//! `PIPESVC_BENCH_CURVE_SECS` (default 1 s), and rewrites the
//! `curves-unix` section of `BENCHMARKS.md` and `docs/curves-*.svg`.

use std::fmt::Write as _;

use crate::contender::Contender;
use crate::measure::{self, Measured};
use crate::peers::{self, Peer};
use crate::typed;
use crate::{Callers, Workload};

/// The clients of the first curve.
pub const CLIENTS: [usize; 5] = [1, 10, 100, 1000, 5000];
/// The payload sizes of the second curve.
pub const SIZES: [usize; 5] = [64, 1 << 10, 64 << 10, 1 << 20, 8 << 20];
/// Requests in flight per client on the clients curve.
const CLIENTS_INFLIGHT: usize = 1;
/// Clients on the payload curve (one request in flight each).
const SIZE_CLIENTS: usize = 8;

/// One line of the charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    PipesvcBytes,
    PipesvcTyped,
    RawTokio,
    Tonic,
    Tarpc,
}

/// Every line, in the tables' column order.
pub const SERIES: [Series; 5] = [
    Series::PipesvcBytes,
    Series::PipesvcTyped,
    Series::RawTokio,
    Series::Tonic,
    Series::Tarpc,
];

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Series::PipesvcBytes => "pipesvc, bytes",
            Series::PipesvcTyped => "pipesvc, typed",
            Series::RawTokio => "raw tokio",
            Series::Tonic => "tonic",
            Series::Tarpc => "tarpc",
        }
    }

    /// Measures `w` on this series' server at a fresh `address`.
    async fn load(self, w: &Workload, address: &str, secs: f64) -> Measured {
        match self {
            Series::PipesvcBytes => measure::load(Contender::Pipesvc, w, address, secs).await,
            Series::PipesvcTyped => typed::load(typed::Way::TypedBytes, w, address, secs).await,
            Series::RawTokio => measure::load(Contender::RawTokio, w, address, secs).await,
            Series::Tonic => peers::load(Peer::Tonic, w, address, secs).await,
            Series::Tarpc => peers::load(Peer::Tarpc, w, address, secs).await,
        }
    }
}

/// One curve: what varies, and each point's measurement per series.
pub struct Curve {
    /// "clients" or "payload".
    pub key: &'static str,
    /// The x axis' description.
    pub axis: &'static str,
    /// The fixed part of the load, for the tables and charts.
    pub fixed: &'static str,
    pub points: Vec<(usize, [Measured; 5])>,
}

impl Curve {
    /// The x value as the table shows it.
    pub fn label(&self, x: usize) -> String {
        match self.key {
            "payload" => size_label(x),
            _ => x.to_string(),
        }
    }
}

/// "64 B", "1 KiB", "8 MiB".
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Measures both curves; `address` gives a fresh socket path for a name.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    address: &dyn Fn(&str) -> String,
    secs: f64,
) -> [Curve; 2] {
    // 5000 clients are 10,000 sockets in this process.
    crate::memory::raise_fd_limit();
    let mut clients = Curve {
        key: "clients",
        axis: "clients",
        fixed: "64 B, 1 request in flight per client",
        points: Vec::new(),
    };
    for n in CLIENTS {
        let w = Workload {
            name: "curve: clients",
            clients: n,
            inflight: CLIENTS_INFLIGHT,
            size: 64,
            callers: Callers::PerClient,
        };
        let at = format!("{n} clients");
        clients
            .points
            .push((n, point(runtime, address, &w, &at, secs)));
    }
    let mut payload = Curve {
        key: "payload",
        axis: "payload size, bytes",
        fixed: "8 clients, 1 request in flight each",
        points: Vec::new(),
    };
    for size in SIZES {
        let w = Workload {
            name: "curve: payload",
            clients: SIZE_CLIENTS,
            inflight: 1,
            size,
            callers: Callers::PerClient,
        };
        let at = size_label(size);
        payload
            .points
            .push((size, point(runtime, address, &w, &at, secs)));
    }
    [clients, payload]
}

/// Every series on `w`.
fn point(
    runtime: &tokio::runtime::Runtime,
    address: &dyn Fn(&str) -> String,
    w: &Workload,
    at: &str,
    secs: f64,
) -> [Measured; 5] {
    SERIES.map(|s| {
        let name = format!("curve{}-{}-{}", w.clients, w.size, s.name());
        let m = runtime.block_on(s.load(w, &address(&name.replace([',', ' '], "")), secs));
        crate::log(&format!("curve: {at}"), s.name(), &m);
        m
    })
}

/// One figure of a measurement.
type Metric = fn(&Measured) -> f64;

/// The section's text: a table per curve, each followed by its chart.
pub fn render(curves: &[Curve], charts: &[String]) -> String {
    let mut text = String::new();
    for (curve, chart) in curves.iter().zip(charts) {
        writeln!(text, "### Against {} ({})\n", curve.key, curve.fixed).unwrap();
        write!(text, "| {} | metric |", curve.key).unwrap();
        for s in SERIES {
            write!(text, " {} |", s.name()).unwrap();
        }
        writeln!(text, " pipesvc typed / tonic | pipesvc typed / tarpc |").unwrap();
        writeln!(text, "|---:|---|{}---:|---:|", "---:|".repeat(SERIES.len())).unwrap();
        for (x, values) in &curve.points {
            let metrics: [(&str, Metric); 2] = [
                ("requests/s", |m| m.requests_per_sec),
                ("p99 latency, µs", |m| m.p99_us),
            ];
            for (metric, f) in metrics {
                write!(text, "| {} | {metric} |", curve.label(*x)).unwrap();
                let v = values.each_ref().map(f);
                for x in v {
                    match x < 100.0 {
                        true => write!(text, " {x:.1} |").unwrap(),
                        false => write!(text, " {x:.0} |").unwrap(),
                    }
                }
                let ratio = |a: f64, b: f64| match b > 0.0 {
                    true => format!("{:.2}x", a / b),
                    false => "n/a".to_owned(),
                };
                writeln!(text, " {} | {} |", ratio(v[1], v[3]), ratio(v[1], v[4])).unwrap();
            }
        }
        writeln!(text, "\n![{} curve]({chart})\n", curve.key).unwrap();
    }
    text
}
