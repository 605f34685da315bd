//! The seed's "Hello Pipe World" server, on pipesvc's raw transport.
//!
//! Like the C++ original: one byte-mode, outbound-only instance on
//! `my_pipe`; wait for a client, send ` ***Hello Pipe World***` as UTF-16LE,
//! close. On Windows it interoperates with the seed's C++ client; on Unix
//! it listens on the equivalent Unix socket.
//!
//! ```text
//! cargo run --example hello_server [NAME]
//! ```

use pipesvc::transport::{flush_to_peer, Listener, ListenerOptions};
use pipesvc::Endpoint;
use tokio::io::AsyncWriteExt;

/// What the seed's server sends (as UTF-16LE, no terminator).
pub const MESSAGE: &str = " ***Hello Pipe World***";

/// Serves one client on `endpoint`; returns the number of bytes sent.
pub async fn run(endpoint: &Endpoint) -> pipesvc::Result<usize> {
    println!("Creating an instance of a named pipe...");
    let options = ListenerOptions::new()
        .backlog(1)
        .max_instances(Some(1))
        .outbound_only(true);
    let mut listener = Listener::bind(endpoint, &options)?;
    println!("Waiting for a client to connect to the pipe...");
    let (mut pipe, _peer) = listener.accept().await?;
    println!("Sending data to pipe...");
    let data: Vec<u8> = MESSAGE.encode_utf16().flat_map(u16::to_le_bytes).collect();
    pipe.write_all(&data).await?;
    // Unlike the seed's zero-size buffer, ours lets the write finish before
    // the client reads: wait until it has, so closing loses nothing.
    flush_to_peer(&mut pipe).await?;
    println!("Number of bytes sent: {}", data.len());
    println!("Done.");
    Ok(data.len())
}

#[allow(dead_code)] // tests include this file for `run`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "my_pipe".into());
    run(&name.parse()?).await?;
    Ok(())
}
