//! Operations for your own handler: what the `pipesvc` binary uses to run
//! its echo service, for a product's own service binary. Each part sits
//! behind a feature (none is on with `default-features = false`):
//!
//! - `config` (feature `config`): settings from a TOML file, `PREFIX_*`
//!   environment variables and command-line flags (clap), each checked
//!   with an error naming its source and key, plus a product's own keys;
//! - `serve()` and `serve_until` (`config`): bind, announce readiness (to
//!   a writer the caller gives),
//!   serve until a stop signal, shut down gracefully; they serve a byte
//!   handler, or one with typed methods beside it (`WithCalls`, such as an
//!   `rpc::Service`);
//! - `systemd` (feature `systemd`, Linux): readiness notification and socket
//!   activation, used by `serve()` when the feature is on;
//! - `windows_service` (feature `windows-service`): install, uninstall, start,
//!   stop and status of a Windows service, and the entry point the Service
//!   Control Manager launches;
//! - `logging` (feature `logging`): where log lines go and how they are written;
//! - on glibc Linux, `serve_until` gives freed memory back to the system
//!   after each burst of load (`malloc_trim`; see `ops/memory.rs`).
//!
//! A [`Product`] names the program all this runs in: its variables' prefix,
//! its default endpoint, server and service name, its readiness line, and
//! (parsed with [`Product::parse`]) its command line's help.
//!
//! The library prints nothing: what a command has to say (the readiness
//! line, a service command's report, an error) goes to writers the caller
//! passes, usually `std::io::stdout()` and `std::io::stderr()`;
//! [`error_report`] formats an error with its causes.
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
//! // `Cli::parse()` would work too, but its help would not name mysvc.
//! let args = MY_SERVICE.parse::<Cli>().serve;
//! let settings = args.load::<()>(&MY_SERVICE)?.settings;
//! let handler = |request: pipesvc::bytes::Bytes, _ctx: pipesvc::server::ConnectionContext| async move {
//!     Ok::<_, pipesvc::server::ServiceError>(request)
//! };
//! tokio::runtime::Runtime::new()?.block_on(pipesvc::ops::serve(&MY_SERVICE, settings, handler, std::io::stdout()))
//! # }
//! # #[cfg(not(feature = "config"))]
//! # fn main() {}
//! ```

#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "config")]
mod help;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(all(feature = "config", target_os = "linux", target_env = "gnu"))]
mod memory;
#[cfg(feature = "config")]
mod serve;
#[cfg(all(feature = "systemd", target_os = "linux"))]
pub mod systemd;
#[cfg(feature = "windows-service")]
pub mod windows_service;

#[cfg(feature = "config")]
pub use serve::{serve, serve_until, Answers, WithCalls};

/// The program the operations run in: what its users see of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Product {
    name: &'static str,
    env_prefix: &'static str,
    other_env_vars: &'static [&'static str],
    config_docs: Option<&'static str>,
}

impl Product {
    /// The shipped `pipesvc` binary.
    pub const PIPESVC: Product = Product::new("pipesvc", "PIPESVC_")
        .with_other_env_vars(&["PIPESVC_LOG_FORMAT", "PIPESVC_SOAK_SECS"])
        .with_config_docs("CONFIG.md");

    /// A product called `name` (its default endpoint, the server name in
    /// its HELLO, its Windows service name and log directory, and the start
    /// of its readiness line `NAME listening on ENDPOINT`) whose settings'
    /// variables start with `env_prefix` (such as `MYSVC_`, giving
    /// `MYSVC_MAX_CONNECTIONS`). Its command line shows them in its help
    /// when parsed with [`Product::parse`] (feature `config`).
    pub const fn new(name: &'static str, env_prefix: &'static str) -> Product {
        Product {
            name,
            env_prefix,
            other_env_vars: &[],
            config_docs: None,
        }
    }

    /// Where the product's settings are documented (a file or an address,
    /// such as pipesvc's `CONFIG.md`), named in the help of `--config`.
    /// Default: none.
    pub const fn with_config_docs(mut self, docs: &'static str) -> Product {
        self.config_docs = Some(docs);
        self
    }

    /// Where its settings are documented, if it says.
    pub const fn config_docs(&self) -> Option<&'static str> {
        self.config_docs
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

/// `err` with its chain of causes, as a command-line program reports its
/// failure: `error: WHAT: WHY: ...` (one line, without a newline; a cause
/// whose text the message already contains is not repeated).
pub fn error_report(err: &dyn std::error::Error) -> String {
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
    message
}

/// The exit code for a command's `outcome`: success, or failure once
/// [`error_report`] of the error is written as a line to `stderr` (the
/// caller's choice of stream: the library prints nothing itself).
pub fn exit_code<E: std::error::Error>(
    outcome: Result<(), E>,
    mut stderr: impl std::io::Write,
) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Nothing is left to tell if even stderr is gone.
            let _ = writeln!(stderr, "{}", error_report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_report_names_each_cause_once() {
        let io = std::io::Error::other("disk full");
        let err = crate::Error::from(io);
        let report = error_report(&err);
        assert!(report.starts_with("error: "), "{report}");
        assert_eq!(report.matches("disk full").count(), 1, "{report}");
    }

    #[test]
    fn exit_code_writes_the_report_only_on_failure() {
        let mut stderr = Vec::new();
        assert_eq!(
            exit_code(Ok::<(), std::io::Error>(()), &mut stderr),
            std::process::ExitCode::SUCCESS
        );
        assert!(stderr.is_empty());
        let failed = Err(std::io::Error::other("no such pipe"));
        assert_eq!(
            exit_code(failed, &mut stderr),
            std::process::ExitCode::FAILURE
        );
        assert_eq!(String::from_utf8(stderr).unwrap(), "error: no such pipe\n");
    }
}
