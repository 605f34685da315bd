//! The job runner's client: `job_client submit JOB STEPS | list | status ID |
//! cancel ID | follow ID` (service `$JOBS_NAME`, or `jobs`); typed calls and
//! a typed stream, no encoding or routing of our own.

#[path = "job_api/mod.rs"]
mod job_api;
use job_api::*;
use pipesvc::{Client, Error};

const USAGE: &str = "submit JOB STEPS | list | status ID | cancel ID | follow ID";

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

#[allow(dead_code)] // tests include this file for `run`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::var("JOBS_NAME").unwrap_or_else(|_| "jobs".into());
    let client = Client::connect(&name.parse()?).await?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("{}", run(&client, &args).await?);
    Ok(())
}
