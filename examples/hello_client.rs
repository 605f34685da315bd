//! The seed's "Hello Pipe World" client, on pipesvc's raw transport.
//!
//! Like the C++ original: open `my_pipe` for reading only, read up to 254
//! bytes, print them as UTF-16LE text, close. Start a server first (this
//! example's twin `hello_server`, or the seed's C++ server on Windows);
//! unlike the seed, the client waits up to 5 s for one to appear.
//!
//! ```text
//! cargo run --example hello_client [NAME]
//! ```

use pipesvc::transport::{connect, ConnectOptions};
use pipesvc::Endpoint;
use tokio::io::AsyncReadExt;

/// The seed reads at most 127 UTF-16 units.
const MAX_BYTES: usize = 127 * 2;

/// Reads the server's message from `endpoint` and returns it.
pub async fn run(endpoint: &Endpoint) -> pipesvc::Result<String> {
    println!("Connecting to pipe...");
    let options = ConnectOptions::new().read_only(true);
    let mut pipe = connect(endpoint, &options).await?.stream;
    println!("Reading data from pipe...");
    let mut buffer = vec![0u8; MAX_BYTES];
    let mut len = 0;
    // A byte stream may deliver the message in pieces: read until the
    // server closes or the buffer is full.
    while len < buffer.len() {
        match pipe.read(&mut buffer[len..]).await {
            Ok(0) => break,
            Ok(n) => len += n,
            // Windows reports the server's close as a broken pipe.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e.into()),
        }
    }
    let units: Vec<u16> = buffer[..len]
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let message = String::from_utf16_lossy(&units);
    println!("Number of bytes read: {len}");
    println!("Message: {message}");
    println!("Done.");
    Ok(message)
}

#[allow(dead_code)] // tests include this file for `run`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "my_pipe".into());
    run(&name.parse()?).await?;
    Ok(())
}
