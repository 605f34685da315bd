//! `pipesvc status`: a running service's counters.

use clap::Args;
use pipesvc::error::Escaped;
use pipesvc::protocol::Status;

use crate::ClientArgs;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// Print one JSON object (keys: uptime_secs, connections_open,
    /// connections_total, requests_served, requests_cancelled,
    /// requests_timed_out, bytes_in, bytes_out, errors).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> pipesvc::Result<()> {
    let client = args.target.connect().await?;
    let status = client.status().await.map_err(explain_old_server)?;
    if args.json {
        println!("{}", status.to_json());
    } else {
        print_human(&client, &status);
    }
    client.close().await;
    Ok(())
}

fn print_human(client: &pipesvc::Client, s: &Status) {
    println!(
        "{} at {}",
        Escaped(&client.server_name()),
        // A client the CLI made always has an endpoint.
        client.endpoint().expect("connected to an endpoint")
    );
    println!("uptime            {}", uptime(s.uptime.as_secs()));
    println!(
        "connections       {} open, {} since start",
        s.connections_open, s.connections_total
    );
    println!("requests served   {}", s.requests_served);
    println!(
        "                  {} cancelled, {} timed out",
        s.requests_cancelled, s.requests_timed_out
    );
    println!("bytes             {} in, {} out", s.bytes_in, s.bytes_out);
    if s.errors.is_empty() {
        println!("errors sent       none");
    }
    for (i, (code, count)) in s.errors.iter().enumerate() {
        let label = if i == 0 { "errors sent" } else { "" };
        println!("{label:<17} {count} x {code}");
    }
}

fn uptime(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    match days {
        0 => format!("{h:02}:{m:02}:{s:02}"),
        _ => format!("{days}d {h:02}:{m:02}:{s:02}"),
    }
}

/// A server from before protocol 1.1 closes the connection on STATUS,
/// naming error 4; say what that means.
fn explain_old_server(err: pipesvc::Error) -> pipesvc::Error {
    use pipesvc::error::CloseReason;
    match err {
        pipesvc::Error::ConnectionClosed(
            reason @ CloseReason::ServerError {
                code: pipesvc::protocol::ErrorCode::UNKNOWN_KIND,
                ..
            },
        ) => pipesvc::Error::Protocol(format!(
            "{reason} (the server predates protocol 1.1 and has no STATUS request)"
        )),
        other => other,
    }
}
