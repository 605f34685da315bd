//! Serving a handler until a stop request: the console runner (signals,
//! readiness line for the caller, systemd) and the one every runner shares.

use std::future::Future;
use std::io::Write;

use crate::ops::config::Settings;
use crate::ops::Product;
use crate::server::{Calls, Handler, Server, ServerBuilder};
use crate::Endpoint;

/// What [`serve`] runs: a byte [`Handler`] (every handler is one), or a
/// handler with typed methods beside it ([`WithCalls`]).
pub trait Answers: Send + 'static {
    /// The byte handler.
    type Handler: Handler;

    /// Puts the handler (and the typed methods) on `builder`.
    fn install(self, builder: ServerBuilder) -> ServerBuilder<Self::Handler>;
}

impl<H: Handler> Answers for H {
    type Handler = H;

    fn install(self, builder: ServerBuilder) -> ServerBuilder<H> {
        builder.handler(self)
    }
}

/// A byte handler and the typed methods (protocol 2 CALLs and DESCRIBE)
/// that [`serve`] runs beside it, such as an
/// [`rpc::Service`](crate::rpc::Service):
/// `serve(&PRODUCT, settings, WithCalls::new(handler, service), out)`.
#[derive(Debug)]
pub struct WithCalls<H, C> {
    handler: H,
    calls: C,
}

impl<H: Handler, C: Calls> WithCalls<H, C> {
    /// `handler` for REQUESTs, `calls` for CALLs.
    pub fn new(handler: H, calls: C) -> WithCalls<H, C> {
        WithCalls { handler, calls }
    }
}

impl<H: Handler, C: Calls> Answers for WithCalls<H, C> {
    type Handler = H;

    fn install(self, builder: ServerBuilder) -> ServerBuilder<H> {
        builder.handler(self.handler).calls(self.calls)
    }
}

/// Serves `handler` (a [`Handler`], or one [`WithCalls`]) with `settings` in a console or under a service
/// manager other than Windows's: writes the readiness line
/// `NAME listening on ENDPOINT` to `readiness` (usually `std::io::stdout()`,
/// which scripts and tests read; `std::io::sink()` for none) once clients
/// can connect (and, with the `systemd` feature on
/// Linux, tells systemd `READY=1`, serving the socket it passes if any),
/// and shuts down gracefully at SIGINT, SIGTERM, SIGHUP or SIGQUIT (Ctrl+C
/// or console close on Windows). On Unix SIGUSR1 logs the counters.
pub async fn serve<H: Answers>(
    product: &Product,
    settings: Settings,
    handler: H,
    mut readiness: impl Write,
) -> crate::Result<()> {
    // Install the signal handlers before saying we are ready: a stop
    // request that arrives right after the line must stop us gracefully.
    let stop = stop_signal()?;
    let stop = async {
        stop.await;
        #[cfg(all(feature = "systemd", target_os = "linux"))]
        if let Err(e) = crate::ops::systemd::notify("STOPPING=1") {
            tracing::warn!(error = %e, "could not report stopping");
        }
    };
    let ready = |endpoint: &Endpoint| {
        announce(product, endpoint, &mut readiness)?;
        #[cfg(all(feature = "systemd", target_os = "linux"))]
        crate::ops::systemd::notify(&format!("READY=1\nSTATUS=listening on {endpoint}"))?;
        Ok(())
    };
    serve_until(product, settings, handler, stop, ready).await
}

/// Binds the endpoint ([`Settings::server_builder`]: the settings', else
/// the product's; the server named after the product in its HELLO unless
/// `server_name` says otherwise), calls `ready` once clients can connect,
/// and serves until `stop` completes (then shuts down gracefully). Every way of
/// running a service (console, and the platform service managers) goes
/// through here; they differ only in how they learn to stop and whom they
/// tell that the service is ready.
pub async fn serve_until<H: Answers>(
    product: &Product,
    settings: Settings,
    handler: H,
    stop: impl Future<Output = ()>,
    ready: impl FnOnce(&Endpoint) -> std::io::Result<()>,
) -> crate::Result<()> {
    tracing::debug!(?settings, "settings");
    // Registered before `ready`, like the stop signals.
    #[cfg(unix)]
    let status_requests =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let server = bind(product, settings, handler)?;
    #[cfg(unix)]
    tokio::spawn(log_status_on_request(status_requests, server.handle()));
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    crate::ops::memory::no_fastbins();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let returning = tokio::spawn(crate::ops::memory::return_after_bursts(server.handle()));
    ready(server.endpoint())?;
    server.serve_until(stop).await?;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    returning.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Binds the endpoint the settings name, or, under systemd socket
/// activation, serves the socket passed on; its path is then the endpoint
/// unless the settings name one (which must be the same).
#[cfg(all(feature = "systemd", target_os = "linux"))]
fn bind<H: Answers>(
    product: &Product,
    mut settings: Settings,
    handler: H,
) -> crate::Result<Server<H::Handler>> {
    let Some(listener) = crate::ops::systemd::take_listener()? else {
        return handler.install(settings.server_builder(product)?).bind();
    };
    if settings.name.is_none() {
        let address = listener.local_addr()?;
        let path = address.as_pathname().and_then(|path| path.to_str());
        let Some(path) = path else {
            return Err(crate::Error::config(
                "socket activation",
                "the socket passed by the service manager is not bound to a UTF-8 path",
            ));
        };
        settings.name = Some(crate::ops::config::Name(path.parse()?));
    }
    if settings.socket_mode.is_some() {
        tracing::warn!(
            "socket_mode is ignored: the service manager made the socket (set SocketMode= in the .socket unit)"
        );
    }
    handler
        .install(settings.server_builder(product)?)
        .bind_listener(listener)
}

/// Binds the endpoint the settings name.
#[cfg(not(all(feature = "systemd", target_os = "linux")))]
fn bind<H: Answers>(
    product: &Product,
    settings: Settings,
    handler: H,
) -> crate::Result<Server<H::Handler>> {
    handler.install(settings.server_builder(product)?).bind()
}

/// Writes the line scripts (and the tests) wait for before connecting,
/// and flushes it: the reader waits for it, the writer may buffer.
fn announce(product: &Product, endpoint: &Endpoint, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{} listening on {endpoint}", product.name())?;
    out.flush()
}

/// Registers now for the signals that stop the service gracefully (the
/// returned future completes on the first of them): SIGINT (Ctrl+C),
/// SIGTERM (service managers), SIGHUP (the terminal or session went away;
/// pipesvc has no configuration to reload) and SIGQUIT (Ctrl+\\; a stop
/// that leaves no socket file behind is worth more here than a core dump).
/// Without a handler each of the last two would kill the process on the
/// spot, skipping the goodbyes and leaving the socket file behind.
#[cfg(unix)]
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
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
    server: crate::server::ServerHandle,
) {
    while requests.recv().await.is_some() {
        let status = server.status();
        tracing::info!(
            uptime_s = status.uptime.as_secs(),
            connections_open = status.connections_open,
            connections_total = status.connections_total,
            requests_served = status.requests_served,
            requests_cancelled = status.requests_cancelled,
            requests_timed_out = status.requests_timed_out,
            bytes_in = status.bytes_in,
            bytes_out = status.bytes_out,
            errors = ?status.errors,
            "status (SIGUSR1)"
        );
    }
}

/// Registers for Ctrl+C and the console's close now; the returned future
/// completes on the first of them.
#[cfg(windows)]
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
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
