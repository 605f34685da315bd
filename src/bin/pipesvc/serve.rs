//! `pipesvc serve`: the long-running echo service.

use std::io::Write;

use bytes::Bytes;
use clap::Args;
use pipesvc::server::{Context, Handler, Server, ServiceError};

use crate::NameArg;

/// The NOTIFY each client receives when it connects.
pub const GREETING: &str = "Hello Pipe World";

/// The options of `pipesvc serve`; `pipesvc service install` takes the same
/// ones and bakes them into the service's command line.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    name: NameArg,
    /// Connections served at once; clients over the limit are refused.
    #[arg(long, default_value_t = pipesvc::server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Largest frame accepted, in bytes (header included).
    #[arg(long, default_value_t = pipesvc::protocol::DEFAULT_MAX_FRAME_LEN)]
    max_frame_len: u32,
    /// Who may open the pipe, as an SDDL security descriptor (default: full
    /// access for SYSTEM and the user the service runs as, nobody else; see
    /// SECURITY.md).
    #[cfg(windows)]
    #[arg(long, value_name = "SDDL")]
    security_descriptor: Option<String>,
}

/// For `pipesvc service install`, which checks the serve options it is given.
#[cfg(windows)]
impl ServeArgs {
    /// The endpoint name as given (`--name`).
    pub fn name(&self) -> &str {
        &self.name.name
    }

    /// The `--security-descriptor` given, if any.
    pub fn security_descriptor(&self) -> Option<&str> {
        self.security_descriptor.as_deref()
    }
}

/// Answers every request with its own payload; greets every client.
struct EchoService;

impl Handler for EchoService {
    async fn call(&self, request: Bytes, _ctx: Context) -> Result<Bytes, ServiceError> {
        Ok(request)
    }

    async fn on_connect(&self, ctx: Context) {
        if let Err(e) = ctx.notify(GREETING).await {
            tracing::debug!(error = %e, "could not greet the client");
        }
    }
}

pub async fn run(args: ServeArgs) -> pipesvc::Result<()> {
    // Install the signal handlers before saying we are ready: a stop
    // request that arrives right after the line must stop us gracefully.
    let stop = stop_signal()?;
    run_until(args, stop, announce).await
}

/// Binds the endpoint, calls `ready` once clients can connect, and serves
/// until `stop` completes (then shuts down gracefully). Every way of
/// running the service (console, and the platform service managers) goes
/// through here; they differ only in how they learn to stop and whom they
/// tell that the service is ready.
pub async fn run_until(
    args: ServeArgs,
    stop: impl std::future::Future<Output = ()>,
    ready: impl FnOnce(&pipesvc::Endpoint) -> std::io::Result<()>,
) -> pipesvc::Result<()> {
    #[cfg(unix)]
    raise_fd_limit();
    let builder = Server::builder(args.name.endpoint()?)
        .max_connections(args.max_connections)
        .max_frame_len(args.max_frame_len);
    #[cfg(windows)]
    let builder = match args.security_descriptor {
        Some(sddl) => builder.security_descriptor(sddl),
        None => builder,
    };
    let server = builder.handler(EchoService).bind()?;
    ready(server.endpoint())?;
    server.serve_until(stop).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints the line scripts (and the tests) wait for before connecting.
fn announce(endpoint: &pipesvc::Endpoint) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "pipesvc listening on {endpoint}")?;
    stdout.flush()
}

/// Registers for Ctrl+C and SIGTERM (Unix) / console close (Windows) now;
/// the returned future completes on the first of them.
#[cfg(unix)]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stop requested");
    })
}

/// Registers for Ctrl+C and SIGTERM (Unix) / console close (Windows) now;
/// the returned future completes on the first of them.
#[cfg(windows)]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::windows::{ctrl_c, ctrl_close};
    let mut interrupt = ctrl_c()?;
    let mut close = ctrl_close()?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = close.recv() => {}
        }
        tracing::info!("stop requested");
    })
}

/// Raises the soft limit on open files to the hard limit: each client is a
/// file descriptor, and the common soft limit of 1024 is below the default
/// `--max-connections`.
#[cfg(unix)]
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if !raised {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
    }
}
