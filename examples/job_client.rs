//! The job runner's client: `job_client submit JOB STEPS | list | status ID |
//! cancel ID | follow ID | watch` (service `$JOBS_NAME`, or `jobs`); typed
//! calls, a typed stream and a topic, no encoding or routing of our own.

#[path = "job_api/mod.rs"]
pub mod job_api;
use job_api::*;
use pipesvc::rpc::{Subscription, TopicEvent};
use pipesvc::{Client, ClientOptions, Error};

const USAGE: &str = "submit JOB STEPS | list | status ID | cancel ID | follow ID | watch";

/// Runs one command and returns what to print.
pub async fn run(client: &Client, args: &[String]) -> pipesvc::Result<String> {
    let usage = || Error::config("arguments", USAGE);
    let number = |i: usize| args.get(i).and_then(|a| a.parse().ok()).ok_or_else(usage);
    Ok(match args.first().map(String::as_str) {
        Some("submit") => {
            let name = args.get(1).ok_or_else(usage)?.clone();
            let steps = number(2)? as u32;
            format!(
                "job {}",
                client.call(&SUBMIT, &Submit { name, steps }).await?
            )
        }
        Some("list") => format!("{:#?}", client.call(&LIST, &()).await?),
        Some("status") => format!("{:?}", client.call(&STATUS, &number(1)?).await?),
        Some("cancel") => format!("{:?}", client.call(&CANCEL, &number(1)?).await?),
        Some("follow") => follow(client, number(1)?).await?.join("\n"),
        _ => return Err(usage()),
    })
}

/// Job `id`'s progress, one line per state, until it ends: the items of
/// one stream, which the service sends to this caller alone.
pub async fn follow(client: &Client, id: JobId) -> pipesvc::Result<Vec<String>> {
    let mut progress = client.stream(&PROGRESS, &id).await?;
    let mut lines = Vec::new();
    while let Some(state) = progress.next().await {
        lines.push(format!("{:?}", state?));
    }
    let last = progress.finish().await?;
    lines.push(format!("ended: {last:?}"));
    Ok(lines)
}

/// Every job that ends, as the service announces it on `finished` (a
/// subscription to [`FINISHED`]), passed to `line` until `line` says stop.
/// Across a service restart the subscription is made again by itself;
/// what ended meanwhile was missed, so the jobs the service knows are
/// listed again (the resync).
pub async fn watch(
    client: &Client,
    mut finished: Subscription<Job>,
    mut line: impl FnMut(String) -> bool,
) -> pipesvc::Result<()> {
    while let Some(event) = finished.next().await {
        let text = match event? {
            TopicEvent::Event(job) => format!("ended: job {} {:?}", job.id, job.state),
            TopicEvent::Resubscribed => {
                let jobs = client.call(&LIST, &()).await?;
                format!("the service restarted; it knows {} jobs", jobs.len())
            }
            TopicEvent::Lagged(lost) => format!("{lost} announcements missed"),
            _ => continue,
        };
        if !line(text) {
            break;
        }
    }
    Ok(())
}

#[allow(dead_code)] // tests include this file for `run`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::var("JOBS_NAME").unwrap_or_else(|_| "jobs".into());
    // Reconnects, so that `watch` carries on across a service restart.
    let options = ClientOptions::new().reconnect(true);
    let client = Client::connect_with(&name.parse()?, options).await?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("watch") {
        let finished = client.subscribe(&FINISHED).await?;
        return Ok(watch(&client, finished, |line| {
            println!("{line}");
            true
        })
        .await?);
    }
    println!("{}", run(&client, &args).await?);
    Ok(())
}
