//! Operations for your own handler: what the `pipesvc` binary uses to run
//! its echo service, for a product's own service binary. Each part sits
//! behind a feature (none is on with `default-features = false`):
//!
//! - `config` (feature `config`): settings from a TOML file, `PREFIX_*`
//!   environment variables and command-line flags (clap), each checked
//!   with an error naming its source and key, plus a product's own keys;
//! - `serve()` and `serve_until` (`config`): bind, announce readiness,
//!   serve until a stop signal, shut down gracefully;
//! - `systemd` (feature `systemd`, Linux): readiness notification and socket
//!   activation, used by `serve()` when the feature is on;
//! - `windows_service` (feature `windows-service`): install, uninstall, start,
//!   stop and status of a Windows service, and the entry point the Service
//!   Control Manager launches;
//! - `logging` (feature `logging`): where log lines go and how they are written.
//!
//! A [`Product`] names the program all this runs in: its variables' prefix,
//! its default endpoint and service name, its readiness line.
//!
//! ```no_run
//! # #[cfg(feature = "config")]
//! # fn main() -> pipesvc::Result<()> {
//! use clap::Parser;
//! use pipesvc::ops::{config::ServeArgs, Product};
//!
//! /// `mysvc --config FILE` and a flag per setting.
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     serve: ServeArgs,
//! }
//!
//! const MY_SERVICE: Product = Product::new("mysvc", "MYSVC_");
//! let args = Cli::parse().serve;
//! let settings = args.load::<()>(&MY_SERVICE)?.settings;
//! let handler = |request: pipesvc::bytes::Bytes, _ctx: pipesvc::server::ConnectionContext| async move {
//!     Ok::<_, pipesvc::server::ServiceError>(request)
//! };
//! tokio::runtime::Runtime::new()?.block_on(pipesvc::ops::serve(&MY_SERVICE, settings, handler))
//! # }
//! # #[cfg(not(feature = "config"))]
//! # fn main() {}
//! ```

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "config")]
mod serve;
#[cfg(all(feature = "systemd", target_os = "linux"))]
pub mod systemd;
#[cfg(feature = "windows-service")]
pub mod windows_service;

#[cfg(feature = "config")]
pub use serve::{serve, serve_until};

/// The program the operations run in: what its users see of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    name: &'static str,
    env_prefix: &'static str,
    other_env_vars: &'static [&'static str],
}

impl Product {
    /// The shipped `pipesvc` binary.
    pub const PIPESVC: Product = Product::new("pipesvc", "PIPESVC_")
        .with_other_env_vars(&["PIPESVC_LOG_FORMAT", "PIPESVC_SOAK_SECS"]);

    /// A product called `name` (its default endpoint, Windows service name
    /// and log directory, and the start of its readiness line
    /// `NAME listening on ENDPOINT`) whose settings' variables start with
    /// `env_prefix` (such as `MYSVC_`, giving `MYSVC_MAX_CONNECTIONS`).
    pub const fn new(name: &'static str, env_prefix: &'static str) -> Product {
        Product {
            name,
            env_prefix,
            other_env_vars: &[],
        }
    }

    /// Variables with the prefix that are not settings but the product's
    /// own, so that they draw no "unknown variable" warning.
    pub const fn with_other_env_vars(mut self, vars: &'static [&'static str]) -> Product {
        self.other_env_vars = vars;
        self
    }

    /// The product's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The prefix of its settings' environment variables.
    pub const fn env_prefix(&self) -> &'static str {
        self.env_prefix
    }

    /// Its variables with the prefix that are not settings.
    pub const fn other_env_vars(&self) -> &'static [&'static str] {
        self.other_env_vars
    }
}

/// Prints `err` with its chain of causes on stderr, as a command-line
/// program reports its failure, and returns a failing exit code.
pub fn fail(err: &dyn std::error::Error) -> std::process::ExitCode {
    let mut message = format!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        // Many errors already include their cause in their own message.
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    eprintln!("{message}");
    std::process::ExitCode::FAILURE
}
