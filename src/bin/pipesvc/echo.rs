//! The service `pipesvc serve` runs: echo, and a greeting.

use bytes::Bytes;
use pipesvc::server::{ConnectionContext, Handler, ServiceError};

/// The NOTIFY each client receives when it connects.
pub const GREETING: &str = "Hello Pipe World";

/// Answers every request with its own payload; greets every client.
pub struct EchoService;

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
