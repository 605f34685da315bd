//! `pipesvc status`: a running service's counters.

use clap::Args;
use pipesvc::error::Escaped;
use pipesvc::protocol::Status;

use crate::output::{self, Out};
use crate::session::ClientArgs;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: ClientArgs,
    /// Print one JSON object (keys: uptime_secs, connections_open,
    /// connections_total, requests_served, requests_cancelled,
    /// requests_timed_out, bytes_in, bytes_out, streams_open, items_sent,
    /// subscribers, events_sent, events_dropped, errors).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StatusArgs) -> pipesvc::Result<()> {
    let session = args.target.connect().await?;
    let client = session.client();
    let status = session
        .step("waiting for the answer to STATUS", client.status())
        .await;
    let name = output::field(&client.server_name(), output::NAME_SHOWN);
    // A client the CLI made always has an endpoint.
    let endpoint = Escaped(
        &client
            .endpoint()
            .expect("connected to an endpoint")
            .to_string(),
    )
    .to_string();
    session.close().await;
    let status = status.map_err(explain_old_server)?;
    let mut out = Out::stdout();
    match args.json {
        true => out.line(&status.to_json())?,
        false => print_human(&mut out, &format!("{name} at {endpoint}"), &status)?,
    }
    out.finish()
}

fn print_human(out: &mut Out, server: &str, s: &Status) -> pipesvc::Result<()> {
    out.line(server)?;
    out.line(&format!("uptime            {}", uptime(s.uptime.as_secs())))?;
    out.line(&format!(
        "connections       {} open, {} since start",
        s.connections_open, s.connections_total
    ))?;
    out.line(&format!("requests served   {}", s.requests_served))?;
    out.line(&format!(
        "                  {} cancelled, {} timed out",
        s.requests_cancelled, s.requests_timed_out
    ))?;
    out.line(&format!(
        "bytes             {} in, {} out",
        s.bytes_in, s.bytes_out
    ))?;
    out.line(&format!(
        "streams           {} open, {} items sent",
        s.streams_open, s.items_sent
    ))?;
    out.line(&format!(
        "subscribers       {} open, {} events sent, {} dropped",
        s.subscribers, s.events_sent, s.events_dropped
    ))?;
    if s.errors.is_empty() {
        out.line("errors sent       none")?;
    }
    for (i, (code, count)) in s.errors.iter().enumerate() {
        let label = if i == 0 { "errors sent" } else { "" };
        out.line(&format!("{label:<17} {count} x {code}"))?;
    }
    Ok(())
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
