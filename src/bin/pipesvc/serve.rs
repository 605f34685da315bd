//! `pipesvc serve`: the long-running echo service.

use std::io::Write;

use bytes::Bytes;
use clap::Args;
use pipesvc::server::{Context, Handler, Server, ServiceError};

use crate::NameArg;

/// The NOTIFY each client receives when it connects.
pub const GREETING: &str = "Hello Pipe World";

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
    let server = Server::builder(args.name.endpoint()?)
        .max_connections(args.max_connections)
        .max_frame_len(args.max_frame_len)
        .handler(EchoService)
        .bind()?;
    // Scripts (and the tests) wait for this line before connecting.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "pipesvc listening on {}", server.endpoint())?;
    stdout.flush()?;
    drop(stdout);
    server.serve_until(stop_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on Ctrl+C, or SIGTERM (Unix) / console close (Windows).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::ctrl_close;
        match ctrl_close() {
            Ok(mut close) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = close.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for console close");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    tracing::info!("stop requested");
}
