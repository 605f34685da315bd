//! `pipesvc ping`: round-trip times to a running service.

use std::time::Duration;

use crate::ClientArgs;
use clap::Args;
use pipesvc::error::Escaped;

#[derive(Args, Debug)]
pub struct PingArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// How many PINGs to send, one after the other.
    #[arg(long, short = 'c', default_value_t = 4)]
    count: u32,
}

pub async fn run(args: PingArgs) -> pipesvc::Result<()> {
    let client = args.target.connect().await?;
    let name = client.server_name();
    // A client the CLI made always has an endpoint.
    let endpoint = client.endpoint().expect("connected to an endpoint");
    println!("PING {endpoint} ({})", Escaped(&name));
    let mut times = Vec::with_capacity(args.count as usize);
    for seq in 1..=args.count {
        let rtt = client.ping().await?;
        println!("pong seq={seq} time={}", micros(rtt));
        times.push(rtt);
    }
    client.close().await;
    if let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) {
        let avg = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "{} pings: min {} / avg {} / max {}",
            times.len(),
            micros(*min),
            micros(avg),
            micros(*max)
        );
    }
    Ok(())
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
