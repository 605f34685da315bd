//! `pipesvc call`: one request, its response on stdout.

use std::io::Write;

use crate::ClientArgs;
use clap::Args;

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// The request payload (sent as UTF-8).
    message: String,
}

pub async fn run(args: CallArgs) -> pipesvc::Result<()> {
    let client = args.target.connect().await?;
    let response = client.request(args.message).await?;
    client.close().await;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&response)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}
