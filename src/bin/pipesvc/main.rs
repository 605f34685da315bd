//! `pipesvc`: run the service, or talk to one. A thin layer of clap
//! commands over the library: `serve` and `service` are
//! [`pipesvc::ops`] with the echo handler; the client commands use
//! [`pipesvc::Client`].

mod bench;
mod call;
mod echo;
mod identity;
mod methods;
mod output;
mod ping;
mod serve_methods;
mod session;
mod status;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pipesvc::ops::config::ServeArgs;
use pipesvc::ops::logging::{self, LogFormat};
use pipesvc::ops::windows_service::{self, ServiceArgs};
use pipesvc::ops::{Product, WithCalls};

use crate::echo::EchoService;

/// Local IPC services over named pipes (Windows) and Unix domain sockets.
#[derive(Parser, Debug)]
#[command(name = "pipesvc", version, about)]
struct Cli {
    /// How log lines (on stderr) are written: `text` for people, `json`
    /// (one object per line) for log collectors. Also
    /// PIPESVC_LOG_FORMAT [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: echoes every request, greets each client, offers
    /// the typed methods echo, sleep and whoami, the streams count and
    /// lines, and publishes the topic ticks.
    Serve(ServeArgs),
    /// Send MESSAGE as one request and print the response; with --method,
    /// call a typed method with JSON params and print its JSON result.
    Call(call::CallArgs),
    /// List a running service's typed methods and topics (with --json:
    /// its whole description, with the JSON Schemas of params and results).
    Methods(methods::MethodsArgs),
    /// Measure round-trip times to a running service.
    Ping(ping::PingArgs),
    /// Load a service (or one started in this process) and report
    /// requests/s, MB/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Print a topic's events as they are published, one JSON line each,
    /// until interrupted (--count N: stop after N); resubscribes across a
    /// service restart.
    Watch(watch::WatchArgs),
    /// Show a running service's counters: uptime, connections, requests
    /// served, errors by code, bytes in and out.
    Status(status::StatusArgs),
    /// Install, start, stop and remove pipesvc as a Windows service
    /// (Windows only).
    Service(ServiceArgs),
}

fn main() -> ExitCode {
    let cli: Cli = Product::PIPESVC.parse();
    let from_env = || logging::format_from_env(&Product::PIPESVC);
    let log_format = match cli.log_format.map_or_else(from_env, Ok) {
        Ok(format) => format,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let command = match cli.command {
        // It needs no runtime and logs on its own (a service has no console).
        Command::Service(args) => {
            let make_handler = |_: ()| WithCalls::new(EchoService, serve_methods::service());
            let (out, err) = (std::io::stdout(), std::io::stderr());
            return windows_service::main(
                Product::PIPESVC,
                args,
                log_format,
                make_handler,
                out,
                err,
            );
        }
        command => command,
    };
    logging::init_console(log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    let outcome = runtime.block_on(async {
        let done = |result: pipesvc::Result<()>| result.map(|()| ExitCode::SUCCESS);
        match command {
            Command::Serve(args) => done(serve(args).await),
            // Its exit status tells a service error from a failed call.
            Command::Call(args) => call::run(args).await,
            Command::Methods(args) => done(methods::run(args).await),
            Command::Ping(args) => done(ping::run(args).await),
            // Its exit status says when every request failed.
            Command::Bench(args) => bench::run(args).await,
            Command::Status(args) => done(status::run(args).await),
            // Its exit status tells a service error from a failed subscribe.
            Command::Watch(args) => watch::run(args).await,
            Command::Service(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// `pipesvc serve`: the echo service and its typed methods, with the
/// settings of CONFIG.md.
async fn serve(args: ServeArgs) -> pipesvc::Result<()> {
    let settings = args.load::<()>(&Product::PIPESVC)?.settings;
    let service = serve_methods::service();
    let ticks = tokio::spawn(serve_methods::publish_ticks(service.publisher().clone()));
    let answers = WithCalls::new(EchoService, service);
    let served = pipesvc::ops::serve(&Product::PIPESVC, settings, answers, std::io::stdout()).await;
    ticks.abort();
    served
}

/// Prints an error with its chain of causes (escaped and cut, as server
/// text may be in it) and returns a failing exit code.
fn fail(err: &dyn std::error::Error) -> ExitCode {
    output::error(&pipesvc::ops::error_report(err));
    ExitCode::FAILURE
}
