//! `pipesvc serve`: the long-running echo service.

use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;
use pipesvc::server::{ConnectionContext, Handler, Server, ServiceError};

use crate::config::Settings;

/// The NOTIFY each client receives when it connects.
pub const GREETING: &str = "Hello Pipe World";

/// `pipesvc serve`'s arguments: a config file and a flag for every
/// setting (CONFIG.md). [`run_until`] resolves them with the environment.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file of settings (keys as the flags below, with `_` for
    /// `-`; see CONFIG.md). `PIPESVC_<KEY>` environment variables override
    /// it, and flags override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// For `pipesvc service install`, which checks the serve options it is
/// given before it bakes them into the service's command line.
#[cfg(windows)]
impl ServeArgs {
    /// The settings the flags and the config file give (the environment
    /// is the service's own, not the installer's, so it is left out).
    fn given(&self) -> pipesvc::Result<Settings> {
        Settings::resolve(&self.settings, self.config.as_deref(), &Default::default())
    }

    /// The endpoint the service will listen on.
    pub fn endpoint(&self) -> pipesvc::Result<pipesvc::Endpoint> {
        self.given()?.endpoint()
    }

    /// The security descriptor given (flag or file), if any.
    pub fn security_descriptor(&self) -> Option<String> {
        self.given().ok()?.security_descriptor
    }
}

/// Answers every request with its own payload; greets every client.
struct EchoService;

impl Handler for EchoService {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        Ok(request)
    }

    async fn on_connect(&self, ctx: ConnectionContext) {
        if let Err(e) = ctx.notify(GREETING).await {
            tracing::debug!(error = %e, "could not greet the client");
        }
    }
}

pub async fn run(args: ServeArgs) -> pipesvc::Result<()> {
    // Install the signal handlers before saying we are ready: a stop
    // request that arrives right after the line must stop us gracefully.
    let stop = stop_signal()?;
    let stop = async {
        stop.await;
        #[cfg(target_os = "linux")]
        if let Err(e) = crate::systemd::notify("STOPPING=1") {
            tracing::warn!(error = %e, "could not report stopping");
        }
    };
    let ready = |endpoint: &pipesvc::Endpoint| {
        announce(endpoint)?;
        #[cfg(target_os = "linux")]
        crate::systemd::notify(&format!("READY=1\nSTATUS=listening on {endpoint}"))?;
        Ok(())
    };
    run_until(args, stop, ready).await
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
    if let Some(path) = &args.config {
        tracing::info!(config = %path.display(), "reading settings");
    }
    let env = std::env::vars_os().collect();
    let settings = Settings::resolve(&args.settings, args.config.as_deref(), &env)?;
    tracing::debug!(?settings, "settings");
    // Registered before `ready`, like the stop signals.
    #[cfg(unix)]
    let status_requests =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let server = bind(settings)?;
    #[cfg(unix)]
    tokio::spawn(log_status_on_request(status_requests, server.handle()));
    ready(server.endpoint())?;
    server.serve_until(stop).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the endpoint the settings name, or, under systemd socket
/// activation, serves the socket passed on; its path is then the endpoint
/// unless the settings name one (which must be the same).
#[cfg(target_os = "linux")]
fn bind(mut settings: Settings) -> pipesvc::Result<Server<EchoService>> {
    let Some(listener) = crate::systemd::take_listener()? else {
        return settings
            .builder(settings.endpoint()?)
            .handler(EchoService)
            .bind();
    };
    if settings.name.is_none() {
        let address = listener.local_addr()?;
        let path = address.as_pathname().and_then(|path| path.to_str());
        let Some(path) = path else {
            return Err(pipesvc::Error::config(
                "socket activation",
                "the socket passed by the service manager is not bound to a UTF-8 path",
            ));
        };
        settings.name = Some(crate::config::Name(path.parse()?));
    }
    if settings.socket_mode.is_some() {
        tracing::warn!(
            "socket_mode is ignored: the service manager made the socket (set SocketMode= in the .socket unit)"
        );
    }
    settings
        .builder(settings.endpoint()?)
        .handler(EchoService)
        .bind_listener(listener)
}

/// Binds the endpoint the settings name.
#[cfg(not(target_os = "linux"))]
fn bind(settings: Settings) -> pipesvc::Result<Server<EchoService>> {
    settings
        .builder(settings.endpoint()?)
        .handler(EchoService)
        .bind()
}

/// Prints the line scripts (and the tests) wait for before connecting.
fn announce(endpoint: &pipesvc::Endpoint) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "pipesvc listening on {endpoint}")?;
    stdout.flush()
}

/// Registers now for the signals that stop the service gracefully (the
/// returned future completes on the first of them): SIGINT (Ctrl+C),
/// SIGTERM (service managers), SIGHUP (the terminal or session went away;
/// pipesvc has no configuration to reload) and SIGQUIT (Ctrl+\\; a stop
/// that leaves no socket file behind is worth more here than a core dump).
/// Without a handler each of the last two would kill the process on the
/// spot, skipping the goodbyes and leaving the socket file behind.
#[cfg(unix)]
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
            _ = hangup.recv() => "SIGHUP",
            _ = quit.recv() => "SIGQUIT",
        };
        tracing::info!(signal = name, "stop requested");
    })
}

/// Logs the server's counters (what `pipesvc status` shows) at each
/// SIGUSR1, instead of letting the signal kill the process.
#[cfg(unix)]
async fn log_status_on_request(
    mut requests: tokio::signal::unix::Signal,
    server: pipesvc::server::ServerHandle,
) {
    while requests.recv().await.is_some() {
        let status = server.status();
        tracing::info!(
            uptime_s = status.uptime.as_secs(),
            connections_open = status.connections_open,
            connections_total = status.connections_total,
            requests_served = status.requests_served,
            bytes_in = status.bytes_in,
            bytes_out = status.bytes_out,
            errors = ?status.errors,
            "status (SIGUSR1)"
        );
    }
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
