//! `pipesvc ping`: round-trip times to a running service.

use std::time::Duration;

use clap::Args;
use pipesvc::error::Escaped;

use crate::output::{self, Out};
use crate::session::{ClientArgs, Session};

#[derive(Args, Debug)]
pub struct PingArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// How many PINGs to send, one after the other (all within --timeout).
    #[arg(long, short = 'c', default_value_t = 4)]
    count: u32,
}

pub async fn run(args: PingArgs) -> pipesvc::Result<()> {
    let session = args.target.connect().await?;
    let mut out = Out::stdout();
    let pinged = pings(&session, args.count, &mut out).await;
    session.close().await;
    let times = pinged?;
    if let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) {
        let avg = times.iter().sum::<Duration>() / times.len() as u32;
        out.line(&format!(
            "{} pings: min {} / avg {} / max {}",
            times.len(),
            micros(*min),
            micros(avg),
            micros(*max)
        ))?;
    }
    out.finish()
}

/// Sends `count` PINGs, printing each round trip; their times.
async fn pings(session: &Session, count: u32, out: &mut Out) -> pipesvc::Result<Vec<Duration>> {
    let client = session.client();
    let name = output::field(&client.server_name(), output::NAME_SHOWN);
    // A client the CLI made always has an endpoint.
    let endpoint = client.endpoint().expect("connected to an endpoint");
    out.line(&format!("PING {} ({name})", Escaped(&endpoint.to_string())))?;
    out.flush()?;
    let mut times = Vec::with_capacity(count.min(1024) as usize);
    for seq in 1..=count {
        let rtt = session
            .step("waiting for the answer to a PING", client.ping())
            .await?;
        out.line(&format!("pong seq={seq} time={}", micros(rtt)))?;
        out.flush()?;
        times.push(rtt);
    }
    Ok(times)
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
