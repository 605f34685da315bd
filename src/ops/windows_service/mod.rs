//! `PRODUCT service`: run a handler as a Windows service, under the Service
//! Control Manager (SCM), as `pipesvc service` runs `pipesvc serve`.
//! Flatten [`ServiceArgs`] into a clap command named `service` and hand
//! it to [`main`] with the handler.
//!
//! - `install` registers the service: its command line is this executable
//!   with `service run`, the service name, the log file and the serve
//!   options given to `install`;
//! - `start`, `stop` and `status` ask the SCM and wait (with a deadline)
//!   until the service has reached the state asked for;
//! - `uninstall` stops the service if it runs, then deletes it;
//! - `run` (hidden) is what the SCM launches: it connects to the SCM, serves
//!   through [`crate::ops::serve_until`] and reports START_PENDING, RUNNING
//!   (once the pipe accepts clients), STOP_PENDING and STOPPED. There is no
//!   console under the SCM, so it logs to a file (see [`default_log_file`]).
//!
//! The command line is the same on every platform, so that `--help` reads
//! the same everywhere, but off Windows every subcommand fails with a
//! message pointing to systemd.

// Off Windows the arguments are parsed but never read.
#![cfg_attr(not(windows), allow(dead_code))]

#[cfg(windows)]
mod manage;
#[cfg(windows)]
mod run;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;

use crate::ops::config::ServeArgs;
use crate::ops::logging::LogFormat;
use crate::ops::Answers;
use crate::ops::Product;

/// How long `start`, `stop` and `uninstall` wait by default for the service
/// to reach the state they asked for.
const DEFAULT_WAIT_SECS: f64 = 30.0;

/// `PRODUCT service ...`: its subcommands and their options.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    command: ServiceCommand,
}

/// The subcommands of `pipesvc service`.
// Parsed once per run: the size of the variants that hold serve's
// settings does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum ServiceCommand {
    /// Register this program as a service with the Service Control Manager
    /// (as administrator).
    ///
    /// Options after the service options are `serve` options (for
    /// example `--name my_pipe`), baked into the service's command line. The
    /// service runs as LocalSystem. Does not start the service.
    Install(InstallArgs),
    /// Stop the service if it runs, then delete it (needs an elevated prompt).
    Uninstall(WaitArgs),
    /// Start the service and wait until its pipe accepts clients.
    Start(WaitArgs),
    /// Stop the service gracefully and wait until it has stopped.
    Stop(WaitArgs),
    /// Print the service's state, process id and command line.
    Status(ServiceNameArg),
    /// The service itself, as the Service Control Manager launches it (not
    /// for use from a console: run `serve` there).
    #[command(hide = true)]
    Run(RunArgs),
}

/// Which service a command is about.
#[derive(Args, Debug, Clone)]
struct ServiceNameArg {
    /// The service's name in the Service Control Manager [default: the
    /// program's name]
    #[arg(long, value_name = "NAME")]
    service_name: Option<String>,
}

impl ServiceNameArg {
    /// `--service-name`, else the product's name.
    fn name<'a>(&'a self, product: &Product) -> &'a str {
        self.service_name.as_deref().unwrap_or(product.name())
    }
}

/// The options of `start`, `stop` and `uninstall`.
#[derive(Args, Debug)]
struct WaitArgs {
    #[command(flatten)]
    service: ServiceNameArg,
    /// Seconds to wait for the service to reach the state asked for.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_SECS,
          value_parser = parse_seconds)]
    timeout: f64,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

impl WaitArgs {
    /// `--timeout` as a duration.
    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

/// When the SCM starts the service.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum StartType {
    /// At boot.
    Auto,
    /// Only when asked to (`service start`, `sc start`).
    Demand,
    /// Never (until reconfigured).
    Disabled,
}

/// The options of `pipesvc service install`.
#[derive(Args, Debug)]
struct InstallArgs {
    #[command(flatten)]
    service: ServiceNameArg,
    /// The name shown in the Services console (default: `PROGRAM IPC service`,
    /// followed by the service name in parentheses if it is not the
    /// program's name).
    #[arg(long, value_name = "TEXT")]
    display_name: Option<String>,
    /// The description shown in the Services console (default: says which
    /// pipe the service listens on).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// When the service starts.
    #[arg(long, value_enum, default_value_t = StartType::Auto)]
    start_type: StartType,
    /// Where the service writes its log (default:
    /// `%ProgramData%\PROGRAM\<service name>.log`).
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Which log lines the service writes, as a `RUST_LOG` filter such as
    /// `warn` or `pipesvc=debug` (default: `info`).
    #[arg(long, value_name = "FILTER")]
    log_filter: Option<String>,
    /// `serve` options for the service, for example `--name
    /// my_pipe --max-connections 100`. Without `--security-descriptor` (or
    /// `--allow interactive-users`, which sets its own), the pipe admits
    /// SYSTEM and the user who runs `install`.
    #[arg(
        value_name = "SERVE OPTIONS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    serve_options: Vec<OsString>,
}

/// The options of the hidden `pipesvc service run`: everything the SCM
/// needs to pass on the service's command line.
#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    service: ServiceNameArg,
    /// Where to write the log (default: [`default_log_file`]).
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Which log lines to write, as a `RUST_LOG` filter (default: the
    /// service's `RUST_LOG`, else `info`).
    #[arg(long, value_name = "FILTER")]
    log_filter: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// The log file of service `service_name` of `product` when `--log-file`
/// is not given: `%ProgramData%\PRODUCT\<service name>.log`
/// (`C:\ProgramData` if the variable is not set).
pub fn default_log_file(product: &Product, service_name: &str) -> PathBuf {
    let base = std::env::var_os("ProgramData")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
    base.join(product.name())
        .join(format!("{service_name}.log"))
}

/// The product's name for messages that tell the user which command to
/// run; set by [`main`], which runs once per process.
#[cfg(windows)]
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The program's name for messages (`pipesvc` until [`main`] sets it).
#[cfg(windows)]
fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or(Product::PIPESVC.name())
}

/// Runs `PRODUCT service ...` for `product`, whose service serves the
/// handler `make_handler` makes from the product's own config keys (`E`,
/// `()` for none; see [`crate::ops::config`]). It needs no runtime and does
/// its own logging (the SCM gives a service no console), so call it before
/// starting either. What the command did (`installed service ...`,
/// `service "x" is running (pid N)`, the status lines) goes to `out`, an
/// error with its causes ([`crate::ops::error_report`]) to `err`: pass
/// `std::io::stdout()` and `std::io::stderr()`, or buffers to show them
/// elsewhere. The exit code is success, or failure once the error is
/// written.
///
/// Off Windows there is no Service Control Manager: every subcommand
/// writes to `err` that it is Windows-only and that the product runs under
/// systemd with `PRODUCT serve` instead, and fails. The signature is the
/// same on every platform, so that a product's `main` needs no `cfg`.
pub fn main<E, H, F>(
    product: Product,
    args: ServiceArgs,
    log_format: LogFormat,
    make_handler: F,
    out: impl Write,
    err: impl Write,
) -> ExitCode
where
    E: DeserializeOwned + Send + 'static,
    H: Answers,
    F: FnOnce(E) -> H + Send + 'static,
{
    #[cfg(windows)]
    {
        let _ = PROGRAM.set(product.name());
        let mut out = out;
        let out = &mut out;
        let outcome = match args.command {
            ServiceCommand::Install(args) => manage::install::<E>(&product, args, log_format, out),
            ServiceCommand::Uninstall(args) => manage::uninstall(&product, &args, out),
            ServiceCommand::Start(args) => manage::start(&product, &args, out),
            ServiceCommand::Stop(args) => manage::stop(&product, &args, out),
            ServiceCommand::Status(args) => manage::status(&product, &args, out),
            ServiceCommand::Run(args) => run::run(product, args, log_format, make_handler),
        };
        crate::ops::exit_code(outcome, err)
    }
    #[cfg(not(windows))]
    {
        let _ = (args, log_format, make_handler, out);
        windows_only(product, err)
    }
}

/// [`main`] elsewhere: says on `err` that there is no SCM here, and where
/// to look instead.
#[cfg(not(windows))]
fn windows_only(product: Product, mut err: impl Write) -> ExitCode {
    let name = product.name();
    let mut message = format!(
        "error: `{name} service` is Windows-only: it registers {name} with the Windows \
         Service Control Manager. On Linux, run `{name} serve` under systemd instead"
    );
    if product == Product::PIPESVC {
        message.push_str(": see contrib/pipesvc.service and the README");
    }
    // Nothing is left to tell if even `err` is gone.
    let _ = writeln!(err, "{message}.");
    ExitCode::FAILURE
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[test]
    fn off_windows_a_product_gets_the_message_in_its_own_writers() {
        const MYSVC: Product = Product::new("mysvc", "MYSVC_");
        let args = Cli::parse_from(["mysvc", "status"]).service;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let handler = |_: ()| {
            |request: bytes::Bytes, _: crate::server::ConnectionContext| async move {
                Ok::<_, crate::server::ServiceError>(request)
            }
        };
        let code = main(
            MYSVC,
            args,
            LogFormat::default(),
            handler,
            &mut out,
            &mut err,
        );
        assert_eq!(code, ExitCode::FAILURE);
        assert!(out.is_empty());
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("error: `mysvc service` is Windows-only"),
            "{err}"
        );
        assert!(
            err.ends_with("`mysvc serve` under systemd instead.\n"),
            "{err}"
        );
    }
}
