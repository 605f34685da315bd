//! `pipesvc bench`: a load generator, against a running service or one it
//! starts in the same process.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use pipesvc::client::CallOptions;
use pipesvc::protocol::Encoding;
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::{Client, ClientOptions, Endpoint, Error};
use tokio::time::Instant;

use crate::session::{client_options, parse_seconds, parse_timeout};

/// Latencies are recorded in microseconds, from 1 µs to 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Load this running service; without it, bench starts its own echo
    /// server in this process.
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 1)]
    inflight: u32,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5.0, conflicts_with = "requests")]
    duration: f64,
    /// Stop after this many requests instead of after a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Print one JSON object with the results as the last line.
    #[arg(long)]
    json: bool,
    /// Every request on a fresh connection: connect, one request, close;
    /// --clients such loops at once. The request goes out right behind the
    /// client's HELLO, before the server's is read (the client option
    /// `send_first`: connect and answer in one round trip; a request or
    /// call over 68 bytes waits for the server's HELLO). Measures how fast
    /// the service takes connections (`connections_per_sec` in --json);
    /// the latency shown is that of the whole connect, request and close.
    /// --inflight must be 1.
    #[arg(long)]
    connect: bool,
    /// Make typed calls of this method (protocol 2) instead of byte
    /// requests, with --params; the server must offer it (bench's own
    /// server offers `pipesvc serve`'s methods: echo, sleep, whoami).
    #[arg(long, value_name = "METHOD")]
    method: Option<String>,
    /// The params of every call, as JSON, sent in the encoding the client
    /// and server agree on (MessagePack when the server offers it).
    /// Default: a string of --size characters.
    #[arg(long, value_name = "JSON", requires = "method")]
    params: Option<String>,
    /// Seconds to keep trying to reach the service while it is busy or
    /// not there yet.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    connect_timeout: f64,
    /// Seconds any one wait may take once connected: the clients'
    /// handshakes (all clients connect at once, within --connect-timeout +
    /// --timeout), each request's answer (one past it counts as failed).
    /// The close fits in what is left of --timeout after the last request
    /// was sent: with --duration, the load and the close end within
    /// --duration + --timeout.
    #[arg(long, default_value_t = 10.0, value_parser = parse_timeout)]
    timeout: f64,
    #[command(flatten)]
    identity: crate::identity::IdentityArgs,
}

/// What the run produced.
struct Outcome {
    requests: u64,
    errors: u64,
    /// The first failure, shown when every request failed.
    first_error: Option<String>,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// What each request is: a byte request, or a typed call whose params are
/// encoded once the first client knows the encoding.
#[derive(Clone)]
enum Work {
    Bytes(Bytes),
    Call {
        method: Arc<str>,
        encoding: Encoding,
        params: Bytes,
    },
}

impl Work {
    /// The work `args` ask for, with `client`'s encoding for a call.
    fn new(args: &BenchArgs, client: &Client) -> pipesvc::Result<Work> {
        let Some(method) = &args.method else {
            return Ok(Work::Bytes(Bytes::from(vec![0xA5u8; args.size])));
        };
        let params: serde_json::Value = match &args.params {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| Error::config("--params", format!("not JSON: {e}")))?,
            None => serde_json::Value::String("x".repeat(args.size)),
        };
        let encoding = client.encoding();
        let params = match encoding {
            Encoding::MessagePack => rmp_serde::to_vec_named(&params)
                .map_err(|e| Error::config("--params", e.to_string()))?,
            _ => serde_json::to_vec(&params).expect("a JSON value always serializes"),
        };
        Ok(Work::Call {
            method: method.as_str().into(),
            encoding,
            params: params.into(),
        })
    }

    /// Sends one request (or call) on `client` and waits for its answer.
    async fn once(&self, client: &Client) -> pipesvc::Result<()> {
        match self {
            Work::Bytes(payload) => client.request(payload.clone()).await.map(drop),
            Work::Call {
                method,
                encoding,
                params,
            } => {
                let options = CallOptions::new();
                let call = client.call_raw(method, *encoding, params, &options);
                call.await.map(drop)
            }
        }
    }
}

pub async fn run(args: BenchArgs) -> pipesvc::Result<ExitCode> {
    if args.clients == 0 || args.inflight == 0 {
        return Err(pipesvc::Error::config(
            "--clients/--inflight",
            "must be at least 1",
        ));
    }
    if args.connect && args.inflight != 1 {
        return Err(pipesvc::Error::config(
            "--inflight",
            "must be 1 with --connect (each request has a connection of its own)",
        ));
    }
    let own_server = match &args.name {
        Some(_) => None,
        None => Some(start_echo_server()?),
    };
    let endpoint = match (&args.name, &own_server) {
        (Some(name), _) => name.parse()?,
        (None, Some(server)) => server.endpoint.clone(),
        (None, None) => unreachable!("a server was started above"),
    };
    let outcome = match args.connect {
        true => load_connecting(&endpoint, &args).await,
        false => load(&endpoint, &args).await,
    };
    if let Some(server) = own_server {
        server.stop().await;
    }
    let outcome = outcome?;
    report(&args, &outcome);
    if outcome.requests > 0 && outcome.latency.is_empty() {
        let first = outcome.first_error.as_deref().unwrap_or("unknown");
        crate::output::error(&format!(
            "error: every request failed ({} of {}); the first: {first}",
            outcome.errors, outcome.requests
        ));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// An echo server on a fresh endpoint, served in the background.
/// The echo server `bench` starts in its own process when not given one.
struct OwnServer {
    endpoint: Endpoint,
    handle: pipesvc::server::ServerHandle,
    task: tokio::task::JoinHandle<pipesvc::Result<()>>,
}

impl OwnServer {
    /// Shuts the server down and waits until every connection is closed:
    /// the process must not exit with pipe operations still pending (Wine
    /// does not always finish cancelling them, and the exit hangs).
    async fn stop(self) {
        self.handle.shutdown();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the bench server task failed");
        }
    }
}

fn start_echo_server() -> pipesvc::Result<OwnServer> {
    let endpoint: Endpoint = format!("pipesvc-bench-{}", std::process::id()).parse()?;
    let server = Server::builder(endpoint.clone())
        .handler(
            |request: Bytes, _ctx: ConnectionContext| async move { Ok::<_, ServiceError>(request) },
        )
        .calls(crate::serve_methods::service())
        .bind()?;
    let handle = server.handle();
    let task = tokio::spawn(server.serve());
    Ok(OwnServer {
        endpoint,
        handle,
        task,
    })
}

/// Runs `clients` x `inflight` request loops until the duration or the
/// request count is reached: one task per client, holding its `inflight`
/// loops. A task per loop would add tokio's scheduling of 16 times the
/// tasks (at 16 in flight) to the latencies measured: at 100 x 16 the p99
/// was 3.5 to 4.8 times as long (BENCHMARKS.md, "A task per call").
async fn load(endpoint: &Endpoint, args: &BenchArgs) -> pipesvc::Result<Outcome> {
    let limit = Duration::from_secs_f64(args.timeout);
    let clients = connect_all(endpoint, args, limit).await?;
    let work = Work::new(args, &clients[0])?;
    let plan = Plan::new(args);
    let loops: Vec<_> = clients
        .iter()
        .map(|client| {
            let (work, plan, client) = (work.clone(), plan.clone(), client.clone());
            let inflight = args.inflight;
            tokio::spawn(async move {
                let loops = (0..inflight).map(|_| plan.run(|| work.once(&client)));
                let done = futures_util::future::join_all(loops).await;
                done.into_iter()
                    .reduce(merge)
                    .expect("--inflight is at least 1")
            })
        })
        .collect();
    let (outcome, last_sent) = plan.gather(loops).await?;
    // The last request was answered (or failed) within --timeout of being
    // sent: the close fits in what is left of that.
    close_all(&clients, last_sent.unwrap_or_else(Instant::now) + limit).await;
    Ok(outcome)
}

/// `--connect`: `--clients` loops, each connecting, making one request and
/// closing, again and again.
async fn load_connecting(endpoint: &Endpoint, args: &BenchArgs) -> pipesvc::Result<Outcome> {
    let limit = Duration::from_secs_f64(args.timeout);
    let options = options(args, limit)?;
    // One connection first, to learn the encoding for a typed call's params.
    let first = Client::connect_with(endpoint, options.clone()).await?;
    let work = Work::new(args, &first)?;
    first.close().await;
    // Each loop's connection sends its request right behind its HELLO
    // (`send_first`): connect and answer in one round trip, as a client
    // that connects, asks once and goes would be written.
    let options = options.send_first(true);
    let plan = Plan::new(args);
    let loops: Vec<_> = (0..args.clients)
        .map(|_| {
            let (work, plan) = (work.clone(), plan.clone());
            let (endpoint, options) = (endpoint.clone(), options.clone());
            tokio::spawn(async move {
                plan.run(|| async {
                    let client = Client::connect_with(&endpoint, options.clone()).await?;
                    let answered = work.once(&client).await;
                    client.close().await;
                    answered
                })
                .await
            })
        })
        .collect();
    Ok(plan.gather(loops).await?.0)
}

/// When the loops stop (a count or a time), shared by all of them.
#[derive(Clone)]
struct Plan {
    started: Arc<AtomicU64>,
    budget: u64,
    deadline: Option<Instant>,
    progress: ProgressBar,
    first_error: Arc<Mutex<Option<String>>>,
    start: Instant,
}

/// What one loop measured: latencies, failures, when it last sent.
type LoopResult = (Histogram<u64>, u64, Option<Instant>);

/// What two loops measured together.
fn merge(mut a: LoopResult, b: LoopResult) -> LoopResult {
    a.0.add(&b.0).expect("histograms share their bounds");
    (a.0, a.1 + b.1, a.2.max(b.2))
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        Plan {
            started: Arc::new(AtomicU64::new(0)),
            budget: args.requests.unwrap_or(u64::MAX),
            deadline: match args.requests {
                Some(_) => None,
                None => Some(Instant::now() + Duration::from_secs_f64(args.duration)),
            },
            progress: progress_bar(args),
            first_error: Arc::default(),
            start: Instant::now(),
        }
    }

    /// One loop: `once` until the budget or the time is spent.
    async fn run<F, Fut>(&self, mut once: F) -> LoopResult
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = pipesvc::Result<()>>,
    {
        let mut latency = new_histogram();
        let mut errors = 0u64;
        let mut last_sent = None;
        // Each loop claims a request from the shared budget before sending
        // it, so `--requests N` sends exactly N.
        while self.started.fetch_add(1, Ordering::Relaxed) < self.budget {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let sent = Instant::now();
            last_sent = Some(sent);
            match once().await {
                Ok(()) => latency.saturating_record(sent.elapsed().as_micros() as u64),
                Err(e) => {
                    errors += 1;
                    let mut first = self.first_error.lock().expect("not poisoned");
                    first.get_or_insert_with(|| {
                        let report = pipesvc::ops::error_report(&e);
                        report.trim_start_matches("error: ").to_owned()
                    });
                }
            }
            self.progress.inc(1);
        }
        (latency, errors, last_sent)
    }

    /// Waits for every loop and adds up what they measured; the outcome
    /// and when the last request was sent.
    async fn gather(
        &self,
        loops: Vec<tokio::task::JoinHandle<LoopResult>>,
    ) -> pipesvc::Result<(Outcome, Option<Instant>)> {
        let mut last_sent = None;
        let mut outcome = Outcome {
            requests: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
        };
        for task in loops {
            let (latency, errors, sent) = task.await.map_err(std::io::Error::other)?;
            last_sent = last_sent.max(sent);
            outcome
                .latency
                .add(&latency)
                .expect("histograms share their bounds");
            outcome.errors += errors;
        }
        outcome.elapsed = self.start.elapsed();
        outcome.requests = outcome.latency.len() + outcome.errors;
        outcome.first_error = self.first_error.lock().expect("not poisoned").take();
        self.progress.finish_and_clear();
        Ok((outcome, last_sent))
    }
}

/// The clients' options: `--connect-timeout`, `--timeout` and who the
/// server must be.
fn options(args: &BenchArgs, limit: Duration) -> pipesvc::Result<ClientOptions> {
    let connect = Duration::from_secs_f64(args.connect_timeout);
    Ok(client_options(
        connect,
        limit,
        args.identity.server_identity()?,
    ))
}

/// Connects `--clients` clients at once: together within
/// `--connect-timeout` + `--timeout`, as each is.
async fn connect_all(
    endpoint: &Endpoint,
    args: &BenchArgs,
    limit: Duration,
) -> pipesvc::Result<Vec<Client>> {
    let options = options(args, limit)?;
    let connects = (0..args.clients).map(|_| Client::connect_with(endpoint, options.clone()));
    futures_util::future::try_join_all(connects).await
}

/// Closes every client at once, by `deadline`; those still closing then
/// are dropped (aborted).
async fn close_all(clients: &[Client], deadline: Instant) {
    let closes = futures_util::future::join_all(clients.iter().map(Client::close));
    if tokio::time::timeout_at(deadline, closes).await.is_err() {
        tracing::debug!("no time left to close every client gracefully; aborting");
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// A progress bar on a terminal; hidden otherwise and with `--json`.
fn progress_bar(args: &BenchArgs) -> ProgressBar {
    if args.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match args.requests {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {pos} requests ({per_sec}) {wide_bar}",
    )
    .expect("valid template");
    bar.set_style(style);
    bar
}

fn report(args: &BenchArgs, outcome: &Outcome) {
    let secs = outcome.elapsed.as_secs_f64().max(f64::EPSILON);
    let answered = outcome.latency.len();
    let requests_per_sec = answered as f64 / secs;
    // Payload bytes carried both ways: the request and its echo.
    let mb_per_sec = (answered as f64 * args.size as f64 * 2.0) / secs / 1e6;
    let (p50, p99, p999) = (
        outcome.latency.value_at_quantile(0.5),
        outcome.latency.value_at_quantile(0.99),
        outcome.latency.value_at_quantile(0.999),
    );
    let what = match &args.method {
        Some(method) => format!(
            "calls of {}",
            crate::output::field(method, crate::output::NAME_SHOWN)
        ),
        None => format!("{} B payloads", args.size),
    };
    let fresh = if args.connect {
        ", a connection each"
    } else {
        ""
    };
    println!(
        "{} clients x {} in flight, {what}{fresh}: {} requests ({} failed) in {:.2} s",
        args.clients, args.inflight, outcome.requests, outcome.errors, secs
    );
    println!("{requests_per_sec:.0} requests/s, {mb_per_sec:.2} MB/s");
    if args.connect {
        println!("{requests_per_sec:.0} connections/s (connect, request, close)");
    }
    println!("latency: p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs");
    if args.json {
        // Each answered request had a connection of its own.
        let connections = match args.connect {
            true => format!(",\"connections_per_sec\":{requests_per_sec:.1}"),
            false => String::new(),
        };
        let method = match &args.method {
            Some(m) => format!(",\"method\":{}", serde_json::Value::from(m.as_str())),
            None => String::new(),
        };
        println!(
            "{{\"requests_per_sec\":{requests_per_sec:.1},\"mb_per_sec\":{mb_per_sec:.3},\
             \"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999},\"requests\":{},\
             \"errors\":{},\"clients\":{},\"inflight\":{},\"size\":{},\"seconds\":{secs:.3}\
             {connections}{method}}}",
            outcome.requests, outcome.errors, args.clients, args.inflight, args.size
        );
    }
}
