//! `pipesvc bench`: a load generator, against a running service or one it
//! starts in the same process.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use pipesvc::server::{ConnectionContext, Server, ServiceError};
use pipesvc::{Client, Endpoint};
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
    elapsed: Duration,
    latency: Histogram<u64>,
}

pub async fn run(args: BenchArgs) -> pipesvc::Result<()> {
    if args.clients == 0 || args.inflight == 0 {
        return Err(pipesvc::Error::config(
            "--clients/--inflight",
            "must be at least 1",
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
    let outcome = load(&endpoint, &args).await?;
    if let Some(server) = own_server {
        server.stop().await;
    }
    report(&args, &outcome);
    Ok(())
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
/// request count is reached.
async fn load(endpoint: &Endpoint, args: &BenchArgs) -> pipesvc::Result<Outcome> {
    let limit = Duration::from_secs_f64(args.timeout);
    let clients = connect_all(endpoint, args, limit).await?;
    let payload = Bytes::from(vec![0xA5u8; args.size]);
    let started = Arc::new(AtomicU64::new(0));
    let budget = args.requests.unwrap_or(u64::MAX);
    let deadline = match args.requests {
        Some(_) => None,
        None => Some(Instant::now() + Duration::from_secs_f64(args.duration)),
    };
    let progress = progress_bar(args);
    let start = Instant::now();
    let loops: Vec<_> = clients
        .iter()
        .flat_map(|client| (0..args.inflight).map(move |_| client.clone()))
        .map(|client| {
            let (payload, started, progress) = (payload.clone(), started.clone(), progress.clone());
            tokio::spawn(async move {
                let mut latency = new_histogram();
                let mut errors = 0u64;
                let mut last_sent = None;
                // Each loop claims a request from the shared budget before
                // sending it, so `--requests N` sends exactly N.
                while started.fetch_add(1, Ordering::Relaxed) < budget {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let sent = Instant::now();
                    last_sent = Some(sent);
                    match client.request(payload.clone()).await {
                        Ok(_) => latency.saturating_record(sent.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                    progress.inc(1);
                }
                (latency, errors, last_sent)
            })
        })
        .collect();
    let mut last_sent = None;
    let mut outcome = Outcome {
        requests: 0,
        errors: 0,
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
    outcome.elapsed = start.elapsed();
    outcome.requests = outcome.latency.len() + outcome.errors;
    progress.finish_and_clear();
    // The last request was answered (or failed) within --timeout of being
    // sent: the close fits in what is left of that.
    close_all(&clients, last_sent.unwrap_or_else(Instant::now) + limit).await;
    Ok(outcome)
}

/// Connects `--clients` clients at once: together within
/// `--connect-timeout` + `--timeout`, as each is.
async fn connect_all(
    endpoint: &Endpoint,
    args: &BenchArgs,
    limit: Duration,
) -> pipesvc::Result<Vec<Client>> {
    let connect = Duration::from_secs_f64(args.connect_timeout);
    let options = client_options(connect, limit, args.identity.server_identity()?);
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
    println!(
        "{} clients x {} in flight, {} B payloads: {} requests ({} failed) in {:.2} s",
        args.clients, args.inflight, args.size, outcome.requests, outcome.errors, secs
    );
    println!("{requests_per_sec:.0} requests/s, {mb_per_sec:.2} MB/s");
    println!("latency: p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs");
    if args.json {
        println!(
            "{{\"requests_per_sec\":{requests_per_sec:.1},\"mb_per_sec\":{mb_per_sec:.3},\
             \"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999},\"requests\":{},\
             \"errors\":{},\"clients\":{},\"inflight\":{},\"size\":{},\"seconds\":{secs:.3}}}",
            outcome.requests, outcome.errors, args.clients, args.inflight, args.size
        );
    }
}
