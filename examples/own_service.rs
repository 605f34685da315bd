//! A product's own service binary: its handler and config key, pipesvc's
//! settings (file, `GREETER_*` variables, flags), systemd readiness and the
//! Windows service commands. `cargo run --example own_service -- serve`, then
//! `cargo run -- call --name greeter Ada` prints `Hello, Ada`.

use clap::{Parser, Subcommand};
use pipesvc::bytes::Bytes;
use pipesvc::ops::config::ServeArgs;
use pipesvc::ops::logging::{self, LogFormat};
use pipesvc::ops::windows_service::{self, ServiceArgs};
use pipesvc::ops::Product;
use pipesvc::server::{ConnectionContext, Handler, ServiceError};
use serde::Deserialize;

/// The product: `greeter serve`, `GREETER_MAX_CONNECTIONS`, service `greeter`.
const GREETER: Product = Product::new("greeter", "GREETER_");

/// The product's own keys in the config file, next to pipesvc's.
#[derive(Deserialize)]
struct Extra {
    /// The word before each name [default: Hello].
    greeting: Option<String>,
}

/// Answers `NAME` with `GREETING, NAME`.
struct Greeter(String);

impl Greeter {
    fn new(extra: Extra) -> Greeter {
        Greeter(extra.greeting.unwrap_or_else(|| "Hello".into()))
    }
}

impl Handler for Greeter {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        let name = std::str::from_utf8(&request).map_err(|_| "the name is not UTF-8")?;
        Ok(format!("{}, {name}", self.0).into())
    }
}

#[derive(Parser)]
struct Cli {
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the service in this console, or under systemd.
    Serve(ServeArgs),
    /// Install, start, stop, remove the Windows service (Windows only).
    Service(ServiceArgs),
}

fn main() -> std::process::ExitCode {
    // Parsed through the product, so that its help names it.
    let cli: Cli = GREETER.parse();
    let log_format = cli.log_format.unwrap_or_default();
    let args = match cli.command {
        Command::Service(args) => {
            let (out, err) = (std::io::stdout(), std::io::stderr());
            return windows_service::main(GREETER, args, log_format, Greeter::new, out, err);
        }
        Command::Serve(args) => args,
    };
    logging::init_console(log_format);
    let serve = async {
        let loaded = args.load::<Extra>(&GREETER)?;
        let greeter = Greeter::new(loaded.extra);
        pipesvc::ops::serve(&GREETER, loaded.settings, greeter, std::io::stdout()).await
    };
    let outcome = tokio::runtime::Runtime::new()
        .map_err(pipesvc::Error::from)
        .and_then(|runtime| runtime.block_on(serve));
    pipesvc::ops::exit_code(outcome, std::io::stderr())
}
