//! A custom service: echoes requests in upper case, counts them, and answers
//! a client's NOTIFY with one of its own. Run it with
//! `cargo run --example echo_service`, then `cargo run -- call --name echo_service hi`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pipesvc::server::{ConnectionContext, Handler, Server, ServiceError};

#[derive(Default)]
struct Shout {
    served: AtomicU64,
}

impl Handler for Shout {
    async fn call(&self, request: Bytes, _ctx: ConnectionContext) -> Result<Bytes, ServiceError> {
        let text = std::str::from_utf8(&request).map_err(|_| "request is not UTF-8")?;
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(text.to_uppercase().into())
    }

    async fn on_notify(&self, _payload: Bytes, ctx: ConnectionContext) {
        let served = self.served.load(Ordering::Relaxed);
        let _ = ctx.notify(format!("served {served} requests")).await;
    }
}

#[tokio::main]
async fn main() -> pipesvc::Result<()> {
    let server = Server::builder("echo_service".parse()?)
        .handler(Shout::default())
        .bind()?;
    println!("listening on {}", server.endpoint());
    server
        .serve_until(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
        .await
}
